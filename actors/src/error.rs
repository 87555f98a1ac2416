//! The error a broker operation returns to whoever asked (client handle or AMQP).
//!
//! Every refusal carries the AMQP 0-9-1 reply code that RabbitMQ would use and a text
//! that names the object, so both front doors report it the same way.

/// AMQP reply codes used by the broker.
pub mod code {
    pub const ACCESS_REFUSED: u16 = 403;
    pub const NOT_FOUND: u16 = 404;
    pub const RESOURCE_LOCKED: u16 = 405;
    pub const PRECONDITION_FAILED: u16 = 406;
    pub const CONNECTION_FORCED: u16 = 320;
    pub const COMMAND_INVALID: u16 = 503;
    pub const NOT_ALLOWED: u16 = 530;
    pub const RESOURCE_ERROR: u16 = 506;
    pub const INTERNAL_ERROR: u16 = 541;
}

/// A broker operation's refusal: an AMQP reply code and a text naming the object.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text}")]
pub struct BrokerError {
    pub code: u16,
    pub text: String,
}

/// A refusal of users, permissions or vhost records keeps its reply code and text.
impl From<warren_access::AccessError> for BrokerError {
    fn from(e: warren_access::AccessError) -> Self {
        BrokerError::new(e.reply_code(), e.to_string())
    }
}

impl BrokerError {
    pub fn new(code: u16, text: impl Into<String>) -> Self {
        BrokerError {
            code,
            text: text.into(),
        }
    }

    pub fn not_found(text: impl Into<String>) -> Self {
        Self::new(code::NOT_FOUND, text)
    }

    pub fn precondition_failed(text: impl Into<String>) -> Self {
        Self::new(code::PRECONDITION_FAILED, text)
    }

    pub fn resource_locked(text: impl Into<String>) -> Self {
        Self::new(code::RESOURCE_LOCKED, text)
    }

    pub fn access_refused(text: impl Into<String>) -> Self {
        Self::new(code::ACCESS_REFUSED, text)
    }

    pub fn internal(text: impl Into<String>) -> Self {
        Self::new(code::INTERNAL_ERROR, text)
    }

    /// The node's store failed (541: the client cannot fix it).
    pub(crate) fn storage(e: impl std::fmt::Display) -> Self {
        Self::internal(format!("storage failed: {e}"))
    }

    /// The queue's actor is gone (being restarted by its supervisor, or deleted).
    pub fn queue_unavailable(vhost: &str, queue: &str) -> Self {
        Self::new(
            code::NOT_FOUND,
            format!("queue '{queue}' in vhost '{vhost}' is not available (restarting or deleted); retry"),
        )
    }
}
