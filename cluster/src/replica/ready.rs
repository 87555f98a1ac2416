//! The replica as its group's shell: it performs what the driver asks for
//! ([`crate::raft_group::Effects`]): Raft messages to the other replicas, writes to the
//! node's group-commit writer (a write's completion comes back as
//! [`Persisted`](super::LocalReplica::Persisted)), committed entries and snapshots from
//! the leader to the applier task ([`super::applying`]), snapshots when due.

use ractor::ActorProcessingErr;
use raft::prelude::{ConfChangeType, Message, Snapshot};
use warren_storage::Batch;

use super::applying::{Applied, ApplyJob};
use super::snapshot::SnapshotData;
use super::transport::{self, Cast, RaftBatch};
use super::{replica_of, LocalReplica, ReplicaMsg, ReplicaState};
use crate::raft_group::{Effects, ToApply, Write};

impl ReplicaState {
    /// Handles every ready Raft has.
    pub(super) fn on_ready(&mut self) -> Result<(), ActorProcessingErr> {
        let mut out = Effects::default();
        self.group.advance(&mut out)?;
        self.perform(out)
    }

    /// The write of ready `number` completed: it and every ready before it are on
    /// disk (the writer commits in order).
    pub(super) fn persisted(
        &mut self,
        number: u64,
        result: Result<(), String>,
    ) -> Result<(), ActorProcessingErr> {
        if let Err(e) = result {
            // Raft must not go on as if it were written: start again from the store.
            return Err(format!("writing the metadata log failed: {e}").into());
        }
        let mut out = Effects::default();
        self.group.persisted(number, &mut out)?;
        self.perform(out)
    }

    fn perform(&mut self, out: Effects) -> Result<(), ActorProcessingErr> {
        self.send(out.messages);
        for read in out.reads {
            self.barrier.answered(&read.request_ctx, read.index);
        }
        for job in out.apply {
            match job {
                ToApply::Entries(entries) => {
                    let _ = self.apply_tx.send(ApplyJob::Entries(entries));
                }
                ToApply::Snapshot(snapshot) => self.install(snapshot)?,
            }
        }
        for write in out.writes {
            self.write(write);
        }
        if out.snapshot_wanted {
            self.take_snapshot();
        }
        Ok(())
    }

    fn write(&self, write: Write) {
        if self.role != crate::members::Role::Disk {
            return;
        }
        let batch = if write.durable {
            Batch::durable(write.ops)
        } else {
            Batch::non_durable(write.ops)
        };
        let commit = self.store.submit(batch);
        if let Some(number) = write.ready {
            let me = self.myself.clone();
            tokio::spawn(async move {
                let result = commit.await.map_err(|e| e.to_string());
                let _ = me.cast(ReplicaMsg::local(LocalReplica::Persisted(number, result)));
            });
        }
    }

    /// Takes what the applier reports.
    pub(super) fn applied(&mut self, report: Applied) -> Result<(), ActorProcessingErr> {
        let mut out = Effects::default();
        match report {
            Applied::Upto {
                index,
                answers,
                conf_changes,
            } => {
                for entry in conf_changes {
                    if let Some((member, change)) = self.group.apply_conf_change(&entry)? {
                        let what = match change {
                            ConfChangeType::AddNode => "joined the metadata group as a voter",
                            ConfChangeType::AddLearnerNode => {
                                "joined the metadata group as a learner"
                            }
                            ConfChangeType::RemoveNode => "left the metadata group",
                        };
                        tracing::info!(member = %member, "{what}");
                    }
                }
                for (id, result) in answers {
                    self.proposals.answer(id, result);
                }
                self.group.applied(index, &mut out);
                self.barrier.applied(self.group.record.applied);
                self.maybe_snapshot();
            }
            Applied::Snapshot { index, data } => {
                self.snapshotting = false;
                match data {
                    Ok(data) => {
                        // A tail behind the snapshot for followers a little behind: an
                        // eighth of the interval (1 024 entries by default).
                        let keep = self.snapshot_every / 8;
                        self.group.compact(index, data, keep, &mut out);
                        tracing::debug!(
                            index,
                            kept = self.group.node.store().len(),
                            "took a metadata snapshot and compacted the log"
                        );
                    }
                    Err(e) => tracing::error!("taking a metadata snapshot: {e}"),
                }
            }
        }
        self.perform(out)
    }

    /// Asks the applier for a snapshot once enough was applied since the last one.
    fn maybe_snapshot(&mut self) {
        if self.group.record.applied >= self.group.snapshot_index() + self.snapshot_every {
            self.take_snapshot();
        }
    }

    /// Asks the applier for a snapshot of what it has applied, unless one is on its
    /// way or nothing was applied since the last.
    fn take_snapshot(&mut self) {
        if self.snapshotting || self.group.record.applied <= self.group.snapshot_index() {
            return;
        }
        self.snapshotting = true;
        let _ = self.apply_tx.send(ApplyJob::Snapshot {
            names: self.group.record.names.clone(),
            base_voters: self.group.record.base_voters.clone(),
        });
    }

    /// A snapshot from the leader replaced the log: the applier makes the broker
    /// state the snapshot's.
    fn install(&mut self, snapshot: Snapshot) -> Result<(), ActorProcessingErr> {
        let data = SnapshotData::decode(&snapshot.data)?;
        let index = snapshot.get_metadata().index;
        tracing::info!(
            index,
            bytes = snapshot.data.len(),
            "installing a metadata snapshot from the leader"
        );
        let record = &mut self.group.record;
        for (id, name) in &data.names {
            record.names.insert(*id, name.clone());
        }
        if !data.base_voters.is_empty() {
            record.base_voters = data.base_voters.clone();
        }
        let _ = self.apply_tx.send(ApplyJob::Restore { index, data });
        Ok(())
    }

    /// Sends Raft messages to their replicas, batched per peer (see
    /// [`transport`]).
    pub(super) fn send(&mut self, messages: Vec<Message>) {
        let group = self.group.id;
        let mut by_peer: std::collections::BTreeMap<u64, Vec<(u64, Vec<u8>)>> = Default::default();
        for m in messages {
            if let Ok(bytes) = protobuf::Message::write_to_bytes(&m) {
                by_peer.entry(m.to).or_default().push((group, bytes));
            }
        }
        for (to, batch) in by_peer {
            let Some(name) = self.group.record.names.get(&to) else {
                continue;
            };
            let Some(peer) = replica_of(name) else {
                continue;
            };
            let me = (self.id, self.name.as_str());
            for cast in transport::casts(batch, me, &mut self.big_seq) {
                let _ = match cast {
                    Cast::Batch(messages) => peer.cast(ReplicaMsg::Raft(
                        RaftBatch {
                            sender: self.name.clone(),
                            messages,
                        }
                        .into(),
                    )),
                    Cast::Part(p) => peer.cast(ReplicaMsg::RaftPart(p.into())),
                };
            }
        }
    }
}
