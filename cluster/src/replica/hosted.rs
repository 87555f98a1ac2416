//! One Raft group as the replica runs it: the group's driver ([`RaftGroup`]), the
//! proposals made on this node, who waits to catch up with the leader, and the
//! shell that performs what the driver asks for ([`Effects`]): Raft messages into the
//! node's [`Outbox`], writes to the node's group-commit writer (a write's completion
//! comes back as [`Persisted`](super::LocalReplica::Persisted)), committed entries
//! and snapshots from the leader to the group's applier task ([`super::applying`]),
//! snapshots when due.

use std::time::{Duration, Instant};

use ractor::ActorRef;
use raft::prelude::{ConfChangeType, ConfState, Snapshot};
use tokio::sync::{mpsc, oneshot, watch};
use warren_storage::{Batch, Store};

use super::applying::{Applied, ApplyJob};
use super::barrier::Barrier;
use super::outbox::Outbox;
use super::proposals::{Proposals, Reply};
use super::snapshot::SnapshotData;
use super::transport::Quiet;
use super::{
    broker_error, GroupRun, LocalReplica, ReplicaMsg, Seat, CATCH_UP_WAIT, COMMIT_TIMEOUT,
};
use crate::raft_group::{Effects, GroupError, RaftGroup, ToApply, Write};

/// What the shell of every group on the node shares: the store, the replica itself
/// (where write completions are reported) and the outbox.
pub(super) struct Io<'a> {
    pub store: &'a Store,
    pub myself: &'a ActorRef<ReplicaMsg>,
    pub outbox: &'a mut Outbox,
}

/// One group on this node.
pub(super) struct Hosted {
    /// The group's driver: Raft, the log, the state record.
    pub group: RaftGroup,
    /// Which run of the group this is ([`super::GroupRun`]).
    pub run: u64,
    /// What the group is called in errors and logs ("metadata", "queue 'q' …").
    pub label: String,
    /// Who its voters are, in errors ("disk nodes", "replicas").
    pub voters: String,
    /// Whether its log is kept on disk (the metadata's on a RAM node is not).
    pub durable: bool,
    /// Entries applied between two snapshots (at least).
    pub snapshot_every: u64,
    /// This node's proposals not applied yet.
    pub proposals: Proposals,
    /// Who waits to catch up with the leader.
    pub barrier: Barrier,
    /// Where committed entries go to be applied.
    pub apply_tx: mpsc::UnboundedSender<ApplyJob>,
    /// A snapshot is being taken.
    pub snapshotting: bool,
    /// Since when this node has known no leader of the group.
    pub leaderless_since: Option<Instant>,
    /// The (term, leader) the proposals and the barrier last saw.
    pub seen_leader: (u64, u64),
    /// May stop ticking when settled (every group but the metadata's).
    pub may_quiesce: bool,
    /// Not ticking: settled, until anything happens in the group.
    pub quiet: bool,
    /// Ticks in a row this leader found the group settled.
    settled_ticks: u32,
    /// The group's term and leader, for whoever watches them on this node
    /// ([`super::ReplicaHandle::watch`]).
    pub seat: watch::Sender<Seat>,
    /// Opened with an empty log as a new member, not yet following a leader.
    pub joining: bool,
}

/// Ticks in a row a leader finds its group settled before it goes quiet (the
/// followers have heard the commit index by then).
const SETTLED_TICKS: u32 = 3;

impl Hosted {
    /// A group driven by `group`, applied by the task behind `apply_tx`.
    pub fn new(
        group: RaftGroup,
        run: u64,
        (label, voters): (String, String),
        durable: bool,
        snapshot_every: u64,
        apply_tx: mpsc::UnboundedSender<ApplyJob>,
    ) -> Hosted {
        Hosted {
            group,
            run,
            label,
            voters,
            durable,
            snapshot_every: snapshot_every.max(1),
            proposals: Proposals::default(),
            barrier: Barrier::default(),
            apply_tx,
            snapshotting: false,
            leaderless_since: None,
            seen_leader: (0, 0),
            may_quiesce: false,
            quiet: false,
            settled_ticks: 0,
            seat: watch::Sender::new(Seat::default()),
            joining: false,
        }
    }

    /// Something happens in the group: it ticks again.
    pub fn wake(&mut self) {
        self.quiet = false;
        self.settled_ticks = 0;
    }

    /// The leader's node is down: this follower ticks again and campaigns at its next
    /// tick, without waiting out an election timeout (it heard nothing for as long as
    /// it was quiet).
    pub fn leader_lost(&mut self) {
        self.wake();
        let raft = &mut self.group.node.raft;
        if raft.state != raft::StateRole::Leader {
            raft.election_elapsed = raft.randomized_election_timeout();
        }
    }

    /// After a tick: a leader whose group stayed settled goes quiet, and returns the
    /// word for its followers.
    pub fn try_quiesce(&mut self) -> Option<Quiet> {
        if !self.may_quiesce || self.quiet {
            return None;
        }
        let idle = self.proposals.is_empty() && self.barrier.is_idle() && !self.snapshotting;
        if !(idle && self.group.settled()) {
            self.settled_ticks = 0;
            return None;
        }
        self.settled_ticks += 1;
        if self.settled_ticks < SETTLED_TICKS {
            return None;
        }
        self.quiet = true;
        let raft = &self.group.node.raft;
        Some(Quiet {
            group: self.group.id,
            term: raft.term,
            leader: raft.id,
            index: raft.raft_log.last_index(),
        })
    }

    /// The followers of the group (their Raft ids).
    pub fn followers(&self) -> Vec<u64> {
        let me = self.id();
        self.group
            .node
            .raft
            .prs()
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| *id != me)
            .collect()
    }

    /// The leader's word that the group is settled: this follower goes quiet if it
    /// holds the same.
    pub fn hear_quiet(&mut self, word: Quiet) {
        let raft = &self.group.node.raft;
        let log = &raft.raft_log;
        let same = self.may_quiesce
            && raft.state == raft::StateRole::Follower
            && raft.term == word.term
            && raft.leader_id == word.leader
            && log.last_index() == word.index
            && log.committed == word.index
            && self.proposals.is_empty()
            && self.barrier.is_idle();
        if same {
            self.quiet = true;
        }
    }

    /// This node's Raft id in the group.
    pub fn id(&self) -> u64 {
        self.group.node.raft.id
    }

    /// The group's leader's Raft id (0: none known).
    pub fn leader_id(&self) -> u64 {
        self.group.node.raft.leader_id
    }

    pub fn conf_state(&self) -> ConfState {
        self.group.node.raft.prs().conf().to_conf_state()
    }

    /// Whether this node knows the group's members.
    pub fn initialized(&self) -> bool {
        self.group.node.raft.prs().iter().len() > 0
    }

    /// Whether this node is a member of the group.
    pub fn joined(&self) -> bool {
        self.group.node.raft.prs().get(self.id()).is_some()
    }

    pub fn name_of(&self, id: u64) -> String {
        self.group
            .record
            .names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("#{id:x}"))
    }

    /// The names of the group's members, voters first.
    pub fn member_names(&self) -> Vec<String> {
        let cs = self.conf_state();
        cs.voters
            .iter()
            .chain(cs.learners.iter())
            .map(|id| self.name_of(*id))
            .collect()
    }

    pub fn leader(&self) -> Option<String> {
        let lead = self.leader_id();
        (lead != 0).then(|| self.name_of(lead))
    }

    /// This node's log of the group.
    pub fn log_info(&self) -> crate::protocol::MetadataLog {
        let store = self.group.node.store();
        crate::protocol::MetadataLog {
            applied: self.group.record.applied,
            committed: self.group.node.raft.raft_log.committed,
            first: store.first(),
            last: store.last(),
            snapshot: store.latest_snapshot().get_metadata().index,
        }
    }

    /// Hands Raft a message from the peer on node `sender`.
    pub fn step(&mut self, sender: &str, bytes: &[u8]) {
        match <raft::prelude::Message as protobuf::Message>::parse_from_bytes(bytes) {
            // For an earlier incarnation of this (RAM) node.
            Ok(m) if m.to != self.id() => {}
            Ok(m) => {
                // Anything but the answer to a heartbeat is news: a quiet group ticks
                // again.
                if m.get_msg_type() != raft::prelude::MessageType::MsgHeartbeatResponse {
                    self.wake();
                }
                // A member this node has not seen join yet (its entry is not applied
                // here, or not even here): known by name from now on, so that the
                // answer reaches it.
                self.group
                    .record
                    .names
                    .entry(m.from)
                    .or_insert_with(|| sender.to_string());
                if let Err(e) = self.group.step(m) {
                    tracing::debug!(group = self.group.id, "raft step: {e}");
                }
            }
            Err(e) => tracing::warn!(group = self.group.id, "a raft message did not decode: {e}"),
        }
    }

    /// Time passed: Raft's tick, expiry of proposals and of waits.
    pub fn tick(&mut self, node: &str, now: Instant) {
        // A member that joined with an empty log counts from the group's first
        // members, which may name it a voter (it was one before, and its log went):
        // it must not elect itself on that word, only follow a leader it hears from.
        if self.joining && self.leader_id() != 0 {
            self.joining = false;
        }
        if !self.joining {
            self.group.node.tick();
        }
        self.expire_pending(node, now);
        self.barrier.tick(now);
        // Counted from when the node is in its group: a node still joining has no
        // leader to lose.
        if self.leader_id() == 0 && self.joined() {
            self.leaderless_since.get_or_insert(now);
        } else {
            self.leaderless_since = None;
        }
        self.hand_over(now);
    }

    /// What waits may go when a new leader (or term) is known, and what was handed to
    /// the old leader may be lost.
    pub fn check_leader(&mut self, now: Instant) {
        let leader = (self.group.node.raft.term, self.leader_id());
        if leader != self.seen_leader {
            self.seen_leader = leader;
            self.hand_over(now);
            self.seat.send_replace(Seat {
                term: leader.0,
                leader: self.leader(),
            });
        }
    }

    /// Takes proposal `id` (its log entry built by [`entry::build`]) from a client on
    /// node `origin`; it is handed to Raft as soon as a leader is known.
    pub fn propose(&mut self, origin: &str, id: u64, entry: Vec<u8>, reply: Reply) {
        self.wake();
        let now = Instant::now();
        self.proposals.add(id, entry, reply, now);
        if self.alone(now) {
            self.expire_pending(origin, now);
            return;
        }
        self.hand_over(now);
    }

    /// Hands Raft the proposals that are due (see [`Proposals::due`]) and asks the
    /// leader's commit index for whoever waits to catch up, once this node is in the
    /// group and knows a leader.
    pub fn hand_over(&mut self, now: Instant) {
        if !self.joined() || self.leader_id() == 0 {
            return;
        }
        if !self.proposals.is_empty() {
            for data in self.proposals.due(self.group.node.raft.term, now) {
                if self.group.node.propose(Vec::new(), data).is_err() {
                    // No leader after all (it stepped down): due again with the next.
                    self.proposals.unsent();
                    break;
                }
            }
        }
        if let Some(ctx) = self.barrier.question(now) {
            self.group.node.read_index(ctx);
        }
    }

    /// `ready` is told `true` once this node has applied what the leader had
    /// committed by now; `false` at once when, a member of the group, it has been
    /// without a leader for longer than an election takes (a node still joining waits
    /// to join), or when it could not catch up within [`CATCH_UP_WAIT`].
    pub fn catch_up(&mut self, ready: oneshot::Sender<bool>) {
        self.wake();
        let now = Instant::now();
        if self.sole_voter_caught_up() {
            let _ = ready.send(true);
            return;
        }
        if self.alone(now) {
            let _ = ready.send(false);
            return;
        }
        self.barrier.wait(ready, now + CATCH_UP_WAIT);
        self.hand_over(now);
    }

    /// The group's only voter, which has applied everything it committed: nobody else
    /// can have committed anything (a single node, or learners only besides it).
    fn sole_voter_caught_up(&self) -> bool {
        let raft = &self.group.node.raft;
        raft.state == raft::StateRole::Leader
            && raft.prs().conf().voters().ids().iter().eq([self.id()])
            && self.group.record.applied >= raft.raft_log.committed
    }

    /// A member of the group without a leader for longer than an election takes: on
    /// the minority side of a partition, or the other voters are down.
    pub fn alone(&self, now: Instant) -> bool {
        self.joined()
            && self
                .leaderless_since
                .is_some_and(|since| now.duration_since(since) >= CATCH_UP_WAIT)
    }

    /// Fails the proposals that waited [`COMMIT_TIMEOUT`], and every one at once when
    /// this node is [alone](Self::alone).
    pub fn expire_pending(&mut self, node: &str, now: Instant) {
        let joined = self.joined();
        let leader = self.leader_id() != 0;
        let alone = self.alone(now);
        let limit = if alone {
            Duration::ZERO
        } else {
            COMMIT_TIMEOUT
        };
        let (what, voters) = (&self.label, &self.voters);
        self.proposals.expire(now, limit, |handed_over| {
            let secs = COMMIT_TIMEOUT.as_secs();
            broker_error(if alone {
                format!(
                    "{what} change refused: no {what} leader reachable from '{node}' for {} s (a minority side of a partition, or the other {voters} are down; see `warren cluster status`); reads are still served",
                    CATCH_UP_WAIT.as_secs()
                )
            } else if !joined {
                format!(
                    "{what} change refused: node '{node}' has not joined a cluster within {secs} s (see `warren cluster status`)"
                )
            } else if handed_over && leader {
                format!(
                    "{what} change not confirmed within {secs} s: no majority of {voters} reachable from '{node}' (see `warren cluster status`); it takes effect if the group commits it later"
                )
            } else {
                format!(
                    "{what} change refused: no {what} leader reachable from '{node}' within {secs} s (a minority side of a partition, or the other {voters} are down; see `warren cluster status`)"
                )
            })
        });
    }

    /// Handles every ready Raft has.
    pub fn advance(&mut self, io: &mut Io<'_>) -> Result<(), GroupError> {
        let mut out = Effects::default();
        self.group.advance(&mut out)?;
        self.perform(out, io)
    }

    /// The write of ready `number` completed: it and every ready before it are on
    /// disk (the writer commits in order).
    pub fn persisted(
        &mut self,
        number: u64,
        result: Result<(), String>,
        io: &mut Io<'_>,
    ) -> Result<(), GroupError> {
        if let Err(e) = result {
            // Raft must not go on as if it were written: start again from the store.
            return Err(GroupError {
                group: self.group.id,
                what: format!("writing the log failed: {e}"),
            });
        }
        let mut out = Effects::default();
        self.group.persisted(number, &mut out)?;
        self.perform(out, io)
    }

    fn perform(&mut self, out: Effects, io: &mut Io<'_>) -> Result<(), GroupError> {
        io.outbox
            .add(self.group.id, &self.group.record.names, out.messages);
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
            self.write(write, io);
        }
        if out.snapshot_wanted {
            self.take_snapshot();
        }
        Ok(())
    }

    fn write(&self, write: Write, io: &mut Io<'_>) {
        if !self.durable {
            return;
        }
        let batch = if write.durable {
            Batch::durable(write.ops)
        } else {
            Batch::non_durable(write.ops)
        };
        let commit = io.store.submit(batch);
        if let Some(number) = write.ready {
            let me = io.myself.clone();
            let run = GroupRun {
                group: self.group.id,
                run: self.run,
            };
            tokio::spawn(async move {
                let result = commit.await.map_err(|e| e.to_string());
                let _ = me.cast(ReplicaMsg::local(LocalReplica::Persisted(
                    run, number, result,
                )));
            });
        }
    }

    /// Takes what the applier reports.
    pub fn applied(&mut self, report: Applied, io: &mut Io<'_>) -> Result<(), GroupError> {
        let mut out = Effects::default();
        match report {
            Applied::Upto {
                index,
                answers,
                conf_changes,
                image_size,
            } => {
                for entry in conf_changes {
                    if let Some((member, change)) = self.group.apply_conf_change(&entry)? {
                        let what = match change {
                            ConfChangeType::AddNode => "joined as a voter",
                            ConfChangeType::AddLearnerNode => "joined as a learner",
                            ConfChangeType::RemoveNode => "left",
                        };
                        tracing::info!(member = %member, group = %self.label, "{what}");
                    }
                }
                for (id, result) in answers {
                    self.proposals.answer(id, result);
                }
                self.group.applied(index, &mut out);
                self.barrier.applied(self.group.record.applied);
                // Snapshots cost no more than 64 bytes per entry applied, however
                // big the state (a queue with a long backlog).
                let gap = self.snapshot_every.max(image_size / 64);
                if self.group.record.applied >= self.group.snapshot_index() + gap {
                    self.take_snapshot();
                }
            }
            Applied::Snapshot {
                index,
                data,
                needed_from,
            } => {
                self.snapshotting = false;
                match data {
                    Ok(data) => {
                        // A tail behind the snapshot for followers a little behind: an
                        // eighth of the interval (1 024 entries by default).
                        let keep = self.snapshot_every / 8;
                        self.group.compact(index, data, keep, needed_from, &mut out);
                        tracing::debug!(
                            group = %self.label,
                            index,
                            kept = self.group.node.store().len(),
                            "took a snapshot and compacted the log"
                        );
                    }
                    Err(e) => tracing::error!(group = %self.label, "taking a snapshot: {e}"),
                }
            }
        }
        self.perform(out, io)
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

    /// A snapshot from the leader replaced the log: the applier makes the machine's
    /// state the snapshot's.
    fn install(&mut self, snapshot: Snapshot) -> Result<(), GroupError> {
        let data = SnapshotData::decode(&snapshot.data).map_err(|what| GroupError {
            group: self.group.id,
            what,
        })?;
        let index = snapshot.get_metadata().index;
        tracing::info!(
            group = %self.label,
            index,
            bytes = snapshot.data.len(),
            "installing a snapshot from the leader"
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
}
