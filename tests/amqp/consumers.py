"""Consumers through pika: consumer tags, basic.cancel by the client
(no deliveries after cancel-ok, unacked ones stay ackable), the node's basic.cancel
when a consumed queue is deleted (consumer_cancel_notify), exclusive consumers (403),
and deliveries spread over several consumers.
"""

import amqp_common as t

conn = t.connect(t.port())
admin = conn.channel()
pub = conn.channel()
pub.confirm_delivery()

props = conn._impl.server_properties  # what the node announced in connection.start
assert props["capabilities"].get("consumer_cancel_notify") is True, "capability: %r" % props


class Consumer:
    def __init__(self, ch, queue, **kw):
        self.ch = ch
        self.got = []
        self.tag = ch.basic_consume(queue, lambda _c, m, _p, b: self.got.append((m, b)), **kw)

    def wait(self, n, what):
        t.poll(conn, lambda: len(self.got) >= n, "%s (%d of %d)" % (what, len(self.got), n))


# ----- consumer tags (pika picks them) ----------------------------------------------------
admin.queue_declare("tags")
ch = conn.channel()
c1 = Consumer(ch, "tags")
c2 = Consumer(ch, "tags")
assert c1.tag and c2.tag and c1.tag != c2.tag, "distinct generated tags: %r %r" % (c1.tag, c2.tag)
mine = Consumer(ch, "tags", consumer_tag="my-tag")
assert mine.tag == "my-tag", "a client-chosen tag is kept: %r" % mine.tag
ok = admin.queue_declare("tags", passive=True).method
assert ok.consumer_count == 3, "three consumers: %r" % ok
for c in (c1, c2, mine):
    ch.basic_cancel(c.tag)
t.poll(conn, lambda: admin.queue_declare("tags", passive=True).method.consumer_count == 0, "no consumers after cancel")

# ----- deliveries round-robin over consumers --------------------------------------
a = Consumer(ch, "tags", auto_ack=True)
b = Consumer(ch, "tags", auto_ack=True)
for i in range(10):
    pub.basic_publish("", "tags", b"%d" % i)
t.poll(conn, lambda: len(a.got) + len(b.got) >= 10, "ten deliveries over two consumers")
assert a.got and b.got, "both consumers got some: %d / %d" % (len(a.got), len(b.got))
assert all(m.consumer_tag == a.tag for m, _ in a.got), "deliveries carry their consumer's tag"
assert sorted(int(x) for _, x in a.got + b.got) == list(range(10)), "each message once"
ch.basic_cancel(a.tag)
ch.basic_cancel(b.tag)

# ----- basic.cancel by the client ---------------------------------------------------
admin.queue_declare("cancel-me")
for i in range(3):
    pub.basic_publish("", "cancel-me", b"m%d" % i)
ch = conn.channel()
ch.basic_qos(prefetch_count=2)
c = Consumer(ch, "cancel-me")
c.wait(2, "two deliveries")
ch.basic_cancel(c.tag)
# After cancel-ok nothing more arrives: the third message stays ready (and the two
# unacked are still this channel's).
assert t.count(admin, "cancel-me") == 1, "the third message was not delivered"
ok = admin.queue_declare("cancel-me", passive=True).method
assert ok.consumer_count == 0, "no consumer after cancel: %r" % ok
# Unacked deliveries of a cancelled consumer can still be acked.
ch.basic_ack(c.got[0][0].delivery_tag)
ch.basic_nack(c.got[1][0].delivery_tag, requeue=True)
t.wait_count(admin, "cancel-me", 2)
assert len(c.got) == 2, "the cancelled consumer got nothing more: %r" % c.got
ch.close()
assert t.count(admin, "cancel-me") == 2, "the ack stuck; the nack requeued"
admin.queue_purge("cancel-me")

# ----- the node cancels consumers of a deleted queue --------------------------------
admin.queue_declare("doomed")
ch = conn.channel()
cancelled = []
ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
d1 = Consumer(ch, "doomed")
d2 = Consumer(ch, "doomed", consumer_tag="doomed-2")
pub.basic_publish("", "doomed", b"before")
t.poll(conn, lambda: len(d1.got) + len(d2.got) >= 1, "a delivery before the delete")
admin.queue_delete("doomed")  # from another channel
t.poll(conn, lambda: len(cancelled) >= 2, "basic.cancel for both consumers of the deleted queue")
assert sorted(cancelled) == sorted([d1.tag, "doomed-2"]), "cancelled tags: %r" % cancelled
assert ch.is_open, "the consumer's channel stays open"
assert not ch.consumer_tags, "pika forgot the cancelled consumers: %r" % ch.consumer_tags
# The channel still works, and the unacked delivery of the deleted queue can be acked
# (RabbitMQ accepts acks for deliveries of a deleted queue).
admin.queue_declare("after-delete")
pub.basic_publish("", "after-delete", b"fine")
assert t.get_one(ch, "after-delete")[2] == b"fine", "the channel works after the cancel"
m = (d1.got or d2.got)[0][0]
ch.basic_ack(m.delivery_tag)
admin.queue_declare("after-delete", passive=True)
assert ch.is_open, "acking a delivery of the deleted queue is fine"

# Deleted on the consumer's own channel: cancelled too.
admin.queue_declare("doomed2")
own = Consumer(ch, "doomed2")
ch.queue_delete("doomed2")
t.poll(conn, lambda: own.tag in cancelled, "basic.cancel after deleting the queue on the same channel")

# ----- exclusive consumers --------------------------------------------------------
admin.queue_declare("excl")
ch = conn.channel()
first = Consumer(ch, "excl", exclusive=True)
other = conn.channel()
t.channel_error(lambda: other.basic_consume("excl", lambda *a: None), 403, "a consumer beside an exclusive one")
ch.basic_cancel(first.tag)
shared = Consumer(ch, "excl")
other = conn.channel()
t.channel_error(
    lambda: other.basic_consume("excl", lambda *a: None, exclusive=True),
    403,
    "an exclusive consumer beside another consumer",
)
ch.basic_cancel(shared.tag)

assert conn.is_open, "the connection is still open"
conn.close()
t.done()
