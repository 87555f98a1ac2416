"""x-queue-type, answered in one place (the queue-type seam) for every front door.

classic (or no x-queue-type) declares a classic queue; quorum, or its Warren name
mirrored, declares a mirrored queue, which must be durable, shared and kept when
unused (406 with RabbitMQ's "invalid property" otherwise); so must a stream (streams.py
tests the rest of streams); an unknown type
answers 406 listing the known ones. A redeclaration with another type is inequivalent
(406). Each refusal closes only the channel, and changes nothing: the queue is not
declared.
"""

import amqp_common as t

conn = t.connect(t.port())
ch = conn.channel()

# classic, spelled out or not, is one and the same type.
ok = ch.queue_declare("typed-classic", arguments={"x-queue-type": "classic"})
assert ok.method.queue == "typed-classic", ok.method
ch.queue_declare("typed-classic")
ch.queue_declare("typed-classic", arguments={"x-queue-type": "classic"})
ch.basic_publish("", "typed-classic", b"hello")
assert t.get_one(ch, "typed-classic")[2] == b"hello"


def refused(queue, queue_type):
    c = conn.channel()
    e = t.channel_error(
        lambda: c.queue_declare(queue, arguments={"x-queue-type": queue_type}),
        406,
        "x-queue-type %r" % queue_type,
    )
    assert conn.is_open, "a refused type closes the channel, not the connection"
    return e.reply_text


text = refused("typed-stream", "stream")
assert text == (
    "PRECONDITION_FAILED - invalid property 'non-durable' for queue 'typed-stream' in vhost '/'"
), text

# quorum and mirrored are one type: durable, shared, kept when unused.
for queue_type in ["quorum", "mirrored"]:
    name = "typed-" + queue_type
    for flags, prop in [
        (dict(durable=False), "non-durable"),
        (dict(durable=True, exclusive=True), "exclusive-owner"),
        (dict(durable=True, auto_delete=True), "auto-delete"),
    ]:
        c = conn.channel()
        e = t.channel_error(
            lambda: c.queue_declare(name, arguments={"x-queue-type": queue_type}, **flags),
            406,
            "%s queue with %s" % (queue_type, prop),
        )
        assert e.reply_text.startswith(
            "PRECONDITION_FAILED - invalid property '%s' for queue '%s'" % (prop, name)
        ), e.reply_text
    c = conn.channel()
    c.confirm_delivery()
    c.queue_declare(name, durable=True, arguments={"x-queue-type": queue_type})
    c.basic_publish("", name, b"replicated")
    assert t.get_one(c, name)[2] == b"replicated"
    c.queue_delete(name)

text = refused("typed-fancy", "fancy")
assert "unknown queue type 'fancy'" in text, text
assert "known types: classic, quorum (or mirrored), stream" in text, text

# Not a string at all.
c = conn.channel()
e = t.channel_error(
    lambda: c.queue_declare("typed-number", arguments={"x-queue-type": 7}),
    406,
    "a numeric x-queue-type",
)
assert "x-queue-type" in e.reply_text, e.reply_text

# None of the refused declarations made a queue.
for name in ["typed-quorum", "typed-mirrored", "typed-stream", "typed-fancy", "typed-number"]:
    c = conn.channel()
    t.channel_error(lambda: c.queue_declare(name, passive=True), 404, "passive %s" % name)

# Redeclaring the classic queue as another type: the declaration is checked first (a
# non-durable stream is refused as such), then against the queue as it is; an existing
# queue is never turned into another type.
text = refused("typed-classic", "stream")
assert "invalid property 'non-durable'" in text, text
c = conn.channel()
e = t.channel_error(
    lambda: c.queue_declare("typed-classic", durable=True, arguments={"x-queue-type": "stream"}),
    406,
    "a classic queue redeclared as a stream",
)
assert e.reply_text == (
    "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'typed-classic' in vhost '/': "
    "received 'stream' but current is 'classic'"
), e.reply_text
assert t.count(conn.channel(), "typed-classic") == 0

# A passive declaration ignores the arguments, as RabbitMQ does.
ch = conn.channel()
ch.queue_declare("typed-classic", passive=True, arguments={"x-queue-type": "stream"})

conn.close()
t.done()
