//! `warren-bench --amqp URI --many-queues N`: a node holding many durable queues
//! (issue 21), through amqprs, for Warren and RabbitMQ alike.
//!
//! 1. `--publishers` clients (16 by default here) declare N durable queues QUEUE-0 …
//!    between them, each declaring its share one after another: the rate per tenth
//!    of the run (it must not fall as the count grows), the broker's CPU per
//!    declaration, its RSS per queue.
//! 2. Idle: after `--idle-secs` without a request (long enough for idle queues to
//!    hibernate), the RSS per queue and the broker's CPU over the next 10 s.
//! 3. `--count` persistent `--size` B messages, each to a random queue, published by
//!    the same clients with confirms, one in flight per client: messages/s, CPU per
//!    message, confirm p50/p99.
//!
//! `--until-serving` instead: how long until the broker answers a passive declare of
//! QUEUE-0 (started beside a broker that is starting: the restart time).

use std::time::{Duration, Instant};

use amqprs::channel::{BasicPublishArguments, ConfirmSelectArguments, QueueDeclareArguments};
use amqprs::BasicProperties;

use crate::account::within;
use crate::amqp::{channel, close, e, next_confirm, open};
use crate::args::BenchArgs;
use crate::confirms::Confirms;
use crate::delayed::{broker_ticks, status_kib};

const PERSISTENT: u8 = 2;

/// Seconds of broker CPU since its start.
fn cpu_secs(pid: Option<u32>) -> Result<Option<f64>, String> {
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(pid.map(broker_ticks).transpose()?.map(|t| t as f64 / hz))
}

/// The broker's resident memory in KiB.
fn rss_kib(pid: Option<u32>) -> Option<u64> {
    status_kib(pid?, "VmRSS").ok()
}

fn name(args: &BenchArgs, i: u64) -> String {
    format!("{}-{i}", args.queue)
}

/// Runs the scenario and prints its report.
pub async fn run(uri: &str, args: &BenchArgs, total: u64) -> Result<(), String> {
    if args.until_serving {
        return until_serving(uri, args).await;
    }
    let clients = u64::from(args.publishers.max(1));
    let pid = args.broker_pid;
    let rss_before = rss_kib(pid);
    let cpu_before = cpu_secs(pid)?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let uri = uri.to_string();
        let names: Vec<String> = (c..total)
            .step_by(clients as usize)
            .map(|i| name(args, i))
            .collect();
        tasks.push(tokio::spawn(async move {
            let connection = open(&uri).await?;
            let (ch, _events) = channel(&connection).await?;
            let mut done = Vec::with_capacity(names.len());
            for queue in names {
                within("queue.declare", async {
                    ch.queue_declare(QueueDeclareArguments::durable_client_named(&queue))
                        .await
                        .map_err(e("queue.declare"))
                })
                .await?;
                done.push(started.elapsed());
            }
            close(connection, ch).await?;
            Ok::<Vec<Duration>, String>(done)
        }));
    }
    let mut done = Vec::with_capacity(total as usize);
    // Until the first client is through, all of them declare: the rate over that
    // span, in tenths, shows whether it falls as the queues grow (after it, fewer
    // clients are left and the rate falls for that reason alone).
    let mut all_active = Duration::MAX;
    for t in tasks {
        let mine = t.await.map_err(|err| err.to_string())??;
        all_active = all_active.min(mine.last().copied().unwrap_or(Duration::ZERO));
        done.extend(mine);
    }
    done.sort_unstable();
    let took = started.elapsed().as_secs_f64();
    let cpu_declared = cpu_secs(pid)?;
    let steady: Vec<Duration> = done.iter().copied().filter(|t| *t <= all_active).collect();
    let n = steady.len() as u64;
    let tenths: Vec<String> = (0..10)
        .filter(|k| n * (k + 1) / 10 > n * k / 10)
        .map(|k| {
            let (a, b) = (n * k / 10, n * (k + 1) / 10);
            let from = if a == 0 {
                Duration::ZERO
            } else {
                steady[a as usize - 1]
            };
            let span = steady[b as usize - 1].saturating_sub(from).as_secs_f64();
            format!("{:.0}", (b - a) as f64 / span.max(1e-9))
        })
        .collect();
    println!(
        "declared {total} durable queues with {clients} clients in {took:.2} s: {:.0}/s; while all {clients} declared (the first {n}), per tenth: {} /s",
        total as f64 / took.max(1e-9),
        tenths.join(", ")
    );
    if let (Some(a), Some(b)) = (cpu_before, cpu_declared) {
        println!(
            "broker CPU {:.2} s: {:.0} µs per declaration",
            b - a,
            (b - a) * 1e6 / total as f64
        );
    }
    let rss_declared = rss_kib(pid);
    if let (Some(a), Some(b)) = (rss_before, rss_declared) {
        println!(
            "RSS {} MiB → {} MiB: {:.1} KiB per queue, right after declaring",
            a / 1024,
            b / 1024,
            b.saturating_sub(a) as f64 / total as f64
        );
    }

    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let (cpu_idle, rss_idle) = (cpu_secs(pid)?, rss_kib(pid));
    tokio::time::sleep(Duration::from_secs(10)).await;
    if let (Some(a), Some(b), Some(before), Some(rss)) =
        (cpu_idle, cpu_secs(pid)?, rss_before, rss_idle)
    {
        println!(
            "idle after {} s: RSS {} MiB, {:.1} KiB per queue; CPU {:.2} % of a core over 10 s",
            args.idle_secs,
            rss / 1024,
            rss.saturating_sub(before) as f64 / total as f64,
            (b - a) * 10.0
        );
    }

    let per_client = args.count / clients;
    let cpu_publish = cpu_secs(pid)?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (uri, prefix, size) = (uri.to_string(), args.queue.clone(), args.size);
        tasks.push(tokio::spawn(async move {
            let connection = open(&uri).await?;
            let (ch, mut events) = channel(&connection).await?;
            within("confirm.select", async {
                ch.confirm_select(ConfirmSelectArguments::default())
                    .await
                    .map_err(e("confirm.select"))
            })
            .await?;
            let properties = BasicProperties::default()
                .with_delivery_mode(PERSISTENT)
                .finish();
            let mut confirms = Confirms::default();
            let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ (c + 1);
            for published in 0..per_client {
                // xorshift: a random queue for each message.
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let queue = format!("{prefix}-{}", seed % total);
                ch.basic_publish(
                    properties.clone(),
                    vec![b'w'; size],
                    BasicPublishArguments::new("", &queue),
                )
                .await
                .map_err(e("basic.publish"))?;
                confirms.published();
                next_confirm(&mut events, &mut confirms, published + 1).await?;
            }
            close(connection, ch).await?;
            Ok::<_, String>(confirms.report())
        }));
    }
    let mut confirm_us = Vec::new();
    let mut refused = 0;
    for t in tasks {
        let report = t.await.map_err(|err| err.to_string())??;
        refused += report.refused;
        confirm_us.extend(report.confirm_us);
    }
    let took = started.elapsed().as_secs_f64();
    let sent = per_client * clients;
    confirm_us.sort_unstable();
    let pct = |p: f64| {
        confirm_us
            .get(((confirm_us.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |&us| f64::from(us) / 1000.0)
    };
    println!(
        "published {sent} persistent {} B messages to random queues, {clients} clients with one confirm in flight each: {:.0} msg/s, confirm p50 {:.2} ms p99 {:.2} ms, {refused} refused",
        args.size,
        sent as f64 / took.max(1e-9),
        pct(0.5),
        pct(0.99)
    );
    if let (Some(a), Some(b)) = (cpu_publish, cpu_secs(pid)?) {
        println!(
            "broker CPU {:.2} s: {:.0} µs per message",
            b - a,
            (b - a) * 1e6 / sent as f64
        );
    }
    Ok(())
}

/// Retries a passive declare of QUEUE-0 every 10 ms until answered; prints the time
/// since this process started.
async fn until_serving(uri: &str, args: &BenchArgs) -> Result<(), String> {
    let started = Instant::now();
    let queue = name(args, 0);
    loop {
        let answered = async {
            let connection = open(uri).await?;
            let (ch, _events) = channel(&connection).await?;
            ch.queue_declare(QueueDeclareArguments::new(&queue).passive(true).finish())
                .await
                .map_err(e("queue.declare"))?;
            close(connection, ch).await
        };
        if tokio::time::timeout(Duration::from_secs(5), answered)
            .await
            .is_ok_and(|r| r.is_ok())
        {
            println!(
                "serving: a passive declare of {queue} answered {:.2} s after this started",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Err("the broker did not answer within 120 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
