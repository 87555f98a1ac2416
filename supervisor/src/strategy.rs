//! Restart strategies: which siblings are restarted along with a child
//! that exited and is to be restarted.

use std::ops::Range;

use serde::{Deserialize, Serialize};

/// Erlang/OTP restart strategies. "Start order" is the order of the
/// children in the supervisor's table: the spec's children first, then
/// dynamic children in the order `start_child` added them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Only the child that exited is restarted.
    OneForOne,
    /// Every child is stopped (reverse start order) and restarted (start
    /// order).
    OneForAll,
    /// The child that exited and every child started after it.
    RestForOne,
}

impl Strategy {
    /// Indexes (in start order) of the children to restart when the child
    /// at `failed` exits and is to be restarted, among `len` children.
    /// Out-of-range input yields an empty range rather than a panic.
    pub fn affected(self, failed: usize, len: usize) -> Range<usize> {
        if failed >= len {
            return 0..0;
        }
        match self {
            Strategy::OneForOne => failed..failed + 1,
            Strategy::OneForAll => 0..len,
            Strategy::RestForOne => failed..len,
        }
    }

    /// OTP spelling, used in snapshots (`TreeSnapshot::strategy`).
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::OneForOne => "one_for_one",
            Strategy::OneForAll => "one_for_all",
            Strategy::RestForOne => "rest_for_one",
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affected_ranges() {
        assert_eq!(Strategy::OneForOne.affected(1, 4), 1..2);
        assert_eq!(Strategy::OneForAll.affected(1, 4), 0..4);
        assert_eq!(Strategy::RestForOne.affected(1, 4), 1..4);
        assert_eq!(Strategy::RestForOne.affected(3, 4), 3..4);
    }

    #[test]
    fn out_of_range_is_empty() {
        for s in [
            Strategy::OneForOne,
            Strategy::OneForAll,
            Strategy::RestForOne,
        ] {
            assert!(s.affected(4, 4).is_empty());
            assert!(s.affected(0, 0).is_empty());
        }
    }
}
