//! The proposals a node's clients wait on, handed to Raft the way the real replica's
//! `Proposals` hands them over: once a leader is known, again in a new term or after
//! [`RESEND_AFTER`] without an answer, until applied on the node or [`COMMIT_TIMEOUT`]
//! is up. Handing a command over twice can put it in the log twice (the state
//! machine's filter applies it once). Kept in memory: a crash loses it, and its clients
//! get no answer.
//!
//! Ordered by id (a `BTreeMap`, unlike the real one's `HashMap`) so that a seed always
//! proposes in the same order.

use std::collections::BTreeMap;

use crate::replica::proposals::RESEND_AFTER;
use crate::replica::COMMIT_TIMEOUT;

/// Simulated milliseconds.
pub(super) type Millis = u64;

fn millis(d: std::time::Duration) -> Millis {
    d.as_millis() as Millis
}

struct Waiting {
    data: Vec<u8>,
    asked: Millis,
    /// The term it was last handed to Raft in, and when.
    sent: Option<(u64, Millis)>,
}

/// A node's proposals not applied yet, by id.
#[derive(Default)]
pub(super) struct Waiters {
    waiting: BTreeMap<u64, Waiting>,
}

impl Waiters {
    pub(super) fn add(&mut self, id: u64, data: Vec<u8>, now: Millis) {
        self.waiting.insert(
            id,
            Waiting {
                data,
                asked: now,
                sent: None,
            },
        );
    }

    /// The proposals to hand to Raft now, with a leader in `term`; they count as
    /// handed over from now.
    pub(super) fn due(&mut self, term: u64, now: Millis) -> Vec<Vec<u8>> {
        let resend = millis(RESEND_AFTER);
        self.waiting
            .values_mut()
            .filter(|w| match w.sent {
                None => true,
                Some((t, at)) => t != term || now.saturating_sub(at) >= resend,
            })
            .map(|w| {
                w.sent = Some((term, now));
                w.data.clone()
            })
            .collect()
    }

    /// Raft refused a proposal (no leader after all): all are due again.
    pub(super) fn unsent(&mut self) {
        for w in self.waiting.values_mut() {
            w.sent = None;
        }
    }

    /// Proposal `id` was applied here: its client is answered. Whether it waited.
    pub(super) fn answer(&mut self, id: u64) -> bool {
        self.waiting.remove(&id).is_some()
    }

    /// The proposals asked [`COMMIT_TIMEOUT`] ago or earlier: their clients are told
    /// it failed (it may still be committed later).
    pub(super) fn expire(&mut self, now: Millis) -> Vec<u64> {
        let limit = millis(COMMIT_TIMEOUT);
        let expired: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, w)| now.saturating_sub(w.asked) >= limit)
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            self.waiting.remove(id);
        }
        expired
    }
}
