//! A simulated node's disk, at the level of the store's [`Op`]s: the rows of the
//! replication log, (group, index) -> bytes (index 0 the group's state record, 1.. its
//! entries), and the snapshot row per group; what a node restarts from after a crash.
//!
//! The node submits the [`Write`]s its `RaftGroup` asks for; they complete in
//! submission order, each at a time the node drew when it submitted it (as the
//! group-commit writer commits in order). A completed durable write is on disk; a
//! completed non-durable one (`durable: false`) only becomes durable with the next
//! completed durable write (as a redb commit without fsync does). A crash loses every
//! write not completed, and the completed non-durable ones since the last durable one.

use std::collections::{BTreeMap, VecDeque};

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use warren_storage::Op;

use super::client::Millis;
use crate::raft_group::Write;
use crate::raft_log::RaftRecord;

/// What survives a crash.
#[derive(Clone, Default)]
struct Rows {
    /// The replication log, (group, index) -> bytes.
    log: BTreeMap<(u64, u64), Vec<u8>>,
    /// The latest snapshot of each group.
    snapshots: BTreeMap<u64, Vec<u8>>,
}

impl Rows {
    /// What the store's writer does with `op` (storage/src/writer.rs).
    fn apply(&mut self, op: &Op) {
        match op {
            Op::PutLogRecord {
                group,
                index,
                record,
            } => {
                self.log.insert((*group, *index), record.clone());
            }
            Op::TruncateLog { group, from } => {
                let gone: Vec<_> = self
                    .log
                    .range((*group, *from)..=(*group, u64::MAX))
                    .map(|(k, _)| *k)
                    .collect();
                for k in gone {
                    self.log.remove(&k);
                }
            }
            Op::CompactLog { group, before } => {
                if *before > 1 {
                    let gone: Vec<_> = self
                        .log
                        .range((*group, 1)..(*group, *before))
                        .map(|(k, _)| *k)
                        .collect();
                    for k in gone {
                        self.log.remove(&k);
                    }
                }
            }
            Op::PutLogSnapshot { group, snapshot } => {
                self.snapshots.insert(*group, snapshot.clone());
            }
            Op::DropLog { group } => {
                self.log.retain(|(g, _), _| g != group);
                self.snapshots.remove(group);
            }
            other => panic!("the metadata group wrote a non-log op: {other:?}"),
        }
    }
}

/// A write submitted and not completed yet.
struct Pending {
    ready: Option<u64>,
    ops: Vec<Op>,
    durable: bool,
    done_at: Millis,
}

/// What a crash took from a disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Lost {
    /// Writes submitted and not completed.
    pub(super) pending: usize,
    /// Ops of completed non-durable writes not followed by a durable one.
    pub(super) unsynced: usize,
}

/// The log of a group as stored (what `raft_log::load` returns).
pub(super) struct Loaded {
    pub(super) record: RaftRecord,
    pub(super) hard_state: HardState,
    pub(super) conf_state: ConfState,
    pub(super) entries: Vec<Entry>,
    pub(super) snapshot: Option<Snapshot>,
}

/// A node's disk (see the module documentation).
#[derive(Default)]
pub(super) struct SimDisk {
    /// Durable.
    synced: Rows,
    /// Completed without fsync since the last durable write: lost in a crash.
    unsynced: Vec<Op>,
    /// Submitted, not completed: lost in a crash.
    pending: VecDeque<Pending>,
}

impl SimDisk {
    /// A fresh node's disk: its state record names the members, nothing else.
    pub(super) fn new(group: u64, conf_state: &ConfState) -> SimDisk {
        let record = RaftRecord {
            conf_state: conf_state.write_to_bytes().expect("a conf state encodes"),
            base_voters: conf_state.voters.clone(),
            ..RaftRecord::default()
        };
        let mut disk = SimDisk::default();
        disk.synced
            .apply(&crate::raft_log::record_op(group, &record));
        disk
    }

    /// Submits `write`, to complete at `done_at` (not before the writes before it).
    /// When it completes.
    pub(super) fn submit(&mut self, write: Write, done_at: Millis) -> Millis {
        let done_at = self
            .pending
            .back()
            .map_or(done_at, |p| p.done_at.max(done_at));
        self.pending.push_back(Pending {
            ready: write.ready,
            ops: write.ops,
            durable: write.durable,
            done_at,
        });
        done_at
    }

    /// Completes the writes due by `now`, in order; the last ready number among them.
    pub(super) fn complete_due(&mut self, now: Millis) -> Option<u64> {
        let mut last = None;
        while self.pending.front().is_some_and(|p| p.done_at <= now) {
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            self.unsynced.extend(p.ops);
            if p.durable {
                for op in self.unsynced.drain(..) {
                    self.synced.apply(&op);
                }
            }
            if p.ready.is_some() {
                last = p.ready;
            }
        }
        last
    }

    /// A crash: what was not durable is gone. What was lost.
    pub(super) fn crash(&mut self) -> Lost {
        let lost = Lost {
            pending: self.pending.len(),
            unsynced: self.unsynced.len(),
        };
        self.pending.clear();
        self.unsynced.clear();
        lost
    }

    /// Test-only damage: the node forgets whom it voted for (see `Sabotage`).
    pub(super) fn forget_vote(&mut self, group: u64) {
        let mut loaded = self.load(group);
        loaded.hard_state.vote = 0;
        loaded.record.hard_state = loaded.hard_state.write_to_bytes().unwrap_or_default();
        self.synced
            .apply(&crate::raft_log::record_op(group, &loaded.record));
    }

    /// The durable hard state of `group` (its state record's, decoded).
    pub(super) fn hard_state(&self, group: u64) -> HardState {
        let Some(bytes) = self.synced.log.get(&(group, 0)) else {
            return HardState::default();
        };
        let record: RaftRecord =
            warren_storage::codec::decode(bytes).expect("the state record decodes");
        if record.hard_state.is_empty() {
            return HardState::default();
        }
        HardState::parse_from_bytes(&record.hard_state).expect("the hard state decodes")
    }

    /// Reads the log of `group` back, as `raft_log::load` reads redb: the record at
    /// index 0 (`warren_storage::codec`), the entries (protobuf `Entry`), the
    /// snapshot (protobuf `Snapshot`). Only what is durable.
    pub(super) fn load(&self, group: u64) -> Loaded {
        let mut record = RaftRecord::default();
        let mut entries = Vec::new();
        for ((_, index), bytes) in self.synced.log.range((group, 0)..=(group, u64::MAX)) {
            if *index == 0 {
                record = warren_storage::codec::decode(bytes).expect("the state record decodes");
            } else {
                entries.push(Entry::parse_from_bytes(bytes).expect("an entry decodes"));
            }
        }
        let hard_state = if record.hard_state.is_empty() {
            HardState::default()
        } else {
            HardState::parse_from_bytes(&record.hard_state).expect("the hard state decodes")
        };
        let conf_state = if record.conf_state.is_empty() {
            ConfState::default()
        } else {
            ConfState::parse_from_bytes(&record.conf_state).expect("the members decode")
        };
        let snapshot = self
            .synced
            .snapshots
            .get(&group)
            .map(|b| Snapshot::parse_from_bytes(b).expect("the snapshot decodes"));
        Loaded {
            record,
            hard_state,
            conf_state,
            entries,
            snapshot,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft_log::{append_ops, compact_ops, record_op};

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Entry::default()
        }
    }

    fn write(ready: Option<u64>, ops: Vec<Op>, durable: bool) -> Write {
        Write {
            ready,
            ops,
            durable,
        }
    }

    #[test]
    fn writes_complete_in_order_and_a_crash_loses_what_is_not_durable() {
        let mut disk = SimDisk::new(0, &ConfState::default());
        disk.submit(
            write(Some(1), append_ops(0, &[entry(1, 1), entry(2, 1)]), true),
            5,
        );
        // Submitted later with an earlier time: it still completes after the first.
        assert_eq!(
            disk.submit(write(Some(2), append_ops(0, &[entry(3, 1)]), false), 2),
            5
        );
        assert_eq!(disk.complete_due(4), None);
        assert_eq!(disk.complete_due(5), Some(2));
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 2;
        snap.mut_metadata().term = 1;
        disk.submit(write(None, compact_ops(0, &snap, 2), false), 6);
        disk.complete_due(6);
        // Entry 3 and the compaction completed without fsync: a crash loses them.
        assert_eq!(
            disk.crash(),
            Lost {
                pending: 0,
                unsynced: 4
            }
        );
        let loaded = disk.load(0);
        assert_eq!(loaded.entries.len(), 2);
        assert!(loaded.snapshot.is_none());
        // A later durable write makes the non-durable ones before it durable.
        disk.submit(write(None, compact_ops(0, &snap, 2), false), 7);
        disk.submit(
            write(Some(3), vec![record_op(0, &RaftRecord::default())], true),
            7,
        );
        disk.submit(write(Some(4), append_ops(0, &[entry(3, 2)]), true), 9);
        assert_eq!(disk.complete_due(8), Some(3));
        assert_eq!(
            disk.crash(),
            Lost {
                pending: 1,
                unsynced: 0
            },
            "the write not completed"
        );
        let loaded = disk.load(0);
        assert_eq!(
            loaded.entries.iter().map(|e| e.index).collect::<Vec<_>>(),
            [2]
        );
        assert_eq!(loaded.snapshot.unwrap().get_metadata().index, 2);
    }
}
