//! [`Store`]: the handle every part of the node shares. Writes go to the writer
//! thread ([`crate::writer`]); reads run on the caller's thread in their own
//! read transaction ([`crate::reads`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;

use redb::ReadTransaction;
use tokio::sync::oneshot;

use crate::batch::Batch;
use crate::commit::{block_on, Commit};
use crate::error::{CommitError, CompactError, OpenError, ReadError};
use crate::open::{open_file, Opened};
use crate::options::StoreOptions;
use crate::paging;
use crate::reads::{self, DelayedRecord, StoredChunk};
use crate::shared::Shared;
use crate::stats::{Counters, StoreStats};
use crate::tables::MetaTable;
use crate::writer::{Request, Writer, WriterConfig};

/// The node's store: one redb file, one writer thread. Cheap to clone; all
/// clones share the file. The last clone dropped closes it.
#[derive(Clone)]
pub struct Store {
    handle: Arc<Handle>,
}

/// Owned by the `Store` clones only, never by the writer thread, so that its
/// drop (last clone gone) can stop the writer.
struct Handle {
    shared: Arc<Shared>,
    /// `None` once closed, so that later submissions fail fast.
    requests: RwLock<Option<Sender<Request>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

// The store is shared by every actor of the node.
const _: fn() = || {
    fn shared_everywhere<T: Send + Sync + 'static>() {}
    shared_everywhere::<Store>();
};

impl Store {
    /// Opens the data file at `path` with default options, creating it (and its
    /// parent directories) if missing, and starts the writer thread.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, OpenError> {
        Store::open_with(path, StoreOptions::default())
    }

    /// [`Store::open`] with explicit options.
    pub fn open_with(path: impl AsRef<Path>, options: StoreOptions) -> Result<Store, OpenError> {
        let path = path.as_ref();
        // Absolute, so that every error names the file unambiguously.
        let path: PathBuf = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let opened = open_file(&path, &options)?;
        // Paged-out transient bodies do not survive a restart.
        let paging = paging::directory_of(&path);
        if let Err(e) = paging::clear_directory(&paging) {
            tracing::warn!(dir = %paging.display(), "cannot empty the page file directory: {e}");
        }
        Store::start(path, opened, &options)
    }

    /// Starts the writer on an opened file.
    pub(crate) fn start(
        path: PathBuf,
        opened: Opened,
        options: &StoreOptions,
    ) -> Result<Store, OpenError> {
        let shared = Arc::new(Shared {
            path: Arc::from(path.as_path()),
            db: RwLock::new(Some(opened.db)),
            next_id: AtomicU64::new(opened.next_id),
            stats: Counters::default(),
            unapplied: AtomicBool::new(false),
            unapplied_appends: AtomicBool::new(false),
        });
        let (sender, receiver) = mpsc::channel();
        let writer = Writer::spawn(
            Arc::clone(&shared),
            receiver,
            WriterConfig::from(options),
            opened.next_id,
            opened.journal,
        )
        .map_err(|source| OpenError::WriterThread {
            path: path.clone(),
            source,
        })?;
        tracing::info!(path = %path.display(), next_id = opened.next_id, "store opened");
        Ok(Store {
            handle: Arc::new(Handle {
                shared,
                requests: RwLock::new(Some(sender)),
                writer: Mutex::new(Some(writer)),
            }),
        })
    }

    /// Queues the batch for the writer and returns at once; the returned
    /// [`Commit`] resolves once the batch is committed (fsynced when
    /// `batch.durable`). Batches submitted one after another from one thread are
    /// applied in that order. Dropping the `Commit` does not cancel the batch.
    pub fn submit(&self, batch: Batch) -> Commit {
        self.request_commit(|answer| Request::Write { batch, answer })
    }

    /// Resolves once everything submitted before it is committed durably
    /// (including non-durable batches).
    pub fn flush(&self) -> Commit {
        self.request_commit(|answer| Request::Flush { answer })
    }

    /// Every record of a metadata table, in key order.
    pub fn read_meta(&self, table: MetaTable) -> Result<Vec<(String, Vec<u8>)>, ReadError> {
        let txn = self.begin_read(table.table_name())?;
        reads::meta(&txn, self.path(), table)
    }

    /// Calls `f(seq, index)` for every index record of a queue in seq order
    /// (recovery; no bodies are read). Runs on one snapshot of the file.
    pub fn for_each_index(&self, queue: u64, f: impl FnMut(u64, &[u8])) -> Result<(), ReadError> {
        let txn = self.begin_read("queue.index")?;
        reads::for_each_index(&txn, self.path(), queue, f)
    }

    /// Bodies for the given seqs, in the order asked; seqs not stored are
    /// skipped. One read transaction.
    pub fn read_bodies(&self, queue: u64, seqs: &[u64]) -> Result<Vec<(u64, Vec<u8>)>, ReadError> {
        let txn = self.begin_read("queue.body")?;
        reads::bodies(&txn, self.path(), queue, seqs)
    }

    /// Ids of the queues that have messages stored, ascending, so that the node
    /// can drop the messages of queues that no longer exist.
    pub fn queues_with_messages(&self) -> Result<Vec<u64>, ReadError> {
        let txn = self.begin_read("queue.index")?;
        reads::queues_with_messages(&txn, self.path())
    }

    /// Every record of replication log `group` (see
    /// [`Op::PutLogRecord`](crate::Op::PutLogRecord)), in index order.
    pub fn read_log(&self, group: u64) -> Result<Vec<(u64, Vec<u8>)>, ReadError> {
        let mut records = Vec::new();
        self.for_each_log_record(group, 0, u64::MAX, |index, record| {
            records.push((index, record.to_vec()));
            true
        })?;
        Ok(records)
    }

    /// Calls `f(index, record)` for the records of replication log `group` with
    /// indices in `from..=to`, in index order, until `f` returns false; one read
    /// transaction, nothing held beyond the record `f` sees.
    pub fn for_each_log_record(
        &self,
        group: u64,
        from: u64,
        to: u64,
        f: impl FnMut(u64, &[u8]) -> bool,
    ) -> Result<(), ReadError> {
        let txn = self.begin_read("replication.log")?;
        reads::log_records(&txn, self.path(), group, (from, to), f)
    }

    /// Every replication-log group this file holds anything of (record, entries or
    /// snapshot), in order.
    pub fn log_groups(&self) -> Result<Vec<u64>, ReadError> {
        let txn = self.begin_read("replication.log")?;
        reads::log_groups(&txn, self.path())
    }

    /// The latest snapshot of replication log `group` (see
    /// [`Op::PutLogSnapshot`](crate::Op::PutLogSnapshot)), if one was stored.
    pub fn read_log_snapshot(&self, group: u64) -> Result<Option<Vec<u8>>, ReadError> {
        let txn = self.begin_read("replication.snapshot")?;
        reads::log_snapshot(&txn, self.path(), group)
    }

    /// The first and the last chunk of a partition's log (see
    /// [`Op::AppendChunk`](crate::Op::AppendChunk)), `None` when it has none: what a
    /// partition needs to know of its log when it starts, whatever the log's length.
    pub fn partition_ends(
        &self,
        partition: u64,
    ) -> Result<Option<(StoredChunk, StoredChunk)>, ReadError> {
        let txn = self.begin_read("partition.log")?;
        reads::partition_ends(&txn, self.path(), partition)
    }

    /// The chunks of a partition's log from the one that holds offset `from` (the
    /// first one when `from` is before it), until `max_bytes` were read (and at
    /// least two chunks) or the log ends. One read transaction.
    pub fn partition_chunks(
        &self,
        partition: u64,
        from: u64,
        max_bytes: usize,
    ) -> Result<Vec<StoredChunk>, ReadError> {
        let txn = self.begin_read("partition.log")?;
        reads::partition_chunks(&txn, self.path(), partition, from, max_bytes)
    }

    /// The first offset of the first chunk of a partition that was appended at or
    /// after `timestamp_ms` (milliseconds since the Unix epoch), if any.
    pub fn partition_offset_at(
        &self,
        partition: u64,
        timestamp_ms: u64,
    ) -> Result<Option<u64>, ReadError> {
        let txn = self.begin_read("partition.time")?;
        reads::partition_offset_at(&txn, self.path(), partition, timestamp_ms)
    }

    /// The offsets (ascending, at most `limit`) of a partition's messages whose key
    /// hashes to `hash` (see [`Op::AppendChunk`](crate::Op::AppendChunk)'s `keys`).
    pub fn partition_key_offsets(
        &self,
        partition: u64,
        hash: u64,
        limit: usize,
    ) -> Result<Vec<u64>, ReadError> {
        let txn = self.begin_read("partition.keys")?;
        reads::partition_key_offsets(&txn, self.path(), partition, hash, limit)
    }

    /// The stored offset of consumer group `group` in a partition (see
    /// [`Op::PutConsumerOffset`](crate::Op::PutConsumerOffset)), if any.
    pub fn consumer_offset(&self, partition: u64, group: &str) -> Result<Option<u64>, ReadError> {
        let txn = self.begin_read("consumer.offsets")?;
        reads::consumer_offset(&txn, self.path(), partition, group)
    }

    /// Every consumer group's stored offset in a partition, by group name.
    pub fn consumer_offsets(&self, partition: u64) -> Result<Vec<(String, u64)>, ReadError> {
        let txn = self.begin_read("consumer.offsets")?;
        reads::consumer_offsets(&txn, self.path(), partition)
    }

    /// The partitions with chunks stored, ascending, so that the node can drop the
    /// logs of streams that no longer exist.
    pub fn partitions(&self) -> Result<Vec<u64>, ReadError> {
        let txn = self.begin_read("partition.log")?;
        reads::partitions(&txn, self.path())
    }

    /// The delayed messages of `exchange` (`"VHOST\0NAME"`) after key `after` (from
    /// the first when `None`) due at `due_by` (ms since the Unix epoch) or before, in
    /// (due, seq) order, at most `limit`.
    pub fn delayed_due(
        &self,
        exchange: &str,
        after: Option<(u64, u64)>,
        due_by: u64,
        limit: usize,
    ) -> Result<Vec<DelayedRecord>, ReadError> {
        let txn = self.begin_read("delayed.messages")?;
        reads::delayed_due(&txn, self.path(), exchange, after, due_by, limit)
    }

    /// The key (due, seq) of `exchange`'s first delayed message after `after`.
    pub fn delayed_next(
        &self,
        exchange: &str,
        after: Option<(u64, u64)>,
    ) -> Result<Option<(u64, u64)>, ReadError> {
        let txn = self.begin_read("delayed.messages")?;
        reads::delayed_next(&txn, self.path(), exchange, after)
    }

    /// How many delayed messages `exchange` holds.
    pub fn delayed_count(&self, exchange: &str) -> Result<u64, ReadError> {
        let txn = self.begin_read("delayed.messages")?;
        reads::delayed_count(&txn, self.path(), exchange)
    }

    /// A fresh id, unique in this file forever (queue ids). Never 0.
    ///
    /// The counter is persisted by the writer in the same transaction as any
    /// batch submitted after the id was handed out (and at close): if a batch
    /// that mentions the id is stored, so is a counter above it, so after a
    /// crash the id is never handed out again. An id whose queue never reached
    /// the file may be handed out again after a crash.
    pub fn allocate_id(&self) -> u64 {
        self.handle.shared.next_id.fetch_add(1, Ordering::SeqCst)
    }

    /// Counters of the writer since the store was opened.
    pub fn stats(&self) -> StoreStats {
        self.handle.shared.stats.snapshot()
    }

    /// The data file (absolute).
    pub fn path(&self) -> &Path {
        &self.handle.shared.path
    }

    /// The directory of the queues' page files ([`crate::paging`]), emptied when the
    /// store opens.
    pub fn paging_dir(&self) -> PathBuf {
        paging::directory_of(&self.handle.shared.path)
    }

    /// Compacts the file, returning redb's answer (`true` if it compacted
    /// something). Runs on the writer after the batches queued before it;
    /// blocks the calling thread, the writer and new reads while it runs. Fails
    /// with [`CompactError::ReadsInProgress`] if a read is running.
    pub fn compact(&self) -> Result<bool, CompactError> {
        let (answer, receiver) = oneshot::channel();
        {
            let requests = self
                .handle
                .requests
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let Some(sender) = requests.as_ref() else {
                return Err(CompactError::Closed {
                    path: self.path().to_path_buf(),
                });
            };
            if sender.send(Request::Compact { answer }).is_err() {
                return Err(CompactError::WriterStopped {
                    path: self.path().to_path_buf(),
                });
            }
        }
        block_on(receiver).unwrap_or_else(|_| {
            Err(CompactError::WriterStopped {
                path: self.path().to_path_buf(),
            })
        })
    }

    /// Commits everything already submitted, makes it durable, stops the writer
    /// thread and closes the file (releasing its lock). Later submissions and
    /// reads fail with `Closed`. Idempotent; also runs when the last clone is
    /// dropped. Blocks until the final fsync is done.
    pub fn close(&self) {
        self.handle.close();
    }

    /// Sends a request answered with a commit result; never blocks.
    fn request_commit(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<(), CommitError>>) -> Request,
    ) -> Commit {
        let (answer, receiver) = oneshot::channel();
        let path = Arc::clone(&self.handle.shared.path);
        let requests = self
            .handle
            .requests
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(sender) = requests.as_ref() else {
            let closed = CommitError::Closed {
                path: path.to_path_buf(),
            };
            return Commit::ready(Err(closed), path);
        };
        if sender.send(request(answer)).is_err() {
            let stopped = CommitError::WriterStopped {
                path: path.to_path_buf(),
            };
            return Commit::ready(Err(stopped), path);
        }
        Commit::waiting(receiver, path)
    }

    fn begin_read(&self, table: &'static str) -> Result<ReadTransaction, ReadError> {
        // Journaled groups the writer holds back from redb are applied first, so
        // that a read sees every batch whose commit resolved before it began.
        let shared = &self.handle.shared;
        let appends =
            table.starts_with("partition.") && shared.unapplied_appends.load(Ordering::SeqCst);
        if appends || shared.unapplied.load(Ordering::SeqCst) {
            self.request_commit(|answer| Request::Apply { answer, appends })
                .wait()
                .map_err(|err| match err {
                    CommitError::Closed { path } | CommitError::WriterStopped { path } => {
                        ReadError::Closed { path }
                    }
                    other => ReadError::Storage {
                        path: self.path().to_path_buf(),
                        table,
                        cause: other.to_string(),
                    },
                })?;
        }
        // The guard is held only to begin: a long read must not block close or
        // compaction (which then see it as a read in progress).
        let guard = self
            .handle
            .shared
            .db
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(db) = guard.as_ref() else {
            return Err(ReadError::Closed {
                path: self.path().to_path_buf(),
            });
        };
        reads::begin(db, self.path(), table)
    }
}

impl Handle {
    fn close(&self) {
        // Held to the end: a second, concurrent close waits until the file is
        // closed instead of racing the writer's final flush.
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        // Taking the sender under the write lock: every submission that got in
        // before is queued ahead of Shutdown, and none can follow.
        let sender = self
            .requests
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(sender) = sender {
            // Fails only if the writer is already gone; joining tells us why.
            let _ = sender.send(Request::Shutdown);
        }
        if let Some(writer) = writer.take() {
            if writer.join().is_err() {
                tracing::error!(path = %self.shared.path.display(), "store writer thread panicked");
            }
        }
        let db = self
            .shared
            .db
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(db) = db {
            match db.close() {
                Ok(()) => tracing::info!(path = %self.shared.path.display(), "store closed"),
                Err(err) => tracing::warn!(
                    path = %self.shared.path.display(),
                    error = %err,
                    "store closed with an error; redb repairs the file on next open"
                ),
            }
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path())
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Op;
    use crate::open::open_backend;
    use redb::backends::InMemoryBackend;
    use redb::{Database, StorageBackend};
    use std::sync::atomic::AtomicBool;

    /// An in-memory disk whose fsync can be made to fail.
    #[derive(Debug)]
    struct FlakyDisk {
        inner: InMemoryBackend,
        fail_sync: Arc<AtomicBool>,
    }

    impl StorageBackend for FlakyDisk {
        fn len(&self) -> Result<u64, std::io::Error> {
            self.inner.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
            self.inner.read(offset, out)
        }
        fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
            self.inner.set_len(len)
        }
        fn sync_data(&self) -> Result<(), std::io::Error> {
            if self.fail_sync.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("injected fsync failure"));
            }
            self.inner.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
            self.inner.write(offset, data)
        }
    }

    fn flaky_store() -> (Store, Arc<AtomicBool>) {
        let fail_sync = Arc::new(AtomicBool::new(false));
        let disk = FlakyDisk {
            inner: InMemoryBackend::new(),
            fail_sync: Arc::clone(&fail_sync),
        };
        let path = PathBuf::from("/flaky/warren.redb");
        let options = StoreOptions::default();
        let opened = open_backend(&path, &options, disk).expect("open in memory");
        let store = Store::start(path, opened, &options).expect("start");
        (store, fail_sync)
    }

    fn put(queue: u64, seq: u64) -> Op {
        Op::PutMessage {
            queue,
            seq,
            index: vec![1],
            body: vec![2; 100],
        }
    }

    /// Holds the database exclusively, so the writer blocks on its next
    /// transaction while the test queues requests behind it.
    fn stall_writer(store: &Store) -> std::sync::RwLockWriteGuard<'_, Option<Database>> {
        store
            .handle
            .shared
            .db
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    #[test]
    fn delayed_messages_come_out_in_due_order_per_exchange_and_go_with_it() {
        let (store, _) = flaky_store();
        let put = |exchange: &str, due, seq| Op::PutDelayed {
            exchange: exchange.into(),
            due,
            seq,
            message: vec![seq as u8],
        };
        let ops = vec![
            put("/\u{0}a", 30, 1),
            put("/\u{0}a", 10, 2),
            put("/\u{0}a", 10, 3),
            put("/\u{0}a", 20, 4),
            // Names that share a prefix stay apart.
            put("/\u{0}ab", 5, 5),
            put("/\u{0}", 1, 6),
        ];
        store.submit(Batch::durable(ops)).wait().expect("commit");
        let keys = |records: Vec<DelayedRecord>| {
            records
                .into_iter()
                .map(|r| (r.due, r.seq, r.message[0]))
                .collect::<Vec<_>>()
        };
        let due = |after, by, limit| keys(store.delayed_due("/\u{0}a", after, by, limit).unwrap());
        assert_eq!(due(None, 20, 10), [(10, 2, 2), (10, 3, 3), (20, 4, 4)]);
        assert_eq!(due(None, 100, 2), [(10, 2, 2), (10, 3, 3)]);
        assert_eq!(
            due(Some((10, 2)), 100, 10),
            [(10, 3, 3), (20, 4, 4), (30, 1, 1)]
        );
        assert_eq!(due(None, 9, 10), []);
        assert_eq!(store.delayed_next("/\u{0}a", None).unwrap(), Some((10, 2)));
        assert_eq!(
            store.delayed_next("/\u{0}a", Some((20, 4))).unwrap(),
            Some((30, 1))
        );
        assert_eq!(store.delayed_next("/\u{0}a", Some((30, 1))).unwrap(), None);
        assert_eq!(store.delayed_count("/\u{0}a").unwrap(), 4);
        assert_eq!(store.delayed_count("/\u{0}ab").unwrap(), 1);
        store
            .submit(Batch::durable(vec![Op::DeleteDelayed {
                exchange: "/\u{0}a".into(),
                keys: vec![(10, 2), (10, 3), (99, 99)],
            }]))
            .wait()
            .expect("commit");
        assert_eq!(due(None, 100, 10), [(20, 4, 4), (30, 1, 1)]);
        store
            .submit(Batch::durable(vec![Op::DropDelayed {
                exchange: "/\u{0}a".into(),
            }]))
            .wait()
            .expect("commit");
        assert_eq!(store.delayed_count("/\u{0}a").unwrap(), 0);
        assert_eq!(store.delayed_count("/\u{0}ab").unwrap(), 1);
        assert_eq!(store.delayed_count("/\u{0}").unwrap(), 1);
    }

    #[test]
    fn replication_logs_are_kept_per_group_and_truncated_from_an_index() {
        let (store, _) = flaky_store();
        let record = |group, index| Op::PutLogRecord {
            group,
            index,
            record: vec![index as u8; 3],
        };
        let ops = (0..5).map(|i| record(0, i)).chain([record(1, 1)]).collect();
        store.submit(Batch::durable(ops)).wait().expect("commit");
        store
            .submit(Batch::durable(vec![Op::TruncateLog { group: 0, from: 3 }]))
            .wait()
            .expect("commit");
        let log = store.read_log(0).expect("read");
        assert_eq!(log.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(log[2].1, vec![2; 3]);
        assert_eq!(store.read_log(1).expect("read").len(), 1);
        assert!(store.read_log(7).expect("read").is_empty());
    }

    #[test]
    fn compaction_keeps_the_state_record_and_the_tail_and_snapshots_replace() {
        let (store, _) = flaky_store();
        let record = |group, index| Op::PutLogRecord {
            group,
            index,
            record: vec![index as u8; 3],
        };
        let ops = (0..10)
            .map(|i| record(0, i))
            .chain([record(1, 2)])
            .collect();
        store.submit(Batch::durable(ops)).wait().expect("commit");
        assert_eq!(store.read_log_snapshot(0).expect("read"), None);
        let snapshot = |bytes: &[u8]| Op::PutLogSnapshot {
            group: 0,
            snapshot: bytes.to_vec(),
        };
        let compact = Op::CompactLog {
            group: 0,
            before: 7,
        };
        store
            .submit(Batch::durable(vec![snapshot(b"first"), compact]))
            .wait()
            .expect("commit");
        store
            .submit(Batch::durable(vec![snapshot(b"second")]))
            .wait()
            .expect("commit");
        let log = store.read_log(0).expect("read");
        assert_eq!(
            log.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            [0, 7, 8, 9]
        );
        assert_eq!(store.read_log(1).expect("read").len(), 1);
        assert_eq!(
            store.read_log_snapshot(0).expect("read").as_deref(),
            Some(&b"second"[..])
        );
        assert_eq!(store.read_log_snapshot(1).expect("read"), None);
    }

    #[test]
    fn partition_logs_find_the_chunk_of_an_offset_keep_a_time_index_and_drop_from_the_front() {
        let (store, _) = flaky_store();
        let chunk = |partition, first, timestamp_ms| Op::AppendChunk {
            partition,
            first,
            time_index: Some(timestamp_ms),
            chunk: vec![first as u8; 10],
            // Key 77 on the chunk's first message, key 88 on its second.
            keys: vec![(77, first), (88, first + 1)],
        };
        // Partition 3: chunks at offsets 0, 10, 25, 40; two begin in ms 200.
        let ops = vec![
            chunk(3, 0, 100),
            chunk(3, 10, 200),
            chunk(3, 25, 200),
            chunk(3, 40, 300),
            chunk(4, 0, 50),
            Op::PutConsumerOffset {
                partition: 3,
                group: "billing".into(),
                offset: 7,
            },
            Op::PutConsumerOffset {
                partition: 3,
                group: "audit\u{0}m1".into(),
                offset: 2,
            },
            Op::PutConsumerOffset {
                partition: 4,
                group: "g".into(),
                offset: 9,
            },
        ];
        store.submit(Batch::durable(ops)).wait().expect("commit");
        let firsts = |chunks: Vec<StoredChunk>| chunks.into_iter().map(|c| c.0).collect::<Vec<_>>();
        assert_eq!(firsts(store.partition_chunks(3, 12, 1).unwrap()), [10, 25]);
        assert_eq!(firsts(store.partition_chunks(3, 25, 15).unwrap()), [25, 40]);
        assert_eq!(firsts(store.partition_chunks(3, 99, 1000).unwrap()), [40]);
        assert!(store.partition_chunks(9, 0, 1000).unwrap().is_empty());
        let (first, last) = store.partition_ends(3).unwrap().expect("chunks");
        assert_eq!((first.0, last.0), (0, 40));
        assert_eq!(store.partition_offset_at(3, 150).unwrap(), Some(10));
        assert_eq!(store.partition_offset_at(3, 200).unwrap(), Some(10));
        assert_eq!(store.partition_offset_at(3, 301).unwrap(), None);
        assert_eq!(store.partitions().unwrap(), [3, 4]);
        assert_eq!(
            store.consumer_offsets(3).unwrap(),
            [("audit\u{0}m1".to_string(), 2), ("billing".to_string(), 7)]
        );
        assert_eq!(store.consumer_offset(3, "billing").unwrap(), Some(7));
        assert_eq!(store.consumer_offset(3, "nobody").unwrap(), None);
        assert_eq!(
            store.partition_key_offsets(3, 77, 10).unwrap(),
            [0, 10, 25, 40]
        );
        assert_eq!(store.partition_key_offsets(3, 77, 2).unwrap(), [0, 10]);
        assert_eq!(store.partition_key_offsets(4, 88, 10).unwrap(), [1]);
        store
            .submit(Batch::durable(vec![Op::DropChunks {
                partition: 3,
                before: 25,
                before_ms: 200,
                keys: vec![(77, 0), (88, 1), (77, 10), (88, 11)],
            }]))
            .wait()
            .expect("commit");
        assert_eq!(
            firsts(store.partition_chunks(3, 0, 1000).unwrap()),
            [25, 40]
        );
        assert_eq!(store.partition_offset_at(3, 0).unwrap(), Some(10));
        assert_eq!(store.partition_key_offsets(3, 77, 10).unwrap(), [25, 40]);
        store
            .submit(Batch::durable(vec![Op::DropPartition { partition: 3 }]))
            .wait()
            .expect("commit");
        assert_eq!(store.partition_ends(3).unwrap(), None);
        assert_eq!(store.consumer_offsets(3).unwrap(), []);
        assert!(store.partition_key_offsets(3, 88, 10).unwrap().is_empty());
        assert_eq!(store.partition_key_offsets(4, 77, 10).unwrap(), [0]);
        assert_eq!(store.consumer_offset(4, "g").unwrap(), Some(9));
        assert_eq!(store.partition_offset_at(3, 0).unwrap(), None);
        assert_eq!(store.partitions().unwrap(), [4]);
    }

    proptest::proptest! {
        /// The key and timestamp indexes answer as a model does, whatever the
        /// appends and the drops from the front: a key's offsets are those of the
        /// chunks kept, and a time finds the first chunk of its interval or after.
        #[test]
        fn partition_indexes_answer_as_a_model_does(
            chunks in proptest::collection::vec((0..4u64, 1..4u64), 1..30),
            drop_before in 0..30usize,
        ) {
            let (store, _) = flaky_store();
            // Chunk i starts at offset 10 i, in second i / 2, and its messages'
            // keys are (key, count).
            let mut ops = Vec::new();
            let mut model: Vec<(u64, u64, u64)> = Vec::new(); // (offset, key, second)
            for (i, (key, count)) in chunks.iter().enumerate() {
                let first = i as u64 * 10;
                let second = i as u64 / 2;
                let keys: Vec<(u64, u64)> = (0..*count).map(|n| (*key, first + n)).collect();
                for (k, o) in &keys {
                    model.push((*o, *k, second));
                }
                ops.push(Op::AppendChunk {
                    partition: 5,
                    first,
                    time_index: (i % 2 == 0).then_some(second * 1000),
                    chunk: vec![1; 8],
                    keys,
                });
            }
            store.submit(Batch::durable(ops)).wait().expect("commit");
            let drop_at = drop_before.min(chunks.len() - 1);
            if drop_at > 0 {
                let dropped: Vec<(u64, u64)> = model
                    .iter()
                    .filter(|(o, _, _)| *o < drop_at as u64 * 10)
                    .map(|(o, k, _)| (*k, *o))
                    .collect();
                let keep_second = drop_at as u64 / 2;
                store
                    .submit(Batch::durable(vec![Op::DropChunks {
                        partition: 5,
                        before: drop_at as u64 * 10,
                        before_ms: keep_second * 1000,
                        keys: dropped,
                    }]))
                    .wait()
                    .expect("commit");
                model.retain(|(o, _, _)| *o >= drop_at as u64 * 10);
            }
            for key in 0..4u64 {
                let want: Vec<u64> = model
                    .iter()
                    .filter(|(_, k, _)| *k == key)
                    .map(|(o, _, _)| *o)
                    .collect();
                proptest::prop_assert_eq!(store.partition_key_offsets(5, key, 1000).unwrap(), want);
            }
            let kept_first = drop_at as u64 * 10;
            for second in 0..16u64 {
                // The first chunk of the second, or of a later one; an offset before
                // what is kept is clamped by the caller.
                let want = (0..chunks.len() as u64)
                    .filter(|i| i / 2 >= second)
                    .map(|i| (i / 2) * 2 * 10)
                    .next();
                let got = store.partition_offset_at(5, second * 1000).unwrap();
                match want {
                    Some(w) => proptest::prop_assert_eq!(got.map(|g| g.max(kept_first)), Some(w.max(kept_first))),
                    None => proptest::prop_assert_eq!(got, None),
                }
            }
        }
    }

    /// One step of the runs property test.
    #[derive(Clone, Debug)]
    enum LogStep {
        /// A chunk of this many bytes appended to a partition (0..3), with the next
        /// step in the same batch if `more`.
        Append {
            partition: u64,
            len: usize,
            more: bool,
        },
        /// A read of a partition, which stores what is held back at once.
        Read { partition: u64 },
        /// Retention in a partition: its chunks before its `nth` (mod its count).
        Drop { partition: u64, nth: usize },
    }

    fn log_step() -> impl proptest::strategy::Strategy<Value = LogStep> {
        use proptest::prelude::*;
        prop_oneof![
            6 => (0..3u64, prop_oneof![4 => 1..2_000usize, 1 => 60_000..70_000usize], any::<bool>())
                .prop_map(|(partition, len, more)| LogStep::Append { partition, len, more }),
            1 => (0..3u64).prop_map(|partition| LogStep::Read { partition }),
            1 => (0..3u64, 0..8usize).prop_map(|(partition, nth)| LogStep::Drop { partition, nth }),
        ]
    }

    /// What `partition_chunks(from, max_bytes)` must answer for a partition's chunks.
    fn chunks_from(log: &[StoredChunk], from: u64, max_bytes: usize) -> Vec<StoredChunk> {
        let start = log
            .iter()
            .rposition(|(first, _)| *first <= from)
            .unwrap_or(0);
        let mut out = Vec::new();
        let mut bytes = 0;
        for chunk in &log[start..] {
            bytes += chunk.1.len();
            out.push(chunk.clone());
            if bytes >= max_bytes && out.len() >= 2 {
                break;
            }
        }
        out
    }

    /// Checks every way of reading each partition against the model.
    fn check_logs(
        store: &Store,
        model: &[Vec<StoredChunk>],
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        for (partition, log) in model.iter().enumerate() {
            let partition = partition as u64;
            let ends = store.partition_ends(partition).unwrap();
            let want = log
                .first()
                .map(|first| (first.clone(), log.last().cloned().unwrap_or_default()));
            proptest::prop_assert_eq!(ends, want, "ends of partition {}", partition);
            let mut froms = vec![0, u64::MAX];
            for (first, _) in log {
                froms.extend([*first, first + 1, first.saturating_sub(1)]);
            }
            for from in froms {
                for max_bytes in [1, 3_000, usize::MAX] {
                    let got = store.partition_chunks(partition, from, max_bytes).unwrap();
                    proptest::prop_assert_eq!(
                        got,
                        chunks_from(log, from, max_bytes),
                        "partition {} from {} max {}",
                        partition,
                        from,
                        max_bytes
                    );
                }
            }
        }
        Ok(())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// A partition's log reads back chunk by chunk as it was appended, whatever
        /// runs the held appends were stored in (reads in between store what is held
        /// at once; small chunks form runs, large ones stand alone), after retention
        /// dropped chunks from the front (cutting runs), and after the file is
        /// closed and opened again.
        #[test]
        fn a_partition_log_reads_back_as_appended_whatever_its_runs(
            steps in proptest::collection::vec(log_step(), 1..60),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("warren.redb");
            let store = Store::open(&path).unwrap();
            let mut model: Vec<Vec<StoredChunk>> = vec![Vec::new(); 3];
            let mut next = [0u64; 3];
            let mut batch = Vec::new();
            let mut commits = Vec::new();
            for step in steps {
                match step {
                    LogStep::Append { partition, len, more } => {
                        let first = next[partition as usize];
                        next[partition as usize] += len as u64 % 7 + 1;
                        let chunk: Vec<u8> = (0..len).map(|i| (first as usize * 13 + i) as u8).collect();
                        model[partition as usize].push((first, chunk.clone()));
                        batch.push(Op::AppendChunk { partition, first, time_index: None, chunk, keys: Vec::new() });
                        if !more {
                            commits.push(store.submit(Batch::durable(std::mem::take(&mut batch))));
                        }
                    }
                    LogStep::Read { partition } => {
                        store.partition_chunks(partition, 0, 1).unwrap();
                    }
                    LogStep::Drop { partition, nth } => {
                        let log = &mut model[partition as usize];
                        if log.is_empty() {
                            continue;
                        }
                        let before = log[nth % log.len()].0;
                        log.retain(|(first, _)| *first >= before);
                        batch.push(Op::DropChunks { partition, before, before_ms: 0, keys: Vec::new() });
                        commits.push(store.submit(Batch::durable(std::mem::take(&mut batch))));
                    }
                }
            }
            commits.push(store.submit(Batch::durable(batch)));
            for commit in commits {
                commit.wait().unwrap();
            }
            check_logs(&store, &model)?;
            store.close();
            let store = Store::open(&path).unwrap();
            check_logs(&store, &model)?;
            store.close();
        }
    }

    #[test]
    fn a_drop_applied_before_the_checkpoint_takes_the_appends_held_before_it() {
        // A store with its journal (the in-memory ones have none), so appends are
        // held.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("warren.redb")).unwrap();
        let append = Op::AppendChunk {
            partition: 7,
            first: 0,
            time_index: Some(1_000),
            chunk: b"held".to_vec(),
            keys: vec![(42, 0)],
        };
        store
            .submit(Batch::durable(vec![append]))
            .wait()
            .expect("append");
        store
            .submit(Batch::durable(vec![Op::DropPartition { partition: 7 }]))
            .wait()
            .expect("drop");
        // A read of another table applies the ops held back without waiting for
        // the checkpoint: the drop must not reach redb ahead of the append.
        store.read_meta(MetaTable::Queues).expect("read");
        assert_eq!(store.partition_ends(7).unwrap(), None);
        assert!(store.partition_key_offsets(7, 42, 10).unwrap().is_empty());
        assert_eq!(store.partition_offset_at(7, 0).unwrap(), None);
        assert_eq!(store.partitions().unwrap(), Vec::<u64>::new());
    }

    #[test]
    fn a_chunk_that_begins_like_a_run_is_refused_alone() {
        let (store, _) = flaky_store();
        let chunk = |first, bytes: &[u8]| Op::AppendChunk {
            partition: 1,
            first,
            time_index: None,
            chunk: bytes.to_vec(),
            keys: Vec::new(),
        };
        let refused = store.submit(Batch::durable(vec![chunk(0, b"\xFF\xFF\xFF\xFFrest")]));
        let kept = store.submit(Batch::durable(vec![chunk(0, b"\xFF\xFF\xFFrest")]));
        assert!(matches!(
            refused.wait(),
            Err(CommitError::ChunkLikeRun {
                partition: 1,
                first: 0,
                ..
            })
        ));
        kept.wait()
            .expect("a chunk that does not begin with the mark is stored");
        assert_eq!(
            store.partition_chunks(1, 0, usize::MAX).unwrap(),
            vec![(0, b"\xFF\xFF\xFFrest".to_vec())]
        );
    }

    #[test]
    fn a_dropped_log_is_gone_whole_and_other_groups_stay() {
        let (store, _) = flaky_store();
        let record = |group, index| Op::PutLogRecord {
            group,
            index,
            record: vec![index as u8; 3],
        };
        let ops = (0..5)
            .map(|i| record(4, i))
            .chain((0..3).map(|i| record(5, i)))
            .chain([Op::PutLogSnapshot {
                group: 4,
                snapshot: b"s".to_vec(),
            }])
            .collect();
        store.submit(Batch::durable(ops)).wait().expect("commit");
        let only_snapshot = Op::PutLogSnapshot {
            group: u64::MAX,
            snapshot: b"t".to_vec(),
        };
        store
            .submit(Batch::durable(vec![only_snapshot, record(u64::MAX - 1, 2)]))
            .wait()
            .expect("commit");
        assert_eq!(
            store.log_groups().expect("groups"),
            [4, 5, u64::MAX - 1, u64::MAX]
        );
        store
            .submit(Batch::durable(vec![Op::DropLog { group: 4 }]))
            .wait()
            .expect("commit");
        assert!(store.read_log(4).expect("read").is_empty());
        assert_eq!(store.read_log_snapshot(4).expect("read"), None);
        assert_eq!(store.read_log(5).expect("read").len(), 3);
        assert_eq!(
            store.log_groups().expect("groups"),
            [5, u64::MAX - 1, u64::MAX]
        );
    }

    #[test]
    fn requests_queued_during_a_commit_share_the_next_one() {
        let (store, _) = flaky_store();
        let before = store.stats();
        let stall = stall_writer(&store);
        let commits: Vec<Commit> = (0..100)
            .map(|seq| store.submit(Batch::durable(vec![put(1, seq)])))
            .collect();
        drop(stall);
        for commit in commits {
            commit.wait().expect("commit");
        }
        let stats = store.stats();
        // The writer took the first request (and maybe some more) before it
        // stalled; everything queued behind the stall is one more group.
        assert!(stats.commits - before.commits <= 2, "{stats:?}");
        assert_eq!(stats.batches - before.batches, 100);
        assert!(stats.largest_group >= 50, "{stats:?}");
    }

    #[test]
    fn group_limits_split_large_backlogs() {
        let fail_sync = Arc::new(AtomicBool::new(false));
        let disk = FlakyDisk {
            inner: InMemoryBackend::new(),
            fail_sync,
        };
        let path = PathBuf::from("/limits/warren.redb");
        let options = StoreOptions {
            max_group_ops: 10,
            ..StoreOptions::default()
        };
        let opened = open_backend(&path, &options, disk).expect("open in memory");
        let store = Store::start(path, opened, &options).expect("start");
        let before = store.stats();
        let stall = stall_writer(&store);
        let commits: Vec<Commit> = (0..100)
            .map(|seq| store.submit(Batch::durable(vec![put(1, seq)])))
            .collect();
        drop(stall);
        for commit in commits {
            commit.wait().expect("commit");
        }
        let stats = store.stats();
        assert!(stats.commits - before.commits >= 10, "{stats:?}");
        assert!(stats.largest_group <= 10, "{stats:?}");
        assert_eq!(stats.batches - before.batches, 100);
    }

    #[test]
    fn a_failed_commit_fails_every_batch_of_its_group_and_the_writer_answers_on() {
        let (store, fail_sync) = flaky_store();
        store
            .submit(Batch::durable(vec![put(1, 0)]))
            .wait()
            .expect("healthy commit");
        fail_sync.store(true, Ordering::SeqCst);
        let stall = stall_writer(&store);
        let commits: Vec<Commit> = (1..=20)
            .map(|seq| store.submit(Batch::durable(vec![put(1, seq)])))
            .collect();
        drop(stall);
        for commit in commits {
            let err = commit.wait().expect_err("fsync fails");
            assert!(matches!(err, CommitError::Storage { .. }), "{err:?}");
            let text = err.to_string();
            assert!(text.contains("/flaky/warren.redb"), "{text}");
            assert!(text.contains("injected fsync failure"), "{text}");
        }
        assert!(store.stats().failed_commits >= 1);
        // The writer is still there and answers (redb refuses writes after a
        // failed commit until the file is reopened; the error says so).
        fail_sync.store(false, Ordering::SeqCst);
        let err = store
            .submit(Batch::durable(vec![put(1, 99)]))
            .wait()
            .expect_err("redb refuses writes after a failed commit");
        let text = err.to_string();
        assert!(
            text.contains("after an earlier failed commit: I/O error: injected fsync failure"),
            "{text}"
        );
        // Reads keep working on the last good state.
        let mut seen = Vec::new();
        store
            .for_each_index(1, |seq, _| seen.push(seq))
            .expect("read after failure");
        assert!(seen.contains(&0));
    }

    #[test]
    fn requests_while_the_database_is_gone_get_closed_and_the_writer_recovers() {
        let (store, _) = flaky_store();
        let mut stall = stall_writer(&store);
        let db = stall.take();
        let commits: Vec<Commit> = (0..10)
            .map(|seq| store.submit(Batch::durable(vec![put(2, seq)])))
            .collect();
        drop(stall);
        for commit in commits {
            assert!(matches!(commit.wait(), Err(CommitError::Closed { .. })));
        }
        *stall_writer(&store) = db;
        store
            .submit(Batch::durable(vec![put(2, 0)]))
            .wait()
            .expect("writer carries on");
    }

    #[test]
    fn id_counter_is_persisted_with_the_batch_that_follows() {
        let (store, _) = flaky_store();
        let id = store.allocate_id();
        store
            .submit(Batch::non_durable(vec![put(id, 1)]))
            .wait()
            .expect("commit");
        let guard = store.handle.shared.db.read().expect("lock");
        let db = guard.as_ref().expect("open");
        let txn = redb::ReadableDatabase::begin_read(db).expect("read");
        let persisted = txn
            .open_table(crate::tables::FORMAT)
            .expect("format")
            .get(crate::tables::NEXT_ID_KEY)
            .expect("get")
            .map(|g| g.value());
        assert_eq!(persisted, Some(id + 1));
    }
}
