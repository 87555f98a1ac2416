//! [`StreamQueue`]: a stream behind the seam's [`Queue`] trait, and what its handle
//! and its actor share across the actor's restarts ([`StreamShared`]).
//!
//! The checks RabbitMQ makes of a stream consumer (its arguments, a prefetch, manual
//! acks, no channel-wide prefetch) are made here, before the actor is asked; what a
//! stream does not do (`basic.get`, `queue.purge`) is refused here with RabbitMQ's 540.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwapOption;
use ractor::ActorRef;
use tokio::sync::oneshot;
use warren_actors::delivery::{ChannelId, ChannelSink, QueueEvent, TracedMessage};
use warren_actors::error::{code, BrokerError};
use warren_actors::message::SharedMessage;
use warren_actors::queue::{
    ConsumeRequest, ConsumerSummary, Enqueue, Got, Queue, QueueDef, QueueStats, QueueStatus,
    Settlement, StreamInfo,
};
use warren_actors::BoxFuture;
use warren_storage::Store;

use crate::args::TYPE_NAME;
use crate::chunk::ChunkHeader;
use crate::filter::TagFilter;
use crate::group::GroupArgs;
use crate::keys::{key_hash, key_of, MAX_LOOKUP};
use crate::machine::ConsumerKey;
use crate::offset::{OffsetSpec, STREAM_OFFSET_ARG};
use crate::shell::{now_ms, StreamMsg};

/// Consumer arguments a stream refuses (RabbitMQ's).
const REFUSED_CONSUMER_ARGS: [&str; 2] = ["x-priority", "x-cancel-on-ha-failover"];

/// A consumer as a restarted actor re-attaches it: its request, the offset after the
/// last one it was sent, its group.
pub(crate) type Journaled = (ConsumeRequest, u64, Option<GroupArgs>);

/// What a stream's handle and its actor share; outlives the actor's restarts.
pub(crate) struct StreamShared {
    pub def: QueueDef,
    /// The node's store (lookups read it without the actor).
    pub store: Store,
    pub name: Arc<str>,
    pub vhost: String,
    /// The registry name of the actor, e.g. `stream:/clicks`.
    pub actor_name: String,
    actor: ArcSwapOption<ActorRef<StreamMsg>>,
    incarnations: AtomicU64,
    stats: Mutex<QueueStats>,
    /// The consumers to re-attach when a crashed actor restarts, each with the
    /// offset after the last one it was sent, and its group.
    journal: Mutex<HashMap<ConsumerKey, (u64, Journaled)>>,
    /// Journal entries made so far (re-attached in the order they came).
    journaled: AtomicU64,
    /// The seq the next delivery gets (continued by a restarted actor, so that a
    /// channel's seq from before never names another delivery).
    next_seq: AtomicU64,
    /// Each group's offset as its commits moved it (survives the actor's restarts:
    /// a crash must not lose what is not stored yet).
    commits: Mutex<HashMap<Arc<str>, u64>>,
    tracers: Mutex<Vec<(ChannelId, ChannelSink)>>,
}

impl StreamShared {
    pub fn new(def: QueueDef, vhost: &str, store: Store) -> Arc<StreamShared> {
        let name: Arc<str> = def.name.as_str().into();
        let actor_name = if vhost == "/" {
            format!("stream:/{name}")
        } else {
            format!("stream:{vhost}/{name}")
        };
        Arc::new(StreamShared {
            def,
            store,
            name,
            vhost: vhost.to_string(),
            actor_name,
            actor: ArcSwapOption::empty(),
            incarnations: AtomicU64::new(0),
            stats: Mutex::new(QueueStats::default()),
            journal: Mutex::new(HashMap::new()),
            journaled: AtomicU64::new(0),
            next_seq: AtomicU64::new(1),
            commits: Mutex::new(HashMap::new()),
            tracers: Mutex::new(Vec::new()),
        })
    }

    /// A new incarnation of the actor runs: handles send to it from now on.
    pub fn started(&self, actor: ActorRef<StreamMsg>) {
        self.incarnations.fetch_add(1, Ordering::Relaxed);
        self.actor.store(Some(Arc::new(actor)));
    }

    fn restarts(&self) -> u64 {
        self.incarnations.load(Ordering::Relaxed).saturating_sub(1)
    }

    pub fn publish_stats(
        &self,
        ready: u64,
        unacked: u64,
        consumers: u64,
        bytes: u64,
        writing: u64,
    ) {
        let mut stats = lock(&self.stats);
        stats.ready = ready;
        stats.unacked = unacked;
        stats.consumers = consumers;
        stats.ready_bytes = bytes;
        stats.bytes_total = bytes;
        stats.writing = writing;
    }

    pub fn journal_consume(&self, request: ConsumeRequest, start: u64, group: Option<GroupArgs>) {
        let key = (request.channel, request.tag.clone());
        let order = self.journaled.fetch_add(1, Ordering::Relaxed);
        lock(&self.journal).insert(key, (order, (request, start, group)));
    }

    /// A consumer outside a group was sent what comes before `next`: a restarted
    /// actor re-attaches it there. (A group member goes on from its group's offset.)
    pub fn journal_sent(&self, key: &ConsumerKey, next: u64) {
        if let Some((_, entry)) = lock(&self.journal).get_mut(key) {
            if entry.2.is_none() {
                entry.1 = next;
            }
        }
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    pub fn note_commit(&self, group: &Arc<str>, offset: u64) {
        lock(&self.commits).insert(group.clone(), offset);
    }

    pub fn commits(&self) -> Vec<(Arc<str>, u64)> {
        lock(&self.commits)
            .iter()
            .map(|(g, o)| (g.clone(), *o))
            .collect()
    }

    pub fn commit_of(&self, group: &Arc<str>) -> Option<u64> {
        lock(&self.commits).get(group).copied()
    }

    pub fn journal_forget(&self, gone: impl Fn(&ConsumerKey) -> bool) {
        lock(&self.journal).retain(|k, _| !gone(k));
    }

    /// The consumers to re-attach, in the order they first came (a group's active
    /// member stays the same).
    pub fn journal(&self) -> Vec<Journaled> {
        let mut entries: Vec<(u64, Journaled)> = lock(&self.journal).values().cloned().collect();
        entries.sort_by_key(|(order, _)| *order);
        entries.into_iter().map(|(_, j)| j).collect()
    }

    pub fn emit_trace(&self, messages: &[SharedMessage]) {
        let tracers = lock(&self.tracers);
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

    /// `queue 's1' in vhost '/'`, as RabbitMQ's texts name a queue.
    fn named(&self) -> String {
        format!("queue '{}' in vhost '{}'", self.name, self.vhost)
    }

    fn unavailable(&self) -> BrokerError {
        BrokerError::queue_unavailable(&self.vhost, &self.name)
    }

    fn send(&self, msg: StreamMsg) -> Result<(), BrokerError> {
        match &*self.actor.load() {
            Some(actor) => actor.cast(msg).map_err(|_| self.unavailable()),
            None => Err(self.unavailable()),
        }
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, BrokerError>>) -> StreamMsg,
    ) -> Result<T, BrokerError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx))?;
        rx.await.map_err(|_| self.unavailable())?
    }

    /// RabbitMQ's checks of a stream consumer, in its order (then Warren's of its
    /// group); the start it asked for and its group.
    fn check_consumer(
        &self,
        request: &ConsumeRequest,
    ) -> Result<(OffsetSpec, Option<GroupArgs>), BrokerError> {
        if let Some(arg) = REFUSED_CONSUMER_ARGS
            .iter()
            .find(|a| request.arguments.contains_key(**a))
        {
            return Err(BrokerError::precondition_failed(format!(
                "invalid arg '{arg}' for {} of queue type {TYPE_NAME}",
                self.named()
            )));
        }
        let spec = OffsetSpec::of(&request.arguments, now_ms()).map_err(|why| {
            BrokerError::precondition_failed(format!(
                "invalid arg '{STREAM_OFFSET_ARG}' for {}: {why}",
                self.named()
            ))
        })?;
        if request.qos.consumer == 0 {
            return Err(BrokerError::precondition_failed(format!(
                "consumer prefetch count is not set for '{}'",
                self.named()
            )));
        }
        if request.no_ack {
            return Err(BrokerError::new(
                code::NOT_IMPLEMENTED,
                format!(
                    "automatic acknowledgement not supported by stream queues {}",
                    self.named()
                ),
            ));
        }
        if request.qos.channel > 0 {
            return Err(BrokerError::new(
                code::NOT_IMPLEMENTED,
                format!("{} does not support global qos", self.named()),
            ));
        }
        TagFilter::of(&request.arguments).map_err(|(arg, why)| {
            BrokerError::precondition_failed(format!(
                "invalid arg '{arg}' for {}: {why}",
                self.named()
            ))
        })?;
        let group = GroupArgs::of(&request.arguments).map_err(|(arg, why)| {
            BrokerError::precondition_failed(format!(
                "invalid arg '{arg}' for {}: {why}",
                self.named()
            ))
        })?;
        Ok((spec, group))
    }

    /// RabbitMQ's 540 for what a stream does not do.
    pub fn not_supported(&self, what: &str) -> BrokerError {
        BrokerError::new(
            code::NOT_IMPLEMENTED,
            format!("{what} not supported by stream queues {}", self.named()),
        )
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A stream's handle (cheap to clone): sends to the current incarnation of its actor.
#[derive(Clone)]
pub struct StreamQueue {
    pub(crate) shared: Arc<StreamShared>,
}

impl Queue for StreamQueue {
    fn def(&self) -> &QueueDef {
        &self.shared.def
    }

    fn name(&self) -> &Arc<str> {
        &self.shared.name
    }

    fn enqueue(&self, batch: Enqueue) {
        // If the actor is down the batch drops: its confirm goes unanswered and its
        // credit comes back.
        let _ = self.shared.send(StreamMsg::Enqueue(batch));
    }

    fn consume(&self, request: ConsumeRequest) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            let (spec, group) = self.shared.check_consumer(&request)?;
            self.shared
                .ask(|reply| StreamMsg::Consume {
                    request,
                    spec,
                    group,
                    reply,
                })
                .await
        })
    }

    fn cancel(&self, channel: ChannelId, tag: Arc<str>) -> BoxFuture<'_, Result<(), BrokerError>> {
        let key: ConsumerKey = (channel, tag);
        self.shared.journal_forget(|k| *k == key);
        Box::pin(
            self.shared
                .ask(move |reply| StreamMsg::Cancel { key, reply }),
        )
    }

    fn settle(&self, channel: ChannelId, _settlement: Settlement, seqs: Vec<u64>) {
        // Whatever the kind, a settled delivery gives its consumer credit back: acks
        // do not remove messages from a stream. (Clients' nacks and rejects are
        // refused before they get here; deliveries a channel gives back come here.)
        let _ = self.shared.send(StreamMsg::Settle { channel, seqs });
    }

    fn get(
        &self,
        _channel: ChannelId,
        _no_ack: bool,
    ) -> BoxFuture<'_, Result<Option<Got>, BrokerError>> {
        let refused = self.shared.not_supported("basic.get");
        Box::pin(async move { Err(refused) })
    }

    fn channel_down(&self, channel: ChannelId) {
        lock(&self.shared.tracers).retain(|(c, _)| *c != channel);
        self.shared.journal_forget(|(c, _)| *c == channel);
        let _ = self.shared.send(StreamMsg::ChannelDown { channel });
    }

    fn purge(&self) -> BoxFuture<'_, Result<u64, BrokerError>> {
        let refused = self.shared.not_supported("queue.purge");
        Box::pin(async move { Err(refused) })
    }

    fn delete(&self, _if_unused: bool, _if_empty: bool) -> BoxFuture<'_, Result<u64, BrokerError>> {
        // RabbitMQ ignores if-unused and if-empty for streams.
        Box::pin(self.shared.ask(|reply| StreamMsg::Delete { reply }))
    }

    fn touch(&self) {}

    fn status(&self) -> BoxFuture<'_, Result<QueueStatus, BrokerError>> {
        let status = QueueStatus {
            stats: *lock(&self.shared.stats),
            restarts: self.shared.restarts(),
            replication: None,
            serving: None,
        };
        Box::pin(async move { Ok(status) })
    }

    fn consumers(&self) -> BoxFuture<'_, Result<Vec<ConsumerSummary>, BrokerError>> {
        Box::pin(self.shared.ask(|reply| StreamMsg::Consumers { reply }))
    }

    fn trace(&self, channel: ChannelId, sink: Option<ChannelSink>) -> Result<(), BrokerError> {
        let mut tracers = lock(&self.shared.tracers);
        tracers.retain(|(c, _)| *c != channel);
        if let Some(sink) = sink {
            tracers.push((channel, sink));
        }
        Ok(())
    }

    fn stream_info(&self) -> BoxFuture<'_, Result<StreamInfo, BrokerError>> {
        Box::pin(self.shared.ask(|reply| StreamMsg::Info { reply }))
    }

    fn lookup(
        &self,
        key: String,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(u64, SharedMessage)>, BrokerError>> {
        let store = self.shared.store.clone();
        let id = self.shared.def.id;
        Box::pin(async move {
            tokio::task::spawn_blocking(move || find_by_key(&store, id, &key, limit))
                .await
                .map_err(|e| BrokerError::internal(format!("the lookup failed: {e}")))?
        })
    }

    fn crash(&self) -> Result<(), BrokerError> {
        self.shared.send(StreamMsg::Crash)
    }
}

/// The messages of partition `id` published with `key`, from its key index: the
/// offsets its hash names, each message read and its key checked (hashes collide).
fn find_by_key(
    store: &Store,
    id: u64,
    key: &str,
    limit: usize,
) -> Result<Vec<(u64, SharedMessage)>, BrokerError> {
    let failed =
        |e: &dyn std::fmt::Display| BrokerError::internal(format!("the lookup failed: {e}"));
    let limit = limit.clamp(1, MAX_LOOKUP);
    let offsets = store
        .partition_key_offsets(id, key_hash(key.as_bytes()), MAX_LOOKUP)
        .map_err(|e| failed(&e))?;
    let mut found = Vec::new();
    let mut chunk: Option<(ChunkHeader, Vec<SharedMessage>)> = None;
    for offset in offsets {
        let held = chunk
            .as_ref()
            .is_some_and(|(h, _)| h.first <= offset && offset < h.next());
        if !held {
            // The chunk that holds it (retention may have dropped it meanwhile).
            chunk = match store
                .partition_chunks(id, offset, 1)
                .map_err(|e| failed(&e))?
                .first()
            {
                Some((_, record)) => Some(crate::chunk::decode(record).map_err(|e| failed(&e))?),
                None => None,
            };
        }
        let Some((header, messages)) = &chunk else {
            continue;
        };
        if offset < header.first || offset >= header.next() {
            continue;
        }
        let message = &messages[(offset - header.first) as usize];
        if key_of(message) == Some(key) {
            found.push((offset, crate::shell::with_offset(message, offset)));
            if found.len() >= limit {
                break;
            }
        }
    }
    Ok(found)
}
