"""Streams (x-queue-type: stream) through pika, as RabbitMQ 3.10 has them.

A stream is an append-only log: consumers read from an offset of their choice
(x-stream-offset: first, last, next, an offset, a timestamp, an interval), need a
prefetch and manual acks (acks give credit, they do not remove messages), and every
delivery carries its offset in the x-stream-offset header. What a stream does not do
(basic.get, purge, nack/reject, no-ack consumers, global qos) is refused with
RabbitMQ's codes and texts. Retention drops the oldest chunks by size and by age.

Modes: "main" (everything above), "fill" (a stream to read after a SIGKILL) and
"restarted" (every confirmed message is there after the restart, offsets go on).
"""

import datetime
import sys
import time

import pika
from pika.exceptions import ConnectionClosedByBroker

import amqp_common as t

MODE = sys.argv[2] if len(sys.argv) > 2 else "main"
STREAM = {"x-queue-type": "stream"}
P = t.port()
conn = t.connect(P)


def publish(ch, queue, bodies, headers=None):
    """Publishes with confirms (the channel is in confirm mode: each waits)."""
    for body in bodies:
        ch.basic_publish(
            "", queue, body, pika.BasicProperties(delivery_mode=2, headers=headers)
        )


def consume(queue, n, offset=None, prefetch=10, connection=None, extra=None):
    """Starts a consumer at `offset` and returns its first `n` deliveries as (offset
    header, body, redelivered).

    It acks only as much as lets exactly `n` come: pika's BlockingChannel rejects the
    deliveries it has not dispatched yet when it cancels a consumer, and a stream
    answers a reject with 540 (as RabbitMQ does)."""
    c = (connection or conn).channel()
    prefetch = min(prefetch, n)
    c.basic_qos(prefetch_count=prefetch)
    got = []

    def on(chx, method, props, body):
        got.append((props.headers["x-stream-offset"], body, method.redelivered))
        if len(got) <= n - prefetch:
            chx.basic_ack(method.delivery_tag)

    args = {} if offset is None else {"x-stream-offset": offset}
    args.update(extra or {})
    tag = c.basic_consume(queue, on, arguments=args)
    t.poll(connection or conn, lambda: len(got) >= n, "%d deliveries of %r from %r" % (n, queue, offset))
    c.basic_cancel(tag)
    c.close()
    assert len(got) == n, got
    return got


def connection_closed(fn, code, what):
    """Runs `fn` on a fresh connection and asserts the node closes the connection with
    `code`; returns the reply text."""
    other = t.connect(P)
    try:
        fn(other)
        # nack and reject are asynchronous: the close comes with the next call.
        other.channel()
        t.poll(other, lambda: other.is_closed, what)
    except ConnectionClosedByBroker as e:
        assert e.reply_code == code, "%s: expected connection close %d, got %d %r" % (
            what,
            code,
            e.reply_code,
            e.reply_text,
        )
        return e.reply_text
    raise AssertionError("%s: expected connection close %d" % (what, code))


def main():
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("s1", durable=True, arguments=STREAM)
    ch.queue_declare("s1", durable=True, arguments=STREAM)  # the same declaration: ok
    publish(ch, "s1", [b"m%d" % i for i in range(100)])
    assert t.count(ch, "s1") == 100

    # Every start a consumer can ask for.
    got = consume("s1", 100, "first")
    assert [o for o, _, _ in got] == list(range(100)), got
    assert [b for _, b, _ in got] == [b"m%d" % i for i in range(100)]
    assert not any(r for _, _, r in got)
    got = consume("s1", 10, 40)
    assert [o for o, _, _ in got] == list(range(40, 50)), got
    assert [o for o, _, _ in consume("s1", 1, -5)] == [0]
    # One publish, one chunk: the last chunk is the last message.
    assert consume("s1", 1, "last") == [(99, b"m99", False)]
    assert [o for o, _, _ in consume("s1", 100, "1h")] == list(range(100))
    past = datetime.datetime.now() - datetime.timedelta(seconds=60)
    assert [o for o, _, _ in consume("s1", 100, past)] == list(range(100))

    # next (the default) and a time in the future: only what is published from now on.
    for offset in [None, "next", datetime.datetime.now() + datetime.timedelta(seconds=60)]:
        c = conn.channel()
        c.basic_qos(prefetch_count=5)
        got = []
        args = {} if offset is None else {"x-stream-offset": offset}
        c.basic_consume("s1", lambda x, m, p, b: got.append((p.headers["x-stream-offset"], b)), arguments=args)
        n = t.count(ch, "s1")
        publish(ch, "s1", [b"new%d" % n])
        t.poll(conn, lambda: len(got) >= 1, "the new message from %r" % (offset,))
        assert got == [(n, b"new%d" % n)], (offset, got)
        c.close()

    # Prefetch is credit: without acks a consumer holds exactly its prefetch; acks
    # (not removals) give it more, in order.
    c = conn.channel()
    c.basic_qos(prefetch_count=5)
    held = []
    c.basic_consume("s1", lambda x, m, p, b: held.append((m.delivery_tag, p.headers["x-stream-offset"])), arguments={"x-stream-offset": "first"})
    t.poll(conn, lambda: len(held) >= 5, "five deliveries")
    conn.process_data_events(time_limit=0.3)
    assert [o for _, o in held] == [0, 1, 2, 3, 4], held
    c.basic_ack(held[-1][0], multiple=True)
    t.poll(conn, lambda: len(held) >= 10, "five more after the acks")
    assert [o for _, o in held] == list(range(10)), held
    c.close()
    assert t.count(ch, "s1") == 103, "acks remove nothing from a stream"

    # Two consumers of one channel both hold offset 0: each ack is its own
    # consumer's (the deliveries' tags differ), so both go on.
    c = conn.channel()
    c.basic_qos(prefetch_count=1)
    seen = {"x": [], "y": []}
    for name in seen:
        def on(chx, m, p, b, name=name):
            seen[name].append(p.headers["x-stream-offset"])
            if len(seen[name]) < 3:
                chx.basic_ack(m.delivery_tag)
        c.basic_consume("s1", on, consumer_tag=name, arguments={"x-stream-offset": "first"})
    t.poll(conn, lambda: len(seen["x"]) == 3 and len(seen["y"]) == 3, "both consumers of one channel")
    assert seen == {"x": [0, 1, 2], "y": [0, 1, 2]}, seen
    c.close()

    # Through an exchange, as any queue.
    ch.exchange_declare("to-streams", "fanout")
    ch.queue_bind("s1", "to-streams")
    ch.basic_publish("to-streams", "", b"routed", pika.BasicProperties(delivery_mode=2))
    assert consume("s1", 1, "last") == [(103, b"routed", False)]

    # What streams refuse, with RabbitMQ's codes and texts.
    rs = "queue 's1' in vhost '/'"
    c = conn.channel()
    e = t.channel_error(lambda: c.basic_consume("s1", lambda *a: None), 406, "no prefetch")
    assert e.reply_text == "PRECONDITION_FAILED - consumer prefetch count is not set for '%s'" % rs, e.reply_text
    c = conn.channel()
    c.basic_qos(prefetch_count=5)
    e = t.channel_error(lambda: c.basic_consume("s1", lambda *a: None, arguments={"x-priority": 3}), 406, "x-priority")
    assert e.reply_text == "PRECONDITION_FAILED - invalid arg 'x-priority' for %s of queue type rabbit_stream_queue" % rs, e.reply_text
    c = conn.channel()
    c.basic_qos(prefetch_count=5)
    e = t.channel_error(lambda: c.basic_consume("s1", lambda *a: None, arguments={"x-stream-offset": "10x"}), 406, "bad offset")
    assert e.reply_text == (
        "PRECONDITION_FAILED - invalid arg 'x-stream-offset' for %s: "
        '{invalid_stream_offset_arg,{longstr,<<"10x">>}}' % rs
    ), e.reply_text

    def no_ack(other):
        c = other.channel()
        c.basic_qos(prefetch_count=5)
        c.basic_consume("s1", lambda *a: None, auto_ack=True)

    text = connection_closed(no_ack, 540, "auto-ack consumer")
    assert text == "NOT_IMPLEMENTED - automatic acknowledgement not supported by stream queues %s" % rs, text

    def global_qos(other):
        c = other.channel()
        c.basic_qos(prefetch_count=5)
        c.basic_qos(prefetch_count=50, global_qos=True)
        c.basic_consume("s1", lambda *a: None)

    text = connection_closed(global_qos, 540, "global qos")
    assert text == "NOT_IMPLEMENTED - %s does not support global qos" % rs, text
    text = connection_closed(lambda o: o.channel().basic_get("s1"), 540, "basic.get")
    assert text == "NOT_IMPLEMENTED - basic.get not supported by stream queues %s" % rs, text
    text = connection_closed(lambda o: o.channel().queue_purge("s1"), 540, "purge")
    assert text == "NOT_IMPLEMENTED - queue.purge not supported by stream queues %s" % rs, text

    for requeue in [True, False]:
        def nack(other):
            c = other.channel()
            c.basic_qos(prefetch_count=5)
            tags = []
            c.basic_consume("s1", lambda x, m, p, b: tags.append(m.delivery_tag), arguments={"x-stream-offset": "first"})
            t.poll(other, lambda: tags, "a delivery to nack")
            c.basic_nack(tags[0], requeue=requeue)

        text = connection_closed(nack, 540, "nack requeue=%s" % requeue)
        assert text == "NOT_IMPLEMENTED - basic.nack and basic.reject not supported by stream queues %s" % rs, text

    c = conn.channel()
    e = t.channel_error(
        lambda: c.queue_declare("s2", durable=True, arguments=dict(STREAM, **{"x-message-ttl": 1000})),
        406,
        "x-message-ttl",
    )
    assert e.reply_text == (
        "PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue 's2' in vhost '/' "
        "of queue type rabbit_stream_queue"
    ), e.reply_text
    c = conn.channel()
    e = t.channel_error(
        lambda: c.queue_declare("s2", durable=True, arguments=dict(STREAM, **{"x-max-age": "7d"})),
        406,
        "a bad age",
    )
    assert e.reply_text.endswith("'x-max-age' for queue 's2' in vhost '/': invalid_max_age"), e.reply_text
    c = conn.channel()
    e = t.channel_error(lambda: c.queue_declare("s1", durable=True, arguments=dict(STREAM, **{"x-max-age": "2D"})), 406, "redeclared with an age")
    assert "inequivalent arg 'x-max-age' for queue 's1'" in e.reply_text, e.reply_text
    assert conn.is_open

    # Retention by size: old chunks go, the newest stay; a consumer from first starts
    # at the first offset kept.
    ch.queue_declare("small", durable=True, arguments=dict(STREAM, **{"x-max-length-bytes": 20000}))
    publish(ch, "small", [b"%04d" % i + b"x" * 996 for i in range(100)])
    t.poll(conn, lambda: t.count(ch, "small") <= 20, "size retention")
    c = conn.channel()
    c.basic_qos(prefetch_count=10)
    got = []

    def on(chx, method, props, body):
        got.append(props.headers["x-stream-offset"])
        chx.basic_ack(method.delivery_tag)

    c.basic_consume("small", on, arguments={"x-stream-offset": "first"})
    t.poll(conn, lambda: got and got[-1] == 99, "the newest message kept")
    c.close()
    # (A pass of retention may still have been under way when it started.)
    assert 10 <= len(got) <= 20 and got == list(range(got[0], 100)), got
    kept = t.count(ch, "small")

    # Retention by age: everything but the last chunk goes once older than the age.
    ch.queue_declare("brief", durable=True, arguments=dict(STREAM, **{"x-max-age": "1s"}))
    publish(ch, "brief", [b"b%d" % i for i in range(10)])
    t.poll(conn, lambda: t.count(ch, "brief") == 1, "age retention")
    assert consume("brief", 1, "first") == [(9, b"b9", False)]

    # Deleted, its log goes: declared again, it starts empty at offset 0.
    assert ch.queue_delete("small").method.message_count == kept
    ch.queue_declare("small", durable=True, arguments=STREAM)
    assert t.count(ch, "small") == 0
    publish(ch, "small", [b"again"])
    assert consume("small", 1, "first") == [(0, b"again", False)]


def partitioned():
    """A partitioned stream over AMQP, laid out as RabbitMQ's super streams, with
    Warren's x-partition-hash exchange type: keys land on Kafka's partitions."""
    ch = conn.channel()
    ch.confirm_delivery()
    ch.exchange_declare("orders", "x-partition-hash", durable=True)
    for i in range(3):
        ch.queue_declare("orders-%d" % i, durable=True, arguments=STREAM)
        ch.queue_bind("orders-%d" % i, "orders", str(i), arguments={"x-stream-partition-order": i})
    # Kafka's partitioner: "abc" and "foobar" go to partition 0 of 3,
    # "a-little-bit-long-string" and "a-little-bit-longer-string" to 2.
    for key in ["abc", "foobar", "a-little-bit-long-string", "a-little-bit-longer-string"]:
        ch.basic_publish("orders", key, key.encode(), pika.BasicProperties(delivery_mode=2))
    assert [t.count(ch, "orders-%d" % i) for i in range(3)] == [2, 0, 2]
    assert [b for _, b, _ in consume("orders-2", 2, "first")] == [
        b"a-little-bit-long-string",
        b"a-little-bit-longer-string",
    ]
    # Every key goes to exactly one partition.
    for i in range(30):
        ch.basic_publish("orders", "key-%d" % i, b"x", pika.BasicProperties(delivery_mode=2))
    assert sum(t.count(ch, "orders-%d" % i) for i in range(3)) == 34
    c = conn.channel()
    e = t.channel_error(lambda: c.queue_bind("orders-0", "orders", "x"), 406, "a binding without a partition")
    assert "x-stream-partition-order" in e.reply_text, e.reply_text


def groups():
    """Consumer groups: one active member per partition, spread by partition number;
    the group's offset kept by the broker; broadcast members each get everything."""
    ch = conn.channel()
    ch.confirm_delivery()
    ch.exchange_declare("events", "direct", durable=True)
    for i in range(2):
        ch.queue_declare("events-%d" % i, durable=True, arguments=STREAM)
        ch.queue_bind("events-%d" % i, "events", str(i), arguments={"x-stream-partition-order": i})

    def publish_events(n, tag):
        for i in range(n):
            ch.basic_publish("events", str(i % 2), b"%s%d" % (tag, i), pika.BasicProperties(delivery_mode=2))

    def member(args):
        c = t.connect(P)
        chm = c.channel()
        chm.basic_qos(prefetch_count=100)
        got = []
        for i in range(2):
            def on(x, meth, props, body, i=i):
                got.append((i, props.headers["x-stream-offset"], body))
                x.basic_ack(meth.delivery_tag)
            chm.basic_consume("events-%d" % i, on, arguments=args)
        c.barrier = lambda: chm.basic_qos(prefetch_count=100)
        return c, got

    def pump(connections, until, what):
        deadline = time.monotonic() + t.DEADLINE
        while not until():
            assert time.monotonic() < deadline, "timed out waiting for " + what
            for c in connections:
                c.process_data_events(time_limit=0.05)

    publish_events(10, b"old")
    group = {"x-stream-group": "billing", "x-stream-offset": "first"}
    c0, got0 = member(group)
    pump([c0], lambda: len(got0) == 10, "the only member to get everything")
    # A method on the same channel after the acks: they reached the stream first.
    c0.barrier()
    c1, got1 = member(group)
    # Partition 0 stays with the first member, partition 1 goes to the second; what
    # the group had acked is not sent again.
    publish_events(10, b"new")
    pump([c0, c1], lambda: len(got0) == 15 and len(got1) == 5, "the new messages, spread")
    assert {p for p, _, _ in got0[10:]} == {0}, got0[10:]
    assert {p for p, _, _ in got1} == {1}, got1
    assert [b for _, _, b in got1] == [b"new1", b"new3", b"new5", b"new7", b"new9"], got1
    # The first member leaves: the second takes partition 0 over from the group's
    # offset; nothing acked comes again.
    c0.close()
    publish_events(2, b"late")
    pump([c1], lambda: len(got1) == 7, "the partitions of the member that left")
    assert sorted(b for _, _, b in got1[5:]) == [b"late0", b"late1"], got1[5:]
    # A member that comes back later goes on from the group's offset, not from its
    # own x-stream-offset.
    c1.close()
    publish_events(2, b"while-away")
    c2, got2 = member(group)
    pump([c2], lambda: len(got2) == 2, "what was published while the group was away")
    assert sorted(b for _, _, b in got2) == [b"while-away0", b"while-away1"], got2
    c2.close()

    # Broadcast: each member gets everything, with an offset of its own by name.
    def broadcast(name):
        return dict(group, **{"x-stream-group": "audit", "x-stream-group-mode": "broadcast", "x-stream-member": name})

    a, got_a = member(broadcast("a"))
    b, got_b = member(broadcast("b"))
    pump([a, b], lambda: len(got_a) == 24 and len(got_b) == 24, "every message for each member")
    a.close()
    publish_events(2, b"again")
    a, got_a = member(broadcast("a"))
    pump([a, b], lambda: len(got_a) == 2 and len(got_b) == 26, "only what member a did not have")
    a.close()
    b.close()

    # Refused group arguments: 406 with the reason.
    c = conn.channel()
    c.basic_qos(prefetch_count=5)
    e = t.channel_error(
        lambda: c.basic_consume("events-0", lambda *a: None, arguments={"x-stream-group": "g", "x-stream-group-mode": "broadcast"}),
        406,
        "broadcast without a member",
    )
    assert "invalid arg 'x-stream-member'" in e.reply_text, e.reply_text

    # Tags, filtered on the broker: RocketMQ's expressions and RabbitMQ's arrays.
    ch.queue_declare("tagged", durable=True, arguments=STREAM)
    for tag in ["tagA", "tagB", "tagC", None, "tagA"]:
        headers = {"x-stream-filter-value": tag} if tag else None
        props = pika.BasicProperties(delivery_mode=2, headers=headers)
        ch.basic_publish("", "tagged", (tag or "untagged").encode(), props)
    got = consume("tagged", 3, "first", extra={"x-stream-filter": "tagA || tagB"})
    assert [(o, b) for o, b, _ in got] == [(0, b"tagA"), (1, b"tagB"), (4, b"tagA")], got
    got = consume(
        "tagged", 2, "first", extra={"x-stream-filter": ["tagC"], "x-stream-match-unfiltered": True}
    )
    assert [(o, b) for o, b, _ in got] == [(2, b"tagC"), (3, b"untagged")], got
    # A group that filters moves its offset past what it does not take.
    got = consume("tagged", 1, "first", extra={"x-stream-filter": "tagC", "x-stream-group": "c-only"})
    assert [o for o, _, _ in got] == [2], got
    c = conn.channel()
    c.basic_qos(prefetch_count=5)
    e = t.channel_error(
        lambda: c.basic_consume("tagged", lambda *a: None, arguments={"x-stream-filter": 7}),
        406,
        "a numeric filter",
    )
    assert "invalid arg 'x-stream-filter'" in e.reply_text, e.reply_text


def fill():
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("kept", durable=True, arguments=STREAM)
    publish(ch, "kept", [b"k%d" % i for i in range(300)])
    # Larger appends too: several chunks in one append.
    for round in range(3):
        for i in range(100):
            ch.basic_publish("", "kept", b"batch%d-%d" % (round, i), pika.BasicProperties(delivery_mode=2), mandatory=False)
    assert t.count(ch, "kept") == 600


def restarted():
    ch = conn.channel()
    ch.confirm_delivery()
    assert t.count(ch, "kept") == 600
    got = consume("kept", 600, "first", prefetch=100)
    assert [o for o, _, _ in got] == list(range(600))
    assert got[299][1] == b"k299" and got[599][1] == b"batch2-99", got[-1]
    # Offsets go on after the restart.
    publish(ch, "kept", [b"after"])
    assert consume("kept", 1, "last") == [(600, b"after", False)]


def publish_until_killed():
    """Four confirming publishers (so appends carry several messages) until the node
    is killed under them; every confirmed body goes to the file in argv[3]."""
    import threading

    path = sys.argv[3]
    ch = conn.channel()
    ch.queue_declare("crash", durable=True, arguments=STREAM)
    confirmed = []
    lock = threading.Lock()
    started = threading.Event()

    def publisher(k):
        try:
            c = pika.BlockingConnection(t.params(P))
            chp = c.channel()
            chp.confirm_delivery()
            i = 0
            while True:
                body = b"p%d-%d" % (k, i)
                chp.basic_publish("", "crash", body, pika.BasicProperties(delivery_mode=2))
                with lock:
                    confirmed.append(body)
                    if len(confirmed) >= 200:
                        started.set()
                i += 1
        except Exception:
            return  # the node was killed

    threads = [threading.Thread(target=publisher, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    assert started.wait(t.DEADLINE), "200 confirms"
    print("started", flush=True)
    for th in threads:
        th.join(t.DEADLINE)
    with open(path, "wb") as f:
        f.write(b"\n".join(confirmed))


def check_killed():
    """After the restart: the log is dense from offset 0, holds each body once, and
    every confirmed body is in it."""
    with open(sys.argv[3], "rb") as f:
        confirmed = [b for b in f.read().split(b"\n") if b]
    ch = conn.channel()
    ch.confirm_delivery()
    n = t.count(ch, "crash")
    assert n >= len(confirmed) >= 200, (n, len(confirmed))
    got = consume("crash", n, "first", prefetch=500)
    assert [o for o, _, _ in got] == list(range(n))
    bodies = [b for _, b, _ in got]
    assert len(set(bodies)) == n, "a body twice"
    missing = set(confirmed) - set(bodies)
    assert not missing, "confirmed and lost: %r" % sorted(missing)[:10]
    # Each publisher's messages in its order.
    for k in range(4):
        mine = [int(b.split(b"-")[1]) for b in bodies if b.startswith(b"p%d-" % k)]
        assert mine == sorted(mine), "publisher %d out of order" % k
    # And it goes on.
    publish(ch, "crash", [b"after"])
    last = consume("crash", 1, "last")
    assert last == [(n, b"after", False)], (n, last)


def member():
    """A group member that acks 30 messages, says so once the node has them, and then
    holds what it gets next without acking (until it is killed)."""
    ch = conn.channel()
    ch.basic_qos(prefetch_count=10)
    acked = []

    def on(x, m, p, b):
        if len(acked) < 30:
            acked.append(p.headers["x-stream-offset"])
            x.basic_ack(m.delivery_tag)

    ch.basic_consume("tasks", on, arguments={"x-stream-group": "workers", "x-stream-offset": "first"})
    t.poll(conn, lambda: len(acked) == 30, "30 messages to ack")
    ch.basic_qos(prefetch_count=10)  # after the acks on this channel: the node has them
    print("acked", acked[-1], flush=True)
    while True:
        conn.process_data_events(time_limit=1)


def group_member_killed():
    """A group member SIGKILLed holding unacked messages: the other member takes the
    partition over from the group's offset, which has every ack the dead one made."""
    import signal
    import subprocess

    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("tasks", durable=True, arguments=STREAM)
    publish(ch, "tasks", [b"task%d" % i for i in range(100)])
    first = subprocess.Popen(
        [sys.executable, __file__, str(P), "member"], stdout=subprocess.PIPE, text=True
    )
    line = first.stdout.readline()
    assert line.startswith("acked 29"), line
    # The second member joins (it waits: the first one is active) ...
    c = conn.channel()
    c.basic_qos(prefetch_count=10)
    got = []

    def on(x, m, p, b):
        got.append(p.headers["x-stream-offset"])
        x.basic_ack(m.delivery_tag)

    c.basic_consume("tasks", on, arguments={"x-stream-group": "workers", "x-stream-offset": "first"})
    conn.process_data_events(time_limit=0.3)
    assert got == [], "only one member of a group is active: %r" % got
    # ... and takes over when the first is killed: from offset 30, nothing lost, no
    # acked message again.
    first.send_signal(signal.SIGKILL)
    first.wait()
    t.poll(conn, lambda: len(got) == 70, "the rest after the member's death")
    assert got == list(range(30, 100)), got
    c.close()


MODES = {"main": main, "member": member, "group-member-killed": group_member_killed, "publish-until-killed": publish_until_killed, "check-killed": check_killed,
         "partitioned": partitioned, "groups": groups, "fill": fill, "restarted": restarted}
MODES[MODE]()
t.done()
