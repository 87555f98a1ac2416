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
use crate::error::BrokerError;
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
    /// The wake-up armed: its time and its task.
    timer: Option<(u64, tokio::task::JoinHandle<()>)>,
    /// The latest time read as due ([`now_ms`]) and the latest a delay started from
    /// ([`now_ms_up`]): each never goes back, so a wall clock stepped back delivers
    /// late, never early.
    read_clock: u64,
    start_clock: u64,
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
    /// The held half of delayed exchange `exchange`. Waits first for the store writes submitted before (an earlier run of the
    /// actor's, whose news of their commit went to that run), so that the first read
    /// sees them.
    pub async fn load(vhost: &VHost, exchange: &str, durable: bool) -> Held {
        if let Err(e) = super::apply::written(&vhost.inner.store).await {
            tracing::error!(exchange, "the store did not answer: {e}");
        }
        let key = store_key(vhost.name(), exchange);
        Held {
            vhost: vhost.clone(),
            exchange: exchange.to_string(),
            key,
            durable,
            schedule: Schedule::new(),
            timer: None,
            read_clock: 0,
            start_clock: 0,
        }
    }

    /// Now, for reading what is due (see `read_clock`).
    fn now(&mut self) -> u64 {
        self.read_clock = self.read_clock.max(now_ms());
        self.read_clock
    }

    /// Now, for starting a delay (see `start_clock`).
    fn now_up(&mut self) -> u64 {
        self.start_clock = self.start_clock.max(now_ms_up()).max(self.read_clock);
        self.start_clock
    }

    fn store(&self) -> &Store {
        &self.vhost.inner.store
    }

    /// Stores `delay`'s messages; the publisher hears once they are stored, and the
    /// actor with [`ExchangeMsg::Stored`].
    pub fn hold(&mut self, myself: &ActorRef<ExchangeMsg>, delay: Delay) {
        let now = self.now_up();
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
        self.disarm();
        self.act(myself);
    }

    /// Routes what is due (one read of the store at most) and arms the timer for
    /// what is not.
    pub fn act(&mut self, myself: &ActorRef<ExchangeMsg>) {
        let now = self.now();
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
    /// leaves the store once every queue it reached holds it ([`deliver`]).
    fn route(&mut self, due: Vec<(Key, Message, u64)>) {
        if due.is_empty() {
            return;
        }
        let topology = self.vhost.topology();
        let mut routed = RouteResult::default();
        let mut targets = Vec::with_capacity(due.len());
        let mut nowhere = Vec::new();
        for (key, message, delay) in due {
            let message = delivered(message, delay);
            let headers = message.properties.headers.as_ref();
            let found =
                topology.route_into(&self.exchange, &message.routing_key, headers, &mut routed);
            if let Err(e) = found {
                tracing::debug!(exchange = %self.exchange, "a delayed message was dropped: {e}");
                routed = RouteResult::default();
            }
            if routed.queues().is_empty() {
                // Routes nowhere now: dropped, as an unroutable publish is.
                nowhere.push(key);
                continue;
            }
            targets.push(Target {
                key,
                message: Arc::new(message),
                queues: routed.queues().to_vec(),
            });
        }
        if !nowhere.is_empty() {
            self.forget(nowhere);
        }
        if !targets.is_empty() {
            tokio::spawn(deliver(
                self.vhost.clone(),
                self.exchange.clone(),
                self.key.clone(),
                targets,
            ));
        }
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

/// A due message and the queues that do not hold it yet.
struct Target {
    key: Key,
    message: SharedMessage,
    queues: Vec<Arc<str>>,
}

/// The first wait before a refused or unanswered due message is enqueued again.
const RETRY_FIRST: Duration = Duration::from_millis(100);

/// The longest wait between two tries.
const RETRY_MOST: Duration = Duration::from_secs(30);

/// Enqueues due messages to their queues until each queue holds its message (a
/// queue that refuses one, is restarting, or is on a node that does not answer gets
/// it again later, waiting longer each time), then deletes them from the store. A
/// queue deleted meanwhile no longer waits for its message; the exchange deleted
/// meanwhile ends the tries (its messages went with it).
async fn deliver(vhost: VHost, exchange: String, store_key: String, mut targets: Vec<Target>) {
    let mut wait = RETRY_FIRST;
    loop {
        // Queue -> its messages and their targets' positions.
        let mut shares: HashMap<Arc<str>, (Vec<SharedMessage>, Vec<usize>)> = HashMap::new();
        for (i, target) in targets.iter().enumerate() {
            for queue in &target.queues {
                let share = shares.entry(queue.clone()).or_default();
                share.0.push(target.message.clone());
                share.1.push(i);
            }
        }
        let mut answers = Vec::with_capacity(shares.len());
        for (name, (messages, positions)) in shares {
            // A queue deleted meanwhile: as if it had not been routed there.
            let Some(queue) = vhost.queue(&name) else {
                continue;
            };
            let (batch, confirmed) = Enqueue::confirmed(messages);
            queue.enqueue(batch);
            answers.push((name, confirmed, positions));
        }
        let mut left: Vec<Vec<Arc<str>>> = vec![Vec::new(); targets.len()];
        for (name, confirmed, positions) in answers {
            match confirmed.await {
                Ok(outcomes) => {
                    for (i, outcome) in positions.into_iter().zip(outcomes) {
                        if let EnqueueOutcome::Rejected(why) = outcome {
                            tracing::debug!(%exchange, queue = %name, "a queue refused a delayed message: {why}");
                            left[i].push(name.clone());
                        }
                    }
                }
                Err(_) => {
                    for i in positions {
                        left[i].push(name.clone());
                    }
                }
            }
        }
        let mut held = Vec::new();
        let mut again = Vec::new();
        for (mut target, queues) in targets.into_iter().zip(left) {
            if queues.is_empty() {
                held.push(target.key);
            } else {
                target.queues = queues;
                again.push(target);
            }
        }
        if !held.is_empty() {
            let _ = vhost
                .inner
                .store
                .submit(Batch::non_durable(vec![Op::DeleteDelayed {
                    exchange: store_key.clone(),
                    keys: held,
                }]))
                .await;
        }
        if again.is_empty()
            || *vhost.deleted().borrow()
            || vhost.topology().exchange(&exchange).is_none()
        {
            return;
        }
        tracing::warn!(%exchange, "{} due delayed messages are not held by all their queues yet: trying again in {wait:?}", again.len());
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RETRY_MOST);
        targets = again;
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

    /// How many messages delayed exchange `exchange` holds on this node (read from
    /// the store, off the runtime's threads; messages routed a moment ago may still
    /// count).
    pub async fn delayed_count(&self, exchange: &str) -> Result<u64, BrokerError> {
        let (store, key) = (self.inner.store.clone(), store_key(self.name(), exchange));
        tokio::task::spawn_blocking(move || store.delayed_count(&key))
            .await
            .map_err(|e| BrokerError::storage(e.to_string()))?
            .map_err(BrokerError::storage)
    }
}
