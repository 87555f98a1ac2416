//! `warren-bench --amqp URI --churn N`: connection churn through amqprs. N
//! connections, `--publishers` at a time, each doing what a short-lived client does:
//! connect and log in, open a channel, declare its queue (the same `--queue`, already
//! there after the first), close. Reports connections per second, the time each took,
//! and with `--broker-pid` the broker's CPU per connection.

use std::time::Instant;

use amqprs::channel::QueueDeclareArguments;

use crate::account::within;
use crate::amqp::{close, e, open};
use crate::args::BenchArgs;

/// Runs the churn scenario and prints its report.
pub async fn run(uri: &str, args: &BenchArgs, total: u64) -> Result<(), String> {
    let tasks = u64::from(args.publishers.max(1));
    let cpu_before = args
        .broker_pid
        .map(crate::delayed::broker_ticks)
        .transpose()?;
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (uri, queue) = (uri.to_string(), args.queue.clone());
        let share = total / tasks + u64::from(t < total % tasks);
        handles.push(tokio::spawn(async move {
            let mut took = Vec::with_capacity(share as usize);
            for _ in 0..share {
                let begun = Instant::now();
                let connection = open(&uri).await?;
                let ch = within("channel.open", async {
                    connection
                        .open_channel(None)
                        .await
                        .map_err(e("channel.open"))
                })
                .await?;
                within("queue.declare", async {
                    ch.queue_declare(QueueDeclareArguments::new(&queue))
                        .await
                        .map_err(e("queue.declare"))
                })
                .await?;
                close(connection, ch).await?;
                took.push(begun.elapsed().as_micros() as u64);
            }
            Ok::<Vec<u64>, String>(took)
        }));
    }
    let mut took = Vec::with_capacity(total as usize);
    for handle in handles {
        took.extend(handle.await.map_err(|err| err.to_string())??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = args
        .broker_pid
        .map(crate::delayed::broker_ticks)
        .transpose()?;
    took.sort_unstable();
    let pct = |p: f64| took[((took.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0;
    println!(
        "churn: {total} connections ({tasks} at a time: connect, log in, channel.open, queue.declare, close) in {elapsed:.2} s: {:.0} connections/s, each p50 {:.1} ms p99 {:.1} ms",
        total as f64 / elapsed.max(1e-9),
        pct(0.5),
        pct(0.99),
    );
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        println!(
            "broker CPU {:.2} s: {:.0} µs per connection",
            (after - before) as f64 / hz,
            (after - before) as f64 / hz * 1e6 / total as f64
        );
    }
    Ok(())
}
