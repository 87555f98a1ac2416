"""basic.qos through pika: a consumer with prefetch_count=2 that does not ack holds
exactly 2 deliveries; each ack lets exactly as many more through; an auto-ack
consumer is not limited; two limited consumers share a queue.

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

conn.close()
t.done()
