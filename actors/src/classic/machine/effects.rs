//! What the queue asks its shell to do: store, load and remove bodies, deliver,
//! confirm, dead-letter, delete the queue. The shell performs effects in order.

use crate::message::SharedMessage;

use super::command::{ChannelId, ConsumerTag, PublishId, Seq};
use super::entry::IndexRecord;

/// Why a message was dead-lettered (the `reason` of its `x-death` entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DeadLetterReason {
    /// Its TTL passed.
    Expired,
    /// A consumer rejected or nacked it without requeue.
    Rejected,
    /// The queue overflowed its max length.
    Maxlen,
    /// It was returned more often than `x-delivery-limit`.
    DeliveryLimit,
}

impl DeadLetterReason {
    /// The reason as RabbitMQ writes it in `x-death`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Expired => "expired",
            DeadLetterReason::Rejected => "rejected",
            DeadLetterReason::Maxlen => "maxlen",
            DeadLetterReason::DeliveryLimit => "delivery_limit",
        }
    }
}

/// Why the queue asks to be deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteReason {
    /// `x-expires` passed without consumers, gets or declarations.
    Expired,
    /// The last consumer of an auto-delete queue went away.
    AutoDelete,
}

/// One thing for the shell to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Write the message and its index record under `seq`. `durable`: fsync before
    /// answering; otherwise the write may be lost in a crash (it only moves a body
    /// out of memory). Answer with `Command::Stored` once written.
    Store {
        /// The message's number in the queue: its storage key.
        seq: Seq,
        /// The message, body and all.
        message: SharedMessage,
        /// The metadata recovery reads back for it.
        record: IndexRecord,
        /// Fsync before answering (a durable queue's persistent message).
        durable: bool,
    },
    /// Replace the index record of a stored message (a requeue changed its delivery
    /// count). No answer.
    UpdateIndex {
        /// The stored message.
        seq: Seq,
        /// Its new record.
        record: IndexRecord,
    },
    /// Delete the stored message (it left the queue). No answer. Ordered after the
    /// `Store` of the same seq, which may still be in flight.
    Remove {
        /// The message that left.
        seq: Seq,
    },
    /// Read these bodies; answer with `Command::BodiesLoaded` (in any grouping) or
    /// `Command::BodiesMissing`.
    LoadBodies {
        /// The messages whose bodies are wanted.
        seqs: Vec<Seq>,
    },
    /// Send the message to a consumer (`basic.deliver`). The channel assigns the
    /// delivery tag and remembers its seq for the ack.
    Deliver {
        /// The consumer's channel.
        channel: ChannelId,
        /// The consumer's tag.
        tag: ConsumerTag,
        /// What the channel acks or rejects.
        seq: Seq,
        /// The message to deliver.
        message: SharedMessage,
        /// AMQP's redelivered flag: it may have been delivered before.
        redelivered: bool,
        /// How many times the message was returned to the queue before.
        delivery_count: u32,
        /// The consumer settles nothing (it is already settled here).
        no_ack: bool,
    },
    /// Answer a `basic.get` with a message; `message_count` is what remains ready.
    GetOk {
        /// The channel that asked.
        channel: ChannelId,
        /// What the channel acks or rejects.
        seq: Seq,
        /// The message got.
        message: SharedMessage,
        /// AMQP's redelivered flag: it may have been delivered before.
        redelivered: bool,
        /// How many times the message was returned to the queue before.
        delivery_count: u32,
        /// Ready messages left in the queue after this one.
        message_count: u64,
        /// The channel settles nothing (it is already settled here).
        no_ack: bool,
    },
    /// Answer a `basic.get` on an empty queue.
    GetEmpty {
        /// The channel that asked.
        channel: ChannelId,
    },
    /// Confirm the publish (`basic.ack` to the publisher).
    Confirm {
        /// The publish, as the shell named it in `Command::Enqueue`.
        publish: PublishId,
    },
    /// Refuse the publish (`basic.nack` to the publisher).
    Reject {
        /// The publish, as the shell named it in `Command::Enqueue`.
        publish: PublishId,
    },
    /// Republish the message through `exchange` with `routing_key`. The message
    /// already carries its updated `x-death` and `x-first-death-*` headers and has
    /// no expiration. `seq` is `None` for a publish refused at the door
    /// (`reject-publish-dlx`), republished at most once; a message with a seq stays in
    /// the queue until `Command::DeadLettered` says its targets hold it.
    DeadLetter {
        /// The message's number in the queue; `None` for a publish refused at the door.
        seq: Option<Seq>,
        /// The message as republished (its `x-death` headers updated).
        message: SharedMessage,
        /// Why it was dead-lettered.
        reason: DeadLetterReason,
        /// The queue's dead-letter exchange (`x-dead-letter-exchange`).
        exchange: String,
        /// The queue's `x-dead-letter-routing-key`, or the message's own routing key
        /// when it has none.
        routing_key: String,
    },
    /// A single-active-consumer queue made this consumer the active one.
    ConsumerActive {
        /// The consumer's channel.
        channel: ChannelId,
        /// The consumer's tag.
        tag: ConsumerTag,
    },
    /// Delete this queue (and its stored messages). The state answers 404 from now on.
    DeleteQueue {
        /// Why the queue deletes itself.
        reason: DeleteReason,
    },
}
