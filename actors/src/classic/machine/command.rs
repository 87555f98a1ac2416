//! What the shell asks of a queue ([`Command`]) and what the queue answers at once
//! ([`Reply`]). Everything that happens later or elsewhere is an
//! [`Effect`](super::effects::Effect).

use std::sync::Arc;

use crate::message::SharedMessage;

/// A message's number within its queue: assigned at enqueue, strictly increasing,
/// never reused; also its storage key.
pub type Seq = u64;

/// The shell's identifier of a channel (opaque to the queue).
pub type ChannelId = u64;

/// The shell's identifier of a publish awaiting a confirm (opaque to the queue).
pub type PublishId = u64;

/// A consumer tag, unique per channel. Shared, because every delivery carries it.
pub type ConsumerTag = Arc<str>;

/// A command to the queue. Applied with
/// [`QueueState::apply`](super::state::QueueState::apply).
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// A message routed to this queue. `confirm` is set when the publisher wants a
    /// confirm: it is answered with `Effect::Confirm` (or `Effect::Reject` when the
    /// queue refuses the message).
    Enqueue {
        /// The message, shared with the other queues it was routed to.
        message: SharedMessage,
        /// The publish to confirm or reject; `None` when nobody waits for it.
        confirm: Option<PublishId>,
    },
    /// `basic.consume`. `prefetch` 0 is unlimited; `priority` is the consumer's
    /// `x-priority` argument (0 when absent).
    Consume {
        /// The consumer's tag, unique on its channel.
        tag: ConsumerTag,
        /// The channel the deliveries go to.
        channel: ChannelId,
        /// Unacked deliveries the consumer may hold at once; 0 means unlimited.
        prefetch: u32,
        /// Deliveries are settled as they go out: the consumer never acks.
        no_ack: bool,
        /// The consumer wants the queue to itself: refused (403) while other
        /// consumers exist, and others are refused while it exists.
        exclusive: bool,
        /// Higher-priority consumers get messages first (`x-priority`).
        priority: i32,
    },
    /// `basic.cancel`. The consumer's unacked messages stay unacked on its channel.
    Cancel {
        /// The consumer's channel.
        channel: ChannelId,
        /// The consumer's tag on that channel.
        tag: ConsumerTag,
    },
    /// The channel closed: its consumers go, its unacked messages return to the
    /// queue, redelivered, in their original place.
    ChannelDown {
        /// The channel that closed.
        channel: ChannelId,
    },
    /// `basic.ack`: the channel expands `multiple` into the seqs it covers.
    Ack {
        /// The channel that holds the messages.
        channel: ChannelId,
        /// The acked messages.
        seqs: Vec<Seq>,
    },
    /// `basic.reject` / `basic.nack`: requeue, or dead-letter (discard without a
    /// dead-letter exchange).
    Reject {
        /// The channel that holds the messages.
        channel: ChannelId,
        /// The rejected messages.
        seqs: Vec<Seq>,
        /// Back to the queue (redelivered, in their original place); otherwise
        /// dead-lettered, or dropped when the queue has no dead-letter exchange.
        requeue: bool,
    },
    /// `basic.get`, answered with `Effect::GetOk` or `Effect::GetEmpty` (possibly
    /// after the head's body is loaded).
    Get {
        /// The channel that asked.
        channel: ChannelId,
        /// The message is settled as it goes out: the channel never acks it.
        no_ack: bool,
    },
    /// `queue.purge`: removes the ready messages.
    Purge,
    /// `queue.delete`; afterwards every command but the storage answers fails with
    /// 404. The shell removes the queue's stored messages (one range delete).
    Delete {
        /// Refuse (406) while the queue has consumers.
        if_unused: bool,
        /// Refuse (406) while the queue has ready messages.
        if_empty: bool,
    },
    /// The queue was (re)declared, actively or passively: restarts the `x-expires`
    /// timer. Check equivalence first with
    /// [`QueueConfig::check_equivalent`](super::config::QueueConfig::check_equivalent).
    Touch,
    /// Time passed: expire messages and the queue. Every command does this too; the
    /// shell sends `Tick` at [`next_deadline`](super::state::QueueState::next_deadline).
    Tick,
    /// Storage confirmed these `Effect::Store` writes (fsynced if durable).
    Stored(Vec<Seq>),
    /// Bodies asked for by `Effect::LoadBodies`.
    BodiesLoaded(Vec<(Seq, SharedMessage)>),
    /// What became of dead-lettered messages (`Effect::DeadLetter` with a seq): those
    /// `done` are held by their targets and leave the queue; those `refused` are
    /// republished later.
    DeadLettered {
        /// Held by every target: these leave the queue.
        done: Vec<Seq>,
        /// Refused by a target: these stay and are republished later.
        refused: Vec<Seq>,
    },
    /// Storage has no body for these seqs: the messages are dropped and counted as
    /// lost (a storage fault; the shell should log it).
    BodiesMissing(Vec<Seq>),
    /// The next consumer registered as `tag` on `channel` (a consumer whose
    /// channel reports what it writes towards the client, [`Command::Written`]) gets
    /// at most `limit` deliveries not yet written. Sent just before its `Consume`.
    /// Without it a client that reads slowly is sent the whole queue.
    Window {
        /// The consumer's channel.
        channel: ChannelId,
        /// The consumer's tag on that channel.
        tag: ConsumerTag,
        /// Deliveries not yet written it may have at once.
        limit: u32,
    },
    /// A windowed consumer's channel wrote `count` of its deliveries towards the
    /// client.
    Written {
        /// The consumer's channel.
        channel: ChannelId,
        /// The consumer's tag on that channel.
        tag: ConsumerTag,
        /// How many were written.
        count: u32,
    },
}

/// The queue's immediate answer to a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Done; anything else it caused is in the effects.
    Ok,
    /// The message was accepted under this seq (it may already have been delivered,
    /// dropped or expired: see the effects).
    Enqueued {
        /// The message's number in the queue.
        seq: Seq,
    },
    /// The queue is full and refuses publishes (`x-overflow: reject-publish[-dlx]`).
    PublishRejected,
    /// The queue's `x-expires` deadline had passed when the message came (its `Tick`
    /// was still on the way): the queue deleted itself and did not take the message,
    /// as if it had not been routed to it.
    Gone,
    /// `basic.cancel` done; `existed` is false for an unknown tag (not an error in AMQP).
    Cancelled {
        /// Whether the queue had a consumer with that tag on that channel.
        existed: bool,
    },
    /// `queue.purge` removed this many ready messages.
    Purged {
        /// Ready messages removed.
        count: u64,
    },
    /// `queue.delete` done; the queue held this many ready messages.
    Deleted {
        /// Ready messages the queue held when deleted (AMQP's `queue.delete-ok`).
        message_count: u64,
    },
}
