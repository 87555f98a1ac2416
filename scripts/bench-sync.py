"""Issue 19's synchronous path: pika's BlockingConnection with publisher confirms, one
message in flight (publish, wait for its confirm, publish the next), 1 KiB persistent
messages spread round-robin over QUEUES durable queues.

    python3 scripts/bench-sync.py URI QUEUES COUNT BROKER_PID

Declares the queues (not timed), publishes COUNT messages, reads the broker's CPU
(utime + stime of BROKER_PID from /proc) around the publishing only, deletes the
queues, and prints one line: msg/s, µs of broker CPU per message, the client's own
CPU per message (pika's: it is part of every round trip), and the publish-to-confirm
latency's p50 / p99. Run by scripts/bench-amqp (scenarios sync-10
and sync-10k)."""

import os
import resource
import sys
import time

import pika

uri, queues, count, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
hz = os.sysconf("SC_CLK_TCK")


def ticks():
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


params = pika.URLParameters(uri)
params.blocked_connection_timeout = 60
conn = pika.BlockingConnection(params)
ch = conn.channel()
names = [f"sync-{queues}-{i}" for i in range(queues)]
for name in names:
    ch.queue_declare(name, durable=True)
ch.confirm_delivery()
body = b"s" * 1024
props = pika.BasicProperties(delivery_mode=2)
latencies = []
before = ticks()
own = resource.getrusage(resource.RUSAGE_SELF)
start = time.monotonic()
for i in range(count):
    sent = time.monotonic()
    # Returns once the broker confirmed it (raises if it was nacked).
    ch.basic_publish("", names[i % queues], body, props)
    latencies.append(time.monotonic() - sent)
elapsed = time.monotonic() - start
after = ticks()
own_after = resource.getrusage(resource.RUSAGE_SELF)
client_cpu = (own_after.ru_utime - own.ru_utime) + (own_after.ru_stime - own.ru_stime)
for name in names:
    ch.queue_delete(name)
conn.close()
latencies.sort()
p = lambda q: latencies[min(len(latencies) - 1, int(len(latencies) * q))] * 1000
print(
    f"{count} confirmed one at a time over {queues} queues: {count / elapsed:.0f} msg/s, "
    f"broker CPU {(after - before) / hz * 1e6 / count:.0f} µs/msg, "
    f"client CPU {client_cpu * 1e6 / count:.0f} µs/msg, "
    f"confirm p50 {p(0.5):.2f} ms p99 {p(0.99):.2f} ms"
)
