//! Recovery and delivery reads. Each runs in its own redb read transaction (a
//! consistent snapshot), from any thread, concurrently with the writer and with
//! each other.
//!
//! Recovery reads only what it must: metadata, and the small index record of
//! every stored message; bodies are read later, a window at a time, when the
//! queue delivers them.

use std::path::Path;

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, StorageError, TableDefinition,
    TableError,
};

use crate::error::ReadError;
use crate::runs;
use crate::tables::{
    delayed_range, offset_key, offset_range, owner_range, MetaTable, CONSUMER_OFFSETS, DELAYED,
    PARTITION_KEYS, PARTITION_LOG, PARTITION_TIME, QUEUE_BODY, QUEUE_INDEX, REPLICATION_LOG,
    REPLICATION_SNAPSHOT,
};

/// Maps a redb error to a [`ReadError`] naming the table.
struct ReadContext<'a> {
    path: &'a Path,
    table: &'static str,
}

impl ReadContext<'_> {
    fn storage(&self, err: StorageError) -> ReadError {
        match err {
            StorageError::DatabaseClosed => ReadError::Closed {
                path: self.path.to_path_buf(),
            },
            other => self.other(other),
        }
    }

    fn table(&self, err: TableError) -> ReadError {
        match err {
            TableError::Storage(err) => self.storage(err),
            other => self.other(other),
        }
    }

    fn other(&self, err: impl std::fmt::Display) -> ReadError {
        ReadError::Storage {
            path: self.path.to_path_buf(),
            table: self.table,
            cause: err.to_string(),
        }
    }
}

/// Starts a read transaction.
pub(crate) fn begin(
    db: &Database,
    path: &Path,
    table: &'static str,
) -> Result<ReadTransaction, ReadError> {
    db.begin_read().map_err(|err| match err {
        redb::TransactionError::Storage(err) => ReadContext { path, table }.storage(err),
        other => ReadContext { path, table }.other(other),
    })
}

/// Every record of a metadata table, in key order.
pub(crate) fn meta(
    txn: &ReadTransaction,
    path: &Path,
    table: MetaTable,
) -> Result<Vec<(String, Vec<u8>)>, ReadError> {
    let cx = ReadContext {
        path,
        table: table.table_name(),
    };
    let open = match txn.open_table(table.definition()) {
        Ok(open) => open,
        // Created at open; absent only if someone removed it: nothing stored.
        Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(err) => return Err(cx.table(err)),
    };
    let mut records = Vec::new();
    for entry in open.iter().map_err(|err| cx.storage(err))? {
        let (key, value) = entry.map_err(|err| cx.storage(err))?;
        records.push((key.value().to_string(), value.value().to_vec()));
    }
    Ok(records)
}

/// Calls `f(seq, index)` for every index record of `queue`, in seq order.
pub(crate) fn for_each_index(
    txn: &ReadTransaction,
    path: &Path,
    queue: u64,
    mut f: impl FnMut(u64, &[u8]),
) -> Result<(), ReadError> {
    let cx = ReadContext {
        path,
        table: "queue.index",
    };
    let table = match txn.open_table(QUEUE_INDEX) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(err) => return Err(cx.table(err)),
    };
    for entry in table
        .range(owner_range(queue))
        .map_err(|err| cx.storage(err))?
    {
        let (key, value) = entry.map_err(|err| cx.storage(err))?;
        let (_, seq) = key.value();
        f(seq, value.value());
    }
    Ok(())
}

/// The bodies of the given messages that are stored, in the order asked.
pub(crate) fn bodies(
    txn: &ReadTransaction,
    path: &Path,
    queue: u64,
    seqs: &[u64],
) -> Result<Vec<(u64, Vec<u8>)>, ReadError> {
    let cx = ReadContext {
        path,
        table: "queue.body",
    };
    let table = match txn.open_table(QUEUE_BODY) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(err) => return Err(cx.table(err)),
    };
    let mut found = Vec::with_capacity(seqs.len());
    for &seq in seqs {
        if let Some(body) = table.get((queue, seq)).map_err(|err| cx.storage(err))? {
            found.push((seq, body.value().to_vec()));
        }
    }
    Ok(found)
}

/// The ids of queues with at least one stored message, ascending. Seeks from
/// queue to queue (one B-tree descent per queue), without scanning messages.
pub(crate) fn queues_with_messages(
    txn: &ReadTransaction,
    path: &Path,
) -> Result<Vec<u64>, ReadError> {
    owners(txn, path, "queue.index", QUEUE_INDEX)
}

/// The distinct owners (queues, partitions, groups: the first element of the key)
/// with a record in `table`, ascending: one seek per owner, whatever its records.
fn owners(
    txn: &ReadTransaction,
    path: &Path,
    name: &'static str,
    table: TableDefinition<(u64, u64), &[u8]>,
) -> Result<Vec<u64>, ReadError> {
    let cx = ReadContext { path, table: name };
    let table = match txn.open_table(table) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(err) => return Err(cx.table(err)),
    };
    let mut owners = Vec::new();
    let mut from = 0u64;
    loop {
        let next = table
            .range((from, 0)..)
            .map_err(|err| cx.storage(err))?
            .next()
            .transpose()
            .map_err(|err| cx.storage(err))?;
        let Some((key, _)) = next else { break };
        let owner = key.value().0;
        owners.push(owner);
        match owner.checked_add(1) {
            Some(after) => from = after,
            None => break,
        }
    }
    Ok(owners)
}

/// Calls `f(index, record)` for the records of replication log `group` with
/// indices in `from..=to`, in index order, until `f` returns false.
pub(crate) fn log_records(
    txn: &ReadTransaction,
    path: &Path,
    group: u64,
    (from, to): (u64, u64),
    mut f: impl FnMut(u64, &[u8]) -> bool,
) -> Result<(), ReadError> {
    let cx = ReadContext {
        path,
        table: "replication.log",
    };
    let table = match txn.open_table(REPLICATION_LOG) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(err) => return Err(cx.table(err)),
    };
    if from > to {
        return Ok(());
    }
    for entry in table
        .range((group, from)..=(group, to))
        .map_err(|err| cx.storage(err))?
    {
        let (key, value) = entry.map_err(|err| cx.storage(err))?;
        if !f(key.value().1, value.value()) {
            break;
        }
    }
    Ok(())
}

/// Every replication-log group with a record, an entry or a snapshot stored, in
/// order: one lookup per group, whatever its log's length.
pub(crate) fn log_groups(txn: &ReadTransaction, path: &Path) -> Result<Vec<u64>, ReadError> {
    let mut groups: std::collections::BTreeSet<u64> =
        owners(txn, path, "replication.log", REPLICATION_LOG)?
            .into_iter()
            .collect();
    let cx = ReadContext {
        path,
        table: "replication.snapshot",
    };
    match txn.open_table(REPLICATION_SNAPSHOT) {
        Ok(table) => {
            for entry in table.iter().map_err(|err| cx.storage(err))? {
                let (key, _) = entry.map_err(|err| cx.storage(err))?;
                groups.insert(key.value());
            }
        }
        Err(TableError::TableDoesNotExist(_)) => {}
        Err(err) => return Err(cx.table(err)),
    }
    Ok(groups.into_iter().collect())
}

/// The latest snapshot of replication log `group`, if one was stored.
pub(crate) fn log_snapshot(
    txn: &ReadTransaction,
    path: &Path,
    group: u64,
) -> Result<Option<Vec<u8>>, ReadError> {
    let cx = ReadContext {
        path,
        table: "replication.snapshot",
    };
    let table = match txn.open_table(REPLICATION_SNAPSHOT) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(err) => return Err(cx.table(err)),
    };
    let value = table.get(group).map_err(|err| cx.storage(err))?;
    Ok(value.map(|v| v.value().to_vec()))
}

/// A stored chunk of a partition's log: its first offset and its bytes.
pub type StoredChunk = (u64, Vec<u8>);

/// The first and the last chunk of `partition`'s log, or `None` when it has none.
pub(crate) fn partition_ends(
    txn: &ReadTransaction,
    path: &Path,
    partition: u64,
) -> Result<Option<(StoredChunk, StoredChunk)>, ReadError> {
    let cx = ReadContext {
        path,
        table: "partition.log",
    };
    let table = match txn.open_table(PARTITION_LOG) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(err) => return Err(cx.table(err)),
    };
    let mut range = table
        .range(owner_range(partition))
        .map_err(|err| cx.storage(err))?;
    let Some((key, value)) = range.next().transpose().map_err(|err| cx.storage(err))? else {
        return Ok(None);
    };
    // A value holds one chunk at least (`runs::chunks`).
    let owned = |chunk: Option<&(u64, &[u8])>| {
        chunk.map_or_else(StoredChunk::default, |(offset, bytes)| {
            (*offset, bytes.to_vec())
        })
    };
    let chunks = value_chunks(&cx, partition, key.value().1, value.value())?;
    let first = owned(chunks.first());
    let last = match range
        .next_back()
        .transpose()
        .map_err(|err| cx.storage(err))?
    {
        Some((key, value)) => {
            owned(value_chunks(&cx, partition, key.value().1, value.value())?.last())
        }
        None => owned(chunks.last()),
    };
    Ok(Some((first, last)))
}

/// The chunks in the value keyed `(partition, first)`, borrowed from it; a run that
/// does not parse is an error that names the partition.
fn value_chunks<'v>(
    cx: &ReadContext<'_>,
    partition: u64,
    first: u64,
    value: &'v [u8],
) -> Result<Vec<(u64, &'v [u8])>, ReadError> {
    runs::chunks(first, value).map_err(|why| cx.other(format!("partition {partition}: {why}")))
}

/// The chunks of `partition` from the one holding offset `from` on (the first
/// chunk when `from` is before it), until `max_bytes` of chunks were read (and at
/// least two, so a reader always sees where the next chunk starts) or the log ends.
pub(crate) fn partition_chunks(
    txn: &ReadTransaction,
    path: &Path,
    partition: u64,
    from: u64,
    max_bytes: usize,
) -> Result<Vec<StoredChunk>, ReadError> {
    let cx = ReadContext {
        path,
        table: "partition.log",
    };
    let table = match txn.open_table(PARTITION_LOG) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(err) => return Err(cx.table(err)),
    };
    // The chunk holding `from` is the last one that begins at or before it: in the
    // last value keyed at or before it (a chunk, or a run of chunks).
    let start = table
        .range((partition, 0)..=(partition, from))
        .map_err(|err| cx.storage(err))?
        .next_back()
        .transpose()
        .map_err(|err| cx.storage(err))?
        .map_or(0, |(key, _)| key.value().1);
    let mut chunks = Vec::new();
    let mut bytes = 0;
    'values: for entry in table
        .range((partition, start)..=(partition, u64::MAX))
        .map_err(|err| cx.storage(err))?
    {
        let (key, value) = entry.map_err(|err| cx.storage(err))?;
        let value = value.value();
        let stored = value_chunks(&cx, partition, key.value().1, value)?;
        // Within the first value, the chunks after the one holding `from`.
        let skip = stored
            .iter()
            .rposition(|(offset, _)| *offset <= from)
            .filter(|_| chunks.is_empty())
            .unwrap_or(0);
        for (offset, chunk) in stored.into_iter().skip(skip) {
            bytes += chunk.len();
            chunks.push((offset, chunk.to_vec()));
            if bytes >= max_bytes && chunks.len() >= 2 {
                break 'values;
            }
        }
    }
    Ok(chunks)
}

/// The first offset of the first chunk of `partition` that began at or after
/// `timestamp_ms`, from the timestamp index; `None` when none did.
pub(crate) fn partition_offset_at(
    txn: &ReadTransaction,
    path: &Path,
    partition: u64,
    timestamp_ms: u64,
) -> Result<Option<u64>, ReadError> {
    let cx = ReadContext {
        path,
        table: "partition.time",
    };
    let table = match txn.open_table(PARTITION_TIME) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(err) => return Err(cx.table(err)),
    };
    let found = table
        .range((partition, timestamp_ms)..=(partition, u64::MAX))
        .map_err(|err| cx.storage(err))?
        .next()
        .transpose()
        .map_err(|err| cx.storage(err))?;
    Ok(found.map(|(_, offset)| offset.value()))
}

/// The ids of the partitions with at least one chunk stored, ascending (one seek
/// per partition).
pub(crate) fn partitions(txn: &ReadTransaction, path: &Path) -> Result<Vec<u64>, ReadError> {
    owners(txn, path, "partition.log", PARTITION_LOG)
}

/// The stored offset of consumer group `group` in `partition`, if any.
pub(crate) fn consumer_offset(
    txn: &ReadTransaction,
    path: &Path,
    partition: u64,
    group: &str,
) -> Result<Option<u64>, ReadError> {
    let cx = ReadContext {
        path,
        table: "consumer.offsets",
    };
    let table = match txn.open_table(CONSUMER_OFFSETS) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(err) => return Err(cx.table(err)),
    };
    let found = table
        .get(offset_key(partition, group).as_str())
        .map_err(|err| cx.storage(err))?;
    Ok(found.map(|v| v.value()))
}

/// Every consumer group's stored offset in `partition`, by group.
pub(crate) fn consumer_offsets(
    txn: &ReadTransaction,
    path: &Path,
    partition: u64,
) -> Result<Vec<(String, u64)>, ReadError> {
    let cx = ReadContext {
        path,
        table: "consumer.offsets",
    };
    let table = match txn.open_table(CONSUMER_OFFSETS) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(err) => return Err(cx.table(err)),
    };
    let (from, to) = offset_range(partition);
    let mut offsets = Vec::new();
    for entry in table
        .range::<&str>(from.as_str()..to.as_str())
        .map_err(|err| cx.storage(err))?
    {
        let (key, offset) = entry.map_err(|err| cx.storage(err))?;
        let group = key.value().split_once('\u{0}').map_or("", |(_, g)| g);
        offsets.push((group.to_string(), offset.value()));
    }
    Ok(offsets)
}

/// The offsets of `partition`'s messages whose key hashes to `hash`, ascending, at
/// most `limit`.
pub(crate) fn partition_key_offsets(
    txn: &ReadTransaction,
    path: &Path,
    partition: u64,
    hash: u64,
    limit: usize,
) -> Result<Vec<u64>, ReadError> {
    let cx = ReadContext {
        path,
        table: "partition.keys",
    };
    let table = match txn.open_table(PARTITION_KEYS) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(err) => return Err(cx.table(err)),
    };
    let mut offsets = Vec::new();
    for entry in table
        .range((partition, hash, 0)..=(partition, hash, u64::MAX))
        .map_err(|err| cx.storage(err))?
    {
        let (key, _) = entry.map_err(|err| cx.storage(err))?;
        offsets.push(key.value().2);
        if offsets.len() >= limit {
            break;
        }
    }
    Ok(offsets)
}

/// A delayed message as stored: its key within its exchange and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DelayedRecord {
    /// When it is due, in milliseconds since the Unix epoch.
    pub due: u64,
    /// Its sequence number (tells apart messages due at the same millisecond).
    pub seq: u64,
    /// The encoded message.
    pub message: Vec<u8>,
}

/// The delayed messages of `exchange` after `after` (a (due, seq) key; from the first
/// when `None`) that are due at `due_by` or before, in key order, at most `limit`.
pub(crate) fn delayed_due(
    txn: &ReadTransaction,
    path: &Path,
    exchange: &str,
    after: Option<(u64, u64)>,
    due_by: u64,
    limit: usize,
) -> Result<Vec<DelayedRecord>, ReadError> {
    let cx = ReadContext {
        path,
        table: "delayed.messages",
    };
    let table = match txn.open_table(DELAYED) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(err) => return Err(cx.table(err)),
    };
    let mut found = Vec::new();
    let Some(from) = delayed_after(exchange, after) else {
        return Ok(found);
    };
    let range = table
        .range(from..=(exchange, u64::MAX, u64::MAX))
        .map_err(|err| cx.storage(err))?;
    for entry in range {
        let (key, value) = entry.map_err(|err| cx.storage(err))?;
        let (_, due, seq) = key.value();
        if due > due_by || found.len() >= limit {
            break;
        }
        found.push(DelayedRecord {
            due,
            seq,
            message: value.value().to_vec(),
        });
    }
    Ok(found)
}

/// The key (due, seq) of `exchange`'s first delayed message after `after` (from the
/// first when `None`), if any.
pub(crate) fn delayed_next(
    txn: &ReadTransaction,
    path: &Path,
    exchange: &str,
    after: Option<(u64, u64)>,
) -> Result<Option<(u64, u64)>, ReadError> {
    let cx = ReadContext {
        path,
        table: "delayed.messages",
    };
    let table = match txn.open_table(DELAYED) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(err) => return Err(cx.table(err)),
    };
    let Some(from) = delayed_after(exchange, after) else {
        return Ok(None);
    };
    let mut range = table
        .range(from..=(exchange, u64::MAX, u64::MAX))
        .map_err(|err| cx.storage(err))?;
    match range.next() {
        Some(entry) => {
            let (key, _) = entry.map_err(|err| cx.storage(err))?;
            let (_, due, seq) = key.value();
            Ok(Some((due, seq)))
        }
        None => Ok(None),
    }
}

/// The first key of `exchange`'s range after `after` (its first key when `None`);
/// `None` when nothing can follow.
fn delayed_after(exchange: &str, after: Option<(u64, u64)>) -> Option<(&str, u64, u64)> {
    match after {
        None => Some((exchange, 0, 0)),
        Some((due, seq)) if seq < u64::MAX => Some((exchange, due, seq + 1)),
        Some((due, _)) if due < u64::MAX => Some((exchange, due + 1, 0)),
        Some(_) => None,
    }
}

/// How many delayed messages `exchange` holds (one pass over its keys).
pub(crate) fn delayed_count(
    txn: &ReadTransaction,
    path: &Path,
    exchange: &str,
) -> Result<u64, ReadError> {
    let cx = ReadContext {
        path,
        table: "delayed.messages",
    };
    let table = match txn.open_table(DELAYED) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(err) => return Err(cx.table(err)),
    };
    let mut count = 0;
    for entry in table
        .range(delayed_range(exchange))
        .map_err(|err| cx.storage(err))?
    {
        entry.map_err(|err| cx.storage(err))?;
        count += 1;
    }
    Ok(count)
}
