"""Delayed messages (exchange type x-delayed-message) through pika, as RabbitMQ's
delayed-message plugin has them, and what Warren does beyond it.

A delayed exchange routes as the type its x-delayed-type argument names; a message
with an x-delay header above 0 waits that many milliseconds in the exchange, then is
routed with x-delay negated. Checks never wait a fixed time: "not before its due
time" compares the client's clock at publish and at arrival (the node stamps the due
time after the publish left the client, so an early delivery cannot hide).

Modes: "main" (everything above), "fill" (durable delayed messages to read after a
SIGKILL) and "restarted" (every one of them arrives, once).
"""

import sys
import time

import pika

import amqp_common as t

MODE = sys.argv[2] if len(sys.argv) > 2 else "main"
P = t.port()
conn = t.connect(P)


def delayed(ch, name, kind="direct", durable=True):
    ch.exchange_declare(
        name, "x-delayed-message", durable=durable, arguments={"x-delayed-type": kind}
    )


def publish(ch, exchange, key, body, delay=None, mandatory=False, persistent=True):
    headers = None if delay is None else {"x-delay": delay}
    # Before the publish: the node starts the delay when the publish reaches it.
    sent = time.monotonic()
    ch.basic_publish(
        exchange,
        key,
        body,
        pika.BasicProperties(delivery_mode=2 if persistent else 1, headers=headers),
        mandatory=mandatory,
    )
    return sent


def collect(ch, queue, n, timeout=t.DEADLINE):
    """The first `n` deliveries of a consumer on `queue`, as (arrival time, headers,
    body), in arrival order."""
    got = []

    def on(chx, method, props, body):
        got.append((time.monotonic(), props.headers or {}, body))
        chx.basic_ack(method.delivery_tag)

    tag = ch.basic_consume(queue, on)
    t.poll(conn, lambda: len(got) >= n, "%d deliveries on %s (got %d)" % (n, queue, len(got)), timeout)
    ch.basic_cancel(tag)
    return got


def refused_declarations():
    for args, what in [
        ({}, "no x-delayed-type"),
        ({"x-delayed-type": "nope"}, "an unknown type"),
        ({"x-delayed-type": "x-delayed-message"}, "itself as the type"),
        ({"x-delayed-type": 5}, "a number"),
    ]:
        ch = conn.channel()
        e = t.channel_error(
            lambda: ch.exchange_declare("bad", "x-delayed-message", arguments=args),
            406,
            "a delayed exchange with %s" % what,
        )
        assert "x-delayed-type" in e.reply_text, e.reply_text


def waits_and_routes_in_due_order():
    ch = conn.channel()
    ch.confirm_delivery()
    delayed(ch, "dx")
    ch.queue_declare("dq", durable=True)
    ch.queue_bind("dq", "dx", "k")
    sent = {}
    sent[b"600"] = (publish(ch, "dx", "k", b"600", 600), 600)
    sent[b"300"] = (publish(ch, "dx", "k", b"300", 300), 300)
    sent[b"s200"] = (publish(ch, "dx", "k", b"s200", "200"), 200)
    # No header, a zero and a negative delay route at once.
    publish(ch, "dx", "k", b"now")
    publish(ch, "dx", "k", b"zero", 0)
    publish(ch, "dx", "k", b"neg", -5)
    # Another routing key goes nowhere, delayed or not.
    publish(ch, "dx", "other", b"lost", 100)
    # Routed at once: in the queue as soon as confirmed.
    assert t.count(ch, "dq") == 3, t.count(ch, "dq")
    got = collect(ch, "dq", 6)
    bodies = [b for _, _, b in got]
    assert bodies[:3] == [b"now", b"zero", b"neg"], bodies
    assert bodies[3:] == [b"s200", b"300", b"600"], bodies
    for arrived, headers, body in got[3:]:
        published, delay = sent[body]
        assert arrived - published >= delay / 1000.0, (
            "%r arrived %.3f s after its publish, before its %d ms delay"
            % (body, arrived - published, delay)
        )
        assert headers["x-delay"] == -delay, headers
    assert got[2][1]["x-delay"] == -5, got[2][1]
    t.get_none(ch, "dq")


def routes_as_its_type():
    ch = conn.channel()
    ch.confirm_delivery()
    delayed(ch, "dtopic", "topic")
    ch.queue_declare("t-all", durable=True)
    ch.queue_declare("t-eu", durable=True)
    ch.queue_bind("t-all", "dtopic", "#")
    ch.queue_bind("t-eu", "dtopic", "eu.*")
    publish(ch, "dtopic", "eu.paris", b"p", 50)
    publish(ch, "dtopic", "us.nyc", b"n", 50)
    assert sorted(b for _, _, b in collect(ch, "t-all", 2)) == [b"n", b"p"]
    assert [b for _, _, b in collect(ch, "t-eu", 1)] == [b"p"]
    t.get_none(ch, "t-eu")
    # Bindings are checked as the type's: a headers exchange needs a valid x-match.
    delayed(ch, "dheaders", "headers")
    t.channel_error(
        lambda: ch.queue_bind("t-all", "dheaders", "", arguments={"x-match": "some"}),
        406,
        "a bad x-match on a delayed headers exchange",
    )


def mandatory_delayed_messages_are_confirmed_not_returned():
    """The plugin returns every delayed mandatory message (its route answers no queue
    at publish time); Warren holds it, so it is confirmed and not returned."""
    ch = conn.channel()
    ch.confirm_delivery()
    delayed(ch, "dmand")
    returned = []
    ch.add_on_return_callback(lambda *a: returned.append(a))
    ch.queue_declare("dmand-q", durable=True)
    ch.queue_bind("dmand-q", "dmand", "k")
    publish(ch, "dmand", "k", b"held", 50, mandatory=True)
    assert [b for _, _, b in collect(ch, "dmand-q", 1)] == [b"held"]
    conn.process_data_events(time_limit=0)
    assert returned == [], returned
    # Not delayed and routed nowhere: returned, as from any exchange.
    try:
        publish(ch, "dmand", "nowhere", b"x", mandatory=True)
        raise AssertionError("an unroutable mandatory publish was not returned")
    except pika.exceptions.UnroutableError:
        pass


def exchange_to_exchange():
    """Routed after its wait, the message goes on through exchange bindings; a delayed
    exchange downstream does not delay it again (x-delay is negative by then)."""
    ch = conn.channel()
    ch.confirm_delivery()
    delayed(ch, "d-up", "fanout")
    delayed(ch, "d-down", "fanout")
    ch.exchange_declare("fan", "fanout")
    ch.exchange_bind("d-down", "d-up")
    ch.exchange_bind("fan", "d-down")
    ch.queue_declare("e2e", durable=True)
    ch.queue_bind("e2e", "fan")
    published = publish(ch, "d-up", "", b"through", 300)
    ((arrived, headers, body),) = collect(ch, "e2e", 1)
    assert body == b"through" and headers["x-delay"] == -300, (body, headers)
    assert arrived - published >= 0.3


def dead_lettered_into_a_delayed_exchange():
    """A message dead-lettered to a delayed exchange waits there too (a retry with a
    back-off, a common use of the plugin)."""
    ch = conn.channel()
    ch.confirm_delivery()
    delayed(ch, "retry")
    ch.queue_declare("work", durable=True, arguments={"x-dead-letter-exchange": "retry", "x-dead-letter-routing-key": "again"})
    ch.queue_declare("later", durable=True)
    ch.queue_bind("later", "retry", "again")
    published = publish(ch, "", "work", b"job", 400)
    method, _, _ = t.get_one(ch, "work", no_ack=False)
    ch.basic_reject(method.delivery_tag, requeue=False)
    ((arrived, headers, body),) = collect(ch, "later", 1)
    assert body == b"job" and headers["x-delay"] == -400, (body, headers)
    assert arrived - published >= 0.4
    assert "x-death" in headers, headers


def deleting_the_exchange_cancels_what_it_holds():
    ch = conn.channel()
    ch.confirm_delivery()
    delayed(ch, "dcancel")
    ch.queue_declare("dcancel-q", durable=True)
    ch.queue_bind("dcancel-q", "dcancel", "k")
    publish(ch, "dcancel", "k", b"cancelled", 200)
    ch.exchange_delete("dcancel")
    delayed(ch, "dcancel")
    ch.queue_bind("dcancel-q", "dcancel", "k")
    # Due later than the cancelled one: messages go in due order, so had the first
    # one survived, it would arrive before this one.
    publish(ch, "dcancel", "k", b"marker", 400)
    got = [b for _, _, b in collect(ch, "dcancel-q", 1)]
    assert got == [b"marker"], got
    t.get_none(ch, "dcancel-q")


def long_delays_wait():
    """A delay of years is held (the plugin routes at once what exceeds 2^32-1 ms)."""
    ch = conn.channel()
    ch.confirm_delivery()
    delayed(ch, "dlong")
    ch.queue_declare("dlong-q", durable=True)
    ch.queue_bind("dlong-q", "dlong", "k")
    publish(ch, "dlong", "k", b"in ten years", 10 * 365 * 24 * 3600 * 1000)
    publish(ch, "dlong", "k", b"soon", 100)
    assert [b for _, _, b in collect(ch, "dlong-q", 1)] == [b"soon"]
    t.get_none(ch, "dlong-q")


def a_refusing_queue_gets_its_message_later():
    """A queue that refuses a due message (full, with x-overflow reject-publish) gets
    it again once it has room: a confirmed delayed message is not dropped."""
    ch = conn.channel()
    ch.confirm_delivery()
    delayed(ch, "dfull-x")
    ch.queue_declare(
        "dfull", durable=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
    )
    ch.queue_bind("dfull", "dfull-x", "k")
    publish(ch, "", "dfull", b"first")
    published = publish(ch, "dfull-x", "k", b"later", 100)
    # Past its due time, so that the node tries (and the full queue refuses) it.
    while time.monotonic() - published < 0.5:
        conn.process_data_events(time_limit=0.1)
    _, _, body = t.get_one(ch, "dfull")
    assert body == b"first", body
    _, _, body = t.get_one(ch, "dfull")
    assert body == b"later", body


FILLED = 200


def fill():
    ch = conn.channel()
    ch.confirm_delivery()
    delayed(ch, "dkill")
    ch.queue_declare("dkill-q", durable=True)
    ch.queue_bind("dkill-q", "dkill", "k")
    for i in range(FILLED):
        publish(ch, "dkill", "k", b"%d" % i, 1000 + 5 * i)
    t.get_none(ch, "dkill-q")


def restarted():
    ch = conn.channel()
    got = collect(ch, "dkill-q", FILLED)
    bodies = [int(b) for _, _, b in got]
    assert sorted(bodies) == list(range(FILLED)), bodies
    for _, headers, body in got:
        assert headers["x-delay"] == -(1000 + 5 * int(body)), headers
    # Each once: nothing more comes once the last was due.
    t.get_none(ch, "dkill-q")


if MODE == "main":
    refused_declarations()
    waits_and_routes_in_due_order()
    routes_as_its_type()
    mandatory_delayed_messages_are_confirmed_not_returned()
    exchange_to_exchange()
    dead_lettered_into_a_delayed_exchange()
    deleting_the_exchange_cancels_what_it_holds()
    long_delays_wait()
    a_refusing_queue_gets_its_message_later()
elif MODE == "fill":
    fill()
elif MODE == "restarted":
    restarted()
else:
    raise AssertionError("unknown mode %r" % MODE)
conn.close()
print("ok")
