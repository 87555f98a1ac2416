//! Queues on other nodes: how this node reaches them.
//!
//! Every node knows every queue (the metadata log replicates them), but a queue's
//! actor runs on one node only, its home. A [`QueueHandle`](crate::queue_actor::QueueHandle)
//! of a queue that lives elsewhere hands its messages to a [`QueueForwarder`], which
//! `warren-cluster` implements with actor messages to the home node. Callers (client
//! sessions, AMQP channels, dead-lettering) use the same handle either way.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::BrokerError;
use crate::metadata::BoxFuture;
use crate::queue::QueueStats;
use crate::queue_actor::QueueMsg;

/// Carries queue messages to the queues' home nodes.
pub trait QueueForwarder: Send + Sync + 'static {
    /// Sends `message` to the queue `queue` of `vhost` on `node`. A reply channel in
    /// the message is always answered: with an error when the node cannot be reached.
    fn forward(&self, node: &str, vhost: &str, queue: &Arc<str>, message: QueueMsg);

    /// The counters of the queues of `vhost` that live on `node`.
    fn stats<'a>(
        &'a self,
        node: &'a str,
        vhost: &'a str,
    ) -> BoxFuture<'a, Result<Vec<RemoteQueueStats>, BrokerError>>;
}

/// A queue's counters as its home node reports them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RemoteQueueStats {
    pub name: String,
    pub stats: QueueStats,
    pub restarts: u64,
}

/// Where a queue lives, as one node sees it.
#[derive(Clone)]
pub enum Home {
    /// Here: its actor is in this node's registry.
    Local,
    /// On `node`, reached through `forwarder`.
    Remote {
        node: Arc<str>,
        forwarder: Arc<dyn QueueForwarder>,
    },
}

impl Home {
    /// The node of a remote queue; `None` for a local one.
    pub fn node(&self) -> Option<&str> {
        match self {
            Home::Local => None,
            Home::Remote { node, .. } => Some(node),
        }
    }
}

/// The owner recorded for an exclusive queue that lives on another node: no channel
/// of this node holds it (channel ids start at 1).
pub const REMOTE_OWNER: crate::delivery::ChannelId = 0;

/// The error for an operation on a queue whose home node cannot be reached.
pub fn node_down(vhost: &str, queue: &str, node: &str) -> BrokerError {
    BrokerError::not_found(format!(
        "NOT_FOUND - home node '{node}' of queue '{queue}' in vhost '{vhost}' is down or inaccessible"
    ))
}
