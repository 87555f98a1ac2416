"""The management API of a two-node cluster: both members listed from either node,
a declaration through one node's API read through the other's at once (no pause,
repeated), each node's supervision tree asked through the other node, and a client
connected to one node listed (connection, channel, consumer) and closed through
the other's API.

Usage: cluster.py HTTP_N1 HTTP_N2 AMQP_N1 AMQP_N2. Prints "ok" when every check held.
"""

import base64
import json
import sys
import threading
import time
import urllib.error
import urllib.request

PORTS = [int(a) for a in sys.argv[1:3]]
AMQP = [int(a) for a in sys.argv[3:5]]
AUTH = "Basic " + base64.b64encode(b"guest:guest").decode()


def call(port, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    req.add_header("Authorization", AUTH)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            text = resp.read().decode()
            return resp.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        text = e.read().decode()
        try:
            return e.code, json.loads(text)
        except json.JSONDecodeError:
            return e.code, text


deadline = time.time() + 60
while True:
    views = [call(p, "GET", "/api/nodes")[1] for p in PORTS]
    if all(isinstance(v, list) and sorted(n["name"] for n in v if n["running"]) == ["n1", "n2"] for v in views):
        break
    assert time.time() < deadline, f"the cluster never formed: {views}"
    time.sleep(0.2)

cluster = call(PORTS[1], "GET", "/api/warren/cluster")[1]
assert cluster["leader"] in ("n1", "n2") and len(cluster["members"]) == 2, cluster

# A write through one node, read through the other at once: no pause between.
for i in range(20):
    writer, reader = PORTS[i % 2], PORTS[(i + 1) % 2]
    status, answer = call(writer, "PUT", f"/api/queues/%2F/q{i}", {"durable": True})
    assert status == 201, (i, status, answer)
    status, answer = call(reader, "GET", f"/api/queues/%2F/q{i}")
    assert status == 200 and answer["name"] == f"q{i}", (i, status, answer)
    status, answer = call(writer, "PUT", f"/api/exchanges/%2F/x{i}", {"type": "fanout"})
    assert status == 201, (i, status, answer)
    status, answer = call(reader, "GET", f"/api/exchanges/%2F/x{i}")
    assert status == 200 and answer["type"] == "fanout", (i, status, answer)

# n2 runs with its memory alarm up: the cluster's alarm check sees it from n1, n1's own
# local check passes.
status, alarms = call(PORTS[0], "GET", "/api/health/checks/alarms")
assert status == 503 and {"node": "n2", "resource": "memory"} in alarms["alarms"], (status, alarms)
assert call(PORTS[0], "GET", "/api/health/checks/local-alarms")[0] == 200
assert call(PORTS[1], "GET", "/api/health/checks/local-alarms")[0] == 503

# Each node's tree, asked through the other node.
for port, other in [(PORTS[0], "n2"), (PORTS[1], "n1")]:
    status, tree = call(port, "GET", f"/api/warren/tree?node={other}")
    assert status == 200 and tree["node"] == other and tree["tree"]["name"] == "node", (status, tree)
    names = [c["name"] for c in tree["tree"]["children"]]
    assert "cluster" in names and "http" in names, names
status, missing = call(PORTS[0], "GET", "/api/warren/tree?node=nobody")
assert status == 404, (status, missing)

# A client of n2, seen and closed through n1's API.
import pika  # noqa: E402

closed, ready = {}, threading.Event()


def client():
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        port=AMQP[1], client_properties={"connection_name": "on-n2"}))
    ch = conn.channel()
    ch.basic_consume("q1", lambda *a: None, consumer_tag="n2-consumer")
    ready.set()
    try:
        conn.sleep(30)
    except pika.exceptions.ConnectionClosedByBroker as e:
        closed["by"] = (e.reply_code, e.reply_text)


threading.Thread(target=client, daemon=True).start()
assert ready.wait(20)
conns = call(PORTS[0], "GET", "/api/connections")[1]
assert [(c["node"], c["user_provided_name"]) for c in conns] == [("n2", "on-n2")], conns
channels = call(PORTS[0], "GET", "/api/channels")[1]
assert len(channels) == 1 and channels[0]["node"] == "n2", channels
overview = call(PORTS[0], "GET", "/api/overview")[1]
assert overview["object_totals"]["connections"] == 1, overview["object_totals"]
assert overview["object_totals"]["channels"] == 1, overview["object_totals"]
consumers = call(PORTS[0], "GET", "/api/consumers")[1]
assert [c["consumer_tag"] for c in consumers] == ["n2-consumer"], consumers
name = urllib.request.quote(conns[0]["name"], safe="")
assert call(PORTS[0], "GET", f"/api/connections/{name}")[0] == 200
req = urllib.request.Request(f"http://127.0.0.1:{PORTS[0]}/api/connections/{name}", method="DELETE")
req.add_header("Authorization", AUTH)
req.add_header("X-Reason", "moved by n1")
assert urllib.request.urlopen(req, timeout=30).status == 204
deadline = time.time() + 20
while "by" not in closed:
    assert time.time() < deadline, "the client on n2 was never closed"
    time.sleep(0.1)
assert closed["by"] == (320, "CONNECTION_FORCED - moved by n1"), closed
# The client hears the close before its connection's task on n2 has ended (it waits
# for the client's close-ok): listed a moment longer, then gone.
deadline = time.time() + 20
while call(PORTS[1], "GET", "/api/connections")[1] != []:
    assert time.time() < deadline, call(PORTS[1], "GET", "/api/connections")[1]
    time.sleep(0.05)
assert call(PORTS[0], "DELETE", f"/api/connections/{name}")[0] == 404

print("ok")
