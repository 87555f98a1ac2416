//! One simulated member of the metadata group: the production driver
//! ([`RaftGroup`], group 0, durable) over its [`LogStore`], with raft-rs's `RawNode`
//! in the production configuration, the node's [`SimDisk`], the state machine, and its
//! clients' waiting proposals. The node is the driver's shell, as the real replica
//! (`replica/ready.rs`) is: after every event it lets the driver handle its readies and
//! performs the [`Effects`]: messages go out at once, writes go to the disk (their
//! completion, later, is reported with `persisted`), committed entries and snapshots
//! from the leader are applied (then `applied`), a snapshot is taken every so many
//! applied entries or when Raft wants one (`compact`, keeping a short tail).
//!
//! The state machine is not on disk: a node restarts from its latest snapshot and
//! applies the committed entries after it again (the real broker state is durable;
//! the applied index it starts from is then the snapshot's here).

use raft::prelude::{Entry, EntryType, Message};
use raft::{RawNode, StateRole};

use super::client::{Millis, Waiters};
use super::invariants::LogView;
use super::rng::{hash_bytes, timeout_for, SimRng};
use super::state_machine::{Applied, Command, Op, StateMachine};
use super::storage::{Lost, SimDisk};
use crate::log_store::LogStore;
use crate::raft_group::{Effects, RaftGroup, ToApply};
use crate::replica::raft_config;

/// The metadata group's id.
const GROUP: u64 = crate::raft_log::METADATA_GROUP;

/// What the checks are told about a node's step.
#[derive(Clone, Debug)]
pub(super) enum Seen {
    /// The node applied the entry at `index` (its term and the hash of its data).
    Applied {
        index: u64,
        term: u64,
        data: u64,
        outcome: Applied,
    },
    /// The node's state machine was replaced by a snapshot's image.
    Restored,
    /// A client of the node was told its command is committed.
    Answered(Command),
}

/// A node that runs.
pub(super) struct Running {
    pub(super) group: RaftGroup,
    pub(super) sm: StateMachine,
    waiters: Waiters,
    /// The (term, leader) proposals were last handed over with.
    seen_leader: (u64, u64),
    /// Seeds this incarnation's election timeouts.
    salt: u64,
    election_ticks: (usize, usize),
    /// Draws this incarnation's write latencies.
    rng: SimRng,
}

/// Where a node crashes while writes are under way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CrashPoint {
    /// Writes are pending (their readies' leader messages are out): nothing of them
    /// reaches the disk.
    BeforeWrite,
    /// The writes due are on disk, but the driver never hears it: the messages that
    /// needed them are not sent, nothing more is applied.
    AfterWrite,
}

/// How a node takes snapshots (drawn per run).
#[derive(Clone, Copy, Debug)]
pub(super) struct SnapshotPolicy {
    /// A snapshot once this many entries were applied since the latest.
    pub(super) every: u64,
    /// Entries kept behind it.
    pub(super) keep: u64,
}

/// A simulated node.
pub(super) struct SimNode {
    pub(super) index: usize,
    pub(super) id: u64,
    pub(super) incarnation: u64,
    /// The disk (all that survives a crash).
    pub(super) disk: SimDisk,
    running: Option<Box<Running>>,
    /// Raft messages to send (the world takes them after each step).
    pub(super) outbox: Vec<Message>,
    /// What the checks look at (the world takes it after each step).
    pub(super) seen: Vec<Seen>,
    /// When writes submitted in this step complete (the world schedules them).
    pub(super) writes_due: Vec<Millis>,
    /// Test-only damage: this node applies a command again when it is in the log
    /// twice (`Sabotage::ApplyDuplicates`).
    pub(super) no_dedupe: bool,
    pub(super) policy: SnapshotPolicy,
    /// The most a write takes to complete (simulated ms).
    pub(super) disk_latency: Millis,
    /// Snapshots this node took.
    pub(super) snapshots_taken: u64,
    /// Crashes that lost completed non-durable writes.
    pub(super) lost_unsynced: u64,
}

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

fn role_code(role: StateRole) -> u64 {
    match role {
        StateRole::Follower => 1,
        StateRole::Candidate => 2,
        StateRole::Leader => 3,
        StateRole::PreCandidate => 4,
    }
}

/// A log as the checks compare it.
fn view_of(store: &LogStore) -> LogView {
    let (first, last) = (store.first(), store.last());
    let entries = if last >= first {
        // (Every entry kept, the one Raft takes as its dummy included.)
        store
            .slice(first, last + 1, u64::MAX)
            .expect("the entries held")
    } else {
        Vec::new()
    };
    LogView {
        first,
        entries: entries
            .iter()
            .map(|e| (e.term, hash_bytes(&e.data)))
            .collect(),
    }
}

impl SimNode {
    /// A node that never ran, down until started.
    pub(super) fn new(
        index: usize,
        disk: SimDisk,
        policy: SnapshotPolicy,
        disk_latency: Millis,
    ) -> SimNode {
        SimNode {
            index,
            id: index as u64 + 1,
            incarnation: 0,
            disk,
            running: None,
            outbox: Vec::new(),
            seen: Vec::new(),
            writes_due: Vec::new(),
            no_dedupe: false,
            policy,
            disk_latency,
            snapshots_taken: 0,
            lost_unsynced: 0,
        }
    }

    pub(super) fn is_up(&self) -> bool {
        self.running.is_some()
    }

    pub(super) fn running(&self) -> Option<&Running> {
        self.running.as_deref()
    }

    /// Starts the node from its disk as the real replica starts (`pre_start`): the
    /// rows read back, the state machine and its filter from the stored snapshot, the
    /// `LogStore` restored, Raft started at the snapshot's index (it hands the
    /// committed entries after it over again).
    pub(super) fn start(&mut self, salt: u64, forget_vote: bool, now: Millis) {
        if self.running.is_some() {
            return;
        }
        if forget_vote {
            self.disk.forget_vote(GROUP);
        }
        let loaded = self.disk.load(GROUP);
        let sm = match &loaded.snapshot {
            Some(s) => StateMachine::from_snapshot(&s.data).expect("a stored snapshot decodes"),
            None => StateMachine::default(),
        };
        let mut record = loaded.record;
        record.applied = sm.applied_index();
        let log = LogStore::restored(
            loaded.hard_state,
            loaded.conf_state,
            loaded.snapshot,
            loaded.entries,
        );
        let config = raft_config(self.id, record.applied);
        let election_ticks = (config.min_election_tick(), config.max_election_tick());
        let node = RawNode::new(&config, log, &logger()).expect("raft starts from its disk");
        self.incarnation += 1;
        let mut running = Running {
            group: RaftGroup::new(GROUP, node, record, true),
            sm,
            waiters: Waiters::default(),
            seen_leader: (0, 0),
            salt,
            election_ticks,
            rng: SimRng::new(salt ^ 0x5bd1_e995),
        };
        running.pin_timeout();
        self.running = Some(Box::new(running));
        self.pump(now);
    }

    /// Crashes the node: all but its disk is lost, and of the disk what was not
    /// durable (what, for the stats).
    pub(super) fn crash(&mut self) -> Lost {
        if self.running.take().is_none() {
            return Lost::default();
        }
        self.writes_due.clear();
        let lost = self.disk.crash();
        self.lost_unsynced += u64::from(lost.unsynced > 0);
        lost
    }

    /// Raft's tick, the expiry of old proposals, and proposals handed over again.
    pub(super) fn tick(&mut self, now: Millis) {
        let Some(r) = self.running.as_deref_mut() else {
            return;
        };
        r.group.node.tick();
        r.waiters.expire(now);
        r.hand_over(now);
        self.pump(now);
    }

    /// A Raft message arrives.
    pub(super) fn deliver(&mut self, message: Message, now: Millis) {
        let Some(r) = self.running.as_deref_mut() else {
            return;
        };
        // Errors are messages Raft does not take (from a member it does not know).
        let _ = r.group.step(message);
        self.pump(now);
    }

    /// A client asks this node to commit `command`.
    pub(super) fn propose(&mut self, command: Command, now: Millis) {
        let Some(r) = self.running.as_deref_mut() else {
            return;
        };
        r.waiters.add(command.id, command.encode(), now);
        r.hand_over(now);
        self.pump(now);
    }

    /// The writes due by `now` complete, and the driver hears it; with `crash`, the
    /// node crashes there instead (then it is down).
    pub(super) fn writes_done(&mut self, now: Millis, crash: Option<CrashPoint>) {
        if self.running.is_none() {
            return;
        }
        match crash {
            Some(CrashPoint::BeforeWrite) => {
                self.crash();
                return;
            }
            Some(CrashPoint::AfterWrite) => {
                self.disk.complete_due(now);
                self.crash();
                return;
            }
            None => {}
        }
        let Some(number) = self.disk.complete_due(now) else {
            return;
        };
        let Some(r) = self.running.as_deref_mut() else {
            return;
        };
        let mut out = Effects::default();
        if let Err(e) = r.group.persisted(number, &mut out) {
            panic!("{e}");
        }
        self.perform(out, now);
        self.after(now);
    }

    /// Takes a snapshot of the state machine at its applied index and compacts the
    /// log behind it, keeping `keep` entries. Whether it did.
    pub(super) fn compact(&mut self, keep: u64, now: Millis) -> bool {
        let Some(r) = self.running.as_deref_mut() else {
            return false;
        };
        let mut out = Effects::default();
        if !r.snapshot(keep, &mut out) {
            return false;
        }
        self.snapshots_taken += 1;
        self.perform(out, now);
        true
    }

    /// The driver handles every ready; its effects are performed.
    fn pump(&mut self, now: Millis) {
        let Some(r) = self.running.as_deref_mut() else {
            return;
        };
        let mut out = Effects::default();
        if let Err(e) = r.group.advance(&mut out) {
            panic!("{e}");
        }
        self.perform(out, now);
        self.after(now);
    }

    /// Performs what the driver asked for, as `replica/ready.rs` does: messages
    /// sent, writes submitted, then the applier's work and what it reports (more
    /// writes, a snapshot); until the driver has nothing more.
    fn perform(&mut self, mut out: Effects, now: Millis) {
        let (index, no_dedupe, policy, latency) = (
            self.index as u64,
            self.no_dedupe,
            self.policy,
            self.disk_latency,
        );
        loop {
            let Some(r) = self.running.as_deref_mut() else {
                return;
            };
            self.outbox.append(&mut out.messages);
            for write in out.writes.drain(..) {
                let at = now + r.rng.below(0, latency + 1);
                self.writes_due.push(self.disk.submit(write, at));
            }
            let mut more = Effects::default();
            let applied_before = r.sm.applied_index();
            for job in out.apply.drain(..) {
                match job {
                    ToApply::Snapshot(snapshot) => {
                        let sm = StateMachine::from_snapshot(&snapshot.data)
                            .expect("a snapshot from the leader decodes");
                        r.sm = sm;
                        self.seen.push(Seen::Restored);
                        // A command of this node's that came with the snapshot is
                        // committed.
                        for (_, c) in r.sm.commands() {
                            if c.origin == index && r.waiters.answer(c.id) {
                                self.seen.push(Seen::Answered(*c));
                            }
                        }
                        r.group.applied(r.sm.applied_index(), &mut more);
                    }
                    ToApply::Entries(entries) => {
                        r.apply(&entries, index, no_dedupe, &mut self.seen);
                    }
                }
            }
            if r.sm.applied_index() > applied_before {
                r.group.applied(r.sm.applied_index(), &mut more);
                if r.sm.applied_index() >= r.group.snapshot_index() + policy.every
                    && r.snapshot(policy.keep, &mut more)
                {
                    self.snapshots_taken += 1;
                }
            }
            if out.snapshot_wanted && r.snapshot(policy.keep, &mut more) {
                self.snapshots_taken += 1;
            }
            if let Err(e) = r.group.advance(&mut more) {
                panic!("{e}");
            }
            if more.messages.is_empty()
                && more.writes.is_empty()
                && more.apply.is_empty()
                && !more.snapshot_wanted
            {
                return;
            }
            out = more;
        }
    }

    /// After anything Raft did: proposals go to a new leader, and the election
    /// timeout is the seed's.
    fn after(&mut self, now: Millis) {
        let Some(r) = self.running.as_deref_mut() else {
            return;
        };
        let node = &r.group.node.raft;
        let leader = (node.term, node.leader_id);
        if leader != r.seen_leader {
            r.seen_leader = leader;
            r.hand_over(now);
            let mut out = Effects::default();
            if let Err(e) = r.group.advance(&mut out) {
                panic!("{e}");
            }
            self.perform(out, now);
        }
        if let Some(r) = self.running.as_deref_mut() {
            r.pin_timeout();
        }
    }

    /// The node's log as the checks compare it: its `LogStore` while up (what Raft
    /// reads, written or not yet), its disk read back while down.
    pub(super) fn log_view(&self) -> LogView {
        match self.running() {
            Some(r) => view_of(r.group.node.store()),
            None => {
                let loaded = self.disk.load(GROUP);
                view_of(&LogStore::restored(
                    loaded.hard_state,
                    loaded.conf_state,
                    loaded.snapshot,
                    loaded.entries,
                ))
            }
        }
    }

    /// Every entry its state machine still needs (the puts of its live keys) is in
    /// its log, with that put: compaction kept it, or it came with a snapshot.
    pub(super) fn needed_held(&self) -> Result<(), String> {
        let Some(r) = self.running() else {
            return Ok(());
        };
        let store = r.group.node.store();
        for (key, index) in r.sm.puts() {
            let held = store
                .slice(*index, index + 1, u64::MAX)
                .ok()
                .and_then(|e| e.first().and_then(|e| Command::decode(&e.data)));
            match held {
                Some(Command {
                    op: Op::Put { key: k, .. },
                    ..
                }) if k == *key => {}
                other => {
                    return Err(format!(
                        "node {}: key {key} was put by entry {index}, which its log (from {}) holds as {other:?}",
                        self.id,
                        store.first()
                    ))
                }
            }
        }
        Ok(())
    }

    /// The node's term: Raft's while up, the disk's while down.
    pub(super) fn term(&self) -> u64 {
        match self.running() {
            Some(r) => r.group.node.raft.term,
            None => self.disk.hard_state(GROUP).term,
        }
    }

    /// The term it leads in, if it is a leader.
    pub(super) fn leading(&self) -> Option<u64> {
        self.running()
            .filter(|r| r.group.node.raft.state == StateRole::Leader)
            .map(|r| r.group.node.raft.term)
    }
}

impl Running {
    /// Hands Raft the due proposals once a leader is known (as `hand_over` in the real
    /// replica).
    fn hand_over(&mut self, now: Millis) {
        let raft = &mut self.group.node;
        if raft.raft.leader_id == 0 {
            return;
        }
        for data in self.waiters.due(raft.raft.term, now) {
            if raft.propose(Vec::new(), data).is_err() {
                self.waiters.unsent();
                break;
            }
        }
    }

    /// Applies committed entries to the state machine, skipping those it applied
    /// already (before a snapshot it restored); a membership change goes to Raft; the
    /// client of a command this node proposed is answered.
    fn apply(&mut self, entries: &[Entry], origin: u64, no_dedupe: bool, seen: &mut Vec<Seen>) {
        for entry in entries {
            if entry.index <= self.sm.applied_index() {
                continue;
            }
            if entry.get_entry_type() == EntryType::EntryConfChange {
                if let Err(e) = self.group.apply_conf_change(entry) {
                    panic!("{e}");
                }
            }
            let outcome = self.sm.apply(entry, !no_dedupe);
            seen.push(Seen::Applied {
                index: entry.index,
                term: entry.term,
                data: hash_bytes(&entry.data),
                outcome,
            });
            if let Applied::Command(c) = outcome {
                if c.origin == origin && self.waiters.answer(c.id) {
                    seen.push(Seen::Answered(c));
                }
            }
        }
    }

    /// A snapshot of the state machine at its applied index, the log compacted
    /// behind it (`keep` entries kept). Whether one was taken.
    fn snapshot(&mut self, keep: u64, out: &mut Effects) -> bool {
        let applied = self.sm.applied_index();
        if applied == 0 || applied <= self.group.snapshot_index() {
            return false;
        }
        assert_eq!(
            self.group.node.store().term_of(applied),
            Some(self.sm.applied_term()),
            "the applied entry is in the log"
        );
        self.group.compact(
            applied,
            self.sm.snapshot_data(),
            keep,
            self.sm.needed_from(),
            out,
        );
        self.group.snapshot_index() == applied
    }

    /// Overwrites raft-rs's election timeout (drawn from `thread_rng`, which no seed
    /// reaches) with one drawn from the seed, redrawn whenever the term, role or
    /// leader changes (where raft-rs redraws it).
    fn pin_timeout(&mut self) {
        let raft = &mut self.group.node.raft;
        let key = [raft.term, role_code(raft.state), raft.leader_id];
        let (min, max) = self.election_ticks;
        raft.set_randomized_election_timeout(timeout_for(self.salt, key, min, max));
    }
}
