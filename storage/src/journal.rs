//! The journal: two files beside the data file (`warren.redb.journal.0` and
//! `.1`) in which a small group commit becomes durable with one sequential write
//! and one `fdatasync`, instead of a durable redb commit.
//!
//! # Why
//!
//! A durable redb commit of one small message writes about ten 4 KiB pages (the
//! B-tree leaves and branches it touched, redb's allocator trees, its header),
//! each its own block request at the fsync: about 2 000 such commits per second
//! here, most of their CPU in the kernel. One `pwrite` and `fdatasync` of the same
//! bytes appended to a file whose blocks are already allocated runs at about
//! 7 000 per second on the same disk (docs/2026-12-06-store-journal.md). So the
//! writer (`writer.rs`) puts a small group in the journal, fsyncs the journal, and
//! commits the group to redb without fsync ([`redb::Durability::None`]). About once
//! a second or every megabyte, and whenever the journal fills, one durable redb
//! commit (a *checkpoint*) makes all of that durable in the data file, and the
//! journal moves on to its other file.
//!
//! # Records and epochs
//!
//! ```text
//! +-------+---------+---------+--------+--------------------------------------+
//! | magic | len u32 | epoch   | crc32  | payload: codec-encoded [`Record`]     |
//! | WJR1  | (LE)    | u64 LE  | u32 LE | (next id, the group's ops in order)   |
//! +-------+---------+---------+--------+--------------------------------------+
//! ```
//!
//! The CRC covers the store's journal key (a random number kept in the data
//! file's `format` table: bytes a publisher chose, left from an older epoch,
//! cannot pass for a record), the epoch and the payload. Records of one *epoch* are written
//! one after another from offset 0 of the file numbered `epoch % 2`. The files are
//! never truncated: an epoch writes over the records its file held two epochs
//! before. The data file holds, in its `format` table, the oldest epoch whose
//! records it does not hold yet ([`crate::tables::JOURNAL_EPOCH_KEY`]).
//!
//! A checkpoint covers every record of the current epoch `E`. It moves the journal
//! to epoch `E + 1`, in the other file, and writes `E + 1` as the data file's epoch
//! in its own transaction. The writer may hand that transaction to another thread
//! and go on journaling and answering groups in epoch `E + 1` while it commits,
//! but it starts no checkpoint before the last one is done. So at most two epochs
//! hold records the data file may lack: its own, and the next.
//!
//! Reading the journal when the file opens therefore takes the records of the
//! data file's epoch from offset 0 of its file, then those of the next epoch from
//! the other file. Each stops at the first record that is not one of its epoch's:
//! a record of an older epoch (left from before), zeros, or a record cut short by
//! the crash (its CRC fails). A record the writer answered as durable was fsynced,
//! and so was everything before it in its file; and no record of epoch `E + 1`
//! was answered before every record of `E` was. So the records read are every
//! durable one, in order, plus perhaps a few non-durable ones that happened to
//! reach the disk. They are applied on top of the data file's last durable
//! commit, which is where the original groups were applied, and that same commit
//! advances the epoch past both: the records are never applied twice, and no stale
//! record of a live epoch can be found behind a new one.
//!
//! Non-durable groups go in the journal too, without fsync: a durable group's
//! fsync then makes them durable with it, as a durable redb commit made the
//! non-durable commits before it durable. A node that crashes keeps exactly what
//! it kept before the journal, or more.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::batch::Op;
use crate::codec::{self, DecodeError, EncodeError};

/// The first four bytes of every record.
const MAGIC: [u8; 4] = *b"WJR1";

/// Bytes before a record's payload: magic, payload length, epoch, CRC.
pub(crate) const HEADER_LEN: usize = 4 + 4 + 8 + 4;

/// The journal's suffix after the data file's name, before the file's number.
const SUFFIX: &str = "journal";

/// A journal file as the journal uses it: positioned writes and reads, `fdatasync`,
/// its length. A [`File`] in a store; the power-cut tests (`power_cut.rs`) give a
/// simulated disk that loses what was not synced.
pub(crate) trait JournalFile: Send + Sync {
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Fills `buf` from `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Returns once what was written is on the disk.
    fn sync_data(&self) -> io::Result<()>;
    /// The file's length.
    fn len(&self) -> io::Result<u64>;
}

impl JournalFile for File {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

/// What one record holds: one group commit.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub(crate) struct Record {
    /// The store's id counter when the group was committed.
    pub(crate) next_id: u64,
    /// The group's ops, every batch's in arrival order.
    pub(crate) ops: Vec<Op>,
}

/// [`Record`] as written, borrowing the group's ops.
#[derive(Serialize)]
struct RecordRef<'a> {
    next_id: u64,
    ops: Vec<&'a Op>,
}

/// Why the journal could not be read when the file opened.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The file could not be opened or read.
    Io(io::Error),
    /// A whole record (its CRC holds) whose payload does not decode: written by a
    /// newer Warren, or damaged in a way a crash does not explain. Skipping it
    /// would drop a durable write, so the store does not open.
    Undecodable { offset: u64, cause: DecodeError },
}

/// The open journal, as the writer appends to it.
pub(crate) struct Journal {
    /// The two files; epoch `e` writes `files[e % 2]`.
    files: [Box<dyn JournalFile>; 2],
    paths: [PathBuf; 2],
    /// The epoch new records are written under.
    epoch: u64,
    /// The store's journal key, mixed into every record's CRC.
    key: u64,
    /// Where the next record goes: the bytes written in this epoch.
    end: u64,
    /// Records of this epoch were written without fsync since the last one.
    unsynced: bool,
    /// A write of this epoch was attempted (even one that failed part way).
    touched: bool,
    /// The record being written, reused from group to group.
    buffer: Vec<u8>,
}

impl Journal {
    /// The journal files of the data file at `data`: `NAME.journal.0` and
    /// `NAME.journal.1`.
    pub(crate) fn paths_of(data: &Path) -> [PathBuf; 2] {
        [0, 1].map(|slot| {
            let mut name = data.file_name().unwrap_or_default().to_os_string();
            name.push(format!(".{SUFFIX}.{slot}"));
            data.with_file_name(name)
        })
    }

    /// Opens the journal files and reads the records of `epoch` and then those of
    /// `epoch + 1`, in order. Creates the files if `create`; otherwise, with no
    /// files, there is no journal (`Ok(None)`). The journal returned writes under
    /// `epoch + 2`: the caller applies the records and advances the data file's
    /// epoch to it in one durable commit before anything is written.
    pub(crate) fn open(
        paths: [PathBuf; 2],
        epoch: u64,
        key: u64,
        create: bool,
    ) -> Result<Option<(Journal, Vec<Record>)>, ReadError> {
        let existing = paths.iter().filter(|path| path.exists()).count();
        match existing {
            0 if !create => return Ok(None),
            // One file without the other: read the one there, create the other.
            1 => tracing::warn!(
                path = %paths[0].display(),
                "one of the two journal files is missing: writes it held, if any, are lost"
            ),
            _ => {}
        }
        let created = existing < 2;
        let mut opened = Vec::with_capacity(2);
        for path in &paths {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(ReadError::Io)?;
            opened.push(file);
        }
        if created {
            // A new file's name must survive a crash too.
            if let Some(dir) = paths[0].parent().filter(|dir| !dir.as_os_str().is_empty()) {
                File::open(dir)
                    .and_then(|dir| dir.sync_all())
                    .map_err(ReadError::Io)?;
            }
        }
        let files: [File; 2] = opened
            .try_into()
            .map_err(|_| ReadError::Io(io::Error::other("two journal files were opened")))?;
        let [zero, one] = files;
        Journal::on_files([Box::new(zero), Box::new(one)], paths, epoch, key).map(Some)
    }

    /// [`Journal::open`] on files already open: reads the records of `epoch` and
    /// `epoch + 1`; the journal returned writes under `epoch + 2`.
    pub(crate) fn on_files(
        files: [Box<dyn JournalFile>; 2],
        paths: [PathBuf; 2],
        epoch: u64,
        key: u64,
    ) -> Result<(Journal, Vec<Record>), ReadError> {
        let slot = |epoch: u64| (epoch % 2) as usize;
        let mut records = read_epoch(&*files[slot(epoch)], &paths[slot(epoch)], epoch, key)?;
        records.extend(read_epoch(
            &*files[slot(epoch + 1)],
            &paths[slot(epoch + 1)],
            epoch + 1,
            key,
        )?);
        let journal = Journal {
            files,
            paths,
            epoch: epoch + 2,
            key,
            end: 0,
            unsynced: false,
            touched: false,
            buffer: Vec::new(),
        };
        Ok((journal, records))
    }

    /// The file the current epoch writes.
    pub(crate) fn path(&self) -> &Path {
        &self.paths[(self.epoch % 2) as usize]
    }

    fn file(&self) -> &dyn JournalFile {
        &*self.files[(self.epoch % 2) as usize]
    }

    /// The epoch records are written under now.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Bytes written in this epoch.
    pub(crate) fn end(&self) -> u64 {
        self.end
    }

    /// Whether this epoch's file was written to at all (a write that failed part
    /// way included): if not, the journal holds nothing the data file does not,
    /// and a durable commit need not move it on.
    pub(crate) fn touched(&self) -> bool {
        self.touched
    }

    /// Encodes a record of `ops` into the journal's buffer; returns its length
    /// in bytes, header included. Nothing is written yet.
    pub(crate) fn encode<'a>(
        &mut self,
        next_id: u64,
        ops: impl Iterator<Item = &'a Op>,
    ) -> Result<usize, EncodeError> {
        self.buffer.clear();
        self.buffer.extend_from_slice(&[0; HEADER_LEN]);
        let record = RecordRef {
            next_id,
            ops: ops.collect(),
        };
        codec::encode_into(&record, &mut self.buffer)?;
        let len = u32::try_from(self.buffer.len() - HEADER_LEN).map_err(|_| EncodeError {
            type_name: "journal record",
            cause: format!(
                "{} bytes do not fit a journal record's u32 length",
                self.buffer.len()
            ),
        })?;
        let epoch = self.epoch.to_le_bytes();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&self.key.to_le_bytes());
        crc.update(&epoch);
        crc.update(&self.buffer[HEADER_LEN..]);
        self.buffer[0..4].copy_from_slice(&MAGIC);
        self.buffer[4..8].copy_from_slice(&len.to_le_bytes());
        self.buffer[8..16].copy_from_slice(&epoch);
        self.buffer[16..20].copy_from_slice(&crc.finalize().to_le_bytes());
        Ok(self.buffer.len())
    }

    /// Appends the encoded record; with `sync`, returns once it and every record
    /// before it are on the disk. After an error the record may be partly
    /// written: the writer must empty the journal (a durable commit of the data
    /// file and [`Journal::switch`]) before it appends again.
    pub(crate) fn append(&mut self, sync: bool) -> io::Result<()> {
        self.touched = true;
        self.file().write_all_at(&self.buffer, self.end)?;
        self.end += self.buffer.len() as u64;
        if sync {
            self.file().sync_data()?;
            self.unsynced = false;
        } else {
            self.unsynced = true;
        }
        Ok(())
    }

    /// Writes the first half of the encoded record and nothing more: the
    /// fault-injection hook's crash in the middle of a journal write.
    pub(crate) fn append_torn(&mut self) -> io::Result<()> {
        let half = self.buffer.len() / 2;
        self.touched = true;
        self.file().write_all_at(&self.buffer[..half], self.end)
    }

    /// Moves on to the next epoch, in the other file, from offset 0: a
    /// checkpoint now covers every record of the epoch left. The caller must know
    /// the checkpoint before this one committed: the other file's records are
    /// overwritten.
    ///
    /// With `sync_first` (a checkpoint that has not committed yet), records of
    /// the epoch left that were written without fsync are fsynced first: a
    /// durable record of the next epoch must not reach the disk without them,
    /// which the next epoch's fsyncs (of the other file) would not ensure.
    pub(crate) fn switch(&mut self, sync_first: bool) -> io::Result<()> {
        if sync_first && self.unsynced {
            self.file().sync_data()?;
        }
        self.epoch += 1;
        self.end = 0;
        self.unsynced = false;
        self.touched = false;
        Ok(())
    }
}

/// The records of `epoch` from offset 0 on, up to the first that is not one.
fn read_epoch(
    file: &dyn JournalFile,
    path: &Path,
    epoch: u64,
    key: u64,
) -> Result<Vec<Record>, ReadError> {
    let size = file.len().map_err(ReadError::Io)?;
    let mut records = Vec::new();
    let mut offset = 0u64;
    let mut header = [0u8; HEADER_LEN];
    let mut payload = Vec::new();
    while offset + HEADER_LEN as u64 <= size {
        file.read_exact_at(&mut header, offset)
            .map_err(ReadError::Io)?;
        if header[0..4] != MAGIC {
            break;
        }
        let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as u64;
        let found = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        let crc = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes"));
        let start = offset + HEADER_LEN as u64;
        if found != epoch || start + len > size {
            break;
        }
        payload.resize(len as usize, 0);
        file.read_exact_at(&mut payload, start)
            .map_err(ReadError::Io)?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&key.to_le_bytes());
        hasher.update(&header[8..16]);
        hasher.update(&payload);
        if hasher.finalize() != crc {
            tracing::warn!(
                path = %path.display(),
                offset,
                "the journal's last record was cut short by the crash; it was never \
                 answered as durable and is dropped"
            );
            break;
        }
        let record = codec::decode::<Record>(&payload)
            .map_err(|cause| ReadError::Undecodable { offset, cause })?;
        records.push(record);
        offset = start + len;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::MetaTable;

    /// One op of every kind, so that a new variant without a journal encoding
    /// fails here.
    fn every_op() -> Vec<Op> {
        vec![
            Op::PutMeta {
                table: MetaTable::Queues,
                key: "/\u{0}orders".into(),
                value: vec![1, 2, 3],
            },
            Op::DeleteMeta {
                table: MetaTable::UserRecords,
                key: "guest".into(),
            },
            Op::PutMessage {
                queue: 7,
                seq: 9,
                index: vec![4],
                body: vec![0xAB; 1000],
            },
            Op::UpdateIndex {
                queue: 7,
                seq: 9,
                index: vec![5, 6],
            },
            Op::DeleteMessage { queue: 7, seq: 9 },
            Op::DeleteQueueMessages { queue: 7 },
            Op::PutLogRecord {
                group: 3,
                index: 11,
                record: vec![8; 20],
            },
            Op::TruncateLog { group: 3, from: 5 },
            Op::CompactLog {
                group: 3,
                before: 4,
            },
            Op::PutLogSnapshot {
                group: 3,
                snapshot: vec![1; 3],
            },
            Op::DropLog { group: 3 },
            Op::AppendChunk {
                partition: 12,
                first: 100,
                time_index: Some(1_700_000_000_000),
                chunk: vec![2; 64],
                keys: vec![(1, 100), (2, 101)],
            },
            Op::DropChunks {
                partition: 12,
                before: 100,
                before_ms: 5,
                keys: vec![(1, 99)],
            },
            Op::DropPartition { partition: 12 },
            Op::PutConsumerOffset {
                partition: 12,
                group: "g".into(),
                offset: 55,
            },
            Op::PutDelayed {
                exchange: "/\u{0}later".into(),
                due: 10,
                seq: 2,
                message: vec![9; 30],
            },
            Op::DeleteDelayed {
                exchange: "/\u{0}later".into(),
                keys: vec![(10, 2)],
            },
            Op::DropDelayed {
                exchange: "/\u{0}later".into(),
            },
        ]
    }

    const KEY: u64 = 0x5EED;

    fn open(data: &Path, epoch: u64) -> (Journal, Vec<Record>) {
        Journal::open(Journal::paths_of(data), epoch, KEY, true)
            .expect("open")
            .expect("created")
    }

    fn write(journal: &mut Journal, next_id: u64, ops: &[Op]) {
        journal.encode(next_id, ops.iter()).expect("encode");
        journal.append(true).expect("append");
    }

    fn data_file() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("w.redb");
        (dir, data)
    }

    #[test]
    fn records_of_the_epoch_are_read_back_in_order_with_every_op() {
        let (_dir, data) = data_file();
        let (mut journal, records) = open(&data, 0);
        assert!(records.is_empty());
        assert_eq!(journal.epoch(), 2);
        let ops = every_op();
        write(&mut journal, 40, &ops[..5]);
        write(&mut journal, 41, &[]);
        write(&mut journal, 42, &ops[5..]);
        let (_, records) = open(&data, 2);
        assert_eq!(
            records,
            vec![
                Record {
                    next_id: 40,
                    ops: ops[..5].to_vec()
                },
                Record {
                    next_id: 41,
                    ops: vec![]
                },
                Record {
                    next_id: 42,
                    ops: ops[5..].to_vec()
                },
            ]
        );
    }

    #[test]
    fn an_epoch_and_the_next_are_read_in_order_and_older_ones_lie_behind() {
        let (_dir, data) = data_file();
        let (mut journal, _) = open(&data, 0);
        let big = |next_id| {
            (
                next_id,
                Op::PutMessage {
                    queue: 1,
                    seq: next_id,
                    index: vec![],
                    body: vec![7; 4096],
                },
            )
        };
        // Epoch 2 in file 0: three records.
        for id in 1..=3 {
            let (id, op) = big(id);
            write(&mut journal, id, &[op]);
        }
        // A checkpoint moves to epoch 3, in file 1, while epoch 2's commit runs.
        journal.switch(true).unwrap();
        assert_eq!(journal.epoch(), 3);
        write(&mut journal, 4, &[Op::DeleteMessage { queue: 1, seq: 1 }]);
        let (_, records) = open(&data, 2);
        let ids: Vec<u64> = records.iter().map(|r| r.next_id).collect();
        assert_eq!(ids, vec![1, 2, 3, 4], "the checkpoint never committed");
        let (_, records) = open(&data, 3);
        let ids: Vec<u64> = records.iter().map(|r| r.next_id).collect();
        assert_eq!(ids, vec![4], "the checkpoint of epoch 2 committed");

        // Epoch 4 writes file 0 again, over epoch 2's records: one short record,
        // epoch 2's lie behind it and are not read.
        let (mut journal, _) = open(&data, 0);
        journal.switch(true).unwrap();
        journal.switch(true).unwrap();
        assert_eq!(journal.epoch(), 4);
        write(&mut journal, 5, &[Op::DeleteMessage { queue: 1, seq: 2 }]);
        let (_, records) = open(&data, 4);
        let ids: Vec<u64> = records.iter().map(|r| r.next_id).collect();
        assert_eq!(ids, vec![5]);
        let (_, none) = open(&data, 6);
        assert!(none.is_empty(), "no record of an epoch not yet written");
    }

    #[test]
    fn a_torn_last_record_ends_the_journal_and_earlier_ones_stay() {
        let (_dir, data) = data_file();
        let (mut journal, _) = open(&data, 0);
        let ops = every_op();
        write(&mut journal, 1, &ops[..2]);
        journal.encode(2, ops[2..].iter()).unwrap();
        journal.append_torn().unwrap();
        let (_, records) = open(&data, 2);
        assert_eq!(records.len(), 1);

        // A whole record with one payload byte flipped: its CRC fails too.
        let (mut journal, _) = open(&data, 5);
        write(&mut journal, 1, &ops[..2]);
        write(&mut journal, 2, &ops[2..4]);
        let file = OpenOptions::new().write(true).open(journal.path()).unwrap();
        let second = journal.end() - 3;
        FileExt::write_all_at(&file, &[0xFF], second).unwrap();
        let (_, records) = open(&data, 7);
        assert_eq!(records.len(), 1);
    }

    #[test]
    fn a_whole_record_that_does_not_decode_is_an_error_not_a_silent_drop() {
        let (_dir, data) = data_file();
        let (mut journal, _) = open(&data, 0);
        journal.encode(1, every_op().iter()).unwrap();
        // A newer codec version: the CRC is right, the payload unreadable.
        journal.buffer[HEADER_LEN] = codec::FORMAT_VERSION + 1;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&KEY.to_le_bytes());
        crc.update(&journal.buffer[8..16]);
        crc.update(&journal.buffer[HEADER_LEN..]);
        let crc = crc.finalize().to_le_bytes();
        journal.buffer[16..20].copy_from_slice(&crc);
        journal.append(true).unwrap();
        match Journal::open(Journal::paths_of(&data), 2, KEY, true) {
            Err(ReadError::Undecodable { offset: 0, .. }) => {}
            Err(other) => panic!("expected Undecodable, got {other:?}"),
            Ok(_) => panic!("a record that does not decode must not be skipped"),
        }
    }

    #[test]
    fn a_record_made_without_the_stores_key_is_not_read() {
        let (_dir, data) = data_file();
        let (mut journal, _) = open(&data, 0);
        journal.key = KEY + 1;
        write(&mut journal, 1, &every_op()[..1]);
        let (_, records) = open(&data, 2);
        assert!(records.is_empty(), "a forged record passed: {records:?}");
    }

    #[test]
    fn a_missing_journal_is_created_only_when_asked() {
        let (_dir, data) = data_file();
        let paths = Journal::paths_of(&data);
        assert!(Journal::open(paths.clone(), 0, KEY, false)
            .unwrap()
            .is_none());
        assert!(!paths[0].exists() && !paths[1].exists());
        assert!(Journal::open(paths.clone(), 0, KEY, true)
            .unwrap()
            .is_some());
        assert!(paths[0].exists() && paths[1].exists());
        assert_eq!(
            Journal::paths_of(Path::new("/data/warren.redb")),
            [
                PathBuf::from("/data/warren.redb.journal.0"),
                PathBuf::from("/data/warren.redb.journal.1")
            ]
        );
    }
}
