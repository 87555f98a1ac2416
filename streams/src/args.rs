//! A stream's declaration: its flags and `x-` arguments, checked as RabbitMQ checks
//! them, and the [`StreamConfig`] they make (retention).

use std::time::Duration;

use warren_actors::message::{FieldTable, FieldValue};
use warren_actors::queue::QUEUE_TYPE_ARG;

/// Keep messages for at most this long (`7D`, `12h`...): RabbitMQ's `x-max-age`.
pub const MAX_AGE_ARG: &str = "x-max-age";
/// Keep at most this many bytes of messages: RabbitMQ's `x-max-length-bytes`.
pub const MAX_LENGTH_BYTES_ARG: &str = "x-max-length-bytes";
/// RabbitMQ's segment size; accepted (a positive integer) for compatibility: Warren's
/// log has no segments, retention drops whole chunks.
pub const SEGMENT_SIZE_ARG: &str = "x-stream-max-segment-size-bytes";
/// RabbitMQ's replica count; accepted (a positive integer): streams are not
/// replicated yet, the stream lives on its home node.
pub const INITIAL_CLUSTER_SIZE_ARG: &str = "x-initial-cluster-size";
/// RabbitMQ's placement strategy; accepted (`client-local` or `balanced`).
pub const LEADER_LOCATOR_ARG: &str = "x-queue-leader-locator";

/// Every argument a stream accepts.
const ACCEPTED: [&str; 6] = [
    QUEUE_TYPE_ARG,
    MAX_AGE_ARG,
    MAX_LENGTH_BYTES_ARG,
    SEGMENT_SIZE_ARG,
    INITIAL_CLUSTER_SIZE_ARG,
    LEADER_LOCATOR_ARG,
];

/// The arguments of the other queue types, which a stream refuses (RabbitMQ's list);
/// `x-` arguments no queue type knows are accepted, as RabbitMQ does.
const OTHER_TYPES_ARGS: [&str; 16] = [
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-dead-letter-strategy",
    "x-max-length",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-version",
    "x-single-active-consumer",
    "x-queue-master-locator",
    "x-quorum-initial-group-size",
    "x-delivery-limit",
];

/// The largest `x-stream-max-segment-size-bytes` RabbitMQ takes.
const MAX_SEGMENT_SIZE: u64 = 3_000_000_000;

/// RabbitMQ's name of the stream type in its error texts.
pub const TYPE_NAME: &str = "rabbit_stream_queue";

/// What a stream keeps: its retention, from its declaration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamConfig {
    /// Messages older than this go (whole chunks at a time).
    pub max_age: Option<Duration>,
    /// The oldest chunks go while the log holds more than this many bytes.
    pub max_bytes: Option<u64>,
}

/// Why a declaration was refused: the 406 PRECONDITION_FAILED text (RabbitMQ's),
/// without the `PRECONDITION_FAILED - ` the AMQP front door puts before it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeclareError {
    /// A flag a stream cannot have (`non-durable`, `exclusive-owner`, `auto-delete`).
    #[error("invalid property '{property}' for queue '{queue}' in vhost '{vhost}'")]
    Property {
        /// RabbitMQ's name of the flag.
        property: &'static str,
        /// The queue.
        queue: String,
        /// Its vhost.
        vhost: String,
    },
    /// An argument with a value a stream cannot take.
    #[error("invalid arg '{arg}' for queue '{queue}' in vhost '{vhost}': {why}")]
    Argument {
        /// The argument.
        arg: String,
        /// The queue.
        queue: String,
        /// Its vhost.
        vhost: String,
        /// What is wrong, in RabbitMQ's words.
        why: String,
    },
    /// An argument of another queue type.
    #[error(
        "invalid arg '{arg}' for queue '{queue}' in vhost '{vhost}' of queue type {TYPE_NAME}"
    )]
    OtherType {
        /// The argument.
        arg: String,
        /// The queue.
        queue: String,
        /// Its vhost.
        vhost: String,
    },
    /// `x-stream-max-segment-size-bytes` above 3 000 000 000.
    #[error("Exceeded max value for {SEGMENT_SIZE_ARG}")]
    SegmentTooLarge,
}

impl StreamConfig {
    /// The configuration of stream `queue` of `vhost` as declared, checked in
    /// RabbitMQ's order: the values of the arguments streams take, the arguments of
    /// other queue types, then the flags (neither auto-delete nor exclusive, durable).
    pub fn from_declare(
        queue: &str,
        vhost: &str,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        arguments: &FieldTable,
    ) -> Result<StreamConfig, DeclareError> {
        let invalid = |arg: &str, why: String| DeclareError::Argument {
            arg: arg.to_string(),
            queue: queue.to_string(),
            vhost: vhost.to_string(),
            why,
        };
        let mut config = StreamConfig::default();
        if let Some(value) = arguments.get(MAX_AGE_ARG) {
            let text = value
                .as_str()
                .ok_or_else(|| format!("{{unacceptable_type,{}}}", value.type_name()));
            let age = text
                .and_then(|t| parse_age(t).map_err(|_| "invalid_max_age".to_string()))
                .map_err(|why| invalid(MAX_AGE_ARG, why))?;
            config.max_age = Some(age);
        }
        if let Some(value) = arguments.get(MAX_LENGTH_BYTES_ARG) {
            let bytes = non_negative(value).map_err(|why| invalid(MAX_LENGTH_BYTES_ARG, why))?;
            config.max_bytes = Some(bytes);
        }
        let segment = match arguments.get(SEGMENT_SIZE_ARG) {
            Some(value) => Some(non_negative(value).map_err(|why| invalid(SEGMENT_SIZE_ARG, why))?),
            None => None,
        };
        if let Some(value) = arguments.get(INITIAL_CLUSTER_SIZE_ARG) {
            match non_negative(value) {
                Ok(0) => return Err(invalid(INITIAL_CLUSTER_SIZE_ARG, "{value_zero,0}".into())),
                Ok(_) => {}
                Err(why) => return Err(invalid(INITIAL_CLUSTER_SIZE_ARG, why)),
            }
        }
        if let Some(value) = arguments.get(LEADER_LOCATOR_ARG) {
            let known = ["client-local", "balanced", "random", "least-leaders"];
            if !value.as_str().is_some_and(|v| known.contains(&v)) {
                return Err(invalid(
                    LEADER_LOCATOR_ARG,
                    "invalid_queue_locator_arg".to_string(),
                ));
            }
        }
        if let Some(arg) = arguments
            .keys()
            .find(|name| OTHER_TYPES_ARGS.contains(&name.as_str()))
        {
            return Err(DeclareError::OtherType {
                arg: arg.clone(),
                queue: queue.to_string(),
                vhost: vhost.to_string(),
            });
        }
        let property = |property| DeclareError::Property {
            property,
            queue: queue.to_string(),
            vhost: vhost.to_string(),
        };
        if auto_delete {
            return Err(property("auto-delete"));
        }
        if exclusive {
            return Err(property("exclusive-owner"));
        }
        if !durable {
            return Err(property("non-durable"));
        }
        if segment.is_some_and(|s| s > MAX_SEGMENT_SIZE) {
            return Err(DeclareError::SegmentTooLarge);
        }
        Ok(config)
    }

    /// The arguments whose values must match on a redeclaration (RabbitMQ compares
    /// only the ones a stream takes).
    pub fn compared_arguments() -> &'static [&'static str] {
        &ACCEPTED
    }
}

/// An integer argument of zero or more, with RabbitMQ's texts when it is not.
fn non_negative(value: &FieldValue) -> Result<u64, String> {
    match value.as_i64() {
        Some(n) if !matches!(value, FieldValue::Timestamp(_)) => {
            u64::try_from(n).map_err(|_| format!("{{value_negative,{n}}}"))
        }
        _ => Err(format!("\"expected integer, got {}\"", value.type_name())),
    }
}

/// A duration as RabbitMQ writes `x-max-age` and intervals of `x-stream-offset`: a
/// positive whole number and one unit, `Y` (365 days), `M` (30 days), `D`, `h`, `m`
/// or `s`.
pub fn parse_age(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let expected = || {
        format!(
            "'{text}' is not an age: a positive whole number and one unit is expected \
             (Y, M, D, h, m or s, such as 7D or 12h)"
        )
    };
    let number: u64 = number.parse().map_err(|_| expected())?;
    let unit_secs: u64 = match unit {
        "Y" => 365 * 86_400,
        "M" => 30 * 86_400,
        "D" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => return Err(expected()),
    };
    if number == 0 {
        return Err(expected());
    }
    number
        .checked_mul(unit_secs)
        .map(Duration::from_secs)
        .ok_or_else(expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declare(args: &[(&str, FieldValue)]) -> Result<StreamConfig, DeclareError> {
        let arguments: FieldTable = args
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .chain([(QUEUE_TYPE_ARG.to_string(), FieldValue::string("stream"))])
            .collect();
        StreamConfig::from_declare("s1", "/", true, false, false, &arguments)
    }

    #[test]
    fn ages_parse_in_rabbitmq_units() {
        assert_eq!(parse_age("7D"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_age("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_age("1Y"), Ok(Duration::from_secs(365 * 86_400)));
        assert_eq!(parse_age("2M"), Ok(Duration::from_secs(60 * 86_400)));
        assert_eq!(parse_age("30m"), Ok(Duration::from_secs(1_800)));
        assert_eq!(parse_age("10s"), Ok(Duration::from_secs(10)));
        for bad in ["", "7", "D", "0s", "7d", "7 D", "-1h", "1.5h", "7DD"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn retention_comes_from_the_arguments() {
        let config = declare(&[
            (MAX_AGE_ARG, FieldValue::string("1h")),
            (MAX_LENGTH_BYTES_ARG, FieldValue::I64(20_000_000)),
            (SEGMENT_SIZE_ARG, FieldValue::I32(500_000)),
            (INITIAL_CLUSTER_SIZE_ARG, FieldValue::U8(3)),
            (LEADER_LOCATOR_ARG, FieldValue::string("balanced")),
        ])
        .unwrap();
        assert_eq!(config.max_age, Some(Duration::from_secs(3_600)));
        assert_eq!(config.max_bytes, Some(20_000_000));
        assert_eq!(declare(&[]).unwrap(), StreamConfig::default());
    }

    #[test]
    fn flags_and_arguments_streams_do_not_take_are_refused_with_rabbitmq_texts() {
        let flags = |durable, exclusive, auto_delete| {
            StreamConfig::from_declare(
                "s1",
                "/",
                durable,
                exclusive,
                auto_delete,
                &FieldTable::new(),
            )
            .unwrap_err()
            .to_string()
        };
        assert_eq!(
            flags(false, false, false),
            "invalid property 'non-durable' for queue 's1' in vhost '/'"
        );
        assert_eq!(
            flags(true, true, false),
            "invalid property 'exclusive-owner' for queue 's1' in vhost '/'"
        );
        assert_eq!(
            flags(false, true, true),
            "invalid property 'auto-delete' for queue 's1' in vhost '/'"
        );
        for arg in OTHER_TYPES_ARGS {
            let e = declare(&[(arg, FieldValue::I32(1))])
                .unwrap_err()
                .to_string();
            assert_eq!(
                e,
                format!(
                    "invalid arg '{arg}' for queue 's1' in vhost '/' of queue type rabbit_stream_queue"
                )
            );
        }
        let why = |args: &[(&str, FieldValue)]| match declare(args).unwrap_err() {
            DeclareError::Argument { why, .. } => why,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            why(&[(MAX_AGE_ARG, FieldValue::I64(5))]),
            "{unacceptable_type,long}"
        );
        assert_eq!(
            why(&[(MAX_AGE_ARG, FieldValue::string("7d"))]),
            "invalid_max_age"
        );
        assert_eq!(
            why(&[(MAX_LENGTH_BYTES_ARG, FieldValue::I32(-1))]),
            "{value_negative,-1}"
        );
        assert_eq!(
            why(&[(MAX_LENGTH_BYTES_ARG, FieldValue::string("1"))]),
            "\"expected integer, got longstr\""
        );
        assert_eq!(
            why(&[(INITIAL_CLUSTER_SIZE_ARG, FieldValue::I32(0))]),
            "{value_zero,0}"
        );
        assert_eq!(
            why(&[(LEADER_LOCATOR_ARG, FieldValue::string("anywhere"))]),
            "invalid_queue_locator_arg"
        );
        assert_eq!(
            declare(&[(SEGMENT_SIZE_ARG, FieldValue::I64(3_000_000_001))]),
            Err(DeclareError::SegmentTooLarge)
        );
        // x- arguments no queue type knows are accepted, as RabbitMQ does.
        assert!(declare(&[("x-foo", FieldValue::I32(1))]).is_ok());
    }
}
