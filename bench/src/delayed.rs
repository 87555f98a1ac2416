//! `warren-bench --amqp URI --delayed SPREAD_MS`: delayed messages (an
//! `x-delayed-message` exchange, RabbitMQ's delayed-message plugin's type) through
//! amqprs.
//!
//! One publisher sends `--count` messages with confirms, each with an `x-delay` of
//! `--delay-base-ms` plus a share of SPREAD_MS (spread evenly, in a shuffled order, so
//! that publish order is not due order); with the default base, all of them are held at
//! once when the last is published. One consumer takes them as they come due and
//! measures how late each arrived: its arrival on the client's clock minus its due
//! time, which the publisher stamped in its body from the client's clock before the
//! publish (the broker starts the delay when the publish reaches it, a little later,
//! so the measure can only overstate the lateness). With `--broker-pid` it also
//! reads the broker's RSS when every message is held and its CPU for the run.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments,
    ConfirmSelectArguments, ExchangeDeclareArguments, QueueBindArguments, QueueDeclareArguments,
    QueuePurgeArguments,
};
use amqprs::{BasicProperties, FieldTable, FieldValue, DELIVERY_MODE_PERSISTENT};

use crate::account::within;
use crate::amqp::{channel, close, closed_reason, e, next_confirm, open};
use crate::args::BenchArgs;
use crate::confirms::Confirms;

/// The bench's header in a delayed message's body: its due time (ms since the Unix
/// epoch) and its number.
const HEADER: usize = 16;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The delay of message `i` of `count`: the base plus its share of the spread, in an
/// order that is not the publish order (a multiplicative permutation of 0..count).
fn delay_of(i: u64, count: u64, base: u64, spread: u64) -> u64 {
    const STEP: u64 = 7_919; // prime, so i * STEP mod count is a permutation unless count is a multiple
    let slot = if count.is_multiple_of(STEP) {
        i
    } else {
        (i * STEP) % count
    };
    base + slot * spread / count.max(1)
}

fn field_table(pairs: &[(&str, FieldValue)]) -> Result<FieldTable, String> {
    let mut table = FieldTable::new();
    for (key, value) in pairs {
        let key = (*key)
            .try_into()
            .map_err(|_| format!("'{key}' is not a field name"))?;
        table.insert(key, value.clone());
    }
    Ok(table)
}

/// Runs the delayed-message scenario and prints its report.
pub async fn run(uri: &str, args: &BenchArgs, spread: u64) -> Result<(), String> {
    if args.size < HEADER {
        return Err(format!("--size must be at least {HEADER} with --delayed"));
    }
    let exchange = format!("{}-delayed", args.queue);
    let queue = args.queue.clone();
    // Declare the exchange and the queue, bound; start from an empty queue.
    let connection = open(uri).await?;
    let (ch, mut events) = channel(&connection).await?;
    let declare = async {
        let mut x = ExchangeDeclareArguments::new(&exchange, "x-delayed-message")
            .durable(true)
            .finish();
        x.arguments(field_table(&[(
            "x-delayed-type",
            FieldValue::S("direct".try_into().map_err(|_| "direct")?),
        )])?);
        ch.exchange_declare(x)
            .await
            .map_err(e("exchange.declare"))?;
        ch.queue_declare(QueueDeclareArguments::new(&queue).durable(true).finish())
            .await
            .map_err(e("queue.declare"))?;
        ch.queue_purge(QueuePurgeArguments::new(&queue))
            .await
            .map_err(e("queue.purge"))?;
        ch.queue_bind(QueueBindArguments::new(&queue, &exchange, "k"))
            .await
            .map_err(e("queue.bind"))?;
        Ok::<(), String>(())
    };
    within("declaring", declare)
        .await
        .map_err(|err| closed_reason(&mut events).unwrap_or(err))?;
    close(connection, ch).await?;

    let cpu_before = args.broker_pid.map(broker_ticks).transpose()?;
    let started = Instant::now();
    let count = args.count;
    let consumer = tokio::spawn(consume(
        uri.to_string(),
        queue.clone(),
        count,
        args.prefetch,
    ));

    // Publish every message, with confirms.
    let connection = open(uri).await?;
    let (ch, mut events) = channel(&connection).await?;
    within("confirm.select", async {
        ch.confirm_select(ConfirmSelectArguments::default())
            .await
            .map_err(e("confirm.select"))
    })
    .await?;
    let target = BasicPublishArguments::new(&exchange, "k");
    let padding = vec![b'd'; args.size - HEADER];
    let window = args.window.max(1) as u64;
    let mut confirms = Confirms::default();
    let mut published = 0u64;
    for i in 0..count {
        while confirms.outstanding(published) >= window {
            next_confirm(&mut events, &mut confirms, published).await?;
        }
        let delay = delay_of(i, count, args.delay_base_ms, spread);
        let mut properties = BasicProperties::default();
        properties
            .with_delivery_mode(DELIVERY_MODE_PERSISTENT)
            .with_headers(field_table(&[("x-delay", FieldValue::l(delay as i64))])?);
        let mut body = Vec::with_capacity(args.size);
        body.extend_from_slice(&(now_ms() + delay).to_be_bytes());
        body.extend_from_slice(&i.to_be_bytes());
        body.extend_from_slice(&padding);
        let sent = within("basic.publish", async {
            ch.basic_publish(properties.finish(), body, target.clone())
                .await
                .map_err(e("basic.publish"))
        })
        .await;
        sent.map_err(|err| closed_reason(&mut events).unwrap_or(err))?;
        confirms.published();
        published += 1;
    }
    while confirms.outstanding(published) > 0 {
        next_confirm(&mut events, &mut confirms, published).await?;
    }
    let publish_took = started.elapsed();
    let rss_held = args
        .broker_pid
        .map(|pid| status_mib(pid, "VmRSS"))
        .transpose()?;
    close(connection, ch)
        .await
        .map_err(|err| closed_reason(&mut events).unwrap_or(err))?;
    let report = confirms.report();

    let mut late = consumer.await.map_err(|err| err.to_string())??;
    let cpu_after = args.broker_pid.map(broker_ticks).transpose()?;
    let hwm = args
        .broker_pid
        .map(|pid| status_mib(pid, "VmHWM"))
        .transpose()?;

    late.sort_unstable();
    let pct = |p: f64| late[((late.len() as f64 - 1.0) * p).round() as usize];
    println!("client: amqprs 2.1 (AMQP client library), delayed messages");
    println!(
        "published {count} × {} B with x-delay {}..{} ms, confirmed in {:.1} s ({:.0} msg/s, {} refused)",
        args.size,
        args.delay_base_ms,
        args.delay_base_ms + spread,
        publish_took.as_secs_f64(),
        count as f64 / publish_took.as_secs_f64().max(1e-9),
        report.refused,
    );
    if let Some(rss) = rss_held {
        println!("broker RSS with all {count} held (as the last confirm came): {rss} MiB");
    }
    println!(
        "delivered {} of {count}, late by (ms): p50 {} p99 {} p99.9 {} max {}",
        late.len(),
        pct(0.5),
        pct(0.99),
        pct(0.999),
        late[late.len() - 1],
    );
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let cpu = (after - before) as f64 / hz;
        println!(
            "broker CPU {:.2} s over the run: {:.1} µs per message (held, stored, routed, delivered)",
            cpu,
            cpu * 1e6 / count as f64
        );
    }
    if let Some(hwm) = hwm {
        println!("broker peak RSS (VmHWM): {hwm} MiB");
    }
    Ok(())
}

/// Consumes `count` messages and returns how late each arrived, in ms (0 when on
/// time); fails on a duplicate, on a message that arrived before it was due, or when
/// the queue stays silent past the last due time plus the silence limit.
async fn consume(
    uri: String,
    queue: String,
    count: u64,
    prefetch: u32,
) -> Result<Vec<u64>, String> {
    let connection = open(&uri).await?;
    let (ch, mut events) = channel(&connection).await?;
    let prefetch = u16::try_from(prefetch).unwrap_or(u16::MAX);
    ch.basic_qos(BasicQosArguments::new(0, prefetch, false))
        .await
        .map_err(e("basic.qos"))?;
    let (_, mut deliveries) = ch
        .basic_consume_rx(
            BasicConsumeArguments::new(&queue, "")
                .manual_ack(true)
                .finish(),
        )
        .await
        .map_err(e("basic.consume"))?;
    let ack_every = u64::from((prefetch / 4).max(1));
    let mut seen = HashSet::with_capacity(count as usize);
    let mut late = Vec::with_capacity(count as usize);
    let mut last_due = 0u64;
    let mut n = 0u64;
    while n < count {
        // Silent until the first is due: wait until then plus the silence limit.
        let wait =
            Duration::from_millis(last_due.saturating_sub(now_ms())) + crate::account::SILENCE;
        let message = match tokio::time::timeout(wait, deliveries.recv()).await {
            Ok(Some(message)) => message,
            Ok(None) => {
                return Err(closed_reason(&mut events).unwrap_or("the consumer ended".into()))
            }
            Err(_) if n == 0 && last_due == 0 => continue,
            Err(_) => return Err(format!("no delivery for {wait:?} after {n} of {count}")),
        };
        let arrived = now_ms();
        let body = message.content.as_deref().unwrap_or_default();
        if body.len() < HEADER {
            return Err("a delivery without the bench's header".into());
        }
        let due = u64::from_be_bytes(body[..8].try_into().unwrap_or_default());
        let seq = u64::from_be_bytes(body[8..16].try_into().unwrap_or_default());
        if !seen.insert(seq) {
            return Err(format!("message {seq} was delivered twice"));
        }
        if arrived < due {
            return Err(format!(
                "message {seq} arrived {} ms before it was due",
                due - arrived
            ));
        }
        last_due = last_due.max(due);
        late.push(arrived - due);
        n += 1;
        if n.is_multiple_of(ack_every) || n == count {
            let tag = message
                .deliver
                .as_ref()
                .map(|d| d.delivery_tag())
                .unwrap_or(0);
            ch.basic_ack(BasicAckArguments::new(tag, true))
                .await
                .map_err(e("basic.ack"))?;
        }
    }
    close(connection, ch).await?;
    Ok(late)
}

/// The broker's user + system CPU ticks so far.
pub(crate) fn broker_ticks(pid: u32) -> Result<u64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|err| format!("--broker-pid {pid}: {err}"))?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    Ok(field(11) + field(12))
}

/// A line of the broker's /proc/PID/status, in MiB (VmRSS, VmHWM).
fn status_mib(pid: u32, key: &str) -> Result<u64, String> {
    status_kib(pid, key).map(|kib| kib / 1024)
}

/// A line of the broker's /proc/PID/status, in KiB (VmRSS, VmHWM).
pub(crate) fn status_kib(pid: u32, key: &str) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|err| format!("--broker-pid {pid}: {err}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .ok_or_else(|| format!("no {key} in /proc/{pid}/status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_cover_the_spread_once_each_in_another_order() {
        let count = 1_000;
        let mut delays: Vec<u64> = (0..count).map(|i| delay_of(i, count, 100, 1_000)).collect();
        assert_ne!(delays[1], 101, "not in publish order");
        delays.sort_unstable();
        assert_eq!(delays, (0..count).map(|i| 100 + i).collect::<Vec<_>>());
    }
}
