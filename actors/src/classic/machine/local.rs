//! [`Local`]: the queue's local part — what only the node that runs the queue holds.
//!
//! Where each body is (memory, the page file, redb) and the writes and loads under
//! way; the memory window and this node's allowance beyond it; the publisher confirms
//! waiting for a write; the deliveries the core made whose bodies are still loading;
//! the dead letters on their way to their targets. It carries out the core's
//! [`Out`]s as effects for the shell, and proposes the core ops that only it can know
//! are due: a no-ack delivery went out ([`Op::Sent`]), dead letters are held
//! ([`Op::DeadLettered`]), bodies are lost ([`Op::Lost`]), and which assignments never
//! left ([`Local::unsent`]). A replicated queue would log those proposals; the classic
//! queue applies them at once.
//!
//! Every change of a body goes through [`Local::insert`], [`Local::take`] or
//! [`Local::modify`], which keep the counters and the paged set in step.

use std::cmp::Reverse;
use std::collections::{BTreeSet, VecDeque};

use crate::message::{Message, SharedMessage};

use super::command::{ChannelId, ConsumerTag, PublishId, Seq};
use super::core::{Core, Op, Out};
use super::deadletter::dead_lettered;
use super::effects::{DeadLetterReason, Effect};
use super::entry::{Body, Held, Storage};
use super::fasthash::{IntMap, IntSet};
use super::seqmap::SeqMap;
use super::stats::Tally;

/// How long a dead-letter target that refused a message (full, say) is left alone
/// before the message is republished.
pub const DEAD_LETTER_RETRY_MS: u64 = 1_000;

/// Something for a channel that waits behind a delivery whose body is loading: each
/// channel sees its deliveries and `basic.get` answers in the order the core made them.
#[derive(Clone, Debug)]
pub(crate) enum Pending {
    /// A message given to a consumer (`tag`) or a `basic.get` (`tag` `None`).
    Delivery {
        seq: Seq,
        channel: ChannelId,
        tag: Option<ConsumerTag>,
        no_ack: bool,
        redelivered: bool,
        delivery_count: u32,
    },
    /// A `basic.get` that found nothing.
    GetEmpty { channel: ChannelId },
}

/// The queue's local part. Pure: no I/O, no clock.
#[derive(Clone, Debug, Default)]
pub(crate) struct Local {
    bodies: SeqMap<Body>,
    /// Ready bodies only in storage and not yet asked for, in delivery order: the next
    /// loads ahead.
    paged: BTreeSet<(Reverse<u8>, Seq)>,
    tally: Tally,
    /// Publishes whose confirm waits for the write of their message.
    pending_confirms: IntMap<Seq, PublishId>,
    /// Deliveries and get answers waiting behind a body that is loading, in order.
    pending: VecDeque<Pending>,
    /// The pending deliveries whose body has not been asked for yet, in the same order
    /// (so that asking costs what is asked, not the length of the line).
    to_load: VecDeque<Seq>,
    /// Dead letters whose body has not been asked for yet.
    dead_letter_waiting: VecDeque<Seq>,
    /// Dead letters republished, waiting for their targets to hold them.
    dead_letter_sent: IntSet<Seq>,
    /// Dead letters a target refused, republished again at `dead_letter_retry_at`.
    dead_letter_retry: VecDeque<Seq>,
    dead_letter_retry_at: Option<u64>,
    /// How much memory beyond the window the queue may hold for its consumers (the
    /// node's queue memory); `None`: none, whatever the consumers.
    memory_allowance: Option<u64>,
    /// Messages storage reported missing.
    lost: u64,
    /// Ops for the core that this part found due, applied after the current one.
    proposed: Vec<Op>,
    /// No-ack deliveries that went out during the current step.
    sent: Vec<Seq>,
}

impl Local {
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    pub fn pending_confirms(&self) -> u64 {
        self.pending_confirms.len() as u64
    }

    pub fn lost(&self) -> u64 {
        self.lost
    }

    pub fn set_memory_allowance(&mut self, allowance: Option<u64>) {
        self.memory_allowance = allowance;
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.dead_letter_retry_at
    }

    /// The body of `seq`, where it is.
    pub fn body(&self, seq: Seq) -> Option<&Body> {
        self.bodies.get(seq)
    }

    /// The ops this part found due (and the no-ack deliveries that went out), to be
    /// applied to the core now.
    pub fn take_proposals(&mut self) -> Vec<Op> {
        let mut ops = std::mem::take(&mut self.proposed);
        if !self.sent.is_empty() {
            ops.insert(
                0,
                Op::Sent {
                    seqs: std::mem::take(&mut self.sent),
                },
            );
        }
        ops
    }

    /// Dead letters whose bodies are not in memory (a new leader's): loaded and
    /// republished.
    pub fn dead_letters_to_load(&mut self, seqs: Vec<Seq>) {
        self.dead_letter_waiting.extend(seqs);
    }

    // ----- body bookkeeping: the only places that change bodies ----------------------

    pub fn insert(&mut self, seq: Seq, body: Body) {
        self.tally.add(&body);
        if body.is_paged() {
            self.paged.insert((Reverse(body.priority), seq));
        }
        self.bodies.insert(seq, body);
    }

    fn take(&mut self, seq: Seq) -> Option<Body> {
        let body = self.bodies.remove(seq)?;
        self.tally.sub(&body);
        if body.is_paged() {
            self.paged.remove(&(Reverse(body.priority), seq));
        }
        Some(body)
    }

    fn modify<R>(&mut self, seq: Seq, f: impl FnOnce(&mut Body) -> R) -> Option<R> {
        let body = self.bodies.get_mut(seq)?;
        let was_paged = body.is_paged();
        self.tally.sub(body);
        let r = f(body);
        self.tally.add(body);
        if was_paged != body.is_paged() {
            let key = (Reverse(body.priority), seq);
            if was_paged {
                self.paged.remove(&key);
            } else {
                self.paged.insert(key);
            }
        }
        Some(r)
    }

    // ----- what the core decided ----------------------------------------------------

    /// A message entered the queue: its body is here, in memory, not yet written.
    pub fn enqueued(&mut self, seq: Seq, message: SharedMessage, core: &Core) {
        let priority = core.record(seq).map_or(0, |r| r.priority);
        self.insert(
            seq,
            Body {
                size: message.body_size(),
                message: Some(message),
                priority,
                held: Held::Ready,
                storage: Storage::NotStored,
                loading: false,
                page_out: false,
                awaited: false,
            },
        );
    }

    /// Carries out one of the core's decisions.
    pub fn carry_out(&mut self, out: Out, core: &Core, now: u64, effects: &mut Vec<Effect>) {
        match out {
            // Registered by the caller, which holds the op's message.
            Out::Enqueued { .. } => {}
            Out::Checkout {
                seq,
                channel,
                tag,
                no_ack,
                redelivered,
                delivery_count,
            } => {
                let pending = Pending::Delivery {
                    seq,
                    channel,
                    tag,
                    no_ack,
                    redelivered,
                    delivery_count,
                };
                // The common case in one change of the body: here, and nothing waits
                // before it, so it goes out now.
                let first_in_line = self.pending.is_empty();
                let taken = self.modify(seq, |b| {
                    b.held = Held::Out;
                    b.page_out = false;
                    match &b.message {
                        Some(_) if first_in_line => take_for_delivery(b, no_ack),
                        _ => {
                            b.awaited = true;
                            None
                        }
                    }
                });
                match taken {
                    Some(Some(message)) => self.emit(pending, message, core, effects),
                    Some(None) => {
                        let absent = self.bodies.get(seq).is_some_and(|b| b.message.is_none());
                        self.pending.push_back(pending);
                        if absent {
                            self.to_load.push_back(seq);
                        }
                    }
                    None => {}
                }
            }
            Out::GetEmpty { channel } => {
                if self.pending.is_empty() {
                    effects.push(Effect::GetEmpty { channel });
                } else {
                    self.pending.push_back(Pending::GetEmpty { channel });
                }
            }
            Out::Returned { seq, recounted } => {
                let awaited = self.modify(seq, |b| {
                    b.held = Held::Ready;
                    std::mem::take(&mut b.awaited)
                });
                if awaited == Some(true) {
                    self.leave_line(seq);
                }
                let stored = self
                    .bodies
                    .get(seq)
                    .is_some_and(|b| b.storage != Storage::NotStored);
                if recounted && stored {
                    if let Some(record) = core.record(seq) {
                        effects.push(Effect::UpdateIndex {
                            seq,
                            record: record.index(),
                        });
                    }
                }
            }
            Out::Left { seq } => self.left(seq, effects),
            Out::DeadLetter { seq, reason } => {
                let resident = self.modify(seq, |b| {
                    b.held = Held::Leaving(reason);
                    b.page_out = false;
                    let awaited = std::mem::take(&mut b.awaited);
                    (b.message.clone(), b.loading, awaited)
                });
                if resident.as_ref().is_some_and(|r| r.2) {
                    self.leave_line(seq);
                }
                match resident {
                    Some((Some(message), _, _)) => {
                        self.send_dead_letter(seq, &message, reason, core, now, effects)
                    }
                    Some((None, false, _)) => self.dead_letter_waiting.push_back(seq),
                    _ => {}
                }
            }
            Out::DeadLetterRefused { message, reason } => {
                emit_dead_letter(None, &message, reason, core, now, effects)
            }
            Out::ConsumerActive { channel, tag } => {
                effects.push(Effect::ConsumerActive { channel, tag })
            }
            Out::DeleteQueue { reason } => {
                effects.push(Effect::DeleteQueue { reason });
                self.deleted(effects);
            }
        }
    }

    /// A message left the queue: its stored copy goes, its publisher is answered.
    fn left(&mut self, seq: Seq, effects: &mut Vec<Effect>) {
        let Some(body) = self.take(seq) else {
            return;
        };
        if body.awaited {
            self.leave_line(seq);
        }
        if matches!(body.held, Held::Leaving(_)) {
            self.dead_letter_sent.remove(&seq);
            self.dead_letter_retry.retain(|&s| s != seq);
        }
        if body.storage != Storage::NotStored {
            effects.push(Effect::Remove { seq });
        }
        if let Some(publish) = self.pending_confirms.remove(&seq) {
            effects.push(Effect::Confirm { publish });
        }
    }

    /// The queue was deleted: its publishers are answered (the messages were accepted;
    /// deleting the queue drops them, as RabbitMQ does), waiting gets find it empty,
    /// deliveries still loading are dropped with their consumers.
    pub fn deleted(&mut self, effects: &mut Vec<Effect>) {
        let mut confirms: Vec<(Seq, PublishId)> = self.pending_confirms.drain().collect();
        confirms.sort_unstable();
        effects.extend(
            confirms
                .into_iter()
                .map(|(_, publish)| Effect::Confirm { publish }),
        );
        self.to_load.clear();
        for pending in std::mem::take(&mut self.pending) {
            match pending {
                Pending::Delivery {
                    seq,
                    tag: None,
                    channel,
                    ..
                } => {
                    self.modify(seq, |b| b.awaited = false);
                    effects.push(Effect::GetEmpty { channel });
                }
                Pending::Delivery { seq, .. } => {
                    self.modify(seq, |b| b.awaited = false);
                }
                Pending::GetEmpty { channel } => effects.push(Effect::GetEmpty { channel }),
            }
        }
    }

    /// A delivery waiting for its body is no longer to be sent: the message left the
    /// queue (its body lost, say), went back to ready, or is being dead-lettered. A
    /// `basic.get` waiting for it is answered empty in its place in the line.
    fn leave_line(&mut self, seq: Seq) {
        self.pending.retain_mut(|p| match p {
            Pending::Delivery {
                seq: s,
                tag: None,
                channel,
                ..
            } if *s == seq => {
                *p = Pending::GetEmpty { channel: *channel };
                true
            }
            Pending::Delivery { seq: s, .. } => *s != seq,
            Pending::GetEmpty { .. } => true,
        });
        self.to_load.retain(|&s| s != seq);
    }

    /// The assignments of `channel` (of its consumer `tag` only, when given) that never
    /// reached it: they leave the pending line and go back to ready with no redelivery
    /// counted. What a `Cancel` or `ChannelDown` op carries.
    pub fn unsent(&mut self, channel: ChannelId, tag: Option<&str>) -> Vec<Seq> {
        let mut unsent = Vec::new();
        self.pending.retain(|p| match p {
            Pending::Delivery {
                seq,
                channel: c,
                tag: t,
                ..
            } if *c == channel && (tag.is_none() || t.as_deref() == tag) => {
                unsent.push(*seq);
                false
            }
            // Nobody is left to answer on a closed channel.
            Pending::GetEmpty { channel: c } => !(tag.is_none() && *c == channel),
            _ => true,
        });
        for &seq in &unsent {
            self.modify(seq, |b| {
                b.held = Held::Ready;
                b.awaited = false;
            });
        }
        // Taken again later, they queue again at the back, in the new order.
        if !unsent.is_empty() {
            let gone: IntSet<Seq> = unsent.iter().copied().collect();
            self.to_load.retain(|s| !gone.contains(s));
        }
        unsent
    }

    /// Hands a delivery whose body is here to the shell.
    fn send(&mut self, pending: Pending, core: &Core, effects: &mut Vec<Effect>) {
        match pending {
            Pending::GetEmpty { channel } => effects.push(Effect::GetEmpty { channel }),
            Pending::Delivery { seq, no_ack, .. } => {
                let taken = self.modify(seq, |b| {
                    b.awaited = false;
                    take_for_delivery(b, no_ack)
                });
                if let Some(Some(message)) = taken {
                    self.emit(pending, message, core, effects);
                }
            }
        }
    }

    /// The delivery effect of `pending` with its body. A `basic.get` answer counts what
    /// remains ready now; a no-ack delivery is settled once it has gone.
    fn emit(
        &mut self,
        pending: Pending,
        message: SharedMessage,
        core: &Core,
        effects: &mut Vec<Effect>,
    ) {
        let Pending::Delivery {
            seq,
            channel,
            tag,
            no_ack,
            redelivered,
            delivery_count,
        } = pending
        else {
            return;
        };
        effects.push(match tag {
            Some(tag) => Effect::Deliver {
                channel,
                tag,
                seq,
                message,
                redelivered,
                delivery_count,
                no_ack,
            },
            None => Effect::GetOk {
                channel,
                seq,
                message,
                redelivered,
                delivery_count,
                message_count: core.tally().ready,
                no_ack,
            },
        });
        if no_ack {
            self.sent.push(seq);
        }
    }

    /// Sends what waits at the front of the pending line once its body is here.
    pub fn flush_pending(&mut self, core: &Core, effects: &mut Vec<Effect>) {
        while let Some(front) = self.pending.front() {
            let ready = match front {
                Pending::GetEmpty { .. } => true,
                Pending::Delivery { seq, .. } => {
                    self.bodies.get(*seq).is_some_and(|b| b.message.is_some())
                }
            };
            if !ready {
                return;
            }
            if let Some(front) = self.pending.pop_front() {
                self.send(front, core, effects);
            }
        }
    }

    // ----- enqueue: the write, the window --------------------------------------------

    /// After a message entered the queue: written at once if it is persistent on a
    /// durable queue, paged out if the window (and the allowance) overflows, its confirm
    /// sent or held until the write is done.
    pub fn after_enqueue(
        &mut self,
        seq: Seq,
        confirm: Option<PublishId>,
        core: &Core,
        effects: &mut Vec<Effect>,
    ) {
        let Some(body) = self.bodies.get(seq) else {
            // Already gone (delivered without ack, dropped, expired).
            if let Some(publish) = confirm {
                effects.push(Effect::Confirm { publish });
            }
            return;
        };
        let resident_ready = body.is_ready() && body.message.is_some();
        let persistent = core.record(seq).is_some_and(|r| r.persistent);
        if core.config().durable && (persistent || core.config().write_all) {
            self.write(seq, true, core, effects);
        }
        let allowance = self
            .memory_allowance
            .filter(|_| !core.consumers().is_empty());
        if resident_ready && core.config().window.must_page_out(&self.tally, allowance) {
            self.page_out(seq, core, effects);
        }
        // A message being written is confirmed once its write is done: a persistent
        // one when it is durable, a transient one paged out of the window when it has
        // left memory. The second is the queue's back-pressure: a publisher that
        // outruns storage waits for confirms instead of filling the node's memory.
        if let Some(publish) = confirm {
            let writing = self
                .bodies
                .get(seq)
                .is_some_and(|b| b.storage == Storage::Writing);
            if writing {
                self.pending_confirms.insert(seq, publish);
            } else {
                effects.push(Effect::Confirm { publish });
            }
        }
    }

    /// Issues the write of a message not yet written.
    fn write(&mut self, seq: Seq, durable: bool, core: &Core, effects: &mut Vec<Effect>) {
        let Some(record) = core.record(seq).map(|r| r.index()) else {
            return;
        };
        let write = self.modify(seq, |b| {
            let message = b
                .message
                .clone()
                .filter(|_| b.storage == Storage::NotStored)?;
            b.storage = Storage::Writing;
            Some(message)
        });
        if let Some(Some(message)) = write {
            effects.push(Effect::Store {
                seq,
                message,
                record,
                durable,
            });
        }
    }

    /// Moves a ready body out of memory: at once if stored, after its write otherwise.
    fn page_out(&mut self, seq: Seq, core: &Core, effects: &mut Vec<Effect>) {
        self.write(seq, false, core, effects);
        self.modify(seq, |b| {
            if b.storage == Storage::Stored {
                b.message = None;
            } else {
                b.page_out = true;
            }
        });
    }

    // ----- answers from storage and from dead-letter targets --------------------------

    /// Storage confirmed these writes.
    pub fn stored(&mut self, seqs: &[Seq], effects: &mut Vec<Effect>) {
        for &seq in seqs {
            let written = self.modify(seq, |b| {
                if b.storage != Storage::Writing {
                    return false;
                }
                b.storage = Storage::Stored;
                let sent = b.held == Held::Out && !b.awaited;
                if (b.page_out && b.is_ready()) || sent {
                    b.message = None;
                }
                b.page_out = false;
                true
            });
            if written == Some(true) {
                if let Some(publish) = self.pending_confirms.remove(&seq) {
                    effects.push(Effect::Confirm { publish });
                }
            }
        }
    }

    /// Bodies asked of storage arrived.
    pub fn bodies_loaded(
        &mut self,
        bodies: Vec<(Seq, SharedMessage)>,
        core: &Core,
        now: u64,
        effects: &mut Vec<Effect>,
    ) {
        for (seq, message) in bodies {
            let held = self.modify(seq, |b| {
                let wanted = b.message.is_none() && (b.is_ready() || b.awaited || b.loading);
                if wanted {
                    b.message = Some(message.clone());
                    b.loading = false;
                }
                wanted.then_some(b.held)
            });
            if let Some(Some(Held::Leaving(reason))) = held {
                self.send_dead_letter(seq, &message, reason, core, now, effects);
            }
        }
    }

    /// Storage has no body for these: the messages that wait for one are lost.
    pub fn bodies_missing(&mut self, seqs: &[Seq]) {
        let mut lost = Vec::new();
        for &seq in seqs {
            let missing = self
                .bodies
                .get(seq)
                .is_some_and(|b| b.message.is_none() && (b.is_ready() || b.awaited || b.loading));
            if missing {
                self.modify(seq, |b| b.loading = false);
                lost.push(seq);
            }
        }
        if !lost.is_empty() {
            self.lost += lost.len() as u64;
            self.proposed.push(Op::Lost { seqs: lost });
        }
    }

    /// What the targets of dead letters answered: those held leave the queue (an op
    /// for the core), those refused are republished after [`DEAD_LETTER_RETRY_MS`].
    pub fn dead_lettered(&mut self, done: &[Seq], refused: &[Seq], now: u64) {
        let held: Vec<Seq> = done
            .iter()
            .copied()
            .filter(|seq| self.dead_letter_sent.remove(seq))
            .collect();
        if !held.is_empty() {
            self.proposed.push(Op::DeadLettered { seqs: held });
        }
        for &seq in refused {
            if self.dead_letter_sent.remove(&seq) {
                self.dead_letter_retry.push_back(seq);
                let at = now.saturating_add(DEAD_LETTER_RETRY_MS);
                self.dead_letter_retry_at =
                    Some(self.dead_letter_retry_at.map_or(at, |t| t.min(at)));
            }
        }
    }

    /// Republishes a message that leaves for its dead-letter exchange (its body in
    /// hand); it stays until its targets hold it.
    fn send_dead_letter(
        &mut self,
        seq: Seq,
        message: &Message,
        reason: DeadLetterReason,
        core: &Core,
        now: u64,
        effects: &mut Vec<Effect>,
    ) {
        emit_dead_letter(Some(seq), message, reason, core, now, effects);
        self.dead_letter_sent.insert(seq);
    }

    /// Republishes the refused dead letters once their retry time has come.
    pub fn retry_dead_letters(&mut self, core: &Core, now: u64, effects: &mut Vec<Effect>) {
        if self.dead_letter_retry_at.is_none_or(|at| at > now) {
            return;
        }
        self.dead_letter_retry_at = None;
        for seq in std::mem::take(&mut self.dead_letter_retry) {
            let waiting = self
                .bodies
                .get(seq)
                .and_then(|b| match (b.held, &b.message) {
                    (Held::Leaving(reason), Some(message)) => Some((reason, message.clone())),
                    _ => None,
                });
            if let Some((reason, message)) = waiting {
                self.send_dead_letter(seq, &message, reason, core, now, effects);
            }
        }
    }

    // ----- loads ---------------------------------------------------------------------

    /// Asks storage for the bodies that are needed, within the window (see the
    /// `window` module): those of deliveries waiting for them first, then the next
    /// ready ones when consumers will want them, then those of dead letters.
    pub fn pump_loads(&mut self, core: &Core, effects: &mut Vec<Effect>) {
        let window = core.config().window;
        // Those the pending line waits for no longer need a load once their body is
        // here or asked for, or they left the line.
        while let Some(&seq) = self.to_load.front() {
            let needed = self
                .bodies
                .get(seq)
                .is_some_and(|b| b.awaited && b.message.is_none() && !b.loading);
            if needed {
                break;
            }
            self.to_load.pop_front();
        }
        if !self.to_load.is_empty() {
            let front_waits = matches!(
                self.pending.front(),
                Some(Pending::Delivery { seq, .. }) if self.is_absent(*seq)
            );
            let budget = window.delivery_load_budget(&self.tally, front_waits);
            let (mut n, mut bytes, mut seqs) = (0, 0, Vec::new());
            while let Some(&seq) = self.to_load.front() {
                let Some(size) = self
                    .bodies
                    .get(seq)
                    .filter(|b| b.awaited && b.message.is_none() && !b.loading)
                    .map(|b| b.size)
                else {
                    self.to_load.pop_front();
                    continue;
                };
                if !budget.admits(n, bytes, size) {
                    break;
                }
                n += 1;
                bytes = u64::saturating_add(bytes, size);
                seqs.push(seq);
                self.to_load.pop_front();
            }
            self.issue_load(seqs, effects);
        }
        // Consumers without credit count: they will ack, and the window is bounded.
        if !core.consumers().is_empty() && !self.paged.is_empty() {
            let head_absent = core
                .ready_head()
                .and_then(|s| self.bodies.get(s))
                .is_some_and(Body::is_paged);
            if let Some(budget) = window.ready_load_budget(&self.tally, head_absent) {
                let (mut n, mut bytes, mut seqs) = (0, 0, Vec::new());
                for &(_, seq) in &self.paged {
                    let size = self.bodies.get(seq).map_or(0, |b| b.size);
                    if !budget.admits(n, bytes, size) {
                        break;
                    }
                    n += 1;
                    bytes = u64::saturating_add(bytes, size);
                    seqs.push(seq);
                }
                self.issue_load(seqs, effects);
            }
        }
        if !self.dead_letter_waiting.is_empty() {
            let budget = window.dead_letter_load_budget(&self.tally);
            let (mut n, mut bytes, mut seqs) = (0, 0, Vec::new());
            while let Some(&seq) = self.dead_letter_waiting.front() {
                let Some(b) = self.bodies.get(seq) else {
                    self.dead_letter_waiting.pop_front();
                    continue;
                };
                if !matches!(b.held, Held::Leaving(_)) || b.loading || b.message.is_some() {
                    self.dead_letter_waiting.pop_front();
                    continue;
                }
                if !budget.admits(n, bytes, b.size) {
                    break;
                }
                n += 1;
                bytes = u64::saturating_add(bytes, b.size);
                seqs.push(seq);
                self.dead_letter_waiting.pop_front();
            }
            self.issue_load(seqs, effects);
        }
    }

    fn is_absent(&self, seq: Seq) -> bool {
        self.bodies
            .get(seq)
            .is_some_and(|b| b.message.is_none() && !b.loading)
    }

    fn issue_load(&mut self, seqs: Vec<Seq>, effects: &mut Vec<Effect>) {
        if seqs.is_empty() {
            return;
        }
        for &seq in &seqs {
            self.modify(seq, |b| b.loading = true);
        }
        effects.push(Effect::LoadBodies { seqs });
    }
}

/// A body that goes out to a channel: the message for the delivery. An acked
/// delivery's body stays only until it is stored (the consumer has it, and a requeue
/// loads it again); a no-ack one's until the message has left.
fn take_for_delivery(b: &mut Body, no_ack: bool) -> Option<SharedMessage> {
    let message = b.message.clone()?;
    if !no_ack && b.storage == Storage::Stored {
        b.message = None;
    }
    Some(message)
}

/// Pushes the republication of `message` through the queue's dead-letter exchange:
/// with its `x-death` headers, without expiration.
fn emit_dead_letter(
    seq: Option<Seq>,
    message: &Message,
    reason: DeadLetterReason,
    core: &Core,
    now: u64,
    effects: &mut Vec<Effect>,
) {
    let config = core.config();
    let Some(exchange) = config.dead_letter_exchange.clone() else {
        return;
    };
    let routing_key = config
        .dead_letter_routing_key
        .clone()
        .unwrap_or_else(|| message.routing_key.clone());
    let message = dead_lettered(message, reason, &config.name, now, &exchange, &routing_key);
    effects.push(Effect::DeadLetter {
        seq,
        message,
        reason,
        exchange,
        routing_key,
    });
}

#[cfg(test)]
impl Local {
    /// Recomputes the counters and the paged set from the bodies, and checks each body
    /// against the core's record of its message (tests).
    pub fn check_invariants(&self, core: &Core) -> Result<(), String> {
        use super::entry::Place;
        let mut tally = Tally::default();
        let mut paged = BTreeSet::new();
        for (seq, b) in self.bodies.iter() {
            tally.add(b);
            if b.is_paged() {
                paged.insert((Reverse(b.priority), seq));
            }
            let Some(r) = core.record(seq) else {
                return Err(format!("{seq}: a body without a record"));
            };
            let mirrored = matches!(
                (b.held, r.place),
                (Held::Ready, Place::Ready)
                    | (Held::Out, Place::Unacked { .. })
                    | (Held::Leaving(_), Place::DeadLettering(_))
            );
            if !mirrored || b.size != r.size || b.priority != r.priority {
                return Err(format!("{seq}: body {b:?} does not mirror record {r:?}"));
            }
            if b.message.is_none() && b.storage != Storage::Stored {
                return Err(format!("{seq}: body neither in memory nor stored"));
            }
            if b.page_out && !(b.is_ready() && b.storage == Storage::Writing && b.message.is_some())
            {
                return Err(format!("{seq}: page_out on {b:?}"));
            }
            if b.loading && b.message.is_some() {
                return Err(format!("{seq}: loading with its body"));
            }
            if core.is_deleted() {
                continue; // frozen as it was at the delete
            }
            if b.loading && b.held == Held::Out && !b.awaited {
                return Err(format!("{seq}: loading a body already sent"));
            }
            if b.awaited != (b.held == Held::Out && self.is_pending(seq)) {
                return Err(format!(
                    "{seq}: awaited {} but pending {}",
                    b.awaited,
                    self.is_pending(seq)
                ));
            }
            if b.held == Held::Out
                && !b.awaited
                && b.storage == Storage::Stored
                && b.message.is_some()
                && !matches!(r.place, Place::Unacked { no_ack: true, .. })
            {
                return Err(format!("{seq}: sent, stored and still in memory"));
            }
            if let Held::Leaving(_) = b.held {
                let sent = self.dead_letter_sent.contains(&seq);
                let retried = self.dead_letter_retry.contains(&seq);
                if b.message.is_some() != (sent || retried) || (sent && retried) {
                    return Err(format!(
                        "{seq}: dead-lettering, body {} but sent {sent} retried {retried}",
                        b.message.is_some()
                    ));
                }
                if b.message.is_none() && !b.loading && !self.dead_letter_waiting.contains(&seq) {
                    return Err(format!("{seq}: dead-lettering and nobody loads it"));
                }
            }
        }
        for (seq, _) in core.records() {
            if self.bodies.get(seq).is_none() {
                return Err(format!("{seq}: a record without a body"));
            }
        }
        if tally != self.tally {
            return Err(format!("tally {:?} != recomputed {tally:?}", self.tally));
        }
        if paged != self.paged {
            return Err("paged set differs".into());
        }
        for &seq in self.dead_letter_sent.iter().chain(&self.dead_letter_retry) {
            let held = self
                .bodies
                .get(seq)
                .is_some_and(|b| matches!(b.held, Held::Leaving(_)) && b.message.is_some());
            if !held {
                return Err(format!(
                    "{seq}: sent or retried as a dead letter, but not held"
                ));
            }
        }
        for seq in self.pending_confirms.keys() {
            if !self
                .bodies
                .get(*seq)
                .is_some_and(|b| b.storage == Storage::Writing)
            {
                return Err(format!(
                    "confirm pending for {seq}, which is not being written"
                ));
            }
        }
        if !core.is_deleted() {
            // Liveness: the front of the pending line waits only for a load.
            if let Some(Pending::Delivery { seq, channel, .. }) = self.pending.front() {
                let b = self.bodies.get(*seq).ok_or("pending body missing")?;
                if b.message.is_some() || !b.loading {
                    return Err(format!(
                        "pending {seq} for {channel} is sendable or not loading"
                    ));
                }
            }
            if matches!(self.pending.front(), Some(Pending::GetEmpty { .. })) {
                return Err("a get answer waits for nothing".into());
            }
        }
        let mut line = self.pending.iter().filter_map(|p| match p {
            Pending::Delivery { seq, .. } => Some(*seq),
            Pending::GetEmpty { .. } => None,
        });
        for seq in &self.to_load {
            if !line.any(|s| s == *seq) {
                return Err(format!(
                    "{seq} waits for a load out of the pending line's order"
                ));
            }
        }
        if !self.sent.is_empty() || !self.proposed.is_empty() {
            return Err("proposals left unapplied".into());
        }
        Ok(())
    }

    fn is_pending(&self, seq: Seq) -> bool {
        self.pending
            .iter()
            .any(|p| matches!(p, Pending::Delivery { seq: s, .. } if *s == seq))
    }
}
