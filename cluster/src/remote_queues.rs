//! [`RemoteQueues`]: how this node reaches queues whose actors run on other nodes.
//!
//! It implements the broker's [`QueueForwarder`]: a queue message for a remote queue
//! becomes a message to that node's queue endpoint. Messages with an answer become
//! calls with a timeout, so a node that died silently costs a clear error, never a
//! hang. The sinks of this node's channels that consume from remote queues are kept
//! here ("relays"), and the endpoint hands them the deliveries that come back.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::ActorRef;
use warren_actors::delivery::{ChannelId, ChannelSink, QueueEvent};
use warren_actors::error::BrokerError;
use warren_actors::metadata::BoxFuture;
use warren_actors::queue_actor::{EnqueueOutcome, QueueMsg};
use warren_actors::remote::{node_down, QueueForwarder, RemoteQueueStats};

use crate::queue_wire::{
    endpoint_of, EndpointMsg, PublishShare, QueueAddress, QueueAnswer, QueueNote, QueueRequest,
};

/// How long a call to another node's queue waits for its answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A channel of this node consuming from a queue on another node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RelayKey {
    pub node: Arc<str>,
    pub vhost: String,
    pub queue: Arc<str>,
    pub channel: ChannelId,
}

struct Relay {
    sink: ChannelSink,
    /// Its consumers' tags (told they ended if the queue's node goes away).
    tags: HashSet<Arc<str>>,
}

/// This node's side of every remote queue (cheap to clone).
#[derive(Clone)]
pub struct RemoteQueues {
    inner: Arc<Inner>,
}

struct Inner {
    node: String,
    relays: Mutex<HashMap<RelayKey, Relay>>,
}

impl RemoteQueues {
    pub fn new(node: &str) -> Self {
        RemoteQueues {
            inner: Arc::new(Inner {
                node: node.to_string(),
                relays: Mutex::new(HashMap::new()),
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

    fn address(&self, vhost: &str, queue: &str, channel: ChannelId) -> QueueAddress {
        QueueAddress {
            from: self.inner.node.clone(),
            vhost: vhost.to_string(),
            queue: queue.to_string(),
            channel,
        }
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

impl QueueForwarder for RemoteQueues {
    fn forward(&self, node: &str, vhost: &str, queue: &Arc<str>, message: QueueMsg) {
        // Made only where needed: acks and rejects, the frequent casts, never need it.
        let down = || node_down(vhost, queue, node);
        let endpoint = endpoint_of(node);
        let relay_key = |channel| RelayKey {
            node: node.into(),
            vhost: vhost.to_string(),
            queue: queue.clone(),
            channel,
        };
        // Casts: lost with the node, as a local cast to a stopped actor is.
        let note = |channel, note: QueueNote| {
            if let Some(endpoint) = &endpoint {
                let address = self.address(vhost, queue, channel);
                let _ = endpoint.cast(EndpointMsg::Note((address, note).into()));
            }
        };
        match message {
            QueueMsg::Publish { messages, confirm } => {
                let share = PublishShare {
                    vhost: vhost.to_string(),
                    queue: queue.to_string(),
                    messages: messages.iter().map(|m| (**m).clone()).collect(),
                };
                let count = share.messages.len();
                let refused = move |why: String| vec![EnqueueOutcome::Rejected(why); count];
                match (endpoint, confirm) {
                    (Some(endpoint), None) => {
                        let _ = endpoint.cast(EndpointMsg::Send(share.into()));
                    }
                    (None, None) => {}
                    (None, Some(confirm)) => {
                        let _ = confirm.send(refused(down().text));
                    }
                    (Some(endpoint), Some(confirm)) => {
                        let down = down();
                        tokio::spawn(async move {
                            let result = endpoint
                                .call(
                                    |port| EndpointMsg::Publish(share.into(), port),
                                    Some(CALL_TIMEOUT),
                                )
                                .await;
                            let outcomes = match result {
                                Ok(CallResult::Success(w)) => {
                                    w.into_result().unwrap_or_else(|why| {
                                        refused(format!("undecodable confirm: {why}"))
                                    })
                                }
                                _ => refused(down.text),
                            };
                            let _ = confirm.send(outcomes);
                        });
                    }
                }
            }
            QueueMsg::Ack { channel, seqs } => note(channel, QueueNote::Ack(seqs)),
            QueueMsg::Reject {
                channel,
                seqs,
                requeue,
            } => note(channel, QueueNote::Reject { seqs, requeue }),
            QueueMsg::ChannelDown { channel } => {
                self.relays().remove(&relay_key(channel));
                note(channel, QueueNote::ChannelDown)
            }
            QueueMsg::Touch => note(0, QueueNote::Touch),
            QueueMsg::Crash => note(0, QueueNote::Crash),
            QueueMsg::Consume { request, reply } => {
                let key = relay_key(request.channel);
                self.relays()
                    .entry(key.clone())
                    .or_insert_with(|| Relay {
                        sink: request.sink.clone(),
                        tags: HashSet::new(),
                    })
                    .tags
                    .insert(request.tag.clone());
                let address = self.address(vhost, queue, request.channel);
                let asked = QueueRequest::Consume {
                    tag: request.tag.to_string(),
                    prefetch: request.prefetch,
                    no_ack: request.no_ack,
                    exclusive: request.exclusive,
                };
                let this = self.clone();
                answer(endpoint, address, asked, down(), reply, move |a| {
                    if a.is_err() {
                        this.consumer_ended(&key, &request.tag);
                    }
                    done(a)
                });
            }
            QueueMsg::Cancel {
                channel,
                tag,
                reply,
            } => {
                self.consumer_ended(&relay_key(channel), &tag);
                let address = self.address(vhost, queue, channel);
                let asked = QueueRequest::Cancel {
                    tag: tag.to_string(),
                };
                answer(endpoint, address, asked, down(), reply, done);
            }
            QueueMsg::Get {
                channel,
                no_ack,
                reply,
            } => {
                let address = self.address(vhost, queue, channel);
                let queue = queue.clone();
                answer(
                    endpoint,
                    address,
                    QueueRequest::Get { no_ack },
                    down(),
                    reply,
                    move |a| match a? {
                        QueueAnswer::Got(got) => Ok(got.map(|got| {
                            let (d, remaining) = *got;
                            (d.into_delivery(queue), remaining)
                        })),
                        other => Err(unexpected(other)),
                    },
                );
            }
            QueueMsg::Purge { reply } => {
                let address = self.address(vhost, queue, 0);
                answer(endpoint, address, QueueRequest::Purge, down(), reply, count);
            }
            QueueMsg::Delete {
                if_unused,
                if_empty,
                reply,
            } => {
                let address = self.address(vhost, queue, 0);
                let asked = QueueRequest::Delete {
                    if_unused,
                    if_empty,
                };
                answer(endpoint, address, asked, down(), reply, count);
            }
            QueueMsg::Consumers { reply } => {
                let address = self.address(vhost, queue, 0);
                answer(
                    endpoint,
                    address,
                    QueueRequest::Consumers,
                    down(),
                    reply,
                    |a| match a? {
                        QueueAnswer::Consumers(c) => Ok(c),
                        other => Err(unexpected(other)),
                    },
                );
            }
            // The queue actor's own messages never leave its node.
            QueueMsg::Flush | QueueMsg::Stored(_) | QueueMsg::Loaded { .. } | QueueMsg::Tick => {}
        }
    }

    fn stats<'a>(
        &'a self,
        node: &'a str,
        vhost: &'a str,
    ) -> BoxFuture<'a, Result<Vec<RemoteQueueStats>, BrokerError>> {
        Box::pin(async move {
            let down = || {
                BrokerError::not_found(format!("NOT_FOUND - node '{node}' is down or inaccessible"))
            };
            let endpoint = endpoint_of(node).ok_or_else(down)?;
            match endpoint
                .call(
                    |port| EndpointMsg::Stats(vhost.to_string().into(), port),
                    Some(CALL_TIMEOUT),
                )
                .await
            {
                Ok(CallResult::Success(w)) => w.into_result().map_err(|why| {
                    BrokerError::internal(format!("undecodable queue counters: {why}"))
                }),
                _ => Err(down()),
            }
        })
    }
}

/// Asks the endpoint in a task and answers `reply` with `convert` of the answer.
fn answer<T: Send + 'static>(
    endpoint: Option<ActorRef<EndpointMsg>>,
    address: QueueAddress,
    request: QueueRequest,
    down: BrokerError,
    reply: tokio::sync::oneshot::Sender<Result<T, BrokerError>>,
    convert: impl FnOnce(Result<QueueAnswer, BrokerError>) -> Result<T, BrokerError> + Send + 'static,
) {
    let Some(endpoint) = endpoint else {
        let _ = reply.send(convert(Err(down)));
        return;
    };
    tokio::spawn(async move {
        let result = ask(endpoint, address, request, down).await;
        let _ = reply.send(convert(result));
    });
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
