//! The network between the simulated nodes: every Raft message waits in a priority
//! queue keyed by its delivery time (then by when it was sent), so random delays
//! reorder messages; a run has its loss and duplication rates, rare long delays, and
//! links cut in one direction or both.
//!
//! Node indices here (0..n) are Raft ids minus one. A message is lost when it is sent
//! (loss), or when it is due and its link is cut or its receiver is down.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use raft::prelude::Message;

use super::client::Millis;
use super::rng::SimRng;

/// How a run's network misbehaves.
#[derive(Clone, Copy, Debug)]
pub(super) struct Weather {
    /// The share of messages lost.
    pub(super) loss: f64,
    /// The share of messages delivered twice.
    pub(super) duplicate: f64,
    /// A message takes 1..=`max_delay` ms.
    pub(super) max_delay: Millis,
    /// The share of messages held up to `spike_delay` ms instead (a stale message
    /// that arrives terms later).
    pub(super) spike: f64,
    pub(super) spike_delay: Millis,
}

impl Weather {
    /// A calm network: no loss, no duplicates, no spikes.
    pub(super) fn calm(max_delay: Millis) -> Weather {
        Weather {
            loss: 0.0,
            duplicate: 0.0,
            max_delay,
            spike: 0.0,
            spike_delay: 0,
        }
    }
}

struct InFlight {
    at: Millis,
    seq: u64,
    message: Message,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The messages in flight and the state of the links.
pub(super) struct Network {
    queue: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    /// Cut links, (from, to) by node index.
    cut: BTreeSet<(usize, usize)>,
    pub(super) weather: Weather,
}

/// Where a message sent went.
pub(super) enum Sent {
    Queued,
    Lost,
}

impl Network {
    pub(super) fn new(weather: Weather) -> Network {
        Network {
            queue: BinaryHeap::new(),
            seq: 0,
            cut: BTreeSet::new(),
            weather,
        }
    }

    fn push(&mut self, at: Millis, message: Message) {
        self.seq += 1;
        self.queue.push(Reverse(InFlight {
            at,
            seq: self.seq,
            message,
        }));
    }

    fn delay(&self, rng: &mut SimRng) -> Millis {
        let w = &self.weather;
        if rng.chance(w.spike) {
            rng.below(w.max_delay, w.spike_delay.max(w.max_delay) + 1)
        } else {
            rng.below(1, w.max_delay + 1)
        }
    }

    /// Sends `message` at `now`.
    pub(super) fn send(&mut self, message: Message, now: Millis, rng: &mut SimRng) -> Sent {
        if rng.chance(self.weather.loss) {
            return Sent::Lost;
        }
        if rng.chance(self.weather.duplicate) {
            let at = now + self.delay(rng);
            self.push(at, message.clone());
        }
        let at = now + self.delay(rng);
        self.push(at, message);
        Sent::Queued
    }

    /// When the next message is due.
    pub(super) fn next_due(&self) -> Option<Millis> {
        self.queue.peek().map(|Reverse(f)| f.at)
    }

    /// The next message due, with its time.
    pub(super) fn pop(&mut self) -> Option<(Millis, Message)> {
        self.queue.pop().map(|Reverse(f)| (f.at, f.message))
    }

    pub(super) fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// Whether `from` reaches `to` now.
    pub(super) fn link_up(&self, from: usize, to: usize) -> bool {
        !self.cut.contains(&(from, to))
    }

    /// Cuts the link from `from` to `to` (one way).
    pub(super) fn cut(&mut self, from: usize, to: usize) {
        if from != to {
            self.cut.insert((from, to));
        }
    }

    /// Cuts every link between the two sides, both ways.
    pub(super) fn split(&mut self, side: &[usize], others: &[usize]) {
        for a in side {
            for b in others {
                self.cut(*a, *b);
                self.cut(*b, *a);
            }
        }
    }

    /// Restores one cut link (the first from `pick`), if any.
    pub(super) fn heal_one(&mut self, pick: usize) -> Option<(usize, usize)> {
        let link = self.cut.iter().nth(pick % self.cut.len().max(1)).copied()?;
        self.cut.remove(&link);
        Some(link)
    }

    pub(super) fn heal_all(&mut self) {
        self.cut.clear();
    }

    pub(super) fn cut_links(&self) -> usize {
        self.cut.len()
    }
}
