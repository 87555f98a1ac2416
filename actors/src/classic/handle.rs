//! [`ClassicQueue`]: the classic queue behind the seam's [`Queue`] trait, and what its
//! handle and its actor share across the actor's restarts ([`ClassicShared`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use ractor::{ActorRef, MessagingErr};
use tokio::sync::oneshot;

use crate::delivery::{ChannelId, ChannelSink, QueueEvent, TracedMessage};
use crate::error::BrokerError;
use crate::message::SharedMessage;
use crate::queue::{
    ConsumeRequest, ConsumerSummary, Enqueue, EnqueueOutcome, Got, Hibernation, Queue, QueueDef,
    QueueStats, QueueStatus, Settlement,
};
use crate::BoxFuture;

use super::actor::QueueMsg;
use super::machine::QueueConfig;

/// Where a classic queue's requests go: its running actor, or, while it has none,
/// a buffer that the next actor takes in order.
///
/// A queue that hibernates ([`Hibernation`]) moves `Running → Hibernating → Asleep`
/// as its actor stops, and `Asleep → Waking → Running` when a request comes. The
/// write lock is what makes that safe: a sender casts under the read lock, so once
/// the actor has turned the slot to `Hibernating` under the write lock, everything
/// cast before is in its mailbox ahead of its `Hibernate` marker, and everything
/// after is buffered here.
pub(crate) enum Slot {
    /// No actor has started yet (the node starting, or a queue that does not
    /// hibernate before its actor's first start): requests are refused (unavailable).
    Unstarted,
    /// No actor, and none needed until a request comes; what the queue holds.
    Asleep { holds: Holds },
    /// An actor is starting (the `n`th wake of the queue); the requests that came
    /// meanwhile, in order.
    Waking(u64, Vec<QueueMsg>),
    /// The actor serving the queue.
    Running(ActorRef<QueueMsg>),
    /// The actor is about to hibernate: it serves what its mailbox holds, then stops
    /// or goes on; what came since, in order.
    Hibernating(ActorRef<QueueMsg>, Vec<QueueMsg>),
}

/// What a sleeping queue holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Holds {
    /// Nothing: `get`, `purge`, listings and declarations are answered without an
    /// actor.
    Nothing,
    /// Messages, every one in the store as it was (its counts are those the actor
    /// published last): listings and declarations are answered without an actor.
    Stored,
    /// Not known: the node has not looked at the store for it since it started.
    Unknown,
}

/// What a classic queue's handle and its actor share; outlives the actor's restarts.
pub(crate) struct ClassicShared {
    pub def: QueueDef,
    pub name: Arc<str>,
    /// The registry name of the actor, e.g. `queue:/orders`.
    pub actor_name: String,
    pub config: QueueConfig,
    /// Where requests go (see [`Slot`]); set by each incarnation of the actor as it
    /// starts, so the handle sends without a registry lookup.
    slot: RwLock<Slot>,
    /// How the queue hibernates, when it does (`None`: its actor always runs).
    pub hibernation: Option<Hibernation>,
    /// The counters as of the actor's last step (atomics: no lock per step).
    stats: StatsCell,
    /// Incarnations of the actor that replaced one that failed or was stopped (a
    /// start after a hibernation is not a restart).
    restarts: AtomicU64,
    /// The next incarnation starts from a hibernation that left messages in the
    /// store: it recovers them as they were, not as redelivered.
    rested: AtomicBool,
    /// Wakes so far: names each `Waking`, so a late answer to one wake never
    /// touches the next.
    wakes: AtomicU64,
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
    /// A queue's shared half. With `hibernation`, the queue starts asleep (its
    /// supervisor leaves it dormant) until [`Queue::found`] or a request says more.
    pub fn new(def: QueueDef, config: QueueConfig, hibernation: Option<Hibernation>) -> Arc<Self> {
        let name: Arc<str> = def.name.as_str().into();
        let slot = if hibernation.is_some() {
            Slot::Asleep {
                holds: Holds::Unknown,
            }
        } else {
            Slot::Unstarted
        };
        Arc::new(ClassicShared {
            actor_name: actor_name(&config.vhost, &name),
            name,
            def,
            config,
            slot: RwLock::new(slot),
            hibernation,
            stats: StatsCell::default(),
            restarts: AtomicU64::new(0),
            wakes: AtomicU64::new(0),
            rested: AtomicBool::new(false),
            next_seq: AtomicU64::new(1),
            journal: Mutex::new(Vec::new()),
            tracers: Mutex::new(Vec::new()),
            traced: AtomicBool::new(false),
        })
    }

    fn read_slot(&self) -> std::sync::RwLockReadGuard<'_, Slot> {
        self.slot.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_slot(&self) -> std::sync::RwLockWriteGuard<'_, Slot> {
        self.slot.write().unwrap_or_else(|p| p.into_inner())
    }

    /// A new incarnation of the actor runs: requests go to it from now on, those
    /// buffered while it started first, in order. Called from its `pre_start` (its
    /// mailbox takes them; it serves them once started).
    pub fn started(&self, actor: ActorRef<QueueMsg>) {
        let mut slot = self.write_slot();
        let before = std::mem::replace(&mut *slot, Slot::Running(actor.clone()));
        let waiting = match before {
            Slot::Running(_) => {
                self.restarts.fetch_add(1, Ordering::Relaxed);
                Vec::new()
            }
            Slot::Hibernating(_, waiting) => {
                self.restarts.fetch_add(1, Ordering::Relaxed);
                waiting
            }
            Slot::Waking(_, waiting) => waiting,
            Slot::Unstarted | Slot::Asleep { .. } => Vec::new(),
        };
        for message in waiting {
            let _ = actor.cast(message);
        }
    }

    /// What the queue holds if it sleeps (`None`: it has an actor, or one is on its
    /// way). The supervisor leaves a sleeping queue's actor unstarted.
    pub fn asleep(&self) -> Option<Holds> {
        match *self.read_slot() {
            Slot::Asleep { holds } => Some(holds),
            _ => None,
        }
    }

    /// Whether the running incarnation starts from a hibernation that left messages
    /// in the store (they come back as they were); cleared as it is read.
    pub fn take_rested(&self) -> bool {
        self.rested.swap(false, Ordering::AcqRel)
    }

    /// The store holds no message of the queue (declared now, or found so at start).
    pub fn found_empty(&self) {
        let mut slot = self.write_slot();
        if let Slot::Asleep { holds } = &mut *slot {
            if *holds == Holds::Unknown {
                *holds = Holds::Nothing;
            }
        }
    }

    /// The actor, idle for long enough, hibernates: from now on requests wait here,
    /// and `Hibernate`, cast now under the lock, reaches it after every request that
    /// came before. False when the slot is not its own (it is being replaced).
    pub fn begin_hibernation(&self, actor: &ActorRef<QueueMsg>, marker: QueueMsg) -> bool {
        let mut slot = self.write_slot();
        let ours = matches!(&*slot, Slot::Running(a) if a.get_id() == actor.get_id());
        if !ours || actor.cast(marker).is_err() {
            return false;
        }
        *slot = Slot::Hibernating(actor.clone(), Vec::new());
        true
    }

    /// The `Hibernate` marker arrived: with `idle` and nothing new, the actor stops
    /// (true; the slot stays `Hibernating` until its `post_stop`); otherwise it goes
    /// on, and what waited is cast to it in order.
    pub fn finish_hibernation(&self, actor: &ActorRef<QueueMsg>, idle: bool) -> bool {
        let mut slot = self.write_slot();
        let Slot::Hibernating(ours, waiting) = &mut *slot else {
            return false;
        };
        if ours.get_id() != actor.get_id() {
            return false;
        }
        if idle && waiting.is_empty() {
            return true;
        }
        let waiting = std::mem::take(waiting);
        *slot = Slot::Running(actor.clone());
        for message in waiting {
            let _ = actor.cast(message);
        }
        false
    }

    /// The hibernating actor stopped (its `post_stop`), holding `holds`: the queue
    /// sleeps, or, if requests came meanwhile, wakes at once.
    pub fn hibernated(self: &Arc<Self>, holds: Holds) {
        self.rested.store(holds == Holds::Stored, Ordering::Release);
        let mut slot = self.write_slot();
        let Slot::Hibernating(_, waiting) = &mut *slot else {
            return;
        };
        if waiting.is_empty() {
            *slot = Slot::Asleep { holds };
            return;
        }
        let waiting = std::mem::take(waiting);
        let n = self.wakes.fetch_add(1, Ordering::Relaxed);
        *slot = Slot::Waking(n, waiting);
        drop(slot);
        self.wake(n, holds);
    }

    /// The actor stopped for another reason than hibernation (the node or its
    /// supervisor stopping): requests that waited for it are dropped (their callers
    /// see the queue unavailable), and later ones fail as for any stopped actor.
    pub fn stopped(&self) {
        let waiting = {
            let mut slot = self.write_slot();
            match &mut *slot {
                Slot::Hibernating(actor, waiting) => {
                    let waiting = std::mem::take(waiting);
                    *slot = Slot::Running(actor.clone());
                    waiting
                }
                _ => Vec::new(),
            }
        };
        drop(waiting);
    }

    /// Starts the sleeping actor (the slot is `Waking(n, ..)`); if that fails, the
    /// requests that waited are dropped and the queue sleeps again.
    fn wake(self: &Arc<Self>, n: u64, holds: Holds) {
        let Some(hibernation) = self.hibernation.clone() else {
            return;
        };
        let shared = self.clone();
        tokio::spawn(async move {
            let result = (hibernation.wake)(shared.actor_name.clone()).await;
            let waiting = {
                let mut slot = shared.write_slot();
                match &mut *slot {
                    // Started, the actor took what waited; or it never came.
                    Slot::Waking(m, waiting) if *m == n => {
                        let waiting = std::mem::take(waiting);
                        *slot = Slot::Asleep { holds };
                        waiting
                    }
                    _ => Vec::new(),
                }
            };
            if !waiting.is_empty() || result.is_err() {
                let why = result.err().map(|e| e.to_string()).unwrap_or_default();
                tracing::error!(queue = %shared.name, "the queue's actor did not start: {why}");
            }
            drop(waiting);
        });
    }

    /// Starts the sleeping actor (if it sleeps) and completes once it runs.
    pub async fn wake_now(self: &Arc<Self>) {
        let (tx, rx) = oneshot::channel();
        if self.send(QueueMsg::Consumers { reply: tx }).is_ok() {
            let _ = rx.await;
        }
    }

    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
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

    /// Sends `msg` to the actor, waking it if it sleeps.
    fn send(self: &Arc<Self>, msg: QueueMsg) -> Result<(), BrokerError> {
        self.try_send(msg).map_err(|_| self.unavailable())
    }

    /// [`Self::send`], with the message given back when no actor took it (none has
    /// started yet, or it stopped), when it can be: its sender answers it.
    fn try_send(self: &Arc<Self>, msg: QueueMsg) -> Result<(), Option<QueueMsg>> {
        fn refused(e: MessagingErr<QueueMsg>) -> Option<QueueMsg> {
            match e {
                MessagingErr::SendErr(msg) => Some(msg),
                _ => None,
            }
        }
        if let Slot::Running(actor) = &*self.read_slot() {
            return actor.cast(msg).map_err(refused);
        }
        let mut slot = self.write_slot();
        match &mut *slot {
            Slot::Running(actor) => actor.cast(msg).map_err(refused),
            Slot::Waking(_, waiting) | Slot::Hibernating(_, waiting) => {
                waiting.push(msg);
                Ok(())
            }
            Slot::Asleep { holds } => {
                let holds = *holds;
                let n = self.wakes.fetch_add(1, Ordering::Relaxed);
                *slot = Slot::Waking(n, vec![msg]);
                drop(slot);
                self.wake(n, holds);
                Ok(())
            }
            Slot::Unstarted => Err(Some(msg)),
        }
    }

    /// Sends `msg` unless the queue sleeps: what only matters to a running actor
    /// (a settlement or a channel's end concerns deliveries a sleeping queue has none
    /// of).
    fn send_if_awake(self: &Arc<Self>, msg: QueueMsg) {
        match &*self.read_slot() {
            Slot::Running(actor) => {
                let _ = actor.cast(msg);
                return;
            }
            Slot::Asleep { .. } => return,
            _ => {}
        }
        let _ = self.send(msg);
    }

    async fn ask<T>(
        self: &Arc<Self>,
        make: impl FnOnce(oneshot::Sender<Result<T, BrokerError>>) -> QueueMsg,
    ) -> Result<T, BrokerError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx))?;
        rx.await.map_err(|_| self.unavailable())?
    }
}

/// The registry name of a queue's actor: `queue:/orders` in `/`, `queue:prod/orders`
/// in `prod`.
pub(crate) fn actor_name(vhost: &str, queue: &str) -> String {
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
        // If no actor takes the batch (none started yet, or it stopped), its publisher
        // is told: a nack, never silence. Its credit comes back as it drops.
        if let Err(Some(QueueMsg::Enqueue(batch))) = self.shared.try_send(QueueMsg::Enqueue(batch))
        {
            if let Some(confirm) = batch.confirm {
                let why = self.shared.unavailable().to_string();
                let _ = confirm.send(vec![EnqueueOutcome::Rejected(why); batch.messages.len()]);
            }
        }
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
        if self.shared.asleep().is_some() {
            // A sleeping queue has no consumer.
            return Box::pin(async { Ok(()) });
        }
        Box::pin(self.shared.ask(move |reply| QueueMsg::Cancel {
            channel,
            tag,
            reply,
        }))
    }

    fn settle(&self, channel: ChannelId, settlement: Settlement, seqs: Vec<u64>) {
        self.shared.send_if_awake(QueueMsg::Settle {
            channel,
            settlement,
            seqs,
        });
    }

    fn written(&self, channel: ChannelId, tag: Arc<str>, count: u32) {
        self.shared.send_if_awake(QueueMsg::Written {
            channel,
            tag,
            count,
        });
    }

    fn get(
        &self,
        channel: ChannelId,
        no_ack: bool,
    ) -> BoxFuture<'_, Result<Option<Got>, BrokerError>> {
        if self.shared.asleep() == Some(Holds::Nothing) {
            return Box::pin(async { Ok(None) });
        }
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
        self.shared.send_if_awake(QueueMsg::ChannelDown { channel });
    }

    fn purge(&self) -> BoxFuture<'_, Result<u64, BrokerError>> {
        if self.shared.asleep() == Some(Holds::Nothing) {
            return Box::pin(async { Ok(0) });
        }
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
        // A queue that sleeps has no expiry timer to restart (one with `x-expires`
        // never sleeps).
        self.shared.send_if_awake(QueueMsg::Touch);
    }

    fn redeclared(&self) -> BoxFuture<'_, Result<(), BrokerError>> {
        if self.shared.asleep().is_some() {
            // Alive: only an auto-delete queue's last consumer deletes it, and a
            // sleeping queue has none.
            return Box::pin(async { Ok(()) });
        }
        Box::pin(self.shared.ask(|reply| QueueMsg::Redeclared { reply }))
    }

    fn status(&self) -> BoxFuture<'_, Result<QueueStatus, BrokerError>> {
        Box::pin(async move {
            if self.shared.asleep() == Some(Holds::Unknown) {
                // Not looked at since the node started: its counters are its actor's.
                self.shared.wake_now().await;
            }
            Ok(QueueStatus {
                stats: self.shared.stats(),
                restarts: self.shared.restarts(),
                replication: None,
                serving: None,
            })
        })
    }

    fn consumers(&self) -> BoxFuture<'_, Result<Vec<ConsumerSummary>, BrokerError>> {
        if self.shared.asleep().is_some() {
            return Box::pin(async { Ok(Vec::new()) });
        }
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

    fn found(&self, stored: bool) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if self.shared.hibernation.is_none() {
                return;
            }
            if stored {
                self.shared.wake_now().await;
            } else {
                self.shared.found_empty();
            }
        })
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::{ClassicQueue, ClassicShared};
    use crate::classic::machine::QueueConfig;
    use crate::message::Message;
    use crate::queue::{Enqueue, EnqueueOutcome, Queue, QueueDef};

    /// A publish that reaches a queue before its actor has started (a mirrored queue
    /// whose leader has not started yet) is answered with a nack, not dropped.
    #[tokio::test]
    async fn a_publish_no_actor_takes_is_nacked() {
        let def = QueueDef::durable_on_n1("q", &[]);
        let queue = ClassicQueue {
            shared: ClassicShared::new(def, QueueConfig::new("q", "/"), None),
        };
        let message = Arc::new(Message::new("", "q", Bytes::from_static(b"m")));
        let (batch, confirmed) = Enqueue::confirmed(vec![message.clone(), message]);
        queue.enqueue(batch);
        // (Answered before `enqueue` returned: no wait.)
        let outcomes = confirmed.await.expect("the confirm was dropped");
        assert_eq!(outcomes.len(), 2);
        assert!(
            outcomes.iter().all(
                |o| matches!(o, EnqueueOutcome::Rejected(why) if why.contains("not available"))
            ),
            "{outcomes:?}"
        );
    }
}
