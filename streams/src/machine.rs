//! The partition as a pure state machine: its log's bounds and its consumers, and
//! which offsets go to which consumer (`apply(command) -> effects`, as RabbitMQ's
//! `rabbit_fifo`). No clock, no I/O: the shell appends, reads and sends.
//!
//! A consumer reads from its own position; acks do not remove messages, they give
//! the consumer credit back (at most `prefetch` deliveries unacked). A consumer whose
//! next offset was removed by retention goes on at the first offset kept.
//!
//! Consumers of a **group** share one position, the group's committed offset, and
//! only one of them is active at a time (RabbitMQ's single active consumer of a super
//! stream's partition): member `p mod n` in order of arrival, where `p` is the
//! partition's number and `n` the group's members here, so that members subscribed
//! to every partition of a stream get the partitions spread between them. When
//! members come or go the choice is made again; a member that stops being active
//! stops getting messages, and the one that takes over starts at the committed
//! offset (what was delivered and not committed comes again: at least once). The
//! committed offset moves as the active member acks (or as it is sent messages, for a
//! group that commits on delivery), and the shell stores it.

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
    /// The group it is a member of.
    pub group: Option<Arc<str>>,
    /// It is sent messages (a group's other members wait).
    pub active: bool,
}

/// When a group's offset moves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Commit {
    /// As the active member acks: the offset is the first one not acked.
    #[default]
    OnAck,
    /// As messages are sent to the active member (at most once for what it held).
    OnDelivery,
}

/// A consumer group's state in this partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// The offset the group goes on from.
    pub committed: u64,
    /// How the offset moves.
    pub commit: Commit,
    /// Its members here, in order of arrival.
    pub members: Vec<ConsumerKey>,
}

/// A consumer joining a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Join {
    /// The group's name (with its member's, for a broadcast group).
    pub group: Arc<str>,
    /// The group's stored offset, if it has one (it wins over the consumer's start).
    pub stored: Option<u64>,
    /// How the group's offset moves.
    pub commit: Commit,
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
    /// A consumer starts at `start` (resolved from its `x-stream-offset`), alone or
    /// as a member of a group.
    Consume {
        /// The consumer.
        key: ConsumerKey,
        /// Its first offset (a group's first member's, when the group has no
        /// stored offset).
        start: u64,
        /// Its prefetch (> 0).
        prefetch: u32,
        /// The group it joins.
        join: Option<Join>,
    },
    /// A consumer ends; what it holds unacked is forgotten.
    Cancel {
        /// The consumer.
        key: ConsumerKey,
    },
    /// A consumer's deliveries were settled, by offset (the shell knows which
    /// consumer each delivery was for: two consumers of one channel may both hold
    /// an offset).
    Settle {
        /// The consumer.
        key: ConsumerKey,
        /// The offsets settled.
        offsets: Vec<u64>,
    },
    /// A channel closed: its consumers end.
    ChannelDown {
        /// The channel.
        channel: ChannelId,
    },
    /// Offsets given to a consumer that it is not sent: retention removed them
    /// before the shell read them, or its tag filter passes them over. They are not
    /// unacked (as if acked at once).
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
    /// The consumer stopped being its group's active member: drop what was to be
    /// sent to it.
    Deactivated {
        /// The consumer.
        key: ConsumerKey,
    },
    /// Store the group's offset.
    Commit {
        /// The group.
        group: Arc<str>,
        /// The first offset it has not processed.
        offset: u64,
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

/// A partition: its log's bounds, its consumers and its groups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Partition {
    bounds: LogBounds,
    /// Its number in its stream: which member of a group it picks.
    number: u64,
    consumers: BTreeMap<ConsumerKey, Consumer>,
    groups: BTreeMap<Arc<str>, Group>,
}

impl Partition {
    /// Partition `number` of its stream, whose log holds `bounds` (as found at
    /// start), without consumers.
    pub fn new(bounds: LogBounds, number: u64) -> Partition {
        Partition {
            bounds,
            number,
            consumers: BTreeMap::new(),
            groups: BTreeMap::new(),
        }
    }

    /// The groups that have or had members here since the partition started.
    pub fn groups(&self) -> impl Iterator<Item = (&Arc<str>, &Group)> {
        self.groups.iter()
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

    /// Applies one command; the effects are the deliveries it makes possible, and
    /// the group changes it makes.
    pub fn apply(&mut self, command: Command) -> Result<Vec<Effect>, Refused> {
        let mut effects = Vec::new();
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
                join,
            } => {
                if self.consumers.contains_key(&key) {
                    return Err(Refused::TagInUse(key.1.to_string()));
                }
                let group = join.as_ref().map(|j| j.group.clone());
                self.consumers.insert(
                    key.clone(),
                    Consumer {
                        prefetch,
                        next: start,
                        unacked: BTreeSet::new(),
                        active: group.is_none(),
                        group: group.clone(),
                    },
                );
                if let Some(join) = join {
                    let entry = self.groups.entry(join.group.clone()).or_insert(Group {
                        committed: join.stored.unwrap_or(start),
                        commit: join.commit,
                        members: Vec::new(),
                    });
                    entry.members.push(key);
                    self.choose_active(&join.group, &mut effects);
                }
            }
            Command::Cancel { key } => self.remove_consumer(&key, &mut effects),
            Command::Settle { key, offsets } => {
                let mut group = None;
                if let Some(c) = self.consumers.get_mut(&key) {
                    for offset in offsets {
                        c.unacked.remove(&offset);
                    }
                    if c.active {
                        group = c.group.clone();
                    }
                }
                if let Some(group) = group {
                    self.commit_acked(&group, &mut effects);
                }
            }
            Command::ChannelDown { channel } => {
                let gone: Vec<ConsumerKey> = self
                    .consumers
                    .keys()
                    .filter(|(ch, _)| *ch == channel)
                    .cloned()
                    .collect();
                for key in gone {
                    self.remove_consumer(&key, &mut effects);
                }
            }
            Command::Skipped { key, offsets } => {
                let mut group = None;
                if let Some(c) = self.consumers.get_mut(&key) {
                    for offset in offsets {
                        c.unacked.remove(&offset);
                    }
                    if c.active {
                        group = c.group.clone();
                    }
                }
                if let Some(group) = group {
                    self.commit_acked(&group, &mut effects);
                }
            }
        }
        self.deliveries(&mut effects);
        Ok(effects)
    }

    fn remove_consumer(&mut self, key: &ConsumerKey, effects: &mut Vec<Effect>) {
        let Some(gone) = self.consumers.remove(key) else {
            return;
        };
        if let Some(group) = gone.group {
            if let Some(g) = self.groups.get_mut(&group) {
                g.members.retain(|m| m != key);
                if g.members.is_empty() {
                    // Its offset went out with the Commit effects that moved it.
                    self.groups.remove(&group);
                    return;
                }
            }
            self.choose_active(&group, effects);
        }
    }

    /// Makes member `number mod n` of `group` its active one: a member that stops
    /// being active is told, one that starts goes on from the committed offset.
    fn choose_active(&mut self, group: &Arc<str>, effects: &mut Vec<Effect>) {
        let Some(g) = self.groups.get(group) else {
            return;
        };
        let chosen = (!g.members.is_empty())
            .then(|| g.members[(self.number % g.members.len() as u64) as usize].clone());
        let committed = g.committed;
        for member in g.members.clone() {
            let Some(c) = self.consumers.get_mut(&member) else {
                continue;
            };
            let active = Some(&member) == chosen.as_ref();
            if active && !c.active {
                c.active = true;
                c.next = committed;
                c.unacked.clear();
            } else if !active && c.active {
                c.active = false;
                c.unacked.clear();
                effects.push(Effect::Deactivated { key: member });
            }
        }
    }

    /// The active member of `group` acked: the group's offset is its first offset
    /// not acked.
    fn commit_acked(&mut self, group: &Arc<str>, effects: &mut Vec<Effect>) {
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        if g.commit != Commit::OnAck {
            return;
        }
        let active = g
            .members
            .iter()
            .filter_map(|m| self.consumers.get(m))
            .find(|c| c.active);
        if let Some(c) = active {
            let offset = c.unacked.first().copied().unwrap_or(c.next);
            if offset > g.committed {
                g.committed = offset;
                effects.push(Effect::Commit {
                    group: group.clone(),
                    offset,
                });
            }
        }
    }

    /// What every active consumer with credit can be sent now.
    fn deliveries(&mut self, effects: &mut Vec<Effect>) {
        let bounds = self.bounds;
        for (key, c) in self.consumers.iter_mut() {
            if !c.active {
                continue;
            }
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
            if let Some(g) = c.group.as_ref().and_then(|g| self.groups.get_mut(g)) {
                if g.commit == Commit::OnDelivery && c.next > g.committed {
                    g.committed = c.next;
                    effects.push(Effect::Commit {
                        group: c.group.clone().unwrap_or_else(|| Arc::from("")),
                        offset: c.next,
                    });
                }
            }
        }
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
            .filter_map(|e| match e {
                Effect::Deliver { key, offsets } => Some((key.clone(), offsets.clone())),
                _ => None,
            })
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
                join: None,
            })
            .unwrap();
        assert_eq!(delivered(&effects), [(key(1, "a"), 0..4)]);
        let effects = p
            .apply(Command::Settle {
                key: key(1, "a"),
                offsets: vec![1, 0],
            })
            .unwrap();
        assert_eq!(delivered(&effects), [(key(1, "a"), 4..6)]);
        // An offset settled twice, or by another consumer, gives nothing.
        let again = Command::Settle {
            key: key(1, "a"),
            offsets: vec![0],
        };
        assert!(p.apply(again).unwrap().is_empty());
        let other = Command::Settle {
            key: key(2, "a"),
            offsets: vec![2],
        };
        assert!(p.apply(other).unwrap().is_empty());
        assert_eq!(p.unacked(), 4);
    }

    #[test]
    fn two_consumers_of_one_channel_holding_one_offset_settle_their_own() {
        let mut p = Partition::default();
        p.apply(appended(5)).unwrap();
        for tag in ["a", "b"] {
            p.apply(Command::Consume {
                key: key(1, tag),
                start: 0,
                prefetch: 1,
                join: None,
            })
            .unwrap();
        }
        let effects = p
            .apply(Command::Settle {
                key: key(1, "b"),
                offsets: vec![0],
            })
            .unwrap();
        assert_eq!(delivered(&effects), [(key(1, "b"), 1..2)]);
        // a's offset 0 is still a's: cancelling a leaves b able to go on.
        p.apply(Command::Cancel { key: key(1, "a") }).unwrap();
        let effects = p
            .apply(Command::Settle {
                key: key(1, "b"),
                offsets: vec![1],
            })
            .unwrap();
        assert_eq!(delivered(&effects), [(key(1, "b"), 2..3)]);
    }

    #[test]
    fn a_consumer_at_the_end_gets_what_is_appended_and_retention_moves_it_on() {
        let mut p = Partition::default();
        p.apply(appended(5)).unwrap();
        p.apply(Command::Consume {
            key: key(1, "tail"),
            start: 5,
            prefetch: 100,
            join: None,
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
                join: None,
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
            join: None,
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
            join: None,
        };
        assert_eq!(p.apply(again), Err(Refused::TagInUse("a".into())));
        p.apply(Command::ChannelDown { channel: 1 }).unwrap();
        assert_eq!(p.consumers().count(), 0);
    }

    fn join(group: &str, stored: Option<u64>) -> Option<Join> {
        Some(Join {
            group: Arc::from(group),
            stored,
            commit: Commit::OnAck,
        })
    }

    #[test]
    fn a_group_has_one_active_member_per_partition_spread_by_partition_number() {
        // Partition 1 of its stream: of two members, the second (1 mod 2) is active.
        let mut p = Partition::new(LogBounds::default(), 1);
        p.apply(appended(10)).unwrap();
        let first = p
            .apply(Command::Consume {
                key: key(1, "a"),
                start: 0,
                prefetch: 5,
                join: join("billing", None),
            })
            .unwrap();
        assert_eq!(delivered(&first), [(key(1, "a"), 0..5)]);
        // b joins: it is member 1, so it takes over; a is told and gets nothing more.
        let effects = p
            .apply(Command::Consume {
                key: key(2, "b"),
                start: 7,
                prefetch: 5,
                join: join("billing", None),
            })
            .unwrap();
        assert_eq!(
            effects,
            vec![
                Effect::Deactivated { key: key(1, "a") },
                Effect::Deliver {
                    key: key(2, "b"),
                    offsets: 0..5
                },
            ]
        );
        // b acks 0..3: the group's offset moves to 3 and b gets three more.
        let effects = p
            .apply(Command::Settle {
                key: key(2, "b"),
                offsets: vec![0, 1, 2],
            })
            .unwrap();
        assert_eq!(
            effects,
            vec![
                Effect::Commit {
                    group: Arc::from("billing"),
                    offset: 3
                },
                Effect::Deliver {
                    key: key(2, "b"),
                    offsets: 5..8
                },
            ]
        );
        // b goes: a takes over from the committed offset (3..5 come again).
        let effects = p.apply(Command::ChannelDown { channel: 2 }).unwrap();
        assert_eq!(delivered(&effects), [(key(1, "a"), 3..8)]);
        // Acks from the member that was replaced settle nothing of the group's.
        assert!(p
            .apply(Command::Settle {
                key: key(2, "b"),
                offsets: vec![5]
            })
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_group_goes_on_from_its_stored_offset_and_commits_on_delivery_if_asked() {
        let mut p = Partition::default();
        p.apply(appended(20)).unwrap();
        let effects = p
            .apply(Command::Consume {
                key: key(1, "a"),
                start: 0,
                prefetch: 4,
                join: Some(Join {
                    group: Arc::from("audit"),
                    stored: Some(12),
                    commit: Commit::OnDelivery,
                }),
            })
            .unwrap();
        assert_eq!(
            effects,
            vec![
                Effect::Deliver {
                    key: key(1, "a"),
                    offsets: 12..16
                },
                Effect::Commit {
                    group: Arc::from("audit"),
                    offset: 16
                },
            ]
        );
        // A consumer outside the group reads on its own.
        let alone = p
            .apply(Command::Consume {
                key: key(2, "solo"),
                start: 0,
                prefetch: 2,
                join: None,
            })
            .unwrap();
        assert_eq!(delivered(&alone), [(key(2, "solo"), 0..2)]);
    }

    #[derive(Clone, Debug)]
    enum Step {
        Append(u8),
        Truncate(u8),
        Consume(u8, u8, u8, u8),
        Cancel(u8, u8),
        Ack(u8, u8),
        Skip(u8, u8),
        Down(u8),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (1..20u8).prop_map(Step::Append),
            1 => any::<u8>().prop_map(Step::Truncate),
            2 => (0..3u8, 0..3u8, any::<u8>(), 1..8u8).prop_map(|(c, t, s, p)| Step::Consume(c, t, s, p)),
            1 => (0..3u8, 0..3u8).prop_map(|(c, t)| Step::Cancel(c, t)),
            4 => (0..3u8, any::<u8>()).prop_map(|(c, n)| Step::Ack(c, n)),
            1 => (0..3u8, any::<u8>()).prop_map(|(c, n)| Step::Skip(c, n)),
            1 => (0..3u8).prop_map(Step::Down),
        ]
    }

    proptest! {
        /// After every step: no consumer holds more than its prefetch, every delivery
        /// is inside the log and goes to an active consumer, a consumer outside a group
        /// is sent increasing offsets (never one twice), a group has exactly one
        /// active member while it has members, its offset (as stored from its Commit
        /// effects, as the shell does) never goes back, and a group that commits on
        /// ack never commits past its active member's first unacked offset.
        #[test]
        fn credit_bounds_and_order_hold_after_every_step(
            steps in prop::collection::vec(step(), 1..200),
            number in 0..4u64,
        ) {
            let mut p = Partition::new(LogBounds::default(), number);
            let mut last_sent: BTreeMap<ConsumerKey, u64> = BTreeMap::new();
            // The groups' offsets as the shell would have stored them.
            let mut stored: BTreeMap<Arc<str>, u64> = BTreeMap::new();
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
                        // Some consumers join one of two groups (with a stored offset
                        // or not; committing on ack or on delivery).
                        join: (s % 3 != 0).then(|| {
                            let group: Arc<str> = Arc::from(if s % 3 == 1 { "g1" } else { "g2" });
                            Join {
                                stored: stored.get(&group).copied(),
                                group,
                                commit: if s % 2 == 0 { Commit::OnAck } else { Commit::OnDelivery },
                            }
                        }),
                    },
                    Step::Cancel(c, t) => {
                        let k = key(c.into(), &t.to_string());
                        last_sent.remove(&k);
                        Command::Cancel { key: k }
                    }
                    Step::Ack(c, n) => {
                        // Some of the unacked offsets of one consumer of channel c.
                        let Some((k, held)) = p
                            .consumers()
                            .filter(|((ch, _), _)| *ch == u64::from(c))
                            .nth(usize::from(n % 2))
                            .map(|(k, c)| (k.clone(), c.unacked.clone()))
                        else {
                            continue;
                        };
                        let offsets = held.into_iter().take(usize::from(n % 5) + 1).collect();
                        Command::Settle { key: k, offsets }
                    }
                    Step::Skip(c, n) => {
                        // The shell passes over a consumer's first unacked offset.
                        let Some((k, first)) = p
                            .consumers()
                            .filter(|((ch, _), _)| *ch == u64::from(c))
                            .find_map(|(k, c)| c.unacked.first().map(|o| (k.clone(), *o)))
                        else {
                            continue;
                        };
                        Command::Skipped { key: k, offsets: first..first + u64::from(n % 2) + 1 }
                    }
                    Step::Down(c) => {
                        last_sent.retain(|(ch, _), _| *ch != u64::from(c));
                        Command::ChannelDown { channel: c.into() }
                    }
                };
                let bounds_before = *p.bounds();
                let committed_before: BTreeMap<Arc<str>, u64> =
                    p.groups().map(|(g, s)| (g.clone(), s.committed)).collect();
                let Ok(effects) = p.apply(command) else { continue };
                for effect in &effects {
                    match effect {
                        // What it was sent is forgotten: a later turn starts afresh.
                        Effect::Deactivated { key } => {
                            last_sent.remove(key);
                        }
                        Effect::Commit { group, offset } => {
                            let before = stored.insert(group.clone(), *offset);
                            prop_assert!(before.is_none_or(|b| *offset > b), "{group} went back");
                        }
                        Effect::Deliver { .. } => {}
                    }
                }
                // A group's offset never goes back, and it has at most one active
                // member, which only an active consumer is.
                for (g, state) in p.groups() {
                    if let Some(before) = committed_before.get(g) {
                        prop_assert!(state.committed >= *before, "{g} went back");
                    }
                    let active = state
                        .members
                        .iter()
                        .filter(|m| p.consumers().any(|(k, c)| k == *m && c.active))
                        .count();
                    prop_assert!(active == usize::from(!state.members.is_empty()), "{g}: {active} active");
                    if state.commit == Commit::OnAck {
                        let first_unacked = state
                            .members
                            .iter()
                            .filter_map(|m| p.consumers().find(|(k, c)| k == &m && c.active))
                            .find_map(|(_, c)| c.unacked.first().copied());
                        if let Some(first) = first_unacked {
                            prop_assert!(state.committed <= first, "{g} committed past {first}");
                        }
                    }
                }
                for effect in effects {
                    let Effect::Deliver { key, offsets } = effect else { continue };
                    prop_assert!(p.consumers().any(|(k, c)| *k == key && c.active));
                    prop_assert!(!offsets.is_empty());
                    prop_assert!(offsets.end <= p.bounds().next);
                    prop_assert!(offsets.start >= p.bounds().first.min(bounds_before.first));
                    let grouped = p.consumers().any(|(k, c)| *k == key && c.group.is_some());
                    if let (Some(last), false) = (last_sent.get(&key), grouped) {
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
