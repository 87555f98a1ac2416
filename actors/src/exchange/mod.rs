//! Exchanges: routing logic and the exchange actor.
//!
//! The routing logic is pure: definitions and bindings in, an immutable routing
//! snapshot out, no actors, I/O or clock.
//! - [`kind`]: the four exchange types.
//! - [`definition`]: an exchange's declaration, the predeclared exchanges, equivalence.
//! - [`binding`]: bindings and their destinations.
//! - [`topic`], [`headers`]: the matching of the topic and headers types;
//!   [`partition`]: the `x-partition-hash` type (Kafka's key hash over partitions);
//!   [`delay`]: the `x-delayed-message` type (which messages wait, and for how long);
//!   [`delay_schedule`]: when the messages a delayed exchange holds go.
//! - [`router`]: one exchange's bindings, indexed for its type.
//! - [`topology`]: a vhost's exchanges, bindings and queue names as one snapshot, with
//!   routing across exchanges (exchange-to-exchange bindings, alternate exchanges).
//! - [`snapshot`]: the current snapshot, shared lock-free (`arc-swap`).
//! - [`error`]: refusals, with AMQP reply codes.

pub mod binding;
pub mod definition;
pub mod delay;
pub mod delay_schedule;
mod dests;
pub mod error;
pub mod field;
pub mod headers;
pub mod kind;
pub mod partition;
pub mod router;
pub mod snapshot;
pub mod topic;
pub mod topology;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod topology_tests;

pub use binding::{Binding, Destination, MAX_KEY_LEN};
pub use definition::{
    predeclared_exchanges, ExchangeDef, ALTERNATE_EXCHANGE_ARG, DEFAULT_EXCHANGE, RESERVED_PREFIX,
};
pub use error::{Inequivalence, InvalidBinding, RouteError, TopologyError, UnknownExchangeKind};
pub use headers::{HeadersPattern, XMatch};
pub use kind::ExchangeKind;
pub use router::Router;
pub use snapshot::SharedTopology;
pub use topic::TopicTrie;
pub use topology::{Change, ExchangeEntry, Restored, RouteResult, Topology};
