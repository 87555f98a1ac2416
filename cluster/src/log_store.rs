//! A Raft group's log as Raft reads it ([`raft::Storage`]): hard state, members, the
//! latest snapshot and the entries after the compaction point. The group's shell
//! writes the same to redb ([`crate::raft_log`]) and reads it back at start: the
//! snapshot, the terms and the last entries, never the whole history.
//!
//! Entries are held in memory until they are on disk and older than the last
//! `HELD_ENTRIES` (or `HELD_BYTES`); older ones are read back from redb when Raft
//! asks for them (a follower far behind). A mirrored queue's log keeps every entry
//! that holds a message still in the queue, so it may be long; its memory is not.
//!
//! Compaction keeps a tail of entries behind the snapshot (an eighth of the snapshot
//! interval), so that a follower a little behind catches up with entries rather than
//! a whole snapshot.
//!
//! Raft must know the term of the entry just before the first it can read (its
//! "dummy" entry: a rejected append's conflict search may end there). Behind a
//! snapshot that term is known when this node compacted its own log, but not after a
//! restart or a snapshot from the leader with entries behind it (only the entries are
//! stored, not the one before them): then the first entry kept is the dummy, Raft
//! reads from the one after it, and the entry itself still travels with snapshots.

use std::collections::VecDeque;

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};
use warren_storage::Store;

use crate::raft_group::GroupId;

#[cfg(test)]
const KEEP_BEHIND: u64 = 1024;

/// Entries written to disk stay in memory while fewer than this many are held...
pub(crate) const HELD_ENTRIES: usize = 1024;
/// ... and while they weigh less than this.
pub(crate) const HELD_BYTES: usize = 8 << 20;

/// Where a group's entries are read back once they left memory: its log in the
/// node's redb.
#[derive(Clone)]
pub struct DiskLog {
    /// The node's store.
    pub store: Store,
    /// The group's key in `replication.log`.
    pub group: GroupId,
}

impl DiskLog {
    /// The entries `from..=to` as stored, no more than `limit` bytes but one at
    /// least; an error if one is missing.
    pub(crate) fn read(&self, from: u64, to: u64, limit: u64) -> Result<Vec<Entry>, String> {
        let mut out: Vec<Entry> = Vec::new();
        let (mut size, mut full) = (0u64, false);
        let mut failed = None;
        self.store
            .for_each_log_record(self.group, from.max(1), to, |index, bytes| {
                if index != from + out.len() as u64 {
                    failed = Some(format!("entry {} is not on disk", from + out.len() as u64));
                    return false;
                }
                match Entry::parse_from_bytes(bytes) {
                    Ok(e) => {
                        size += e.compute_size() as u64;
                        if !out.is_empty() && size > limit {
                            full = true;
                            return false;
                        }
                        out.push(e);
                        true
                    }
                    Err(e) => {
                        failed = Some(format!("entry {index}: {e}"));
                        false
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        if failed.is_none() && !full && out.len() as u64 != to + 1 - from {
            failed = Some(format!("entry {} is not on disk", from + out.len() as u64));
        }
        match failed {
            Some(e) => Err(format!("reading raft group {}: {e}", self.group)),
            None => Ok(out),
        }
    }
}

/// Whether `entries` are contiguous and end at `index`: the log behind a snapshot at
/// `index` (none: there is none).
pub(crate) fn leads_up_to(entries: &[Entry], index: u64) -> bool {
    entries.last().is_some_and(|e| e.index == index)
        && entries.windows(2).all(|w| w[1].index == w[0].index + 1)
}

/// A log as stored on disk, read back at start without holding every entry: the
/// terms of all (as runs), the last entries themselves.
#[derive(Default)]
pub(crate) struct Tail {
    /// (first index, term) of each run of entries of one term, in order.
    pub runs: Vec<(u64, u64)>,
    /// The last index stored (0: none).
    pub last: u64,
    /// The last entries, contiguous up to `last`.
    pub held: VecDeque<Entry>,
}

impl Tail {
    /// Adds the next stored entry: its term, and the entry itself.
    pub(crate) fn push(&mut self, e: Entry) {
        if self.runs.last().is_none_or(|r| r.1 != e.term) {
            self.runs.push((e.index, e.term));
        }
        self.last = e.index;
        self.held.push_back(e);
    }
}

/// The log in memory (see the module documentation).
#[derive(Default)]
pub struct LogStore {
    hard_state: HardState,
    conf_state: ConfState,
    /// The latest snapshot (index 0 when there is none yet).
    snapshot: Snapshot,
    /// The index just before the first entry kept: everything up to it is compacted.
    base: u64,
    /// The term of entry `base`, when compaction knew it (see [`LogStore::dummy`]).
    base_term: Option<u64>,
    /// The terms of the entries kept: (first index, term) of each run, in order.
    runs: Vec<(u64, u64)>,
    /// The last index kept (`base` when none).
    last: u64,
    /// The last entries, in memory, contiguous up to `last`; the ones before them
    /// (from `base + 1`) are read back from `disk`.
    held: VecDeque<Entry>,
    /// Their size.
    held_bytes: usize,
    /// Where entries that left memory are read back; none: every entry stays held.
    disk: Option<DiskLog>,
    /// The first entry the latest snapshot's state needs with it (a mirrored queue's
    /// messages are stored in the entries that enqueued them): a snapshot sent to a
    /// member carries the entries from it to the snapshot's index.
    needed_from: Option<u64>,
    /// Raft asked for a snapshot for a member the latest one does not name (a node
    /// that joined after it was taken, which Raft would refuse it): take a new one.
    wanted: std::cell::Cell<bool>,
}

impl LogStore {
    /// The log as it was stored: its state, its latest snapshot (if any) and the
    /// entries after the compaction point, all held in memory.
    pub(crate) fn restored(
        hard_state: HardState,
        conf_state: ConfState,
        snapshot: Option<Snapshot>,
        entries: Vec<Entry>,
    ) -> LogStore {
        let mut tail = Tail::default();
        for e in entries {
            tail.push(e);
        }
        LogStore::restored_paged(hard_state, conf_state, snapshot, tail, None)
    }

    /// The log as it was stored, its entries on `disk` (none: held in memory) of
    /// which `tail` holds the last.
    pub(crate) fn restored_paged(
        hard_state: HardState,
        conf_state: ConfState,
        snapshot: Option<Snapshot>,
        tail: Tail,
        disk: Option<DiskLog>,
    ) -> LogStore {
        let snapshot = snapshot.unwrap_or_default();
        let snap_index = snapshot.get_metadata().index;
        // The entries kept behind the snapshot, if any (compaction stores the snapshot
        // in the transaction that drops entries, so there is never a gap).
        let base = tail
            .runs
            .first()
            .map_or(snap_index, |(first, _)| first.saturating_sub(1));
        let held_bytes = tail.held.iter().map(|e| e.data.len()).sum();
        LogStore {
            hard_state,
            conf_state,
            snapshot,
            base,
            base_term: None,
            runs: tail.runs,
            last: tail.last.max(base),
            held: tail.held,
            held_bytes,
            disk,
            // Which of the entries kept behind the snapshot its state needs is not
            // stored: all of them travel with it (compaction kept every one needed).
            needed_from: (base < snap_index).then_some(base + 1),
            wanted: Default::default(),
        }
    }

    /// The same log, its entries read back from `disk` once they left memory.
    pub(crate) fn with_disk(mut self, disk: DiskLog) -> LogStore {
        self.disk = Some(disk);
        self
    }

    /// Replaces the hard state (term, vote, commit).
    pub(crate) fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    /// The hard state as held.
    #[cfg(test)]
    pub(crate) fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// Replaces the members.
    pub(crate) fn set_conf_state(&mut self, cs: ConfState) {
        self.conf_state = cs;
    }

    /// The latest snapshot (index 0 when there is none).
    pub(crate) fn latest_snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The first index held.
    pub(crate) fn first(&self) -> u64 {
        self.base + 1
    }

    /// The entry Raft sees as the one before its first: `base` when its term is
    /// known (the snapshot's, or kept by compaction), else the first entry kept.
    fn dummy(&self) -> u64 {
        if self.base == 0 || self.term_of(self.base).is_some() {
            self.base
        } else {
            (self.base + 1).min(self.last)
        }
    }

    /// The last index held (the snapshot's when no entry follows it).
    pub(crate) fn last(&self) -> u64 {
        self.last
    }

    /// The first index held in memory.
    fn held_from(&self) -> u64 {
        self.held.front().map_or(self.last + 1, |e| e.index)
    }

    /// Appends `entries`, replacing any held from the first one's index on (a new
    /// leader overwrote them).
    pub(crate) fn append(&mut self, entries: &[Entry]) -> Result<(), raft::Error> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index <= self.base {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if first.index > self.last + 1 {
            return Err(raft::Error::Store(StorageError::Other(
                format!(
                    "a gap in the log: entry {} after {}",
                    first.index, self.last
                )
                .into(),
            )));
        }
        self.truncate_from(first.index);
        for e in entries {
            self.hold(e.clone());
        }
        Ok(())
    }

    /// Holds `e`, the next entry, in memory.
    fn hold(&mut self, e: Entry) {
        if self.runs.last().is_none_or(|r| r.1 != e.term) {
            self.runs.push((e.index, e.term));
        }
        self.last = e.index;
        self.held_bytes += e.data.len();
        self.held.push_back(e);
    }

    /// Forgets the entries from `index` on.
    fn truncate_from(&mut self, index: u64) {
        while self.held.back().is_some_and(|e| e.index >= index) {
            if let Some(e) = self.held.pop_back() {
                self.held_bytes -= e.data.len();
            }
        }
        if index < self.held_from() {
            // Overwritten below what is held: nothing held follows it any more.
            self.held_bytes = 0;
            self.held.clear();
        }
        while self.runs.last().is_some_and(|r| r.0 >= index) {
            self.runs.pop();
        }
        self.last = self.last.min(index - 1);
    }

    /// Entries up to `persisted` are on disk: the oldest leave memory, but for the
    /// last ones (a follower a little behind gets them from memory). Without a disk,
    /// every entry stays.
    pub(crate) fn written(&mut self, persisted: u64) {
        if self.disk.is_none() {
            return;
        }
        while self.held.len() > HELD_ENTRIES || self.held_bytes > HELD_BYTES {
            match self.held.front() {
                Some(e) if e.index <= persisted && e.index < self.last => {
                    self.held_bytes -= e.data.len();
                    self.held.pop_front();
                }
                _ => break,
            }
        }
    }

    /// Takes `snapshot` as the latest and drops the entries more than `keep` behind
    /// it, but none from `needed_from` on (the snapshot's state needs them). Returns
    /// the first index kept.
    pub(crate) fn compact(
        &mut self,
        snapshot: Snapshot,
        keep: u64,
        needed_from: Option<u64>,
    ) -> u64 {
        let index = snapshot.get_metadata().index;
        // (Known perhaps only as the snapshot's, which this one replaces.)
        let base_term = self.term_of(self.base);
        self.snapshot = snapshot;
        self.needed_from = needed_from.filter(|n| *n <= index);
        let mut base = index.saturating_sub(keep);
        if let Some(needed) = self.needed_from {
            base = base.min(needed.saturating_sub(1));
        }
        let base = base.max(self.base);
        self.base_term = if base > self.base {
            self.term_of(base)
        } else {
            base_term
        };
        self.drop_through(base);
        base + 1
    }

    /// Forgets the entries up to `base`.
    fn drop_through(&mut self, base: u64) {
        while self.held.front().is_some_and(|e| e.index <= base) {
            if let Some(e) = self.held.pop_front() {
                self.held_bytes -= e.data.len();
            }
        }
        let from = base + 1;
        let keep = self.runs.partition_point(|r| r.0 <= from).saturating_sub(1);
        self.runs.drain(..keep);
        if let Some(first) = self.runs.first_mut() {
            first.0 = first.0.max(from);
        }
        if base >= self.last {
            self.runs.clear();
        }
        self.base = base;
        self.last = self.last.max(base);
    }

    /// Takes a snapshot from the leader: everything held is replaced by it and the
    /// entries its state needs, which came with it (`kept`, contiguous up to its
    /// index).
    pub(crate) fn install(&mut self, snapshot: Snapshot, kept: Vec<Entry>) {
        let meta = snapshot.get_metadata();
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = meta.index;
        self.conf_state = meta.get_conf_state().clone();
        let index = meta.index;
        self.held.clear();
        self.held_bytes = 0;
        self.runs.clear();
        let contiguous = leads_up_to(&kept, index);
        self.base = match kept.first() {
            Some(first) if contiguous => first.index - 1,
            _ => index,
        };
        // The term of the entry before those kept did not come with them.
        self.base_term = None;
        self.last = index;
        self.needed_from = None;
        self.snapshot = snapshot;
        if contiguous {
            for e in kept {
                self.hold(e);
            }
            self.needed_from = Some(self.base + 1);
        }
    }

    /// The entries the latest snapshot's state needs (sent with it), when it needs
    /// any: from the first to the snapshot's index.
    pub(crate) fn needed_by_snapshot(&self) -> Option<(u64, u64)> {
        let index = self.snapshot.get_metadata().index;
        let from = self.needed_from?.max(self.base + 1);
        (from <= index).then_some((from, index))
    }

    /// Whether Raft wanted a newer snapshot than the latest since the last call.
    pub(crate) fn take_wanted(&self) -> bool {
        self.wanted.take()
    }

    /// How many entries are kept.
    pub(crate) fn len(&self) -> usize {
        (self.last - self.base) as usize
    }

    /// How many entries are held in memory.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.held.len()
    }

    /// The term of entry `index`, if it is kept (or is the snapshot's).
    pub(crate) fn term_of(&self, index: u64) -> Option<u64> {
        let snap = self.snapshot.get_metadata();
        if index == snap.index && index > 0 {
            return Some(snap.term);
        }
        if index == self.base && index > 0 && self.base_term.is_some() {
            return self.base_term;
        }
        if index <= self.base || index > self.last {
            return None;
        }
        let at = self.runs.partition_point(|r| r.0 <= index);
        at.checked_sub(1).map(|i| self.runs[i].1)
    }

    /// The entries `low..high` (no more than `limit` bytes but one at least), from
    /// disk first for those no longer in memory.
    pub(crate) fn slice(&self, low: u64, high: u64, limit: u64) -> Result<Vec<Entry>, raft::Error> {
        let mut out = Vec::new();
        let mut size = 0u64;
        let held_from = self.held_from();
        if low < held_from {
            let Some(disk) = &self.disk else {
                return Err(raft::Error::Store(StorageError::Unavailable));
            };
            let to = high.min(held_from) - 1;
            out = disk
                .read(low, to, limit)
                .map_err(|e| raft::Error::Store(StorageError::Other(e.into())))?;
            size = out.iter().map(|e| e.compute_size() as u64).sum();
            if (out.len() as u64) < to + 1 - low || size > limit {
                return Ok(out);
            }
        }
        let from = low.max(held_from);
        for e in self.held.iter().skip((from - held_from) as usize) {
            if e.index >= high {
                break;
            }
            size += e.compute_size() as u64;
            // At least one entry, whatever its size.
            if !out.is_empty() && size > limit {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }
}

impl raft::Storage for LogStore {
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
        if low <= self.dummy() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        self.slice(low, high, max_size.into().unwrap_or(u64::MAX))
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if let Some(term) = self.term_of(idx) {
            return Ok(term);
        }
        if idx == 0 {
            return Ok(0);
        }
        if idx <= self.base {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        Err(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.dummy() + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last)
    }

    fn snapshot(&self, _request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let meta = self.snapshot.get_metadata();
        let cs = meta.get_conf_state();
        let names_to = cs
            .voters
            .iter()
            .chain(&cs.learners)
            .chain(&cs.voters_outgoing)
            .chain(&cs.learners_next)
            .any(|id| *id == to);
        if meta.index == 0 || !names_to {
            // Nothing compacted yet (the follower gets entries instead), or a member
            // that joined after the snapshot was taken: Raft retries once a new one
            // is taken.
            self.wanted.set(meta.index != 0);
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let Some((from, to)) = self.needed_by_snapshot() else {
            return Ok(self.snapshot.clone());
        };
        // The entries its state needs travel with it.
        let kept = self.slice(from, to + 1, u64::MAX)?;
        let mut snapshot = self.snapshot.clone();
        snapshot.data = crate::replica::with_entries(&snapshot.data, &kept)
            .map_err(|e| raft::Error::Store(StorageError::Other(e.into())))?
            .into();
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Entry::default()
        }
    }

    fn snapshot(index: u64, term: u64) -> Snapshot {
        let mut s = Snapshot::default();
        s.mut_metadata().index = index;
        s.mut_metadata().term = term;
        s.data = vec![1, 2, 3].into();
        s
    }

    fn ctx() -> GetEntriesContext {
        GetEntriesContext::empty(false)
    }

    #[test]
    fn appends_overwrite_from_the_first_new_index() {
        let mut log = LogStore::default();
        log.append(&(1..=5).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .unwrap();
        log.append(&[entry(4, 2)]).unwrap();
        assert_eq!(log.last_index().unwrap(), 4);
        assert_eq!(log.term(4).unwrap(), 2);
        assert_eq!(log.term(3).unwrap(), 1);
        assert!(log.append(&[entry(9, 2)]).is_err(), "a gap");
        let got = log.entries(2, 5, None, ctx()).unwrap();
        assert_eq!(got.iter().map(|e| e.index).collect::<Vec<_>>(), [2, 3, 4]);
    }

    #[test]
    fn compaction_keeps_a_tail_behind_the_snapshot() {
        let mut log = LogStore::default();
        let n = KEEP_BEHIND * 3;
        log.append(&(1..=n).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .unwrap();
        assert!(log.snapshot(0, 2).is_err(), "no snapshot yet");
        assert!(!log.take_wanted(), "nothing to snapshot from yet");
        let first = log.compact(snapshot(2 * KEEP_BEHIND + 10, 1), KEEP_BEHIND, None);
        assert_eq!(first, KEEP_BEHIND + 11);
        assert_eq!(log.first_index().unwrap(), first);
        assert_eq!(log.last_index().unwrap(), n);
        assert_eq!(log.len() as u64, n - KEEP_BEHIND - 10);
        assert!(matches!(
            log.entries(first - 1, first + 1, None, ctx()),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        // The entry before the first is Raft's dummy: compaction kept its term.
        assert_eq!(log.term(first - 1).unwrap(), 1);
        assert!(matches!(
            log.term(first - 2),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert_eq!(log.term(2 * KEEP_BEHIND + 10).unwrap(), 1);
        assert!(log.snapshot(0, 2).is_err(), "the snapshot does not name 2");
        assert!(log.take_wanted() && !log.take_wanted());
        let mut named = snapshot(2 * KEEP_BEHIND + 10, 1);
        named.mut_metadata().mut_conf_state().voters = vec![1, 2];
        log.compact(named, KEEP_BEHIND, None);
        assert_eq!(
            log.snapshot(0, 2).unwrap().get_metadata().index,
            2 * KEEP_BEHIND + 10
        );
        // A later, smaller compaction never goes backwards.
        let again = log.compact(snapshot(2 * KEEP_BEHIND + 20, 1), KEEP_BEHIND, None);
        assert_eq!(again, KEEP_BEHIND + 21);
    }

    #[test]
    fn an_installed_snapshot_replaces_the_log_and_the_state_reads_back() {
        let mut log = LogStore::default();
        log.append(&(1..=5).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .unwrap();
        let mut snap = snapshot(100, 7);
        snap.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        log.install(snap, Vec::new());
        assert_eq!(log.first_index().unwrap(), 101);
        assert_eq!(log.last_index().unwrap(), 100);
        assert_eq!(log.term(100).unwrap(), 7);
        assert_eq!(log.hard_state().commit, 100);
        assert_eq!(log.initial_state().unwrap().conf_state.voters, [1, 2, 3]);
        log.append(&[entry(101, 7)]).unwrap();
        assert!(log.append(&[entry(100, 7)]).is_err(), "compacted");
        // Read back after a restart: the snapshot and the tail.
        let back = LogStore::restored(
            log.hard_state().clone(),
            log.initial_state().unwrap().conf_state,
            Some(log.latest_snapshot().clone()),
            vec![entry(101, 7)],
        );
        assert_eq!(back.first_index().unwrap(), 101);
        assert_eq!(back.last_index().unwrap(), 101);
        assert_eq!(back.term(100).unwrap(), 7);
    }

    #[test]
    fn entries_respect_the_size_limit_but_return_one_at_least() {
        let mut log = LogStore::default();
        let big = |i| Entry {
            index: i,
            term: 1,
            data: vec![0; 100].into(),
            ..Entry::default()
        };
        log.append(&(1..=10).map(big).collect::<Vec<_>>()).unwrap();
        assert_eq!(log.entries(1, 11, 1, ctx()).unwrap().len(), 1);
        assert_eq!(log.entries(1, 11, 250, ctx()).unwrap().len(), 2);
    }

    /// Entries on disk leave memory but for the last ones and read back from redb;
    /// a compaction keeps what the snapshot's state needs; a new leader's overwrite
    /// below what is held replaces the entries from there.
    #[tokio::test]
    async fn entries_on_disk_leave_memory_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("w.redb")).unwrap();
        let disk = DiskLog {
            store: store.clone(),
            group: 3,
        };
        let mut log = LogStore::default().with_disk(disk.clone());
        let n = HELD_ENTRIES as u64 * 3;
        let all: Vec<Entry> = (1..=n)
            .map(|i| Entry {
                index: i,
                term: 1 + i / 1000,
                data: vec![i as u8; 10].into(),
                ..Entry::default()
            })
            .collect();
        log.append(&all).unwrap();
        log.written(0);
        assert_eq!(log.held(), all.len(), "nothing on disk yet");
        crate::raft_log::write(&store, crate::raft_log::append_ops(3, &all), true)
            .await
            .unwrap();
        log.written(n / 2);
        assert_eq!(log.held() as u64, n - n / 2, "only what is on disk leaves");
        log.written(n);
        assert_eq!(log.held(), HELD_ENTRIES);
        let got = log.entries(5, n + 1, None, ctx()).unwrap();
        assert_eq!(got, all[4..]);
        assert_eq!(
            log.entries(1, 3, 1, ctx()).unwrap(),
            all[..1],
            "one at least"
        );
        for i in [1, 999, 1000, 2001, n] {
            assert_eq!(log.term(i).unwrap(), 1 + i / 1000, "{i}");
        }
        // Read back after a restart, the same.
        let loaded = crate::raft_log::load(&store, 3, 0).unwrap();
        let back = LogStore::restored_paged(
            HardState::default(),
            ConfState::default(),
            None,
            loaded.tail,
            Some(disk),
        );
        assert_eq!(back.held(), HELD_ENTRIES);
        assert_eq!(back.entries(1, n + 1, None, ctx()).unwrap(), all);
        assert_eq!(back.term(2500).unwrap(), 3);

        // The snapshot's state needs entry 10 on: kept, whatever the tail asks.
        let first = log.compact(snapshot(2000, 3), 4, Some(10));
        assert_eq!(first, 10);
        assert_eq!(log.needed_by_snapshot(), Some((10, 2000)));
        assert_eq!(log.term(10).unwrap(), 1);
        assert_eq!(log.term(9).unwrap(), 1, "Raft's dummy entry");
        assert!(log.term(8).is_err());
        // Later it needs 2100 on, past the snapshot: the tail rule alone.
        let first = log.compact(snapshot(2500, 3), 4, Some(2600));
        assert_eq!(first, 2497);
        assert_eq!(log.needed_by_snapshot(), None);

        // A new leader overwrites from 2600, below what is held (from 2049 on).
        let over = Entry {
            index: 2600,
            term: 9,
            ..Entry::default()
        };
        log.append(std::slice::from_ref(&over)).unwrap();
        assert_eq!(log.last_index().unwrap(), 2600);
        assert_eq!(log.term(2600).unwrap(), 9);
        assert_eq!(log.term(2599).unwrap(), 3);
    }

    /// Raft reads the term of the entry before the first it may read (a rejected
    /// append's conflict search can end there; raft-rs panics if it cannot). After a
    /// restart the tail behind the snapshot starts without it: its first entry is the
    /// dummy. A compaction keeps the term it knew.
    #[test]
    fn the_entry_before_the_first_readable_has_a_term() {
        let mut tail = Tail::default();
        for i in 5..=12 {
            tail.push(entry(i, if i < 8 { 2 } else { 3 }));
        }
        // Restarted with a snapshot at 10 (term 3) and `tail` as the stored log.
        let restarted = |tail| {
            LogStore::restored_paged(
                HardState::default(),
                ConfState::default(),
                Some(snapshot(10, 3)),
                tail,
                None,
            )
        };
        let back = restarted(tail);
        let first = back.first_index().unwrap();
        assert_eq!(first, 6);
        assert_eq!(back.term(first - 1).unwrap(), 2);
        assert!(matches!(
            back.entries(5, 7, None, ctx()),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert_eq!(back.entries(6, 13, None, ctx()).unwrap().len(), 7);
        // Every entry kept still travels with the snapshot.
        assert_eq!(back.needed_by_snapshot(), Some((5, 10)));
        // A later compaction that keeps every entry (the snapshot's state needs them)
        // keeps the dummy's term too, though that entry is no longer the snapshot's.
        let mut log = LogStore::default();
        log.install(snapshot(100, 7), Vec::new());
        log.append(&(101..=300).map(|i| entry(i, 8)).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(log.compact(snapshot(300, 8), 10, Some(50)), 101);
        assert_eq!(log.first_index().unwrap(), 101);
        assert_eq!(log.term(100).unwrap(), 7);
        // No tail behind it: the snapshot's own entry is the dummy.
        let mut tail = Tail::default();
        tail.push(entry(11, 3));
        let back = restarted(tail);
        assert_eq!(back.first_index().unwrap(), 11);
        assert_eq!(back.term(10).unwrap(), 3);
    }

    /// raft-rs itself, as a follower restarted with a tail behind its snapshot, asked
    /// to append where its log conflicts down to its first entry: it answers with a
    /// hint rather than panicking (`term(N) must be valid`).
    #[test]
    fn a_restarted_follower_rejects_a_conflicting_append_without_panicking() {
        use raft::prelude::{Message, MessageType};
        let mut tail = Tail::default();
        for i in 5..=12 {
            tail.push(entry(i, 3));
        }
        let hs = HardState {
            term: 3,
            commit: 10,
            ..HardState::default()
        };
        let cs = ConfState {
            voters: vec![1, 2],
            ..ConfState::default()
        };
        let mut snap = snapshot(10, 3);
        snap.mut_metadata().set_conf_state(cs.clone());
        let store = LogStore::restored_paged(hs, cs, Some(snap), tail, None);
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut node =
            raft::RawNode::new(&crate::replica::raft_config(2, 10), store, &logger).unwrap();
        // A leader at term 4 whose entry 12 has term 2: the search for the conflict
        // walks down past the commit index (which a sound leader never makes it do)
        // to the first entry.
        let m = Message {
            msg_type: MessageType::MsgAppend,
            from: 1,
            to: 2,
            term: 4,
            index: 12,
            log_term: 2,
            commit: 10,
            ..Message::default()
        };
        node.step(m).unwrap();
        let ready = node.ready();
        let reply = ready
            .messages()
            .iter()
            .chain(ready.persisted_messages())
            .find(|m| m.get_msg_type() == MessageType::MsgAppendResponse)
            .cloned()
            .expect("an answer");
        // The search ends below the dummy (entry 5), where Raft takes the term as 0.
        assert!(reply.reject);
        assert_eq!((reply.reject_hint, reply.log_term), (4, 0), "{reply:?}");
    }

    #[test]
    fn an_installed_snapshot_keeps_the_entries_that_came_with_it() {
        let mut log = LogStore::default();
        log.append(&(1..=5).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .unwrap();
        log.install(
            snapshot(100, 7),
            vec![entry(98, 6), entry(99, 7), entry(100, 7)],
        );
        // The term of entry 97 did not come: entry 98 is Raft's dummy, and still
        // travels with the snapshot.
        assert_eq!(log.first_index().unwrap(), 99);
        assert_eq!(log.last_index().unwrap(), 100);
        assert_eq!(log.term(98).unwrap(), 6);
        assert!(matches!(
            log.entries(98, 100, None, ctx()),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert_eq!(log.needed_by_snapshot(), Some((98, 100)));
        let sent = log.slice(98, 101, u64::MAX).unwrap();
        assert_eq!(
            sent.iter().map(|e| e.index).collect::<Vec<_>>(),
            [98, 99, 100]
        );
        // Entries that do not reach the snapshot's index are not its log.
        log.install(snapshot(200, 8), vec![entry(150, 8)]);
        assert_eq!(log.first_index().unwrap(), 201);
        assert_eq!(log.needed_by_snapshot(), None);
    }
}
