//! When to try again to start children whose restart failed: one
//! `RetryPending` tick in flight at a time, with a delay that doubles from
//! 50 ms up to 2 s and starts over once every pending child is running.

use std::time::Duration;

/// Delay before the first retry of a restart whose start failed.
pub(crate) const INITIAL_RETRY_BACKOFF: Duration = Duration::from_millis(50);
/// Cap for the doubling retry delay.
pub(crate) const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(2);

/// The retry timer bookkeeping of one supervisor.
#[derive(Debug, Clone)]
pub(crate) struct RetryBackoff {
    /// Delay before the next `RetryPending`; doubles up to a cap.
    next: Duration,
    /// A `RetryPending` tick is in flight.
    scheduled: bool,
}

impl RetryBackoff {
    /// No tick in flight, the next one after [`INITIAL_RETRY_BACKOFF`].
    pub(crate) fn new() -> Self {
        Self {
            next: INITIAL_RETRY_BACKOFF,
            scheduled: false,
        }
    }

    /// The delay for a new tick, or `None` when one is already in flight
    /// (it will retry every pending child anyway). Doubles the delay for the
    /// tick after.
    pub(crate) fn schedule(&mut self) -> Option<Duration> {
        if self.scheduled {
            return None;
        }
        self.scheduled = true;
        let delay = self.next;
        self.next = (delay * 2).min(MAX_RETRY_BACKOFF);
        Some(delay)
    }

    /// The tick arrived: the next failed start may schedule another.
    pub(crate) fn fired(&mut self) {
        self.scheduled = false;
    }

    /// Every pending child started: a later failure waits the initial delay
    /// again.
    pub(crate) fn reset(&mut self) {
        self.next = INITIAL_RETRY_BACKOFF;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_tick_at_a_time_with_a_doubling_capped_delay() {
        let mut retry = RetryBackoff::new();
        assert_eq!(retry.schedule(), Some(INITIAL_RETRY_BACKOFF));
        assert_eq!(retry.schedule(), None, "a tick is in flight");
        let mut delays = Vec::new();
        for _ in 0..8 {
            retry.fired();
            delays.extend(retry.schedule());
        }
        assert_eq!(delays[0], INITIAL_RETRY_BACKOFF * 2);
        assert_eq!(delays[1], INITIAL_RETRY_BACKOFF * 4);
        assert_eq!(delays.last(), Some(&MAX_RETRY_BACKOFF));
    }

    #[test]
    fn reset_starts_over_without_cancelling_the_tick() {
        let mut retry = RetryBackoff::new();
        retry.schedule();
        retry.fired();
        retry.schedule();
        retry.reset();
        assert_eq!(retry.schedule(), None, "the tick in flight stays");
        retry.fired();
        assert_eq!(retry.schedule(), Some(INITIAL_RETRY_BACKOFF));
    }
}
