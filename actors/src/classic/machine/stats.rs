//! The local part's counters: [`Tally`], kept exact by construction (every change of a
//! body subtracts its old contribution and adds its new one), and the [`QueueStats`]
//! snapshot listings show, built from it and the core's counters.

use crate::queue::QueueStats;

use super::core::CoreTally;
use super::entry::{Body, Held, Storage};

/// Running totals over the bodies this node holds, derived from their state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Bodies in memory, wherever their message is.
    pub resident: u64,
    pub resident_bytes: u64,
    /// Ready messages with the body in memory (the window's occupancy).
    pub ready_resident: u64,
    pub ready_resident_bytes: u64,
    /// Ready messages without their body (paged out or loading).
    pub ready_absent: u64,
    /// Messages without their body, wherever they are.
    pub absent: u64,
    /// Bodies asked of storage.
    pub loading: u64,
    pub loading_bytes: u64,
    /// Ready bodies that go once their write is confirmed.
    pub page_outs: u64,
    /// Bodies whose write is not yet confirmed.
    pub writing: u64,
    /// Dead-lettered bodies in memory (republished, or to be again).
    pub dead_lettering_resident: u64,
    pub dead_lettering_resident_bytes: u64,
}

impl Tally {
    /// Adds a body's contribution.
    pub fn add(&mut self, b: &Body) {
        self.apply(b, 1);
    }

    /// Subtracts a body's contribution.
    pub fn sub(&mut self, b: &Body) {
        self.apply(b, -1);
    }

    /// Straight-line arithmetic (a bool times the amount) rather than a branch per
    /// counter: this runs twice for every change of a body.
    fn apply(&mut self, b: &Body, sign: i64) {
        let size = b.size as i64;
        let one = |field: &mut u64, cond: bool, amount: i64| {
            *field = field.wrapping_add_signed(sign * (cond as i64) * amount);
        };
        let ready = b.is_ready();
        let resident = b.message.is_some();
        let leaving = matches!(b.held, Held::Leaving(_));
        one(&mut self.resident, resident, 1);
        one(&mut self.resident_bytes, resident, size);
        one(&mut self.ready_resident, ready && resident, 1);
        one(&mut self.ready_resident_bytes, ready && resident, size);
        one(&mut self.ready_absent, ready && !resident, 1);
        one(&mut self.absent, !resident, 1);
        one(&mut self.loading, b.loading, 1);
        one(&mut self.loading_bytes, b.loading, size);
        one(&mut self.page_outs, ready && b.page_out, 1);
        one(&mut self.writing, b.storage == Storage::Writing, 1);
        one(&mut self.dead_lettering_resident, leaving && resident, 1);
        one(
            &mut self.dead_lettering_resident_bytes,
            leaving && resident,
            size,
        );
    }
}

/// The counters listings show, from the core's and the local part's.
pub(crate) fn queue_stats(
    core: &CoreTally,
    t: &Tally,
    consumers: u64,
    pending_confirms: u64,
    lost: u64,
) -> QueueStats {
    QueueStats {
        ready: core.ready,
        unacked: core.unacked,
        consumers,
        ready_bytes: core.ready_bytes,
        unacked_bytes: core.unacked_bytes,
        bytes_total: core.ready_bytes.saturating_add(core.unacked_bytes),
        bytes_in_memory: t.resident_bytes,
        messages_in_memory: t.resident,
        paged_out: t.absent,
        loading: t.loading,
        dead_lettering: core.dead_lettering,
        writing: t.writing,
        pending_confirms,
        lost,
    }
}
