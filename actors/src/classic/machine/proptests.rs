//! Property tests: random configurations and command sequences, run against a model
//! of the shell (storage with writes and loads in flight, channels, publishers). At
//! every step the state's own invariants hold and every effect is checked against the
//! model; at the end, a drain delivers everything left and every message and every
//! publish must be accounted for.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

use crate::message::{FieldValue, Message, SharedMessage, PERSISTENT};

use super::entry::Place;
use super::*;

/// When the simulated queue is declared.
pub(super) const START: u64 = 1_000;

/// One step of a simulated run: a command of the shell, or the shell's I/O completing.
#[derive(Clone, Debug)]
pub(super) enum SimOp {
    Publish {
        persistent: bool,
        ttl: Option<u64>,
        priority: u8,
        size: usize,
        confirm: bool,
    },
    Consume {
        channel: u64,
        tag: u8,
        prefetch: u32,
        no_ack: bool,
        exclusive: bool,
        priority: i32,
    },
    Cancel {
        channel: u64,
        tag: u8,
    },
    ChannelDown {
        channel: u64,
    },
    Ack {
        channel: u64,
        pick: usize,
        count: usize,
        bogus: bool,
    },
    Reject {
        channel: u64,
        pick: usize,
        count: usize,
        requeue: bool,
    },
    Get {
        channel: u64,
        no_ack: bool,
    },
    Purge,
    /// The shell's share of the node's queue memory changed.
    Allow {
        allowance: Option<u64>,
    },
    Advance {
        ms: u64,
    },
    CompleteWrites {
        n: usize,
    },
    CompleteLoads {
        n: usize,
    },
    /// The dead-letter targets answer for the oldest `n` dead letters in flight:
    /// they hold them, or refuse them (full, say).
    AnswerDeadLetters {
        n: usize,
        refuse: bool,
    },
    Touch,
    Delete {
        if_unused: bool,
        if_empty: bool,
    },
}

pub(super) fn op() -> impl Strategy<Value = SimOp> {
    let channel = 1u64..4;
    prop_oneof![
        12 => (any::<bool>(), prop::option::weighted(0.3, 0u64..40), 0u8..5, 0usize..20, any::<bool>())
            .prop_map(|(persistent, ttl, priority, size, confirm)| SimOp::Publish { persistent, ttl, priority, size, confirm }),
        3 => (channel.clone(), 0u8..2, 0u32..4, prop::bool::weighted(0.2), prop::bool::weighted(0.1), 0i32..2)
            .prop_map(|(channel, tag, prefetch, no_ack, exclusive, priority)| SimOp::Consume { channel, tag, prefetch, no_ack, exclusive, priority }),
        1 => (channel.clone(), 0u8..2).prop_map(|(channel, tag)| SimOp::Cancel { channel, tag }),
        1 => channel.clone().prop_map(|channel| SimOp::ChannelDown { channel }),
        5 => (channel.clone(), any::<usize>(), 1usize..4, prop::bool::weighted(0.05))
            .prop_map(|(channel, pick, count, bogus)| SimOp::Ack { channel, pick, count, bogus }),
        3 => (channel.clone(), any::<usize>(), 1usize..3, any::<bool>())
            .prop_map(|(channel, pick, count, requeue)| SimOp::Reject { channel, pick, count, requeue }),
        2 => (channel.clone(), any::<bool>()).prop_map(|(channel, no_ack)| SimOp::Get { channel, no_ack }),
        1 => Just(SimOp::Purge),
        1 => prop::option::of(0u64..2_000).prop_map(|allowance| SimOp::Allow { allowance }),
        3 => (0u64..30).prop_map(|ms| SimOp::Advance { ms }),
        5 => (1usize..6).prop_map(|n| SimOp::CompleteWrites { n }),
        5 => (1usize..6).prop_map(|n| SimOp::CompleteLoads { n }),
        3 => (1usize..4, prop::bool::weighted(0.3)).prop_map(|(n, refuse)| SimOp::AnswerDeadLetters { n, refuse }),
        1 => Just(SimOp::Touch),
        1 => (prop::bool::weighted(0.7), prop::bool::weighted(0.7))
            .prop_map(|(if_unused, if_empty)| SimOp::Delete { if_unused, if_empty }),
    ]
}

#[allow(clippy::type_complexity)]
pub(super) fn queue_config() -> impl Strategy<Value = QueueConfig> {
    (
        (
            any::<bool>(),
            prop::option::weighted(0.3, 0u64..6),
            prop::option::weighted(0.15, 0u64..40),
            0u8..3,
        ),
        (
            any::<bool>(),
            prop::option::weighted(0.3, 0u64..40),
            prop::option::weighted(0.3, 0u8..4),
        ),
        (
            prop::bool::weighted(0.2),
            prop::option::weighted(0.3, 0u64..3),
            0u64..6,
            prop::option::weighted(0.1, 1u64..200),
        ),
        (prop::bool::weighted(0.1), any::<bool>()),
    )
        .prop_map(
            |(
                (durable, max_length, max_length_bytes, overflow),
                (dlx, ttl, max_priority),
                (sac, delivery_limit, window, expires),
                (auto_delete, dlrk),
            )| {
                let mut c = QueueConfig::new("q", "/");
                c.durable = durable;
                c.auto_delete = auto_delete;
                c.max_length = max_length;
                c.max_length_bytes = max_length_bytes;
                c.overflow = [
                    None,
                    Some(Overflow::RejectPublish),
                    Some(Overflow::RejectPublishDlx),
                ][usize::from(overflow)];
                if dlx {
                    c.dead_letter_exchange = Some("dlx".into());
                    c.dead_letter_routing_key = dlrk.then(|| "dead".into());
                }
                c.message_ttl = ttl;
                c.max_priority = max_priority;
                c.single_active_consumer = Some(sac);
                c.delivery_limit = delivery_limit;
                c.expires = expires;
                c.window = WindowLimits {
                    messages: window,
                    bytes: window * 8,
                };
                c
            },
        )
}

#[derive(Clone, Debug)]
struct ModelConsumer {
    generation: u64,
    prefetch: u32,
    no_ack: bool,
    exclusive: bool,
}

/// A model of the shell: storage, channels, publishers, and what happened to each message.
pub(super) struct Sim {
    pub(super) q: QueueState,
    config: QueueConfig,
    now: u64,
    originals: BTreeMap<Seq, SharedMessage>,
    expires_at: BTreeMap<Seq, u64>,
    confirm_of: BTreeMap<Seq, PublishId>,
    publishes: BTreeMap<PublishId, Option<bool>>,
    storage: BTreeMap<Seq, SharedMessage>,
    writes: VecDeque<(Seq, SharedMessage)>,
    written_ever: BTreeSet<Seq>,
    loads: VecDeque<Seq>,
    consumers: BTreeMap<(ChannelId, String), ModelConsumer>,
    active: Option<(ChannelId, String)>,
    next_generation: u64,
    /// Delivered and not settled: channel and consumer generation (`None` for a get).
    outstanding: BTreeMap<Seq, (ChannelId, Option<u64>)>,
    gets_waiting: BTreeMap<ChannelId, usize>,
    /// Returns to the queue per message (requeues and channel closes).
    returns: BTreeMap<Seq, u32>,
    ended: BTreeMap<Seq, &'static str>,
    /// Dead letters republished and not yet answered by their targets, oldest first.
    dead_letters: VecDeque<Seq>,
    deleted: bool,
    next_publish: PublishId,
    next_body: u64,
}

impl Sim {
    pub(super) fn new(config: QueueConfig) -> Self {
        Sim {
            q: QueueState::new(config.clone(), START),
            config,
            now: START,
            originals: BTreeMap::new(),
            expires_at: BTreeMap::new(),
            confirm_of: BTreeMap::new(),
            publishes: BTreeMap::new(),
            storage: BTreeMap::new(),
            writes: VecDeque::new(),
            written_ever: BTreeSet::new(),
            loads: VecDeque::new(),
            consumers: BTreeMap::new(),
            active: None,
            next_generation: 0,
            outstanding: BTreeMap::new(),
            gets_waiting: BTreeMap::new(),
            returns: BTreeMap::new(),
            ended: BTreeMap::new(),
            dead_letters: VecDeque::new(),
            deleted: false,
            next_publish: 1,
            next_body: 0,
        }
    }

    fn outstanding_on(&self, channel: ChannelId) -> Vec<Seq> {
        self.outstanding
            .iter()
            .filter(|(_, (c, _))| *c == channel)
            .map(|(&s, _)| s)
            .collect()
    }

    fn pick(&self, channel: ChannelId, pick: usize, count: usize) -> Vec<Seq> {
        let held = self.outstanding_on(channel);
        if held.is_empty() {
            return Vec::new();
        }
        let start = pick % held.len();
        let mut seqs: Vec<Seq> = held[start..].iter().take(count).copied().collect();
        if pick % 7 == 1 {
            // A channel listing a message twice settles it once.
            seqs.push(seqs[0]);
        }
        seqs
    }

    pub(super) fn run(&mut self, op: SimOp) -> Result<(), TestCaseError> {
        match op {
            SimOp::Publish {
                persistent,
                ttl,
                priority,
                size,
                confirm,
            } => {
                self.next_body += 1;
                let mut body = format!("m{}-", self.next_body).into_bytes();
                body.resize(body.len() + size, b'.');
                let mut m = Message::new("ex", "rk", Bytes::from(body));
                if persistent {
                    m.properties.delivery_mode = Some(PERSISTENT);
                }
                m.properties.expiration = ttl.map(|t| t.to_string());
                m.properties.priority = Some(priority);
                let confirm = confirm.then(|| {
                    self.next_publish += 1;
                    self.next_publish
                });
                let message = Arc::new(m);
                let reply = self.exec(Command::Enqueue {
                    message: message.clone(),
                    confirm,
                })?;
                if let (Some(p), Reply::Enqueued { .. } | Reply::PublishRejected) =
                    (confirm, &reply)
                {
                    self.publishes.entry(p).or_insert(None);
                }
                Ok(())
            }
            SimOp::Consume {
                channel,
                tag,
                prefetch,
                no_ack,
                exclusive,
                priority,
            } => {
                let tag = format!("t{tag}");
                let cmd = Command::Consume {
                    tag: tag.as_str().into(),
                    channel,
                    prefetch,
                    no_ack,
                    exclusive,
                    priority,
                };
                self.exec(cmd).map(|_| ())
            }
            SimOp::Cancel { channel, tag } => self
                .exec(Command::Cancel {
                    channel,
                    tag: format!("t{tag}").as_str().into(),
                })
                .map(|_| ()),
            SimOp::ChannelDown { channel } => {
                self.exec(Command::ChannelDown { channel }).map(|_| ())
            }
            SimOp::Ack {
                channel,
                pick,
                count,
                bogus,
            } => {
                let mut seqs = self.pick(channel, pick, count);
                if bogus || seqs.is_empty() {
                    seqs.push(1_000_000);
                }
                self.exec(Command::Ack { channel, seqs }).map(|_| ())
            }
            SimOp::Reject {
                channel,
                pick,
                count,
                requeue,
            } => {
                let seqs = self.pick(channel, pick, count);
                self.exec(Command::Reject {
                    channel,
                    seqs,
                    requeue,
                })
                .map(|_| ())
            }
            SimOp::Get { channel, no_ack } => {
                self.exec(Command::Get { channel, no_ack }).map(|_| ())
            }
            SimOp::Purge => self.exec(Command::Purge).map(|_| ()),
            SimOp::Allow { allowance } => {
                self.q.set_memory_allowance(allowance);
                Ok(())
            }
            SimOp::Advance { ms } => {
                self.now += ms;
                self.exec(Command::Tick).map(|_| ())
            }
            SimOp::CompleteWrites { n } => self.complete_writes(n),
            SimOp::CompleteLoads { n } => self.complete_loads(n),
            SimOp::AnswerDeadLetters { n, refuse } => self.answer_dead_letters(n, refuse),
            SimOp::Touch => self.exec(Command::Touch).map(|_| ()),
            SimOp::Delete {
                if_unused,
                if_empty,
            } => self
                .exec(Command::Delete {
                    if_unused,
                    if_empty,
                })
                .map(|_| ()),
        }
    }

    fn complete_writes(&mut self, n: usize) -> Result<(), TestCaseError> {
        let mut seqs = Vec::new();
        for _ in 0..n {
            let Some((seq, message)) = self.writes.pop_front() else {
                break;
            };
            self.storage.insert(seq, message);
            seqs.push(seq);
        }
        if seqs.is_empty() {
            return Ok(());
        }
        self.exec(Command::Stored(seqs)).map(|_| ())
    }

    fn answer_dead_letters(&mut self, n: usize, refuse: bool) -> Result<(), TestCaseError> {
        let n = n.min(self.dead_letters.len());
        if n == 0 {
            return Ok(());
        }
        let seqs: Vec<Seq> = self.dead_letters.drain(..n).collect();
        let (done, refused) = if refuse {
            (Vec::new(), seqs)
        } else {
            (seqs, Vec::new())
        };
        self.exec(Command::DeadLettered { done, refused })
            .map(|_| ())
    }

    fn complete_loads(&mut self, n: usize) -> Result<(), TestCaseError> {
        let live = self.q.places();
        let mut bodies = Vec::new();
        for _ in 0..n {
            let Some(seq) = self.loads.pop_front() else {
                break;
            };
            match self.storage.get(&seq) {
                Some(m) => bodies.push((seq, m.clone())),
                // Removed since it was asked for: the queue must have let it go.
                None => prop_assert!(!live.contains_key(&seq), "live {seq} vanished from storage"),
            }
        }
        if bodies.is_empty() {
            return Ok(());
        }
        self.exec(Command::BodiesLoaded(bodies)).map(|_| ())
    }

    /// Applies one command and checks everything about it.
    fn exec(&mut self, command: Command) -> Result<Reply, TestCaseError> {
        let before = self.q.places();
        let expected_err = self.expected_error(&command);
        let mut fx = Vec::new();
        let result = self.q.apply(command.clone(), self.now, &mut fx);
        if let Err(e) = self.q.check_invariants() {
            return Err(TestCaseError::fail(format!("after {command:?}: {e}")));
        }
        match (&result, expected_err) {
            (Err(e), Some(code)) => {
                prop_assert_eq!(e.reply_code(), code, "{:?}", e);
                prop_assert!(fx.is_empty(), "a refused command had effects");
                prop_assert_eq!(self.q.places(), before);
                return Ok(Reply::Ok);
            }
            (Ok(_), None) => {}
            (r, expected) => {
                return Err(TestCaseError::fail(format!(
                    "{command:?}: got {r:?}, expected error {expected:?}"
                )));
            }
        }
        let reply = result.unwrap_or(Reply::Ok);
        let sent_before: BTreeSet<Seq> = self.outstanding.keys().copied().collect();
        self.model_command(&command, &reply);
        let fresh = match reply {
            Reply::Enqueued { seq } => Some(seq),
            _ => None,
        };
        for effect in fx {
            self.model_effect(effect, &before, fresh)?;
        }
        let after = self.q.places();
        for (&seq, &(place, _)) in &before {
            if after.contains_key(&seq) || self.ended.contains_key(&seq) {
                continue;
            }
            self.check_silent_removal(seq, place, &command, &sent_before)?;
            self.ended.insert(seq, "discarded");
        }
        for seq in after.keys() {
            prop_assert!(
                before.contains_key(seq) || fresh == Some(*seq),
                "{seq} appeared from nowhere"
            );
        }
        if let Some(seq) = fresh {
            if !after.contains_key(&seq) && !self.ended.contains_key(&seq) {
                let expired = self.expires_at.get(&seq).is_some_and(|&at| at <= self.now);
                let allowed = self.config.dead_letter_exchange.is_none()
                    && (expired
                        || self.config.max_length.is_some()
                        || self.config.max_length_bytes.is_some());
                prop_assert!(allowed, "new message {seq} vanished");
                self.ended.insert(seq, "discarded");
            }
        }
        for (&seq, _) in self.outstanding.iter() {
            let held = matches!(after.get(&seq), Some((Place::Unacked { .. }, _)));
            prop_assert!(
                held || self.deleted,
                "outstanding {seq} not unacked in the queue"
            );
        }
        // A confirmed persistent message on a durable queue is stored or gone.
        for (&seq, &p) in &self.confirm_of {
            let persistent = self
                .originals
                .get(&seq)
                .is_some_and(|m| m.properties.is_persistent());
            if self.config.durable && persistent && self.publishes.get(&p) == Some(&Some(true)) {
                prop_assert!(
                    self.storage.contains_key(&seq) || !after.contains_key(&seq) || self.deleted,
                    "{seq} confirmed unwritten"
                );
            }
        }
        Ok(reply)
    }

    fn expected_error(&self, command: &Command) -> Option<u16> {
        let housekeeping = matches!(
            command,
            Command::Stored(_)
                | Command::BodiesLoaded(_)
                | Command::BodiesMissing(_)
                | Command::DeadLettered { .. }
                | Command::Tick
                | Command::ChannelDown { .. }
        );
        if self.deleted {
            return (!housekeeping).then_some(reply_code::NOT_FOUND);
        }
        match command {
            Command::Consume {
                tag,
                channel,
                exclusive,
                ..
            } => {
                if self.consumers.contains_key(&(*channel, tag.to_string())) {
                    Some(reply_code::NOT_ALLOWED)
                } else if self.consumers.values().any(|c| c.exclusive)
                    || (*exclusive && !self.consumers.is_empty())
                {
                    Some(reply_code::ACCESS_REFUSED)
                } else {
                    None
                }
            }
            Command::Ack { channel, seqs } | Command::Reject { channel, seqs, .. } => {
                let valid = seqs
                    .iter()
                    .all(|s| self.outstanding.get(s).is_some_and(|(c, _)| c == channel));
                (!valid).then_some(reply_code::PRECONDITION_FAILED)
            }
            Command::Delete {
                if_unused,
                if_empty,
            } => {
                let stats = self.q.stats();
                let refused = (*if_unused && stats.consumers > 0) || (*if_empty && stats.ready > 0);
                refused.then_some(reply_code::PRECONDITION_FAILED)
            }
            _ => None,
        }
    }

    /// The model's side of a command the queue accepted.
    fn model_command(&mut self, command: &Command, reply: &Reply) {
        match command {
            Command::Enqueue { message, confirm } => {
                if let Reply::Enqueued { seq } = reply {
                    self.originals.insert(*seq, message.clone());
                    if let Some(p) = confirm {
                        self.confirm_of.insert(*seq, *p);
                    }
                    let ttl = match (message.properties.ttl_ms(), self.config.message_ttl) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    if let Some(t) = ttl {
                        self.expires_at.insert(*seq, self.now + t);
                    }
                }
            }
            Command::Consume {
                tag,
                channel,
                prefetch,
                no_ack,
                exclusive,
                ..
            } => {
                self.next_generation += 1;
                self.consumers.insert(
                    (*channel, tag.to_string()),
                    ModelConsumer {
                        generation: self.next_generation,
                        prefetch: *prefetch,
                        no_ack: *no_ack,
                        exclusive: *exclusive,
                    },
                );
            }
            Command::Cancel { channel, tag } => {
                self.consumers.remove(&(*channel, tag.to_string()));
            }
            Command::ChannelDown { channel } => {
                self.consumers.retain(|(c, _), _| c != channel);
                for seq in self.outstanding_on(*channel) {
                    *self.returns.entry(seq).or_default() += 1;
                }
                self.outstanding.retain(|_, (c, _)| c != channel);
                self.gets_waiting.remove(channel);
            }
            Command::Ack { seqs, .. } => {
                for s in seqs {
                    if self.outstanding.remove(s).is_some() {
                        self.ended.insert(*s, "acked");
                    }
                }
            }
            Command::Reject { seqs, requeue, .. } => {
                for s in seqs {
                    if self.outstanding.remove(s).is_some() && *requeue {
                        *self.returns.entry(*s).or_default() += 1;
                    }
                }
            }
            Command::Get { channel, .. } => *self.gets_waiting.entry(*channel).or_default() += 1,
            Command::DeadLettered { done, .. } if !self.deleted => {
                for s in done {
                    self.ended.insert(*s, "dead-lettered");
                }
            }
            Command::Delete { .. } => self.deleted = true,
            _ => {}
        }
        if let Some(key) = &self.active {
            if !self.consumers.contains_key(key) {
                self.active = None;
            }
        }
    }

    fn model_effect(
        &mut self,
        effect: Effect,
        before: &BTreeMap<Seq, (Place, bool)>,
        fresh: Option<Seq>,
    ) -> Result<(), TestCaseError> {
        let known = |seq: Seq| before.contains_key(&seq) || fresh == Some(seq);
        match effect {
            Effect::Store {
                seq,
                message,
                record,
                ..
            } => {
                prop_assert!(known(seq));
                prop_assert!(self.written_ever.insert(seq), "{seq} written twice");
                if let Some(original) = self.originals.get(&seq) {
                    prop_assert_eq!(&message.body, &original.body);
                }
                prop_assert_eq!(record.size, message.body_size());
                self.writes.push_back((seq, message));
            }
            Effect::UpdateIndex { seq, .. } => prop_assert!(self.written_ever.contains(&seq)),
            Effect::Remove { seq } => {
                prop_assert!(
                    self.written_ever.contains(&seq),
                    "remove of unwritten {seq}"
                );
                self.storage.remove(&seq);
                self.writes.retain(|(s, _)| *s != seq);
            }
            Effect::LoadBodies { seqs } => {
                prop_assert!(!seqs.is_empty());
                for seq in seqs {
                    prop_assert!(
                        self.storage.contains_key(&seq),
                        "load of {seq}, which is not stored"
                    );
                    prop_assert!(!self.loads.contains(&seq), "{seq} loaded twice");
                    self.loads.push_back(seq);
                }
            }
            Effect::Deliver {
                channel,
                tag,
                seq,
                message,
                redelivered,
                delivery_count,
                no_ack,
            } => {
                let returns = self.returns.get(&seq).copied().unwrap_or(0);
                prop_assert_eq!(delivery_count, returns);
                prop_assert_eq!(redelivered, returns > 0);
                prop_assert!(known(seq));
                prop_assert_eq!(
                    Some(&message.body),
                    self.originals.get(&seq).map(|m| &m.body)
                );
                prop_assert!(
                    !self.outstanding.contains_key(&seq),
                    "{seq} delivered twice"
                );
                let key = (channel, tag.to_string());
                let consumer = self.consumers.get(&key).cloned();
                prop_assert!(consumer.is_some(), "delivery to unknown consumer {key:?}");
                let consumer = consumer.unwrap_or(ModelConsumer {
                    generation: 0,
                    prefetch: 0,
                    no_ack: false,
                    exclusive: false,
                });
                if self.config.is_single_active_consumer() {
                    prop_assert_eq!(
                        self.active.as_ref(),
                        Some(&key),
                        "delivery to an inactive consumer"
                    );
                }
                prop_assert_eq!(no_ack, consumer.no_ack);
                if consumer.no_ack {
                    prop_assert!(self.ended.insert(seq, "auto-acked").is_none());
                } else {
                    let held = self
                        .outstanding
                        .values()
                        .filter(|(_, g)| *g == Some(consumer.generation))
                        .count();
                    prop_assert!(
                        consumer.prefetch == 0 || held < consumer.prefetch as usize,
                        "prefetch exceeded"
                    );
                    self.outstanding
                        .insert(seq, (channel, Some(consumer.generation)));
                }
            }
            Effect::GetOk {
                channel,
                seq,
                message,
                no_ack,
                redelivered,
                delivery_count,
                message_count,
            } => {
                prop_assert!(known(seq));
                let returns = self.returns.get(&seq).copied().unwrap_or(0);
                prop_assert_eq!(delivery_count, returns);
                prop_assert_eq!(redelivered, returns > 0);
                // What remained then; consumers may have taken more since.
                prop_assert!(message_count >= self.q.stats().ready);
                prop_assert_eq!(
                    Some(&message.body),
                    self.originals.get(&seq).map(|m| &m.body)
                );
                prop_assert!(!self.outstanding.contains_key(&seq));
                self.answer_get(channel)?;
                if no_ack {
                    prop_assert!(self.ended.insert(seq, "got").is_none());
                } else {
                    self.outstanding.insert(seq, (channel, None));
                }
            }
            Effect::GetEmpty { channel } => self.answer_get(channel)?,
            Effect::Confirm { publish } | Effect::Reject { publish } => {
                let confirmed = matches!(effect, Effect::Confirm { .. });
                let slot = self.publishes.entry(publish).or_insert(None);
                prop_assert!(slot.is_none(), "publish {publish} answered twice");
                *slot = Some(confirmed);
            }
            Effect::DeadLetter {
                seq,
                message,
                reason,
                exchange,
                routing_key,
            } => {
                prop_assert!(
                    self.config.dead_letter_exchange.as_deref() == Some(exchange.as_str())
                );
                // A refused dead letter goes out again once its retry time came.
                let expected_key = self
                    .config
                    .dead_letter_routing_key
                    .clone()
                    .unwrap_or_else(|| "rk".into());
                prop_assert_eq!(routing_key, expected_key);
                prop_assert_eq!(message.properties.expiration.clone(), None);
                let Some(FieldValue::Array(deaths)) = message.properties.header("x-death") else {
                    return Err(TestCaseError::fail("no x-death"));
                };
                let first_reason = match deaths.first() {
                    Some(FieldValue::Table(t)) => t
                        .get("reason")
                        .and_then(FieldValue::as_str)
                        .map(str::to_owned),
                    _ => None,
                };
                prop_assert_eq!(first_reason.as_deref(), Some(reason.as_str()));
                if let Some(seq) = seq {
                    prop_assert!(known(seq));
                    prop_assert!(!self.outstanding.contains_key(&seq));
                    prop_assert!(
                        !self.ended.contains_key(&seq),
                        "{seq} dead-lettered after its end"
                    );
                    prop_assert!(
                        !self.dead_letters.contains(&seq),
                        "{seq} dead-lettered twice at once"
                    );
                    self.dead_letters.push_back(seq);
                }
            }
            Effect::ConsumerActive { channel, tag } => {
                let key = (channel, tag.to_string());
                prop_assert!(self.consumers.contains_key(&key));
                prop_assert!(self.config.is_single_active_consumer());
                self.active = Some(key);
            }
            Effect::DeleteQueue { .. } => self.deleted = true,
        }
        Ok(())
    }

    fn answer_get(&mut self, channel: ChannelId) -> Result<(), TestCaseError> {
        let waiting = self.gets_waiting.entry(channel).or_default();
        prop_assert!(*waiting > 0, "get answered that nobody asked on {channel}");
        *waiting -= 1;
        Ok(())
    }

    /// A message left without an observable end: allowed only for discards.
    fn check_silent_removal(
        &self,
        seq: Seq,
        place: Place,
        command: &Command,
        sent_before: &BTreeSet<Seq>,
    ) -> Result<(), TestCaseError> {
        let no_dlx = self.config.dead_letter_exchange.is_none();
        let limited = self.config.max_length.is_some() || self.config.max_length_bytes.is_some();
        let expired = self.expires_at.get(&seq).is_some_and(|&at| at <= self.now);
        // A message given to a channel that never got it (its body was loading) is, to
        // the channel, still in the queue.
        let never_sent = matches!(place, Place::Unacked { .. }) && !sent_before.contains(&seq);
        let place = if never_sent { Place::Ready } else { place };
        let allowed = match place {
            Place::Ready => matches!(command, Command::Purge) || (no_dlx && (expired || limited)),
            Place::Unacked { channel, .. } => {
                no_dlx
                    && match command {
                        Command::Reject { seqs, .. } => seqs.contains(&seq),
                        Command::ChannelDown { channel: c } => {
                            *c == channel
                                && (self.config.delivery_limit.is_some() || limited || expired)
                        }
                        _ => false,
                    }
            }
            Place::DeadLettering(_) => false,
        };
        prop_assert!(
            allowed,
            "{seq} ({place:?}) vanished silently on {command:?}"
        );
        Ok(())
    }

    /// Ends the run: closes every channel, completes all I/O, consumes what is left.
    fn drain(&mut self) -> Result<(), TestCaseError> {
        for channel in 1..4 {
            if !self.deleted {
                self.exec(Command::ChannelDown { channel })?;
            }
        }
        let mut rounds = 0;
        loop {
            rounds += 1;
            prop_assert!(
                rounds < 500,
                "the queue does not drain: {:?}",
                self.q.stats()
            );
            let writes = self.writes.len();
            self.complete_writes(writes)?;
            let loads = self.loads.len();
            self.complete_loads(loads)?;
            let dead_letters = self.dead_letters.len();
            self.answer_dead_letters(dead_letters, false)?;
            if self.deleted {
                if self.writes.is_empty() && self.loads.is_empty() {
                    break;
                }
                continue;
            }
            if !self.consumers.contains_key(&(99, "drain".to_string())) {
                self.exec(Command::Consume {
                    tag: "drain".into(),
                    channel: 99,
                    prefetch: 0,
                    no_ack: false,
                    exclusive: false,
                    priority: 0,
                })?;
            }
            let held = self.outstanding_on(99);
            if !held.is_empty() {
                self.exec(Command::Ack {
                    channel: 99,
                    seqs: held,
                })?;
            }
            if self.q.stats().dead_lettering > 0 && self.dead_letters.is_empty() {
                // Refused dead letters wait for their retry time.
                self.now += DEAD_LETTER_RETRY_MS;
            }
            self.exec(Command::Tick)?;
            let s = self.q.stats();
            if self.deleted {
                continue;
            }
            if self.writes.is_empty()
                && self.loads.is_empty()
                && s.ready == 0
                && s.unacked == 0
                && s.dead_lettering == 0
            {
                prop_assert!(self.q.places().is_empty());
                prop_assert_eq!(s.bytes_in_memory, 0);
                break;
            }
        }
        for seq in self.originals.keys() {
            prop_assert!(
                self.ended.contains_key(seq) || self.deleted,
                "message {seq} unaccounted for"
            );
        }
        for (p, answer) in &self.publishes {
            prop_assert!(answer.is_some(), "publish {p} never answered");
        }
        if !self.deleted {
            prop_assert!(
                self.storage.is_empty(),
                "storage leaks {:?}",
                self.storage.keys().collect::<Vec<_>>()
            );
        }
        for (channel, waiting) in &self.gets_waiting {
            prop_assert!(
                *waiting == 0 || self.deleted,
                "get on {channel} never answered"
            );
        }
        Ok(())
    }
}

proptest! {
    // No regression files: they would land outside this module's directory.
    #![proptest_config(ProptestConfig { cases: ProptestConfig::default().cases.max(512), failure_persistence: None, ..ProptestConfig::default() })]

    /// Random command sequences never panic, keep every invariant, and lose nothing.
    #[test]
    fn random_sequences_keep_invariants_and_lose_nothing(
        config in queue_config(),
        ops in prop::collection::vec(op(), 0..150),
    ) {
        let mut sim = Sim::new(config);
        for op in ops {
            sim.run(op)?;
        }
        sim.drain()?;
    }

    /// Recovery from whatever was stored mid-run gives a consistent queue that
    /// delivers every recovered message.
    #[test]
    fn recovery_from_a_mid_run_snapshot(
        config in queue_config(),
        ops in prop::collection::vec(op(), 0..100),
    ) {
        let mut sim = Sim::new(config.clone());
        for op in ops {
            sim.run(op)?;
        }
        // A crash: only completed writes survive; bodies come from storage.
        let records: Vec<(Seq, IndexRecord)> = sim
            .storage
            .iter()
            .map(|(&seq, m)| (seq, IndexRecord {
                size: m.body_size(),
                priority: m.properties.priority.unwrap_or(0),
                expires_at: None,
                delivery_count: 0,
                redelivered: false,
                persistent: m.properties.is_persistent(),
            }))
            .collect();
        // Recover without limits, so that every survivor must come back.
        let mut config = config;
        config.max_length = None;
        config.max_length_bytes = None;
        let mut fx = Vec::new();
        let mut q = QueueState::recover(config.clone(), records.clone(), sim.now, &mut fx);
        q.check_invariants().map_err(TestCaseError::fail)?;
        let survivors: BTreeSet<Seq> = records
            .iter()
            .filter(|(_, r)| r.persistent && config.durable)
            .map(|(s, _)| *s)
            .collect();
        prop_assert_eq!(q.stats().ready, survivors.len() as u64);
        let removed: BTreeSet<Seq> = fx.iter().filter_map(|e| match e { Effect::Remove { seq } => Some(*seq), _ => None }).collect();
        prop_assert_eq!(removed.len() + survivors.len(), records.len());
        fx.clear();
        let mut cmd = Some(Command::Consume { tag: "r".into(), channel: 1, prefetch: 0, no_ack: true, exclusive: false, priority: 0 });
        let mut delivered = BTreeSet::new();
        for _ in 0..100 {
            let Some(c) = cmd.take() else { break };
            q.apply(c, sim.now, &mut fx).map_err(|e| TestCaseError::fail(e.to_string()))?;
            q.check_invariants().map_err(TestCaseError::fail)?;
            let mut loaded = Vec::new();
            for e in fx.drain(..) {
                match e {
                    Effect::LoadBodies { seqs } => loaded.extend(seqs.into_iter().map(|s| (s, sim.storage[&s].clone()))),
                    Effect::Deliver { seq, redelivered, .. } => {
                        prop_assert!(redelivered);
                        prop_assert!(delivered.insert(seq));
                    }
                    _ => {}
                }
            }
            if !loaded.is_empty() {
                cmd = Some(Command::BodiesLoaded(loaded));
            }
        }
        if !q.is_deleted() {
            prop_assert_eq!(delivered, survivors);
        }
    }
}
