//! What a Raft group replicates: its state machine, as the replica's applier task
//! sees it ([`Machine`]), and the metadata's ([`MetadataMachine`]).
//!
//! The replica runs Raft for every group on the node and never looks inside a
//! command; each group's applier task decodes the committed commands and hands them to
//! the group's machine in log order, takes its image for a snapshot and restores one
//! from the leader. A machine is deterministic: every replica applies the same commands
//! in the same order to the same state.

use std::any::Any;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use warren_actors::error::BrokerError;
use warren_actors::BoxFuture;

use crate::image;
use crate::metadata::{MetaCommand, MetadataApplier};

/// What applying a command gives the client that proposed it (on the proposing node
/// only; never on the wire): the machine's reply, or the broker error it failed with.
pub type Answer = Result<Box<dyn Any + Send>, BrokerError>;

/// A group's replicated state machine.
pub trait Machine: Send + 'static {
    /// A log entry's command.
    type Command: Serialize + DeserializeOwned + Send;
    /// The whole state, as a snapshot carries it.
    type Image: Serialize + DeserializeOwned + Send;

    /// Whether the machine keeps its state across a restart of the node itself (the
    /// metadata's lives in the node's tables). If not (the default), a restart
    /// restores the group's latest snapshot and applies every entry after it again.
    const KEEPS_STATE: bool = false;

    /// Called once, in the replica's actor, as the group starts running on this node
    /// with this machine (before [`ReplicaHandle::open`] answers); never for a machine
    /// `open` did not take because the group ran here already (it is dropped unused).
    ///
    /// [`ReplicaHandle::open`]: crate::replica::ReplicaHandle::open
    fn opened(&mut self) {}

    /// Applies the committed command of log entry `index`.
    fn apply(&mut self, index: u64, command: Self::Command) -> BoxFuture<'_, Answer>;

    /// The first log entry the state still needs besides a snapshot (a mirrored
    /// queue's messages are stored in the entries that enqueued them): the log is not
    /// compacted past it, and a snapshot sent to a member carries the entries from it
    /// on. None (the default): a snapshot stands alone.
    fn needed_from(&self) -> Option<u64> {
        None
    }

    /// About how many bytes a snapshot of the state would take now: a group whose
    /// machine says so takes its snapshots further apart (never more than 64 bytes
    /// of snapshot per entry applied), so that a big state is not imaged every few
    /// thousand entries. 0 (the default): every `snapshot_every` entries.
    fn image_size(&self) -> u64 {
        0
    }

    /// The state now, for a snapshot.
    fn image(&mut self) -> BoxFuture<'_, Self::Image>;

    /// Makes the state `image` (a snapshot from the leader, or one stored but not
    /// applied before a crash).
    fn restore(&mut self, image: Self::Image) -> BoxFuture<'_, ()>;
}

/// The metadata group's machine: the node's broker state (vhosts, users, exchanges,
/// queues, bindings).
pub struct MetadataMachine(pub Arc<dyn MetadataApplier>);

impl Machine for MetadataMachine {
    type Command = MetaCommand;
    type Image = Vec<MetaCommand>;
    const KEEPS_STATE: bool = true;

    fn apply(&mut self, _index: u64, command: MetaCommand) -> BoxFuture<'_, Answer> {
        Box::pin(async move {
            self.0
                .apply(command)
                .await
                .map(|()| Box::new(()) as Box<dyn Any + Send>)
        })
    }

    fn image(&mut self) -> BoxFuture<'_, Vec<MetaCommand>> {
        self.0.image()
    }

    fn restore(&mut self, target: Vec<MetaCommand>) -> BoxFuture<'_, ()> {
        Box::pin(async move { restore(self.0.as_ref(), &target).await })
    }
}

/// Makes the broker state the one `target` describes: removes what it does not
/// hold, then adds what it holds and the node lacks.
async fn restore(applier: &dyn MetadataApplier, target: &[MetaCommand]) {
    let current = applier.image().await;
    let deletions = image::deletions(&current, target);
    for command in deletions {
        if let Err(e) = applier.apply(command.clone()).await {
            tracing::warn!("restoring a metadata snapshot: {}: {e}", command.describe());
        }
    }
    let current = applier.image().await;
    let additions = image::additions(&current, target);
    let count = additions.len();
    for command in additions {
        if let Err(e) = applier.apply(command.clone()).await {
            tracing::warn!("restoring a metadata snapshot: {}: {e}", command.describe());
        }
    }
    tracing::info!(added = count, "restored the metadata from a snapshot");
}
