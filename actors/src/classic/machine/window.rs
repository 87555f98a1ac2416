//! The body memory window: how many message bodies a queue keeps in memory, and the
//! decisions that keep it so (when to page a new body out, when and how much to load).
//!
//! The window is the ready messages nearest the head. A queue starts "in memory":
//! bodies stay resident until the window is full. A queue with consumers may keep more:
//! what it is about to deliver would otherwise be written and read back at once, so
//! while it has consumers its bodies beyond the window draw on the node's
//! [`QueueMemory`](crate::queue_memory::QueueMemory), a budget shared by all its
//! queues (the shell passes the queue's share in as an allowance). Once the window and
//! the allowance are full, the queue is "paging": every
//! new message is written and its body dropped once the write is confirmed, even if
//! memory frees up in between, so the resident bodies stay a prefix of the ready
//! order (as RabbitMQ's `delta` does) and loads read runs of consecutive seqs. The
//! queue leaves the paging mode when the last paged-out ready message has been loaded.
//!
//! Loads are batched: when consumers want messages and the window has drained to half
//! or the head itself is not resident, one `LoadBodies` asks for the next paged-out
//! messages in ready order, as many as fit the free part of the window (at least one,
//! so a message larger than the window still gets delivered).

use serde::{Deserialize, Serialize};

use super::stats::Tally;

/// Limits of a queue's in-memory bodies (node configuration, not a declare argument).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowLimits {
    /// Most ready bodies kept in memory.
    pub messages: u64,
    /// Most body bytes of ready messages kept in memory.
    pub bytes: u64,
}

impl Default for WindowLimits {
    fn default() -> Self {
        WindowLimits {
            messages: 2048,
            bytes: 8 * 1024 * 1024,
        }
    }
}

/// How much a load may bring in: at most `messages` bodies and `bytes` bytes, but at
/// least one body when `at_least_one`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LoadBudget {
    pub messages: u64,
    pub bytes: u64,
    pub at_least_one: bool,
}

impl LoadBudget {
    /// Whether a batch that already holds `taken` bodies of `taken_bytes` bytes may
    /// take one more of `size` bytes.
    pub fn admits(&self, taken: u64, taken_bytes: u64, size: u64) -> bool {
        if taken == 0 && self.at_least_one {
            return true;
        }
        taken < self.messages && taken_bytes.saturating_add(size) <= self.bytes
    }
}

/// What a resident body costs in memory beyond its bytes (the message's allocation,
/// properties and reference count), as the node's queue memory counts it.
pub(crate) const BODY_OVERHEAD: u64 = 256;

impl WindowLimits {
    /// Whether a body that just became ready and resident must be paged out: the queue
    /// is already paging, or the window overflows with it and the queue has no
    /// `allowance` (no consumers) or its memory beyond the window exceeds the allowance.
    pub(crate) fn must_page_out(&self, tally: &Tally, allowance: Option<u64>) -> bool {
        if tally.ready_absent > 0 || tally.page_outs > 0 {
            return true;
        }
        let overflows =
            tally.ready_resident > self.messages || tally.ready_resident_bytes > self.bytes;
        overflows && allowance.is_none_or(|allowed| self.excess(tally) > allowed)
    }

    /// The memory of the queue's ready resident bodies (bytes plus [`BODY_OVERHEAD`]
    /// each) beyond the window's bytes: what the queue holds of the node's queue memory.
    pub(crate) fn excess(&self, tally: &Tally) -> u64 {
        tally
            .ready_resident_bytes
            .saturating_add(tally.ready_resident.saturating_mul(BODY_OVERHEAD))
            .saturating_sub(self.bytes)
    }

    /// The budget for loading paged-out ready bodies, or `None` when no load is due.
    ///
    /// `head_absent`: the head of the ready order is neither resident nor loading, so
    /// deliveries are stuck until it loads: a load is forced. Otherwise a load refills
    /// the window once it has drained to half and nothing is loading.
    pub(crate) fn ready_load_budget(&self, tally: &Tally, head_absent: bool) -> Option<LoadBudget> {
        let used = tally.ready_resident.saturating_add(tally.loading);
        let used_bytes = tally
            .ready_resident_bytes
            .saturating_add(tally.loading_bytes);
        let drained =
            tally.loading == 0 && used <= self.messages / 2 && used_bytes <= self.bytes / 2;
        if !head_absent && !drained {
            return None;
        }
        Some(LoadBudget {
            messages: self.messages.saturating_sub(used),
            bytes: self.bytes.saturating_sub(used_bytes),
            at_least_one: head_absent,
        })
    }

    /// The budget for loading the bodies of deliveries waiting for them: what is left
    /// of the window after loads in flight, and at least one when the first in line
    /// waits for no load (everything behind it waits for it).
    pub(crate) fn delivery_load_budget(&self, tally: &Tally, front_waits: bool) -> LoadBudget {
        LoadBudget {
            messages: self.messages.saturating_sub(tally.loading),
            bytes: self.bytes.saturating_sub(tally.loading_bytes),
            at_least_one: front_waits,
        }
    }

    /// The budget for loading bodies of messages waiting to be dead-lettered: what is
    /// left of the window after loads in flight and the dead-lettered bodies waiting
    /// for their targets, at least one when there are none of either.
    pub(crate) fn dead_letter_load_budget(&self, tally: &Tally) -> LoadBudget {
        let used = tally.loading.saturating_add(tally.dead_lettering_resident);
        let used_bytes = tally
            .loading_bytes
            .saturating_add(tally.dead_lettering_resident_bytes);
        LoadBudget {
            messages: self.messages.saturating_sub(used),
            bytes: self.bytes.saturating_sub(used_bytes),
            at_least_one: used == 0,
        }
    }
}
