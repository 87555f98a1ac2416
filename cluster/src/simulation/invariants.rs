//! The safety properties checked after every step, over what the nodes hold and what
//! they were seen doing:
//!
//! 1. election safety: at most one leader per term, over every (term, leader) ever
//!    seen;
//! 2. log matching: two logs that hold an entry of the same index and term are equal
//!    up to it (over the entries both still hold: compaction leaves the overlap);
//! 3. leader completeness: an entry seen committed is in the log of every leader
//!    elected after that (or covered by its snapshot);
//! 4. state-machine safety: no two nodes commit or apply different entries at one
//!    index; each node's applied commands are a prefix of the longest sequence any
//!    node applied; a command is applied at most once per node (at one index, however
//!    often the node replays it after a restart);
//! 5. needed entries held: every entry a node's state still needs (the put of each
//!    live key, as a mirrored queue needs the entries of its messages) is in its log
//!    (`SimNode::needed_held`): compaction kept it, or it came with a snapshot.
//!
//! The checker only records and compares; the world feeds it (`world.rs`), and the
//! tests below feed it made-up histories to show that each check can fail.

use std::collections::BTreeMap;

use super::state_machine::Applied;

/// A node's log as the checks compare it: (term, hash of the data) of each entry held,
/// from index `first`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct LogView {
    pub(super) first: u64,
    pub(super) entries: Vec<(u64, u64)>,
}

impl LogView {
    /// The last index held (`first - 1` when none is).
    pub(super) fn last(&self) -> u64 {
        self.first + self.entries.len() as u64 - 1
    }

    pub(super) fn get(&self, index: u64) -> Option<(u64, u64)> {
        if index < self.first {
            return None;
        }
        self.entries.get((index - self.first) as usize).copied()
    }
}

/// An entry seen committed.
struct Committed {
    index: u64,
    term: u64,
    data: u64,
    /// The highest term any node was in when it was first seen committed: a leader of
    /// a later term was elected after the commit.
    seen_in: u64,
}

/// What the checks have seen so far in a run.
#[derive(Default)]
pub(super) struct Checker {
    /// term -> its leader.
    leaders: BTreeMap<u64, u64>,
    /// index -> (term, data) of the entry committed or applied there.
    at_index: BTreeMap<u64, (u64, u64)>,
    /// The entries seen committed, in the order first seen.
    committed: Vec<Committed>,
    /// (leader, term) -> how many of `committed` its log was checked to hold.
    leader_checked: BTreeMap<(u64, u64), usize>,
    /// The chain hash of the longest applied sequence seen.
    longest: Vec<u64>,
    /// node -> (origin, id) -> the index it applied that command at.
    applied_once: BTreeMap<u64, BTreeMap<(u64, u64), u64>>,
}

impl Checker {
    /// Election safety: `id` leads `term`.
    pub(super) fn leader(&mut self, term: u64, id: u64) -> Result<(), String> {
        match self.leaders.get(&term) {
            Some(other) if *other != id => Err(format!(
                "election safety: two leaders in term {term}: node {other} and node {id}"
            )),
            Some(_) => Ok(()),
            None => {
                self.leaders.insert(term, id);
                Ok(())
            }
        }
    }

    /// How many (term, leader) pairs were seen.
    pub(super) fn terms_led(&self) -> usize {
        self.leaders.len()
    }

    fn same_entry(
        &mut self,
        what: &str,
        node: u64,
        index: u64,
        term: u64,
        data: u64,
    ) -> Result<bool, String> {
        match self.at_index.get(&index) {
            Some((t, d)) if (*t, *d) != (term, data) => Err(format!(
                "state-machine safety: node {node} {what} index {index} (term {term}, data {data:016x}) where another node committed or applied term {t}, data {d:016x}"
            )),
            Some(_) => Ok(false),
            None => {
                self.at_index.insert(index, (term, data));
                Ok(true)
            }
        }
    }

    /// Node `node` knows the entry at `index` committed; `max_term` is the highest
    /// term of any node now.
    pub(super) fn committed(
        &mut self,
        node: u64,
        index: u64,
        term: u64,
        data: u64,
        max_term: u64,
    ) -> Result<(), String> {
        if self.same_entry("committed", node, index, term, data)? {
            self.committed.push(Committed {
                index,
                term,
                data,
                seen_in: max_term,
            });
        }
        Ok(())
    }

    /// Node `node` applied the entry at `index`, with `outcome`.
    pub(super) fn applied(
        &mut self,
        node: u64,
        index: u64,
        term: u64,
        data: u64,
        outcome: Applied,
        max_term: u64,
    ) -> Result<(), String> {
        self.committed(node, index, term, data, max_term)?;
        if let Applied::Command(c) = outcome {
            let once = self.applied_once.entry(node).or_default();
            match once.get(&(c.origin, c.id)) {
                Some(earlier) if *earlier != index => {
                    return Err(format!(
                        "state-machine safety: node {node} applied command ({}, {:x}) twice, at index {earlier} and at index {index}",
                        c.origin, c.id
                    ))
                }
                Some(_) => {}
                None => {
                    once.insert((c.origin, c.id), index);
                }
            }
        }
        Ok(())
    }

    /// State-machine safety: node `node`'s applied commands (as a chain hash) are a
    /// prefix of the longest sequence applied, or extend it.
    pub(super) fn state_machine(&mut self, node: u64, chain: &[u64]) -> Result<(), String> {
        let common = chain.len().min(self.longest.len());
        if common > 0 && chain[common - 1] != self.longest[common - 1] {
            let first = (0..common)
                .find(|k| chain[*k] != self.longest[*k])
                .unwrap_or(common - 1);
            return Err(format!(
                "state-machine safety: node {node}'s applied commands are not a prefix of the longest sequence applied: they differ at command #{} (of {} and {})",
                first + 1,
                chain.len(),
                self.longest.len()
            ));
        }
        if chain.len() > self.longest.len() {
            let from = self.longest.len();
            self.longest.extend_from_slice(&chain[from..]);
        }
        Ok(())
    }

    /// Leader completeness: `id`, leader of `term`, holds every entry seen committed
    /// before it was elected (those before its log's first index are in its snapshot).
    pub(super) fn leader_complete(
        &mut self,
        id: u64,
        term: u64,
        log: &LogView,
    ) -> Result<(), String> {
        let checked = self.leader_checked.entry((id, term)).or_insert(0);
        for c in &self.committed[*checked..] {
            if c.seen_in >= term || c.index < log.first {
                continue;
            }
            match log.get(c.index) {
                Some((t, d)) if (t, d) == (c.term, c.data) => {}
                other => {
                    return Err(format!(
                        "leader completeness: node {id} leads term {term} but its log lacks committed entry {} (term {}, seen committed in term {}): it holds {:?}",
                        c.index, c.term, c.seen_in, other
                    ))
                }
            }
        }
        *checked = self.committed.len();
        Ok(())
    }
}

/// Log matching between the logs of nodes `a` and `b`.
pub(super) fn log_matching(a: u64, la: &LogView, b: u64, lb: &LogView) -> Result<(), String> {
    let lo = la.first.max(lb.first);
    let hi = la.last().min(lb.last());
    if lo > hi {
        return Ok(());
    }
    let Some(top) = (lo..=hi)
        .rev()
        .find(|i| la.get(*i).map(|e| e.0) == lb.get(*i).map(|e| e.0))
    else {
        return Ok(());
    };
    for i in lo..=top {
        if la.get(i) != lb.get(i) {
            return Err(format!(
                "log matching: nodes {a} and {b} both hold entry {top} of term {} but differ at index {i}: {:?} vs {:?}",
                la.get(top).map_or(0, |e| e.0),
                la.get(i),
                lb.get(i)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::state_machine::{Command, Op};
    use super::*;

    fn log(first: u64, entries: &[(u64, u64)]) -> LogView {
        LogView {
            first,
            entries: entries.to_vec(),
        }
    }

    #[test]
    fn two_leaders_in_one_term_are_reported() {
        let mut c = Checker::default();
        c.leader(5, 1).unwrap();
        c.leader(5, 1).unwrap();
        c.leader(6, 2).unwrap();
        let e = c.leader(5, 2).unwrap_err();
        assert!(e.starts_with("election safety"), "{e}");
    }

    #[test]
    fn logs_that_agree_on_an_entry_but_not_before_it_are_reported() {
        let a = log(1, &[(1, 10), (1, 11), (2, 12)]);
        let same = log(2, &[(1, 11), (2, 12), (3, 13)]);
        log_matching(1, &a, 2, &same).unwrap();
        // Diverging after the last common entry is fine (an uncommitted tail).
        let tail = log(1, &[(1, 10), (1, 11), (3, 99)]);
        log_matching(1, &a, 3, &tail).unwrap();
        // Same index and term at 3, different entry at 2.
        let bad = log(1, &[(1, 10), (1, 77), (2, 12)]);
        let e = log_matching(1, &a, 4, &bad).unwrap_err();
        assert!(e.starts_with("log matching"), "{e}");
        // Only the overlap counts: a compacted log is compared from its first entry.
        let compacted = log(3, &[(2, 12)]);
        log_matching(4, &bad, 5, &compacted).unwrap();
    }

    #[test]
    fn a_later_leader_without_a_committed_entry_is_reported() {
        let mut c = Checker::default();
        c.committed(1, 1, 1, 10, 1).unwrap();
        c.committed(1, 2, 1, 11, 1).unwrap();
        // A leader of term 1 (the same term) is not held to it; one of term 2 is.
        c.leader_complete(1, 1, &log(1, &[(1, 10)])).unwrap();
        c.leader_complete(2, 2, &log(1, &[(1, 10), (1, 11)]))
            .unwrap();
        // Covered by its snapshot.
        c.leader_complete(3, 3, &log(3, &[])).unwrap();
        let e = c
            .leader_complete(4, 4, &log(1, &[(1, 10), (2, 50)]))
            .unwrap_err();
        assert!(e.starts_with("leader completeness"), "{e}");
    }

    #[test]
    fn different_entries_applied_at_one_index_or_a_command_applied_twice_are_reported() {
        let mut c = Checker::default();
        let cmd = Command::new(0, 1, Op::Delete { key: 1 });
        c.applied(1, 1, 1, 10, Applied::Command(cmd), 1).unwrap();
        c.applied(2, 1, 1, 10, Applied::Command(cmd), 1).unwrap();
        // Replayed after a restart, at the same index: fine.
        c.applied(1, 1, 1, 10, Applied::Command(cmd), 1).unwrap();
        let e = c.applied(2, 1, 2, 10, Applied::Nothing, 2).unwrap_err();
        assert!(e.starts_with("state-machine safety"), "{e}");
        let e = c
            .applied(1, 2, 1, 11, Applied::Command(cmd), 1)
            .unwrap_err();
        assert!(e.contains("twice"), "{e}");
        c.state_machine(1, &[1, 2, 3]).unwrap();
        c.state_machine(2, &[1, 2]).unwrap();
        let e = c.state_machine(3, &[1, 9]).unwrap_err();
        assert!(e.contains("not a prefix"), "{e}");
    }
}
