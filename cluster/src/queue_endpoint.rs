//! The queue endpoint: where other nodes reach this node's queues, and where the
//! deliveries of remote queues come back to this node's channels.
//!
//! One per node (`queues@NODE`). It serves the [`EndpointMsg`]s of
//! [`crate::queue_wire`]: a remote channel gets a channel id of this node (so that the
//! queues see an ordinary channel), and its consumers a sink that sends their
//! deliveries back to the channel's node. When a node goes away (its endpoint leaves
//! the process group), its channels here end (their unsettled deliveries go back to
//! the queues) and this node's consumers of that node's queues are told they ended.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ractor::pg::GroupChangeMessage;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use warren_actors::delivery::{next_channel_id, ChannelId, ChannelSink, QueueEvent};
use warren_actors::error::BrokerError;
use warren_actors::queue::{ConsumeRequest, Enqueue, EnqueueOutcome, Qos, QueueRef};
use warren_actors::vhosts::VHosts;
use warren_actors::BoxFuture;

use crate::protocol::ErrorReply;
use crate::queue_wire::{
    endpoint_group, endpoint_of, ChannelEvents, EndpointMsg, PublishShare, QueueAddress,
    QueueAnswer, QueueNote, QueueRequest, RemoteDelivery, RemoteEvent, ENDPOINTS_GROUP,
};
use crate::remote_queues::{RelayKey, RemoteQueues};
use crate::wire::Wire;

/// The queue endpoint actor (see the module documentation).
pub struct QueueEndpoint;

/// What a queue endpoint starts with.
pub struct EndpointArgs {
    /// This node's name: the endpoint serves the queues whose home it is.
    pub node: String,
    /// The node's vhosts, where it finds those queues.
    pub vhosts: VHosts,
    /// This node's relays to remote queues, where deliveries that come back go.
    pub remote: RemoteQueues,
}

/// A channel of another node, as this node's queues know it.
struct Mapped {
    local: ChannelId,
    /// The queues it used here, as (vhost, queue) (told when it or its node ends).
    queues: HashSet<(String, Arc<str>)>,
}

/// The queue endpoint's state: the channels of other nodes it mapped to its own.
pub struct EndpointState {
    node: String,
    vhosts: VHosts,
    remote: RemoteQueues,
    channels: HashMap<(Arc<str>, ChannelId), Mapped>,
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
            node: args.node,
            vhosts: args.vhosts,
            remote: args.remote,
            channels: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<EndpointMsg>,
        message: EndpointMsg,
        state: &mut EndpointState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            EndpointMsg::Call(call, reply) => match call.into_result() {
                Ok((address, request)) => state.call(address, request, reply),
                Err(why) => {
                    let e = BrokerError::internal(format!("undecodable queue request: {why}"));
                    let _ = reply.send(Err(e.into()).into());
                }
            },
            EndpointMsg::Publish(share, reply) => match share.into_result() {
                Ok(share) => state.publish(share, Some(reply)),
                Err(why) => tracing::warn!("undecodable publish from another node: {why}"),
            },
            EndpointMsg::Send(share) => match share.into_result() {
                Ok(share) => state.publish(share, None),
                Err(why) => tracing::warn!("undecodable publish from another node: {why}"),
            },
            EndpointMsg::Note(note) => match note.into_result() {
                Ok((address, note)) => state.note(address, note),
                Err(why) => tracing::warn!("undecodable queue note from another node: {why}"),
            },
            EndpointMsg::Events(events) => match events.into_result() {
                Ok(events) => state.events(events),
                Err(why) => tracing::warn!("undecodable deliveries from another node: {why}"),
            },
            EndpointMsg::Stats(vhost, reply) => {
                let vhost = vhost.into_result().ok().and_then(|v| state.vhosts.get(&v));
                tokio::spawn(async move {
                    let stats = match vhost {
                        Some(v) => v.local_stats().await,
                        None => Vec::new(),
                    };
                    let _ = reply.send(stats.into());
                });
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
        if let SupervisionEvent::ProcessGroupChanged(GroupChangeMessage::Leave(..)) = event {
            state.forget_departed();
        }
        Ok(())
    }
}

impl EndpointState {
    /// The queue `name` this node runs, or the error a remote caller gets.
    fn queue(&self, vhost: &str, name: &str) -> Result<QueueRef, BrokerError> {
        // (A direct reply to a consumer of this node comes as a publish to its address.)
        let vhost_of = self.vhosts.get(vhost);
        let queue = vhost_of
            .as_ref()
            .and_then(|v| v.queue(name).or_else(|| v.direct_reply(name)));
        // Runs here: its home, or a replica of a replicated queue (which sends it on
        // to wherever the queue is served).
        let runs_here = |q: &QueueRef| {
            q.def().node == self.node || vhost_of.as_ref().is_some_and(|v| v.runs_here(q.def()))
        };
        match queue {
            Some(q) if runs_here(&q) => Ok(q),
            _ => Err(BrokerError::not_found(format!(
                "NOT_FOUND - no queue '{name}' in vhost '{vhost}' on node '{}'",
                self.node
            ))),
        }
    }

    /// This node's channel id for `channel` of the asking node (made on first use).
    fn map(&mut self, address: &QueueAddress, channel: ChannelId) -> ChannelId {
        let mapped = self
            .channels
            .entry((address.from.as_str().into(), channel))
            .or_insert_with(|| Mapped {
                local: next_channel_id(),
                queues: HashSet::new(),
            });
        mapped
            .queues
            .insert((address.vhost.clone(), address.queue.as_str().into()));
        mapped.local
    }

    fn mapped(&self, address: &QueueAddress, channel: ChannelId) -> Option<ChannelId> {
        self.channels
            .get(&(address.from.as_str().into(), channel))
            .map(|m| m.local)
    }

    /// A consumer of channel `channel` of the asking node, as the queue takes it: its
    /// channel mapped to one of this node's, its deliveries sent back; the rest as a
    /// plain consumer with that prefetch (the request sets what it asks otherwise).
    fn consumer(
        &mut self,
        address: &QueueAddress,
        channel: ChannelId,
        tag: String,
        prefetch: u32,
    ) -> ConsumeRequest {
        ConsumeRequest {
            tag: tag.into(),
            channel: self.map(address, channel),
            sink: self.sink_for(address, channel),
            prefetch,
            no_ack: false,
            exclusive: false,
            priority: 0,
            origin: Some(address.from.as_str().into()),
            arguments: Default::default(),
            qos: Qos::consumer(prefetch),
        }
    }

    /// Where a remote consumer's deliveries go: the endpoint of its channel's node.
    fn sink_for(&self, address: &QueueAddress, channel: ChannelId) -> ChannelSink {
        let (from, template) = (
            address.from.clone(),
            ChannelEvents {
                node: self.node.clone(),
                vhost: address.vhost.clone(),
                queue: address.queue.clone(),
                channel,
                event: RemoteEvent::Deliver(Vec::new()),
            },
        );
        Arc::new(move |event: QueueEvent| {
            let Some(event) = RemoteEvent::of(&event) else {
                return;
            };
            if let Some(endpoint) = endpoint_of(&from) {
                let events = ChannelEvents {
                    event,
                    ..template.clone()
                };
                let _ = endpoint.cast(EndpointMsg::Events(events.into()));
            }
        })
    }

    fn call(
        &mut self,
        address: QueueAddress,
        request: QueueRequest,
        reply: RpcReplyPort<Wire<Result<QueueAnswer, ErrorReply>>>,
    ) {
        let queue = match self.queue(&address.vhost, &address.queue) {
            Ok(q) => q,
            Err(e) => {
                let _ = reply.send(Err(e.into()).into());
                return;
            }
        };
        let job: BoxFuture<'static, Result<QueueAnswer, BrokerError>> = match request {
            QueueRequest::Consume {
                channel,
                tag,
                prefetch,
                no_ack,
                exclusive,
                priority,
            } => {
                let request = ConsumeRequest {
                    no_ack,
                    exclusive,
                    priority,
                    ..self.consumer(&address, channel, tag, prefetch)
                };
                Box::pin(async move { queue.consume(request).await.map(|()| QueueAnswer::Done) })
            }
            QueueRequest::ConsumeWith {
                channel,
                tag,
                prefetch,
                no_ack,
                exclusive,
                priority,
                arguments,
                qos,
            } => {
                let request = ConsumeRequest {
                    no_ack,
                    exclusive,
                    priority,
                    arguments,
                    qos,
                    ..self.consumer(&address, channel, tag, prefetch)
                };
                Box::pin(async move { queue.consume(request).await.map(|()| QueueAnswer::Done) })
            }
            QueueRequest::Cancel { channel, tag } => {
                // A channel never seen here has no consumer to cancel.
                let local = self.mapped(&address, channel);
                Box::pin(async move {
                    if let Some(local) = local {
                        queue.cancel(local, tag.into()).await?;
                    }
                    Ok(QueueAnswer::Done)
                })
            }
            QueueRequest::Get { channel, no_ack } => {
                let local = self.map(&address, channel);
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
        };
        tokio::spawn(async move {
            let answer = job.await;
            let _ = reply.send(answer.map_err(ErrorReply::from).into());
        });
    }

    fn publish(&self, share: PublishShare, reply: Option<RpcReplyPort<Wire<Vec<EnqueueOutcome>>>>) {
        let count = share.messages.len();
        let queue = match self.queue(&share.vhost, &share.queue) {
            Ok(q) => q,
            // Not known here (yet: a RAM node still taking the log), or deleted: the
            // publisher is told it was not taken, so nothing is confirmed and lost.
            Err(e) => {
                if let Some(reply) = reply {
                    let _ = reply.send(vec![EnqueueOutcome::Rejected(e.to_string()); count].into());
                }
                return;
            }
        };
        let messages = share.messages.into_iter().map(Arc::new).collect();
        match reply {
            None => queue.enqueue(Enqueue::unconfirmed(messages)),
            Some(reply) => {
                let (batch, rx) = Enqueue::confirmed(messages);
                queue.enqueue(batch);
                tokio::spawn(async move {
                    let outcomes =
                        rx.await.unwrap_or_else(|_| {
                            vec![
                                EnqueueOutcome::Rejected(
                                    "the queue restarted before confirming".into()
                                );
                                count
                            ]
                        });
                    let _ = reply.send(outcomes.into());
                });
            }
        }
    }

    fn note(&mut self, address: QueueAddress, note: QueueNote) {
        let Ok(queue) = self.queue(&address.vhost, &address.queue) else {
            return;
        };
        match note {
            QueueNote::Touch => queue.touch(),
            QueueNote::Crash => {
                let _ = queue.crash();
            }
            QueueNote::Settle {
                channel,
                settlement,
                seqs,
            } => {
                if let Some(local) = self.mapped(&address, channel) {
                    queue.settle(local, settlement, seqs);
                }
            }
            QueueNote::ChannelDown { channel } => {
                let key = (Arc::<str>::from(address.from.as_str()), channel);
                if let Some(mapped) = self.channels.get_mut(&key) {
                    queue.channel_down(mapped.local);
                    mapped
                        .queues
                        .remove(&(address.vhost.clone(), address.queue.as_str().into()));
                    if mapped.queues.is_empty() {
                        self.channels.remove(&key);
                    }
                }
            }
        }
    }

    fn events(&self, events: ChannelEvents) {
        let key = RelayKey {
            node: events.node.as_str().into(),
            vhost: events.vhost,
            queue: events.queue.as_str().into(),
            channel: events.channel,
        };
        let Some(sink) = self.remote.sink(&key) else {
            return; // the channel closed meanwhile
        };
        if let RemoteEvent::ConsumerCancelled { tag, .. } = &events.event {
            self.remote.consumer_ended(&key, tag);
        }
        sink(events.event.into_event(&key.queue));
    }

    /// Some endpoint left its group: for each node whose endpoint is gone, end its
    /// channels here and tell this node's consumers of its queues.
    fn forget_departed(&mut self) {
        let mut nodes: HashSet<Arc<str>> = self.channels.keys().map(|(n, _)| n.clone()).collect();
        nodes.extend(self.remote.relay_nodes());
        for node in nodes {
            if endpoint_of(&node).is_some() {
                continue;
            }
            tracing::info!(node = %node, "queue endpoint of node gone: ending its channels here");
            let gone: Vec<(Arc<str>, ChannelId)> = self
                .channels
                .keys()
                .filter(|(n, _)| *n == node)
                .cloned()
                .collect();
            for key in gone {
                if let Some(mapped) = self.channels.remove(&key) {
                    for (vhost, queue) in mapped.queues {
                        if let Ok(q) = self.queue(&vhost, &queue) {
                            q.channel_down(mapped.local);
                        }
                    }
                }
            }
            self.remote.node_gone(&node);
        }
    }
}
