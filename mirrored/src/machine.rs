//! [`MirrorCommand`]: what a mirrored queue's log holds, and [`MirrorMachine`]: the
//! group's state machine over a replica's copy of the queue ([`ReplicatedQueue`]).

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwapOption;
use serde::{Deserialize, Serialize};
use warren_actors::classic::machine::{Op, QueueConfig, ReplicatedImage, ReplicatedQueue};
use warren_actors::error::BrokerError;
use warren_actors::BoxFuture;
use warren_cluster::raft_group::GroupId;
use warren_cluster::replica::{Answer, Machine};

/// An entry of a mirrored queue's log.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MirrorCommand {
    /// A leader starts on node `node` (its epoch picked at random, never 0) in place
    /// of the leader of epoch `replaces`: from here on only its entries are applied.
    /// Refused if another leader has started since `replaces` (a late `Lead`, proposed
    /// before an election and committed after a newer one, changes nothing).
    Lead {
        /// The leader's epoch.
        epoch: u64,
        /// Its node: where every node sends what is for the queue.
        node: String,
        /// The epoch of the leader it takes over from (0: the first).
        replaces: u64,
    },
    /// Ops the leader's core applied, with their time.
    Ops {
        /// The epoch of the leader that applied them.
        epoch: u64,
        /// The ops, in the order applied.
        ops: Vec<(Op, u64)>,
    },
}

/// The node that serves a mirrored queue, as its latest applied `Lead` says (none
/// before the first); read on every request that reaches the queue, so lock-free.
pub type Serving = Arc<ArcSwapOption<String>>;

/// A replica's copy of the queue and the epoch of its current leader.
pub struct MirrorState {
    /// The copy.
    pub queue: ReplicatedQueue,
    /// The current leader's epoch (0: none yet).
    pub epoch: u64,
}

/// The copies of the mirrored queues whose groups run on this node, by group.
#[derive(Clone, Default)]
pub struct Mirrors(Arc<Mutex<HashMap<GroupId, Arc<Mutex<MirrorState>>>>>);

impl Mirrors {
    /// The copy of group `group`, if it runs here.
    pub fn get(&self, group: GroupId) -> Option<Arc<Mutex<MirrorState>>> {
        self.lock().get(&group).cloned()
    }

    /// A new, empty copy of group `group` (replacing the one before).
    pub fn fresh(&self, group: GroupId, config: QueueConfig) -> Arc<Mutex<MirrorState>> {
        let state = Arc::new(Mutex::new(MirrorState {
            queue: ReplicatedQueue::new(config, 0),
            epoch: 0,
        }));
        self.lock().insert(group, state.clone());
        state
    }

    /// Forgets group `group`.
    pub fn remove(&self, group: GroupId) {
        self.lock().remove(&group);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<GroupId, Arc<Mutex<MirrorState>>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(crate) fn lock(state: &Mutex<MirrorState>) -> MutexGuard<'_, MirrorState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The group's machine: applies committed entries to the copy.
pub(crate) struct MirrorMachine {
    pub state: Arc<Mutex<MirrorState>>,
    pub serving: Serving,
    /// Notified when `serving` changes.
    pub led: Arc<tokio::sync::Notify>,
    pub config: QueueConfig,
    pub label: String,
}

/// A snapshot of the copy.
#[derive(Serialize, Deserialize)]
pub(crate) struct MirrorImage {
    epoch: u64,
    serving: Option<String>,
    queue: ReplicatedImage,
}

impl Machine for MirrorMachine {
    type Command = MirrorCommand;
    type Image = MirrorImage;

    fn apply(&mut self, command: MirrorCommand) -> BoxFuture<'_, Answer> {
        let mut state = lock(&self.state);
        let answer = match command {
            MirrorCommand::Lead {
                epoch,
                node,
                replaces,
            } if replaces == state.epoch => {
                state.epoch = epoch;
                self.serving.store(Some(Arc::new(node)));
                self.led.notify_one();
                Ok(())
            }
            MirrorCommand::Lead { .. } => Err(BrokerError::internal(format!(
                "{}: another leader started first",
                self.label
            ))),
            MirrorCommand::Ops { epoch, ops } if epoch == state.epoch => {
                for (op, now) in ops {
                    state.queue.apply(op, now);
                }
                Ok(())
            }
            MirrorCommand::Ops { .. } => Err(BrokerError::internal(format!(
                "{}: another leader has started since; this one stops",
                self.label
            ))),
        };
        drop(state);
        Box::pin(async move { answer.map(|()| Box::new(()) as Box<dyn Any + Send>) })
    }

    fn image(&mut self) -> BoxFuture<'_, MirrorImage> {
        let state = lock(&self.state);
        let image = MirrorImage {
            epoch: state.epoch,
            serving: self.serving.load().as_deref().cloned(),
            queue: state.queue.image(),
        };
        drop(state);
        Box::pin(async move { image })
    }

    fn restore(&mut self, image: MirrorImage) -> BoxFuture<'_, ()> {
        match ReplicatedQueue::from_image(self.config.clone(), image.queue) {
            Ok(queue) => {
                let mut state = lock(&self.state);
                state.queue = queue;
                state.epoch = image.epoch;
                self.serving.store(image.serving.map(Arc::new));
                drop(state);
                self.led.notify_one();
            }
            Err(e) => tracing::error!(queue = %self.label, "a snapshot was not restored: {e}"),
        }
        Box::pin(async {})
    }
}
