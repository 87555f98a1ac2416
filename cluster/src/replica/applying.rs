//! Applying committed entries, off the replica's loop: one task per replica takes
//! committed entries, snapshots to restore and requests for a snapshot in log order,
//! applies them to the node's broker state and reports back ([`Applied`]), so that
//! a slow apply (a queue actor starting, a store write) never delays Raft's
//! heartbeats or the next append.
//!
//! The task owns the filter of proposals applied twice ([`Recent`]): an entry
//! proposed twice is applied once, on every node alike.

use std::collections::BTreeMap;
use std::sync::Arc;

use ractor::ActorRef;
use raft::prelude::{Entry, EntryType};
use tokio::sync::mpsc;
use warren_actors::error::BrokerError;

use super::proposals::Recent;
use super::snapshot::{SnapshotData, SNAPSHOT_FORMAT};
use super::{LocalReplica, Proposal, ReplicaMsg};
use crate::image;
use crate::metadata::{MetaCommand, MetadataApplier};

/// What the replica asks of its applier, in log order.
pub(super) enum ApplyJob {
    /// Committed entries (membership changes are reported back, for the replica to
    /// apply to Raft at their place in the log).
    Entries(Vec<Entry>),
    /// Make the broker state the snapshot's (a snapshot from the leader).
    Restore {
        /// The snapshot's index.
        index: u64,
        /// What it carries.
        data: SnapshotData,
    },
    /// Take a snapshot of what is applied now.
    Snapshot {
        /// Who is who, as the replica knows it.
        names: BTreeMap<u64, String>,
        /// The voters the group was formed with.
        base_voters: Vec<u64>,
    },
}

/// What a replica's applier reports back to it.
pub enum Applied {
    /// Everything up to `index` is applied.
    Upto {
        /// The last index applied.
        index: u64,
        /// The results of this node's proposals among them, by proposal id.
        answers: Vec<(u64, Result<(), BrokerError>)>,
        /// The membership changes among them, in order, for Raft.
        conf_changes: Vec<Entry>,
    },
    /// A snapshot of everything up to `index`, encoded.
    Snapshot {
        /// Its index.
        index: u64,
        /// [`SnapshotData`], encoded.
        data: Result<Vec<u8>, String>,
    },
}

/// Starts the applier of the replica `replica` on node `origin`, from `applied` with
/// the filter `recent`.
pub(super) fn start(
    origin: String,
    applier: Arc<dyn MetadataApplier>,
    applied: u64,
    recent: Recent,
    replica: ActorRef<ReplicaMsg>,
) -> mpsc::UnboundedSender<ApplyJob> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut task = Applier {
            origin,
            applier,
            applied,
            recent,
        };
        while let Some(job) = rx.recv().await {
            let report = task.run(job).await;
            if replica
                .cast(ReplicaMsg::local(LocalReplica::Applied(report)))
                .is_err()
            {
                // The replica stopped; its successor starts its own applier.
                break;
            }
        }
    });
    tx
}

struct Applier {
    origin: String,
    applier: Arc<dyn MetadataApplier>,
    applied: u64,
    recent: Recent,
}

impl Applier {
    async fn run(&mut self, job: ApplyJob) -> Applied {
        match job {
            ApplyJob::Entries(entries) => self.entries(entries).await,
            ApplyJob::Restore { index, data } => {
                restore(self.applier.as_ref(), &data.image).await;
                self.recent = Recent::import(data.recent);
                self.applied = index;
                Applied::Upto {
                    index,
                    answers: Vec::new(),
                    conf_changes: Vec::new(),
                }
            }
            ApplyJob::Snapshot { names, base_voters } => {
                let data = SnapshotData {
                    format: SNAPSHOT_FORMAT,
                    names,
                    base_voters,
                    recent: self.recent.export(),
                    image: self.applier.image().await,
                };
                Applied::Snapshot {
                    index: self.applied,
                    data: data.encode(),
                }
            }
        }
    }

    async fn entries(&mut self, entries: Vec<Entry>) -> Applied {
        let (mut answers, mut conf_changes) = (Vec::new(), Vec::new());
        for entry in entries {
            if entry.index <= self.applied {
                // Handed over again after a snapshot was restored past it.
                continue;
            }
            if entry.get_entry_type() == EntryType::EntryConfChange {
                conf_changes.push(entry.clone());
            } else if !entry.data.is_empty() {
                // (Empty: a new leader's first entry.)
                match warren_storage::codec::decode::<Proposal>(&entry.data) {
                    Ok(p) => {
                        // Handed to Raft twice and in the log twice: applied once.
                        if self.recent.first_time(&p.origin, p.id, entry.index) {
                            let result = self.applier.apply(p.command).await;
                            if p.origin == self.origin {
                                answers.push((p.id, result));
                            }
                        }
                    }
                    Err(e) => tracing::error!(
                        index = entry.index,
                        "a metadata entry did not decode and is skipped: {e}"
                    ),
                }
            }
            self.applied = entry.index;
        }
        Applied::Upto {
            index: self.applied,
            answers,
            conf_changes,
        }
    }
}

/// Makes the broker state the one `target` describes: removes what it does not
/// hold, then adds what it holds and the node lacks.
pub(super) async fn restore(applier: &dyn MetadataApplier, target: &[MetaCommand]) {
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
