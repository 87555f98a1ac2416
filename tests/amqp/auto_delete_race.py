"""A declaration racing the deletion of an auto-delete queue: an exclusive consumer
takes a message, acks it and closes its connection; at once a new connection declares
the queue again and consumes from it. The declaration must find the queue either
alive or gone and create it anew, never answer declare-ok for a queue that is being
deleted (then basic.consume answers 404). Repeated, as races are."""

import pika

import amqp_common as t

PORT = t.port()
ROUNDS = 40
QUEUE = "race.auto"

for round_ in range(ROUNDS):
    first = t.connect(PORT)
    ch = first.channel()
    ch.queue_declare(QUEUE, auto_delete=True)
    ch.basic_publish("", QUEUE, b"m%d" % round_)
    got = []
    tag = ch.basic_consume(QUEUE, lambda c, m, p, b: got.append(m.delivery_tag), exclusive=True)
    t.poll(first, lambda: got, "round %d: the message" % round_)
    ch.basic_ack(got[0])
    first.close()

    second = t.connect(PORT)
    ch = second.channel()
    ok = ch.queue_declare(QUEUE, auto_delete=True)
    try:
        ch.basic_consume(QUEUE, lambda *a: None, exclusive=True)
    except pika.exceptions.ChannelClosedByBroker as e:
        raise AssertionError(
            "round %d: declare-ok (%d consumers) then basic.consume: %s"
            % (round_, ok.method.consumer_count, e)
        )
    second.close()
print("ok")
