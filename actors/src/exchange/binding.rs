//! Bindings: which destination an exchange routes to, and under which key/arguments.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use super::error::InvalidBinding;
use super::field::{cmp_tables, hash_table};
use crate::message::FieldTable;

/// The longest binding key: an AMQP short string holds at most 255 bytes.
pub const MAX_KEY_LEN: usize = 255;

/// What a binding routes to: a queue or another exchange, by name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Destination {
    /// A queue of the same vhost.
    Queue(String),
    /// Another exchange of the same vhost (exchange-to-exchange binding).
    Exchange(String),
}

impl Destination {
    /// The queue's or exchange's name.
    pub fn name(&self) -> &str {
        match self {
            Destination::Queue(n) | Destination::Exchange(n) => n,
        }
    }

    /// `queue` or `exchange`, as RabbitMQ lists a binding's destination kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Destination::Queue(_) => "queue",
            Destination::Exchange(_) => "exchange",
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} '{}'", self.kind(), self.name())
    }
}

/// A binding from exchange `source` to `destination`.
///
/// Identity is the whole quadruple, arguments included and compared as typed values
/// (as RabbitMQ does): binding the same queue twice with the same key but different
/// arguments makes two bindings, and unbinding removes only the one whose arguments
/// match. `Eq`, `Hash` and `Ord` follow that identity; they compare floats in the
/// arguments by bit pattern so that they stay lawful (see [`super::field`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Binding {
    /// The exchange the binding routes from.
    pub source: String,
    /// The queue or exchange it routes to.
    pub destination: Destination,
    /// The binding key: matched against a message's routing key by direct and topic
    /// exchanges, ignored by fanout and headers ones.
    pub routing_key: String,
    /// The binding arguments: what a headers exchange matches (with `x-match`);
    /// part of the binding's identity for every type.
    pub arguments: FieldTable,
}

impl Binding {
    /// A binding of `source` to `destination` under `routing_key`, without arguments.
    pub fn new(
        source: impl Into<String>,
        destination: Destination,
        routing_key: impl Into<String>,
    ) -> Self {
        Binding {
            source: source.into(),
            destination,
            routing_key: routing_key.into(),
            arguments: FieldTable::new(),
        }
    }

    /// A binding of `source` to queue `queue`.
    pub fn queue(
        source: impl Into<String>,
        queue: impl Into<String>,
        routing_key: impl Into<String>,
    ) -> Self {
        Binding::new(source, Destination::Queue(queue.into()), routing_key)
    }

    /// A binding of `source` to exchange `exchange`.
    pub fn exchange(
        source: impl Into<String>,
        exchange: impl Into<String>,
        routing_key: impl Into<String>,
    ) -> Self {
        Binding::new(source, Destination::Exchange(exchange.into()), routing_key)
    }

    /// The same binding with `arguments`.
    pub fn with_arguments(mut self, arguments: FieldTable) -> Self {
        self.arguments = arguments;
        self
    }

    /// Checks what every exchange type requires of a binding: a key that fits an AMQP
    /// short string.
    pub fn check_key(&self) -> Result<(), InvalidBinding> {
        if self.routing_key.len() > MAX_KEY_LEN {
            return Err(InvalidBinding::KeyTooLong {
                len: self.routing_key.len(),
                max: MAX_KEY_LEN,
            });
        }
        Ok(())
    }
}

impl PartialEq for Binding {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Binding {}

impl Hash for Binding {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.source.hash(h);
        self.destination.hash(h);
        self.routing_key.hash(h);
        hash_table(&self.arguments, h);
    }
}

impl Ord for Binding {
    /// By source, destination, key, then arguments: the order listings use.
    fn cmp(&self, other: &Self) -> Ordering {
        self.source
            .cmp(&other.source)
            .then_with(|| self.destination.cmp(&other.destination))
            .then_with(|| self.routing_key.cmp(&other.routing_key))
            .then_with(|| cmp_tables(&self.arguments, &other.arguments))
    }
}

impl PartialOrd for Binding {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::FieldValue;
    use std::collections::HashSet;

    fn args(pairs: &[(&str, FieldValue)]) -> FieldTable {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn identity_includes_typed_arguments() {
        let plain = Binding::queue("x", "q", "k");
        let a = plain
            .clone()
            .with_arguments(args(&[("n", FieldValue::I32(1))]));
        let b = plain
            .clone()
            .with_arguments(args(&[("n", FieldValue::I64(1))]));
        let a2 = plain
            .clone()
            .with_arguments(args(&[("n", FieldValue::I32(1))]));
        let set: HashSet<Binding> = [plain.clone(), a.clone(), b, a2].into_iter().collect();
        assert_eq!(set.len(), 3);
        assert!(set.contains(&a));
        assert_ne!(plain, Binding::exchange("x", "q", "k"));
        assert_ne!(plain, Binding::queue("x", "q", "k2"));
        assert_ne!(plain, Binding::queue("y", "q", "k"));
    }

    #[test]
    fn nan_arguments_still_make_a_lawful_identity() {
        let nan =
            Binding::queue("x", "q", "k").with_arguments(args(&[("f", FieldValue::F64(f64::NAN))]));
        assert_eq!(nan, nan.clone());
        let set: HashSet<Binding> = [nan.clone(), nan.clone()].into_iter().collect();
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn keys_longer_than_a_short_string_are_refused() {
        assert!(Binding::queue("x", "q", "a".repeat(MAX_KEY_LEN))
            .check_key()
            .is_ok());
        let err = Binding::queue("x", "q", "a".repeat(MAX_KEY_LEN + 1))
            .check_key()
            .unwrap_err();
        assert_eq!(
            err,
            InvalidBinding::KeyTooLong {
                len: MAX_KEY_LEN + 1,
                max: MAX_KEY_LEN
            }
        );
    }

    #[test]
    fn destinations_display_their_kind() {
        assert_eq!(Destination::Queue("q".into()).to_string(), "queue 'q'");
        assert_eq!(Destination::Exchange("e".into()).name(), "e");
    }
}
