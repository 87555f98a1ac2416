"""queue.delete of a queue that does not exist: RabbitMQ 3.x answers delete-ok with
message_count 0 (deletes are idempotent), as Warren already does for exchange.delete.
"""

import amqp_common as t

conn = t.connect(t.port())
ch = conn.channel()

t.succeeds(lambda: ch.exchange_delete("no-such-exchange"), "exchange.delete of a missing exchange")
r = t.succeeds(lambda: ch.queue_delete("no-such-queue"), "queue.delete of a missing queue")
assert r.method.message_count == 0, "delete-ok of a missing queue counts 0: %r" % r.method
# Deleting twice: the second is a no-op too.
ch.queue_declare("once")
ch.queue_delete("once")
t.succeeds(lambda: ch.queue_delete("once"), "a second queue.delete of one queue")
assert ch.is_open, "the channel stays open"
conn.close()
t.done()
