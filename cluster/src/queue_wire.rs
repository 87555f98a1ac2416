//! What nodes say to each other about queues: the requests, answers and notes that
//! travel on queue links (see [`crate::link_wire`] for how), and the queue endpoint
//! where a node finds another's link listener.
//!
//! Every node runs one queue endpoint (`queues@NODE`, process group
//! `warren.queues.NODE`): other nodes ask it where to open a queue link, and its
//! leaving the group tells them the node went away. Channel ids in requests are the
//! client node's; the queue's node maps them to its own.

use std::sync::Arc;

use ractor::RpcReplyPort;
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};
use warren_actors::delivery::{ChannelId, QueueDelivery};
use warren_actors::message::{FieldTable, Message};
use warren_actors::queue::{ConsumerSummary, Qos, Settlement, StreamInfo};

use crate::wire::Wire;

/// The process group of one node's queue endpoint.
pub fn endpoint_group(node: &str) -> String {
    format!("warren.queues.{node}")
}

/// The process group every queue endpoint joins (watched for nodes that go away).
pub const ENDPOINTS_GROUP: &str = "warren.queues";

/// The registry name of a node's queue endpoint.
pub fn endpoint_name(node: &str) -> String {
    format!("queues@{node}")
}

/// An operation with an answer. Channel ids are the asking node's.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum QueueRequest {
    /// `basic.cancel`; answered with `Done`, also for an unknown consumer.
    Cancel {
        /// The consumer's channel.
        channel: ChannelId,
        /// The consumer's tag.
        tag: String,
    },
    /// `basic.get`; answered with `Got`.
    Get {
        /// The channel that asks.
        channel: ChannelId,
        /// The message is settled as it goes out.
        no_ack: bool,
    },
    /// `queue.purge`; answered with `Count`, the ready messages dropped.
    Purge,
    /// `queue.delete`; answered with `Count`, the ready messages the queue held.
    Delete {
        /// Refuse (406) while the queue has consumers.
        if_unused: bool,
        /// Refuse (406) while the queue has ready messages.
        if_empty: bool,
    },
    /// The queue's consumers, for `inspect`; answered with `Consumers`.
    Consumers,
    /// `basic.consume`; answered with `Done`. Deliveries come back on the link as
    /// `ToClient::Deliver`. (Since link version 2 the one consume request: it took the
    /// place of a shorter one without arguments, qos or window.)
    Consume {
        /// The consuming channel.
        channel: ChannelId,
        /// The consumer tag, unique on that channel.
        tag: String,
        /// Unacked deliveries the consumer may hold at once; 0 means unlimited.
        prefetch: u32,
        /// Deliveries are settled as they go out.
        no_ack: bool,
        /// Have the queue to itself: refused (403) while it has other consumers.
        exclusive: bool,
        /// Its `x-priority`.
        priority: i32,
        /// Its arguments (what a stream reads: `x-stream-offset`).
        arguments: FieldTable,
        /// The `basic.qos` it started under (`global` is what a stream reads).
        qos: Qos,
        /// A consumer whose channel reports what it writes
        /// ([`QueueNote::Written`]): at most this many deliveries not yet written at
        /// once (`ConsumeRequest::window`); 0: no window. Since link version 2.
        window: u32,
        /// The channel takes a stream's records as runs (`ToClient::Records`,
        /// `ConsumeRequest::records`). Since link version 3.
        records: bool,
    },
    /// A stream's log bounds and consumer groups; answered with `StreamInfo`.
    StreamInfo,
    /// A stream's messages published with a key; answered with `Found`.
    Lookup {
        /// The key.
        key: String,
        /// At most this many.
        limit: u32,
    },
}

/// The answer to a [`QueueRequest`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum QueueAnswer {
    /// Done; nothing to tell.
    Done,
    /// How many messages a purge or delete removed.
    Count(u64),
    /// A got message and the ready messages left, or `None` when the queue was empty.
    Got(Option<Box<(RemoteDelivery, u64)>>),
    /// The queue's consumers.
    Consumers(Vec<ConsumerSummary>),
    /// Messages found by key, with their offsets.
    Found(Vec<(u64, Message)>),
    /// A stream's log bounds and consumer groups.
    StreamInfo(StreamInfo),
}

/// An operation without an answer. Channel ids are the sending node's.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum QueueNote {
    /// Acks or rejects of deliveries the channel holds.
    Settle {
        /// The channel that holds the deliveries.
        channel: ChannelId,
        /// Ack, requeue or dead-letter.
        settlement: Settlement,
        /// The messages, by their seq in the queue.
        seqs: Vec<u64>,
    },
    /// The channel closed: its unsettled deliveries go back, its consumers end.
    ChannelDown {
        /// The channel that closed.
        channel: ChannelId,
    },
    /// The queue was declared again: its `x-expires` timer restarts.
    Touch,
    /// Make the queue's actor fail so that its supervisor restarts it (debug shell).
    Crash,
    /// The channel wrote `count` deliveries of its windowed consumer `tag`
    /// towards its client (`Queue::written`). Since link version 2.
    Written {
        /// The consuming channel.
        channel: ChannelId,
        /// The consumer.
        tag: String,
        /// How many were written.
        count: u32,
    },
}

/// A delivery on its way to the consuming channel's node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RemoteDelivery {
    /// The consumer it is for; empty for a get.
    pub consumer_tag: String,
    /// The message's position in its queue: what the channel settles.
    pub seq: u64,
    /// The message (copied onto the wire).
    pub message: Message,
    /// AMQP's redelivered flag: it may have been delivered before.
    pub redelivered: bool,
    /// The consumer settles nothing.
    pub no_ack: bool,
}

impl RemoteDelivery {
    /// A queue's delivery, for the wire.
    pub fn of(d: &QueueDelivery) -> Self {
        RemoteDelivery {
            consumer_tag: d.consumer_tag.to_string(),
            seq: d.seq,
            message: (*d.message).clone(),
            redelivered: d.redelivered,
            no_ack: d.no_ack,
        }
    }

    /// Back into a queue's delivery, from `queue`, for the consuming channel.
    pub fn into_delivery(self, queue: Arc<str>) -> QueueDelivery {
        QueueDelivery {
            queue,
            consumer_tag: self.consumer_tag.into(),
            seq: self.seq,
            message: Arc::new(self.message),
            redelivered: self.redelivered,
            no_ack: self.no_ack,
        }
    }
}

/// Messages to a node's queue endpoint (over ractor_cluster).
#[derive(RactorClusterMessage)]
pub enum EndpointMsg {
    /// Where the node takes queue links ("host:port"), asked by the named node.
    #[rpc]
    LinkAddress(Wire<String>, RpcReplyPort<Wire<String>>),
}

/// The endpoint of `node`, if it is reachable.
pub fn endpoint_of(node: &str) -> Option<ractor::ActorRef<EndpointMsg>> {
    ractor::pg::get_members(&endpoint_group(node))
        .into_iter()
        .next()
        .map(ractor::ActorRef::from)
}
