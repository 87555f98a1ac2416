//! A queue's configuration: the `queue.declare` flags and the `x-` arguments, parsed
//! and validated the way RabbitMQ does it, and the equivalence check for a
//! redeclaration.
//!
//! Every argument is kept as declared (`None` when absent), because RabbitMQ's
//! equivalence compares what was declared: redeclaring without `x-overflow` a queue
//! declared with `x-overflow: drop-head` is inequivalent even though both drop the
//! head. Accessors give the effective values. Unknown `x-` arguments are ignored, as
//! RabbitMQ ignores them.

use crate::message::{FieldTable, FieldValue};

use super::errors::QueueError;
use super::window::WindowLimits;

/// RabbitMQ's largest supported `x-max-priority`.
pub const MAX_SUPPORTED_PRIORITY: u8 = 255;

/// What happens when a queue reaches `x-max-length` / `x-max-length-bytes`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Drop (and dead-letter) the oldest ready messages (the default).
    #[default]
    DropHead,
    /// Refuse new publishes: publishers with confirms get a `basic.nack`.
    RejectPublish,
    /// As `RejectPublish`, and dead-letter the refused message.
    RejectPublishDlx,
}

impl Overflow {
    /// The argument value naming this behaviour.
    pub fn as_str(self) -> &'static str {
        match self {
            Overflow::DropHead => "drop-head",
            Overflow::RejectPublish => "reject-publish",
            Overflow::RejectPublishDlx => "reject-publish-dlx",
        }
    }
}

/// A queue's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    /// The queue's name (used in error texts and in `x-death`).
    pub name: String,
    /// The virtual host it lives in.
    pub vhost: String,
    /// Survives a restart; persistent messages are written with fsync.
    pub durable: bool,
    /// Owned by one connection (the shell enforces ownership and deletes it when the
    /// connection closes).
    pub exclusive: bool,
    /// Deleted when its last consumer goes away (if it ever had one).
    pub auto_delete: bool,
    /// `x-message-ttl`: milliseconds a message may stay ready.
    pub message_ttl: Option<u64>,
    /// `x-expires`: milliseconds without use after which the queue deletes itself.
    pub expires: Option<u64>,
    /// `x-max-length`: most ready messages.
    pub max_length: Option<u64>,
    /// `x-max-length-bytes`: most body bytes of ready messages.
    pub max_length_bytes: Option<u64>,
    /// `x-overflow` as declared; see [`QueueConfig::overflow`].
    pub overflow: Option<Overflow>,
    /// `x-dead-letter-exchange` (`""` is the default exchange).
    pub dead_letter_exchange: Option<String>,
    /// `x-dead-letter-routing-key` (only with a dead-letter exchange).
    pub dead_letter_routing_key: Option<String>,
    /// `x-max-priority`; `Some(0)` behaves as no priorities.
    pub max_priority: Option<u8>,
    /// `x-single-active-consumer` as declared.
    pub single_active_consumer: Option<bool>,
    /// `x-delivery-limit`: returns after which a message is dead-lettered.
    pub delivery_limit: Option<u64>,
    /// How many bodies the queue keeps in memory. Node configuration, not a
    /// declare argument: not part of equivalence.
    pub window: WindowLimits,
    /// Every message is written, persistent or not, and confirmed once written: a
    /// replicated queue's log holds them all. Set by the queue type, not declared.
    pub write_all: bool,
    /// Deliveries of a message returned before carry `x-delivery-count` (how often it
    /// was returned), as RabbitMQ's quorum queues do. Set by the queue type.
    pub delivery_count_header: bool,
}

impl QueueConfig {
    /// A queue with no arguments and the default window.
    pub fn new(name: impl Into<String>, vhost: impl Into<String>) -> Self {
        QueueConfig {
            name: name.into(),
            vhost: vhost.into(),
            durable: false,
            exclusive: false,
            auto_delete: false,
            message_ttl: None,
            expires: None,
            max_length: None,
            max_length_bytes: None,
            overflow: None,
            dead_letter_exchange: None,
            dead_letter_routing_key: None,
            max_priority: None,
            single_active_consumer: None,
            delivery_limit: None,
            window: WindowLimits::default(),
            write_all: false,
            delivery_count_header: false,
        }
    }

    /// Parses a `queue.declare`: flags and arguments, validated as RabbitMQ does.
    pub fn from_declare(
        name: impl Into<String>,
        vhost: impl Into<String>,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        arguments: &FieldTable,
    ) -> Result<Self, QueueError> {
        let mut config = QueueConfig::new(name, vhost);
        config.durable = durable;
        config.exclusive = exclusive;
        config.auto_delete = auto_delete;
        let p = ArgParser {
            config: &config,
            arguments,
        };

        let message_ttl = p.non_negative("x-message-ttl")?;
        let expires = p.positive("x-expires")?;
        let max_length = p.non_negative("x-max-length")?;
        let max_length_bytes = p.non_negative("x-max-length-bytes")?;
        let overflow = match p.string("x-overflow")? {
            None => None,
            Some(s) => Some(match s.as_str() {
                "drop-head" => Overflow::DropHead,
                "reject-publish" => Overflow::RejectPublish,
                "reject-publish-dlx" => Overflow::RejectPublishDlx,
                other => {
                    return Err(p.invalid(
                        "x-overflow",
                        format!("{{unknown_overflow,<<\"{other}\">>}}"),
                    ))
                }
            }),
        };
        let dead_letter_exchange = p.string("x-dead-letter-exchange")?;
        let dead_letter_routing_key = p.string("x-dead-letter-routing-key")?;
        if dead_letter_routing_key.is_some() && dead_letter_exchange.is_none() {
            return Err(p.invalid(
                "x-dead-letter-routing-key",
                "routing_key_but_no_dlx_defined".into(),
            ));
        }
        let max_priority = match p.non_negative("x-max-priority")? {
            None => None,
            Some(v) => match u8::try_from(v) {
                Ok(v) => Some(v),
                Err(_) => {
                    return Err(p.invalid(
                        "x-max-priority",
                        format!("{{max_value_exceeded,{v}}} (at most {MAX_SUPPORTED_PRIORITY})"),
                    ))
                }
            },
        };
        let single_active_consumer = p.boolean("x-single-active-consumer")?;
        let delivery_limit = p.non_negative("x-delivery-limit")?;
        // The type is the seam's to pick (`QueueKind`); here it must only be a string.
        p.string("x-queue-type")?;
        // Accepted and ignored, as RabbitMQ 3.12+ does: every classic queue pages.
        match p.string("x-queue-mode")?.as_deref() {
            None | Some("default" | "lazy") => {}
            Some(m) => {
                return Err(p.invalid(
                    "x-queue-mode",
                    format!("{{unacceptable_value,<<\"{m}\">>}}"),
                ))
            }
        }

        config.message_ttl = message_ttl;
        config.expires = expires;
        config.max_length = max_length;
        config.max_length_bytes = max_length_bytes;
        config.overflow = overflow;
        config.dead_letter_exchange = dead_letter_exchange;
        config.dead_letter_routing_key = dead_letter_routing_key;
        config.max_priority = max_priority;
        config.single_active_consumer = single_active_consumer;
        config.delivery_limit = delivery_limit;
        Ok(config)
    }

    /// The same configuration with another memory window.
    pub fn with_window(mut self, window: WindowLimits) -> Self {
        self.window = window;
        self
    }

    /// The effective overflow behaviour.
    pub fn overflow(&self) -> Overflow {
        self.overflow.unwrap_or_default()
    }

    /// Whether only one consumer at a time receives messages.
    pub fn is_single_active_consumer(&self) -> bool {
        self.single_active_consumer.unwrap_or(false)
    }

    /// The highest priority level, 0 when the queue has no priorities.
    pub fn top_priority(&self) -> u8 {
        self.max_priority.unwrap_or(0)
    }

    /// Checks a redeclaration (`received`) against this, the current configuration.
    ///
    /// Compares the flags and the arguments RabbitMQ compares; the window is node
    /// configuration and is not compared.
    pub fn check_equivalent(&self, received: &QueueConfig) -> Result<(), QueueError> {
        let fail = |arg: &str, received: String, current: String| QueueError::Inequivalent {
            queue: self.name.clone(),
            vhost: self.vhost.clone(),
            arg: arg.to_owned(),
            received,
            current,
        };
        let flag = |v: bool| format!("'{v}'");
        if self.durable != received.durable {
            return Err(fail("durable", flag(received.durable), flag(self.durable)));
        }
        if self.exclusive != received.exclusive {
            return Err(fail(
                "exclusive",
                flag(received.exclusive),
                flag(self.exclusive),
            ));
        }
        if self.auto_delete != received.auto_delete {
            return Err(fail(
                "auto_delete",
                flag(received.auto_delete),
                flag(self.auto_delete),
            ));
        }
        compare(
            &fail,
            "x-message-ttl",
            &received.message_ttl,
            &self.message_ttl,
        )?;
        compare(&fail, "x-expires", &received.expires, &self.expires)?;
        compare(
            &fail,
            "x-max-length",
            &received.max_length,
            &self.max_length,
        )?;
        compare(
            &fail,
            "x-max-length-bytes",
            &received.max_length_bytes,
            &self.max_length_bytes,
        )?;
        compare(
            &fail,
            "x-overflow",
            &received.overflow.map(Overflow::as_str),
            &self.overflow.map(Overflow::as_str),
        )?;
        compare(
            &fail,
            "x-dead-letter-exchange",
            &received.dead_letter_exchange,
            &self.dead_letter_exchange,
        )?;
        compare(
            &fail,
            "x-dead-letter-routing-key",
            &received.dead_letter_routing_key,
            &self.dead_letter_routing_key,
        )?;
        compare(
            &fail,
            "x-max-priority",
            &received.max_priority,
            &self.max_priority,
        )?;
        compare(
            &fail,
            "x-single-active-consumer",
            &received.single_active_consumer,
            &self.single_active_consumer,
        )?;
        compare(
            &fail,
            "x-delivery-limit",
            &received.delivery_limit,
            &self.delivery_limit,
        )?;
        Ok(())
    }
}

fn compare<T: PartialEq + std::fmt::Display>(
    fail: &impl Fn(&str, String, String) -> QueueError,
    arg: &str,
    received: &Option<T>,
    current: &Option<T>,
) -> Result<(), QueueError> {
    if received == current {
        return Ok(());
    }
    let show = |v: &Option<T>| match v {
        Some(v) => format!("'{v}'"),
        None => "none".to_owned(),
    };
    Err(fail(arg, show(received), show(current)))
}

/// Reads typed arguments out of a declare's field table.
struct ArgParser<'a> {
    config: &'a QueueConfig,
    arguments: &'a FieldTable,
}

impl ArgParser<'_> {
    fn invalid(&self, arg: &str, problem: String) -> QueueError {
        QueueError::InvalidArg {
            queue: self.config.name.clone(),
            vhost: self.config.vhost.clone(),
            arg: arg.to_owned(),
            problem,
        }
    }

    fn unacceptable_type(&self, arg: &str, value: &FieldValue) -> QueueError {
        self.invalid(arg, format!("{{unacceptable_type,{}}}", value.type_name()))
    }

    fn integer(&self, arg: &str) -> Result<Option<i64>, QueueError> {
        let Some(value) = self.arguments.get(arg) else {
            return Ok(None);
        };
        let v = match *value {
            FieldValue::I8(v) => i64::from(v),
            FieldValue::U8(v) => i64::from(v),
            FieldValue::I16(v) => i64::from(v),
            FieldValue::U16(v) => i64::from(v),
            FieldValue::I32(v) => i64::from(v),
            FieldValue::U32(v) => i64::from(v),
            FieldValue::I64(v) => v,
            _ => return Err(self.unacceptable_type(arg, value)),
        };
        Ok(Some(v))
    }

    fn non_negative(&self, arg: &str) -> Result<Option<u64>, QueueError> {
        match self.integer(arg)? {
            None => Ok(None),
            Some(v) => u64::try_from(v)
                .map(Some)
                .map_err(|_| self.invalid(arg, format!("{{value_negative,{v}}}"))),
        }
    }

    fn positive(&self, arg: &str) -> Result<Option<u64>, QueueError> {
        match self.non_negative(arg)? {
            Some(0) => Err(self.invalid(arg, "{value_zero,0}".into())),
            other => Ok(other),
        }
    }

    fn string(&self, arg: &str) -> Result<Option<String>, QueueError> {
        let Some(value) = self.arguments.get(arg) else {
            return Ok(None);
        };
        match value {
            FieldValue::LongString(bytes) => match std::str::from_utf8(bytes) {
                Ok(s) => Ok(Some(s.to_owned())),
                Err(_) => Err(self.invalid(arg, "{invalid_utf8,longstr}".into())),
            },
            other => Err(self.unacceptable_type(arg, other)),
        }
    }

    fn boolean(&self, arg: &str) -> Result<Option<bool>, QueueError> {
        match self.arguments.get(arg) {
            None => Ok(None),
            Some(FieldValue::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.unacceptable_type(arg, other)),
        }
    }
}
