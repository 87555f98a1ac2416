//! Queues whose home is another node, behind the queue-type seam: [`RemoteQueue`]
//! implements the broker's [`Queue`] with items on the queue link to that node (see
//! [`crate::link`]), and [`RemoteQueues`] (the broker's [`RemoteReach`]) makes them and
//! owns this node's links to queue nodes.
//!
//! A link is opened on first use: the queue node's endpoint says where it takes links,
//! and what is sent meanwhile waits in the link's queue, in order. Operations with an
//! answer wait for it with a timeout, so a node that died silently costs a clear
//! error, never a hang; when a link ends, everything still waiting on it is refused
//! at once (confirms as rejected, calls as "node down") and this node's consumers of
//! that node's queues are told they ended. The next use opens a new link.
//!
//! The sinks of this node's channels that consume from remote queues are kept here
//! ("relays"), and deliveries that come back on a link go to them. Listings ask a node
//! once for all of a vhost's queues it runs, however many of them are listed at the
//! same time.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ractor::rpc::CallResult;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;
use warren_actors::delivery::{ChannelId, ChannelSink, QueueEvent};
use warren_actors::error::BrokerError;
use warren_actors::message::SharedMessage;
use warren_actors::queue::{
    ConfirmReply, ConsumeRequest, ConsumerSummary, Credit, Enqueue, EnqueueOutcome, Got, Queue,
    QueueDef, QueueRef, QueueStatus, RemoteReach, Settlement, StreamInfo,
};
use warren_actors::BoxFuture;

use crate::link::{self, LinkOut, HANDSHAKE_TIMEOUT, PING_EVERY};
use crate::link_wire::{ToClient, ToQueue};
use crate::protocol::ErrorReply;
use crate::queue_wire::{endpoint_of, EndpointMsg, QueueAnswer, QueueNote, QueueRequest};

/// How long a call to another node's queue waits for its answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long opening a link may take in all (asking where, dialling, the handshake).
const OPEN_TIMEOUT: Duration = Duration::from_secs(12);
/// After a link failed to open, operations on the node's queues are refused at once
/// for this long before it is tried again.
const REOPEN_AFTER: Duration = Duration::from_secs(1);

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

/// A publish whose answer somebody waits for.
struct Awaited {
    /// When to stop waiting: the call timeout after it was sent.
    deadline: Instant,
    /// The publisher's confirm and how many messages it covers.
    confirm: Option<(ConfirmReply, usize)>,
    /// The connection's credit for the batch, given back when the wait ends.
    _credit: Option<Credit>,
}

impl Awaited {
    /// Tells the publisher its messages were not taken (the credit goes back as it
    /// is dropped).
    fn refuse(self, why: &str) {
        if let Some((confirm, count)) = self.confirm {
            let _ = confirm.send(vec![EnqueueOutcome::Rejected(why.to_string()); count]);
        }
    }
}

/// What waits for an answer on a link.
#[derive(Default)]
struct Waiting {
    calls: CallWaiters,
    publishes: HashMap<u64, Awaited>,
    stats: StatsWaiters,
    /// The link ended: nothing waits on it any more.
    ended: bool,
}

type CallWaiters = HashMap<u64, oneshot::Sender<Result<QueueAnswer, ErrorReply>>>;
type StatsWaiters = HashMap<u64, oneshot::Sender<Vec<(String, QueueStatus)>>>;

impl Waiting {
    fn calls(&mut self) -> &mut CallWaiters {
        &mut self.calls
    }

    fn stats(&mut self) -> &mut StatsWaiters {
        &mut self.stats
    }
}

/// This node's queue link to one queue node.
struct ClientLink {
    node: Arc<str>,
    out: LinkOut<ToQueue>,
    next_id: AtomicU64,
    waiting: Mutex<Waiting>,
    /// Notified to end the link (its node went away).
    close: Notify,
}

impl ClientLink {
    fn waiting(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn down(&self) -> String {
        format!("NOT_FOUND - node '{}' is down or inaccessible", self.node)
    }

    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends an item nobody waits on (lost with the link, as a cast to a dead node).
    fn send(&self, item: ToQueue) {
        let _ = self.out.send(item);
    }

    /// Sends the item `item` makes of a fresh id and waits (at most [`CALL_TIMEOUT`])
    /// for the answer that comes under that id to the waiters `waiters` picks.
    async fn ask<A>(
        &self,
        waiters: fn(&mut Waiting) -> &mut HashMap<u64, oneshot::Sender<A>>,
        item: impl FnOnce(u64) -> ToQueue,
    ) -> Result<A, ()> {
        let id = self.id();
        let (tx, rx) = oneshot::channel();
        {
            let mut waiting = self.waiting();
            if waiting.ended {
                return Err(());
            }
            waiters(&mut waiting).insert(id, tx);
        }
        if self.out.send(item(id)).is_err() {
            waiters(&mut self.waiting()).remove(&id);
            return Err(());
        }
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            _ => {
                waiters(&mut self.waiting()).remove(&id);
                Err(())
            }
        }
    }

    /// Sends a call and waits for its answer.
    async fn call(
        &self,
        vhost: &str,
        queue: &str,
        request: QueueRequest,
    ) -> Result<Result<QueueAnswer, ErrorReply>, ()> {
        let call = |id| ToQueue::Call {
            id,
            vhost: vhost.to_string(),
            queue: queue.to_string(),
            request,
        };
        self.ask(Waiting::calls, call).await
    }

    /// Sends a publish; its answer goes to `awaited` when it comes.
    fn publish(&self, vhost: &str, queue: &str, messages: Vec<SharedMessage>, awaited: Awaited) {
        let id = self.id();
        {
            let mut waiting = self.waiting();
            if waiting.ended {
                drop(waiting);
                return awaited.refuse(&self.down());
            }
            waiting.publishes.insert(id, awaited);
        }
        let publish = ToQueue::Publish {
            id,
            vhost: vhost.to_string(),
            queue: queue.to_string(),
            messages,
        };
        if self.out.send(publish).is_err() {
            let awaited = self.waiting().publishes.remove(&id);
            if let Some(awaited) = awaited {
                awaited.refuse(&self.down());
            }
        }
    }

    /// Asks for the counters of the node's queues of `vhost`.
    async fn stats(&self, vhost: &str) -> Result<Vec<(String, QueueStatus)>, ()> {
        let ask = |id| ToQueue::Stats {
            id,
            vhost: vhost.to_string(),
        };
        self.ask(Waiting::stats, ask).await
    }

    /// Refuses the publishes whose deadline passed.
    fn expire(&self, now: Instant) {
        let late: Vec<Awaited> = {
            let mut waiting = self.waiting();
            let ids: Vec<u64> = waiting
                .publishes
                .iter()
                .filter(|(_, a)| a.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            ids.iter()
                .filter_map(|id| waiting.publishes.remove(id))
                .collect()
        };
        for awaited in late {
            awaited.refuse(&self.down());
        }
    }

    /// The link ended: everything waiting on it is refused.
    fn end(&self) {
        let waiting = std::mem::replace(
            &mut *self.waiting(),
            Waiting {
                ended: true,
                ..Waiting::default()
            },
        );
        let down = self.down();
        for (_, call) in waiting.calls {
            let _ = call.send(Err(ErrorReply {
                code: warren_actors::error::code::NOT_FOUND,
                text: down.clone(),
            }));
        }
        for (_, awaited) in waiting.publishes {
            awaited.refuse(&down);
        }
    }
}

/// This node's side of every remote queue (cheap to clone).
#[derive(Clone)]
pub struct RemoteQueues {
    inner: Arc<Inner>,
}

struct Inner {
    node: String,
    cookie: String,
    relays: Mutex<HashMap<RelayKey, Relay>>,
    /// Counters asked of (node, vhost) and not answered yet, with who waits for them.
    asking: Mutex<HashMap<(Arc<str>, String), StatusWaiters>>,
    /// This node's queue links, by queue node.
    links: Mutex<HashMap<Arc<str>, Arc<ClientLink>>>,
}

impl RemoteQueues {
    /// The remote queues of node `node` (this one), reached over links opened with
    /// the cluster's `cookie`; no link or relay yet.
    pub fn new(node: &str, cookie: &str) -> Self {
        RemoteQueues {
            inner: Arc::new(Inner {
                node: node.to_string(),
                cookie: cookie.to_string(),
                relays: Mutex::new(HashMap::new()),
                asking: Mutex::new(HashMap::new()),
                links: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn relays(&self) -> MutexGuard<'_, HashMap<RelayKey, Relay>> {
        self.inner.relays.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn links(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<ClientLink>>> {
        self.inner.links.lock().unwrap_or_else(|p| p.into_inner())
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

    /// The queues' node `node` went away: its link ends, every consumer of this node
    /// on its queues is told it ended, and their relays are dropped.
    pub fn node_gone(&self, node: &str) {
        let link = self.links().get(node).cloned();
        match link {
            // (Its end cancels the relays.)
            Some(link) => link.close.notify_one(),
            None => self.cancel_relays(node),
        }
    }

    /// Some node's endpoint joined (a node started, or came back): links that failed
    /// to open to nodes whose endpoint is known now are forgotten, so that the next
    /// use opens one at once.
    pub fn nodes_back(&self) {
        for (node, link) in self.links().iter() {
            if link.waiting().ended && endpoint_of(node).is_some() {
                link.close.notify_one();
            }
        }
    }

    fn cancel_relays(&self, node: &str) {
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

    /// The nodes this node has consumers on or links to.
    pub fn relay_nodes(&self) -> HashSet<Arc<str>> {
        let mut nodes: HashSet<Arc<str>> = self.relays().keys().map(|k| k.node.clone()).collect();
        nodes.extend(self.links().keys().cloned());
        nodes
    }

    /// The link to `node`: the one there is, or a new one if the node is known to be
    /// there at all. (A link lives until it breaks or its node leaves the cluster; no
    /// lookup of the node per message.)
    fn existing_or_new_link(&self, node: &Arc<str>) -> Option<Arc<ClientLink>> {
        if let Some(link) = self.links().get(node) {
            return Some(link.clone());
        }
        endpoint_of(node)?;
        Some(self.link(node))
    }

    /// The link to `node`, opened if there is none.
    fn link(&self, node: &Arc<str>) -> Arc<ClientLink> {
        let mut links = self.links();
        if let Some(link) = links.get(node) {
            return link.clone();
        }
        let (out, items) = tokio::sync::mpsc::unbounded_channel();
        let link = Arc::new(ClientLink {
            node: node.clone(),
            out,
            next_id: AtomicU64::new(1),
            waiting: Mutex::new(Waiting::default()),
            close: Notify::new(),
        });
        links.insert(node.clone(), link.clone());
        tokio::spawn(self.clone().run_link(link.clone(), items));
        link
    }

    /// Opens `link` and reads what comes back until it ends; then refuses what still
    /// waits on it and forgets it.
    async fn run_link(
        self,
        link: Arc<ClientLink>,
        items: tokio::sync::mpsc::UnboundedReceiver<ToQueue>,
    ) {
        let opened = tokio::time::timeout(OPEN_TIMEOUT, self.open(&link.node))
            .await
            .unwrap_or_else(|_| Err(format!("opening took over {OPEN_TIMEOUT:?}")));
        match opened {
            Err(why) => {
                tracing::warn!(node = %link.node, "cannot open a queue link: {why}");
                link.end();
                self.cancel_relays(&link.node);
                // A node that is there but cannot be dialled: the ended link stays a
                // moment, so that what comes meanwhile is refused at once instead of
                // dialling again for each operation. (A node whose endpoint is not
                // known is asked again at no cost; one that comes back clears it,
                // see [`RemoteQueues::nodes_back`].)
                if endpoint_of(&link.node).is_some() {
                    tokio::select! {
                        () = tokio::time::sleep(REOPEN_AFTER) => {}
                        () = link.close.notified() => {}
                    }
                }
            }
            Ok(stream) => {
                let peer = stream
                    .peer_addr()
                    .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
                tracing::debug!(node = %link.node, %peer, "queue link open");
                let (read, write) = stream.into_split();
                let writer = link::spawn_writer(write, items, peer);
                let expiry = async {
                    let mut every = tokio::time::interval(PING_EVERY);
                    loop {
                        every.tick().await;
                        link.expire(Instant::now());
                    }
                };
                let why = tokio::select! {
                    why = link::read_items(read, |items| self.arrived(&link, items)) => why,
                    () = expiry => unreachable!("the expiry loop never ends"),
                    () = link.close.notified() => "its node went away".to_string(),
                };
                tracing::info!(node = %link.node, "queue link ended: {why}");
                // Nothing queued after this is written (what waits is refused now),
                // and the connection closes, so the far side ends its half too.
                writer.abort();
                link.end();
                // (While the ended link is still the node's: a consumer that comes
                // back meanwhile is refused, not cancelled by this a moment later.)
                self.cancel_relays(&link.node);
            }
        }
        let mut links = self.links();
        if links.get(&link.node).is_some_and(|l| Arc::ptr_eq(l, &link)) {
            links.remove(&link.node);
        }
    }

    /// Ends every link (the node shuts down).
    pub fn stop(&self) {
        for link in self.links().values() {
            link.close.notify_one();
        }
    }

    /// Asks `node`'s endpoint where it takes links, and opens one there.
    async fn open(&self, node: &str) -> Result<tokio::net::TcpStream, String> {
        let endpoint = endpoint_of(node).ok_or("its queue endpoint is not known here")?;
        let asked = endpoint
            .call(
                |port| EndpointMsg::LinkAddress(self.inner.node.clone().into(), port),
                Some(HANDSHAKE_TIMEOUT),
            )
            .await;
        let address = match asked {
            Ok(CallResult::Success(w)) => w.into_result()?,
            _ => return Err("its queue endpoint did not say where it takes links".into()),
        };
        let address = self.reachable(node, address).await?;
        link::dial(&address, &self.inner.node, &self.inner.cookie)
            .await
            .map_err(|e| format!("{address}: {e}"))
    }

    /// A link address that says "any address" (the node listens on 0.0.0.0) is dialled
    /// at the address the node is a cluster member at; if that says "any address"
    /// too, there is nowhere to dial (dialling 0.0.0.0 would reach this host).
    async fn reachable(&self, node: &str, address: String) -> Result<String, String> {
        let Ok(at) = address.parse::<std::net::SocketAddr>() else {
            return Ok(address);
        };
        if !at.ip().is_unspecified() {
            return Ok(address);
        }
        let members = match crate::membership::MembershipHandle::lookup(&self.inner.node) {
            Some(membership) => membership.status().await.unwrap_or_default(),
            None => Vec::new(),
        };
        members
            .iter()
            .find(|m| m.name == node)
            .and_then(|m| m.address.parse::<std::net::SocketAddr>().ok())
            .filter(|member| !member.ip().is_unspecified())
            .map(|member| std::net::SocketAddr::new(member.ip(), at.port()).to_string())
            .ok_or_else(|| {
                format!(
                    "node '{node}' takes links on {address} and is a member at no \
                     address of its own: give it --link-listen or --cluster-listen \
                     with an address other nodes reach"
                )
            })
    }

    /// What came back on `link`.
    fn arrived(&self, link: &ClientLink, items: Vec<ToClient>) {
        for item in items {
            match item {
                ToClient::Answer { id, answer } => {
                    if let Some(call) = link.waiting().calls.remove(&id) {
                        let _ = call.send(answer);
                    }
                }
                ToClient::Published { id, outcomes } => {
                    let awaited = link.waiting().publishes.remove(&id);
                    if let Some(Awaited {
                        confirm: Some((confirm, _)),
                        ..
                    }) = awaited
                    {
                        let _ = confirm.send(outcomes);
                    }
                }
                ToClient::Stats { id, statuses } => {
                    if let Some(asked) = link.waiting().stats.remove(&id) {
                        let _ = asked.send(statuses);
                    }
                }
                ToClient::Deliver {
                    vhost,
                    queue,
                    channel,
                    deliveries,
                } => {
                    let key = RelayKey {
                        node: link.node.clone(),
                        vhost,
                        queue,
                        channel,
                    };
                    // (None: the channel closed meanwhile; the queue's node hears of
                    // it and takes the deliveries back.)
                    if let Some(sink) = self.sink(&key) {
                        sink(QueueEvent::Deliver(deliveries));
                    }
                }
                ToClient::Records {
                    vhost,
                    channel,
                    run,
                } => {
                    let key = RelayKey {
                        node: link.node.clone(),
                        vhost,
                        queue: run.queue.clone(),
                        channel,
                    };
                    // (None: as for deliveries above.)
                    if let Some(sink) = self.sink(&key) {
                        sink(QueueEvent::Records(run));
                    }
                }
                ToClient::Cancelled {
                    vhost,
                    queue,
                    channel,
                    tag,
                    reason,
                    resumable,
                } => {
                    let key = RelayKey {
                        node: link.node.clone(),
                        vhost,
                        queue,
                        channel,
                    };
                    self.consumer_ended(&key, &tag);
                    if let Some(sink) = self.sink(&key) {
                        sink(QueueEvent::ConsumerCancelled {
                            tag: tag.into(),
                            reason,
                            resumable,
                        });
                    }
                }
                ToClient::Ping => {}
            }
        }
    }

    /// The counters of `node`'s queues of `vhost`: one question however many listings
    /// ask at the same time.
    ///
    /// The question runs in a task of its own, not in the first caller's future: a
    /// caller that stops waiting (a listing whose client went away) must not leave the
    /// others, and every later caller, waiting for an answer nobody asks for. The
    /// question itself ends within [`CALL_TIMEOUT`].
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
            let this = self.clone();
            tokio::spawn(async move {
                let answer = match this.existing_or_new_link(&key.0) {
                    None => Err(BrokerError::not_found(format!(
                        "NOT_FOUND - node '{}' is down or inaccessible",
                        key.0
                    ))),
                    Some(link) => link
                        .stats(&key.1)
                        .await
                        .map(|v| Arc::new(v.into_iter().collect()))
                        .map_err(|()| BrokerError::not_found(link.down())),
                };
                let waiters = this
                    .inner
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

    fn relay_key(&self, channel: ChannelId) -> RelayKey {
        RelayKey {
            node: self.node.clone(),
            vhost: self.vhost.clone(),
            queue: self.name.clone(),
            channel,
        }
    }

    /// The link to the queue's node.
    fn link(&self) -> Option<Arc<ClientLink>> {
        self.remote.existing_or_new_link(&self.node)
    }

    /// An operation without an answer: lost with the node, as a local cast to a
    /// stopped actor is.
    fn note(&self, note: QueueNote) {
        if let Some(link) = self.link() {
            link.send(ToQueue::Note {
                vhost: self.vhost.clone(),
                queue: self.name.to_string(),
                note,
            });
        }
    }

    /// Asks the queue's node, turning a timeout or a lost node into 404 "node down".
    async fn ask(&self, request: QueueRequest) -> Result<QueueAnswer, BrokerError> {
        let link = self.link().ok_or_else(|| self.down())?;
        match link.call(&self.vhost, &self.name, request).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(e.into()),
            Err(()) => Err(self.down()),
        }
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
        let Some(link) = self.link() else {
            if let Some(confirm) = confirm {
                let why = self.down().to_string();
                let _ = confirm.send(vec![EnqueueOutcome::Rejected(why); count]);
            }
            return;
        };
        if confirm.is_none() && credit.is_none() {
            // Nobody waits: no answer is asked for.
            return link.send(ToQueue::Publish {
                id: 0,
                vhost: self.vhost.clone(),
                queue: self.name.to_string(),
                messages,
            });
        }
        // Sent now, while the caller holds its order: a channel's batches reach the
        // queue's node in the order the channel routed them.
        let awaited = Awaited {
            deadline: Instant::now() + CALL_TIMEOUT,
            confirm: confirm.map(|confirm| (confirm, count)),
            _credit: credit,
        };
        link.publish(&self.vhost, &self.name, messages, awaited);
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
            priority: request.priority,
            arguments: request.arguments.clone(),
            qos: request.qos,
            window: request.window,
            records: request.records,
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

    fn written(&self, channel: ChannelId, tag: Arc<str>, count: u32) {
        self.note(QueueNote::Written {
            channel,
            tag: tag.to_string(),
            count,
        });
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
        let link = self.link().ok_or_else(|| self.down())?;
        link.send(ToQueue::Note {
            vhost: self.vhost.clone(),
            queue: self.name.to_string(),
            note: QueueNote::Crash,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Against a fake queue node: a local actor in the process group where
    //! [`endpoint_of`] finds a node's endpoint, saying where a fake link listener
    //! takes links. Each test names its own node.

    use std::sync::atomic::AtomicUsize;

    use bytes::Bytes;
    use ractor::{Actor, ActorProcessingErr, ActorRef};
    use tokio::net::TcpListener;
    use tokio::sync::{mpsc, watch};
    use warren_actors::message::Message;
    use warren_actors::queue::{InFlight, QueueStats};

    use super::*;
    use crate::queue_wire::endpoint_group;

    /// How long a test waits for what must happen at once (real time).
    const WAIT: Duration = Duration::from_secs(5);
    const COOKIE: &str = "test cookie";

    /// What the fake node received.
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

    impl Actor for FakeEndpoint {
        type Msg = EndpointMsg;
        type State = (String, String);
        type Arguments = (String, String);

        async fn pre_start(
            &self,
            myself: ActorRef<EndpointMsg>,
            (node, address): (String, String),
        ) -> Result<(String, String), ActorProcessingErr> {
            ractor::pg::join(endpoint_group(&node), vec![myself.get_cell()]);
            Ok((node, address))
        }

        async fn handle(
            &self,
            _myself: ActorRef<EndpointMsg>,
            message: EndpointMsg,
            (_, address): &mut (String, String),
        ) -> Result<(), ActorProcessingErr> {
            let EndpointMsg::LinkAddress(_, reply) = message;
            let _ = reply.send(address.clone().into());
            Ok(())
        }
    }

    /// How the fake node behaves.
    struct Behaviour {
        /// Answer publishes (confirmed) at once; otherwise never.
        answer_publishes: bool,
        /// The counters are answered once this is true.
        stats_gate: watch::Receiver<bool>,
        /// Close the link when this says true.
        cut: watch::Receiver<bool>,
    }

    /// A fake node `node`; counters are answered once the first returned sender says
    /// true, the link is cut when the second does.
    async fn fake_node(
        node: &str,
        answer_publishes: bool,
    ) -> (Seen, watch::Sender<bool>, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let seen = Seen::default();
        let (gate, stats_gate) = watch::channel(false);
        let (cutter, cut) = watch::channel(false);
        let behaviour = Behaviour {
            answer_publishes,
            stats_gate,
            cut,
        };
        tokio::spawn(serve_fake(listener, seen.clone(), behaviour));
        Actor::spawn(None, FakeEndpoint, (node.to_string(), address.to_string()))
            .await
            .expect("the fake endpoint starts");
        (seen, gate, cutter)
    }

    async fn serve_fake(listener: TcpListener, seen: Seen, behaviour: Behaviour) {
        let (mut stream, peer) = listener.accept().await.unwrap();
        link::accept(&mut stream, COOKIE).await.unwrap();
        let (read, write) = stream.into_split();
        let (out, items) = mpsc::unbounded_channel();
        link::spawn_writer(write, items, peer);
        let mut cut = behaviour.cut.clone();
        let reading = link::read_items(read, |items: Vec<ToQueue>| {
            for item in items {
                match item {
                    ToQueue::Publish { id, messages, .. } => {
                        seen.bodies.lock().unwrap().extend(
                            messages
                                .iter()
                                .map(|m| String::from_utf8_lossy(&m.body).into_owned()),
                        );
                        if id != 0 && behaviour.answer_publishes {
                            let outcomes = vec![EnqueueOutcome::Confirmed; messages.len()];
                            let _ = out.send(ToClient::Published { id, outcomes });
                        }
                    }
                    ToQueue::Stats { id, .. } => {
                        seen.stats_asked.fetch_add(1, Ordering::SeqCst);
                        let (out, mut gate) = (out.clone(), behaviour.stats_gate.clone());
                        tokio::spawn(async move {
                            if gate.wait_for(|open| *open).await.is_ok() {
                                let status = QueueStatus {
                                    stats: QueueStats {
                                        ready: 7,
                                        ..QueueStats::default()
                                    },
                                    ..QueueStatus::default()
                                };
                                let statuses = vec![("q".to_string(), status)];
                                let _ = out.send(ToClient::Stats { id, statuses });
                            }
                        });
                    }
                    _ => {}
                }
            }
        });
        tokio::select! {
            _ = reading => {}
            _ = cut.wait_for(|c| *c) => {}
        }
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
        let remote = RemoteQueues::new("here", COOKIE);
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

    /// Batches a channel routes one after the other (an AMQP channel's publishes,
    /// which always carry credit; some with confirms, some nobody waits for) reach
    /// the queue's node in that order, sent while the link is still opening and after.
    /// (The finding that started this test: each batch was once sent by a task of its
    /// own, and tokio runs the task spawned last first.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_channels_batches_reach_the_queue_node_in_order() {
        let (seen, _gate, _cut) = fake_node("order-node", true).await;
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
                    if i == batches / 2 {
                        // (The link is open by now, or soon.)
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
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

    /// A node that takes publishes and never answers, then drops the link: the
    /// publisher is told they were refused and its credit comes back at once; a node
    /// without an endpoint refuses at once; after the cut a new link opens.
    #[tokio::test]
    async fn a_cut_link_refuses_what_waits_on_it_and_gives_the_credit_back() {
        let (seen, _gate, cut) = fake_node("silent-node", false).await;
        let (_, queue) = queue_on("silent-node");
        let in_flight = InFlight::new();
        let (confirm, outcomes) = oneshot::channel();
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
        eventually("the publishes reached the node", || {
            seen.bodies().len() == 3
        })
        .await;
        assert_eq!(seen.bodies(), ["a", "b", "c"]);
        assert_ne!(in_flight.bytes(), 0, "unanswered: the credit is out");
        cut.send(true).unwrap();
        let outcomes = tokio::time::timeout(WAIT, outcomes)
            .await
            .expect("refused once the link ended")
            .expect("answered");
        assert_eq!(outcomes.len(), 2);
        assert!(
            outcomes.iter().all(|o| matches!(o,
                EnqueueOutcome::Rejected(why) if why.contains("node 'silent-node'"))),
            "{outcomes:?}"
        );
        eventually("the credit came back", || in_flight.bytes() == 0).await;
        let status = tokio::time::timeout(WAIT, queue.status()).await;
        assert!(
            matches!(&status, Ok(Err(e)) if e.code() == 404),
            "the listener is gone: a clear 404, no hang ({status:?})"
        );

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
        let (seen, gate, _cut) = fake_node("status-node", true).await;
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
        gate.send(true).expect("the fake node is up");
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
