//! The queue-type seam: what every kind of queue offers the rest of the broker.
//!
//! RabbitMQ's `rabbit_queue_type` behaviour is the model. A [`QueueType`] checks
//! declarations and runs the queues of its type on their home node; a [`Queue`] takes
//! publishes, consumers, settlements, gets, purges, deletes and answers for listings.
//! AMQP channels, client-handle sessions, dead-lettering and other nodes call these
//! two traits only, never a concrete queue: a queue on another node is one more
//! implementation of [`Queue`] (`warren-cluster`'s remote queue), the classic queue
//! ([`crate::classic`]) the first local one.
//!
//! ```text
//!  AMQP channel ─┐                        ┌─ classic queue (actor here)
//!  client session┼─► vhost ─► dyn Queue ──┤
//!  dead-letters ─┘   (QueueTypes)         └─ remote queue (another node's endpoint)
//! ```
//!
//! | file | concern |
//! | --- | --- |
//! | `kind.rs` | [`QueueKind`]: `x-queue-type`, parsed here and nowhere else |
//! | `def.rs` | [`QueueDef`]: a queue as the metadata log and storage know it |
//! | `api.rs` | the traits and what crosses them (outcomes, credit, settlements) |
//! | `stats.rs` | [`QueueStats`], [`ConsumerSummary`], [`QueueStatus`]: what listings show |
//! | `conformance.rs` | the suite every queue type passes (feature `conformance`) |

mod api;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod def;
mod kind;
mod stats;

use std::sync::Arc;

pub use api::{
    ConfirmReply, ConsumeRequest, Credit, DeadLetter, DeadLetterRouter, DeadLettered, Enqueue,
    EnqueueOutcome, Got, Hibernation, HostEnv, Hosted, InFlight, Qos, Queue, QueueRef, QueueType,
    RemoteReach, Settlement, WRITE_WINDOW, WRITE_WINDOW_BYTES,
};
pub use def::QueueDef;
pub use kind::{KindError, QueueKind, KNOWN_QUEUE_TYPES, QUEUE_TYPE_ARG};
pub use stats::{
    ConsumerSummary, GroupStatus, QueueStats, QueueStatus, ReplicaProgress, Replication, StreamInfo,
};

use crate::error::BrokerError;

/// The queue types this node runs, by kind. A kind without an implementation (quorum
/// and stream, until their issues land) is refused at declaration with 406.
#[derive(Clone, Default)]
pub struct QueueTypes {
    types: Vec<Arc<dyn QueueType>>,
}

impl QueueTypes {
    /// These types and another one (replacing one of the same kind).
    pub fn with(mut self, queue_type: Arc<dyn QueueType>) -> QueueTypes {
        self.types.retain(|t| t.kind() != queue_type.kind());
        self.types.push(queue_type);
        self
    }

    /// The type of `def`: 406 when `x-queue-type` is unknown or not available yet.
    pub fn of(&self, def: &QueueDef, vhost: &str) -> Result<&dyn QueueType, BrokerError> {
        let refused = |e: KindError| BrokerError::precondition_failed(e.text(&def.name, vhost));
        let kind = def.kind().map_err(refused)?;
        self.types
            .iter()
            .find(|t| t.kind() == kind)
            .map(|t| &**t)
            .ok_or_else(|| refused(KindError::NotAvailable(kind.as_str())))
    }
}
