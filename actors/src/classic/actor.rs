//! The classic queue's actor: the thin shell that runs a [`QueueState`] and performs
//! its effects.
//!
//! The state machine decides; this shell only does I/O and messaging:
//! - storage writes are gathered while the mailbox has more to say and committed as one
//!   batch (the shell sends itself `Flush`, which arrives after everything already
//!   queued), and the store's answer comes back as `Command::Stored`;
//! - bodies that leave memory but need not survive a restart (transient messages,
//!   every message of a non-durable queue) go to the queue's page file
//!   ([`warren_storage::paging`]), written once per flush, not to redb;
//! - bodies paged out of memory are read on a blocking thread and come back as
//!   `Command::BodiesLoaded`;
//! - deliveries of one step are grouped per channel into one event;
//! - a publish batch is answered (its confirm, its credit) once every message in it is
//!   confirmed or refused; a batch nobody waits for costs no bookkeeping;
//! - dead-lettered messages of one step are routed as one batch, and a message leaves
//!   the queue only once its targets hold it (`Command::DeadLettered`);
//! - time comes from the system clock, and the next `Tick` is scheduled exactly at
//!   the state's next deadline.
//!
//! A crash (panic or error) loses nothing stored: the supervisor restarts the actor,
//! which rebuilds the state from the store's index records and re-attaches the
//! consumers of the queue's journal.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ractor::{Actor, ActorProcessingErr, ActorRef, MessagingErr};
use tokio::sync::oneshot;
use warren_storage::paging::{PageFile, PageRead};
use warren_storage::{Batch, Op, Store};

use crate::delivery::{ChannelId, ChannelSink, QueueDelivery, QueueEvent};
use crate::error::BrokerError;
use crate::message::{FieldValue, Message, SharedMessage};
use crate::queue::{
    ConfirmReply, ConsumeRequest, ConsumerSummary, Credit, DeadLetter, DeadLettered, Enqueue,
    EnqueueOutcome, Got, HostEnv, QueueStats, Settlement,
};
use crate::queue_memory::MemoryClaim;

use super::handle::{ClassicShared, Holds};
use super::machine::fasthash::IntMap;
use super::machine::{
    Command, DeleteReason, Effect, IndexRecord, PublishId, QueueError, QueueState, Reply, Seq,
};
use super::replication::QueueLog;

/// Where a call's answer goes.
type Answer<T> = oneshot::Sender<Result<T, BrokerError>>;

/// How long a replicated queue's requests wait for it to lead (a new queue's first
/// lead, an election) before they are refused: publishes nacked, gets refused.
const LEAD_PATIENCE: Duration = Duration::from_secs(5);

/// Messages to a classic queue's actor (sent by its [`ClassicQueue`](super::ClassicQueue)
/// handle, and by the actor itself).
pub(crate) enum QueueMsg {
    Enqueue(Enqueue),
    Consume {
        request: ConsumeRequest,
        reply: Answer<()>,
    },
    Cancel {
        channel: ChannelId,
        tag: Arc<str>,
        reply: Answer<()>,
    },
    Settle {
        channel: ChannelId,
        settlement: Settlement,
        seqs: Vec<Seq>,
    },
    Written {
        channel: ChannelId,
        tag: Arc<str>,
        count: u32,
    },
    Get {
        channel: ChannelId,
        no_ack: bool,
        reply: Answer<Option<Got>>,
    },
    ChannelDown {
        channel: ChannelId,
    },
    Purge {
        reply: Answer<u64>,
    },
    Delete {
        if_unused: bool,
        if_empty: bool,
        reply: Answer<u64>,
    },
    /// A redeclaration: restarts the queue's expiry timer.
    Touch,
    /// A redeclaration that waits for the answer: alive, or deleted (404).
    Redeclared {
        reply: Answer<()>,
    },
    /// The consumers and their credit (the debug shell's `inspect`).
    Consumers {
        reply: Answer<Vec<ConsumerSummary>>,
    },
    /// Fail on purpose (the debug shell's `crash`, and tests of recovery).
    Crash,
    /// Internal: commit the storage writes gathered so far.
    Flush,
    /// Internal: storage committed these writes.
    Stored(Vec<Seq>),
    /// Internal: bodies read back from storage (or missing).
    Loaded {
        found: Vec<(Seq, SharedMessage)>,
        missing: Vec<Seq>,
    },
    /// Internal: what became of a dead-letter batch.
    DeadLettered(DeadLettered),
    /// Internal: a deadline passed.
    Tick,
    /// Internal: the log committed an append (a replicated queue): the writes it
    /// carried are done, the confirms held for it go.
    Committed {
        led: u64,
        /// Which append of that time (they count from 1).
        append: u64,
        stored: Vec<Seq>,
        confirmed: Vec<(ConfirmReply, Vec<EnqueueOutcome>)>,
    },
    /// Internal: an append to the log failed (a replicated queue).
    LogFailed {
        led: u64,
        why: String,
    },
    /// Internal: a replicated queue has waited [`LEAD_PATIENCE`] to lead (time `led`).
    LeadOverdue {
        led: u64,
    },
    /// Internal: the log answered a `lead` (a replicated queue): the state to serve
    /// from, or why this node does not serve the queue.
    Led {
        led: u64,
        outcome: Result<Box<QueueState>, String>,
    },
    /// Internal: the queue was idle when this was sent, `activity` requests ago (see
    /// [`Hibernation`](crate::queue::Hibernation)).
    HibernateCheck {
        activity: u64,
    },
    /// Internal: every request sent before the queue began to hibernate is served.
    Hibernate,
}

impl ractor::Message for QueueMsg {}

/// What a queue actor starts from.
#[derive(Clone)]
pub(crate) struct QueueArgs {
    pub shared: Arc<ClassicShared>,
    pub env: HostEnv,
    /// A replicated queue's log ([`QueueLog`]); `None` for a classic queue.
    pub log: Option<Arc<dyn QueueLog>>,
}

pub(crate) struct QueueActor;

/// A publish batch waiting for its messages' outcomes.
/// A publish batch somebody waits for. Its publishes are named `batch id << 32 |
/// index in the batch` (see [`publish_id`]), so settling one is a lookup of its batch.
struct PendingBatch {
    /// One per message while somebody waits for the outcomes (empty when only credit
    /// waits).
    outcomes: Vec<Option<EnqueueOutcome>>,
    remaining: usize,
    reply: Option<ConfirmReply>,
    /// Given back (dropped) when the batch is done.
    _credit: Option<Credit>,
}

pub(crate) struct QueueShell {
    myself: ActorRef<QueueMsg>,
    shared: Arc<ClassicShared>,
    env: HostEnv,
    state: QueueState,
    effects: Vec<Effect>,
    /// Where each consuming channel's deliveries go (the consumers themselves are in
    /// the state).
    sinks: HashMap<ChannelId, ChannelSink>,
    /// Deliveries of the current step, per channel.
    outbox: HashMap<ChannelId, Vec<QueueDelivery>>,
    batches: IntMap<u64, PendingBatch>,
    next_batch: u64,
    gets: HashMap<ChannelId, VecDeque<Answer<Option<Got>>>>,
    /// Publish batches answered during the current step, sent after it.
    confirmed: Vec<(ConfirmReply, Vec<EnqueueOutcome>)>,
    /// Dead-lettered messages of the current step, routed together after it.
    dead_letters: Vec<DeadLetter>,
    /// The queues that hold a dead letter one of its targets refused: its retry
    /// skips them (removed once all its targets hold it).
    dead_letter_holders: HashMap<u64, Vec<Arc<str>>>,
    /// Writes gathered since the last flush, and the seqs whose `Stored` they answer.
    ops: Vec<Op>,
    stored: Vec<Seq>,
    durable_batch: bool,
    /// Where transient bodies go when they leave memory (`None` if it could not be
    /// opened: they then go to redb like the others).
    pages: Option<PageFile>,
    /// Bodies appended to the page file since the last flush.
    paged: Vec<Seq>,
    flush_scheduled: bool,
    /// The deadline a `Tick` is already scheduled for.
    tick_at: Option<u64>,
    /// What the queue holds of the node's queue memory.
    memory: MemoryClaim,
    /// A replicated queue's log: its state and messages are there.
    log: Option<Arc<dyn QueueLog>>,
    /// The messages whose write is the next append to the log.
    appended: Vec<Seq>,
    /// This step's confirms wait for its append (publishes answered before their
    /// enqueue is committed: gone, refused, or delivered at once without an ack).
    hold_confirms: bool,
    /// How often this actor started leading (a replicated queue): what the log
    /// answers for appends of an earlier time concerns a state that is gone.
    led: u64,
    /// Appends made since this actor last started leading, and how many of them the
    /// log has committed (it commits them in order).
    appends: u64,
    committed_appends: u64,
    /// What a replicated queue hands out waits for the append that logs it: a leader
    /// cut off from its replicas hands nothing out, and a new leader knows everything
    /// a client got (its redelivered flag is exact). With the append it waits for.
    held: VecDeque<(u64, Held)>,
    /// `basic.get` answers of the current step (a replicated queue).
    step_gets: Vec<(Answer<Option<Got>>, Got)>,
    /// A replicated queue that asked its log to lead and waits for the answer.
    waiting: Option<Waiting>,
    /// Requests served so far (a hibernation check compares it).
    activity: u64,
    /// A `HibernateCheck` is on its way.
    check_scheduled: bool,
    /// The actor stops to hibernate, leaving this in the store (its `post_stop` lets
    /// the queue sleep).
    hibernating: Option<Holds>,
}

/// A replicated queue waiting to lead.
#[derive(Default)]
struct Waiting {
    /// Requests that came meanwhile, served once it leads.
    stash: Vec<QueueMsg>,
    /// It has waited longer than [`LEAD_PATIENCE`]: requests are refused.
    overdue: bool,
}

/// What a replicated queue's step hands out, held until its append is committed.
enum Held {
    Deliveries(ChannelId, Vec<QueueDelivery>),
    Got(Answer<Option<Got>>, Got),
}

/// The name of message `index` of batch `batch` in its `Command::Enqueue`.
fn publish_id(batch: u64, index: usize) -> PublishId {
    (batch << 32) | index as u64
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn broker_error(e: QueueError) -> BrokerError {
    BrokerError::from(e)
}

impl Actor for QueueActor {
    type Msg = QueueMsg;
    type State = QueueShell;
    type Arguments = QueueArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: QueueArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let QueueArgs { shared, env, log } = args;
        if let Some(log) = log {
            // A replicated queue: its state is in its log, taken in `post_start` (the
            // log may wait for its group; the supervisor does not wait meanwhile, and
            // what comes in waits in the mailbox).
            let state = QueueState::new(shared.config.clone(), now_ms());
            shared.started(myself.clone());
            return Ok(QueueShell::new(myself, shared, env, state, None, Some(log)));
        }
        // Rebuild from the index records only: bodies load when they are delivered.
        let store = env.store.clone();
        let id = shared.def.id;
        let (records, pages) = tokio::task::spawn_blocking(move || {
            let pages = PageFile::open(&store.paging_dir(), id);
            let mut records = Vec::new();
            let mut bad = 0u64;
            let result =
                store.for_each_index(id, |seq, bytes| {
                    match warren_storage::codec::decode::<IndexRecord>(bytes) {
                        Ok(r) => records.push((seq, r)),
                        Err(_) => bad += 1,
                    }
                });
            result.map(|()| ((records, bad), pages))
        })
        .await??;
        let (records, bad) = records;
        let pages = pages
            .map_err(|e| tracing::error!(queue = %shared.name, "cannot open the page file, transient bodies will be paged to redb: {e}"))
            .ok();
        if bad > 0 {
            tracing::error!(queue = %shared.name, "{bad} stored index records did not decode and were skipped");
        }
        let recovered = records.len();
        let mut recovery_effects = Vec::new();
        // After a hibernation that left messages, they are as they were; after
        // anything else they may have been delivered, and come back redelivered.
        let recover = if shared.take_rested() {
            QueueState::recover_rested
        } else {
            QueueState::recover
        };
        let mut state = recover(
            shared.config.clone(),
            records,
            now_ms(),
            &mut recovery_effects,
        );
        state.continue_from(shared.next_seq());
        if recovered > 0 {
            tracing::info!(queue = %shared.name, "recovered {recovered} stored messages");
        }
        shared.started(myself.clone());
        let mut shell = QueueShell::new(myself, shared, env, state, pages, None);
        for effect in recovery_effects {
            shell.perform(effect);
        }
        shell.attach_journal();
        Ok(shell)
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        shell: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if shell.log.is_some() {
            // The consumers of an incarnation that failed (nobody told them) attach
            // again once this one leads; those of one that stopped were told, and
            // consume again by themselves.
            shell.start_leading(1);
            return Ok(());
        }
        shell.after_step(&myself);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        shell: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if shell.log.is_some() {
            // Another leader takes over: the consumers consume again, from it (those
            // kept while waiting to lead too).
            let why = "the queue's leader moved to another node; consume again";
            if let Some(waiting) = shell.waiting.take() {
                // What waited for it to lead is answered first, as by a queue that
                // cannot serve now (a consume is journaled), then every journaled
                // consumer is cancelled, so that it consumes again where the queue
                // is served: a consume answered here and not cancelled would wait
                // for good.
                for message in waiting.stash {
                    shell.refuse(message);
                }
                shell.cancel_journal(why);
            } else {
                shell.cancel_consumers(why, true);
            }
            // Publishes not committed yet: their publishers are told.
            shell.nack_pending("the queue's leader stopped before the message was replicated");
        }
        // Whatever was gathered still goes to disk (a graceful stop loses nothing).
        if !shell.ops.is_empty() {
            let batch = Batch {
                ops: std::mem::take(&mut shell.ops),
                durable: shell.durable_batch,
            };
            let _ = shell.env.store.submit(batch).await;
        }
        if let Some(holds) = shell.hibernating {
            shell.shared.hibernated(holds);
        } else {
            shell.shared.stopped();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        shell: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if shell.waiting.is_none() {
            return shell.serve(&myself, message).await;
        }
        // Leading now: what waited is served, in the order it came.
        for message in shell.while_waiting(&myself, message)? {
            shell.serve(&myself, message).await?;
        }
        Ok(())
    }
}

impl QueueShell {
    /// Serves one message (the actor's `handle`, once the queue serves).
    async fn serve(
        &mut self,
        myself: &ActorRef<QueueMsg>,
        message: QueueMsg,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            QueueMsg::HibernateCheck { activity } => {
                self.check_scheduled = false;
                self.check_hibernation(myself, activity);
                return Ok(());
            }
            QueueMsg::Hibernate => {
                let holds = self.may_hibernate(&self.state.stats());
                if self.shared.finish_hibernation(myself, holds.is_some()) {
                    self.hibernating = holds;
                    myself.stop(Some(warren_supervisor::HIBERNATE_REASON.to_string()));
                } else {
                    self.after_step(myself);
                }
                return Ok(());
            }
            _ => self.activity += 1,
        }
        match message {
            QueueMsg::Enqueue(batch) => self.enqueue(batch),
            QueueMsg::Consume { request, reply } => {
                let result = self.consume(request.clone());
                if result.is_ok() {
                    self.shared.journal_consume(request);
                }
                self.answer(reply, result);
            }
            QueueMsg::Cancel {
                channel,
                tag,
                reply,
            } => {
                self.shared
                    .journal_forget(|c| c.channel == channel && c.tag == tag);
                let result = self.apply(Command::Cancel { channel, tag }).map(drop);
                self.answer(reply, result);
            }
            QueueMsg::Settle {
                channel,
                settlement,
                mut seqs,
            } => {
                // The channel checked its delivery tags; one the queue no longer holds
                // as unacked to it is from before a restart (the message went back to
                // ready and is redelivered). The rest are settled.
                seqs.retain(|&seq| self.state.is_unacked_by(channel, seq));
                let command = match settlement {
                    Settlement::Ack => Command::Ack { channel, seqs },
                    Settlement::Requeue => Command::Reject {
                        channel,
                        seqs,
                        requeue: true,
                    },
                    Settlement::DeadLetter => Command::Reject {
                        channel,
                        seqs,
                        requeue: false,
                    },
                };
                if let Err(e) = self.apply(command) {
                    tracing::debug!(queue = %self.shared.name, "settlement ignored: {e}");
                }
            }
            QueueMsg::Written {
                channel,
                tag,
                count,
            } => {
                let _ = self.apply(Command::Written {
                    channel,
                    tag,
                    count,
                });
            }
            QueueMsg::Get {
                channel,
                no_ack,
                reply,
            } => {
                self.gets.entry(channel).or_default().push_back(reply);
                if let Err(e) = self.apply(Command::Get { channel, no_ack }) {
                    if let Some(reply) = self.gets.get_mut(&channel).and_then(|q| q.pop_back()) {
                        self.answer(reply, Err(e));
                    }
                }
            }
            QueueMsg::ChannelDown { channel } => {
                self.shared.journal_forget(|c| c.channel == channel);
                self.sinks.remove(&channel);
                // Nobody is left to answer the channel's gets.
                self.gets.remove(&channel);
                let _ = self.apply(Command::ChannelDown { channel });
            }
            QueueMsg::Consumers { reply } => {
                let _ = reply.send(Ok(self.state.consumer_summaries()));
            }
            QueueMsg::Purge { reply } => {
                let result = self.apply(Command::Purge).map(|r| match r {
                    Reply::Purged { count } => count,
                    _ => 0,
                });
                self.answer(reply, result);
            }
            QueueMsg::Delete {
                if_unused,
                if_empty,
                reply,
            } => {
                let result = self.delete(if_unused, if_empty, myself).await;
                self.answer(reply, result);
            }
            QueueMsg::Touch => {
                let _ = self.apply(Command::Touch);
            }
            QueueMsg::Redeclared { reply } => {
                let result = self.apply(Command::Touch).map(drop);
                self.answer(reply, result);
            }
            QueueMsg::Crash => {
                return Err(format!("queue {} crashed on request", self.shared.name).into());
            }
            QueueMsg::Flush => {
                self.flush_scheduled = false;
                self.flush(myself).await;
            }
            QueueMsg::Stored(seqs) => {
                let _ = self.apply(Command::Stored(seqs));
            }
            QueueMsg::Loaded { found, missing } => {
                if !missing.is_empty() {
                    tracing::error!(queue = %self.shared.name, "{} stored bodies are missing", missing.len());
                    let _ = self.apply(Command::BodiesMissing(missing));
                }
                if !found.is_empty() {
                    let _ = self.apply(Command::BodiesLoaded(found));
                }
            }
            QueueMsg::DeadLettered(outcome) => {
                for seq in &outcome.done {
                    self.dead_letter_holders.remove(seq);
                }
                for (seq, target) in outcome.held_by {
                    self.dead_letter_holders
                        .entry(seq)
                        .or_default()
                        .push(target);
                }
                let _ = self.apply(Command::DeadLettered {
                    done: outcome.done,
                    refused: outcome.refused,
                });
            }
            QueueMsg::Tick => {
                self.tick_at = None;
                let _ = self.apply(Command::Tick);
            }
            QueueMsg::Committed {
                led,
                append,
                stored,
                confirmed,
            } => {
                if led == self.led {
                    if !stored.is_empty() {
                        let _ = self.apply(Command::Stored(stored));
                    }
                    self.committed_appends = self.committed_appends.max(append);
                    self.release_held();
                }
                // Committed, whatever happened since.
                self.confirmed.extend(confirmed);
            }
            QueueMsg::LogFailed { led, why } if led == self.led => {
                self.lead_again(&why);
                return Ok(());
            }
            QueueMsg::LogFailed { .. } | QueueMsg::Led { .. } | QueueMsg::LeadOverdue { .. } => {}
            QueueMsg::HibernateCheck { .. } | QueueMsg::Hibernate => {}
        }
        self.after_step(myself);
        Ok(())
    }

    fn new(
        myself: ActorRef<QueueMsg>,
        shared: Arc<ClassicShared>,
        env: HostEnv,
        state: QueueState,
        pages: Option<PageFile>,
        log: Option<Arc<dyn QueueLog>>,
    ) -> QueueShell {
        QueueShell {
            myself,
            memory: env.memory.claim(),
            shared,
            env,
            state,
            effects: Vec::new(),
            sinks: HashMap::new(),
            outbox: HashMap::new(),
            batches: IntMap::default(),
            next_batch: 1,
            gets: HashMap::new(),
            confirmed: Vec::new(),
            dead_letters: Vec::new(),
            dead_letter_holders: HashMap::new(),
            ops: Vec::new(),
            stored: Vec::new(),
            durable_batch: false,
            pages,
            paged: Vec::new(),
            flush_scheduled: false,
            tick_at: None,
            log,
            appended: Vec::new(),
            hold_confirms: false,
            led: 0,
            appends: 0,
            committed_appends: 0,
            held: VecDeque::new(),
            step_gets: Vec::new(),
            waiting: None,
            activity: 0,
            check_scheduled: false,
            hibernating: None,
        }
    }

    /// Whether the queue may stop its actor now, and what it then leaves in the
    /// store: nothing under way (no consumer, unacked message or waiting `get`, no
    /// write, read, dead-letter or confirm outstanding, no deadline), and no message
    /// or only messages a new incarnation brings back exactly from the store.
    fn may_hibernate(&self, stats: &QueueStats) -> Option<Holds> {
        if !self.is_quiet(stats) {
            return None;
        }
        if stats.ready == 0 {
            Some(Holds::Nothing)
        } else if self.state.rests_in_store() {
            Some(Holds::Stored)
        } else {
            None
        }
    }

    /// Nothing under way (see [`may_hibernate`](Self::may_hibernate)); cheap: checked
    /// after every step, with the step's counters.
    fn is_quiet(&self, stats: &QueueStats) -> bool {
        self.log.is_none()
            && !self.state.is_deleted()
            && stats.unacked == 0
            && stats.consumers == 0
            && stats.loading == 0
            && stats.writing == 0
            && stats.dead_lettering == 0
            && stats.pending_confirms == 0
            && self.state.next_deadline().is_none()
            && self.gets.values().all(VecDeque::is_empty)
            && self.batches.is_empty()
            && self.ops.is_empty()
            && self.paged.is_empty()
            && !self.flush_scheduled
            && self.dead_letters.is_empty()
            && self.dead_letter_holders.is_empty()
            && self.confirmed.is_empty()
    }

    /// Schedules a hibernation check when the queue turns idle (if it hibernates).
    fn schedule_hibernation(&mut self, myself: &ActorRef<QueueMsg>, stats: &QueueStats) {
        let Some(hibernation) = &self.shared.hibernation else {
            return;
        };
        if self.check_scheduled || self.hibernating.is_some() || !self.is_quiet(stats) {
            return;
        }
        let activity = self.activity;
        myself.send_after(hibernation.after, move || QueueMsg::HibernateCheck {
            activity,
        });
        self.check_scheduled = true;
    }

    /// A check scheduled when the queue was idle: if nothing came since, the queue
    /// begins to hibernate; if something came and it is idle again, it checks later.
    fn check_hibernation(&mut self, myself: &ActorRef<QueueMsg>, activity: u64) {
        let stats = self.state.stats();
        if activity != self.activity {
            self.schedule_hibernation(myself, &stats);
            return;
        }
        // (A queue holding what the store cannot give back as it is waits for a
        // consumer; it is checked again once something happens.)
        if self.may_hibernate(&stats).is_none() {
            return;
        }
        if !self.shared.begin_hibernation(myself, QueueMsg::Hibernate) {
            self.schedule_hibernation(myself, &stats);
        }
    }

    /// An append failed (no majority within the bound, or another leader started):
    /// what was not committed is gone with this state (its publishers get no confirm,
    /// its consumers are told, and consume again), and the queue leads again from its
    /// log, unless another node serves it now (then the actor stops).
    fn lead_again(&mut self, why: &str) {
        if self.log.is_none() {
            return;
        }
        tracing::warn!(queue = %self.shared.name, "cannot log what the queue does ({why}); leading again from its log");
        self.cancel_consumers("the queue's leader stopped; consume again", true);
        // What was not committed is gone with this state: its publishers are told (a
        // nack; the message may still be in the log, as after any nack).
        self.nack_pending(&format!(
            "the queue's leader could not replicate the message: {why}"
        ));
        let led = self.led + 1;
        let state = QueueState::new(self.shared.config.clone(), now_ms());
        *self = QueueShell::new(
            self.myself.clone(),
            self.shared.clone(),
            self.env.clone(),
            state,
            None,
            self.log.clone(),
        );
        self.start_leading(led);
    }

    /// Answers every publish batch still waiting for its outcomes (its messages' writes
    /// were not committed): a refusal stays, the rest is rejected with `why` (even
    /// `Gone`: the deletion that decided it may not be committed either). Never
    /// silence: a publisher whose confirm is dropped cannot tell a nack from a hang.
    fn nack_pending(&mut self, why: &str) {
        for (_, batch) in self.batches.drain() {
            let Some(reply) = batch.reply else {
                continue;
            };
            let outcomes = batch
                .outcomes
                .into_iter()
                .map(|outcome| match outcome {
                    Some(EnqueueOutcome::Rejected(r)) => EnqueueOutcome::Rejected(r),
                    _ => EnqueueOutcome::Rejected(why.to_string()),
                })
                .collect();
            let _ = reply.send(outcomes);
        }
    }

    /// Asks the log to lead (time `led`) in a task of its own: until it answers
    /// (`Led`), the actor serves nothing and answers at once (`while_waiting`), so a
    /// queue without a majority of its replicas refuses publishes instead of leaving
    /// them unanswered.
    fn start_leading(&mut self, led: u64) {
        let Some(log) = self.log.clone() else {
            return;
        };
        self.led = led;
        self.waiting = Some(Waiting::default());
        self.myself
            .send_after(LEAD_PATIENCE, move || QueueMsg::LeadOverdue { led });
        let me = self.myself.clone();
        let lead = log.lead(now_ms());
        tokio::spawn(async move {
            let outcome = lead.await.map(Box::new).map_err(|e| e.to_string());
            let _ = me.cast(QueueMsg::Led { led, outcome });
        });
    }

    /// A replicated queue waiting to lead. Its answer starts serving (what waited
    /// is returned, to be served next) or stops the actor (another node serves).
    /// Meanwhile requests wait for up to [`LEAD_PATIENCE`] (a new queue's first lead,
    /// an election elsewhere); after that, and for what comes later, they are
    /// answered at once as by a queue that cannot serve now: publishes nacked, gets
    /// refused, consumers kept for when it leads.
    fn while_waiting(
        &mut self,
        myself: &ActorRef<QueueMsg>,
        message: QueueMsg,
    ) -> Result<Vec<QueueMsg>, ActorProcessingErr> {
        let Some(waiting) = self.waiting.as_mut() else {
            return Ok(vec![message]);
        };
        match message {
            QueueMsg::Led { led, outcome } if led == self.led => {
                let stash = std::mem::take(&mut waiting.stash);
                self.waiting = None;
                match outcome {
                    Ok(state) => {
                        self.state = *state;
                        self.attach_journal();
                        self.after_step(myself);
                        return Ok(stash);
                    }
                    Err(e) => {
                        // Served elsewhere now: its consumers consume again there.
                        for message in stash {
                            self.refuse(message);
                        }
                        self.cancel_journal(&format!("{e}; consume again"));
                        myself.stop(Some(format!("not leading: {e}")));
                    }
                }
            }
            QueueMsg::LeadOverdue { led } if led == self.led => {
                waiting.overdue = true;
                let stash = std::mem::take(&mut waiting.stash);
                tracing::warn!(queue = %self.shared.name, "not leading after {LEAD_PATIENCE:?}: refusing publishes and gets until it leads");
                for message in stash {
                    self.refuse(message);
                }
            }
            QueueMsg::Crash => {
                return Err(format!("queue {} crashed on request", self.shared.name).into());
            }
            // Committed, whatever happened since (as in `serve`): its confirms go.
            QueueMsg::Committed { confirmed, .. } => {
                for (reply, outcomes) in confirmed {
                    let _ = reply.send(outcomes);
                }
            }
            // Of a state that is gone.
            QueueMsg::Touch
            | QueueMsg::Flush
            | QueueMsg::Stored(_)
            | QueueMsg::Loaded { .. }
            | QueueMsg::DeadLettered(_)
            | QueueMsg::Tick
            | QueueMsg::LogFailed { .. }
            | QueueMsg::LeadOverdue { .. }
            | QueueMsg::Led { .. } => {}
            request if waiting.overdue => self.refuse(request),
            request => waiting.stash.push(request),
        }
        Ok(Vec::new())
    }

    /// Answers a request as a queue that cannot serve now (it has no majority of its
    /// replicas): publishes nacked, gets and purges refused, consumers kept (attached
    /// once it leads).
    fn refuse(&mut self, message: QueueMsg) {
        let unavailable =
            || BrokerError::queue_unavailable(&self.shared.config.vhost, &self.shared.name);
        match message {
            QueueMsg::Enqueue(batch) => {
                if let Some(confirm) = batch.confirm {
                    let why = format!(
                        "queue '{}' in vhost '{}' cannot reach a majority of its replicas now",
                        self.shared.name, self.shared.config.vhost
                    );
                    let _ = confirm.send(vec![EnqueueOutcome::Rejected(why); batch.messages.len()]);
                }
            }
            QueueMsg::Consume { request, reply } => {
                self.shared.journal_consume(request);
                let _ = reply.send(Ok(()));
            }
            QueueMsg::Cancel {
                channel,
                tag,
                reply,
            } => {
                self.shared
                    .journal_forget(|c| c.channel == channel && c.tag == tag);
                let _ = reply.send(Ok(()));
            }
            QueueMsg::ChannelDown { channel } => {
                self.shared.journal_forget(|c| c.channel == channel);
            }
            QueueMsg::Get { reply, .. } => {
                let _ = reply.send(Err(unavailable()));
            }
            QueueMsg::Purge { reply } | QueueMsg::Delete { reply, .. } => {
                let _ = reply.send(Err(unavailable()));
            }
            QueueMsg::Redeclared { reply } => {
                let _ = reply.send(Ok(()));
            }
            QueueMsg::Consumers { reply } => {
                let _ = reply.send(Ok(Vec::new()));
            }
            // Settlements name deliveries of an earlier leader: their messages are
            // handed out again.
            _ => {}
        }
    }

    /// Re-attaches the consumers of a previous incarnation.
    fn attach_journal(&mut self) {
        let shared = self.shared.clone();
        for c in shared.journal() {
            if let Err(e) = self.consume(c.clone()) {
                tracing::warn!(queue = %shared.name, tag = %c.tag, "consumer not re-attached: {e}");
                shared.journal_forget(|j| j.channel == c.channel && j.tag == c.tag);
            }
        }
    }

    /// Answers a call, with the counters published first: whoever asked sees them as
    /// of its own call (a declare right after a purge counts what the purge left).
    fn answer<T>(&self, reply: Answer<T>, result: Result<T, BrokerError>) {
        self.shared.publish_stats(&self.state.stats());
        let _ = reply.send(result);
    }

    /// Applies one command and performs its effects.
    fn apply(&mut self, command: Command) -> Result<Reply, BrokerError> {
        let mut effects = std::mem::take(&mut self.effects);
        let reply = self.state.apply(command, now_ms(), &mut effects);
        for effect in effects.drain(..) {
            self.perform(effect);
        }
        self.effects = effects;
        reply.map_err(broker_error)
    }

    fn enqueue(&mut self, batch: Enqueue) {
        let Enqueue {
            messages,
            confirm,
            credit,
        } = batch;
        self.hold_confirms = self.log.is_some();
        if self.state.is_deleted() {
            // Deleted here, and not yet removed from the routing tables everywhere.
            if let Some(confirm) = confirm {
                let _ = confirm.send(vec![EnqueueOutcome::Gone; messages.len()]);
            }
            return;
        }
        // Only a batch somebody waits for (confirms, or credit) is tracked.
        let batch_id = (confirm.is_some() || credit.is_some()).then(|| {
            // Wraps after 2^32 batches: by then the batch of that id is long done.
            let id = self.next_batch & u64::from(u32::MAX);
            self.next_batch += 1;
            let outcomes = match confirm {
                Some(_) => vec![None; messages.len()],
                None => Vec::new(),
            };
            self.batches.insert(
                id,
                PendingBatch {
                    outcomes,
                    remaining: messages.len(),
                    reply: confirm,
                    _credit: credit,
                },
            );
            id
        });
        self.shared.emit_trace(&messages);
        for (i, message) in messages.into_iter().enumerate() {
            let publish = batch_id.map(|b| publish_id(b, i));
            // A refusal because the queue is full comes back as `Effect::Reject`.
            let outcome = if self.state.is_deleted() {
                // By an earlier message of the batch (see `Reply::Gone`).
                Some(EnqueueOutcome::Gone)
            } else {
                match self.apply(Command::Enqueue {
                    message,
                    confirm: publish,
                }) {
                    Ok(Reply::Gone) => Some(EnqueueOutcome::Gone),
                    Ok(_) => None,
                    Err(e) => Some(EnqueueOutcome::Rejected(e.to_string())),
                }
            };
            if let (Some(outcome), Some(p)) = (outcome, publish) {
                self.settle_publish(p, outcome);
            }
        }
        if let Some(id) = batch_id {
            self.finish_batch_if_done(id);
        }
    }

    fn rejected_outcome(&self) -> EnqueueOutcome {
        EnqueueOutcome::Rejected(format!(
            "queue '{}' in vhost '{}' is full (x-overflow: reject-publish)",
            self.shared.name, self.shared.config.vhost
        ))
    }

    fn settle_publish(&mut self, publish: PublishId, outcome: EnqueueOutcome) {
        let (batch_id, index) = (publish >> 32, (publish & u64::from(u32::MAX)) as usize);
        let Some(batch) = self.batches.get_mut(&batch_id) else {
            return;
        };
        match batch.outcomes.get_mut(index) {
            Some(slot @ None) => *slot = Some(outcome),
            Some(Some(_)) => return, // answered already
            None => {}               // nobody waits for the outcome, only the credit
        }
        batch.remaining = batch.remaining.saturating_sub(1);
        self.finish_batch_if_done(batch_id);
    }

    fn finish_batch_if_done(&mut self, batch_id: u64) {
        if self.batches.get(&batch_id).is_none_or(|b| b.remaining > 0) {
            return;
        }
        let Some(batch) = self.batches.remove(&batch_id) else {
            return;
        };
        if let Some(reply) = batch.reply {
            let outcomes = batch
                .outcomes
                .into_iter()
                .map(|o| o.unwrap_or(EnqueueOutcome::Confirmed))
                .collect();
            // Sent after the step, once the counters are published: a publisher that
            // has its confirm sees its messages counted.
            self.confirmed.push((reply, outcomes));
        }
        // The batch's credit goes back as it drops here.
    }

    fn consume(&mut self, request: ConsumeRequest) -> Result<(), BrokerError> {
        let added = !self.sinks.contains_key(&request.channel);
        if added {
            self.sinks.insert(request.channel, request.sink.clone());
        }
        if request.window > 0 {
            let _ = self.apply(Command::Window {
                channel: request.channel,
                tag: request.tag.clone(),
                limit: request.window,
            });
        }
        let result = self.apply(Command::Consume {
            tag: request.tag.clone(),
            channel: request.channel,
            prefetch: request.prefetch,
            no_ack: request.no_ack,
            exclusive: request.exclusive,
            priority: request.priority,
        });
        if result.is_err() && added {
            self.sinks.remove(&request.channel);
        }
        result.map(drop)
    }

    /// `queue.delete`: the state checks the conditions; then the stored messages go
    /// and the consumers are told. A queue that already deleted itself (`x-expires`,
    /// auto-delete) and asked the vhost to remove it lands here too.
    async fn delete(
        &mut self,
        if_unused: bool,
        if_empty: bool,
        myself: &ActorRef<QueueMsg>,
    ) -> Result<u64, BrokerError> {
        let message_count = if self.state.is_deleted() {
            0
        } else {
            match self.apply(Command::Delete {
                if_unused,
                if_empty,
            })? {
                Reply::Deleted { message_count } => message_count,
                _ => 0,
            }
        };
        if let Some(pages) = self.pages.as_mut() {
            pages.clear();
        }
        if self.log.is_none() {
            self.ops.push(Op::DeleteQueueMessages {
                queue: self.shared.def.id,
            });
            self.durable_batch = true;
            self.flush(myself).await;
        }
        self.cancel_consumers("the queue was deleted", false);
        Ok(message_count)
    }

    fn perform(&mut self, effect: Effect) {
        if self.log.is_some() && self.perform_logged(&effect) {
            return;
        }
        let id = self.shared.def.id;
        match effect {
            Effect::Store {
                seq,
                message,
                record,
                durable,
            } => {
                if !durable && self.page_out(seq, &message) {
                    return;
                }
                match (
                    warren_storage::codec::encode(&record),
                    warren_storage::codec::encode(&*message),
                ) {
                    (Ok(index), Ok(body)) => {
                        self.ops.push(Op::PutMessage {
                            queue: id,
                            seq,
                            index,
                            body,
                        });
                        self.stored.push(seq);
                        self.durable_batch |= durable;
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        tracing::error!(queue = %self.shared.name, "cannot encode message {seq}: {e}");
                    }
                }
            }
            Effect::UpdateIndex { seq, record } => {
                if self.pages.as_ref().is_some_and(|p| p.contains(seq)) {
                    return; // not recovered, so not indexed
                }
                if let Ok(index) = warren_storage::codec::encode(&record) {
                    self.ops.push(Op::UpdateIndex {
                        queue: id,
                        seq,
                        index,
                    });
                }
            }
            Effect::Remove { seq } => {
                if !self.pages.as_mut().is_some_and(|p| p.remove(seq)) {
                    self.ops.push(Op::DeleteMessage { queue: id, seq });
                }
            }
            Effect::LoadBodies { seqs } => {
                let (paged, seqs) = match &self.pages {
                    Some(pages) => pages.plan_read(&seqs),
                    None => (PageRead::default(), seqs),
                };
                let store = self.env.store.clone();
                let me = self.myself.clone();
                tokio::task::spawn_blocking(move || {
                    if !paged.is_empty() {
                        let (found, missing) = read_paged(paged, id);
                        let _ = me.cast(QueueMsg::Loaded { found, missing });
                    }
                    if !seqs.is_empty() {
                        let (found, missing) = load_bodies(&store, id, &seqs);
                        let _ = me.cast(QueueMsg::Loaded { found, missing });
                    }
                });
            }
            Effect::Deliver {
                channel,
                tag,
                seq,
                message,
                redelivered,
                no_ack,
                delivery_count,
            } => {
                let message = self.counted(message, delivery_count);
                self.outbox.entry(channel).or_default().push(QueueDelivery {
                    queue: self.shared.name.clone(),
                    consumer_tag: tag,
                    seq,
                    message,
                    redelivered,
                    no_ack,
                });
            }
            Effect::GetOk {
                channel,
                seq,
                message,
                redelivered,
                delivery_count,
                message_count,
                no_ack,
            } => {
                if let Some(reply) = self.gets.get_mut(&channel).and_then(|q| q.pop_front()) {
                    let message = self.counted(message, delivery_count);
                    let delivery = QueueDelivery {
                        queue: self.shared.name.clone(),
                        consumer_tag: "".into(),
                        seq,
                        message,
                        redelivered,
                        no_ack,
                    };
                    if self.log.is_some() {
                        self.step_gets.push((reply, (delivery, message_count)));
                    } else {
                        self.answer(reply, Ok(Some((delivery, message_count))));
                    }
                }
            }
            Effect::GetEmpty { channel } => {
                if let Some(reply) = self.gets.get_mut(&channel).and_then(|q| q.pop_front()) {
                    self.answer(reply, Ok(None));
                }
            }
            Effect::Confirm { publish } => self.settle_publish(publish, EnqueueOutcome::Confirmed),
            Effect::Reject { publish } => {
                let outcome = self.rejected_outcome();
                self.settle_publish(publish, outcome);
            }
            Effect::DeadLetter {
                seq,
                message,
                reason: _,
                exchange,
                routing_key,
            } => {
                let held_by = seq
                    .and_then(|seq| self.dead_letter_holders.get(&seq).cloned())
                    .unwrap_or_default();
                self.dead_letters.push(DeadLetter {
                    seq,
                    message,
                    exchange,
                    routing_key,
                    held_by,
                })
            }
            Effect::ConsumerActive { .. } => {}
            Effect::DeleteQueue { reason } => {
                let why = match reason {
                    DeleteReason::Expired => "expired (x-expires)",
                    DeleteReason::AutoDelete => "auto-delete: its last consumer left",
                };
                tracing::info!(queue = %self.shared.name, "queue deleted: {why}");
                (self.env.delete_self)(self.shared.name.clone());
            }
        }
    }

    /// The storage effects of a replicated queue, whose messages are in its log:
    /// a write is the next append, a body is read from the log, the rest is the log's.
    /// False for the effects every queue performs alike.
    fn perform_logged(&mut self, effect: &Effect) -> bool {
        let Some(log) = &self.log else {
            return false;
        };
        match effect {
            Effect::Store { seq, .. } => self.appended.push(*seq),
            Effect::UpdateIndex { .. } | Effect::Remove { .. } => {}
            Effect::LoadBodies { seqs } => {
                // Read from the node's store: off the actor's thread.
                let (log, me, seqs) = (log.clone(), self.myself.clone(), seqs.clone());
                tokio::task::spawn_blocking(move || {
                    let (found, missing) = log.bodies(&seqs);
                    let _ = me.cast(QueueMsg::Loaded { found, missing });
                });
            }
            _ => return false,
        }
        true
    }

    /// A replicated queue's step ends with an append of the ops it applied; the
    /// writes it carries are answered once the log has committed it.
    fn append(&mut self) {
        let Some(log) = &self.log else {
            return;
        };
        let ops = self.state.take_logged();
        let hold = std::mem::take(&mut self.hold_confirms);
        if ops.is_empty() {
            return;
        }
        let stored = std::mem::take(&mut self.appended);
        let confirmed = if hold {
            std::mem::take(&mut self.confirmed)
        } else {
            Vec::new()
        };
        let committed = log.append(ops);
        self.appends += 1;
        let (me, led, append) = (self.myself.clone(), self.led, self.appends);
        tokio::spawn(async move {
            match committed.await {
                Ok(()) => {
                    let sent = me.cast(QueueMsg::Committed {
                        led,
                        append,
                        stored,
                        confirmed,
                    });
                    // The actor stopped meanwhile: committed all the same.
                    if let Err(MessagingErr::SendErr(QueueMsg::Committed { confirmed, .. })) = sent
                    {
                        for (reply, outcomes) in confirmed {
                            let _ = reply.send(outcomes);
                        }
                    }
                }
                Err(e) => {
                    let why = e.to_string();
                    // Answered before their enqueue was committed (delivered at once,
                    // refused, gone), held for this append: not committed, so only a
                    // refusal stands; the rest is rejected.
                    for (reply, outcomes) in confirmed {
                        let outcomes = outcomes
                            .into_iter()
                            .map(|o| match o {
                                EnqueueOutcome::Rejected(r) => EnqueueOutcome::Rejected(r),
                                _ => EnqueueOutcome::Rejected(format!(
                                    "the queue's leader could not replicate the message: {why}"
                                )),
                            })
                            .collect();
                        let _ = reply.send(outcomes);
                    }
                    let _ = me.cast(QueueMsg::LogFailed { led, why });
                }
            }
        });
    }

    /// A replicated queue's step: what it handed out waits for the last append (this
    /// step's, or the one before that logged it), unless that is committed already.
    fn hold_handed_out(&mut self) {
        let wait = self.appends;
        for (channel, deliveries) in self.outbox.drain() {
            self.held
                .push_back((wait, Held::Deliveries(channel, deliveries)));
        }
        for (reply, got) in self.step_gets.drain(..) {
            self.held.push_back((wait, Held::Got(reply, got)));
        }
        self.release_held();
    }

    /// Hands out what waited for appends the log has committed, in order.
    fn release_held(&mut self) {
        while self
            .held
            .front()
            .is_some_and(|(wait, _)| *wait <= self.committed_appends)
        {
            let Some((_, held)) = self.held.pop_front() else {
                break;
            };
            match held {
                Held::Deliveries(channel, deliveries) => {
                    if let Some(sink) = self.sinks.get(&channel) {
                        sink(QueueEvent::Deliver(deliveries));
                    }
                }
                Held::Got(reply, got) => self.answer(reply, Ok(Some(got))),
            }
        }
    }

    /// The message as delivered: with `x-delivery-count` when the queue type says so
    /// and it was returned before (a copy of its properties; the body is shared).
    fn counted(&self, message: SharedMessage, delivery_count: u32) -> SharedMessage {
        if !self.shared.config.delivery_count_header || delivery_count == 0 {
            return message;
        }
        let mut counted = Message::clone(&message);
        counted
            .properties
            .headers
            .get_or_insert_with(Default::default)
            .insert(
                "x-delivery-count".into(),
                FieldValue::I64(i64::from(delivery_count)),
            );
        Arc::new(counted)
    }

    /// Tells every consumer's channel that the queue ended it (AMQP
    /// `consumer_cancel_notify`; `resumable` if the queue goes on elsewhere), and
    /// forgets them.
    fn cancel_consumers(&mut self, reason: &str, resumable: bool) {
        self.shared.journal_forget(|_| true);
        for consumer in self.state.consumer_summaries() {
            if let Some(sink) = self.sinks.get(&consumer.channel) {
                sink(QueueEvent::ConsumerCancelled {
                    tag: consumer.tag.as_str().into(),
                    reason: reason.to_string(),
                    resumable,
                });
            }
        }
        self.sinks.clear();
    }

    /// Tells the consumers of earlier incarnations, not attached to this one, that
    /// the queue goes on elsewhere, and forgets them.
    fn cancel_journal(&mut self, reason: &str) {
        for c in self.shared.journal() {
            (c.sink)(QueueEvent::ConsumerCancelled {
                tag: c.tag.clone(),
                reason: reason.to_string(),
                resumable: true,
            });
        }
        self.shared.journal_forget(|_| true);
    }

    /// After each message: send deliveries, route dead letters, schedule the flush and
    /// the next tick, publish the counters, settle the queue's part of the node's
    /// queue memory.
    fn after_step(&mut self, myself: &ActorRef<QueueMsg>) {
        self.shared.note_next_seq(self.state.next_seq());
        self.memory.hold(self.state.memory_beyond_window());
        self.state
            .set_memory_allowance(Some(self.memory.allowance()));
        if self.log.is_none() {
            for (channel, deliveries) in self.outbox.drain() {
                if let Some(sink) = self.sinks.get(&channel) {
                    sink(QueueEvent::Deliver(deliveries));
                }
            }
        }
        if !self.dead_letters.is_empty() {
            self.route_dead_letters();
        }
        if (!self.ops.is_empty() || !self.paged.is_empty())
            && !self.flush_scheduled
            && !self.state.is_deleted()
        {
            self.flush_scheduled = myself.cast(QueueMsg::Flush).is_ok();
        }
        if let Some(deadline) = self.state.next_deadline() {
            if self.tick_at.is_none_or(|t| deadline < t) {
                let wait = deadline.saturating_sub(now_ms());
                myself.send_after(Duration::from_millis(wait), || QueueMsg::Tick);
                self.tick_at = Some(deadline);
            }
        }
        self.append();
        if self.log.is_some() {
            self.hold_handed_out();
        }
        let stats = self.state.stats();
        self.shared.publish_stats(&stats);
        for (reply, outcomes) in self.confirmed.drain(..) {
            let _ = reply.send(outcomes);
        }
        self.schedule_hibernation(myself, &stats);
    }

    /// Routes this step's dead letters as one batch; the outcome of those that leave
    /// the queue comes back as `DeadLettered`.
    fn route_dead_letters(&mut self) {
        let batch = std::mem::take(&mut self.dead_letters);
        let waits = batch.iter().any(|d| d.seq.is_some());
        let routed = self.env.dead_letters.route(&self.shared.name, batch);
        let me = self.myself.clone();
        tokio::spawn(async move {
            let outcome = routed.await;
            if waits {
                let _ = me.cast(QueueMsg::DeadLettered(outcome));
            }
        });
    }

    /// Appends a body leaving memory to the page file; false if it must go to redb.
    fn page_out(&mut self, seq: Seq, message: &SharedMessage) -> bool {
        let Some(pages) = self.pages.as_mut() else {
            return false;
        };
        match pages.append(seq, |out| {
            warren_storage::codec::encode_into(&**message, out)
        }) {
            Ok(()) => {
                self.paged.push(seq);
                true
            }
            Err(e) => {
                tracing::error!(queue = %self.shared.name, "cannot page out message {seq}, writing it to redb: {e}");
                false
            }
        }
    }

    /// Commits the gathered writes; the store answers with `Stored` when durable.
    async fn flush(&mut self, myself: &ActorRef<QueueMsg>) {
        self.flush_pages(myself);
        if self.ops.is_empty() {
            return;
        }
        let batch = Batch {
            ops: std::mem::take(&mut self.ops),
            durable: std::mem::take(&mut self.durable_batch),
        };
        let stored = std::mem::take(&mut self.stored);
        let commit = self.env.store.submit(batch);
        let me = myself.clone();
        let name = self.shared.name.clone();
        tokio::spawn(async move {
            match commit.await {
                Ok(()) => {
                    if !stored.is_empty() {
                        let _ = me.cast(QueueMsg::Stored(stored));
                    }
                }
                // The messages stay in memory and unconfirmed: the publisher's confirm
                // never comes, so it republishes. Fail the actor so it restarts clean.
                Err(e) => {
                    tracing::error!(queue = %name, "storage write failed: {e}");
                    let _ = me.cast(QueueMsg::Crash);
                }
            }
        });
    }

    /// Writes the bodies appended to the page file since the last flush (one write per
    /// segment, on a blocking thread) and answers `Stored` for them.
    fn flush_pages(&mut self, myself: &ActorRef<QueueMsg>) {
        if self.paged.is_empty() {
            return;
        }
        let writes = self
            .pages
            .as_mut()
            .map(PageFile::take_writes)
            .unwrap_or_default();
        let paged = std::mem::take(&mut self.paged);
        let me = myself.clone();
        let name = self.shared.name.clone();
        tokio::task::spawn_blocking(move || {
            match writes.into_iter().try_for_each(|w| w.perform()) {
                Ok(()) => {
                    let _ = me.cast(QueueMsg::Stored(paged));
                }
                // As for a failed redb write: the bodies stay in memory, the actor
                // restarts clean.
                Err(e) => {
                    tracing::error!(queue = %name, "page file write failed: {e}");
                    let _ = me.cast(QueueMsg::Crash);
                }
            }
        });
    }
}

/// Reads bodies back from the page file.
fn read_paged(read: PageRead, queue: u64) -> (Vec<(Seq, SharedMessage)>, Vec<Seq>) {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    let seqs = read.seqs();
    let result = read.perform(
        |seq, bytes| match warren_storage::codec::decode::<Message>(bytes) {
            Ok(m) => found.push((seq, Arc::new(m))),
            Err(e) => {
                tracing::error!("paged message {seq} of queue {queue} is corrupt: {e}");
                missing.push(seq);
            }
        },
    );
    if let Err(e) = result {
        tracing::error!("cannot read paged bodies of queue {queue}: {e}");
        let got: std::collections::HashSet<Seq> = found.iter().map(|(s, _)| *s).collect();
        missing = seqs.into_iter().filter(|s| !got.contains(s)).collect();
    }
    (found, missing)
}

fn load_bodies(store: &Store, queue: u64, seqs: &[Seq]) -> (Vec<(Seq, SharedMessage)>, Vec<Seq>) {
    let mut found = Vec::with_capacity(seqs.len());
    let mut missing = Vec::new();
    match store.read_bodies(queue, seqs) {
        Ok(bodies) => {
            let mut got = std::collections::HashSet::with_capacity(bodies.len());
            for (seq, bytes) in bodies {
                match warren_storage::codec::decode::<Message>(&bytes) {
                    Ok(m) => {
                        got.insert(seq);
                        found.push((seq, Arc::new(m)));
                    }
                    Err(e) => {
                        tracing::error!("stored message {seq} of queue {queue} is corrupt: {e}")
                    }
                }
            }
            missing.extend(seqs.iter().filter(|s| !got.contains(s)));
        }
        Err(e) => {
            tracing::error!("cannot read bodies of queue {queue}: {e}");
            missing.extend_from_slice(seqs);
        }
    }
    (found, missing)
}

#[cfg(test)]
mod replicated_tests {
    //! The shell as a replicated queue's leader, on a log whose appends the test
    //! answers: no wait but for what the shell hands the log.

    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use ractor::ActorRef;
    use tokio::sync::{mpsc, oneshot};
    use warren_supervisor::{Strategy, Supervisor, SupervisorMsg, SupervisorSpec};

    use crate::classic::machine::{Op, QueueConfig, QueueState, ReplicatedQueue, Seq};
    use crate::classic::{Classic, QueueLog};
    use crate::error::BrokerError;
    use crate::message::{FieldTable, Message, SharedMessage, PERSISTENT};
    use crate::queue::{
        DeadLetter, DeadLetterRouter, DeadLettered, Enqueue, EnqueueOutcome, HostEnv, QueueDef,
        QueueRef,
    };
    use crate::queue_memory::QueueMemory;
    use crate::BoxFuture;

    /// How an append is answered.
    type AppendAnswer = oneshot::Sender<Result<(), BrokerError>>;

    /// A log that leads at once from an empty copy, and hands each append's answer to
    /// the test, in order.
    struct ScriptedLog {
        config: QueueConfig,
        appends: mpsc::UnboundedSender<AppendAnswer>,
        /// Its `lead` never answers (no majority yet).
        never_leads: bool,
    }

    impl QueueLog for ScriptedLog {
        fn lead(&self, now: u64) -> BoxFuture<'static, Result<QueueState, BrokerError>> {
            if self.never_leads {
                return Box::pin(std::future::pending());
            }
            let state = QueueState::led(&ReplicatedQueue::new(self.config.clone(), now), now);
            Box::pin(async move { Ok(state) })
        }

        fn append(&self, _ops: Vec<(Op, u64)>) -> BoxFuture<'static, Result<(), BrokerError>> {
            let (tx, rx) = oneshot::channel();
            let _ = self.appends.send(tx);
            Box::pin(async move {
                rx.await
                    .unwrap_or_else(|_| Err(BrokerError::internal("the test ended")))
            })
        }

        fn bodies(&self, seqs: &[Seq]) -> (Vec<(Seq, SharedMessage)>, Vec<Seq>) {
            (Vec::new(), seqs.to_vec())
        }
    }

    struct Nowhere;

    impl DeadLetterRouter for Nowhere {
        fn route(&self, _queue: &str, _batch: Vec<DeadLetter>) -> BoxFuture<'static, DeadLettered> {
            Box::pin(async { DeadLettered::default() })
        }
    }

    /// A replicated queue's leader (one replica, on n1) on a [`ScriptedLog`], under a
    /// supervisor of its own: its handle, and the answers of its log's appends.
    struct Leader {
        queue: QueueRef,
        appends: mpsc::UnboundedReceiver<AppendAnswer>,
        supervisor: ActorRef<SupervisorMsg>,
        store: warren_storage::Store,
        _dir: tempfile::TempDir,
    }

    impl Leader {
        /// Queue `name`'s leader; `never_leads`: its log's `lead` never answers;
        /// `write_all`: every message goes to the log.
        async fn start(name: &str, never_leads: bool, write_all: bool) -> Leader {
            let dir = tempfile::tempdir().unwrap();
            let store = warren_storage::Store::open(dir.path().join("store.redb")).unwrap();
            let def = QueueDef::durable_on_n1(name, &["n1"]);
            let mut config = Classic::config(&def, "/").unwrap();
            config.write_all = write_all;
            let (tx, appends) = mpsc::unbounded_channel();
            let log = ScriptedLog {
                config: config.clone(),
                appends: tx,
                never_leads,
            };
            let env = HostEnv {
                vhost: "/".into(),
                store: store.clone(),
                memory: QueueMemory::new(64 << 20),
                dead_letters: Arc::new(Nowhere),
                remote: None,
                delete_self: Arc::new(|_| {}),
                hibernation: None,
            };
            let hosted = Classic::host_with(&def, config, &env, Some(Arc::new(log)));
            let spec = SupervisorSpec::new(Strategy::OneForOne).child(hosted.child);
            let (supervisor, _) = Supervisor::start(format!("sup-{name}"), None, spec, None)
                .await
                .unwrap();
            Leader {
                queue: hosted.queue,
                appends,
                supervisor,
                store,
                _dir: dir,
            }
        }

        fn stop(self) {
            self.supervisor.stop(None);
            self.store.close();
        }
    }

    /// An append that fails (no majority in time, another leader started) ends the
    /// leader's state: the publishes it carried are nacked, not dropped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_append_nacks_its_publishes() {
        let mut leader = Leader::start("replicated-nack", false, true).await;
        let mut message = Message::new("", "replicated-nack", Bytes::from_static(b"m"));
        message.properties.delivery_mode = Some(PERSISTENT);
        let (batch, confirmed) = Enqueue::confirmed(vec![Arc::new(message)]);
        leader.queue.enqueue(batch);

        // (Bounds, not pauses: each resolves as soon as the shell has appended.)
        let bound = Duration::from_secs(20);
        // The new leader's own ops first (committed), then the publish's (failed).
        let leading = tokio::time::timeout(bound, leader.appends.recv())
            .await
            .unwrap()
            .unwrap();
        let _ = leading.send(Ok(()));
        let publish = tokio::time::timeout(bound, leader.appends.recv())
            .await
            .unwrap()
            .unwrap();
        let _ = publish.send(Err(BrokerError::internal("no majority of the replicas")));

        let outcomes = tokio::time::timeout(bound, confirmed)
            .await
            .unwrap()
            .expect("the confirm was dropped");
        assert!(
            matches!(outcomes.as_slice(), [EnqueueOutcome::Rejected(why)] if why.contains("no majority")),
            "{outcomes:?}"
        );
        leader.stop();
    }

    /// A leader stopped while it waits to lead (another node serves the queue now)
    /// answers the consume it holds and then cancels it, resumable: the consumer
    /// consumes again where the queue is served, instead of waiting on a consume
    /// answered here and never cancelled.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_consume_held_while_waiting_to_lead_is_cancelled_when_the_leader_stops() {
        use crate::delivery::{ChannelSink, QueueEvent};
        use crate::queue::{ConsumeRequest, Qos};

        let leader = Leader::start("replicated-waits", true, false).await;
        let (events, mut seen) = mpsc::unbounded_channel();
        let sink: ChannelSink = Arc::new(move |event: QueueEvent| {
            let _ = events.send(event);
        });
        let request = ConsumeRequest {
            tag: "c".into(),
            channel: 7,
            sink,
            prefetch: 10,
            no_ack: false,
            exclusive: false,
            priority: 0,
            origin: None,
            arguments: FieldTable::new(),
            qos: Qos::consumer(10),
            window: 0,
            records: false,
        };
        let queue = leader.queue.clone();
        let consume = queue.consume(request);
        tokio::pin!(consume);
        // Polled once: the consume is in the actor's mailbox, ahead of the drain.
        tokio::select! {
            biased;
            _ = &mut consume => panic!("answered while the leader waits to lead"),
            _ = std::future::ready(()) => {}
        }
        let name = super::super::handle::actor_name("/", "replicated-waits");
        let actor = ractor::registry::where_is(name).expect("the leader runs");
        actor.drain().unwrap();

        let bound = Duration::from_secs(20);
        tokio::time::timeout(bound, consume)
            .await
            .expect("the consume is answered")
            .expect("kept, to attach where the queue is served");
        let cancelled = tokio::time::timeout(bound, seen.recv())
            .await
            .expect("the consumer hears of it")
            .expect("an event");
        assert!(
            matches!(
                cancelled,
                QueueEvent::ConsumerCancelled { ref tag, resumable: true, .. } if &**tag == "c"
            ),
            "{cancelled:?}"
        );
        leader.stop();
    }
}
