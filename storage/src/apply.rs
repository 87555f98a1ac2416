//! Applying [`Op`]s to a redb write transaction: the one place that knows which
//! tables and keys each op touches. The writer applies every group through it, and
//! opening a file replays the journal through it (`journal.rs`), so that a replayed
//! op lands exactly where the original would have.

use std::collections::BTreeMap;

use redb::{ReadableTable, StorageError, Table, WriteTransaction};

use crate::batch::Op;
use crate::runs;
use crate::tables::{
    delayed_range, offset_key, offset_range, owner_range, MetaTable, CONSUMER_OFFSETS, DELAYED,
    PARTITION_KEYS, PARTITION_LOG, PARTITION_TIME, QUEUE_BODY, QUEUE_INDEX, REPLICATION_LOG,
    REPLICATION_SNAPSHOT,
};

type BytesTable<'t, K> = Table<'t, K, &'static [u8]>;

/// The tables one group touches, opened on first use.
pub(crate) struct GroupTables<'t> {
    txn: &'t WriteTransaction,
    index: Option<BytesTable<'t, (u64, u64)>>,
    body: Option<BytesTable<'t, (u64, u64)>>,
    meta: [Option<BytesTable<'t, &'static str>>; MetaTable::ALL.len()],
    chunks: Option<BytesTable<'t, (u64, u64)>>,
    time: Option<Table<'t, (u64, u64), u64>>,
}

impl<'t> GroupTables<'t> {
    pub(crate) fn new(txn: &'t WriteTransaction) -> Self {
        GroupTables {
            txn,
            index: None,
            body: None,
            meta: Default::default(),
            chunks: None,
            time: None,
        }
    }

    /// `partition.log`, held open for the group: appends to many partitions in one
    /// group would otherwise open and close it once each.
    fn chunks(&mut self) -> Result<&mut BytesTable<'t, (u64, u64)>, redb::Error> {
        let txn = self.txn;
        Ok(match &mut self.chunks {
            Some(table) => table,
            slot @ None => slot.insert(txn.open_table(PARTITION_LOG)?),
        })
    }

    /// `partition.time`, held open for the group as `partition.log` is.
    fn time(&mut self) -> Result<&mut Table<'t, (u64, u64), u64>, redb::Error> {
        let txn = self.txn;
        Ok(match &mut self.time {
            Some(table) => table,
            slot @ None => slot.insert(txn.open_table(PARTITION_TIME)?),
        })
    }

    fn index(&mut self) -> Result<&mut BytesTable<'t, (u64, u64)>, redb::Error> {
        let txn = self.txn;
        Ok(match &mut self.index {
            Some(table) => table,
            slot @ None => slot.insert(txn.open_table(QUEUE_INDEX)?),
        })
    }

    fn body(&mut self) -> Result<&mut BytesTable<'t, (u64, u64)>, redb::Error> {
        let txn = self.txn;
        Ok(match &mut self.body {
            Some(table) => table,
            slot @ None => slot.insert(txn.open_table(QUEUE_BODY)?),
        })
    }

    fn meta(&mut self, table: MetaTable) -> Result<&mut BytesTable<'t, &'static str>, redb::Error> {
        let txn = self.txn;
        Ok(match &mut self.meta[table.slot()] {
            Some(open) => open,
            slot @ None => slot.insert(txn.open_table(table.definition())?),
        })
    }

    /// Applies appends held back for the checkpoint (`writer.rs`): each partition's
    /// consecutive small chunks ([`runs::RUN_CHUNK`] or less) as runs of up to
    /// [`runs::RUN_MAX`] bytes (`runs.rs`), a lone or large chunk as itself, and
    /// their key and timestamp entries as [`GroupTables::apply`] writes them.
    /// Partitions are independent, so each one's chunks go in their order, whatever
    /// the order between partitions. The writer holds nothing but appends; any other
    /// op would be applied before them.
    pub(crate) fn apply_held(&mut self, held: &[Op]) -> Result<(), redb::Error> {
        let mut partitions: BTreeMap<u64, Vec<(u64, &[u8])>> = BTreeMap::new();
        for op in held {
            match op {
                Op::AppendChunk {
                    partition,
                    first,
                    time_index,
                    chunk,
                    keys,
                } => {
                    partitions
                        .entry(*partition)
                        .or_default()
                        .push((*first, chunk.as_slice()));
                    self.index_chunk(*partition, *first, *time_index, keys)?;
                }
                other => self.apply(other)?,
            }
        }
        for (partition, chunks) in partitions {
            let mut start = 0;
            while start < chunks.len() {
                let mut end = start + 1;
                let mut bytes = chunks[start].1.len();
                // A large chunk stands alone: it gains nothing from a run, and
                // would only be copied into one.
                let small = |len: usize| len <= runs::RUN_CHUNK;
                while end < chunks.len()
                    && small(chunks[start].1.len())
                    && small(chunks[end].1.len())
                    && bytes + chunks[end].1.len() <= runs::RUN_MAX
                {
                    bytes += chunks[end].1.len();
                    end += 1;
                }
                let run = &chunks[start..end];
                let key = (partition, run[0].0);
                if let [(_, chunk)] = run {
                    self.chunks()?.insert(key, *chunk)?;
                } else {
                    self.chunks()?
                        .insert(key, runs::encode(run.iter().copied()).as_slice())?;
                }
                start = end;
            }
        }
        Ok(())
    }

    /// A chunk's entries in the key index, and in the timestamp index when it is the
    /// first chunk of its interval.
    fn index_chunk(
        &mut self,
        partition: u64,
        first: u64,
        time_index: Option<u64>,
        keys: &[(u64, u64)],
    ) -> Result<(), redb::Error> {
        if !keys.is_empty() {
            let mut index = self.txn.open_table(PARTITION_KEYS)?;
            for (hash, offset) in keys {
                index.insert((partition, *hash, *offset), ())?;
            }
        }
        if let Some(ms) = time_index {
            let time = self.time()?;
            if time.get((partition, ms))?.is_none() {
                time.insert((partition, ms), first)?;
            }
        }
        Ok(())
    }

    /// Before retention drops the values of `partition` keyed before `before`: the
    /// chunks of the last such run that begin at or after `before` are stored again,
    /// keyed by the first of them, so that dropping the run keeps them.
    fn keep_run_tail(&mut self, partition: u64, before: u64) -> Result<(), redb::Error> {
        let table = self.chunks()?;
        let last = match table
            .range((partition, 0)..(partition, before))?
            .next_back()
            .transpose()?
        {
            Some((key, value)) if runs::looks_like_run(value.value()) => {
                (key.value().1, value.value().to_vec())
            }
            _ => return Ok(()),
        };
        let (first, value) = last;
        let inner = runs::chunks(first, &value).map_err(|why| {
            StorageError::Corrupted(format!("partition {partition} of partition.log: {why}"))
        })?;
        let kept: Vec<(u64, &[u8])> = inner
            .into_iter()
            .filter(|(offset, _)| *offset >= before)
            .collect();
        match kept.as_slice() {
            [] => {}
            [(offset, chunk)] => {
                table.insert((partition, *offset), *chunk)?;
            }
            [(offset, _), ..] => {
                table.insert(
                    (partition, *offset),
                    runs::encode(kept.iter().copied()).as_slice(),
                )?;
            }
        }
        Ok(())
    }

    pub(crate) fn apply(&mut self, op: &Op) -> Result<(), redb::Error> {
        match op {
            Op::PutMeta { table, key, value } => {
                self.meta(*table)?.insert(key.as_str(), value.as_slice())?;
            }
            Op::DeleteMeta { table, key } => {
                self.meta(*table)?.remove(key.as_str())?;
            }
            Op::PutMessage {
                queue,
                seq,
                index,
                body,
            } => {
                self.index()?.insert((*queue, *seq), index.as_slice())?;
                self.body()?.insert((*queue, *seq), body.as_slice())?;
            }
            Op::UpdateIndex { queue, seq, index } => {
                let table = self.index()?;
                let stored = table.get((*queue, *seq))?.is_some();
                if stored {
                    table.insert((*queue, *seq), index.as_slice())?;
                }
            }
            Op::DeleteMessage { queue, seq } => {
                self.index()?.remove((*queue, *seq))?;
                self.body()?.remove((*queue, *seq))?;
            }
            Op::DeleteQueueMessages { queue } => {
                self.index()?.retain_in(owner_range(*queue), |_, _| false)?;
                self.body()?.retain_in(owner_range(*queue), |_, _| false)?;
            }
            Op::PutLogRecord {
                group,
                index,
                record,
            } => {
                self.txn
                    .open_table(REPLICATION_LOG)?
                    .insert((*group, *index), record.as_slice())?;
            }
            Op::TruncateLog { group, from } => {
                self.txn
                    .open_table(REPLICATION_LOG)?
                    .retain_in((*group, *from)..=(*group, u64::MAX), |_, _| false)?;
            }
            Op::CompactLog { group, before } => {
                if *before > 1 {
                    self.txn
                        .open_table(REPLICATION_LOG)?
                        .retain_in((*group, 1)..(*group, *before), |_, _| false)?;
                }
            }
            Op::PutLogSnapshot { group, snapshot } => {
                self.txn
                    .open_table(REPLICATION_SNAPSHOT)?
                    .insert(*group, snapshot.as_slice())?;
            }
            Op::DropLog { group } => {
                self.txn
                    .open_table(REPLICATION_LOG)?
                    .retain_in((*group, 0)..=(*group, u64::MAX), |_, _| false)?;
                self.txn.open_table(REPLICATION_SNAPSHOT)?.remove(*group)?;
            }
            Op::AppendChunk {
                partition,
                first,
                time_index,
                chunk,
                keys,
            } => {
                self.chunks()?
                    .insert((*partition, *first), chunk.as_slice())?;
                self.index_chunk(*partition, *first, *time_index, keys)?;
            }
            Op::DropChunks {
                partition,
                before,
                before_ms,
                keys,
            } => {
                if !keys.is_empty() {
                    let mut index = self.txn.open_table(PARTITION_KEYS)?;
                    for (hash, offset) in keys {
                        index.remove((*partition, *hash, *offset))?;
                    }
                }
                self.keep_run_tail(*partition, *before)?;
                self.chunks()?
                    .retain_in((*partition, 0)..(*partition, *before), |_, _| false)?;
                self.time()?
                    .retain_in((*partition, 0)..(*partition, *before_ms), |_, _| false)?;
            }
            Op::DropPartition { partition } => {
                self.chunks()?
                    .retain_in(owner_range(*partition), |_, _| false)?;
                self.time()?
                    .retain_in(owner_range(*partition), |_, _| false)?;
                self.txn.open_table(PARTITION_KEYS)?.retain_in(
                    (*partition, 0, 0)..=(*partition, u64::MAX, u64::MAX),
                    |_, _| false,
                )?;
                let (from, to) = offset_range(*partition);
                self.txn
                    .open_table(CONSUMER_OFFSETS)?
                    .retain_in::<&str, _>(from.as_str()..to.as_str(), |_, _| false)?;
            }
            Op::PutConsumerOffset {
                partition,
                group,
                offset,
            } => {
                self.txn
                    .open_table(CONSUMER_OFFSETS)?
                    .insert(offset_key(*partition, group).as_str(), *offset)?;
            }
            Op::PutDelayed {
                exchange,
                due,
                seq,
                message,
            } => {
                self.txn
                    .open_table(DELAYED)?
                    .insert((exchange.as_str(), *due, *seq), message.as_slice())?;
            }
            Op::DeleteDelayed { exchange, keys } => {
                let mut table = self.txn.open_table(DELAYED)?;
                for (due, seq) in keys {
                    table.remove((exchange.as_str(), *due, *seq))?;
                }
            }
            Op::DropDelayed { exchange } => {
                self.txn
                    .open_table(DELAYED)?
                    .retain_in(delayed_range(exchange), |_, _| false)?;
            }
        }
        Ok(())
    }
}
