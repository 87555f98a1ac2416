"""The management HTTP API against a real node, as RabbitMQ 3.10's answers it: the
objects (queues, exchanges, bindings, vhosts, users, permissions), messages
(publish, get), connections, channels and consumers of a live pika client, paging
and sorting, definitions, health checks, access control by user tags and vhost
permissions, bad input (400/404 with a JSON reason), and the Prometheus metrics.

Usage: api.py AMQP_PORT HTTP_PORT PROMETHEUS_PORT. Prints "ok" when every check held.
"""

import base64
import json
import sys
import threading
import time
import urllib.error
import urllib.request

import pika

AMQP, HTTP, PROM = (int(a) for a in sys.argv[1:4])
GUEST = ("guest", "guest")


def call(method, path, body=None, user=GUEST, headers=None, raw=None):
    """(status, parsed JSON body or text) of one request."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(f"http://127.0.0.1:{HTTP}{path}", data=data, method=method)
    if user is not None:
        token = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            status, text = resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    try:
        return status, json.loads(text) if text else None
    except json.JSONDecodeError:
        return status, text


def expect(method, path, status, body=None, user=GUEST, **kw):
    got, answer = call(method, path, body, user, **kw)
    assert got == status, f"{method} {path}: {got} {answer!r}, expected {status}"
    if status >= 400:
        assert isinstance(answer, dict) and answer.get("reason"), f"{method} {path}: no JSON reason: {answer!r}"
    return answer


def eventually(what, check, seconds=20):
    deadline = time.time() + seconds
    while True:
        got = check()
        if got:
            return got
        assert time.time() < deadline, f"never: {what}"
        time.sleep(0.1)


def metrics(path="/metrics"):
    with urllib.request.urlopen(f"http://127.0.0.1:{PROM}{path}", timeout=20) as resp:
        return resp.read().decode()


def metric(text, name, labels=None):
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == name or (labels and key.startswith(name + "{") and all(f'{k}="{v}"' in key for k, v in labels.items())):
            return float(value)
    return None


# ----- who may call --------------------------------------------------------------
expect("GET", "/api/overview", 401, user=None)
expect("GET", "/api/overview", 401, user=("guest", "wrong"))
expect("PUT", "/api/users/plain", 201, {"password": "pw", "tags": ""})
denied = expect("GET", "/api/overview", 401, user=("plain", "pw"))
assert "Not management user" in denied["reason"], denied
me = expect("GET", "/api/whoami", 200)
assert me == {"name": "guest", "tags": ["administrator"]}, me

# ----- the node -------------------------------------------------------------------
overview = expect("GET", "/api/overview", 200)
assert overview["product_name"] == "Warren" and overview["node"], overview
protocols = {l["protocol"]: l["port"] for l in overview["listeners"]}
assert protocols["amqp"] == AMQP and protocols["http"] == HTTP and protocols["http/prometheus"] == PROM, protocols
nodes = expect("GET", "/api/nodes", 200)
assert len(nodes) == 1 and nodes[0]["running"] and nodes[0]["being_drained"] is False, nodes
assert nodes[0]["mem_used"] > 0 and nodes[0]["mem_limit"] > 0, nodes
expect("GET", f"/api/nodes/{nodes[0]['name']}", 200)
expect("GET", "/api/nodes/nobody", 404)
missing = expect("GET", "/api/no/such/path", 404)
expect("POST", "/api/overview", 405, {})
expect("PUT", "/api/queues/%2F/formed", 415, raw=b"{}", headers={"Content-Type": "text/plain"})
expect("GET", "/api/queues/%2F/%FF%FE", 400)  # a name that is not UTF-8

# ----- queues ---------------------------------------------------------------------
expect("PUT", "/api/queues/%2F/orders", 201, {"durable": True, "arguments": {"x-max-length": 100}})
expect("PUT", "/api/queues/%2F/orders", 204, {"durable": True, "arguments": {"x-max-length": 100}})
bad = expect("PUT", "/api/queues/%2F/orders", 400, {"durable": False})
assert "durable" in bad["reason"], bad
expect("PUT", "/api/queues/%2F/x", 400, raw=b"{not json")
typed = expect("PUT", "/api/queues/%2F/x", 400, {"durable": 3})
assert "'durable' must be a boolean" in typed["reason"], typed
expect("PUT", "/api/queues/%2F/x", 400, {"arguments": [1, 2]})
expect("PUT", "/api/queues/nowhere/x", 404, {})
expect("PUT", "/api/queues/%2F/amq.reserved", 401, {})
q = expect("GET", "/api/queues/%2F/orders", 200)
assert q["name"] == "orders" and q["vhost"] == "/" and q["type"] == "classic" and q["arguments"] == {"x-max-length": 100}, q
expect("GET", "/api/queues/%2F/nope", 404)
for i in range(12):
    expect("PUT", f"/api/queues/%2F/page-{i:02}", 201, {})
page = expect("GET", "/api/queues/%2F?page=2&page_size=5&name=page-", 200)
assert page["total_count"] == 13 and page["filtered_count"] == 12 and page["page_count"] == 3, page
assert [q["name"] for q in page["items"]] == [f"page-{i:02}" for i in range(5, 10)], page["items"]
regex = expect("GET", "/api/queues?name=%5Epage-0%5B0-2%5D%24&use_regex=true", 200)
assert sorted(q["name"] for q in regex) == ["page-00", "page-01", "page-02"], regex
expect("GET", "/api/queues?page=0", 400)
expect("GET", "/api/queues?page=1&page_size=501", 400)

# ----- publish and get ------------------------------------------------------------
routed = expect("POST", "/api/exchanges/%2F/amq.default/publish", 200,
                {"routing_key": "orders", "payload": "first", "payload_encoding": "string",
                 "properties": {"delivery_mode": 2, "headers": {"h": "v"}}})
assert routed == {"routed": True}, routed
nowhere = expect("POST", "/api/exchanges/%2F/amq.direct/publish", 200,
                 {"routing_key": "nobody", "payload": "lost", "payload_encoding": "string", "properties": {}})
assert nowhere == {"routed": False}, nowhere
expect("POST", "/api/exchanges/%2F/amq.default/publish", 200,
       {"routing_key": "orders", "payload": base64.b64encode(b"\xff\xfesecond").decode(),
        "payload_encoding": "base64", "properties": {}})
expect("POST", "/api/exchanges/%2F/amq.default/publish", 400,
       {"routing_key": "orders", "payload": "x", "properties": {"delivery_mode": 9}})
expect("POST", "/api/exchanges/%2F/amq.default/publish", 400,
       {"routing_key": "orders", "payload": "x", "properties": {"expiration": "soon"}})
expect("POST", "/api/exchanges/%2F/amq.default/publish", 400,
       {"routing_key": "k" * 256, "payload": "x", "properties": {}})
expect("PUT", "/api/queues/%2F/" + "q" * 256, 400, {})
expect("POST", "/api/exchanges/%2F/nope/publish", 404,
       {"routing_key": "orders", "payload": "x", "properties": {}})
eventually("2 messages in orders", lambda: expect("GET", "/api/queues/%2F/orders", 200)["messages"] == 2)
kept = expect("POST", "/api/queues/%2F/orders/get", 200, {"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"})
assert len(kept) == 1 and kept[0]["payload"] == "first" and kept[0]["message_count"] == 1, kept
assert kept[0]["properties"]["headers"] == {"h": "v"} and kept[0]["properties"]["delivery_mode"] == 2, kept
taken = expect("POST", "/api/queues/%2F/orders/get", 200, {"count": 5, "ackmode": "ack_requeue_false", "encoding": "auto"})
assert [m["redelivered"] for m in taken] == [True, False], taken
assert taken[1]["payload_encoding"] == "base64" and base64.b64decode(taken[1]["payload"]) == b"\xff\xfesecond", taken
assert expect("GET", "/api/queues/%2F/orders", 200)["messages"] == 0
expect("POST", "/api/queues/%2F/orders/get", 400, {"count": 1, "ackmode": "maybe"})
expect("POST", "/api/queues/%2F/orders/get", 400, {"count": 1})
for i in range(3):
    expect("POST", "/api/exchanges/%2F/amq.default/publish", 200, {"routing_key": "orders", "payload": str(i), "properties": {}})
expect("DELETE", "/api/queues/%2F/orders/contents", 204)
assert expect("GET", "/api/queues/%2F/orders", 200)["messages"] == 0

# ----- exchanges and bindings ----------------------------------------------------
expect("PUT", "/api/exchanges/%2F/events", 201, {"type": "topic", "durable": True})
expect("PUT", "/api/exchanges/%2F/events", 204, {"type": "topic", "durable": True})
expect("PUT", "/api/exchanges/%2F/events", 400, {"type": "fanout", "durable": True})
expect("PUT", "/api/exchanges/%2F/broken", 400, {"type": "no-such-type"})
expect("PUT", "/api/exchanges/%2F/untyped", 400, {"durable": True})
expect("POST", "/api/bindings/%2F/e/events/q/orders", 201, {"routing_key": "order.*", "arguments": {}})
expect("POST", "/api/bindings/%2F/e/events/q/orders", 201, {"routing_key": "order.*", "arguments": {"x": 1}})
between = expect("GET", "/api/bindings/%2F/e/events/q/orders", 200)
assert len(between) == 2 and all(b["destination_type"] == "queue" for b in between), between
keys = sorted(b["properties_key"] for b in between)
# The routing key percent-encoded (never a "~" in it), a digest of the arguments after "~".
assert keys[0] == "order.%2A" and keys[1].startswith("order.%2A~"), keys
routed = expect("POST", "/api/exchanges/%2F/events/publish", 200, {"routing_key": "order.new", "payload": "x", "properties": {}})
assert routed["routed"], routed
for key in keys:
    expect("GET", f"/api/bindings/%2F/e/events/q/orders/{urllib.request.quote(key, safe='')}", 200)
    expect("DELETE", f"/api/bindings/%2F/e/events/q/orders/{urllib.request.quote(key, safe='')}", 204)
assert expect("GET", "/api/bindings/%2F/e/events/q/orders", 200) == []
expect("DELETE", "/api/bindings/%2F/e/events/q/orders/nothing", 404)
source = expect("GET", "/api/exchanges/%2F/amq.default/bindings/source", 200)
assert any(b["destination"] == "orders" for b in source), source
assert any(x["name"] == "events" and x["type"] == "topic" for x in expect("GET", "/api/exchanges/%2F", 200))
expect("DELETE", "/api/exchanges/%2F/events", 204)
# A delayed exchange: declared with its x-delayed-type (400 without), and how many
# messages it holds on this node.
expect("PUT", "/api/exchanges/%2F/later", 400, {"type": "x-delayed-message", "durable": True})
expect("PUT", "/api/exchanges/%2F/later", 201,
       {"type": "x-delayed-message", "durable": True, "arguments": {"x-delayed-type": "direct"}})
assert expect("GET", "/api/exchanges/%2F/later", 200)["messages_delayed"] == 0
expect("POST", "/api/exchanges/%2F/later/publish", 200,
       {"routing_key": "k", "payload": "x", "properties": {"headers": {"x-delay": 3600000}}})
assert expect("GET", "/api/exchanges/%2F/later", 200)["messages_delayed"] == 1
assert "messages_delayed" not in expect("GET", "/api/exchanges/%2F/amq.direct", 200)
expect("DELETE", "/api/exchanges/%2F/later", 204)
expect("DELETE", "/api/exchanges/%2F/events", 404)

# ----- a live client: connections, channels, consumers, close ---------------------
closed = {}
ready = threading.Event()


def client():
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        port=AMQP, client_properties={"connection_name": "api-test"}))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=7)
    ch.confirm_delivery()
    ch.basic_consume("orders", lambda c, m, p, b: None, consumer_tag="watcher")
    for _ in range(3):
        ch.basic_publish("", "orders", b"held")
    ready.set()
    try:
        conn.sleep(30)
    except pika.exceptions.ConnectionClosedByBroker as e:
        closed["by"] = (e.reply_code, e.reply_text)


t = threading.Thread(target=client, daemon=True)
t.start()
assert ready.wait(20), "the client did not start"
conns = eventually("the connection listed", lambda: [c for c in expect("GET", "/api/connections", 200)
                                                    if c.get("user_provided_name") == "api-test"])
c = conns[0]
assert c["user"] == "guest" and c["vhost"] == "/" and c["channels"] == 1 and c["protocol"] == "AMQP 0-9-1", c
assert c["client_properties"]["capabilities"]["publisher_confirms"] is True, c
channels = expect("GET", "/api/channels", 200)
assert len(channels) == 1 and channels[0]["prefetch_count"] == 7 and channels[0]["confirm"] is True, channels
# The 3 it published and the one routed through "events" earlier.
eventually("4 unacked", lambda: expect("GET", "/api/channels", 200)[0]["messages_unacknowledged"] == 4)
assert expect("GET", "/api/channels", 200)[0]["message_stats"]["publish"] == 3
consumers = expect("GET", "/api/consumers", 200)
assert [(x["consumer_tag"], x["queue"]["name"], x["prefetch_count"], x["ack_required"]) for x in consumers] == \
    [("watcher", "orders", 7, True)], consumers
assert consumers[0]["channel_details"]["connection_name"] == c["name"], consumers
name = urllib.request.quote(c["name"], safe="")
expect("GET", f"/api/connections/{name}", 200)
expect("GET", f"/api/connections/{name}/channels", 200)
expect("DELETE", f"/api/connections/{name}", 204, headers={"X-Reason": "maintenance"})
t.join(20)
assert closed.get("by") == (320, "CONNECTION_FORCED - maintenance"), closed
eventually("the connection gone", lambda: expect("GET", "/api/connections", 200) == [])
expect("DELETE", f"/api/connections/{name}", 404)
# Its deliveries went back to the queue.
eventually("4 ready again", lambda: expect("GET", "/api/queues/%2F/orders", 200)["messages_ready"] == 4)
stats = eventually("publishes counted", lambda: (lambda o: o if o["message_stats"]["publish"] >= 3 else None)(
    expect("GET", "/api/overview", 200)))
assert stats["message_stats"]["confirm"] >= 3 and stats["churn_rates"]["connection_closed"] >= 1, stats
assert stats["object_totals"]["queues"] >= 13, stats

# ----- vhosts, users, permissions, access control ---------------------------------
expect("PUT", "/api/vhosts/tenant", 201, {"description": "a tenant"})
expect("PUT", "/api/vhosts/tenant", 204, {})
assert expect("GET", "/api/vhosts/tenant", 200)["description"] == "a tenant"
expect("PUT", "/api/users/mon", 201, {"password": "pw", "tags": "monitoring"})
expect("PUT", "/api/users/mgr", 201, {"password": "pw", "tags": ["management"]})
expect("PUT", "/api/permissions/tenant/mgr", 201, {"configure": "^mine-.*", "write": ".*", "read": ".*"})
expect("PUT", "/api/permissions/tenant/mgr", 204, {"configure": "^mine-.*", "write": ".*", "read": ".*"})
expect("PUT", "/api/permissions/tenant/mgr", 400, {"configure": "(", "write": ".*", "read": ".*"})
expect("PUT", "/api/permissions/tenant/nobody", 404, {"configure": ".*", "write": ".*", "read": ".*"})
expect("PUT", "/api/permissions/nowhere/mgr", 404, {"configure": ".*", "write": ".*", "read": ".*"})
MGR, MON = ("mgr", "pw"), ("mon", "pw")
expect("PUT", "/api/queues/tenant/mine-1", 201, {}, user=MGR)
refused = expect("PUT", "/api/queues/tenant/theirs", 401, {}, user=MGR)
assert "theirs" in refused["reason"], refused
seen = expect("GET", "/api/queues", 200, user=MGR)
assert [(q["vhost"], q["name"]) for q in seen] == [("tenant", "mine-1")], seen
expect("GET", "/api/queues/%2F", 401, user=MGR)
# "" for write means none: the default exchange too (checked as amq.default).
expect("PUT", "/api/permissions/tenant/mgr", 204, {"configure": "^mine-.*", "write": "", "read": ".*"})
expect("POST", "/api/exchanges/tenant/amq.default/publish", 401,
       {"routing_key": "mine-1", "payload": "x", "properties": {}}, user=MGR)
expect("PUT", "/api/permissions/tenant/mgr", 204, {"configure": "^mine-.*", "write": ".*", "read": ".*"})
mine = expect("GET", "/api/overview", 200, user=MGR)
assert "message_stats" not in mine and "listeners" not in mine, mine
assert mine["object_totals"]["queues"] == 1 and mine["object_totals"]["connections"] == 0, mine
expect("GET", "/api/warren/rates", 401, user=MGR)
assert [v["name"] for v in expect("GET", "/api/vhosts", 200, user=MGR)] == ["tenant"]
for path in ["/api/users", "/api/definitions", "/api/permissions", "/api/nodes"]:
    expect("GET", path, 401, user=MGR)
expect("PUT", "/api/users/eve", 401, {"password": "x"}, user=MGR)
assert len(expect("GET", "/api/queues", 200, user=MON)) >= 14, "monitoring sees every vhost"
expect("GET", "/api/nodes", 200, user=MON)
expect("PUT", "/api/users/eve", 401, {"password": "x"}, user=MON)
expect("DELETE", "/api/vhosts/tenant", 401, user=MON)
expect("PUT", "/api/users/mgr", 204, {"password": "new", "tags": "management"})
expect("GET", "/api/whoami", 401, user=MGR)
assert expect("GET", "/api/whoami", 200, user=("mgr", "new"))["name"] == "mgr"
expect("PUT", "/api/users/mgr", 204, {"tags": "management,monitoring"})
assert expect("GET", "/api/whoami", 200, user=("mgr", "new"))["tags"] == ["management", "monitoring"]
perms = expect("GET", "/api/users/mgr/permissions", 200)
assert perms == [{"user": "mgr", "vhost": "tenant", "configure": "^mine-.*", "write": ".*", "read": ".*"}], perms
expect("PUT", "/api/users/nopass", 400, {"tags": ""})
expect("PUT", "/api/users/badhash", 400, {"password_hash": "bm90IGEgaGFzaA==", "tags": ""})


def rabbit_hash(password, algorithm):
    """RabbitMQ's password_hash: base64(salt[4] + H(salt + password))."""
    salt = b"\x01\x02\x03\x04"
    return base64.b64encode(salt + algorithm(salt + password.encode()).digest()).decode()


# Users exported by RabbitMQ (or made by `rabbitmqadmin declare user`) keep their
# passwords: SHA-256 and SHA-512, told by the algorithm or by the length.
import hashlib  # noqa: E402
expect("PUT", "/api/users/r256", 201, {"password_hash": rabbit_hash("p256", hashlib.sha256), "tags": "management"})
expect("PUT", "/api/users/r512", 201, {"password_hash": rabbit_hash("p512", hashlib.sha512), "tags": "management",
                                       "hashing_algorithm": "rabbit_password_hashing_sha512"})
assert expect("GET", "/api/whoami", 200, user=("r256", "p256"))["name"] == "r256"
assert expect("GET", "/api/whoami", 200, user=("r512", "p512"))["name"] == "r512"
expect("GET", "/api/whoami", 401, user=("r256", "p512"))
exported = expect("GET", "/api/users/r256", 200)
assert exported["hashing_algorithm"] == "rabbit_password_hashing_sha256", exported
assert exported["password_hash"] == rabbit_hash("p256", hashlib.sha256), exported
md5 = expect("PUT", "/api/users/rmd5", 400, {"password_hash": rabbit_hash("x", hashlib.md5),
                                            "hashing_algorithm": "rabbit_password_hashing_md5"})
assert "not supported" in md5["reason"], md5
expect("POST", "/api/users/bulk-delete", 204, {"users": ["r256", "r512", "nobody"]})
expect("GET", "/api/users/r512", 404)
expect("DELETE", "/api/permissions/tenant/mgr", 204)
expect("DELETE", "/api/permissions/tenant/mgr", 404)
expect("DELETE", "/api/users/mgr", 204)
expect("DELETE", "/api/users/mgr", 404)
expect("PUT", "/api/policies/%2F/p", 501, {"pattern": ".*", "definition": {}})
assert expect("GET", "/api/policies", 200) == []

# ----- definitions ----------------------------------------------------------------
# An administrator needs permissions in a vhost to declare there, as on RabbitMQ.
expect("PUT", "/api/exchanges/tenant/audit", 401, {"type": "fanout"})
expect("PUT", "/api/permissions/tenant/guest", 201, {"configure": ".*", "write": ".*", "read": ".*"})
expect("PUT", "/api/exchanges/tenant/audit", 201, {"type": "fanout"})
expect("POST", "/api/bindings/tenant/e/audit/q/mine-1", 201, {"routing_key": ""})
defs = expect("GET", "/api/definitions", 200)
for key in ["users", "vhosts", "permissions", "parameters", "policies", "queues", "exchanges", "bindings"]:
    assert isinstance(defs[key], list), key
assert {"name": "mine-1", "vhost": "tenant", "durable": True, "auto_delete": False, "arguments": {}} in defs["queues"], defs["queues"]
tenant = expect("GET", "/api/definitions/tenant", 200)
assert [q["name"] for q in tenant["queues"]] == ["mine-1"] and "vhost" not in tenant["queues"][0], tenant
expect("PUT", "/api/vhosts/copy", 201, {})
expect("POST", "/api/definitions/copy", 204, tenant)
copied = expect("GET", "/api/bindings/copy/e/audit/q/mine-1", 200)
assert len(copied) == 1, copied
# A whole export imports again unchanged (everything is there already).
expect("POST", "/api/definitions", 204, defs)
expect("DELETE", "/api/users/mon", 204)
exported_mon = [u for u in defs["users"] if u["name"] == "mon"]
expect("POST", "/api/definitions", 204, {"users": exported_mon})
assert expect("GET", "/api/whoami", 200, user=MON)["name"] == "mon", "the exported credential logs in"
with_policy = dict(defs, policies=[{"name": "p", "vhost": "/", "pattern": ".*", "definition": {}}])
refused = expect("POST", "/api/definitions", 400, with_policy)
assert "policies" in refused["reason"], refused
expect("POST", "/api/definitions", 400, {"queues": [{"vhost": "/"}]})
expect("DELETE", "/api/vhosts/copy", 204)
expect("GET", "/api/vhosts/copy", 404)

# ----- health checks --------------------------------------------------------------
assert expect("GET", "/api/aliveness-test/%2F", 200) == {"status": "ok"}
expect("GET", "/api/health/checks/alarms", 200)
expect("GET", "/api/health/checks/local-alarms", 200)
expect("GET", f"/api/health/checks/port-listener/{AMQP}", 200)
down = expect("GET", "/api/health/checks/port-listener/1", 503)
assert down["status"] == "failed" and down["missing"] == 1, down
expect("GET", "/api/health/checks/protocol-listener/amqp", 200)
expect("GET", "/api/health/checks/protocol-listener/amqp%2Fssl", 503)
expect("GET", "/api/health/checks/node-is-quorum-critical", 200)
expect("GET", "/api/health/checks/virtual-hosts", 200)

# ----- Warren's own ---------------------------------------------------------------
tree = expect("GET", "/api/warren/tree", 200)
assert tree["tree"]["name"] == "node" and any(c["name"] == "http" for c in tree["tree"]["children"]), tree
cluster = expect("GET", "/api/warren/cluster", 200)
assert cluster["leader"] == cluster["this_node"] and len(cluster["members"]) == 1, cluster
expect("PUT", "/api/queues/%2F/clicks", 201, {"durable": True, "arguments": {"x-queue-type": "stream"}})
expect("POST", "/api/exchanges/%2F/amq.default/publish", 200, {"routing_key": "clicks", "payload": "c", "properties": {}})
streams = eventually("the stream's message", lambda: [s for s in expect("GET", "/api/warren/streams", 200)
                                                       if s["name"] == "clicks" and s["messages"] == 1])
# Sampled once a second, newest first.
eventually("a sample with the publishes", lambda: (lambda r: r and r[0]["publish"] >= 3)(
    expect("GET", "/api/warren/rates?age=10", 200)))

# ----- Prometheus -----------------------------------------------------------------
# Scrapes share a snapshot of the queues' counts at most 5 s old (as RabbitMQ's
# statistics are): the checks wait for it to include what the test did last.
text = eventually("aggregated metrics with every queue", lambda: (lambda t: t if metric(t, "rabbitmq_queues") >= 16 else None)(metrics()))
assert metric(text, "rabbitmq_channel_messages_published_total") >= 3, text
assert metric(text, "rabbitmq_connections") == 0, text
assert metric(text, "rabbitmq_identity_info", {"rabbitmq_node": nodes[0]["name"]}) == 1, text
assert metric(text, "warren_store_commits_total") > 0, text
per = eventually("per-object metrics", lambda: (lambda t: t if metric(t, "rabbitmq_queue_messages_ready", {"vhost": "/", "queue": "clicks"}) == 1 else None)(metrics("/metrics/per-object")))
assert metric(per, "rabbitmq_queue_messages_ready", {"vhost": "/", "queue": "orders"}) == 4, per
assert metric(per, "warren_actor_restarts_total", {"actor": "node"}) == 0, per

print("ok")
