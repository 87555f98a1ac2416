//! A session: the node-side half of one client handle.
//!
//! It plays the part an AMQP channel plays: it routes the client's publishes against
//! the vhost's routing snapshot (no exchange mailbox on the way) and hands them to the
//! queues in one batch per queue; it answers a publish batch once every queue has
//! confirmed its share; it numbers deliveries with delivery tags, remembers which are
//! unsettled, and turns the client's acks into per-queue settlements. When it ends
//! (client closed, client process gone, node stopping) every unsettled delivery goes
//! back to its queue and the exclusive queues it owned are deleted.

use std::collections::HashMap;
use std::sync::Arc;

use super::admin::Admin;
use super::info::{binding_info, exchange_info, queue_info};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use warren_actors::channel::{ChannelState, PublishOutcome};
use warren_actors::delivery::{ChannelId, ChannelSink, QueueDelivery, QueueEvent};
use warren_actors::error::BrokerError;
use warren_actors::exchange::{Binding, Destination};
use warren_actors::message::Message;
use warren_actors::queue::{ConsumeRequest, Qos};
use warren_actors::vhost::VHost;
use warren_cluster::protocol::{
    BindTarget, Delivery, ErrorReply, InboxMsg, LocalOnly, Publish, PublishResult, Push, Records,
    Request, Response, SessionMsg, Settle,
};

/// The most queues one `ListQueuesPage` answer holds (a few hundred KiB; a cluster
/// frame holds 16 MiB at most).
const MAX_PAGE: usize = 5_000;

/// What a session starts from.
pub struct SessionArgs {
    pub vhost: VHost,
    pub inbox: ActorRef<InboxMsg>,
    pub channel: ChannelId,
    pub group: String,
    pub client_name: String,
    pub admin: Arc<Admin>,
}

pub struct Session;

pub struct SessionState {
    vhost: VHost,
    inbox: ActorRef<InboxMsg>,
    channel: ChannelId,
    client_name: String,
    sink: ChannelSink,
    /// Consumer tag to queue name.
    consumers: HashMap<String, Arc<str>>,
    /// Routing, delivery tags, unsettled deliveries.
    core: ChannelState,
    admin: Arc<Admin>,
    /// Stops the session when its vhost is deleted (aborted when the session ends).
    vhost_watch: tokio::task::JoinHandle<()>,
}

impl Actor for Session {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SessionArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(args.group.clone(), vec![myself.get_cell()]);
        let me = myself.clone();
        let sink: ChannelSink = Arc::new(move |event: QueueEvent| {
            let _ = me.cast(SessionMsg::Queue(LocalOnly::new(event)));
        });
        tracing::debug!(client = %args.client_name, channel = args.channel, "session opened");
        let mut deleted = args.vhost.deleted();
        let me = myself.clone();
        let vhost_watch = tokio::spawn(async move {
            if deleted.wait_for(|gone| *gone).await.is_ok() {
                me.stop(Some("its vhost was deleted".into()));
            }
        });
        Ok(SessionState {
            core: ChannelState::new(args.vhost.clone(), args.channel),
            vhost: args.vhost,
            inbox: args.inbox,
            channel: args.channel,
            client_name: args.client_name,
            sink,
            consumers: HashMap::new(),
            admin: args.admin,
            vhost_watch,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.vhost_watch.abort();
        state.core.close();
        state.vhost.owner_gone(state.channel).await;
        tracing::debug!(client = %state.client_name, channel = state.channel, "session closed");
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SessionMsg::Call(request, reply) => {
                let response = match request.into_result() {
                    Ok(request) => match state.call(request).await {
                        Ok(r) => r,
                        Err(e) => Response::Error(e.into()),
                    },
                    Err(why) => Response::Error(ErrorReply {
                        code: 502,
                        text: format!("undecodable request: {why}"),
                    }),
                };
                let _ = reply.send(response.into());
            }
            SessionMsg::Publish(batch, reply) => match batch.into_result() {
                Ok(batch) => state.publish(batch, reply).await,
                Err(why) => {
                    tracing::warn!(client = %state.client_name, "undecodable publish batch: {why}");
                    drop(reply);
                }
            },
            SessionMsg::Settle(settles) => match settles.into_result() {
                Ok(settles) => {
                    if let Err(e) = state.settle(&settles) {
                        // As RabbitMQ closes the channel on an unknown delivery tag.
                        state.push(Push::Closed(e.into()));
                        myself.stop(Some("settle error".into()));
                    }
                }
                Err(why) => tracing::warn!("undecodable settle batch: {why}"),
            },
            SessionMsg::Written(written) => match written.into_result() {
                Ok(written) => state.written(written),
                Err(why) => tracing::warn!("undecodable written batch: {why}"),
            },
            SessionMsg::Close(_) => myself.stop(None),
            SessionMsg::Queue(event) => {
                if let Some(event) = event.take() {
                    state.queue_event(event);
                }
            }
        }
        Ok(())
    }
}

impl SessionState {
    fn push(&self, push: Push) {
        let _ = self.inbox.cast(InboxMsg::Push(push.into()));
    }

    /// The client's application took deliveries of windowed consumers: their queues'
    /// windows open by as many. Tags of consumers this session no longer has are
    /// ignored.
    fn written(&self, written: Vec<(String, u32)>) {
        for (tag, count) in written {
            let Some(queue) = self.consumers.get(&tag) else {
                continue;
            };
            if let Some(handle) = self.vhost.queue(queue) {
                handle.written(self.channel, tag.as_str().into(), count);
            }
        }
    }

    async fn call(&mut self, request: Request) -> Result<Response, BrokerError> {
        let vhost = &self.vhost;
        Ok(match request {
            Request::DeclareExchange {
                name,
                kind,
                durable,
                auto_delete,
                internal,
                passive,
                arguments,
            } => {
                vhost
                    .declare_exchange(
                        &name,
                        &kind,
                        durable,
                        auto_delete,
                        internal,
                        passive,
                        arguments,
                    )
                    .await?;
                Response::Done
            }
            Request::DeleteExchange { name, if_unused } => {
                vhost.delete_exchange(&name, if_unused).await?;
                Response::Done
            }
            Request::DeclareQueue {
                name,
                durable,
                exclusive,
                auto_delete,
                passive,
                arguments,
            } => {
                let owner = exclusive.then_some(self.channel);
                let ok = vhost
                    .declare_queue(
                        &name,
                        durable,
                        owner,
                        auto_delete,
                        passive,
                        arguments,
                        self.channel,
                    )
                    .await?;
                Response::QueueDeclared {
                    name: ok.name,
                    messages: ok.messages,
                    consumers: ok.consumers,
                }
            }
            Request::DeleteQueue {
                name,
                if_unused,
                if_empty,
            } => Response::Removed {
                messages: vhost
                    .delete_queue(&name, if_unused, if_empty, self.channel)
                    .await?,
            },
            Request::PurgeQueue { name } => Response::Removed {
                messages: vhost.purge_queue(&name, self.channel).await?,
            },
            Request::Bind {
                source,
                target,
                routing_key,
                arguments,
            } => {
                let binding = Binding {
                    source,
                    destination: target_of(target),
                    routing_key,
                    arguments,
                };
                vhost.bind(binding, self.channel).await?;
                Response::Done
            }
            Request::Unbind {
                source,
                target,
                routing_key,
                arguments,
            } => {
                let binding = Binding {
                    source,
                    destination: target_of(target),
                    routing_key,
                    arguments,
                };
                vhost.unbind(binding, self.channel).await?;
                Response::Done
            }
            Request::Consume {
                queue,
                tag,
                prefetch,
                no_ack,
                exclusive,
                arguments,
            } => {
                let handle = vhost.find_queue(&queue, self.channel).await?;
                let tag = if tag.is_empty() {
                    format!("ctag-{}.{}", self.channel, self.consumers.len() + 1)
                } else {
                    tag
                };
                if self.consumers.contains_key(&tag) {
                    return Err(BrokerError::new(
                        warren_actors::error::code::NOT_ALLOWED,
                        format!("attempt to reuse consumer tag '{tag}'"),
                    ));
                }
                handle
                    .consume(ConsumeRequest {
                        tag: tag.as_str().into(),
                        channel: self.channel,
                        sink: self.sink.clone(),
                        prefetch,
                        no_ack,
                        exclusive,
                        priority: 0,
                        origin: None,
                        arguments,
                        qos: Qos::consumer(prefetch),
                        // The client reports what its application took of such a
                        // consumer's deliveries (`SessionMsg::Written`).
                        window: if no_ack || prefetch == 0 {
                            warren_actors::queue::WRITE_WINDOW
                        } else {
                            0
                        },
                        // The client hands a stream's runs out record by record.
                        records: true,
                    })
                    .await?;
                self.consumers.insert(tag.clone(), handle.name().clone());
                self.core.touch(handle.name().clone());
                Response::ConsumeStarted { tag }
            }
            Request::Cancel { tag } => {
                if let Some(queue) = self.consumers.remove(&tag) {
                    if let Some(handle) = vhost.queue(&queue) {
                        handle.cancel(self.channel, tag.as_str().into()).await?;
                    }
                }
                Response::Done
            }
            Request::Get { queue, no_ack } => {
                let handle = vhost.find_queue(&queue, self.channel).await?;
                self.core.touch(handle.name().clone());
                match handle.get(self.channel, no_ack).await? {
                    Some((delivery, remaining)) => Response::Got {
                        delivery: Some(Box::new(self.track(delivery, "", no_ack))),
                        remaining,
                    },
                    None => Response::Got {
                        delivery: None,
                        remaining: 0,
                    },
                }
            }
            Request::StreamInfo { queue } => {
                let handle = vhost.find_queue(&queue, self.channel).await?;
                Response::StreamInfo(handle.stream_info().await?)
            }
            Request::Lookup { queue, key, limit } => {
                let handle = vhost.find_queue(&queue, self.channel).await?;
                let found = handle.lookup(key, limit as usize).await?;
                Response::Found(found.into_iter().map(|(o, m)| (o, (*m).clone())).collect())
            }
            Request::ListQueues => Response::Queues(
                vhost
                    .list_queues()
                    .await
                    .into_iter()
                    .map(queue_info)
                    .collect(),
            ),
            Request::ListQueuesPage { after, limit } => {
                let limit = (limit as usize).clamp(1, MAX_PAGE);
                let (queues, more) = vhost.list_queues_page(&after, limit).await;
                Response::QueuesPage {
                    queues: queues.into_iter().map(queue_info).collect(),
                    more,
                }
            }
            Request::ListExchanges => Response::Exchanges(
                vhost
                    .list_exchanges()
                    .into_iter()
                    .map(exchange_info)
                    .collect(),
            ),
            Request::ListBindings => Response::Bindings(
                vhost
                    .list_bindings()
                    .into_iter()
                    .map(binding_info)
                    .collect(),
            ),
            Request::Tree { name } => Response::Tree(self.admin.tree(name.as_deref()).await?),
            Request::Inspect { name } => {
                Response::Inspected(Box::new(self.admin.inspect(vhost, &name).await?))
            }
            Request::StopActor { name } => {
                self.admin.stop(&name).await?;
                Response::Done
            }
            Request::CrashActor { name } => {
                self.admin.crash(&name).await?;
                Response::Done
            }
            Request::Trace { queue, on } => {
                let handle = vhost.queue_for(&queue, self.channel)?;
                handle.trace(self.channel, on.then(|| self.sink.clone()))?;
                if on {
                    self.core.touch(handle.name().clone());
                }
                Response::Done
            }
            Request::Log { level, lines } => Response::Log(self.admin.log(&level, lines)?),
            Request::Nodes => Response::Nodes(self.admin.nodes().await?),
            Request::ForgetNode { name } => {
                self.admin.forget(&name).await?;
                Response::Done
            }
            Request::LeaveCluster => {
                self.admin.leave().await?;
                Response::Done
            }
            Request::AddUser {
                name,
                password,
                tags,
            } => {
                self.admin.add_user(&name, &password, tags).await?;
                Response::Done
            }
            Request::DeleteUser { name } => {
                self.admin.delete_user(&name).await?;
                Response::Done
            }
            Request::ListUsers => Response::Users(self.admin.access.list_users()),
            Request::SetPermissions(p) => {
                self.admin.vhosts.find(&p.vhost)?;
                self.admin.set_permissions(p).await?;
                Response::Done
            }
            Request::ClearPermissions { user, vhost } => {
                self.admin.clear_permissions(&user, &vhost).await?;
                Response::Done
            }
            Request::ListPermissions => Response::Permissions(self.admin.access.list_permissions()),
            Request::AddVhost { name, description } => {
                self.admin.vhosts.add(&name, &description).await?;
                Response::Done
            }
            Request::DeleteVhost { name } => {
                self.admin.vhosts.delete(&name).await?;
                Response::Done
            }
            Request::ListVhosts => Response::Vhosts(self.admin.vhosts.list()),
            Request::Limits { memory, disk_free } => {
                Response::Limits(self.admin.resources.set(memory, disk_free))
            }
            Request::ChangeMembers { queue, node, add } => Response::MembersChanged(
                self.admin
                    .change_members(vhost, queue.as_deref(), &node, add)
                    .await?,
            ),
            Request::Ping => Response::Done,
        })
    }

    /// Routes a batch, hands each queue its share, and answers once all confirmed.
    async fn publish(
        &mut self,
        batch: Vec<Publish>,
        reply: RpcReplyPort<warren_cluster::wire::Wire<Vec<PublishResult>>>,
    ) {
        let batch: Vec<(Message, bool)> = batch
            .into_iter()
            .map(|p| {
                let message = Message {
                    exchange: p.exchange,
                    routing_key: p.routing_key,
                    properties: p.properties,
                    body: p.body,
                };
                (message, p.mandatory)
            })
            .collect();
        let count = batch.len();
        // A client handle always hears each publish's outcome.
        let outcomes = self.core.publish_in_order(batch, true, None).await;
        tokio::spawn(async move {
            let outcomes = match outcomes {
                Some(outcomes) => outcomes.await,
                None => vec![PublishOutcome::Confirmed; count],
            };
            let results: Vec<PublishResult> = outcomes
                .into_iter()
                .map(|o| match o {
                    PublishOutcome::Confirmed => PublishResult::Confirmed,
                    PublishOutcome::Unroutable => PublishResult::Unroutable,
                    PublishOutcome::Rejected(why) => PublishResult::Rejected(why),
                    PublishOutcome::Failed(e) => PublishResult::Failed(e.into()),
                })
                .collect();
            let _ = reply.send(results.into());
        });
    }

    /// Gives a delivery its tag (remembered unless it needs no ack).
    fn track(&mut self, d: QueueDelivery, consumer_tag: &str, no_ack: bool) -> Delivery {
        let tag = self.core.track(&d, no_ack);
        let message = Arc::unwrap_or_clone(d.message);
        Delivery {
            delivery_tag: tag,
            consumer_tag: if consumer_tag.is_empty() {
                d.consumer_tag.to_string()
            } else {
                consumer_tag.to_string()
            },
            queue: d.queue.to_string(),
            exchange: message.exchange,
            routing_key: message.routing_key,
            redelivered: d.redelivered,
            properties: message.properties,
            body: message.body,
        }
    }

    fn queue_event(&mut self, event: QueueEvent) {
        match event {
            QueueEvent::Deliver(deliveries) => {
                let mut out = Vec::with_capacity(deliveries.len());
                for d in deliveries {
                    let no_ack = d.no_ack;
                    out.push(self.track(d, "", no_ack));
                }
                self.push(Push::Deliveries(out));
            }
            QueueEvent::Records(run) => {
                let delivery_tag = self.core.track_seq(&run.queue, run.seq, false);
                self.push(Push::Records(Records {
                    delivery_tag,
                    consumer_tag: run.consumer_tag.to_string(),
                    queue: run.queue.to_string(),
                    first_offset: run.first_offset,
                    messages: run.messages,
                }));
            }
            QueueEvent::ConsumerCancelled { tag, reason, .. } => {
                self.consumers.remove(&*tag);
                self.push(Push::ConsumerCancelled {
                    tag: tag.to_string(),
                    reason,
                });
            }
            QueueEvent::Traced(messages) => self.push(Push::Traced(messages)),
        }
    }

    /// Turns the client's settlements into per-queue acks and rejects.
    fn settle(&mut self, settles: &[Settle]) -> Result<(), BrokerError> {
        self.core.settle(settles)
    }
}

fn target_of(target: BindTarget) -> Destination {
    match target {
        BindTarget::Queue(q) => Destination::Queue(q),
        BindTarget::Exchange(e) => Destination::Exchange(e),
    }
}
