//! [`Rates`]: the node's message counters sampled once a second, so the API can
//! show rates (`publish_details.rate`) and the UI can draw their history; and the
//! queues' totals (messages ready and unacked over all queues), taken every
//! `QUEUE_TOTALS_EVERY` seconds from the shared queue snapshot.
//!
//! A rate is the change over the last `RATE_WINDOW` samples divided by the time
//! between them, as RabbitMQ computes its `rate` over its sampling interval.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use warren_actors::vhosts::VHosts;
use warren_amqp::registry::{ChurnCounts, Connections, MessageCounts};

use crate::snapshot::QueueSnapshots;

/// Samples kept: ten minutes at one a second.
const KEPT: usize = 600;
/// The rate is taken over this many seconds.
const RATE_WINDOW: usize = 5;
/// The queues' totals are refreshed every this many samples.
const QUEUE_TOTALS_EVERY: u64 = 5;

/// Messages held by all queues.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueTotals {
    /// Ready and unacked.
    pub messages: u64,
    /// Ready for delivery.
    pub ready: u64,
    /// Delivered, not yet acked.
    pub unacked: u64,
    /// Queues counted.
    pub queues: u64,
    /// Consumers over all queues.
    pub consumers: u64,
}

/// One sample.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// When, in ms since the Unix epoch.
    pub at_ms: u64,
    /// The node's message counters.
    pub counts: MessageCounts,
    /// Connections and channels opened and closed.
    pub churn: ChurnCounts,
    /// The queues' totals as last taken.
    pub queues: QueueTotals,
}

/// The node's samples (cheap to clone).
#[derive(Clone, Default)]
pub struct Rates {
    samples: Arc<Mutex<VecDeque<Sample>>>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Rates {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Sample>> {
        self.samples.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a sample (the oldest goes once `KEPT` are held).
    pub fn push(&self, sample: Sample) {
        let mut samples = self.lock();
        if samples.len() == KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// The newest sample.
    pub fn latest(&self) -> Option<Sample> {
        self.lock().back().copied()
    }

    /// Samples over the last `age_s` seconds, every `incr_s` seconds, newest first.
    pub fn history(&self, age_s: u64, incr_s: u64) -> Vec<Sample> {
        let samples = self.lock();
        let Some(newest) = samples.back() else {
            return Vec::new();
        };
        let since = newest.at_ms.saturating_sub(age_s * 1000);
        let step = incr_s.max(1) as usize;
        samples
            .iter()
            .rev()
            .take_while(|s| s.at_ms >= since)
            .step_by(step)
            .copied()
            .collect()
    }

    /// Per-second rates of the counters over the last few samples (zeros until two
    /// samples exist).
    pub fn rates(&self) -> (MessageCounts, ChurnCounts, f64) {
        let samples = self.lock();
        let n = samples.len();
        if n < 2 {
            return (MessageCounts::default(), ChurnCounts::default(), 1.0);
        }
        let (new, old) = (samples[n - 1], samples[n.saturating_sub(RATE_WINDOW + 1)]);
        let seconds = (new.at_ms.saturating_sub(old.at_ms) as f64 / 1000.0).max(0.001);
        (
            difference(new.counts, old.counts),
            ChurnCounts {
                connections_opened: new.churn.connections_opened - old.churn.connections_opened,
                connections_closed: new.churn.connections_closed - old.churn.connections_closed,
                channels_opened: new.churn.channels_opened - old.churn.channels_opened,
                channels_closed: new.churn.channels_closed - old.churn.channels_closed,
            },
            seconds,
        )
    }

    /// Samples once a second for as long as the node runs; the queues' totals come
    /// from `snapshots`, refreshed only while somebody reads them.
    pub async fn run(self, connections: Connections, vhosts: VHosts, snapshots: QueueSnapshots) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u64 = 0;
        let mut queues = QueueTotals::default();
        loop {
            tick.tick().await;
            if n.is_multiple_of(QUEUE_TOTALS_EVERY) {
                queues = snapshots.totals_if_wanted(&vhosts).await;
            }
            n += 1;
            self.push(Sample {
                at_ms: now_ms(),
                counts: connections.totals(),
                churn: connections.churn(),
                queues,
            });
        }
    }
}

fn difference(new: MessageCounts, old: MessageCounts) -> MessageCounts {
    MessageCounts {
        publish: new.publish.saturating_sub(old.publish),
        confirm: new.confirm.saturating_sub(old.confirm),
        deliver: new.deliver.saturating_sub(old.deliver),
        deliver_no_ack: new.deliver_no_ack.saturating_sub(old.deliver_no_ack),
        get: new.get.saturating_sub(old.get),
        get_no_ack: new.get_no_ack.saturating_sub(old.get_no_ack),
        ack: new.ack.saturating_sub(old.ack),
        redeliver: new.redeliver.saturating_sub(old.redeliver),
        return_unroutable: new.return_unroutable.saturating_sub(old.return_unroutable),
        reject: new.reject.saturating_sub(old.reject),
    }
}

fn rate(count: u64, seconds: f64) -> Value {
    json!({ "rate": (count as f64 / seconds * 10.0).round() / 10.0 })
}

/// RabbitMQ's `message_stats`: totals with `*_details.rate` beside them.
pub fn message_stats(total: MessageCounts, per: MessageCounts, seconds: f64) -> Value {
    let pairs = [
        ("publish", total.publish, per.publish),
        ("confirm", total.confirm, per.confirm),
        ("deliver", total.deliver, per.deliver),
        ("deliver_no_ack", total.deliver_no_ack, per.deliver_no_ack),
        ("get", total.get, per.get),
        ("get_no_ack", total.get_no_ack, per.get_no_ack),
        ("deliver_get", total.deliver_get(), per.deliver_get()),
        ("ack", total.ack, per.ack),
        ("redeliver", total.redeliver, per.redeliver),
        (
            "return_unroutable",
            total.return_unroutable,
            per.return_unroutable,
        ),
        ("reject", total.reject, per.reject),
    ];
    let mut m = serde_json::Map::new();
    for (name, count, recent) in pairs {
        m.insert(name.to_string(), count.into());
        m.insert(format!("{name}_details"), rate(recent, seconds));
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_taken_over_the_last_samples() {
        let rates = Rates::default();
        assert_eq!(rates.rates().0, MessageCounts::default());
        for i in 0..10u64 {
            rates.push(Sample {
                at_ms: 1000 * i,
                counts: MessageCounts {
                    publish: 100 * i,
                    ..Default::default()
                },
                ..Default::default()
            });
        }
        let (per, _, seconds) = rates.rates();
        assert_eq!(seconds, 5.0);
        assert_eq!(per.publish, 500);
        let stats = message_stats(rates.latest().unwrap().counts, per, seconds);
        assert_eq!(stats["publish"], 900);
        assert_eq!(stats["publish_details"]["rate"], 100.0);
        let history = rates.history(4, 2);
        assert_eq!(
            history.iter().map(|s| s.at_ms).collect::<Vec<_>>(),
            vec![9000, 7000, 5000]
        );
    }

    #[test]
    fn only_the_newest_samples_are_kept() {
        let rates = Rates::default();
        for i in 0..(KEPT as u64 + 10) {
            rates.push(Sample {
                at_ms: i,
                ..Default::default()
            });
        }
        assert_eq!(rates.lock().len(), KEPT);
        assert_eq!(rates.lock().front().unwrap().at_ms, 10);
    }
}
