//! Restart intensity: at most `max_restarts` restarts within a sliding
//! window of `within`.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Sliding-window restart counter.
///
/// Uses `tokio::time::Instant` so that a runtime with paused time (tests)
/// drives it like everything else in tokio. The caller passes `now`, which
/// keeps the logic a pure function of its inputs.
#[derive(Debug, Clone)]
pub struct RestartIntensity {
    max_restarts: u32,
    within: Duration,
    history: VecDeque<Instant>,
}

impl RestartIntensity {
    /// An allowance of `max_restarts` restarts in any window of `within`.
    pub fn new(max_restarts: u32, within: Duration) -> Self {
        Self {
            max_restarts,
            within,
            history: VecDeque::new(),
        }
    }

    /// Records one restart at `now`. Returns `false` when this restart
    /// exceeds the allowance, i.e. it is restart number `max_restarts + 1`
    /// within the window (OTP: "more than MaxR restarts in MaxT").
    pub fn record(&mut self, now: Instant) -> bool {
        while let Some(&oldest) = self.history.front() {
            if now.saturating_duration_since(oldest) > self.within {
                self.history.pop_front();
            } else {
                break;
            }
        }
        self.history.push_back(now);
        // Once exceeded the supervisor fails, but keep memory bounded even
        // if a caller keeps recording.
        while self.history.len() > self.max_restarts as usize + 1 {
            self.history.pop_front();
        }
        self.history.len() <= self.max_restarts as usize
    }

    /// Restarts currently inside the window (as of the last `record`).
    pub fn recent(&self) -> usize {
        self.history.len()
    }

    /// The configured allowance.
    pub fn max_restarts(&self) -> u32 {
        self.max_restarts
    }

    /// The configured window.
    pub fn within(&self) -> Duration {
        self.within
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_max_then_refuses() {
        let t0 = Instant::now();
        let mut i = RestartIntensity::new(3, Duration::from_secs(5));
        assert!(i.record(t0));
        assert!(i.record(t0 + Duration::from_secs(1)));
        assert!(i.record(t0 + Duration::from_secs(2)));
        assert!(!i.record(t0 + Duration::from_secs(3)));
    }

    #[test]
    fn old_restarts_leave_the_window() {
        let t0 = Instant::now();
        let mut i = RestartIntensity::new(2, Duration::from_secs(5));
        assert!(i.record(t0));
        assert!(i.record(t0 + Duration::from_secs(1)));
        // t0 is now more than 5s old, so only two restarts are in the window.
        assert!(i.record(t0 + Duration::from_secs(6)));
        assert_eq!(i.recent(), 2);
        assert!(!i.record(t0 + Duration::from_secs(6)));
    }

    #[test]
    fn zero_allowance_refuses_the_first_restart() {
        let mut i = RestartIntensity::new(0, Duration::from_secs(5));
        assert!(!i.record(Instant::now()));
    }

    #[test]
    fn history_stays_bounded() {
        let t0 = Instant::now();
        let mut i = RestartIntensity::new(1, Duration::from_secs(60));
        for _ in 0..100 {
            i.record(t0);
        }
        assert_eq!(i.recent(), 2);
    }
}
