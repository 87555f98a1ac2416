//! What every client of the bench shares: the record of which (publisher, seq) arrived
//! and with what latency ([`Received`]), pacing at `--rate`, and the limit on how long
//! the broker may stay silent.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::args::BenchArgs;

/// How long the broker may say nothing while the bench waits for it: a refused or
/// lost message leaves a consumer short of its quota, which must end in an error, not
/// a hang.
pub const SILENCE: Duration = Duration::from_secs(30);

/// Awaits `f`, or fails once the broker has been silent for [`SILENCE`].
pub async fn within<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    match tokio::time::timeout(SILENCE, f).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "{what}: the broker sent nothing for {} s",
            SILENCE.as_secs()
        )),
    }
}

/// Results the consumers share.
pub struct Received {
    /// One bit per (publisher, seq): seen once.
    pub(crate) seen: Vec<Vec<u64>>,
    pub(crate) duplicates: u64,
    pub(crate) foreign: u64,
    pub(crate) latencies_us: Vec<u32>,
}

impl Received {
    pub(crate) fn new(publishers: u32, count: u64, expected: u64) -> Received {
        Received {
            seen: (0..publishers.max(1))
                .map(|_| vec![0u64; count.div_ceil(64) as usize])
                .collect(),
            duplicates: 0,
            foreign: 0,
            latencies_us: Vec::with_capacity(expected.min(50_000_000) as usize),
        }
    }
}

/// Checks off a batch of arrivals (publisher, seq, latency in ns).
pub fn record(received: &Mutex<Received>, batch: &mut Vec<(u64, u64, u64)>, drain_only: bool) {
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

/// When publish number `seq` is due at `--rate` (`None`: as fast as possible).
pub fn due(args: &BenchArgs, start: Instant, seq: u64) -> Option<Instant> {
    (args.rate > 0).then(|| start + Duration::from_secs_f64(seq as f64 / args.rate as f64))
}

/// Waits until publish number `seq` is due at `--rate`.
pub async fn pace(args: &BenchArgs, start: Instant, seq: u64) {
    if let Some(due) = due(args, start, seq) {
        tokio::time::sleep_until(due.into()).await;
    }
}
