//! [`Shared`]: what the [`Store`](crate::Store) handles and the writer thread
//! both hold. It sits below both, so that the writer gets it as an argument
//! instead of reaching up into `store.rs`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, RwLock};

use redb::Database;

use crate::stats::Counters;

/// The open file and its bookkeeping, shared by the handle and the writer.
pub(crate) struct Shared {
    /// The data file (absolute), named in every error.
    pub(crate) path: Arc<Path>,
    /// `None` once closed. The writer holds a read guard for the span of one
    /// transaction, readers only while they begin one; compaction and close
    /// take it exclusively.
    pub(crate) db: RwLock<Option<Database>>,
    /// The next id [`Store::allocate_id`](crate::Store::allocate_id) hands out;
    /// the writer persists it with the batches that follow.
    pub(crate) next_id: AtomicU64,
    /// Written by the writer, read by [`Store::stats`](crate::Store::stats).
    pub(crate) stats: Counters,
    /// Set while journaled groups wait to be applied to redb (the writer sets it
    /// before answering them): a read must ask the writer to apply them first.
    pub(crate) unapplied: AtomicBool,
    /// Set while journaled appends to partition logs wait for the checkpoint
    /// (`held.rs`): a read of a partition must ask the writer to apply them.
    pub(crate) unapplied_appends: AtomicBool,
}
