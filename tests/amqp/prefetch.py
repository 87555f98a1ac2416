"""basic.qos through pika: a consumer with prefetch_count=2 that does not ack holds
exactly 2 deliveries; each ack lets exactly as many more through; an auto-ack
consumer is not limited; two limited consumers share a queue; with global=true the
limit is the channel's, over all its consumers.

"Exactly 2 and no more" is read from the queue itself: the ready count (passive
declare) stays at total - 2 while the consumer holds 2, which needs no waiting.
"""

import amqp_common as t

conn = t.connect(t.port())
pub = conn.channel()
pub.confirm_delivery()
probe = conn.channel()


def publish(queue, n, prefix="m"):
    for i in range(n):
        pub.basic_publish("", queue, ("%s%d" % (prefix, i)).encode())


class Consumer:
    def __init__(self, ch, queue, **kw):
        self.got = []
        self.tag = ch.basic_consume(queue, lambda _c, m, _p, b: self.got.append((m, b)), **kw)

    def wait(self, n, what):
        t.poll(conn, lambda: len(self.got) >= n, "%s (%d of %d)" % (what, len(self.got), n))
        assert len(self.got) == n, "%s: expected %d deliveries, got %d" % (what, n, len(self.got))


def settled(queue, ready, consumer, delivered, what):
    """The queue holds `ready` messages and the consumer exactly `delivered`.

    A round trip on the consumer's connection after reading the count: anything the
    node sent before answering is in by then.
    """
    t.wait_count(probe, queue, ready)
    conn.process_data_events(time_limit=0)
    probe.queue_declare(queue, passive=True)
    assert len(consumer.got) == delivered, "%s: the consumer holds %d deliveries, expected %d" % (
        what,
        len(consumer.got),
        delivered,
    )
    assert t.count(probe, queue) == ready, "%s: ready count changed" % what


# ----- prefetch 2, no acks: 2 delivered -------------------------------------------
probe.queue_declare("pf")
publish("pf", 6)
ch = conn.channel()
ch.basic_qos(prefetch_count=2)
c = Consumer(ch, "pf")
c.wait(2, "the first two deliveries")
settled("pf", 4, c, 2, "prefetch 2 without acks")
assert [b for _, b in c.got] == [b"m0", b"m1"], "in order: %r" % c.got

# One ack: exactly one more.
ch.basic_ack(c.got[0][0].delivery_tag)
c.wait(3, "one delivery after one ack")
settled("pf", 3, c, 3, "after one ack")

# A multiple ack of both outstanding: two more.
ch.basic_ack(c.got[2][0].delivery_tag, multiple=True)
c.wait(5, "two deliveries after a multiple ack")
settled("pf", 1, c, 5, "after a multiple ack of two")

# A nack with requeue frees the slot too, and the message comes back first.
ch.basic_nack(c.got[4][0].delivery_tag, requeue=True)
c.wait(6, "a delivery after a nack")
assert c.got[5][1] == b"m4", "the requeued m4 goes out before m5: %r" % (c.got[5],)
assert c.got[5][0].redelivered, "the requeued message is redelivered"
ch.basic_ack(c.got[5][0].delivery_tag, multiple=True)
c.wait(7, "the last message")
ch.basic_ack(c.got[6][0].delivery_tag)
assert sorted(b for _, b in c.got[5:]) == [b"m4", b"m5"], "the rest: %r" % c.got[5:]
ch.basic_cancel(c.tag)
assert t.count(probe, "pf") == 0, "everything acked"

# ----- auto-ack consumers are not limited by prefetch ------------------------------
probe.queue_declare("pf-auto")
publish("pf-auto", 5)
ch2 = conn.channel()
ch2.basic_qos(prefetch_count=1)
auto = Consumer(ch2, "pf-auto", auto_ack=True)
auto.wait(5, "all five to an auto-ack consumer")
ch2.basic_cancel(auto.tag)

# ----- two consumers with prefetch 1 share the queue -------------------------------
probe.queue_declare("pf-two")
publish("pf-two", 4)
ch3 = conn.channel()
ch3.basic_qos(prefetch_count=1)
a = Consumer(ch3, "pf-two")
b = Consumer(ch3, "pf-two")
t.poll(conn, lambda: len(a.got) + len(b.got) >= 2, "one delivery to each consumer")
settled("pf-two", 2, a, 1, "two consumers, prefetch 1 each (a)")
assert len(b.got) == 1, "consumer b holds one: %r" % b.got
ch3.basic_ack(a.got[0][0].delivery_tag)
ch3.basic_ack(b.got[0][0].delivery_tag)
t.poll(conn, lambda: len(a.got) + len(b.got) >= 4, "the other two")
settled("pf-two", 0, a, 2, "after both acked (a)")
assert len(b.got) == 2, "consumer b got two in all: %r" % b.got
bodies = sorted(x for _, x in a.got + b.got)
assert bodies == [b"m0", b"m1", b"m2", b"m3"], "each message once: %r" % bodies
ch3.basic_ack(a.got[1][0].delivery_tag)
ch3.basic_ack(b.got[1][0].delivery_tag)

# ----- closing the channel returns the held deliveries ----------------------------
ch.close()
ch3.close()
probe.queue_declare("pf-close")
publish("pf-close", 3)
ch4 = conn.channel()
ch4.basic_qos(prefetch_count=2)
c4 = Consumer(ch4, "pf-close")
c4.wait(2, "two deliveries before closing")
settled("pf-close", 1, c4, 2, "before closing")
ch4.close()
t.wait_count(probe, "pf-close", 3)

# ----- global=true: one limit for the whole channel (RabbitMQ's channel prefetch) --
def holds(consumers, n, what):
    """After a round trip on the connection, the consumers hold exactly n in all."""
    t.poll(conn, lambda: sum(len(c.got) for c in consumers) >= n, what)
    probe.queue_declare("g1", passive=True)
    conn.process_data_events(time_limit=0)
    got = sum(len(c.got) for c in consumers)
    assert got == n, "%s: the channel's consumers hold %d, expected %d" % (what, got, n)


for q in ("g1", "g2"):
    probe.queue_declare(q)
    publish(q, 4, prefix=q)
ch5 = conn.channel()
ch5.basic_qos(prefetch_count=3, global_qos=True)
ga = Consumer(ch5, "g1")
gb = Consumer(ch5, "g2")
# Each queue hands the channel 3 (the channel limit bounds each consumer too) ...
t.wait_count(probe, "g1", 1)
t.wait_count(probe, "g2", 1)
# ... and the channel lets 3 out in all, not 3 per consumer.
holds([ga, gb], 3, "global prefetch 3 over two consumers")
first = (ga.got + gb.got)[0][0].delivery_tag
ch5.basic_ack(first)
holds([ga, gb], 4, "one ack lets exactly one more out")
last = max(m.delivery_tag for m, _ in ga.got + gb.got)
ch5.basic_ack(last, multiple=True)
holds([ga, gb], 7, "acking all three outstanding lets three more out")
last = max(m.delivery_tag for m, _ in ga.got + gb.got)
ch5.basic_ack(last, multiple=True)
holds([ga, gb], 8, "the last one")
ch5.basic_ack(max(m.delivery_tag for m, _ in ga.got + gb.got), multiple=True)
bodies = sorted(b for _, b in ga.got + gb.got)
assert bodies == sorted(b"g%d%d" % (q, i) for q in (1, 2) for i in range(4)), bodies
tags = [m.delivery_tag for m, _ in ga.got + gb.got]
assert sorted(tags) == list(range(1, 9)), "tags in sending order: %r" % tags
assert t.count(probe, "g1") == 0 and t.count(probe, "g2") == 0

# Held deliveries go back to the queue when their consumer is cancelled, or the
# channel closes, and a raised limit lets them out.
probe.queue_declare("g3")
publish("g3", 5, prefix="g3-")
ch6 = conn.channel()
ch6.basic_qos(prefetch_count=2, global_qos=True)
x = Consumer(ch6, "g3")
y = Consumer(ch6, "g3")
t.wait_count(probe, "g3", 1)  # 2 per consumer at the channel: 2 out, 2 held
holds([x, y], 2, "global prefetch 2 over two consumers of one queue")
ch6.basic_qos(prefetch_count=3, global_qos=True)
holds([x, y], 3, "a raised channel limit lets one held delivery out")
ch6.basic_cancel(x.tag)
ch6.basic_cancel(y.tag)
t.wait_count(probe, "g3", 2)  # the one still held is back; 3 stay unacked
ch6.close()
t.wait_count(probe, "g3", 5)

conn.close()
t.done()
