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
    Bool(bool),
    I8(i8),
    U8(u8),
    I16(i16),
    U16(u16),
    I32(i32),
    U32(u32),
    I64(i64),
    F32(f32),
    F64(f64),
    /// Decimal: scale (number of decimal digits) and unscaled value.
    Decimal(u8, u32),
    /// A long string (`S`): AMQP strings are byte strings, usually UTF-8.
    LongString(Vec<u8>),
    Array(Vec<FieldValue>),
    /// Seconds since the Unix epoch.
    Timestamp(u64),
    Table(FieldTable),
    /// A byte array (`x`).
    Bytes(Vec<u8>),
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
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub headers: Option<FieldTable>,
    /// 1 = transient, 2 = persistent; `None` means transient.
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    pub correlation_id: Option<String>,
    pub reply_to: Option<String>,
    /// Per-message TTL in milliseconds, as a decimal string (AMQP's convention).
    pub expiration: Option<String>,
    pub message_id: Option<String>,
    /// Seconds since the Unix epoch.
    pub timestamp: Option<u64>,
    /// The AMQP `type` property.
    pub kind: Option<String>,
    pub user_id: Option<String>,
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
    pub routing_key: String,
    pub properties: Properties,
    pub body: Bytes,
}

impl Message {
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
