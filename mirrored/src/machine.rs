//! [`MirrorCommand`]: what a mirrored queue's log holds, and [`MirrorMachine`]: the
//! group's state machine over a replica's copy of the queue ([`ReplicatedQueue`]).

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwapOption;
use serde::{Deserialize, Serialize};
use warren_actors::classic::machine::{
    Locator, Op, QueueConfig, ReplicatedImage, ReplicatedQueue, Seq,
};
use warren_actors::error::BrokerError;
use warren_actors::message::SharedMessage;
use warren_actors::BoxFuture;
use warren_cluster::raft_group::GroupId;
use warren_cluster::replica::{Answer, LogReader, Machine};

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
    /// Where the group's log is read back (the messages' bodies), once it runs.
    pub reader: Option<LogReader>,
}

/// The bodies stored at `found`, read from the group's log with `reader` (on the
/// calling thread), and the seqs whose body was not there. A body that cannot be read
/// is read again a few times first (a message the queue no longer holds, whose entry
/// went with a compaction, is simply not asked for again): what is reported missing is
/// counted lost by the queue.
pub(crate) fn read_bodies(
    state: &Mutex<MirrorState>,
    reader: &LogReader,
    seqs: &[Seq],
    label: &str,
) -> (Vec<(Seq, SharedMessage)>, Vec<Seq>) {
    const ATTEMPTS: u32 = 5;
    let mut bodies = Vec::with_capacity(seqs.len());
    let mut wanted = seqs.to_vec();
    let mut missing = Vec::new();
    for attempt in 1..=ATTEMPTS {
        // Where they are now (those that left the queue meanwhile are not asked for).
        let (found, gone) = lock(state).queue.locate(&wanted);
        missing.extend(gone);
        let indexes: Vec<u64> = found.iter().map(|(_, at)| at.index).collect();
        let (entries, failed) = reader.commands::<MirrorCommand>(&indexes);
        let entries: HashMap<u64, MirrorCommand> = entries.into_iter().collect();
        let mut again = Vec::new();
        for (seq, at) in found {
            let body = match entries.get(&at.index) {
                Some(MirrorCommand::Ops { ops, .. }) => match ops.get(at.op as usize) {
                    Some((Op::Enqueue { message }, _)) => Some(message.clone()),
                    _ => None,
                },
                _ => None,
            };
            match body {
                Some(message) => bodies.push((seq, message)),
                None => again.push(seq),
            }
        }
        if again.is_empty() {
            break;
        }
        if attempt == ATTEMPTS {
            tracing::error!(queue = %label, "{} bodies could not be read from the log: {failed:?}", again.len());
            missing.extend(again);
            break;
        }
        tracing::warn!(queue = %label, "reading bodies from the log, trying again: {failed:?}");
        std::thread::sleep(std::time::Duration::from_millis(100 << attempt));
        wanted = again;
    }
    (bodies, missing)
}

/// The copies of the mirrored queues whose groups run on this node, by group.
#[derive(Clone, Default)]
pub struct Mirrors(Arc<Mutex<HashMap<GroupId, Arc<Mutex<MirrorState>>>>>);

impl Mirrors {
    /// The copy of group `group`, if it runs here.
    pub fn get(&self, group: GroupId) -> Option<Arc<Mutex<MirrorState>>> {
        self.lock().get(&group).cloned()
    }

    /// A new, empty copy, registered by nobody yet: the machine that applies to it
    /// registers it as its group starts running here ([`Machine::opened`]), so that
    /// the copy registered is always the one a running machine feeds.
    pub fn copy(config: QueueConfig) -> Arc<Mutex<MirrorState>> {
        Arc::new(Mutex::new(MirrorState {
            queue: ReplicatedQueue::new(config, 0),
            epoch: 0,
            reader: None,
        }))
    }

    /// Registers `state` as group `group`'s copy (replacing that of an earlier run).
    fn insert(&self, group: GroupId, state: Arc<Mutex<MirrorState>>) {
        self.lock().insert(group, state);
    }

    /// Forgets group `group`'s copy if it is still `state` (the copy of the run that
    /// was closed): a copy a later run of the group registered since stays. Whether
    /// it was forgotten.
    pub fn remove_if(&self, group: GroupId, state: &Arc<Mutex<MirrorState>>) -> bool {
        let mut copies = self.lock();
        let closed_run = copies.get(&group).is_some_and(|c| Arc::ptr_eq(c, state));
        if closed_run {
            copies.remove(&group);
        }
        closed_run
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
    /// Where `state` is registered as `group`'s copy once the group runs with this
    /// machine (not before: a machine the replica did not take feeds nothing).
    pub mirrors: Mirrors,
    pub group: GroupId,
    pub serving: Serving,
    /// Notified when `serving` changes.
    pub led: Arc<tokio::sync::Notify>,
    pub config: QueueConfig,
    pub label: String,
}

/// A snapshot of the copy (no bodies: they stay in the log entries it names, which
/// travel with a snapshot sent to a member).
#[derive(Serialize, Deserialize)]
pub(crate) struct MirrorImage {
    epoch: u64,
    serving: Option<String>,
    queue: ReplicatedImage,
}

impl Machine for MirrorMachine {
    type Command = MirrorCommand;
    type Image = MirrorImage;

    fn apply(&mut self, index: u64, command: MirrorCommand) -> BoxFuture<'_, Answer> {
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
                for (i, (op, now)) in ops.into_iter().enumerate() {
                    let at = Locator {
                        index,
                        op: i as u32,
                    };
                    state.queue.apply(op, now, at);
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

    fn opened(&mut self) {
        self.mirrors.insert(self.group, self.state.clone());
    }

    fn needed_from(&self) -> Option<u64> {
        lock(&self.state).queue.needed_from()
    }

    fn image_size(&self) -> u64 {
        // A message's record in the core and where its body is stored.
        lock(&self.state).queue.len() as u64 * 96
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
