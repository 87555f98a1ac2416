//! Appends to partition logs that the writer holds back until the checkpoint.
//!
//! A journaled append is durable in the journal and answered; redb gets it later.
//! Other journaled ops reach redb within [`crate::writer::APPLY_AFTER`], but a
//! stream's chunks wait for the checkpoint (or a read of a partition), so that a
//! partition's consecutive chunks go to redb as one run (`runs.rs`): with 1 000
//! partitions each append is a chunk of a few KiB, and redb's cost is per value.
//!
//! Held appends are applied before the other ops of the transaction that takes
//! them, even ops journaled before them. That order is safe: appends touch only
//! the partition tables; retention ([`Op::DropChunks`]) drops chunks that begin
//! before a chunk already stored, never a later one; and no append follows the
//! deletion of its partition ([`Op::DropPartition`]), since partition ids are
//! never reused.

use std::time::{Duration, Instant};

use crate::batch::Op;
use crate::runs::RUN_CHUNK;

/// Bytes of held appends that make the writer start a checkpoint (which takes
/// them) without waiting for the flush interval. The most the writer holds is
/// this, plus what the running checkpoint holds.
pub(crate) const HELD_MAX: usize = 1024 * 1024;

/// The appends held back, in the order they were journaled.
#[derive(Default)]
pub(crate) struct Held {
    ops: Vec<Op>,
    bytes: usize,
    since: Option<Instant>,
}

impl Held {
    /// Whether `op` is held back rather than applied with the other journaled ops.
    pub(crate) fn holds(op: &Op) -> bool {
        matches!(op, Op::AppendChunk { .. })
    }

    /// Bytes of the appends among `ops` whose chunks are small enough to gain from
    /// being stored in runs ([`RUN_CHUNK`] or less).
    pub(crate) fn small_appends<'o>(ops: impl Iterator<Item = &'o Op>) -> usize {
        ops.filter_map(|op| match op {
            Op::AppendChunk { chunk, .. } if chunk.len() <= RUN_CHUNK => Some(op.payload_len()),
            _ => None,
        })
        .sum()
    }

    pub(crate) fn push(&mut self, op: Op) {
        self.bytes += op.payload_len();
        self.ops.push(op);
        self.since.get_or_insert_with(Instant::now);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub(crate) fn ops(&self) -> &[Op] {
        &self.ops
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// When the checkpoint that takes them is due by time: a flush interval after
    /// the first was held.
    pub(crate) fn due_at(&self, flush_interval: Duration) -> Option<Instant> {
        self.since
            .and_then(|since| since.checked_add(flush_interval))
    }

    /// Whether a checkpoint should take them now: [`HELD_MAX`] held, or the first
    /// held a flush interval ago.
    pub(crate) fn due(&self, flush_interval: Duration) -> bool {
        self.bytes >= HELD_MAX
            || self
                .due_at(flush_interval)
                .is_some_and(|at| Instant::now() >= at)
    }

    /// After a checkpoint could not start: due again a flush interval from now,
    /// so that the writer does not try again in a loop.
    pub(crate) fn retry_later(&mut self) {
        if self.since.is_some() {
            self.since = Some(Instant::now());
        }
    }

    /// Takes them all, leaving none held.
    pub(crate) fn take(&mut self) -> Vec<Op> {
        self.bytes = 0;
        self.since = None;
        std::mem::take(&mut self.ops)
    }
}
