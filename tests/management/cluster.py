"""The management API of a two-node cluster: both members listed from either node,
a declaration through one node's API read through the other's at once (no pause,
repeated), and each node's supervision tree asked through the other node.

Usage: cluster.py HTTP_PORT_N1 HTTP_PORT_N2. Prints "ok" when every check held.
"""

import base64
import json
import sys
import time
import urllib.error
import urllib.request

PORTS = [int(a) for a in sys.argv[1:3]]
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
        return e.code, e.read().decode()


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

# Each node's tree, asked through the other node.
for port, other in [(PORTS[0], "n2"), (PORTS[1], "n1")]:
    status, tree = call(port, "GET", f"/api/warren/tree?node={other}")
    assert status == 200 and tree["node"] == other and tree["tree"]["name"] == "node", (status, tree)
    names = [c["name"] for c in tree["tree"]["children"]]
    assert "cluster" in names and "http" in names, names
status, missing = call(PORTS[0], "GET", "/api/warren/tree?node=nobody")
assert status == 404, (status, missing)

print("ok")
