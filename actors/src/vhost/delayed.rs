//! What an `x-delayed-message` exchange's actor does with the messages it holds: its
//! [`Held`] half, beside the binding checks every exchange actor makes.
//!
//! Each node's actor of a delayed exchange holds the messages published through that
//! node. They are stored at once in the node's store (`delayed.messages`, keyed by
//! due time; fsynced before the publisher's confirm when the exchange is durable), and
//! [`Schedule`] says when to read the next due ones back. When due, a message is
//! routed from the exchange as its `x-delayed-type` routes, with `x-delay` negated
//! ([`crate::exchange::delay::delivered`]), and leaves the store once every queue it
//! went to holds it. A restart reads the store again: nothing held is lost, and what
//! was routed but not yet deleted is routed again (at least once). Deleting the
//! exchange (or its vhost) drops what it holds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ractor::ActorRef;
use tokio::sync::oneshot;
use warren_storage::{Batch, Op, Store};

use super::{ExchangeMsg, VHost};
use crate::exchange::delay::{delivered, due_at};
use crate::exchange::delay_schedule::{Key, Next, Schedule};
use crate::exchange::RouteResult;
use crate::message::{Message, SharedMessage};
use crate::queue::{ConfirmReply, Credit, Enqueue, EnqueueOutcome};

/// Messages read from the store at a time (the actor reads again at once, after
/// whatever else reached its mailbox meanwhile, when more are due).
const READ_LIMIT: usize = 512;

/// How long to wait before reading again after the store failed a read.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Messages handed to a delayed exchange's actor to hold.
pub struct Delay {
    /// Each message with its delay in milliseconds.
    pub messages: Vec<(SharedMessage, u64)>,
    /// Told whether each message is held (stored) when the publisher waits.
    pub reply: Option<ConfirmReply>,
    /// The publishing connection's credit, given back once they are stored.
    pub credit: Option<Credit>,
}

/// A message whose store commit the actor heard of.
pub struct Stored {
    key: Key,
    delay: u64,
    message: SharedMessage,
}

/// The held messages of one delayed exchange on this node (see the module docs).
pub struct Held {
    vhost: VHost,
    exchange: String,
    /// The exchange's key in the store: `"VHOST\0NAME"`.
    key: String,
    durable: bool,
    schedule: Schedule,
    /// How many messages it holds.
    count: u64,
    /// The wake-up armed: its time and its task.
    timer: Option<(u64, tokio::task::JoinHandle<()>)>,
}

/// Milliseconds since the Unix epoch, rounded down: a message is read as due once
/// this reaches its due time, so never before it.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Milliseconds since the Unix epoch, rounded up: where a delay starts, so that a
/// message is never due before its full delay has passed.
fn now_ms_up() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().div_ceil(1_000_000) as u64)
}

/// The store key of exchange `name` of `vhost`.
fn store_key(vhost: &str, name: &str) -> String {
    super::key(vhost, name)
}

impl Held {
    /// The held half of delayed exchange `exchange`, counting what the store holds.
    pub fn load(vhost: &VHost, exchange: &str, durable: bool) -> Held {
        let key = store_key(vhost.name(), exchange);
        let count = vhost.inner.store.delayed_count(&key).unwrap_or_else(|e| {
            tracing::error!(exchange, "the delayed messages could not be counted: {e}");
            0
        });
        Held {
            vhost: vhost.clone(),
            exchange: exchange.to_string(),
            key,
            durable,
            schedule: Schedule::new(),
            count,
            timer: None,
        }
    }

    fn store(&self) -> &Store {
        &self.vhost.inner.store
    }

    /// How many messages it holds.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Stores `delay`'s messages; the publisher hears once they are stored, and the
    /// actor with [`ExchangeMsg::Stored`].
    pub fn hold(&mut self, myself: &ActorRef<ExchangeMsg>, delay: Delay) {
        let now = now_ms_up();
        let mut ops = Vec::with_capacity(delay.messages.len());
        let mut stored = Vec::with_capacity(delay.messages.len());
        let mut outcomes = Vec::with_capacity(delay.messages.len());
        for (message, wait) in delay.messages {
            let key = (due_at(now, wait), self.store().allocate_id());
            match warren_storage::codec::encode(&(wait, &*message)) {
                Ok(bytes) => {
                    self.schedule.submitted(key);
                    ops.push(Op::PutDelayed {
                        exchange: self.key.clone(),
                        due: key.0,
                        seq: key.1,
                        message: bytes,
                    });
                    outcomes.push(None);
                    stored.push(Stored {
                        key,
                        delay: wait,
                        message,
                    });
                }
                Err(e) => outcomes.push(Some(EnqueueOutcome::Rejected(format!(
                    "the delayed message could not be stored: {e}"
                )))),
            }
        }
        let batch = if self.durable {
            Batch::durable(ops)
        } else {
            Batch::non_durable(ops)
        };
        let commit = self.store().submit(batch);
        let (myself, reply, credit) = (myself.clone(), delay.reply, delay.credit);
        tokio::spawn(async move {
            let result = commit.await;
            drop(credit);
            let held = match &result {
                Ok(()) => EnqueueOutcome::Confirmed,
                Err(e) => {
                    tracing::error!("delayed messages were not stored: {e}");
                    EnqueueOutcome::Rejected(format!("the delayed message was not stored: {e}"))
                }
            };
            if let Some(reply) = reply {
                let _ = reply.send(
                    outcomes
                        .into_iter()
                        .map(|o| o.unwrap_or_else(|| held.clone()))
                        .collect(),
                );
            }
            let _ = myself.cast(match result {
                Ok(()) => ExchangeMsg::Stored(stored),
                Err(_) => ExchangeMsg::NotStored(stored.iter().map(|s| s.key).collect()),
            });
        });
    }

    /// The store holds `stored`: those the reads went past go now, the others wait.
    pub fn stored(&mut self, myself: &ActorRef<ExchangeMsg>, stored: Vec<Stored>) {
        self.count += stored.len() as u64;
        let now: Vec<(Key, Message, u64)> = stored
            .into_iter()
            .filter(|s| self.schedule.stored(s.key))
            .map(|s| {
                let message = Arc::try_unwrap(s.message).unwrap_or_else(|m| (*m).clone());
                (s.key, message, s.delay)
            })
            .collect();
        self.route(now);
        self.act(myself);
    }

    /// Messages that did not reach the store (their publishers were told).
    pub fn not_stored(&mut self, myself: &ActorRef<ExchangeMsg>, keys: Vec<Key>) {
        for key in keys {
            self.schedule.failed(key);
        }
        self.act(myself);
    }

    /// The timer went off.
    pub fn wake(&mut self, myself: &ActorRef<ExchangeMsg>) {
        self.timer = None;
        self.act(myself);
    }

    /// Routes what is due (one read of the store at most) and arms the timer for
    /// what is not.
    pub fn act(&mut self, myself: &ActorRef<ExchangeMsg>) {
        let now = now_ms();
        match self.schedule.next(now) {
            Next::Read { after } => match self.read(after, now) {
                Ok(full) => {
                    if full {
                        // More are due: read again after what waits in the mailbox.
                        self.disarm();
                        let _ = myself.cast(ExchangeMsg::Wake);
                    } else {
                        self.act(myself);
                    }
                }
                Err(e) => {
                    tracing::error!(exchange = %self.exchange, "delayed messages could not be read: {e}");
                    self.arm(myself, now + RETRY_AFTER.as_millis() as u64, now);
                }
            },
            Next::WakeAt(at) => self.arm(myself, at, now),
            Next::Idle => self.disarm(),
        }
    }

    /// Reads the messages due by `now` after `after` and routes them; `true` when
    /// the read was cut short (more may be due).
    fn read(&mut self, after: Option<Key>, now: u64) -> Result<bool, warren_storage::ReadError> {
        let records = self
            .store()
            .delayed_due(&self.key, after, now, READ_LIMIT)?;
        let full = records.len() == READ_LIMIT;
        let keys: Vec<Key> = records.iter().map(|r| (r.due, r.seq)).collect();
        let following = if full {
            None
        } else {
            self.store()
                .delayed_next(&self.key, keys.last().copied().or(after))?
        };
        let go: std::collections::HashSet<Key> = self
            .schedule
            .read(&keys, full, following)
            .into_iter()
            .collect();
        let mut due = Vec::with_capacity(go.len());
        for record in records {
            let key = (record.due, record.seq);
            if !go.contains(&key) {
                continue;
            }
            match warren_storage::codec::decode::<(u64, Message)>(&record.message) {
                Ok((delay, message)) => due.push((key, message, delay)),
                Err(e) => {
                    tracing::error!(exchange = %self.exchange, "a delayed message did not decode and is dropped: {e}");
                    self.forget(vec![key]);
                }
            }
        }
        self.route(due);
        Ok(full)
    }

    /// Routes due messages from the exchange, each with `x-delay` negated; each
    /// leaves the store once every queue it reached holds it.
    fn route(&mut self, due: Vec<(Key, Message, u64)>) {
        if due.is_empty() {
            return;
        }
        self.count = self.count.saturating_sub(due.len() as u64);
        let topology = self.vhost.topology();
        let mut routed = RouteResult::default();
        // Queue -> its messages and their keys.
        let mut shares: HashMap<Arc<str>, (Vec<SharedMessage>, Vec<Key>)> = HashMap::new();
        let mut done = Vec::new();
        for (key, message, delay) in due {
            let message = delivered(message, delay);
            let headers = message.properties.headers.as_ref();
            let found =
                topology.route_into(&self.exchange, &message.routing_key, headers, &mut routed);
            if let Err(e) = found {
                tracing::debug!(exchange = %self.exchange, "a delayed message was dropped: {e}");
            }
            if routed.queues().is_empty() {
                done.push(key);
                continue;
            }
            let message: SharedMessage = Arc::new(message);
            for queue in routed.iter() {
                let share = shares.entry(queue.clone()).or_default();
                share.0.push(message.clone());
                share.1.push(key);
            }
        }
        let mut answers = Vec::with_capacity(shares.len());
        for (queue, (messages, keys)) in shares {
            let Some(queue) = self.vhost.queue(&queue) else {
                // Deleted meanwhile: as if it had not been routed there.
                done.extend(keys);
                continue;
            };
            let (batch, confirmed) = Enqueue::confirmed(messages);
            queue.enqueue(batch);
            answers.push((confirmed, keys));
        }
        let (store, exchange) = (self.store().clone(), self.key.clone());
        tokio::spawn(async move {
            // A message stays stored (and goes again at the next start) while a queue
            // it went to may not hold it.
            let mut kept = std::collections::HashSet::new();
            for (confirmed, keys) in answers {
                match confirmed.await {
                    Ok(outcomes) => {
                        for (key, outcome) in keys.iter().zip(outcomes) {
                            if let EnqueueOutcome::Rejected(why) = outcome {
                                tracing::warn!(%exchange, "a queue refused a delayed message: {why}");
                            }
                            done.push(*key);
                        }
                    }
                    Err(_) => kept.extend(keys),
                }
            }
            done.retain(|key| !kept.contains(key));
            done.sort_unstable();
            done.dedup();
            if !done.is_empty() {
                let _ = store
                    .submit(Batch::non_durable(vec![Op::DeleteDelayed {
                        exchange,
                        keys: done,
                    }]))
                    .await;
            }
        });
    }

    /// Removes messages from the store.
    fn forget(&self, keys: Vec<Key>) {
        drop(
            self.store()
                .submit(Batch::non_durable(vec![Op::DeleteDelayed {
                    exchange: self.key.clone(),
                    keys,
                }])),
        );
    }

    fn arm(&mut self, myself: &ActorRef<ExchangeMsg>, at: u64, now: u64) {
        if self.timer.as_ref().is_some_and(|(armed, _)| *armed == at) {
            return;
        }
        self.disarm();
        let myself = myself.clone();
        let wait = Duration::from_millis(at.saturating_sub(now));
        let task = tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = myself.cast(ExchangeMsg::Wake);
        });
        self.timer = Some((at, task));
    }

    fn disarm(&mut self) {
        if let Some((_, task)) = self.timer.take() {
            task.abort();
        }
    }

    /// The actor stops: when its exchange (or vhost) is gone, what it holds goes too
    /// (after any store write it submitted, which the store applies in order).
    pub fn stop(&mut self) {
        self.disarm();
        let gone = *self.vhost.deleted().borrow()
            || self.vhost.topology().exchange(&self.exchange).is_none();
        if gone {
            drop(
                self.store()
                    .submit(Batch::non_durable(vec![Op::DropDelayed {
                        exchange: self.key.clone(),
                    }])),
            );
        }
    }
}

impl VHost {
    /// Hands messages to delayed exchange `exchange`'s actor on this node to hold;
    /// the receiver says whether each is held, when `confirm`.
    pub(crate) fn hold(
        &self,
        exchange: &str,
        messages: Vec<(SharedMessage, u64)>,
        confirm: bool,
        credit: Option<Credit>,
    ) -> Option<oneshot::Receiver<Vec<EnqueueOutcome>>> {
        let count = messages.len();
        let (reply, answer) = if confirm {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let actor = ractor::registry::where_is(self.exchange_actor_name(exchange))
            .map(ActorRef::<ExchangeMsg>::from);
        let sent = actor.is_some_and(|actor| {
            actor
                .cast(ExchangeMsg::Delay(Delay {
                    messages,
                    reply,
                    credit,
                }))
                .is_ok()
        });
        if sent {
            return answer;
        }
        tracing::warn!(
            exchange,
            "delayed messages refused: the exchange is restarting"
        );
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(vec![
            EnqueueOutcome::Rejected(
                "the delayed exchange is restarting; publish again".into()
            );
            count
        ]);
        Some(rx)
    }

    /// The delayed-message ops that remove what this vhost's delayed exchanges hold
    /// (the vhost is being deleted).
    pub(crate) fn drop_delayed(&self) -> Vec<Op> {
        self.topology()
            .exchanges()
            .iter()
            .filter(|x| x.kind == crate::exchange::ExchangeKind::DelayedMessage)
            .map(|x| Op::DropDelayed {
                exchange: store_key(self.name(), &x.name),
            })
            .collect()
    }

    /// How many messages delayed exchange `exchange` holds on this node, if it is one
    /// and its actor answers.
    pub async fn delayed_count(&self, exchange: &str) -> Option<u64> {
        let actor = ractor::registry::where_is(self.exchange_actor_name(exchange))
            .map(ActorRef::<ExchangeMsg>::from)?;
        let (tx, rx) = oneshot::channel();
        actor.cast(ExchangeMsg::HeldCount(tx)).ok()?;
        rx.await.ok().flatten()
    }
}
