//! [`BrokerError`]: what a broker operation answers whoever asked (client handle or
//! AMQP) when it refuses.
//!
//! Every refusal carries the AMQP 0-9-1 reply code that RabbitMQ would use and a text
//! that names the object, so both front doors report it the same way. The typed
//! refusals of the broker's parts (a queue's, the topology's, a route's, access
//! control's) travel as themselves; the rest are named by what went wrong.

use std::borrow::Cow;

use warren_access::AccessError;

use crate::classic::machine::QueueError;
use crate::exchange::{RouteError, TopologyError, UnknownExchangeKind};

/// AMQP reply codes used by the broker.
pub mod code {
    /// 403: the operation is forbidden (permissions, reserved names, exclusive use).
    pub const ACCESS_REFUSED: u16 = 403;
    /// 404: the object does not exist (or cannot be reached).
    pub const NOT_FOUND: u16 = 404;
    /// 405: another connection holds the object exclusively.
    pub const RESOURCE_LOCKED: u16 = 405;
    /// 406: a precondition failed (arguments, equivalence, conditions of a delete).
    pub const PRECONDITION_FAILED: u16 = 406;
    /// 320: the node closed the connection (vhost deleted, shutdown).
    pub const CONNECTION_FORCED: u16 = 320;
    /// 503: the client sent a command that makes no sense here.
    pub const COMMAND_INVALID: u16 = 503;
    /// 530: not allowed (a reused consumer tag, an operation the node refuses).
    pub const NOT_ALLOWED: u16 = 530;
    /// 506: the node lacks a resource to do it.
    pub const RESOURCE_ERROR: u16 = 506;
    /// 541: the node failed (storage, a lost answer): not the client's to fix.
    pub const INTERNAL_ERROR: u16 = 541;
    /// 540: the server does not do this (a connection error).
    pub const NOT_IMPLEMENTED: u16 = 540;
}

/// A broker operation's refusal, with its AMQP reply code ([`BrokerError::code`]) and a
/// text naming the object ([`BrokerError::text`], also its `Display`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// A queue refused (its arguments, a consumer, a settlement, a delete condition).
    #[error(transparent)]
    Queue(Box<QueueError>),
    /// A change of exchanges or bindings was refused.
    #[error(transparent)]
    Topology(Box<TopologyError>),
    /// A publish could not be routed (no such exchange, an internal one).
    #[error(transparent)]
    Route(Box<RouteError>),
    /// An exchange type that does not exist.
    #[error(transparent)]
    ExchangeKind(Box<UnknownExchangeKind>),
    /// Users, permissions or vhost records refused.
    #[error(transparent)]
    Access(Box<AccessError>),
    /// The object asked for does not exist, or cannot be reached now (404).
    #[error("{0}")]
    NotFound(String),
    /// The operation is forbidden (403).
    #[error("{0}")]
    AccessRefused(String),
    /// Another connection holds the object exclusively (405).
    #[error("{0}")]
    ResourceLocked(String),
    /// A precondition failed (406).
    #[error("{0}")]
    PreconditionFailed(String),
    /// The node does not allow it (530).
    #[error("{0}")]
    NotAllowed(String),
    /// The node failed; the client cannot fix it (541).
    #[error("{0}")]
    Internal(String),
    /// A refusal with another reply code, as another node or a front door gave it.
    #[error("{text}")]
    Other {
        /// Its AMQP reply code.
        code: u16,
        /// What it says.
        text: String,
    },
}

impl BrokerError {
    /// A refusal with reply code `code` (named by the variant its code stands for).
    pub fn new(code: u16, text: impl Into<String>) -> Self {
        let text = text.into();
        match code {
            code::NOT_FOUND => BrokerError::NotFound(text),
            code::ACCESS_REFUSED => BrokerError::AccessRefused(text),
            code::RESOURCE_LOCKED => BrokerError::ResourceLocked(text),
            code::PRECONDITION_FAILED => BrokerError::PreconditionFailed(text),
            code::NOT_ALLOWED => BrokerError::NotAllowed(text),
            code::INTERNAL_ERROR => BrokerError::Internal(text),
            code => BrokerError::Other { code, text },
        }
    }

    /// The AMQP reply code a client sees.
    pub fn code(&self) -> u16 {
        match self {
            BrokerError::Queue(e) => e.reply_code(),
            BrokerError::Topology(e) => e.reply_code(),
            BrokerError::Route(e) => e.reply_code(),
            BrokerError::ExchangeKind(e) => e.reply_code(),
            BrokerError::Access(e) => e.reply_code(),
            BrokerError::NotFound(_) => code::NOT_FOUND,
            BrokerError::AccessRefused(_) => code::ACCESS_REFUSED,
            BrokerError::ResourceLocked(_) => code::RESOURCE_LOCKED,
            BrokerError::PreconditionFailed(_) => code::PRECONDITION_FAILED,
            BrokerError::NotAllowed(_) => code::NOT_ALLOWED,
            BrokerError::Internal(_) => code::INTERNAL_ERROR,
            BrokerError::Other { code, .. } => *code,
        }
    }

    /// What it says (its `Display`), borrowed where it is already text.
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            BrokerError::NotFound(t)
            | BrokerError::AccessRefused(t)
            | BrokerError::ResourceLocked(t)
            | BrokerError::PreconditionFailed(t)
            | BrokerError::NotAllowed(t)
            | BrokerError::Internal(t)
            | BrokerError::Other { text: t, .. } => Cow::Borrowed(t),
            other => Cow::Owned(other.to_string()),
        }
    }

    /// 404.
    pub fn not_found(text: impl Into<String>) -> Self {
        BrokerError::NotFound(text.into())
    }

    /// 406.
    pub fn precondition_failed(text: impl Into<String>) -> Self {
        BrokerError::PreconditionFailed(text.into())
    }

    /// 405.
    pub fn resource_locked(text: impl Into<String>) -> Self {
        BrokerError::ResourceLocked(text.into())
    }

    /// 403.
    pub fn access_refused(text: impl Into<String>) -> Self {
        BrokerError::AccessRefused(text.into())
    }

    /// 541.
    pub fn internal(text: impl Into<String>) -> Self {
        BrokerError::Internal(text.into())
    }

    /// The node's store failed (541: the client cannot fix it).
    pub(crate) fn storage(e: impl std::fmt::Display) -> Self {
        Self::internal(format!("storage failed: {e}"))
    }

    /// The queue's actor is gone (being restarted by its supervisor, or deleted).
    pub fn queue_unavailable(vhost: &str, queue: &str) -> Self {
        Self::not_found(format!(
            "queue '{queue}' in vhost '{vhost}' is not available (restarting or deleted); retry"
        ))
    }
}

/// The typed refusals of the broker's parts are boxed: a refusal stays small on the
/// paths that return it often.
macro_rules! boxed_from {
    ($($variant:ident($source:ty)),* $(,)?) => {$(
        impl From<$source> for BrokerError {
            fn from(e: $source) -> Self {
                BrokerError::$variant(Box::new(e))
            }
        }
    )*};
}

boxed_from!(
    Queue(QueueError),
    Topology(TopologyError),
    Route(RouteError),
    ExchangeKind(UnknownExchangeKind),
    Access(AccessError),
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_pick_their_variant_and_come_back() {
        for code in [403, 404, 405, 406, 530, 541, 320, 506] {
            let e = BrokerError::new(code, "why");
            assert_eq!((e.code(), e.text().as_ref()), (code, "why"));
        }
        assert!(matches!(
            BrokerError::new(404, "x"),
            BrokerError::NotFound(_)
        ));
        let typed = BrokerError::from(QueueError::ConsumerTagInUse { tag: "t".into() });
        assert_eq!(typed.code(), 530);
        assert_eq!(typed.text(), "attempt to reuse consumer tag 't'");
    }
}
