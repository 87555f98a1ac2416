//! The four AMQP 0-9-1 exchange types, Warren's `x-partition-hash`, and
//! `x-delayed-message` (RabbitMQ's delayed-message plugin).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::UnknownExchangeKind;

/// An exchange type: how an exchange matches a message against its bindings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeKind {
    /// The routing key equals the binding key.
    Direct,
    /// Every binding matches.
    Fanout,
    /// The binding key is a dot-separated pattern with `*` and `#` wildcards.
    Topic,
    /// The message headers match the binding arguments.
    Headers,
    /// One partition per message, by Kafka's hash of the routing key over the
    /// bindings' `x-stream-partition-order` (see [`super::partition`]).
    #[serde(rename = "x-partition-hash")]
    PartitionHash,
    /// Holds a message with a positive `x-delay` header for that many milliseconds,
    /// then routes it as its `x-delayed-type` argument's type does (see
    /// [`super::delay`]). Added last: the metadata log numbers kinds by position.
    #[serde(rename = "x-delayed-message")]
    DelayedMessage,
}

impl ExchangeKind {
    /// Every kind, in declaration order.
    pub const ALL: [ExchangeKind; 6] = [
        ExchangeKind::Direct,
        ExchangeKind::Fanout,
        ExchangeKind::Topic,
        ExchangeKind::Headers,
        ExchangeKind::PartitionHash,
        ExchangeKind::DelayedMessage,
    ];

    /// The name AMQP uses in `exchange.declare` (`direct`, `fanout`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
            ExchangeKind::PartitionHash => "x-partition-hash",
            ExchangeKind::DelayedMessage => "x-delayed-message",
        }
    }
}

impl fmt::Display for ExchangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExchangeKind {
    type Err = UnknownExchangeKind;

    /// Exact, case-sensitive names, as RabbitMQ's registry looks them up: `Direct` is
    /// as unknown to RabbitMQ as `foo`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ExchangeKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownExchangeKind { kind: s.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::code;

    #[test]
    fn names_round_trip() {
        for kind in ExchangeKind::ALL {
            assert_eq!(kind.to_string().parse::<ExchangeKind>(), Ok(kind));
        }
        assert_eq!("topic".parse(), Ok(ExchangeKind::Topic));
    }

    #[test]
    fn unknown_names_are_refused_with_the_name() {
        for bad in ["foo", "Direct", "", "x-delayed", "direct "] {
            let err = bad.parse::<ExchangeKind>().unwrap_err();
            assert_eq!(err.kind, bad);
            assert_eq!(err.to_string(), format!("unknown exchange type '{bad}'"));
            assert_eq!(err.reply_code(), code::COMMAND_INVALID);
        }
    }

    #[test]
    fn serde_uses_the_amqp_names() {
        // A self-describing check without pulling in a JSON crate: the serde
        // variant names are what a text format would write.
        use serde::de::value::{Error, StrDeserializer};
        use serde::de::IntoDeserializer;
        for kind in ExchangeKind::ALL {
            let de: StrDeserializer<'_, Error> = kind.as_str().into_deserializer();
            assert_eq!(ExchangeKind::deserialize(de), Ok(kind));
        }
        let de: StrDeserializer<'_, Error> = "fan-out".into_deserializer();
        assert!(ExchangeKind::deserialize(de).is_err());
    }
}
