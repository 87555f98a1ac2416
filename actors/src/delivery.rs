//! What a queue tells the channel that consumes from it.
//!
//! A channel (the node-side session of a client handle, or an AMQP channel) hands a
//! queue a [`ChannelSink`] when it starts a consumer; the queue pushes deliveries and
//! consumer events into it. The sink is a plain function so that queues need not know
//! the channel's actor type (which lives in a crate above this one).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::message::{Message, SharedMessage};

/// A message handed to a consumer, identified in its queue by `seq`.
#[derive(Clone, Debug)]
pub struct QueueDelivery {
    /// The queue's name: where the settlement of this delivery goes.
    pub queue: Arc<str>,
    /// The consumer it is for, as the channel named it when it started consuming.
    pub consumer_tag: Arc<str>,
    /// The message's position in its queue: what the channel acks or rejects.
    pub seq: u64,
    /// The message, shared with every other queue it was routed to.
    pub message: SharedMessage,
    /// AMQP's redelivered flag: the message may have been delivered before (it was
    /// requeued, or recovered after a restart).
    pub redelivered: bool,
    /// The consumer settles nothing: the channel need not remember the delivery.
    pub no_ack: bool,
}

/// Consecutive records of a stream for one consumer, sent as one delivery: the
/// consumer settles them together under `seq` (a stream's settlements only give it
/// credit). Sent only to a consumer whose channel asked for them
/// ([`ConsumeRequest::records`](crate::queue::ConsumeRequest::records)): the client
/// handle's session, whose client hands the records out one by one. Per-record
/// deliveries cost the node a sequence number, an entry in three maps and a copy
/// of the message to stamp its offset; a run costs that once.
#[derive(Clone, Debug)]
pub struct RecordRun {
    /// The stream's queue: where the settlement goes.
    pub queue: Arc<str>,
    /// The consumer it is for.
    pub consumer_tag: Arc<str>,
    /// What the channel settles for the whole run.
    pub seq: u64,
    /// The offset of its first record; the others follow without gaps.
    pub first_offset: u64,
    /// The records, as stored (without `x-stream-offset`: the offset is
    /// `first_offset` plus the record's place in the run).
    pub messages: Vec<SharedMessage>,
}

/// An event from a queue to a channel.
#[derive(Clone, Debug)]
pub enum QueueEvent {
    /// Deliveries for consumers of this channel, in queue order.
    Deliver(Vec<QueueDelivery>),
    /// A run of a stream's records, for a channel that asked for runs.
    Records(RecordRun),
    /// The queue ended a consumer (the queue was deleted, say).
    ConsumerCancelled {
        /// The consumer's tag.
        tag: Arc<str>,
        /// Why, in words the client handle passes on to its consumer.
        reason: String,
        /// The queue goes on, served elsewhere (its leader stopped, or the node that
        /// served it went away): a handle that can reach it there consumes again
        /// instead of passing this on. A deleted queue's cancel is not resumable.
        resumable: bool,
    },
    /// Messages that entered a queue this channel traces (the shell's `trace`).
    Traced(Vec<TracedMessage>),
}

/// What `trace` shows of a message entering a queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracedMessage {
    /// The queue the message entered.
    pub queue: String,
    /// The exchange it was published to (`""` for the default exchange).
    pub exchange: String,
    /// The routing key it was published with.
    pub routing_key: String,
    /// Body size in bytes.
    pub size: u64,
    /// The first bytes of the body, as text (lossy), at most [`TracedMessage::PREVIEW`].
    pub preview: String,
}

impl TracedMessage {
    /// Body bytes a preview shows at most.
    pub const PREVIEW: usize = 48;

    /// What `trace` shows of `message` entering `queue`.
    pub fn of(queue: &str, message: &Message) -> Self {
        let body = &message.body[..message.body.len().min(Self::PREVIEW)];
        TracedMessage {
            queue: queue.to_string(),
            exchange: message.exchange.clone(),
            routing_key: message.routing_key.clone(),
            size: message.body_size(),
            preview: String::from_utf8_lossy(body).into_owned(),
        }
    }
}

/// Where a queue sends events for one channel.
pub type ChannelSink = Arc<dyn Fn(QueueEvent) + Send + Sync>;

/// Identifies a channel to a queue (for acks and for requeueing when it goes away).
pub type ChannelId = u64;

/// A channel id no other channel of this node has or had: client-handle sessions,
/// AMQP channels and AMQP connections (the owners of exclusive queues) all draw here.
pub fn next_channel_id() -> ChannelId {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
