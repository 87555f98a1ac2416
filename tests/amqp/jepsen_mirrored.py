"""The workload and checker of tests/mirrored_jepsen.rs (argv: the three nodes' AMQP
addresses HOST:PORT, then the queue, a mirrored queue declared already).

Through every node, as user "jepsen" (the clients are not on loopback, where guest
may log in): a publisher with confirms, one message at a time, each body
"PUBLISHER-SEQ" (persistent); and a consumer with manual acks (prefetch 50) that
records every delivery before it acks it. A connection that fails is made again
(the node was killed, say); a consumer that is cancelled consumes again. Prints
"running" once all started, and goes on until a line comes on stdin (the test has
stopped its faults, healed the network and restarted every node): then publishing
stops, the consumers drain the queue, and whatever is left is taken by basic.get.

The checker: every confirmed message must have been consumed (0 lost is the only
pass); duplicates are counted (at-least-once allows them); per consumer and
publisher, the messages consumed once and not marked redelivered must come in the
order they were published. Prints the tallies, then "ok" if nothing was lost and
nothing reordered.
"""

import sys
import threading
import time
from collections import Counter, defaultdict

import pika

assert len(sys.argv) == 5, "usage: jepsen_mirrored.py HOST:PORT HOST:PORT HOST:PORT QUEUE"
NODES = [(a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1])) for a in sys.argv[1:4]]
QUEUE = sys.argv[4]

# How long the drain waits without progress, and at most, once the faults are over.
DRAIN_IDLE = 30
DRAIN_MAX = 180
# A publish or a consumer that makes no progress for this long, with every node up
# and healed, is a hang (a broker bug), reported as a failure.
STUCK = 120

stop_publishing = threading.Event()
stop_consuming = threading.Event()
lock = threading.Lock()
confirmed = defaultdict(list)  # publisher -> seqs confirmed
attempts = Counter()  # publisher -> publishes tried
nacked = Counter()
unknown = Counter()  # the connection failed before the confirm came
deliveries = []  # (consumer, publisher, seq, redelivered)
reconnects = Counter()
cancels = Counter()
last_delivery = [time.monotonic()]


def params(host, port):
    return pika.ConnectionParameters(
        host=host,
        port=port,
        credentials=pika.PlainCredentials("jepsen", "jepsen"),
        heartbeat=5,
        blocked_connection_timeout=30,
        socket_timeout=5,
        connection_attempts=1,
    )


def close_quietly(conn):
    """Closes a connection that may be broken already."""
    try:
        if conn is not None and conn.is_open:
            conn.close()
    except Exception:
        pass


def publisher(idx, host, port):
    seq = 0
    while not stop_publishing.is_set():
        conn = None
        try:
            conn = pika.BlockingConnection(params(host, port))
            ch = conn.channel()
            ch.confirm_delivery()
            while not stop_publishing.is_set():
                body = b"%d-%d" % (idx, seq)
                attempts[idx] += 1
                try:
                    ch.basic_publish(
                        "", QUEUE, body, properties=pika.BasicProperties(delivery_mode=2)
                    )
                    with lock:
                        confirmed[idx].append(seq)
                except pika.exceptions.NackError:
                    nacked[idx] += 1
                seq += 1
        except Exception:  # the node went away, or refused: try again
            unknown[idx] += 1
            seq += 1
            reconnects["publisher %d" % idx] += 1
            time.sleep(0.2)
        finally:
            close_quietly(conn)


def consumer(idx, host, port):
    while not stop_consuming.is_set():
        conn = None
        try:
            conn = pika.BlockingConnection(params(host, port))
            ch = conn.channel()
            ch.basic_qos(prefetch_count=50)
            cancelled = []

            def on_message(channel, method, properties, body):
                pub, seq = body.split(b"-")
                with lock:
                    deliveries.append((idx, int(pub), int(seq), method.redelivered))
                    last_delivery[0] = time.monotonic()
                channel.basic_ack(method.delivery_tag)

            ch.add_on_cancel_callback(lambda frame: cancelled.append(frame))
            ch.basic_consume(QUEUE, on_message)
            while not stop_consuming.is_set():
                conn.process_data_events(time_limit=0.2)
                if cancelled:
                    cancels[idx] += 1
                    raise RuntimeError("cancelled by the broker")
        except Exception:
            reconnects["consumer %d" % idx] += 1
            time.sleep(0.2)
        finally:
            close_quietly(conn)


def left_over():
    """What is still in the queue, taken by basic.get through any node that answers
    (tried again for a while: right after the heal the queue may still be electing)."""
    errors, taken = [], []
    deadline = time.monotonic() + DRAIN_MAX
    while time.monotonic() < deadline:
        if left_over_once(taken, errors):
            return taken
        time.sleep(0.5)
    raise AssertionError("no node answered basic.get for the left-over messages: %s" % errors[-6:])


def left_over_once(taken, errors):
    """One round of `left_over` through each node, into `taken` (what one node handed
    out before it failed counts too); whether a node answered until the queue was empty."""
    for host, port in NODES:
        try:
            conn = pika.BlockingConnection(params(host, port))
            ch = conn.channel()
            while True:
                method, _, body = ch.basic_get(QUEUE, auto_ack=True)
                if method is None:
                    conn.close()
                    return True
                pub, seq = body.split(b"-")
                taken.append((int(pub), int(seq)))
        except Exception as e:
            errors.append("%s:%d: %r" % (host, port, e))
    return False


publishers = [
    threading.Thread(target=publisher, args=(i, h, p), daemon=True)
    for i, (h, p) in enumerate(NODES)
]
consumers = [
    threading.Thread(target=consumer, args=(i, h, p), daemon=True)
    for i, (h, p) in enumerate(NODES)
]
for t in publishers + consumers:
    t.start()
print("running", flush=True)

sys.stdin.readline()  # the faults are over, every node is up and healed
stop_publishing.set()
for t in publishers:
    t.join(timeout=STUCK)
stuck = [i for i, t in enumerate(publishers) if t.is_alive()]

with lock:
    want = {(p, s) for p, seqs in confirmed.items() for s in seqs}
drain_started = time.monotonic()
while True:
    with lock:
        seen = {(p, s) for _, p, s, _ in deliveries}
        idle = time.monotonic() - last_delivery[0]
    if want <= seen or idle > DRAIN_IDLE or time.monotonic() - drain_started > DRAIN_MAX:
        break
    time.sleep(0.5)
stop_consuming.set()
for t in consumers:
    t.join(timeout=STUCK)
stuck += ["consumer %d" % i for i, t in enumerate(consumers) if t.is_alive()]
rest = left_over()

with lock:
    consumed = Counter((p, s) for _, p, s, _ in deliveries)
held = set(consumed) | set(rest)
lost = sorted(want - held)
duplicates = sum(n - 1 for n in consumed.values() if n > 1)
reordered = 0
last_seen = {}
for c, p, s, redelivered in deliveries:
    if redelivered or consumed[(p, s)] != 1:
        continue
    if last_seen.get((c, p), -1) > s:
        reordered += 1
    last_seen[(c, p)] = s

print(
    "tallies: published %d, confirmed %d, nacked %d, unknown %d; delivered %d, "
    "consumed %d distinct, duplicates %d, left in the queue %d, confirmed lost %d, "
    "reordered %d; consumer cancels %d, reconnects %s"
    % (
        sum(attempts.values()),
        len(want),
        sum(nacked.values()),
        sum(unknown.values()),
        len(deliveries),
        len(consumed),
        duplicates,
        len(rest),
        len(lost),
        reordered,
        sum(cancels.values()),
        dict(reconnects),
    )
)
assert not stuck, "stuck after the faults were over: %r" % stuck
assert not lost, "confirmed messages lost: %d, e.g. %r" % (len(lost), lost[:10])
assert reordered == 0, "%d messages consumed once came out of order" % reordered
assert want, "nothing was confirmed at all"
print("ok")
