"""AMQP over TLS (argv: AMQPS_PORT CA_FILE [CLIENT_CERT CLIENT_KEY]): pika connects
with a context that trusts the test CA, checks the server's name, declares,
publishes and gets back. With a client certificate given, the node asks for one:
a connection without it is refused, one with it is served."""

import ssl
import sys

import pika

PORT, CA = int(sys.argv[1]), sys.argv[2]
CLIENT = sys.argv[3:5]


def params(with_client_cert):
    context = ssl.create_default_context(cafile=CA)
    if with_client_cert:
        context.load_cert_chain(CLIENT[0], CLIENT[1])
    return pika.ConnectionParameters(
        host="127.0.0.1",
        port=PORT,
        ssl_options=pika.SSLOptions(context, server_hostname="localhost"),
        heartbeat=0,
        connection_attempts=20,
        retry_delay=0.25,
    )


conn = pika.BlockingConnection(params(bool(CLIENT)))
ch = conn.channel()
ch.queue_declare("over-tls")
ch.confirm_delivery()
ch.basic_publish("", "over-tls", b"secret" * 1000)
method, _, body = ch.basic_get("over-tls", auto_ack=True)
assert method is not None and body == b"secret" * 1000, (method, len(body or b""))
conn.close()

if CLIENT:
    try:
        pika.BlockingConnection(params(False))
        raise AssertionError("a client without a certificate was served")
    except pika.exceptions.AMQPConnectionError:
        pass
print("ok")
