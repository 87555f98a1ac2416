"""Transactions through pika: tx.select; publishes are enqueued only at tx.commit and
discarded by tx.rollback; acks and rejects inside a transaction take effect only at
commit; commit and rollback outside a transaction fail with 406.
"""

import amqp_common as t

conn = t.connect(t.port())
probe = conn.channel()
tx = conn.channel()
tx.tx_select()
probe.queue_declare("txq")

# ----- rollback discards the publishes ------------------------------------------
tx.basic_publish("", "txq", b"r1")
tx.basic_publish("", "txq", b"r2")
assert t.count(probe, "txq") == 0, "nothing is enqueued before commit"
tx.tx_rollback()
assert t.count(probe, "txq") == 0, "rollback discarded both publishes"

# ----- commit enqueues them ----------------------------------------------------------
tx.basic_publish("", "txq", b"c1")
tx.basic_publish("", "txq", b"c2")
assert t.count(probe, "txq") == 0, "still nothing before commit"
tx.tx_commit()
# commit-ok means enqueued: no waiting needed.
assert t.count(probe, "txq") == 2, "commit enqueued both publishes"

# A transaction spanning two queues, and an empty commit.
probe.queue_declare("txq2")
tx.basic_publish("", "txq", b"c3")
tx.basic_publish("", "txq2", b"other")
tx.tx_commit()
tx.tx_commit()
assert t.count(probe, "txq") == 3 and t.count(probe, "txq2") == 1, "both queues got theirs"
assert t.drain(probe, "txq2", 1) == [b"other"], "txq2 holds the committed message"

# ----- an ack inside a transaction applies only at commit --------------------------------
m1, _, b1 = t.get_one(tx, "txq", no_ack=False)
assert b1 == b"c1", "first committed message first: %r" % b1
tx.basic_ack(m1.delivery_tag)
# Not yet applied: closing the channel now would return c1. Roll the ack back instead...
tx.tx_rollback()
# ... and the message is still unacked on this channel: ack it again, and commit.
tx.basic_ack(m1.delivery_tag)
tx.tx_commit()

m2, _, b2 = t.get_one(tx, "txq", no_ack=False)
assert b2 == b"c2", "then c2: %r" % b2
tx.basic_ack(m2.delivery_tag)
# An ack never committed: closing the channel returns c2 to the queue.
tx.close()
# The queue holds c2 (given back, redelivered) and c3, and not c1, whose ack was
# committed.
t.wait_count(probe, "txq", 2)
m, _, b = t.get_one(probe, "txq", no_ack=False)
assert b == b"c2" and m.redelivered, "the uncommitted ack left c2 unacked: %r %r" % (b, m)
m3, _, b = t.get_one(probe, "txq", no_ack=False)
assert b == b"c3", "then c3: %r" % b
t.get_none(probe, "txq")  # c1's committed ack removed it
probe.basic_nack(m3.delivery_tag, multiple=True, requeue=True)
t.wait_count(probe, "txq", 2)

# ----- a reject inside a transaction, and a multiple ack ----------------------------------
tx = conn.channel()
tx.tx_select()
ma, _, ba = t.get_one(tx, "txq", no_ack=False)
mb, _, bb = t.get_one(tx, "txq", no_ack=False)
assert (ba, bb) == (b"c2", b"c3"), "c2 then c3: %r" % [ba, bb]
tx.basic_reject(ma.delivery_tag, requeue=True)
assert t.count(probe, "txq") == 0, "the reject waits for commit: nothing is ready"
tx.tx_commit()
t.wait_count(probe, "txq", 1)  # c2 is back
mc, _, bc = t.get_one(tx, "txq", no_ack=False)
assert bc == b"c2" and mc.redelivered, "the committed reject requeued c2: %r" % bc
tx.basic_ack(mc.delivery_tag, multiple=True)  # c3 and c2
tx.tx_commit()
tx.close()
assert t.count(probe, "txq") == 0, "the committed multiple ack settled both"

# ----- publishes and acks in one transaction ----------------------------------------------
probe.basic_publish("", "txq", b"in")
tx = conn.channel()
tx.tx_select()
m, _, b = t.get_one(tx, "txq", no_ack=False)
tx.basic_ack(m.delivery_tag)
tx.basic_publish("", "txq2", b"out")
tx.tx_commit()
tx.close()
assert t.count(probe, "txq") == 0, "the consumed message was acked at commit"
assert t.drain(probe, "txq2", 1) == [b"out"], "the published one arrived at commit"

# ----- commit / rollback without tx.select ------------------------------------------------
plain = conn.channel()
t.channel_error(plain.tx_commit, 406, "tx.commit on a non-transactional channel")
plain = conn.channel()
t.channel_error(plain.tx_rollback, 406, "tx.rollback on a non-transactional channel")

assert conn.is_open, "the connection is still open"
conn.close()
t.done()
