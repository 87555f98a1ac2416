//! [`ChannelPrefetch`]: `basic.qos` with `global=true`, RabbitMQ's channel-wide
//! prefetch. At most that many deliveries that need an ack are outstanding on the
//! channel, whichever of its consumers they went to.
//!
//! Queues know only per-consumer limits, and the queues of one channel may run on
//! different nodes. So the channel enforces its own limit. A delivery that arrives while
//! the channel is at its limit is held, in arrival order, without a delivery tag. Settling
//! a delivery lets the next held one go out, and raising the limit lets out as many as
//! it admits.
//!
//! A held delivery is unacked at its queue, so it returns there when the channel closes.
//! A consumer started under a channel limit also gets that limit at its queue, unless its
//! own prefetch is lower. That bounds what the channel can hold to one limit per
//! consumer. Deliveries that need no ack (`no_ack` consumers) never count and are never
//! held, as in RabbitMQ.

use std::collections::VecDeque;

use warren_actors::delivery::QueueDelivery;

/// The channel-wide limit and what waits for room under it.
#[derive(Default)]
pub struct ChannelPrefetch {
    /// 0: no channel-wide limit.
    limit: u32,
    held: VecDeque<QueueDelivery>,
}

impl ChannelPrefetch {
    /// `basic.qos global=true`: the new limit (0: none).
    pub fn set_limit(&mut self, limit: u32) {
        self.limit = limit;
    }

    /// The channel-wide limit (0: none).
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The prefetch a consumer gets at its queue: its own, bounded by the channel's.
    pub fn for_consumer(&self, own: u32) -> u32 {
        match (own, self.limit) {
            (0, channel) => channel,
            (own, 0) => own,
            (own, channel) => own.min(channel),
        }
    }

    fn has_room(&self, outstanding: usize) -> bool {
        self.limit == 0 || outstanding < self.limit as usize
    }

    /// Of `deliveries` just arrived, those that may go out now with `outstanding`
    /// unsettled deliveries on the channel; the rest are held, after those held before.
    pub fn admit(
        &mut self,
        deliveries: Vec<QueueDelivery>,
        mut outstanding: usize,
    ) -> Vec<QueueDelivery> {
        if self.limit == 0 && self.held.is_empty() {
            return deliveries;
        }
        let mut now = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            if d.no_ack {
                now.push(d);
            } else if self.held.is_empty() && self.has_room(outstanding) {
                outstanding += 1;
                now.push(d);
            } else {
                self.held.push_back(d);
            }
        }
        now
    }

    /// Held deliveries that fit now that `outstanding` are unsettled, oldest first.
    pub fn release(&mut self, mut outstanding: usize) -> Vec<QueueDelivery> {
        let mut now = Vec::new();
        while self.has_room(outstanding) {
            let Some(d) = self.held.pop_front() else {
                break;
            };
            outstanding += 1;
            now.push(d);
        }
        now
    }

    /// Takes the held deliveries of consumer `tag` (it was cancelled).
    pub fn take_consumer(&mut self, tag: &str) -> Vec<QueueDelivery> {
        let mut theirs = Vec::new();
        for d in std::mem::take(&mut self.held) {
            if &*d.consumer_tag == tag {
                theirs.push(d);
            } else {
                self.held.push_back(d);
            }
        }
        theirs
    }

    /// Takes every held delivery (`basic.recover`, the channel closes).
    pub fn take_all(&mut self) -> Vec<QueueDelivery> {
        self.held.drain(..).collect()
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use warren_actors::message::Message;

    use super::*;

    fn delivery(tag: &str, seq: u64, no_ack: bool) -> QueueDelivery {
        QueueDelivery {
            queue: "q".into(),
            consumer_tag: tag.into(),
            seq,
            redelivered: false,
            no_ack,
            message: Arc::new(Message::new("", "k", Bytes::from_static(b"x"))),
        }
    }

    fn seqs(ds: &[QueueDelivery]) -> Vec<u64> {
        ds.iter().map(|d| d.seq).collect()
    }

    #[test]
    fn without_a_limit_everything_goes_out() {
        let mut p = ChannelPrefetch::default();
        let now = p.admit((1..=5).map(|i| delivery("a", i, false)).collect(), 100);
        assert_eq!(seqs(&now), vec![1, 2, 3, 4, 5]);
        assert_eq!(p.held(), 0);
    }

    #[test]
    fn the_limit_holds_the_rest_in_order_until_settles_make_room() {
        let mut p = ChannelPrefetch::default();
        p.set_limit(3);
        let now = p.admit(
            vec![
                delivery("a", 1, false),
                delivery("b", 2, false),
                delivery("a", 3, false),
                delivery("b", 4, false),
            ],
            1,
        );
        assert_eq!(seqs(&now), vec![1, 2], "one was outstanding already");
        // Later arrivals queue behind the held one even if room appeared meanwhile.
        assert!(p.admit(vec![delivery("a", 5, false)], 3).is_empty());
        assert_eq!(seqs(&p.release(2)), vec![3]);
        assert_eq!(seqs(&p.release(0)), vec![4, 5]);
        assert_eq!(p.held(), 0);
    }

    #[test]
    fn no_ack_deliveries_never_count_nor_wait() {
        let mut p = ChannelPrefetch::default();
        p.set_limit(1);
        let now = p.admit(
            vec![
                delivery("a", 1, false),
                delivery("x", 2, true),
                delivery("a", 3, false),
                delivery("x", 4, true),
            ],
            0,
        );
        assert_eq!(seqs(&now), vec![1, 2, 4]);
        assert_eq!(p.held(), 1);
    }

    #[test]
    fn raising_or_removing_the_limit_releases_held_deliveries() {
        let mut p = ChannelPrefetch::default();
        p.set_limit(1);
        p.admit((1..=4).map(|i| delivery("a", i, false)).collect(), 0);
        p.set_limit(2);
        assert_eq!(seqs(&p.release(1)), vec![2]);
        p.set_limit(0);
        assert_eq!(seqs(&p.release(2)), vec![3, 4]);
    }

    #[test]
    fn a_cancelled_consumer_takes_its_held_deliveries_back() {
        let mut p = ChannelPrefetch::default();
        p.set_limit(1);
        p.admit(
            vec![
                delivery("a", 1, false),
                delivery("a", 2, false),
                delivery("b", 3, false),
                delivery("a", 4, false),
            ],
            0,
        );
        assert_eq!(seqs(&p.take_consumer("a")), vec![2, 4]);
        assert_eq!(seqs(&p.take_all()), vec![3]);
    }

    #[test]
    fn a_consumer_gets_the_lower_of_its_own_and_the_channel_limit() {
        let mut p = ChannelPrefetch::default();
        assert_eq!((p.for_consumer(0), p.for_consumer(7)), (0, 7));
        p.set_limit(5);
        assert_eq!(
            (p.for_consumer(0), p.for_consumer(7), p.for_consumer(3)),
            (5, 5, 3)
        );
    }
}
