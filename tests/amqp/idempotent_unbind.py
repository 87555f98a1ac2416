"""Unbinding is idempotent, as on RabbitMQ: queue.unbind naming a queue or an exchange
that is gone, exchange.unbind whose source or destination is gone, and unbinding
what was never bound all answer unbind-ok (client libraries clean up with unbind after
an auto-delete queue or exchange went first). Unbinding from the default exchange is
still refused (403), and an exclusive queue of another connection is still locked
(405)."""

import pika

import amqp_common as t

conn = t.connect(t.port())
ch = conn.channel()

ch.exchange_declare("ub.x", "direct")
ch.queue_declare("ub.q")
ch.queue_bind("ub.q", "ub.x", "k")

# Never bound: ok.
ch.queue_unbind("ub.q", "ub.x", "other-key")
# A queue that is gone.
ch.queue_unbind("ub.no-such-queue", "ub.x", "k")
# An exchange that is gone.
ch.queue_unbind("ub.q", "ub.no-such-exchange", "k")
# Both gone.
ch.queue_unbind("ub.nothing", "ub.nowhere", "k")
# exchange.unbind whose source is gone, whose destination is gone.
ch.exchange_declare("ub.dst", "fanout")
ch.exchange_unbind(destination="ub.dst", source="ub.no-such-source", routing_key="k")
ch.exchange_unbind(destination="ub.no-such-dst", source="ub.x", routing_key="k")

# What client libraries meet: an auto-delete queue went with its last consumer, then
# the cleanup unbinds it.
ch.queue_declare("ub.auto", auto_delete=True)
ch.queue_bind("ub.auto", "ub.x", "a")
tag = ch.basic_consume("ub.auto", lambda *a: None, auto_ack=True)
ch.basic_cancel(tag)


def gone():
    try:
        conn.channel().queue_declare("ub.auto", passive=True)
        return False
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 404, e
        return True


t.poll(conn, gone, "the auto-delete queue to go")
ch.queue_unbind("ub.auto", "ub.x", "a")

# The binding that exists still goes.
ch.queue_unbind("ub.q", "ub.x", "k")
ch.confirm_delivery()
try:
    ch.basic_publish("ub.x", "k", b"x", mandatory=True)
    raise AssertionError("routed after the unbind")
except pika.exceptions.UnroutableError:
    pass

# Still refused: the default exchange.
try:
    conn.channel().queue_unbind("ub.q", "", "ub.q")
    raise AssertionError("unbind from the default exchange was accepted")
except pika.exceptions.ChannelClosedByBroker as e:
    assert e.reply_code == 403, e

# Still locked: another connection's exclusive queue.
other = t.connect(t.port())
other.channel().queue_declare("ub.mine", exclusive=True)
try:
    conn.channel().queue_unbind("ub.mine", "ub.x", "k")
    raise AssertionError("unbind of another connection's exclusive queue was accepted")
except pika.exceptions.ChannelClosedByBroker as e:
    assert e.reply_code == 405, e
other.close()
conn.close()
print("ok")
