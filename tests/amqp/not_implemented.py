"""NOT_IMPLEMENTED (540) is a connection error in AMQP 0-9-1: RabbitMQ answers
channel.flow(active=false) and basic.recover(requeue=false) with connection.close 540,
not with channel.close.
"""

import amqp_common as t
from pika.exceptions import ConnectionClosedByBroker

P = t.port()
for what, call in (
    ("channel.flow(active=false)", lambda ch: ch.flow(False)),
    ("basic.recover(requeue=false)", lambda ch: ch.basic_recover(requeue=False)),
):
    conn = t.connect(P)
    ch = conn.channel()
    try:
        call(ch)
    except ConnectionClosedByBroker as e:
        assert e.reply_code == 540, "%s: expected connection close 540, got %r" % (what, e)
    except Exception as e:  # noqa: BLE001 - anything else is the failure reported
        raise AssertionError("%s: expected connection.close 540, got %r" % (what, e))
    else:
        raise AssertionError("%s was accepted" % what)
    assert conn.is_closed, "%s: the connection is closed" % what
t.done()
