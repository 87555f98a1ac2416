//! [`SeqMap`]: the queue's messages by seq, in about the memory of a `Vec`.
//!
//! Seqs are handed out in increasing order and messages mostly leave near the head,
//! so the live seqs form a dense run: a `VecDeque` of slots indexed by `seq - base`
//! holds them without a hash table's spare buckets (a `HashMap` of 1 M entries
//! allocates 2 M buckets, and twice that while it grows).
//!
//! What breaks the density is a message that stays while those after it leave (one
//! left unacked for hours while millions flow past). The run would keep a slot for
//! every seq since. So when fewer than half the slots are live, the oldest live
//! entries move to `stragglers`, a hash map, until the run is dense again. Each entry
//! moves at most once, so the cost is amortized O(1), and the slots never number more
//! than twice the live entries (plus a small constant).

use std::collections::VecDeque;

use super::command::Seq;
use super::fasthash::IntMap;

/// Below this many slots the run is never compacted.
const MIN_COMPACT: usize = 64;

#[derive(Clone, Debug)]
pub(crate) struct SeqMap<V> {
    /// The seq of `slots[0]`.
    base: Seq,
    /// `slots[i]` is the entry of seq `base + i`; the front and back are occupied.
    slots: VecDeque<Option<V>>,
    /// Occupied slots.
    live: usize,
    /// Entries with a seq below `base`.
    stragglers: IntMap<Seq, V>,
}

impl<V> Default for SeqMap<V> {
    fn default() -> Self {
        SeqMap {
            base: 0,
            slots: VecDeque::new(),
            live: 0,
            stragglers: IntMap::default(),
        }
    }
}

impl<V> SeqMap<V> {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.live + self.stragglers.len()
    }

    fn slot(&self, seq: Seq) -> Option<usize> {
        let i = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        (i < self.slots.len()).then_some(i)
    }

    pub fn get(&self, seq: Seq) -> Option<&V> {
        match self.slot(seq) {
            Some(i) => self.slots[i].as_ref(),
            None => self.stragglers.get(&seq),
        }
    }

    pub fn get_mut(&mut self, seq: Seq) -> Option<&mut V> {
        match self.slot(seq) {
            Some(i) => self.slots[i].as_mut(),
            None => self.stragglers.get_mut(&seq),
        }
    }

    pub fn contains(&self, seq: Seq) -> bool {
        self.get(seq).is_some()
    }

    /// Inserts or replaces the entry of `seq`; returns the one it replaced.
    pub fn insert(&mut self, seq: Seq, value: V) -> Option<V> {
        // `base` never decreases, so every straggler stays below it.
        if seq < self.base {
            return self.stragglers.insert(seq, value);
        }
        let end = self.base + self.slots.len() as u64;
        if seq >= end {
            let gap = seq - end;
            if gap > (self.slots.len() as u64).max(MIN_COMPACT as u64) {
                // A jump (seqs recovered with holes, say): start a new run there
                // rather than fill the gap with empty slots.
                self.retire_all();
                self.base = seq;
            } else {
                self.slots
                    .extend(std::iter::repeat_with(|| None).take(gap as usize));
            }
            self.slots.push_back(Some(value));
            self.live += 1;
            self.compact();
            return None;
        }
        let i = (seq - self.base) as usize;
        let old = self.slots[i].replace(value);
        if old.is_none() {
            self.live += 1;
        }
        old
    }

    pub fn remove(&mut self, seq: Seq) -> Option<V> {
        let Some(i) = self.slot(seq) else {
            return self.stragglers.remove(&seq);
        };
        let old = self.slots[i].take()?;
        self.live -= 1;
        self.trim();
        self.compact();
        Some(old)
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Seq, &V)> {
        let base = self.base;
        self.stragglers.iter().map(|(&s, v)| (s, v)).chain(
            self.slots
                .iter()
                .enumerate()
                .filter_map(move |(i, v)| v.as_ref().map(|v| (base + i as u64, v))),
        )
    }

    /// Drops empty slots at both ends.
    fn trim(&mut self) {
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.base += 1;
        }
        while matches!(self.slots.back(), Some(None)) {
            self.slots.pop_back();
        }
    }

    /// Moves the oldest entries to `stragglers` while fewer than half the slots are
    /// live.
    fn compact(&mut self) {
        while self.slots.len() >= MIN_COMPACT && self.live * 2 < self.slots.len() {
            if let Some(Some(v)) = self.slots.pop_front() {
                self.stragglers.insert(self.base, v);
                self.live -= 1;
            }
            self.base += 1;
            self.trim();
        }
        if self.slots.capacity() > 4 * self.slots.len().max(MIN_COMPACT) {
            self.slots.shrink_to(2 * self.slots.len());
        }
    }

    fn retire_all(&mut self) {
        let base = self.base;
        for (i, slot) in self.slots.drain(..).enumerate() {
            if let Some(v) = slot {
                self.stragglers.insert(base + i as u64, v);
            }
        }
        self.live = 0;
    }

    /// Slots held (live or empty), for tests of the density bound.
    #[cfg(test)]
    fn slot_count(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn fifo_use_keeps_everything_in_the_run() {
        let mut m = SeqMap::default();
        for s in 0..1000 {
            assert!(m.insert(s, s * 10).is_none());
        }
        for s in 0..990 {
            assert_eq!(m.remove(s), Some(s * 10));
        }
        assert_eq!(m.len(), 10);
        assert_eq!(m.slot_count(), 10);
        assert!(m.stragglers.is_empty());
        assert_eq!(m.get(995), Some(&9950));
        assert_eq!(m.get(5), None);
    }

    #[test]
    fn an_old_entry_left_behind_does_not_pin_the_run() {
        let mut m = SeqMap::default();
        m.insert(0, "old");
        for s in 1..100_000u64 {
            m.insert(s, "new");
            m.remove(s);
        }
        assert_eq!(m.len(), 1);
        assert!(m.slot_count() <= MIN_COMPACT, "{}", m.slot_count());
        assert_eq!(m.get(0), Some(&"old"));
        assert_eq!(m.remove(0), Some("old"));
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn a_jump_in_seqs_starts_a_new_run() {
        let mut m = SeqMap::default();
        m.insert(3, 'a');
        m.insert(10_000_000, 'b');
        assert!(m.slot_count() <= 2);
        assert_eq!(m.get(3), Some(&'a'));
        assert_eq!(m.get(10_000_000), Some(&'b'));
        m.insert(2, 'c'); // below the run
        assert_eq!(m.get(2), Some(&'c'));
        let mut all: Vec<_> = m.iter().map(|(s, &v)| (s, v)).collect();
        all.sort();
        assert_eq!(all, vec![(2, 'c'), (3, 'a'), (10_000_000, 'b')]);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u64),
        Remove(u64),
        Push,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            1 => (0u64..400).prop_map(Op::Insert),
            1 => (0u64..2000).prop_map(Op::Insert),
            3 => (0u64..400).prop_map(Op::Remove),
            4 => Just(Op::Push),
        ]
    }

    proptest! {
        /// Behaves as a map, and holds at most about twice its entries in slots.
        #[test]
        fn matches_a_btreemap(ops in proptest::collection::vec(op(), 1..400)) {
            let mut m = SeqMap::default();
            let mut model = BTreeMap::new();
            let mut next = 0u64;
            for op in ops {
                let touched = match op {
                    Op::Insert(s) | Op::Remove(s) => s,
                    Op::Push => next,
                };
                match op {
                    Op::Insert(s) => prop_assert_eq!(m.insert(s, s), model.insert(s, s)),
                    Op::Remove(s) => prop_assert_eq!(m.remove(s), model.remove(&s)),
                    Op::Push => {
                        prop_assert_eq!(m.insert(next, next), model.insert(next, next));
                        next += 1;
                    }
                }
                prop_assert_eq!(m.len(), model.len());
                let mut all: Vec<_> = m.iter().map(|(s, &v)| (s, v)).collect();
                all.sort();
                let expected: Vec<_> = model.iter().map(|(&s, &v)| (s, v)).collect();
                prop_assert_eq!(all, expected);
                prop_assert_eq!(m.get(touched), model.get(&touched));
                for s in model.keys() {
                    prop_assert_eq!(m.get(*s), model.get(s));
                }
                prop_assert!(m.slot_count() < MIN_COMPACT || m.slot_count() <= 2 * m.live);
            }
        }
    }
}
