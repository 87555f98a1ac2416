"""Errors through pika: a publish to a missing exchange (404, closes the channel), a
consume / get / bind on a missing queue or exchange (404), a queue named amq.* (403),
a publish to an internal exchange (403), a wrong password or unknown user (403 at
login), an unknown vhost (530); after any channel error the connection opens new
channels that work, and the other channels are undisturbed.
"""

import amqp_common as t
import pika
from pika.exceptions import (
    ConnectionClosedByBroker,
    ProbableAccessDeniedError,
    ProbableAuthenticationError,
)

P = t.port()
conn = t.connect(P)
good = conn.channel()
good.queue_declare("work")
received = []
good.basic_consume("work", lambda c, m, p, b: received.append(b), auto_ack=True)


def still_works(what):
    """A fresh channel on the same connection declares, publishes and gets; the
    consumer on the first channel still receives."""
    assert conn.is_open, "%s: the connection is still open" % what
    ch = conn.channel()
    ch.queue_declare("after-errors")
    ch.basic_publish("", "after-errors", what.encode())
    assert t.get_one(ch, "after-errors")[2] == what.encode(), "%s: a new channel works" % what
    n = len(received)
    ch.basic_publish("", "work", b"still consuming")
    t.poll(conn, lambda: len(received) > n, "%s: the other channel's consumer" % what)
    ch.close()


# ----- publish to a missing exchange: the channel closes with 404 ------------------
ch = conn.channel()
ch.basic_publish("no-such-exchange", "k", b"x")
e = t.closed_by_broker(conn, ch, 404, "publish to a missing exchange")
assert "no-such-exchange" in e.reply_text, "the 404 names the exchange: %r" % e.reply_text
assert (e.args[1] if len(e.args) > 1 else "").startswith("NOT_FOUND"), "text: %r" % (e.args,)
still_works("after a publish to a missing exchange")

# ----- consume / get on a missing queue: 404 -----------------------------------------
ch = conn.channel()
e = t.channel_error(lambda: ch.basic_consume("no-such-queue", lambda *a: None), 404, "consume from a missing queue")
assert "no-such-queue" in e.reply_text, "the 404 names the queue: %r" % e.reply_text
ch = conn.channel()
t.channel_error(lambda: ch.basic_get("no-such-queue"), 404, "get from a missing queue")
ch = conn.channel()
t.channel_error(lambda: ch.queue_bind("work", "no-such-exchange"), 404, "bind to a missing exchange")
ch = conn.channel()
t.channel_error(lambda: ch.queue_bind("no-such-queue", "amq.direct"), 404, "bind a missing queue")
ch = conn.channel()
t.channel_error(lambda: ch.queue_purge("no-such-queue"), 404, "purge a missing queue")
ch = conn.channel()
t.channel_error(
    lambda: ch.exchange_bind(destination="no-such-exchange", source="amq.direct"),
    404,
    "exchange.bind to a missing destination",
)
still_works("after 404s")

# ----- reserved names and internal exchanges: 403 -----------------------------------
ch = conn.channel()
e = t.channel_error(lambda: ch.queue_declare("amq.foo"), 403, "declare a queue named amq.foo")
assert e.reply_text.startswith("ACCESS_REFUSED"), "403 text: %r" % e.reply_text
ch = conn.channel()
ch.exchange_declare("internal-ex", "fanout", internal=True)
ch.basic_publish("internal-ex", "", b"x")
t.closed_by_broker(conn, ch, 403, "publish to an internal exchange")
still_works("after 403s")

# ----- a bad login: refused with 403 -----------------------------------------------
for user, password in (("guest", "wrong"), ("nobody", "guest")):
    try:
        bad = pika.BlockingConnection(t.params(P, user, password))
    except ProbableAuthenticationError as e:
        # pika's name for a connection.close 403 ACCESS_REFUSED during login.
        text = str(e)
        assert "ACCESS_REFUSED" in text, "%s/%s: the refusal says ACCESS_REFUSED: %r" % (user, password, text)
        assert "403" in text, "%s/%s: reply code 403: %r" % (user, password, text)
    except ConnectionClosedByBroker as e:
        assert e.reply_code == 403, "%s/%s: expected 403, got %r" % (user, password, e)
    else:
        bad.close()
        raise AssertionError("login as %s/%s was accepted" % (user, password))

# ----- an unknown vhost: 530 NOT_ALLOWED ---------------------------------------------
try:
    bad = pika.BlockingConnection(
        pika.ConnectionParameters(host=t.HOST, port=P, virtual_host="no-such-vhost", heartbeat=0)
    )
except (ProbableAccessDeniedError, ConnectionClosedByBroker) as e:
    assert "530" in str(e) or getattr(e, "reply_code", None) == 530, "unknown vhost: %r" % e
else:
    bad.close()
    raise AssertionError("an unknown vhost was accepted")

still_works("after refused logins")

# ----- many channel errors in a row: the connection stays usable -------------------
for i in range(20):
    ch = conn.channel()
    t.channel_error(lambda: ch.queue_declare("missing-%d" % i, passive=True), 404, "error %d" % i)
still_works("after twenty channel errors")

conn.close()
t.done()
