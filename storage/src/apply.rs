//! Applying [`Op`]s to a redb write transaction: the one place that knows which
//! tables and keys each op touches. The writer applies every group through it, and
//! opening a file replays the journal through it (`journal.rs`), so that a replayed
//! op lands exactly where the original would have.

use redb::{ReadableTable, Table, WriteTransaction};

use crate::batch::Op;
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
                if !keys.is_empty() {
                    let mut index = self.txn.open_table(PARTITION_KEYS)?;
                    for (hash, offset) in keys {
                        index.insert((*partition, *hash, *offset), ())?;
                    }
                }
                if let Some(ms) = time_index {
                    let time = self.time()?;
                    if time.get((*partition, *ms))?.is_none() {
                        time.insert((*partition, *ms), *first)?;
                    }
                }
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
