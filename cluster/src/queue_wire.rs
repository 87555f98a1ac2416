//! What nodes say to each other about queues: the messages of the queue endpoints.
//!
//! Every node runs one queue endpoint (`queues@NODE`, process group
//! `warren.queues.NODE`). A node that has a queue another node's client uses receives
//! that client's publishes, consumes, gets and settlements there, and sends the
//! queue's deliveries back to the client's node's endpoint, which hands them to the
//! channel that consumes. Channel ids are the client node's; the queue's node maps
//! them to its own.

use std::sync::Arc;

use ractor::RpcReplyPort;
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};
use warren_actors::delivery::{ChannelId, QueueDelivery, QueueEvent};
use warren_actors::message::{FieldTable, Message};
use warren_actors::queue::{
    ConsumerSummary, EnqueueOutcome, Qos, QueueStatus, Settlement, StreamInfo,
};

use crate::protocol::ErrorReply;
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

/// Which queue, asked from which node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueueAddress {
    /// The asking node (whose channels the requests name).
    pub from: String,
    /// The queue's vhost.
    pub vhost: String,
    /// The queue's name.
    pub queue: String,
}

/// An operation with an answer. Channel ids are the asking node's.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum QueueRequest {
    /// `basic.consume`; answered with `Done`. Deliveries come back as
    /// [`EndpointMsg::Events`].
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
    },
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
    /// `basic.consume` with consumer arguments or a channel-wide prefetch (what a
    /// stream reads: `x-stream-offset`, `basic.qos global`); answered with `Done`.
    /// A consumer without them is asked with [`QueueRequest::Consume`], which nodes
    /// of earlier versions know.
    ConsumeWith {
        /// The consuming channel.
        channel: ChannelId,
        /// The consumer tag, unique on that channel.
        tag: String,
        /// Unacked deliveries the consumer may hold at once; 0 means unlimited.
        prefetch: u32,
        /// Deliveries are settled as they go out.
        no_ack: bool,
        /// Have the queue to itself.
        exclusive: bool,
        /// Its `x-priority`.
        priority: i32,
        /// Its arguments.
        arguments: FieldTable,
        /// The `basic.qos` it started under.
        qos: Qos,
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
}

/// Messages for one queue.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PublishShare {
    /// The queue's vhost.
    pub vhost: String,
    /// The queue's name.
    pub queue: String,
    /// The messages routed to it, in publish order.
    pub messages: Vec<Message>,
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

/// Events for a channel of the receiving node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChannelEvents {
    /// The queue's node.
    pub node: String,
    /// The queue's vhost.
    pub vhost: String,
    /// The queue's name.
    pub queue: String,
    /// The receiving node's channel (its own id, as it named it in its request).
    pub channel: ChannelId,
    /// What happened.
    pub event: RemoteEvent,
}

/// A queue's event for a channel of another node: a [`QueueEvent`] that can cross
/// the wire.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RemoteEvent {
    /// Deliveries for the channel's consumers, in queue order.
    Deliver(Vec<RemoteDelivery>),
    /// The queue ended a consumer (it was deleted, say).
    ConsumerCancelled {
        /// The consumer's tag.
        tag: String,
        /// Why, for the consumer.
        reason: String,
        /// The queue goes on, served elsewhere (see [`QueueEvent::ConsumerCancelled`]).
        resumable: bool,
    },
}

impl RemoteEvent {
    /// What crosses the wire of a queue's event; `None` for what does not (traces
    /// stay on the queue's node).
    pub fn of(event: &QueueEvent) -> Option<Self> {
        match event {
            QueueEvent::Deliver(ds) => Some(RemoteEvent::Deliver(
                ds.iter().map(RemoteDelivery::of).collect(),
            )),
            QueueEvent::ConsumerCancelled {
                tag,
                reason,
                resumable,
            } => Some(RemoteEvent::ConsumerCancelled {
                tag: tag.to_string(),
                reason: reason.clone(),
                resumable: *resumable,
            }),
            QueueEvent::Traced(_) => None,
        }
    }

    /// Back into a queue's event, from `queue`.
    pub fn into_event(self, queue: &Arc<str>) -> QueueEvent {
        match self {
            RemoteEvent::Deliver(ds) => QueueEvent::Deliver(
                ds.into_iter()
                    .map(|d| d.into_delivery(queue.clone()))
                    .collect(),
            ),
            RemoteEvent::ConsumerCancelled {
                tag,
                reason,
                resumable,
            } => QueueEvent::ConsumerCancelled {
                tag: tag.into(),
                reason,
                resumable,
            },
        }
    }
}

/// Messages to a node's queue endpoint.
#[derive(RactorClusterMessage)]
pub enum EndpointMsg {
    /// A request to one of this node's queues, answered with its answer or the
    /// refusal (404 when the queue is not on this node).
    #[rpc]
    Call(
        Wire<(QueueAddress, QueueRequest)>,
        RpcReplyPort<Wire<Result<QueueAnswer, ErrorReply>>>,
    ),
    /// Publishes whose confirms the publisher waits for.
    #[rpc]
    Publish(Wire<PublishShare>, RpcReplyPort<Wire<Vec<EnqueueOutcome>>>),
    /// Publishes nobody waits for (dead-lettering, say).
    Send(Wire<PublishShare>),
    /// An operation on one of this node's queues that has no answer.
    Note(Wire<(QueueAddress, QueueNote)>),
    /// From a queue's node to the node of the channel that consumes.
    Events(Wire<ChannelEvents>),
    /// The counters of the queues of a vhost on this node, by name.
    #[rpc]
    Stats(Wire<String>, RpcReplyPort<Wire<Vec<(String, QueueStatus)>>>),
}

/// The endpoint of `node`, if it is reachable.
pub fn endpoint_of(node: &str) -> Option<ractor::ActorRef<EndpointMsg>> {
    ractor::pg::get_members(&endpoint_group(node))
        .into_iter()
        .next()
        .map(ractor::ActorRef::from)
}
