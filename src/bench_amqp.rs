//! The AMQP 0-9-1 side of `warren bench` (`--amqp URI`): the same scenarios and the
//! same exactly-once and latency accounting as through the client handle, with lapin
//! as the client, so that one command measures Warren and RabbitMQ alike.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use crate::bench::{arrival, body, pace, record, BenchArgs, Received, HEADER};

fn amqp_error(what: &str) -> impl Fn(lapin::Error) -> String + '_ {
    move |e| format!("AMQP {what} failed: {e}")
}

/// One connection with one channel (each publisher and consumer has its own, as with
/// the client handle). The connection closes when this is dropped.
pub struct Link {
    _connection: Connection,
    channel: Channel,
}

pub async fn open(uri: &str) -> Result<Link, String> {
    let connection = Connection::connect(uri, ConnectionProperties::default())
        .await
        .map_err(|e| format!("cannot connect to {uri}: {e}"))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(amqp_error("channel.open"))?;
    Ok(Link {
        _connection: connection,
        channel,
    })
}

/// Declares (and unless draining, purges) the bench's queues.
pub async fn prepare(uri: &str, args: &BenchArgs) -> Result<(), String> {
    let link = open(uri).await?;
    let channel = &link.channel;
    for queue in args.queue_names() {
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: args.persistent,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(amqp_error("queue.declare"))?;
        if !args.drain_only {
            channel
                .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
                .await
                .map_err(amqp_error("queue.purge"))?;
        }
    }
    Ok(())
}

/// Publishes `--count` messages to `queue`; returns how many the broker refused.
pub async fn publish(
    link: Link,
    args: &BenchArgs,
    queue: &str,
    publisher: u32,
) -> Result<u64, String> {
    let channel = &link.channel;
    if args.confirm {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(amqp_error("confirm.select"))?;
    }
    let properties = if args.persistent {
        BasicProperties::default().with_delivery_mode(2)
    } else {
        BasicProperties::default()
    };
    let padding = vec![b'w'; args.size - HEADER];
    let mut pending = std::collections::VecDeque::new();
    let mut refused = 0u64;
    let start = Instant::now();
    for seq in 0..args.count {
        pace(args, start, seq).await;
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &body(publisher, seq, &padding),
                properties.clone(),
            )
            .await
            .map_err(amqp_error("basic.publish"))?;
        if args.confirm {
            pending.push_back(confirm);
            while pending.len() >= args.window {
                if let Some(c) = pending.pop_front() {
                    let outcome = c.await.map_err(amqp_error("confirm"))?;
                    refused += u64::from(outcome.is_nack());
                }
            }
        }
    }
    for c in pending {
        let outcome = c.await.map_err(amqp_error("confirm"))?;
        refused += u64::from(outcome.is_nack());
    }
    Ok(refused)
}

/// Consumes `quota` messages from `queue` with manual acks (one multiple ack per
/// quarter of the prefetch).
pub async fn consume(
    link: Link,
    args: &BenchArgs,
    queue: &str,
    quota: u64,
    received: Arc<Mutex<Received>>,
    consumed: Arc<AtomicU64>,
) -> Result<(), String> {
    let channel = &link.channel;
    let prefetch = u16::try_from(args.prefetch).unwrap_or(u16::MAX);
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .map_err(amqp_error("basic.qos"))?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(amqp_error("basic.consume"))?;
    let ack_every = u64::from((args.prefetch / 4).max(1));
    let mut batch: Vec<(u64, u64, u64)> = Vec::with_capacity(1024);
    for n in 1..=quota {
        let delivery = match consumer.next().await {
            Some(d) => d.map_err(amqp_error("delivery"))?,
            None => return Err("the AMQP consumer ended early".into()),
        };
        if let Some(h) = arrival(&delivery.data) {
            batch.push(h);
        }
        if n % ack_every == 0 || n == quota {
            delivery
                .acker
                .ack(BasicAckOptions { multiple: true })
                .await
                .map_err(amqp_error("basic.ack"))?;
        }
        if batch.len() == batch.capacity() || n == quota {
            record(&received, &mut batch, args.drain_only);
        }
        consumed.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}
