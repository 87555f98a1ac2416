"""Virtual hosts: separate namespaces of exchanges and queues, each with its own
permissions, managed with `warren vhost add|delete|list` and
`warren permissions set --vhost`.

A vhost that does not exist, or one the user has no permissions in, is refused at
connection.open (530); the same queue name in two vhosts is two queues; deleting a
vhost closes its connections (320), takes its queues, messages and permissions with
it, and leaves the other vhosts alone; the default vhost cannot be deleted.
"""

import json

import pika
from pika.exceptions import ConnectionClosedByBroker, ProbableAccessDeniedError, StreamLostError

import amqp_common as t

P = t.port()


def params(vhost, user="guest", password="guest"):
    p = t.params(P, user, password)
    p.virtual_host = vhost
    return p


def refused(vhost, code, text, user="guest", password="guest"):
    try:
        pika.BlockingConnection(params(vhost, user, password)).close()
    except (ProbableAccessDeniedError, ConnectionClosedByBroker) as e:
        assert str(code) in str(e), "open %r: expected %d, got %r" % (vhost, code, e)
        assert text in str(e), "open %r: expected %r in %r" % (vhost, text, e)
    else:
        raise AssertionError("open %r as %s was accepted" % (vhost, user))


def grant(vhost, user="guest"):
    t.warren("permissions", "set", "--vhost", vhost, "--user", user,
             "--configure", ".*", "--write", ".*", "--read", ".*")


root = t.connect(P)  # retries while the node starts
rch = root.channel()

# ----- adding ---------------------------------------------------------------------------
refused("prod", 530, "vhost prod not found")
t.warren("vhost", "add", "prod", "--description", "production")
listed = json.loads(t.warren("vhost", "list", "--json"))
assert {"name": "prod", "description": "production"} in listed, listed
assert any(v["name"] == "/" for v in listed), listed
assert "already exists" in t.warren_fails("vhost", "add", "prod")
assert "invalid vhost name" in t.warren_fails("vhost", "add", "")

# No permissions yet in the new vhost, not even guest's.
refused("prod", 530, "access to vhost 'prod' refused for user 'guest'")
assert "vhost 'nope' not found" in t.warren_fails(
    "permissions", "set", "--vhost", "nope", "--user", "guest",
    "--configure", ".*", "--write", ".*", "--read", ".*")
grant("prod")

# ----- separate namespaces ----------------------------------------------------------------
prod = pika.BlockingConnection(params("prod"))
pch = prod.channel()
for ch in (pch, rch):
    ch.queue_declare("orders")
pch.exchange_declare("events", "fanout")
pch.queue_bind("orders", "events")
pch.basic_publish("events", "", b"in prod")
rch.basic_publish("", "orders", b"in root 1")
rch.basic_publish("", "orders", b"in root 2")
t.wait_count(pch, "orders", 1)
t.wait_count(rch, "orders", 2)
assert t.get_one(pch, "orders")[2] == b"in prod"
e = t.channel_error(lambda: rch.exchange_declare("events", passive=True), 404, "prod's exchange seen from /")
assert "vhost '/'" in e.reply_text, e.reply_text
rch = root.channel()

rows = json.loads(t.warren("queues", "--vhost", "prod", "--json"))
assert [r["name"] for r in rows] == ["orders"], rows
pch.basic_publish("", "orders", b"left behind")
t.wait_count(pch, "orders", 1)

# A user with permissions in prod only.
t.warren("user", "add", "ops", "--password", "ops")
grant("prod", "ops")
refused("/", 530, "access to vhost '/' refused for user 'ops'", "ops", "ops")
ops = pika.BlockingConnection(params("prod", "ops", "ops"))
assert t.count(ops.channel(), "orders") == 1
ops.close()

# ----- deleting -----------------------------------------------------------------------------
assert "cannot be deleted" in t.warren_fails("vhost", "delete", "/")
assert "vhost 'nope' not found" in t.warren_fails("vhost", "delete", "nope")
t.warren("vhost", "delete", "prod")
try:
    prod.process_data_events(time_limit=t.DEADLINE)
    pch.queue_declare("orders", passive=True)
except (ConnectionClosedByBroker, StreamLostError) as e:
    code = getattr(e, "reply_code", None)
    assert code in (320, None), "the vhost's connection closed with %r" % e
else:
    raise AssertionError("the connection to a deleted vhost stayed open")
assert prod.is_closed

refused("prod", 530, "vhost prod not found")
assert not any(v["name"] == "prod" for v in json.loads(t.warren("vhost", "list", "--json")))
perms = json.loads(t.warren("permissions", "list", "--json"))
assert not any(p["vhost"] == "prod" for p in perms), perms

# Added again, it is empty: its old queue and messages are gone.
t.warren("vhost", "add", "prod")
grant("prod")
again = pika.BlockingConnection(params("prod"))
t.channel_error(lambda: again.channel().queue_declare("orders", passive=True), 404, "old queue")
again.close()

# The default vhost did not notice.
assert t.count(rch, "orders") == 2
root.close()
t.done()
