"""The empty queue name means the queue last declared on the channel (AMQP 0-9-1, as
RabbitMQ implements it) in queue.bind, queue.purge, queue.delete, basic.consume and
basic.get; without a previous declare it is 404 'no previously declared queue'.
"""

import amqp_common as t

conn = t.connect(t.port())
ch = conn.channel()
pub = conn.channel()
pub.confirm_delivery()

name = ch.queue_declare("", exclusive=True).method.queue
t.succeeds(lambda: ch.queue_bind("", "amq.fanout"), "queue.bind of '' after a declare")
pub.basic_publish("amq.fanout", "", b"via-shortcut")
m, _, body = t.succeeds(lambda: t.get_one(ch, ""), "basic.get of ''")
assert body == b"via-shortcut", "bind and get through the empty name: %r" % body
pub.basic_publish("", name, b"purge-me")
t.wait_count(ch, name, 1)
assert t.succeeds(lambda: ch.queue_purge(""), "queue.purge of ''").method.message_count == 1, "purge through the empty name"
got = []
tag = t.succeeds(lambda: ch.basic_consume("", lambda c, m, p, b: got.append(b), auto_ack=True), "basic.consume of ''")
pub.basic_publish("", name, b"consumed")
t.poll(conn, lambda: got, "a delivery to the consumer of the empty name")
ch.basic_cancel(tag)
t.succeeds(lambda: ch.queue_delete(""), "queue.delete of ''")
fresh = conn.channel()
t.channel_error(lambda: fresh.queue_declare(name, passive=True), 404, "the queue deleted through ''")

# Without a declared queue on the channel: 404.
fresh = conn.channel()
t.channel_error(lambda: fresh.basic_get(""), 404, "basic.get of '' without a declared queue")
conn.close()
t.done()
