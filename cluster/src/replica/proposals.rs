//! Changes proposed on this node and not applied yet, and the log's filter of
//! changes proposed twice.
//!
//! A proposal handed to Raft on a follower travels to the leader as a message; if the
//! leader dies first, or no leader is known (an election, a node still joining), it
//! is simply not in the log. So a proposal waits here, is handed to Raft once a leader
//! is known, and again when the term changes or no answer came for a while, until it is
//! applied or its time is up. Handing it over twice can put it in the log twice: each
//! proposal carries a nonce, and an entry whose (origin, nonce) already stands in the
//! log within [`DEDUPE_WINDOW`] entries before it is not applied again. That rule reads
//! the log only, so every replica skips the same entries.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use warren_actors::error::BrokerError;

use super::machine::Answer;

/// Marks a proposal id as a nonce (older Warren numbered proposals 1, 2, 3… from every
/// start; those are never filtered).
pub(crate) const NONCE_BIT: u64 = 1 << 63;
/// A proposal with no answer for this long is handed to Raft again.
pub(crate) const RESEND_AFTER: Duration = Duration::from_secs(2);
/// How many entries back an entry's (origin, nonce) is looked for.
pub(crate) const DEDUPE_WINDOW: u64 = 65_536;

/// A fresh proposal id.
pub(super) fn nonce() -> u64 {
    rand::random::<u64>() | NONCE_BIT
}

/// Who waits for a proposal.
pub(crate) type Reply = oneshot::Sender<Answer>;

struct Waiting {
    reply: Reply,
    /// The encoded log entry.
    data: Vec<u8>,
    asked: Instant,
    /// The term it was last handed to Raft in, and when.
    sent: Option<(u64, Instant)>,
}

/// Proposals of this node not applied yet, by id (ordered, so that they are handed
/// over in the same order every time: the simulation replays a seed exactly).
#[derive(Default)]
pub(crate) struct Proposals {
    waiting: BTreeMap<u64, Waiting>,
}

impl Proposals {
    /// A proposal to hand to Raft (see [`Self::due`]).
    pub(crate) fn add(&mut self, id: u64, data: Vec<u8>, reply: Reply, now: Instant) {
        self.waiting.insert(
            id,
            Waiting {
                reply,
                data,
                asked: now,
                sent: None,
            },
        );
    }

    /// Whether any proposal waits.
    pub(super) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// The proposals to hand to Raft now, with a leader in `term`: those never handed
    /// over, handed over in an earlier term, or unanswered for [`RESEND_AFTER`]. They
    /// count as handed over from now.
    pub(crate) fn due(&mut self, term: u64, now: Instant) -> Vec<Vec<u8>> {
        self.waiting
            .values_mut()
            .filter(|w| match w.sent {
                None => true,
                Some((t, at)) => t != term || now.duration_since(at) >= RESEND_AFTER,
            })
            .map(|w| {
                w.sent = Some((term, now));
                w.data.clone()
            })
            .collect()
    }

    /// A proposal that Raft refused to take (no leader after all): due again.
    pub(crate) fn unsent(&mut self) {
        for w in self.waiting.values_mut() {
            w.sent = None;
        }
    }

    /// Proposal `id` was applied here with `result`. Whether it waited here.
    pub(crate) fn answer(&mut self, id: u64, result: Answer) -> bool {
        let Some(w) = self.waiting.remove(&id) else {
            return false;
        };
        let _ = w.reply.send(result);
        true
    }

    /// Who waits, for whoever stops the group.
    pub(crate) fn into_replies(self) -> impl Iterator<Item = Reply> {
        self.waiting.into_values().map(|w| w.reply)
    }

    /// Fails every proposal asked `limit` ago or earlier with `why(it was handed to
    /// Raft)`.
    pub(crate) fn expire(
        &mut self,
        now: Instant,
        limit: Duration,
        why: impl Fn(bool) -> BrokerError,
    ) {
        let expired: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, w)| now.duration_since(w.asked) >= limit)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(w) = self.waiting.remove(&id) {
                let _ = w.reply.send(Err(why(w.sent.is_some())));
            }
        }
    }
}

/// The (origin, nonce) of the entries applied lately, to skip an entry proposed twice.
#[derive(Default)]
pub(crate) struct Recent {
    at: HashMap<(String, u64), u64>,
    order: VecDeque<(u64, (String, u64))>,
}

impl Recent {
    /// The proposals remembered, as (index, origin, id) in log order: what a snapshot
    /// carries, so that a node starting from it filters as the others do.
    pub(crate) fn export(&self) -> Vec<(u64, String, u64)> {
        self.order
            .iter()
            .filter(|(i, key)| self.at.get(key) == Some(i))
            .map(|(i, (origin, id))| (*i, origin.clone(), *id))
            .collect()
    }

    /// The filter a snapshot carried (see [`Recent::export`]).
    pub(crate) fn import(entries: Vec<(u64, String, u64)>) -> Recent {
        let mut recent = Recent::default();
        for (index, origin, id) in entries {
            recent.at.insert((origin.clone(), id), index);
            recent.order.push_back((index, (origin, id)));
        }
        recent
    }

    /// Whether the entry at `index`, proposed by `origin` as `id`, is applied: false
    /// when the same proposal stands within [`DEDUPE_WINDOW`] entries before it. Call
    /// it for every entry in log order.
    pub(crate) fn first_time(&mut self, origin: &str, id: u64, index: u64) -> bool {
        while let Some((i, _)) = self.order.front() {
            if i + DEDUPE_WINDOW >= index {
                break;
            }
            if let Some((i, key)) = self.order.pop_front() {
                if self.at.get(&key) == Some(&i) {
                    self.at.remove(&key);
                }
            }
        }
        if id & NONCE_BIT == 0 {
            return true;
        }
        let key = (origin.to_string(), id);
        if let Some(earlier) = self.at.get(&key) {
            if *earlier < index {
                return false;
            }
        }
        self.at.insert(key.clone(), index);
        self.order.push_back((index, key));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_proposed_twice_is_applied_once_within_the_window() {
        let mut recent = Recent::default();
        let id = 7 | NONCE_BIT;
        assert!(recent.first_time("n1", id, 10));
        assert!(recent.first_time("n2", id, 11), "another origin");
        assert!(!recent.first_time("n1", id, 12), "the same proposal again");
        // Replaying the same entry (a restart that applies it again) counts once more:
        // the filter only skips a *later* entry.
        assert!(recent.first_time("n1", id, 10));
        // Far beyond the window, the nonce is not looked for any more.
        assert!(recent.first_time("n1", id, 10 + DEDUPE_WINDOW + 1));
        // Ids without the nonce bit (written by older Warren) are never filtered.
        assert!(recent.first_time("n1", 3, 20));
        assert!(recent.first_time("n1", 3, 21));
    }

    #[test]
    fn the_filter_survives_a_snapshot() {
        let mut recent = Recent::default();
        let id = 9 | NONCE_BIT;
        assert!(recent.first_time("n1", id, 10));
        assert!(recent.first_time("n2", 3 | NONCE_BIT, 11));
        let mut back = Recent::import(recent.export());
        assert_eq!(back.export(), recent.export());
        assert!(
            !back.first_time("n1", id, 12),
            "filtered after the snapshot too"
        );
    }

    #[test]
    fn a_proposal_is_handed_over_again_in_a_new_term_or_after_a_silence() {
        let mut p = Proposals::default();
        let t0 = Instant::now();
        let (tx, _rx) = oneshot::channel();
        p.add(1, b"x".to_vec(), tx, t0);
        assert_eq!(p.due(5, t0).len(), 1);
        assert!(p.due(5, t0).is_empty(), "handed over already in term 5");
        assert_eq!(p.due(6, t0).len(), 1, "a new term");
        assert_eq!(
            p.due(6, t0 + RESEND_AFTER).len(),
            1,
            "no answer for a while"
        );
        p.unsent();
        assert_eq!(p.due(6, t0 + RESEND_AFTER).len(), 1, "Raft refused it");
    }

    #[test]
    fn expired_proposals_are_told_why() {
        let mut p = Proposals::default();
        let t0 = Instant::now();
        let (tx, mut rx) = oneshot::channel();
        p.add(1, Vec::new(), tx, t0);
        p.expire(t0, Duration::from_secs(10), |_| {
            BrokerError::internal("late")
        });
        assert!(rx.try_recv().is_err(), "not yet");
        p.expire(
            t0 + Duration::from_secs(10),
            Duration::from_secs(10),
            |sent| BrokerError::internal(format!("sent {sent}")),
        );
        let e = rx.try_recv().expect("answered").unwrap_err();
        assert!(e.to_string().contains("sent false"), "{e}");
        assert!(p.is_empty());
    }
}
