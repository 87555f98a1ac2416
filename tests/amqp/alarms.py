"""Resource alarms (RabbitMQ's memory high watermark and disk free limit), driven
with `warren limits`.

A connection that publishes while an alarm is up is told connection.blocked (with
the reason) and is not read any more: its later publishes wait in its socket. A
consumer is not held back. Once the alarm clears, the publisher is told
connection.unblocked and what it sent meanwhile arrives, in order, none lost.
"""

import json

import amqp_common as t

P = t.port()
blocked, unblocked = [], []

pub = t.connect(P)  # pika says it understands connection.blocked
pub.add_on_connection_blocked_callback(lambda _c, frame: blocked.append(frame.method.reason))
pub.add_on_connection_unblocked_callback(lambda _c, _frame: unblocked.append(True))
pch = pub.channel()
pch.queue_declare("alarm-q")
cons = t.connect(P)
cch = cons.channel()

info = json.loads(t.warren("limits", "--json"))
assert info["alarms"] == [], info
assert info["memory_used"] > 0 and info["memory_limit"] > info["memory_used"], info
# Queues may keep half the watermark in memory for their consumers; none is used yet.
assert info["queue_memory_limit"] == info["memory_limit"] // 2, info
assert info["queue_memory_used"] == 0, info

# ----- memory alarm ---------------------------------------------------------------------
info = json.loads(t.warren("limits", "--memory-high-watermark", "1MiB", "--json"))
assert info["alarms"] == ["memory"], info
assert info["queue_memory_limit"] == 512 * 1024, info
assert "memory" in t.warren("limits")

# The publish that finds the alarm up is taken; the connection is blocked after it.
pch.basic_publish("", "alarm-q", b"first")
t.poll(pub, lambda: blocked, "connection.blocked reaches the publisher")
assert blocked == ["low on memory"], blocked
for i in range(3):
    pch.basic_publish("", "alarm-q", b"held %d" % i)

# The consumer is not held back.
t.wait_count(cch, "alarm-q", 1)
assert t.get_one(cch, "alarm-q")[2] == b"first"
assert t.count(cch, "alarm-q") == 0, "a blocked connection's publishes were read"
assert not unblocked

t.warren("limits", "--memory-high-watermark", "0.4")
t.poll(pub, lambda: unblocked, "connection.unblocked reaches the publisher")
t.wait_count(cch, "alarm-q", 3)
assert [t.get_one(cch, "alarm-q")[2] for _ in range(3)] == [b"held 0", b"held 1", b"held 2"]

# ----- disk alarm -----------------------------------------------------------------------
info = json.loads(t.warren("limits", "--disk-free-limit", "1000000GiB", "--json"))
assert info["alarms"] == ["disk"], info
pch.basic_publish("", "alarm-q", b"second")
t.poll(pub, lambda: len(blocked) == 2, "connection.blocked for the disk alarm")
assert blocked[1] == "low on disk", blocked
pch.basic_publish("", "alarm-q", b"held")
t.wait_count(cch, "alarm-q", 1)
t.warren("limits", "--disk-free-limit", "50MB")
t.poll(pub, lambda: len(unblocked) == 2, "connection.unblocked after the disk alarm")
t.wait_count(cch, "alarm-q", 2)

assert "no unit" in t.warren_fails("limits", "--disk-free-limit", "100")
assert "at most 1" in t.warren_fails("limits", "--memory-high-watermark", "1.5")
pub.close()
cons.close()
t.done()
