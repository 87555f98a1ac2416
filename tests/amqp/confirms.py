"""Publisher confirms through pika: persistent messages to a durable queue are acked,
a mandatory unroutable message is returned (UnroutableError), a full queue with
x-overflow=reject-publish nacks (NackError), a publish to a missing exchange closes
the channel (404), and confirm and tx modes exclude each other (406). Also bodies larger
than frame_max, empty bodies and every basic property round-trip unchanged.
"""

from decimal import Decimal

import amqp_common as t
import pika
from pika.exceptions import NackError, UnroutableError

conn = t.connect(t.port())
ch = conn.channel()
ch.confirm_delivery()
persistent = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)

# ----- persistent messages to a durable queue are confirmed ------------------------
ch.queue_declare("durable-q", durable=True)
for i in range(50):
    # basic_publish returns only once the node acked it (a nack would raise NackError).
    ch.basic_publish("", "durable-q", b"p%d" % i, properties=persistent)
assert t.count(ch, "durable-q") == 50, "50 confirmed messages are all in the queue"
m, props, body = t.get_one(ch, "durable-q")
assert body == b"p0" and props.delivery_mode == 2, "persistent, in order: %r %r" % (body, props)
ch.queue_purge("durable-q")

# Non-mandatory and unroutable: simply acked (dropped).
ch.basic_publish("amq.direct", "nobody-bound", b"lost")

# ----- mandatory and unroutable: returned, then acked -> UnroutableError ------------
returned = []
try:
    ch.basic_publish("amq.direct", "nobody-bound", b"bounce", mandatory=True)
except UnroutableError as e:
    returned = e.messages
else:
    raise AssertionError("a mandatory unroutable publish did not raise UnroutableError")
assert len(returned) == 1, "one returned message: %r" % returned
ret = returned[0]
assert ret.body == b"bounce", "the returned body: %r" % ret.body
assert ret.method.reply_code == 312, "return reply code 312 NO_ROUTE: %r" % ret.method
assert ret.method.reply_text == "NO_ROUTE", "return reply text: %r" % ret.method.reply_text
assert ret.method.exchange == "amq.direct", "returned exchange: %r" % ret.method.exchange
assert ret.method.routing_key == "nobody-bound", "returned key: %r" % ret.method.routing_key
# Mandatory and routable: a plain ack.
ch.queue_declare("routable")
ch.basic_publish("", "routable", b"fine", mandatory=True)
assert t.drain(ch, "routable", 1) == [b"fine"], "the mandatory routable message arrived"

# ----- a full queue with reject-publish: nacked -------------------------------------
ch.queue_declare("full", arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
ch.basic_publish("", "full", b"first")
try:
    ch.basic_publish("", "full", b"second")
except NackError:
    pass
else:
    raise AssertionError("publishing to a full reject-publish queue was not nacked")
assert t.count(ch, "full") == 1, "the full queue still holds one message"
assert t.drain(ch, "full", 1) == [b"first"], "the queue kept the first message, not the second"
ch.basic_publish("", "full", b"third")  # room again: acked
assert t.drain(ch, "full", 1) == [b"third"], "after room was made the publish went in"

# Routed to two queues, one of them full: the publisher gets a nack.
ch.exchange_declare("fan", "fanout")
ch.queue_declare("fan-open")
ch.queue_bind("fan-open", "fan")
ch.queue_bind("full", "fan")
ch.basic_publish("", "full", b"fill")
try:
    ch.basic_publish("fan", "", b"to-both")
except NackError:
    pass
else:
    raise AssertionError("a publish that one of its queues rejected was not nacked")
ch.queue_unbind("full", "fan")
ch.queue_purge("fan-open")

# ----- a publish to a missing exchange closes the channel with 404 -----------------
bad = conn.channel()
bad.confirm_delivery()
e = t.channel_error(
    lambda: bad.basic_publish("no-such-exchange", "k", b"x"),
    404,
    "a confirmed publish to a missing exchange",
)
assert "no-such-exchange" in e.reply_text, "404 text names the exchange: %r" % e.reply_text

# ----- bodies across frames, empty bodies, and every property round-trip ------------
ch.queue_declare("content")
big = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4: many frames of frame_max
ch.basic_publish("", "content", big)
ch.basic_publish("", "content", b"")
full = pika.BasicProperties(
    content_type="application/json",
    content_encoding="utf-8",
    headers={"s": "text", "i": 42, "neg": -7, "d": Decimal("1.5"), "b": True, "l": [1, "two"], "t": {"nested": "yes"}},
    delivery_mode=2,
    priority=3,
    correlation_id="corr-1",
    reply_to="replies",
    expiration="600000",
    message_id="msg-1",
    timestamp=1700000000,
    type="order.created",
    user_id="guest",
    app_id="pika-tests",
)
ch.basic_publish("", "content", b"{}", properties=full)
m, _, body = t.get_one(ch, "content")
assert body == big, "the 1 MiB body arrived intact (%d bytes, expected %d)" % (len(body), len(big))
assert m.message_count == 2, "get-ok counts the two left: %r" % m
_, _, body = t.get_one(ch, "content")
assert body == b"", "an empty body arrives empty: %r" % body
_, got, body = t.get_one(ch, "content")
assert body == b"{}", "body: %r" % body
for field in (
    "content_type",
    "content_encoding",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "type",
    "user_id",
    "app_id",
):
    assert getattr(got, field) == getattr(full, field), "property %s: sent %r, got %r" % (
        field,
        getattr(full, field),
        getattr(got, field),
    )
h = got.headers
assert h["s"] == b"text" or h["s"] == "text", "header s: %r" % h
assert (h["i"], h["neg"], h["d"], h["b"]) == (42, -7, Decimal("1.5"), True), "numeric headers: %r" % h
assert [x.decode() if isinstance(x, bytes) else x for x in h["l"]] == [1, "two"], "array header: %r" % h
assert h["t"]["nested"] in ("yes", b"yes"), "table header: %r" % h

# ----- confirm and tx modes exclude each other --------------------------------------
tx = conn.channel()
tx.tx_select()
t.channel_error(tx.confirm_delivery, 406, "confirm.select on a transactional channel")
cf = conn.channel()
cf.confirm_delivery()
t.channel_error(cf.tx_select, 406, "tx.select on a confirm channel")

# The first channel is still fine.
ch.basic_publish("", "routable", b"still-open")
assert t.drain(ch, "routable", 1) == [b"still-open"], "the confirm channel still works"
conn.close()
t.done()
