//! The two traits of the seam and what crosses them: [`QueueType`] (declare, recover)
//! and [`Queue`] (everything done to one queue).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, Notify};
use warren_storage::Store;
use warren_supervisor::ChildSpec;

use crate::delivery::{ChannelId, ChannelSink, QueueDelivery};
use crate::error::BrokerError;
use crate::message::{FieldTable, SharedMessage};
use crate::queue_memory::QueueMemory;
use crate::BoxFuture;

use super::def::QueueDef;
use super::kind::QueueKind;
use super::stats::{ConsumerSummary, QueueStatus, StreamInfo};

/// A queue, as every caller holds it.
pub type QueueRef = Arc<dyn Queue>;

/// What became of one message handed to a queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnqueueOutcome {
    /// As safe as promised (in memory, or fsynced for persistent on a durable queue).
    Confirmed,
    /// The queue refused it (full with reject-publish), with the reason.
    Rejected(String),
    /// The queue was deleted before it took the message: as if the message had not
    /// been routed to it.
    Gone,
}

/// Where a publish batch's outcomes go: answered once, one outcome per message, in
/// order. Dropped unanswered (the queue's actor died), the publisher sees the batch as
/// not confirmed, which is the truth.
pub type ConfirmReply = oneshot::Sender<Vec<EnqueueOutcome>>;

/// A connection's publishes that its queues have not answered yet: the upstream half
/// of credit flow. The connection stops reading its socket while too many bytes are
/// in flight, and [`Credit`]s give them back.
#[derive(Debug, Default)]
pub struct InFlight {
    bytes: AtomicU64,
    answered: Notify,
}

impl InFlight {
    /// A new, empty account.
    pub fn new() -> Arc<InFlight> {
        Arc::new(InFlight::default())
    }

    /// Body bytes handed to queues and not yet answered.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    /// Takes `bytes` of credit for a share of a publish batch; they come back when the
    /// returned [`Credit`] is dropped.
    pub fn take(self: &Arc<Self>, bytes: u64) -> Credit {
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
        Credit {
            bytes,
            account: self.clone(),
        }
    }

    /// Completes once some credit came back.
    pub async fn answered(&self) {
        self.answered.notified().await
    }
}

/// Credit for one share of a publish batch, given back when dropped: the queue keeps
/// it until every message of the share is as safe as promised. Whatever happens to
/// the share (confirmed, refused, the queue's actor gone), the drop gives it back, so
/// a connection never waits for credit that cannot come.
#[derive(Debug)]
pub struct Credit {
    bytes: u64,
    account: Arc<InFlight>,
}

impl Drop for Credit {
    fn drop(&mut self) {
        self.account.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
        self.account.answered.notify_one();
    }
}

/// Messages for one queue: one publish batch's share.
pub struct Enqueue {
    /// The messages, in publish order.
    pub messages: Vec<SharedMessage>,
    /// Set when the publisher wants to know each message's outcome (confirms,
    /// mandatory returns); without it nobody waits and nothing is spawned for the batch.
    pub confirm: Option<ConfirmReply>,
    /// The publishing connection's credit for the share (see [`InFlight`]).
    pub credit: Option<Credit>,
}

impl Enqueue {
    /// A batch nobody waits for (dead-lettering at most once, tests).
    pub fn unconfirmed(messages: Vec<SharedMessage>) -> Enqueue {
        Enqueue {
            messages,
            confirm: None,
            credit: None,
        }
    }

    /// A batch whose outcomes come back on the returned receiver.
    pub fn confirmed(
        messages: Vec<SharedMessage>,
    ) -> (Enqueue, oneshot::Receiver<Vec<EnqueueOutcome>>) {
        let (tx, rx) = oneshot::channel();
        let batch = Enqueue {
            messages,
            confirm: Some(tx),
            credit: None,
        };
        (batch, rx)
    }
}

/// The write window a channel gives a consumer that nothing else holds back
/// (no-ack, or a prefetch of 0) when it reports what it writes
/// ([`ConsumeRequest::window`]): how many of its deliveries its queue may have sent
/// the channel that the channel has not yet written towards the client. Without it a
/// client that reads slowly has the whole queue moved into its connection, paged-out
/// bodies read back for it (RabbitMQ bounds the same with credit between its queue
/// and channel processes).
pub const WRITE_WINDOW: u32 = 1000;

/// The most body bytes a write window ([`WRITE_WINDOW`]) lets be in flight: with
/// large messages the window closes on bytes before it closes on count. One
/// delivery always goes, however large.
pub const WRITE_WINDOW_BYTES: u64 = 8 * 1024 * 1024;

/// A consumer as its channel registers it.
#[derive(Clone)]
pub struct ConsumeRequest {
    /// Unique on its channel.
    pub tag: Arc<str>,
    /// The channel that consumes (it acks, and its closing returns what it holds).
    pub channel: ChannelId,
    /// Where the queue sends the channel's deliveries and consumer events.
    pub sink: ChannelSink,
    /// Most unacked deliveries at once; 0 is unlimited.
    pub prefetch: u32,
    /// Deliveries are settled when sent (AMQP `no-ack`).
    pub no_ack: bool,
    /// No other consumer may use the queue meanwhile.
    pub exclusive: bool,
    /// Its `x-priority`: consumers of a higher priority get messages first; those
    /// of a lower one only while the higher ones have no credit (0 when absent).
    pub priority: i32,
    /// The consuming channel's node, when the request came through the cluster from
    /// another node (`None` for a channel of this node).
    pub origin: Option<Arc<str>>,
    /// The consumer's arguments, for what its queue's type reads there
    /// (`x-stream-offset`); `x-priority` is already in `priority`.
    pub arguments: FieldTable,
    /// The `basic.qos` the consumer started under (`prefetch` is what they make).
    pub qos: Qos,
    /// For a consumer that nothing else holds back (no-ack, or a prefetch of 0) whose
    /// channel reports what it writes towards the client ([`Queue::written`]): at
    /// most this many deliveries not yet written at once (its credit, as acks are a
    /// consumer's with a prefetch). 0: no such limit, for channels that do not
    /// report.
    pub window: u32,
    /// The channel takes a stream's records as runs ([`QueueEvent::Records`]), one
    /// settlement for each run. Other queue types ignore it.
    ///
    /// [`QueueEvent::Records`]: crate::delivery::QueueEvent::Records
    pub records: bool,
}

/// The prefetch limits a consumer started under: its own (`basic.qos global=false`)
/// and its channel's (`global=true`); 0 is no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Qos {
    /// The consumer's own prefetch.
    pub consumer: u32,
    /// The channel-wide limit.
    pub channel: u32,
}

impl Qos {
    /// A consumer's own prefetch and no channel-wide limit.
    pub fn consumer(prefetch: u32) -> Qos {
        Qos {
            consumer: prefetch,
            channel: 0,
        }
    }
}

/// How a channel settles deliveries it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Settlement {
    /// Done with: the message leaves the queue (`basic.ack`).
    Ack,
    /// Back to the queue, marked redelivered (`basic.nack` / `basic.reject` with requeue).
    Requeue,
    /// Out of the queue to its dead-letter exchange, or dropped when it has none
    /// (`basic.nack` / `basic.reject` without requeue).
    DeadLetter,
}

/// A message taken with `basic.get`, and how many remain ready.
pub type Got = (QueueDelivery, u64);

/// One queue, whatever its type and wherever it runs: what AMQP channels, client
/// sessions, dead-lettering and other nodes do to it.
///
/// Casts (`enqueue`, `settle`, `channel_down`, `touch`) return at once and are lost
/// with the queue's actor, as a message to a stopped process is; calls answer, with an
/// error when the queue cannot be reached. Answers name the AMQP reply code.
pub trait Queue: Send + Sync + 'static {
    /// The queue as declared.
    fn def(&self) -> &QueueDef;

    /// Its name (shared: every delivery carries it).
    fn name(&self) -> &Arc<str>;

    /// Hands the queue a share of a publish batch.
    fn enqueue(&self, batch: Enqueue);

    /// Starts a consumer. Errors: a tag in use on the channel (530), exclusive use
    /// (403), the queue gone (404).
    fn consume(&self, request: ConsumeRequest) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// Ends a consumer; its unacked deliveries stay with its channel. An unknown tag is
    /// not an error (AMQP).
    fn cancel(&self, channel: ChannelId, tag: Arc<str>) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// Settles deliveries of `channel`, named by the seqs their deliveries carried. A
    /// seq the channel does not hold (any more) is ignored: after a restart of the
    /// queue its message is redelivered instead.
    fn settle(&self, channel: ChannelId, settlement: Settlement, seqs: Vec<u64>);

    /// The consuming channel wrote `count` deliveries of its consumer `tag` towards
    /// the client: the consumer's window ([`ConsumeRequest::window`]) opens
    /// by as many. Queues that do not keep windows ignore it.
    fn written(&self, channel: ChannelId, tag: Arc<str>, count: u32) {
        let _ = (channel, tag, count);
    }

    /// `basic.get`: the next ready message for `channel`, if any.
    fn get(
        &self,
        channel: ChannelId,
        no_ack: bool,
    ) -> BoxFuture<'_, Result<Option<Got>, BrokerError>>;

    /// The channel closed: its consumers end, its unacked deliveries return to the
    /// queue (redelivered), its traces stop.
    fn channel_down(&self, channel: ChannelId);

    /// `queue.purge`: removes the ready messages; answers how many.
    fn purge(&self) -> BoxFuture<'_, Result<u64, BrokerError>>;

    /// Drops the queue's messages and consumers (consumers are told). Answers how many
    /// messages were ready. `if_unused` refuses a queue with consumers, `if_empty` one
    /// with ready messages (406). The metadata entry is the caller's to remove.
    fn delete(&self, if_unused: bool, if_empty: bool) -> BoxFuture<'_, Result<u64, BrokerError>>;

    /// The queue was declared again: its `x-expires` timer restarts.
    fn touch(&self);

    /// A declaration of the queue as it exists: its `x-expires` timer restarts, and
    /// the answer says whether the queue is still alive once everything sent to it
    /// before was handled (404 when it deleted itself meanwhile: an auto-delete queue
    /// whose last consumer's connection just closed). The default touches and answers
    /// alive.
    fn redeclared(&self) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.touch();
        Box::pin(async { Ok(()) })
    }

    /// Its counters now, and its actor's restarts.
    fn status(&self) -> BoxFuture<'_, Result<QueueStatus, BrokerError>>;

    /// Its consumers and their credit (the debug shell's `inspect`).
    fn consumers(&self) -> BoxFuture<'_, Result<Vec<ConsumerSummary>, BrokerError>>;

    /// Sends `channel` every message that enters the queue from now on (`Some`), or
    /// stops (`None`): the debug shell's `trace`. Only where the queue runs.
    fn trace(&self, channel: ChannelId, sink: Option<ChannelSink>) -> Result<(), BrokerError>;

    /// The messages published with key `key` (at most `limit`), with their offsets,
    /// oldest first: a stream's key index (RocketMQ's lookup by key). Other queues
    /// refuse it (406).
    fn lookup(
        &self,
        key: String,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(u64, SharedMessage)>, BrokerError>> {
        let _ = (key, limit);
        let refused = BrokerError::precondition_failed(format!(
            "queue '{}' is not a stream: only streams look messages up by key",
            self.name()
        ));
        Box::pin(async move { Err(refused) })
    }

    /// A stream's log bounds and consumer groups (those with members now and those
    /// with an offset). Other queues refuse it (406).
    fn stream_info(&self) -> BoxFuture<'_, Result<StreamInfo, BrokerError>> {
        let refused =
            BrokerError::precondition_failed(format!("queue '{}' is not a stream", self.name()));
        Box::pin(async move { Err(refused) })
    }

    /// The node that serves the queue now, when that is not its home node (a
    /// replicated queue whose leader moved); `None` by default.
    fn serving_node(&self) -> Option<String> {
        None
    }

    /// What the node's store holds of the queue, learnt as the node started (`stored`:
    /// some of its messages) or as the queue was declared (`false`). A queue whose
    /// actor starts on demand starts it now if it has messages, and otherwise knows
    /// itself empty (it answers `get`, `purge` and listings without an actor).
    /// Completes once that is done. Nothing by default.
    fn found(&self, stored: bool) -> BoxFuture<'_, ()> {
        let _ = stored;
        Box::pin(async {})
    }

    /// Makes the queue's actor fail, as a bug would (the debug shell, recovery tests);
    /// its supervisor restarts it.
    fn crash(&self) -> Result<(), BrokerError>;
}

/// How this node reaches the queues whose home is another node (`warren-cluster`
/// implements it over the cluster transport).
pub trait RemoteReach: Send + Sync + 'static {
    /// The handle of the queue `def` of `vhost`, which runs on `def.node`.
    fn queue(&self, vhost: &str, def: &QueueDef) -> QueueRef;
}

/// What a queue type needs from the node to run a queue on it.
#[derive(Clone)]
pub struct HostEnv {
    /// The vhost the queue is in.
    pub vhost: String,
    /// The node's store: the queue's messages and index records.
    pub store: Store,
    /// The node's budget for bodies queues keep in memory for their consumers.
    pub memory: Arc<QueueMemory>,
    /// Where the queue's dead-lettered messages go.
    pub dead_letters: Arc<dyn DeadLetterRouter>,
    /// How this node reaches queues on other nodes (`None` outside a cluster).
    pub remote: Option<Arc<dyn RemoteReach>>,
    /// Asks the vhost to delete the queue (it expired, or auto-delete fired).
    pub delete_self: Arc<dyn Fn(Arc<str>) + Send + Sync>,
    /// Whether idle queues stop their actors, and how they start again (`None`: every
    /// queue's actor runs as long as the queue exists).
    pub hibernation: Option<Hibernation>,
}

/// Hibernation of idle queues: a queue with no messages, no consumers and nothing in
/// flight stops its actor after `after` without a request, and its handle starts it
/// again with `wake` when a publish or a consumer comes (as an idle Erlang process
/// hibernates). An idle queue then costs its handle, not an actor.
#[derive(Clone)]
pub struct Hibernation {
    /// How long a queue is idle before its actor stops.
    pub after: std::time::Duration,
    /// Starts the stopped actor of the queue whose supervised child is named so
    /// (`queue:/orders`) again; answers once it runs.
    pub wake: Arc<dyn Fn(String) -> BoxFuture<'static, Result<(), BrokerError>> + Send + Sync>,
}

/// A queue run by this node: the handle callers use and its supervised actor, whose
/// start recovers what the queue stored.
pub struct Hosted {
    /// The handle.
    pub queue: QueueRef,
    /// The actor's child spec, for the vhost's `queues:` supervisor. Started again on
    /// every restart, so a restarted actor rebuilds the queue from storage.
    pub child: ChildSpec,
}

/// One type of queue (RabbitMQ's `rabbit_queue_type`): it checks declarations and runs
/// the queues of its type that live on this node.
pub trait QueueType: Send + Sync + 'static {
    /// Which type this is.
    fn kind(&self) -> QueueKind;

    /// Checks a new declaration's flags and arguments (406 with RabbitMQ's text for
    /// a bad one), before it goes to the metadata log.
    fn validate(&self, def: &QueueDef, vhost: &str) -> Result<(), BrokerError>;

    /// Checks a redeclaration `requested` against the queue as declared, `current`
    /// (406 "inequivalent arg" when they differ where it matters).
    fn check_equivalent(
        &self,
        current: &QueueDef,
        requested: &QueueDef,
        vhost: &str,
    ) -> Result<(), BrokerError>;

    /// Runs a queue of this type on this node: at declaration, and at every start of
    /// the node for the queues it recovers (on every node [`runs_here`] says).
    ///
    /// [`runs_here`]: QueueType::runs_here
    fn host(&self, def: &QueueDef, env: &HostEnv) -> Result<Hosted, BrokerError>;

    /// Whether node `node` runs queue `def` ([`host`](QueueType::host)); the others
    /// reach it on its home node. By default only its home node runs it; a replicated
    /// type runs it on each node that holds a replica.
    fn runs_here(&self, def: &QueueDef, node: &str) -> bool {
        def.node == node
    }

    /// Refuses a settlement kind clients may not use on queues of this type, before
    /// anything is settled (a stream refuses `basic.nack` and `basic.reject`: 540).
    /// Every kind is taken by default.
    fn check_settlement(
        &self,
        _def: &QueueDef,
        _vhost: &str,
        _settlement: Settlement,
    ) -> Result<(), BrokerError> {
        Ok(())
    }

    /// Completes a new declaration before it goes to the metadata log: a replicated
    /// type picks the nodes that hold its replicas ([`QueueDef::replicas`]). The
    /// default leaves it as it is.
    fn place<'a>(&'a self, _def: &'a mut QueueDef) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async { Ok(()) })
    }

    /// The handle of queue `def` on a node that does not run it ([`runs_here`] says
    /// no); `None` (the default): the cluster's remote handle to its home node.
    ///
    /// [`runs_here`]: QueueType::runs_here
    fn reach(&self, _def: &QueueDef, _env: &HostEnv) -> Option<QueueRef> {
        None
    }

    /// A replicated queue this node runs, or reaches, got other members
    /// ([`QueueDef::replicas`] of `def`). Nothing by default.
    fn redefined(&self, _def: &QueueDef, _vhost: &str) {}

    /// This node no longer holds a replica of queue `def` (its members changed; `def`
    /// has the new ones), and its actors stopped. By default what it kept goes at
    /// once ([`removed`](QueueType::removed)).
    fn left(&self, def: &QueueDef, vhost: &str) -> BoxFuture<'static, ()> {
        self.removed(def, vhost)
    }

    /// The queue was deleted (on every node, after its actors stopped): what this node
    /// keeps of it goes (a replica's log). Nothing by default.
    fn removed(&self, _def: &QueueDef, _vhost: &str) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

/// One dead-lettered message on its way: its queue's seq (`None` for a publish the
/// queue refused at the door) and where it goes.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// The message's seq in the queue it leaves.
    pub seq: Option<u64>,
    /// The message as republished: with its `x-death` headers, without expiration.
    pub message: SharedMessage,
    /// The dead-letter exchange.
    pub exchange: String,
    /// The routing key it is republished with.
    pub routing_key: String,
    /// The queues that took it on an earlier try (of a message one target refused):
    /// it is not enqueued to them again.
    pub held_by: Vec<Arc<str>>,
}

/// What became of the messages of one dead-letter batch that had a seq.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeadLettered {
    /// Held by every queue they were routed to (or routed to none, or to a queue that
    /// closed a dead-letter cycle): they may leave their queue.
    pub done: Vec<u64>,
    /// Refused by a target (full with reject-publish, or its actor restarted): they
    /// stay and are tried again later.
    pub refused: Vec<u64>,
    /// The targets that took a refused message (seq, queue): the retry skips them,
    /// so a message is not copied again to a queue that holds it.
    pub held_by: Vec<(u64, Arc<str>)>,
}

/// Routes dead-lettered messages of a vhost's queues: at least once for messages that
/// leave a queue (the answer says which are held by their targets), at most once for
/// publishes a queue refused at the door.
pub trait DeadLetterRouter: Send + Sync + 'static {
    /// Routes `batch`; the answer comes once every target has answered.
    fn route(&self, queue: &str, batch: Vec<DeadLetter>) -> BoxFuture<'static, DeadLettered>;
}
