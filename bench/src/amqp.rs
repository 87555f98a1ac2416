//! The AMQP 0-9-1 side of the bench (`--amqp URI`), through amqprs, a maintained
//! client library: the broker sees the frames, writes and acks an application's
//! client sends, so its CPU per message is what such a client costs it. Same
//! scenarios and the same exactly-once and latency accounting as the client handle;
//! against any AMQP 0-9-1 broker (Warren or RabbitMQ).
//!
//! amqprs rather than lapin: it needs 2.0-3.4 times less of the bench's CPU per
//! message, so one bench core drives a broker harder
//! (`docs/2026-12-04-bench-tool.md`).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use amqprs::callbacks::ChannelCallback;
use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments, Channel,
    ConfirmSelectArguments, QueueDeclareArguments, QueueDeleteArguments, QueuePurgeArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::error::Error;
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, Nack, Return, DELIVERY_MODE_PERSISTENT};
use tokio::sync::mpsc;

use crate::account::{due, record, within, Received};
use crate::args::BenchArgs;
use crate::confirms::{Confirms, Published};
use crate::message::{arrival, body, HEADER};

/// The first line of a report in this mode.
pub const LABEL: &str = "client: amqprs 2.1 (AMQP client library)";

pub(crate) fn e(what: &str) -> impl Fn(Error) -> String + '_ {
    move |err| format!("{what}: {err}")
}

/// Connects (PLAIN login with the URI's user and password, amqprs's defaults
/// otherwise).
pub async fn open(uri: &str) -> Result<Connection, String> {
    let target = crate::uri::parse(uri)?;
    let arguments =
        OpenConnectionArguments::new(&target.host, target.port, &target.user, &target.password)
            .virtual_host(&target.vhost)
            .connection_name("warren-bench")
            .finish();
    let what = format!("cannot connect to {}:{}", target.host, target.port);
    within(&what, async {
        Connection::open(&arguments).await.map_err(e(&what))
    })
    .await
}

/// What a channel's callback passes on: publisher confirms, and why the broker closed
/// the channel or cancelled its consumer.
#[derive(Debug)]
pub(crate) enum Event {
    Confirm {
        tag: u64,
        multiple: bool,
        nack: bool,
    },
    Closed(String),
}

/// The channel callback of amqprs, forwarding to the bench's task.
struct Events(mpsc::UnboundedSender<Event>);

#[async_trait::async_trait]
impl ChannelCallback for Events {
    async fn close(&mut self, _: &Channel, close: CloseChannel) -> Result<(), Error> {
        let _ = self.0.send(Event::Closed(format!(
            "the broker closed the channel: {} {}",
            close.reply_code(),
            close.reply_text()
        )));
        Ok(())
    }
    async fn cancel(&mut self, _: &Channel, cancel: Cancel) -> Result<(), Error> {
        let _ = self.0.send(Event::Closed(format!(
            "the broker cancelled the consumer {}",
            cancel.consumer_tag()
        )));
        Ok(())
    }
    async fn flow(&mut self, _: &Channel, active: bool) -> Result<bool, Error> {
        Ok(active)
    }
    async fn publish_ack(&mut self, _: &Channel, ack: Ack) {
        let _ = self.0.send(Event::Confirm {
            tag: ack.delivery_tag(),
            multiple: ack.mutiple(),
            nack: false,
        });
    }
    async fn publish_nack(&mut self, _: &Channel, nack: Nack) {
        let _ = self.0.send(Event::Confirm {
            tag: nack.delivery_tag(),
            multiple: nack.multiple(),
            nack: true,
        });
    }
    async fn publish_return(&mut self, _: &Channel, _: Return, _: BasicProperties, _: Vec<u8>) {}
}

/// A channel with the bench's callback, and where the callback's events arrive.
pub(crate) async fn channel(
    connection: &Connection,
) -> Result<(Channel, mpsc::UnboundedReceiver<Event>), String> {
    let ch = within("channel.open", async {
        connection
            .open_channel(None)
            .await
            .map_err(e("channel.open"))
    })
    .await?;
    let (tx, rx) = mpsc::unbounded_channel();
    ch.register_callback(Events(tx))
        .await
        .map_err(e("channel callback"))?;
    Ok((ch, rx))
}

/// Why the broker closed the channel, if it said so.
pub(crate) fn closed_reason(events: &mut mpsc::UnboundedReceiver<Event>) -> Option<String> {
    while let Ok(event) = events.try_recv() {
        if let Event::Closed(reason) = event {
            return Some(reason);
        }
    }
    None
}

/// Closes the channel and the connection, each waiting for the broker's close-ok:
/// every frame sent before (publishes, acks) has been handled by then, and what the
/// broker had delivered beyond the acks goes back to the queue.
pub(crate) async fn close(connection: Connection, ch: Channel) -> Result<(), String> {
    within("channel.close", async {
        ch.close().await.map_err(e("channel.close"))
    })
    .await?;
    within("connection.close", async {
        connection.close().await.map_err(e("connection.close"))
    })
    .await
}

/// Declares (and unless draining, purges) the bench's queues.
pub async fn prepare(uri: &str, args: &BenchArgs) -> Result<(), String> {
    let connection = open(uri).await?;
    let (ch, mut events) = channel(&connection).await?;
    let stream = args.queue_type.as_deref() == Some("stream");
    for queue in args.queue_names() {
        if stream && !args.drain_only {
            // A stream cannot be purged: it starts afresh.
            let what = format!("queue.delete {queue}");
            let deleted = within(&what, async {
                ch.queue_delete(QueueDeleteArguments::new(&queue))
                    .await
                    .map_err(e(&what))
            })
            .await;
            deleted.map_err(|err| closed_reason(&mut events).unwrap_or(err))?;
        }
        let what = format!("queue.declare {queue}");
        let mut arguments = QueueDeclareArguments::new(&queue)
            .durable(args.persistent)
            .finish();
        if let Some(kind) = &args.queue_type {
            let mut table = amqprs::FieldTable::new();
            let (key, value) = ("x-queue-type".try_into(), kind.clone().try_into());
            match (key, value) {
                (Ok(key), Ok(value)) => {
                    table.insert(key, amqprs::FieldValue::S(value));
                }
                _ => return Err(format!("--queue-type {kind}: not a valid queue type")),
            }
            arguments.arguments(table);
        }
        let declared = within(&what, async {
            ch.queue_declare(arguments).await.map_err(e(&what))
        })
        .await;
        declared.map_err(|err| closed_reason(&mut events).unwrap_or(err))?;
        if !args.drain_only && !stream {
            let what = format!("queue.purge {queue}");
            let purged = within(&what, async {
                ch.queue_purge(QueuePurgeArguments::new(&queue))
                    .await
                    .map_err(e(&what))
            })
            .await;
            purged.map_err(|err| closed_reason(&mut events).unwrap_or(err))?;
        }
    }
    close(connection, ch).await
}

/// Waits for the broker's next confirm (or its reason to close the channel) and
/// settles it.
pub(crate) async fn next_confirm(
    events: &mut mpsc::UnboundedReceiver<Event>,
    confirms: &mut Confirms,
    published: u64,
) -> Result<(), String> {
    let event = within("publisher confirms", async {
        events
            .recv()
            .await
            .ok_or_else(|| "the channel ended".to_string())
    })
    .await?;
    settle(event, confirms, published)
}

fn settle(event: Event, confirms: &mut Confirms, published: u64) -> Result<(), String> {
    match event {
        Event::Confirm {
            tag,
            multiple,
            nack,
        } => confirms.settle(tag, multiple, nack, published),
        Event::Closed(reason) => Err(reason),
    }
}

/// Waits until message `seq` is due (at `--rate`), settling the confirms that come
/// meanwhile and those already in, so that a confirm's latency is taken when it
/// arrives, not when the window next fills.
async fn pace_settling(
    args: &BenchArgs,
    start: Instant,
    seq: u64,
    events: &mut mpsc::UnboundedReceiver<Event>,
    confirms: &mut Confirms,
    published: u64,
) -> Result<(), String> {
    if let Some(due) = due(args, start, seq) {
        let sleep = tokio::time::sleep_until(due.into());
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                event = events.recv() => match event {
                    Some(event) => settle(event, confirms, published)?,
                    None => return Err("the channel ended".to_string()),
                },
            }
        }
    }
    while let Ok(event) = events.try_recv() {
        settle(event, confirms, published)?;
    }
    Ok(())
}

/// Publishes `--count` messages to `queue`, each handed to amqprs's `basic_publish`
/// as an application would (and with --confirm at most --window unconfirmed); reports
/// how many the broker refused and how long confirms took. Ends with channel.close and
/// connection.close, so that every message has reached the broker when it returns,
/// confirmed or not.
pub async fn publish(
    connection: Connection,
    args: &BenchArgs,
    queue: &str,
    publisher: u32,
) -> Result<Published, String> {
    let (ch, mut events) = channel(&connection).await?;
    if args.confirm {
        within("confirm.select", async {
            ch.confirm_select(ConfirmSelectArguments::default())
                .await
                .map_err(e("confirm.select"))
        })
        .await?;
    }
    let mut properties = BasicProperties::default();
    if args.persistent {
        properties.with_delivery_mode(DELIVERY_MODE_PERSISTENT);
    }
    let properties = properties.finish();
    let targets: Vec<BasicPublishArguments> = if args.spread {
        args.queue_names()
            .iter()
            .map(|q| BasicPublishArguments::new("", q))
            .collect()
    } else {
        vec![BasicPublishArguments::new("", queue)]
    };
    let padding = vec![b'w'; args.size - HEADER];
    let window = args.window.max(1) as u64;
    let mut confirms = Confirms::default();
    let mut published = 0u64;
    let start = Instant::now();
    for seq in 0..args.count {
        pace_settling(args, start, seq, &mut events, &mut confirms, published).await?;
        if args.confirm {
            while confirms.outstanding(published) >= window {
                next_confirm(&mut events, &mut confirms, published).await?;
            }
        }
        let body = body(publisher, seq, &padding).to_vec();
        let arguments = &targets[(seq % targets.len() as u64) as usize];
        let sent = within("basic.publish", async {
            ch.basic_publish(properties.clone(), body, arguments.clone())
                .await
                .map_err(e("basic.publish"))
        })
        .await;
        sent.map_err(|err| closed_reason(&mut events).unwrap_or(err))?;
        confirms.published();
        published += 1;
    }
    if args.confirm {
        while confirms.outstanding(published) > 0 {
            next_confirm(&mut events, &mut confirms, published).await?;
        }
    }
    close(connection, ch)
        .await
        .map_err(|err| closed_reason(&mut events).unwrap_or(err))?;
    Ok(confirms.report())
}

/// Consumes `quota` messages from `queue` with manual acks (one multiple ack per
/// quarter of the prefetch, and one for the last). What the broker delivered beyond
/// the quota goes back to the queue when the connection closes.
pub async fn consume(
    connection: Connection,
    args: &BenchArgs,
    queue: &str,
    quota: u64,
    received: Arc<Mutex<Received>>,
) -> Result<(), String> {
    let (ch, mut events) = channel(&connection).await?;
    let prefetch = u16::try_from(args.prefetch).unwrap_or(u16::MAX);
    within("basic.qos", async {
        ch.basic_qos(BasicQosArguments::new(0, prefetch, false))
            .await
            .map_err(e("basic.qos"))
    })
    .await?;
    let what = format!("basic.consume {queue}");
    let mut arguments = BasicConsumeArguments::new(queue, "")
        .manual_ack(!args.no_ack)
        .finish();
    if args.drain_only && args.queue_type.as_deref() == Some("stream") {
        // A stream is read from where the consumer asks: what it holds, from its start.
        let mut table = amqprs::FieldTable::new();
        if let (Ok(key), Ok(value)) = ("x-stream-offset".try_into(), "first".try_into()) {
            table.insert(key, amqprs::FieldValue::S(value));
        }
        arguments.arguments(table);
    }
    let (_, mut deliveries) = within(&what, async {
        ch.basic_consume_rx(arguments).await.map_err(e(&what))
    })
    .await
    .map_err(|err| closed_reason(&mut events).unwrap_or(err))?;
    // From the prefetch the broker applies: acks wait for no more than it sends.
    let ack_every = u64::from((prefetch / 4).max(1));
    let mut batch: Vec<(u64, u64, u64)> = Vec::with_capacity(1024);
    let mut n = 0u64;
    while n < quota {
        let message = within("a delivery", async {
            deliveries
                .recv()
                .await
                .ok_or_else(|| format!("the consumer of {queue} ended"))
        })
        .await
        .map_err(|err| closed_reason(&mut events).unwrap_or(err))?;
        // The latency is taken here, as the delivery is handed over.
        if let Some(h) = message.content.as_deref().and_then(arrival) {
            batch.push(h);
        }
        n += 1;
        if !args.no_ack && (n.is_multiple_of(ack_every) || n == quota) {
            let tag = message
                .deliver
                .as_ref()
                .map(|d| d.delivery_tag())
                .ok_or("amqprs handed over a delivery without its basic.deliver")?;
            let acked = within("basic.ack", async {
                ch.basic_ack(BasicAckArguments::new(tag, true))
                    .await
                    .map_err(e("basic.ack"))
            })
            .await;
            acked.map_err(|err| closed_reason(&mut events).unwrap_or(err))?;
        }
        if batch.len() == batch.capacity() || n == quota {
            record(&received, &mut batch, args.drain_only);
        }
    }
    close(connection, ch).await
}
