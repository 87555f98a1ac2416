//! Counters: the internal [`Tally`], kept exact by construction (every change of an
//! entry subtracts its old contribution and adds its new one), and the
//! [`QueueStats`] snapshot listings show, built from it.

use crate::queue::QueueStats;

use super::entry::{Entry, Place, Storage};

/// Running totals over all entries, derived from their state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub ready: u64,
    pub ready_bytes: u64,
    pub unacked: u64,
    pub unacked_bytes: u64,
    /// Entries waiting for their body to be dead-lettered, or for their
    /// dead-letter targets to hold them.
    pub dead_lettering: u64,
    /// Dead-lettering entries with their body in memory (republished, or to be again).
    pub dead_lettering_resident: u64,
    pub dead_lettering_resident_bytes: u64,
    /// Entries with the body in memory, whatever their place.
    pub resident: u64,
    pub resident_bytes: u64,
    /// Ready entries with the body in memory (the window's occupancy).
    pub ready_resident: u64,
    pub ready_resident_bytes: u64,
    /// Ready entries without their body (paged out or loading).
    pub ready_absent: u64,
    /// Entries without their body, whatever their place.
    pub absent: u64,
    /// Entries whose body has been asked for.
    pub loading: u64,
    pub loading_bytes: u64,
    /// Ready entries whose body goes once its write is confirmed.
    pub page_outs: u64,
    /// Entries whose write is not yet confirmed.
    pub writing: u64,
}

impl Tally {
    /// Adds an entry's contribution.
    pub fn add(&mut self, e: &Entry) {
        self.apply(e, u64::wrapping_add);
    }

    /// Subtracts an entry's contribution.
    pub fn sub(&mut self, e: &Entry) {
        self.apply(e, u64::wrapping_sub);
    }

    fn apply(&mut self, e: &Entry, op: fn(u64, u64) -> u64) {
        let one = |field: &mut u64, cond: bool, amount: u64| {
            if cond {
                *field = op(*field, amount);
            }
        };
        let ready = matches!(e.place, Place::Ready);
        let resident = e.body.is_some();
        one(&mut self.ready, ready, 1);
        one(&mut self.ready_bytes, ready, e.size);
        one(
            &mut self.unacked,
            matches!(e.place, Place::Unacked { .. }),
            1,
        );
        one(
            &mut self.unacked_bytes,
            matches!(e.place, Place::Unacked { .. }),
            e.size,
        );
        one(
            &mut self.dead_lettering,
            matches!(e.place, Place::DeadLettering(_)),
            1,
        );
        let dead_lettering = matches!(e.place, Place::DeadLettering(_));
        one(
            &mut self.dead_lettering_resident,
            dead_lettering && resident,
            1,
        );
        one(
            &mut self.dead_lettering_resident_bytes,
            dead_lettering && resident,
            e.size,
        );
        one(&mut self.resident, resident, 1);
        one(&mut self.resident_bytes, resident, e.size);
        one(&mut self.ready_resident, ready && resident, 1);
        one(&mut self.ready_resident_bytes, ready && resident, e.size);
        one(&mut self.ready_absent, ready && !resident, 1);
        one(&mut self.absent, !resident, 1);
        one(&mut self.loading, e.loading, 1);
        one(&mut self.loading_bytes, e.loading, e.size);
        one(&mut self.page_outs, ready && e.page_out, 1);
        one(&mut self.writing, e.storage == Storage::Writing, 1);
    }
}

/// The counters listings show, from the tally.
pub(crate) fn queue_stats(
    t: &Tally,
    consumers: u64,
    pending_confirms: u64,
    lost: u64,
) -> QueueStats {
    QueueStats {
        ready: t.ready,
        unacked: t.unacked,
        consumers,
        ready_bytes: t.ready_bytes,
        unacked_bytes: t.unacked_bytes,
        bytes_total: t.ready_bytes.saturating_add(t.unacked_bytes),
        bytes_in_memory: t.resident_bytes,
        messages_in_memory: t.resident,
        paged_out: t.absent,
        loading: t.loading,
        dead_lettering: t.dead_lettering,
        writing: t.writing,
        pending_confirms,
        lost,
    }
}
