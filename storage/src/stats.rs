//! Counters of the writer, for tests (did group commit group?) and benchmarks.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the writer's counters since the store was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Write transactions committed (durable or not), including the commits
    /// that only flush earlier non-durable ones or apply journaled groups (a
    /// journaled group is not a transaction of its own: the writer applies
    /// several in one).
    pub commits: u64,
    /// Durable commits: each ends with redb's fsync of the file (with quick
    /// repair on, redb syncs twice per durable commit).
    pub fsyncs: u64,
    /// Batches answered with success. `batches / commits` is the average group.
    pub batches: u64,
    /// Ops applied in committed transactions.
    pub ops: u64,
    /// Bytes of keys and values in committed ops.
    pub bytes: u64,
    /// Commits that failed (every batch of the group got the error).
    pub failed_commits: u64,
    /// The largest number of batches that shared one commit.
    pub largest_group: u64,
    /// Groups written to the journal (applied to redb later, several in one
    /// commit without fsync).
    pub journal_records: u64,
    /// Journal records fsynced (groups with a durable batch).
    pub journal_syncs: u64,
    /// Bytes written to the journal, headers included.
    pub journal_bytes: u64,
}

/// The live counters behind [`StoreStats`]. Written only by the writer thread,
/// read by anyone; relaxed ordering is enough for counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    commits: AtomicU64,
    fsyncs: AtomicU64,
    batches: AtomicU64,
    ops: AtomicU64,
    bytes: AtomicU64,
    failed_commits: AtomicU64,
    largest_group: AtomicU64,
    journal_records: AtomicU64,
    journal_syncs: AtomicU64,
    journal_bytes: AtomicU64,
}

impl Counters {
    /// Records one successful group of `batches` batches: a write transaction
    /// (`transaction`: the group was committed to redb, not only journaled) or a
    /// transaction alone (applying journaled groups: no batches).
    pub(crate) fn committed(
        &self,
        transaction: bool,
        durable: bool,
        batches: u64,
        ops: u64,
        bytes: u64,
    ) {
        if transaction {
            self.commits.fetch_add(1, Ordering::Relaxed);
        }
        if durable {
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        self.batches.fetch_add(batches, Ordering::Relaxed);
        self.ops.fetch_add(ops, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.largest_group.fetch_max(batches, Ordering::Relaxed);
    }

    /// Records one group written to the journal.
    pub(crate) fn journaled(&self, bytes: u64, synced: bool) {
        self.journal_records.fetch_add(1, Ordering::Relaxed);
        if synced {
            self.journal_syncs.fetch_add(1, Ordering::Relaxed);
        }
        self.journal_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self) {
        self.failed_commits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> StoreStats {
        StoreStats {
            commits: self.commits.load(Ordering::Relaxed),
            fsyncs: self.fsyncs.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            ops: self.ops.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            failed_commits: self.failed_commits.load(Ordering::Relaxed),
            largest_group: self.largest_group.load(Ordering::Relaxed),
            journal_records: self.journal_records.load(Ordering::Relaxed),
            journal_syncs: self.journal_syncs.load(Ordering::Relaxed),
            journal_bytes: self.journal_bytes.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_sums_commits_and_keeps_the_largest_group() {
        let counters = Counters::default();
        counters.committed(true, true, 3, 10, 100);
        counters.committed(true, false, 5, 1, 7);
        counters.failed();
        let stats = counters.snapshot();
        assert_eq!(stats.commits, 2);
        assert_eq!(stats.fsyncs, 1);
        assert_eq!(stats.batches, 8);
        assert_eq!(stats.ops, 11);
        assert_eq!(stats.bytes, 107);
        assert_eq!(stats.failed_commits, 1);
        assert_eq!(stats.largest_group, 5);
    }
}
