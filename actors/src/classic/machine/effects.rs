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
        seq: Seq,
        message: SharedMessage,
        record: IndexRecord,
        durable: bool,
    },
    /// Replace the index record of a stored message (a requeue changed its delivery
    /// count). No answer.
    UpdateIndex { seq: Seq, record: IndexRecord },
    /// Delete the stored message (it left the queue). No answer. Ordered after the
    /// `Store` of the same seq, which may still be in flight.
    Remove { seq: Seq },
    /// Read these bodies; answer with `Command::BodiesLoaded` (in any grouping) or
    /// `Command::BodiesMissing`.
    LoadBodies { seqs: Vec<Seq> },
    /// Send the message to a consumer (`basic.deliver`). The channel assigns the
    /// delivery tag and remembers its seq for the ack.
    Deliver {
        channel: ChannelId,
        tag: ConsumerTag,
        seq: Seq,
        message: SharedMessage,
        redelivered: bool,
        /// How many times the message was returned to the queue before.
        delivery_count: u32,
        /// The consumer settles nothing (it is already settled here).
        no_ack: bool,
    },
    /// Answer a `basic.get` with a message; `message_count` is what remains ready.
    GetOk {
        channel: ChannelId,
        seq: Seq,
        message: SharedMessage,
        redelivered: bool,
        delivery_count: u32,
        message_count: u64,
        no_ack: bool,
    },
    /// Answer a `basic.get` on an empty queue.
    GetEmpty { channel: ChannelId },
    /// Confirm the publish (`basic.ack` to the publisher).
    Confirm { publish: PublishId },
    /// Refuse the publish (`basic.nack` to the publisher).
    Reject { publish: PublishId },
    /// Republish the message through `exchange` with `routing_key`. The message
    /// already carries its updated `x-death` and `x-first-death-*` headers and has
    /// no expiration. `seq` is `None` for a publish refused at the door
    /// (`reject-publish-dlx`), republished at most once; a message with a seq stays in
    /// the queue until `Command::DeadLettered` says its targets hold it.
    DeadLetter {
        seq: Option<Seq>,
        message: SharedMessage,
        reason: DeadLetterReason,
        exchange: String,
        routing_key: String,
    },
    /// A single-active-consumer queue made this consumer the active one.
    ConsumerActive {
        channel: ChannelId,
        tag: ConsumerTag,
    },
    /// Delete this queue (and its stored messages). The state answers 404 from now on.
    DeleteQueue { reason: DeleteReason },
}
