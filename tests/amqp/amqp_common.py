"""Shared helpers of the pika test scripts (tests/amqp/*.py).

Every script takes the node's AMQP port as argv[1], checks with plain `assert`,
prints "ok" at the end and exits 0; a failed assertion exits 1 with its message
(and traceback) on stderr. Nothing here sleeps a fixed time: every wait polls with
a bounded deadline, so no check depends on the machine's speed.
"""

import os
import subprocess
import sys
import time

import pika
from pika.exceptions import (
    AMQPConnectionError,
    ChannelClosedByBroker,
    ConnectionClosedByBroker,
    ProbableAuthenticationError,
)

HOST = "127.0.0.1"
# How long any one wait may take before the check fails.
DEADLINE = 20.0
# How long to wait for a node that is still starting (a debug build is slow).
START_DEADLINE = 60.0


def port():
    assert len(sys.argv) >= 2, "usage: %s AMQP_PORT" % sys.argv[0]
    return int(sys.argv[1])


def params(p, user="guest", password="guest"):
    return pika.ConnectionParameters(
        host=HOST,
        port=p,
        credentials=pika.PlainCredentials(user, password),
        # No heartbeats: a slow machine must not lose the connection mid-test.
        heartbeat=0,
        blocked_connection_timeout=None,
        connection_attempts=1,
        socket_timeout=DEADLINE,
        stack_timeout=DEADLINE,
    )


def connect(p, user="guest", password="guest"):
    """A BlockingConnection, retried (bounded) while the node starts listening."""
    deadline = time.monotonic() + START_DEADLINE
    while True:
        try:
            return pika.BlockingConnection(params(p, user, password))
        except (ProbableAuthenticationError, ConnectionClosedByBroker):
            raise
        except AMQPConnectionError as e:
            if time.monotonic() > deadline:
                raise AssertionError(
                    "no AMQP listener on %s:%d after %.0f s: %r"
                    % (HOST, p, START_DEADLINE, e)
                )
            time.sleep(0.05)  # retry pacing while the node starts, not a wait for a result


def poll(conn, predicate, what, timeout=DEADLINE):
    """Processes I/O on `conn` until `predicate()` is true; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out after %.0f s waiting for %s" % (
            timeout,
            what,
        )
        conn.process_data_events(time_limit=0.1)


def get_one(ch, queue, no_ack=True, timeout=DEADLINE):
    """basic_get until a message arrives: (method, properties, body)."""
    deadline = time.monotonic() + timeout
    while True:
        method, props, body = ch.basic_get(queue, auto_ack=no_ack)
        if method is not None:
            return method, props, body
        assert time.monotonic() < deadline, "timed out after %.0f s waiting for a message on %r" % (
            timeout,
            queue,
        )
        ch.connection.process_data_events(time_limit=0.1)


def get_none(ch, queue):
    """Asserts the queue has no ready message right now (one basic.get)."""
    method, _, body = ch.basic_get(queue, auto_ack=True)
    assert method is None, "expected queue %r to be empty, got %r" % (queue, body)


def drain(ch, queue, n, no_ack=True):
    """Exactly `n` messages by basic_get (waiting for each), then none: their bodies."""
    bodies = [get_one(ch, queue, no_ack)[2] for _ in range(n)]
    get_none(ch, queue)
    return bodies


def count(ch, queue):
    """The queue's ready message count (passive declare)."""
    return ch.queue_declare(queue, passive=True).method.message_count


def wait_count(ch, queue, n, timeout=DEADLINE):
    """Waits until the queue holds exactly `n` ready messages."""
    seen = []

    def done():
        seen[:] = [count(ch, queue)]
        return seen[0] == n

    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "queue %r holds %r messages, expected %d" % (
            queue,
            seen[0],
            n,
        )
        ch.connection.process_data_events(time_limit=0.1)


def channel_error(fn, code, what):
    """Runs `fn()` and asserts it fails with a channel.close of `code` from the broker."""
    try:
        fn()
    except ChannelClosedByBroker as e:
        assert e.reply_code == code, "%s: expected channel close %d, got %d %r" % (
            what,
            code,
            e.reply_code,
            e.reply_text,
        )
        return e
    raise AssertionError("%s: expected channel close %d, but it succeeded" % (what, code))


def succeeds(fn, what):
    """Runs `fn()`, turning a close by the broker into a failed assertion."""
    try:
        return fn()
    except (ChannelClosedByBroker, ConnectionClosedByBroker) as e:
        raise AssertionError("%s: expected success, the node answered %d %r" % (what, e.reply_code, e.reply_text))


def closed_by_broker(conn, ch, code, what, timeout=DEADLINE):
    """Waits for the broker to close `ch` (after an asynchronous method such as a
    publish or an ack) and asserts the reply code."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            ch.connection.process_data_events(time_limit=0.1)
            # BlockingChannel raises the close only from its own calls.
            if ch.is_closed:
                reason = getattr(ch, "_closing_reason", None)
                raise reason if reason is not None else AssertionError(
                    "%s: channel closed without a reason" % what
                )
        except ChannelClosedByBroker as e:
            assert e.reply_code == code, "%s: expected channel close %d, got %d %r" % (
                what,
                code,
                e.reply_code,
                e.reply_text,
            )
            assert conn.is_open, "%s: the connection closed too" % what
            return e
        except ConnectionClosedByBroker as e:
            raise AssertionError(
                "%s: expected channel close %d, but the node closed the connection: %d %r"
                % (what, code, e.reply_code, e.reply_text)
            )
        assert time.monotonic() < deadline, "%s: the channel was not closed within %.0f s" % (
            what,
            timeout,
        )


def warren_run(*args):
    """Runs the `warren` CLI against the node under test (the Rust runner sets
    WARREN, WARREN_NODE and WARREN_COOKIE_FILE); returns (exit code, stdout, stderr)."""
    binary = os.environ.get("WARREN")
    assert binary, "WARREN is not set: run this script through tests/amqp_pika.rs"
    out = subprocess.run([binary, *args], capture_output=True, text=True, timeout=DEADLINE * 3)
    return out.returncode, out.stdout, out.stderr


def warren(*args):
    """Runs the CLI and returns its stdout; a failure is a failed assertion."""
    code, out, err = warren_run(*args)
    assert code == 0, "warren %s failed (%d): %s" % (" ".join(args), code, err)
    return out


def warren_fails(*args):
    """Runs the CLI, asserts it fails, and returns its stderr."""
    code, out, err = warren_run(*args)
    assert code != 0, "warren %s succeeded: %s" % (" ".join(args), out)
    return err


def done():
    print("ok")
    sys.stdout.flush()
