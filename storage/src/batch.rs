//! What callers ask the store to write: a [`Batch`] of [`Op`]s, applied
//! atomically, in order, in one redb transaction (possibly shared with other
//! batches).

use serde::{Deserialize, Serialize};

use crate::tables::MetaTable;

/// One write. Serialisable for the journal (`journal.rs`), whose records hold
/// the ops of a group: a field added to a variant changes the journal's format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Insert or replace a metadata record.
    PutMeta {
        /// Which metadata table.
        table: MetaTable,
        /// The caller-built key (e.g. `"/\u{0}orders"`).
        key: String,
        /// The encoded record (see [`crate::codec`]).
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Remove a metadata record; no effect if it is absent.
    DeleteMeta {
        /// Which metadata table.
        table: MetaTable,
        /// The key to remove.
        key: String,
    },
    /// A queue message: `index` is a small record (read at recovery for every
    /// message), `body` the full encoded message (read only when delivered).
    PutMessage {
        /// The queue's id (from [`crate::Store::allocate_id`]).
        queue: u64,
        /// The message's sequence number within the queue.
        seq: u64,
        /// The small per-message record read at recovery.
        #[serde(with = "serde_bytes")]
        index: Vec<u8>,
        /// The full encoded message.
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    /// Replace a message's index record (e.g. its delivery count after a
    /// requeue). No effect if the message is not stored (already acked), so a
    /// late update never resurrects a deleted message.
    UpdateIndex {
        /// The queue's id.
        queue: u64,
        /// The message's sequence number.
        seq: u64,
        /// The new index record.
        #[serde(with = "serde_bytes")]
        index: Vec<u8>,
    },
    /// Remove one message (index and body); no effect if absent.
    DeleteMessage {
        /// The queue's id.
        queue: u64,
        /// The message's sequence number.
        seq: u64,
    },
    /// Remove every message of a queue (purge, delete).
    DeleteQueueMessages {
        /// The queue's id.
        queue: u64,
    },
    /// Insert or replace a record of a replication log (a Raft group): `index` 0
    /// holds the group's own state (term, vote, members), 1.. its entries.
    PutLogRecord {
        /// The Raft group (0: the cluster's metadata).
        group: u64,
        /// Position in the group's log: 0 for the group's own state, 1.. for
        /// entries, so that one range scan reads the state and then the log.
        index: u64,
        /// The encoded state or entry, opaque to the store.
        #[serde(with = "serde_bytes")]
        record: Vec<u8>,
    },
    /// Remove the records of a replication log from `index` on (a leader
    /// overwrote them).
    TruncateLog {
        /// The Raft group whose log is cut; other groups are untouched.
        group: u64,
        /// The first index removed.
        from: u64,
    },
    /// Remove the entries of a replication log before `before` (a snapshot stands
    /// for them); the group's state record (index 0) stays.
    CompactLog {
        /// The Raft group whose log is compacted; other groups are untouched.
        group: u64,
        /// The first index kept.
        before: u64,
    },
    /// Store (replace) the latest snapshot of a replication log.
    PutLogSnapshot {
        /// The Raft group.
        group: u64,
        /// The encoded snapshot, opaque to the store.
        #[serde(with = "serde_bytes")]
        snapshot: Vec<u8>,
    },
    /// Remove a replication log whole: its state record, entries and snapshot (the
    /// group is gone from this node).
    DropLog {
        /// The Raft group.
        group: u64,
    },
    /// Append a chunk to a partition's log (see `partition.log`), with its entries in
    /// the key index, and in the timestamp index when it is the first chunk of a time
    /// interval.
    AppendChunk {
        /// The partition's id (from [`crate::Store::allocate_id`]).
        partition: u64,
        /// The offset of the chunk's first message: its key.
        first: u64,
        /// The timestamp index's key for the chunk (the start, in milliseconds since
        /// the Unix epoch, of the interval it is the first chunk of), or `None`: a
        /// chunk of an interval already indexed. Written only if absent.
        time_index: Option<u64>,
        /// The encoded chunk, opaque to the store.
        #[serde(with = "serde_bytes")]
        chunk: Vec<u8>,
        /// The chunk's keyed messages, as (key hash, offset), for the key index.
        keys: Vec<(u64, u64)>,
    },
    /// Remove the chunks of a partition's log that begin before offset `before`,
    /// and their timestamp entries (those before `before_ms`): retention.
    DropChunks {
        /// The partition.
        partition: u64,
        /// The first offset of the first chunk kept.
        before: u64,
        /// The timestamp of the first chunk kept.
        before_ms: u64,
        /// The key index entries of the chunks dropped, as (key hash, offset).
        keys: Vec<(u64, u64)>,
    },
    /// Remove a partition's log whole, and its consumer groups' offsets (the stream
    /// was deleted).
    DropPartition {
        /// The partition.
        partition: u64,
    },
    /// Store the offset a consumer group of a partition goes on from.
    PutConsumerOffset {
        /// The partition.
        partition: u64,
        /// The group (with its member, for a broadcast group).
        group: String,
        /// The first offset the group has not processed.
        offset: u64,
    },
    /// Store a message an `x-delayed-message` exchange holds until `due` (see
    /// `delayed.messages`).
    PutDelayed {
        /// The exchange, as `"VHOST\0NAME"`.
        exchange: String,
        /// When it is due, in milliseconds since the Unix epoch.
        due: u64,
        /// Tells apart messages due at the same millisecond (an id from
        /// [`crate::Store::allocate_id`]).
        seq: u64,
        /// The encoded message, opaque to the store.
        #[serde(with = "serde_bytes")]
        message: Vec<u8>,
    },
    /// Remove delayed messages of an exchange (delivered); absent ones are skipped.
    DeleteDelayed {
        /// The exchange, as `"VHOST\0NAME"`.
        exchange: String,
        /// The messages, as (due, seq).
        keys: Vec<(u64, u64)>,
    },
    /// Remove every delayed message of an exchange (it was deleted).
    DropDelayed {
        /// The exchange, as `"VHOST\0NAME"`.
        exchange: String,
    },
}

impl Op {
    /// Bytes of keys and values this op carries, used to bound the size of one
    /// group commit.
    pub fn payload_len(&self) -> usize {
        match self {
            Op::PutMeta { key, value, .. } => key.len() + value.len(),
            Op::DeleteMeta { key, .. } => key.len(),
            Op::PutMessage { index, body, .. } => 16 + index.len() + body.len(),
            Op::UpdateIndex { index, .. } => 16 + index.len(),
            Op::DeleteMessage { .. } | Op::DeleteQueueMessages { .. } => 16,
            Op::PutLogRecord { record, .. } => 16 + record.len(),
            Op::TruncateLog { .. } | Op::CompactLog { .. } | Op::DropLog { .. } => 16,
            Op::PutLogSnapshot { snapshot, .. } => 8 + snapshot.len(),
            Op::AppendChunk { chunk, keys, .. } => 24 + chunk.len() + 16 * keys.len(),
            Op::DropChunks { keys, .. } => 24 + 16 * keys.len(),
            Op::DropPartition { .. } => 16,
            Op::PutConsumerOffset { group, .. } => 24 + group.len(),
            Op::PutDelayed {
                exchange, message, ..
            } => 16 + exchange.len() + message.len(),
            Op::DeleteDelayed { exchange, keys } => exchange.len() + 16 * keys.len(),
            Op::DropDelayed { exchange } => exchange.len(),
        }
    }

    /// The largest single key or value in this op, checked against redb's limit
    /// before the op joins a shared transaction.
    pub(crate) fn largest_value(&self) -> usize {
        match self {
            Op::PutMeta { key, value, .. } => key.len().max(value.len()),
            Op::DeleteMeta { key, .. } => key.len(),
            Op::PutMessage { index, body, .. } => index.len().max(body.len()),
            Op::UpdateIndex { index, .. } => index.len(),
            Op::PutLogRecord { record, .. } => record.len(),
            Op::PutLogSnapshot { snapshot, .. } => snapshot.len(),
            Op::AppendChunk { chunk, .. } => chunk.len(),
            Op::DropChunks { .. } | Op::DropPartition { .. } => 0,
            Op::PutConsumerOffset { group, .. } => group.len() + 17,
            Op::PutDelayed {
                exchange, message, ..
            } => (exchange.len() + 16).max(message.len()),
            Op::DeleteDelayed { exchange, .. } | Op::DropDelayed { exchange } => {
                exchange.len() + 16
            }
            Op::DeleteMessage { .. }
            | Op::DeleteQueueMessages { .. }
            | Op::TruncateLog { .. }
            | Op::CompactLog { .. }
            | Op::DropLog { .. } => 0,
        }
    }
}

/// Writes that commit together: all of them or none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Applied in order; a later op sees the effect of an earlier one.
    pub ops: Vec<Op>,
    /// Whether the caller needs the batch fsynced before its
    /// [`Commit`](crate::Commit) resolves. A non-durable batch is visible to
    /// reads once committed, and reaches the disk with the next durable commit or
    /// within [`StoreOptions::flush_interval`](crate::StoreOptions::flush_interval).
    pub durable: bool,
}

impl Batch {
    /// A batch that is fsynced before its commit resolves.
    pub fn durable(ops: Vec<Op>) -> Batch {
        Batch { ops, durable: true }
    }

    /// A batch that resolves once committed in memory; it reaches the disk with
    /// the next durable commit or within the flush interval.
    pub fn non_durable(ops: Vec<Op>) -> Batch {
        Batch {
            ops,
            durable: false,
        }
    }

    /// Total bytes of keys and values in the batch.
    pub fn payload_len(&self) -> usize {
        self.ops.iter().map(Op::payload_len).sum()
    }
}
