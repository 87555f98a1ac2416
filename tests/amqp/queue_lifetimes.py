"""Queues that delete themselves, through pika: an auto-delete queue goes when its last
consumer cancels (RabbitMQ: at once), a queue with x-expires goes once unused for that
long; either way it is gone for good (passive declare 404) and can be declared anew.
"""

import time

import amqp_common as t
from pika.exceptions import ChannelClosedByBroker, NackError, UnroutableError

conn = t.connect(t.port())
ch = conn.channel()


def gone(name, what, timeout=t.DEADLINE):
    """Polls (a passive declare on a fresh channel each time) until the queue is gone."""
    deadline = time.monotonic() + timeout
    while True:
        probe = conn.channel()
        try:
            ok = probe.queue_declare(name, passive=True).method
        except ChannelClosedByBroker as e:
            assert e.reply_code == 404, "%s: expected 404, got %r" % (what, e)
            return
        probe.close()
        assert time.monotonic() < deadline, "%s: queue %r still exists after %.0f s (%r)" % (
            what,
            name,
            timeout,
            ok,
        )
        conn.process_data_events(time_limit=0.1)


# ----- auto-delete: gone after its last consumer cancels ---------------------------
ch.queue_declare("auto", auto_delete=True)
c = conn.channel()
tag1 = c.basic_consume("auto", lambda *a: None)
tag2 = c.basic_consume("auto", lambda *a: None)
c.basic_cancel(tag1)
ok = ch.queue_declare("auto", passive=True).method  # one consumer left: still there
assert ok.consumer_count == 1, "one consumer left: %r" % ok
c.basic_cancel(tag2)
gone("auto", "an auto-delete queue after its last consumer cancelled")
# The name is free again: a new, working queue.
ch.queue_declare("auto", auto_delete=True)
ch.basic_publish("", "auto", b"again")
assert t.get_one(ch, "auto")[2] == b"again", "the redeclared auto-delete queue works"

# An auto-delete queue also goes when its consumer's channel closes.
ch.queue_declare("auto2", auto_delete=True)
c2 = conn.channel()
c2.basic_consume("auto2", lambda *a: None)
c2.close()
gone("auto2", "an auto-delete queue after its consumer's channel closed")

# ----- x-expires: an unused queue goes ---------------------------------------------
# A declare (passive too) renews the lease, so here the probe is a mandatory publish
# to the queue's name: returned (UnroutableError) once the queue is gone.
ch.queue_declare("expiring", arguments={"x-expires": 200})
probe = conn.channel()
probe.confirm_delivery()
deadline = time.monotonic() + t.DEADLINE
while True:
    try:
        probe.basic_publish("", "expiring", b"probe", mandatory=True)
    except UnroutableError:
        break
    except NackError:
        raise AssertionError("a mandatory publish to the expired queue 'expiring' was nacked, not returned")
    assert time.monotonic() < deadline, "a queue with x-expires 200 ms still routes after %.0f s" % t.DEADLINE
    conn.process_data_events(time_limit=0.1)
gone("expiring", "a queue with x-expires 200 ms")
ch.queue_declare("expiring", arguments={"x-expires": 60000})
ch.basic_publish("", "expiring", b"fresh")
assert t.get_one(ch, "expiring")[2] == b"fresh", "the redeclared queue works"

assert conn.is_open, "the connection is still open"
conn.close()
t.done()
