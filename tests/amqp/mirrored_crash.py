"""The clients of tests/mirrored_crash.rs (argv: a node's AMQP port, a mirrored queue
declared already, then a phase).

publish: a publisher with confirms, one persistent message at a time, the bodies
    unique ids "0", "1", "2", ... Prints "running" once the first is confirmed, and
    goes on, taking lines on stdin: "report N" (the test has seen a replica abort in
    the middle of a commit): it prints "passed P" once N more were published, and
    goes on; "then N" (the test has restarted the replica): it publishes N more and
    stops. Prints "published P" (ids 0 to P-1 were sent), "confirmed [...]" and
    "nacked [...]" (the ids, JSON), then "ok". A connection or channel error is a
    failure: the node it publishes through is not the one that aborts, and two of the
    three replicas are up all along, so every publish gets an answer (one that gets
    none for 60 s ends the script with a failure).
consume: a consumer with manual acks (prefetch 100) takes as many messages as the
    queue holds when it starts (its count, by passive declare; no consumer ran
    before, so none is unacked), acking each, and fails if no delivery comes for 60 s.
    Then it cancels and counts what is left. Prints "consumed [...]" (the ids in
    delivery order, JSON), "redelivered K" and "left L", then "ok"; the test checks.
"""

import json
import os
import queue
import sys
import threading
import time

import pika

import amqp_common as t

assert len(sys.argv) == 4, "usage: mirrored_crash.py PORT QUEUE publish|consume"
PORT = int(sys.argv[1])
QUEUE = sys.argv[2]
PHASE = sys.argv[3]
# The longest a publish may wait for its answer, and a consumer for its next delivery.
STALLED = 60.0


def watchdog(progress, what):
    """Ends the script if `progress[0]` (a time.monotonic()) gets older than STALLED:
    a blocking publish that is never answered would hang the test otherwise."""

    def watch():
        while True:
            time.sleep(1)  # how often to look, not a wait for a result
            if time.monotonic() - progress[0] > STALLED:
                print("no progress for %.0f s: %s" % (STALLED, what()), file=sys.stderr, flush=True)
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


if PHASE == "publish":
    commands = queue.Queue()  # (word, N) from stdin

    def read_stdin():
        for line in sys.stdin:
            word, n = line.split()
            commands.put((word, int(n)))

    threading.Thread(target=read_stdin, daemon=True).start()
    conn = t.connect(PORT)
    ch = conn.channel()
    ch.confirm_delivery()
    persistent = pika.BasicProperties(delivery_mode=2)
    confirmed, nacked = [], []
    published = 0
    stop_at = report_at = None
    answered = [time.monotonic()]
    watchdog(answered, lambda: "publish %d was never answered" % published)
    while stop_at is None or published < stop_at:
        while not commands.empty():
            word, n = commands.get()
            assert word in ("report", "then"), "unknown command %r" % word
            if word == "report":
                report_at = published + n
            else:
                stop_at = published + n
        try:
            ch.basic_publish("", QUEUE, b"%d" % published, persistent)
            confirmed.append(published)
        except pika.exceptions.NackError:
            nacked.append(published)
        answered[0] = time.monotonic()
        published += 1
        if published == 1:
            assert confirmed, "the first publish was nacked, with every replica up"
            print("running", flush=True)
        if published == report_at:
            print("passed %d" % published, flush=True)
    conn.close()
    print("published %d" % published)
    print("confirmed %s" % json.dumps(confirmed))
    print("nacked %s" % json.dumps(nacked))

elif PHASE == "consume":
    conn = t.connect(PORT)
    ch = conn.channel()
    held = t.count(ch, QUEUE)
    ch.basic_qos(prefetch_count=100)
    consumed, redelivered = [], [0]
    last = [time.monotonic()]

    def on_message(channel, method, properties, body):
        consumed.append(int(body))
        redelivered[0] += method.redelivered
        last[0] = time.monotonic()
        channel.basic_ack(method.delivery_tag)

    tag = ch.basic_consume(QUEUE, on_message)
    while len(consumed) < held:
        assert time.monotonic() - last[0] < STALLED, "no delivery for %.0f s after %d of %d" % (
            STALLED,
            len(consumed),
            held,
        )
        conn.process_data_events(time_limit=0.1)
    ch.basic_cancel(tag)
    # The acks went before this call on the channel: what is left was never delivered.
    left = t.count(ch, QUEUE)
    conn.close()
    print("consumed %s" % json.dumps(consumed))
    print("redelivered %d" % redelivered[0])
    print("left %d" % left)

else:
    raise AssertionError("unknown phase %r" % PHASE)

t.done()
