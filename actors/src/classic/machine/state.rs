//! [`QueueState`]: the classic queue's state machine, its two named parts together.
//!
//! - [`Core`](super::core): the **replicated** part — what every replica of a queue
//!   would agree on. It applies [`Op`]s deterministically: the same ops from the same
//!   start give the same core, wherever and whenever they are applied.
//! - [`Local`](super::local): the **local** part — what only the node running the
//!   queue holds (bodies in memory or on disk, writes and loads, publisher confirms,
//!   deliveries waiting for a body, dead letters on their way, the memory allowance).
//!
//! `apply(command, now, effects)` turns a command of the shell into core ops (adding
//! what only the local part knows), applies them, and lets the local part carry out
//! what the core decided and propose the ops only it can know are due, until nothing
//! more is due. The local part reads the core; the core never reads the local part.

use crate::message::SharedMessage;
use crate::queue::{ConsumerSummary, QueueStats};

use super::command::{ChannelId, Command, PublishId, Reply, Seq};
use super::config::QueueConfig;
use super::core::{Core, Op, Out};
use super::effects::Effect;
use super::entry::{Body, Held, IndexRecord, Storage};
use super::errors::QueueError;
use super::local::Local;
use super::stats::queue_stats;

/// A queue: its replicated core and its local part. Pure: no I/O, no clock.
#[derive(Clone, Debug)]
pub struct QueueState {
    core: Core,
    local: Local,
    /// The core's decisions of one op, kept between ops so that the hot path does not
    /// allocate for them.
    outs: Vec<Out>,
    /// Every op the core applied, with its time (tests: replaying it must give the
    /// same core).
    #[cfg(test)]
    pub(crate) journal: Vec<(Op, u64)>,
    /// The ops the core applied since they were last taken, with their time, when the
    /// queue is replicated (see [`QueueState::log_ops`]).
    logged: Option<Vec<(Op, u64)>>,
}

impl QueueState {
    /// A new, empty queue, declared at `now`.
    pub fn new(config: QueueConfig, now: u64) -> Self {
        QueueState {
            core: Core::new(config, now),
            local: Local::default(),
            outs: Vec::new(),
            #[cfg(test)]
            journal: Vec::new(),
            logged: None,
        }
    }

    /// From now on, keeps every op the core applies (with its time) for
    /// [`take_logged`](Self::take_logged): a replicated queue's leader appends them
    /// to the queue's log, and its replicas apply them to their cores in that order.
    pub fn log_ops(&mut self) {
        self.logged.get_or_insert_with(Vec::new);
    }

    /// Logs an op applied outside [`apply`](Self::apply) (a new leader's).
    pub(super) fn logged_push(&mut self, op: Op, now: u64) {
        if let Some(logged) = &mut self.logged {
            logged.push((op, now));
        }
    }

    pub(super) fn local_mut(&mut self) -> &mut Local {
        &mut self.local
    }

    pub(super) fn set_core(&mut self, core: Core) {
        self.core = core;
    }

    /// The ops applied since the last call (see [`log_ops`](Self::log_ops)).
    pub fn take_logged(&mut self) -> Vec<(Op, u64)> {
        self.logged.as_mut().map(std::mem::take).unwrap_or_default()
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
        Self::recover_from(config, records, now, effects, false)
    }

    /// [`recover`](Self::recover) after the queue hibernated holding what
    /// [`rests_in_store`](Self::rests_in_store) allowed: its messages come back as
    /// they were, not redelivered.
    pub fn recover_rested(
        config: QueueConfig,
        records: impl IntoIterator<Item = (Seq, IndexRecord)>,
        now: u64,
        effects: &mut Vec<Effect>,
    ) -> Self {
        Self::recover_from(config, records, now, effects, true)
    }

    fn recover_from(
        config: QueueConfig,
        records: impl IntoIterator<Item = (Seq, IndexRecord)>,
        now: u64,
        effects: &mut Vec<Effect>,
        rested: bool,
    ) -> Self {
        let mut state = QueueState::new(config, now);
        for (seq, stored) in records {
            if !state.core.recover(seq, &stored, rested) {
                effects.push(Effect::Remove { seq });
                continue;
            }
            let priority = state.core.record(seq).map_or(0, |r| r.priority);
            state.local.insert(
                seq,
                Body {
                    message: None,
                    size: stored.size,
                    priority,
                    held: Held::Ready,
                    storage: Storage::Stored,
                    loading: false,
                    page_out: false,
                    awaited: false,
                },
            );
        }
        state
    }

    /// Whether what the queue holds is all in the store as a recovery after a
    /// hibernation would bring it back: a durable queue whose messages are ready,
    /// persistent, stored and never delivered (a delivered one's redelivered flag and
    /// count are not in its stored record).
    pub fn rests_in_store(&self) -> bool {
        self.core.config().durable
            && self.core.records().all(|(seq, r)| {
                r.is_ready()
                    && r.persistent
                    && !r.redelivered
                    && r.delivery_count == 0
                    && self
                        .local
                        .body(seq)
                        .is_some_and(|b| b.storage == Storage::Stored)
            })
    }

    /// Whether `seq` is out to `channel` to be acked.
    pub fn is_unacked_by(&self, channel: ChannelId, seq: Seq) -> bool {
        self.core.is_unacked_by(channel, seq)
    }

    /// The seq the next message will get.
    pub fn next_seq(&self) -> Seq {
        self.core.next_seq()
    }

    /// At recovery, after [`recover`](Self::recover): seqs continue from `seq` at
    /// least (the next seq of the incarnation before, which may have handed out seqs
    /// of messages that were never stored).
    pub fn continue_from(&mut self, seq: Seq) {
        self.core.continue_from(seq);
    }

    /// The queue's configuration.
    pub fn config(&self) -> &QueueConfig {
        self.core.config()
    }

    /// The version of the replicated core's ops.
    pub fn machine_version(&self) -> u32 {
        self.core.version()
    }

    /// Ready messages (what `queue.declare-ok` reports).
    pub fn message_count(&self) -> u64 {
        self.core.tally().ready
    }

    /// Registered consumers.
    pub fn consumer_count(&self) -> u64 {
        self.core.consumers().len() as u64
    }

    /// The consumers, oldest first, as `inspect` shows them.
    pub fn consumer_summaries(&self) -> Vec<ConsumerSummary> {
        self.core.consumers().summaries()
    }

    /// Sets how much memory beyond the window the queue may keep bodies in while it has
    /// consumers (its share of the node's queue memory); `None` for no more than the
    /// window.
    pub fn set_memory_allowance(&mut self, allowance: Option<u64>) {
        self.local.set_memory_allowance(allowance);
    }

    /// The memory the queue's resident ready bodies take beyond the window: what it
    /// holds of the node's queue memory.
    pub fn memory_beyond_window(&self) -> u64 {
        self.config().window.excess(self.local.tally())
    }

    /// Whether the queue was deleted (explicitly, by expiry or by auto-delete).
    pub fn is_deleted(&self) -> bool {
        self.core.is_deleted()
    }

    /// Counters for management and metrics.
    pub fn stats(&self) -> QueueStats {
        queue_stats(
            self.core.tally(),
            self.local.tally(),
            self.consumer_count(),
            self.local.pending_confirms(),
            self.local.lost(),
        )
    }

    /// When the shell must send the next `Command::Tick`: the earliest message
    /// expiry, queue expiry or dead-letter retry; `None` when nothing is due.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.core.is_deleted() {
            return None;
        }
        [self.core.next_deadline(), self.local.next_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The `queue.delete` checks: `if_unused` refuses a queue with consumers,
    /// `if_empty` one with ready messages.
    pub fn can_delete(&self, if_unused: bool, if_empty: bool) -> Result<(), QueueError> {
        self.core.can_delete(if_unused, if_empty)
    }

    /// Applies one command at time `now` (ms since the epoch), pushing what the shell
    /// must do onto `effects`. A refused command changes nothing and pushes nothing.
    pub fn apply(
        &mut self,
        command: Command,
        now: u64,
        effects: &mut Vec<Effect>,
    ) -> Result<Reply, QueueError> {
        if self.core.is_deleted() {
            // Answers for what the queue had under way: nothing to do any more.
            return match is_answer(&command) {
                true => Ok(Reply::Ok),
                false => Err(self.core.not_found()),
            };
        }
        let reply = match command {
            Command::Enqueue { message, confirm } => {
                self.enqueue(message, confirm, now, effects)?
            }
            Command::Stored(seqs) => {
                self.local.stored(&seqs, effects);
                Reply::Ok
            }
            Command::BodiesLoaded(bodies) => {
                self.local.bodies_loaded(bodies, &self.core, now, effects);
                Reply::Ok
            }
            Command::BodiesMissing(seqs) => {
                self.local.bodies_missing(&seqs);
                Reply::Ok
            }
            Command::DeadLettered { done, refused } => {
                self.local.dead_lettered(&done, &refused, now);
                Reply::Ok
            }
            Command::Consume {
                tag,
                channel,
                prefetch,
                no_ack,
                exclusive,
                priority,
            } => {
                let op = Op::Consume {
                    tag,
                    channel,
                    prefetch,
                    no_ack,
                    exclusive,
                    priority,
                };
                self.run(op, now, effects)?
            }
            // What never reached the channel goes back untouched: only this node
            // knows which assignments those are.
            Command::Cancel { channel, tag } => {
                let unsent = self.local.unsent(channel, Some(&tag));
                let op = Op::Cancel {
                    channel,
                    tag,
                    unsent,
                };
                self.run(op, now, effects)?
            }
            Command::ChannelDown { channel } => {
                let unsent = self.local.unsent(channel, None);
                self.run(Op::ChannelDown { channel, unsent }, now, effects)?
            }
            Command::Ack { channel, seqs } => self.run(Op::Ack { channel, seqs }, now, effects)?,
            // Write windows are the node's own business: a replicated queue's log
            // would make every replica apply them; it has none.
            Command::Window { .. } | Command::Written { .. } if self.logged.is_some() => Reply::Ok,
            Command::Window {
                channel,
                tag,
                limit,
            } => self.run(
                Op::Window {
                    channel,
                    tag,
                    limit,
                },
                now,
                effects,
            )?,
            Command::Written {
                channel,
                tag,
                count,
            } => self.run(
                Op::Written {
                    channel,
                    tag,
                    count,
                },
                now,
                effects,
            )?,
            Command::Reject {
                channel,
                seqs,
                requeue,
            } => {
                let op = Op::Reject {
                    channel,
                    seqs,
                    requeue,
                };
                self.run(op, now, effects)?
            }
            Command::Get { channel, no_ack } => {
                self.run(Op::Get { channel, no_ack }, now, effects)?
            }
            Command::Purge => self.run(Op::Purge, now, effects)?,
            Command::Delete {
                if_unused,
                if_empty,
            } => {
                let op = Op::Delete {
                    if_unused,
                    if_empty,
                };
                let reply = self.run(op, now, effects)?;
                self.local.deleted(effects);
                reply
            }
            Command::Touch => self.run(Op::Touch, now, effects)?,
            Command::Tick => self.run(Op::Tick, now, effects)?,
        };
        self.settle(now, effects);
        Ok(reply)
    }

    /// `Enqueue`: the core takes the message (or refuses it), the local part holds its
    /// body, writes it or pages it out, and answers its publisher.
    fn enqueue(
        &mut self,
        message: SharedMessage,
        confirm: Option<PublishId>,
        now: u64,
        effects: &mut Vec<Effect>,
    ) -> Result<Reply, QueueError> {
        let mut outs = std::mem::take(&mut self.outs);
        let op = Op::Enqueue {
            message: message.clone(),
        };
        let reply = self.apply_op(op, now, &mut outs);
        if reply == Ok(Reply::PublishRejected) {
            if let Some(publish) = confirm {
                effects.push(Effect::Reject { publish });
            }
        }
        self.carry_out(&mut outs, Some(message), now, effects);
        self.outs = outs;
        let reply = reply?;
        self.run_proposals(now, effects);
        if let Reply::Enqueued { seq } = reply {
            self.local.after_enqueue(seq, confirm, &self.core, effects);
        }
        Ok(reply)
    }

    /// Applies a core op and carries out what it decided, then what that proposed.
    fn run(&mut self, op: Op, now: u64, effects: &mut Vec<Effect>) -> Result<Reply, QueueError> {
        let mut outs = std::mem::take(&mut self.outs);
        let reply = self.apply_op(op, now, &mut outs);
        self.carry_out(&mut outs, None, now, effects);
        self.outs = outs;
        let reply = reply?;
        self.run_proposals(now, effects);
        Ok(reply)
    }

    fn apply_op(&mut self, op: Op, now: u64, outs: &mut Vec<Out>) -> Result<Reply, QueueError> {
        #[cfg(test)]
        self.journal.push((op.clone(), now));
        if let Some(logged) = &mut self.logged {
            logged.push((op.clone(), now));
        }
        self.core.apply(op, now, outs)
    }

    /// Carries out the core's decisions (leaving `outs` empty).
    fn carry_out(
        &mut self,
        outs: &mut Vec<Out>,
        mut enqueued: Option<SharedMessage>,
        now: u64,
        effects: &mut Vec<Effect>,
    ) {
        for out in outs.drain(..) {
            if let Out::Enqueued { seq } = out {
                if let Some(message) = enqueued.take() {
                    self.local.enqueued(seq, message, &self.core);
                }
                continue;
            }
            self.local.carry_out(out, &self.core, now, effects);
        }
    }

    /// Applies what the local part proposed until it proposes nothing more.
    /// Returns whether there were any.
    fn run_proposals(&mut self, now: u64, effects: &mut Vec<Effect>) -> bool {
        let mut any = false;
        loop {
            let proposals = self.local.take_proposals();
            if proposals.is_empty() {
                return any;
            }
            any = true;
            for op in proposals {
                // Proposals are answers for what the core did: never refused.
                let mut outs = std::mem::take(&mut self.outs);
                if self.apply_op(op, now, &mut outs).is_ok() {
                    self.carry_out(&mut outs, None, now, effects);
                }
                self.outs = outs;
            }
        }
    }

    /// What every command ends with: deliveries whose bodies arrived go out, refused
    /// dead letters are tried again when due, and the bodies that are needed are asked
    /// for. Time passing is the core's too: a due retry ticks it first.
    fn settle(&mut self, now: u64, effects: &mut Vec<Effect>) {
        if self.core.is_deleted() {
            return;
        }
        self.local.retry_dead_letters(&self.core, now, effects);
        // (What the proposals change may free the line again: a get waiting for a
        // body that was lost is answered.)
        loop {
            self.local.flush_pending(&self.core, effects);
            if !self.run_proposals(now, effects) {
                break;
            }
        }
        self.local.pump_loads(&self.core, effects);
    }
}

/// Whether a command only answers for something the queue had under way (harmless
/// once the queue is deleted).
fn is_answer(command: &Command) -> bool {
    matches!(
        command,
        Command::Stored(_)
            | Command::BodiesLoaded(_)
            | Command::BodiesMissing(_)
            | Command::DeadLettered { .. }
            | Command::Tick
            | Command::ChannelDown { .. }
            | Command::Written { .. }
    )
}

#[cfg(test)]
impl QueueState {
    /// Where each live message is, and whether its body is in memory (tests).
    pub(crate) fn places(&self) -> std::collections::BTreeMap<Seq, (super::entry::Place, bool)> {
        self.core
            .records()
            .map(|(s, r)| {
                let resident = self.local.body(s).is_some_and(|b| b.message.is_some());
                (s, (r.place, resident))
            })
            .collect()
    }

    /// The replicated core (tests of determinism).
    pub(crate) fn core(&self) -> &Core {
        &self.core
    }

    /// Checks both parts and how they agree (tests).
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        self.core.check_invariants()?;
        self.local.check_invariants(&self.core)
    }
}
