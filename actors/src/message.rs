//! What a published message is.
//!
//! The model follows AMQP 0-9-1 (basic properties, field tables) so that messages
//! published through the client handle and through AMQP meet in the same queues and
//! look the same to every consumer. A [`Message`] is immutable once published: the
//! body is a reference-counted [`Bytes`], so routing one message to many queues never
//! copies it.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// An AMQP field table: header name to value. Ordered, so encodings are stable.
pub type FieldTable = BTreeMap<String, FieldValue>;

/// A value in a field table (AMQP 0-9-1 with RabbitMQ's type tags).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FieldValue {
    /// A boolean (`t`).
    Bool(bool),
    /// A signed 8-bit integer (`b`).
    I8(i8),
    /// An unsigned 8-bit integer (`B`).
    U8(u8),
    /// A signed 16-bit integer (`s`).
    I16(i16),
    /// An unsigned 16-bit integer (`u`).
    U16(u16),
    /// A signed 32-bit integer (`I`).
    I32(i32),
    /// An unsigned 32-bit integer (`i`).
    U32(u32),
    /// A signed 64-bit integer (`l`).
    I64(i64),
    /// A 32-bit float (`f`).
    F32(f32),
    /// A 64-bit float (`d`).
    F64(f64),
    /// Decimal: scale (number of decimal digits) and unscaled value.
    Decimal(u8, u32),
    /// A long string (`S`): AMQP strings are byte strings, usually UTF-8.
    LongString(Vec<u8>),
    /// A field array (`A`), such as the `x-death` header's list of deaths.
    Array(Vec<FieldValue>),
    /// A timestamp (`T`): seconds since the Unix epoch.
    Timestamp(u64),
    /// A nested field table (`F`).
    Table(FieldTable),
    /// A byte array (`x`).
    Bytes(Vec<u8>),
    /// No value (`V`); as a headers binding's argument it matches any header of that
    /// name.
    Void,
}

impl FieldValue {
    /// A string value (the common case for headers).
    pub fn string(s: impl Into<String>) -> Self {
        FieldValue::LongString(s.into().into_bytes())
    }

    /// RabbitMQ's name of the value's AMQP type, as its error texts print it.
    pub fn type_name(&self) -> &'static str {
        match self {
            FieldValue::Bool(_) => "bool",
            FieldValue::I8(_) => "byte",
            FieldValue::U8(_) => "unsignedbyte",
            FieldValue::I16(_) => "short",
            FieldValue::U16(_) => "unsignedshort",
            FieldValue::I32(_) => "signedint",
            FieldValue::U32(_) => "unsignedint",
            FieldValue::I64(_) => "long",
            FieldValue::F32(_) => "float",
            FieldValue::F64(_) => "double",
            FieldValue::Decimal(..) => "decimal",
            FieldValue::LongString(_) => "longstr",
            FieldValue::Array(_) => "array",
            FieldValue::Timestamp(_) => "timestamp",
            FieldValue::Table(_) => "table",
            FieldValue::Bytes(_) => "binary",
            FieldValue::Void => "void",
        }
    }

    /// The value as text, when it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::LongString(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The value as a signed integer, when it is any integer type.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            FieldValue::I8(v) => Some(v.into()),
            FieldValue::U8(v) => Some(v.into()),
            FieldValue::I16(v) => Some(v.into()),
            FieldValue::U16(v) => Some(v.into()),
            FieldValue::I32(v) => Some(v.into()),
            FieldValue::U32(v) => Some(v.into()),
            FieldValue::I64(v) => Some(v),
            FieldValue::Timestamp(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }
}

/// Delivery mode 2: the message is written to disk on durable queues.
pub const PERSISTENT: u8 = 2;
/// Delivery mode 1: the message lives in memory (and overflows to disk unsynced).
pub const TRANSIENT: u8 = 1;

/// The basic properties of a message (AMQP `basic` content header).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Properties {
    /// The body's MIME type (`application/json`...); the broker never reads it.
    pub content_type: Option<String>,
    /// The body's encoding (`gzip`...); the broker never reads it.
    pub content_encoding: Option<String>,
    /// The application headers: what headers exchanges match and where dead
    /// lettering records `x-death`.
    pub headers: Option<FieldTable>,
    /// 1 = transient, 2 = persistent; `None` means transient.
    pub delivery_mode: Option<u8>,
    /// The message's priority, capped at the queue's `x-max-priority`; ignored by a
    /// queue without one. `None` counts as 0.
    pub priority: Option<u8>,
    /// Application use (matches a reply to its request); carried, never read.
    pub correlation_id: Option<String>,
    /// The queue a reply should go to (application use); carried, never read.
    pub reply_to: Option<String>,
    /// Per-message TTL in milliseconds, as a decimal string (AMQP's convention).
    pub expiration: Option<String>,
    /// Application use; carried, never read.
    pub message_id: Option<String>,
    /// Seconds since the Unix epoch.
    pub timestamp: Option<u64>,
    /// The AMQP `type` property.
    pub kind: Option<String>,
    /// The publishing user, when the publisher sets it; AMQP refuses a publish whose
    /// `user_id` is not the authenticated user.
    pub user_id: Option<String>,
    /// The publishing application (application use); carried, never read.
    pub app_id: Option<String>,
}

impl Properties {
    /// Whether the publisher asked for the message to survive a restart.
    pub fn is_persistent(&self) -> bool {
        self.delivery_mode == Some(PERSISTENT)
    }

    /// The per-message TTL in milliseconds, if `expiration` holds a valid one.
    pub fn ttl_ms(&self) -> Option<u64> {
        self.expiration
            .as_deref()
            .and_then(|e| e.trim().parse().ok())
    }

    /// A header by name.
    pub fn header(&self, name: &str) -> Option<&FieldValue> {
        self.headers.as_ref().and_then(|h| h.get(name))
    }
}

/// A published message: where it was published to, its properties and its body.
///
/// Shared by reference between the queues it was routed to; cloning is cheap.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The exchange it was published to (`""` for the default exchange).
    pub exchange: String,
    /// The routing key the publisher gave, which the exchange's bindings match.
    pub routing_key: String,
    /// The basic properties (headers, delivery mode, TTL...).
    pub properties: Properties,
    /// The payload, shared (never copied) between the queues the message went to.
    pub body: Bytes,
}

impl Message {
    /// A message with default properties (transient, no headers).
    pub fn new(exchange: impl Into<String>, routing_key: impl Into<String>, body: Bytes) -> Self {
        Message {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            properties: Properties::default(),
            body,
        }
    }

    /// Body size in bytes: what max-length-bytes counts.
    pub fn body_size(&self) -> u64 {
        self.body.len() as u64
    }
}

/// A message shared between the queues it was routed to.
pub type SharedMessage = Arc<Message>;
