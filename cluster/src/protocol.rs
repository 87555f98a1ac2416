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
use warren_actors::message::{FieldTable, Message, Properties, SharedMessage};
use warren_actors::queue::{ConsumerSummary, QueueStats};
use warren_supervisor::{ChildLocation, TreeSnapshot};

use crate::wire::Wire;

/// The version of this protocol; a node refuses a client that speaks another one.
/// 2: windowed consumers (`SessionMsg::Written`).
/// 3: a stream's records in runs (`Push::Records`).
pub const PROTOCOL_VERSION: u32 = 3;

/// A broker error as a client sees it: the AMQP reply code and a text that names the
/// object (e.g. 404, "no queue 'orders' in vhost '/'").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// The AMQP reply code (404, 406...).
    pub code: u16,
    /// What was refused and why, naming the object.
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
    /// A queue, by name.
    Queue(String),
    /// Another exchange, by name (exchange-to-exchange binding).
    Exchange(String),
}

/// A request that has one reply.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Request {
    /// `exchange.declare`; answered with `Done`.
    DeclareExchange {
        /// The exchange's name.
        name: String,
        /// Its type: `direct`, `fanout`, `topic` or `headers`.
        kind: String,
        /// Survives a broker restart.
        durable: bool,
        /// Deleted when its last binding (as a source) goes.
        auto_delete: bool,
        /// Clients cannot publish to it, only other exchanges.
        internal: bool,
        /// Only check that it exists (404 when not); create nothing.
        passive: bool,
        /// Declaration arguments (`alternate-exchange`).
        arguments: FieldTable,
    },
    /// `exchange.delete`; answered with `Done`.
    DeleteExchange {
        /// The exchange's name.
        name: String,
        /// Refuse (406) while the exchange is the source of bindings.
        if_unused: bool,
    },
    /// `queue.declare`, answered with `QueueDeclared`. An empty name asks the node to
    /// make one up (a server-named queue).
    DeclareQueue {
        /// The queue's name, or empty.
        name: String,
        /// Survives a restart of its node.
        durable: bool,
        /// Owned by this session, and deleted when it closes.
        exclusive: bool,
        /// Deleted when its last consumer goes.
        auto_delete: bool,
        /// Only check that it exists (404 when not); create nothing.
        passive: bool,
        /// Declare arguments (`x-queue-type`, `x-max-length`, `x-message-ttl`...).
        arguments: FieldTable,
    },
    /// `queue.delete`, answered with `Removed` (the ready messages it held).
    DeleteQueue {
        /// The queue's name.
        name: String,
        /// Refuse (406) while the queue has consumers.
        if_unused: bool,
        /// Refuse (406) while the queue has ready messages.
        if_empty: bool,
    },
    /// `queue.purge`, answered with `Removed` (the ready messages dropped).
    PurgeQueue {
        /// The queue's name.
        name: String,
    },
    /// `queue.bind` / `exchange.bind`; answered with `Done`, also when the binding
    /// already exists.
    Bind {
        /// The exchange the binding routes from.
        source: String,
        /// The queue or exchange it routes to.
        target: BindTarget,
        /// The binding key.
        routing_key: String,
        /// Binding arguments (what a headers exchange matches).
        arguments: FieldTable,
    },
    /// `queue.unbind` / `exchange.unbind`: removes the binding with exactly this key
    /// and these arguments; answered with `Done`, also when there was none.
    Unbind {
        /// The exchange the binding routes from.
        source: String,
        /// The queue or exchange it routes to.
        target: BindTarget,
        /// The binding key.
        routing_key: String,
        /// Binding arguments, compared as typed values.
        arguments: FieldTable,
    },
    /// Start a consumer, answered with `ConsumeStarted`; an empty tag asks the node
    /// to make one up. Deliveries come as [`Push::Deliveries`].
    Consume {
        /// The queue to consume from.
        queue: String,
        /// The consumer tag, unique in the session, or empty.
        tag: String,
        /// Unacked deliveries the consumer may hold at once; 0 means unlimited.
        prefetch: u32,
        /// Deliveries are settled as they go out: the client never acks them.
        no_ack: bool,
        /// Have the queue to itself: refused (403) while it has other consumers.
        exclusive: bool,
        /// Consumer arguments, for what the queue's type reads there
        /// (`x-stream-offset` for a stream).
        arguments: FieldTable,
    },
    /// `basic.cancel`; answered with `Done`, also for an unknown tag.
    Cancel {
        /// The consumer's tag.
        tag: String,
    },
    /// `basic.get`, answered with `Got`.
    Get {
        /// The queue to take a message from.
        queue: String,
        /// The message is settled as it goes out: the client never acks it.
        no_ack: bool,
    },
    /// The vhost's queues, answered with `Queues`.
    ListQueues,
    /// The vhost's exchanges, answered with `Exchanges`.
    ListExchanges,
    /// The vhost's bindings (the default exchange's implicit ones first), answered
    /// with `Bindings`.
    ListBindings,
    /// Answers `Done` once everything the client sent before it was handled.
    Ping,
    // ----- the debug shell -----
    /// The node's supervision tree, or the subtree of the actor `name`.
    Tree {
        /// The actor whose subtree to show; `None` for the whole tree.
        name: Option<String>,
    },
    /// An actor's place in the tree and, for a queue or exchange, its state.
    Inspect {
        /// The actor's name in the tree (`queue:/orders`, `exchange:/amq.topic`...).
        name: String,
    },
    /// Stops an actor normally; its supervisor decides whether to restart it.
    StopActor {
        /// The actor's name in the tree.
        name: String,
    },
    /// Makes an actor fail (queues and exchanges fail in their handler, other
    /// actors are killed), so that its supervisor restarts it.
    CrashActor {
        /// The actor's name in the tree.
        name: String,
    },
    /// Starts (`on`) or stops pushing [`Push::Traced`] for messages entering `queue`.
    Trace {
        /// The queue to trace.
        queue: String,
        /// Start (true) or stop (false).
        on: bool,
    },
    /// The node's recent log lines at `level` or more severe, at most `lines`.
    Log {
        /// `error`, `warn`, `info`, `debug` or `trace`.
        level: String,
        /// The most lines to answer.
        lines: u32,
    },
    /// The cluster's members as this node sees them.
    Nodes,
    /// Removes a member that is down (`warren cluster forget NAME`).
    ForgetNode {
        /// The member's node name.
        name: String,
    },
    /// This node leaves the cluster and stops (`warren cluster leave`).
    LeaveCluster,
    // ----- users and permissions (the cookie holder is the administrator) -----
    /// Adds a user; answered with `Done`.
    AddUser {
        /// The user's name.
        name: String,
        /// The password in clear (the node stores a salted hash).
        password: String,
        /// RabbitMQ's user tags (`administrator`...).
        tags: Vec<String>,
    },
    /// Deletes a user and their permissions; answered with `Done`.
    DeleteUser {
        /// The user's name.
        name: String,
    },
    /// Every user, answered with `Users`.
    ListUsers,
    /// Sets a user's permissions in one vhost (which must exist); answered with `Done`.
    SetPermissions(Permission),
    /// Removes a user's permissions in one vhost; answered with `Done`.
    ClearPermissions {
        /// The user's name.
        user: String,
        /// The vhost.
        vhost: String,
    },
    /// Every user's permissions, answered with `Permissions`.
    ListPermissions,
    // ----- vhosts -----
    /// Adds a vhost; answered with `Done`.
    AddVhost {
        /// The vhost's name.
        name: String,
        /// Free text shown by listings.
        description: String,
    },
    /// Deletes a vhost with everything in it; answered with `Done`.
    DeleteVhost {
        /// The vhost's name.
        name: String,
    },
    /// Every vhost, answered with `Vhosts`.
    ListVhosts,
    // ----- resource limits -----
    /// Shows (and with values, changes until restart) the memory high watermark and
    /// the disk free limit.
    Limits {
        /// A new memory high watermark; `None` keeps the current one.
        memory: Option<warren_resources::alarm::MemoryLimit>,
        /// A new disk free limit in bytes; `None` keeps the current one.
        disk_free: Option<u64>,
    },
    // ----- members of replicated queues -----
    /// Adds or removes a member of replicated queues (`warren queue add-member`,
    /// `delete-member`, `grow`, `shrink`); answered with `MembersChanged` (for one
    /// queue, a refusal is an `Error`).
    ChangeMembers {
        /// One queue; `None`: every quorum queue of the vhost that lacks (add) or has
        /// (remove) a replica on `node`.
        queue: Option<String>,
        /// The node.
        node: String,
        /// Add a replica there (else remove it).
        add: bool,
    },
    /// A page of the vhost's queues, in name order: at most `limit` of those named
    /// after `after` ("" for the first page); answered with `QueuesPage`. (One answer
    /// with 100 000 queues would not fit in a cluster frame.)
    ListQueuesPage {
        /// The last name of the page before ("" for the first).
        after: String,
        /// At most this many queues.
        limit: u32,
    },
    /// A stream's log bounds and consumer groups (one partition); answered with
    /// `StreamInfo`.
    StreamInfo {
        /// The stream (one partition).
        queue: String,
    },
    /// A stream's messages published with a key (its key index), oldest first;
    /// answered with `Found`.
    Lookup {
        /// The stream (one partition).
        queue: String,
        /// The key.
        key: String,
        /// At most this many.
        limit: u32,
    },
}

/// What changing the members of one queue came to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MembersChanged {
    /// The queue's name.
    pub queue: String,
    /// Its members from now on, or why they did not change.
    pub outcome: Result<Vec<String>, ErrorReply>,
}

/// The reply to a [`Request`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Response {
    /// The request was carried out; nothing to tell.
    Done,
    /// The queue exists now (or did already).
    QueueDeclared {
        /// Its name: the one made up for a server-named queue.
        name: String,
        /// Ready messages (0 for a new queue).
        messages: u64,
        /// Consumers (0 for a new queue).
        consumers: u32,
    },
    /// How many messages a delete or purge removed.
    Removed {
        /// Ready messages removed.
        messages: u64,
    },
    /// The consumer started.
    ConsumeStarted {
        /// Its tag: the one made up when the request's was empty.
        tag: String,
    },
    /// The result of a get: a delivery and how many messages remain, or nothing.
    Got {
        /// The message, `None` when the queue was empty.
        delivery: Option<Box<Delivery>>,
        /// Ready messages left in the queue (0 when it was empty).
        remaining: u64,
    },
    /// The answer to `ListQueues`.
    Queues(Vec<QueueInfo>),
    /// The answer to `ListExchanges`.
    Exchanges(Vec<ExchangeInfo>),
    /// The answer to `ListBindings`.
    Bindings(Vec<BindingInfo>),
    /// The answer to `Tree`.
    Tree(TreeSnapshot),
    /// The answer to `Inspect`.
    Inspected(Box<ActorDetails>),
    /// The answer to `Log`, oldest line first.
    Log(Vec<LogLine>),
    /// The answer to `Nodes`.
    Nodes(Vec<NodeInfo>),
    /// (name, tags) of every user.
    Users(Vec<(String, Vec<String>)>),
    /// The answer to `ListPermissions`.
    Permissions(Vec<Permission>),
    /// The answer to `ListVhosts`.
    Vhosts(Vec<warren_access::VHostDef>),
    /// The answer to `Limits`: the limits and measurements after any change.
    Limits(LimitsInfo),
    /// The request was refused.
    Error(ErrorReply),
    /// The answer to `ChangeMembers`.
    MembersChanged(Vec<MembersChanged>),
    /// The answer to `ListQueuesPage`.
    QueuesPage {
        /// The page's queues, in name order.
        queues: Vec<QueueInfo>,
        /// More queues come after the last one.
        more: bool,
    },
    /// The answer to `Lookup`: each message with its offset.
    Found(Vec<(u64, Message)>),
    /// The answer to `StreamInfo`.
    StreamInfo(warren_actors::queue::StreamInfo),
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
    /// The disk alarm goes up when free space falls below this, bytes.
    pub disk_free_limit: u64,
    /// Memory used is at or above the watermark: publishers are held back.
    pub memory_alarm: bool,
    /// Free disk is below its limit: publishers are held back.
    pub disk_alarm: bool,
    /// Bytes queues keep in memory for their consumers beyond their windows, and the
    /// most they may (half the watermark).
    pub queue_memory_used: u64,
    /// See `queue_memory_used`.
    pub queue_memory_limit: u64,
}

/// What `inspect` shows of an actor.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ActorDetails {
    /// Where it sits in the supervision tree, with its supervisor and strategy.
    pub location: ChildLocation,
    /// Its queue's state, when the actor is a queue.
    pub queue: Option<QueueDetails>,
    /// Its exchange's state, when the actor is an exchange.
    pub exchange: Option<ExchangeDetails>,
}

/// A queue's state summary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueueDetails {
    /// Its row of `warren queues`.
    pub info: QueueInfo,
    /// Every counter it keeps (memory, paging, writes, confirms...).
    pub stats: QueueStats,
    /// Its consumers with their credit.
    pub consumers: Vec<ConsumerSummary>,
}

/// An exchange's state summary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExchangeDetails {
    /// Its row of `warren exchanges`.
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
    /// The message and its fields (`key=value`).
    pub text: String,
}

/// A cluster member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's name.
    pub name: String,
    /// Its cluster address.
    pub address: String,
    /// `disk` or `ram`.
    pub role: String,
    /// `up`, `joining` (up, not in the metadata group yet), `suspect` or `down`.
    pub health: String,
    /// Leads the cluster's metadata.
    pub leader: bool,
    /// The metadata group's term as the answering node knows it (Raft: at most one
    /// leader per term).
    pub term: u64,
    /// This is the node that answered.
    pub this_node: bool,
    /// How long the node has been running, in milliseconds; 0 for a member that is
    /// down or not heard from yet.
    pub uptime_ms: u64,
    /// The answering node's metadata log (on its own row only).
    pub metadata_log: Option<MetadataLog>,
}

/// A node's metadata log: how far it has applied and what it holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataLog {
    /// The last entry applied to this node's broker state.
    pub applied: u64,
    /// The last entry known committed.
    pub committed: u64,
    /// The first entry held (the ones before are compacted behind the snapshot).
    pub first: u64,
    /// The last entry held.
    pub last: u64,
    /// The index of the latest snapshot (0: none yet).
    pub snapshot: u64,
}

/// One message to publish.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Publish {
    /// The exchange to publish to (`""` for the default exchange).
    pub exchange: String,
    /// The routing key the exchange's bindings match.
    pub routing_key: String,
    /// Return the message (as unroutable) when no queue takes it.
    pub mandatory: bool,
    /// The basic properties (headers, delivery mode, TTL...).
    pub properties: Properties,
    /// The payload.
    pub body: Bytes,
}

/// A [`Publish`] borrowed, for a sender that encodes publishes one by one as they
/// come (`warren_storage::codec::encode_element_into`): encoded, it is a `Publish`'s
/// encoding, byte for byte.
#[derive(Serialize)]
pub struct PublishRef<'a> {
    /// As [`Publish::exchange`].
    pub exchange: &'a str,
    /// As [`Publish::routing_key`].
    pub routing_key: &'a str,
    /// As [`Publish::mandatory`].
    pub mandatory: bool,
    /// As [`Publish::properties`].
    pub properties: &'a Properties,
    /// As [`Publish::body`].
    pub body: &'a Bytes,
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
    /// The consumer it is for; empty for a `Get`.
    pub consumer_tag: String,
    /// The queue it came from.
    pub queue: String,
    /// The exchange it was published to.
    pub exchange: String,
    /// The routing key it was published with.
    pub routing_key: String,
    /// It may have been delivered before (requeued, or recovered after a restart).
    pub redelivered: bool,
    /// The basic properties as published (with `x-death` when dead-lettered).
    pub properties: Properties,
    /// The payload.
    pub body: Bytes,
}

/// Consecutive records of a stream for one consumer, delivered together: the client
/// hands them out one by one and settles the run under its one tag once each record
/// is settled (a stream's settlements only give its consumer credit).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Records {
    /// Unique within the session; settle the run with it.
    pub delivery_tag: u64,
    /// The consumer it is for.
    pub consumer_tag: String,
    /// The stream's queue (its partition).
    pub queue: String,
    /// The offset of the first record; the others follow without gaps.
    pub first_offset: u64,
    /// The records as stored: their offsets are not in their headers.
    pub messages: Vec<SharedMessage>,
}

/// Something the node tells the client without being asked.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Push {
    /// Deliveries to the session's consumers, in queue order.
    Deliveries(Vec<Delivery>),
    /// A run of a stream's records for one consumer.
    Records(Records),
    /// The node ended a consumer (its queue was deleted, say).
    ConsumerCancelled {
        /// The consumer's tag.
        tag: String,
        /// Why, for the consumer.
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
    /// The queue's name.
    pub name: String,
    /// Survives a restart of its node.
    pub durable: bool,
    /// Owned by one connection or session, and deleted with it.
    pub exclusive: bool,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Ready and unacked messages.
    pub messages: u64,
    /// Messages waiting for a consumer.
    pub ready: u64,
    /// Messages delivered and not yet acked.
    pub unacked: u64,
    /// Consumers.
    pub consumers: u32,
    /// Body bytes the queue holds in memory.
    pub bytes_in_memory: u64,
    /// The declare arguments.
    pub arguments: FieldTable,
    /// The node the queue lives on.
    pub node: String,
    /// A replicated queue's members (nodes), as the metadata says.
    pub members: Vec<String>,
    /// A replicated queue's Raft group, as its leader reports it.
    pub replication: Option<warren_actors::queue::Replication>,
}

/// A row of `warren exchanges`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExchangeInfo {
    /// The exchange's name (`""` for the default exchange).
    pub name: String,
    /// Its type: `direct`, `fanout`, `topic` or `headers`.
    pub kind: String,
    /// Survives a broker restart.
    pub durable: bool,
    /// Deleted when its last binding (as a source) goes.
    pub auto_delete: bool,
    /// Clients cannot publish to it, only other exchanges.
    pub internal: bool,
    /// The declaration arguments.
    pub arguments: FieldTable,
}

/// A row of `warren bindings`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BindingInfo {
    /// The exchange it routes from.
    pub source: String,
    /// The queue or exchange it routes to.
    pub target: BindTarget,
    /// The binding key.
    pub routing_key: String,
    /// The binding arguments.
    pub arguments: FieldTable,
}

/// What a client asks for when it opens a session.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpenSession {
    /// The client's [`PROTOCOL_VERSION`]; another one than the node's is refused.
    pub protocol_version: u32,
    /// A name for logs (the client's program, say).
    pub client_name: String,
    /// The process group the client's inbox joined; the session pushes to it.
    pub inbox_group: String,
    /// The vhost the session works in; an unknown one is refused (530).
    pub vhost: String,
}

/// The gateway's answer: where the session is.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum SessionOpened {
    /// The process group the new session joined.
    Opened {
        /// The group's name.
        session_group: String,
    },
    /// No session: another protocol version, an unknown vhost, or an inbox that
    /// did not appear on the node.
    Refused(ErrorReply),
}

/// Messages to a node's gateway.
#[derive(RactorClusterMessage)]
pub enum GatewayMsg {
    /// Open a session for a client; answered with where it is, or why not.
    #[rpc]
    Open(Wire<OpenSession>, RpcReplyPort<Wire<SessionOpened>>),
    /// Node-internal: a client process's transport went away (its ractor_cluster
    /// node id): its sessions stop.
    ClientGone(LocalOnly<u64>),
    /// Another node's management API asks for this node's supervision tree.
    #[rpc]
    Tree(
        Wire<()>,
        RpcReplyPort<Wire<Result<TreeSnapshot, ErrorReply>>>,
    ),
}

/// Messages to a session on the node: the client's requests and node-internal events.
#[derive(RactorClusterMessage)]
pub enum SessionMsg {
    /// A request, answered with its response.
    #[rpc]
    Call(Wire<Request>, RpcReplyPort<Wire<Response>>),
    /// A batch of publishes, answered with one result per message, in order, once
    /// every one is resolved.
    #[rpc]
    Publish(Wire<Vec<Publish>>, RpcReplyPort<Wire<Vec<PublishResult>>>),
    /// Acks and rejects by delivery tag; no answer. An unknown tag closes the
    /// session (406), as RabbitMQ closes the channel.
    Settle(Wire<Vec<Settle>>),
    /// The client's application took deliveries of its windowed consumers (no-ack, or
    /// without a prefetch): per consumer tag, how many. Their queues' windows open by
    /// as many (`Queue::written`). No answer. Since protocol version 2.
    Written(Wire<Vec<(String, u32)>>),
    /// The client closes the session: unacked deliveries go back to their queues.
    Close(Wire<()>),
    /// Node-internal events (from queues); never sent over the wire.
    Queue(LocalOnly<QueueEvent>),
}

/// Messages to a client's inbox.
#[derive(RactorClusterMessage)]
pub enum InboxMsg {
    /// Something the session tells the client.
    Push(Wire<Push>),
}

/// A payload that only ever travels inside one process.
///
/// Node-internal variants share an actor's message type with remote ones, and a remote
/// peer could name such a variant in a frame: decoding one yields an empty value that
/// the receiver ignores, never a panic.
pub struct LocalOnly<T>(Option<T>);

impl<T> LocalOnly<T> {
    /// Wraps a value sent inside this process.
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

#[cfg(test)]
mod tests {
    use super::*;
    use warren_actors::message::FieldValue;
    use warren_storage::codec;

    #[test]
    fn a_borrowed_publish_encodes_as_the_publish() {
        let mut headers = FieldTable::new();
        headers.insert("x-stream-key".into(), FieldValue::string("user-7"));
        let publish = Publish {
            exchange: "clicks".into(),
            routing_key: "3".into(),
            mandatory: true,
            properties: Properties {
                headers: Some(headers),
                delivery_mode: Some(2),
                message_id: Some("m-1".into()),
                ..Default::default()
            },
            body: Bytes::from_static(b"hello"),
        };
        let borrowed = PublishRef {
            exchange: &publish.exchange,
            routing_key: &publish.routing_key,
            mandatory: publish.mandatory,
            properties: &publish.properties,
            body: &publish.body,
        };
        let mut element = Vec::new();
        codec::encode_element_into(&borrowed, &mut element).unwrap();
        let whole = codec::encode(&publish).unwrap();
        assert_eq!(element, whole[1..]);
    }
}
