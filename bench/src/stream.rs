//! `warren-bench --stream-partitions N`: a partitioned stream through the client
//! handle, as a Rust application uses one. One [`StreamProducer`] appends `--count`
//! records of `--size` bytes over the N partitions (without keys: the producer's
//! sticky choice; `--round-robin`: one each in turn) (persistent, at most `--window`
//! unconfirmed; each confirmed once its chunk is fsynced), then one
//! [`StreamConsumer`] reads them all back from `first` (`--prefetch` per partition,
//! one multiple ack every quarter of it) and checks that each record
//! came exactly once. Reports both rates and, with `--broker-pid`, the node's CPU per
//! record in each phase.
//!
//! [`StreamProducer`]: warren::client::StreamProducer
//! [`StreamConsumer`]: warren::client::StreamConsumer

use std::collections::VecDeque;
use std::time::Instant;

use warren::client::{
    Client, FieldValue, ProducerOptions, PublishOptions, PublishResult, StreamConsumeOptions,
    StreamOptions,
};

use crate::args::BenchArgs;
use crate::delayed::broker_ticks;
use crate::message::{arrival, body, HEADER};

/// Runs the scenario and prints its report.
pub async fn run(args: &BenchArgs, partitions: u32) -> Result<(), String> {
    let client = crate::handle::connect(args, None).await?;
    let stream = args.queue.as_str();
    let declared = client
        .declare_stream(
            stream,
            StreamOptions {
                partitions,
                ..Default::default()
            },
        )
        .await
        .map_err(|err| format!("declaring stream '{stream}': {err}"))?;
    println!(
        "stream '{stream}': {} partitions, client handle, {} records of {} B{}, window {}, client buffer {} MiB, producer batches of {} B or {} ms",
        declared.len(),
        args.count,
        args.size,
        if args.round_robin {
            " round the partitions"
        } else {
            " without keys"
        },
        args.window,
        args.conn.buffer_mib,
        args.batch_bytes,
        args.linger_ms
    );
    if !args.drain_only {
        append(&client, args, stream).await?;
    }
    if args.consumers > 0 {
        read(&client, args, stream).await?;
    }
    Ok(())
}

/// The node's CPU ticks now, when --broker-pid names it.
fn ticks(args: &BenchArgs) -> Result<Option<u64>, String> {
    args.broker_pid.map(broker_ticks).transpose()
}

/// Prints a phase's rate, and the node's CPU per record when it was measured.
fn report(what: &str, records: u64, began: Instant, before: Option<u64>, args: &BenchArgs) {
    let secs = began.elapsed().as_secs_f64().max(1e-9);
    let mut line = format!(
        "{what} {records} records in {secs:.2} s: {:.0} records/s",
        records as f64 / secs
    );
    if let (Some(before), Ok(Some(after))) = (before, ticks(args)) {
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let cpu = (after - before) as f64 / hz;
        line += &format!(
            ", node CPU {cpu:.2} s: {:.2} µs per record",
            cpu * 1e6 / records.max(1) as f64
        );
    }
    println!("{line}");
}

async fn append(client: &Client, args: &BenchArgs, stream: &str) -> Result<(), String> {
    let options = ProducerOptions {
        batch_bytes: args.batch_bytes,
        linger: std::time::Duration::from_millis(args.linger_ms),
    };
    let producer = client
        .stream_producer_with(stream, options)
        .await
        .map_err(|err| err.to_string())?;
    let options = PublishOptions {
        persistent: true,
        ..Default::default()
    };
    let padding = vec![b'w'; args.size - HEADER];
    let window = args.window.max(1);
    let mut pending = VecDeque::with_capacity(window);
    let mut refused = 0u64;
    let before = ticks(args)?;
    let began = Instant::now();
    let partitions = producer.partitions().len();
    for seq in 0..args.count {
        let body = body(0, seq, &padding);
        let sent = if args.round_robin {
            let index = (seq % partitions as u64) as usize;
            producer.send_to(index, None, body, options.clone()).await
        } else {
            producer.send(None, body, options.clone()).await
        };
        let (_, confirm) = sent.map_err(|err| err.to_string())?;
        pending.push_back(confirm);
        while pending.len() >= window {
            if let Some(c) = pending.pop_front() {
                refused +=
                    u64::from(c.await.map_err(|err| err.to_string())? != PublishResult::Confirmed);
            }
        }
    }
    for c in pending {
        refused += u64::from(c.await.map_err(|err| err.to_string())? != PublishResult::Confirmed);
    }
    report("appended (confirmed)", args.count, began, before, args);
    if refused > 0 {
        return Err(format!("{refused} records were refused"));
    }
    Ok(())
}

async fn read(client: &Client, args: &BenchArgs, stream: &str) -> Result<(), String> {
    let before = ticks(args)?;
    let began = Instant::now();
    let mut consumer = client
        .consume_stream(
            stream,
            None,
            StreamConsumeOptions {
                offset: FieldValue::string("first"),
                prefetch: args.prefetch,
                ..Default::default()
            },
        )
        .await
        .map_err(|err| err.to_string())?;
    // The partitions' consumers share the client's channel, so one multiple ack
    // settles every delivery before it, whatever its partition.
    let ack_every = u64::from((args.prefetch / 4).max(1));
    let mut seen = vec![0u64; args.count.div_ceil(64) as usize];
    let mut duplicates = 0u64;
    for n in 1..=args.count {
        let d = match consumer.next().await {
            Some(d) => d.map_err(|err| err.to_string())?,
            None => return Err("the stream consumer ended early".into()),
        };
        if let Some((_, seq, _)) = arrival(&d.delivery.body) {
            let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
            match seen.get_mut(word) {
                Some(w) if *w & bit == 0 => *w |= bit,
                _ => duplicates += 1,
            }
        }
        if n % ack_every == 0 || n == args.count {
            d.delivery.ack_multiple().map_err(|err| err.to_string())?;
        }
    }
    report("read from first", args.count, began, before, args);
    let _ = consumer.cancel().await;
    let read: u64 = seen.iter().map(|w| u64::from(w.count_ones())).sum();
    if read != args.count || duplicates > 0 {
        return Err(format!(
            "read {read} distinct records of {} ({duplicates} duplicates or unknown)",
            args.count
        ));
    }
    println!("every record exactly once");
    Ok(())
}
