//! [`QueueMemory`]: the node's budget for message bodies that queues with consumers
//! keep in memory beyond their window, instead of paging them out.
//!
//! A queue whose consumers are behind would otherwise write every body beyond its
//! window (2 048 messages) to its page file and read it back moments later for
//! delivery: a publisher a little faster than its consumers then costs twice the CPU
//! per message. The budget is shared by all the node's queues and follows the memory
//! high watermark (half of it, as RabbitMQ's default paging ratio), so the bodies kept
//! are bounded whatever the number of queues. A queue without consumers keeps only its
//! window: nobody will read the rest soon.
//!
//! Each queue actor holds a [`MemoryClaim`]: after each step it records what its ready
//! bodies take beyond the window, and before the next it asks how far it may go
//! ([`MemoryClaim::allowance`]). The budget is soft: queues read it between steps, so
//! together they can overshoot it by one step's publishes each.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The fraction of the memory high watermark queues may keep bodies in beyond their
/// windows.
pub const PAGING_RATIO: f64 = 0.5;

/// The node's budget (cheap to share: `Arc`).
#[derive(Debug, Default)]
pub struct QueueMemory {
    /// What the queues may hold together (changes with the watermark).
    limit: AtomicU64,
    /// What their claims hold now.
    used: AtomicU64,
}

impl QueueMemory {
    /// A budget of `limit` bytes, nothing held yet.
    pub fn new(limit: u64) -> Arc<QueueMemory> {
        Arc::new(QueueMemory {
            limit: AtomicU64::new(limit),
            used: AtomicU64::new(0),
        })
    }

    /// The budget for a memory high watermark of `watermark` bytes.
    pub fn limit_for_watermark(watermark: u64) -> u64 {
        (watermark as f64 * PAGING_RATIO) as u64
    }

    /// Changes the budget (the watermark changed). Queues over it keep what they hold
    /// and page out what comes next.
    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// The budget in bytes.
    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// What the queues hold together.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// A claim of nothing yet, for one queue actor.
    pub fn claim(self: &Arc<Self>) -> MemoryClaim {
        MemoryClaim {
            memory: self.clone(),
            held: 0,
        }
    }
}

/// One queue's part of the [`QueueMemory`]; given back when dropped (the actor
/// stopped or crashed).
#[derive(Debug)]
pub struct MemoryClaim {
    /// The budget the claim is part of.
    memory: Arc<QueueMemory>,
    /// What this queue last recorded it holds (given back on drop).
    held: u64,
}

impl MemoryClaim {
    /// How much the queue may hold in all: what it holds plus what nobody holds.
    pub fn allowance(&self) -> u64 {
        let others = self.memory.used().saturating_sub(self.held);
        self.memory.limit().saturating_sub(others)
    }

    /// Records that the queue now holds `bytes`.
    pub fn hold(&mut self, bytes: u64) {
        if bytes > self.held {
            self.memory
                .used
                .fetch_add(bytes - self.held, Ordering::Relaxed);
        } else if bytes < self.held {
            self.memory
                .used
                .fetch_sub(self.held - bytes, Ordering::Relaxed);
        }
        self.held = bytes;
    }
}

impl Drop for MemoryClaim {
    fn drop(&mut self) {
        self.hold(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_share_the_budget_and_give_back_what_they_held() {
        let memory = QueueMemory::new(100);
        let mut a = memory.claim();
        let mut b = memory.claim();
        assert_eq!((a.allowance(), b.allowance()), (100, 100));
        a.hold(70);
        assert_eq!(a.allowance(), 100, "its own part counts as its own");
        assert_eq!(b.allowance(), 30);
        b.hold(30);
        a.hold(20);
        assert_eq!((memory.used(), a.allowance(), b.allowance()), (50, 70, 80));
        drop(b);
        assert_eq!((memory.used(), a.allowance()), (20, 100));
    }

    #[test]
    fn a_lowered_limit_leaves_nothing_to_claimants_over_it() {
        let memory = QueueMemory::new(100);
        let mut a = memory.claim();
        let b = memory.claim();
        a.hold(80);
        memory.set_limit(50);
        assert_eq!((a.allowance(), b.allowance()), (50, 0));
        a.hold(0);
        assert_eq!(b.allowance(), 50);
    }

    #[test]
    fn the_limit_is_half_the_watermark() {
        assert_eq!(QueueMemory::limit_for_watermark(1 << 30), 1 << 29);
    }
}
