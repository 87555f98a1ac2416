//! The partition as a pure state machine: its log's bounds and its consumers, and
//! which offsets go to which consumer (`apply(command) -> effects`, as RabbitMQ's
//! `rabbit_fifo`). No clock, no I/O: the shell appends, reads and sends.
//!
//! A consumer reads from its own position; acks do not remove messages, they give
//! the consumer credit back (at most `prefetch` deliveries unacked). A consumer whose
//! next offset was removed by retention goes on at the first offset kept.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::Arc;

use warren_actors::delivery::ChannelId;

use crate::offset::LogBounds;

/// A consumer: its channel and its tag there.
pub type ConsumerKey = (ChannelId, Arc<str>);

/// One consumer's place in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consumer {
    /// Unacked deliveries it may hold (never 0 for a stream).
    pub prefetch: u32,
    /// The next offset it is sent.
    pub next: u64,
    /// The offsets it was sent and has not settled.
    pub unacked: BTreeSet<u64>,
}

impl Consumer {
    fn credit(&self) -> u64 {
        u64::from(self.prefetch).saturating_sub(self.unacked.len() as u64)
    }
}

/// What the shell tells the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Chunks were appended and are durable: the log now ends at `next` (offsets)
    /// and `end` (bytes); its last chunk begins at `last_chunk`.
    Appended {
        /// The offset after the last message appended.
        next: u64,
        /// The first offset of the last chunk appended.
        last_chunk: u64,
        /// The byte position after the last chunk appended.
        end: u64,
    },
    /// Retention removed the chunks before `first` (which starts at byte `start`).
    Truncated {
        /// The first offset kept.
        first: u64,
        /// The byte position of the first chunk kept.
        start: u64,
    },
    /// A consumer starts at `start` (resolved from its `x-stream-offset`).
    Consume {
        /// The consumer.
        key: ConsumerKey,
        /// Its first offset.
        start: u64,
        /// Its prefetch (> 0).
        prefetch: u32,
    },
    /// A consumer ends; what it holds unacked is forgotten.
    Cancel {
        /// The consumer.
        key: ConsumerKey,
    },
    /// A channel settled deliveries of its consumers, by offset.
    Settle {
        /// The channel.
        channel: ChannelId,
        /// The offsets settled.
        offsets: Vec<u64>,
    },
    /// A channel closed: its consumers end.
    ChannelDown {
        /// The channel.
        channel: ChannelId,
    },
    /// Offsets sent to a consumer were not there when the shell read them
    /// (retention removed them first): they are not unacked.
    Skipped {
        /// The consumer.
        key: ConsumerKey,
        /// The offsets that were gone.
        offsets: Range<u64>,
    },
}

/// What the shell does for the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Send the consumer the messages of these offsets, in order.
    Deliver {
        /// The consumer.
        key: ConsumerKey,
        /// The offsets.
        offsets: Range<u64>,
    },
}

/// Why a command was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// The channel already has a consumer with this tag.
    #[error("attempt to reuse consumer tag '{0}'")]
    TagInUse(String),
}

/// A partition: its log's bounds and its consumers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Partition {
    bounds: LogBounds,
    consumers: BTreeMap<ConsumerKey, Consumer>,
}

impl Partition {
    /// A partition whose log holds `bounds` (as found at start), without consumers.
    pub fn new(bounds: LogBounds) -> Partition {
        Partition {
            bounds,
            consumers: BTreeMap::new(),
        }
    }

    /// The log's bounds.
    pub fn bounds(&self) -> &LogBounds {
        &self.bounds
    }

    /// The consumers, in key order.
    pub fn consumers(&self) -> impl Iterator<Item = (&ConsumerKey, &Consumer)> {
        self.consumers.iter()
    }

    /// Deliveries sent and not settled, over every consumer.
    pub fn unacked(&self) -> u64 {
        self.consumers
            .values()
            .map(|c| c.unacked.len() as u64)
            .sum()
    }

    /// Applies one command; the effects are the deliveries it makes possible.
    pub fn apply(&mut self, command: Command) -> Result<Vec<Effect>, Refused> {
        match command {
            Command::Appended {
                next,
                last_chunk,
                end,
            } => {
                self.bounds.next = self.bounds.next.max(next);
                self.bounds.last_chunk = last_chunk;
                self.bounds.end = self.bounds.end.max(end);
            }
            Command::Truncated { first, start } => {
                self.bounds.first = self.bounds.first.max(first).min(self.bounds.next);
                self.bounds.start = self.bounds.start.max(start).min(self.bounds.end);
            }
            Command::Consume {
                key,
                start,
                prefetch,
            } => {
                if self.consumers.contains_key(&key) {
                    return Err(Refused::TagInUse(key.1.to_string()));
                }
                self.consumers.insert(
                    key,
                    Consumer {
                        prefetch,
                        next: start,
                        unacked: BTreeSet::new(),
                    },
                );
            }
            Command::Cancel { key } => {
                self.consumers.remove(&key);
            }
            Command::Settle { channel, offsets } => {
                for offset in offsets {
                    // The first consumer of the channel holding it: two consumers of
                    // one channel may both hold an offset, and each settles its own.
                    if let Some(c) = self
                        .channel_consumers(channel)
                        .find(|c| c.unacked.contains(&offset))
                    {
                        c.unacked.remove(&offset);
                    }
                }
            }
            Command::ChannelDown { channel } => {
                self.consumers.retain(|(ch, _), _| *ch != channel);
            }
            Command::Skipped { key, offsets } => {
                if let Some(c) = self.consumers.get_mut(&key) {
                    for offset in offsets {
                        c.unacked.remove(&offset);
                    }
                }
            }
        }
        Ok(self.deliveries())
    }

    fn channel_consumers(&mut self, channel: ChannelId) -> impl Iterator<Item = &mut Consumer> {
        let from: ConsumerKey = (channel, Arc::from(""));
        self.consumers
            .range_mut(from..)
            .take_while(move |((ch, _), _)| *ch == channel)
            .map(|(_, c)| c)
    }

    /// What every consumer with credit can be sent now.
    fn deliveries(&mut self) -> Vec<Effect> {
        let bounds = self.bounds;
        let mut effects = Vec::new();
        for (key, c) in self.consumers.iter_mut() {
            if c.next < bounds.first {
                c.next = bounds.first;
            }
            let available = bounds.next.saturating_sub(c.next);
            let n = c.credit().min(available);
            if n == 0 {
                continue;
            }
            let offsets = c.next..c.next + n;
            c.unacked.extend(offsets.clone());
            c.next += n;
            effects.push(Effect::Deliver {
                key: key.clone(),
                offsets,
            });
        }
        effects
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(channel: ChannelId, tag: &str) -> ConsumerKey {
        (channel, Arc::from(tag))
    }

    fn appended(next: u64) -> Command {
        Command::Appended {
            next,
            last_chunk: next.saturating_sub(1),
            end: next * 10,
        }
    }

    fn delivered(effects: &[Effect]) -> Vec<(ConsumerKey, Range<u64>)> {
        effects
            .iter()
            .map(|Effect::Deliver { key, offsets }| (key.clone(), offsets.clone()))
            .collect()
    }

    #[test]
    fn a_consumer_gets_prefetch_many_and_each_ack_gives_one_more() {
        let mut p = Partition::default();
        assert!(p.apply(appended(10)).unwrap().is_empty());
        let effects = p
            .apply(Command::Consume {
                key: key(1, "a"),
                start: 0,
                prefetch: 4,
            })
            .unwrap();
        assert_eq!(delivered(&effects), [(key(1, "a"), 0..4)]);
        let effects = p
            .apply(Command::Settle {
                channel: 1,
                offsets: vec![1, 0],
            })
            .unwrap();
        assert_eq!(delivered(&effects), [(key(1, "a"), 4..6)]);
        // An offset settled twice, or by another channel, gives nothing.
        let again = Command::Settle {
            channel: 1,
            offsets: vec![0],
        };
        assert!(p.apply(again).unwrap().is_empty());
        let other = Command::Settle {
            channel: 2,
            offsets: vec![2],
        };
        assert!(p.apply(other).unwrap().is_empty());
        assert_eq!(p.unacked(), 4);
    }

    #[test]
    fn a_consumer_at_the_end_gets_what_is_appended_and_retention_moves_it_on() {
        let mut p = Partition::default();
        p.apply(appended(5)).unwrap();
        p.apply(Command::Consume {
            key: key(1, "tail"),
            start: 5,
            prefetch: 100,
        })
        .unwrap();
        let effects = p.apply(appended(8)).unwrap();
        assert_eq!(delivered(&effects), [(key(1, "tail"), 5..8)]);
        // A consumer far behind starts at the first offset kept.
        p.apply(appended(100)).unwrap();
        p.apply(Command::Truncated {
            first: 60,
            start: 600,
        })
        .unwrap();
        let effects = p
            .apply(Command::Consume {
                key: key(2, "old"),
                start: 10,
                prefetch: 5,
            })
            .unwrap();
        assert_eq!(delivered(&effects), [(key(2, "old"), 60..65)]);
        // Offsets the shell found gone give their credit back.
        let effects = p
            .apply(Command::Skipped {
                key: key(2, "old"),
                offsets: 60..62,
            })
            .unwrap();
        assert_eq!(delivered(&effects), [(key(2, "old"), 65..67)]);
    }

    #[test]
    fn a_consumer_waits_for_an_offset_beyond_the_end_and_tags_are_unique_per_channel() {
        let mut p = Partition::default();
        p.apply(appended(3)).unwrap();
        p.apply(Command::Consume {
            key: key(1, "a"),
            start: 6,
            prefetch: 10,
        })
        .unwrap();
        assert!(p.apply(appended(5)).unwrap().is_empty());
        assert_eq!(
            delivered(&p.apply(appended(8)).unwrap()),
            [(key(1, "a"), 6..8)]
        );
        let again = Command::Consume {
            key: key(1, "a"),
            start: 0,
            prefetch: 1,
        };
        assert_eq!(p.apply(again), Err(Refused::TagInUse("a".into())));
        p.apply(Command::ChannelDown { channel: 1 }).unwrap();
        assert_eq!(p.consumers().count(), 0);
    }

    #[derive(Clone, Debug)]
    enum Step {
        Append(u8),
        Truncate(u8),
        Consume(u8, u8, u8, u8),
        Cancel(u8, u8),
        Ack(u8, u8),
        Down(u8),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (1..20u8).prop_map(Step::Append),
            1 => any::<u8>().prop_map(Step::Truncate),
            2 => (0..3u8, 0..3u8, any::<u8>(), 1..8u8).prop_map(|(c, t, s, p)| Step::Consume(c, t, s, p)),
            1 => (0..3u8, 0..3u8).prop_map(|(c, t)| Step::Cancel(c, t)),
            4 => (0..3u8, any::<u8>()).prop_map(|(c, n)| Step::Ack(c, n)),
            1 => (0..3u8).prop_map(Step::Down),
        ]
    }

    proptest! {
        /// After every step: no consumer holds more than its prefetch, every delivery
        /// is inside the log, and each consumer is sent consecutive offsets, never one
        /// twice.
        #[test]
        fn credit_bounds_and_order_hold_after_every_step(steps in prop::collection::vec(step(), 1..200)) {
            let mut p = Partition::default();
            let mut last_sent: BTreeMap<ConsumerKey, u64> = BTreeMap::new();
            for step in steps {
                let command = match step {
                    Step::Append(n) => appended(p.bounds().next + u64::from(n)),
                    Step::Truncate(n) => {
                        let first = p.bounds().first + u64::from(n) % 10;
                        Command::Truncated { first, start: first * 10 }
                    }
                    Step::Consume(c, t, s, prefetch) => Command::Consume {
                        key: key(c.into(), &t.to_string()),
                        start: u64::from(s),
                        prefetch: prefetch.into(),
                    },
                    Step::Cancel(c, t) => {
                        let k = key(c.into(), &t.to_string());
                        last_sent.remove(&k);
                        Command::Cancel { key: k }
                    }
                    Step::Ack(c, n) => {
                        let offsets: Vec<u64> = p
                            .consumers()
                            .filter(|((ch, _), _)| *ch == u64::from(c))
                            .flat_map(|(_, c)| c.unacked.iter().copied())
                            .take(usize::from(n % 5) + 1)
                            .collect();
                        Command::Settle { channel: c.into(), offsets }
                    }
                    Step::Down(c) => {
                        last_sent.retain(|(ch, _), _| *ch != u64::from(c));
                        Command::ChannelDown { channel: c.into() }
                    }
                };
                let bounds_before = *p.bounds();
                let Ok(effects) = p.apply(command) else { continue };
                for Effect::Deliver { key, offsets } in effects {
                    prop_assert!(!offsets.is_empty());
                    prop_assert!(offsets.end <= p.bounds().next);
                    prop_assert!(offsets.start >= p.bounds().first.min(bounds_before.first));
                    if let Some(last) = last_sent.get(&key) {
                        prop_assert!(offsets.start > *last, "{key:?} sent {offsets:?} after {last}");
                    }
                    last_sent.insert(key, offsets.end - 1);
                }
                for (key, c) in p.consumers() {
                    prop_assert!(c.unacked.len() as u64 <= u64::from(c.prefetch), "{key:?}");
                }
                prop_assert!(p.bounds().first <= p.bounds().next);
            }
        }
    }
}
