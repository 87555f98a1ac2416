//! Where a consumer starts: `x-stream-offset`, parsed ([`OffsetSpec`]) and resolved
//! against the log's bounds ([`LogBounds`]).

use std::time::Duration;

use warren_actors::message::{FieldTable, FieldValue};

use crate::args::parse_age;

/// The consumer argument that says where a stream consumer starts.
pub const STREAM_OFFSET_ARG: &str = "x-stream-offset";

/// Where a consumer starts reading, as it asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The oldest message the stream still has.
    First,
    /// The first message of the last chunk written (RabbitMQ's `last`).
    Last,
    /// Only messages published from now on (the default).
    Next,
    /// This offset (the first one kept when it is older, the end when it is beyond).
    Offset(u64),
    /// The first chunk appended at or after this time, in milliseconds since the
    /// Unix epoch (an AMQP timestamp, or now minus an interval such as `1h`).
    Timestamp(u64),
}

impl OffsetSpec {
    /// The spec of a consumer's arguments; `now_ms` turns an interval into a time.
    /// The error is RabbitMQ's reason (`{invalid_stream_offset_arg,…}`), for a 406.
    pub fn of(arguments: &FieldTable, now_ms: u64) -> Result<OffsetSpec, String> {
        let Some(value) = arguments.get(STREAM_OFFSET_ARG) else {
            return Ok(OffsetSpec::Next);
        };
        let invalid = || {
            let shown = match value.as_str() {
                Some(text) => format!("<<\"{text}\">>"),
                None => format!("{value:?}"),
            };
            format!(
                "{{invalid_stream_offset_arg,{{{},{shown}}}}}",
                value.type_name()
            )
        };
        match value {
            FieldValue::Timestamp(secs) => Ok(OffsetSpec::Timestamp(secs.saturating_mul(1000))),
            FieldValue::LongString(_) => match value.as_str() {
                Some("first") => Ok(OffsetSpec::First),
                Some("last") => Ok(OffsetSpec::Last),
                Some("next") => Ok(OffsetSpec::Next),
                Some(text) => parse_age(text)
                    .map(|age| OffsetSpec::Timestamp(now_ms.saturating_sub(millis(age))))
                    .map_err(|_| invalid()),
                None => Err(invalid()),
            },
            // A negative offset starts at the first one, as on RabbitMQ.
            other => match other.as_i64() {
                Some(n) => Ok(OffsetSpec::Offset(u64::try_from(n).unwrap_or(0))),
                None => Err(invalid()),
            },
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What a partition's log holds: enough to resolve a start and to count, whatever
/// the backlog.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogBounds {
    /// The oldest offset kept.
    pub first: u64,
    /// The offset the next message gets (`first == next`: empty).
    pub next: u64,
    /// The first offset of the last chunk.
    pub last_chunk: u64,
    /// The log's byte position of its first chunk (positions count every chunk
    /// ever appended, so `end - start` is what the log holds now).
    pub start: u64,
    /// The byte position after its last chunk.
    pub end: u64,
}

impl LogBounds {
    /// Messages the log holds.
    pub fn len(&self) -> u64 {
        self.next - self.first
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.next == self.first
    }

    /// Bytes of chunks the log holds.
    pub fn bytes(&self) -> u64 {
        self.end - self.start
    }

    /// The offset a consumer of `spec` starts at; `at_time` looks up the first
    /// offset appended at or after a time (`None`: nothing was).
    pub fn resolve(&self, spec: OffsetSpec, at_time: impl FnOnce(u64) -> Option<u64>) -> u64 {
        let clamp = |o: u64| o.clamp(self.first, self.next);
        match spec {
            OffsetSpec::First => self.first,
            OffsetSpec::Last => clamp(self.last_chunk),
            OffsetSpec::Next => self.next,
            // Beyond the end, the consumer waits for that offset (RabbitMQ skips the
            // offsets below the one asked for).
            OffsetSpec::Offset(o) => o.max(self.first),
            OffsetSpec::Timestamp(ms) => at_time(ms).map_or(self.next, clamp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(value: FieldValue) -> Result<OffsetSpec, String> {
        let args = FieldTable::from([(STREAM_OFFSET_ARG.to_string(), value)]);
        OffsetSpec::of(&args, 10_000_000)
    }

    #[test]
    fn every_form_rabbitmq_takes_parses() {
        assert_eq!(OffsetSpec::of(&FieldTable::new(), 0), Ok(OffsetSpec::Next));
        assert_eq!(spec(FieldValue::string("first")), Ok(OffsetSpec::First));
        assert_eq!(spec(FieldValue::string("last")), Ok(OffsetSpec::Last));
        assert_eq!(spec(FieldValue::string("next")), Ok(OffsetSpec::Next));
        assert_eq!(spec(FieldValue::I64(42)), Ok(OffsetSpec::Offset(42)));
        assert_eq!(spec(FieldValue::U8(3)), Ok(OffsetSpec::Offset(3)));
        assert_eq!(
            spec(FieldValue::Timestamp(1_700)),
            Ok(OffsetSpec::Timestamp(1_700_000))
        );
        assert_eq!(
            spec(FieldValue::string("1h")),
            Ok(OffsetSpec::Timestamp(10_000_000 - 3_600_000))
        );
        assert_eq!(spec(FieldValue::I64(-1)), Ok(OffsetSpec::Offset(0)));
        assert_eq!(
            spec(FieldValue::string("10x")),
            Err("{invalid_stream_offset_arg,{longstr,<<\"10x\">>}}".to_string())
        );
        assert!(spec(FieldValue::Bool(true)).is_err());
    }

    #[test]
    fn starts_are_clamped_to_what_the_log_holds() {
        let bounds = LogBounds {
            first: 100,
            next: 200,
            last_chunk: 180,
            start: 0,
            end: 0,
        };
        let never = |_| None;
        assert_eq!(bounds.resolve(OffsetSpec::First, never), 100);
        assert_eq!(bounds.resolve(OffsetSpec::Last, never), 180);
        assert_eq!(bounds.resolve(OffsetSpec::Next, never), 200);
        assert_eq!(bounds.resolve(OffsetSpec::Offset(5), never), 100);
        assert_eq!(bounds.resolve(OffsetSpec::Offset(150), never), 150);
        assert_eq!(bounds.resolve(OffsetSpec::Offset(500), never), 500);
        assert_eq!(bounds.resolve(OffsetSpec::Timestamp(9), never), 200);
        assert_eq!(bounds.resolve(OffsetSpec::Timestamp(9), |_| Some(50)), 100);
        assert_eq!(bounds.resolve(OffsetSpec::Timestamp(9), |_| Some(160)), 160);
        let empty = LogBounds::default();
        assert_eq!(empty.resolve(OffsetSpec::Last, never), 0);
    }
}
