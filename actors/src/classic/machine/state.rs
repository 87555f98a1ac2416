//! [`QueueState`]: the queue as a pure state machine. `apply(command, now, effects)`
//! changes the state, answers with a [`Reply`] and pushes [`Effect`]s for the shell.
//! The invariants it keeps are listed in the [module documentation](super).
//!
//! Every change of an entry goes through [`QueueState::modify`], [`QueueState::insert`]
//! or [`QueueState::take`], which keep the counters and indexes derived from the
//! entries' state (ready set, paged set, expiry index, unacked per channel, consumer
//! credit) in step: no code path updates an index by hand, so none can forget one.

use std::cmp::Reverse;
use std::collections::{BTreeSet, VecDeque};

use crate::message::{Message, SharedMessage};

use super::command::{ChannelId, Command, ConsumerTag, PublishId, Reply, Seq};
use super::config::{Overflow, QueueConfig};
use super::consumers::{ConsumerId, Consumers, Refusal};
use super::deadletter::dead_lettered;
use super::effects::{DeadLetterReason, DeleteReason, Effect};
use super::entry::{Entry, IndexRecord, Place, Storage};
use super::errors::QueueError;
use super::fasthash::{IntMap, IntSet};
use super::ready::ReadySet;
use super::seqmap::SeqMap;
use super::stats::{queue_stats, Tally};
use crate::queue::{ConsumerSummary, QueueStats};

/// How long a dead-letter target that refused a message (full, say) is left alone
/// before the message is republished.
pub const DEAD_LETTER_RETRY_MS: u64 = 1_000;

/// Which indexes an entry belongs to; derived from its fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Membership {
    ready: bool,
    paged: bool,
    expiry: Option<u64>,
    unacked: Option<(ChannelId, Option<ConsumerId>)>,
}

impl Membership {
    fn of(e: &Entry) -> Self {
        Membership {
            ready: e.is_ready(),
            paged: e.is_paged(),
            expiry: if e.is_ready() { e.expires_at } else { None },
            unacked: match e.place {
                Place::Unacked { channel, consumer } => Some((channel, consumer)),
                _ => None,
            },
        }
    }

    const NONE: Membership = Membership {
        ready: false,
        paged: false,
        expiry: None,
        unacked: None,
    };
}

/// The indexes over the entries.
#[derive(Clone, Debug)]
struct Indexes {
    /// Ready entries in delivery order.
    ready: ReadySet,
    /// Ready entries whose body is only in storage and not yet asked for, in
    /// delivery order: the next loads.
    paged: BTreeSet<(Reverse<u8>, Seq)>,
    /// Ready entries with a TTL, by deadline.
    expiry: BTreeSet<(u64, Seq)>,
    /// Unacked entries per channel.
    unacked: IntMap<ChannelId, IntSet<Seq>>,
    tally: Tally,
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
        if old.paged != new.paged {
            if old.paged {
                self.paged.remove(&(Reverse(priority), seq));
            } else {
                self.paged.insert((Reverse(priority), seq));
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

/// How a message leaves for a consumer.
#[derive(Clone, Copy)]
enum Handout {
    Consumer(ConsumerId),
    Get,
}

/// A queue: its messages, consumers and configuration. Pure: no I/O, no clock.
#[derive(Clone, Debug)]
pub struct QueueState {
    config: QueueConfig,
    entries: SeqMap<Entry>,
    idx: Indexes,
    consumers: Consumers,
    /// Publishes whose confirm waits for the durable write of their message.
    pending_confirms: IntMap<Seq, PublishId>,
    /// `basic.get`s waiting for the head's body, in arrival order.
    pending_gets: VecDeque<(ChannelId, bool)>,
    /// Entries waiting to be dead-lettered whose body has not been asked for yet.
    dead_letter_waiting: VecDeque<Seq>,
    /// Entries republished to their dead-letter exchange, waiting for the targets to
    /// hold them (`Command::DeadLettered`): only then do they leave the queue.
    dead_letter_sent: IntSet<Seq>,
    /// Entries a dead-letter target refused, republished again at `dead_letter_retry_at`.
    dead_letter_retry: VecDeque<Seq>,
    dead_letter_retry_at: Option<u64>,
    next_seq: Seq,
    /// Last consume, cancel, get or declare: the start of the `x-expires` timer.
    last_used: u64,
    /// For auto-delete: only a queue that had a consumer deletes itself.
    had_consumer: bool,
    deleted: bool,
    lost: u64,
    /// How much memory beyond the window the queue may hold for its consumers (see
    /// the `window` module); `None`: none, whatever the consumers.
    memory_allowance: Option<u64>,
}

impl QueueState {
    /// A new, empty queue, declared at `now`.
    pub fn new(config: QueueConfig, now: u64) -> Self {
        QueueState {
            idx: Indexes {
                ready: ReadySet::new(config.top_priority()),
                paged: BTreeSet::new(),
                expiry: BTreeSet::new(),
                unacked: IntMap::default(),
                tally: Tally::default(),
            },
            consumers: Consumers::new(config.is_single_active_consumer()),
            config,
            entries: SeqMap::default(),
            pending_confirms: IntMap::default(),
            pending_gets: VecDeque::new(),
            dead_letter_waiting: VecDeque::new(),
            dead_letter_sent: IntSet::default(),
            dead_letter_retry: VecDeque::new(),
            dead_letter_retry_at: None,
            next_seq: 1,
            last_used: 0,
            had_consumer: false,
            deleted: false,
            lost: 0,
            memory_allowance: None,
        }
        .touched(now)
    }

    fn touched(mut self, now: u64) -> Self {
        self.last_used = now;
        self
    }

    /// Rebuilds a durable queue from its stored index records (no bodies: they load
    /// on demand). Every recovered message is ready and redelivered: it may have been
    /// delivered before the restart. Transient messages (written only to leave
    /// memory) do not survive a restart: they get an `Effect::Remove`, as does every
    /// record of a non-durable queue.
    pub fn recover(
        config: QueueConfig,
        records: impl IntoIterator<Item = (Seq, IndexRecord)>,
        now: u64,
        effects: &mut Vec<Effect>,
    ) -> Self {
        let mut state = QueueState::new(config, now);
        let top = state.config.top_priority();
        for (seq, record) in records {
            state.next_seq = state.next_seq.max(seq.saturating_add(1));
            if !record.persistent || !state.config.durable {
                effects.push(Effect::Remove { seq });
                continue;
            }
            state.take(seq);
            state.insert(
                seq,
                Entry {
                    body: None,
                    size: record.size,
                    expires_at: record.expires_at,
                    place: Place::Ready,
                    delivery_count: record.delivery_count,
                    priority: record.priority.min(top),
                    redelivered: true,
                    persistent: true,
                    storage: Storage::Stored,
                    loading: false,
                    page_out: false,
                },
            );
        }
        state
    }

    /// The queue's configuration.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Ready messages (what `queue.declare-ok` reports).
    pub fn message_count(&self) -> u64 {
        self.idx.tally.ready
    }

    /// Registered consumers.
    pub fn consumer_count(&self) -> u64 {
        self.consumers.len() as u64
    }

    /// The consumers, oldest first, as `inspect` shows them.
    pub fn consumer_summaries(&self) -> Vec<ConsumerSummary> {
        self.consumers.summaries()
    }

    /// Sets how much memory beyond the window the queue may keep bodies in while it has
    /// consumers (its share of the node's queue memory); `None` for no more than the
    /// window.
    pub fn set_memory_allowance(&mut self, allowance: Option<u64>) {
        self.memory_allowance = allowance;
    }

    /// The memory the queue's resident ready bodies take beyond the window: what it
    /// holds of the node's queue memory.
    pub fn memory_beyond_window(&self) -> u64 {
        self.config.window.excess(&self.idx.tally)
    }

    /// Whether the queue was deleted (explicitly, by expiry or by auto-delete).
    pub fn is_deleted(&self) -> bool {
        self.deleted
    }

    /// Counters for management and metrics.
    pub fn stats(&self) -> QueueStats {
        queue_stats(
            &self.idx.tally,
            self.consumers.len() as u64,
            self.pending_confirms.len() as u64,
            self.lost,
        )
    }

    /// When the shell must send the next `Command::Tick`: the earliest message expiry
    /// or queue expiry; `None` when nothing is due.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.deleted {
            return None;
        }
        let message = self.idx.expiry.first().map(|&(at, _)| at);
        [message, self.queue_expiry(), self.dead_letter_retry_at]
            .into_iter()
            .flatten()
            .min()
    }

    fn queue_expiry(&self) -> Option<u64> {
        let expires = self.config.expires?;
        self.consumers
            .is_empty()
            .then(|| self.last_used.saturating_add(expires))
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

    /// Applies one command at time `now` (ms since the epoch), pushing what the shell
    /// must do onto `effects`. A refused command changes nothing and pushes nothing.
    pub fn apply(
        &mut self,
        command: Command,
        now: u64,
        effects: &mut Vec<Effect>,
    ) -> Result<Reply, QueueError> {
        if self.deleted {
            return match command {
                // Answers from storage and the shell's housekeeping are harmless.
                Command::Stored(_)
                | Command::BodiesLoaded(_)
                | Command::BodiesMissing(_)
                | Command::DeadLettered { .. }
                | Command::Tick
                | Command::ChannelDown { .. } => Ok(Reply::Ok),
                _ => Err(self.not_found()),
            };
        }
        let reply = match command {
            Command::Enqueue { message, confirm } => self.enqueue(message, confirm, now, effects),
            Command::Consume {
                tag,
                channel,
                prefetch,
                no_ack,
                exclusive,
                priority,
            } => self.consume(
                tag, channel, prefetch, no_ack, exclusive, priority, now, effects,
            )?,
            Command::Cancel { channel, tag } => {
                let id = self.consumers.find(channel, &tag);
                if let Some(id) = id {
                    self.remove_consumer(id, now, effects);
                }
                Reply::Cancelled {
                    existed: id.is_some(),
                }
            }
            Command::ChannelDown { channel } => {
                self.channel_down(channel, now, effects);
                Reply::Ok
            }
            Command::Ack { channel, seqs } => {
                self.check_unacked(channel, &seqs)?;
                for seq in seqs {
                    if let Some(entry) = self.take(seq) {
                        self.finish(seq, &entry, effects);
                    }
                }
                Reply::Ok
            }
            Command::Reject {
                channel,
                seqs,
                requeue,
            } => {
                self.check_unacked(channel, &seqs)?;
                for seq in seqs {
                    let held = self.entries.get(seq).is_some_and(
                        |e| matches!(e.place, Place::Unacked { channel: c, .. } if c == channel),
                    );
                    if !held {
                        continue; // listed twice
                    }
                    if requeue {
                        self.requeue(seq, now, effects);
                    } else {
                        self.dead_letter_or_discard(seq, DeadLetterReason::Rejected, now, effects);
                    }
                }
                Reply::Ok
            }
            Command::Get { channel, no_ack } => {
                self.last_used = now;
                self.pending_gets.push_back((channel, no_ack));
                Reply::Ok
            }
            Command::Purge => Reply::Purged {
                count: self.purge(effects),
            },
            Command::Delete {
                if_unused,
                if_empty,
            } => {
                self.can_delete(if_unused, if_empty)?;
                let message_count = self.idx.tally.ready;
                self.mark_deleted(effects);
                return Ok(Reply::Deleted { message_count });
            }
            Command::Touch => {
                self.last_used = now;
                Reply::Ok
            }
            Command::Tick => Reply::Ok,
            Command::Stored(seqs) => {
                self.stored(&seqs, effects);
                Reply::Ok
            }
            Command::BodiesLoaded(bodies) => {
                self.bodies_loaded(bodies, now, effects);
                Reply::Ok
            }
            Command::DeadLettered { done, refused } => {
                self.dead_lettered(&done, &refused, now, effects);
                Reply::Ok
            }
            Command::BodiesMissing(seqs) => {
                for seq in seqs {
                    let missing = self.entries.get(seq).is_some_and(|e| {
                        e.body.is_none()
                            && matches!(e.place, Place::Ready | Place::DeadLettering(_))
                    });
                    if missing {
                        if let Some(entry) = self.take(seq) {
                            self.lost += 1;
                            self.finish(seq, &entry, effects);
                        }
                    }
                }
                Reply::Ok
            }
        };
        self.settle(now, effects);
        Ok(reply)
    }

    // ----- entry bookkeeping: the only places that change entries -----

    fn insert(&mut self, seq: Seq, entry: Entry) {
        self.idx.tally.add(&entry);
        self.idx.update(
            seq,
            entry.priority,
            Membership::NONE,
            Membership::of(&entry),
            &mut self.consumers,
        );
        self.entries.insert(seq, entry);
    }

    fn take(&mut self, seq: Seq) -> Option<Entry> {
        let entry = self.entries.remove(seq)?;
        self.idx.tally.sub(&entry);
        self.idx.update(
            seq,
            entry.priority,
            Membership::of(&entry),
            Membership::NONE,
            &mut self.consumers,
        );
        Some(entry)
    }

    fn modify<R>(&mut self, seq: Seq, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
        let entry = self.entries.get_mut(seq)?;
        let before = Membership::of(entry);
        self.idx.tally.sub(entry);
        let r = f(entry);
        self.idx.tally.add(entry);
        let after = Membership::of(entry);
        if before != after {
            self.idx
                .update(seq, entry.priority, before, after, &mut self.consumers);
        }
        Some(r)
    }

    /// A message left the queue: delete its stored copy, answer its publisher.
    fn finish(&mut self, seq: Seq, entry: &Entry, effects: &mut Vec<Effect>) {
        if entry.storage != Storage::NotStored {
            effects.push(Effect::Remove { seq });
        }
        if let Some(publish) = self.pending_confirms.remove(&seq) {
            effects.push(Effect::Confirm { publish });
        }
    }

    // ----- commands -----

    fn enqueue(
        &mut self,
        message: SharedMessage,
        confirm: Option<PublishId>,
        now: u64,
        effects: &mut Vec<Effect>,
    ) -> Reply {
        let size = message.body_size();
        let overflow = self.config.overflow();
        // Seqs are never reused; running out (2^64 publishes) refuses the publish.
        let exhausted = self.next_seq == Seq::MAX;
        if exhausted || (overflow != Overflow::DropHead && self.is_full_for(size)) {
            if let Some(publish) = confirm {
                effects.push(Effect::Reject { publish });
            }
            if overflow == Overflow::RejectPublishDlx && !exhausted {
                self.emit_dead_letter(None, &message, DeadLetterReason::Maxlen, now, effects);
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
        let persistent = message.properties.is_persistent();
        self.insert(
            seq,
            Entry {
                body: Some(message),
                size,
                expires_at: ttl.map(|t| now.saturating_add(t)),
                place: Place::Ready,
                delivery_count: 0,
                priority,
                redelivered: false,
                persistent,
                storage: Storage::NotStored,
                loading: false,
                page_out: false,
            },
        );
        // Deliver first (a consumer may take it at once, even with TTL 0: RabbitMQ
        // tries delivery before expiry), then apply the length limit and expiry; only
        // what is still here is stored.
        self.dispatch(now, Some(seq), effects);
        self.enforce_max_length(now, effects);
        self.expire_due(now, effects);

        let Some(entry) = self.entries.get(seq) else {
            if let Some(publish) = confirm {
                effects.push(Effect::Confirm { publish });
            }
            return Reply::Enqueued { seq };
        };
        let durable_write = self.config.durable && entry.persistent;
        let resident_ready = entry.is_ready() && entry.body.is_some();
        if durable_write {
            self.write(seq, true, effects);
        }
        let allowance = self.memory_allowance.filter(|_| !self.consumers.is_empty());
        if resident_ready && self.config.window.must_page_out(&self.idx.tally, allowance) {
            self.page_out(seq, effects);
        }
        // A message being written is confirmed once its write is done: a persistent
        // one when it is durable, a transient one paged out of the window when it has
        // left memory. The second is the queue's back-pressure: a publisher that
        // outruns storage waits for confirms instead of filling the node's memory.
        if let Some(publish) = confirm {
            let writing = self
                .entries
                .get(seq)
                .is_some_and(|e| e.storage == Storage::Writing);
            if writing {
                self.pending_confirms.insert(seq, publish);
            } else {
                effects.push(Effect::Confirm { publish });
            }
        }
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

    /// Issues the write of a message not yet written.
    fn write(&mut self, seq: Seq, durable: bool, effects: &mut Vec<Effect>) {
        let write = self.modify(seq, |e| {
            let message = e.body.clone().filter(|_| e.storage == Storage::NotStored)?;
            e.storage = Storage::Writing;
            Some((message, e.record()))
        });
        if let Some(Some((message, record))) = write {
            effects.push(Effect::Store {
                seq,
                message,
                record,
                durable,
            });
        }
    }

    /// Moves a ready body out of memory: at once if stored, after its write otherwise.
    fn page_out(&mut self, seq: Seq, effects: &mut Vec<Effect>) {
        self.write(seq, false, effects);
        self.modify(seq, |e| {
            if e.storage == Storage::Stored {
                e.body = None;
            } else {
                e.page_out = true;
            }
        });
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
        effects: &mut Vec<Effect>,
    ) -> Result<Reply, QueueError> {
        match self.consumers.check(channel, &tag, exclusive) {
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
            effects.push(Effect::ConsumerActive { channel, tag });
        }
        Ok(Reply::Ok)
    }

    fn remove_consumer(&mut self, id: ConsumerId, now: u64, effects: &mut Vec<Effect>) {
        let Some((_, successor)) = self.consumers.remove(id) else {
            return;
        };
        if let Some(next) = successor.and_then(|s| self.consumers.get(s)) {
            effects.push(Effect::ConsumerActive {
                channel: next.channel,
                tag: next.tag.clone(),
            });
        }
        if self.consumers.is_empty() {
            self.last_used = now;
        }
    }

    fn channel_down(&mut self, channel: ChannelId, now: u64, effects: &mut Vec<Effect>) {
        self.pending_gets.retain(|&(c, _)| c != channel);
        let mut seqs: Vec<Seq> = self
            .idx
            .unacked
            .get(&channel)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default();
        seqs.sort_unstable();
        for seq in seqs {
            self.requeue(seq, now, effects);
        }
        // Newest first: under single-active-consumer, the channel's active consumer
        // goes last, so the hand-over skips the channel's other consumers.
        for id in self.consumers.on_channel(channel).into_iter().rev() {
            self.remove_consumer(id, now, effects);
        }
    }

    /// Fails unless every seq is unacked on `channel`.
    fn check_unacked(&self, channel: ChannelId, seqs: &[Seq]) -> Result<(), QueueError> {
        for &seq in seqs {
            let held = self.entries.get(seq).is_some_and(
                |e| matches!(e.place, Place::Unacked { channel: c, .. } if c == channel),
            );
            if !held {
                return Err(QueueError::UnknownDeliveryTag { seq });
            }
        }
        Ok(())
    }

    /// Returns an unacked message to its place in the ready order, or dead-letters it
    /// when it has been returned more often than the delivery limit.
    fn requeue(&mut self, seq: Seq, now: u64, effects: &mut Vec<Effect>) {
        let limit = self.config.delivery_limit;
        let Some(over_limit) = self.modify(seq, |e| {
            e.delivery_count = e.delivery_count.saturating_add(1);
            e.redelivered = true;
            let over = limit.is_some_and(|l| u64::from(e.delivery_count) > l);
            if !over {
                e.place = Place::Ready;
            }
            over
        }) else {
            return;
        };
        if over_limit {
            self.dead_letter_or_discard(seq, DeadLetterReason::DeliveryLimit, now, effects);
        } else if limit.is_some() {
            if let Some(e) = self
                .entries
                .get(seq)
                .filter(|e| e.storage != Storage::NotStored)
            {
                effects.push(Effect::UpdateIndex {
                    seq,
                    record: e.record(),
                });
            }
        }
    }

    fn purge(&mut self, effects: &mut Vec<Effect>) -> u64 {
        let mut count = 0;
        while let Some(seq) = self.idx.ready.peek() {
            let Some(entry) = self.take(seq) else { break };
            self.finish(seq, &entry, effects);
            count += 1;
        }
        count
    }

    fn mark_deleted(&mut self, effects: &mut Vec<Effect>) {
        self.deleted = true;
        // The messages were accepted; deleting the queue drops them, as RabbitMQ does.
        let mut confirms: Vec<(Seq, PublishId)> = self.pending_confirms.drain().collect();
        confirms.sort_unstable();
        effects.extend(
            confirms
                .into_iter()
                .map(|(_, publish)| Effect::Confirm { publish }),
        );
        for (channel, _) in self.pending_gets.drain(..) {
            effects.push(Effect::GetEmpty { channel });
        }
    }

    fn stored(&mut self, seqs: &[Seq], effects: &mut Vec<Effect>) {
        for &seq in seqs {
            let written = self.modify(seq, |e| {
                if e.storage != Storage::Writing {
                    return false;
                }
                e.storage = Storage::Stored;
                let drop_body =
                    (e.page_out && e.is_ready()) || matches!(e.place, Place::Unacked { .. });
                if drop_body {
                    e.body = None;
                }
                e.page_out = false;
                true
            });
            if written == Some(true) {
                if let Some(publish) = self.pending_confirms.remove(&seq) {
                    effects.push(Effect::Confirm { publish });
                }
            }
        }
    }

    fn bodies_loaded(
        &mut self,
        bodies: Vec<(Seq, SharedMessage)>,
        now: u64,
        effects: &mut Vec<Effect>,
    ) {
        for (seq, message) in bodies {
            let place = self.modify(seq, |e| {
                let wanted =
                    e.body.is_none() && matches!(e.place, Place::Ready | Place::DeadLettering(_));
                if wanted {
                    e.body = Some(message.clone());
                    e.loading = false;
                }
                wanted.then_some(e.place)
            });
            if let Some(Some(Place::DeadLettering(reason))) = place {
                self.send_dead_letter(seq, &message, reason, now, effects);
            }
        }
    }

    // ----- delivery, expiry, limits, loads -----

    /// What every command ends with: deliver what can be delivered, enforce limits
    /// and deadlines, ask for the bodies that are needed.
    fn settle(&mut self, now: u64, effects: &mut Vec<Effect>) {
        self.retry_dead_letters(now, effects);
        // Removals first: dropping a head that waits for its body can make the next
        // message deliverable.
        self.enforce_max_length(now, effects);
        self.expire_due(now, effects);
        self.dispatch(now, None, effects);
        if self.queue_expiry().is_some_and(|at| at <= now) {
            effects.push(Effect::DeleteQueue {
                reason: DeleteReason::Expired,
            });
            self.mark_deleted(effects);
            return;
        }
        if self.config.auto_delete && self.had_consumer && self.consumers.is_empty() {
            effects.push(Effect::DeleteQueue {
                reason: DeleteReason::AutoDelete,
            });
            self.mark_deleted(effects);
            return;
        }
        self.pump_loads(effects);
    }

    /// Hands the head of the ready order to waiting gets, then to consumers with
    /// credit, until one runs out or the head's body is not in memory. `fresh` is a
    /// message being enqueued, deliverable now even if its TTL is 0.
    fn dispatch(&mut self, now: u64, fresh: Option<Seq>, effects: &mut Vec<Effect>) {
        loop {
            let Some(seq) = self.idx.ready.peek() else {
                for (channel, _) in self.pending_gets.drain(..) {
                    effects.push(Effect::GetEmpty { channel });
                }
                return;
            };
            let Some(entry) = self.entries.get(seq) else {
                return;
            };
            if entry.is_expired(now) && fresh != Some(seq) {
                self.dead_letter_or_discard(seq, DeadLetterReason::Expired, now, effects);
                continue;
            }
            let Some(message) = entry.body.clone() else {
                return;
            };
            if let Some((channel, no_ack)) = self.pending_gets.pop_front() {
                self.hand_out(seq, message, channel, Handout::Get, no_ack, effects);
                continue;
            }
            let Some(id) = self.consumers.pick() else {
                return;
            };
            let Some(consumer) = self.consumers.get(id) else {
                continue;
            };
            let (channel, no_ack) = (consumer.channel, consumer.no_ack);
            self.hand_out(
                seq,
                message,
                channel,
                Handout::Consumer(id),
                no_ack,
                effects,
            );
            self.consumers.delivered(id);
        }
    }

    fn hand_out(
        &mut self,
        seq: Seq,
        message: SharedMessage,
        channel: ChannelId,
        to: Handout,
        no_ack: bool,
        effects: &mut Vec<Effect>,
    ) {
        let settled = if no_ack {
            self.take(seq)
        } else {
            let consumer = match to {
                Handout::Consumer(id) => Some(id),
                Handout::Get => None,
            };
            self.modify(seq, |e| {
                e.place = Place::Unacked { channel, consumer };
                e.page_out = false;
                if e.storage == Storage::Stored {
                    e.body = None;
                }
            });
            None
        };
        let Some(e) = settled.as_ref().or_else(|| self.entries.get(seq)) else {
            return;
        };
        let (redelivered, delivery_count) = (e.redelivered, e.delivery_count);
        match to {
            Handout::Consumer(id) => {
                let tag = self
                    .consumers
                    .get(id)
                    .map(|c| c.tag.clone())
                    .unwrap_or_else(|| "".into());
                effects.push(Effect::Deliver {
                    channel,
                    tag,
                    seq,
                    message,
                    redelivered,
                    delivery_count,
                    no_ack,
                });
            }
            Handout::Get => effects.push(Effect::GetOk {
                channel,
                seq,
                message,
                redelivered,
                delivery_count,
                message_count: self.idx.tally.ready,
                no_ack,
            }),
        }
        if let Some(entry) = settled {
            self.finish(seq, &entry, effects);
        }
    }

    /// Removes a message from wherever it is for `reason`: dead-letters it when the
    /// queue has a dead-letter exchange (after loading its body if needed), discards
    /// it otherwise.
    fn dead_letter_or_discard(
        &mut self,
        seq: Seq,
        reason: DeadLetterReason,
        now: u64,
        effects: &mut Vec<Effect>,
    ) {
        let Some(entry) = self.entries.get(seq) else {
            return;
        };
        if self.config.dead_letter_exchange.is_some() {
            if let Some(message) = entry.body.clone() {
                self.modify(seq, |e| {
                    e.place = Place::DeadLettering(reason);
                    e.page_out = false;
                });
                self.send_dead_letter(seq, &message, reason, now, effects);
            } else {
                let loading = entry.loading;
                self.modify(seq, |e| {
                    e.place = Place::DeadLettering(reason);
                    e.page_out = false;
                });
                if !loading {
                    self.dead_letter_waiting.push_back(seq);
                }
            }
        } else if let Some(entry) = self.take(seq) {
            self.finish(seq, &entry, effects);
        }
    }

    fn emit_dead_letter(
        &self,
        seq: Option<Seq>,
        message: &Message,
        reason: DeadLetterReason,
        now: u64,
        effects: &mut Vec<Effect>,
    ) {
        let Some(exchange) = self.config.dead_letter_exchange.clone() else {
            return;
        };
        let routing_key = self
            .config
            .dead_letter_routing_key
            .clone()
            .unwrap_or_else(|| message.routing_key.clone());
        let message = dead_lettered(
            message,
            reason,
            &self.config.name,
            now,
            &exchange,
            &routing_key,
        );
        effects.push(Effect::DeadLetter {
            seq,
            message,
            reason,
            exchange,
            routing_key,
        });
    }

    /// Republishes a message that leaves for its dead-letter exchange (its body in
    /// hand); it stays until its targets hold it.
    fn send_dead_letter(
        &mut self,
        seq: Seq,
        message: &Message,
        reason: DeadLetterReason,
        now: u64,
        effects: &mut Vec<Effect>,
    ) {
        self.emit_dead_letter(Some(seq), message, reason, now, effects);
        self.dead_letter_sent.insert(seq);
    }

    /// The targets of dead-lettered messages answered: those they hold (`done`) leave
    /// the queue; those refused are republished after [`DEAD_LETTER_RETRY_MS`].
    fn dead_lettered(
        &mut self,
        done: &[Seq],
        refused: &[Seq],
        now: u64,
        effects: &mut Vec<Effect>,
    ) {
        for &seq in done {
            if self.dead_letter_sent.remove(&seq) {
                if let Some(entry) = self.take(seq) {
                    self.finish(seq, &entry, effects);
                }
            }
        }
        for &seq in refused {
            if self.dead_letter_sent.remove(&seq) {
                self.dead_letter_retry.push_back(seq);
                let at = now.saturating_add(DEAD_LETTER_RETRY_MS);
                self.dead_letter_retry_at =
                    Some(self.dead_letter_retry_at.map_or(at, |t| t.min(at)));
            }
        }
    }

    /// Republishes the refused dead letters once their retry time has come.
    fn retry_dead_letters(&mut self, now: u64, effects: &mut Vec<Effect>) {
        if self.dead_letter_retry_at.is_none_or(|at| at > now) {
            return;
        }
        self.dead_letter_retry_at = None;
        for seq in std::mem::take(&mut self.dead_letter_retry) {
            let waiting = self
                .entries
                .get(seq)
                .and_then(|e| match (e.place, &e.body) {
                    (Place::DeadLettering(reason), Some(body)) => Some((reason, body.clone())),
                    _ => None,
                });
            if let Some((reason, body)) = waiting {
                self.send_dead_letter(seq, &body, reason, now, effects);
            }
        }
    }

    /// Drops (and dead-letters) from the head while the queue is over its limits
    /// (`x-overflow: drop-head`; the reject modes refuse at the door instead).
    fn enforce_max_length(&mut self, now: u64, effects: &mut Vec<Effect>) {
        if self.config.overflow() != Overflow::DropHead {
            return;
        }
        while self.is_over_limit() {
            let Some(head) = self.idx.ready.peek() else {
                return;
            };
            if !self.entries.contains(head) {
                return;
            }
            self.dead_letter_or_discard(head, DeadLetterReason::Maxlen, now, effects);
        }
    }

    /// Expires every ready message whose deadline has passed, wherever it is in the
    /// ready order (RabbitMQ only looks at the head; expiring everywhere keeps the
    /// counts and memory honest and costs O(log n) per message).
    fn expire_due(&mut self, now: u64, effects: &mut Vec<Effect>) {
        while let Some(&(at, seq)) = self.idx.expiry.first() {
            if at > now {
                return;
            }
            if !self.entries.get(seq).is_some_and(Entry::is_ready) {
                self.idx.expiry.remove(&(at, seq));
                continue;
            }
            self.dead_letter_or_discard(seq, DeadLetterReason::Expired, now, effects);
        }
    }

    /// Asks storage for the bodies that deliveries and dead-lettering need, within
    /// the window (see the `window` module).
    fn pump_loads(&mut self, effects: &mut Vec<Effect>) {
        // Consumers without credit count: they will ack, and the window is bounded.
        let demand = !self.consumers.is_empty() || !self.pending_gets.is_empty();
        if demand && !self.idx.paged.is_empty() {
            let head_absent = self
                .idx
                .ready
                .peek()
                .and_then(|s| self.entries.get(s))
                .is_some_and(Entry::is_paged);
            if let Some(budget) = self
                .config
                .window
                .ready_load_budget(&self.idx.tally, head_absent)
            {
                let (mut n, mut bytes, mut seqs) = (0, 0, Vec::new());
                for &(_, seq) in &self.idx.paged {
                    let size = self.entries.get(seq).map_or(0, |e| e.size);
                    if !budget.admits(n, bytes, size) {
                        break;
                    }
                    n += 1;
                    bytes = u64::saturating_add(bytes, size);
                    seqs.push(seq);
                }
                self.issue_load(seqs, effects);
            }
        }
        if !self.dead_letter_waiting.is_empty() {
            let budget = self.config.window.dead_letter_load_budget(&self.idx.tally);
            let (mut n, mut bytes, mut seqs) = (0, 0, Vec::new());
            while let Some(&seq) = self.dead_letter_waiting.front() {
                let Some(e) = self.entries.get(seq) else {
                    self.dead_letter_waiting.pop_front();
                    continue;
                };
                if !matches!(e.place, Place::DeadLettering(_)) || e.loading || e.body.is_some() {
                    self.dead_letter_waiting.pop_front();
                    continue;
                }
                if !budget.admits(n, bytes, e.size) {
                    break;
                }
                n += 1;
                bytes = u64::saturating_add(bytes, e.size);
                seqs.push(seq);
                self.dead_letter_waiting.pop_front();
            }
            self.issue_load(seqs, effects);
        }
    }

    fn issue_load(&mut self, seqs: Vec<Seq>, effects: &mut Vec<Effect>) {
        if seqs.is_empty() {
            return;
        }
        for &seq in &seqs {
            self.modify(seq, |e| e.loading = true);
        }
        effects.push(Effect::LoadBodies { seqs });
    }

    fn not_found(&self) -> QueueError {
        QueueError::NotFound {
            queue: self.config.name.clone(),
            vhost: self.config.vhost.clone(),
        }
    }
}

#[cfg(test)]
impl QueueState {
    /// Where each live message is (tests).
    pub(crate) fn places(&self) -> std::collections::BTreeMap<Seq, (Place, bool)> {
        self.entries
            .iter()
            .map(|(s, e)| (s, (e.place, e.body.is_some())))
            .collect()
    }

    /// Recomputes every derived structure from the entries and compares (tests).
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        let mut tally = Tally::default();
        let mut ready = 0usize;
        let mut paged = BTreeSet::new();
        let mut expiry = BTreeSet::new();
        let mut unacked: std::collections::BTreeMap<ChannelId, BTreeSet<Seq>> = Default::default();
        let mut per_consumer: std::collections::BTreeMap<ConsumerId, u32> = Default::default();
        for (seq, e) in self.entries.iter() {
            tally.add(e);
            if seq >= self.next_seq && self.next_seq != Seq::MAX {
                return Err(format!("seq {seq} not below next_seq {}", self.next_seq));
            }
            if e.body.is_none() && e.storage != Storage::Stored {
                return Err(format!("{seq}: body neither in memory nor stored"));
            }
            if e.page_out && !(e.is_ready() && e.storage == Storage::Writing && e.body.is_some()) {
                return Err(format!("{seq}: page_out on {:?} {:?}", e.place, e.storage));
            }
            if e.loading && (e.body.is_some() || matches!(e.place, Place::Unacked { .. })) {
                return Err(format!("{seq}: loading with body or unacked"));
            }
            match e.place {
                Place::Ready => {
                    ready += 1;
                    if !self.idx.ready.contains(seq, e.priority) {
                        return Err(format!("{seq}: ready but not in the ready set"));
                    }
                    if e.is_paged() {
                        paged.insert((Reverse(e.priority), seq));
                    }
                    if let Some(at) = e.expires_at {
                        expiry.insert((at, seq));
                    }
                }
                Place::Unacked { channel, consumer } => {
                    unacked.entry(channel).or_default().insert(seq);
                    if let Some(c) = consumer.filter(|&c| self.consumers.get(c).is_some()) {
                        *per_consumer.entry(c).or_default() += 1;
                    }
                    if e.storage == Storage::Stored && e.body.is_some() {
                        return Err(format!("{seq}: unacked, stored and still in memory"));
                    }
                }
                Place::DeadLettering(_) => {
                    let sent = self.dead_letter_sent.contains(&seq);
                    let retried = self.dead_letter_retry.contains(&seq);
                    if e.body.is_some() != (sent || retried) || (sent && retried) {
                        return Err(format!(
                            "{seq}: dead-lettering, body {} but sent {sent} retried {retried}",
                            e.body.is_some()
                        ));
                    }
                    if e.body.is_none() && !e.loading && !self.dead_letter_waiting.contains(&seq) {
                        return Err(format!("{seq}: dead-lettering and nobody loads it"));
                    }
                }
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
        if paged != self.idx.paged {
            return Err("paged set differs".into());
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
        for &seq in self.dead_letter_sent.iter().chain(&self.dead_letter_retry) {
            let held = self
                .entries
                .get(seq)
                .is_some_and(|e| matches!(e.place, Place::DeadLettering(_)) && e.body.is_some());
            if !held {
                return Err(format!(
                    "{seq}: sent or retried as a dead letter, but not held"
                ));
            }
        }
        for seq in self.pending_confirms.keys() {
            if !self
                .entries
                .get(*seq)
                .is_some_and(|e| e.storage == Storage::Writing)
            {
                return Err(format!(
                    "confirm pending for {seq}, which is not being written"
                ));
            }
        }
        if !self.deleted {
            // Liveness: whoever can take a message is only waiting for a body load.
            let demand = self.consumers.has_demand() || !self.pending_gets.is_empty();
            if let Some(head) = self.idx.ready.peek().filter(|_| demand) {
                let e = self.entries.get(head).ok_or("head missing")?;
                if e.body.is_some() || !e.loading {
                    return Err(format!(
                        "head {head} deliverable or not loading, yet demand waits"
                    ));
                }
            }
            if !self.pending_gets.is_empty() && self.idx.ready.is_empty() {
                return Err("a get waits on an empty queue".into());
            }
        }
        Ok(())
    }
}
