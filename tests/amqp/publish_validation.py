"""Publish properties RabbitMQ validates, closing the channel with 406
PRECONDITION_FAILED: a user_id that is not the connection's user (so consumers can
trust it), and an expiration that is not a non-negative integer string. Valid values
pass unchanged.
"""

import amqp_common as t
import pika

conn = t.connect(t.port())
ch = conn.channel()
ch.confirm_delivery()
ch.queue_declare("checked")
ch.basic_publish("", "checked", b"me", properties=pika.BasicProperties(user_id="guest", expiration="60000"))
_, props, _ = t.get_one(ch, "checked")
assert (props.user_id, props.expiration) == ("guest", "60000"), "valid values are kept: %r" % props

for what, bad_props in (
    ("user_id 'mallory' on a connection of 'guest'", pika.BasicProperties(user_id="mallory")),
    ("expiration 'abc'", pika.BasicProperties(expiration="abc")),
    ("expiration '-5'", pika.BasicProperties(expiration="-5")),
):
    bad = conn.channel()
    bad.confirm_delivery()
    t.channel_error(lambda: bad.basic_publish("", "checked", b"refused", properties=bad_props), 406, "a publish with " + what)

assert t.count(ch, "checked") == 0, "no refused message was enqueued"
conn.close()
t.done()
