//! [`ChannelState`]: what every protocol front door does for one channel, the
//! client-handle session and the AMQP channel alike.
//!
//! It routes a batch of publishes against the vhost's routing snapshot (no exchange
//! mailbox on the way), hands each queue its share in one message, and, when the
//! publisher wants to know, resolves each publish once every queue it went to holds
//! it as safely as promised. It numbers deliveries with delivery tags, remembers the
//! unsettled ones, turns acks, nacks and rejects into per-queue settlements, and when
//! the channel closes gives every unsettled delivery back to its queue. It reaches
//! queues through the queue-type seam only ([`crate::queue::Queue`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::delivery::{ChannelId, QueueDelivery};
use crate::error::BrokerError;
use crate::exchange::RouteResult;
use crate::message::{Message, SharedMessage};
use crate::queue::{Enqueue, EnqueueOutcome, InFlight, Settlement};
use crate::vhost::VHost;

/// What became of one published message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Every queue it was routed to holds it as safely as promised (or no queue took
    /// it and it was not mandatory).
    Confirmed,
    /// Mandatory, and no queue took it.
    Unroutable,
    /// A queue refused it (a full queue with `x-overflow: reject-publish`, say).
    Rejected(String),
    /// The publish itself was wrong (no such exchange, say).
    Failed(BrokerError),
}

/// What [`ChannelState::publish`] did with a batch.
pub enum Routed<F> {
    /// Handed to its queues; the future of the outcomes when somebody needs them.
    Sent(Option<F>),
    /// Not handed to anyone: a message of it went nowhere (no such exchange, no queue
    /// bound) and this node may merely be behind the cluster's metadata. The caller
    /// catches up ([`VHost::catch_up`]) and publishes the batch again, in order.
    Behind(Vec<(Message, bool)>),
}

/// A delayed exchange's share of a batch: its messages with their delays (ms), and
/// their indices in the batch.
type HeldShare = (Vec<(SharedMessage, u64)>, Vec<usize>);

/// The client's half of a settlement (what AMQP calls ack, nack and reject).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SettleKind {
    /// Ack: the queue forgets the message.
    Ack,
    /// Nack or reject: back to the queue (`requeue`), or dead-lettered / dropped.
    Reject {
        /// Back to the queue; otherwise dead-lettered when the queue has a
        /// dead-letter exchange, dropped when not.
        requeue: bool,
    },
}

/// A settlement of one delivery tag, or of every tag up to it (`multiple`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settle {
    /// The channel's delivery tag (from [`ChannelState::track`]); 0 with `multiple`
    /// means every unsettled delivery.
    pub delivery_tag: u64,
    /// Settles every unsettled tag up to and including `delivery_tag`.
    pub multiple: bool,
    /// Ack, or reject with or without requeue.
    pub kind: SettleKind,
}

/// A delivery not settled yet.
struct Unsettled {
    queue: Arc<str>,
    seq: u64,
}

/// One channel's routing, delivery tags and unsettled deliveries.
pub struct ChannelState {
    vhost: VHost,
    id: ChannelId,
    next_delivery_tag: u64,
    unsettled: BTreeMap<u64, Unsettled>,
    /// Queues this channel consumed from, got from or traced: told when it closes.
    touched: HashSet<Arc<str>>,
}

impl ChannelState {
    /// A channel of `vhost` with no delivery yet; `id` names it to the queues (acks,
    /// requeue when it closes).
    pub fn new(vhost: VHost, id: ChannelId) -> Self {
        ChannelState {
            vhost,
            id,
            next_delivery_tag: 1,
            unsettled: BTreeMap::new(),
            touched: HashSet::new(),
        }
    }

    /// The id the queues know this channel by.
    pub fn id(&self) -> ChannelId {
        self.id
    }

    /// The vhost the channel works in.
    pub fn vhost(&self) -> &VHost {
        &self.vhost
    }

    /// Remembers that the channel uses `queue` (it is told when the channel closes).
    pub fn touch(&mut self, queue: Arc<str>) {
        self.touched.insert(queue);
    }

    /// Unsettled deliveries.
    pub fn unsettled(&self) -> usize {
        self.unsettled.len()
    }

    /// Routes a batch of `(message, mandatory)` and hands each queue its share now,
    /// with credit from `in_flight` (the connection's credit flow) when given.
    ///
    /// Returns the future of one outcome per message, in order, resolving once every
    /// queue has answered, when somebody needs them: `confirm` (confirm mode, an AMQP
    /// transaction's commit, or a client handle, which always answers), a mandatory
    /// message routed to a queue, or a publish that failed or came back unroutable at
    /// routing. Otherwise `None`: the queues answer nobody, and nothing waits for them.
    ///
    /// In a cluster, a message that would go nowhere first sends the whole batch back
    /// ([`Routed::Behind`]) unless `caught_up` (the caller caught up since the batch
    /// came): the cost of read-your-writes is paid on a miss only.
    pub fn publish(
        &self,
        batch: Vec<(Message, bool)>,
        confirm: bool,
        in_flight: Option<&Arc<InFlight>>,
        caught_up: bool,
    ) -> Routed<impl Future<Output = Vec<PublishOutcome>> + Send + 'static> {
        let mut results: Vec<Option<PublishOutcome>> = vec![None; batch.len()];
        // In a cluster, until this node is known to be caught up, a miss gives the
        // batch back whole.
        let may_be_behind = !caught_up && self.vhost.logged();
        // Queue name -> (its messages, their indices in the batch), in first-seen order.
        let mut shares: Vec<(Arc<str>, Vec<SharedMessage>, Vec<usize>)> = Vec::new();
        let mut share_of: HashMap<Arc<str>, usize> = HashMap::new();
        // Delayed exchange -> its messages with their delays, and their indices.
        let mut held: HashMap<Arc<str>, HeldShare> = HashMap::new();
        // One routing buffer for the whole batch: no allocation per message.
        let mut routed = RouteResult::default();
        let mut batch = batch.into_iter().enumerate();
        while let Some((i, (message, mandatory))) = batch.next() {
            let headers = message.properties.headers.as_ref();
            let found = if message.exchange.is_empty()
                && crate::vhost::is_reply_address(&message.routing_key)
            {
                // A direct reply: to the consumer's channel, wherever it is.
                routed.only(message.routing_key.as_str().into());
                Ok(())
            } else {
                self.vhost.route(
                    &message.exchange,
                    &message.routing_key,
                    headers,
                    &mut routed,
                )
            };
            if may_be_behind && (found.is_err() || routed.is_empty()) {
                // Every message before this one was routed (a miss before it would
                // have come here), so each stands in at least one share.
                let mut earlier: Vec<Option<SharedMessage>> = vec![None; i];
                for (_, messages, indices) in shares {
                    for (m, j) in messages.into_iter().zip(indices) {
                        earlier[j].get_or_insert(m);
                    }
                }
                for (_, (messages, indices)) in held {
                    for ((m, _), j) in messages.into_iter().zip(indices) {
                        earlier[j].get_or_insert(m);
                    }
                }
                let mut whole: Vec<(Message, bool)> = Vec::with_capacity(results.len());
                for (j, m) in earlier.into_iter().enumerate() {
                    if let Some(m) = m {
                        // Routed and mandatory: marked unroutable until a queue takes it.
                        let mandatory = results[j] == Some(PublishOutcome::Unroutable);
                        whole.push((
                            Arc::try_unwrap(m).unwrap_or_else(|m| (*m).clone()),
                            mandatory,
                        ));
                    }
                }
                whole.push((message, mandatory));
                whole.extend(batch.map(|(_, p)| p));
                return Routed::Behind(whole);
            }
            if let Err(e) = found {
                results[i] = Some(PublishOutcome::Failed(e));
                continue;
            }
            if routed.is_empty() {
                results[i] = Some(if mandatory {
                    PublishOutcome::Unroutable
                } else {
                    PublishOutcome::Confirmed
                });
                continue;
            }
            // Mandatory: unroutable after all unless some queue takes it (a queue
            // deleted meanwhile does not).
            if mandatory {
                results[i] = Some(PublishOutcome::Unroutable);
            }
            let message: SharedMessage = Arc::new(message);
            for exchange in routed.delayed() {
                let share = held.entry(exchange.clone()).or_default();
                share.0.push((message.clone(), routed.delay()));
                share.1.push(i);
            }
            for queue in routed.iter() {
                let idx = *share_of.entry(queue.clone()).or_insert_with(|| {
                    shares.push((queue.clone(), Vec::new(), Vec::new()));
                    shares.len() - 1
                });
                shares[idx].1.push(message.clone());
                shares[idx].2.push(i);
            }
        }
        let wanted = confirm
            || results
                .iter()
                .any(|r| r.as_ref().is_some_and(|o| *o != PublishOutcome::Confirmed));
        let mut waits = Vec::with_capacity(if wanted { shares.len() + held.len() } else { 0 });
        for (exchange, (messages, indices)) in held {
            // Held by the delayed exchange's actor until due: confirmed once stored.
            let credit =
                in_flight.map(|f| f.take(messages.iter().map(|(m, _)| m.body_size()).sum()));
            if let Some(rx) = self.vhost.hold(&exchange, messages, wanted, credit) {
                if wanted {
                    waits.push((rx, indices));
                }
            }
        }
        for (queue, messages, indices) in shares {
            // A queue deleted between routing and now: as if it had not been routed there.
            let Some(queue) = self
                .vhost
                .queue(&queue)
                .or_else(|| self.vhost.direct_reply(&queue))
            else {
                continue;
            };
            let credit = in_flight.map(|f| f.take(messages.iter().map(|m| m.body_size()).sum()));
            let (reply, answer) = if wanted {
                let (tx, rx) = tokio::sync::oneshot::channel();
                (Some(tx), Some(rx))
            } else {
                (None, None)
            };
            queue.enqueue(Enqueue {
                messages,
                confirm: reply,
                credit,
            });
            if let Some(rx) = answer {
                waits.push((rx, indices));
            }
        }
        if !wanted {
            return Routed::Sent(None);
        }
        Routed::Sent(Some(async move {
            for (rx, indices) in waits {
                let outcomes = rx.await.unwrap_or_else(|_| {
                    vec![
                        EnqueueOutcome::Rejected("the queue restarted before confirming".into());
                        indices.len()
                    ]
                });
                for (i, outcome) in indices.into_iter().zip(outcomes) {
                    match outcome {
                        EnqueueOutcome::Confirmed => {
                            if results[i] == Some(PublishOutcome::Unroutable) {
                                results[i] = None;
                            }
                        }
                        EnqueueOutcome::Rejected(why) => {
                            results[i] = Some(PublishOutcome::Rejected(why));
                        }
                        EnqueueOutcome::Gone => {}
                    }
                }
            }
            results
                .into_iter()
                .map(|r| r.unwrap_or(PublishOutcome::Confirmed))
                .collect()
        }))
    }

    /// [`Self::publish`], catching up with the cluster's metadata first when a
    /// message of the batch would go nowhere (at most once per batch): the batch is
    /// handed to its queues whole and in order either way.
    pub async fn publish_in_order(
        &self,
        mut batch: Vec<(Message, bool)>,
        confirm: bool,
        in_flight: Option<&Arc<InFlight>>,
    ) -> Option<impl Future<Output = Vec<PublishOutcome>> + Send + 'static> {
        let mut caught_up = false;
        loop {
            match self.publish(batch, confirm, in_flight, caught_up) {
                Routed::Sent(outcomes) => return outcomes,
                Routed::Behind(whole) => {
                    self.vhost.catch_up().await;
                    batch = whole;
                    caught_up = true;
                }
            }
        }
    }

    /// Gives a delivery its tag and remembers it unless it needs no ack.
    pub fn track(&mut self, d: &QueueDelivery, no_ack: bool) -> u64 {
        self.track_seq(&d.queue, d.seq, no_ack)
    }

    /// [`Self::track`] for what `queue` sent under `seq` (a run of a stream's
    /// records).
    pub fn track_seq(&mut self, queue: &Arc<str>, seq: u64, no_ack: bool) -> u64 {
        let tag = self.next_delivery_tag;
        self.next_delivery_tag += 1;
        if !no_ack {
            self.unsettled.insert(
                tag,
                Unsettled {
                    queue: queue.clone(),
                    seq,
                },
            );
        }
        tag
    }

    /// Checks settlements without applying them: an unknown (or already settled) tag
    /// is an error, as RabbitMQ's 406.
    pub fn check_settle(&self, settles: &[Settle]) -> Result<(), BrokerError> {
        let mut seen: HashSet<u64> = HashSet::new();
        for s in settles {
            let known = if s.multiple {
                s.delivery_tag == 0 || self.unsettled.range(..=s.delivery_tag).next().is_some()
            } else {
                self.unsettled.contains_key(&s.delivery_tag) && seen.insert(s.delivery_tag)
            };
            if !known {
                return Err(BrokerError::precondition_failed(format!(
                    "PRECONDITION_FAILED - unknown delivery tag {}",
                    s.delivery_tag
                )));
            }
        }
        Ok(())
    }

    /// Refuses settlements whose queue's type does not take their kind (a stream's
    /// deliveries cannot be nacked or rejected), before anything is settled.
    fn check_settlement_kinds(&self, settles: &[Settle]) -> Result<(), BrokerError> {
        let mut checked: HashSet<(&str, SettleKind)> = HashSet::new();
        for s in settles.iter().filter(|s| s.kind != SettleKind::Ack) {
            let tags: Box<dyn Iterator<Item = (&u64, &Unsettled)>> = if s.multiple {
                let upto = if s.delivery_tag == 0 {
                    u64::MAX
                } else {
                    s.delivery_tag
                };
                Box::new(self.unsettled.range(..=upto))
            } else {
                Box::new(self.unsettled.get_key_value(&s.delivery_tag).into_iter())
            };
            for (_, u) in tags {
                if checked.insert((&*u.queue, s.kind)) {
                    self.vhost
                        .check_settlement(&u.queue, settlement_of(s.kind))?;
                }
            }
        }
        Ok(())
    }

    /// Turns settlements into per-queue acks and rejects. An unknown tag refuses the
    /// whole batch (RabbitMQ closes the channel with 406), settling nothing.
    pub fn settle(&mut self, settles: &[Settle]) -> Result<(), BrokerError> {
        self.check_settle(settles)?;
        self.check_settlement_kinds(settles)?;
        // (queue, kind) -> seqs, so that each queue gets one message per kind.
        let mut grouped: HashMap<(Arc<str>, SettleKind), Vec<u64>> = HashMap::new();
        for s in settles {
            let tags: Vec<u64> = if s.multiple {
                // Tag 0 with multiple: everything outstanding (AMQP 0-9-1).
                let upto = if s.delivery_tag == 0 {
                    u64::MAX
                } else {
                    s.delivery_tag
                };
                self.unsettled.range(..=upto).map(|(t, _)| *t).collect()
            } else {
                vec![s.delivery_tag]
            };
            for tag in tags {
                if let Some(u) = self.unsettled.remove(&tag) {
                    grouped.entry((u.queue, s.kind)).or_default().push(u.seq);
                }
            }
        }
        for ((queue, kind), seqs) in grouped {
            if let Some(queue) = self.vhost.queue(&queue) {
                queue.settle(self.id, settlement_of(kind), seqs);
            }
        }
        Ok(())
    }

    /// Gives deliveries that never reached the client back to their queues, as if
    /// rejected with requeue (a channel-wide prefetch held them, say).
    pub fn give_back(&self, deliveries: Vec<QueueDelivery>) {
        let mut by_queue: HashMap<Arc<str>, Vec<u64>> = HashMap::new();
        for d in deliveries.into_iter().filter(|d| !d.no_ack) {
            by_queue.entry(d.queue).or_default().push(d.seq);
        }
        for (queue, seqs) in by_queue {
            if let Some(queue) = self.vhost.queue(&queue) {
                queue.settle(self.id, Settlement::Requeue, seqs);
            }
        }
    }

    /// Gives every unsettled delivery back to its queue (`basic.recover`).
    pub fn requeue_unsettled(&mut self) {
        let all = Settle {
            delivery_tag: 0,
            multiple: true,
            kind: SettleKind::Reject { requeue: true },
        };
        let _ = self.settle(&[all]);
    }

    /// The channel closes: every queue it touched returns its unsettled deliveries
    /// (marked redelivered) and forgets its consumers and traces.
    pub fn close(&mut self) {
        self.unsettled.clear();
        self.vhost.end_reply_consumers_of(self.id);
        for queue in self.touched.drain() {
            if let Some(queue) = self.vhost.queue(&queue) {
                queue.channel_down(self.id);
            }
        }
    }
}

/// The queue's settlement of a client's settle kind.
fn settlement_of(kind: SettleKind) -> Settlement {
    match kind {
        SettleKind::Ack => Settlement::Ack,
        SettleKind::Reject { requeue: true } => Settlement::Requeue,
        SettleKind::Reject { requeue: false } => Settlement::DeadLetter,
    }
}
