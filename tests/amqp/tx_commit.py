"""tx.commit-ok means the transaction's publishes are done with, as in RabbitMQ:

- every mandatory publish no queue took has had its basic.return, before commit-ok;
- every message is in its queue: a passive declare right after commit-ok counts it;
- a persistent message in a durable queue is on disk: the node killed (SIGKILL) the
  moment commit-ok arrives still has it after a restart.

Run twice by tests/amqp_pika.rs: `tx_commit.py PORT commit` commits, then kills the
node; after the test restarts it, `tx_commit.py PORT restarted` counts what survived.
"""

import os
import signal
import sys

import pika

import amqp_common as t

QUEUE = "tx-safe"
# Messages of the first transaction (counted live) and of the second (killed after).
FIRST = 50
SECOND = 200
PERSISTENT = pika.BasicProperties(delivery_mode=2)


def node_pid():
    """The pid of the `warren node` under test: the process whose command line has
    the data dir that holds the cookie file the runner names."""
    data_dir = os.path.dirname(os.environ["WARREN_COOKIE_FILE"]).encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if b"node" in args and b"--data-dir" in args and data_dir in args:
            found.append(int(entry))
    assert len(found) == 1, "expected one node process with --data-dir %r: %r" % (data_dir, found)
    return found[0]


def commit():
    pid = node_pid()
    conn = t.connect(t.port())
    probe = conn.channel()
    probe.queue_declare(QUEUE, durable=True)
    tx = conn.channel()
    tx.tx_select()

    # ----- returns before commit-ok, messages counted at commit-ok --------------------
    tx.basic_publish("", "tx-nowhere", b"returned", mandatory=True)
    tx.basic_publish("", QUEUE, b"m0", properties=PERSISTENT, mandatory=True)
    for i in range(1, FIRST):
        tx.basic_publish("", QUEUE, b"m%d" % i, properties=PERSISTENT)
    # BlockingChannel defers return callbacks to the next process_data_events, after
    # tx_commit has returned; the channel underneath calls them as the frames arrive,
    # which is what tells the order of basic.return and commit-ok.
    order = []
    tx._impl.add_on_return_callback(
        lambda _ch, method, _props, body: order.append(
            ("return", method.reply_code, method.reply_text, method.routing_key, body)
        )
    )
    tx._impl.tx_commit(lambda _frame: order.append(("commit-ok",)))
    t.poll(conn, lambda: ("commit-ok",) in order, "tx.commit-ok")
    # No waiting: commit-ok means enqueued.
    counted = t.count(probe, QUEUE)
    assert counted == FIRST, "right after commit-ok the queue counts %d of %d" % (counted, FIRST)
    assert order == [("return", 312, "NO_ROUTE", "tx-nowhere", b"returned"), ("commit-ok",)], (
        "the unroutable mandatory publish comes back before commit-ok, the routed one "
        "does not: %r" % order
    )

    # ----- on disk at commit-ok ---------------------------------------------------------
    for i in range(FIRST, FIRST + SECOND):
        tx.basic_publish("", QUEUE, b"m%d" % i, properties=PERSISTENT)
    tx.tx_commit()
    os.kill(pid, signal.SIGKILL)
    t.done()


def restarted():
    conn = t.connect(t.port())
    ch = conn.channel()
    # The queue may still be loading its messages: waited for, bounded (a message
    # lost fails with the count it stopped at).
    t.wait_count(ch, QUEUE, FIRST + SECOND)
    conn.close()
    t.done()


{"commit": commit, "restarted": restarted}[sys.argv[2]]()
