//! Queues whose home is another node, behind the queue-type seam: [`RemoteQueue`]
//! implements the broker's [`Queue`] with messages to that node's queue endpoint, and
//! [`RemoteQueues`] (the broker's [`RemoteReach`]) makes them.
//!
//! Operations with an answer become calls with a timeout, so a node that died silently
//! costs a clear error, never a hang. The sinks of this node's channels that consume
//! from remote queues are kept here ("relays"), and the endpoint hands them the
//! deliveries that come back. Listings ask a node once for all of a vhost's queues it
//! runs, however many of them are listed at the same time.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::ActorRef;
use tokio::sync::oneshot;
use warren_actors::delivery::{ChannelId, ChannelSink, QueueEvent};
use warren_actors::error::BrokerError;
use warren_actors::queue::{
    ConsumeRequest, ConsumerSummary, Enqueue, EnqueueOutcome, Got, Queue, QueueDef, QueueRef,
    QueueStatus, RemoteReach, Settlement,
};
use warren_actors::BoxFuture;

use crate::queue_wire::{
    endpoint_of, EndpointMsg, PublishShare, QueueAddress, QueueAnswer, QueueNote, QueueRequest,
};

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
}

impl RemoteQueues {
    /// The remote queues of node `node` (this one), with no relay yet.
    pub fn new(node: &str) -> Self {
        RemoteQueues {
            inner: Arc::new(Inner {
                node: node.to_string(),
                relays: Mutex::new(HashMap::new()),
                asking: Mutex::new(HashMap::new()),
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
            let answer = ask_statuses(node, vhost).await.map(Arc::new);
            let waiters = self
                .inner
                .asking
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key)
                .unwrap_or_default();
            for waiter in waiters {
                let _ = waiter.send(answer.clone());
            }
        }
        rx.await
            .map_err(|_| BrokerError::internal("the node's counters were not asked for"))?
    }
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
        let share = PublishShare {
            vhost: self.vhost.clone(),
            queue: self.name.to_string(),
            messages: messages.iter().map(|m| (**m).clone()).collect(),
        };
        let count = share.messages.len();
        let refused = move |why: String| vec![EnqueueOutcome::Rejected(why); count];
        let endpoint = endpoint_of(&self.node);
        if confirm.is_none() && credit.is_none() {
            if let Some(endpoint) = endpoint {
                let _ = endpoint.cast(EndpointMsg::Send(share.into()));
            }
            return;
        }
        let Some(endpoint) = endpoint else {
            if let Some(confirm) = confirm {
                let _ = confirm.send(refused(self.down().to_string()));
            }
            return;
        };
        // Somebody waits (for outcomes, or for the credit): ask, and answer when the
        // queue's node does. The credit goes back as the task ends.
        let down = self.down();
        tokio::spawn(async move {
            let result = endpoint
                .call(
                    |port| EndpointMsg::Publish(share.into(), port),
                    Some(CALL_TIMEOUT),
                )
                .await;
            let outcomes = match result {
                Ok(CallResult::Success(w)) => w
                    .into_result()
                    .unwrap_or_else(|why| refused(format!("undecodable confirm: {why}"))),
                _ => refused(down.to_string()),
            };
            if let Some(confirm) = confirm {
                let _ = confirm.send(outcomes);
            }
            drop(credit);
        });
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
        let asked = QueueRequest::Consume {
            channel: request.channel,
            tag: request.tag.to_string(),
            prefetch: request.prefetch,
            no_ack: request.no_ack,
            exclusive: request.exclusive,
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
                .ok_or_else(|| self.down())
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
