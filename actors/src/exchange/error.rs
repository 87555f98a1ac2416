//! Why an exchange operation was refused.
//!
//! Every error carries the AMQP 0-9-1 reply code RabbitMQ uses for the same refusal
//! and a text worded like RabbitMQ's, so that clients (and people reading logs) see
//! the same thing whichever broker they talk to. The texts omit RabbitMQ's
//! `PRECONDITION_FAILED - ` prefix: the code travels separately.

use crate::error::{code, BrokerError};

/// An exchange type name that is none of `direct`, `fanout`, `topic`, `headers`.
///
/// RabbitMQ 3.10 closes the connection with 503 COMMAND_INVALID here (the AMQP 0-9-1
/// spec's "command invalid" for an unknown exchange type); the text is RabbitMQ's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown exchange type '{kind}'")]
pub struct UnknownExchangeKind {
    /// The type name the client sent.
    pub kind: String,
}

impl UnknownExchangeKind {
    /// 503 COMMAND_INVALID.
    pub fn reply_code(&self) -> u16 {
        code::COMMAND_INVALID
    }
}

/// A binding the exchange type rejects (RabbitMQ's `binding_invalid`, sent as 406).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidBinding {
    /// A headers binding whose `x-match` is a string other than the four known modes.
    #[error("Invalid x-match field value '{value}'; expected all, any, all-with-x, or any-with-x")]
    XMatchValue {
        /// The `x-match` string given.
        value: String,
    },
    /// A headers binding whose `x-match` is not a string at all.
    #[error("Invalid x-match field type '{type_name}' (value {value}); expected longstr")]
    XMatchType {
        /// The AMQP type of the value given, as RabbitMQ names it (`signedint`...).
        type_name: &'static str,
        /// The value given, as RabbitMQ prints it.
        value: String,
    },
    /// A binding key longer than an AMQP short string can carry. Over AMQP such a key
    /// cannot even be sent; other front doors must not be able to build topic tries
    /// deep enough to exhaust the stack either.
    #[error("binding key of {len} bytes is longer than the {max} bytes a routing key may have")]
    KeyTooLong {
        /// The key's length in bytes.
        len: usize,
        /// The longest a routing key may be, in bytes (255).
        max: usize,
    },
    /// A binding of an `x-partition-hash` exchange without a partition number.
    #[error(
        "a binding of an x-partition-hash exchange needs 'x-stream-partition-order', its \
         partition number (an integer of 0 or more), not {given}"
    )]
    PartitionOrder {
        /// What was given instead (`none`, or the value's type).
        given: String,
    },
}

impl InvalidBinding {
    /// 406 PRECONDITION_FAILED.
    pub fn reply_code(&self) -> u16 {
        code::PRECONDITION_FAILED
    }
}

/// A redeclaration that does not match the existing exchange (406), worded like
/// RabbitMQ's `inequivalent arg` error. `received` and `current` are already quoted
/// the way RabbitMQ prints them (`'fanout'`, `none`, `the value 'x' of type 'longstr'`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("inequivalent arg '{field}' for exchange '{exchange}': received {received} but current is {current}")]
pub struct Inequivalence {
    /// The exchange's name.
    pub exchange: String,
    /// `type`, `durable`, `auto_delete`, `internal` or `alternate-exchange`.
    pub field: String,
    /// The value in the redeclaration.
    pub received: String,
    /// The value on the existing exchange.
    pub current: String,
}

impl Inequivalence {
    /// 406 PRECONDITION_FAILED.
    pub fn reply_code(&self) -> u16 {
        code::PRECONDITION_FAILED
    }
}

/// Why a declaration, deletion, binding or unbinding was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// Declaring, deleting, binding from or to the default exchange `""` (403).
    #[error("operation not permitted on the default exchange")]
    DefaultExchange,
    /// Creating an exchange whose name starts with `amq.` (403).
    #[error("exchange name '{name}' contains reserved prefix 'amq.*'")]
    ReservedName {
        /// The name asked for.
        name: String,
    },
    /// Deleting one of the `amq.*` exchanges (403).
    #[error("deletion of system exchange '{name}' in vhost '{vhost}' not allowed")]
    SystemExchange {
        /// The exchange's name.
        name: String,
        /// Its vhost.
        vhost: String,
    },
    /// A redeclaration that differs from the existing exchange (406).
    #[error("inequivalent arg '{}' for exchange '{}' in vhost '{vhost}': received {} but current is {}",
        .detail.field, .detail.exchange, .detail.received, .detail.current)]
    Inequivalent {
        /// The exchange's vhost.
        vhost: String,
        /// What differs.
        detail: Inequivalence,
    },
    /// An argument of the wrong AMQP type, e.g. a numeric `alternate-exchange` (406).
    #[error(
        "invalid type '{type_name}' for arg '{arg}' in exchange '{exchange}' in vhost '{vhost}'"
    )]
    InvalidArgType {
        /// The exchange's name.
        exchange: String,
        /// Its vhost.
        vhost: String,
        /// The argument, e.g. `alternate-exchange`.
        arg: String,
        /// The AMQP type given, as RabbitMQ names it.
        type_name: &'static str,
    },
    /// An `x-delayed-message` exchange whose `x-delayed-type` argument does not name
    /// another exchange type (406; the plugin's words).
    #[error("Invalid argument, 'x-delayed-type' must be an existing exchange type")]
    InvalidDelayedType,
    /// `exchange.delete` with `if-unused` on an exchange that is the source of bindings (406).
    #[error("exchange '{name}' in vhost '{vhost}' in use")]
    InUse {
        /// The exchange's name.
        name: String,
        /// Its vhost.
        vhost: String,
    },
    /// The exchange a binding names does not exist (404).
    #[error("no exchange '{name}' in vhost '{vhost}'")]
    ExchangeNotFound {
        /// The exchange named.
        name: String,
        /// Its vhost.
        vhost: String,
    },
    /// The queue a binding names does not exist (404).
    #[error("no queue '{name}' in vhost '{vhost}'")]
    QueueNotFound {
        /// The queue named.
        name: String,
        /// Its vhost.
        vhost: String,
    },
    /// The source exchange's type rejects the binding (406).
    #[error(transparent)]
    InvalidBinding(#[from] InvalidBinding),
}

impl TopologyError {
    /// The AMQP reply code RabbitMQ answers with.
    pub fn reply_code(&self) -> u16 {
        match self {
            TopologyError::DefaultExchange
            | TopologyError::ReservedName { .. }
            | TopologyError::SystemExchange { .. } => code::ACCESS_REFUSED,
            TopologyError::ExchangeNotFound { .. } | TopologyError::QueueNotFound { .. } => {
                code::NOT_FOUND
            }
            TopologyError::Inequivalent { .. }
            | TopologyError::InvalidArgType { .. }
            | TopologyError::InvalidDelayedType
            | TopologyError::InUse { .. }
            | TopologyError::InvalidBinding(_) => code::PRECONDITION_FAILED,
        }
    }
}

/// Why a message could not be routed at all (as opposed to routing to no queue).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Publishing to an exchange that does not exist (404).
    #[error("no exchange '{name}' in vhost '{vhost}'")]
    ExchangeNotFound {
        /// The exchange published to.
        name: String,
        /// Its vhost.
        vhost: String,
    },
    /// Publishing directly to an internal exchange (403).
    #[error("cannot publish to internal exchange '{name}' in vhost '{vhost}'")]
    InternalExchange {
        /// The exchange published to.
        name: String,
        /// Its vhost.
        vhost: String,
    },
}

impl RouteError {
    /// The AMQP reply code RabbitMQ answers with.
    pub fn reply_code(&self) -> u16 {
        match self {
            RouteError::ExchangeNotFound { .. } => code::NOT_FOUND,
            RouteError::InternalExchange { .. } => code::ACCESS_REFUSED,
        }
    }
}

impl From<InvalidBinding> for BrokerError {
    fn from(e: InvalidBinding) -> Self {
        BrokerError::new(e.reply_code(), e.to_string())
    }
}
