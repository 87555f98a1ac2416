//! The `x-delayed-message` exchange type, as RabbitMQ's delayed-message plugin has it:
//! what the declaration must say, which messages wait, and how a message looks once it
//! is delivered.
//!
//! - A delayed exchange names the type it routes as in its `x-delayed-type` argument
//!   (`direct`, `topic`, ...); its bindings are checked and matched as that type's.
//! - A message published with an `x-delay` header above 0 (milliseconds) waits that
//!   long in the exchange, then is routed from it. An integer of any width counts, and
//!   so do a string holding an integer and a float or decimal (truncated), as in the
//!   plugin; anything else, or no header, routes at once.
//! - A message routed after its wait carries `x-delay` negated, so that a delayed
//!   exchange it reaches downstream (an exchange-to-exchange binding) routes it at
//!   once, and a consumer can tell that it was delayed.
//!
//! Unlike the plugin, any delay from a millisecond to years waits (the plugin
//! delivers at once what exceeds 2^32 - 1 ms, about 49 days), and the wait is kept
//! in the node's store rather than in memory (`crate::vhost` holds the actor).

use super::definition::ExchangeDef;
use super::kind::ExchangeKind;
use crate::message::{FieldTable, FieldValue, Message};

/// The declaration argument naming the type a delayed exchange routes as.
pub const DELAYED_TYPE_ARG: &str = "x-delayed-type";

/// The message header holding the delay in milliseconds.
pub const DELAY_HEADER: &str = "x-delay";

/// The type a delayed exchange routes as, from its `x-delayed-type` argument; `None`
/// when it is missing, not a string, or not a type this broker has (the declaration is
/// refused then, as the plugin refuses it). A delayed exchange cannot route as a
/// delayed exchange.
pub fn delayed_type(def: &ExchangeDef) -> Option<ExchangeKind> {
    let kind: ExchangeKind = match def.arguments.get(DELAYED_TYPE_ARG)? {
        FieldValue::LongString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok()?,
        _ => return None,
    };
    (kind != ExchangeKind::DelayedMessage).then_some(kind)
}

/// How long a message with these headers waits, in milliseconds: `Some` for a delay
/// above 0 (see the module documentation for what counts).
pub fn delay_of(headers: Option<&FieldTable>) -> Option<u64> {
    let delay: i128 = match headers?.get(DELAY_HEADER)? {
        FieldValue::I8(v) => (*v).into(),
        FieldValue::U8(v) => (*v).into(),
        FieldValue::I16(v) => (*v).into(),
        FieldValue::U16(v) => (*v).into(),
        FieldValue::I32(v) => (*v).into(),
        FieldValue::U32(v) => (*v).into(),
        FieldValue::I64(v) => (*v).into(),
        FieldValue::F32(v) if v.is_finite() => *v as i128,
        FieldValue::F64(v) if v.is_finite() => *v as i128,
        FieldValue::Decimal(scale, unscaled) => {
            i128::from(*unscaled) / 10i128.checked_pow(u32::from(*scale)).unwrap_or(i128::MAX)
        }
        FieldValue::LongString(bytes) => std::str::from_utf8(bytes).ok()?.trim().parse().ok()?,
        _ => return None,
    };
    (delay > 0).then(|| u64::try_from(delay).unwrap_or(u64::MAX))
}

/// The message as it is routed once its wait is over: `x-delay` set to minus the
/// delay (a 32-bit integer when it fits, as the plugin writes it, else 64-bit).
pub fn delivered(mut message: Message, delay: u64) -> Message {
    let negated = -(i64::try_from(delay).unwrap_or(i64::MAX));
    let value = i32::try_from(negated).map_or(FieldValue::I64(negated), FieldValue::I32);
    message
        .properties
        .headers
        .get_or_insert_with(FieldTable::new)
        .insert(DELAY_HEADER.to_owned(), value);
    message
}

/// When a message delayed by `delay` ms at `now_ms` (ms since the Unix epoch) is due.
pub fn due_at(now_ms: u64, delay: u64) -> u64 {
    now_ms.saturating_add(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: FieldValue) -> FieldTable {
        FieldTable::from([(DELAY_HEADER.to_owned(), value)])
    }

    #[test]
    fn positive_delays_of_every_form_the_plugin_reads_wait() {
        for (value, expected) in [
            (FieldValue::I8(5), Some(5)),
            (FieldValue::U8(5), Some(5)),
            (FieldValue::I16(300), Some(300)),
            (FieldValue::U16(300), Some(300)),
            (FieldValue::I32(5000), Some(5000)),
            (FieldValue::U32(u32::MAX), Some(u64::from(u32::MAX))),
            (FieldValue::I64(1 << 40), Some(1 << 40)),
            (FieldValue::F64(1500.9), Some(1500)),
            (FieldValue::F32(2.5), Some(2)),
            (FieldValue::Decimal(2, 12345), Some(123)),
            (FieldValue::string("250"), Some(250)),
            (FieldValue::string(" 7 "), Some(7)),
            (FieldValue::I32(0), None),
            (FieldValue::I32(-5), None),
            (FieldValue::I64(i64::MIN), None),
            (FieldValue::F64(0.5), None),
            (FieldValue::F64(f64::NAN), None),
            (FieldValue::string("soon"), None),
            (FieldValue::Bool(true), None),
            (FieldValue::Void, None),
        ] {
            assert_eq!(
                delay_of(Some(&headers(value.clone()))),
                expected,
                "{value:?}"
            );
        }
        assert_eq!(delay_of(None), None);
        assert_eq!(delay_of(Some(&FieldTable::new())), None);
    }

    #[test]
    fn the_delayed_type_must_name_another_known_type() {
        let def = |value: Option<FieldValue>| {
            let mut def = ExchangeDef::new("d", ExchangeKind::DelayedMessage);
            if let Some(v) = value {
                def.arguments.insert(DELAYED_TYPE_ARG.to_owned(), v);
            }
            def
        };
        assert_eq!(
            delayed_type(&def(Some(FieldValue::string("topic")))),
            Some(ExchangeKind::Topic)
        );
        for bad in [
            None,
            Some(FieldValue::string("nope")),
            Some(FieldValue::string("x-delayed-message")),
            Some(FieldValue::I32(1)),
            Some(FieldValue::LongString(vec![0xff])),
        ] {
            assert_eq!(delayed_type(&def(bad.clone())), None, "{bad:?}");
        }
    }

    #[test]
    fn a_delivered_message_carries_the_delay_negated_and_routes_at_once() {
        let mut message = Message::new("d", "k", bytes::Bytes::from_static(b"x"));
        message.properties.headers = Some(headers(FieldValue::string("1500")));
        let message = delivered(message, 1500);
        assert_eq!(
            message.properties.header(DELAY_HEADER),
            Some(&FieldValue::I32(-1500))
        );
        assert_eq!(delay_of(message.properties.headers.as_ref()), None);
        let long = delivered(Message::new("d", "k", bytes::Bytes::new()), 1 << 40);
        assert_eq!(
            long.properties.header(DELAY_HEADER),
            Some(&FieldValue::I64(-(1 << 40)))
        );
        assert_eq!(due_at(u64::MAX - 1, 5), u64::MAX);
    }
}
