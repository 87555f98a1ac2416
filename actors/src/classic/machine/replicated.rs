//! [`ReplicatedQueue`]: a replica's copy of a replicated queue — the core, fed the ops
//! its leader applied, in log order, and the bodies of the messages it holds (the log
//! is where they are stored). And [`QueueState::led`]: the state a new leader serves
//! from, made of that copy.
//!
//! The leader runs the whole queue ([`QueueState`], core and local part) and logs
//! every op its core applies ([`QueueState::log_ops`]); every replica applies the
//! committed ones here. The core is deterministic, so every replica's copy equals the
//! leader's core as of the last committed op, whatever each node holds in memory.

use serde::{Deserialize, Serialize};

use crate::message::{Message, SharedMessage};

use super::command::Seq;
use super::config::QueueConfig;
use super::core::{Core, CoreImage, Op, Out};
use super::entry::{Body, Held, Place, Storage};
use super::fasthash::IntMap;
use super::state::QueueState;

/// A replica's copy of a replicated queue (see the module documentation).
#[derive(Clone, Debug)]
pub struct ReplicatedQueue {
    core: Core,
    bodies: IntMap<Seq, SharedMessage>,
    /// The core's decisions of one op (dropped: the leader carries them out).
    outs: Vec<Out>,
}

/// A [`ReplicatedQueue`] as a whole, for a snapshot of the queue's log.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReplicatedImage {
    core: CoreImage,
    bodies: Vec<(Seq, Message)>,
}

impl ReplicatedQueue {
    /// A new, empty queue, declared at `now`.
    pub fn new(config: QueueConfig, now: u64) -> ReplicatedQueue {
        ReplicatedQueue {
            core: Core::new(config, now),
            bodies: IntMap::default(),
            outs: Vec::new(),
        }
    }

    /// Applies one logged op with the leader's time. An op the core refuses changed
    /// nothing on the leader either.
    pub fn apply(&mut self, op: Op, now: u64) {
        let enqueued = match &op {
            Op::Enqueue { message } => Some(message.clone()),
            _ => None,
        };
        let mut outs = std::mem::take(&mut self.outs);
        let _ = self.core.apply(op, now, &mut outs);
        for out in outs.drain(..) {
            match out {
                Out::Enqueued { seq } => {
                    if let Some(message) = enqueued.clone() {
                        self.bodies.insert(seq, message);
                    }
                }
                Out::Left { seq } => {
                    self.bodies.remove(&seq);
                }
                _ => {}
            }
        }
        self.outs = outs;
    }

    /// The bodies of `seqs` it holds, and the seqs it does not hold.
    pub fn bodies(&self, seqs: &[Seq]) -> (Vec<(Seq, SharedMessage)>, Vec<Seq>) {
        let mut found = Vec::with_capacity(seqs.len());
        let mut missing = Vec::new();
        for &seq in seqs {
            match self.bodies.get(&seq) {
                Some(m) => found.push((seq, m.clone())),
                None => missing.push(seq),
            }
        }
        (found, missing)
    }

    /// Messages in the queue (ready, out to a channel, or leaving).
    pub fn len(&self) -> usize {
        self.bodies.len()
    }

    /// Whether it holds no message.
    pub fn is_empty(&self) -> bool {
        self.bodies.is_empty()
    }

    /// Everything the core holds, in a form two copies can be compared by.
    pub fn fingerprint(&self) -> String {
        self.core.fingerprint()
    }

    /// The whole copy, for a snapshot.
    pub fn image(&self) -> ReplicatedImage {
        let mut bodies: Vec<(Seq, Message)> = self
            .bodies
            .iter()
            .map(|(s, m)| (*s, Message::clone(m)))
            .collect();
        bodies.sort_unstable_by_key(|(s, _)| *s);
        ReplicatedImage {
            core: self.core.image(),
            bodies,
        }
    }

    /// The copy an [`image`](Self::image) describes, under `config` (the queue's
    /// declaration, which every replica has).
    pub fn from_image(config: QueueConfig, image: ReplicatedImage) -> Result<Self, String> {
        Ok(ReplicatedQueue {
            core: Core::from_image(config, image.core)?,
            bodies: image
                .bodies
                .into_iter()
                .map(|(s, m)| (s, SharedMessage::new(m)))
                .collect(),
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
    use crate::message::Message;

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
        for (op, at) in leader.take_logged() {
            replica.apply(op, at);
        }
        assert_eq!(replica.fingerprint(), leader.core().fingerprint());
        assert_eq!(replica.len(), 18, "two acked, the rest held");
        let (found, missing) = replica.bodies(&[1, 4, 20]);
        assert_eq!(missing, vec![1]);
        assert_eq!(found.len(), 2);

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
            replica.apply(op, at);
        }
        assert_eq!(replica.fingerprint(), next.core().fingerprint());
        next.check_invariants().unwrap();
    }
}
