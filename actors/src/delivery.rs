//! What a queue tells the channel that consumes from it.
//!
//! A channel (the node-side session of a client handle, or an AMQP channel) hands a
//! queue a [`ChannelSink`] when it starts a consumer; the queue pushes deliveries and
//! consumer events into it. The sink is a plain function so that queues need not know
//! the channel's actor type (which lives in a crate above this one).

use std::sync::Arc;

use crate::message::SharedMessage;

/// A message handed to a consumer, identified in its queue by `seq`.
#[derive(Clone, Debug)]
pub struct QueueDelivery {
    pub queue: Arc<str>,
    pub consumer_tag: Arc<str>,
    /// The message's position in its queue: what the channel acks or rejects.
    pub seq: u64,
    pub message: SharedMessage,
    pub redelivered: bool,
    /// The consumer settles nothing: the channel need not remember the delivery.
    pub no_ack: bool,
}

/// An event from a queue to a channel.
#[derive(Clone, Debug)]
pub enum QueueEvent {
    /// Deliveries for consumers of this channel, in queue order.
    Deliver(Vec<QueueDelivery>),
    /// The queue ended a consumer (the queue was deleted, say).
    ConsumerCancelled { tag: Arc<str>, reason: String },
}

/// Where a queue sends events for one channel.
pub type ChannelSink = Arc<dyn Fn(QueueEvent) + Send + Sync>;

/// Identifies a channel to a queue (for acks and for requeueing when it goes away).
pub type ChannelId = u64;
