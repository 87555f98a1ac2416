"""Consumer acknowledgements through pika: basic.ack (single and multiple), basic.nack
with requeue (redelivered=True), basic.reject without requeue (dropped, or dead-
lettered with reason 'rejected'), unacked messages returning when their channel
closes, basic.recover(requeue=True), and an unknown delivery tag (406).
"""

import amqp_common as t

conn = t.connect(t.port())
pub = conn.channel()
pub.confirm_delivery()


def publish(queue, *bodies):
    for b in bodies:
        pub.basic_publish("", queue, b)


class Consumer:
    """A consumer that keeps its deliveries: (method, properties, body)."""

    def __init__(self, ch, queue, **kw):
        self.ch = ch
        self.got = []
        self.tag = ch.basic_consume(queue, self.on_message, **kw)

    def on_message(self, ch, method, props, body):
        self.got.append((method, props, body))

    def wait(self, n, what):
        t.poll(conn, lambda: len(self.got) >= n, "%s (%d of %d so far)" % (what, len(self.got), n))
        return self.got[:n]


# ----- basic.ack, single and multiple ----------------------------------------------
ch = conn.channel()
ch.queue_declare("acks")
publish("acks", b"1", b"2", b"3", b"4", b"5")
m1, _, b1 = t.get_one(ch, "acks", no_ack=False)
assert b1 == b"1" and not m1.redelivered, "first get: %r %r" % (b1, m1)
ch.basic_ack(m1.delivery_tag)
m2, _, _ = t.get_one(ch, "acks", no_ack=False)
m3, _, _ = t.get_one(ch, "acks", no_ack=False)
m4, _, b4 = t.get_one(ch, "acks", no_ack=False)
assert b4 == b"4", "fourth get is message 4, got %r" % b4
assert m2.delivery_tag < m3.delivery_tag < m4.delivery_tag, "delivery tags increase"
# One multiple ack settles 2, 3 and 4; message 5 was never fetched.
ch.basic_ack(m4.delivery_tag, multiple=True)
ch.close()
# Closing the channel returns only what is unacked: nothing.
ch = conn.channel()
t.wait_count(ch, "acks", 1)
m5, _, b5 = t.get_one(ch, "acks", no_ack=False)
assert b5 == b"5" and not m5.redelivered, "message 5 was never delivered before: %r" % m5
ch.close()  # unacked: back to the queue, marked redelivered
ch = conn.channel()
m5b, _, b5b = t.get_one(ch, "acks", no_ack=False)
assert b5b == b"5", "message 5 came back after its channel closed"
assert m5b.redelivered, "a message returned by a closed channel is redelivered=True"
ch.basic_ack(m5b.delivery_tag)
t.get_none(ch, "acks")

# ----- basic.nack with requeue -----------------------------------------------------
ch.queue_declare("nacks")
publish("nacks", b"n1", b"n2")
c = Consumer(ch, "nacks")
(d1, _, x1), (d2, _, x2) = c.wait(2, "two deliveries")
assert (x1, x2) == (b"n1", b"n2"), "deliveries in order: %r" % [x1, x2]
assert not d1.redelivered and not d2.redelivered, "first deliveries are not redelivered"
ch.basic_nack(d1.delivery_tag, multiple=False, requeue=True)
(d3, _, x3), = c.wait(3, "the nacked message again")[2:]
assert x3 == b"n1", "the requeued message comes back, got %r" % x3
assert d3.redelivered, "a requeued message is delivered with redelivered=True"
assert d3.delivery_tag > d2.delivery_tag, "a redelivery gets a new delivery tag"
# nack multiple with requeue: both outstanding come back.
ch.basic_nack(d3.delivery_tag, multiple=True, requeue=True)
again = c.wait(5, "both messages after nack multiple")[3:]
assert sorted(b for _, _, b in again) == [b"n1", b"n2"], "both came back: %r" % again
assert all(m.redelivered for m, _, _ in again), "both are redelivered"
ch.basic_ack(again[-1][0].delivery_tag, multiple=True)
ch.basic_cancel(c.tag)
t.get_none(ch, "nacks")

# ----- basic.reject without requeue: dropped ---------------------------------------
ch.queue_declare("rejects")
publish("rejects", b"r1", b"r2")
m, _, b = t.get_one(ch, "rejects", no_ack=False)
ch.basic_reject(m.delivery_tag, requeue=False)
m, _, b = t.get_one(ch, "rejects", no_ack=False)
assert b == b"r2", "the rejected message is gone, the next is r2: %r" % b
ch.basic_reject(m.delivery_tag, requeue=True)
m, _, b = t.get_one(ch, "rejects", no_ack=False)
assert b == b"r2" and m.redelivered, "reject requeue=True redelivers r2: %r %r" % (b, m)
ch.basic_ack(m.delivery_tag)
ch.close()
ch = conn.channel()
assert t.count(ch, "rejects") == 0, "the rejected message did not come back"

# ----- basic.reject / nack without requeue and a dead-letter exchange ---------------
ch.exchange_declare("dlx", "fanout")
ch.queue_declare("dead")
ch.queue_bind("dead", "dlx")
ch.queue_declare("with-dlx", arguments={"x-dead-letter-exchange": "dlx"})
publish("with-dlx", b"d1", b"d2")
m, _, _ = t.get_one(ch, "with-dlx", no_ack=False)
ch.basic_reject(m.delivery_tag, requeue=False)
m, _, _ = t.get_one(ch, "with-dlx", no_ack=False)
ch.basic_nack(m.delivery_tag, requeue=False)
dead = [t.get_one(ch, "dead") for _ in range(2)]
assert [b for _, _, b in dead] == [b"d1", b"d2"], "both dead-lettered: %r" % dead
for _, props, body in dead:
    deaths = (props.headers or {}).get("x-death")
    assert deaths, "dead-lettered %r carries x-death: %r" % (body, props.headers)
    assert deaths[0].get("reason") == "rejected", "x-death reason: %r" % deaths[0]
    assert deaths[0].get("queue") == "with-dlx", "x-death queue: %r" % deaths[0]
t.get_none(ch, "with-dlx")

# ----- basic.recover(requeue=True) ------------------------------------------------
ch.queue_declare("recover")
publish("recover", b"v1", b"v2")
c = Consumer(ch, "recover")
first = c.wait(2, "two deliveries before recover")
assert not any(m.redelivered for m, _, _ in first), "not redelivered yet"
ch.basic_recover(requeue=True)
again = c.wait(4, "redeliveries after basic.recover")[2:]
assert sorted(b for _, _, b in again) == [b"v1", b"v2"], "both redelivered: %r" % again
assert all(m.redelivered for m, _, _ in again), "recovered messages are redelivered=True"
ch.basic_ack(again[-1][0].delivery_tag, multiple=True)
ch.basic_cancel(c.tag)
ch.close()
ch = conn.channel()
assert t.count(ch, "recover") == 0, "acked after recover: nothing left"

# ----- an unknown delivery tag closes the channel (406) ----------------------------
bad = conn.channel()
bad.basic_ack(delivery_tag=999)
e = t.closed_by_broker(conn, bad, 406, "ack of an unknown delivery tag")
assert "999" in e.reply_text, "the text names the tag: %r" % e.reply_text

# Acking the same tag twice is an unknown tag the second time.
ch.queue_declare("twice")
publish("twice", b"x")
bad = conn.channel()
m, _, _ = t.get_one(bad, "twice", no_ack=False)
bad.basic_ack(m.delivery_tag)
bad.basic_ack(m.delivery_tag)
t.closed_by_broker(conn, bad, 406, "a second ack of the same tag")

# A tag from another channel is unknown on this one.
ch.queue_declare("other-channel")
publish("other-channel", b"y")
owner = conn.channel()
m, _, _ = t.get_one(owner, "other-channel", no_ack=False)
bad = conn.channel()
bad.basic_ack(m.delivery_tag)
t.closed_by_broker(conn, bad, 406, "ack of a tag this channel never issued")
owner.basic_ack(m.delivery_tag)

assert conn.is_open, "channel errors left the connection open"
conn.close()
t.done()
