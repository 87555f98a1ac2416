//! The client-handle protocol: what a client and a node say to each other.
//!
//! Three actors talk:
//! - the node's **gateway** (one per node, in the [`crate::GATEWAY_GROUP`] process
//!   group), which opens sessions;
//! - a **session** on the node (one per client handle), which does the client's work and
//!   plays the part an AMQP channel plays: it assigns delivery tags, keeps the unacked
//!   deliveries and answers publishes once they are confirmed;
//! - the client's **inbox**, to which the session pushes deliveries.
//!
//! Publishes travel in batches (one frame serves many messages) and each batch is one
//! call whose reply comes when every message in it is as safe as promised. Acks travel in
//! batches too. Every payload is a [`Wire`] so that a frame that does not decode becomes
//! a clear error instead of a silent drop.

use bytes::Bytes;
use ractor::{BytesConvertable, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};
pub use warren_access::Permission;
pub use warren_actors::channel::{Settle, SettleKind};
use warren_actors::delivery::{QueueEvent, TracedMessage};
use warren_actors::message::{FieldTable, Properties};
use warren_actors::queue::{ConsumerSummary, QueueStats};
use warren_supervisor::{ChildLocation, TreeSnapshot};

use crate::wire::Wire;

/// The version of this protocol; a node refuses a client that speaks another one.
pub const PROTOCOL_VERSION: u32 = 1;

/// A broker error as a client sees it: the AMQP reply code and a text that names the
/// object (e.g. 404, "no queue 'orders' in vhost '/'").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub code: u16,
    pub text: String,
}

impl From<warren_actors::error::BrokerError> for ErrorReply {
    fn from(e: warren_actors::error::BrokerError) -> Self {
        ErrorReply {
            code: e.code(),
            text: e.to_string(),
        }
    }
}

impl From<ErrorReply> for warren_actors::error::BrokerError {
    fn from(e: ErrorReply) -> Self {
        warren_actors::error::BrokerError::new(e.code, e.text)
    }
}

impl std::fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.text, self.code)
    }
}

/// Where a binding leads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BindTarget {
    Queue(String),
    Exchange(String),
}

/// A request that has one reply.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Request {
    DeclareExchange {
        name: String,
        kind: String,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        passive: bool,
        arguments: FieldTable,
    },
    DeleteExchange {
        name: String,
        if_unused: bool,
    },
    /// An empty name asks the node to make one up (a server-named queue).
    DeclareQueue {
        name: String,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        passive: bool,
        arguments: FieldTable,
    },
    DeleteQueue {
        name: String,
        if_unused: bool,
        if_empty: bool,
    },
    PurgeQueue {
        name: String,
    },
    Bind {
        source: String,
        target: BindTarget,
        routing_key: String,
        arguments: FieldTable,
    },
    Unbind {
        source: String,
        target: BindTarget,
        routing_key: String,
        arguments: FieldTable,
    },
    /// Start a consumer; an empty tag asks the node to make one up.
    Consume {
        queue: String,
        tag: String,
        prefetch: u32,
        no_ack: bool,
        exclusive: bool,
        arguments: FieldTable,
    },
    Cancel {
        tag: String,
    },
    Get {
        queue: String,
        no_ack: bool,
    },
    ListQueues,
    ListExchanges,
    ListBindings,
    /// Answers `Done` once everything the client sent before it was handled.
    Ping,
    // ----- the debug shell -----
    /// The node's supervision tree, or the subtree of the actor `name`.
    Tree {
        name: Option<String>,
    },
    /// An actor's place in the tree and, for a queue or exchange, its state.
    Inspect {
        name: String,
    },
    /// Stops an actor normally; its supervisor decides whether to restart it.
    StopActor {
        name: String,
    },
    /// Makes an actor fail (queues and exchanges fail in their handler, other
    /// actors are killed), so that its supervisor restarts it.
    CrashActor {
        name: String,
    },
    /// Starts (`on`) or stops pushing [`Push::Traced`] for messages entering `queue`.
    Trace {
        queue: String,
        on: bool,
    },
    /// The node's recent log lines at `level` or more severe, at most `lines`.
    Log {
        level: String,
        lines: u32,
    },
    /// The cluster's members as this node sees them.
    Nodes,
    /// Removes a member that is down (`warren cluster forget NAME`).
    ForgetNode {
        name: String,
    },
    /// This node leaves the cluster and stops (`warren cluster leave`).
    LeaveCluster,
    // ----- users and permissions (the cookie holder is the administrator) -----
    AddUser {
        name: String,
        password: String,
        tags: Vec<String>,
    },
    DeleteUser {
        name: String,
    },
    ListUsers,
    SetPermissions(Permission),
    ClearPermissions {
        user: String,
        vhost: String,
    },
    ListPermissions,
    // ----- vhosts -----
    AddVhost {
        name: String,
        description: String,
    },
    DeleteVhost {
        name: String,
    },
    ListVhosts,
    // ----- resource limits -----
    /// Shows (and with values, changes until restart) the memory high watermark and
    /// the disk free limit.
    Limits {
        memory: Option<warren_resources::alarm::MemoryLimit>,
        disk_free: Option<u64>,
    },
}

/// The reply to a [`Request`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Response {
    Done,
    QueueDeclared {
        name: String,
        messages: u64,
        consumers: u32,
    },
    /// How many messages a delete or purge removed.
    Removed {
        messages: u64,
    },
    ConsumeStarted {
        tag: String,
    },
    /// The result of a get: a delivery and how many messages remain, or nothing.
    Got {
        delivery: Option<Box<Delivery>>,
        remaining: u64,
    },
    Queues(Vec<QueueInfo>),
    Exchanges(Vec<ExchangeInfo>),
    Bindings(Vec<BindingInfo>),
    Tree(TreeSnapshot),
    Inspected(Box<ActorDetails>),
    Log(Vec<LogLine>),
    Nodes(Vec<NodeInfo>),
    /// (name, tags) of every user.
    Users(Vec<(String, Vec<String>)>),
    Permissions(Vec<Permission>),
    Vhosts(Vec<warren_access::VHostDef>),
    Limits(LimitsInfo),
    Error(ErrorReply),
}

/// A node's memory and disk against their limits, and its alarms.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LimitsInfo {
    /// Resident memory, bytes.
    pub memory_used: u64,
    /// The memory high watermark, bytes.
    pub memory_limit: u64,
    /// The watermark as set (`0.4 of RAM`, `512.0 MiB`).
    pub memory_limit_setting: String,
    /// Free space of the data directory's file system, bytes.
    pub disk_free: u64,
    pub disk_free_limit: u64,
    pub memory_alarm: bool,
    pub disk_alarm: bool,
    /// Bytes queues keep in memory for their consumers beyond their windows, and the
    /// most they may (half the watermark).
    pub queue_memory_used: u64,
    pub queue_memory_limit: u64,
}

/// What `inspect` shows of an actor.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ActorDetails {
    /// Where it sits in the supervision tree, with its supervisor and strategy.
    pub location: ChildLocation,
    pub queue: Option<QueueDetails>,
    pub exchange: Option<ExchangeDetails>,
}

/// A queue's state summary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueueDetails {
    pub info: QueueInfo,
    pub stats: QueueStats,
    pub consumers: Vec<ConsumerSummary>,
}

/// An exchange's state summary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExchangeDetails {
    pub info: ExchangeInfo,
    /// Bindings it is the source of.
    pub bindings: Vec<BindingInfo>,
}

/// One line of a node's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// RFC 3339, UTC.
    pub time: String,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    pub level: String,
    pub text: String,
}

/// A cluster member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    /// Its cluster address.
    pub address: String,
    /// `disk` or `ram`.
    pub role: String,
    /// `up`, `suspect` or `down`.
    pub health: String,
    /// Leads the cluster's metadata.
    pub leader: bool,
    /// This is the node that answered.
    pub this_node: bool,
    pub uptime_ms: u64,
}

/// One message to publish.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Publish {
    pub exchange: String,
    pub routing_key: String,
    /// Return the message (as unroutable) when no queue takes it.
    pub mandatory: bool,
    pub properties: Properties,
    pub body: Bytes,
}

/// What became of one published message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PublishResult {
    /// Every queue it was routed to holds it as safely as promised.
    Confirmed,
    /// It was mandatory and no queue took it (it was returned, not stored).
    Unroutable,
    /// A queue refused it (e.g. a full queue with `x-overflow: reject-publish`).
    Rejected(String),
    /// The publish was wrong (e.g. no such exchange).
    Failed(ErrorReply),
}

/// A message delivered to a consumer (or got with `Get`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Delivery {
    /// Unique within the session; settle with it.
    pub delivery_tag: u64,
    pub consumer_tag: String,
    pub queue: String,
    pub exchange: String,
    pub routing_key: String,
    pub redelivered: bool,
    pub properties: Properties,
    pub body: Bytes,
}

/// Something the node tells the client without being asked.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Push {
    Deliveries(Vec<Delivery>),
    /// The node ended a consumer (its queue was deleted, say).
    ConsumerCancelled {
        tag: String,
        reason: String,
    },
    /// The node closed the session (an error that ends it, or the node stopping).
    Closed(ErrorReply),
    /// Messages that entered a queue this client traces.
    Traced(Vec<TracedMessage>),
}

/// A row of `warren queues`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueueInfo {
    pub name: String,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub messages: u64,
    pub ready: u64,
    pub unacked: u64,
    pub consumers: u32,
    pub bytes_in_memory: u64,
    pub arguments: FieldTable,
    /// The node the queue lives on.
    pub node: String,
}

/// A row of `warren exchanges`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExchangeInfo {
    pub name: String,
    pub kind: String,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
}

/// A row of `warren bindings`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BindingInfo {
    pub source: String,
    pub target: BindTarget,
    pub routing_key: String,
    pub arguments: FieldTable,
}

/// What a client asks for when it opens a session.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpenSession {
    pub protocol_version: u32,
    /// A name for logs (the client's program, say).
    pub client_name: String,
    /// The process group the client's inbox joined; the session pushes to it.
    pub inbox_group: String,
    pub vhost: String,
}

/// The gateway's answer: where the session is.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum SessionOpened {
    /// The process group the new session joined.
    Opened {
        session_group: String,
    },
    Refused(ErrorReply),
}

/// Messages to a node's gateway.
#[derive(RactorClusterMessage)]
pub enum GatewayMsg {
    #[rpc]
    Open(Wire<OpenSession>, RpcReplyPort<Wire<SessionOpened>>),
    /// Node-internal: a client process's transport went away.
    ClientGone(LocalOnly<u64>),
}

/// Messages to a session on the node: the client's requests and node-internal events.
#[derive(RactorClusterMessage)]
pub enum SessionMsg {
    #[rpc]
    Call(Wire<Request>, RpcReplyPort<Wire<Response>>),
    #[rpc]
    Publish(Wire<Vec<Publish>>, RpcReplyPort<Wire<Vec<PublishResult>>>),
    Settle(Wire<Vec<Settle>>),
    /// The client closes the session: unacked deliveries go back to their queues.
    Close(Wire<()>),
    /// Node-internal events (from queues); never sent over the wire.
    Queue(LocalOnly<QueueEvent>),
}

/// Messages to a client's inbox.
#[derive(RactorClusterMessage)]
pub enum InboxMsg {
    Push(Wire<Push>),
}

/// A payload that only ever travels inside one process.
///
/// Node-internal variants share an actor's message type with remote ones, and a remote
/// peer could name such a variant in a frame: decoding one yields an empty value that
/// the receiver ignores, never a panic.
pub struct LocalOnly<T>(Option<T>);

impl<T> LocalOnly<T> {
    pub fn new(value: T) -> Self {
        LocalOnly(Some(value))
    }

    /// The value; `None` when it came from the wire (and so is to be ignored).
    pub fn take(self) -> Option<T> {
        self.0
    }
}

impl<T> BytesConvertable for LocalOnly<T> {
    fn into_bytes(self) -> Vec<u8> {
        Vec::new()
    }

    fn from_bytes(_bytes: Vec<u8>) -> Self {
        LocalOnly(None)
    }
}
