//! [`RaftLog`]: a mirrored queue leader's log, on the queue's Raft group.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};
use warren_actors::classic::machine::{Op, QueueConfig, QueueState, Seq};
use warren_actors::classic::QueueLog;
use warren_actors::error::BrokerError;
use warren_actors::message::SharedMessage;
use warren_actors::BoxFuture;
use warren_cluster::replica::{GroupSpec, ReplicaHandle};

use crate::machine::{
    lock, read_bodies, MirrorCommand, MirrorMachine, MirrorState, Mirrors, Serving,
};

/// How long opening a group waits for the node's replica (it starts after the
/// queues at a node's start).
const OPEN_WAIT: Duration = Duration::from_secs(60);

/// How long a leader that could not start waits before it tries again.
const LEAD_RETRY: Duration = Duration::from_millis(250);

/// Why this node did not start leading.
enum Refused {
    /// Another node serves the queue, and is up.
    ServedElsewhere(String),
    /// Not now (no majority, another leader started first); maybe later.
    NotYet(BrokerError),
}

/// What opening a queue's group takes.
#[derive(Clone)]
pub(crate) struct Group {
    pub replica: ReplicaHandle,
    pub spec: GroupSpec,
    pub config: QueueConfig,
    pub mirrors: Mirrors,
    /// Where the queue is served, as the group's log says.
    pub serving: Serving,
    /// Notified when that changes (a `Lead` applied, a snapshot restored): the
    /// replica's actor looks again at who serves.
    pub led: Arc<Notify>,
    /// The queue's members as the metadata says, now and at every change: the
    /// group's leader brings the group's Raft members to them.
    pub members: Members,
    /// Set when the queue is deleted, before its group is closed here for good: the
    /// group is never opened here again (see [`Group::open`]).
    pub deleted: Deleted,
}

/// Whether a mirrored queue was deleted, shared by every `Group` made for it.
pub(crate) type Deleted = Arc<AtomicBool>;

/// A mirrored queue's members (nodes) as the metadata says, watched.
pub(crate) type Members = Arc<watch::Sender<Arc<Vec<String>>>>;

impl Group {
    /// Whether node `node` is one of the queue's members now.
    pub fn has_member(&self, node: &str) -> bool {
        self.members.borrow().iter().any(|m| m == node)
    }

    /// Whether the queue was deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    fn gone(&self) -> BrokerError {
        BrokerError::internal(format!("{}: deleted", self.spec.label))
    }
}

impl Group {
    /// Starts leading here, unless another live node serves the queue: a `Lead` in
    /// place of the leader this node's copy knows.
    async fn try_lead(&self, me: &str) -> Result<(u64, Arc<Mutex<MirrorState>>), Refused> {
        self.open().await.map_err(Refused::NotYet)?;
        let state = self.mirrors.get(self.spec.group).ok_or_else(|| {
            Refused::NotYet(BrokerError::internal(format!(
                "{}: its group closed",
                self.spec.label
            )))
        })?;
        // Who serves and the epoch to replace, read together: the machine changes
        // both under the copy's lock, so a `Lead` applied in between (a copy still
        // applying its log) cannot leave this node replacing a leader it did not see.
        let (serving, replaces) = {
            let copy = lock(&state);
            (self.serving.load_full(), copy.epoch)
        };
        if let Some(node) = serving {
            // (A node that is no longer a member serves no more.)
            if *node != me && self.has_member(&node) && !crate::member::down(me, &node) {
                return Err(Refused::ServedElsewhere(node.to_string()));
            }
        }
        let epoch = rand::random::<u64>().max(1);
        let lead = MirrorCommand::Lead {
            epoch,
            node: me.to_string(),
            replaces,
        };
        // Applied here once everything committed before it is: the copy then holds
        // all the earlier leaders logged.
        self.replica
            .propose_to(self.spec.group, &lead)
            .await
            .map_err(Refused::NotYet)?;
        Ok((epoch, state))
    }

    /// Runs the group on this node, with a fresh copy, unless it runs already;
    /// waits (bounded) for the node's replica. The copy is registered by the replica
    /// as it starts the group with its machine: one the replica did not take (the
    /// group ran already: another opening came first) is never registered.
    ///
    /// Refused once the queue is deleted (a leader's `lead` still under way after its
    /// actor stopped): a run opened then would be one with a fresh log, for a queue
    /// that no longer exists, that nothing closes.
    pub async fn open(&self) -> Result<(), BrokerError> {
        let deadline = Instant::now() + OPEN_WAIT;
        loop {
            if self.is_deleted() {
                return Err(self.gone());
            }
            match self.replica.view(self.spec.group).await {
                Ok(Some(_)) if self.mirrors.get(self.spec.group).is_some() => return Ok(()),
                Ok(_) => {
                    let machine = MirrorMachine {
                        state: Mirrors::copy(self.config.clone()),
                        mirrors: self.mirrors.clone(),
                        group: self.spec.group,
                        serving: self.serving.clone(),
                        led: self.led.clone(),
                        config: self.config.clone(),
                        label: self.spec.label.clone(),
                    };
                    let reader = self.replica.open(self.spec.clone(), machine).await?;
                    // Deleted meanwhile: the deletion's close may have reached the
                    // replica before this opening did. (The deletion sets `deleted`
                    // before it closes: an opening that came after its close sees it.)
                    if self.is_deleted() {
                        let _ = self.replica.close(self.spec.group, true).await;
                        if let Some(copy) = self.mirrors.get(self.spec.group) {
                            self.mirrors.remove_if(self.spec.group, &copy);
                        }
                        return Err(self.gone());
                    }
                    // (Registered by this opening's machine, or by the one of an
                    // opening that came first: every run reads the same log.)
                    match self.mirrors.get(self.spec.group) {
                        Some(state) => {
                            lock(&state).reader = Some(reader);
                        }
                        None => tracing::error!(
                            queue = %self.spec.label,
                            "the group runs here with a copy nobody registered: this node cannot lead it"
                        ),
                    }
                    return Ok(());
                }
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// A mirrored queue leader's log (see the crate documentation).
#[derive(Clone)]
pub struct RaftLog {
    group: Arc<Group>,
    /// This leader's epoch (0 until it leads).
    epoch: Arc<AtomicU64>,
}

impl RaftLog {
    pub(crate) fn new(group: Group) -> RaftLog {
        RaftLog {
            group: Arc::new(group),
            epoch: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl QueueLog for RaftLog {
    fn lead(&self, now: u64) -> BoxFuture<'static, Result<QueueState, BrokerError>> {
        let (group, epoch_slot) = (self.group.clone(), self.epoch.clone());
        Box::pin(async move {
            let me = group.replica.node.clone();
            let mut complained = false;
            loop {
                match group.try_lead(&me).await {
                    Ok((epoch, state)) => {
                        epoch_slot.store(epoch, Ordering::Release);
                        let copy = lock(&state);
                        tracing::info!(
                            queue = %group.spec.label,
                            messages = copy.queue.len(),
                            "leading the mirrored queue"
                        );
                        return Ok(QueueState::led(&copy.queue, now));
                    }
                    Err(Refused::ServedElsewhere(node)) => {
                        return Err(BrokerError::internal(format!(
                            "{}: served on node '{node}'",
                            group.spec.label
                        )))
                    }
                    // Deleted (its actor stopped): nothing to lead, and its group stays
                    // closed (`open` refuses).
                    Err(Refused::NotYet(_)) if group.is_deleted() => return Err(group.gone()),
                    // No majority, or another leader started first: tried again (the
                    // queue's actor holds, then refuses, what comes in meanwhile).
                    Err(Refused::NotYet(e)) => {
                        if !complained {
                            tracing::warn!(queue = %group.spec.label, "cannot lead the mirrored queue yet, trying again: {e}");
                            complained = true;
                        }
                        tokio::time::sleep(LEAD_RETRY).await;
                        group.replica.catch_up_with(group.spec.group).await;
                    }
                }
            }
        })
    }

    fn append(&self, ops: Vec<(Op, u64)>) -> BoxFuture<'static, Result<(), BrokerError>> {
        // What the entry carries: the bodies, and a little for each op.
        let size: usize = ops
            .iter()
            .map(|(op, _)| match op {
                Op::Enqueue { message } => message.body.len() + 128,
                _ => 32,
            })
            .sum();
        let command = MirrorCommand::Ops {
            epoch: self.epoch.load(Ordering::Acquire),
            ops,
        };
        let committed = self
            .group
            .replica
            .submit_sized(self.group.spec.group, &command, size);
        Box::pin(async move { committed.await.map(drop) })
    }

    fn bodies(&self, seqs: &[Seq]) -> (Vec<(Seq, SharedMessage)>, Vec<Seq>) {
        let Some(state) = self.group.mirrors.get(self.group.spec.group) else {
            return (Vec::new(), seqs.to_vec());
        };
        let reader = lock(&state).reader.clone();
        match reader {
            Some(reader) => read_bodies(&state, &reader, seqs, &self.group.spec.label),
            None => (Vec::new(), seqs.to_vec()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use warren_actors::classic::QueueLog;
    use warren_actors::message::FieldTable;
    use warren_actors::queue::{QueueDef, QueueType};

    use super::RaftLog;
    use crate::conformance_tests::Node;
    use crate::machine::lock;
    use crate::Mirrored;

    /// Queue `name`, declared on `node`, with a replica there alone.
    fn def_on(node: &Node, name: &str) -> QueueDef {
        QueueDef {
            name: name.into(),
            id: 1,
            node: node.name.clone(),
            durable: true,
            owner: None,
            auto_delete: false,
            arguments: FieldTable::new(),
            replicas: vec![node.name.clone()],
            founders: Vec::new(),
        }
    }

    /// The group of a deleted queue: not running here, no copy registered.
    async fn closed_for_good(group: &super::Group) {
        let id = group.spec.group;
        assert!(
            group.replica.view(id).await.unwrap().is_none(),
            "the group of a deleted queue is not opened again"
        );
        assert!(
            group.mirrors.get(id).is_none(),
            "no copy of it is registered"
        );
    }

    /// Two openings at once of a group that does not run here yet (the replica's
    /// actor as it starts and a leader's `lead`, or two leaders' `lead` after the
    /// group stopped running here): both hear that it does not run, both open it;
    /// the replica runs it with the first machine and drops the second. The copy
    /// registered must be the first's: the second's is fed by nothing (its leader
    /// read epoch 0 forever: its `Lead`s were refused, its publishes nacked).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_openings_register_the_copy_the_group_feeds() {
        let node = Node::start("orphan").await;
        let def = def_on(&node, "orphan");
        let group = Mirrored::new(&node.name).group(&def, "/").unwrap();
        // (join! polls both before either answer is handled: both views are asked
        // before either opening reaches the replica.)
        let (a, b) = tokio::join!(group.open(), group.open());
        a.unwrap();
        b.unwrap();
        // A leader, then the next one (the first restarted): each replaces the epoch
        // the copy holds, and the copy it leads from holds its `Lead` (applied here
        // before `propose_to` answers).
        for leader in 1..=2 {
            let Ok((epoch, state)) = group.try_lead(&node.name).await else {
                panic!("leader {leader} did not lead");
            };
            assert_eq!(
                lock(&state).epoch,
                epoch,
                "leader {leader} leads from the copy the group feeds"
            );
        }
        node.stop();
    }

    /// A leader's `lead` that comes after its queue was deleted (its task slept through
    /// the deletion; its actor stopped): it does not open the group again (a run with
    /// a fresh log, for a queue that no longer exists, that nothing would ever close),
    /// nor lead.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lead_after_the_deletion_does_not_open_the_group_again() {
        let node = Node::start("deleted").await;
        let def = def_on(&node, "deleted");
        let mirrored = Mirrored::new(&node.name);
        let group = mirrored.group(&def, "/").unwrap();
        group.open().await.unwrap();
        let log = RaftLog::new(group.clone());
        mirrored.removed(&def, "/").await;
        let id = group.spec.group;
        assert!(group.replica.view(id).await.unwrap().is_none(), "closed");

        assert!(log.lead(0).await.is_err(), "a deleted queue is not led");
        closed_for_good(&group).await;
        node.stop();
    }

    /// The same with the `lead` under way as the queue is deleted: its group has no
    /// majority (its other replica never starts), so it waits for its `Lead` to
    /// commit and tries again. Once deleted, it ends, and the group stays closed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lead_under_way_ends_with_its_queue() {
        let node = Node::start("stranded").await;
        let mut def = def_on(&node, "stranded");
        def.replicas.push("stranded-absent".into());
        let mirrored = Mirrored::new(&node.name);
        let group = mirrored.group(&def, "/").unwrap();
        group.open().await.unwrap();
        let lead = tokio::spawn(RaftLog::new(group.clone()).lead(0));
        mirrored.removed(&def, "/").await;

        // (A bound on a failure, not a wait: once the queue is deleted, its lead's
        // attempts fail at once; before, it tried again forever.)
        let led = tokio::time::timeout(Duration::from_secs(60), lead)
            .await
            .expect("the lead of a deleted queue ends")
            .unwrap();
        assert!(led.is_err(), "a deleted queue is not led");
        closed_for_good(&group).await;
        node.stop();
    }
}
