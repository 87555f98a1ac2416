//! [`MirroredQueue`]: a mirrored queue as the callers on a node that holds a replica
//! see it. Everything goes to the node that serves the queue now (the latest `Lead`
//! the group applied here): this node's leader, or the serving node through the
//! cluster, as any remote queue.
//!
//! Consumers of this node's channels (and of nodes without a replica, which reach the
//! queue through its home) keep their subscription when the queue's leader stops or
//! its node goes away: the handle keeps what each consumer asked for, and when the
//! queue ends a consumer with a resumable cancel, the handle consumes again wherever
//! the queue is served by then, instead of passing the cancel on. The new leader hands
//! out what the consumer held again, redelivered. Only a lasting end (the queue was
//! deleted, or no leader could be reached within [`RESUME_WITHIN`]) reaches the
//! channel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use tokio::sync::watch;
use warren_actors::delivery::{ChannelId, ChannelSink, QueueEvent};
use warren_actors::error::{code, BrokerError};
use warren_actors::queue::{
    ConsumeRequest, ConsumerSummary, Enqueue, Got, Queue, QueueDef, QueueRef, QueueStatus,
    RemoteReach, ReplicaProgress, Replication, Settlement,
};
use warren_actors::BoxFuture;
use warren_cluster::membership::DownSet;

use crate::log::{Group, Members};
use crate::machine::Serving;

/// How long a consumer whose leader stopped is tried again before its channel is told
/// it ended.
pub(crate) const RESUME_WITHIN: Duration = Duration::from_secs(60);

/// The first wait between two attempts to consume again (doubled up to
/// [`RESUME_PAUSE_MAX`]).
const RESUME_PAUSE: Duration = Duration::from_millis(20);
const RESUME_PAUSE_MAX: Duration = Duration::from_millis(500);

/// A mirrored queue's handle (see the module documentation).
pub(crate) struct MirroredQueue {
    pub route: Arc<Route>,
}

/// Where a mirrored queue's requests go, and the consumers attached through here.
pub(crate) struct Route {
    pub def: QueueDef,
    pub name: Arc<str>,
    pub vhost: String,
    /// This node's name.
    pub me: String,
    /// Whether this node holds a replica.
    pub place: Place,
    pub remote: Option<Arc<dyn RemoteReach>>,
    /// The handle of the serving node, when that is another one.
    pub elsewhere: ArcSwapOption<(String, QueueRef)>,
    /// The consumers this handle resumes, as their channels asked for them.
    pub attached: Mutex<HashMap<(ChannelId, Arc<str>), ConsumeRequest>>,
}

/// Where a node stands to a mirrored queue.
pub(crate) enum Place {
    /// It holds a replica: requests go to the node the group's latest `Lead` names.
    Member {
        /// This node's leader of the queue (running while this node serves it).
        local: QueueRef,
        /// The node that serves it, as the group's log says.
        serving: Serving,
        /// The queue's group here: its members, and its replication for listings.
        group: Box<Group>,
    },
    /// It holds none: requests go to a member that is up (the first in the list),
    /// which passes them on to the serving node and resumes this node's consumers
    /// there; when that member goes down, they are resumed through another.
    Outside {
        /// The queue's members.
        members: Members,
        /// The nodes this node holds down.
        down: watch::Receiver<DownSet>,
    },
}

impl Place {
    /// Whether node `node` holds a replica.
    fn has_member(&self, node: &str) -> bool {
        match self {
            Place::Member { group, .. } => group.has_member(node),
            Place::Outside { members, .. } => members.borrow().iter().any(|m| m == node),
        }
    }
}

impl Route {
    /// Where requests go now (on every publish: no allocation unless the node it goes
    /// through changed).
    fn target(&self) -> QueueRef {
        match &self.place {
            Place::Member {
                local,
                serving,
                group,
            } => {
                let serving = serving.load();
                match serving.as_deref() {
                    // This node serves (the commonest case: no look at the members).
                    Some(node) if *node == self.me => local.clone(),
                    // (Outside a cluster every request is this node's.)
                    _ if self.remote.is_none() => local.clone(),
                    // Not led yet: where it was declared.
                    None if self.def.node != self.me => self.through(&self.def.node),
                    Some(node) if group.has_member(node) => self.through(node),
                    // Declared here; or served by a node that is no longer a member:
                    // nowhere until a member leads (this node's leader answers
                    // meanwhile), rather than a round trip through that node.
                    _ => local.clone(),
                }
            }
            Place::Outside { members, down } => {
                let (members, down) = (members.borrow(), down.borrow());
                match members
                    .iter()
                    .find(|m| !down.contains(*m))
                    .or(members.first())
                {
                    Some(node) => self.through(node),
                    None => self.through(&self.def.node),
                }
            }
        }
    }

    /// The handle of this queue on node `node` (another one), made once per node.
    fn through(&self, node: &str) -> QueueRef {
        if let Some(known) = &*self.elsewhere.load() {
            if known.0 == node {
                return known.1.clone();
            }
        }
        let def = QueueDef {
            node: node.to_string(),
            ..self.def.clone()
        };
        let queue = match &self.remote {
            Some(remote) => remote.queue(&self.vhost, &def),
            None => unreachable!("a node outside a cluster holds every replica"),
        };
        self.elsewhere
            .store(Some(Arc::new((node.to_string(), queue.clone()))));
        queue
    }

    /// The node that serves the queue, as this node knows it.
    fn serving_node(&self) -> Option<String> {
        match &self.place {
            Place::Member { serving, .. } => serving.load().as_deref().cloned(),
            Place::Outside { .. } => None,
        }
    }

    /// The group's replication, when this node leads it in Raft.
    async fn replication(&self) -> Option<Replication> {
        let Place::Member { group, .. } = &self.place else {
            return None;
        };
        let view = group.replica.view(group.spec.group).await.ok().flatten()?;
        if view.progress.is_empty() {
            return None;
        }
        Some(Replication {
            leader: self.me.clone(),
            term: view.term,
            committed: view.log.committed,
            log_first: view.log.first,
            log_last: view.log.last,
            snapshot: view.log.snapshot,
            members: view
                .progress
                .into_iter()
                .map(|p| ReplicaProgress {
                    node: p.name,
                    matched: p.matched,
                    voter: p.voter,
                })
                .collect(),
        })
    }

    fn attached(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(ChannelId, Arc<str>), ConsumeRequest>> {
        self.attached.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this handle resumes consumer `request`: one of a channel of this node,
    /// or of a node that holds no replica (one that does resumes its own).
    fn resumes(&self, request: &ConsumeRequest) -> bool {
        match &request.origin {
            None => true,
            Some(node) => !self.place.has_member(node),
        }
    }

    /// `request` with a sink that resumes the consumer when the queue ends it
    /// resumably.
    fn resuming(self: &Arc<Route>, request: &ConsumeRequest) -> ConsumeRequest {
        let route = Arc::downgrade(self);
        let (channel, inner) = (request.channel, request.sink.clone());
        let sink: ChannelSink = Arc::new(move |event| match event {
            QueueEvent::ConsumerCancelled {
                tag,
                reason,
                resumable,
            } => {
                let key = (channel, tag.clone());
                let Some(route) = route.upgrade() else {
                    return inner(QueueEvent::ConsumerCancelled {
                        tag,
                        reason,
                        resumable,
                    });
                };
                if resumable && route.attached().contains_key(&key) {
                    tracing::debug!(queue = %route.name, tag = %tag, "the queue's leader stopped ({reason}): consuming again where it is served");
                    tokio::spawn(resume(Arc::downgrade(&route), key));
                } else {
                    route.attached().remove(&key);
                    inner(QueueEvent::ConsumerCancelled {
                        tag,
                        reason,
                        resumable,
                    });
                }
            }
            other => inner(other),
        });
        ConsumeRequest {
            sink,
            ..request.clone()
        }
    }

    /// Ends consumer `key` for good: forgotten, and its channel told why.
    fn end(&self, key: &(ChannelId, Arc<str>), reason: String) {
        tracing::debug!(queue = %self.name, tag = %key.1, "the consumer ends: {reason}");
        if let Some(request) = self.attached().remove(key) {
            (request.sink)(QueueEvent::ConsumerCancelled {
                tag: key.1.clone(),
                reason,
                resumable: false,
            });
        }
    }
}

/// Consumes again for consumer `key`, wherever the queue is served, until it is
/// attached, cancelled meanwhile, or [`RESUME_WITHIN`] has passed. Every failure is
/// tried again (a node that is down answers 404 for its queues); the queue deleted
/// meanwhile drops its handle here, and the consumer is told.
async fn resume(route: Weak<Route>, key: (ChannelId, Arc<str>)) {
    let deadline = Instant::now() + RESUME_WITHIN;
    let mut pause = RESUME_PAUSE;
    let Some(sink) = route
        .upgrade()
        .and_then(|r| r.attached().get(&key).map(|c| c.sink.clone()))
    else {
        return;
    };
    loop {
        let Some(r) = route.upgrade() else {
            sink(QueueEvent::ConsumerCancelled {
                tag: key.1.clone(),
                reason: "the queue was deleted".into(),
                resumable: false,
            });
            return;
        };
        let Some(request) = r.attached().get(&key).cloned() else {
            return; // cancelled, or its channel closed
        };
        let target = r.target();
        match target.consume(r.resuming(&request)).await {
            Ok(()) => {
                if !r.attached().contains_key(&key) {
                    // Cancelled while it attached.
                    let _ = target.cancel(key.0, key.1.clone()).await;
                }
                return;
            }
            // Attached already (a failed leader's next incarnation took it back).
            Err(e) if e.code() == code::NOT_ALLOWED => return,
            Err(e) if Instant::now() >= deadline => {
                r.end(
                    &key,
                    format!(
                        "no leader of the queue could be reached within {RESUME_WITHIN:?}: {e}"
                    ),
                );
                return;
            }
            Err(e) => {
                tracing::debug!(queue = %r.name, tag = %key.1, "consuming again failed, trying again: {e}");
            }
        }
        drop(r);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RESUME_PAUSE_MAX);
    }
}

impl Queue for MirroredQueue {
    fn def(&self) -> &QueueDef {
        &self.route.def
    }

    fn name(&self) -> &Arc<str> {
        &self.route.name
    }

    fn enqueue(&self, batch: Enqueue) {
        self.route.target().enqueue(batch)
    }

    fn consume(&self, request: ConsumeRequest) -> BoxFuture<'_, Result<(), BrokerError>> {
        let route = &self.route;
        let target = route.target();
        let key = (request.channel, request.tag.clone());
        // A tag in use is refused by the queue (the one attached stays as it is).
        let kept = route.resumes(&request) && !route.attached().contains_key(&key);
        let request = if kept {
            route.attached().insert(key.clone(), request.clone());
            route.resuming(&request)
        } else {
            request
        };
        Box::pin(async move {
            let outcome = target.consume(request).await;
            if outcome.is_err() && kept {
                self.route.attached().remove(&key);
            }
            outcome
        })
    }

    fn cancel(&self, channel: ChannelId, tag: Arc<str>) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.route.attached().remove(&(channel, tag.clone()));
        let target = self.route.target();
        Box::pin(async move { target.cancel(channel, tag).await })
    }

    fn settle(&self, channel: ChannelId, settlement: Settlement, seqs: Vec<u64>) {
        self.route.target().settle(channel, settlement, seqs)
    }

    fn get(
        &self,
        channel: ChannelId,
        no_ack: bool,
    ) -> BoxFuture<'_, Result<Option<Got>, BrokerError>> {
        let target = self.route.target();
        Box::pin(async move { target.get(channel, no_ack).await })
    }

    fn channel_down(&self, channel: ChannelId) {
        self.route.attached().retain(|(c, _), _| *c != channel);
        self.route.target().channel_down(channel)
    }

    fn purge(&self) -> BoxFuture<'_, Result<u64, BrokerError>> {
        let target = self.route.target();
        Box::pin(async move { target.purge().await })
    }

    fn delete(&self, if_unused: bool, if_empty: bool) -> BoxFuture<'_, Result<u64, BrokerError>> {
        let target = self.route.target();
        Box::pin(async move {
            // Never led (just declared, or declared and deleted in a log a node
            // replays): nothing to delete, and no leader to wait for. (A member that
            // has not caught up with the log yet knows no leader either: it asks.)
            if let Place::Member { group, serving, .. } = &self.route.place {
                if serving.load().is_none() {
                    let view = group.replica.view(group.spec.group).await.ok().flatten();
                    if view.is_none_or(|v| v.log.last == 0) {
                        return Ok(0);
                    }
                }
            }
            target.delete(if_unused, if_empty).await
        })
    }

    fn touch(&self) {
        self.route.target().touch()
    }

    fn redeclared(&self) -> BoxFuture<'_, Result<(), BrokerError>> {
        let target = self.route.target();
        Box::pin(async move { target.redeclared().await })
    }

    fn status(&self) -> BoxFuture<'_, Result<QueueStatus, BrokerError>> {
        let target = self.route.target();
        Box::pin(async move {
            let mut status = target.status().await?;
            if status.replication.is_none() {
                status.replication = self.route.replication().await;
            }
            status.serving = status.serving.or(self.route.serving_node());
            Ok(status)
        })
    }

    fn consumers(&self) -> BoxFuture<'_, Result<Vec<ConsumerSummary>, BrokerError>> {
        let target = self.route.target();
        Box::pin(async move { target.consumers().await })
    }

    fn trace(&self, channel: ChannelId, sink: Option<ChannelSink>) -> Result<(), BrokerError> {
        self.route.target().trace(channel, sink)
    }

    fn serving_node(&self) -> Option<String> {
        self.route.serving_node()
    }

    fn crash(&self) -> Result<(), BrokerError> {
        self.route.target().crash()
    }
}
