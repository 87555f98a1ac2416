"""AMQP through any node of a three-node cluster (argv: the three AMQP ports).

A queue declared through node 1 lives there; a client of node 2 publishes to it and
a client of node 3 consumes from it, with confirms, manual acks and prefetch, as if
it were local. Every wait polls with a bound: no fixed sleeps.
"""

import sys

import pika
from pika.exceptions import UnroutableError

import amqp_common as t

assert len(sys.argv) == 4, "usage: cluster.py PORT1 PORT2 PORT3"
P1, P2, P3 = (int(p) for p in sys.argv[1:])

c1, c2, c3 = t.connect(P1), t.connect(P2), t.connect(P3)
ch1, ch2, ch3 = c1.channel(), c2.channel(), c3.channel()

# Declared through node 1: the queue lives there, its binding is everyone's.
ch1.exchange_declare("amqp-shop", "topic", durable=True)
ch1.queue_declare("amqp-orders", durable=True)
ch1.queue_bind("amqp-orders", "amqp-shop", "order.*")


def on_node(conn, name, present):
    """Polls passive declares on `conn` until `name` is there (or gone)."""
    def check():
        try:
            conn.channel().queue_declare(name, passive=True)
            return present
        except pika.exceptions.ChannelClosedByBroker as e:
            assert e.reply_code == 404, e
            return not present
    t.poll(conn, check, "queue %r %s" % (name, "known" if present else "gone"))


# The other nodes apply the committed declaration within a round trip.
on_node(c2, "amqp-orders", True)
on_node(c3, "amqp-orders", True)
ch3.exchange_declare("amqp-shop", "topic", durable=True, passive=True)

# Node 3 consumes, manual acks, prefetch 10.
received = []
ch3.basic_qos(prefetch_count=10)


def on_message(ch, method, props, body):
    received.append((body, props.delivery_mode))
    ch.basic_ack(method.delivery_tag)


ch3.basic_consume("amqp-orders", on_message)

# Node 2 publishes with confirms: routed on node 2, stored on node 1.
ch2.confirm_delivery()
for i in range(50):
    ch2.basic_publish(
        "amqp-shop",
        "order.new",
        b"order-%d" % i,
        properties=pika.BasicProperties(delivery_mode=2),
        mandatory=True,
    )
# Unroutable and mandatory: returned (the binding is known on node 2).
try:
    ch2.basic_publish("amqp-shop", "invoice.new", b"nobody", mandatory=True)
    raise AssertionError("a mandatory publish nobody is bound for was confirmed")
except UnroutableError:
    pass

t.poll(c3, lambda: len(received) == 50, "50 deliveries on node 3")
assert [b for b, _ in received] == [b"order-%d" % i for i in range(50)], "in order"
assert all(mode == 2 for _, mode in received), "properties cross nodes"
# Acked through node 3: the queue on node 1 is empty (a get through node 2 finds none).
t.wait_count(ch2, "amqp-orders", 0)
t.get_none(ch2, "amqp-orders")

# basic.get through node 2, acked there (node 3's consumer cancelled first).
for tag in list(ch3.consumer_tags):
    ch3.basic_cancel(tag)
ch1.basic_publish("", "amqp-orders", b"one more")
method, _, body = t.get_one(ch2, "amqp-orders", no_ack=False)
assert body == b"one more", body
ch2.basic_ack(method.delivery_tag)

# An exclusive queue of a node-1 connection is locked for a node-2 client.
ch1.queue_declare("amqp-private", exclusive=True)


def locked():
    """404 until node 2 applied the declaration (within a round trip), then 405."""
    try:
        c2.channel().queue_declare("amqp-private", passive=True)
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code in (404, 405), e
        return e.reply_code == 405
    raise AssertionError("a node-2 client used an exclusive queue of a node-1 connection")


t.poll(c2, locked, "node 2 locks the exclusive queue of a node-1 connection (405)")

# Deleted through node 3: gone everywhere.
ch3.queue_delete("amqp-orders")
on_node(c1, "amqp-orders", False)
on_node(c2, "amqp-orders", False)

for c in (c1, c2, c3):
    c.close()
print("ok")
