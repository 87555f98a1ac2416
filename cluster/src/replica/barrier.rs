//! Read-your-writes: waiting until this node has applied everything the leader had
//! committed when somebody asked (Raft's ReadIndex).
//!
//! A node about to answer "no such queue" or to route a message to nothing first
//! makes sure it is not merely behind. It asks the leader for its commit index (one
//! question for everybody waiting at that moment; who comes later waits for the next
//! question, asked after they came) and waits until it has applied that far. A
//! question can be lost (the leader died, a new leader has not committed in its term
//! yet, Raft drops it while no leader is known): it is asked again after
//! [`ASK_AGAIN_AFTER`]. Nobody waits longer than the limit they came with; then they
//! are served from what the node has (the minority side of a partition keeps
//! serving).

use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// A question with no answer for this long is asked again.
pub(super) const ASK_AGAIN_AFTER: Duration = Duration::from_millis(500);

struct Waiter {
    /// Told `true` once caught up, `false` when served at its limit instead.
    ready: oneshot::Sender<bool>,
    until: Instant,
}

/// A question asked: its context (what Raft hands back with the answer).
struct Asked {
    ctx: u64,
    at: Instant,
    waiters: Vec<Waiter>,
}

/// Who waits to be caught up, at each stage.
#[derive(Default)]
pub(super) struct Barrier {
    next_ctx: u64,
    /// Came after the question in flight was asked (or none is): the next question.
    queued: Vec<Waiter>,
    asked: Option<Asked>,
    /// Answered: the leader's commit index, which this node has not applied yet.
    reached: Vec<(u64, Vec<Waiter>)>,
}

impl Barrier {
    /// Whether nobody waits.
    pub(super) fn is_idle(&self) -> bool {
        self.queued.is_empty() && self.asked.is_none() && self.reached.is_empty()
    }

    /// `ready` is told `true` once this node has caught up, or `false` at `until`.
    pub(super) fn wait(&mut self, ready: oneshot::Sender<bool>, until: Instant) {
        self.queued.push(Waiter { ready, until });
    }

    /// The context of the question to ask now, if one is needed and none is in flight.
    pub(super) fn question(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.asked.is_some() || self.queued.is_empty() {
            return None;
        }
        self.next_ctx += 1;
        self.asked = Some(Asked {
            ctx: self.next_ctx,
            at: now,
            waiters: std::mem::take(&mut self.queued),
        });
        Some(self.next_ctx.to_be_bytes().to_vec())
    }

    /// The answer to the question `ctx`: the leader had committed up to `index`.
    pub(super) fn answered(&mut self, ctx: &[u8], index: u64) {
        if let Some(asked) = self
            .asked
            .take_if(|a| a.ctx.to_be_bytes().as_slice() == ctx)
        {
            self.reached.push((index, asked.waiters));
        }
    }

    /// This node has applied up to `applied`: everyone waiting for less is served.
    pub(super) fn applied(&mut self, applied: u64) {
        self.reached.retain_mut(|(index, waiters)| {
            if *index > applied {
                return true;
            }
            for w in waiters.drain(..) {
                let _ = w.ready.send(true);
            }
            false
        });
    }

    /// Time passed: a question unanswered for [`ASK_AGAIN_AFTER`] is given up (its
    /// waiters go to the next question), and whoever reached their limit is served.
    pub(super) fn tick(&mut self, now: Instant) {
        if let Some(asked) = self
            .asked
            .take_if(|a| now.duration_since(a.at) >= ASK_AGAIN_AFTER)
        {
            let later = std::mem::replace(&mut self.queued, asked.waiters);
            self.queued.extend(later);
        }
        let serve_late = |waiters: &mut Vec<Waiter>| {
            let (late, on_time): (Vec<Waiter>, Vec<Waiter>) =
                waiters.drain(..).partition(|w| w.until <= now);
            *waiters = on_time;
            for w in late {
                let _ = w.ready.send(false);
            }
        };
        serve_late(&mut self.queued);
        if let Some(asked) = self.asked.as_mut() {
            serve_late(&mut asked.waiters);
        }
        for (_, waiters) in self.reached.iter_mut() {
            serve_late(waiters);
        }
        self.reached.retain(|(_, w)| !w.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(b: &mut Barrier, until: Instant) -> oneshot::Receiver<bool> {
        let (tx, rx) = oneshot::channel();
        b.wait(tx, until);
        rx
    }

    #[test]
    fn who_comes_after_a_question_waits_for_the_next_one() {
        let mut b = Barrier::default();
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(60);
        let mut first = waiter(&mut b, far);
        let ctx = b.question(t0).expect("a question");
        assert!(b.question(t0).is_none(), "one question at a time");
        let mut second = waiter(&mut b, far);
        b.answered(&ctx, 7);
        b.applied(6);
        assert!(first.try_recv().is_err(), "index 7 is not applied yet");
        b.applied(7);
        assert_eq!(first.try_recv(), Ok(true), "caught up");
        assert!(second.try_recv().is_err(), "came after the question");
        let ctx2 = b.question(t0).expect("the next question");
        assert_ne!(ctx, ctx2);
        b.answered(&ctx, 9);
        assert!(second.try_recv().is_err(), "an answer to the old question");
        b.answered(&ctx2, 7);
        b.applied(7);
        assert!(second.try_recv().is_ok());
    }

    #[test]
    fn a_lost_question_is_asked_again_and_nobody_waits_past_their_limit() {
        let mut b = Barrier::default();
        let t0 = Instant::now();
        let mut patient = waiter(&mut b, t0 + Duration::from_secs(60));
        let mut hurried = waiter(&mut b, t0 + Duration::from_secs(1));
        let lost = b.question(t0).unwrap();
        b.tick(t0 + ASK_AGAIN_AFTER);
        let again = b.question(t0 + ASK_AGAIN_AFTER).expect("asked again");
        assert_ne!(lost, again);
        b.tick(t0 + Duration::from_secs(1));
        assert_eq!(hurried.try_recv(), Ok(false), "served at its limit");
        assert!(patient.try_recv().is_err());
        drop(b);
        assert!(
            patient.try_recv().is_err(),
            "a replica that stops lets its waiters go"
        );
    }
}
