"""Order across nodes (argv: the three AMQP ports, then messages per run).

A queue declared through node 1 lives there. One publisher on node 2 publishes
numbered messages to it; one consumer (manual acks, prefetch 500) reads them through
node 1 (the queue's node) or node 3 (a third one). AMQP 0-9-1 keeps the order of one
channel's publishes to one queue, and so must the cluster: every run checks that the
consumer got each message exactly once, none redelivered, in publish order. Runs:
transient and persistent, with and without publisher confirms, each consumer
placement. Every wait is bounded; no fixed sleeps.
"""

import sys
import threading

import pika

import amqp_common as t

assert len(sys.argv) == 5, "usage: cross_node_order.py PORT1 PORT2 PORT3 MESSAGES"
P1, P2, P3 = (int(p) for p in sys.argv[1:4])
N = int(sys.argv[4])
WAIT = 60


def consume(port, queue, got, errors, ready):
    try:
        conn = t.connect(port)
        ch = conn.channel()
        ch.basic_qos(prefetch_count=500)
        stream = ch.consume(queue, auto_ack=False, inactivity_timeout=WAIT)
        ready.set()
        for method, _props, body in stream:
            if method is None:
                errors.append("no message for %d s after %d of %d" % (WAIT, len(got), N))
                break
            got.append((int(body), method.redelivered))
            if len(got) % 100 == 0 or len(got) >= N:
                ch.basic_ack(method.delivery_tag, multiple=True)
            if len(got) >= N:
                break
        ch.cancel()
        conn.close()
    except Exception as e:  # reported by the main thread
        errors.append(repr(e))
        ready.set()


def run(name, consumer_port, persistent, confirm):
    declarer = t.connect(P1)
    queue = "order-" + name
    declarer.channel().queue_declare(queue, durable=True)
    got, errors, ready = [], [], threading.Event()
    reader = threading.Thread(target=consume, args=(consumer_port, queue, got, errors, ready))
    reader.start()
    assert ready.wait(WAIT), "the consumer did not start"
    publisher = t.connect(P2)
    ch = publisher.channel()
    if confirm:
        ch.confirm_delivery()
    props = pika.BasicProperties(delivery_mode=2 if persistent else 1)
    for i in range(N):
        ch.basic_publish("", queue, str(i).encode(), props)
    reader.join(WAIT * 2)
    assert not reader.is_alive(), "%s: the consumer hangs after %d of %d" % (name, len(got), N)
    assert not errors, "%s: %s" % (name, errors)
    numbers = [n for n, _ in got]
    late = [(a, b) for a, b in zip(numbers, numbers[1:]) if b < a]
    redelivered = sum(1 for _, r in got if r)
    lost = N - len(set(numbers))
    declarer.channel().queue_delete(queue)
    publisher.close()
    declarer.close()
    if (late, redelivered, lost, len(numbers)) != ([], 0, 0, N):
        return (
            "%s: %d messages arrived after a later one (first: %s), %d redelivered, %d lost, "
            "%d received of %d" % (name, len(late), late[:5], redelivered, lost, len(numbers), N)
        )
    print("%s: %d in order" % (name, N))
    return None


failures = []
for consumer_port, where in ((P1, "home"), (P3, "third")):
    for persistent in (False, True):
        for confirm in (False, True):
            name = "%s-%s-%s" % (
                where,
                "persistent" if persistent else "transient",
                "confirms" if confirm else "no-confirms",
            )
            failure = run(name, consumer_port, persistent, confirm)
            if failure:
                print(failure)
                failures.append(failure)
assert not failures, "\n".join(failures)
print("ok")
