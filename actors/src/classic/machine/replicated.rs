//! [`ReplicatedQueue`]: a replica's copy of a replicated queue — the core, fed the ops
//! its leader applied, in log order, and where the body of each message it holds is
//! stored (the log entry that enqueued it: bodies are stored once, in the log). And
//! [`QueueState::led`]: the state a new leader serves from, made of that copy.
//!
//! The leader runs the whole queue ([`QueueState`], core and local part) and logs
//! every op its core applies ([`QueueState::log_ops`]); every replica applies the
//! committed ones here. The core is deterministic, so every replica's copy equals the
//! leader's core as of the last committed op, whatever each node holds in memory.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::command::Seq;
use super::config::QueueConfig;
use super::core::{Core, CoreImage, Op, Out};
use super::entry::{Body, Held, Place, Storage};
use super::state::QueueState;

/// Where a message's body is stored: the log entry that enqueued it, and the op's
/// place in the entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Locator {
    /// The log entry's index.
    pub index: u64,
    /// The op's place among the entry's ops.
    pub op: u32,
}

/// A replica's copy of a replicated queue (see the module documentation).
#[derive(Clone, Debug)]
pub struct ReplicatedQueue {
    core: Core,
    /// Where the body of each message in the queue is stored, by seq. Seqs grow in
    /// log order (a new leader's continue past its predecessor's), so the first is
    /// the oldest entry still needed.
    stored: BTreeMap<Seq, Locator>,
    /// The core's decisions of one op (dropped: the leader carries them out).
    outs: Vec<Out>,
}

/// A [`ReplicatedQueue`] as a whole, for a snapshot of the queue's log (no bodies:
/// they stay in the log entries it names).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReplicatedImage {
    core: CoreImage,
    stored: Vec<(Seq, Locator)>,
}

impl ReplicatedQueue {
    /// A new, empty queue, declared at `now`.
    pub fn new(config: QueueConfig, now: u64) -> ReplicatedQueue {
        ReplicatedQueue {
            core: Core::new(config, now),
            stored: BTreeMap::new(),
            outs: Vec::new(),
        }
    }

    /// Applies one logged op with the leader's time; `at` is where the op is in the
    /// log. An op the core refuses changed nothing on the leader either.
    pub fn apply(&mut self, op: Op, now: u64, at: Locator) {
        let mut outs = std::mem::take(&mut self.outs);
        let _ = self.core.apply(op, now, &mut outs);
        for out in outs.drain(..) {
            match out {
                Out::Enqueued { seq } => {
                    self.stored.insert(seq, at);
                }
                Out::Left { seq } => {
                    self.stored.remove(&seq);
                }
                _ => {}
            }
        }
        self.outs = outs;
    }

    /// Where the bodies of `seqs` are stored, and the seqs it does not hold.
    pub fn locate(&self, seqs: &[Seq]) -> (Vec<(Seq, Locator)>, Vec<Seq>) {
        let mut found = Vec::with_capacity(seqs.len());
        let mut missing = Vec::new();
        for &seq in seqs {
            match self.stored.get(&seq) {
                Some(at) => found.push((seq, *at)),
                None => missing.push(seq),
            }
        }
        (found, missing)
    }

    /// The first log entry a message in the queue is stored in: the log is needed
    /// from there on. None when the queue is empty.
    pub fn needed_from(&self) -> Option<u64> {
        self.stored.first_key_value().map(|(_, at)| at.index)
    }

    /// Messages in the queue (ready, out to a channel, or leaving).
    pub fn len(&self) -> usize {
        self.stored.len()
    }

    /// Whether it holds no message.
    pub fn is_empty(&self) -> bool {
        self.stored.is_empty()
    }

    /// Everything the core holds, in a form two copies can be compared by.
    pub fn fingerprint(&self) -> String {
        self.core.fingerprint()
    }

    /// The whole copy, for a snapshot.
    pub fn image(&self) -> ReplicatedImage {
        ReplicatedImage {
            core: self.core.image(),
            stored: self.stored.iter().map(|(s, at)| (*s, *at)).collect(),
        }
    }

    /// The copy an [`image`](Self::image) describes, under `config` (the queue's
    /// declaration, which every replica has).
    pub fn from_image(config: QueueConfig, image: ReplicatedImage) -> Result<Self, String> {
        Ok(ReplicatedQueue {
            core: Core::from_image(config, image.core)?,
            stored: image.stored.into_iter().collect(),
            outs: Vec::new(),
        })
    }
}

/// How far a new leader's seqs jump past the last committed one: more than a leader
/// can hand out before its appends fail (2^32 messages; a u64 has room for 2^32
/// leader changes).
const SEQS_SKIPPED: Seq = 1 << 32;

impl QueueState {
    /// The state a new leader serves from, at `now`: the replica's core, every
    /// channel of the leader before closed (its consumers are gone with it, and what
    /// it held returns to the queue, redelivered; consumers attach again), every body
    /// in the log (loaded when delivered). The ops it took are logged, first of the new
    /// leader's.
    pub fn led(replica: &ReplicatedQueue, now: u64) -> QueueState {
        let mut state = QueueState::new(replica.core.config().clone(), now);
        state.log_ops();
        let mut core = replica.core.clone();
        let mut channels: Vec<u64> = core.channels().collect();
        channels.sort_unstable();
        channels.dedup();
        let mut outs = Vec::new();
        for channel in channels {
            let op = Op::ChannelDown {
                channel,
                unsent: Vec::new(),
            };
            state.logged_push(op.clone(), now);
            let _ = core.apply(op, now, &mut outs);
            outs.clear();
        }
        // Past every seq the leader before may have handed out without committing it.
        let skip = Op::Continue {
            from: core.next_seq().saturating_add(SEQS_SKIPPED),
        };
        state.logged_push(skip.clone(), now);
        let _ = core.apply(skip, now, &mut outs);
        let mut leaving = Vec::new();
        for (seq, record) in core.records_by_seq() {
            let held = match record.place {
                Place::Ready => Held::Ready,
                Place::Unacked { .. } => Held::Out,
                Place::DeadLettering(reason) => {
                    leaving.push(seq);
                    Held::Leaving(reason)
                }
            };
            state.local_mut().insert(
                seq,
                Body {
                    message: None,
                    size: record.size,
                    priority: record.priority,
                    held,
                    storage: Storage::Stored,
                    loading: false,
                    page_out: false,
                    awaited: false,
                },
            );
        }
        state.local_mut().dead_letters_to_load(leaving);
        state.set_core(core);
        state
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::classic::machine::{Command, Effect};
    use crate::message::{Message, SharedMessage};

    fn message(i: u32) -> SharedMessage {
        Arc::new(Message::new("", "q", Bytes::from(format!("m{i}"))))
    }

    /// A replica fed the leader's logged ops holds the leader's core and the bodies of
    /// what is in the queue; a new leader made from it returns what was out to a
    /// channel, and its first ops say so.
    #[test]
    fn a_replica_fed_the_logged_ops_equals_the_leader_and_a_new_leader_starts_from_it() {
        let mut config = QueueConfig::new("q", "/");
        config.durable = true;
        config.write_all = true;
        let mut leader = QueueState::new(config.clone(), 1_000);
        leader.log_ops();
        let mut replica = ReplicatedQueue::new(config.clone(), 1_000);
        let mut effects: Vec<Effect> = Vec::new();
        let mut now = 1_000;
        let mut step = |leader: &mut QueueState, command: Command, now: u64| {
            let _ = leader.apply(command, now, &mut effects);
            effects.clear();
        };
        for i in 0..20 {
            now += 1;
            let message = message(i);
            step(
                &mut leader,
                Command::Enqueue {
                    message,
                    confirm: None,
                },
                now,
            );
        }
        step(&mut leader, Command::Stored((1..=20).collect()), now);
        step(
            &mut leader,
            Command::Consume {
                tag: "c".into(),
                channel: 7,
                prefetch: 5,
                no_ack: false,
                exclusive: false,
                priority: 0,
            },
            now,
        );
        step(
            &mut leader,
            Command::Ack {
                channel: 7,
                seqs: vec![1, 2],
            },
            now + 1,
        );
        step(
            &mut leader,
            Command::Reject {
                channel: 7,
                seqs: vec![3],
                requeue: true,
            },
            now + 2,
        );
        for (i, (op, at)) in leader.take_logged().into_iter().enumerate() {
            replica.apply(
                op,
                at,
                Locator {
                    index: 10,
                    op: i as u32,
                },
            );
        }
        assert_eq!(replica.fingerprint(), leader.core().fingerprint());
        assert_eq!(replica.len(), 18, "two acked, the rest held");
        let (found, missing) = replica.locate(&[1, 4, 20]);
        assert_eq!(missing, vec![1]);
        assert_eq!(
            found,
            [
                (4, Locator { index: 10, op: 3 }),
                (20, Locator { index: 10, op: 19 })
            ],
            "the ops that enqueued them"
        );
        assert_eq!(replica.needed_from(), Some(10));

        // A snapshot of the copy is the copy.
        let restored = ReplicatedQueue::from_image(config.clone(), replica.image()).unwrap();
        assert_eq!(restored.fingerprint(), replica.fingerprint());

        // The new leader: channel 7 is gone, its five messages are ready again.
        let mut next = QueueState::led(&replica, now + 3);
        assert_eq!(next.message_count(), 18);
        assert_eq!(next.consumer_count(), 0);
        let first = next.take_logged();
        assert!(matches!(
            first.as_slice(),
            [(Op::ChannelDown { channel: 7, .. }, _), (Op::Continue { from }, _)]
                if *from == 21 + SEQS_SKIPPED
        ));
        assert_eq!(next.next_seq(), 21 + SEQS_SKIPPED);
        for (op, at) in first {
            replica.apply(op, at, Locator { index: 11, op: 0 });
        }
        assert_eq!(replica.fingerprint(), next.core().fingerprint());
        next.check_invariants().unwrap();
    }
}
