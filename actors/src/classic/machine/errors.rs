//! The queue's errors: each names the AMQP reply code a client sees and reads like
//! RabbitMQ's text for the same condition, so client libraries and people who know
//! RabbitMQ recognise them.

use thiserror::Error;

use super::command::Seq;

/// AMQP reply codes the queue answers with.
pub mod reply_code {
    /// 403: the operation is forbidden (exclusive use).
    pub const ACCESS_REFUSED: u16 = 403;
    /// 404: the queue does not exist (any more).
    pub const NOT_FOUND: u16 = 404;
    /// 406: a precondition failed (arguments, equivalence, unknown delivery tag, delete checks).
    pub const PRECONDITION_FAILED: u16 = 406;
    /// 530: the operation is not allowed (reused consumer tag).
    pub const NOT_ALLOWED: u16 = 530;
}

/// Why the queue refused a declaration or a command.
///
/// A refused command changes nothing: the queue validates before it mutates.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum QueueError {
    /// A declare argument has the wrong type or value (406).
    #[error("invalid arg '{arg}' for queue '{queue}' in vhost '{vhost}': {problem}")]
    InvalidArg {
        /// The queue's name.
        queue: String,
        /// Its vhost.
        vhost: String,
        /// The argument, e.g. `x-max-length`.
        arg: String,
        /// What is wrong, in RabbitMQ's words, e.g. `{value_negative,-1}`.
        problem: String,
    },
    /// A redeclaration differs from the existing queue (406).
    #[error(
        "inequivalent arg '{arg}' for queue '{queue}' in vhost '{vhost}': \
         received {received} but current is {current}"
    )]
    Inequivalent {
        /// The queue's name.
        queue: String,
        /// Its vhost.
        vhost: String,
        /// The property or argument that differs (`durable`, `x-message-ttl`...).
        arg: String,
        /// Its value in the redeclaration, as RabbitMQ prints it.
        received: String,
        /// Its value on the existing queue.
        current: String,
    },
    /// An exclusive consumer exists, or one was asked for while others exist (403).
    #[error("queue '{queue}' in vhost '{vhost}' in exclusive use")]
    ExclusiveUse {
        /// The queue's name.
        queue: String,
        /// Its vhost.
        vhost: String,
    },
    /// The channel already has a consumer with this tag (530).
    #[error("attempt to reuse consumer tag '{tag}'")]
    ConsumerTagInUse {
        /// The consumer tag asked for.
        tag: String,
    },
    /// The channel acked, rejected or nacked a message it does not hold (406).
    ///
    /// The queue only knows seqs; the channel, which assigned the delivery tag,
    /// rewrites the text with the tag ("unknown delivery tag 7").
    #[error("unknown delivery tag (message {seq} is not unacked on this channel)")]
    UnknownDeliveryTag {
        /// The message the settlement named.
        seq: Seq,
    },
    /// `queue.delete` with `if-unused` on a queue with consumers (406).
    #[error("queue '{queue}' in vhost '{vhost}' in use")]
    InUse {
        /// The queue's name.
        queue: String,
        /// Its vhost.
        vhost: String,
    },
    /// `queue.delete` with `if-empty` on a queue with ready messages (406).
    #[error("queue '{queue}' in vhost '{vhost}' not empty")]
    NotEmpty {
        /// The queue's name.
        queue: String,
        /// Its vhost.
        vhost: String,
    },
    /// The queue was deleted (explicitly, by expiry or by auto-delete) (404).
    #[error("no queue '{queue}' in vhost '{vhost}'")]
    NotFound {
        /// The queue's name.
        queue: String,
        /// Its vhost.
        vhost: String,
    },
}

impl QueueError {
    /// The AMQP reply code for this error (see [`reply_code`]).
    pub fn reply_code(&self) -> u16 {
        match self {
            QueueError::InvalidArg { .. }
            | QueueError::Inequivalent { .. }
            | QueueError::UnknownDeliveryTag { .. }
            | QueueError::InUse { .. }
            | QueueError::NotEmpty { .. } => reply_code::PRECONDITION_FAILED,
            QueueError::ExclusiveUse { .. } => reply_code::ACCESS_REFUSED,
            QueueError::ConsumerTagInUse { .. } => reply_code::NOT_ALLOWED,
            QueueError::NotFound { .. } => reply_code::NOT_FOUND,
        }
    }
}
