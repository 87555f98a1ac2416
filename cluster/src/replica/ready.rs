//! Handling Raft's readies, pipelined: a ready's messages go out at once (a leader
//! replicates while it writes), its entries and hard state are handed to the node's
//! group-commit writer without waiting, and Raft hears that they are on disk when the
//! write completes ([`Persisted`](super::LocalReplica::Persisted)); only then go the
//! messages that promise durability (votes, append answers). Committed entries go to
//! the applier task ([`super::applying`]), which reports back. So neither an fsync nor
//! an apply holds up heartbeats, elections or the next append.
//!
//! Snapshots: every `--metadata-snapshot-every` applied entries the applier images the
//! metadata, the replica stores the snapshot and compacts its log behind it; a
//! snapshot from the leader (a node far behind, or new) replaces the log and the
//! broker state.

use std::collections::VecDeque;

use protobuf::Message as _;
use ractor::ActorProcessingErr;
use raft::prelude::{ConfChange, ConfChangeType, Entry, Message, Snapshot};
use raft::StateRole;
use warren_storage::Batch;

use super::applying::{Applied, ApplyJob};
use super::snapshot::SnapshotData;
use super::transport::{self, Cast};
use super::{replica_of, Joiner, LocalReplica, ReplicaMsg, ReplicaState};
use crate::members::Role;
use crate::raft_log;

/// A ready handed to Raft but not yet on disk.
pub(super) struct Unpersisted {
    number: u64,
    /// Sent once this ready (and every one before) is on disk.
    messages: Vec<Message>,
    done: bool,
}

/// The readies not yet on disk, in order.
pub(super) type Pipeline = VecDeque<Unpersisted>;

impl ReplicaState {
    /// Handles every ready Raft has. A leader whose commit index moved tells the
    /// followers at once (a heartbeat carries the commit index), so that every node
    /// applies a change within a round trip rather than at the next heartbeat.
    pub(super) fn on_ready(&mut self) -> Result<(), ActorProcessingErr> {
        loop {
            while self.node.has_ready() {
                self.ready_once()?;
            }
            if self.node.store().take_wanted() {
                self.take_snapshot();
            }
            if !self.sent_snapshots.is_empty() {
                for to in std::mem::take(&mut self.sent_snapshots) {
                    self.node.report_snapshot(to, raft::SnapshotStatus::Finish);
                }
                continue;
            }
            let committed = self.node.raft.raft_log.committed;
            if self.node.raft.state != StateRole::Leader || committed <= self.pinged_commit {
                return Ok(());
            }
            self.pinged_commit = committed;
            self.node.ping();
        }
    }

    fn ready_once(&mut self) -> Result<(), ActorProcessingErr> {
        let mut ready = self.node.ready();
        self.send(ready.take_messages());
        for read in ready.take_read_states() {
            self.barrier.answered(&read.request_ctx, read.index);
        }
        let mut ops = Vec::new();
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            self.install(snapshot, &mut ops)?;
        }
        self.hand_to_applier(ready.take_committed_entries());
        if !ready.entries().is_empty() {
            ops.extend(raft_log::append_ops(ready.entries()));
            self.node.mut_store().append(ready.entries())?;
        }
        if let Some(hs) = ready.hs() {
            self.node.mut_store().set_hard_state(hs.clone());
            self.record.hard_state = hs.write_to_bytes()?;
        }
        if !ops.is_empty() || ready.hs().is_some() {
            ops.push(raft_log::record_op(&self.record));
        }
        let (number, must_sync) = (ready.number(), ready.must_sync());
        let messages = ready.take_persisted_messages();
        self.node.advance_append_async(ready);
        let write = (self.role == Role::Disk && !ops.is_empty()).then(|| {
            self.store.submit(if must_sync {
                Batch::durable(ops)
            } else {
                Batch::non_durable(ops)
            })
        });
        self.pipeline.push_back(Unpersisted {
            number,
            messages,
            done: write.is_none(),
        });
        match write {
            Some(commit) => {
                let me = self.myself.clone();
                tokio::spawn(async move {
                    let result = commit.await.map_err(|e| e.to_string());
                    let _ = me.cast(ReplicaMsg::local(LocalReplica::Persisted(number, result)));
                });
            }
            None => self.release(),
        }
        Ok(())
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
        for u in self.pipeline.iter_mut().take_while(|u| u.number <= number) {
            u.done = true;
        }
        self.release();
        Ok(())
    }

    /// Tells Raft about the readies on disk, in order, and sends what waited for them.
    fn release(&mut self) {
        let mut last = None;
        let mut messages = Vec::new();
        while self.pipeline.front().is_some_and(|u| u.done) {
            if let Some(u) = self.pipeline.pop_front() {
                last = Some(u.number);
                messages.extend(u.messages);
            }
        }
        if let Some(number) = last {
            self.node.on_persist_ready(number);
            self.send(messages);
            self.advance_applied();
        }
    }

    fn hand_to_applier(&mut self, entries: Vec<Entry>) {
        if !entries.is_empty() {
            let _ = self.apply_tx.send(ApplyJob::Entries(entries));
        }
    }

    /// Takes what the applier reports.
    pub(super) fn applied(&mut self, report: Applied) -> Result<(), ActorProcessingErr> {
        match report {
            Applied::Upto {
                index,
                answers,
                conf_changes,
            } => {
                for entry in conf_changes {
                    self.apply_conf_change(&entry)?;
                }
                for (id, result) in answers {
                    self.proposals.answer(id, result);
                }
                if index > self.record.applied {
                    self.record.applied = index;
                    self.advance_applied();
                    if self.role == Role::Disk {
                        // Not fsynced: the next durable write carries it; at worst a few
                        // entries are applied again after a crash (applying is
                        // idempotent, and the filter skips proposals seen twice).
                        let record = vec![raft_log::record_op(&self.record)];
                        drop(self.store.submit(Batch::non_durable(record)));
                    }
                }
                self.barrier.applied(self.record.applied);
                self.maybe_snapshot();
            }
            Applied::Snapshot { index, data } => {
                self.snapshotting = false;
                match data {
                    Ok(data) => self.compact(index, data),
                    Err(e) => tracing::error!("taking a metadata snapshot: {e}"),
                }
            }
        }
        Ok(())
    }

    /// Tells Raft how far this node has applied (no further than what is on disk:
    /// a restored snapshot may finish before its write does).
    fn advance_applied(&mut self) {
        let log = &self.node.raft.raft_log;
        let limit = log.committed.min(log.persisted);
        let to = self.record.applied.min(limit);
        if to > log.applied {
            self.node.advance_apply_to(to);
        }
    }

    fn apply_conf_change(&mut self, entry: &Entry) -> Result<(), ActorProcessingErr> {
        let cc = ConfChange::parse_from_bytes(&entry.data)?;
        if let Ok(joiner) = warren_storage::codec::decode::<Joiner>(&entry.context) {
            self.record.names.insert(cc.node_id, joiner.name.clone());
            let what = match cc.get_change_type() {
                ConfChangeType::AddNode => "joined the metadata group as a voter",
                ConfChangeType::AddLearnerNode => "joined the metadata group as a learner",
                ConfChangeType::RemoveNode => "left the metadata group",
            };
            tracing::info!(member = %joiner.name, "{what}");
        }
        let cs = self.node.apply_conf_change(&cc)?;
        self.node.mut_store().set_conf_state(cs.clone());
        self.record.conf_state = cs.write_to_bytes()?;
        Ok(())
    }

    /// Asks the applier for a snapshot once enough was applied since the last one.
    fn maybe_snapshot(&mut self) {
        let last = self.node.store().latest_snapshot().get_metadata().index;
        if self.record.applied >= last + self.snapshot_every {
            self.take_snapshot();
        }
    }

    /// Asks the applier for a snapshot of what it has applied, unless one is on its
    /// way or nothing was applied since the last.
    fn take_snapshot(&mut self) {
        let last = self.node.store().latest_snapshot().get_metadata().index;
        if self.snapshotting || self.record.applied <= last {
            return;
        }
        self.snapshotting = true;
        let _ = self.apply_tx.send(ApplyJob::Snapshot {
            names: self.record.names.clone(),
            base_voters: self.record.base_voters.clone(),
        });
    }

    /// Stores the snapshot the applier took at `index` and compacts the log behind
    /// it. The members are this node's now: the applier reported everything up to
    /// `index` (membership changes included) and nothing after it yet.
    fn compact(&mut self, index: u64, data: Vec<u8>) {
        let store = self.node.store();
        let Some(term) = store.term_of(index) else {
            return;
        };
        if index <= store.latest_snapshot().get_metadata().index {
            return;
        }
        let mut snapshot = Snapshot {
            data: data.into(),
            ..Snapshot::default()
        };
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(self.conf_state());
        let size = snapshot.data.len();
        // A tail behind the snapshot for followers a little behind: an eighth of the
        // interval (1 024 entries by default).
        let keep = self.snapshot_every / 8;
        let keep_from = self.node.mut_store().compact(snapshot.clone(), keep);
        if self.role == Role::Disk {
            let ops = raft_log::compact_ops(&snapshot, keep_from);
            drop(self.store.submit(Batch::non_durable(ops)));
        }
        tracing::debug!(
            index,
            bytes = size,
            kept = self.node.store().len(),
            "took a metadata snapshot and compacted the log"
        );
    }

    /// Takes a snapshot from the leader: the log is replaced by it, and the applier
    /// makes the broker state the snapshot's.
    fn install(
        &mut self,
        snapshot: Snapshot,
        ops: &mut Vec<warren_storage::Op>,
    ) -> Result<(), ActorProcessingErr> {
        let data = SnapshotData::decode(&snapshot.data)?;
        let meta = snapshot.get_metadata();
        tracing::info!(
            index = meta.index,
            bytes = snapshot.data.len(),
            "installing a metadata snapshot from the leader"
        );
        for (id, name) in &data.names {
            self.record.names.insert(*id, name.clone());
        }
        if !data.base_voters.is_empty() {
            self.record.base_voters = data.base_voters.clone();
        }
        self.record.conf_state = meta.get_conf_state().write_to_bytes()?;
        let index = meta.index;
        self.node.mut_store().install(snapshot.clone());
        ops.extend(raft_log::install_ops(&snapshot));
        let _ = self.apply_tx.send(ApplyJob::Restore { index, data });
        Ok(())
    }

    /// Sends Raft messages to their replicas, batched per peer (see
    /// [`transport`]). A snapshot counts as delivered once sent: if it is lost, the
    /// follower's next answer shows it and the leader sends it again.
    pub(super) fn send(&mut self, messages: Vec<Message>) {
        let mut by_peer: std::collections::BTreeMap<u64, Vec<Vec<u8>>> = Default::default();
        for m in messages {
            if m.get_msg_type() == raft::prelude::MessageType::MsgSnapshot {
                // Reported to Raft once the ready is handled (see `on_ready`).
                self.sent_snapshots.push(m.to);
            }
            if let Ok(bytes) = m.write_to_bytes() {
                by_peer.entry(m.to).or_default().push(bytes);
            }
        }
        for (to, batch) in by_peer {
            let Some(name) = self.record.names.get(&to) else {
                continue;
            };
            let Some(peer) = replica_of(name) else {
                continue;
            };
            let me = (self.id, self.name.as_str());
            for cast in transport::casts(batch, me, &mut self.big_seq) {
                let _ = match cast {
                    Cast::Batch(b) => peer.cast(ReplicaMsg::Raft((self.name.clone(), b).into())),
                    Cast::Part(p) => peer.cast(ReplicaMsg::RaftPart(p.into())),
                };
            }
        }
    }
}
