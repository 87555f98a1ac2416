//! The ready set: messages waiting for a consumer, ordered by priority (highest
//! first), then by seq (lowest first).
//!
//! One level per priority (a single level without `x-max-priority`); a bitmap finds
//! the highest non-empty level in O(1). Within a level, the common case is a FIFO:
//! new messages arrive with the highest seq and leave from the head, so `fresh`, a
//! `VecDeque` of ascending seqs, takes them in O(1). A returned message usually
//! belongs just before the head and goes to `fresh`'s front, also O(1). Anything
//! that fits at neither end (a requeue behind the head) goes to `returned`, a
//! `BTreeSet`, and the level's head is the smaller of the two fronts. A removal from
//! the middle of `fresh` (a message expiring behind the head) leaves a tombstone,
//! skipped when it reaches an end. Every operation is O(1) or O(log n).

use std::collections::{BTreeSet, VecDeque};

use super::command::Seq;
use super::fasthash::IntSet;

#[derive(Clone, Debug, Default)]
struct Level {
    /// Ascending seqs; the front and back are always members (tombstones in between).
    fresh: VecDeque<Seq>,
    /// Seqs in `fresh` that are no longer members.
    tombstones: IntSet<Seq>,
    /// Members that did not fit at either end of `fresh`.
    returned: BTreeSet<Seq>,
    len: usize,
}

impl Level {
    fn first(&self) -> Option<Seq> {
        match (self.fresh.front(), self.returned.first()) {
            (Some(&a), Some(&b)) => Some(a.min(b)),
            (a, b) => a.or(b).copied(),
        }
    }

    fn insert(&mut self, seq: Seq) {
        self.len += 1;
        if !self.tombstones.is_empty() && self.tombstones.remove(&seq) {
            // Still in `fresh`, in its place: it only becomes a member again.
            return;
        }
        match (self.fresh.front(), self.fresh.back()) {
            (Some(&front), Some(&back)) => {
                if seq > back {
                    self.fresh.push_back(seq);
                } else if seq < front {
                    self.fresh.push_front(seq);
                } else {
                    self.returned.insert(seq);
                }
            }
            _ => self.fresh.push_back(seq),
        }
    }

    fn remove(&mut self, seq: Seq) -> bool {
        let removed = if self.fresh.front() == Some(&seq) {
            self.fresh.pop_front();
            self.trim();
            true
        } else if self.fresh.back() == Some(&seq) {
            self.fresh.pop_back();
            self.trim();
            true
        } else if self.returned.remove(&seq) {
            true
        } else if self.fresh.binary_search(&seq).is_ok() {
            self.tombstones.insert(seq)
        } else {
            false
        };
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Drops tombstones from both ends of `fresh`.
    fn trim(&mut self) {
        if self.tombstones.is_empty() {
            return;
        }
        while let Some(front) = self.fresh.front() {
            if !self.tombstones.remove(front) {
                break;
            }
            self.fresh.pop_front();
        }
        while let Some(back) = self.fresh.back() {
            if !self.tombstones.remove(back) {
                break;
            }
            self.fresh.pop_back();
        }
    }

    #[cfg(test)]
    fn contains(&self, seq: Seq) -> bool {
        self.returned.contains(&seq)
            || (self.fresh.binary_search(&seq).is_ok() && !self.tombstones.contains(&seq))
    }
}

/// Ready messages in delivery order.
#[derive(Clone, Debug)]
pub(crate) struct ReadySet {
    /// Indexed by priority.
    levels: Vec<Level>,
    /// Bit `p` is set when level `p` is not empty.
    occupied: [u64; 4],
    len: usize,
}

impl ReadySet {
    /// A ready set with priorities `0..=top_priority`.
    pub fn new(top_priority: u8) -> Self {
        ReadySet {
            levels: vec![Level::default(); usize::from(top_priority) + 1],
            occupied: [0; 4],
            len: 0,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn level_index(&self, priority: u8) -> usize {
        usize::from(priority).min(self.levels.len() - 1)
    }

    /// Adds a seq that is not a member.
    pub fn insert(&mut self, seq: Seq, priority: u8) {
        let p = self.level_index(priority);
        self.levels[p].insert(seq);
        self.occupied[p / 64] |= 1 << (p % 64);
        self.len += 1;
    }

    /// Removes a member; false if it was not one.
    pub fn remove(&mut self, seq: Seq, priority: u8) -> bool {
        let p = self.level_index(priority);
        let level = &mut self.levels[p];
        if !level.remove(seq) {
            return false;
        }
        if level.len == 0 {
            self.occupied[p / 64] &= !(1 << (p % 64));
        }
        self.len -= 1;
        true
    }

    /// The head: the lowest seq of the highest non-empty priority.
    pub fn peek(&self) -> Option<Seq> {
        let p = (0..4).rev().find_map(|w| {
            let bits = self.occupied[w];
            (bits != 0).then(|| w * 64 + 63 - bits.leading_zeros() as usize)
        })?;
        self.levels[p].first()
    }

    #[cfg(test)]
    pub fn contains(&self, seq: Seq, priority: u8) -> bool {
        self.levels[self.level_index(priority)].contains(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cmp::Reverse;

    #[test]
    fn fifo_within_a_level_and_priority_across_levels() {
        let mut r = ReadySet::new(9);
        r.insert(1, 0);
        r.insert(2, 5);
        r.insert(3, 0);
        r.insert(4, 5);
        r.insert(5, 200); // above the top: treated as the top
        assert_eq!(r.peek(), Some(5));
        assert!(r.remove(5, 200));
        assert_eq!(r.peek(), Some(2));
        assert!(r.remove(2, 5));
        assert_eq!(r.peek(), Some(4));
        assert!(r.remove(4, 5));
        assert_eq!(r.peek(), Some(1));
        assert!(!r.remove(4, 5));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn middle_removal_and_reinsert() {
        let mut r = ReadySet::new(0);
        for s in 1..=5 {
            r.insert(s, 0);
        }
        assert!(r.remove(3, 0));
        assert!(!r.contains(3, 0));
        assert!(r.remove(1, 0));
        assert!(r.remove(2, 0));
        assert_eq!(r.peek(), Some(4));
        r.insert(2, 0); // a requeue before the head
        assert_eq!(r.peek(), Some(2));
        r.insert(3, 0); // fits at neither end
        assert!(r.remove(2, 0));
        assert_eq!(r.peek(), Some(3));
        assert_eq!(r.len(), 3);
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        /// The ready set behaves like a `BTreeSet<(Reverse(priority), seq)>`.
        #[test]
        fn matches_an_ordered_set(ops in proptest::collection::vec((0u8..3, 0u64..40, 0u8..4), 1..300)) {
            let mut r = ReadySet::new(3);
            let mut model: BTreeSet<(Reverse<u8>, Seq)> = BTreeSet::new();
            let mut prio_of = std::collections::HashMap::new();
            for (op, seq, prio) in ops {
                match op {
                    0 => {
                        if let std::collections::hash_map::Entry::Vacant(v) = prio_of.entry(seq) {
                            v.insert(prio);
                            r.insert(seq, prio);
                            model.insert((Reverse(prio), seq));
                        }
                    }
                    1 => {
                        let p = prio_of.get(&seq).copied().unwrap_or(prio);
                        let removed = r.remove(seq, p);
                        prop_assert_eq!(removed, model.remove(&(Reverse(p), seq)));
                        if removed {
                            prio_of.remove(&seq);
                        }
                    }
                    _ => {
                        if let Some(head) = r.peek() {
                            let p = prio_of[&head];
                            prop_assert!(r.remove(head, p));
                            model.remove(&(Reverse(p), head));
                            prio_of.remove(&head);
                        }
                    }
                }
                prop_assert_eq!(r.len(), model.len());
                prop_assert_eq!(r.peek(), model.first().map(|k| k.1));
                for &(Reverse(p), s) in &model {
                    prop_assert!(r.contains(s, p));
                }
            }
        }
    }
}
