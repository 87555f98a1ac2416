//! Warren's storage: one [redb](https://www.redb.org) file per node, written by a
//! group-commit writer, read by recovery.
//!
//! It knows nothing of actors or of the broker's types: callers hand it
//! encoded bytes (see [`codec`]) under keys they build, and get bytes back.
//!
//! # Layout of this crate
//!
//! Modules depend downwards only: each one uses only modules listed below it.
//!
//! | file          | concern                                                        | uses |
//! |---------------|----------------------------------------------------------------|------|
//! | `store.rs`    | [`Store`], the shared handle: open, submit, read, close        | all below |
//! | `writer.rs`   | the writer thread: group commit, durability, failure handling, the crash-test hook ([`FAULT_ABORT_IN_COMMIT_ENV`]) | `shared`, `options`, `journal`, `held`, `runs`, `apply`, `batch`, `tables`, `error` |
//! | `open.rs`     | opening a file: create, validate the format, apply the journal, create the tables | `options`, `journal`, `apply`, `tables`, `error` |
//! | `reads.rs`    | recovery and delivery reads in read transactions               | `tables`, `error` |
//! | `shared.rs`   | what the handle and the writer thread share (file, id counter) | `stats` |
//! | `commit.rs`   | [`Commit`]: the answer to a batch, as a future or a wait       | `error` |
//! | `held.rs`     | appends to partition logs held back until the checkpoint, so that they go to redb as runs | `batch`, `runs` |
//! | `journal.rs`  | the journal file beside the data file: small durable groups fsynced as one appended record | `batch`, `codec` |
//! | `apply.rs`    | applying an [`Op`] to a write transaction (groups and the journal's replay), held appends as runs | `batch`, `runs`, `tables` |
//! | `runs.rs`     | runs: a partition's consecutive chunks stored as one value, and split back | — |
//! | `batch.rs`    | [`Batch`] and [`Op`]: what callers ask to write                | `tables` |
//! | `options.rs`  | [`StoreOptions`]: cache, group limits, flush interval          | — |
//! | `tables.rs`   | the tables of the file and their key order                     | — |
//! | `stats.rs`    | [`StoreStats`]: counters for tests and benchmarks              | — |
//! | `error.rs`    | one error enum per operation: [`OpenError`], [`CommitError`], [`ReadError`], [`CompactError`] (the codec and the page files have their own) | — |
//! | `codec.rs`    | [`codec`]: the versioned value encoding (bincode 2)            | — |
//! | `paging.rs`   | [`paging::PageFile`]: segment files for bodies that need not survive a restart | — |
//!
//! # Layout of the file
//!
//! | table              | key                   | value                     | use              |
//! |--------------------|-----------------------|---------------------------|------------------|
//! | `format`           | `&str`                | `u64`                     | format version, id counter |
//! | `meta.vhosts` … `meta.policies` | `&str` (caller-built) | encoded record | one per [`MetaTable`] |
//! | `queue.index`      | `(queue, seq)`        | small index record        | read at recovery |
//! | `queue.body`       | `(queue, seq)`        | full encoded message      | read on delivery |
//! | `partition.log`    | `(partition, first offset)` | chunk of messages, or a run of consecutive chunks (`runs.rs`) | streams' logs |
//! | `partition.time`   | `(partition, ms)`     | first offset              | streams' timestamp index |
//! | `partition.keys`   | `(partition, key hash, offset)` | `()`            | streams' key index |
//! | `consumer.offsets` | `"PARTITION\0GROUP"`  | `u64` offset              | consumer groups  |
//! | `replication.log`  | `(group, index)`      | entry                     | Raft logs        |
//! | `delayed.messages` | `(exchange, due ms, seq)` | encoded message       | delayed exchanges |
//!
//! Tuple keys sort element by element, so one queue's (partition's, group's)
//! records are one contiguous range: recovery of a queue, or purging it, is one
//! range scan. The reserved tables are created at open so that later formats of
//! version 1 find them; nothing writes them yet.
//!
//! Every value the broker stores starts with the codec's format version byte;
//! the file as a whole carries [`FILE_FORMAT_VERSION`] in its `format` table, and
//! a file from a newer Warren is refused at open rather than misread.
//!
//! # Durability
//!
//! A [`Batch`] marked `durable` resolves its [`Commit`] only after an fsync:
//! of the journal beside the file (`warren.redb.journal.0`, `.1`) for a small group, of
//! redb's file for a large one. Many batches share one commit and one fsync
//! (`writer.rs` describes the loop, and how non-durable batches reach the disk and
//! what a crash loses; `journal.rs` the journal and how opening applies it).
//!
//! Crash tests can make the writer abort its process in the middle of a chosen
//! durable commit with [`FAULT_ABORT_IN_COMMIT_ENV`] (`writer.rs` describes the
//! hook).
//!
//! After a [`CommitError::Storage`] redb refuses further writes until the file is
//! reopened: the store's owner (the node's `store` supervisor child) should
//! close it and open it again, which lets redb repair the file.
//!
//! # Benchmarks
//!
//! `examples/commit_bench.rs` measures durable 1 KiB puts per second with 1, 8
//! and 64 concurrent submitters; `examples/recovery_bench.rs` measures opening
//! and index-scanning a store with a million messages after kill -9.
//!
//! # Example
//!
//! ```
//! use warren_storage::{Batch, MetaTable, Op, Store};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(dir.path().join("warren.redb")).unwrap();
//! let queue = store.allocate_id();
//! let record = warren_storage::codec::encode(&("orders", queue)).unwrap();
//! store
//!     .submit(Batch::durable(vec![
//!         Op::PutMeta { table: MetaTable::Queues, key: "/\u{0}orders".into(), value: record },
//!         Op::PutMessage { queue, seq: 1, index: vec![0], body: b"hello".to_vec() },
//!     ]))
//!     .wait()
//!     .unwrap();
//! assert_eq!(store.read_bodies(queue, &[1]).unwrap(), vec![(1, b"hello".to_vec())]);
//! store.close();
//! ```

#![deny(missing_docs)]

pub mod codec;
pub mod paging;

mod apply;
mod batch;
mod commit;
mod error;
mod held;
mod journal;
mod open;
mod options;
#[cfg(test)]
mod power_cut;
pub(crate) mod reads;
mod runs;
mod shared;
mod stats;
mod store;
mod tables;
mod writer;

pub use batch::{Batch, Op};
pub use codec::{DecodeError, EncodeError};
pub use commit::Commit;
pub use error::{CommitError, CompactError, OpenError, ReadError};
pub use options::StoreOptions;
pub use reads::{DelayedRecord, StoredChunk};
pub use stats::StoreStats;
pub use store::Store;
pub use tables::{MetaTable, FILE_FORMAT_VERSION};
pub use writer::FAULT_ABORT_IN_COMMIT_ENV;
