//! A Raft group's log as Raft reads it ([`raft::Storage`]): hard state, members, the
//! latest snapshot and the entries after the compaction point, in memory. The group's
//! shell writes the same to redb ([`crate::raft_log`]) and reads it back at start: the
//! snapshot and the tail, never the whole history.
//!
//! Compaction keeps a tail of entries behind the snapshot (an eighth of the snapshot
//! interval), so that a follower a little behind catches up with entries rather than
//! a whole snapshot.

use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

#[cfg(test)]
const KEEP_BEHIND: u64 = 1024;

/// The log in memory (see the module documentation).
#[derive(Default)]
pub struct LogStore {
    hard_state: HardState,
    conf_state: ConfState,
    /// The latest snapshot (index 0 when there is none yet).
    snapshot: Snapshot,
    /// The index just before the first entry held: everything up to it is compacted.
    base: u64,
    /// The entries from `base + 1` on, contiguous.
    entries: Vec<Entry>,
    /// Raft asked for a snapshot for a member the latest one does not name (a node
    /// that joined after it was taken, which Raft would refuse it): take a new one.
    wanted: std::cell::Cell<bool>,
}

impl LogStore {
    /// The log as it was stored: its state, its latest snapshot (if any) and the
    /// entries after the compaction point.
    pub(crate) fn restored(
        hard_state: HardState,
        conf_state: ConfState,
        snapshot: Option<Snapshot>,
        entries: Vec<Entry>,
    ) -> LogStore {
        let snapshot = snapshot.unwrap_or_default();
        let snap_index = snapshot.get_metadata().index;
        // The tail kept behind the snapshot, if any (compaction stores the snapshot in
        // the transaction that drops entries, so there is never a gap).
        let base = entries
            .first()
            .map_or(snap_index, |first| first.index.saturating_sub(1));
        LogStore {
            hard_state,
            conf_state,
            snapshot,
            base,
            entries,
            wanted: Default::default(),
        }
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

    /// The last index held (the snapshot's when no entry follows it).
    pub(crate) fn last(&self) -> u64 {
        self.entries.last().map_or(self.base, |e| e.index)
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
        if first.index > self.last() + 1 {
            return Err(raft::Error::Store(StorageError::Other(
                format!(
                    "a gap in the metadata log: entry {} after {}",
                    first.index,
                    self.last()
                )
                .into(),
            )));
        }
        let keep = (first.index - self.base - 1) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    /// Takes `snapshot` as the latest and drops the entries more than `keep` behind
    /// it. Returns the first index kept.
    pub(crate) fn compact(&mut self, snapshot: Snapshot, keep: u64) -> u64 {
        let index = snapshot.get_metadata().index;
        self.snapshot = snapshot;
        let base = index.saturating_sub(keep).max(self.base);
        let drop = (base - self.base) as usize;
        self.entries.drain(..drop.min(self.entries.len()));
        self.base = base;
        base + 1
    }

    /// Takes a snapshot from the leader: everything held is replaced by it.
    pub(crate) fn install(&mut self, snapshot: Snapshot) {
        let meta = snapshot.get_metadata();
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = meta.index;
        self.conf_state = meta.get_conf_state().clone();
        self.base = meta.index;
        self.entries.clear();
        self.snapshot = snapshot;
    }

    /// Whether Raft wanted a newer snapshot than the latest since the last call.
    pub(crate) fn take_wanted(&self) -> bool {
        self.wanted.take()
    }

    /// How many entries are held.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn at(&self, index: u64) -> Option<&Entry> {
        let offset = index.checked_sub(self.base + 1)?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    /// The term of entry `index`, if it is held (or is the snapshot's).
    pub(crate) fn term_of(&self, index: u64) -> Option<u64> {
        let snap = self.snapshot.get_metadata();
        if index == snap.index && index > 0 {
            return Some(snap.term);
        }
        self.at(index).map(|e| e.term)
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
        if low <= self.base {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let from = (low - self.base - 1) as usize;
        let to = (high - self.base - 1) as usize;
        let mut out = Vec::with_capacity(to - from);
        let (limit, mut size) = (max_size.into().unwrap_or(u64::MAX), 0u64);
        for e in &self.entries[from..to] {
            size += protobuf::Message::compute_size(e) as u64;
            // At least one entry, whatever its size.
            if !out.is_empty() && size > limit {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
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
        Ok(self.base + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
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
        Ok(self.snapshot.clone())
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
        let first = log.compact(snapshot(2 * KEEP_BEHIND + 10, 1), KEEP_BEHIND);
        assert_eq!(first, KEEP_BEHIND + 11);
        assert_eq!(log.first_index().unwrap(), first);
        assert_eq!(log.last_index().unwrap(), n);
        assert_eq!(log.len() as u64, n - KEEP_BEHIND - 10);
        assert!(matches!(
            log.entries(first - 1, first + 1, None, ctx()),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert!(matches!(
            log.term(first - 1),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert_eq!(log.term(2 * KEEP_BEHIND + 10).unwrap(), 1);
        assert!(log.snapshot(0, 2).is_err(), "the snapshot does not name 2");
        assert!(log.take_wanted() && !log.take_wanted());
        let mut named = snapshot(2 * KEEP_BEHIND + 10, 1);
        named.mut_metadata().mut_conf_state().voters = vec![1, 2];
        log.compact(named, KEEP_BEHIND);
        assert_eq!(
            log.snapshot(0, 2).unwrap().get_metadata().index,
            2 * KEEP_BEHIND + 10
        );
        // A later, smaller compaction never goes backwards.
        let again = log.compact(snapshot(2 * KEEP_BEHIND + 20, 1), KEEP_BEHIND);
        assert_eq!(again, KEEP_BEHIND + 21);
    }

    #[test]
    fn an_installed_snapshot_replaces_the_log_and_the_state_reads_back() {
        let mut log = LogStore::default();
        log.append(&(1..=5).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .unwrap();
        let mut snap = snapshot(100, 7);
        snap.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        log.install(snap);
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
}
