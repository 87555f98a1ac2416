"""RabbitMQ's own CLI for the management API, rabbitmqadmin v2, used unchanged against
a Warren node: overview, queues, exchanges, bindings, messages, users, vhosts,
permissions, connections, definitions export and import, health checks.

Usage: rabbitmqadmin.py AMQP_PORT HTTP_PORT, with RABBITMQADMIN set to the binary.
Prints "ok" when every command did what it does against RabbitMQ.
"""

import json
import os
import subprocess
import sys
import tempfile
import threading

import pika

AMQP, HTTP = int(sys.argv[1]), int(sys.argv[2])
BINARY = os.environ["RABBITMQADMIN"]
# No ~/.rabbitmqadmin.conf: every setting comes from the flags.
HOME = tempfile.mkdtemp()


def admin(*args, user=("guest", "guest"), vhost=None, code=0):
    """Runs rabbitmqadmin; its stdout. Fails unless it exits with `code`."""
    flags = ["--host", "127.0.0.1", "--port", str(HTTP), "--username", user[0], "--password", user[1]]
    if vhost:
        flags += ["--vhost", vhost]
    run = subprocess.run([BINARY, *flags, "--non-interactive", *args], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, HOME=HOME))
    assert run.returncode == code, f"rabbitmqadmin {' '.join(args)}: exit {run.returncode}\n{run.stdout}\n{run.stderr}"
    return run.stdout + run.stderr


overview = admin("show", "overview")
assert "Warren" in overview, overview

admin("declare", "queue", "--name", "orders", "--type", "classic", "--durable", "true")
admin("declare", "queue", "--name", "replicated", "--type", "quorum")
admin("declare", "stream", "--name", "clicks", "--expiration", "7D")
queues = admin("list", "queues")
for name in ["orders", "replicated", "clicks"]:
    assert name in queues, queues
assert "quorum" in queues and "stream" in queues, queues

assert "routed successfully" in admin("publish", "message", "--routing-key", "orders", "--payload", "hello")
assert "NOT routed" in admin("publish", "message", "--exchange", "amq.direct", "--routing-key", "nobody",
                             "--payload", "lost")
got = admin("get", "messages", "--queue", "orders", "--count", "1", "--ack-mode", "ack_requeue_true")
assert "hello" in got, got
got = admin("get", "messages", "--queue", "orders", "--count", "5")
assert "hello" in got, got
assert "hello" not in admin("get", "messages", "--queue", "orders", "--count", "5"), "acked and gone"

admin("declare", "exchange", "--name", "events", "--type", "topic")
admin("declare", "binding", "--source", "events", "--destination-type", "queue", "--destination", "orders",
      "--routing-key", "order.#")
assert "order.#" in admin("list", "bindings")
assert "routed successfully" in admin("publish", "message", "--exchange", "events", "--routing-key", "order.new",
                                      "--payload", "via events")
admin("purge", "queue", "--name", "orders")
admin("delete", "binding", "--source", "events", "--destination-type", "queue", "--destination", "orders",
      "--routing-key", "order.#")
assert "order.#" not in admin("list", "bindings")
assert "events" in admin("list", "exchanges")

admin("declare", "vhost", "--name", "tenant")
admin("declare", "user", "--name", "bob", "--password", "s3cret", "--tags", "management")
admin("declare", "permissions", "--user", "bob", "--configure", ".*", "--read", ".*", "--write", ".*",
      vhost="tenant")
admin("declare", "queue", "--name", "bobs", user=("bob", "s3cret"), vhost="tenant")
assert "bobs" in admin("list", "queues", user=("bob", "s3cret"), vhost="tenant")
assert "bob" in admin("list", "users") and "tenant" in admin("list", "vhosts")
assert "tenant" in admin("list", "permissions")
admin("list", "nodes")

# A live client: its connection, channel and consumer, then closed from the CLI.
closed, ready = {}, threading.Event()


def client():
    conn = pika.BlockingConnection(pika.ConnectionParameters(port=AMQP))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=3)
    ch.basic_consume("orders", lambda *a: None, consumer_tag="cli-watcher")
    ready.set()
    try:
        conn.sleep(30)
    except pika.exceptions.ConnectionClosedByBroker as e:
        closed["by"] = e.reply_code


threading.Thread(target=client, daemon=True).start()
assert ready.wait(20)
connections = admin("list", "connections")
assert "AMQP 0-9-1" in connections, connections
assert "cli-watcher" in admin("list", "consumers")
channels = admin("list", "channels")
assert " (1)" in channels, channels
status, body = 0, None
import urllib.request  # noqa: E402
req = urllib.request.Request(f"http://127.0.0.1:{HTTP}/api/connections")
req.add_header("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")
name = json.load(urllib.request.urlopen(req, timeout=20))[0]["name"]
admin("close", "connection", "--name", name)
for _ in range(200):
    if "by" in closed:
        break
    threading.Event().wait(0.1)
assert closed.get("by") == 320, closed
admin("close", "connection", "--name", name, code=65)
admin("close", "connection", "--name", name, "--idempotently")

# Definitions: export, lose a queue, import it back.
path = os.path.join(HOME, "definitions.json")
admin("definitions", "export", "--file", path)
with open(path) as f:
    defs = json.load(f)
assert any(q["name"] == "orders" for q in defs["queues"]), defs["queues"]
admin("delete", "queue", "--name", "orders")
assert "orders" not in admin("list", "queues")
admin("definitions", "import", "--file", path)
assert "orders" in admin("list", "queues")
admin("delete", "queue", "--name", "nope", code=65)
admin("delete", "queue", "--name", "nope", "--idempotently")

admin("health_check", "local_alarms")
admin("health_check", "cluster_wide_alarms")
admin("health_check", "port_listener", "--port", str(AMQP))
admin("health_check", "port_listener", "--port", "1", code=69)
admin("health_check", "node_is_quorum_critical")

print("ok")
