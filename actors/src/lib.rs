//! warren-actors: the broker's objects.
//!
//! Layout (one concern per module):
//! - [`message`]: what a published message is (properties, headers, body).
//! - [`exchange`]: exchange types and routing as pure logic (bindings in, a routing
//!   snapshot out) plus the actor that owns an exchange's bindings.
//! - [`queue`]: the queue as a pure state machine (`apply(command) -> effects`) plus the
//!   actor shell that performs the effects (storage, deliveries, dead-lettering).
//! - [`alarm`]: the memory and disk alarms that hold publishers back.
//! - [`queue_memory`]: the node's budget for bodies queues keep in memory for their
//!   consumers beyond their window.
//! - [`vhost`]: one virtual host's exchanges, queues and bindings; [`vhosts`]: the
//!   node's vhosts, added and deleted through the metadata log.
//!
//! Pure logic never touches actors, I/O or the clock: time comes in as an argument.

pub mod access;
pub mod alarm;
pub mod channel;
pub mod delivery;
pub mod error;
pub mod exchange;
pub mod message;
pub mod metadata;
pub mod queue;
pub mod queue_actor;
pub mod queue_memory;
pub mod remote;
pub mod vhost;
pub mod vhosts;
