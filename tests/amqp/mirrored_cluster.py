"""Mirrored (quorum) queues on three nodes (argv: the three AMQP ports, then a phase).

replicate: queues declared through one node are used at once through the others,
    without a pause between steps: publishes with confirms through a second node,
    counts and gets through the third, repeated for several queues. Queue "mq" is
    left with 490 confirmed messages m10..m499 for the later phases.
minority:  run with the two other nodes killed: a consumer through node 1 gets
    nothing, and a publish through it is not confirmed (basic.nack), within a bound.
recovered: run with node 2 back (a majority again): every confirmed message is
    still in "mq", none lost; a new publish is confirmed; consuming takes them all,
    in order.
prefill:   1000 confirmed messages f0..f999 into "mq" (empty; or the queue named by
    the next argument), through node 1.
failover:  a consumer (prefetch 100, through a node that survives) holds f0..f99
    unacked and prints "consuming"; the test then kills the node that serves "mq".
    The consumer keeps its subscription (no basic.cancel), gets f0..f99 again
    redelivered and the rest once, in order (printed: how soon after the kill); a
    publish with confirms through the third node reaches it. Argv: one more, the
    ports of the consumer's and of the publisher's node (then another queue's name).
members-fill:  "mm" declared through node 1 with two replicas, "solo" with one, "fq"
    with three; 300 confirmed messages mm0..mm299 into "mm" and "fq" through node 2.
members-churn: 300 messages published into "fq" through node 2 and taken again,
    acknowledged, the 300 it held put back (its log grows, what it holds stays).
members-drain: every confirmed message of the queue named by the last argument
    ("mm" without one), once and in order, taken through the node whose port is the
    next argument (its members changed meanwhile); a publish with confirms through it
    is confirmed.
"""

import sys
import time

import pika

import amqp_common as t

assert len(sys.argv) >= 5, "usage: mirrored_cluster.py PORT1 PORT2 PORT3 PHASE [PORT]"
P1, P2, P3 = (int(p) for p in sys.argv[1:4])
PHASE = sys.argv[4]
QUORUM = {"x-queue-type": "quorum"}


def confirming(port):
    conn = t.connect(port)
    ch = conn.channel()
    ch.confirm_delivery()
    return conn, ch


def take_all(ch, queue):
    """Every message ready in `queue` now, by basic.get: their bodies, in order."""
    bodies = []
    while True:
        method, _, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return bodies
        bodies.append(body)


def persistent():
    return pika.BasicProperties(delivery_mode=2)


if PHASE == "replicate":
    c1, ch1 = confirming(P1)
    c2, ch2 = confirming(P2)
    c3, ch3 = confirming(P3)
    # Declared through one node, used through another at once; five times, each
    # queue's home another node.
    for i in range(5):
        name = "mq-%d" % i
        homes = [(ch1, ch2, ch3), (ch2, ch3, ch1), (ch3, ch1, ch2)][i % 3]
        declare, publish, read = homes
        declare.queue_declare(name, durable=True, arguments=QUORUM)
        for j in range(50):
            publish.basic_publish("", name, b"%d" % j, persistent())
        assert t.count(read, name) == 50, (name, t.count(read, name))
        assert t.get_one(read, name)[2] == b"0"
        assert t.count(declare, name) == 49
        declare.queue_delete(name)

    ch1.queue_declare("mq", durable=True, arguments=QUORUM)
    for j in range(500):
        ch2.basic_publish("", "mq", b"m%d" % j)
    assert t.count(ch3, "mq") == 500, t.count(ch3, "mq")
    for j in range(10):
        method, _, body = t.get_one(ch3, "mq", no_ack=False)
        assert body == b"m%d" % j, body
        ch3.basic_ack(method.delivery_tag)
    # The acks are handled before the channel's next call to the queue.
    assert t.count(ch3, "mq") == 490
    # Declared again through another node: the same queue, with its count.
    assert ch2.queue_declare("mq", durable=True, arguments=QUORUM).method.message_count == 490
    for c in (c1, c2, c3):
        c.close()

elif PHASE == "minority":
    conn, ch = confirming(P1)
    # Nothing is handed out without a majority: "mq" holds 490 messages, and a
    # consumer through the node left alone gets none of them.
    got = []
    consumer = conn.channel()
    consumer.basic_qos(prefetch_count=10)
    consumer.basic_consume("mq", lambda c, m, p, b: got.append(b))
    conn.process_data_events(time_limit=2)
    assert got == [], "handed out without a majority: %r" % got[:3]
    started = time.monotonic()
    try:
        ch.basic_publish("", "mq", b"lonely")
        raise AssertionError("confirmed without a majority of the replicas")
    except pika.exceptions.NackError:
        pass
    elapsed = time.monotonic() - started
    assert elapsed < 30, "the nack took %.1f s" % elapsed
    print("nacked without a majority after %.2f s" % elapsed)
    conn.close()

elif PHASE == "recovered":
    conn, ch = confirming(P2)
    deadline = time.monotonic() + 60
    while True:
        # The queue's leader takes its place again once a majority is back.
        try:
            held = t.count(ch, "mq")
            if held >= 490:
                break
        except pika.exceptions.ChannelClosedByBroker:
            ch = conn.channel()
            ch.confirm_delivery()
        assert time.monotonic() < deadline, "mq never came back"
        conn.process_data_events(time_limit=0.2)
    ch.basic_publish("", "mq", b"after")
    bodies = take_all(ch, "mq")
    # Every confirmed message, in order; the unconfirmed one may or may not be there.
    expected = [b"m%d" % j for j in range(10, 500)]
    kept = [b for b in bodies if b != b"lonely"]
    assert kept == expected + [b"after"], (len(kept), kept[:3], kept[-3:])
    conn.close()

elif PHASE == "prefill":
    queue = sys.argv[5] if len(sys.argv) > 5 else "mq"
    conn, ch = confirming(P1)
    assert t.count(ch, queue) == 0
    for j in range(1000):
        ch.basic_publish("", queue, b"f%d" % j)
    conn.close()

elif PHASE == "failover":
    # argv: the port of the node the consumer uses, then of the one the publisher uses
    # (both survive the kill).
    through, publish_port = int(sys.argv[5]), int(sys.argv[6])
    queue = sys.argv[7] if len(sys.argv) > 7 else "mq"
    conn = t.connect(through)
    ch = conn.channel()
    ch.basic_qos(prefetch_count=100)
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame))
    got = []

    def on_message(channel, method, properties, body):
        got.append((body, method.redelivered, method.delivery_tag))

    ch.basic_consume(queue, on_message)
    deadline = time.monotonic() + 60
    while len(got) < 100:
        assert time.monotonic() < deadline, "only %d deliveries before the kill" % len(got)
        conn.process_data_events(time_limit=0.1)
    held = len(got)
    # The test kills the node that serves mq now; the 100 held stay unacked.
    print("consuming", flush=True)
    killed = time.monotonic()
    resumed = None
    while True:
        assert not cancelled, "the consumer was cancelled: %r" % cancelled
        assert time.monotonic() - killed < 60, "%d deliveries after the kill" % (len(got) - held)
        conn.process_data_events(time_limit=0.05)
        for body, redelivered, tag in got[held:]:
            ch.basic_ack(tag)
        after = got[held:]
        held = len(got)
        if after and resumed is None:
            resumed = time.monotonic() - killed
        if len([b for b, _, _ in got]) >= 100 + 1000:
            break
    print("deliveries resumed %.2f s after the kill" % resumed)
    again = got[100:]
    bodies = [b for b, _, _ in again]
    expected = [b"f%d" % j for j in range(1000)]
    assert bodies == expected, (len(bodies), bodies[:3], bodies[-3:])
    assert all(r for _, r, _ in again[:100]), "the held ones come back redelivered"
    assert not any(r for _, r, _ in again[100:]), "the others are first deliveries"
    # Publishing with confirms through another survivor works, and reaches the consumer.
    pconn, pch = confirming(publish_port)
    while True:
        try:
            pch.basic_publish("", queue, b"after failover")
            break
        except pika.exceptions.NackError:
            pass
        except pika.exceptions.ChannelClosedByBroker:
            pch = pconn.channel()
            pch.confirm_delivery()
        assert time.monotonic() - killed < 60, "no leader serves mq after 60 s"
        pconn.process_data_events(time_limit=0.05)  # retry pacing, not a wait for a result
    while not any(b == b"after failover" for b, _, _ in got[1100:]):
        assert time.monotonic() - killed < 60, "the publish after the failover never came"
        conn.process_data_events(time_limit=0.05)
    assert not cancelled, "the consumer was cancelled: %r" % cancelled
    pconn.close()
    conn.close()

elif PHASE == "members-fill":
    c1, ch1 = confirming(P1)
    ch1.queue_declare("mm", durable=True, arguments=dict(QUORUM, **{"x-quorum-initial-group-size": 2}))
    ch1.queue_declare("solo", durable=True, arguments=dict(QUORUM, **{"x-quorum-initial-group-size": 1}))
    ch1.queue_declare("fq", durable=True, arguments=dict(QUORUM, **{"x-quorum-initial-group-size": 3}))
    c2, ch2 = confirming(P2)
    for j in range(300):
        ch2.basic_publish("", "mm", b"mm%d" % j, persistent())
        ch2.basic_publish("", "fq", b"mm%d" % j, persistent())
    c1.close()
    c2.close()

elif PHASE == "members-churn":
    conn, ch = confirming(P2)
    for j in range(300):
        ch.basic_publish("", "fq", b"churn%d" % j, persistent())
    # All 600 taken: the churn acknowledged, the 300 held put back (in their order).
    got = [t.get_one(ch, "fq", no_ack=False) for _ in range(600)]
    for method, _, body in got:
        if body.startswith(b"churn"):
            ch.basic_ack(method.delivery_tag)
        else:
            ch.basic_nack(method.delivery_tag, requeue=True)
    conn.close()

elif PHASE == "members-drain":
    conn, ch = confirming(int(sys.argv[5]))
    queue = sys.argv[6] if len(sys.argv) > 6 else "mm"
    bodies = take_all(ch, queue)
    expected = [b"mm%d" % j for j in range(300)]
    assert bodies == expected, (len(bodies), bodies[:3], bodies[-3:])
    ch.basic_publish("", queue, b"after", persistent())
    assert t.get_one(ch, queue)[2] == b"after"
    conn.close()

else:
    raise AssertionError("unknown phase %r" % PHASE)

t.done()
