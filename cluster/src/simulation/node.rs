//! One simulated member of the metadata group: raft-rs's `RawNode` with the production
//! configuration over its [`DiskStorage`], the state machine, and its clients' waiting
//! proposals; handled as the real replica handles its node (ticks, messages, proposals
//! handed over when a leader is known, one Ready at a time).
//!
//! A Ready is handled in the real replica's order: the leader's messages go out at
//! once; the snapshot, entries and hard state are written to disk; then the messages
//! that needed them are sent, committed entries applied, and Raft advanced.

use raft::prelude::{Entry, Message, Snapshot};
use raft::{RawNode, SnapshotStatus, StateRole, Storage as _};

use super::client::{Millis, Waiters};
use super::invariants::LogView;
use super::rng::{hash_bytes, timeout_for};
use super::state_machine::{Applied, Command, StateMachine};
use super::storage::DiskStorage;
use crate::replica::raft_config;

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
    pub(super) raft: RawNode<DiskStorage>,
    pub(super) sm: StateMachine,
    waiters: Waiters,
    /// The (term, leader) proposals were last handed over with.
    seen_leader: (u64, u64),
    /// Seeds this incarnation's election timeouts.
    salt: u64,
    election_ticks: (usize, usize),
}

/// Up or down (then only the disk is left).
pub(super) enum Life {
    Up(Box<Running>),
    Down(Box<DiskStorage>),
}

/// Where a node crashes while it handles a Ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CrashPoint {
    /// A leader's messages are out; nothing is on disk.
    BeforeWrite,
    /// The Ready is on disk; the messages that needed it are not sent, nothing is
    /// applied.
    AfterWrite,
}

/// A simulated node.
pub(super) struct SimNode {
    pub(super) index: usize,
    pub(super) id: u64,
    pub(super) incarnation: u64,
    pub(super) life: Life,
    /// Raft messages to send (the world takes them after each step).
    pub(super) outbox: Vec<Message>,
    /// What the checks look at (the world takes it after each step).
    pub(super) seen: Vec<Seen>,
    /// Test-only damage: this node applies a command again when it is in the log
    /// twice (`Sabotage::ApplyDuplicates`).
    pub(super) no_dedupe: bool,
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

impl SimNode {
    /// A node that never ran, down until started.
    pub(super) fn new(index: usize, disk: DiskStorage) -> SimNode {
        SimNode {
            index,
            id: index as u64 + 1,
            incarnation: 0,
            life: Life::Down(Box::new(disk)),
            outbox: Vec::new(),
            seen: Vec::new(),
            no_dedupe: false,
        }
    }

    pub(super) fn is_up(&self) -> bool {
        matches!(self.life, Life::Up(_))
    }

    pub(super) fn running(&self) -> Option<&Running> {
        match &self.life {
            Life::Up(r) => Some(r),
            Life::Down(_) => None,
        }
    }

    fn running_mut(&mut self) -> Option<&mut Running> {
        match &mut self.life {
            Life::Up(r) => Some(r),
            Life::Down(_) => None,
        }
    }

    /// Starts the node from its disk: the state machine from the stored snapshot, Raft
    /// from the hard state and log (it applies the committed entries after the
    /// snapshot again).
    pub(super) fn start(&mut self, salt: u64, forget_vote: bool) {
        let Life::Down(disk) = &mut self.life else {
            return;
        };
        let mut disk = std::mem::take(&mut **disk);
        if forget_vote {
            disk.forget_vote();
        }
        let snapshot = disk.stored_snapshot();
        let sm = if snapshot.get_metadata().index == 0 {
            StateMachine::default()
        } else {
            StateMachine::restore(&snapshot.data).expect("a stored snapshot holds an image")
        };
        let config = raft_config(self.id, sm.applied_index());
        let election_ticks = (config.min_election_tick(), config.max_election_tick());
        let raft = RawNode::new(&config, disk, &logger()).expect("raft starts from its disk");
        self.incarnation += 1;
        let mut running = Running {
            raft,
            sm,
            waiters: Waiters::default(),
            seen_leader: (0, 0),
            salt,
            election_ticks,
        };
        running.pin_timeout();
        self.life = Life::Up(Box::new(running));
    }

    /// Crashes the node: all but its disk is lost.
    pub(super) fn crash(&mut self) {
        if let Life::Up(r) = &mut self.life {
            let disk = std::mem::take(r.raft.mut_store());
            self.life = Life::Down(Box::new(disk));
        }
    }

    /// Raft's tick, the expiry of old proposals, and proposals handed over again.
    pub(super) fn tick(&mut self, now: Millis) {
        let Some(r) = self.running_mut() else { return };
        r.raft.tick();
        r.waiters.expire(now);
        r.hand_over(now);
        self.after(now);
    }

    /// A Raft message arrives.
    pub(super) fn deliver(&mut self, message: Message, now: Millis) {
        let Some(r) = self.running_mut() else { return };
        // Errors are messages Raft does not take (from a member it does not know).
        let _ = r.raft.step(message);
        self.after(now);
    }

    /// A client asks this node to commit `command`.
    pub(super) fn propose(&mut self, command: Command, now: Millis) {
        let Some(r) = self.running_mut() else { return };
        r.waiters.add(command.id, command.encode(), now);
        r.hand_over(now);
        self.after(now);
    }

    /// The transport says how a snapshot sent to `to` went.
    pub(super) fn report_snapshot(&mut self, to: u64, delivered: bool, now: Millis) {
        let Some(r) = self.running_mut() else { return };
        let status = if delivered {
            SnapshotStatus::Finish
        } else {
            SnapshotStatus::Failure
        };
        r.raft.report_snapshot(to, status);
        self.after(now);
    }

    /// After anything Raft did: proposals go to a new leader, and the election
    /// timeout is the seed's.
    fn after(&mut self, now: Millis) {
        let Some(r) = self.running_mut() else { return };
        let leader = (r.raft.raft.term, r.raft.raft.leader_id);
        if leader != r.seen_leader {
            r.seen_leader = leader;
            r.hand_over(now);
        }
        r.pin_timeout();
    }

    pub(super) fn has_ready(&self) -> bool {
        self.running().is_some_and(|r| r.raft.has_ready())
    }

    /// Handles one Ready (see the module documentation); with `crash`, the node
    /// crashes there (then it is down).
    pub(super) fn handle_ready(&mut self, now: Millis, crash: Option<CrashPoint>) {
        let no_dedupe = self.no_dedupe;
        let index = self.index as u64;
        let Some(r) = self.running_mut() else {
            return;
        };
        if !r.raft.has_ready() {
            return;
        }
        let mut out = Vec::new();
        let mut seen = Vec::new();
        let mut ready = r.raft.ready();
        // A leader's messages go out before it writes (they do not depend on it).
        out.extend(ready.take_messages());
        if crash == Some(CrashPoint::BeforeWrite) {
            self.outbox.extend(out);
            self.crash();
            return;
        }
        if !ready.snapshot().is_empty() {
            let snapshot: Snapshot = ready.snapshot().clone();
            let sm = StateMachine::restore(&snapshot.data).expect("a snapshot holds an image");
            r.raft.mut_store().apply_snapshot(snapshot);
            r.sm = sm;
            seen.push(Seen::Restored);
            // A command of this node's that came with the snapshot is committed.
            for (_, c) in r.sm.commands() {
                if c.origin == index && r.waiters.answer(c.id) {
                    seen.push(Seen::Answered(*c));
                }
            }
        }
        if !ready.entries().is_empty() {
            r.raft.mut_store().append(ready.entries());
        }
        if let Some(hs) = ready.hs() {
            r.raft.mut_store().set_hard_state(hs.clone());
        }
        if crash == Some(CrashPoint::AfterWrite) {
            self.outbox.extend(out);
            self.seen.extend(seen);
            self.crash();
            return;
        }
        out.extend(ready.take_persisted_messages());
        let applied_before = r.sm.applied_index();
        let committed = ready.take_committed_entries();
        r.apply(&committed, index, no_dedupe, &mut seen);
        let mut light = r.raft.advance(ready);
        if let Some(commit) = light.commit_index() {
            r.raft.mut_store().set_commit(commit);
        }
        out.extend(light.take_messages());
        let committed = light.take_committed_entries();
        r.apply(&committed, index, no_dedupe, &mut seen);
        r.raft.advance_apply();
        // As the real replica: a leader that applied something tells the followers at
        // once.
        if r.sm.applied_index() != applied_before && r.raft.raft.state == StateRole::Leader {
            r.raft.ping();
        }
        self.outbox.extend(out);
        self.seen.extend(seen);
        self.after(now);
    }

    /// Takes a snapshot of the state machine at its applied index and drops the log
    /// before it but for the last `keep` entries. Whether it did.
    pub(super) fn compact(&mut self, keep: u64) -> bool {
        let Some(r) = self.running_mut() else {
            return false;
        };
        if r.raft.raft.raft_log.unstable_snapshot().is_some() {
            return false;
        }
        let applied = r.sm.applied_index();
        let store = r.raft.store();
        if applied == 0 || applied <= store.stored_snapshot().get_metadata().index {
            return false;
        }
        let mut snapshot = Snapshot::default();
        let meta = snapshot.mut_metadata();
        meta.index = applied;
        meta.term = r.sm.applied_term();
        meta.set_conf_state(store.conf_state().clone());
        assert_eq!(
            store.term(applied).ok(),
            Some(meta.term),
            "the applied entry is on disk"
        );
        snapshot.data = r.sm.image().into();
        let keep_from = (applied + 1)
            .saturating_sub(keep)
            .max(store.compacted_index() + 1);
        r.raft.mut_store().compact(snapshot, keep_from);
        true
    }

    /// Whether Raft asked this node's disk for a newer snapshot than it holds.
    pub(super) fn snapshot_wanted(&self) -> bool {
        self.running()
            .is_some_and(|r| r.raft.store().take_snapshot_wanted())
    }

    /// The node's log as the checks compare it: Raft's log (disk and unstable
    /// entries) while up, the disk while down.
    pub(super) fn log_view(&self) -> LogView {
        let entry_view = |e: &Entry| (e.term, hash_bytes(&e.data));
        match &self.life {
            Life::Down(disk) => LogView {
                first: disk.compacted_index() + 1,
                entries: disk.held().iter().map(entry_view).collect(),
            },
            Life::Up(r) => {
                let log = &r.raft.raft.raft_log;
                let unstable = log.unstable();
                if let Some(snapshot) = &unstable.snapshot {
                    return LogView {
                        first: snapshot.get_metadata().index + 1,
                        entries: unstable.entries.iter().map(entry_view).collect(),
                    };
                }
                let disk = log.store();
                let mut entries: Vec<(u64, u64)> = disk
                    .held()
                    .iter()
                    .take_while(|e| e.index < unstable.offset)
                    .map(entry_view)
                    .collect();
                entries.extend(unstable.entries.iter().map(entry_view));
                LogView {
                    first: disk.compacted_index() + 1,
                    entries,
                }
            }
        }
    }

    /// The node's term: Raft's while up, the disk's while down.
    pub(super) fn term(&self) -> u64 {
        match &self.life {
            Life::Up(r) => r.raft.raft.term,
            Life::Down(d) => d.hard_state().term,
        }
    }

    /// The term it leads in, if it is a leader.
    pub(super) fn leading(&self) -> Option<u64> {
        self.running()
            .filter(|r| r.raft.raft.state == StateRole::Leader)
            .map(|r| r.raft.raft.term)
    }
}

impl Running {
    /// Hands Raft the due proposals once a leader is known (as `hand_over` in the real
    /// replica).
    fn hand_over(&mut self, now: Millis) {
        if self.raft.raft.leader_id == 0 {
            return;
        }
        for data in self.waiters.due(self.raft.raft.term, now) {
            if self.raft.propose(Vec::new(), data).is_err() {
                self.waiters.unsent();
                break;
            }
        }
    }

    /// Applies committed entries to the state machine; the client of a command this
    /// node proposed is answered.
    fn apply(&mut self, entries: &[Entry], origin: u64, no_dedupe: bool, seen: &mut Vec<Seen>) {
        for entry in entries {
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

    /// Overwrites raft-rs's election timeout (drawn from `thread_rng`, which no seed
    /// reaches) with one drawn from the seed, redrawn whenever the term, role or
    /// leader changes (where raft-rs redraws it).
    fn pin_timeout(&mut self) {
        let raft = &mut self.raft.raft;
        let key = [raft.term, role_code(raft.state), raft.leader_id];
        let (min, max) = self.election_ticks;
        raft.set_randomized_election_timeout(timeout_for(self.salt, key, min, max));
    }
}
