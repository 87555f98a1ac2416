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
//! never reused. The other way round, a drop must not reach redb before appends
//! journaled ahead of it (a deleted partition's log would come back, and chunks
//! retention dropped): the apply that takes a drop takes the held appends too
//! ([`Held::must_follow`]).

use std::time::{Duration, Instant};

use crate::batch::Op;
use crate::runs::RUN_CHUNK;

/// Bytes of held appends that make the writer start a checkpoint (which takes
/// them) without waiting for the flush interval. While a checkpoint runs, appends
/// go on being held (the journal's size bounds them), and the next checkpoint
/// starts as soon as it is done.
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

    /// Whether `op` must not reach redb before appends journaled ahead of it: the
    /// ops that remove a partition's chunks.
    pub(crate) fn must_follow(op: &Op) -> bool {
        matches!(op, Op::DropChunks { .. } | Op::DropPartition { .. })
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

    /// When the checkpoint that takes them is due: at once once [`HELD_MAX`] is
    /// held, else a flush interval after the first was held.
    pub(crate) fn due_at(&self, flush_interval: Duration) -> Option<Instant> {
        let since = self.since?;
        if self.bytes >= HELD_MAX {
            return Some(since);
        }
        since.checked_add(flush_interval)
    }

    /// Whether a checkpoint should take them now.
    pub(crate) fn due(&self, flush_interval: Duration) -> bool {
        self.due_at(flush_interval)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn append(len: usize) -> Op {
        Op::AppendChunk {
            partition: 1,
            first: 0,
            time_index: None,
            chunk: vec![0; len],
            keys: Vec::new(),
        }
    }

    #[test]
    fn held_appends_are_due_after_a_flush_interval_or_at_once_when_large() {
        let interval = Duration::from_secs(3600);
        let mut held = Held::default();
        assert_eq!(held.due_at(interval), None);
        held.push(append(100));
        assert!(!held.due(interval));
        held.push(append(HELD_MAX));
        assert!(held.due(interval), "HELD_MAX held is due at once");
        assert_eq!(held.take().len(), 2);
        assert!(held.is_empty() && held.bytes() == 0 && held.due_at(interval).is_none());
        held.push(append(100));
        assert!(held.due(Duration::ZERO));
    }
}
