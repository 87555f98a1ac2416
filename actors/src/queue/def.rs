//! [`QueueDef`]: a queue as the metadata log and storage know it, whatever its type.

use serde::{Deserialize, Serialize};

use crate::delivery::ChannelId;
use crate::message::FieldTable;

use super::kind::{KindError, QueueKind};

/// A queue as declared: what every node knows of it. Its type is in `arguments`
/// (`x-queue-type`); its home node runs it, the others reach it there.
///
/// The stored and replicated form: new fields go at the end, with serde defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueueDef {
    /// The queue's name, unique in its vhost.
    pub name: String,
    /// Its storage id on its home node (its messages are keyed by it there); a queue
    /// declared again under the same name gets another id, so a late command for the
    /// old queue cannot touch the new one.
    pub id: u64,
    /// The node that runs it.
    pub node: String,
    /// Survives a restart of its node.
    pub durable: bool,
    /// For an exclusive queue: the connection (a channel id on the home node) that
    /// owns it. Only that connection may use it, and it goes when the connection does.
    pub owner: Option<ChannelId>,
    /// Deleted when its last consumer goes (if it ever had one).
    pub auto_delete: bool,
    /// The declare arguments, as declared (`x-` arguments and `x-queue-type`).
    pub arguments: FieldTable,
}

impl QueueDef {
    /// The queue's type (`x-queue-type`; classic when absent).
    pub fn kind(&self) -> Result<QueueKind, KindError> {
        QueueKind::of(&self.arguments)
    }

    /// Whether the queue dies with its home node's process: transient or exclusive.
    pub fn dies_with_node(&self) -> bool {
        !self.durable || self.owner.is_some()
    }

    /// Whether `channel` of `node` may use the queue: anyone for a shared queue, only
    /// the owning connection for an exclusive one. Channel ids are per node, so the
    /// owner is known only on the home node.
    pub fn usable_by(&self, node: &str, channel: ChannelId) -> bool {
        match self.owner {
            None => true,
            Some(owner) => owner == channel && node == self.node,
        }
    }
}
