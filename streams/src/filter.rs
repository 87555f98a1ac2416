//! Tag filters: a consumer gets only the messages whose tag it asks for, filtered on
//! the broker (RocketMQ's tags, RabbitMQ 3.13's stream filtering).
//!
//! - A message's tag is its `x-stream-filter-value` header (RabbitMQ's name).
//! - A consumer's `x-stream-filter` is RocketMQ's expression (`tagA || tagB`; `*`
//!   for every message) or, as RabbitMQ takes it, an array of tags.
//! - Messages without a tag reach a filtering consumer only with
//!   `x-stream-match-unfiltered: true` (RabbitMQ's; RocketMQ drops them), or `*`.
//!
//! What a consumer does not get still moves it (and its group's offset) past it.

use std::collections::HashSet;

use warren_actors::message::{FieldTable, FieldValue, Message};

/// The header that carries a message's tag.
pub const TAG_HEADER: &str = "x-stream-filter-value";
/// The consumer argument that filters by tag.
pub const FILTER_ARG: &str = "x-stream-filter";
/// The consumer argument that lets messages without a tag through a filter.
pub const MATCH_UNFILTERED_ARG: &str = "x-stream-match-unfiltered";

/// A consumer's filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagFilter {
    tags: HashSet<String>,
    all: bool,
    unfiltered: bool,
}

impl TagFilter {
    /// The filter a consumer's arguments ask for (`None`: every message). The error
    /// is `(argument, reason)` for a 406.
    pub fn of(arguments: &FieldTable) -> Result<Option<TagFilter>, (&'static str, String)> {
        let unfiltered = match arguments.get(MATCH_UNFILTERED_ARG) {
            None => false,
            Some(FieldValue::Bool(b)) => *b,
            Some(other) => {
                return Err((
                    MATCH_UNFILTERED_ARG,
                    format!("a boolean is expected, not a {}", other.type_name()),
                ))
            }
        };
        let tags: Vec<String> = match arguments.get(FILTER_ARG) {
            None => return Ok(None),
            Some(FieldValue::Array(values)) => values
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_string).ok_or_else(|| {
                        (
                            FILTER_ARG,
                            format!("tags are strings, not a {}", v.type_name()),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(value) => match value.as_str() {
                // RocketMQ's expression: tags separated by `||`, trimmed.
                Some(expression) => expression
                    .split("||")
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
                    .collect(),
                None => {
                    return Err((
                        FILTER_ARG,
                        format!(
                            "'tagA || tagB', '*' or an array of tags is expected, not a {}",
                            value.type_name()
                        ),
                    ))
                }
            },
        };
        let all = tags.is_empty() || tags.iter().any(|t| t == "*") && tags.len() == 1;
        Ok(Some(TagFilter {
            tags: tags.into_iter().collect(),
            all,
            unfiltered,
        }))
    }

    /// Whether `message` gets through.
    pub fn admits(&self, message: &Message) -> bool {
        if self.all {
            return true;
        }
        match tag_of(message) {
            Some(tag) => self.tags.contains(tag),
            None => self.unfiltered,
        }
    }
}

/// A message's tag.
pub fn tag_of(message: &Message) -> Option<&str> {
    message
        .properties
        .headers
        .as_ref()
        .and_then(|h| h.get(TAG_HEADER))
        .and_then(FieldValue::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn tagged(tag: Option<&str>) -> Message {
        let mut m = Message {
            exchange: String::new(),
            routing_key: String::new(),
            properties: Default::default(),
            body: Bytes::new(),
        };
        if let Some(tag) = tag {
            m.properties.headers = Some(FieldTable::from([(
                TAG_HEADER.to_string(),
                FieldValue::string(tag),
            )]));
        }
        m
    }

    fn filter(value: FieldValue, unfiltered: Option<bool>) -> TagFilter {
        let mut args = FieldTable::from([(FILTER_ARG.to_string(), value)]);
        if let Some(u) = unfiltered {
            args.insert(MATCH_UNFILTERED_ARG.to_string(), FieldValue::Bool(u));
        }
        TagFilter::of(&args).unwrap().unwrap()
    }

    #[test]
    fn rocketmq_expressions_and_rabbitmq_arrays_filter_by_tag() {
        let f = filter(FieldValue::string("tagA || tagB"), None);
        assert!(f.admits(&tagged(Some("tagA"))));
        assert!(f.admits(&tagged(Some("tagB"))));
        assert!(!f.admits(&tagged(Some("tagC"))));
        assert!(!f.admits(&tagged(None)), "RocketMQ drops untagged messages");
        let f = filter(
            FieldValue::Array(vec![FieldValue::string("red")]),
            Some(true),
        );
        assert!(f.admits(&tagged(Some("red"))));
        assert!(f.admits(&tagged(None)));
        assert!(!f.admits(&tagged(Some("blue"))));
        let every = filter(FieldValue::string("*"), None);
        assert!(every.admits(&tagged(None)) && every.admits(&tagged(Some("x"))));
        assert_eq!(TagFilter::of(&FieldTable::new()), Ok(None));
        let bad = FieldTable::from([(FILTER_ARG.to_string(), FieldValue::I32(3))]);
        assert!(TagFilter::of(&bad).is_err());
    }
}
