//! [`QueueSnapshots`]: every queue's counts at one moment, shared by whatever needs
//! all of them (the overview's totals, the metrics, the UI's queued-messages chart),
//! taken at most every [`MAX_AGE`] and only while someone reads them.
//!
//! Asking every queue costs the node about 5 µs per queue (10 000 queues: 50 ms), so
//! requests that poll (a Prometheus scrape, a UI open on the overview) share one
//! snapshot instead of each asking every queue; the numbers are as fresh as
//! RabbitMQ's, whose queues report their statistics every 5 s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use warren_actors::vhost::QueueSummary;
use warren_actors::vhosts::VHosts;

use crate::rates::{now_ms, QueueTotals};

/// A snapshot is taken again once it is this old.
pub const MAX_AGE: Duration = Duration::from_secs(5);
/// The sampler keeps snapshots fresh while they were read within this window.
const DEMAND_WINDOW: Duration = Duration::from_secs(60);
/// A snapshot that takes longer (a queue that does not answer) is given up: the last
/// one is served, and readers are not held.
const TAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Every queue's counts at one moment.
#[derive(Debug, Default)]
pub struct QueueSnapshot {
    /// When, in ms since the Unix epoch.
    pub at_ms: u64,
    /// Each queue with its vhost, by vhost then name.
    pub queues: Vec<(String, QueueSummary)>,
    /// Their totals.
    pub totals: QueueTotals,
}

/// The latest snapshot, and when somebody last wanted one (cheap to clone).
#[derive(Clone, Default)]
pub struct QueueSnapshots {
    latest: Arc<Mutex<Option<Arc<QueueSnapshot>>>>,
    /// One taker at a time: concurrent readers wait for its snapshot.
    taking: Arc<tokio::sync::Mutex<()>>,
    wanted_ms: Arc<AtomicU64>,
}

/// Asks every queue of every vhost for its counts.
async fn take(vhosts: &VHosts) -> QueueSnapshot {
    let mut all = vhosts.all();
    all.sort_by(|a, b| a.name().cmp(b.name()));
    let mut snapshot = QueueSnapshot::default();
    for vhost in all {
        let mut queues = vhost.list_queues().await;
        queues.sort_by(|a, b| a.name.cmp(&b.name));
        for q in queues {
            let t = &mut snapshot.totals;
            t.ready += q.stats.ready;
            t.unacked += q.stats.unacked;
            t.consumers += q.stats.consumers;
            t.queues += 1;
            snapshot.queues.push((vhost.name().to_string(), q));
        }
    }
    snapshot.totals.messages = snapshot.totals.ready + snapshot.totals.unacked;
    snapshot.at_ms = now_ms();
    snapshot
}

impl QueueSnapshots {
    fn fresh(&self) -> Option<Arc<QueueSnapshot>> {
        let latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        latest
            .as_ref()
            .filter(|s| now_ms().saturating_sub(s.at_ms) < MAX_AGE.as_millis() as u64)
            .cloned()
    }

    /// A snapshot at most [`MAX_AGE`] old, taken now if there is none.
    pub async fn get(&self, vhosts: &VHosts) -> Arc<QueueSnapshot> {
        self.wanted_ms.store(now_ms(), Ordering::Relaxed);
        self.refresh(vhosts).await
    }

    async fn refresh(&self, vhosts: &VHosts) -> Arc<QueueSnapshot> {
        if let Some(s) = self.fresh() {
            return s;
        }
        let _taking = self.taking.lock().await;
        if let Some(s) = self.fresh() {
            return s;
        }
        let snapshot = match tokio::time::timeout(TAKE_TIMEOUT, take(vhosts)).await {
            Ok(snapshot) => Arc::new(snapshot),
            Err(_) => {
                tracing::warn!(
                    "the queues did not all answer within {TAKE_TIMEOUT:?}: the statistics stay as they were"
                );
                let latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
                return latest.clone().unwrap_or_default();
            }
        };
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(snapshot.clone());
        snapshot
    }

    /// The latest snapshot's totals, refreshed if somebody read snapshots lately
    /// (the sampler's call: a node nobody watches does not ask its queues).
    pub async fn totals_if_wanted(&self, vhosts: &VHosts) -> QueueTotals {
        let wanted = now_ms().saturating_sub(self.wanted_ms.load(Ordering::Relaxed))
            < DEMAND_WINDOW.as_millis() as u64;
        if wanted {
            return self.refresh(vhosts).await.totals;
        }
        let latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        latest.as_ref().map(|s| s.totals).unwrap_or_default()
    }
}
