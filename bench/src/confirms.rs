//! Publisher confirms as both AMQP clients of the bench count them: which delivery
//! tags (1, 2, ... in publishing order) the broker has settled, with `multiple` or one
//! by one and in any order, and how many it refused with basic.nack.

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
}

impl Confirms {
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
        Ok(())
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
        assert!(c.settle(11, false, false, 10).is_err());
        assert!(c.settle(0, false, false, 10).is_err());
    }
}
