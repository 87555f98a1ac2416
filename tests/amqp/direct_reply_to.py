"""Direct reply-to (amq.rabbitmq.reply-to), as RPC clients use it, and consumer
priorities (x-priority), both advertised in the server's capabilities.

argv: AMQP_PORT [SERVER_PORT REPLY_PORT]: the RPC client connects to the first port,
the RPC server consumes requests through the second and replies through the third
(the same node when they are not given; three nodes of a cluster when they are)."""

import sys

import pika

import amqp_common as t

CLIENT = int(sys.argv[1])
SERVER = int(sys.argv[2]) if len(sys.argv) > 2 else CLIENT
REPLIER = int(sys.argv[3]) if len(sys.argv) > 3 else CLIENT
REPLY_TO = "amq.rabbitmq.reply-to"


def closed_with(ch_fn, code, text):
    try:
        ch_fn()
        raise AssertionError("expected %d %s" % (code, text))
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == code and text in e.reply_text, e


def known(conn, queue):
    try:
        conn.channel().queue_declare(queue, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False


client = t.connect(CLIENT)
caps = client._impl.server_properties["capabilities"]
assert caps.get("direct_reply_to") is True, caps
assert caps.get("consumer_priorities") is True, caps

# The pseudo-queue is there for a passive declare; consuming needs no-ack; publishing
# with reply_to needs the consumer first.
client.channel().queue_declare(REPLY_TO, passive=True)
closed_with(
    lambda: client.channel().basic_consume(REPLY_TO, lambda *a: None, auto_ack=False),
    406,
    "reply consumer cannot acknowledge",
)


def publish_without_consumer():
    ch = client.channel()
    ch.basic_publish("", "anything", b"x", pika.BasicProperties(reply_to=REPLY_TO))
    ch.queue_declare("sync-point")  # the close comes before this answer


closed_with(publish_without_consumer, 406, "fast reply consumer does not exist")

# The RPC server: requests come through SERVER, replies go out through REPLIER.
server = t.connect(SERVER)
sch = server.channel()
sch.queue_declare("rpc.requests")
replier = t.connect(REPLIER)
rch = replier.channel()
rch.confirm_delivery()
t.poll(replier, lambda: known(replier, "rpc.requests"), "the request queue everywhere")


# The RPC client: one channel consumes replies (no-ack) and publishes requests.
ch = client.channel()
replies = []
ch.basic_consume(REPLY_TO, lambda c, m, p, b: replies.append((m, p, b)), auto_ack=True)
for i in range(5):
    ch.basic_publish(
        "",
        "rpc.requests",
        b"question %d" % i,
        pika.BasicProperties(reply_to=REPLY_TO, correlation_id=str(i)),
    )
addresses = set()
for i in range(5):
    method, props, body = t.get_one(sch, "rpc.requests")
    assert props.reply_to.startswith(REPLY_TO + "."), props.reply_to
    addresses.add(props.reply_to)
    # The address is there for a passive declare (where the client is).
    client.channel().queue_declare(props.reply_to, passive=True)
    rch.basic_publish(
        "",
        props.reply_to,
        b"answer to " + body,
        pika.BasicProperties(correlation_id=props.correlation_id),
        mandatory=True,
    )
assert len(addresses) == 1, addresses
t.poll(client, lambda: len(replies) == 5, "five replies")
for i, (m, p, body) in enumerate(replies):
    assert body == b"answer to question %d" % i, body
    assert p.correlation_id == str(i), p
    assert m.routing_key == list(addresses)[0], m.routing_key

# Once the client's channel is gone, a reply is unroutable (returned when mandatory).
address = list(addresses)[0]
ch.close()
t.poll(replier, lambda: not known(client, address), "the reply consumer gone")
try:
    rch.basic_publish("", address, b"too late", mandatory=True)
    raise AssertionError("a reply to a closed channel was routed")
except pika.exceptions.UnroutableError:
    pass

# Consumer priorities: while the higher-priority consumer has credit, it gets all.
pch = client.channel()
pch.queue_declare("prio")
high, low = [], []
pch.basic_consume("prio", lambda c, m, p, b: high.append(b), auto_ack=True,
                  arguments={"x-priority": 10})
pch.basic_consume("prio", lambda c, m, p, b: low.append(b), auto_ack=True)
for i in range(20):
    pch.basic_publish("", "prio", b"%d" % i)
t.poll(client, lambda: len(high) + len(low) == 20, "twenty deliveries")
assert (len(high), len(low)) == (20, 0), (high, low)
closed_with(
    lambda: client.channel().basic_consume("prio", lambda *a: None,
                                           arguments={"x-priority": "high"}),
    406,
    "x-priority",
)
client.close()
server.close()
replier.close()
print("ok")
