//! [`RaftLog`]: a mirrored queue leader's log, on the queue's Raft group.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use warren_actors::classic::machine::{Op, QueueConfig, QueueState, Seq};
use warren_actors::classic::QueueLog;
use warren_actors::error::BrokerError;
use warren_actors::message::SharedMessage;
use warren_actors::BoxFuture;
use warren_cluster::replica::{GroupSpec, ReplicaHandle};

use crate::machine::{lock, MirrorCommand, MirrorMachine, Mirrors};

/// How long opening a group waits for the node's replica (it starts after the
/// queues at a node's start).
const OPEN_WAIT: Duration = Duration::from_secs(60);

/// How long a leader that could not start waits before it tries again.
const LEAD_RETRY: Duration = Duration::from_secs(1);
/// Tries between two warnings of a leader that cannot start.
const LEAD_COMPLAINT_EVERY: u64 = 30;

/// What opening a queue's group takes.
#[derive(Clone)]
pub(crate) struct Group {
    pub replica: ReplicaHandle,
    pub spec: GroupSpec,
    pub config: QueueConfig,
    pub mirrors: Mirrors,
}

impl Group {
    /// Runs the group on this node, with a fresh copy, unless it runs already;
    /// waits (bounded) for the node's replica.
    pub async fn open(&self) -> Result<(), BrokerError> {
        let deadline = Instant::now() + OPEN_WAIT;
        loop {
            match self.replica.view(self.spec.group).await {
                Ok(Some(_)) if self.mirrors.get(self.spec.group).is_some() => return Ok(()),
                Ok(_) => {
                    let state = self.mirrors.fresh(self.spec.group, self.config.clone());
                    let machine = MirrorMachine {
                        state,
                        config: self.config.clone(),
                        label: self.spec.label.clone(),
                    };
                    return self.replica.open(self.spec.clone(), machine).await;
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
            let epoch = rand::random::<u64>().max(1);
            // Until the group takes it (a minority side waits for the majority): the
            // actor serves nothing meanwhile, and what comes in waits in its mailbox.
            // Failing instead would restart the actor again and again, until its
            // supervisors gave up.
            for attempt in 0u64.. {
                // Applied here once everything committed before it is: the copy then
                // holds all the earlier leaders logged.
                let led = match group.open().await {
                    Ok(()) => group
                        .replica
                        .propose_to(group.spec.group, &MirrorCommand::Lead { epoch })
                        .await
                        .map(drop),
                    Err(e) => Err(e),
                };
                match led {
                    Ok(()) => break,
                    Err(e) => {
                        if attempt % LEAD_COMPLAINT_EVERY == 0 {
                            tracing::warn!(queue = %group.spec.label, "cannot lead the mirrored queue yet, trying again: {e}");
                        }
                        tokio::time::sleep(LEAD_RETRY).await;
                    }
                }
            }
            epoch_slot.store(epoch, Ordering::Release);
            let state = group.mirrors.get(group.spec.group).ok_or_else(|| {
                BrokerError::internal(format!("{}: its group closed", group.spec.label))
            })?;
            let copy = lock(&state);
            tracing::info!(
                queue = %group.spec.label,
                messages = copy.queue.len(),
                "leading the mirrored queue"
            );
            Ok(QueueState::led(&copy.queue, now))
        })
    }

    fn append(&self, ops: Vec<(Op, u64)>) -> BoxFuture<'static, Result<(), BrokerError>> {
        let command = MirrorCommand::Ops {
            epoch: self.epoch.load(Ordering::Acquire),
            ops,
        };
        let committed = self
            .group
            .replica
            .submit_to(self.group.spec.group, &command);
        Box::pin(async move { committed.await.map(drop) })
    }

    fn bodies(&self, seqs: &[Seq]) -> (Vec<(Seq, SharedMessage)>, Vec<Seq>) {
        match self.group.mirrors.get(self.group.spec.group) {
            Some(state) => lock(&state).queue.bodies(seqs),
            None => (Vec::new(), seqs.to_vec()),
        }
    }
}
