//! Queues whose home is another node, behind the queue-type seam: [`RemoteQueue`]
//! implements the broker's [`Queue`] with messages to that node's queue endpoint, and
//! [`RemoteQueues`] (the broker's [`RemoteReach`]) makes them.
//!
//! Operations with an answer become calls with a timeout, so a node that died silently
//! costs a clear error, never a hang. The sinks of this node's channels that consume
//! from remote queues are kept here ("relays"), and the endpoint hands them the
//! deliveries that come back. Listings ask a node once for all of a vhost's queues it
//! runs, however many of them are listed at the same time.
//!
//! Publishes are sent as `enqueue` is called, so a channel's batches reach the queue's
//! node in the channel's order (ractor_cluster keeps the order of what one node sends
//! another). When somebody waits for a batch's answer (its confirm, or the connection
//! for its credit), only that wait is left for later, to one task per queue node (see
//! [`RemoteQueues::wait_for_answer`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use ractor::concurrency::OneshotReceiver;
use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use warren_actors::delivery::{ChannelId, ChannelSink, QueueEvent};
use warren_actors::error::BrokerError;
use warren_actors::message::SharedMessage;
use warren_actors::queue::{
    ConfirmReply, ConsumeRequest, ConsumerSummary, Credit, Enqueue, EnqueueOutcome, Got, Queue,
    QueueDef, QueueRef, QueueStatus, RemoteReach, Settlement, StreamInfo,
};
use warren_actors::BoxFuture;

use crate::queue_wire::{
    endpoint_of, EndpointMsg, PublishShare, QueueAddress, QueueAnswer, QueueNote, QueueRequest,
};
use crate::wire::Wire;

/// How long a call to another node's queue waits for its answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A channel of this node consuming from a queue on another node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RelayKey {
    /// The queue's home node.
    pub node: Arc<str>,
    /// The queue's vhost.
    pub vhost: String,
    /// The queue's name.
    pub queue: Arc<str>,
    /// The consuming channel, as this node numbers it.
    pub channel: ChannelId,
}

struct Relay {
    sink: ChannelSink,
    /// Its consumers' tags (told they ended if the queue's node goes away).
    tags: HashSet<Arc<str>>,
}

/// The counters of one node's queues of one vhost, by name.
type NodeStatuses = Arc<HashMap<String, QueueStatus>>;
/// Listings waiting for the same node's counters.
type StatusWaiters = Vec<oneshot::Sender<Result<NodeStatuses, BrokerError>>>;

/// A publish batch sent to a queue's node whose answer somebody waits for.
struct Awaited {
    /// The queue's node answers here (the batch's outcomes).
    answer: OneshotReceiver<Wire<Vec<EnqueueOutcome>>>,
    /// When to stop waiting: the call timeout after the batch was sent.
    deadline: Instant,
    /// The publisher's confirm, with what it is told when no answer comes.
    confirm: Option<(ConfirmReply, usize, String)>,
    /// The connection's credit for the batch, given back when the wait ends.
    credit: Option<Credit>,
}

impl Awaited {
    /// Waits for the answer (until the deadline), tells the publisher, gives the
    /// credit back.
    async fn settle(self) {
        let Awaited {
            answer,
            deadline,
            confirm,
            credit,
        } = self;
        let answer = tokio::time::timeout_at(deadline, answer).await;
        if let Some((confirm, count, down)) = confirm {
            let refused = |why: String| vec![EnqueueOutcome::Rejected(why); count];
            let outcomes = match answer {
                Ok(Ok(w)) => w
                    .into_result()
                    .unwrap_or_else(|why| refused(format!("undecodable confirm: {why}"))),
                _ => refused(down),
            };
            let _ = confirm.send(outcomes);
        }
        drop(credit);
    }
}

/// This node's side of every remote queue (cheap to clone).
#[derive(Clone)]
pub struct RemoteQueues {
    inner: Arc<Inner>,
}

struct Inner {
    node: String,
    relays: Mutex<HashMap<RelayKey, Relay>>,
    /// Counters asked of (node, vhost) and not answered yet, with who waits for them.
    asking: Mutex<HashMap<(Arc<str>, String), StatusWaiters>>,
    /// Per queue node, where publish batches go whose answer somebody waits for: to
    /// the task that waits for them (see [`RemoteQueues::wait_for_answer`]).
    answers: Mutex<HashMap<Arc<str>, mpsc::UnboundedSender<Awaited>>>,
}

impl RemoteQueues {
    /// The remote queues of node `node` (this one), with no relay yet.
    pub fn new(node: &str) -> Self {
        RemoteQueues {
            inner: Arc::new(Inner {
                node: node.to_string(),
                relays: Mutex::new(HashMap::new()),
                asking: Mutex::new(HashMap::new()),
                answers: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn relays(&self) -> std::sync::MutexGuard<'_, HashMap<RelayKey, Relay>> {
        self.inner.relays.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sink of a channel of this node for a queue on `key.node`.
    pub fn sink(&self, key: &RelayKey) -> Option<ChannelSink> {
        self.relays().get(key).map(|r| r.sink.clone())
    }

    /// A consumer ended by its queue: forget its tag.
    pub fn consumer_ended(&self, key: &RelayKey, tag: &str) {
        if let Some(r) = self.relays().get_mut(key) {
            r.tags.remove(tag);
        }
    }

    /// The queues' node `node` went away: every consumer of this node on its queues
    /// is told it ended, and their relays are dropped.
    pub fn node_gone(&self, node: &str) {
        let gone: Vec<(RelayKey, Relay)> = {
            let mut relays = self.relays();
            let keys: Vec<RelayKey> = relays
                .keys()
                .filter(|k| &*k.node == node)
                .cloned()
                .collect();
            keys.into_iter()
                .filter_map(|k| relays.remove(&k).map(|r| (k, r)))
                .collect()
        };
        for (key, relay) in gone {
            for tag in relay.tags {
                (relay.sink)(QueueEvent::ConsumerCancelled {
                    tag,
                    reason: format!(
                        "home node '{node}' of queue '{}' in vhost '{}' went down",
                        key.queue, key.vhost
                    ),
                    // A mirrored queue goes on on another node.
                    resumable: true,
                });
            }
        }
    }

    /// The nodes this node has consumers on.
    pub fn relay_nodes(&self) -> HashSet<Arc<str>> {
        self.relays().keys().map(|k| k.node.clone()).collect()
    }

    /// The counters of `node`'s queues of `vhost`: one call however many listings ask
    /// at the same time.
    ///
    /// The call runs in a task of its own, not in the first caller's future: a caller
    /// that stops waiting (a listing whose client went away) must not leave the
    /// others, and every later caller, waiting for an answer nobody asks for. The call
    /// itself ends within [`CALL_TIMEOUT`].
    async fn node_statuses(
        &self,
        node: &Arc<str>,
        vhost: &str,
    ) -> Result<NodeStatuses, BrokerError> {
        let key = (node.clone(), vhost.to_string());
        let (tx, rx) = oneshot::channel();
        let first = {
            let mut asking = self.inner.asking.lock().unwrap_or_else(|p| p.into_inner());
            let waiters = asking.entry(key.clone()).or_default();
            waiters.push(tx);
            waiters.len() == 1
        };
        if first {
            let inner = self.inner.clone();
            tokio::spawn(async move {
                let answer = ask_statuses(&key.0, &key.1).await.map(Arc::new);
                let waiters = inner
                    .asking
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key)
                    .unwrap_or_default();
                for waiter in waiters {
                    let _ = waiter.send(answer.clone());
                }
            });
        }
        rx.await
            .map_err(|_| BrokerError::internal("the node's counters were not asked for"))?
    }

    /// Leaves the wait for the answer to a publish batch already sent to `node` to the
    /// task that waits for that node's answers (started on first use, and again if its
    /// runtime ended it).
    ///
    /// One task per node, not one per batch: a channel that does not use confirms
    /// still waits for every batch's answer, to get its credit back. The task waits
    /// for all of them at once, so a batch answered late (a queue's disk write) does
    /// not hold back the others' answers.
    fn wait_for_answer(&self, node: &Arc<str>, awaited: Awaited) {
        let mut answers = self.inner.answers.lock().unwrap_or_else(|p| p.into_inner());
        let awaited = match answers.get(node) {
            Some(line) => match line.send(awaited) {
                Ok(()) => return,
                Err(mpsc::error::SendError(awaited)) => awaited,
            },
            None => awaited,
        };
        let (line, waiting) = mpsc::unbounded_channel();
        let _ = line.send(awaited);
        answers.insert(node.clone(), line);
        tokio::spawn(wait_for_answers(waiting));
    }
}

/// A node's answers to publish batches: each is waited for (until its deadline) as
/// soon as it is sent, all at once.
async fn wait_for_answers(mut line: mpsc::UnboundedReceiver<Awaited>) {
    let mut waiting = FuturesUnordered::new();
    loop {
        tokio::select! {
            sent = line.recv() => match sent {
                Some(awaited) => waiting.push(awaited.settle()),
                None => break,
            },
            Some(()) = waiting.next(), if !waiting.is_empty() => {}
        }
    }
    while waiting.next().await.is_some() {}
}

impl RemoteReach for RemoteQueues {
    fn queue(&self, vhost: &str, def: &QueueDef) -> QueueRef {
        Arc::new(RemoteQueue {
            name: def.name.as_str().into(),
            node: def.node.as_str().into(),
            vhost: vhost.to_string(),
            def: def.clone(),
            remote: self.clone(),
        })
    }
}

/// Asks `node` for the counters of its queues of `vhost`.
async fn ask_statuses(
    node: &str,
    vhost: &str,
) -> Result<HashMap<String, QueueStatus>, BrokerError> {
    let down =
        || BrokerError::not_found(format!("NOT_FOUND - node '{node}' is down or inaccessible"));
    let endpoint = endpoint_of(node).ok_or_else(down)?;
    match endpoint
        .call(
            |port| EndpointMsg::Stats(vhost.to_string().into(), port),
            Some(CALL_TIMEOUT),
        )
        .await
    {
        Ok(CallResult::Success(w)) => w
            .into_result()
            .map(|v| v.into_iter().collect())
            .map_err(|why| BrokerError::internal(format!("undecodable queue counters: {why}"))),
        _ => Err(down()),
    }
}

/// A queue that runs on another node, as this node's callers hold it.
pub struct RemoteQueue {
    name: Arc<str>,
    node: Arc<str>,
    vhost: String,
    def: QueueDef,
    remote: RemoteQueues,
}

impl RemoteQueue {
    fn down(&self) -> BrokerError {
        BrokerError::not_found(format!(
            "NOT_FOUND - home node '{}' of queue '{}' in vhost '{}' is down or inaccessible",
            self.node, self.name, self.vhost
        ))
    }

    fn address(&self) -> QueueAddress {
        QueueAddress {
            from: self.remote.inner.node.clone(),
            vhost: self.vhost.clone(),
            queue: self.name.to_string(),
        }
    }

    fn relay_key(&self, channel: ChannelId) -> RelayKey {
        RelayKey {
            node: self.node.clone(),
            vhost: self.vhost.clone(),
            queue: self.name.clone(),
            channel,
        }
    }

    /// A cast: lost with the node, as a local cast to a stopped actor is.
    fn note(&self, note: QueueNote) {
        if let Some(endpoint) = endpoint_of(&self.node) {
            let _ = endpoint.cast(EndpointMsg::Note((self.address(), note).into()));
        }
    }

    /// Asks the queue's node, turning a timeout or a lost node into 404 "node down".
    async fn ask(&self, request: QueueRequest) -> Result<QueueAnswer, BrokerError> {
        let endpoint = endpoint_of(&self.node).ok_or_else(|| self.down())?;
        ask(endpoint, self.address(), request, self.down()).await
    }
}

/// Asks `endpoint`, turning a timeout or a lost node into `down`.
async fn ask(
    endpoint: ActorRef<EndpointMsg>,
    address: QueueAddress,
    request: QueueRequest,
    down: BrokerError,
) -> Result<QueueAnswer, BrokerError> {
    let result = endpoint
        .call(
            |port| EndpointMsg::Call((address, request).into(), port),
            Some(CALL_TIMEOUT),
        )
        .await;
    match result {
        Ok(CallResult::Success(answer)) => match answer.into_result() {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(e.into()),
            Err(why) => Err(BrokerError::internal(format!(
                "undecodable answer from the queue's node: {why}"
            ))),
        },
        _ => Err(down),
    }
}

fn unexpected(answer: QueueAnswer) -> BrokerError {
    BrokerError::internal(format!(
        "unexpected answer from the queue's node: {answer:?}"
    ))
}

fn done(answer: Result<QueueAnswer, BrokerError>) -> Result<(), BrokerError> {
    match answer? {
        QueueAnswer::Done => Ok(()),
        other => Err(unexpected(other)),
    }
}

fn count(answer: Result<QueueAnswer, BrokerError>) -> Result<u64, BrokerError> {
    match answer? {
        QueueAnswer::Count(n) => Ok(n),
        other => Err(unexpected(other)),
    }
}

impl Queue for RemoteQueue {
    fn def(&self) -> &QueueDef {
        &self.def
    }

    fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn enqueue(&self, batch: Enqueue) {
        let Enqueue {
            messages,
            confirm,
            credit,
        } = batch;
        let count = messages.len();
        let refuse = |confirm: Option<ConfirmReply>| {
            if let Some(confirm) = confirm {
                let why = self.down().to_string();
                let _ = confirm.send(vec![EnqueueOutcome::Rejected(why); count]);
            }
        };
        let Some(endpoint) = endpoint_of(&self.node) else {
            return refuse(confirm);
        };
        let share = PublishShare {
            vhost: self.vhost.clone(),
            queue: self.name.to_string(),
            messages: messages.iter().map(|m| (**m).clone()).collect(),
        };
        if confirm.is_none() && credit.is_none() {
            // Nobody waits: a cast, and nothing else.
            let _ = endpoint.cast(EndpointMsg::Send(share.into()));
            return;
        }
        // Sent now, while the caller holds its order: a channel's batches must reach the
        // queue's node in the order the channel routed them. Only the wait for the
        // answer is left for later.
        let (port, answer) = ractor::concurrency::oneshot();
        let deadline = Instant::now() + CALL_TIMEOUT;
        let publish = EndpointMsg::Publish(share.into(), RpcReplyPort::from((port, CALL_TIMEOUT)));
        if endpoint.cast(publish).is_err() {
            return refuse(confirm);
        }
        let confirm = confirm.map(|confirm| (confirm, count, self.down().to_string()));
        self.remote.wait_for_answer(
            &self.node,
            Awaited {
                answer,
                deadline,
                confirm,
                credit,
            },
        );
    }

    fn consume(&self, request: ConsumeRequest) -> BoxFuture<'_, Result<(), BrokerError>> {
        let key = self.relay_key(request.channel);
        self.remote
            .relays()
            .entry(key.clone())
            .or_insert_with(|| Relay {
                sink: request.sink.clone(),
                tags: HashSet::new(),
            })
            .tags
            .insert(request.tag.clone());
        let asked = if request.arguments.is_empty() && request.qos.channel == 0 {
            QueueRequest::Consume {
                channel: request.channel,
                tag: request.tag.to_string(),
                prefetch: request.prefetch,
                no_ack: request.no_ack,
                exclusive: request.exclusive,
                priority: request.priority,
            }
        } else {
            QueueRequest::ConsumeWith {
                channel: request.channel,
                tag: request.tag.to_string(),
                prefetch: request.prefetch,
                no_ack: request.no_ack,
                exclusive: request.exclusive,
                priority: request.priority,
                arguments: request.arguments.clone(),
                qos: request.qos,
            }
        };
        Box::pin(async move {
            let answer = done(self.ask(asked).await);
            if answer.is_err() {
                self.remote.consumer_ended(&key, &request.tag);
            }
            answer
        })
    }

    fn cancel(&self, channel: ChannelId, tag: Arc<str>) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.remote.consumer_ended(&self.relay_key(channel), &tag);
        let asked = QueueRequest::Cancel {
            channel,
            tag: tag.to_string(),
        };
        Box::pin(async move { done(self.ask(asked).await) })
    }

    fn settle(&self, channel: ChannelId, settlement: Settlement, seqs: Vec<u64>) {
        self.note(QueueNote::Settle {
            channel,
            settlement,
            seqs,
        });
    }

    fn get(
        &self,
        channel: ChannelId,
        no_ack: bool,
    ) -> BoxFuture<'_, Result<Option<Got>, BrokerError>> {
        Box::pin(async move {
            match self.ask(QueueRequest::Get { channel, no_ack }).await? {
                QueueAnswer::Got(got) => Ok(got.map(|got| {
                    let (d, remaining) = *got;
                    (d.into_delivery(self.name.clone()), remaining)
                })),
                other => Err(unexpected(other)),
            }
        })
    }

    fn channel_down(&self, channel: ChannelId) {
        self.remote.relays().remove(&self.relay_key(channel));
        self.note(QueueNote::ChannelDown { channel });
    }

    fn purge(&self) -> BoxFuture<'_, Result<u64, BrokerError>> {
        Box::pin(async move { count(self.ask(QueueRequest::Purge).await) })
    }

    fn delete(&self, if_unused: bool, if_empty: bool) -> BoxFuture<'_, Result<u64, BrokerError>> {
        Box::pin(async move {
            count(
                self.ask(QueueRequest::Delete {
                    if_unused,
                    if_empty,
                })
                .await,
            )
        })
    }

    fn touch(&self) {
        self.note(QueueNote::Touch);
    }

    fn status(&self) -> BoxFuture<'_, Result<QueueStatus, BrokerError>> {
        Box::pin(async move {
            self.remote
                .node_statuses(&self.node, &self.vhost)
                .await?
                .get(&*self.name)
                .cloned()
                .ok_or_else(|| {
                    BrokerError::not_found(format!(
                        "NOT_FOUND - no queue '{}' in vhost '{}' runs on its home node '{}'",
                        self.name, self.vhost, self.node
                    ))
                })
        })
    }

    fn consumers(&self) -> BoxFuture<'_, Result<Vec<ConsumerSummary>, BrokerError>> {
        Box::pin(async move {
            match self.ask(QueueRequest::Consumers).await? {
                QueueAnswer::Consumers(c) => Ok(c),
                other => Err(unexpected(other)),
            }
        })
    }

    fn stream_info(&self) -> BoxFuture<'_, Result<StreamInfo, BrokerError>> {
        Box::pin(async move {
            match self.ask(QueueRequest::StreamInfo).await? {
                QueueAnswer::StreamInfo(info) => Ok(info),
                other => Err(unexpected(other)),
            }
        })
    }

    fn lookup(
        &self,
        key: String,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(u64, SharedMessage)>, BrokerError>> {
        let limit = u32::try_from(limit).unwrap_or(u32::MAX);
        Box::pin(async move {
            match self.ask(QueueRequest::Lookup { key, limit }).await? {
                QueueAnswer::Found(found) => {
                    Ok(found.into_iter().map(|(o, m)| (o, Arc::new(m))).collect())
                }
                other => Err(unexpected(other)),
            }
        })
    }

    fn trace(&self, _channel: ChannelId, _sink: Option<ChannelSink>) -> Result<(), BrokerError> {
        Err(BrokerError::new(
            warren_actors::error::code::NOT_ALLOWED,
            format!(
                "queue '{}' lives on node '{}': attach the shell there to trace it",
                self.name, self.node
            ),
        ))
    }

    fn crash(&self) -> Result<(), BrokerError> {
        let endpoint = endpoint_of(&self.node).ok_or_else(|| self.down())?;
        endpoint
            .cast(EndpointMsg::Note((self.address(), QueueNote::Crash).into()))
            .map_err(|_| self.down())
    }
}

#[cfg(test)]
mod tests {
    //! Against a fake queue endpoint: a local actor in the process group where
    //! [`endpoint_of`] finds a node's endpoint. Each test names its own node.

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use bytes::Bytes;
    use ractor::{Actor, ActorProcessingErr, RpcReplyPort};
    use tokio::sync::watch;
    use tokio::time::Instant;
    use warren_actors::message::Message;
    use warren_actors::queue::{InFlight, QueueStats};

    use super::*;
    use crate::queue_wire::endpoint_group;
    use crate::wire::Wire;

    /// How long a test waits for what must happen at once (real time).
    const WAIT: Duration = Duration::from_secs(5);

    /// What the fake endpoint received.
    #[derive(Clone, Default)]
    struct Seen {
        /// The bodies of every publish, in the order they arrived.
        bodies: Arc<Mutex<Vec<String>>>,
        /// How many times the counters were asked for.
        stats_asked: Arc<AtomicUsize>,
    }

    impl Seen {
        fn bodies(&self) -> Vec<String> {
            self.bodies.lock().unwrap().clone()
        }
    }

    struct FakeEndpoint;

    struct Fake {
        node: String,
        seen: Seen,
        /// Answer publishes (confirmed) at once; otherwise hold their ports, unanswered.
        answer_publishes: bool,
        held: Vec<RpcReplyPort<Wire<Vec<EnqueueOutcome>>>>,
        /// The counters are answered once this is true.
        stats_gate: watch::Receiver<bool>,
    }

    impl Actor for FakeEndpoint {
        type Msg = EndpointMsg;
        type State = Fake;
        type Arguments = Fake;

        async fn pre_start(
            &self,
            myself: ActorRef<EndpointMsg>,
            fake: Fake,
        ) -> Result<Fake, ActorProcessingErr> {
            ractor::pg::join(endpoint_group(&fake.node), vec![myself.get_cell()]);
            Ok(fake)
        }

        async fn handle(
            &self,
            _myself: ActorRef<EndpointMsg>,
            message: EndpointMsg,
            fake: &mut Fake,
        ) -> Result<(), ActorProcessingErr> {
            let record = |share: Wire<PublishShare>| -> usize {
                let share = share.into_result().expect("a publish share");
                let mut bodies = fake.seen.bodies.lock().unwrap();
                for m in &share.messages {
                    bodies.push(String::from_utf8_lossy(&m.body).into_owned());
                }
                share.messages.len()
            };
            match message {
                EndpointMsg::Send(share) => {
                    record(share);
                }
                EndpointMsg::Publish(share, reply) => {
                    let count = record(share);
                    if fake.answer_publishes {
                        let _ = reply.send(vec![EnqueueOutcome::Confirmed; count].into());
                    } else {
                        fake.held.push(reply);
                    }
                }
                EndpointMsg::Stats(_, reply) => {
                    fake.seen.stats_asked.fetch_add(1, Ordering::SeqCst);
                    let mut gate = fake.stats_gate.clone();
                    tokio::spawn(async move {
                        if gate.wait_for(|open| *open).await.is_ok() {
                            let status = QueueStatus {
                                stats: QueueStats {
                                    ready: 7,
                                    ..QueueStats::default()
                                },
                                ..QueueStatus::default()
                            };
                            let _ = reply.send(vec![("q".to_string(), status)].into());
                        }
                    });
                }
                EndpointMsg::Call(..) | EndpointMsg::Note(_) | EndpointMsg::Events(_) => {}
            }
            Ok(())
        }
    }

    /// A fake endpoint for node `node`; counters are answered once the returned
    /// sender says true.
    async fn fake_node(node: &str, answer_publishes: bool) -> (Seen, watch::Sender<bool>) {
        let seen = Seen::default();
        let (gate, stats_gate) = watch::channel(false);
        let fake = Fake {
            node: node.to_string(),
            seen: seen.clone(),
            answer_publishes,
            held: Vec::new(),
            stats_gate,
        };
        Actor::spawn(None, FakeEndpoint, fake)
            .await
            .expect("the fake endpoint starts");
        (seen, gate)
    }

    /// Queue `q` of vhost `/`, homed on `node`, as this node ("here") reaches it
    /// (with the remote queues that made it).
    fn queue_on(node: &str) -> (RemoteQueues, QueueRef) {
        let def = QueueDef {
            name: "q".into(),
            id: 1,
            node: node.into(),
            durable: false,
            owner: None,
            auto_delete: false,
            arguments: Default::default(),
            replicas: Vec::new(),
            founders: Vec::new(),
        };
        let remote = RemoteQueues::new("here");
        let queue = remote.queue("/", &def);
        (remote, queue)
    }

    fn messages(bodies: impl IntoIterator<Item = String>) -> Vec<Arc<Message>> {
        bodies
            .into_iter()
            .map(|b| Arc::new(Message::new("", "q", Bytes::from(b))))
            .collect()
    }

    /// Polls (bounded) until `check` holds.
    async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + WAIT;
        while !check() {
            assert!(
                std::time::Instant::now() < deadline,
                "never happened: {what}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The finding: batches a channel routes one after the other (an AMQP channel's
    /// publishes, which always carry credit) reached the queue's node newest first,
    /// because each was sent by a task of its own and tokio runs the task spawned last
    /// first. One worker thread and batches enqueued from a task make that order
    /// certain, so the test fails every time a batch is sent from a task.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_channels_batches_reach_the_queue_node_in_order() {
        let (seen, _gate) = fake_node("order-node", true).await;
        let (_, queue) = queue_on("order-node");
        let in_flight = InFlight::new();
        let (batches, per_batch) = (20, 3);
        let sent: Vec<String> = (0..batches * per_batch).map(|i| i.to_string()).collect();
        let mut confirms = Vec::new();
        {
            let (queue, in_flight, sent) = (queue.clone(), in_flight.clone(), sent.clone());
            let (tx, rx) = oneshot::channel();
            tokio::spawn(async move {
                let mut confirms = Vec::new();
                for (i, batch) in sent.chunks(per_batch).enumerate() {
                    // Credit only (AMQP without confirms), every fifth with a confirm,
                    // every seventh nobody waits for.
                    let (confirm, rx) = if i % 5 == 4 {
                        let (tx, rx) = oneshot::channel();
                        (Some(tx), Some(rx))
                    } else {
                        (None, None)
                    };
                    let credit = (i % 7 != 6).then(|| in_flight.take(per_batch as u64));
                    confirms.extend(rx);
                    queue.enqueue(Enqueue {
                        messages: messages(batch.iter().cloned()),
                        confirm,
                        credit,
                    });
                }
                let _ = tx.send(confirms);
            });
            confirms.extend(rx.await.expect("the batches were enqueued"));
        }
        eventually("every message reached the queue's node", || {
            seen.bodies().len() == sent.len()
        })
        .await;
        assert_eq!(seen.bodies(), sent, "the order the channel routed them in");
        for confirm in confirms {
            let outcomes = tokio::time::timeout(WAIT, confirm)
                .await
                .expect("a confirm within the wait")
                .expect("a confirm");
            assert_eq!(outcomes, vec![EnqueueOutcome::Confirmed; per_batch]);
        }
        eventually("the credit came back with the answers", || {
            in_flight.bytes() == 0
        })
        .await;
    }

    /// A node that takes publishes and never answers: the publisher is told they were
    /// refused and its credit comes back, after the call timeout (paused time: the
    /// test does not wait for it); a node without an endpoint refuses at once.
    #[tokio::test(start_paused = true)]
    async fn a_silent_node_refuses_the_confirm_and_gives_the_credit_back() {
        let (seen, _gate) = fake_node("silent-node", false).await;
        let (_, queue) = queue_on("silent-node");
        let in_flight = InFlight::new();
        let (confirm, outcomes) = oneshot::channel();
        let started = Instant::now();
        queue.enqueue(Enqueue {
            messages: messages(["a".to_string(), "b".to_string()]),
            confirm: Some(confirm),
            credit: Some(in_flight.take(2)),
        });
        queue.enqueue(Enqueue {
            messages: messages(["c".to_string()]),
            confirm: None,
            credit: Some(in_flight.take(1)),
        });
        let outcomes = tokio::time::timeout(CALL_TIMEOUT * 2, outcomes)
            .await
            .expect("refused within the call timeout")
            .expect("answered");
        assert!(started.elapsed() >= CALL_TIMEOUT, "{:?}", started.elapsed());
        assert_eq!(outcomes.len(), 2);
        assert!(
            outcomes.iter().all(|o| matches!(o,
                EnqueueOutcome::Rejected(why) if why.contains("home node 'silent-node'"))),
            "{outcomes:?}"
        );
        while in_flight.bytes() != 0 {
            tokio::time::timeout(CALL_TIMEOUT, in_flight.answered())
                .await
                .expect("the credit comes back within the call timeout");
        }
        assert_eq!(seen.bodies(), ["a", "b", "c"]);

        let (_, nowhere) = queue_on("no-such-node");
        let (confirm, outcomes) = oneshot::channel();
        nowhere.enqueue(Enqueue {
            messages: messages(["d".to_string()]),
            confirm: Some(confirm),
            credit: Some(in_flight.take(1)),
        });
        assert_eq!(in_flight.bytes(), 0, "no node: the credit is back at once");
        let outcomes = outcomes.await.expect("refused at once");
        assert!(
            matches!(&outcomes[..], [EnqueueOutcome::Rejected(why)] if why.contains("is down")),
            "{outcomes:?}"
        );
    }

    /// The finding: the first listing to ask a node for its counters did the asking in
    /// its own future; when it stopped waiting (its client went away), every later
    /// listing joined a question nobody asked, and waited forever.
    #[tokio::test]
    async fn a_listing_that_stops_waiting_does_not_strand_the_next() {
        let (seen, gate) = fake_node("status-node", true).await;
        let (_, queue) = queue_on("status-node");
        let abandoned = tokio::time::timeout(Duration::from_millis(20), queue.status()).await;
        assert!(
            abandoned.is_err(),
            "the node holds its answer until the gate opens"
        );
        eventually("the node was asked", || {
            seen.stats_asked.load(Ordering::SeqCst) == 1
        })
        .await;
        let next = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.status().await })
        };
        gate.send(true).expect("the fake endpoint is up");
        let status = tokio::time::timeout(WAIT, next)
            .await
            .expect("the next listing is answered")
            .expect("the listing task")
            .expect("the counters");
        assert_eq!(status.stats.ready, 7);
        let again = tokio::time::timeout(WAIT, queue.status())
            .await
            .expect("a later listing is answered")
            .expect("the counters");
        assert_eq!(again.stats.ready, 7);
    }
}
