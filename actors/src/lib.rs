//! warren-actors: the broker's objects: exchanges, queues and the vhosts that hold
//! them.
//!
//! Layout (one concern per module):
//! - [`message`]: what a published message is (properties, headers, body).
//! - [`exchange`]: exchange types and routing as pure logic (bindings in, a routing
//!   snapshot out) plus the actor that owns an exchange's bindings.
//! - [`queue`]: the queue-type seam: what every kind of queue offers its callers.
//! - [`classic`]: the classic queue, its pure state machine and its actor shell.
//! - [`delivery`]: what a queue sends the channels that consume from it.
//! - [`channel`]: what every front door does for one channel (routing, delivery tags,
//!   settlements), through the seam.
//! - [`vhost`]: one virtual host's exchanges, queues and bindings; [`vhosts`]: the
//!   node's vhosts, added and deleted like any other change.
//! - [`changes`]: those changes in the broker's words ([`changes::BrokerChange`]) and
//!   the log they go through when the node has one ([`changes::ChangeLog`]).
//! - [`error`]: the refusal every operation returns ([`error::BrokerError`]).
//!
//! Below this crate: users, permissions and vhost records (`warren-access`), the
//! alarms and the queues' memory budget (`warren-resources`), storage and
//! supervision. Above it: the cluster, which replicates [`changes::BrokerChange`]s
//! through its metadata log, and the front doors.
//!
//! Pure logic never touches actors, I/O or the clock: time comes in as an argument.

#![deny(missing_docs)]

pub mod changes;
pub mod channel;
pub mod classic;
pub mod delivery;
pub mod error;
pub mod exchange;
pub mod message;
pub mod queue;
pub mod vhost;
pub mod vhosts;

// The queues' memory budget lives in warren-resources; imported at the root so the
// queues reach it as `crate::queue_memory`.
use warren_resources::queue_memory;

/// A boxed future, so that traits with async methods stay object-safe.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
