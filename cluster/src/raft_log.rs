//! Raft logs in the node's redb (the metadata's, group 0, and later other groups'),
//! and the ids Raft knows members by.
//!
//! Group 0 of the `replication.log` table holds the metadata log: index 0 is a
//! [`RaftRecord`] (hard state, members, the last applied index and who is who), the
//! indices from 1 are the entries, each a protobuf-encoded `eraftpb::Entry` (Raft's own
//! format, so the log reads back exactly as Raft wrote it). Group 0 of the
//! `replication.snapshot` table holds the latest snapshot (an `eraftpb::Snapshot`);
//! the entries it stands for are removed in the transaction that stores it, but for
//! a tail kept for followers a little behind.

use std::collections::BTreeMap;

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use serde::{Deserialize, Serialize};
use warren_storage::{Batch, Op, Store};

use crate::log_store::{Tail, HELD_BYTES, HELD_ENTRIES};

/// The replication-log group of the cluster's metadata.
pub const METADATA_GROUP: u64 = 0;

/// The Raft id of the member named `name`: a stable hash of the name (Raft needs
/// numbers; members are known by name), never 0 (Raft's "nobody").
pub fn raft_id(name: &str) -> u64 {
    // FNV-1a: stable across builds and platforms, unlike the std hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}

/// What index 0 of the metadata log holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RaftRecord {
    /// `eraftpb::HardState` (term, vote, commit), protobuf-encoded.
    pub hard_state: Vec<u8>,
    /// `eraftpb::ConfState` (voters, learners), protobuf-encoded.
    pub conf_state: Vec<u8>,
    /// The last entry applied to this node's broker state.
    pub applied: u64,
    /// Raft id -> member name, for every member the log has named.
    pub names: BTreeMap<u64, String>,
    /// The voters the group was formed with (before entry 1): a joining node starts
    /// from them, then the log's membership changes bring it up to date.
    pub base_voters: Vec<u64>,
}

/// A group's log as it was stored.
pub struct Loaded {
    /// Index 0 as stored (the default when nothing was).
    pub record: RaftRecord,
    /// The record's hard state, decoded.
    pub hard_state: HardState,
    /// The record's members, decoded.
    pub conf_state: ConfState,
    /// The entries kept (after the compaction point): their terms and the last ones.
    pub(crate) tail: Tail,
    /// The entries up to the last applied one from `window` entries before it on
    /// (the applier rebuilds its filter of proposals applied twice from them).
    pub window: Vec<Entry>,
    /// The latest snapshot, if one was taken or received.
    pub snapshot: Option<Snapshot>,
}

/// Why the stored log could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the raft log: {0}")]
pub struct LogError(pub String);

/// Reads the log of `group` (nothing stored: an empty log), holding the last
/// entries only (see `Tail`) and the `window` entries up to the last applied one.
pub fn load(store: &Store, group: u64, window: u64) -> Result<Loaded, LogError> {
    let mut record = None;
    let mut tail = Tail::default();
    let mut held_bytes = 0;
    let mut window_entries = Vec::new();
    let mut failed = None;
    store
        .for_each_log_record(group, 0, u64::MAX, |index, bytes| {
            if index == 0 {
                match warren_storage::codec::decode::<RaftRecord>(bytes) {
                    Ok(r) => record = Some(r),
                    Err(e) => failed = Some(format!("its state record: {e}")),
                }
                return failed.is_none();
            }
            let entry = match Entry::parse_from_bytes(bytes) {
                Ok(entry) => entry,
                Err(e) => {
                    failed = Some(format!("entry {index}: {e}"));
                    return false;
                }
            };
            let applied = record.as_ref().map_or(0, |r| r.applied);
            if window > 0 && index <= applied && index + window > applied {
                window_entries.push(entry.clone());
            }
            held_bytes += entry.data.len();
            tail.push(entry);
            // Only the last ones stay (the others are read back when asked for).
            while tail.held.len() > HELD_ENTRIES || held_bytes > HELD_BYTES {
                match tail.held.pop_front() {
                    Some(e) => held_bytes -= e.data.len(),
                    None => break,
                }
            }
            true
        })
        .map_err(|e| LogError(e.to_string()))?;
    if let Some(e) = failed {
        return Err(LogError(e));
    }
    let record = record.unwrap_or_default();
    let hard_state = if record.hard_state.is_empty() {
        HardState::default()
    } else {
        HardState::parse_from_bytes(&record.hard_state)
            .map_err(|e| LogError(format!("its hard state: {e}")))?
    };
    let conf_state = if record.conf_state.is_empty() {
        ConfState::default()
    } else {
        ConfState::parse_from_bytes(&record.conf_state)
            .map_err(|e| LogError(format!("its members: {e}")))?
    };
    let snapshot = store
        .read_log_snapshot(group)
        .map_err(|e| LogError(e.to_string()))?
        .map(|bytes| Snapshot::parse_from_bytes(&bytes))
        .transpose()
        .map_err(|e| LogError(format!("its snapshot: {e}")))?;
    Ok(Loaded {
        record,
        hard_state,
        conf_state,
        tail,
        window: window_entries,
        snapshot,
    })
}

/// The ops that store new entries of `group` (replacing any from the first one's
/// index on).
pub fn append_ops(group: u64, entries: &[Entry]) -> Vec<Op> {
    let Some(first) = entries.first() else {
        return Vec::new();
    };
    let mut ops = vec![Op::TruncateLog {
        group,
        from: first.index,
    }];
    ops.extend(entries.iter().map(|e| Op::PutLogRecord {
        group,
        index: e.index,
        record: e.write_to_bytes().unwrap_or_default(),
    }));
    ops
}

/// The ops that store `snapshot` and drop the entries before `keep_from` (a
/// snapshot this node took).
pub fn compact_ops(group: u64, snapshot: &Snapshot, keep_from: u64) -> Vec<Op> {
    vec![
        Op::PutLogSnapshot {
            group,
            snapshot: snapshot.write_to_bytes().unwrap_or_default(),
        },
        Op::CompactLog {
            group,
            before: keep_from,
        },
    ]
}

/// The ops that store `snapshot` in place of the whole log (a snapshot from the
/// leader), with the entries its state needs (`kept`) as the log behind it.
pub fn install_ops(group: u64, snapshot: &Snapshot, kept: &[Entry]) -> Vec<Op> {
    let mut ops = vec![
        Op::PutLogSnapshot {
            group,
            snapshot: snapshot.write_to_bytes().unwrap_or_default(),
        },
        Op::TruncateLog { group, from: 1 },
    ];
    ops.extend(kept.iter().map(|e| Op::PutLogRecord {
        group,
        index: e.index,
        record: e.write_to_bytes().unwrap_or_default(),
    }));
    ops
}

/// The op that removes the log of `group` whole (record, entries, snapshot).
pub fn drop_op(group: u64) -> Op {
    Op::DropLog { group }
}

/// The op that stores the state record of `group`.
pub fn record_op(group: u64, record: &RaftRecord) -> Op {
    Op::PutLogRecord {
        group,
        index: 0,
        record: warren_storage::codec::encode(record).unwrap_or_default(),
    }
}

/// Writes `ops`, fsynced when `durable`.
pub async fn write(store: &Store, ops: Vec<Op>, durable: bool) -> Result<(), LogError> {
    if ops.is_empty() {
        return Ok(());
    }
    let batch = if durable {
        Batch::durable(ops)
    } else {
        Batch::non_durable(ops)
    };
    store
        .submit(batch)
        .await
        .map_err(|e| LogError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_distinct_and_never_zero() {
        assert_eq!(raft_id("n1"), raft_id("n1"));
        assert_ne!(raft_id("n1"), raft_id("n2"));
        assert_ne!(raft_id(""), 0);
    }

    #[tokio::test]
    async fn the_log_reads_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("w.redb")).unwrap();
        let entry = |index: u64, term| Entry {
            index,
            term,
            data: vec![index as u8].into(),
            ..Entry::default()
        };
        let mut record = RaftRecord {
            applied: 2,
            ..RaftRecord::default()
        };
        record.names.insert(raft_id("n1"), "n1".into());
        let hs = HardState {
            term: 3,
            ..HardState::default()
        };
        record.hard_state = hs.write_to_bytes().unwrap();
        let mut ops = append_ops(0, &[entry(1, 1), entry(2, 1), entry(3, 1)]);
        ops.push(record_op(0, &record));
        write(&store, ops, true).await.unwrap();
        // A new leader overwrites entry 3 on.
        write(&store, append_ops(0, &[entry(3, 2)]), true)
            .await
            .unwrap();
        let loaded = load(&store, 0, 10).unwrap();
        assert_eq!(loaded.tail.held.len(), 3);
        assert_eq!(loaded.tail.held[2].term, 2);
        assert_eq!(loaded.tail.runs, [(1, 1), (3, 2)]);
        assert_eq!(
            loaded.window.iter().map(|e| e.index).collect::<Vec<_>>(),
            [1, 2],
            "up to the applied one"
        );
        assert_eq!(loaded.hard_state.term, 3);
        assert_eq!(loaded.record.applied, 2);
        assert_eq!(loaded.record.names[&raft_id("n1")], "n1");
        assert!(loaded.snapshot.is_none());
        // A snapshot at 2 compacts entry 1 and reads back with the tail.
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 2;
        snap.mut_metadata().term = 1;
        snap.data = vec![9].into();
        write(&store, compact_ops(0, &snap, 2), true).await.unwrap();
        let loaded = load(&store, 0, 0).unwrap();
        assert_eq!(
            loaded.tail.held.iter().map(|e| e.index).collect::<Vec<_>>(),
            [2, 3]
        );
        assert!(loaded.window.is_empty());
        assert_eq!(loaded.snapshot.unwrap().get_metadata().index, 2);
        // A snapshot from the leader replaces the whole log.
        snap.mut_metadata().index = 10;
        write(
            &store,
            install_ops(0, &snap, &[entry(9, 1), entry(10, 1)]),
            true,
        )
        .await
        .unwrap();
        let loaded = load(&store, 0, 0).unwrap();
        assert_eq!(
            loaded.tail.held.iter().map(|e| e.index).collect::<Vec<_>>(),
            [9, 10],
            "the entries that came with it"
        );
        assert_eq!(loaded.record.applied, 2, "the state record stays");
        assert_eq!(loaded.snapshot.unwrap().get_metadata().index, 10);
    }
}
