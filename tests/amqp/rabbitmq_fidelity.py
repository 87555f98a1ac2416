"""Behaviours where Warren differed from RabbitMQ 3.10 (issue 19, part 1):

- the default exchange cannot be declared, passively either: 403;
- basic.qos with a prefetch_size: 540 NOT_IMPLEMENTED (closes the connection);
- once the connection that owned an exclusive queue is gone, a passive declare of the
  queue from another connection answers 404 at once (not 405 while it is deleted);
- a channel above the negotiated channel_max: 530 NOT_ALLOWED (closes the connection).
"""

import pika

import amqp_common as t

PORT = t.port()
conn = t.connect(PORT)


def channel_closed(fn, code):
    try:
        fn(conn.channel())
        raise AssertionError("expected %d" % code)
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == code, e
        return e


e = channel_closed(lambda ch: ch.exchange_declare("", passive=True), 403)
assert "default exchange" in e.reply_text, e
channel_closed(lambda ch: ch.exchange_declare("", "direct"), 403)

for round_ in range(20):
    owner = t.connect(PORT)
    owner.channel().queue_declare("excl-%d" % round_, exclusive=True)
    owner.close()
    channel_closed(lambda ch: ch.queue_declare("excl-%d" % round_, passive=True), 404)

other = t.connect(PORT)
try:
    other.channel().basic_qos(prefetch_size=1024, prefetch_count=10)
    raise AssertionError("prefetch_size was accepted")
except pika.exceptions.ConnectionClosedByBroker as e:
    assert e.reply_code == 540 and "prefetch_size" in e.reply_text, e

params = t.params(PORT)
params.channel_max = 5
limited = pika.BlockingConnection(params)
limited.channel(channel_number=5)
try:
    limited.channel(channel_number=6)
    raise AssertionError("a channel above channel_max was opened")
except (pika.exceptions.ConnectionClosedByBroker, pika.exceptions.ChannelClosedByBroker) as e:
    assert e.reply_code == 530 and "channel_max 5" in e.reply_text, e
conn.close()
print("ok")
