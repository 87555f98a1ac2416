//! [`ClassicQueue`]: the classic queue behind the seam's [`Queue`] trait, and what its
//! handle and its actor share across the actor's restarts ([`ClassicShared`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use ractor::ActorRef;
use tokio::sync::oneshot;

use crate::delivery::{ChannelId, ChannelSink, QueueEvent, TracedMessage};
use crate::error::BrokerError;
use crate::message::SharedMessage;
use crate::queue::{
    ConsumeRequest, ConsumerSummary, Enqueue, Got, Queue, QueueDef, QueueStats, QueueStatus,
    Settlement,
};
use crate::BoxFuture;

use super::actor::QueueMsg;
use super::machine::QueueConfig;

/// What a classic queue's handle and its actor share; outlives the actor's restarts.
pub(crate) struct ClassicShared {
    pub def: QueueDef,
    pub name: Arc<str>,
    /// The registry name of the actor, e.g. `queue:/orders`.
    pub actor_name: String,
    pub config: QueueConfig,
    /// The running actor, set by each incarnation as it starts: the handle sends to
    /// it without a registry lookup.
    actor: ArcSwapOption<ActorRef<QueueMsg>>,
    /// The counters as of the actor's last step (atomics: no lock per step).
    stats: StatsCell,
    /// Incremented each time the actor starts (restarts are this minus one).
    pub incarnations: AtomicU64,
    /// The seq the running incarnation hands out next, as of its last step: a
    /// restarted one continues from here, so a channel's delivery tag from before the
    /// restart never names a different message.
    next_seq: AtomicU64,
    /// The consumers to re-attach when a crashed actor restarts: the classic queue's
    /// stand-in for the consumer entries a replicated queue's log holds. Written on
    /// consume, cancel and channel close only; the running state machine holds the
    /// consumers themselves.
    journal: Mutex<Vec<ConsumeRequest>>,
    /// Channels tracing the messages that enter the queue (the shell's `trace`).
    tracers: Mutex<Vec<(ChannelId, ChannelSink)>>,
    /// Whether `tracers` is non-empty: the publish path checks this, not the lock.
    traced: AtomicBool,
}

impl ClassicShared {
    pub fn new(def: QueueDef, config: QueueConfig) -> Arc<Self> {
        let name: Arc<str> = def.name.as_str().into();
        Arc::new(ClassicShared {
            actor_name: actor_name(&config.vhost, &name),
            name,
            def,
            config,
            actor: ArcSwapOption::empty(),
            stats: StatsCell::default(),
            incarnations: AtomicU64::new(0),
            next_seq: AtomicU64::new(1),
            journal: Mutex::new(Vec::new()),
            tracers: Mutex::new(Vec::new()),
            traced: AtomicBool::new(false),
        })
    }

    /// A new incarnation of the actor runs: handles send to it from now on.
    pub fn started(&self, actor: ActorRef<QueueMsg>) {
        self.incarnations.fetch_add(1, Ordering::Relaxed);
        self.actor.store(Some(Arc::new(actor)));
    }

    pub fn restarts(&self) -> u64 {
        self.incarnations.load(Ordering::Relaxed).saturating_sub(1)
    }

    /// Notes the seq the actor hands out next (before its deliveries go out).
    pub fn note_next_seq(&self, seq: u64) {
        self.next_seq.store(seq, Ordering::Relaxed);
    }

    /// The seq a restarted actor continues from.
    pub fn next_seq(&self) -> u64 {
        self.next_seq.load(Ordering::Relaxed)
    }

    pub fn publish_stats(&self, stats: &QueueStats) {
        self.stats.store(stats);
    }

    pub fn stats(&self) -> QueueStats {
        self.stats.load()
    }

    /// Records a consumer for re-attachment after a crash.
    pub fn journal_consume(&self, request: ConsumeRequest) {
        self.lock_journal().push(request);
    }

    /// Forgets consumers for re-attachment.
    pub fn journal_forget(&self, gone: impl Fn(&ConsumeRequest) -> bool) {
        self.lock_journal().retain(|c| !gone(c));
    }

    /// The consumers of earlier incarnations.
    pub fn journal(&self) -> Vec<ConsumeRequest> {
        self.lock_journal().clone()
    }

    fn lock_journal(&self) -> std::sync::MutexGuard<'_, Vec<ConsumeRequest>> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn change_tracers(&self, f: impl FnOnce(&mut Vec<(ChannelId, ChannelSink)>)) {
        let mut tracers = self.tracers.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut tracers);
        self.traced.store(!tracers.is_empty(), Ordering::Release);
    }

    pub fn untrace(&self, channel: ChannelId) {
        if self.traced.load(Ordering::Acquire) {
            self.change_tracers(|t| t.retain(|(c, _)| *c != channel));
        }
    }

    /// Shows tracing channels the messages entering the queue.
    pub fn emit_trace(&self, messages: &[SharedMessage]) {
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

    fn unavailable(&self) -> BrokerError {
        BrokerError::queue_unavailable(&self.config.vhost, &self.name)
    }

    fn send(&self, msg: QueueMsg) -> Result<(), BrokerError> {
        match &*self.actor.load() {
            Some(actor) => actor.cast(msg).map_err(|_| self.unavailable()),
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
}

/// The registry name of a queue's actor: `queue:/orders` in `/`, `queue:prod/orders`
/// in `prod`.
fn actor_name(vhost: &str, queue: &str) -> String {
    if vhost == "/" {
        format!("queue:/{queue}")
    } else {
        format!("queue:{vhost}/{queue}")
    }
}

/// A classic queue's handle (cheap to clone): sends to the current incarnation of its
/// actor, so it stays valid across restarts.
#[derive(Clone)]
pub struct ClassicQueue {
    pub(crate) shared: Arc<ClassicShared>,
}

impl ClassicQueue {
    /// How often the queue's actor was restarted.
    pub fn restarts(&self) -> u64 {
        self.shared.restarts()
    }
}

impl Queue for ClassicQueue {
    fn def(&self) -> &QueueDef {
        &self.shared.def
    }

    fn name(&self) -> &Arc<str> {
        &self.shared.name
    }

    fn enqueue(&self, batch: Enqueue) {
        // If the actor is down the batch is dropped with the message: its confirm goes
        // unanswered and its credit comes back (see `Credit`).
        let _ = self.shared.send(QueueMsg::Enqueue(batch));
    }

    fn consume(&self, request: ConsumeRequest) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(
            self.shared
                .ask(|reply| QueueMsg::Consume { request, reply }),
        )
    }

    fn cancel(&self, channel: ChannelId, tag: Arc<str>) -> BoxFuture<'_, Result<(), BrokerError>> {
        // Forgotten here too: a restart under way would otherwise re-attach it.
        self.shared
            .journal_forget(|c| c.channel == channel && c.tag == tag);
        Box::pin(self.shared.ask(move |reply| QueueMsg::Cancel {
            channel,
            tag,
            reply,
        }))
    }

    fn settle(&self, channel: ChannelId, settlement: Settlement, seqs: Vec<u64>) {
        let _ = self.shared.send(QueueMsg::Settle {
            channel,
            settlement,
            seqs,
        });
    }

    fn get(
        &self,
        channel: ChannelId,
        no_ack: bool,
    ) -> BoxFuture<'_, Result<Option<Got>, BrokerError>> {
        Box::pin(self.shared.ask(move |reply| QueueMsg::Get {
            channel,
            no_ack,
            reply,
        }))
    }

    fn channel_down(&self, channel: ChannelId) {
        self.shared.untrace(channel);
        // Forgotten here too: if the actor is restarting, the message below is lost and
        // the next incarnation would re-attach the channel's consumers.
        self.shared.journal_forget(|c| c.channel == channel);
        let _ = self.shared.send(QueueMsg::ChannelDown { channel });
    }

    fn purge(&self) -> BoxFuture<'_, Result<u64, BrokerError>> {
        Box::pin(self.shared.ask(|reply| QueueMsg::Purge { reply }))
    }

    fn delete(&self, if_unused: bool, if_empty: bool) -> BoxFuture<'_, Result<u64, BrokerError>> {
        Box::pin(self.shared.ask(move |reply| QueueMsg::Delete {
            if_unused,
            if_empty,
            reply,
        }))
    }

    fn touch(&self) {
        let _ = self.shared.send(QueueMsg::Touch);
    }

    fn redeclared(&self) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(self.shared.ask(|reply| QueueMsg::Redeclared { reply }))
    }

    fn status(&self) -> BoxFuture<'_, Result<QueueStatus, BrokerError>> {
        let status = QueueStatus {
            stats: self.shared.stats(),
            restarts: self.shared.restarts(),
            replication: None,
            serving: None,
        };
        Box::pin(async move { Ok(status) })
    }

    fn consumers(&self) -> BoxFuture<'_, Result<Vec<ConsumerSummary>, BrokerError>> {
        Box::pin(self.shared.ask(|reply| QueueMsg::Consumers { reply }))
    }

    fn trace(&self, channel: ChannelId, sink: Option<ChannelSink>) -> Result<(), BrokerError> {
        match sink {
            Some(sink) => self.shared.change_tracers(|t| {
                t.retain(|(c, _)| *c != channel);
                t.push((channel, sink));
            }),
            None => self
                .shared
                .change_tracers(|t| t.retain(|(c, _)| *c != channel)),
        }
        Ok(())
    }

    fn crash(&self) -> Result<(), BrokerError> {
        self.shared.send(QueueMsg::Crash)
    }
}

/// [`QueueStats`] in atomics: the actor stores after each step, readers load any time.
#[derive(Default)]
struct StatsCell {
    fields: [AtomicU64; 14],
}

impl StatsCell {
    fn store(&self, s: &QueueStats) {
        let values = [
            s.ready,
            s.unacked,
            s.consumers,
            s.ready_bytes,
            s.unacked_bytes,
            s.bytes_total,
            s.bytes_in_memory,
            s.messages_in_memory,
            s.paged_out,
            s.loading,
            s.dead_lettering,
            s.writing,
            s.pending_confirms,
            s.lost,
        ];
        for (field, value) in self.fields.iter().zip(values) {
            field.store(value, Ordering::Relaxed);
        }
    }

    fn load(&self) -> QueueStats {
        let v: [u64; 14] = std::array::from_fn(|i| self.fields[i].load(Ordering::Relaxed));
        QueueStats {
            ready: v[0],
            unacked: v[1],
            consumers: v[2],
            ready_bytes: v[3],
            unacked_bytes: v[4],
            bytes_total: v[5],
            bytes_in_memory: v[6],
            messages_in_memory: v[7],
            paged_out: v[8],
            loading: v[9],
            dead_lettering: v[10],
            writing: v[11],
            pending_confirms: v[12],
            lost: v[13],
        }
    }
}
