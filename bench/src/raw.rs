//! The raw-frame AMQP 0-9-1 client of the bench (`--amqp URI --raw-frames`): the same
//! scenarios and the same exactly-once and latency accounting as the other clients,
//! against any AMQP 0-9-1 broker (Warren or RabbitMQ).
//!
//! It is the bench's own client, not a library: publishes are pre-encoded and written
//! in 64 KiB chunks, deliveries and confirms parsed by hand, so that one core of load
//! generator drives several hundred thousand messages a second (under a microsecond of
//! its CPU per message). It shows what the broker costs with a minimal client; what
//! an application's client costs the broker is the library mode's (`crate::amqp`).
//!
//! | file | concern |
//! | --- | --- |
//! | `raw.rs` | the scenarios: declare and purge, publish, consume |
//! | `raw/link.rs` | the URI, the handshake, the socket, the broker's closes |
//! | `raw/wire.rs` | frames by hand: methods, a pre-encoded publish, deliveries, confirms |

mod link;
mod wire;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::account::{due, pace, record, Received};
use crate::args::BenchArgs;
use crate::confirms::{Confirms, Published};
use crate::message::{arrival, now_nanos};
use link::describe;
pub use link::Link;
use wire::{Incoming, Method, Publication};

/// What a publisher gathers before it writes (it writes sooner when it has to wait
/// for confirms or for its --rate).
const WRITE_CHUNK: usize = 64 * 1024;

/// Declares (and unless draining, purges) the bench's queues.
pub async fn prepare(uri: &str, args: &BenchArgs) -> Result<(), String> {
    let mut link = Link::open(uri).await?;
    for queue in args.queue_names() {
        link.call(
            &format!("queue.declare {queue}"),
            wire::queue_declare(&queue, args.persistent)?,
            |m| *m == Method::DeclareOk,
        )
        .await?;
        if !args.drain_only {
            link.call(
                &format!("queue.purge {queue}"),
                wire::queue_purge(&queue)?,
                |m| *m == Method::PurgeOk,
            )
            .await?;
        }
    }
    link.close().await
}

/// Publishes `--count` messages to `queue`; reports how many the broker refused and
/// how long confirms took (from when a message was put in the output buffer).
/// Ends with connection.close, so that every message has reached the broker when it
/// returns, confirmed or not.
pub async fn publish(
    mut link: Link,
    args: &BenchArgs,
    queue: &str,
    publisher: u32,
) -> Result<Published, String> {
    if args.confirm {
        link.call("confirm.select", wire::confirm_select(), |m| {
            *m == Method::SelectOk
        })
        .await?;
    }
    let message = Publication::new(queue, args.size, args.persistent, link.frame_max())?;
    link.out.reserve(WRITE_CHUNK + message.len());
    let window = args.window.max(1) as u64;
    let mut confirms = Confirms::default();
    let mut published = 0u64;
    let start = Instant::now();
    for seq in 0..args.count {
        // pace's schedule: send what is gathered before sleeping.
        if due(args, start, seq).is_some_and(|due| Instant::now() < due) {
            pump(&mut link, &mut confirms, published, false).await?;
            pace(args, start, seq).await;
        }
        if args.confirm {
            while confirms.outstanding(published) >= window {
                pump(&mut link, &mut confirms, published, true).await?;
            }
        }
        message.put(&mut link.out, publisher, seq, now_nanos());
        confirms.published();
        published += 1;
        if link.out.len() >= WRITE_CHUNK {
            pump(&mut link, &mut confirms, published, false).await?;
        }
    }
    link.flush().await?;
    if args.confirm {
        while confirms.outstanding(published) > 0 {
            pump(&mut link, &mut confirms, published, true).await?;
        }
    }
    link.close().await?;
    Ok(confirms.report())
}

/// Sends what is gathered, reads what the broker sent (waiting for something when
/// `wait`), and takes the confirms in it.
async fn pump(
    link: &mut Link,
    confirms: &mut Confirms,
    published: u64,
    wait: bool,
) -> Result<(), String> {
    link.flush().await?;
    if wait {
        link.fill().await?;
    } else {
        link.try_fill()?;
    }
    while let Some(incoming) = link.next()? {
        match incoming {
            Incoming::Method(Method::Confirm {
                tag,
                multiple,
                nack,
            }) => confirms.settle(tag, multiple, nack, published)?,
            other => {
                return Err(format!(
                    "the publisher got an unexpected {}",
                    describe(&other)
                ))
            }
        }
    }
    Ok(())
}

/// Consumes `quota` messages from `queue` with manual acks (one multiple ack per
/// quarter of the prefetch, and one for the last). What the broker delivered beyond
/// the quota goes back to the queue when the connection closes.
pub async fn consume(
    mut link: Link,
    args: &BenchArgs,
    queue: &str,
    quota: u64,
    received: Arc<Mutex<Received>>,
) -> Result<(), String> {
    let prefetch = u16::try_from(args.prefetch).unwrap_or(u16::MAX);
    link.call("basic.qos", wire::basic_qos(prefetch), |m| {
        *m == Method::QosOk
    })
    .await?;
    link.call(
        &format!("basic.consume {queue}"),
        wire::basic_consume(queue)?,
        |m| *m == Method::ConsumeOk,
    )
    .await?;
    // From the prefetch the broker applies: acks wait for no more than it sends.
    let ack_every = u64::from((prefetch / 4).max(1));
    let mut batch: Vec<(u64, u64, u64)> = Vec::with_capacity(1024);
    let mut n = 0u64;
    while n < quota {
        let (tag, head, head_len) = match link.next()? {
            Some(Incoming::Delivery {
                tag,
                head,
                head_len,
            }) => (tag, head, head_len),
            Some(Incoming::Method(Method::Cancel)) => {
                return Err(format!("the broker cancelled the consumer of {queue}"))
            }
            Some(other) => {
                return Err(format!(
                    "the consumer got an unexpected {}",
                    describe(&other)
                ))
            }
            None => {
                link.flush().await?;
                link.fill().await?;
                continue;
            }
        };
        // The latency is taken here, as the delivery is read.
        if let Some(h) = arrival(&head[..head_len]) {
            batch.push(h);
        }
        n += 1;
        if n.is_multiple_of(ack_every) || n == quota {
            wire::put_basic_ack(&mut link.out, tag, true);
        }
        if batch.len() == batch.capacity() || n == quota {
            record(&received, &mut batch, args.drain_only);
        }
    }
    link.flush().await?;
    link.close().await
}
