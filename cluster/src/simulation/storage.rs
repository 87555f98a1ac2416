//! What a simulated node keeps on disk, and all it starts from after a crash: the hard
//! state, the members, the latest snapshot and the log entries after the compacted
//! prefix.
//!
//! Raft reads its log through this [`Storage`]; a node writes to it while it handles a
//! Ready, before it sends the messages that depend on what it wrote (as the real
//! replica writes to redb). Every write here counts as durable once made: a crash loses
//! the node's in-memory Raft state (unstable entries, progress, votes received), its
//! state machine and its waiting proposals, never what is here.

use std::cell::Cell;

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{Error, GetEntriesContext, RaftState, Storage, StorageError};

/// A node's durable Raft storage.
#[derive(Clone, Default)]
pub(super) struct DiskStorage {
    hard_state: HardState,
    conf_state: ConfState,
    /// The latest snapshot (a state machine image at its index); empty before the
    /// first.
    snapshot: Snapshot,
    /// Index and term of the entry just before `entries`: compacted away, covered by
    /// the snapshot (whose index may be later: the log keeps a tail before it).
    compacted: (u64, u64),
    entries: Vec<Entry>,
    /// Raft asked for a snapshot newer than the stored one: the node takes one.
    snapshot_wanted: Cell<bool>,
}

impl DiskStorage {
    /// A fresh node's storage: members known, nothing else.
    pub(super) fn new(conf_state: ConfState) -> DiskStorage {
        DiskStorage {
            conf_state,
            ..DiskStorage::default()
        }
    }

    pub(super) fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub(super) fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    pub(super) fn stored_snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The index before the first entry held.
    pub(super) fn compacted_index(&self) -> u64 {
        self.compacted.0
    }

    /// The entries held, in order.
    pub(super) fn held(&self) -> &[Entry] {
        &self.entries
    }

    pub(super) fn take_snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.replace(false)
    }

    fn first(&self) -> u64 {
        self.compacted.0 + 1
    }

    fn last(&self) -> u64 {
        self.entries.last().map_or(self.compacted.0, |e| e.index)
    }

    /// Writes `entries`, replacing any from the first one's index on.
    pub(super) fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        assert!(
            first.index > self.compacted.0,
            "raft rewrites compacted entry {} (compacted to {})",
            first.index,
            self.compacted.0
        );
        assert!(
            first.index <= self.last() + 1,
            "a gap in the log: last {}, appending {}",
            self.last(),
            first.index
        );
        let keep = (first.index - self.first()) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
    }

    pub(super) fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    /// The commit index a LightReady announced.
    pub(super) fn set_commit(&mut self, commit: u64) {
        self.hard_state.commit = self.hard_state.commit.max(commit);
    }

    /// Replaces the whole log with `snapshot` (one from the leader).
    pub(super) fn apply_snapshot(&mut self, snapshot: Snapshot) {
        let meta = snapshot.get_metadata();
        let (index, term) = (meta.index, meta.term);
        self.hard_state.commit = self.hard_state.commit.max(index);
        self.hard_state.term = self.hard_state.term.max(term);
        self.conf_state = meta.get_conf_state().clone();
        self.entries.clear();
        self.compacted = (index, term);
        self.snapshot = snapshot;
    }

    /// Stores `snapshot` (this node's state machine image at an applied index) and
    /// drops the entries before `keep_from` (at most the snapshot's index + 1).
    pub(super) fn compact(&mut self, snapshot: Snapshot, keep_from: u64) {
        let index = snapshot.get_metadata().index;
        assert!(keep_from <= index + 1 && index <= self.last());
        self.hard_state.commit = self.hard_state.commit.max(index);
        self.snapshot = snapshot;
        if keep_from > self.first() {
            let term = self
                .term(keep_from - 1)
                .expect("the entry before those kept");
            let drop = (keep_from - self.first()) as usize;
            self.entries.drain(..drop);
            self.compacted = (keep_from - 1, term);
        }
    }

    /// Test-only damage: the node forgets whom it voted for (see `Sabotage`).
    pub(super) fn forget_vote(&mut self) {
        self.hard_state.vote = 0;
    }
}

impl Storage for DiskStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(Error::Store(StorageError::Compacted));
        }
        assert!(
            high <= self.last() + 1,
            "entries up to {high} asked, the log ends at {}",
            self.last()
        );
        let from = (low - self.first()) as usize;
        let to = (high - self.first()) as usize;
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let mut out = Vec::new();
        let mut size = 0u64;
        for e in &self.entries[from..to] {
            size += u64::from(e.compute_size());
            // At least one entry, whatever its size.
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.compacted.0 {
            return Ok(self.compacted.1);
        }
        if idx < self.first() {
            return Err(Error::Store(StorageError::Compacted));
        }
        if idx > self.last() {
            return Err(Error::Store(StorageError::Unavailable));
        }
        Ok(self.entries[(idx - self.first()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let index = self.snapshot.get_metadata().index;
        if index == 0 || index < request_index || index < self.compacted.0 {
            self.snapshot_wanted.set(true);
            return Err(Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Entry::default()
        }
    }

    #[test]
    fn appends_replace_the_tail_and_compaction_keeps_the_terms_raft_asks_for() {
        let mut s = DiskStorage::new(ConfState::default());
        s.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        s.append(&[entry(3, 2), entry(4, 2)]);
        assert_eq!(s.last_index().unwrap(), 4);
        assert_eq!(s.term(3).unwrap(), 2);
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 3;
        snap.mut_metadata().term = 2;
        s.compact(snap, 3);
        assert_eq!(s.first_index().unwrap(), 3);
        assert_eq!(s.term(2).unwrap(), 1, "the term before the first entry");
        assert_eq!(
            s.entries(2, 4, None, GetEntriesContext::empty(false)),
            Err(Error::Store(StorageError::Compacted))
        );
        assert_eq!(s.snapshot(0, 2).unwrap().get_metadata().index, 3);
        assert!(s.snapshot(4, 2).is_err(), "older than asked");
        assert!(s.take_snapshot_wanted());
    }
}
