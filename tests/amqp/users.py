"""Users and permissions, set up by the Rust test through the CLI before this runs:

    warren user add app --password s3cret
    warren permissions set --user app --configure 'app-.*|amq\\.gen-.*' --write 'app-.*|amq\\.default' --read 'app-.*'
    warren user add idle --password idle          (no permissions anywhere)

A user logs in with its own password only; each method needs its kind of access to
the whole name of its queue or exchange (403 ACCESS_REFUSED otherwise); a user with no
permissions in the vhost is refused at connection.open (530); guest still works.
"""

import pika
from pika.exceptions import ConnectionClosedByBroker, ProbableAccessDeniedError, ProbableAuthenticationError

import amqp_common as t

P = t.port()

# ----- logins -------------------------------------------------------------------------
for user, password in (("app", "wrong"), ("app", "")):
    try:
        pika.BlockingConnection(t.params(P, user, password)).close()
    except (ProbableAuthenticationError, ConnectionClosedByBroker) as e:
        assert "403" in str(e) or getattr(e, "reply_code", None) == 403, "%s/%r: %r" % (user, password, e)
    else:
        raise AssertionError("login as %s with a wrong password was accepted" % user)

try:
    pika.BlockingConnection(t.params(P, "idle", "idle")).close()
except (ProbableAccessDeniedError, ConnectionClosedByBroker) as e:
    assert "530" in str(e) or getattr(e, "reply_code", None) == 530, "no permissions on '/': %r" % e
    assert "refused for user 'idle'" in str(e), "the refusal names the user: %r" % e
else:
    raise AssertionError("a user without permissions on '/' opened it")

# ----- what app may do ----------------------------------------------------------------
conn = t.connect(P, "app", "s3cret")
ch = conn.channel()
t.succeeds(lambda: ch.queue_declare("app-orders"), "configure app-orders")
named = t.succeeds(lambda: ch.queue_declare(""), "a server-named queue (amq.gen-...)")
assert named.method.queue.startswith("amq.gen-"), named.method.queue

ch.basic_publish("", "app-orders", b"hello")  # write on amq.default
assert t.get_one(ch, "app-orders")[2] == b"hello"

# ----- and what it may not ------------------------------------------------------------
t.channel_error(lambda: ch.queue_declare("orders"), 403, "configure a queue outside app-.*")
ch = conn.channel()
e = t.channel_error(lambda: ch.exchange_declare("logs", "fanout"), 403, "configure an exchange")
assert "configure access to exchange 'logs' in vhost '/' refused for user 'app'" in e.reply_text, e.reply_text
ch = conn.channel()
e = t.channel_error(lambda: ch.queue_bind("app-orders", "amq.topic", "x"), 403, "read on amq.topic")
assert "read access to exchange 'amq.topic'" in e.reply_text, e.reply_text
ch = conn.channel()
t.channel_error(lambda: ch.basic_get("amq.gen-unreadable"), 403, "read outside app-.*")

# ----- exchange.delete needs configure access ---------------------------------------------
g = t.connect(P)
gch = g.channel()
gch.exchange_declare("ops-logs", "fanout")
ch = conn.channel()
e = t.channel_error(lambda: ch.exchange_delete("ops-logs"), 403, "delete an exchange outside app-.*")
assert e.reply_text == (
    "ACCESS_REFUSED - configure access to exchange 'ops-logs' in vhost '/' refused for user 'app'"
), e.reply_text
t.succeeds(lambda: gch.exchange_declare("ops-logs", passive=True), "ops-logs is still there")
ch = conn.channel()
e = t.channel_error(lambda: ch.exchange_delete("ops-missing"), 403, "delete a missing exchange outside app-.*")
assert "configure access to exchange 'ops-missing'" in e.reply_text, e.reply_text
# The default and amq.* exchanges are refused for what they are, as in RabbitMQ.
ch = conn.channel()
e = t.channel_error(lambda: ch.exchange_delete("amq.fanout"), 403, "delete amq.fanout")
assert "configure access" not in e.reply_text, e.reply_text
ch = conn.channel()
t.succeeds(lambda: ch.exchange_declare("app-events", "fanout"), "configure app-events")
t.succeeds(lambda: ch.exchange_delete("app-events"), "delete app-events")
t.channel_error(lambda: gch.exchange_declare("app-events", passive=True), 404, "app-events is gone")
g.close()

# ----- a permission change reaches a channel that already published ----------------------
ch = conn.channel()
ch.basic_publish("", "app-orders", b"before")
assert t.get_one(ch, "app-orders")[2] == b"before"
t.warren("permissions", "set", "--user", "app", "--configure", "app-.*", "--write", "app-.*", "--read", "app-.*")
ch.basic_publish("", "app-orders", b"after")
e = t.closed_by_broker(conn, ch, 403, "write on amq.default, revoked")
assert "write access to exchange 'amq.default'" in e.reply_text, e.reply_text
ch = conn.channel()
t.get_none(ch, "app-orders")
conn.close()

# ----- guest is untouched ---------------------------------------------------------------
g = t.connect(P)
gch = g.channel()
t.succeeds(lambda: gch.queue_declare("orders"), "guest configures anything")
g.close()
print("ok")
