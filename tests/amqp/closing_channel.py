"""Frames that cross the node's channel.close: AMQP 0-9-1 (and RabbitMQ) discard what
a client sent on a channel after the server closed it, until the client's close-ok;
the connection stays open. A pipelining client always hits this: it sends its next
method before the close reaches it.

Both methods are written in one go through pika's asynchronous channel (the
BlockingChannel's `_impl`), so the second surely arrives after the node's error on
the first, whatever the timing.
"""

import amqp_common as t
import pika

conn = t.connect(t.port())


def works(what):
    assert conn.is_open, "%s: the connection was closed" % what
    ch = conn.channel()
    ch.queue_declare("alive")
    ch.basic_publish("", "alive", b"x")
    assert t.get_one(ch, "alive")[2] == b"x", "%s: a new channel works" % what
    ch.close()


# ----- an unknown delivery tag, then another ack ---------------------------------
ch = conn.channel()
ch._impl.basic_ack(999)
ch._impl.basic_ack(1000)
t.closed_by_broker(conn, ch, 406, "two acks of unknown tags in one write")
works("after two unknown acks in one write")

# ----- a failing passive declare, then a publish ---------------------------------
ch = conn.channel()
ch._impl.queue_declare("missing", passive=True, callback=lambda _frame: None)
ch._impl.basic_publish("", "alive", b"pipelined", pika.BasicProperties())
t.closed_by_broker(conn, ch, 404, "a passive declare of a missing queue, then a publish")
works("after a failed declare followed by a publish")

# ----- a consume from a missing queue, then a qos and an ack ---------------------
ch = conn.channel()
ch._impl.basic_consume("missing", lambda *a: None)
ch._impl.basic_ack(1)
t.closed_by_broker(conn, ch, 404, "a consume from a missing queue, then an ack")
works("after a failed consume followed by an ack")

conn.close()
t.done()
