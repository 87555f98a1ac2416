"""An ack of an unknown delivery tag inside a transaction: RabbitMQ checks the tag
when the basic.ack arrives (channel closed with 406 on basic.ack), not at tx.commit;
so does a second ack of the same tag within one transaction.
"""

import amqp_common as t

conn = t.connect(t.port())

# ----- an unknown tag: 406 at the ack, before any commit ------------------------------
ch = conn.channel()
ch.tx_select()
ch.basic_ack(999)
e = t.closed_by_broker(conn, ch, 406, "basic.ack of an unknown tag inside a transaction")
assert (e.args[0], "999" in e.reply_text) == (406, True), "406 names the tag: %r" % (e.args,)

# ----- the same tag twice in one transaction: 406 at the second ack --------------------
probe = conn.channel()
probe.queue_declare("txq")
probe.basic_publish("", "txq", b"x")
ch = conn.channel()
ch.tx_select()
m, _, _ = t.get_one(ch, "txq", no_ack=False)
ch.basic_ack(m.delivery_tag)
ch.basic_ack(m.delivery_tag)
t.closed_by_broker(conn, ch, 406, "a second ack of one tag inside a transaction")

assert conn.is_open, "the connection is still open"
conn.close()
t.done()
