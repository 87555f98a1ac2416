//! A multiset of destinations, as stored under one routing key or trie node.
//!
//! Several bindings can lead to the same destination under the same key (they differ
//! in their arguments). Storing each destination once with a count makes routing
//! emit it once, and lets unbinding one of those bindings keep the others.

use super::binding::Destination;

#[derive(Clone, Debug, Default)]
pub(crate) struct Dests {
    /// Each destination once, with the number of bindings that lead to it (>= 1).
    items: Vec<(Destination, u32)>,
}

impl Dests {
    /// Counts one more binding to `dest`.
    pub(crate) fn add(&mut self, dest: Destination) {
        match self.items.iter_mut().find(|(d, _)| *d == dest) {
            Some((_, n)) => *n += 1,
            None => self.items.push((dest, 1)),
        }
    }

    /// Counts one binding to `dest` less; false if there was none.
    pub(crate) fn remove(&mut self, dest: &Destination) -> bool {
        let Some(i) = self.items.iter().position(|(d, _)| d == dest) else {
            return false;
        };
        if self.items[i].1 > 1 {
            self.items[i].1 -= 1;
        } else {
            // Order within one key is irrelevant: routing results are sorted later.
            self.items.swap_remove(i);
        }
        true
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Each destination once.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Destination> {
        self.items.iter().map(|(d, _)| d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_bindings_per_destination() {
        let q = Destination::Queue("q".into());
        let r = Destination::Queue("r".into());
        let mut dests = Dests::default();
        dests.add(q.clone());
        dests.add(q.clone());
        dests.add(r.clone());
        assert_eq!(dests.iter().count(), 2);
        assert!(dests.remove(&q));
        assert_eq!(dests.iter().filter(|d| **d == q).count(), 1);
        assert!(dests.remove(&q));
        assert!(!dests.remove(&q));
        assert!(dests.remove(&r));
        assert!(dests.is_empty());
    }
}
