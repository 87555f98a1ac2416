//! What an exchange is: its name, type, flags and arguments.

use serde::{Deserialize, Serialize};

use super::error::Inequivalence;
use super::field::{display_value, erlang_eq, erlang_exact_eq, type_class, type_name};
use super::kind::ExchangeKind;
use crate::message::{FieldTable, FieldValue};

/// The name of the default exchange, which every queue is implicitly bound to.
pub const DEFAULT_EXCHANGE: &str = "";

/// Names with this prefix belong to the broker: clients cannot create them.
pub const RESERVED_PREFIX: &str = "amq.";

/// The argument naming the exchange that gets messages this one could not route.
pub const ALTERNATE_EXCHANGE_ARG: &str = "alternate-exchange";

/// An exchange declaration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExchangeDef {
    /// The exchange's name, unique in its vhost.
    pub name: String,
    /// Its type: how it matches bindings (direct, fanout, topic, headers).
    pub kind: ExchangeKind,
    /// Survives a broker restart.
    pub durable: bool,
    /// Deleted when its last binding (as a source) is removed.
    pub auto_delete: bool,
    /// Clients cannot publish to it; only other exchanges (and dead-lettering) can.
    pub internal: bool,
    /// The declaration's arguments; the broker reads `alternate-exchange`.
    pub arguments: FieldTable,
}

impl ExchangeDef {
    /// A declaration with AMQP's defaults: not durable, not auto-delete, not internal,
    /// no arguments.
    pub fn new(name: impl Into<String>, kind: ExchangeKind) -> Self {
        ExchangeDef {
            name: name.into(),
            kind,
            durable: false,
            auto_delete: false,
            internal: false,
            arguments: FieldTable::new(),
        }
    }

    /// The same declaration, durable.
    pub fn durable(mut self) -> Self {
        self.durable = true;
        self
    }

    /// The same declaration with an `alternate-exchange` argument.
    pub fn with_alternate_exchange(mut self, name: impl Into<String>) -> Self {
        self.arguments
            .insert(ALTERNATE_EXCHANGE_ARG.to_owned(), FieldValue::string(name));
        self
    }

    /// The type its bindings are matched as: its own, or for an `x-delayed-message`
    /// exchange the type its `x-delayed-type` names (checked when it was declared;
    /// `direct` should a stored one not name one).
    pub fn routing_kind(&self) -> ExchangeKind {
        match self.kind {
            ExchangeKind::DelayedMessage => {
                super::delay::delayed_type(self).unwrap_or(ExchangeKind::Direct)
            }
            kind => kind,
        }
    }

    /// Whether this is the default exchange `""`.
    pub fn is_default(&self) -> bool {
        self.name == DEFAULT_EXCHANGE
    }

    /// The exchange unroutable messages go to, from the `alternate-exchange` argument.
    ///
    /// Only a UTF-8 long string names an exchange, as in RabbitMQ (which refuses to
    /// create an exchange with any other type there; see
    /// [`ExchangeDef::check_arguments`]).
    pub fn alternate_exchange(&self) -> Option<&str> {
        self.arguments.get(ALTERNATE_EXCHANGE_ARG)?.as_str()
    }

    /// The argument that has the wrong type, if any: RabbitMQ checks this when it
    /// creates an exchange (not when it finds an existing one). Returns the argument's
    /// name and the RabbitMQ name of its type.
    pub fn check_arguments(&self) -> Result<(), (&'static str, &'static str)> {
        match self.arguments.get(ALTERNATE_EXCHANGE_ARG) {
            None | Some(FieldValue::LongString(_)) => Ok(()),
            Some(other) => Err((ALTERNATE_EXCHANGE_ARG, type_name(other))),
        }
    }

    /// Whether `requested` (a redeclaration of this exchange) is equivalent to it.
    ///
    /// As in RabbitMQ, the type and the `durable`, `auto_delete` and `internal` flags
    /// must be equal, and among the arguments only `alternate-exchange` is compared
    /// (RabbitMQ: "The spec says arguments are compared for semantic equivalence. The
    /// only arg we care about is alternate-exchange"); any other argument may differ and
    /// the existing exchange keeps its own. The name is not compared: the caller found
    /// this exchange by the requested name.
    pub fn check_equivalent(&self, requested: &ExchangeDef) -> Result<(), Inequivalence> {
        let fail = |field: &str, received: String, current: String| {
            Err(Inequivalence {
                exchange: self.name.clone(),
                field: field.to_owned(),
                received,
                current,
            })
        };
        if self.kind != requested.kind {
            return fail("type", quote(requested.kind), quote(self.kind));
        }
        for (field, current, received) in [
            ("durable", self.durable, requested.durable),
            ("auto_delete", self.auto_delete, requested.auto_delete),
            ("internal", self.internal, requested.internal),
        ] {
            if current != received {
                return fail(field, quote(received), quote(current));
            }
        }
        let current = self.arguments.get(ALTERNATE_EXCHANGE_ARG);
        let received = requested.arguments.get(ALTERNATE_EXCHANGE_ARG);
        match (current, received) {
            (None, None) => Ok(()),
            // RabbitMQ accepts values of the same type class that are `==`, or any two
            // identical terms (a longstr and a binary with the same bytes).
            (Some(c), Some(r))
                if (type_class(c) == type_class(r) && erlang_eq(c, r)) || erlang_exact_eq(c, r) =>
            {
                Ok(())
            }
            (Some(c), Some(r)) => fail(
                ALTERNATE_EXCHANGE_ARG,
                quote(display_value(r)),
                quote(display_value(c)),
            ),
            (c, r) => fail(ALTERNATE_EXCHANGE_ARG, typed_or_none(r), typed_or_none(c)),
        }
    }
}

/// RabbitMQ's `'~tp'` rendering of a field.
fn quote(v: impl std::fmt::Display) -> String {
    format!("'{v}'")
}

/// RabbitMQ's rendering of an argument that is present on one side only.
fn typed_or_none(v: Option<&FieldValue>) -> String {
    match v {
        None => "none".to_owned(),
        Some(v) => format!(
            "the value '{}' of type '{}'",
            display_value(v),
            type_name(v)
        ),
    }
}

/// The exchanges every vhost has from its creation: the default exchange and the
/// `amq.*` exchanges of each type, all durable (RabbitMQ's `rabbit_vhost` list without
/// the tracing exchange, which Warren has no use for).
pub fn predeclared_exchanges() -> Vec<ExchangeDef> {
    [
        (DEFAULT_EXCHANGE, ExchangeKind::Direct),
        ("amq.direct", ExchangeKind::Direct),
        ("amq.fanout", ExchangeKind::Fanout),
        ("amq.topic", ExchangeKind::Topic),
        ("amq.headers", ExchangeKind::Headers),
        ("amq.match", ExchangeKind::Headers),
    ]
    .into_iter()
    .map(|(name, kind)| ExchangeDef::new(name, kind).durable())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::code;

    fn x(kind: ExchangeKind) -> ExchangeDef {
        ExchangeDef::new("x", kind)
    }

    #[test]
    fn alternate_exchange_is_read_from_a_string_argument() {
        assert_eq!(x(ExchangeKind::Direct).alternate_exchange(), None);
        let def = x(ExchangeKind::Direct).with_alternate_exchange("ae");
        assert_eq!(def.alternate_exchange(), Some("ae"));
        assert_eq!(def.check_arguments(), Ok(()));
        let mut bad = x(ExchangeKind::Direct);
        bad.arguments
            .insert(ALTERNATE_EXCHANGE_ARG.into(), FieldValue::I32(1));
        assert_eq!(bad.alternate_exchange(), None);
        assert_eq!(
            bad.check_arguments(),
            Err((ALTERNATE_EXCHANGE_ARG, "signedint"))
        );
    }

    #[test]
    fn predeclared_exchanges_are_the_default_and_amq_ones() {
        let defs = predeclared_exchanges();
        let names: Vec<(&str, ExchangeKind)> =
            defs.iter().map(|d| (d.name.as_str(), d.kind)).collect();
        assert_eq!(
            names,
            [
                ("", ExchangeKind::Direct),
                ("amq.direct", ExchangeKind::Direct),
                ("amq.fanout", ExchangeKind::Fanout),
                ("amq.topic", ExchangeKind::Topic),
                ("amq.headers", ExchangeKind::Headers),
                ("amq.match", ExchangeKind::Headers),
            ]
        );
        assert!(defs
            .iter()
            .all(|d| d.durable && !d.auto_delete && !d.internal && d.arguments.is_empty()));
    }

    #[test]
    fn equivalent_redeclarations_pass() {
        let a = x(ExchangeKind::Topic).with_alternate_exchange("ae");
        let mut b = a.clone();
        // Other arguments are not compared.
        b.arguments.insert("x-whatever".into(), FieldValue::I32(5));
        assert_eq!(a.check_equivalent(&b), Ok(()));
        // The same bytes as a byte array are the same Erlang term.
        let mut c = x(ExchangeKind::Topic);
        c.arguments.insert(
            ALTERNATE_EXCHANGE_ARG.into(),
            FieldValue::Bytes(b"ae".to_vec()),
        );
        assert_eq!(a.check_equivalent(&c), Ok(()));
    }

    #[test]
    fn type_mismatch_names_the_field_like_rabbitmq() {
        let err = x(ExchangeKind::Direct)
            .check_equivalent(&x(ExchangeKind::Fanout))
            .unwrap_err();
        assert_eq!(err.field, "type");
        assert_eq!(err.reply_code(), code::PRECONDITION_FAILED);
        assert_eq!(
            err.to_string(),
            "inequivalent arg 'type' for exchange 'x': received 'fanout' but current is 'direct'"
        );
    }

    #[test]
    fn each_flag_is_compared() {
        let base = x(ExchangeKind::Direct);
        let mut durable = base.clone();
        durable.durable = true;
        let mut auto_delete = base.clone();
        auto_delete.auto_delete = true;
        let mut internal = base.clone();
        internal.internal = true;
        for (requested, field) in [
            (durable, "durable"),
            (auto_delete, "auto_delete"),
            (internal, "internal"),
        ] {
            let err = base.check_equivalent(&requested).unwrap_err();
            assert_eq!(err.field, field);
            assert_eq!(err.received, "'true'");
            assert_eq!(err.current, "'false'");
        }
    }

    #[test]
    fn alternate_exchange_changes_are_refused() {
        let with_a = x(ExchangeKind::Direct).with_alternate_exchange("a");
        let with_b = x(ExchangeKind::Direct).with_alternate_exchange("b");
        let without = x(ExchangeKind::Direct);
        let err = with_a.check_equivalent(&with_b).unwrap_err();
        assert_eq!(err.field, "alternate-exchange");
        assert_eq!(
            (err.received.as_str(), err.current.as_str()),
            ("'b'", "'a'")
        );
        let err = without.check_equivalent(&with_a).unwrap_err();
        assert_eq!(
            (err.received.as_str(), err.current.as_str()),
            ("the value 'a' of type 'longstr'", "none")
        );
        let err = with_a.check_equivalent(&without).unwrap_err();
        assert_eq!(
            (err.received.as_str(), err.current.as_str()),
            ("none", "the value 'a' of type 'longstr'")
        );
    }
}
