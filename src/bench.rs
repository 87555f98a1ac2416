//! `warren bench`: drives a node through the client handle, or any AMQP 0-9-1 broker
//! (Warren or RabbitMQ) with `--amqp URI`, and reports msg/s, latency percentiles, and
//! whether every message arrived exactly once.
//!
//! Each body starts with the publisher's number, the message's sequence number and the
//! wall-clock time it was published (all in one process, so one clock): the consumers
//! check off each (publisher, seq) once and measure publish-to-delivery latency.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use clap::Args;

use crate::cli::Conn;
use crate::client::{
    Client, ClientError, ConsumeOptions, PublishOptions, PublishResult, QueueOptions,
};

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// Publishing tasks (each with its own connection).
    #[arg(long, default_value_t = 1)]
    pub publishers: u32,
    /// Consuming tasks (each with its own connection); 0: fill the queue only.
    #[arg(long, default_value_t = 1)]
    pub consumers: u32,
    /// Messages per publisher.
    #[arg(long, default_value_t = 200_000)]
    pub count: u64,
    /// Body size in bytes (at least 24: the bench's own header).
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Persistent messages on a durable queue.
    #[arg(long)]
    pub persistent: bool,
    /// Wait for confirms (at most --window unconfirmed per publisher).
    #[arg(long)]
    pub confirm: bool,
    #[arg(long, default_value_t = 2000)]
    pub window: usize,
    #[arg(long, default_value_t = 1000)]
    pub prefetch: u32,
    /// Publish at this many msg/s per publisher (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// The queue to use (declared, purged first unless --drain-only).
    #[arg(long, default_value = "warren-bench")]
    pub queue: String,
    /// Only consume what is in the queue (--count messages per consumer in total).
    #[arg(long)]
    pub drain_only: bool,
    /// Spread publishers and consumers over this many queues (QUEUE-0, QUEUE-1, ...);
    /// publisher i and consumer i use queue i mod N.
    #[arg(long, default_value_t = 1)]
    pub queues: u32,
    /// Consumers connect to this node instead of --node (the cross-node benchmark:
    /// publisher on one node, consumer on another, queue declared on a third).
    #[arg(long, value_name = "ADDR")]
    pub consume_node: Option<std::net::SocketAddr>,
    /// Measure metadata instead: declare this many transient queues through the
    /// nodes of --nodes at once, report the time, delete them.
    #[arg(long, value_name = "N")]
    pub declarations: Option<u64>,
    /// The nodes --declarations goes through (comma-separated; default: --node).
    #[arg(long, value_name = "ADDR,ADDR", value_delimiter = ',')]
    pub nodes: Vec<std::net::SocketAddr>,
    /// Drive an AMQP 0-9-1 broker instead of the client handle, e.g.
    /// amqp://guest:guest@127.0.0.1:5672/%2f (Warren's AMQP port, or RabbitMQ's).
    #[arg(long, value_name = "URI")]
    pub amqp: Option<String>,
}

impl BenchArgs {
    /// The queue publisher or consumer `i` uses.
    pub(crate) fn queue_of(&self, i: u32) -> String {
        if self.queues <= 1 {
            self.queue.clone()
        } else {
            format!("{}-{}", self.queue, i % self.queues)
        }
    }

    pub(crate) fn queue_names(&self) -> Vec<String> {
        (0..self.queues.max(1)).map(|i| self.queue_of(i)).collect()
    }
}

pub(crate) const HEADER: usize = 24;

pub(crate) fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Results the consumers share.
pub(crate) struct Received {
    /// One bit per (publisher, seq): seen once.
    seen: Vec<Vec<u64>>,
    duplicates: u64,
    foreign: u64,
    latencies_us: Vec<u32>,
}

pub async fn run(args: BenchArgs) -> Result<(), String> {
    if let Some(count) = args.declarations {
        let nodes = if args.nodes.is_empty() {
            vec![args.conn.node]
        } else {
            args.nodes.clone()
        };
        return crate::bench_declare::run(&nodes, &args.conn.cookie_file, count, &args.queue).await;
    }
    if args.size < HEADER {
        return Err(format!(
            "--size must be at least {HEADER} bytes (the bench's header)"
        ));
    }
    if args.publishers == 0 && !args.drain_only {
        return Err("--publishers must be at least 1 (or use --drain-only)".into());
    }
    if args.queues == 0 {
        return Err("--queues must be at least 1".into());
    }
    if args.queue.is_empty() || args.queue.len() > 200 {
        return Err("--queue must be 1 to 200 bytes (AMQP names are at most 255)".into());
    }
    let e = |e: ClientError| e.to_string();
    match &args.amqp {
        Some(uri) => crate::bench_amqp::prepare(uri, &args).await?,
        None => {
            let admin = args.conn.connect().await.map_err(e)?;
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
        }
    }
    let total = if args.drain_only {
        args.count
    } else {
        args.count * u64::from(args.publishers)
    };
    let received = Arc::new(Mutex::new(Received {
        seen: (0..args.publishers.max(1))
            .map(|_| vec![0u64; args.count.div_ceil(64) as usize])
            .collect(),
        duplicates: 0,
        foreign: 0,
        latencies_us: Vec::with_capacity(total.min(50_000_000) as usize),
    }));
    let start = Instant::now();

    let mut consumer_tasks = Vec::new();
    if args.consumers > 0 {
        let per = total / u64::from(args.consumers);
        for c in 0..args.consumers {
            let quota = if c == args.consumers - 1 {
                total - per * u64::from(c)
            } else {
                per
            };
            let (args, received) = (args.clone(), received.clone());
            let queue = args.queue_of(c);
            if let Some(uri) = args.amqp.clone() {
                let link = crate::bench_amqp::Link::open(&uri).await?;
                consumer_tasks.push(tokio::spawn(async move {
                    crate::bench_amqp::consume(link, &args, &queue, quota, received).await
                }));
                continue;
            }
            let conn = crate::cli::Conn {
                node: args.consume_node.unwrap_or(args.conn.node),
                cookie_file: args.conn.cookie_file.clone(),
                vhost: args.conn.vhost.clone(),
            };
            let client = conn.connect().await.map_err(e)?;
            consumer_tasks.push(tokio::spawn(async move {
                consume(client, &args, &queue, quota, received).await
            }));
        }
    }
    let mut publisher_tasks = Vec::new();
    if !args.drain_only {
        for p in 0..args.publishers {
            let args = args.clone();
            let queue = args.queue_of(p);
            if let Some(uri) = args.amqp.clone() {
                let link = crate::bench_amqp::Link::open(&uri).await?;
                publisher_tasks.push(tokio::spawn(async move {
                    crate::bench_amqp::publish(link, &args, &queue, p).await
                }));
                continue;
            }
            let client = args.conn.connect().await.map_err(e)?;
            publisher_tasks.push(tokio::spawn(async move {
                publish(client, &args, &queue, p).await
            }));
        }
    }
    let mut refused = 0u64;
    for t in publisher_tasks {
        refused += t.await.map_err(|err| err.to_string())??;
    }
    let published_in = start.elapsed();
    for t in consumer_tasks {
        t.await.map_err(|err| err.to_string())??;
    }
    let consumed_in = start.elapsed();

    let r = received.lock().unwrap_or_else(|p| p.into_inner());
    let missing = if args.drain_only || args.consumers == 0 {
        0
    } else {
        let seen: u64 = r
            .seen
            .iter()
            .flatten()
            .map(|w| u64::from(w.count_ones()))
            .sum();
        total - seen.min(total)
    };
    let mut lat = r.latencies_us.clone();
    lat.sort_unstable();
    let pct = |p: f64| -> String {
        if lat.is_empty() {
            "-".into()
        } else {
            let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
            format!("{:.3} ms", f64::from(lat[i]) / 1000.0)
        }
    };
    if !args.drain_only {
        println!(
            "published {} msgs of {} B in {:.2} s: {:.0} msg/s{}",
            total,
            args.size,
            published_in.as_secs_f64(),
            total as f64 / published_in.as_secs_f64(),
            if args.confirm { " (confirmed)" } else { "" }
        );
    }
    if args.consumers > 0 {
        println!(
            "consumed {} msgs in {:.2} s: {:.0} msg/s",
            total, // every consumer returned only once it had its whole quota
            consumed_in.as_secs_f64(),
            total as f64 / consumed_in.as_secs_f64()
        );
        if !args.drain_only {
            println!(
                "latency p50 {} p99 {} p999 {} max {}",
                pct(0.5),
                pct(0.99),
                pct(0.999),
                pct(1.0)
            );
        }
    }
    println!(
        "exactly-once check: missing {missing}, duplicates {}, refused {refused}, foreign {}",
        r.duplicates, r.foreign
    );
    if missing > 0 || r.duplicates > 0 || refused > 0 {
        return Err("the bench lost, duplicated or had messages refused".into());
    }
    Ok(())
}

/// The bench's header at the start of every body: publisher, seq, send time.
pub(crate) fn header(publisher: u32, seq: u64, sent_nanos: u64) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..8].copy_from_slice(&u64::from(publisher).to_be_bytes());
    h[8..16].copy_from_slice(&seq.to_be_bytes());
    h[16..].copy_from_slice(&sent_nanos.to_be_bytes());
    h
}

/// A message body: the bench's header and padding.
pub(crate) fn body(publisher: u32, seq: u64, padding: &[u8]) -> Bytes {
    let mut body = BytesMut::with_capacity(HEADER + padding.len());
    body.put_slice(&header(publisher, seq, now_nanos()));
    body.put_slice(padding);
    body.freeze()
}

/// When publish number `seq` is due at `--rate` (`None`: as fast as possible).
pub(crate) fn due(args: &BenchArgs, start: Instant, seq: u64) -> Option<Instant> {
    (args.rate > 0).then(|| start + Duration::from_secs_f64(seq as f64 / args.rate as f64))
}

/// Waits until publish number `seq` is due at `--rate`.
pub(crate) async fn pace(args: &BenchArgs, start: Instant, seq: u64) {
    if let Some(due) = due(args, start, seq) {
        tokio::time::sleep_until(due.into()).await;
    }
}

/// A body just received: (publisher, seq, latency in ns), the latency taken now (not
/// when the batch of arrivals is recorded).
pub(crate) fn arrival(b: &[u8]) -> Option<(u64, u64, u64)> {
    if b.len() < HEADER {
        return None;
    }
    let word = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
    Some((word(0), word(8), now_nanos().saturating_sub(word(16))))
}

async fn publish(
    client: Client,
    args: &BenchArgs,
    queue: &str,
    publisher: u32,
) -> Result<u64, String> {
    let e = |e: ClientError| e.to_string();
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
    Ok(refused)
}

async fn consume(
    client: Client,
    args: &BenchArgs,
    queue: &str,
    quota: u64,
    received: Arc<Mutex<Received>>,
) -> Result<(), String> {
    let e = |e: ClientError| e.to_string();
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

/// Checks off a batch of arrivals (publisher, seq, latency in ns).
pub(crate) fn record(
    received: &Mutex<Received>,
    batch: &mut Vec<(u64, u64, u64)>,
    drain_only: bool,
) {
    let mut r = received.lock().unwrap_or_else(|p| p.into_inner());
    for (publisher, seq, latency_ns) in batch.drain(..) {
        if drain_only {
            continue;
        }
        let Some(bits) = r.seen.get_mut(publisher as usize) else {
            r.foreign += 1;
            continue;
        };
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        match bits.get_mut(word) {
            Some(w) if *w & (1 << bit) != 0 => r.duplicates += 1,
            Some(w) => {
                *w |= 1 << bit;
                let us = latency_ns / 1000;
                r.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
            }
            None => r.foreign += 1,
        }
    }
}
