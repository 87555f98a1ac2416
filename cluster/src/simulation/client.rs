//! The proposals a node's clients wait on, handed to Raft by the real replica's
//! `Proposals`: once a leader is known, again in a new term or after
//! [`RESEND_AFTER`](crate::replica::proposals::RESEND_AFTER) without an answer, until applied on the node or [`COMMIT_TIMEOUT`]
//! is up. Handing a command over twice can put it in the log twice (the state
//! machine's filter applies it once). Kept in memory: a crash loses it, and its clients
//! get no answer.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use warren_actors::error::BrokerError;

use crate::replica::proposals::Proposals;
use crate::replica::COMMIT_TIMEOUT;

/// Simulated milliseconds.
pub(super) type Millis = u64;

/// A node's proposals not applied yet: the real replica's [`Proposals`], on the
/// simulated clock (an instant is a fixed origin plus the simulated milliseconds; only
/// differences of instants are ever read, so a seed replays exactly).
pub(super) struct Waiters {
    proposals: Proposals,
    origin: Instant,
}

impl Default for Waiters {
    fn default() -> Self {
        Waiters {
            proposals: Proposals::default(),
            origin: Instant::now(),
        }
    }
}

impl Waiters {
    fn at(&self, now: Millis) -> Instant {
        self.origin + Duration::from_millis(now)
    }

    /// A client's proposal (its answer is read from [`Waiters::answer`]).
    pub(super) fn add(&mut self, id: u64, data: Vec<u8>, now: Millis) {
        let (reply, _) = oneshot::channel();
        let at = self.at(now);
        self.proposals.add(id, data, reply, at);
    }

    /// The proposals to hand to Raft now, with a leader in `term`; they count as
    /// handed over from now.
    pub(super) fn due(&mut self, term: u64, now: Millis) -> Vec<Vec<u8>> {
        let at = self.at(now);
        self.proposals.due(term, at)
    }

    /// Raft refused a proposal (no leader after all): all are due again.
    pub(super) fn unsent(&mut self) {
        self.proposals.unsent();
    }

    /// Proposal `id` was applied here: its client is answered. Whether it waited.
    pub(super) fn answer(&mut self, id: u64) -> bool {
        self.proposals.answer(id, Ok(Box::new(())))
    }

    /// Fails the proposals asked [`COMMIT_TIMEOUT`] ago or earlier (they may still be
    /// committed later).
    pub(super) fn expire(&mut self, now: Millis) {
        let at = self.at(now);
        self.proposals.expire(at, COMMIT_TIMEOUT, |_| {
            BrokerError::new(warren_actors::error::code::INTERNAL_ERROR, "expired")
        });
    }
}
