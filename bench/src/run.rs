//! One benchmark run: check the flags, prepare the queues, start the consumers and
//! publishers through the chosen client, and report msg/s, latency percentiles
//! (publish-to-delivery, and publish-to-confirm with --confirm), the
//! bench's own CPU per message, and whether every message arrived exactly once.
//!
//! The consumers check off each (publisher, seq) once in [`Received`] and measure
//! publish-to-delivery latency from the header every body starts with
//! ([`crate::message`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::account::Received;
use crate::args::BenchArgs;
use crate::message::HEADER;

/// Which client drives the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Driver {
    /// Warren's client handle over the cluster transport.
    Handle,
    /// AMQP 0-9-1 through the client library.
    Library(String),
    /// AMQP 0-9-1 through the bench's own raw-frame client.
    RawFrames(String),
}

impl Driver {
    fn of(args: &BenchArgs) -> Driver {
        match (&args.amqp, args.raw_frames) {
            (None, _) => Driver::Handle,
            (Some(uri), false) => Driver::Library(uri.clone()),
            (Some(uri), true) => Driver::RawFrames(uri.clone()),
        }
    }

    /// The first line of the report.
    fn label(&self) -> &'static str {
        match self {
            Driver::Handle => "client: Warren's client handle (cluster transport)",
            Driver::Library(_) => crate::amqp::LABEL,
            Driver::RawFrames(_) => {
                "client: raw frames (the bench's own AMQP client, not a client library)"
            }
        }
    }
}

/// The CPU time (user + system) this process has used so far.
fn own_cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct it is given and reads nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return Duration::ZERO;
        }
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

fn check(args: &BenchArgs) -> Result<(), String> {
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
    if args.queue_type.is_some() && (args.amqp.is_none() || args.raw_frames) {
        return Err(
            "--queue-type is for --amqp through amqprs (not the client handle or --raw-frames)"
                .into(),
        );
    }
    if args.no_ack && (args.amqp.is_none() || args.raw_frames) {
        return Err("--no-ack is for --amqp through amqprs".into());
    }
    if args.spread && (args.amqp.is_none() || args.raw_frames || args.consumers > 0) {
        return Err("--spread is for --amqp through amqprs, with --consumers 0".into());
    }
    if args.amqp.is_some() && args.consume_node.is_some() {
        return Err("--consume-node is for the client handle, not --amqp".into());
    }
    Ok(())
}

/// Runs the benchmark the flags describe; the error is the one line to print.
pub async fn run(args: BenchArgs) -> Result<(), String> {
    if let Some(count) = args.declarations {
        let nodes = if args.nodes.is_empty() {
            vec![args.conn.node]
        } else {
            args.nodes.clone()
        };
        return crate::declare::run(&nodes, &args.conn.cookie_file, count, &args.queue).await;
    }
    if let (Some(total), Some(uri)) = (args.many_queues, &args.amqp) {
        return crate::many_queues::run(uri, &args, total).await;
    }
    if let (Some(total), Some(uri)) = (args.churn, &args.amqp) {
        return crate::churn::run(uri, &args, total).await;
    }
    if let (Some(spread), Some(uri)) = (args.delayed, &args.amqp) {
        return crate::delayed::run(uri, &args, spread).await;
    }
    check(&args)?;
    if let Some(partitions) = args.stream_partitions {
        return crate::stream::run(&args, partitions).await;
    }
    let driver = Driver::of(&args);
    println!("{}", driver.label());
    match &driver {
        Driver::Handle => crate::handle::prepare(&args).await?,
        Driver::Library(uri) => crate::amqp::prepare(uri, &args).await?,
        Driver::RawFrames(uri) => crate::raw::prepare(uri, &args).await?,
    }
    let total = if args.drain_only {
        args.count
    } else {
        args.count * u64::from(args.publishers)
    };
    let received = Arc::new(Mutex::new(Received::new(
        args.publishers,
        args.count,
        total,
    )));
    let cpu_before = own_cpu();
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
            consumer_tasks.push(match &driver {
                Driver::Handle => {
                    let client = crate::handle::connect(&args, args.consume_node).await?;
                    tokio::spawn(async move {
                        crate::handle::consume(client, &args, &queue, quota, received).await
                    })
                }
                Driver::Library(uri) => {
                    let uri = args.consume_amqp.as_ref().unwrap_or(uri);
                    let connection = crate::amqp::open(uri).await?;
                    tokio::spawn(async move {
                        crate::amqp::consume(connection, &args, &queue, quota, received).await
                    })
                }
                Driver::RawFrames(uri) => {
                    let uri = args.consume_amqp.as_ref().unwrap_or(uri);
                    let link = crate::raw::Link::open(uri).await?;
                    tokio::spawn(async move {
                        crate::raw::consume(link, &args, &queue, quota, received).await
                    })
                }
            });
        }
    }
    let mut publisher_tasks = Vec::new();
    if !args.drain_only {
        for p in 0..args.publishers {
            let args = args.clone();
            let queue = args.queue_of(p);
            publisher_tasks.push(match &driver {
                Driver::Handle => {
                    let client = crate::handle::connect(&args, None).await?;
                    tokio::spawn(
                        async move { crate::handle::publish(client, &args, &queue, p).await },
                    )
                }
                Driver::Library(uri) => {
                    let connection = crate::amqp::open(uri).await?;
                    tokio::spawn(
                        async move { crate::amqp::publish(connection, &args, &queue, p).await },
                    )
                }
                Driver::RawFrames(uri) => {
                    let link = crate::raw::Link::open(uri).await?;
                    tokio::spawn(async move { crate::raw::publish(link, &args, &queue, p).await })
                }
            });
        }
    }
    let mut refused = 0u64;
    let mut confirm_us = Vec::new();
    for t in publisher_tasks {
        let published = t.await.map_err(|err| err.to_string())??;
        refused += published.refused;
        confirm_us.extend(published.confirm_us);
    }
    let published_in = start.elapsed();
    for t in consumer_tasks {
        t.await.map_err(|err| err.to_string())??;
    }
    let consumed_in = start.elapsed();
    let cpu = own_cpu().saturating_sub(cpu_before);

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
    if !args.drain_only {
        println!(
            "published {} msgs of {} B in {:.2} s: {:.0} msg/s{}",
            total,
            args.size,
            published_in.as_secs_f64(),
            total as f64 / published_in.as_secs_f64(),
            if args.confirm { " (confirmed)" } else { "" }
        );
        if !confirm_us.is_empty() {
            println!("confirm latency {}", percentiles(confirm_us));
        }
    }
    if args.consumers > 0 {
        println!(
            "consumed {} msgs in {:.2} s: {:.0} msg/s",
            total, // every consumer returned only once it had its whole quota
            consumed_in.as_secs_f64(),
            total as f64 / consumed_in.as_secs_f64()
        );
        if !args.drain_only {
            println!("latency {}", percentiles(r.latencies_us.clone()));
        }
    }
    // Each message is published once and consumed once (a fill: published only).
    println!(
        "bench CPU {:.2} s: {:.2} µs/msg",
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / total.max(1) as f64
    );
    println!(
        "exactly-once check: missing {missing}, duplicates {}, refused {refused}, foreign {}",
        r.duplicates, r.foreign
    );
    if missing > 0 || r.duplicates > 0 || refused > 0 {
        return Err("the bench lost, duplicated or had messages refused".into());
    }
    Ok(())
}

/// "p50 … p99 … p999 … max …" of latencies in µs.
fn percentiles(mut us: Vec<u32>) -> String {
    us.sort_unstable();
    let pct = |p: f64| -> String {
        if us.is_empty() {
            "-".into()
        } else {
            let i = ((us.len() as f64 * p).ceil() as usize).clamp(1, us.len()) - 1;
            format!("{:.3} ms", f64::from(us[i]) / 1000.0)
        }
    };
    format!(
        "p50 {} p99 {} p999 {} max {}",
        pct(0.5),
        pct(0.99),
        pct(0.999),
        pct(1.0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::record;
    use clap::Parser;

    fn args(flags: &[&str]) -> BenchArgs {
        BenchArgs::try_parse_from([&["warren-bench"], flags].concat()).unwrap()
    }

    #[test]
    fn the_flags_choose_the_client() {
        assert_eq!(Driver::of(&args(&[])), Driver::Handle);
        let uri = "amqp://guest:guest@127.0.0.1:5672/%2f";
        assert_eq!(
            Driver::of(&args(&["--amqp", uri])),
            Driver::Library(uri.into())
        );
        assert_eq!(
            Driver::of(&args(&["--amqp", uri, "--raw-frames"])),
            Driver::RawFrames(uri.into())
        );
        assert!(Driver::RawFrames(uri.into()).label().contains("raw frames"));
        // Raw frames are an AMQP client: without a broker's URI they mean nothing.
        assert!(BenchArgs::try_parse_from(["warren-bench", "--raw-frames"]).is_err());
    }

    #[test]
    fn bad_scenarios_are_refused_before_connecting() {
        assert!(check(&args(&["--size", "23"])).is_err());
        assert!(check(&args(&["--publishers", "0"])).is_err());
        assert!(check(&args(&["--publishers", "0", "--drain-only"])).is_ok());
        assert!(check(&args(&["--queues", "0"])).is_err());
        assert!(check(&args(&["--queue", ""])).is_err());
        assert!(check(&args(&[
            "--amqp",
            "amqp://h",
            "--consume-node",
            "127.0.0.1:1"
        ]))
        .is_err());
        assert!(check(&args(&[])).is_ok());
    }

    #[test]
    fn every_message_is_checked_off_once() {
        let received = Mutex::new(Received::new(2, 100, 200));
        let mut batch = vec![
            (0, 0, 5_000),
            (1, 99, 7_000),
            (0, 0, 1_000),
            (2, 0, 0),
            (0, 128, 0),
        ];
        record(&received, &mut batch, false);
        assert!(batch.is_empty());
        let r = received.lock().unwrap();
        assert_eq!((r.duplicates, r.foreign), (1, 2));
        assert_eq!(r.latencies_us, vec![5, 7]);
        let seen: u32 = r.seen.iter().flatten().map(|w| w.count_ones()).sum();
        assert_eq!(seen, 2);
    }
}
