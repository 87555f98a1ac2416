//! One Raft group's driver, without I/O: what the metadata replica (group 0) runs, and
//! what the groups of mirrored queues will run. A shell (an actor) feeds it messages,
//! ticks and proposals, and performs what it asks for ([`Effects`]): messages to send,
//! writes to the node's store (by group id, through the group-commit writer),
//! committed entries to apply, a snapshot from the leader to restore. So the same
//! driver runs under an actor, under a test, or in a simulation.
//!
//! Readies are pipelined: a ready's messages go out at once (a leader replicates while
//! it writes, Raft thesis 10.2.1); its entries and hard state become a [`Write`] whose
//! completion the shell reports with [`RaftGroup::persisted`]; only then does Raft hear
//! that they are durable, and do the messages that promise durability (votes, append
//! answers) go out. Readies complete in order (the writer commits in order); a ready
//! with nothing to write waits for the ones before it. Committed entries go to the
//! shell's applier, which reports how far it got ([`RaftGroup::applied`]); Raft hears
//! no further than what is on disk.

use std::collections::VecDeque;

use protobuf::Message as _;
use raft::prelude::{ConfChange, ConfChangeType, Entry, Message, ReadState, Snapshot};
use raft::{RawNode, StateRole};
use serde::{Deserialize, Serialize};
use warren_storage::Op;

use crate::log_store::LogStore;
use crate::raft_log::{self, RaftRecord};

/// A Raft group's id: its key in the node's `replication.log` (0: the metadata).
pub type GroupId = u64;

/// Who joins or leaves: the context of a membership change entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Joiner {
    /// The member's node name.
    pub name: String,
}

/// A write the group asks for.
#[derive(Debug)]
pub struct Write {
    /// The ready it belongs to: report its completion with [`RaftGroup::persisted`].
    /// `None`: nothing waits for it (the applied index, a compaction).
    pub ready: Option<u64>,
    /// What to write.
    pub ops: Vec<Op>,
    /// Fsynced before it completes.
    pub durable: bool,
}

/// What the group asks its shell to do, in order.
#[derive(Debug, Default)]
pub struct Effects {
    /// Raft messages to send (addressed by Raft id).
    pub messages: Vec<Message>,
    /// Writes to submit, in this order.
    pub writes: Vec<Write>,
    /// What to apply, in log order.
    pub apply: Vec<ToApply>,
    /// Answers to read-index questions.
    pub reads: Vec<ReadState>,
    /// Raft wants a newer snapshot than the latest (for a member it does not name):
    /// take one.
    pub snapshot_wanted: bool,
}

/// What the state machine is to apply, in log order.
#[derive(Debug)]
pub enum ToApply {
    /// Committed entries.
    Entries(Vec<Entry>),
    /// A snapshot from the leader: the state machine becomes the snapshot's.
    Snapshot(Snapshot),
}

/// A ready handed to Raft but not yet on disk.
#[derive(Debug)]
struct Unpersisted {
    number: u64,
    /// Sent once this ready (and every one before) is on disk.
    messages: Vec<Message>,
    done: bool,
}

/// One member of one Raft group (see the module documentation).
pub struct RaftGroup {
    /// The group's id.
    pub id: GroupId,
    /// Raft itself.
    pub node: RawNode<LogStore>,
    /// The group's state record (index 0 of its log).
    pub record: RaftRecord,
    /// Whether the log is written to the store (disk nodes) or kept in memory only.
    durable: bool,
    /// Whether the applied index is stored as it moves (not for a machine that starts
    /// empty at every start and applies its log again: its applied index is not read).
    pub store_applied: bool,
    pipeline: VecDeque<Unpersisted>,
    /// Snapshots sent in the ready being handled, reported to Raft after it.
    sent_snapshots: Vec<u64>,
    /// The commit index this leader last told its followers.
    pinged_commit: u64,
    /// Answers made here rather than by Raft (see [`RaftGroup::step`]), sent with the
    /// next [`RaftGroup::advance`].
    answers: Vec<Message>,
}

/// Why the driver stopped: the shell starts the group again from its store.
#[derive(Debug, thiserror::Error)]
#[error("raft group {group}: {what}")]
pub struct GroupError {
    /// The group.
    pub group: GroupId,
    /// What went wrong.
    pub what: String,
}

impl RaftGroup {
    /// A driver around `node`, whose state record is `record`.
    pub fn new(id: GroupId, node: RawNode<LogStore>, record: RaftRecord, durable: bool) -> Self {
        RaftGroup {
            id,
            node,
            record,
            durable,
            store_applied: true,
            pipeline: VecDeque::new(),
            sent_snapshots: Vec::new(),
            pinged_commit: 0,
            answers: Vec::new(),
        }
    }

    fn error(&self, what: impl std::fmt::Display) -> GroupError {
        GroupError {
            group: self.id,
            what: what.to_string(),
        }
    }

    /// Handles every ready Raft has. A leader whose commit index moved tells the
    /// followers at once (a heartbeat carries the commit index), so that every node
    /// applies a change within a round trip rather than at the next heartbeat.
    pub fn advance(&mut self, out: &mut Effects) -> Result<(), GroupError> {
        out.messages.append(&mut self.answers);
        loop {
            while self.node.has_ready() {
                self.ready_once(out)?;
            }
            if self.node.store().take_wanted() {
                out.snapshot_wanted = true;
            }
            if !self.sent_snapshots.is_empty() {
                // A snapshot counts as delivered once sent: if it is lost, the
                // follower's next answer shows it and the leader sends it again.
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

    fn ready_once(&mut self, out: &mut Effects) -> Result<(), GroupError> {
        let mut ready = self.node.ready();
        self.sending(out, ready.take_messages());
        out.reads.extend(ready.take_read_states());
        let mut ops = Vec::new();
        if !ready.snapshot().is_empty() {
            let mut snapshot = ready.snapshot().clone();
            // The entries its state needs came with it: stored as the log behind it.
            let (data, kept) =
                crate::replica::take_entries(&snapshot.data).map_err(|e| self.error(e))?;
            let index = snapshot.get_metadata().index;
            if !kept.is_empty() && !crate::log_store::leads_up_to(&kept, index) {
                // Never stored: the entries would not be the log behind the snapshot.
                return Err(self.error(format!(
                    "a snapshot at {index} came with entries that do not lead up to it"
                )));
            }
            snapshot.data = data.into();
            let cs = snapshot.get_metadata().get_conf_state();
            self.record.conf_state = cs.write_to_bytes().map_err(|e| self.error(e))?;
            ops.extend(raft_log::install_ops(self.id, &snapshot, &kept));
            self.node.mut_store().install(snapshot.clone(), kept);
            out.apply.push(ToApply::Snapshot(snapshot));
        }
        let committed = ready.take_committed_entries();
        if !committed.is_empty() {
            out.apply.push(ToApply::Entries(committed));
        }
        if !ready.entries().is_empty() {
            ops.extend(raft_log::append_ops(self.id, ready.entries()));
            self.node
                .mut_store()
                .append(ready.entries())
                .map_err(|e| self.error(e))?;
        }
        if let Some(hs) = ready.hs() {
            self.node.mut_store().set_hard_state(hs.clone());
            self.record.hard_state = hs.write_to_bytes().map_err(|e| self.error(e))?;
        }
        if !ops.is_empty() || ready.hs().is_some() {
            ops.push(raft_log::record_op(self.id, &self.record));
        }
        let (number, must_sync) = (ready.number(), ready.must_sync());
        let messages = ready.take_persisted_messages();
        self.node.advance_append_async(ready);
        let write = self.durable && !ops.is_empty();
        self.pipeline.push_back(Unpersisted {
            number,
            messages,
            done: !write,
        });
        if write {
            out.writes.push(Write {
                ready: Some(number),
                ops,
                durable: must_sync,
            });
        } else {
            self.release(out);
        }
        Ok(())
    }

    /// The write of ready `number` completed: it and every ready before it are on
    /// disk (the writer commits in order). Handles what that lets Raft do.
    pub fn persisted(&mut self, number: u64, out: &mut Effects) -> Result<(), GroupError> {
        for u in self.pipeline.iter_mut().take_while(|u| u.number <= number) {
            u.done = true;
        }
        self.release(out);
        self.advance(out)
    }

    /// Tells Raft about the readies on disk, in order, and sends what waited for them.
    fn release(&mut self, out: &mut Effects) {
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
            let persisted = self.node.raft.raft_log.persisted;
            self.node.mut_store().written(persisted);
            self.sending(out, messages);
            self.advance_applied();
        }
    }

    fn sending(&mut self, out: &mut Effects, messages: Vec<Message>) {
        for m in &messages {
            if m.get_msg_type() == raft::prelude::MessageType::MsgSnapshot {
                self.sent_snapshots.push(m.to);
            }
        }
        out.messages.extend(messages);
    }

    /// The applier applied everything up to `index` (membership changes among them
    /// are applied with [`RaftGroup::apply_conf_change`] first). Stores the applied
    /// index without an fsync: at worst a few entries are applied again after a
    /// crash.
    pub fn applied(&mut self, index: u64, out: &mut Effects) {
        if index <= self.record.applied {
            return;
        }
        self.record.applied = index;
        self.advance_applied();
        if self.durable && self.store_applied {
            out.writes.push(Write {
                ready: None,
                ops: vec![raft_log::record_op(self.id, &self.record)],
                durable: false,
            });
        }
    }

    /// Raft hears how far the group has applied, no further than what is on disk (a
    /// restored snapshot may finish before its write does).
    fn advance_applied(&mut self) {
        let log = &self.node.raft.raft_log;
        let limit = log.committed.min(log.persisted);
        let to = self.record.applied.min(limit);
        if to > log.applied {
            self.node.advance_apply_to(to);
        }
    }

    /// Applies a membership change entry to Raft, at its place in the log; returns who
    /// joined or left and how, for the log.
    pub fn apply_conf_change(
        &mut self,
        entry: &Entry,
    ) -> Result<Option<(String, ConfChangeType)>, GroupError> {
        let cc = ConfChange::parse_from_bytes(&entry.data).map_err(|e| self.error(e))?;
        let joiner = warren_storage::codec::decode::<Joiner>(&entry.context).ok();
        if let Some(joiner) = &joiner {
            self.record.names.insert(cc.node_id, joiner.name.clone());
        }
        let cs = self
            .node
            .apply_conf_change(&cc)
            .map_err(|e| self.error(e))?;
        self.node.mut_store().set_conf_state(cs.clone());
        self.record.conf_state = cs.write_to_bytes().map_err(|e| self.error(e))?;
        Ok(joiner.map(|j| (j.name, cc.get_change_type())))
    }

    /// Hands Raft a message from a member, mending first what raft-rs cannot take
    /// from a member whose log went while the leader still counted it (its replica
    /// removed from the queue and added again before the leader saw it leave: the
    /// same Raft id, an empty log):
    /// - as that member, a heartbeat whose commit index is beyond its log (raft-rs
    ///   would panic): it keeps its own commit index, and answers as to an append it
    ///   refuses, with its last index as the hint (a heartbeat's answer tells the
    ///   leader nothing of the log, and an idle leader would send none);
    /// - as the leader, a refused append whose hint is below what that member was
    ///   known to hold: raft-rs takes it for a stale answer and, replicating, would
    ///   never send that member its log again. The leader forgets what it believed
    ///   the member holds and probes it from the refused index, as Raft does a
    ///   member it knows nothing of.
    ///
    /// A sound member never answers either way: what it matched stays in its log.
    pub fn step(&mut self, mut m: Message) -> raft::Result<()> {
        use raft::prelude::MessageType;
        use raft::ProgressState;
        let mut refusal = None;
        match m.get_msg_type() {
            MessageType::MsgHeartbeat if m.commit > self.node.raft.raft_log.last_index() => {
                let log = &self.node.raft.raft_log;
                let last = log.last_index();
                tracing::warn!(group = self.id, commit = m.commit, last, "the leader believes this member holds more than its log: it takes the log again");
                refusal = Some(Message {
                    msg_type: MessageType::MsgAppendResponse,
                    to: m.from,
                    from: self.node.raft.id,
                    index: m.commit,
                    reject: true,
                    reject_hint: last,
                    log_term: log.term(last).unwrap_or(0),
                    ..Message::default()
                });
                // (Never more than this member knows committed: a clamp to its last
                // index would commit entries it may not share.)
                m.commit = log.committed;
            }
            MessageType::MsgAppendResponse
                if m.reject
                    && m.request_snapshot == raft::INVALID_INDEX
                    && self.node.raft.state == StateRole::Leader =>
            {
                if let Some(pr) = self.node.raft.mut_prs().get_mut(m.from) {
                    if m.reject_hint < pr.matched && pr.state != ProgressState::Snapshot {
                        tracing::warn!(group = self.id, member = m.from, matched = pr.matched, last = m.reject_hint, "a member holds less than it had matched (its log went): the leader sends it the log again");
                        pr.matched = 0;
                        pr.become_probe();
                        // The refusal is then the answer to the probe.
                        pr.next_idx = m.index + 1;
                    }
                }
            }
            _ => {}
        }
        let result = self.node.step(m);
        if let Some(refusal) = refusal {
            // To the leader the heartbeat came from, in the term it made this member's.
            if self.node.raft.leader_id == refusal.to {
                self.answers.push(Message {
                    term: self.node.raft.term,
                    ..refusal
                });
            }
        }
        result
    }

    /// Stores `data`, a snapshot of the state machine at `index` taken by the shell,
    /// and compacts the log behind it, keeping `keep` entries. The members are the
    /// group's now: the shell took it when its applier had reported everything up to
    /// `index` (membership changes included) and nothing after it yet.
    /// None of the entries from `needed_from` on are dropped (the state needs them).
    pub fn compact(
        &mut self,
        index: u64,
        data: Vec<u8>,
        keep: u64,
        needed_from: Option<u64>,
        out: &mut Effects,
    ) {
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
        meta.set_conf_state(self.node.raft.prs().conf().to_conf_state());
        let keep_from = self
            .node
            .mut_store()
            .compact(snapshot.clone(), keep, needed_from);
        if self.durable {
            out.writes.push(Write {
                ready: None,
                ops: raft_log::compact_ops(self.id, &snapshot, keep_from),
                durable: false,
            });
        }
    }

    /// A leader with nothing in flight: every entry is on its disk, committed,
    /// applied here and matched by every member; no membership change, leader
    /// transfer or read-index question is pending; the followers were told the commit
    /// index. Such a group can stop ticking until something happens (see the
    /// replica's quiescence).
    pub fn settled(&self) -> bool {
        let raft = &self.node.raft;
        let log = &raft.raft_log;
        let last = log.last_index();
        raft.state == raft::StateRole::Leader
            && self.pipeline.is_empty()
            && log.persisted == last
            && log.committed == last
            && self.record.applied == last
            && self.pinged_commit >= last
            && raft.pending_conf_index <= last
            && raft.lead_transferee.is_none()
            && raft.pending_read_count() == 0
            && raft.prs().iter().all(|(_, p)| p.matched == last)
    }

    /// The index of the latest snapshot (0: none yet).
    pub fn snapshot_index(&self) -> u64 {
        self.node.store().latest_snapshot().get_metadata().index
    }
}

#[cfg(test)]
mod tests {
    //! Three nodes, each running two groups of the same three voters with one ticker,
    //! the messages of both groups between two nodes sent as one batch, and writes
    //! completing in order a moment later: both groups elect, commit and apply the
    //! same entries everywhere.

    use std::collections::BTreeMap;

    use raft::prelude::{ConfState, HardState};

    use super::*;

    const GROUPS: [GroupId; 2] = [0, 7];

    struct Node {
        groups: BTreeMap<GroupId, RaftGroup>,
        /// Applied entries' data, per group.
        applied: BTreeMap<GroupId, Vec<Vec<u8>>>,
        /// Writes submitted and not yet completed: (group, ready number).
        writing: Vec<(GroupId, u64)>,
    }

    fn group(id: u64, g: GroupId) -> RaftGroup {
        let cs = ConfState {
            voters: vec![1, 2, 3],
            ..ConfState::default()
        };
        let log = LogStore::restored(HardState::default(), cs, None, Vec::new());
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let node = RawNode::new(&crate::replica::raft_config(id, 0), log, &logger).unwrap();
        RaftGroup::new(g, node, RaftRecord::default(), true)
    }

    /// Performs `out` for group `g` of node `n`: messages into the outbox (by node
    /// pair, whatever the group), writes remembered, entries applied.
    fn perform(
        nodes: &mut [Node],
        n: usize,
        g: GroupId,
        out: Effects,
        outbox: &mut BTreeMap<(u64, u64), Vec<(GroupId, Message)>>,
    ) {
        for m in out.messages {
            outbox.entry((m.from, m.to)).or_default().push((g, m));
        }
        for w in out.writes {
            assert!(w.ops.iter().all(|op| match op {
                Op::PutLogRecord { group, .. } | Op::TruncateLog { group, .. } => *group == g,
                _ => true,
            }));
            if let Some(number) = w.ready {
                nodes[n].writing.push((g, number));
            }
        }
        let mut last = None;
        for job in out.apply {
            if let ToApply::Entries(entries) = job {
                for e in entries {
                    if !e.data.is_empty() {
                        nodes[n].applied.entry(g).or_default().push(e.data.to_vec());
                    }
                    last = Some(e.index);
                }
            }
        }
        if let Some(index) = last {
            let mut more = Effects::default();
            nodes[n]
                .groups
                .get_mut(&g)
                .unwrap()
                .applied(index, &mut more);
            perform(nodes, n, g, more, outbox);
        }
    }

    type Outbox = BTreeMap<(u64, u64), Vec<(GroupId, Message)>>;

    fn nodes(groups: &[GroupId]) -> Vec<Node> {
        (1..=3)
            .map(|id| Node {
                groups: groups.iter().map(|g| (*g, group(id, *g))).collect(),
                applied: BTreeMap::new(),
                writing: Vec::new(),
            })
            .collect()
    }

    /// One round: the writes of the last round complete, every group ticks (while
    /// `proposing`, a leader proposes every tenth round), and what was sent is
    /// delivered, one batch per node pair (what is sent meanwhile goes with the next
    /// round, in `carried`).
    /// Returns how many batches carried more than one group's messages.
    fn round(
        nodes: &mut [Node],
        round: u64,
        proposing: bool,
        proposed: &mut BTreeMap<GroupId, Vec<Vec<u8>>>,
        carried: &mut Outbox,
    ) -> usize {
        let mut outbox = std::mem::take(carried);
        for n in 0..nodes.len() {
            for (g, number) in std::mem::take(&mut nodes[n].writing) {
                let mut out = Effects::default();
                let group = nodes[n].groups.get_mut(&g).unwrap();
                group.persisted(number, &mut out).unwrap();
                perform(nodes, n, g, out, &mut outbox);
            }
            // One ticker for every group of the node.
            let groups: Vec<GroupId> = nodes[n].groups.keys().copied().collect();
            for g in groups {
                let mut out = Effects::default();
                let group = nodes[n].groups.get_mut(&g).unwrap();
                group.node.tick();
                if proposing && round % 10 == 9 && group.node.raft.state == StateRole::Leader {
                    let data = format!("g{g}-{round}").into_bytes();
                    if group.node.propose(Vec::new(), data.clone()).is_ok() {
                        proposed.entry(g).or_default().push(data);
                    }
                }
                group.advance(&mut out).unwrap();
                perform(nodes, n, g, out, &mut outbox);
            }
        }
        let mut mixed_batches = 0;
        for ((_, to), batch) in outbox {
            let groups: std::collections::BTreeSet<GroupId> =
                batch.iter().map(|(g, _)| *g).collect();
            if groups.len() > 1 {
                mixed_batches += 1;
            }
            let n = (to - 1) as usize;
            for (g, m) in batch {
                let mut out = Effects::default();
                let group = nodes[n].groups.get_mut(&g).unwrap();
                let _ = group.step(m);
                group.advance(&mut out).unwrap();
                perform(nodes, n, g, out, carried);
            }
        }
        mixed_batches
    }

    #[test]
    fn groups_addressed_by_id_share_a_ticker_and_one_batch_per_node_pair() {
        let mut nodes = nodes(&GROUPS);
        let mut proposed: BTreeMap<GroupId, Vec<Vec<u8>>> = BTreeMap::new();
        let mut mixed_batches = 0;
        let mut carried = Outbox::new();
        for r in 0..400 {
            mixed_batches += round(&mut nodes, r, true, &mut proposed, &mut carried);
        }
        for g in GROUPS {
            let leaders = nodes
                .iter()
                .filter(|n| n.groups[&g].node.raft.state == StateRole::Leader)
                .count();
            assert_eq!(leaders, 1, "group {g}");
            let want = &proposed[&g];
            assert!(
                want.len() >= 20,
                "group {g} committed too little: {}",
                want.len()
            );
            for (i, node) in nodes.iter().enumerate() {
                let got = node.applied.get(&g).cloned().unwrap_or_default();
                // The last proposals may still be on their way.
                assert!(
                    got.len() + 2 >= want.len(),
                    "node {i} group {g}: {} of {}",
                    got.len(),
                    want.len()
                );
                assert_eq!(&want[..got.len()], &got[..], "node {i} group {g}");
            }
        }
        assert!(mixed_batches > 0, "no batch carried two groups' messages");
    }

    /// A member whose log went while the leader still counted it (removed from a
    /// queue and added again before the leader saw it leave) starts again with an
    /// empty log under the same id. The leader's belief that it holds the log made
    /// raft-rs take its refusals for stale answers: once a probe's append (one
    /// message of at most 1 MiB) left it short of what it had matched, an idle group
    /// never sent it the rest. It now gets the whole log.
    #[test]
    fn a_member_whose_log_went_gets_it_again() {
        let g = 7;
        let mut nodes = nodes(&[g]);
        let mut proposed = BTreeMap::new();
        let mut carried = Outbox::new();
        for r in 0..100 {
            round(&mut nodes, r, true, &mut proposed, &mut carried);
        }
        let leader = nodes
            .iter()
            .position(|n| n.groups[&g].node.raft.state == StateRole::Leader)
            .expect("a leader");
        // Entries of 300 KB: the log takes several messages to send.
        for i in 0..12u8 {
            let data = vec![i; 300 << 10];
            let group = nodes[leader].groups.get_mut(&g).unwrap();
            group.node.propose(Vec::new(), data.clone()).unwrap();
            proposed.entry(g).or_default().push(data);
        }
        for r in 100..200 {
            round(&mut nodes, r, false, &mut proposed, &mut carried);
        }
        let lost = (leader + 1) % nodes.len();
        let id = lost as u64 + 1;
        let last = |n: &Node| n.groups[&g].node.raft.raft_log.last_index();
        let matched = nodes[leader].groups[&g]
            .node
            .raft
            .prs()
            .get(id)
            .unwrap()
            .matched;
        assert_eq!(matched, last(&nodes[leader]), "the member had it all");
        // Its log goes: a new run of the group, empty, with the same id; the group
        // stays idle.
        nodes[lost].groups.insert(g, group(id, g));
        nodes[lost].writing.clear();
        nodes[lost].applied.clear();
        for r in 200..400 {
            round(&mut nodes, r, false, &mut proposed, &mut carried);
        }
        assert_eq!(last(&nodes[lost]), last(&nodes[leader]));
        assert_eq!(nodes[lost].applied[&g], proposed[&g]);
    }
}
