//! Publisher confirms as both AMQP clients of the bench count them: which delivery
//! tags (1, 2, ... in publishing order) the broker has settled, with `multiple` or one
//! by one and in any order, how many it refused with basic.nack, and how long each
//! waited for its confirm.

use std::collections::VecDeque;
use std::time::Instant;

/// What a publisher reports when it is done.
#[derive(Debug, Default)]
pub struct Published {
    /// Messages the broker refused (basic.nack).
    pub refused: u64,
    /// Publish-to-confirm latency of every confirmed message, in µs (empty without
    /// confirms).
    pub confirm_us: Vec<u32>,
}

/// Publisher confirms: which delivery tags (1, 2, ... in publishing order) the broker
/// has settled, and how many of them it refused.
#[derive(Debug, Default)]
pub struct Confirms {
    /// Every tag up to this one is settled.
    settled: u64,
    /// Tags above `settled` settled one by one (out of order).
    above: std::collections::BTreeSet<u64>,
    /// Settled with basic.nack.
    pub nacked: u64,
    /// When each tag after `settled` was published (the first is `settled + 1`).
    sent: VecDeque<Instant>,
    /// Publish-to-confirm latencies (µs) of the settled tags, taken when a tag joins
    /// the settled run (one settled out of order waits for those before it).
    confirm_us: Vec<u32>,
}

impl Confirms {
    /// The next tag was published now.
    pub fn published(&mut self) {
        self.sent.push_back(Instant::now());
    }

    /// Settles `tag` (and with `multiple` every tag below it; tag 0 with `multiple`:
    /// all of the `published`).
    pub fn settle(
        &mut self,
        tag: u64,
        multiple: bool,
        nack: bool,
        published: u64,
    ) -> Result<(), String> {
        let upto = if multiple && tag == 0 { published } else { tag };
        let before = self.settled;
        if upto > published || (tag == 0 && !multiple) {
            return Err(format!(
                "the broker confirmed delivery tag {tag}, but {published} messages were published"
            ));
        }
        if multiple {
            if upto > self.settled {
                if nack {
                    let individually = self.above.range(..=upto).count() as u64;
                    self.nacked += upto - self.settled - individually;
                }
                self.settled = upto;
                self.above = self.above.split_off(&(upto + 1));
            }
        } else if upto == self.settled + 1 {
            self.nacked += u64::from(nack);
            self.settled = upto;
        } else if upto > self.settled && self.above.insert(upto) {
            self.nacked += u64::from(nack);
        }
        while self.above.first() == Some(&(self.settled + 1)) {
            self.above.pop_first();
            self.settled += 1;
        }
        let now = Instant::now();
        for _ in before..self.settled {
            if let Some(sent) = self.sent.pop_front() {
                let us = now.duration_since(sent).as_micros();
                self.confirm_us.push(u32::try_from(us).unwrap_or(u32::MAX));
            }
        }
        Ok(())
    }

    /// What the publisher reports.
    pub fn report(self) -> Published {
        Published {
            refused: self.nacked,
            confirm_us: self.confirm_us,
        }
    }

    /// Messages published and not settled yet.
    pub fn outstanding(&self, published: u64) -> u64 {
        published.saturating_sub(self.settled + self.above.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirms_settle_multiple_single_out_of_order_and_count_nacks() {
        let mut c = Confirms::default();
        c.settle(3, true, false, 10).unwrap();
        assert_eq!(c.outstanding(10), 7);
        c.settle(5, false, true, 10).unwrap(); // out of order
        c.settle(5, false, true, 10).unwrap(); // repeated: counted once
        assert_eq!((c.outstanding(10), c.nacked), (6, 1));
        c.settle(4, false, false, 10).unwrap();
        assert_eq!((c.settled, c.above.len()), (5, 0));
        c.settle(7, false, false, 10).unwrap();
        c.settle(8, true, true, 10).unwrap(); // nacks 6 and 8, not 7
        assert_eq!((c.outstanding(10), c.nacked), (2, 3));
        c.settle(2, true, true, 10).unwrap(); // behind: nothing
        assert_eq!(c.nacked, 3);
        c.settle(0, true, false, 10).unwrap(); // all
        assert_eq!((c.outstanding(10), c.nacked), (0, 3));
        assert!(c.confirm_us.is_empty(), "nothing was published through it");
        assert!(c.settle(11, false, false, 10).is_err());
        assert!(c.settle(0, false, false, 10).is_err());
    }

    #[test]
    fn confirm_latencies_are_taken_when_a_tag_joins_the_settled_run() {
        let mut c = Confirms::default();
        for _ in 0..4 {
            c.published();
        }
        c.settle(2, false, false, 4).unwrap(); // out of order: waits for 1
        assert!(c.confirm_us.is_empty());
        c.settle(1, false, false, 4).unwrap();
        assert_eq!(c.confirm_us.len(), 2);
        c.settle(4, true, true, 4).unwrap();
        let report = c.report();
        assert_eq!((report.refused, report.confirm_us.len()), (2, 4));
    }
}
