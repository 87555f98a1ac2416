"""connection.update-secret (10.70), which clients use to refresh an OAuth token or a
rotated password: the new secret is checked (here: as the user's password) and
answered with update-secret-ok, and the connection goes on; a secret the user's
credentials refuse closes the connection with 530 NOT_ALLOWED, as on RabbitMQ."""

import pika

import amqp_common as t

conn = t.connect(t.port())
conn.update_secret("guest", "password rotated")
ch = conn.channel()
ch.queue_declare("after-update-secret")
ch.basic_publish("", "after-update-secret", b"still here")
method, _, body = t.get_one(ch, "after-update-secret")
assert body == b"still here", body
conn.update_secret("guest", "again")
conn.close()

conn = t.connect(t.port())
try:
    conn.update_secret("not-the-password", "wrong")
    raise AssertionError("a wrong secret was accepted")
except pika.exceptions.ConnectionClosedByBroker as e:
    assert e.reply_code == 530, e
    assert "Secret update was refused for user 'guest'" in e.reply_text, e
print("ok")
