//! The conformance suite of the queue-type seam: what every queue type must do, written
//! against [`QueueType`] and [`Queue`] only. The classic queue runs it in this crate's
//! tests; a new type runs it by enabling the `conformance` feature and calling
//! [`run_all`] with its [`Subject`].
//!
//! Each case hosts a fresh queue of the type under a supervisor of its own, talks to it
//! through the seam as a channel would, and checks what a client can see: outcomes,
//! deliveries, counters, errors with their AMQP reply codes. No case sleeps a fixed
//! time; every wait is bounded (a hang is a failure, not a slow pass).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use warren_supervisor::{Strategy, Supervisor, SupervisorHandle, SupervisorSpec};

use crate::delivery::{ChannelId, ChannelSink, QueueDelivery, QueueEvent};
use crate::message::{FieldTable, FieldValue, Message, SharedMessage, PERSISTENT};
use crate::BoxFuture;

use super::{
    ConsumeRequest, DeadLetter, DeadLetterRouter, DeadLettered, Enqueue, EnqueueOutcome, HostEnv,
    Qos, QueueDef, QueueRef, QueueType, Settlement,
};

/// How long any one wait of a case may take before it fails.
const DEADLINE: Duration = Duration::from_secs(20);

/// A queue type under test, and what it runs its queues with.
pub trait Subject: Send + Sync {
    /// The type.
    fn queue_type(&self) -> Arc<dyn QueueType>;
    /// The node's environment for a queue of `vhost`, with `dead_letters` as its
    /// dead-letter router.
    fn env(&self, vhost: &str, dead_letters: Arc<dyn DeadLetterRouter>) -> HostEnv;
    /// The node this test process plays.
    fn node(&self) -> &str;
    /// Whether the type keeps every queue and message, transient or not, with their
    /// delivery state (a mirrored queue writes everything to its log): its queues are
    /// declared durable, a restart keeps the messages a transient queue would lose,
    /// and marks redelivered only those that were delivered.
    fn keeps_everything(&self) -> bool {
        false
    }
    /// Places a new queue as its declaration through a vhost would (the type's
    /// [`QueueType::place`] by default).
    fn place<'a>(&'a self, def: &'a mut QueueDef) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.queue_type()
                .place(def)
                .await
                .map_err(|e| format!("place: {e}"))
        })
    }
}

/// Runs every case; panics with the list of those that failed.
pub async fn run_all(subject: &dyn Subject) {
    let mut failed = Vec::new();
    for (name, case) in cases() {
        if let Err(why) = case(subject).await {
            failed.push(format!("{name}: {why}"));
        }
    }
    assert!(
        failed.is_empty(),
        "conformance failures:\n{}",
        failed.join("\n")
    );
}

type Case = for<'a> fn(&'a dyn Subject) -> BoxFuture<'a, Result<(), String>>;

fn cases() -> Vec<(&'static str, Case)> {
    vec![
        ("publishes are confirmed and counted", |s| {
            Box::pin(confirms_and_counts(s))
        }),
        ("deliveries come in order and acks remove them", |s| {
            Box::pin(deliveries_in_order(s))
        }),
        ("prefetch bounds what a consumer holds", |s| {
            Box::pin(prefetch_bounds(s))
        }),
        ("a requeue comes back redelivered", |s| {
            Box::pin(requeue_redelivers(s))
        }),
        ("a closed channel's deliveries go to another", |s| {
            Box::pin(channel_down_returns(s))
        }),
        ("cancel stops deliveries and keeps what is held", |s| {
            Box::pin(cancel_keeps_held(s))
        }),
        (
            "get answers in order, empty, and counts what remains",
            |s| Box::pin(get_in_order(s)),
        ),
        ("consumer tags and exclusive use are enforced", |s| {
            Box::pin(consumer_rules(s))
        }),
        ("purge and delete follow their conditions", |s| {
            Box::pin(purge_and_delete(s))
        }),
        ("a deleted queue refuses and cancels its consumers", |s| {
            Box::pin(deleted_queue(s))
        }),
        (
            "dead letters leave only once their targets hold them",
            |s| Box::pin(dead_letters_at_least_once(s)),
        ),
        (
            "a rejected message without a dead-letter exchange is dropped",
            |s| Box::pin(reject_drops(s)),
        ),
        ("declarations are validated and compared", |s| {
            Box::pin(declarations(s))
        }),
        (
            "a crashed queue comes back with its persistent messages",
            |s| Box::pin(crash_recovers(s)),
        ),
        (
            "a settlement from before a restart settles no other message",
            |s| Box::pin(stale_settlement(s)),
        ),
        (
            "a channel closed while its queue restarts leaves no consumer",
            |s| Box::pin(channel_down_during_restart(s)),
        ),
    ]
}

// ----- the harness ---------------------------------------------------------------------

/// A queue of the type under test, running under a supervisor of its own.
struct Hosted {
    queue: QueueRef,
    supervisor: SupervisorHandle,
}

impl Drop for Hosted {
    fn drop(&mut self) {
        self.supervisor.cell().stop(None);
    }
}

/// A fresh name for each queue of the process (ractor's registry is process-global).
fn fresh(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("conf-{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn def(subject: &dyn Subject, name: &str, durable: bool, arguments: FieldTable) -> QueueDef {
    QueueDef {
        name: name.to_string(),
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        node: subject.node().to_string(),
        durable: durable || subject.keeps_everything(),
        owner: None,
        auto_delete: false,
        arguments,
        replicas: Vec::new(),
        founders: Vec::new(),
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1_000_000);

async fn host(
    subject: &dyn Subject,
    def: &QueueDef,
    dead_letters: Arc<dyn DeadLetterRouter>,
) -> Result<Hosted, String> {
    let env = subject.env("/", dead_letters);
    let mut def = def.clone();
    subject.place(&mut def).await?;
    let hosted = subject
        .queue_type()
        .host(&def, &env)
        .map_err(|e| format!("host: {e}"))?;
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .with_intensity(10, Duration::from_secs(10))
        .child(hosted.child);
    let (supervisor, _) = Supervisor::start(format!("sup-{}", def.name), None, spec, None)
        .await
        .map_err(|e| format!("supervisor: {e}"))?;
    Ok(Hosted {
        queue: hosted.queue,
        supervisor: SupervisorHandle::new(supervisor),
    })
}

async fn plain(subject: &dyn Subject, prefix: &str) -> Result<Hosted, String> {
    let name = fresh(prefix);
    host(
        subject,
        &def(subject, &name, false, FieldTable::new()),
        Arc::new(Recorder::holding()),
    )
    .await
}

fn message(body: &str) -> SharedMessage {
    Arc::new(Message::new("", "rk", Bytes::from(body.to_owned())))
}

fn persistent(body: &str) -> SharedMessage {
    let mut m = Message::new("", "rk", Bytes::from(body.to_owned()));
    m.properties.delivery_mode = Some(PERSISTENT);
    Arc::new(m)
}

fn body(d: &QueueDelivery) -> String {
    String::from_utf8_lossy(&d.message.body).into_owned()
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(DEADLINE, f)
        .await
        .map_err(|_| format!("timed out after {DEADLINE:?} waiting for {what}"))
}

/// Publishes `bodies` with confirms and checks every one is confirmed.
async fn publish(queue: &QueueRef, messages: Vec<SharedMessage>) -> Result<(), String> {
    let n = messages.len();
    let (batch, confirmed) = Enqueue::confirmed(messages);
    queue.enqueue(batch);
    let outcomes = within("confirms", confirmed)
        .await?
        .map_err(|_| "the confirm was dropped".to_string())?;
    if outcomes != vec![EnqueueOutcome::Confirmed; n] {
        return Err(format!("outcomes {outcomes:?}"));
    }
    Ok(())
}

async fn ready(queue: &QueueRef) -> Result<u64, String> {
    Ok(queue.status().await.map_err(|e| e.to_string())?.stats.ready)
}

/// Waits until the queue's counters satisfy `ok`.
async fn until_stats(
    queue: &QueueRef,
    what: &str,
    ok: impl Fn(&super::QueueStats) -> bool,
) -> Result<(), String> {
    within(what, async {
        loop {
            if let Ok(s) = queue.status().await {
                if ok(&s.stats) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// A channel as the queue sees it: an id and the events its sink received.
struct Channel {
    id: ChannelId,
    sink: ChannelSink,
    events: UnboundedReceiver<QueueEvent>,
    /// Deliveries received and not yet taken by the case.
    inbox: VecDeque<QueueDelivery>,
}

impl Channel {
    fn new() -> Channel {
        let (tx, events) = unbounded_channel();
        Channel {
            id: crate::delivery::next_channel_id(),
            sink: Arc::new(move |e| {
                let _ = tx.send(e);
            }),
            events,
            inbox: VecDeque::new(),
        }
    }

    async fn consume(&self, queue: &QueueRef, tag: &str, prefetch: u32) -> Result<(), String> {
        queue
            .consume(self.request(tag, prefetch, false))
            .await
            .map_err(|e| format!("consume {tag}: {e}"))
    }

    fn request(&self, tag: &str, prefetch: u32, exclusive: bool) -> ConsumeRequest {
        ConsumeRequest {
            tag: tag.into(),
            channel: self.id,
            sink: self.sink.clone(),
            prefetch,
            no_ack: false,
            exclusive,
            priority: 0,
            origin: None,
            arguments: Default::default(),
            qos: Qos::consumer(prefetch),
            window: 0,
            records: false,
        }
    }

    /// The next `n` deliveries.
    async fn take(&mut self, n: usize) -> Result<Vec<QueueDelivery>, String> {
        let events = &mut self.events;
        let inbox = &mut self.inbox;
        within(&format!("{n} deliveries"), async {
            while inbox.len() < n {
                match events.recv().await {
                    Some(QueueEvent::Deliver(ds)) => inbox.extend(ds),
                    Some(_) => {}
                    None => return,
                }
            }
        })
        .await?;
        if self.inbox.len() < n {
            return Err(format!("only {} deliveries came", self.inbox.len()));
        }
        Ok(self.inbox.drain(..n).collect())
    }

    /// Fails if a delivery arrives within a short while (after everything the queue was
    /// sent so far has been handled: a status round trip orders it).
    async fn nothing_more(&mut self, queue: &QueueRef) -> Result<(), String> {
        let _ = queue.consumers().await;
        while let Ok(e) = self.events.try_recv() {
            if let QueueEvent::Deliver(ds) = e {
                self.inbox.extend(ds);
            }
        }
        match self.inbox.front() {
            None => Ok(()),
            Some(d) => Err(format!("unexpected delivery {:?}", body(d))),
        }
    }

    /// The next consumer-cancelled event's tag.
    async fn cancelled(&mut self) -> Result<String, String> {
        let events = &mut self.events;
        within("a consumer cancelled", async {
            loop {
                match events.recv().await {
                    Some(QueueEvent::ConsumerCancelled { tag, .. }) => {
                        return Some(tag.to_string())
                    }
                    Some(_) => {}
                    None => return None,
                }
            }
        })
        .await?
        .ok_or_else(|| "the sink closed".to_string())
    }

    fn settle(&self, queue: &QueueRef, how: Settlement, ds: &[QueueDelivery]) {
        queue.settle(self.id, how, ds.iter().map(|d| d.seq).collect());
    }
}

/// A dead-letter router that records what it is sent and answers as told.
struct Recorder {
    refuse_first: AtomicU64,
    seen: Mutex<Vec<DeadLetter>>,
}

impl Recorder {
    fn holding() -> Recorder {
        Recorder {
            refuse_first: AtomicU64::new(0),
            seen: Mutex::new(Vec::new()),
        }
    }

    fn seen(&self) -> Vec<DeadLetter> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl DeadLetterRouter for Recorder {
    fn route(&self, _queue: &str, batch: Vec<DeadLetter>) -> BoxFuture<'static, DeadLettered> {
        let refuse = self
            .refuse_first
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        let seqs: Vec<u64> = batch.iter().filter_map(|d| d.seq).collect();
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(batch);
        let outcome = if refuse {
            DeadLettered {
                done: Vec::new(),
                refused: seqs,
                held_by: Vec::new(),
            }
        } else {
            DeadLettered {
                done: seqs,
                refused: Vec::new(),
                held_by: Vec::new(),
            }
        };
        Box::pin(async move { outcome })
    }
}

// ----- the cases ------------------------------------------------------------------------

async fn confirms_and_counts(s: &dyn Subject) -> Result<(), String> {
    let h = plain(s, "count").await?;
    publish(
        &h.queue,
        (0..5).map(|i| message(&format!("m{i}"))).collect(),
    )
    .await?;
    let status = h.queue.status().await.map_err(|e| e.to_string())?;
    if (status.stats.ready, status.stats.unacked) != (5, 0) {
        return Err(format!("counters {:?}", status.stats));
    }
    // A batch nobody waits for is taken too.
    h.queue.enqueue(Enqueue::unconfirmed(vec![message("m5")]));
    until_stats(&h.queue, "6 ready", |s| s.ready == 6).await
}

async fn deliveries_in_order(s: &dyn Subject) -> Result<(), String> {
    let h = plain(s, "order").await?;
    publish(
        &h.queue,
        (0..20).map(|i| message(&format!("m{i}"))).collect(),
    )
    .await?;
    let mut ch = Channel::new();
    ch.consume(&h.queue, "c", 0).await?;
    let got = ch.take(20).await?;
    let bodies: Vec<String> = got.iter().map(body).collect();
    let expected: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    if bodies != expected {
        return Err(format!("order {bodies:?}"));
    }
    if got.iter().any(|d| d.redelivered || &*d.consumer_tag != "c") {
        return Err("fresh deliveries are not redelivered and carry the tag".into());
    }
    until_stats(&h.queue, "20 unacked", |s| s.unacked == 20).await?;
    ch.settle(&h.queue, Settlement::Ack, &got);
    until_stats(&h.queue, "nothing left", |s| s.unacked == 0 && s.ready == 0).await
}

async fn prefetch_bounds(s: &dyn Subject) -> Result<(), String> {
    let h = plain(s, "prefetch").await?;
    publish(
        &h.queue,
        (0..5).map(|i| message(&format!("m{i}"))).collect(),
    )
    .await?;
    let mut ch = Channel::new();
    ch.consume(&h.queue, "c", 2).await?;
    let first = ch.take(2).await?;
    ch.nothing_more(&h.queue).await?;
    ch.settle(&h.queue, Settlement::Ack, &first[..1]);
    let next = ch.take(1).await?;
    if body(&next[0]) != "m2" {
        return Err(format!("after one ack came {}", body(&next[0])));
    }
    ch.nothing_more(&h.queue).await
}

async fn requeue_redelivers(s: &dyn Subject) -> Result<(), String> {
    let h = plain(s, "requeue").await?;
    publish(&h.queue, vec![message("a"), message("b")]).await?;
    let mut ch = Channel::new();
    ch.consume(&h.queue, "c", 1).await?;
    let a = ch.take(1).await?;
    ch.settle(&h.queue, Settlement::Requeue, &a);
    let again = ch.take(1).await?;
    if body(&again[0]) != "a" || !again[0].redelivered {
        return Err(format!(
            "a requeued head comes back first, redelivered: got {} redelivered={}",
            body(&again[0]),
            again[0].redelivered
        ));
    }
    Ok(())
}

async fn channel_down_returns(s: &dyn Subject) -> Result<(), String> {
    let h = plain(s, "down").await?;
    publish(&h.queue, vec![message("a"), message("b")]).await?;
    let mut first = Channel::new();
    first.consume(&h.queue, "c", 0).await?;
    first.take(2).await?;
    h.queue.channel_down(first.id);
    let mut second = Channel::new();
    second.consume(&h.queue, "c", 0).await?;
    let got = second.take(2).await?;
    let bodies: Vec<String> = got.iter().map(body).collect();
    if bodies != ["a", "b"] || !got.iter().all(|d| d.redelivered) {
        return Err(format!("returned {bodies:?}"));
    }
    Ok(())
}

async fn cancel_keeps_held(s: &dyn Subject) -> Result<(), String> {
    let h = plain(s, "cancel").await?;
    publish(&h.queue, vec![message("a")]).await?;
    let mut ch = Channel::new();
    ch.consume(&h.queue, "c", 0).await?;
    let held = ch.take(1).await?;
    h.queue
        .cancel(ch.id, "nope".into())
        .await
        .map_err(|e| format!("cancelling an unknown tag is not an error: {e}"))?;
    h.queue
        .cancel(ch.id, "c".into())
        .await
        .map_err(|e| e.to_string())?;
    publish(&h.queue, vec![message("b")]).await?;
    ch.nothing_more(&h.queue).await?;
    until_stats(&h.queue, "a held, b ready", |s| {
        s.unacked == 1 && s.ready == 1 && s.consumers == 0
    })
    .await?;
    // What the channel held after the cancel is still its to ack.
    ch.settle(&h.queue, Settlement::Ack, &held);
    until_stats(&h.queue, "a acked", |s| s.unacked == 0).await
}

async fn get_in_order(s: &dyn Subject) -> Result<(), String> {
    let h = plain(s, "get").await?;
    let ch = Channel::new();
    let empty = h.queue.get(ch.id, true).await.map_err(|e| e.to_string())?;
    if empty.is_some() {
        return Err("a get on an empty queue finds nothing".into());
    }
    publish(&h.queue, vec![message("a"), message("b"), message("c")]).await?;
    let (d, remaining) = h
        .queue
        .get(ch.id, false)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("a get finds the head")?;
    if body(&d) != "a" || remaining != 2 {
        return Err(format!("got {} with {remaining} remaining", body(&d)));
    }
    let (d2, remaining) = h
        .queue
        .get(ch.id, true)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("a second get finds the next")?;
    if body(&d2) != "b" || remaining != 1 {
        return Err(format!("got {} with {remaining} remaining", body(&d2)));
    }
    // The first was taken with ack: it is unacked until settled; the second is gone.
    until_stats(&h.queue, "one unacked, one ready", |s| {
        s.unacked == 1 && s.ready == 1
    })
    .await?;
    h.queue.settle(ch.id, Settlement::Ack, vec![d.seq]);
    until_stats(&h.queue, "the get acked", |s| s.unacked == 0).await
}

async fn consumer_rules(s: &dyn Subject) -> Result<(), String> {
    let h = plain(s, "rules").await?;
    let ch = Channel::new();
    ch.consume(&h.queue, "c", 0).await?;
    match h.queue.consume(ch.request("c", 0, false)).await {
        Err(e) if e.code() == 530 => {}
        other => return Err(format!("a reused tag answers 530, got {other:?}")),
    }
    let other = Channel::new();
    match h.queue.consume(other.request("x", 0, true)).await {
        Err(e) if e.code() == 403 => {}
        other => return Err(format!("exclusive with others answers 403, got {other:?}")),
    }
    h.queue
        .cancel(ch.id, "c".into())
        .await
        .map_err(|e| e.to_string())?;
    h.queue
        .consume(other.request("x", 0, true))
        .await
        .map_err(|e| format!("exclusive alone: {e}"))?;
    match h.queue.consume(ch.request("y", 0, false)).await {
        Err(e) if e.code() == 403 => Ok(()),
        other => Err(format!(
            "beside an exclusive consumer answers 403, got {other:?}"
        )),
    }
}

async fn purge_and_delete(s: &dyn Subject) -> Result<(), String> {
    let h = plain(s, "purge").await?;
    publish(
        &h.queue,
        (0..3).map(|i| message(&format!("m{i}"))).collect(),
    )
    .await?;
    match h.queue.delete(false, true).await {
        Err(e) if e.code() == 406 => {}
        other => {
            return Err(format!(
                "if-empty on a full queue answers 406, got {other:?}"
            ))
        }
    }
    let purged = h.queue.purge().await.map_err(|e| e.to_string())?;
    if purged != 3 || ready(&h.queue).await? != 0 {
        return Err(format!("purged {purged}"));
    }
    let ch = Channel::new();
    ch.consume(&h.queue, "c", 0).await?;
    match h.queue.delete(true, false).await {
        Err(e) if e.code() == 406 => {}
        other => {
            return Err(format!(
                "if-unused with a consumer answers 406, got {other:?}"
            ))
        }
    }
    let count = h
        .queue
        .delete(false, false)
        .await
        .map_err(|e| e.to_string())?;
    if count != 0 {
        return Err(format!("delete counted {count}"));
    }
    Ok(())
}

async fn deleted_queue(s: &dyn Subject) -> Result<(), String> {
    let h = plain(s, "deleted").await?;
    publish(&h.queue, vec![message("a")]).await?;
    let mut ch = Channel::new();
    ch.consume(&h.queue, "c", 0).await?;
    ch.take(1).await?;
    let count = h
        .queue
        .delete(false, false)
        .await
        .map_err(|e| e.to_string())?;
    if count != 0 {
        return Err(format!(
            "the message was unacked, not ready: counted {count}"
        ));
    }
    if ch.cancelled().await? != "c" {
        return Err("the consumer is told it was cancelled".into());
    }
    let (batch, confirmed) = Enqueue::confirmed(vec![message("late")]);
    h.queue.enqueue(batch);
    let outcomes = within("the late publish", confirmed)
        .await?
        .unwrap_or_default();
    if outcomes
        .first()
        .is_some_and(|o| *o == EnqueueOutcome::Confirmed)
    {
        return Err("a deleted queue does not take publishes".into());
    }
    match h.queue.consume(ch.request("d", 0, false)).await {
        Err(e) if e.code() == 404 => Ok(()),
        other => Err(format!(
            "consuming from a deleted queue answers 404, got {other:?}"
        )),
    }
}

async fn dead_letters_at_least_once(s: &dyn Subject) -> Result<(), String> {
    let name = fresh("dlx");
    let args = FieldTable::from([(
        "x-dead-letter-exchange".to_string(),
        FieldValue::string("dlx"),
    )]);
    let recorder = Arc::new(Recorder::holding());
    // The first answer of the targets refuses (full, say).
    recorder.refuse_first.store(1, Ordering::Release);
    let h = host(s, &def(s, &name, false, args), recorder.clone()).await?;
    publish(&h.queue, vec![message("doomed")]).await?;
    let mut ch = Channel::new();
    ch.consume(&h.queue, "c", 0).await?;
    let d = ch.take(1).await?;
    ch.settle(&h.queue, Settlement::DeadLetter, &d);
    // Refused once: it stays (dead-lettering) until a retry is held.
    until_stats(&h.queue, "the dead letter held after its retry", |st| {
        st.dead_lettering == 0 && st.unacked == 0 && st.ready == 0
    })
    .await?;
    let seen = recorder.seen();
    if seen.len() < 2 || seen.iter().any(|d| d.exchange != "dlx" || d.seq.is_none()) {
        return Err(format!(
            "refused once, the message is republished again: {} sends",
            seen.len()
        ));
    }
    let deaths = seen[0].message.properties.header("x-death");
    if deaths.is_none() {
        return Err("a dead letter carries x-death".into());
    }
    Ok(())
}

async fn reject_drops(s: &dyn Subject) -> Result<(), String> {
    let h = plain(s, "drop").await?;
    publish(&h.queue, vec![message("a")]).await?;
    let mut ch = Channel::new();
    ch.consume(&h.queue, "c", 0).await?;
    let d = ch.take(1).await?;
    ch.settle(&h.queue, Settlement::DeadLetter, &d);
    until_stats(&h.queue, "the message dropped", |st| {
        st.unacked == 0 && st.ready == 0 && st.dead_lettering == 0
    })
    .await
}

async fn declarations(s: &dyn Subject) -> Result<(), String> {
    let t = s.queue_type();
    let good = def(s, &fresh("decl"), true, FieldTable::new());
    t.validate(&good, "/").map_err(|e| e.to_string())?;
    let bad = def(
        s,
        "bad",
        true,
        FieldTable::from([("x-max-length".to_string(), FieldValue::I64(-1))]),
    );
    match t.validate(&bad, "/") {
        Err(e) if e.code() == 406 => {}
        other => {
            return Err(format!(
                "a negative x-max-length answers 406, got {other:?}"
            ))
        }
    }
    t.check_equivalent(&good, &good, "/")
        .map_err(|e| format!("a queue is equivalent to itself: {e}"))?;
    let transient = QueueDef {
        durable: false,
        ..good.clone()
    };
    match t.check_equivalent(&good, &transient, "/") {
        Err(e) if e.code() == 406 && e.text().contains("durable") => Ok(()),
        other => Err(format!(
            "another durability answers 406 naming it, got {other:?}"
        )),
    }
}

async fn crash_recovers(s: &dyn Subject) -> Result<(), String> {
    let name = fresh("crash");
    let h = host(
        s,
        &def(s, &name, true, FieldTable::new()),
        Arc::new(Recorder::holding()),
    )
    .await?;
    publish(
        &h.queue,
        (0..10).map(|i| persistent(&format!("p{i}"))).collect(),
    )
    .await?;
    h.queue.crash().map_err(|e| e.to_string())?;
    within("the restart", async {
        loop {
            if let Ok(st) = h.queue.status().await {
                if st.restarts >= 1 && st.stats.ready == 10 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await?;
    let mut ch = Channel::new();
    // Right after the restart the queue may still be starting: retry the consume.
    within("a consumer after the restart", async {
        while ch.consume(&h.queue, "c", 0).await.is_err() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await?;
    let got = ch.take(10).await?;
    let bodies: Vec<String> = got.iter().map(body).collect();
    let expected: Vec<String> = (0..10).map(|i| format!("p{i}")).collect();
    if bodies != expected {
        return Err(format!("recovered {bodies:?}"));
    }
    // Never delivered: a type that keeps the delivery state knows it; one that
    // rebuilds from storage cannot, and marks them all redelivered.
    let marked = got.iter().filter(|d| d.redelivered).count();
    if marked != if s.keeps_everything() { 0 } else { 10 } {
        return Err(format!(
            "{marked} of 10 recovered messages marked redelivered"
        ));
    }
    Ok(())
}

/// Crashes the queue and waits until its next incarnation runs.
async fn restart(queue: &QueueRef) -> Result<(), String> {
    let before = queue.status().await.map_err(|e| e.to_string())?.restarts;
    queue.crash().map_err(|e| e.to_string())?;
    within("the restart", async {
        loop {
            if let Ok(st) = queue.status().await {
                if st.restarts > before {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// The counters once everything sent to the queue so far was handled.
async fn settled_stats(queue: &QueueRef) -> Result<super::QueueStats, String> {
    queue.consumers().await.map_err(|e| e.to_string())?;
    Ok(queue.status().await.map_err(|e| e.to_string())?.stats)
}

async fn stale_settlement(s: &dyn Subject) -> Result<(), String> {
    // Nothing of a transient queue is stored: the next incarnation starts empty (and
    // its seqs may start again where the last ones did). A type that keeps everything
    // hands the unacked message out again, redelivered, first.
    let h = plain(s, "stale").await?;
    let mut ch = Channel::new();
    ch.consume(&h.queue, "c", 0).await?;
    publish(&h.queue, vec![message("a")]).await?;
    let old = ch.take(1).await?;
    restart(&h.queue).await?;
    // The consumer is still there for new messages.
    publish(&h.queue, vec![message("b"), message("c")]).await?;
    let expected: &[&str] = if s.keeps_everything() {
        &["a", "b", "c"]
    } else {
        &["b", "c"]
    };
    let new = ch.take(expected.len()).await?;
    let bodies: Vec<String> = new.iter().map(body).collect();
    if bodies != expected {
        return Err(format!("after the restart the consumer got {bodies:?}"));
    }
    if s.keeps_everything() && !new[0].redelivered {
        return Err("the message unacked before the restart comes back redelivered".into());
    }
    // A stale tag of a transient queue's message may name a new message: it settles
    // nothing. One of a type that keeps everything names the same message,
    // redelivered: it settles that one, and no other.
    let stale = usize::from(s.keeps_everything());
    let held = (expected.len() - stale) as u64;
    ch.settle(&h.queue, Settlement::Ack, &old);
    let st = settled_stats(&h.queue).await?;
    if st.unacked != held {
        return Err(format!(
            "the ack of a delivery from before the restart: {} unacked, {held} expected",
            st.unacked
        ));
    }
    // Together with a current one: the current one is settled.
    ch.settle(
        &h.queue,
        Settlement::Ack,
        &[old[0].clone(), new[stale].clone()],
    );
    let st = settled_stats(&h.queue).await?;
    if st.unacked != held - 1 {
        return Err(format!(
            "an ack of a stale and a current delivery left {} unacked, {} expected",
            st.unacked,
            held - 1
        ));
    }
    ch.settle(&h.queue, Settlement::Ack, &new[stale + 1..]);
    until_stats(&h.queue, "everything acked", |st| {
        st.unacked == 0 && st.ready == 0
    })
    .await
}

async fn channel_down_during_restart(s: &dyn Subject) -> Result<(), String> {
    let h = plain(s, "downrestart").await?;
    let mut ch = Channel::new();
    ch.consume(&h.queue, "c", 0).await?;
    // Closed right behind the crash: it reaches the queue while it restarts.
    h.queue.crash().map_err(|e| e.to_string())?;
    h.queue.channel_down(ch.id);
    within("the restart", async {
        while h.queue.status().await.map_or(true, |st| st.restarts == 0) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await?;
    let consumers = within("the consumer list", async {
        loop {
            if let Ok(list) = h.queue.consumers().await {
                return list;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await?;
    if !consumers.is_empty() {
        return Err(format!(
            "the closed channel's consumer came back: {consumers:?}"
        ));
    }
    publish(&h.queue, vec![message("a")]).await?;
    let st = settled_stats(&h.queue).await?;
    if st.ready != 1 || st.unacked != 0 {
        return Err(format!(
            "a message published after the restart: {} ready, {} unacked (1 and 0 expected)",
            st.ready, st.unacked
        ));
    }
    ch.nothing_more(&h.queue).await
}
