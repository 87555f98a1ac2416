//! Routing the vhost's dead-lettered messages: one batch per queue step, routed
//! against the routing snapshot, one enqueue per target queue, and an answer saying
//! which messages their targets hold, so that a message leaves its queue only then
//! (at-least-once dead-lettering).

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use super::{Inner, VHost};
use crate::classic::machine::is_dead_letter_cycle;
use crate::exchange::RouteResult;
use crate::queue::{DeadLetter, DeadLetterRouter, DeadLettered, Enqueue, EnqueueOutcome};
use crate::BoxFuture;

/// The dead-letter router of one vhost's queues.
pub(super) struct VhostDeadLetters {
    vhost: Weak<Inner>,
}

impl VhostDeadLetters {
    pub fn new(inner: &Arc<Inner>) -> Self {
        VhostDeadLetters {
            vhost: Arc::downgrade(inner),
        }
    }
}

/// One target queue's share of a batch: its messages and their seqs (and for a
/// delayed exchange, each message's delay).
#[derive(Default)]
struct Share {
    messages: Vec<crate::message::SharedMessage>,
    seqs: Vec<Option<u64>>,
    delays: Vec<u64>,
}

/// Marks a target that is a delayed exchange rather than a queue (no queue name
/// starts with a NUL).
const HELD_MARK: &str = "\u{0}delayed:";

impl DeadLetterRouter for VhostDeadLetters {
    fn route(&self, queue: &str, batch: Vec<DeadLetter>) -> BoxFuture<'static, DeadLettered> {
        let Some(inner) = self.vhost.upgrade() else {
            // The vhost is gone, and its queues with it.
            let outcome = DeadLettered {
                done: batch.iter().filter_map(|d| d.seq).collect(),
                ..DeadLettered::default()
            };
            return Box::pin(async move { outcome });
        };
        let vhost = VHost { inner };
        match send(&vhost, queue, &batch, vhost.logged()) {
            Ok(answered) => answered,
            // A message went nowhere and this node may be behind the cluster's
            // metadata (a dead-letter exchange or binding made through another node a
            // moment ago): catch up, then route the batch.
            Err(Behind) => {
                let queue = queue.to_string();
                Box::pin(async move {
                    loop {
                        vhost.catch_up().await;
                        if let Ok(answered) = send(&vhost, &queue, &batch, false) {
                            return answered.await;
                        }
                    }
                })
            }
        }
    }
}

/// Nothing was handed out: a message would have gone nowhere (see [`send`]).
struct Behind;

/// Routes `batch` (dead-lettered by `queue`) and hands each target queue its share;
/// the future says which messages their targets hold. With `recheck` (this node may
/// be behind the cluster's metadata), a message that would go nowhere hands out
/// nothing and answers [`Behind`].
fn send(
    vhost: &VHost,
    queue: &str,
    batch: &[DeadLetter],
    recheck: bool,
) -> Result<BoxFuture<'static, DeadLettered>, Behind> {
    let mut outcome = DeadLettered::default();
    let topology = vhost.topology();
    let mut shares: HashMap<Arc<str>, Share> = HashMap::new();
    let mut routed = RouteResult::default();
    // How many targets each seq waits for; those that wait for none are done.
    let mut waiting: HashMap<u64, usize> = HashMap::new();
    for dead in batch {
        let headers = dead.message.properties.headers.as_ref();
        // A dead-letter exchange that does not exist drops the message, as in
        // RabbitMQ.
        let found = topology.route_into(&dead.exchange, &dead.routing_key, headers, &mut routed);
        if recheck && (found.is_err() || routed.is_empty()) {
            return Err(Behind);
        }
        if let Err(e) = found {
            tracing::debug!(queue, "dead-lettered message dropped: {e}");
            routed = RouteResult::default();
        }
        let mut targets = 0;
        for exchange in routed.delayed() {
            // A delayed exchange holds it (as in RabbitMQ, where the plugin's route
            // delays dead-lettered messages too); marked apart from queue names.
            let target: Arc<str> = format!("{HELD_MARK}{exchange}").into();
            if dead.held_by.contains(&target) {
                continue;
            }
            let share = shares.entry(target).or_default();
            share.messages.push(dead.message.clone());
            share.seqs.push(dead.seq);
            share.delays.push(routed.delay());
            targets += 1;
        }
        for target in routed.iter() {
            // A cycle no consumer took part in drops the message for that queue; a
            // queue that took it on an earlier try has it.
            if is_dead_letter_cycle(&dead.message, target) || dead.held_by.contains(target) {
                continue;
            }
            let share = shares.entry(target.clone()).or_default();
            share.messages.push(dead.message.clone());
            share.seqs.push(dead.seq);
            targets += 1;
        }
        if let Some(seq) = dead.seq {
            if targets == 0 {
                outcome.done.push(seq);
            } else {
                waiting.insert(seq, targets);
            }
        }
    }
    let mut answers = Vec::new();
    for (target, share) in shares {
        if let Some(exchange) = target.strip_prefix(HELD_MARK) {
            let confirm = share.seqs.iter().any(Option::is_some);
            let messages = share.messages.into_iter().zip(share.delays).collect();
            if let Some(confirmed) = vhost.hold(exchange, messages, confirm, None) {
                if confirm {
                    answers.push((confirmed, target, share.seqs));
                }
            }
            continue;
        }
        let Some(queue) = vhost.queue(&target) else {
            // Deleted meanwhile: as if not routed there.
            for seq in share.seqs.into_iter().flatten() {
                answers_none(&mut waiting, &mut outcome, seq);
            }
            continue;
        };
        if share.seqs.iter().all(Option::is_none) {
            queue.enqueue(Enqueue::unconfirmed(share.messages));
            continue;
        }
        let (batch, confirmed) = Enqueue::confirmed(share.messages);
        queue.enqueue(batch);
        answers.push((confirmed, target, share.seqs));
    }
    Ok(Box::pin(async move {
        let mut refused = std::collections::BTreeSet::new();
        let mut held_by = Vec::new();
        for (confirmed, target, seqs) in answers {
            let outcomes = confirmed.await.unwrap_or_else(|_| {
                vec![EnqueueOutcome::Rejected("the queue restarted".into()); seqs.len()]
            });
            for (seq, result) in seqs.into_iter().zip(outcomes) {
                let Some(seq) = seq else { continue };
                match result {
                    EnqueueOutcome::Rejected(_) => {
                        refused.insert(seq);
                    }
                    EnqueueOutcome::Confirmed => held_by.push((seq, target.clone())),
                    EnqueueOutcome::Gone => {}
                }
                answers_none(&mut waiting, &mut outcome, seq);
            }
        }
        // A message refused by any target is republished later, to the targets
        // that do not hold it yet.
        outcome.done.retain(|seq| !refused.contains(seq));
        held_by.retain(|(seq, _)| refused.contains(seq));
        outcome.refused = refused.into_iter().collect();
        outcome.held_by = held_by;
        outcome
    }))
}

/// One of the targets `seq` waited for answered; the last one makes it done.
fn answers_none(waiting: &mut HashMap<u64, usize>, outcome: &mut DeadLettered, seq: u64) {
    if let Some(left) = waiting.get_mut(&seq) {
        *left -= 1;
        if *left == 0 {
            waiting.remove(&seq);
            outcome.done.push(seq);
        }
    }
}
