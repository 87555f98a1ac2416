//! Where other nodes reach this node's queues: the link listener ([`Serving`]) that
//! serves what comes on queue links, and the queue endpoint actor that tells other
//! nodes where it listens and notices nodes that go away.
//!
//! A channel of another node gets a channel id of this node (so that the queues see
//! an ordinary channel), per link: when a link ends, the channels it carried end here
//! (their unsettled deliveries go back to their queues). A remote consumer's sink puts
//! its deliveries straight on the link they go back on.
//!
//! The endpoint actor (`queues@NODE`, process groups `warren.queues.NODE` and
//! `warren.queues`) answers where this node takes links; when another node's endpoint
//! leaves the group (its node went away), the links from and to that node end.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ractor::pg::GroupChangeMessage;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::task::{AbortHandle, JoinSet};
use warren_actors::delivery::{next_channel_id, ChannelId, ChannelSink, QueueEvent};
use warren_actors::error::BrokerError;
use warren_actors::message::SharedMessage;
use warren_actors::queue::{ConsumeRequest, Enqueue, EnqueueOutcome, Qos, QueueRef};
use warren_actors::vhosts::VHosts;
use warren_actors::BoxFuture;

use crate::link::{self, LinkOut};
use crate::link_wire::{ToClient, ToQueue};
use crate::queue_wire::{
    endpoint_group, endpoint_of, EndpointMsg, QueueAnswer, QueueNote, QueueRequest, RemoteDelivery,
    ENDPOINTS_GROUP,
};
use crate::remote_queues::{RemoteQueues, CALL_TIMEOUT};

/// A link another node opened to this one, as this node numbers it.
type LinkId = u64;

/// A channel of another node, as this node's queues know it.
struct Mapped {
    local: ChannelId,
    /// The queues it used here, as (vhost, queue) (told when its link ends).
    queues: HashSet<(String, Arc<str>)>,
}

/// A link open to this node.
struct Accepted {
    /// The node that opened it.
    node: Arc<str>,
    /// Notified to end it.
    close: Arc<Notify>,
}

#[derive(Default)]
struct Links {
    /// Channels of other nodes, by the link they came on and their own id.
    channels: HashMap<(LinkId, ChannelId), Mapped>,
    open: HashMap<LinkId, Accepted>,
}

/// This node's link listener and what it serves (cheap to clone).
#[derive(Clone)]
pub struct Serving {
    inner: Arc<ServingInner>,
}

struct ServingInner {
    node: String,
    vhosts: VHosts,
    cookie: String,
    address: SocketAddr,
    next_link: AtomicU64,
    links: Mutex<Links>,
    /// The listener's task (aborted by [`Serving::stop`]).
    listening: Mutex<Option<AbortHandle>>,
}

impl Serving {
    /// Listens for queue links on `address` (port 0: one the system picks) for node
    /// `node`, whose queues are in `vhosts`; links must prove they know `cookie`.
    pub async fn listen(
        node: &str,
        vhosts: VHosts,
        cookie: &str,
        address: SocketAddr,
    ) -> std::io::Result<Serving> {
        let listener = TcpListener::bind(address).await?;
        let serving = Serving {
            inner: Arc::new(ServingInner {
                node: node.to_string(),
                vhosts,
                cookie: cookie.to_string(),
                address: listener.local_addr()?,
                next_link: AtomicU64::new(1),
                links: Mutex::new(Links::default()),
                listening: Mutex::new(None),
            }),
        };
        let listening = tokio::spawn(serving.clone().accept_links(listener)).abort_handle();
        *serving
            .inner
            .listening
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(listening);
        Ok(serving)
    }

    /// Stops taking links and ends those open (the node shuts down).
    pub fn stop(&self) {
        let listening = self
            .inner
            .listening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(listening) = listening {
            listening.abort();
        }
        for accepted in self.links().open.values() {
            accepted.close.notify_one();
        }
    }

    /// Where this node takes queue links.
    pub fn address(&self) -> SocketAddr {
        self.inner.address
    }

    fn links(&self) -> MutexGuard<'_, Links> {
        self.inner.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The nodes with a link open to this one.
    pub fn linked_nodes(&self) -> HashSet<Arc<str>> {
        self.links().open.values().map(|a| a.node.clone()).collect()
    }

    /// Ends every link `node` opened to this one.
    pub fn close_from(&self, node: &str) {
        for accepted in self.links().open.values() {
            if &*accepted.node == node {
                accepted.close.notify_one();
            }
        }
    }

    async fn accept_links(self, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    tokio::spawn(self.clone().serve_link(stream, peer));
                }
                Err(e) => {
                    // (Out of file descriptors, say: try again shortly.)
                    tracing::warn!("queue link listener: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn serve_link(self, mut stream: TcpStream, peer: SocketAddr) {
        let node: Arc<str> = match link::accept(&mut stream, &self.inner.cookie).await {
            Ok(node) => node.into(),
            Err(e) => {
                tracing::warn!(%peer, "queue link refused: {e:?}");
                return;
            }
        };
        let id = self.inner.next_link.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        self.links().open.insert(
            id,
            Accepted {
                node: node.clone(),
                close: close.clone(),
            },
        );
        tracing::debug!(node = ?node, %peer, "queue link from node open");
        let (read, write) = stream.into_split();
        let (out, items) = mpsc::unbounded_channel();
        let writer = link::spawn_writer(write, items, peer);
        // The link's calls in flight: its channels end only after them, so that a
        // consume or get that came just before the end cannot outlive it.
        let mut calls = JoinSet::new();
        let why = tokio::select! {
            why = link::read_items(read, |items| self.serve(id, &out, items, &mut calls)) => why,
            () = close.notified() => "its node went away".to_string(),
        };
        tracing::info!(node = ?node, "queue link from node ended: {why}");
        writer.abort();
        let waited = tokio::time::timeout(CALL_TIMEOUT, async {
            while calls.join_next().await.is_some() {}
        })
        .await;
        if waited.is_err() {
            tracing::warn!(node = ?node, "calls of an ended queue link still running after {CALL_TIMEOUT:?}");
        }
        self.link_ended(id);
    }

    /// The link `id` ended: the channels it carried end here.
    fn link_ended(&self, id: LinkId) {
        let ended: Vec<Mapped> = {
            let mut links = self.links();
            links.open.remove(&id);
            let keys: Vec<(LinkId, ChannelId)> = links
                .channels
                .keys()
                .filter(|(l, _)| *l == id)
                .copied()
                .collect();
            keys.iter()
                .filter_map(|k| links.channels.remove(k))
                .collect()
        };
        for mapped in ended {
            for (vhost, queue) in mapped.queues {
                if let Ok(q) = self.queue(&vhost, &queue) {
                    q.channel_down(mapped.local);
                }
            }
        }
    }

    /// The queue `name` this node runs, or the error a remote caller gets.
    fn queue(&self, vhost: &str, name: &str) -> Result<QueueRef, BrokerError> {
        // (A direct reply to a consumer of this node comes as a publish to its address.)
        let vhost_of = self.inner.vhosts.get(vhost);
        let queue = vhost_of
            .as_ref()
            .and_then(|v| v.queue(name).or_else(|| v.direct_reply(name)));
        // Runs here: its home, or a replica of a replicated queue (which sends it on
        // to wherever the queue is served).
        let runs_here = |q: &QueueRef| {
            q.def().node == self.inner.node
                || vhost_of.as_ref().is_some_and(|v| v.runs_here(q.def()))
        };
        match queue {
            Some(q) if runs_here(&q) => Ok(q),
            _ => Err(BrokerError::not_found(format!(
                "NOT_FOUND - no queue '{name}' in vhost '{vhost}' on node '{}'",
                self.inner.node
            ))),
        }
    }

    /// What came on link `link`, in order; answers go back on `out`; calls run in
    /// `calls`.
    fn serve(
        &self,
        link: LinkId,
        out: &LinkOut<ToClient>,
        items: Vec<ToQueue>,
        calls: &mut JoinSet<()>,
    ) {
        // (Finished calls leave the set.)
        while calls.try_join_next().is_some() {}
        for item in items {
            match item {
                ToQueue::Call {
                    id,
                    vhost,
                    queue,
                    request,
                } => {
                    let job = match self.queue(&vhost, &queue) {
                        Ok(q) => self.call(link, out, &vhost, q, request),
                        Err(e) => Box::pin(async move { Err(e) }),
                    };
                    let out = out.clone();
                    calls.spawn(async move {
                        let answer = job.await.map_err(Into::into);
                        let _ = out.send(ToClient::Answer { id, answer });
                    });
                }
                ToQueue::Publish {
                    id,
                    vhost,
                    queue,
                    messages,
                } => self.publish(id, &vhost, &queue, messages, out),
                ToQueue::Note { vhost, queue, note } => self.note(link, &vhost, &queue, note),
                ToQueue::Stats { id, vhost } => {
                    let vhost = self.inner.vhosts.get(&vhost);
                    let out = out.clone();
                    tokio::spawn(async move {
                        let statuses = match vhost {
                            Some(v) => v.local_stats().await,
                            None => Vec::new(),
                        };
                        let _ = out.send(ToClient::Stats { id, statuses });
                    });
                }
                ToQueue::Ping => {}
            }
        }
    }

    /// This node's channel id for `channel` of link `link` (made on first use).
    fn map(&self, link: LinkId, channel: ChannelId, vhost: &str, queue: &Arc<str>) -> ChannelId {
        let mut links = self.links();
        let mapped = links
            .channels
            .entry((link, channel))
            .or_insert_with(|| Mapped {
                local: next_channel_id(),
                queues: HashSet::new(),
            });
        mapped.queues.insert((vhost.to_string(), queue.clone()));
        mapped.local
    }

    fn mapped(&self, link: LinkId, channel: ChannelId) -> Option<ChannelId> {
        self.links().channels.get(&(link, channel)).map(|m| m.local)
    }

    /// A consumer of channel `channel` of link `link`, as the queue takes it: its
    /// channel mapped to one of this node's, its deliveries put on the link; the rest
    /// as a plain consumer with that prefetch (the request sets what it asks
    /// otherwise).
    #[allow(clippy::too_many_arguments)]
    fn consumer(
        &self,
        link: LinkId,
        out: &LinkOut<ToClient>,
        vhost: &str,
        queue: &Arc<str>,
        channel: ChannelId,
        tag: String,
        prefetch: u32,
    ) -> ConsumeRequest {
        let origin = self
            .links()
            .open
            .get(&link)
            .map(|a| a.node.clone())
            .unwrap_or_else(|| "?".into());
        ConsumeRequest {
            tag: tag.into(),
            channel: self.map(link, channel, vhost, queue),
            sink: sink_for(out.clone(), vhost, queue.clone(), channel),
            prefetch,
            no_ack: false,
            exclusive: false,
            priority: 0,
            origin: Some(origin),
            arguments: Default::default(),
            qos: Qos::consumer(prefetch),
            window: 0,
            records: false,
        }
    }

    fn call(
        &self,
        link: LinkId,
        out: &LinkOut<ToClient>,
        vhost: &str,
        queue: QueueRef,
        request: QueueRequest,
    ) -> BoxFuture<'static, Result<QueueAnswer, BrokerError>> {
        let name = queue.name().clone();
        match request {
            QueueRequest::Consume {
                channel,
                tag,
                prefetch,
                no_ack,
                exclusive,
                priority,
                arguments,
                qos,
                window,
                records,
            } => {
                let request = ConsumeRequest {
                    no_ack,
                    exclusive,
                    priority,
                    arguments,
                    qos,
                    window,
                    records,
                    ..self.consumer(link, out, vhost, &name, channel, tag, prefetch)
                };
                Box::pin(async move { queue.consume(request).await.map(|()| QueueAnswer::Done) })
            }
            QueueRequest::Cancel { channel, tag } => {
                // A channel never seen here has no consumer to cancel.
                let local = self.mapped(link, channel);
                Box::pin(async move {
                    if let Some(local) = local {
                        queue.cancel(local, tag.into()).await?;
                    }
                    Ok(QueueAnswer::Done)
                })
            }
            QueueRequest::Get { channel, no_ack } => {
                let local = self.map(link, channel, vhost, &name);
                Box::pin(async move {
                    queue.get(local, no_ack).await.map(|got| {
                        QueueAnswer::Got(
                            got.map(|(d, remaining)| Box::new((RemoteDelivery::of(&d), remaining))),
                        )
                    })
                })
            }
            QueueRequest::Purge => {
                Box::pin(async move { queue.purge().await.map(QueueAnswer::Count) })
            }
            QueueRequest::Delete {
                if_unused,
                if_empty,
            } => Box::pin(async move {
                queue
                    .delete(if_unused, if_empty)
                    .await
                    .map(QueueAnswer::Count)
            }),
            QueueRequest::Consumers => {
                Box::pin(async move { queue.consumers().await.map(QueueAnswer::Consumers) })
            }
            QueueRequest::StreamInfo => {
                Box::pin(async move { queue.stream_info().await.map(QueueAnswer::StreamInfo) })
            }
            QueueRequest::Lookup { key, limit } => Box::pin(async move {
                let found = queue.lookup(key, limit as usize).await?;
                Ok(QueueAnswer::Found(
                    found.into_iter().map(|(o, m)| (o, (*m).clone())).collect(),
                ))
            }),
        }
    }

    fn publish(
        &self,
        id: u64,
        vhost: &str,
        queue: &str,
        messages: Vec<SharedMessage>,
        out: &LinkOut<ToClient>,
    ) {
        let count = messages.len();
        let queue = match self.queue(vhost, queue) {
            Ok(q) => q,
            // Not known here (yet: a RAM node still taking the log), or deleted: the
            // publisher is told it was not taken, so nothing is confirmed and lost.
            Err(e) => {
                if id != 0 {
                    let outcomes = vec![EnqueueOutcome::Rejected(e.to_string()); count];
                    let _ = out.send(ToClient::Published { id, outcomes });
                }
                return;
            }
        };
        if id == 0 {
            return queue.enqueue(Enqueue::unconfirmed(messages));
        }
        let (batch, rx) = Enqueue::confirmed(messages);
        queue.enqueue(batch);
        let out = out.clone();
        tokio::spawn(async move {
            let outcomes = rx.await.unwrap_or_else(|_| {
                vec![
                    EnqueueOutcome::Rejected("the queue restarted before confirming".into());
                    count
                ]
            });
            let _ = out.send(ToClient::Published { id, outcomes });
        });
    }

    fn note(&self, link: LinkId, vhost: &str, queue: &str, note: QueueNote) {
        let q = match self.queue(vhost, queue) {
            Ok(q) => q,
            Err(_) => {
                if let QueueNote::ChannelDown { channel } = note {
                    // (The queue is gone: only the mapping is left to forget.)
                    self.forget(link, channel, vhost, queue);
                }
                return;
            }
        };
        match note {
            QueueNote::Touch => q.touch(),
            QueueNote::Crash => {
                let _ = q.crash();
            }
            QueueNote::Settle {
                channel,
                settlement,
                seqs,
            } => {
                if let Some(local) = self.mapped(link, channel) {
                    q.settle(local, settlement, seqs);
                }
            }
            QueueNote::ChannelDown { channel } => {
                if let Some(local) = self.forget(link, channel, vhost, queue) {
                    q.channel_down(local);
                }
            }
            QueueNote::Written {
                channel,
                tag,
                count,
            } => {
                if let Some(local) = self.mapped(link, channel) {
                    q.written(local, tag.into(), count);
                }
            }
        }
    }

    /// Channel `channel` of link `link` is done with a queue: its mapping forgets the
    /// queue (and goes once it uses none). Returns the channel's id here.
    fn forget(
        &self,
        link: LinkId,
        channel: ChannelId,
        vhost: &str,
        queue: &str,
    ) -> Option<ChannelId> {
        let mut links = self.links();
        let mapped = links.channels.get_mut(&(link, channel))?;
        let local = mapped.local;
        mapped
            .queues
            .remove(&(vhost.to_string(), Arc::<str>::from(queue)));
        if mapped.queues.is_empty() {
            links.channels.remove(&(link, channel));
        }
        Some(local)
    }
}

/// Where a remote consumer's deliveries go: on the link of its channel's node.
fn sink_for(
    out: LinkOut<ToClient>,
    vhost: &str,
    queue: Arc<str>,
    channel: ChannelId,
) -> ChannelSink {
    let vhost = vhost.to_string();
    Arc::new(move |event: QueueEvent| {
        let item = match event {
            QueueEvent::Deliver(deliveries) => ToClient::Deliver {
                vhost: vhost.clone(),
                queue: queue.clone(),
                channel,
                deliveries,
            },
            QueueEvent::ConsumerCancelled {
                tag,
                reason,
                resumable,
            } => ToClient::Cancelled {
                vhost: vhost.clone(),
                queue: queue.clone(),
                channel,
                tag: tag.to_string(),
                reason,
                resumable,
            },
            // (Traces stay on the queue's node.)
            QueueEvent::Traced(_) => return,
            QueueEvent::Records(run) => ToClient::Records {
                vhost: vhost.clone(),
                channel,
                run,
            },
        };
        let _ = out.send(item);
    })
}

/// The queue endpoint actor (see the module documentation).
pub struct QueueEndpoint;

/// What a queue endpoint starts with.
pub struct EndpointArgs {
    /// This node's name.
    pub node: String,
    /// This node's link listener.
    pub serving: Serving,
    /// This node's links to other nodes' queues.
    pub remote: RemoteQueues,
}

/// The queue endpoint's state.
pub struct EndpointState {
    serving: Serving,
    remote: RemoteQueues,
}

impl Actor for QueueEndpoint {
    type Msg = EndpointMsg;
    type State = EndpointState;
    type Arguments = EndpointArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<EndpointMsg>,
        args: EndpointArgs,
    ) -> Result<EndpointState, ActorProcessingErr> {
        let cell = myself.get_cell();
        ractor::pg::join(endpoint_group(&args.node), vec![cell.clone()]);
        ractor::pg::join(ENDPOINTS_GROUP.to_string(), vec![cell.clone()]);
        ractor::pg::monitor(ENDPOINTS_GROUP.to_string(), cell);
        Ok(EndpointState {
            serving: args.serving,
            remote: args.remote,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<EndpointMsg>,
        message: EndpointMsg,
        state: &mut EndpointState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            EndpointMsg::LinkAddress(_asker, reply) => {
                let _ = reply.send(state.serving.address().to_string().into());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<EndpointMsg>,
        event: SupervisionEvent,
        state: &mut EndpointState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ProcessGroupChanged(GroupChangeMessage::Leave(..)) => {
                state.forget_departed();
            }
            SupervisionEvent::ProcessGroupChanged(GroupChangeMessage::Join(..)) => {
                state.remote.nodes_back();
            }
            _ => {}
        }
        Ok(())
    }
}

impl EndpointState {
    /// Some endpoint left its group: for each node whose endpoint is gone, the links
    /// from and to it end (their channels end here, this node's consumers of its
    /// queues are told).
    fn forget_departed(&self) {
        let mut nodes = self.serving.linked_nodes();
        nodes.extend(self.remote.relay_nodes());
        for node in nodes {
            if endpoint_of(&node).is_some() {
                continue;
            }
            tracing::info!(node = %node, "queue endpoint of node gone: ending its links");
            self.serving.close_from(&node);
            self.remote.node_gone(&node);
        }
    }
}
