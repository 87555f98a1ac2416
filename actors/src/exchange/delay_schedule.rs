//! [`Schedule`]: when the messages a delayed exchange holds go, as a pure machine.
//!
//! The messages themselves stay in the node's store, keyed by (due, seq), so that the
//! next ones due are the first keys after a cursor and memory does not grow with how
//! many wait. The machine keeps only:
//! - the cursor: every stored key at or before it was handed out to be routed;
//! - the first key after the cursor, when known (the timer's target);
//! - the keys submitted to the store whose commit the exchange has not heard of yet.
//!
//! The last are what makes it exact. A store commit becomes visible to reads before
//! the exchange hears that it committed, so a read may meet a message whose commit
//! news is still on its way. A read skips such keys ([`Schedule::read`]), and the
//! news of their commit ([`Schedule::stored`]) hands out those the cursor has passed
//! meanwhile: every stored message is handed out once, and never before it is due.
//! (A restart hands out again what was handed out but not yet deleted: delivery is
//! at least once.)

use std::collections::BTreeSet;

/// A held message's key in the store: (due in ms since the Unix epoch, seq).
pub type Key = (u64, u64);

/// What the exchange should do next (see [`Schedule::next`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Read the store for messages after `after` due by `now` ([`Schedule::read`]).
    Read {
        /// The cursor: read keys after it.
        after: Option<Key>,
    },
    /// Nothing is due before this time (ms since the Unix epoch): wake then.
    WakeAt(u64),
    /// Nothing is held.
    Idle,
}

/// The first stored key after the cursor, as far as the machine knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum First {
    /// Not known: the store must be read.
    Unknown,
    /// This one, or none.
    Known(Option<Key>),
}

/// The schedule of one delayed exchange's held messages (see the module docs).
#[derive(Clone, Debug)]
pub struct Schedule {
    cursor: Option<Key>,
    first: First,
    /// Submitted to the store; the exchange has not heard whether they committed.
    committing: BTreeSet<Key>,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::new()
    }
}

impl Schedule {
    /// The schedule of an exchange that just started: what its store holds is not
    /// known yet.
    pub fn new() -> Self {
        Schedule {
            cursor: None,
            first: First::Unknown,
            committing: BTreeSet::new(),
        }
    }

    /// A message under `key` was submitted to the store.
    pub fn submitted(&mut self, key: Key) {
        self.committing.insert(key);
    }

    /// The message under `key` did not reach the store (its publisher hears so).
    pub fn failed(&mut self, key: Key) {
        self.committing.remove(&key);
    }

    /// The message under `key` is in the store. `true`: route it now (reads went past
    /// its key while it was committing, so it is due); otherwise it waits its turn.
    pub fn stored(&mut self, key: Key) -> bool {
        self.committing.remove(&key);
        if self.cursor.is_some_and(|cursor| key <= cursor) {
            return true;
        }
        if let First::Known(first) = &mut self.first {
            if first.is_none_or(|first| key < first) {
                *first = Some(key);
            }
        }
        false
    }

    /// What to do at `now` (ms since the Unix epoch).
    pub fn next(&self, now: u64) -> Next {
        match self.first {
            First::Unknown => Next::Read { after: self.cursor },
            First::Known(Some((due, _))) if due <= now => Next::Read { after: self.cursor },
            First::Known(Some((due, _))) => Next::WakeAt(due),
            First::Known(None) => Next::Idle,
        }
    }

    /// The store answered a [`Next::Read`]: `read` are the keys after the cursor due
    /// by then, in order; `full` when a limit cut the read short; `following` the
    /// first key after the last one read (asked when not `full`). Returns the keys
    /// to route now: those read, less those still committing (their commit's news
    /// hands them out).
    pub fn read(&mut self, read: &[Key], full: bool, following: Option<Key>) -> Vec<Key> {
        if let Some(last) = read.last() {
            self.cursor = Some(*last);
        }
        self.first = if full {
            First::Unknown
        } else {
            First::Known(following)
        };
        read.iter()
            .copied()
            .filter(|key| !self.committing.contains(key))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, VecDeque};

    /// One step of a run: what the outside world does between the machine's steps.
    #[derive(Clone, Debug)]
    enum Step {
        /// A publish with this delay (submitted now).
        Publish(u64),
        /// The store commits the oldest submitted message (visible to reads from now).
        Commit,
        /// The exchange hears of the oldest commit it has not heard of.
        Hear,
        /// Time passes.
        Advance(u64),
        /// The exchange acts on [`Schedule::next`].
        Act,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u64..50).prop_map(Step::Publish),
            Just(Step::Commit),
            Just(Step::Hear),
            (0u64..30).prop_map(Step::Advance),
            Just(Step::Act),
        ]
    }

    /// The model: a store, the time, and what was routed when.
    struct World {
        now: u64,
        seq: u64,
        submitted: VecDeque<Key>,
        committed: VecDeque<Key>,
        store: BTreeMap<Key, ()>,
        routed: BTreeMap<Key, u64>,
        limit: usize,
    }

    impl World {
        fn route(&mut self, key: Key) {
            assert!(
                key.0 <= self.now,
                "{key:?} routed at {} before it was due",
                self.now
            );
            assert!(
                self.store.contains_key(&key),
                "{key:?} routed before it was stored"
            );
            let again = self.routed.insert(key, self.now);
            assert!(again.is_none(), "{key:?} routed twice");
        }

        fn act(&mut self, schedule: &mut Schedule) {
            // As the actor does: act until there is nothing to do now.
            while let Next::Read { after } = schedule.next(self.now) {
                let read: Vec<Key> = self
                    .store
                    .keys()
                    .filter(|k| after.is_none_or(|a| **k > a) && k.0 <= self.now)
                    .take(self.limit)
                    .copied()
                    .collect();
                let full = read.len() == self.limit;
                let from = read.last().copied().or(after);
                let following = self
                    .store
                    .keys()
                    .find(|k| from.is_none_or(|f| **k > f))
                    .copied();
                for key in schedule.read(&read, full, following) {
                    self.route(key);
                }
            }
        }

        fn step(&mut self, schedule: &mut Schedule, step: &Step) {
            match step {
                Step::Publish(delay) => {
                    self.seq += 1;
                    let key = (self.now + delay + 1, self.seq);
                    schedule.submitted(key);
                    self.submitted.push_back(key);
                }
                Step::Commit => {
                    if let Some(key) = self.submitted.pop_front() {
                        self.store.insert(key, ());
                        self.committed.push_back(key);
                    }
                }
                Step::Hear => {
                    if let Some(key) = self.committed.pop_front() {
                        if schedule.stored(key) {
                            self.route(key);
                        }
                    }
                }
                Step::Advance(ms) => self.now += ms,
                Step::Act => self.act(schedule),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Every stored message is routed once, never before it is due, and by the
        /// time the world settles, all of them are.
        #[test]
        fn every_message_is_routed_once_when_due(
            steps in proptest::collection::vec(step(), 0..120),
            limit in 1usize..5,
        ) {
            let mut schedule = Schedule::new();
            let mut world = World {
                now: 1_000,
                seq: 0,
                submitted: VecDeque::new(),
                committed: VecDeque::new(),
                store: BTreeMap::new(),
                routed: BTreeMap::new(),
                limit,
            };
            for s in &steps {
                world.step(&mut schedule, s);
            }
            // Settle: every commit lands and is heard, and time runs out.
            while !world.submitted.is_empty() || !world.committed.is_empty() {
                world.step(&mut schedule, &Step::Commit);
                world.step(&mut schedule, &Step::Hear);
            }
            world.now += 1_000;
            world.act(&mut schedule);
            let stored: Vec<Key> = world.store.keys().copied().collect();
            let routed: Vec<Key> = world.routed.keys().copied().collect();
            prop_assert_eq!(stored, routed);
            prop_assert_eq!(schedule.next(world.now), Next::Idle);
        }
    }

    #[test]
    fn a_message_heard_of_after_the_cursor_passed_it_goes_at_once() {
        let mut schedule = Schedule::new();
        schedule.submitted((10, 1));
        // The store already shows it, and a later one.
        assert_eq!(schedule.next(20), Next::Read { after: None });
        assert_eq!(schedule.read(&[(10, 1), (15, 2)], false, None), [(15, 2)]);
        assert!(schedule.stored((10, 1)));
        assert_eq!(schedule.next(20), Next::Idle);
        schedule.submitted((40, 3));
        assert!(!schedule.stored((40, 3)));
        assert_eq!(schedule.next(20), Next::WakeAt(40));
    }
}
