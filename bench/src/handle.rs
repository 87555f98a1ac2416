//! The client-handle side of the bench: a Warren node driven through `warren::client`
//! over the cluster transport, as a Rust application would.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use warren::client::{
    Client, ClientError, ConsumeOptions, PublishOptions, PublishResult, QueueOptions,
};

use crate::account::{pace, record, Received};
use crate::args::BenchArgs;
use crate::confirms::Published;
use crate::message::{arrival, body, HEADER};

fn e(e: ClientError) -> String {
    e.to_string()
}

/// A client handle to `node`, or to --node.
pub async fn connect(args: &BenchArgs, node: Option<SocketAddr>) -> Result<Client, String> {
    args.conn.connect_to(node).await.map_err(e)
}

/// Declares (and unless draining, purges) the bench's queues.
pub async fn prepare(args: &BenchArgs) -> Result<(), String> {
    let admin = connect(args, None).await?;
    for queue in args.queue_names() {
        admin
            .declare_queue(
                &queue,
                QueueOptions {
                    durable: args.persistent,
                    ..Default::default()
                },
            )
            .await
            .map_err(e)?;
        if !args.drain_only {
            admin.purge(&queue).await.map_err(e)?;
        }
    }
    Ok(())
}

/// Publishes `--count` messages to `queue`; reports how many the node refused.
pub async fn publish(
    client: Client,
    args: &BenchArgs,
    queue: &str,
    publisher: u32,
) -> Result<Published, String> {
    let options = PublishOptions {
        persistent: args.persistent,
        ..Default::default()
    };
    let mut pending = std::collections::VecDeque::new();
    let mut refused = 0u64;
    let start = Instant::now();
    let padding = vec![b'w'; args.size - HEADER];
    for seq in 0..args.count {
        pace(args, start, seq).await;
        let confirm = client
            .publish("", queue, body(publisher, seq, &padding), options.clone())
            .await
            .map_err(e)?;
        // Every confirm is awaited (at the end at the latest), so the run counts only
        // messages the node took; --confirm bounds how many may be unconfirmed.
        pending.push_back(confirm);
        if args.confirm {
            while pending.len() >= args.window {
                if let Some(c) = pending.pop_front() {
                    refused += u64::from(c.await.map_err(e)? != PublishResult::Confirmed);
                }
            }
        }
    }
    for c in pending {
        refused += u64::from(c.await.map_err(e)? != PublishResult::Confirmed);
    }
    // (Confirms are awaited in order once the window is full, not as they come:
    // their latency is not taken.)
    Ok(Published {
        refused,
        confirm_us: Vec::new(),
    })
}

/// Consumes `quota` messages from `queue` with manual acks (one multiple ack per
/// quarter of the prefetch, and one for the last).
pub async fn consume(
    client: Client,
    args: &BenchArgs,
    queue: &str,
    quota: u64,
    received: Arc<Mutex<Received>>,
) -> Result<(), String> {
    let mut consumer = client
        .consume(
            queue,
            ConsumeOptions {
                prefetch: args.prefetch,
                ..Default::default()
            },
        )
        .await
        .map_err(e)?;
    let ack_every = u64::from((args.prefetch / 4).max(1));
    let mut batch: Vec<(u64, u64, u64)> = Vec::with_capacity(1024);
    for n in 1..=quota {
        let d = match consumer.next().await {
            Some(d) => d.map_err(e)?,
            None => return Err("the consumer ended early".into()),
        };
        if let Some(h) = arrival(&d.body) {
            batch.push(h);
        }
        if n % ack_every == 0 || n == quota {
            d.ack_multiple().map_err(e)?;
        }
        if batch.len() == batch.capacity() || n == quota {
            record(&received, &mut batch, args.drain_only);
        }
    }
    client.flush_settles().await;
    let _ = consumer.cancel().await;
    Ok(())
}
