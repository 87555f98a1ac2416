//! [`Core`]: the queue's replicated part — what every replica of the queue would have
//! to agree on, applied deterministically from [`Op`]s in log order.
//!
//! The core holds each message's record (size, priority, expiry, delivery count,
//! flags) and place (ready, out to a channel, leaving for its dead-letter exchange),
//! the ready order, the consumers with their credit, and the queue's own life (its
//! expiry, auto-delete, deletion). It decides everything that decides where a message
//! goes: which consumer gets the next message, what expires, what the length limit
//! drops, what a requeue or a closed channel returns, what is dead-lettered. It never
//! sees where a body is (memory, page file, redb): that is [`Local`](super::local)'s,
//! so two replicas that hold bodies differently still reach the same core from the
//! same ops. No clock, no randomness, no I/O: time comes with each op.
//!
//! What it decides comes out as [`Out`]s, which the local part turns into effects.
//! Every change of a record goes through [`Core::modify`], [`Core::insert`] or
//! [`Core::take`], which keep the indexes derived from the records (ready set, expiry
//! index, unacked per channel, consumer credit, counters) in step.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::message::SharedMessage;

use super::command::{ChannelId, ConsumerTag, Reply, Seq};
use super::config::{Overflow, QueueConfig};
use super::consumers::{ConsumerId, Consumers, Refusal};
use super::effects::{DeadLetterReason, DeleteReason};
use super::entry::{IndexRecord, Place, Record};
use super::errors::QueueError;
use super::fasthash::{IntMap, IntSet};
use super::ready::ReadySet;
use super::seqmap::SeqMap;

/// The version of the core's ops and their meaning. A log of ops written by a Warren
/// whose version is at most this one replays here; one written by a newer one is
/// refused (see `Core::replay`). Version 2 added [`Op::Continue`].
pub const MACHINE_VERSION: u32 = 2;

/// One replicated command: what a replicated queue would append to its log (with the
/// time it was taken at). The local part makes them from the shell's commands, adding
/// what only it knows (which assignments never left this node).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// A message routed to the queue.
    Enqueue {
        /// The message, shared with the other queues it was routed to.
        message: SharedMessage,
    },
    /// `basic.consume`.
    Consume {
        /// The consumer's tag, unique on its channel.
        tag: ConsumerTag,
        /// The channel the deliveries go to.
        channel: ChannelId,
        /// Unacked deliveries the consumer may hold at once; 0 means unlimited.
        prefetch: u32,
        /// Deliveries are settled as they go out.
        no_ack: bool,
        /// The consumer wants the queue to itself.
        exclusive: bool,
        /// The consumer's `x-priority` (higher gets messages first).
        priority: i32,
    },
    /// `basic.cancel`; `unsent` are the consumer's assignments that never reached its
    /// channel, which return to the queue as if never taken.
    Cancel {
        /// The consumer's channel.
        channel: ChannelId,
        /// The consumer's tag on that channel.
        tag: ConsumerTag,
        /// Assignments that never reached the channel.
        unsent: Vec<Seq>,
    },
    /// The channel closed; `unsent` as for `Cancel`.
    ChannelDown {
        /// The channel that closed.
        channel: ChannelId,
        /// Assignments that never reached the channel.
        unsent: Vec<Seq>,
    },
    /// `basic.ack`.
    Ack {
        /// The channel that holds the messages.
        channel: ChannelId,
        /// The acked messages.
        seqs: Vec<Seq>,
    },
    /// `basic.reject` / `basic.nack`.
    Reject {
        /// The channel that holds the messages.
        channel: ChannelId,
        /// The rejected messages.
        seqs: Vec<Seq>,
        /// Back to the queue; otherwise dead-lettered or dropped.
        requeue: bool,
    },
    /// `basic.get`.
    Get {
        /// The channel that asked.
        channel: ChannelId,
        /// The message is settled as it goes out.
        no_ack: bool,
    },
    /// `queue.purge`.
    Purge,
    /// `queue.delete`.
    Delete {
        /// Refuse (406) while the queue has consumers.
        if_unused: bool,
        /// Refuse (406) while the queue has ready messages.
        if_empty: bool,
    },
    /// A redeclaration: restarts the `x-expires` timer.
    Touch,
    /// Time passed.
    Tick,
    /// No-ack deliveries went out: they are settled.
    Sent {
        /// The no-ack deliveries that went out.
        seqs: Vec<Seq>,
    },
    /// Dead-lettered messages are held by their targets: they leave.
    DeadLettered {
        /// The messages every target holds.
        seqs: Vec<Seq>,
    },
    /// Their bodies are lost (a storage fault): they are dropped.
    Lost {
        /// The messages whose bodies storage does not have.
        seqs: Vec<Seq>,
    },
    /// Seqs continue from `from` at least (a replicated queue's new leader: its
    /// predecessor may have handed out seqs it never committed, which channels may
    /// still settle). Since version 2.
    Continue {
        /// The next seq, at least.
        from: Seq,
    },
    /// The next consumer registered as `tag` on `channel` gets a write window (see
    /// `Consumers::window_next`). Local to a classic queue: a replicated queue
    /// neither logs nor applies it.
    Window {
        /// The consumer's channel.
        channel: ChannelId,
        /// The consumer's tag on that channel.
        tag: ConsumerTag,
        /// Deliveries not yet written towards the client it may have at once.
        limit: u32,
    },
    /// A windowed consumer's channel wrote `count` of its deliveries towards the
    /// client. Local, as `Window` is.
    Written {
        /// The consumer's channel.
        channel: ChannelId,
        /// The consumer's tag on that channel.
        tag: ConsumerTag,
        /// How many were written.
        count: u32,
    },
}

/// What the core decided, for the local part to carry out, in order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Out {
    /// The op's message is in the queue, ready, under `seq`.
    Enqueued { seq: Seq },
    /// The message goes to `channel`: to consumer `tag`, or to a `basic.get` (`tag`
    /// `None`).
    Checkout {
        seq: Seq,
        channel: ChannelId,
        tag: Option<ConsumerTag>,
        no_ack: bool,
        redelivered: bool,
        delivery_count: u32,
    },
    /// A `basic.get` found nothing.
    GetEmpty { channel: ChannelId },
    /// The message is ready again; `recounted` when its stored delivery count changed.
    Returned { seq: Seq, recounted: bool },
    /// The message left the queue (settled, purged, dropped, expired, lost).
    Left { seq: Seq },
    /// The message leaves for the dead-letter exchange; it stays until `DeadLettered`.
    DeadLetter { seq: Seq, reason: DeadLetterReason },
    /// A publish refused at the door (`reject-publish-dlx`) is dead-lettered.
    DeadLetterRefused {
        message: SharedMessage,
        reason: DeadLetterReason,
    },
    /// A single-active-consumer queue made this consumer the active one.
    ConsumerActive {
        channel: ChannelId,
        tag: ConsumerTag,
    },
    /// The queue deletes itself.
    DeleteQueue { reason: DeleteReason },
}

/// Which indexes a record belongs to; derived from its fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Membership {
    ready: bool,
    expiry: Option<u64>,
    unacked: Option<(ChannelId, Option<ConsumerId>)>,
}

impl Membership {
    fn of(r: &Record) -> Self {
        Membership {
            ready: r.is_ready(),
            expiry: if r.is_ready() { r.expires_at } else { None },
            unacked: match r.place {
                Place::Unacked {
                    channel, consumer, ..
                } => Some((channel, consumer)),
                _ => None,
            },
        }
    }

    const NONE: Membership = Membership {
        ready: false,
        expiry: None,
        unacked: None,
    };
}

/// Running totals over the records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CoreTally {
    pub ready: u64,
    pub ready_bytes: u64,
    pub unacked: u64,
    pub unacked_bytes: u64,
    pub dead_lettering: u64,
}

impl CoreTally {
    /// Adds (`sign` 1) or subtracts (`sign` -1) a record's contribution: one place
    /// counts, so one pair of counters changes.
    fn apply(&mut self, r: &Record, sign: i64) {
        let (count, bytes) = match r.place {
            Place::Ready => (&mut self.ready, Some(&mut self.ready_bytes)),
            Place::Unacked { .. } => (&mut self.unacked, Some(&mut self.unacked_bytes)),
            Place::DeadLettering(_) => (&mut self.dead_lettering, None),
        };
        *count = count.wrapping_add_signed(sign);
        if let Some(bytes) = bytes {
            *bytes = bytes.wrapping_add_signed(sign.wrapping_mul(r.size as i64));
        }
    }
}

/// The indexes over the records.
#[derive(Clone, Debug)]
struct Indexes {
    /// Ready records in delivery order.
    ready: ReadySet,
    /// Ready records with a TTL, by deadline.
    expiry: BTreeSet<(u64, Seq)>,
    /// Unacked records per channel.
    unacked: IntMap<ChannelId, IntSet<Seq>>,
    tally: CoreTally,
}

impl Indexes {
    /// Moves `seq` from the indexes of `old` to those of `new`.
    fn update(
        &mut self,
        seq: Seq,
        priority: u8,
        old: Membership,
        new: Membership,
        consumers: &mut Consumers,
    ) {
        if old.ready != new.ready {
            if old.ready {
                self.ready.remove(seq, priority);
            } else {
                self.ready.insert(seq, priority);
            }
        }
        if old.expiry != new.expiry {
            if let Some(at) = old.expiry {
                self.expiry.remove(&(at, seq));
            }
            if let Some(at) = new.expiry {
                self.expiry.insert((at, seq));
            }
        }
        if old.unacked != new.unacked {
            if let Some((channel, consumer)) = old.unacked {
                if let Some(set) = self.unacked.get_mut(&channel) {
                    set.remove(&seq);
                    if set.is_empty() {
                        self.unacked.remove(&channel);
                    }
                }
                if let Some(c) = consumer {
                    consumers.release(c);
                }
            }
            if let Some((channel, consumer)) = new.unacked {
                self.unacked.entry(channel).or_default().insert(seq);
                if let Some(c) = consumer {
                    consumers.charge(c);
                }
            }
        }
    }
}

/// A core as a whole (see [`Core::image`]): what a snapshot of a replicated queue
/// carries, besides its declaration.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct CoreImage {
    version: u32,
    /// The records, by seq.
    records: Vec<(Seq, Record)>,
    consumers: Consumers,
    next_seq: Seq,
    last_used: u64,
    had_consumer: bool,
    deleted: bool,
}

/// The queue's replicated part. Pure: no I/O, no clock.
#[derive(Clone, Debug)]
pub(crate) struct Core {
    version: u32,
    config: QueueConfig,
    records: SeqMap<Record>,
    idx: Indexes,
    consumers: Consumers,
    next_seq: Seq,
    /// Last consume, cancel, get or declare: the start of the `x-expires` timer.
    last_used: u64,
    /// For auto-delete: only a queue that had a consumer deletes itself.
    had_consumer: bool,
    deleted: bool,
}

impl Core {
    pub fn new(config: QueueConfig, now: u64) -> Core {
        Core {
            version: MACHINE_VERSION,
            idx: Indexes {
                ready: ReadySet::new(config.top_priority()),
                expiry: BTreeSet::new(),
                unacked: IntMap::default(),
                tally: CoreTally::default(),
            },
            consumers: Consumers::new(config.is_single_active_consumer()),
            config,
            records: SeqMap::default(),
            next_seq: 1,
            last_used: now,
            had_consumer: false,
            deleted: false,
        }
    }

    /// The seq the next message will get.
    pub fn next_seq(&self) -> Seq {
        self.next_seq
    }

    /// At recovery: seqs continue from `seq` at least, so that none handed out by an
    /// earlier incarnation (of a message that was not stored) is handed out again
    /// while a channel may still settle it.
    pub fn continue_from(&mut self, seq: Seq) {
        self.next_seq = self.next_seq.max(seq);
    }

    /// Takes in a stored record at recovery (ready and redelivered: it may have been
    /// delivered before the restart). False for one that does not survive a restart
    /// (transient, or of a non-durable queue).
    /// Takes back a stored message. `rested`: the queue stopped cleanly to hibernate,
    /// so the stored redelivered flag is the message's; otherwise it may have been
    /// delivered before the restart and comes back redelivered.
    pub fn recover(&mut self, seq: Seq, stored: &IndexRecord, rested: bool) -> bool {
        self.next_seq = self.next_seq.max(seq.saturating_add(1));
        if !stored.persistent || !self.config.durable {
            return false;
        }
        let top = self.config.top_priority();
        self.take(seq);
        self.insert(
            seq,
            Record {
                size: stored.size,
                expires_at: stored.expires_at,
                place: Place::Ready,
                delivery_count: stored.delivery_count,
                priority: stored.priority.min(top),
                redelivered: !rested || stored.redelivered,
                persistent: true,
            },
        );
        true
    }

    // ----- what the local part and the shell read ---------------------------------

    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn record(&self, seq: Seq) -> Option<&Record> {
        self.records.get(seq)
    }

    /// Every record, by seq.
    pub fn records_by_seq(&self) -> Vec<(Seq, Record)> {
        let mut records: Vec<(Seq, Record)> =
            self.records.iter().map(|(s, r)| (s, r.clone())).collect();
        records.sort_unstable_by_key(|(s, _)| *s);
        records
    }

    /// The channels that hold unacked messages or have consumers.
    pub fn channels(&self) -> impl Iterator<Item = ChannelId> + '_ {
        self.idx
            .unacked
            .iter()
            .filter(|(_, seqs)| !seqs.is_empty())
            .map(|(c, _)| *c)
            .chain(self.consumers.channels())
    }

    /// Every record, in no particular order.
    pub fn records(&self) -> impl Iterator<Item = (Seq, &Record)> {
        self.records.iter()
    }

    pub fn tally(&self) -> &CoreTally {
        &self.idx.tally
    }

    pub fn consumers(&self) -> &Consumers {
        &self.consumers
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted
    }

    /// The head of the ready order.
    pub fn ready_head(&self) -> Option<Seq> {
        self.idx.ready.peek()
    }

    /// When a `Tick` is due: the earliest message expiry or queue expiry.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.deleted {
            return None;
        }
        let message = self.idx.expiry.first().map(|&(at, _)| at);
        match (message, self.queue_expiry()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn queue_expiry(&self) -> Option<u64> {
        let expires = self.config.expires?;
        self.consumers
            .is_empty()
            .then(|| self.last_used.saturating_add(expires))
    }

    /// Whether the queue's `x-expires` deadline has passed (its `Tick` may still be on
    /// the way).
    pub fn is_expired(&self, now: u64) -> bool {
        self.queue_expiry().is_some_and(|at| at <= now)
    }

    /// The `queue.delete` checks: `if_unused` refuses a queue with consumers,
    /// `if_empty` one with ready messages.
    pub fn can_delete(&self, if_unused: bool, if_empty: bool) -> Result<(), QueueError> {
        if if_unused && !self.consumers.is_empty() {
            return Err(QueueError::InUse {
                queue: self.config.name.clone(),
                vhost: self.config.vhost.clone(),
            });
        }
        if if_empty && self.idx.tally.ready > 0 {
            return Err(QueueError::NotEmpty {
                queue: self.config.name.clone(),
                vhost: self.config.vhost.clone(),
            });
        }
        Ok(())
    }

    // ----- applying ops ------------------------------------------------------------

    /// Applies one op at time `now` (ms since the epoch), pushing what it decided onto
    /// `out`. A refused op changes nothing and pushes nothing.
    pub fn apply(&mut self, op: Op, now: u64, out: &mut Vec<Out>) -> Result<Reply, QueueError> {
        if self.deleted {
            return match op {
                // Answers for what the queue had under way are harmless.
                Op::Tick
                | Op::ChannelDown { .. }
                | Op::Sent { .. }
                | Op::Written { .. }
                | Op::DeadLettered { .. }
                | Op::Lost { .. } => Ok(Reply::Ok),
                _ => Err(self.not_found()),
            };
        }
        let reply = match op {
            // Expired already: `settle` below deletes the queue.
            Op::Enqueue { .. } if self.is_expired(now) => Reply::Gone,
            Op::Enqueue { message } => self.enqueue(message, now, out),
            Op::Consume {
                tag,
                channel,
                prefetch,
                no_ack,
                exclusive,
                priority,
            } => self.consume(
                tag, channel, prefetch, no_ack, exclusive, priority, now, out,
            )?,
            Op::Cancel {
                channel,
                tag,
                unsent,
            } => {
                self.unassign(&unsent);
                let id = self.consumers.find(channel, &tag);
                if let Some(id) = id {
                    self.remove_consumer(id, now, out);
                }
                Reply::Cancelled {
                    existed: id.is_some(),
                }
            }
            Op::ChannelDown { channel, unsent } => {
                self.unassign(&unsent);
                self.channel_down(channel, now, out);
                Reply::Ok
            }
            Op::Ack { channel, seqs } => {
                self.check_unacked(channel, &seqs)?;
                for seq in seqs {
                    if self.take(seq).is_some() {
                        out.push(Out::Left { seq });
                    }
                }
                Reply::Ok
            }
            Op::Reject {
                channel,
                seqs,
                requeue,
            } => {
                self.check_unacked(channel, &seqs)?;
                for seq in seqs {
                    let held = self.records.get(seq).is_some_and(
                        |r| matches!(r.place, Place::Unacked { channel: c, .. } if c == channel),
                    );
                    if !held {
                        continue; // listed twice
                    }
                    if requeue {
                        self.requeue(seq, now, out);
                    } else {
                        self.dead_letter_or_discard(seq, DeadLetterReason::Rejected, out);
                    }
                }
                Reply::Ok
            }
            Op::Get { channel, no_ack } => {
                self.last_used = now;
                self.get(channel, no_ack, now, out);
                Reply::Ok
            }
            Op::Purge => Reply::Purged {
                count: self.purge(out),
            },
            Op::Delete {
                if_unused,
                if_empty,
            } => {
                self.can_delete(if_unused, if_empty)?;
                let message_count = self.idx.tally.ready;
                self.deleted = true;
                return Ok(Reply::Deleted { message_count });
            }
            Op::Touch => {
                self.last_used = now;
                Reply::Ok
            }
            Op::Tick => Reply::Ok,
            Op::Continue { from } => {
                self.continue_from(from);
                Reply::Ok
            }
            Op::Window {
                channel,
                tag,
                limit,
            } => {
                self.consumers.window_next(channel, tag, limit);
                Reply::Ok
            }
            Op::Written {
                channel,
                tag,
                count,
            } => {
                if let Some(id) = self.consumers.find(channel, &tag) {
                    self.consumers.written(id, count);
                }
                Reply::Ok
            }
            Op::Sent { seqs } => {
                for seq in seqs {
                    let no_ack = self
                        .records
                        .get(seq)
                        .is_some_and(|r| matches!(r.place, Place::Unacked { no_ack: true, .. }));
                    if no_ack && self.take(seq).is_some() {
                        out.push(Out::Left { seq });
                    }
                }
                Reply::Ok
            }
            Op::DeadLettered { seqs } => {
                for seq in seqs {
                    let leaving = self
                        .records
                        .get(seq)
                        .is_some_and(|r| matches!(r.place, Place::DeadLettering(_)));
                    if leaving && self.take(seq).is_some() {
                        out.push(Out::Left { seq });
                    }
                }
                Reply::Ok
            }
            Op::Lost { seqs } => {
                for seq in seqs {
                    if self.take(seq).is_some() {
                        out.push(Out::Left { seq });
                    }
                }
                Reply::Ok
            }
        };
        self.settle(now, out);
        Ok(reply)
    }

    // ----- record bookkeeping: the only places that change records -----------------

    fn insert(&mut self, seq: Seq, record: Record) {
        self.idx.tally.apply(&record, 1);
        self.idx.update(
            seq,
            record.priority,
            Membership::NONE,
            Membership::of(&record),
            &mut self.consumers,
        );
        self.records.insert(seq, record);
    }

    fn take(&mut self, seq: Seq) -> Option<Record> {
        let record = self.records.remove(seq)?;
        self.idx.tally.apply(&record, -1);
        self.idx.update(
            seq,
            record.priority,
            Membership::of(&record),
            Membership::NONE,
            &mut self.consumers,
        );
        Some(record)
    }

    fn modify<R>(&mut self, seq: Seq, f: impl FnOnce(&mut Record) -> R) -> Option<R> {
        let record = self.records.get_mut(seq)?;
        let before = Membership::of(record);
        self.idx.tally.apply(record, -1);
        let r = f(record);
        self.idx.tally.apply(record, 1);
        let after = Membership::of(record);
        if before != after {
            self.idx
                .update(seq, record.priority, before, after, &mut self.consumers);
        }
        Some(r)
    }

    // ----- ops ---------------------------------------------------------------------

    fn enqueue(&mut self, message: SharedMessage, now: u64, out: &mut Vec<Out>) -> Reply {
        let size = message.body_size();
        let overflow = self.config.overflow();
        // Seqs are never reused; running out (2^64 publishes) refuses the publish.
        let exhausted = self.next_seq == Seq::MAX;
        if exhausted || (overflow != Overflow::DropHead && self.is_full_for(size)) {
            if overflow == Overflow::RejectPublishDlx && !exhausted {
                out.push(Out::DeadLetterRefused {
                    message,
                    reason: DeadLetterReason::Maxlen,
                });
            }
            return Reply::PublishRejected;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let priority = match self.config.max_priority {
            Some(top) => message.properties.priority.unwrap_or(0).min(top),
            None => 0,
        };
        let ttl = match (message.properties.ttl_ms(), self.config.message_ttl) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.insert(
            seq,
            Record {
                size,
                expires_at: ttl.map(|t| now.saturating_add(t)),
                place: Place::Ready,
                delivery_count: 0,
                priority,
                redelivered: false,
                persistent: message.properties.is_persistent(),
            },
        );
        out.push(Out::Enqueued { seq });
        // Deliver first (a consumer may take it at once, even with TTL 0: RabbitMQ
        // tries delivery before expiry), then apply the length limit and expiry.
        self.dispatch(now, Some(seq), out);
        self.enforce_max_length(out);
        self.expire_due(now, out);
        Reply::Enqueued { seq }
    }

    /// Whether a message of `size` bytes would overflow the queue's limits.
    fn is_full_for(&self, size: u64) -> bool {
        let t = &self.idx.tally;
        self.config.max_length.is_some_and(|max| t.ready >= max)
            || self
                .config
                .max_length_bytes
                .is_some_and(|max| t.ready_bytes.saturating_add(size) > max)
    }

    fn is_over_limit(&self) -> bool {
        let t = &self.idx.tally;
        self.config.max_length.is_some_and(|max| t.ready > max)
            || self
                .config
                .max_length_bytes
                .is_some_and(|max| t.ready_bytes > max)
    }

    #[allow(clippy::too_many_arguments)]
    fn consume(
        &mut self,
        tag: ConsumerTag,
        channel: ChannelId,
        prefetch: u32,
        no_ack: bool,
        exclusive: bool,
        priority: i32,
        now: u64,
        out: &mut Vec<Out>,
    ) -> Result<Reply, QueueError> {
        let checked = self.consumers.check(channel, &tag, exclusive);
        if checked.is_err() {
            self.consumers.forget_window(channel, &tag);
        }
        match checked {
            Ok(()) => {}
            Err(Refusal::TagInUse) => {
                return Err(QueueError::ConsumerTagInUse {
                    tag: tag.to_string(),
                })
            }
            Err(Refusal::ExclusiveUse) => {
                return Err(QueueError::ExclusiveUse {
                    queue: self.config.name.clone(),
                    vhost: self.config.vhost.clone(),
                })
            }
        }
        let (_, active) =
            self.consumers
                .add(channel, tag.clone(), prefetch, no_ack, exclusive, priority);
        self.had_consumer = true;
        self.last_used = now;
        if active {
            out.push(Out::ConsumerActive { channel, tag });
        }
        Ok(Reply::Ok)
    }

    fn remove_consumer(&mut self, id: ConsumerId, now: u64, out: &mut Vec<Out>) {
        let Some((_, successor)) = self.consumers.remove(id) else {
            return;
        };
        if let Some(next) = successor.and_then(|s| self.consumers.get(s)) {
            out.push(Out::ConsumerActive {
                channel: next.channel,
                tag: next.tag.clone(),
            });
        }
        if self.consumers.is_empty() {
            self.last_used = now;
        }
    }

    /// Assignments that never reached their channel go back to where they were in the
    /// ready order, untouched: no redelivery is counted.
    fn unassign(&mut self, seqs: &[Seq]) {
        for &seq in seqs {
            self.modify(seq, |r| {
                if matches!(r.place, Place::Unacked { .. }) {
                    r.place = Place::Ready;
                }
            });
        }
    }

    fn channel_down(&mut self, channel: ChannelId, now: u64, out: &mut Vec<Out>) {
        let mut seqs: Vec<Seq> = self
            .idx
            .unacked
            .get(&channel)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default();
        seqs.sort_unstable();
        for seq in seqs {
            self.requeue(seq, now, out);
        }
        // Newest first: under single-active-consumer, the channel's active consumer
        // goes last, so the hand-over skips the channel's other consumers.
        for id in self.consumers.on_channel(channel).into_iter().rev() {
            self.remove_consumer(id, now, out);
        }
    }

    /// Fails unless every seq is out to `channel` to be acked.
    fn check_unacked(&self, channel: ChannelId, seqs: &[Seq]) -> Result<(), QueueError> {
        match seqs.iter().find(|&&seq| !self.is_unacked_by(channel, seq)) {
            Some(&seq) => Err(QueueError::UnknownDeliveryTag { seq }),
            None => Ok(()),
        }
    }

    /// Whether `seq` is out to `channel` to be acked (a no-ack delivery on its way is
    /// not the client's to settle).
    pub fn is_unacked_by(&self, channel: ChannelId, seq: Seq) -> bool {
        self.records.get(seq).is_some_and(
            |r| matches!(r.place, Place::Unacked { channel: c, no_ack: false, .. } if c == channel),
        )
    }

    /// Returns an unacked message to its place in the ready order, or dead-letters it
    /// when it has been returned more often than the delivery limit.
    fn requeue(&mut self, seq: Seq, _now: u64, out: &mut Vec<Out>) {
        let limit = self.config.delivery_limit;
        let Some(over_limit) = self.modify(seq, |r| {
            r.delivery_count = r.delivery_count.saturating_add(1);
            r.redelivered = true;
            let over = limit.is_some_and(|l| u64::from(r.delivery_count) > l);
            if !over {
                r.place = Place::Ready;
            }
            over
        }) else {
            return;
        };
        if over_limit {
            self.dead_letter_or_discard(seq, DeadLetterReason::DeliveryLimit, out);
        } else {
            out.push(Out::Returned {
                seq,
                recounted: limit.is_some(),
            });
        }
    }

    fn purge(&mut self, out: &mut Vec<Out>) -> u64 {
        let mut count = 0;
        while let Some(seq) = self.idx.ready.peek() {
            if self.take(seq).is_none() {
                break;
            }
            out.push(Out::Left { seq });
            count += 1;
        }
        count
    }

    fn get(&mut self, channel: ChannelId, no_ack: bool, now: u64, out: &mut Vec<Out>) {
        loop {
            let Some(seq) = self.idx.ready.peek() else {
                out.push(Out::GetEmpty { channel });
                return;
            };
            if self.records.get(seq).is_some_and(|r| r.is_expired(now)) {
                self.dead_letter_or_discard(seq, DeadLetterReason::Expired, out);
                continue;
            }
            self.hand_out(seq, channel, None, no_ack, out);
            return;
        }
    }

    /// What every op ends with: enforce limits and deadlines, hand ready messages to
    /// consumers with credit, and delete the queue when its time has come.
    fn settle(&mut self, now: u64, out: &mut Vec<Out>) {
        // Removals first: dropping a head can make the next message deliverable.
        self.enforce_max_length(out);
        self.expire_due(now, out);
        self.dispatch(now, None, out);
        if self.is_expired(now) {
            out.push(Out::DeleteQueue {
                reason: DeleteReason::Expired,
            });
            self.deleted = true;
            return;
        }
        if self.config.auto_delete && self.had_consumer && self.consumers.is_empty() {
            out.push(Out::DeleteQueue {
                reason: DeleteReason::AutoDelete,
            });
            self.deleted = true;
        }
    }

    /// Hands the head of the ready order to consumers with credit until none has any
    /// or nothing is ready. Where the bodies are does not matter here. `fresh` is a
    /// message being enqueued, deliverable now even if its TTL is 0.
    fn dispatch(&mut self, now: u64, fresh: Option<Seq>, out: &mut Vec<Out>) {
        while let Some(seq) = self.idx.ready.peek() {
            let Some(record) = self.records.get(seq) else {
                return;
            };
            if record.is_expired(now) && fresh != Some(seq) {
                self.dead_letter_or_discard(seq, DeadLetterReason::Expired, out);
                continue;
            }
            let Some(id) = self.consumers.pick() else {
                return;
            };
            let Some(consumer) = self.consumers.get(id) else {
                continue;
            };
            let (channel, no_ack) = (consumer.channel, consumer.no_ack);
            let size = record.size;
            self.hand_out(seq, channel, Some(id), no_ack, out);
            self.consumers.delivered(id, size);
        }
    }

    fn hand_out(
        &mut self,
        seq: Seq,
        channel: ChannelId,
        consumer: Option<ConsumerId>,
        no_ack: bool,
        out: &mut Vec<Out>,
    ) {
        let handed = self.modify(seq, |r| {
            r.place = Place::Unacked {
                channel,
                consumer,
                no_ack,
            };
            (r.redelivered, r.delivery_count)
        });
        let Some((redelivered, delivery_count)) = handed else {
            return;
        };
        out.push(Out::Checkout {
            seq,
            channel,
            tag: consumer.and_then(|c| self.consumers.get(c).map(|c| c.tag.clone())),
            no_ack,
            redelivered,
            delivery_count,
        });
    }

    /// Removes a message from wherever it is for `reason`: to its dead-letter exchange
    /// when the queue has one (it stays until its targets hold it), dropped otherwise.
    fn dead_letter_or_discard(&mut self, seq: Seq, reason: DeadLetterReason, out: &mut Vec<Out>) {
        if self.config.dead_letter_exchange.is_some() {
            if self
                .modify(seq, |r| r.place = Place::DeadLettering(reason))
                .is_some()
            {
                out.push(Out::DeadLetter { seq, reason });
            }
        } else if self.take(seq).is_some() {
            out.push(Out::Left { seq });
        }
    }

    /// Drops (and dead-letters) from the head while the queue is over its limits
    /// (`x-overflow: drop-head`; the reject modes refuse at the door instead).
    fn enforce_max_length(&mut self, out: &mut Vec<Out>) {
        if self.config.overflow() != Overflow::DropHead {
            return;
        }
        while self.is_over_limit() {
            let Some(head) = self.idx.ready.peek() else {
                return;
            };
            if !self.records.contains(head) {
                return;
            }
            self.dead_letter_or_discard(head, DeadLetterReason::Maxlen, out);
        }
    }

    /// Expires every ready message whose deadline has passed, wherever it is in the
    /// ready order (RabbitMQ only looks at the head; expiring everywhere keeps the
    /// counts and memory honest and costs O(log n) per message).
    fn expire_due(&mut self, now: u64, out: &mut Vec<Out>) {
        while let Some(&(at, seq)) = self.idx.expiry.first() {
            if at > now {
                return;
            }
            if !self.records.get(seq).is_some_and(Record::is_ready) {
                self.idx.expiry.remove(&(at, seq));
                continue;
            }
            self.dead_letter_or_discard(seq, DeadLetterReason::Expired, out);
        }
    }

    pub fn not_found(&self) -> QueueError {
        QueueError::NotFound {
            queue: self.config.name.clone(),
            vhost: self.config.vhost.clone(),
        }
    }
}

/// A core as a whole: its image (snapshots of a replicated queue), its fingerprint
/// (comparing replicas), replaying a log of ops (tests).
impl Core {
    /// Applies `log` (ops with the time each was taken at) to a new core of `config`
    /// declared at `declared`, as a replica joining late would. A log written by a newer
    /// machine version is refused: its ops may mean what this version cannot know.
    #[cfg(test)]
    pub fn replay(
        config: QueueConfig,
        declared: u64,
        version: u32,
        log: impl IntoIterator<Item = (Op, u64)>,
    ) -> Result<Core, String> {
        if version > MACHINE_VERSION {
            return Err(format!(
                "the log was written by machine version {version}; this Warren replays up to {MACHINE_VERSION}"
            ));
        }
        let mut core = Core::new(config, declared);
        // The ops mean what they meant in their version (as an image's do).
        core.version = version;
        let mut out = Vec::new();
        for (op, now) in log {
            // A refused op changed nothing when it was first applied either.
            let _ = core.apply(op, now, &mut out);
            out.clear();
        }
        Ok(core)
    }

    /// The core as a whole, for a snapshot: a core rebuilt from it
    /// ([`Core::from_image`]) with the same configuration makes every later decision
    /// as this one does.
    pub fn image(&self) -> CoreImage {
        CoreImage {
            version: self.version,
            records: self.records_by_seq(),
            consumers: self.consumers.clone(),
            next_seq: self.next_seq,
            last_used: self.last_used,
            had_consumer: self.had_consumer,
            deleted: self.deleted,
        }
    }

    /// The core an [`image`](Core::image) describes, under `config` (the queue's
    /// declaration, which every replica has). Refuses an image of a newer machine.
    pub fn from_image(config: QueueConfig, image: CoreImage) -> Result<Core, String> {
        if image.version > MACHINE_VERSION {
            return Err(format!(
                "the image was written by machine version {}; this Warren reads up to {MACHINE_VERSION}",
                image.version
            ));
        }
        let mut core = Core::new(config, image.last_used);
        core.version = image.version;
        // The indexes are rebuilt from the records while the core has no consumers
        // (charging nobody); the consumers come whole, their credit and rotation as
        // they were.
        for (seq, record) in image.records {
            core.insert(seq, record);
        }
        core.consumers = image.consumers;
        core.next_seq = image.next_seq;
        core.had_consumer = image.had_consumer;
        core.deleted = image.deleted;
        Ok(core)
    }

    /// Everything the core holds, in a form two cores can be compared by (tests of
    /// determinism).
    pub fn fingerprint(&self) -> String {
        let mut records: Vec<(Seq, &Record)> = self.records.iter().collect();
        records.sort_unstable_by_key(|(s, _)| *s);
        format!(
            "v{} next {} used {} had {} deleted {} tally {:?} records {:?} consumers {:?} ready {:?}",
            self.version,
            self.next_seq,
            self.last_used,
            self.had_consumer,
            self.deleted,
            self.idx.tally,
            records,
            self.consumers.summaries(),
            self.ready_order(),
        )
    }

    /// The ready seqs in delivery order (tests).
    pub fn ready_order(&self) -> Vec<Seq> {
        let mut copy = self.idx.ready.clone();
        let mut order = Vec::new();
        while let Some(seq) = copy.peek() {
            let priority = self.records.get(seq).map_or(0, |r| r.priority);
            copy.remove(seq, priority);
            order.push(seq);
        }
        order
    }

    #[cfg(test)]
    /// Recomputes every index from the records and compares (tests).
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut tally = CoreTally::default();
        let mut ready = 0usize;
        let mut expiry = BTreeSet::new();
        let mut unacked: std::collections::BTreeMap<ChannelId, BTreeSet<Seq>> = Default::default();
        let mut per_consumer: std::collections::BTreeMap<ConsumerId, u32> = Default::default();
        for (seq, r) in self.records.iter() {
            tally.apply(r, 1);
            if seq >= self.next_seq && self.next_seq != Seq::MAX {
                return Err(format!("seq {seq} not below next_seq {}", self.next_seq));
            }
            match r.place {
                Place::Ready => {
                    ready += 1;
                    if !self.idx.ready.contains(seq, r.priority) {
                        return Err(format!("{seq}: ready but not in the ready set"));
                    }
                    if let Some(at) = r.expires_at {
                        expiry.insert((at, seq));
                    }
                }
                Place::Unacked {
                    channel, consumer, ..
                } => {
                    unacked.entry(channel).or_default().insert(seq);
                    if let Some(c) = consumer.filter(|&c| self.consumers.get(c).is_some()) {
                        *per_consumer.entry(c).or_default() += 1;
                    }
                }
                Place::DeadLettering(_) => {}
            }
        }
        if tally != self.idx.tally {
            return Err(format!(
                "tally {:?} != recomputed {:?}",
                self.idx.tally, tally
            ));
        }
        if ready != self.idx.ready.len() {
            return Err(format!(
                "ready set holds {} but {ready} are ready",
                self.idx.ready.len()
            ));
        }
        if expiry != self.idx.expiry {
            return Err("expiry index differs".into());
        }
        let idx_unacked: std::collections::BTreeMap<ChannelId, BTreeSet<Seq>> = self
            .idx
            .unacked
            .iter()
            .map(|(&c, s)| (c, s.iter().copied().collect()))
            .collect();
        if idx_unacked != unacked {
            return Err("unacked per channel differs".into());
        }
        for (id, n) in self.consumers.unacked_counts() {
            if per_consumer.get(&id).copied().unwrap_or(0) != n {
                return Err(format!("consumer {id} counts {n} unacked"));
            }
        }
        self.consumers.check_invariants()?;
        // Everything deliverable was handed out: nobody with credit waits while a
        // message is ready.
        if !self.deleted && self.consumers.has_demand() && !self.idx.ready.is_empty() {
            return Err("a consumer has credit while messages are ready".into());
        }
        Ok(())
    }
}
