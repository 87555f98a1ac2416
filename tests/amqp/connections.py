"""AMQP connections show in the node's supervision tree: each client connection
shows as `amqp-connection:IP:PORT` under `amqp`, and leaves the tree when it closes.
Stopping one from the debug shell closes it with 320 CONNECTION_FORCED, and the
messages its channels had not acknowledged go back to their queues.
"""

import json

from pika.exceptions import ConnectionClosedByBroker, StreamLostError

import amqp_common as t

P = t.port()


def connections():
    tree = json.loads(t.warren("shell", "--eval", "tree amqp", "--json"))
    return sorted(c["name"] for c in tree["children"] if c["name"].startswith("amqp-connection:"))


conn = t.connect(P)
ch = conn.channel()
ch.queue_declare("conn-q")
ch.basic_publish("", "conn-q", b"unacked")
t.wait_count(ch, "conn-q", 1)
method, _, body = t.get_one(ch, "conn-q", no_ack=False)
assert body == b"unacked"

names = connections()
assert len(names) == 1 and names[0].startswith("amqp-connection:127.0.0.1:"), names
assert "[amqp connection]" in t.warren("shell", "--eval", "tree")

other = t.connect(P)
t.poll(other, lambda: len(connections()) == 2, "the second connection in the tree")
other.close()
t.poll(conn, lambda: connections() == names, "the closed connection leaves the tree")

# Stopped from the shell: the client is told, its delivery is requeued.
assert "stopped " + names[0] in t.warren("shell", "--eval", "stop " + names[0])
try:
    t.poll(conn, lambda: conn.is_closed, "the stopped connection closes")
except ConnectionClosedByBroker as e:
    assert e.reply_code == 320, e
    assert "CONNECTION_FORCED" in e.reply_text, e
except StreamLostError as e:
    raise AssertionError("the connection was dropped without connection.close: %r" % e)
fresh = t.connect(P)
fch = fresh.channel()
t.wait_count(fch, "conn-q", 1)
t.poll(fresh, lambda: len(connections()) == 1 and connections() != names, "only the new connection left")
fresh.close()
t.done()
