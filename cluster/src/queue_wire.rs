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
use warren_actors::message::Message;
use warren_actors::queue::{ConsumerSummary, EnqueueOutcome, QueueStatus, Settlement};

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
    pub vhost: String,
    pub queue: String,
}

/// An operation with an answer. Channel ids are the asking node's.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum QueueRequest {
    Consume {
        channel: ChannelId,
        tag: String,
        prefetch: u32,
        no_ack: bool,
        exclusive: bool,
    },
    Cancel {
        channel: ChannelId,
        tag: String,
    },
    Get {
        channel: ChannelId,
        no_ack: bool,
    },
    Purge,
    Delete {
        if_unused: bool,
        if_empty: bool,
    },
    Consumers,
}

/// The answer to a [`QueueRequest`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum QueueAnswer {
    Done,
    Count(u64),
    Got(Option<Box<(RemoteDelivery, u64)>>),
    Consumers(Vec<ConsumerSummary>),
}

/// An operation without an answer. Channel ids are the sending node's.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum QueueNote {
    Settle {
        channel: ChannelId,
        settlement: Settlement,
        seqs: Vec<u64>,
    },
    /// The channel closed: its unsettled deliveries go back, its consumers end.
    ChannelDown {
        channel: ChannelId,
    },
    Touch,
    Crash,
}

/// Messages for one queue.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PublishShare {
    pub vhost: String,
    pub queue: String,
    pub messages: Vec<Message>,
}

/// A delivery on its way to the consuming channel's node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RemoteDelivery {
    pub consumer_tag: String,
    pub seq: u64,
    pub message: Message,
    pub redelivered: bool,
    pub no_ack: bool,
}

impl RemoteDelivery {
    pub fn of(d: &QueueDelivery) -> Self {
        RemoteDelivery {
            consumer_tag: d.consumer_tag.to_string(),
            seq: d.seq,
            message: (*d.message).clone(),
            redelivered: d.redelivered,
            no_ack: d.no_ack,
        }
    }

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
    pub vhost: String,
    pub queue: String,
    pub channel: ChannelId,
    pub event: RemoteEvent,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RemoteEvent {
    Deliver(Vec<RemoteDelivery>),
    ConsumerCancelled { tag: String, reason: String },
}

impl RemoteEvent {
    /// What crosses the wire of a queue's event; `None` for what does not (traces
    /// stay on the queue's node).
    pub fn of(event: &QueueEvent) -> Option<Self> {
        match event {
            QueueEvent::Deliver(ds) => Some(RemoteEvent::Deliver(
                ds.iter().map(RemoteDelivery::of).collect(),
            )),
            QueueEvent::ConsumerCancelled { tag, reason } => Some(RemoteEvent::ConsumerCancelled {
                tag: tag.to_string(),
                reason: reason.clone(),
            }),
            QueueEvent::Traced(_) => None,
        }
    }

    pub fn into_event(self, queue: &Arc<str>) -> QueueEvent {
        match self {
            RemoteEvent::Deliver(ds) => QueueEvent::Deliver(
                ds.into_iter()
                    .map(|d| d.into_delivery(queue.clone()))
                    .collect(),
            ),
            RemoteEvent::ConsumerCancelled { tag, reason } => QueueEvent::ConsumerCancelled {
                tag: tag.into(),
                reason,
            },
        }
    }
}

/// Messages to a node's queue endpoint.
#[derive(RactorClusterMessage)]
pub enum EndpointMsg {
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
