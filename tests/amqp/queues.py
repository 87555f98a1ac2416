"""Queue features through pika: message TTL with a dead-letter exchange (x-death,
reason 'expired'), per-message expiration, x-max-length with drop-head, priorities,
purge, delete if-empty / if-unused, exclusive queues (405 from another connection),
server-named queues, and the declare errors.
"""

import time

import amqp_common as t
import pika
from pika.exceptions import ChannelClosedByBroker

P = t.port()
conn = t.connect(P)
ch = conn.channel()
pub = conn.channel()
pub.confirm_delivery()


def publish(queue, body, **props):
    pub.basic_publish("", queue, body, properties=pika.BasicProperties(**props))


def death(props, what):
    headers = props.headers or {}
    deaths = headers.get("x-death")
    assert isinstance(deaths, list) and deaths, "%s: an x-death header, got %r" % (what, headers)
    return headers, deaths[0]


def gone(name, timeout=t.DEADLINE):
    """Polls (a passive declare on a fresh channel each time) until the queue is gone.

    An exclusive queue whose owner is closing answers 405 until its deletion lands."""
    deadline = time.monotonic() + timeout
    while True:
        probe = conn.channel()
        try:
            probe.queue_declare(name, passive=True)
            probe.close()
        except ChannelClosedByBroker as e:
            assert e.reply_code in (404, 405), "queue %r: expected 404, got %r" % (name, e)
            if e.reply_code == 404:
                return
        assert time.monotonic() < deadline, "queue %r still exists after %.0f s" % (name, timeout)
        conn.process_data_events(time_limit=0.1)


# ----- dead-letter exchange and routing --------------------------------------------
ch.exchange_declare("dlx", "direct")
ch.queue_declare("dead")
ch.queue_bind("dead", "dlx", routing_key="ttl")
ch.queue_declare("dead-rk")
ch.queue_bind("dead-rk", "dlx", routing_key="rerouted")

# ----- x-message-ttl: expired messages are dead-lettered ---------------------------
ch.queue_declare("ttl", arguments={"x-message-ttl": 100, "x-dead-letter-exchange": "dlx"})
publish("ttl", b"expires", headers={"keep": "me"})
_, props, body = t.get_one(ch, "dead")
assert body == b"expires", "the expired message was dead-lettered: %r" % body
headers, d = death(props, "queue ttl")
assert d.get("reason") == "expired", "x-death reason is 'expired': %r" % d
assert d.get("queue") == "ttl", "x-death queue: %r" % d
assert d.get("exchange") == "", "x-death exchange is the default one: %r" % d
assert list(d.get("routing-keys") or []) == ["ttl"], "x-death routing-keys: %r" % d
assert d.get("count") == 1, "x-death count: %r" % d
assert headers.get("keep") == "me", "the message's own headers survive: %r" % headers
assert headers.get("x-first-death-reason") == "expired", "x-first-death-reason: %r" % headers
assert headers.get("x-first-death-queue") == "ttl", "x-first-death-queue: %r" % headers
t.get_none(ch, "ttl")

# x-dead-letter-routing-key replaces the routing key.
ch.queue_declare(
    "ttl-rk",
    arguments={
        "x-message-ttl": 50,
        "x-dead-letter-exchange": "dlx",
        "x-dead-letter-routing-key": "rerouted",
    },
)
publish("ttl-rk", b"rerouted")
m, _, body = t.get_one(ch, "dead-rk")
assert body == b"rerouted" and m.routing_key == "rerouted", "rerouted: %r %r" % (body, m)

# ----- per-message expiration ---------------------------------------------------
ch.queue_declare("per-msg", arguments={"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "ttl"})
publish("per-msg", b"long-lived", expiration="600000")
publish("per-msg", b"short-lived", expiration="100")
_, props, body = t.get_one(ch, "dead")
assert body == b"short-lived", "the short-lived message expired: %r" % body
_, d = death(props, "per-message expiration")
assert d.get("reason") == "expired", "x-death reason: %r" % d
assert d.get("original-expiration") == "100", "x-death original-expiration: %r" % d
assert props.expiration is None, "a dead-lettered message loses its expiration: %r" % props.expiration
# The long-lived one is still there, with its expiration.
m, props, body = t.get_one(ch, "per-msg")
assert body == b"long-lived" and props.expiration == "600000", "kept: %r %r" % (body, props)
# expiration 0 on a queue nobody consumes: never delivered.
ch.queue_declare("exp-zero")
publish("exp-zero", b"now-or-never", expiration="0")
t.wait_count(ch, "exp-zero", 0)
t.get_none(ch, "exp-zero")

# ----- x-max-length with drop-head (the default overflow) ----------------------------
ch.queue_declare("maxlen", arguments={"x-max-length": 2})
for b in (b"1", b"2", b"3", b"4"):
    publish("maxlen", b)
assert t.count(ch, "maxlen") == 2, "x-max-length 2 holds 2"
assert t.drain(ch, "maxlen", 2) == [b"3", b"4"], "drop-head dropped the oldest"
# ... and the dropped heads are dead-lettered with reason 'maxlen'.
ch.queue_declare(
    "maxlen-dlx",
    arguments={
        "x-max-length": 1,
        "x-overflow": "drop-head",
        "x-dead-letter-exchange": "dlx",
        "x-dead-letter-routing-key": "ttl",
    },
)
publish("maxlen-dlx", b"old")
publish("maxlen-dlx", b"new")
_, props, body = t.get_one(ch, "dead")
assert body == b"old", "the dropped head was dead-lettered: %r" % body
_, d = death(props, "maxlen")
assert d.get("reason") == "maxlen", "x-death reason 'maxlen': %r" % d
assert t.drain(ch, "maxlen-dlx", 1) == [b"new"], "the newest stayed"

# ----- x-max-priority ---------------------------------------------------------------
ch.queue_declare("prio", arguments={"x-max-priority": 10})
for body, prio in ((b"p1", 1), (b"p5a", 5), (b"p9", 9), (b"none", None), (b"p5b", 5), (b"p20", 20)):
    if prio is None:
        publish("prio", body)
    else:
        publish("prio", body, priority=prio)
got = t.drain(ch, "prio", 6)
# Above the maximum counts as the maximum; no priority counts as 0; FIFO within one.
assert got == [b"p20", b"p9", b"p5a", b"p5b", b"p1", b"none"], "priority order: %r" % got

# ----- purge ------------------------------------------------------------------------
ch.queue_declare("purge-me")
for i in range(7):
    publish("purge-me", b"x%d" % i)
r = ch.queue_purge("purge-me")
assert r.method.message_count == 7, "purge-ok counts 7: %r" % r.method
assert ch.queue_purge("purge-me").method.message_count == 0, "a second purge counts 0"

# ----- declare-ok counts --------------------------------------------------------------
ch.queue_declare("counts")
publish("counts", b"a")
publish("counts", b"b")
c = conn.channel()
c.basic_consume("counts", lambda *a: None, auto_ack=False)
t.poll(conn, lambda: t.count(ch, "counts") == 0, "both delivered to the consumer")
ok = ch.queue_declare("counts", passive=True).method
assert (ok.message_count, ok.consumer_count) == (0, 1), "declare-ok counts: %r" % ok

# ----- delete if-unused / if-empty --------------------------------------------------
bad = conn.channel()
t.channel_error(lambda: bad.queue_delete("counts", if_unused=True), 406, "delete if_unused with a consumer")
c.close()  # the two deliveries go back
t.wait_count(ch, "counts", 2)
bad = conn.channel()
t.channel_error(lambda: bad.queue_delete("counts", if_empty=True), 406, "delete if_empty on a non-empty queue")
assert t.count(ch, "counts") == 2, "the refused delete kept the messages"
r = ch.queue_delete("counts")
assert r.method.message_count == 2, "delete-ok counts the messages: %r" % r.method
gone("counts")
ch.queue_declare("empty")
ch.queue_delete("empty", if_empty=True, if_unused=True)
gone("empty")

# ----- exclusive queues ---------------------------------------------------------------
ch.queue_declare("mine", exclusive=True)
publish("mine", b"private")
other = t.connect(P)
for what, fn in (
    ("declare", lambda o: o.queue_declare("mine", exclusive=True)),
    ("passive declare", lambda o: o.queue_declare("mine", passive=True)),
    ("consume", lambda o: o.basic_consume("mine", lambda *a: None)),
    ("get", lambda o: o.basic_get("mine")),
    ("purge", lambda o: o.queue_purge("mine")),
    ("delete", lambda o: o.queue_delete("mine")),
    ("bind", lambda o: o.queue_bind("mine", "amq.fanout")),
):
    oc = other.channel()
    t.channel_error(lambda: fn(oc), 405, "%s of another connection's exclusive queue" % what)
assert other.is_open, "405s close channels, not the connection"
# The owner still uses it.
assert t.drain(ch, "mine", 1) == [b"private"], "the owner reads its exclusive queue"
# When the owner's connection closes, the queue goes.
owner = t.connect(P)
owner.channel().queue_declare("owned-by-a-closing-connection", exclusive=True)
owner.close()
gone("owned-by-a-closing-connection")
other.close()

# ----- server-named queues --------------------------------------------------------
r = ch.queue_declare("", exclusive=True)
name = r.method.queue
assert name, "a server-named queue has a name"
assert name.startswith("amq.gen-"), "server-named queues are amq.gen-*: %r" % name
r2 = ch.queue_declare("", exclusive=True)
assert r2.method.queue != name, "two server-named queues differ: %r" % name
publish(name, b"to-generated")
assert t.drain(ch, name, 1) == [b"to-generated"], "the server-named queue works"
ch.queue_declare(name, passive=True)

# ----- declare errors ----------------------------------------------------------------
bad = conn.channel()
t.channel_error(lambda: bad.queue_declare("nope", passive=True), 404, "passive declare of a missing queue")
bad = conn.channel()
t.channel_error(
    lambda: bad.queue_declare("ttl", arguments={"x-message-ttl": 999}),
    406,
    "redeclare with a different x-message-ttl",
)
bad = conn.channel()
t.channel_error(lambda: bad.queue_declare("ttl", durable=True), 406, "redeclare as durable")
bad = conn.channel()
t.channel_error(
    lambda: bad.queue_declare("bad-arg", arguments={"x-max-length": "ten"}),
    406,
    "x-max-length that is not a number",
)

assert conn.is_open, "the connection survived every channel error"
conn.close()
t.done()
