//! Applying committed entries, off the replica's loop: one task per group takes the
//! group's committed entries, snapshots to restore and requests for a snapshot in log
//! order, hands the commands to the group's [`Machine`] and reports back
//! ([`Applied`]), so that a slow apply (a queue actor starting, a store write) never
//! delays Raft's heartbeats or the next append of any group.
//!
//! The task owns the filter of proposals applied twice ([`Recent`]): an entry
//! proposed twice is applied once, on every node alike.

use std::collections::BTreeMap;

use ractor::ActorRef;
use raft::prelude::{Entry, EntryType};
use tokio::sync::mpsc;

use super::entry;
use super::machine::{Answer, Machine};
use super::proposals::{Recent, DEDUPE_WINDOW};
use super::snapshot::{SnapshotData, SNAPSHOT_FORMAT};
use super::{GroupRun, LocalReplica, ReplicaMsg};
use crate::raft_group::GroupId;

/// What the replica asks of a group's applier, in log order.
pub(super) enum ApplyJob {
    /// Committed entries (membership changes are reported back, for the replica to
    /// apply to Raft at their place in the log).
    Entries(Vec<Entry>),
    /// Make the machine's state the snapshot's (a snapshot from the leader).
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

/// What a group's applier reports back to the replica.
pub enum Applied {
    /// Everything up to `index` is applied.
    Upto {
        /// The last index applied.
        index: u64,
        /// The answers to this node's proposals among them, by proposal id.
        answers: Vec<(u64, Answer)>,
        /// The membership changes among them, in order, for Raft.
        conf_changes: Vec<Entry>,
        /// About how many bytes a snapshot of the state would take now
        /// ([`Machine::image_size`]).
        image_size: u64,
    },
    /// A snapshot of everything up to `index`, encoded.
    Snapshot {
        /// Its index.
        index: u64,
        /// `SnapshotData`, encoded.
        data: Result<Vec<u8>, String>,
        /// The first log entry the state still needs (see [`Machine::needed_from`]).
        needed_from: Option<u64>,
    },
}

/// Where a group's applier starts.
pub(super) struct Start {
    /// This node's name (the origin of its own proposals).
    pub origin: String,
    /// The group, and which run of it.
    pub run: GroupRun,
    /// The last entry applied.
    pub applied: u64,
    /// The latest snapshot stored, if any: its filter of proposals applied twice, and
    /// its state when it is ahead of `applied` (stored, but not applied before a crash).
    pub snapshot: Option<(u64, SnapshotData)>,
    /// The stored entries after the snapshot, to rebuild the filter up to `applied`.
    pub entries: Vec<Entry>,
}

/// Starts the applier of a group, feeding `machine`; reports go to `replica`.
pub(super) fn start<M: Machine>(
    start: Start,
    machine: M,
    replica: ActorRef<ReplicaMsg>,
) -> mpsc::UnboundedSender<ApplyJob> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let run = start.run;
        let group = run.group;
        let mut task = Applier {
            origin: start.origin,
            group,
            machine,
            applied: start.applied,
            recent: Recent::default(),
            stopped: false,
        };
        if let Some(report) = task.begin(start.snapshot, start.entries).await {
            if task.stopped {
                return;
            }
            let _ = replica.cast(ReplicaMsg::local(LocalReplica::Applied(run, report)));
        }
        while let Some(job) = rx.recv().await {
            let report = task.run(job).await;
            if task.stopped {
                // Nothing more is applied here: Raft hears of nothing applied past
                // this point, so this node never serves from a state it lacks.
                break;
            }
            if replica
                .cast(ReplicaMsg::local(LocalReplica::Applied(run, report)))
                .is_err()
            {
                // The replica stopped; its successor starts its own applier.
                break;
            }
        }
    });
    tx
}

struct Applier<M> {
    origin: String,
    group: GroupId,
    machine: M,
    applied: u64,
    recent: Recent,
    /// A snapshot's state did not decode: this node stops applying the group.
    stopped: bool,
}

impl<M: Machine> Applier<M> {
    /// Rebuilds the filter as it stood at the last applied entry (the snapshot's, then
    /// the entries after it), and restores a snapshot stored but not applied.
    async fn begin(
        &mut self,
        snapshot: Option<(u64, SnapshotData)>,
        entries: Vec<Entry>,
    ) -> Option<Applied> {
        let mut report = None;
        let mut snap_index = 0;
        if let Some((index, data)) = snapshot {
            snap_index = index;
            self.recent = Recent::import(data.recent.clone());
            if self.applied < index {
                report = Some(self.restore(index, data).await);
            }
        }
        let from = snap_index.max(self.applied.saturating_sub(DEDUPE_WINDOW));
        for e in entries
            .iter()
            .filter(|e| e.index > from && e.index <= self.applied)
            .filter(|e| e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty())
        {
            if let Ok(p) = entry::decode::<M::Command>(&e.data) {
                self.recent.first_time(&p.origin, p.id, e.index);
            }
        }
        report
    }

    async fn run(&mut self, job: ApplyJob) -> Applied {
        match job {
            ApplyJob::Entries(entries) => self.entries(entries).await,
            ApplyJob::Restore { index, data } => self.restore(index, data).await,
            ApplyJob::Snapshot { names, base_voters } => {
                let image = self.machine.image().await;
                let data = entry::command(&image).and_then(|state| {
                    SnapshotData {
                        format: SNAPSHOT_FORMAT,
                        names,
                        base_voters,
                        recent: self.recent.export(),
                        state,
                        log: Vec::new(),
                    }
                    .encode()
                });
                Applied::Snapshot {
                    index: self.applied,
                    data,
                    needed_from: self.machine.needed_from(),
                }
            }
        }
    }

    async fn restore(&mut self, index: u64, data: SnapshotData) -> Applied {
        match warren_storage::codec::decode::<M::Image>(&data.state) {
            Ok(image) => self.machine.restore(image).await,
            Err(e) => {
                // Going on would apply what follows to a state it does not follow:
                // this node stops applying the group (the others serve it).
                tracing::error!(
                    group = self.group,
                    index,
                    "a snapshot's state does not decode (written by another build?): this node stops applying the group; remove the group's replica here (`warren queue delete-member`) and add it again: {e}"
                );
                self.stopped = true;
            }
        }
        self.recent = Recent::import(data.recent);
        self.applied = index;
        Applied::Upto {
            index,
            answers: Vec::new(),
            conf_changes: Vec::new(),
            image_size: self.machine.image_size(),
        }
    }

    async fn entries(&mut self, entries: Vec<Entry>) -> Applied {
        let (mut answers, mut conf_changes) = (Vec::new(), Vec::new());
        for e in entries {
            if e.index <= self.applied {
                // Handed over again after a snapshot was restored past it.
                continue;
            }
            if e.get_entry_type() == EntryType::EntryConfChange {
                conf_changes.push(e.clone());
            } else if !e.data.is_empty() {
                // (Empty: a new leader's first entry.)
                match entry::decode::<M::Command>(&e.data) {
                    Ok(p) => {
                        // Handed to Raft twice and in the log twice: applied once.
                        if self.recent.first_time(&p.origin, p.id, e.index) {
                            let answer = self.machine.apply(e.index, p.command).await;
                            if p.origin == self.origin {
                                answers.push((p.id, answer));
                            }
                        }
                    }
                    Err(why) => tracing::error!(
                        group = self.group,
                        index = e.index,
                        "an entry did not decode and is skipped: {why}"
                    ),
                }
            }
            self.applied = e.index;
        }
        Applied::Upto {
            index: self.applied,
            answers,
            conf_changes,
            image_size: self.machine.image_size(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::any::Any;
    use std::collections::BTreeMap;

    use warren_actors::BoxFuture;

    use super::*;

    /// A machine holding one number.
    struct Number(u64);

    impl Machine for Number {
        type Command = u64;
        type Image = u64;

        fn apply(&mut self, _index: u64, command: u64) -> BoxFuture<'_, Answer> {
            self.0 = command;
            Box::pin(async { Ok(Box::new(()) as Box<dyn Any + Send>) })
        }

        fn image(&mut self) -> BoxFuture<'_, u64> {
            let n = self.0;
            Box::pin(async move { n })
        }

        fn restore(&mut self, image: u64) -> BoxFuture<'_, ()> {
            self.0 = image;
            Box::pin(async {})
        }
    }

    fn snapshot(state: Vec<u8>) -> SnapshotData {
        SnapshotData {
            format: SNAPSHOT_FORMAT,
            names: BTreeMap::new(),
            base_voters: Vec::new(),
            recent: Vec::new(),
            state,
            log: Vec::new(),
        }
    }

    /// A snapshot whose state does not decode stops the applier rather than leave
    /// the machine as it was and go on as if it were restored.
    #[tokio::test]
    async fn a_snapshot_that_does_not_decode_stops_applying() {
        let mut task = Applier {
            origin: "n1".into(),
            group: 3,
            machine: Number(0),
            applied: 0,
            recent: Recent::default(),
            stopped: false,
        };
        let good = warren_storage::codec::encode(&7u64).unwrap();
        task.restore(10, snapshot(good)).await;
        assert_eq!((task.machine.0, task.applied, task.stopped), (7, 10, false));
        task.restore(20, snapshot(vec![0xff, 0xff])).await;
        assert!(task.stopped, "it stops");
        assert_eq!(task.machine.0, 7, "the state stays as it was");
    }
}
