"""Exchanges through pika: direct, fanout, topic and headers routing, exchange-to-
exchange bindings, alternate exchanges, and the declare errors (404, 406, 403).

Publishes go through a confirm channel: once basic_publish returns, the message is
in every queue it was routed to, so "this queue got nothing" is a plain basic.get.
"""

import amqp_common as t
import pika

conn = t.connect(t.port())
pub = conn.channel()
pub.confirm_delivery()
ch = conn.channel()


def queue(name, exchange=None, key="", arguments=None):
    ch.queue_declare(name)
    if exchange is not None:
        ch.queue_bind(name, exchange, routing_key=key, arguments=arguments)
    return name


def publish(exchange, key, body, headers=None, mandatory=False):
    props = pika.BasicProperties(headers=headers) if headers is not None else None
    pub.basic_publish(exchange, key, body, properties=props, mandatory=mandatory)


def expect(routes):
    """routes: {queue: [bodies]}: each queue holds exactly those, in order."""
    for q, bodies in routes.items():
        got = t.drain(ch, q, len(bodies))
        assert got == [b.encode() for b in bodies], "queue %r: expected %r, got %r" % (
            q,
            bodies,
            got,
        )


# ----- the default exchange -------------------------------------------------------
queue("plain")
publish("", "plain", "to-default")
expect({"plain": ["to-default"]})

# ----- direct ---------------------------------------------------------------------
ch.exchange_declare("ex.direct", "direct")
queue("d.a", "ex.direct", "a")
queue("d.b", "ex.direct", "b")
queue("d.ab", "ex.direct", "a")
ch.queue_bind("d.ab", "ex.direct", routing_key="b")
publish("ex.direct", "a", "A")
publish("ex.direct", "b", "B")
publish("ex.direct", "c", "C")
expect({"d.a": ["A"], "d.b": ["B"], "d.ab": ["A", "B"]})
ch.queue_unbind("d.ab", "ex.direct", routing_key="a")
publish("ex.direct", "a", "A2")
expect({"d.a": ["A2"], "d.ab": []})

# ----- fanout ---------------------------------------------------------------------
ch.exchange_declare("ex.fanout", "fanout")
queue("f.1", "ex.fanout", "ignored")
queue("f.2", "ex.fanout")
publish("ex.fanout", "whatever", "F")
expect({"f.1": ["F"], "f.2": ["F"]})

# ----- topic: * is one word, # is zero or more ------------------------------------
ch.exchange_declare("ex.topic", "topic")
queue("t.star", "ex.topic", "stock.*.nyse")
queue("t.hash", "ex.topic", "stock.#")
queue("t.all", "ex.topic", "#")
queue("t.two", "ex.topic", "*.*")
queue("t.mid", "ex.topic", "*.ibm.#")
publish("ex.topic", "stock.ibm.nyse", "1")
publish("ex.topic", "stock", "2")
publish("ex.topic", "stock.ibm", "3")
publish("ex.topic", "a.b.c.d", "4")
publish("ex.topic", "stock.x.y.nyse", "5")
expect(
    {
        "t.star": ["1"],
        "t.hash": ["1", "2", "3", "5"],
        "t.all": ["1", "2", "3", "4", "5"],
        "t.two": ["3"],
        "t.mid": ["1", "3"],
    }
)

# ----- headers: x-match all / any -------------------------------------------------
ch.exchange_declare("ex.headers", "headers")
queue("h.all", "ex.headers", "", {"x-match": "all", "format": "pdf", "type": "report"})
queue("h.any", "ex.headers", "", {"x-match": "any", "format": "pdf", "type": "log"})
queue("h.default", "ex.headers", "", {"format": "pdf", "type": "report"})  # all is the default
publish("ex.headers", "", "pdf-report", {"format": "pdf", "type": "report"})
publish("ex.headers", "", "pdf", {"format": "pdf"})
publish("ex.headers", "", "log", {"type": "log", "extra": 1})
publish("ex.headers", "", "zip", {"format": "zip"})
publish("ex.headers", "", "none", None)
expect(
    {
        "h.all": ["pdf-report"],
        "h.any": ["pdf-report", "pdf", "log"],
        "h.default": ["pdf-report"],
    }
)

# ----- exchange-to-exchange bindings ----------------------------------------------
ch.exchange_declare("ex.src", "direct")
ch.exchange_declare("ex.dst", "fanout")
queue("e2e", "ex.dst")
ch.exchange_bind(destination="ex.dst", source="ex.src", routing_key="k")
publish("ex.src", "k", "via-e2e")
publish("ex.src", "other", "not-bound")
expect({"e2e": ["via-e2e"]})
# Two hops: ex.src2 (topic) -> ex.src (direct) -> ex.dst (fanout) -> e2e.
ch.exchange_declare("ex.src2", "topic")
ch.exchange_bind(destination="ex.src", source="ex.src2", routing_key="#")
publish("ex.src2", "k", "two-hops")
expect({"e2e": ["two-hops"]})
ch.exchange_unbind(destination="ex.dst", source="ex.src", routing_key="k")
publish("ex.src", "k", "after-unbind")
expect({"e2e": []})

# ----- alternate exchange ---------------------------------------------------------
ch.exchange_declare("ex.ae", "fanout")
queue("ae.catch", "ex.ae")
ch.exchange_declare("ex.main", "direct", arguments={"alternate-exchange": "ex.ae"})
queue("ae.known", "ex.main", "known")
publish("ex.main", "known", "routed")
publish("ex.main", "unknown", "to-ae")
# Mandatory and unroutable by ex.main, but the alternate exchange routes it: no return.
publish("ex.main", "unknown2", "to-ae-mandatory", mandatory=True)
expect({"ae.known": ["routed"], "ae.catch": ["to-ae", "to-ae-mandatory"]})

# ----- declare errors -------------------------------------------------------------
bad = conn.channel()
e = t.channel_error(
    lambda: bad.exchange_declare("ex.missing", "direct", passive=True),
    404,
    "passive declare of a missing exchange",
)
assert "ex.missing" in e.reply_text, "404 text names the exchange: %r" % e.reply_text

bad = conn.channel()
t.channel_error(
    lambda: bad.exchange_declare("ex.direct", "fanout"),
    406,
    "redeclaring a direct exchange as fanout",
)
bad = conn.channel()
t.channel_error(
    lambda: bad.exchange_declare("ex.direct", "direct", durable=True),
    406,
    "redeclaring a transient exchange as durable",
)
bad = conn.channel()
t.channel_error(
    lambda: bad.exchange_declare("amq.custom", "direct"),
    403,
    "declaring an exchange with the reserved prefix amq.",
)

# A passive declare of an existing exchange (and of a predeclared one) succeeds.
ch.exchange_declare("ex.direct", "direct", passive=True)
ch.exchange_declare("amq.topic", "topic", passive=True)
ch.exchange_declare("ex.direct", "direct")  # an equivalent redeclare is fine

# Deleting an exchange: then it is gone.
ch.exchange_declare("ex.temp", "fanout")
ch.exchange_delete("ex.temp")
bad = conn.channel()
t.channel_error(
    lambda: bad.exchange_declare("ex.temp", "fanout", passive=True),
    404,
    "passive declare of a deleted exchange",
)

assert conn.is_open, "the connection survived every channel error"
conn.close()
t.done()
