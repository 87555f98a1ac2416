//! The queue actor: the thin shell that runs a [`QueueState`] and performs its effects.
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
//! - deliveries produced by one message are grouped per channel into one event;
//! - publish confirms are answered per publish batch once every message in it is
//!   confirmed or refused;
//! - time comes from the system clock, and the next `Tick` is scheduled exactly at
//!   the state's next deadline.
//!
//! A crash (panic or error) loses nothing stored: the supervisor restarts the actor,
//! which rebuilds the state from the store's index records and re-attaches the
//! consumers recorded in the queue's shared handle.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;
use warren_storage::paging::{PageFile, PageRead};
use warren_storage::{Batch, Op, Store};

use crate::delivery::{ChannelId, ChannelSink, QueueDelivery, QueueEvent, TracedMessage};
use crate::error::BrokerError;
use crate::message::{Message, SharedMessage};
use crate::queue::{
    Command, ConsumerSummary, DeleteReason, Effect, IndexRecord, PublishId, QueueConfig,
    QueueError, QueueState, QueueStats, Reply, Seq,
};
use crate::queue_memory::{MemoryClaim, QueueMemory};
use crate::remote::Home;

/// What became of one message handed to a queue.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EnqueueOutcome {
    /// As safe as promised (in memory, or fsynced for persistent on a durable queue).
    Confirmed,
    /// The queue refused it (full with reject-publish), with the reason.
    Rejected(String),
    /// The queue was deleted before it took the message: as if the message had not
    /// been routed to it.
    Gone,
}

/// A consumer as its channel registers it. Kept in the queue's shared handle so a
/// restarted queue actor re-attaches it.
#[derive(Clone)]
pub struct ConsumeRequest {
    pub tag: Arc<str>,
    pub channel: ChannelId,
    pub sink: ChannelSink,
    pub prefetch: u32,
    pub no_ack: bool,
    pub exclusive: bool,
}

/// Republishes a dead-lettered message: (exchange, routing key, message).
pub type DeadLetterFn = Arc<dyn Fn(&str, &str, SharedMessage) + Send + Sync>;
/// Asks the vhost to delete the queue (it expired, or auto-delete fired).
pub type DeleteSelfFn = Arc<dyn Fn(Arc<str>) + Send + Sync>;

/// What the queue's actor and the rest of the node share; outlives actor restarts.
pub struct QueueShared {
    pub name: Arc<str>,
    /// The registry name of the actor, e.g. `queue:/orders`.
    pub actor_name: String,
    /// The queue's storage id: its messages are keyed by (id, seq).
    pub id: u64,
    pub config: QueueConfig,
    /// The channel whose connection owns an exclusive queue.
    pub owner: Option<ChannelId>,
    pub arguments: crate::message::FieldTable,
    /// Where the queue's actor runs: here, or on another node.
    pub home: Home,
    consumers: Mutex<Vec<ConsumeRequest>>,
    stats: Mutex<QueueStats>,
    /// Incremented each time the actor starts (restarts are this minus one).
    pub incarnations: AtomicU64,
    /// Channels tracing the messages that enter the queue (the shell's `trace`).
    tracers: Mutex<Vec<(ChannelId, ChannelSink)>>,
    /// Whether `tracers` is non-empty: the publish path checks this, not the lock.
    traced: AtomicBool,
}

impl QueueShared {
    pub fn new(
        id: u64,
        config: QueueConfig,
        owner: Option<ChannelId>,
        arguments: crate::message::FieldTable,
        home: Home,
    ) -> Arc<Self> {
        let name: Arc<str> = config.name.as_str().into();
        Arc::new(QueueShared {
            actor_name: format!("queue:{}{}", vhost_prefix(&config.vhost), name),
            name,
            id,
            config,
            owner,
            arguments,
            home,
            consumers: Mutex::new(Vec::new()),
            stats: Mutex::new(QueueStats::default()),
            incarnations: AtomicU64::new(0),
            tracers: Mutex::new(Vec::new()),
            traced: AtomicBool::new(false),
        })
    }

    /// Sends `channel` a [`QueueEvent::Traced`] for every message that enters the
    /// queue from now on, until [`QueueShared::untrace`] or the channel closes.
    /// Outlives actor restarts.
    pub fn trace(&self, channel: ChannelId, sink: ChannelSink) {
        self.change_tracers(|t| {
            t.retain(|(c, _)| *c != channel);
            t.push((channel, sink));
        });
    }

    pub fn untrace(&self, channel: ChannelId) {
        self.change_tracers(|t| t.retain(|(c, _)| *c != channel));
    }

    fn change_tracers(&self, f: impl FnOnce(&mut Vec<(ChannelId, ChannelSink)>)) {
        let mut tracers = self.tracers.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut tracers);
        self.traced.store(!tracers.is_empty(), Ordering::Release);
    }

    fn emit_trace(&self, messages: &[SharedMessage]) {
        if !self.traced.load(Ordering::Acquire) {
            return;
        }
        let tracers = self.tracers.lock().unwrap_or_else(|p| p.into_inner());
        if tracers.is_empty() {
            return;
        }
        let traced: Vec<TracedMessage> = messages
            .iter()
            .map(|m| TracedMessage::of(&self.name, m))
            .collect();
        for (_, sink) in tracers.iter() {
            sink(QueueEvent::Traced(traced.clone()));
        }
    }

    /// The counters as of the actor's last step.
    pub fn stats(&self) -> QueueStats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn consumers(&self) -> std::sync::MutexGuard<'_, Vec<ConsumeRequest>> {
        self.consumers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `/` stays `/`; any other vhost name gets a `/` before the queue name.
fn vhost_prefix(vhost: &str) -> String {
    if vhost == "/" {
        "/".into()
    } else {
        format!("{vhost}/")
    }
}

/// Messages to a queue actor. Local-only: another node's messages arrive through its
/// [`QueueForwarder`](crate::remote::QueueForwarder) and this node's queue endpoint.
pub enum QueueMsg {
    Publish {
        messages: Vec<SharedMessage>,
        confirm: Option<oneshot::Sender<Vec<EnqueueOutcome>>>,
    },
    Consume {
        request: ConsumeRequest,
        reply: oneshot::Sender<Result<(), BrokerError>>,
    },
    Cancel {
        channel: ChannelId,
        tag: Arc<str>,
        reply: oneshot::Sender<Result<(), BrokerError>>,
    },
    Ack {
        channel: ChannelId,
        seqs: Vec<Seq>,
    },
    Reject {
        channel: ChannelId,
        seqs: Vec<Seq>,
        requeue: bool,
    },
    Get {
        channel: ChannelId,
        no_ack: bool,
        reply: oneshot::Sender<Result<Option<(QueueDelivery, u64)>, BrokerError>>,
    },
    ChannelDown {
        channel: ChannelId,
    },
    Purge {
        reply: oneshot::Sender<Result<u64, BrokerError>>,
    },
    Delete {
        if_unused: bool,
        if_empty: bool,
        reply: oneshot::Sender<Result<u64, BrokerError>>,
    },
    /// A redeclaration: restarts the queue's expiry timer.
    Touch,
    /// The consumers and their credit (the debug shell's `inspect`).
    Consumers {
        reply: oneshot::Sender<Result<Vec<ConsumerSummary>, BrokerError>>,
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
    /// Internal: a deadline passed.
    Tick,
}

impl ractor::Message for QueueMsg {}

/// Where the answer to a `basic.get` goes.
type GetReply = oneshot::Sender<Result<Option<(QueueDelivery, u64)>, BrokerError>>;

/// What a queue actor starts from.
#[derive(Clone)]
pub struct QueueArgs {
    pub shared: Arc<QueueShared>,
    pub store: Store,
    pub dead_letter: DeadLetterFn,
    pub delete_self: DeleteSelfFn,
    /// The node's budget for bodies kept beyond the window for consumers.
    pub memory: Arc<QueueMemory>,
}

pub struct QueueActor;

/// A publish batch waiting for its confirms.
struct PendingBatch {
    outcomes: Vec<Option<EnqueueOutcome>>,
    remaining: usize,
    reply: oneshot::Sender<Vec<EnqueueOutcome>>,
}

pub struct QueueShell {
    myself: ActorRef<QueueMsg>,
    args: QueueArgs,
    state: QueueState,
    effects: Vec<Effect>,
    /// Channel -> where its events go and which of its consumers settle nothing.
    channels: HashMap<ChannelId, (ChannelSink, HashMap<Arc<str>, bool>)>,
    /// Deliveries of the current step, per channel.
    outbox: HashMap<ChannelId, Vec<QueueDelivery>>,
    next_publish: PublishId,
    /// Publish id -> (batch id, index in batch).
    publishes: HashMap<PublishId, (u64, usize)>,
    batches: HashMap<u64, PendingBatch>,
    next_batch: u64,
    gets: HashMap<ChannelId, VecDeque<(bool, GetReply)>>,
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
    deleted: bool,
    /// What the queue holds of the node's queue memory.
    memory: MemoryClaim,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn broker_error(e: QueueError) -> BrokerError {
    BrokerError::new(e.reply_code(), e.to_string())
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
        let shared = args.shared.clone();
        let shared_memory = args.memory.clone();
        shared.incarnations.fetch_add(1, Ordering::Relaxed);
        // Rebuild from the index records only: bodies load when they are delivered.
        let store = args.store.clone();
        let id = shared.id;
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
        let state = QueueState::recover(
            shared.config.clone(),
            records,
            now_ms(),
            &mut recovery_effects,
        );
        if recovered > 0 {
            tracing::info!(queue = %shared.name, "recovered {recovered} stored messages");
        }
        let mut shell = QueueShell {
            myself,
            args,
            state,
            effects: Vec::new(),
            channels: HashMap::new(),
            outbox: HashMap::new(),
            next_publish: 1,
            publishes: HashMap::new(),
            batches: HashMap::new(),
            next_batch: 1,
            gets: HashMap::new(),
            ops: Vec::new(),
            stored: Vec::new(),
            durable_batch: false,
            pages,
            paged: Vec::new(),
            flush_scheduled: false,
            tick_at: None,
            deleted: false,
            memory: shared_memory.claim(),
        };
        for effect in recovery_effects {
            shell.perform(effect);
        }
        // Re-attach the consumers of a previous incarnation.
        let consumers = shared.consumers().clone();
        for c in consumers {
            if let Err(e) = shell.consume(c.clone(), false) {
                tracing::warn!(queue = %shared.name, tag = %c.tag, "consumer not re-attached: {e}");
            }
        }
        Ok(shell)
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        shell: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        shell.after_step(&myself);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        shell: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Whatever was gathered still goes to disk (a graceful stop loses nothing).
        if !shell.ops.is_empty() {
            let batch = Batch {
                ops: std::mem::take(&mut shell.ops),
                durable: shell.durable_batch,
            };
            let _ = shell.args.store.submit(batch).await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        shell: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            QueueMsg::Publish { messages, confirm } => shell.publish(messages, confirm),
            QueueMsg::Consume { request, reply } => {
                let _ = reply.send(shell.consume(request, true));
            }
            QueueMsg::Cancel {
                channel,
                tag,
                reply,
            } => {
                shell
                    .args
                    .shared
                    .consumers()
                    .retain(|c| !(c.channel == channel && c.tag == tag));
                let result = shell
                    .apply(Command::Cancel {
                        channel,
                        tag: tag.clone(),
                    })
                    .map(drop);
                if let Some((_, tags)) = shell.channels.get_mut(&channel) {
                    tags.remove(&tag);
                }
                let _ = reply.send(result);
            }
            QueueMsg::Ack { channel, seqs } => {
                // An ack for a message the queue no longer holds as unacked (it was
                // requeued by a restart, say) is ignored: the message is redelivered.
                if let Err(e) = shell.apply(Command::Ack { channel, seqs }) {
                    tracing::debug!(queue = %shell.args.shared.name, "ack ignored: {e}");
                }
            }
            QueueMsg::Reject {
                channel,
                seqs,
                requeue,
            } => {
                if let Err(e) = shell.apply(Command::Reject {
                    channel,
                    seqs,
                    requeue,
                }) {
                    tracing::debug!(queue = %shell.args.shared.name, "reject ignored: {e}");
                }
            }
            QueueMsg::Get {
                channel,
                no_ack,
                reply,
            } => {
                shell
                    .gets
                    .entry(channel)
                    .or_default()
                    .push_back((no_ack, reply));
                if let Err(e) = shell.apply(Command::Get { channel, no_ack }) {
                    if let Some((_, reply)) =
                        shell.gets.get_mut(&channel).and_then(|q| q.pop_back())
                    {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            QueueMsg::ChannelDown { channel } => {
                shell
                    .args
                    .shared
                    .consumers()
                    .retain(|c| c.channel != channel);
                shell.args.shared.untrace(channel);
                shell.channels.remove(&channel);
                let _ = shell.apply(Command::ChannelDown { channel });
            }
            QueueMsg::Consumers { reply } => {
                let _ = reply.send(Ok(shell.state.consumer_summaries()));
            }
            QueueMsg::Purge { reply } => {
                let result = shell.apply(Command::Purge).map(|r| match r {
                    Reply::Purged { count } => count,
                    _ => 0,
                });
                let _ = reply.send(result);
            }
            QueueMsg::Delete {
                if_unused,
                if_empty,
                reply,
            } => {
                // A queue that deleted itself (x-expires, auto-delete) has asked the
                // vhost to remove it, which lands here: the state is already deleted.
                let result = if shell.state.is_deleted() {
                    Ok(Reply::Deleted { message_count: 0 })
                } else {
                    shell.apply(Command::Delete {
                        if_unused,
                        if_empty,
                    })
                };
                let result = match result {
                    Ok(Reply::Deleted { message_count }) => {
                        shell.deleted = true;
                        if let Some(pages) = shell.pages.as_mut() {
                            pages.clear();
                        }
                        shell.ops.push(Op::DeleteQueueMessages {
                            queue: shell.args.shared.id,
                        });
                        shell.durable_batch = true;
                        shell.flush(&myself).await;
                        shell.cancel_consumers("the queue was deleted");
                        Ok(message_count)
                    }
                    Ok(_) => Ok(0),
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            QueueMsg::Touch => {
                let _ = shell.apply(Command::Touch);
            }
            QueueMsg::Crash => {
                return Err(format!("queue {} crashed on request", shell.args.shared.name).into());
            }
            QueueMsg::Flush => {
                shell.flush_scheduled = false;
                shell.flush(&myself).await;
            }
            QueueMsg::Stored(seqs) => {
                let _ = shell.apply(Command::Stored(seqs));
            }
            QueueMsg::Loaded { found, missing } => {
                if !missing.is_empty() {
                    tracing::error!(queue = %shell.args.shared.name, "{} stored bodies are missing", missing.len());
                    let _ = shell.apply(Command::BodiesMissing(missing));
                }
                if !found.is_empty() {
                    let _ = shell.apply(Command::BodiesLoaded(found));
                }
            }
            QueueMsg::Tick => {
                shell.tick_at = None;
                let _ = shell.apply(Command::Tick);
            }
        }
        shell.after_step(&myself);
        Ok(())
    }
}

impl QueueShell {
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

    fn publish(
        &mut self,
        messages: Vec<SharedMessage>,
        confirm: Option<oneshot::Sender<Vec<EnqueueOutcome>>>,
    ) {
        if self.state.is_deleted() {
            // Deleted here, and not yet removed from the routing tables everywhere.
            if let Some(confirm) = confirm {
                let _ = confirm.send(vec![EnqueueOutcome::Gone; messages.len()]);
            }
            return;
        }
        let batch_id = confirm.as_ref().map(|_| {
            let id = self.next_batch;
            self.next_batch += 1;
            id
        });
        if let (Some(id), Some(reply)) = (batch_id, confirm) {
            self.batches.insert(
                id,
                PendingBatch {
                    outcomes: vec![None; messages.len()],
                    remaining: messages.len(),
                    reply,
                },
            );
        }
        self.args.shared.emit_trace(&messages);
        for (i, message) in messages.into_iter().enumerate() {
            let publish = batch_id.map(|b| {
                let p = self.next_publish;
                self.next_publish += 1;
                self.publishes.insert(p, (b, i));
                p
            });
            match self.apply(Command::Enqueue {
                message,
                confirm: publish,
            }) {
                Ok(Reply::PublishRejected) => {
                    if let Some(p) = publish {
                        self.settle_publish(p, self.rejected_outcome());
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if let Some(p) = publish {
                        self.settle_publish(p, EnqueueOutcome::Rejected(e.text));
                    }
                }
            }
        }
        if let Some(id) = batch_id {
            self.finish_batch_if_done(id);
        }
    }

    fn rejected_outcome(&self) -> EnqueueOutcome {
        EnqueueOutcome::Rejected(format!(
            "queue '{}' in vhost '{}' is full (x-overflow: reject-publish)",
            self.args.shared.name, self.args.shared.config.vhost
        ))
    }

    fn settle_publish(&mut self, publish: PublishId, outcome: EnqueueOutcome) {
        let Some((batch_id, index)) = self.publishes.remove(&publish) else {
            return;
        };
        if let Some(batch) = self.batches.get_mut(&batch_id) {
            if batch.outcomes[index].is_none() {
                batch.outcomes[index] = Some(outcome);
                batch.remaining -= 1;
            }
        }
        self.finish_batch_if_done(batch_id);
    }

    fn finish_batch_if_done(&mut self, batch_id: u64) {
        if self
            .batches
            .get(&batch_id)
            .is_some_and(|b| b.remaining == 0)
        {
            if let Some(batch) = self.batches.remove(&batch_id) {
                let outcomes = batch
                    .outcomes
                    .into_iter()
                    .map(|o| o.unwrap_or(EnqueueOutcome::Confirmed))
                    .collect();
                let _ = batch.reply.send(outcomes);
            }
        }
    }

    fn consume(&mut self, request: ConsumeRequest, record: bool) -> Result<(), BrokerError> {
        let entry = self
            .channels
            .entry(request.channel)
            .or_insert_with(|| (request.sink.clone(), HashMap::new()));
        entry.1.insert(request.tag.clone(), request.no_ack);
        let result = self.apply(Command::Consume {
            tag: request.tag.clone(),
            channel: request.channel,
            prefetch: request.prefetch,
            no_ack: request.no_ack,
            exclusive: request.exclusive,
            priority: 0,
        });
        match result {
            Ok(_) => {
                if record {
                    self.args.shared.consumers().push(request);
                }
                Ok(())
            }
            Err(e) => {
                if let Some((_, tags)) = self.channels.get_mut(&request.channel) {
                    tags.remove(&request.tag);
                }
                Err(e)
            }
        }
    }

    fn perform(&mut self, effect: Effect) {
        let id = self.args.shared.id;
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
                        tracing::error!(queue = %self.args.shared.name, "cannot encode message {seq}: {e}");
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
                let store = self.args.store.clone();
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
                delivery_count: _,
            } => {
                let no_ack = self
                    .channels
                    .get(&channel)
                    .and_then(|(_, tags)| tags.get(&tag).copied())
                    .unwrap_or(false);
                self.outbox.entry(channel).or_default().push(QueueDelivery {
                    queue: self.args.shared.name.clone(),
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
                delivery_count: _,
                message_count,
                no_ack,
            } => {
                if let Some((_, reply)) = self.gets.get_mut(&channel).and_then(|q| q.pop_front()) {
                    let delivery = QueueDelivery {
                        queue: self.args.shared.name.clone(),
                        consumer_tag: "".into(),
                        seq,
                        message,
                        redelivered,
                        no_ack,
                    };
                    let _ = reply.send(Ok(Some((delivery, message_count))));
                }
            }
            Effect::GetEmpty { channel } => {
                if let Some((_, reply)) = self.gets.get_mut(&channel).and_then(|q| q.pop_front()) {
                    let _ = reply.send(Ok(None));
                }
            }
            Effect::Confirm { publish } => self.settle_publish(publish, EnqueueOutcome::Confirmed),
            Effect::Reject { publish } => {
                let outcome = self.rejected_outcome();
                self.settle_publish(publish, outcome);
            }
            Effect::DeadLetter {
                seq: _,
                message,
                reason: _,
                exchange,
                routing_key,
            } => (self.args.dead_letter)(&exchange, &routing_key, message),
            Effect::ConsumerActive { .. } => {}
            Effect::DeleteQueue { reason } => {
                let why = match reason {
                    DeleteReason::Expired => "expired (x-expires)",
                    DeleteReason::AutoDelete => "auto-delete: its last consumer left",
                };
                tracing::info!(queue = %self.args.shared.name, "queue deleted: {why}");
                (self.args.delete_self)(self.args.shared.name.clone());
            }
        }
    }

    /// Tells every consumer's channel that the queue ended it (AMQP
    /// `consumer_cancel_notify`), and forgets them.
    fn cancel_consumers(&mut self, reason: &str) {
        self.args.shared.consumers().clear();
        for (_, (sink, tags)) in self.channels.drain() {
            for tag in tags.keys() {
                sink(QueueEvent::ConsumerCancelled {
                    tag: tag.clone(),
                    reason: reason.to_string(),
                });
            }
        }
    }

    /// After each message: send deliveries, schedule the flush and the next tick,
    /// publish the counters, settle the queue's part of the node's queue memory.
    fn after_step(&mut self, myself: &ActorRef<QueueMsg>) {
        self.memory.hold(self.state.memory_beyond_window());
        self.state
            .set_memory_allowance(Some(self.memory.allowance()));
        for (channel, deliveries) in self.outbox.drain() {
            if let Some((sink, _)) = self.channels.get(&channel) {
                sink(QueueEvent::Deliver(deliveries));
            }
        }
        if (!self.ops.is_empty() || !self.paged.is_empty())
            && !self.flush_scheduled
            && !self.deleted
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
        *self
            .args
            .shared
            .stats
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = self.state.stats();
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
                tracing::error!(queue = %self.args.shared.name, "cannot page out message {seq}, writing it to redb: {e}");
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
        let commit = self.args.store.submit(batch);
        let me = myself.clone();
        let name = self.args.shared.name.clone();
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
        let name = self.args.shared.name.clone();
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

/// A handle on a queue: finds its actor by name, so it stays valid across restarts.
#[derive(Clone)]
pub struct QueueHandle {
    pub shared: Arc<QueueShared>,
}

impl QueueHandle {
    pub fn name(&self) -> &Arc<str> {
        &self.shared.name
    }

    fn actor(&self) -> Option<ActorRef<QueueMsg>> {
        ractor::registry::where_is(self.shared.actor_name.clone()).map(ActorRef::from)
    }

    fn unavailable(&self) -> BrokerError {
        BrokerError::queue_unavailable(&self.shared.config.vhost, &self.shared.name)
    }

    fn send(&self, msg: QueueMsg) -> Result<(), BrokerError> {
        if let Home::Remote { node, forwarder } = &self.shared.home {
            forwarder.forward(node, &self.shared.config.vhost, &self.shared.name, msg);
            return Ok(());
        }
        match self.actor() {
            Some(a) => a.cast(msg).map_err(|_| self.unavailable()),
            None => Err(self.unavailable()),
        }
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, BrokerError>>) -> QueueMsg,
    ) -> Result<T, BrokerError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx))?;
        rx.await.map_err(|_| self.unavailable())?
    }

    /// Hands messages to the queue; `confirm` answers once each is safe or refused.
    pub fn publish(
        &self,
        messages: Vec<SharedMessage>,
        confirm: Option<oneshot::Sender<Vec<EnqueueOutcome>>>,
    ) {
        // If the actor is down the confirm sender is dropped: the publisher sees the
        // messages as not confirmed, which is the truth.
        let _ = self.send(QueueMsg::Publish { messages, confirm });
    }

    pub async fn consume(&self, request: ConsumeRequest) -> Result<(), BrokerError> {
        self.ask(|reply| QueueMsg::Consume { request, reply }).await
    }

    pub async fn cancel(&self, channel: ChannelId, tag: &str) -> Result<(), BrokerError> {
        let tag: Arc<str> = tag.into();
        self.ask(|reply| QueueMsg::Cancel {
            channel,
            tag,
            reply,
        })
        .await
    }

    pub fn ack(&self, channel: ChannelId, seqs: Vec<Seq>) {
        let _ = self.send(QueueMsg::Ack { channel, seqs });
    }

    pub fn reject(&self, channel: ChannelId, seqs: Vec<Seq>, requeue: bool) {
        let _ = self.send(QueueMsg::Reject {
            channel,
            seqs,
            requeue,
        });
    }

    pub async fn get(
        &self,
        channel: ChannelId,
        no_ack: bool,
    ) -> Result<Option<(QueueDelivery, u64)>, BrokerError> {
        self.ask(|reply| QueueMsg::Get {
            channel,
            no_ack,
            reply,
        })
        .await
    }

    pub fn channel_down(&self, channel: ChannelId) {
        let _ = self.send(QueueMsg::ChannelDown { channel });
    }

    pub async fn purge(&self) -> Result<u64, BrokerError> {
        self.ask(|reply| QueueMsg::Purge { reply }).await
    }

    pub async fn delete(&self, if_unused: bool, if_empty: bool) -> Result<u64, BrokerError> {
        self.ask(|reply| QueueMsg::Delete {
            if_unused,
            if_empty,
            reply,
        })
        .await
    }

    pub fn touch(&self) {
        let _ = self.send(QueueMsg::Touch);
    }

    /// Makes the queue actor fail (its supervisor restarts it).
    /// The consumers and their credit.
    pub async fn consumers(&self) -> Result<Vec<ConsumerSummary>, BrokerError> {
        self.ask(|reply| QueueMsg::Consumers { reply }).await
    }

    pub fn crash(&self) -> Result<(), BrokerError> {
        self.send(QueueMsg::Crash)
    }

    pub fn stats(&self) -> QueueStats {
        self.shared.stats()
    }

    /// Whether the queue's actor runs on this node.
    pub fn is_local(&self) -> bool {
        matches!(self.shared.home, Home::Local)
    }

    /// The counters now: read here for a local queue, asked of the home node for a
    /// remote one.
    pub async fn current_stats(&self) -> Result<QueueStats, BrokerError> {
        match &self.shared.home {
            Home::Local => Ok(self.shared.stats()),
            Home::Remote { node, forwarder } => forwarder
                .stats(node, &self.shared.config.vhost)
                .await?
                .into_iter()
                .find(|s| *s.name == *self.shared.name)
                .map(|s| s.stats)
                .ok_or_else(|| self.unavailable()),
        }
    }
}
