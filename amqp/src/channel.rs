//! One AMQP channel: its methods, the content of publishes being assembled, consumers,
//! publisher confirms and transactions. Routing, delivery tags and settlements are
//! [`ChannelState`]'s, shared with the client-handle session.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame};
use amq_protocol::protocol::{basic, channel, confirm, exchange, queue, tx, AMQPClass};
use amq_protocol::types::{FieldTable as WireTable, ShortString};
use bytes::Bytes;
use warren_access::{Access, AccessControl, Resource};
use warren_actors::channel::{ChannelState, PublishOutcome, Settle, SettleKind};
use warren_actors::delivery::{next_channel_id, ChannelId, ChannelSink, QueueDelivery};
use warren_actors::exchange::{Binding, Destination};
use warren_actors::message::Message;
use warren_actors::queue::{ConsumeRequest, InFlight};
use warren_actors::vhost::VHost;

use crate::codec::{write_body, write_frame};
use crate::convert::{properties_from_wire, properties_to_wire, short, table_from_wire};
use crate::error::{code, AmqpError, ChannelError, ConnectionError};
use crate::prefetch::ChannelPrefetch;

/// A publish whose content is still arriving.
struct Incoming {
    exchange: String,
    routing_key: String,
    mandatory: bool,
    /// Set once the content header arrived.
    header: Option<(u64, warren_actors::message::Properties)>,
    body: Vec<u8>,
}

/// A complete publish waiting to be routed with the others of its batch.
struct Ready {
    message: Message,
    mandatory: bool,
    /// Its publisher-confirm sequence number (confirm mode only).
    confirm_seq: Option<u64>,
}

/// What the connection must do after a method.
pub enum Outcome {
    /// Encoded frames to send (maybe none).
    Send(Vec<u8>),
    /// The client closed the channel: send close-ok and forget it.
    Closed,
}

pub struct AmqpChannel {
    pub number: u16,
    core: ChannelState,
    /// The connection's id: owner of its exclusive queues.
    connection: ChannelId,
    sink: ChannelSink,
    incoming: Option<Incoming>,
    /// Publishes complete and not yet routed.
    ready: Vec<Ready>,
    confirm: bool,
    next_confirm_seq: u64,
    /// Confirm seqs sent to queues and not yet acked or nacked.
    pub outstanding: BTreeSet<u64>,
    /// Consumer tag -> queue.
    consumers: HashMap<String, Arc<str>>,
    /// `basic.qos global=false`: the prefetch of consumers started from now on.
    prefetch: u32,
    /// `basic.qos global=true`: the channel-wide limit.
    channel_prefetch: ChannelPrefetch,
    /// tx.select: publishes and settlements wait for tx.commit.
    tx: bool,
    tx_publishes: Vec<Ready>,
    tx_settles: Vec<Settle>,
    frame_max: u32,
    /// The authenticated user: a publish's `user_id` must be this.
    user: Arc<str>,
    access: AccessControl,
    /// The exchange a publish was last allowed to, and the access generation then.
    publish_allowed: Option<(String, u64)>,
    /// The queue last declared on this channel: what an empty queue name means.
    last_queue: Option<String>,
    /// The connection's publishes not yet answered by their queues (credit flow).
    in_flight: Arc<InFlight>,
}

/// The largest message body accepted (RabbitMQ's default `max_message_size`).
pub const MAX_MESSAGE_BYTES: u64 = 128 * 1024 * 1024;

fn method(class: AMQPClass) -> AMQPFrame {
    AMQPFrame::Method(0, class)
}

/// What a channel takes from its connection.
pub struct ConnectionPart {
    /// The vhost the client opened.
    pub vhost: VHost,
    /// The connection's id: owner of its exclusive queues.
    pub connection: ChannelId,
    pub frame_max: u32,
    /// The authenticated user.
    pub user: Arc<str>,
    pub access: AccessControl,
    /// The connection's publishes not yet answered by their queues (credit flow).
    pub in_flight: Arc<InFlight>,
}

impl AmqpChannel {
    pub fn new(
        number: u16,
        part: ConnectionPart,
        sink_for: impl FnOnce(ChannelId) -> ChannelSink,
    ) -> Self {
        let id = next_channel_id();
        let ConnectionPart {
            vhost,
            connection,
            frame_max,
            user,
            access,
            in_flight,
        } = part;
        AmqpChannel {
            number,
            core: ChannelState::new(vhost, id),
            connection,
            sink: sink_for(id),
            incoming: None,
            ready: Vec::new(),
            confirm: false,
            next_confirm_seq: 1,
            outstanding: BTreeSet::new(),
            consumers: HashMap::new(),
            prefetch: 0,
            channel_prefetch: ChannelPrefetch::default(),
            tx: false,
            tx_publishes: Vec::new(),
            tx_settles: Vec::new(),
            frame_max,
            user,
            access,
            publish_allowed: None,
            last_queue: None,
            in_flight,
        }
    }

    pub fn confirm_mode(&self) -> bool {
        self.confirm
    }

    /// Sets a frame's channel number to this channel's.
    fn on_me(&self, frame: AMQPFrame) -> AMQPFrame {
        match frame {
            AMQPFrame::Method(_, m) => AMQPFrame::Method(self.number, m),
            AMQPFrame::Header(_, h) => AMQPFrame::Header(self.number, h),
            AMQPFrame::Body(_, b) => AMQPFrame::Body(self.number, b),
            other => other,
        }
    }

    /// The method's `-ok`, unless the client asked for `nowait`.
    fn answer(&self, nowait: bool, class: AMQPClass) -> Outcome {
        if nowait {
            Outcome::Send(Vec::new())
        } else {
            self.reply(class)
        }
    }

    fn reply(&self, class: AMQPClass) -> Outcome {
        let mut out = Vec::new();
        write_frame(&AMQPFrame::Method(self.number, class), &mut out);
        Outcome::Send(out)
    }

    /// The reply, followed by the held deliveries the channel-wide prefetch now admits
    /// (after settlements, or a raised limit).
    fn reply_and_release(&mut self, reply: Option<AMQPClass>) -> Outcome {
        let mut out = Vec::new();
        if let Some(class) = reply {
            write_frame(&AMQPFrame::Method(self.number, class), &mut out);
        }
        let released = self.channel_prefetch.release(self.core.unsettled());
        self.write_deliveries(released, &mut out);
        Outcome::Send(out)
    }

    /// Encodes one message: the method, the content header, the body in frames that
    /// fit frame_max.
    pub fn content_frames(&self, head: AMQPClass, message: &Message, out: &mut Vec<u8>) {
        write_frame(&AMQPFrame::Method(self.number, head), out);
        let header = AMQPContentHeader {
            class_id: 60,
            body_size: message.body.len() as u64,
            properties: properties_to_wire(&message.properties),
        };
        write_frame(&AMQPFrame::Header(self.number, header), out);
        write_body(self.number, &message.body, self.frame_max, out);
    }

    // ----- content ---------------------------------------------------------------

    /// A content header frame arrived.
    pub fn header(&mut self, header: AMQPContentHeader) -> Result<(), AmqpError> {
        if self.incoming.as_ref().is_none_or(|i| i.header.is_some()) {
            return Err(ConnectionError::unexpected(format!(
                "UNEXPECTED_FRAME - expected method frame, got non method frame instead (content header on channel {})",
                self.number
            ))
            .into());
        }
        if header.class_id != 60 {
            return Err(ConnectionError::unexpected(format!(
                "UNEXPECTED_FRAME - content header for class {} on a basic.publish",
                header.class_id
            ))
            .into());
        }
        if header.body_size > MAX_MESSAGE_BYTES {
            self.incoming = None;
            return Err(AmqpError::channel(
                code::PRECONDITION_FAILED,
                format!(
                    "PRECONDITION_FAILED - message size {} is larger than configured max size {MAX_MESSAGE_BYTES}",
                    header.body_size
                ),
            )
            .at(60, 40));
        }
        let properties = properties_from_wire(&header.properties);
        if let Err(e) = self.check_properties(&properties) {
            // The publish is dropped with the channel.
            self.incoming = None;
            return Err(e.at(60, 40));
        }
        if let Some(incoming) = self.incoming.as_mut() {
            incoming.header = Some((header.body_size, properties));
        }
        if header.body_size == 0 {
            self.complete();
        }
        Ok(())
    }

    /// RabbitMQ's checks of a publish's properties: `user_id` must be the
    /// authenticated user, `expiration` a whole number of milliseconds.
    fn check_properties(&self, p: &warren_actors::message::Properties) -> Result<(), AmqpError> {
        if let Some(user_id) = &p.user_id {
            if **user_id != *self.user {
                return Err(AmqpError::channel(
                    code::PRECONDITION_FAILED,
                    format!(
                        "PRECONDITION_FAILED - user_id property set to '{user_id}' but authenticated user was '{}'",
                        self.user
                    ),
                ));
            }
        }
        if let Some(expiration) = &p.expiration {
            if expiration.parse::<u64>().is_err() {
                return Err(AmqpError::channel(
                    code::PRECONDITION_FAILED,
                    format!("PRECONDITION_FAILED - invalid expiration '{expiration}'"),
                ));
            }
        }
        Ok(())
    }

    /// A content body frame arrived.
    pub fn body(&mut self, data: Vec<u8>) -> Result<(), AmqpError> {
        let Some(incoming) = self.incoming.as_mut() else {
            return Err(ConnectionError::unexpected(format!(
                "UNEXPECTED_FRAME - expected method frame, got non method frame instead (content body on channel {})",
                self.number
            ))
            .into());
        };
        let Some((size, _)) = &incoming.header else {
            return Err(ConnectionError::unexpected(
                "UNEXPECTED_FRAME - expected content header, got content body",
            )
            .into());
        };
        if incoming.body.len() as u64 + data.len() as u64 > *size {
            return Err(ConnectionError::frame(format!(
                "FRAME_ERROR - content body longer than the {size} bytes its header announced"
            ))
            .into());
        }
        if incoming.body.is_empty() {
            // The first (usually the only) body frame becomes the body: no copy.
            incoming.body = data;
            // Grown as frames come (bounded), not by what the header claims.
            let rest = size.saturating_sub(incoming.body.len() as u64).min(1 << 20);
            incoming.body.reserve(rest as usize);
        } else {
            incoming.body.extend_from_slice(&data);
        }
        if incoming.body.len() as u64 == *size {
            self.complete();
        }
        Ok(())
    }

    /// Whether a publish waits for its header or body (a method now is an error).
    /// How many complete publishes wait to be routed.
    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }

    pub fn expects_content(&self) -> bool {
        self.incoming.is_some()
    }

    fn complete(&mut self) {
        let Some(incoming) = self.incoming.take() else {
            return;
        };
        let (_, properties) = incoming.header.unwrap_or_default();
        let message = Message {
            exchange: incoming.exchange,
            routing_key: incoming.routing_key,
            properties,
            body: Bytes::from(incoming.body),
        };
        let confirm_seq = self.confirm.then(|| {
            let seq = self.next_confirm_seq;
            self.next_confirm_seq += 1;
            seq
        });
        let ready = Ready {
            message,
            mandatory: incoming.mandatory,
            confirm_seq,
        };
        if self.tx {
            self.tx_publishes.push(ready);
        } else {
            self.ready.push(ready);
        }
    }

    /// Routes the publishes completed so far and forgets them (`None` when there were
    /// none). Their queues take the connection's credit for them. When somebody needs
    /// their outcomes (confirm mode, a mandatory publish, a failed one), also returns
    /// the future of the outcomes and what answering each needs (its confirm seq, and
    /// for a mandatory one the message, to return it if unroutable).
    #[allow(clippy::type_complexity)]
    pub fn route_ready(
        &mut self,
    ) -> Option<
        Option<(
            impl std::future::Future<Output = Vec<PublishOutcome>> + Send + 'static,
            Vec<(Option<u64>, Option<Message>)>,
        )>,
    > {
        if self.ready.is_empty() {
            return None;
        }
        let mut batch = Vec::with_capacity(self.ready.len());
        let mut answers = Vec::with_capacity(self.ready.len());
        for r in self.ready.drain(..) {
            if let Some(seq) = r.confirm_seq {
                self.outstanding.insert(seq);
            }
            // Only a mandatory message may come back (basic.return): only it is kept.
            answers.push((r.confirm_seq, r.mandatory.then(|| r.message.clone())));
            batch.push((r.message, r.mandatory));
        }
        let outcomes = self
            .core
            .publish(batch, self.confirm, Some(&self.in_flight));
        Some(outcomes.map(|outcomes| (outcomes, answers)))
    }

    // ----- deliveries -------------------------------------------------------------

    /// Frames for deliveries from a queue (those the channel-wide prefetch admits now;
    /// it holds the others).
    pub fn deliver(&mut self, deliveries: Vec<QueueDelivery>, out: &mut Vec<u8>) {
        let now = self
            .channel_prefetch
            .admit(deliveries, self.core.unsettled());
        self.write_deliveries(now, out);
    }

    fn write_deliveries(&mut self, deliveries: Vec<QueueDelivery>, out: &mut Vec<u8>) {
        for d in deliveries {
            let tag = self.core.track(&d, d.no_ack);
            let head = AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                consumer_tag: short(&d.consumer_tag),
                delivery_tag: tag,
                redelivered: d.redelivered,
                exchange: short(&d.message.exchange),
                routing_key: short(&d.message.routing_key),
            }));
            self.content_frames(head, &d.message, out);
        }
    }

    /// The node ended a consumer: tell the client (consumer_cancel_notify).
    pub fn consumer_cancelled(&mut self, tag: &str) -> Option<AMQPFrame> {
        self.consumers.remove(tag)?;
        self.core
            .give_back(self.channel_prefetch.take_consumer(tag));
        Some(
            self.on_me(method(AMQPClass::Basic(basic::AMQPMethod::Cancel(
                basic::Cancel {
                    consumer_tag: short(tag),
                    nowait: true,
                },
            )))),
        )
    }

    /// The channel closes (either side): deliveries return to their queues.
    pub fn close(&mut self) {
        // Held deliveries are unacked at their queues, which requeue them now.
        self.channel_prefetch.take_all();
        self.core.close();
    }

    // ----- methods ----------------------------------------------------------------

    /// Handles one method on this channel.
    pub async fn method(&mut self, class: AMQPClass) -> Result<Outcome, AmqpError> {
        let (class_id, method_id) = (class.get_amqp_class_id(), class.get_amqp_method_id());
        self.dispatch(class)
            .await
            .map_err(|e| e.at(class_id, method_id))
    }

    async fn dispatch(&mut self, class: AMQPClass) -> Result<Outcome, AmqpError> {
        let vhost = self.core.vhost().clone();
        let conn = self.connection;
        match class {
            AMQPClass::Channel(channel::AMQPMethod::Close(_)) => Ok(Outcome::Closed),
            AMQPClass::Channel(channel::AMQPMethod::Flow(f)) => {
                if !f.active {
                    return Err(AmqpError::connection(
                        code::NOT_IMPLEMENTED,
                        "NOT_IMPLEMENTED - active=false is not supported (use basic.qos)",
                    ));
                }
                Ok(self.reply(AMQPClass::Channel(channel::AMQPMethod::FlowOk(
                    channel::FlowOk { active: true },
                ))))
            }
            AMQPClass::Channel(channel::AMQPMethod::Open(_)) => Err(AmqpError::connection(
                code::CHANNEL_ERROR,
                format!(
                    "CHANNEL_ERROR - second 'channel.open' seen on channel {}",
                    self.number
                ),
            )),
            AMQPClass::Exchange(m) => self.exchange(m, &vhost, conn).await,
            AMQPClass::Queue(m) => self.queue(m, &vhost, conn).await,
            AMQPClass::Basic(m) => self.basic(m, &vhost, conn).await,
            AMQPClass::Confirm(confirm::AMQPMethod::Select(s)) => {
                if self.tx {
                    return Err(AmqpError::channel(
                        code::PRECONDITION_FAILED,
                        "PRECONDITION_FAILED - cannot switch from tx to confirm mode",
                    ));
                }
                self.confirm = true;
                Ok(if s.nowait {
                    Outcome::Send(Vec::new())
                } else {
                    self.reply(AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(
                        confirm::SelectOk {},
                    )))
                })
            }
            AMQPClass::Tx(m) => self.tx(m).await,
            other => Err(AmqpError::connection(
                code::COMMAND_INVALID,
                format!(
                    "COMMAND_INVALID - unexpected method {}.{} on channel {}",
                    other.get_amqp_class_id(),
                    other.get_amqp_method_id(),
                    self.number
                ),
            )),
        }
    }

    async fn exchange(
        &mut self,
        m: exchange::AMQPMethod,
        vhost: &VHost,
        conn: ChannelId,
    ) -> Result<Outcome, AmqpError> {
        match m {
            exchange::AMQPMethod::Declare(d) => {
                if !d.passive {
                    self.allow(Access::Configure, Resource::Exchange(d.exchange.as_str()))?;
                }
                vhost
                    .declare_exchange(
                        d.exchange.as_str(),
                        d.kind.as_str(),
                        d.durable,
                        d.auto_delete,
                        d.internal,
                        d.passive,
                        table_from_wire(&d.arguments),
                    )
                    .await?;
                Ok(self.answer(
                    d.nowait,
                    AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {})),
                ))
            }
            exchange::AMQPMethod::Delete(d) => {
                vhost
                    .delete_exchange(d.exchange.as_str(), d.if_unused)
                    .await?;
                Ok(self.answer(
                    d.nowait,
                    AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})),
                ))
            }
            exchange::AMQPMethod::Bind(b) => {
                let destination = Destination::Exchange(b.destination.as_str().to_string());
                let binding =
                    self.binding(b.source.as_str(), destination, &b.routing_key, &b.arguments)?;
                vhost.bind(binding, conn).await?;
                Ok(self.answer(
                    b.nowait,
                    AMQPClass::Exchange(exchange::AMQPMethod::BindOk(exchange::BindOk {})),
                ))
            }
            exchange::AMQPMethod::Unbind(b) => {
                let destination = Destination::Exchange(b.destination.as_str().to_string());
                let binding =
                    self.binding(b.source.as_str(), destination, &b.routing_key, &b.arguments)?;
                vhost.unbind(binding, conn).await?;
                Ok(self.answer(
                    b.nowait,
                    AMQPClass::Exchange(exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {})),
                ))
            }
            other => Err(unexpected_method(AMQPClass::Exchange(other))),
        }
    }

    async fn queue(
        &mut self,
        m: queue::AMQPMethod,
        vhost: &VHost,
        conn: ChannelId,
    ) -> Result<Outcome, AmqpError> {
        match m {
            queue::AMQPMethod::Declare(d) => {
                // A server-named queue is checked as "amq.gen-" (its name is made up
                // after the check): a pattern like `amq\.gen-.*` allows them.
                if !d.passive {
                    let name = match d.queue.as_str() {
                        "" => "amq.gen-",
                        named => named,
                    };
                    self.allow(Access::Configure, Resource::Queue(name))?;
                }
                let declared = vhost
                    .declare_queue(
                        d.queue.as_str(),
                        d.durable,
                        d.exclusive.then_some(conn),
                        d.auto_delete,
                        d.passive,
                        table_from_wire(&d.arguments),
                        conn,
                    )
                    .await?;
                self.last_queue = Some(declared.name.clone());
                Ok(self.answer(
                    d.nowait,
                    AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                        queue: short(&declared.name),
                        message_count: u32::try_from(declared.messages).unwrap_or(u32::MAX),
                        consumer_count: declared.consumers,
                    })),
                ))
            }
            queue::AMQPMethod::Bind(b) => {
                let queue = self.queue_name(b.queue.as_str())?;
                // Both empty: the last declared queue, and its name as the key.
                let routing_key =
                    if b.queue.as_str().is_empty() && b.routing_key.as_str().is_empty() {
                        short(&queue)
                    } else {
                        b.routing_key
                    };
                let destination = Destination::Queue(queue);
                let binding =
                    self.binding(b.exchange.as_str(), destination, &routing_key, &b.arguments)?;
                vhost.bind(binding, conn).await?;
                Ok(self.answer(
                    b.nowait,
                    AMQPClass::Queue(queue::AMQPMethod::BindOk(queue::BindOk {})),
                ))
            }
            queue::AMQPMethod::Unbind(b) => {
                let destination = Destination::Queue(self.queue_name(b.queue.as_str())?);
                let binding = self.binding(
                    b.exchange.as_str(),
                    destination,
                    &b.routing_key,
                    &b.arguments,
                )?;
                vhost.unbind(binding, conn).await?;
                Ok(self.reply(AMQPClass::Queue(queue::AMQPMethod::UnbindOk(
                    queue::UnbindOk {},
                ))))
            }
            queue::AMQPMethod::Purge(p) => {
                let queue = self.queue_name(p.queue.as_str())?;
                self.allow(Access::Read, Resource::Queue(&queue))?;
                let n = vhost.purge_queue(&queue, conn).await?;
                Ok(self.answer(
                    p.nowait,
                    AMQPClass::Queue(queue::AMQPMethod::PurgeOk(queue::PurgeOk {
                        message_count: u32::try_from(n).unwrap_or(u32::MAX),
                    })),
                ))
            }
            queue::AMQPMethod::Delete(d) => {
                let queue = self.queue_name(d.queue.as_str())?;
                self.allow(Access::Configure, Resource::Queue(&queue))?;
                let n = vhost
                    .delete_queue(&queue, d.if_unused, d.if_empty, conn)
                    .await?;
                Ok(self.answer(
                    d.nowait,
                    AMQPClass::Queue(queue::AMQPMethod::DeleteOk(queue::DeleteOk {
                        message_count: u32::try_from(n).unwrap_or(u32::MAX),
                    })),
                ))
            }
            other => Err(unexpected_method(AMQPClass::Queue(other))),
        }
    }

    async fn basic(
        &mut self,
        m: basic::AMQPMethod,
        vhost: &VHost,
        conn: ChannelId,
    ) -> Result<Outcome, AmqpError> {
        match m {
            basic::AMQPMethod::Publish(p) => {
                if p.immediate {
                    return Err(AmqpError::connection(
                        code::NOT_IMPLEMENTED,
                        "NOT_IMPLEMENTED - immediate=true",
                    ));
                }
                self.allow_publish(p.exchange.as_str())?;
                self.incoming = Some(Incoming {
                    exchange: p.exchange.as_str().to_string(),
                    routing_key: p.routing_key.as_str().to_string(),
                    mandatory: p.mandatory,
                    header: None,
                    body: Vec::new(),
                });
                Ok(Outcome::Send(Vec::new()))
            }
            basic::AMQPMethod::Qos(q) => {
                // prefetch_size is not supported by RabbitMQ either (ignored).
                let count = u32::from(q.prefetch_count);
                if q.global {
                    self.channel_prefetch.set_limit(count);
                } else {
                    self.prefetch = count;
                }
                let ok = AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {}));
                Ok(self.reply_and_release(Some(ok)))
            }
            basic::AMQPMethod::Consume(c) => {
                let queue = self.queue_name(c.queue.as_str())?;
                self.allow(Access::Read, Resource::Queue(&queue))?;
                let handle = vhost.queue_for(&queue, conn)?;
                let tag = if c.consumer_tag.as_str().is_empty() {
                    format!("amq.ctag-{}-{}", self.core.id(), self.consumers.len() + 1)
                } else {
                    c.consumer_tag.as_str().to_string()
                };
                if self.consumers.contains_key(&tag) {
                    return Err(AmqpError::connection(
                        code::NOT_ALLOWED,
                        format!("NOT_ALLOWED - attempt to reuse consumer tag '{tag}'"),
                    ));
                }
                // Register first so that deliveries that follow find the consumer; the
                // consume-ok goes out before them because the connection sends this
                // method's frames before it looks at queue events again.
                self.consumers.insert(tag.clone(), handle.name().clone());
                self.core.touch(handle.name().clone());
                let request = ConsumeRequest {
                    tag: tag.as_str().into(),
                    channel: self.core.id(),
                    sink: self.sink.clone(),
                    prefetch: self.channel_prefetch.for_consumer(self.prefetch),
                    no_ack: c.no_ack,
                    exclusive: c.exclusive,
                };
                if let Err(e) = handle.consume(request).await {
                    self.consumers.remove(&tag);
                    return Err(e.into());
                }
                Ok(if c.nowait {
                    Outcome::Send(Vec::new())
                } else {
                    self.reply(AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(
                        basic::ConsumeOk {
                            consumer_tag: short(&tag),
                        },
                    )))
                })
            }
            basic::AMQPMethod::Cancel(c) => {
                let tag = c.consumer_tag.as_str();
                if let Some(queue) = self.consumers.remove(tag) {
                    if let Some(handle) = vhost.queue(&queue) {
                        handle.cancel(self.core.id(), tag.into()).await?;
                    }
                    self.core
                        .give_back(self.channel_prefetch.take_consumer(tag));
                }
                Ok(if c.nowait {
                    Outcome::Send(Vec::new())
                } else {
                    self.reply(AMQPClass::Basic(basic::AMQPMethod::CancelOk(
                        basic::CancelOk {
                            consumer_tag: c.consumer_tag,
                        },
                    )))
                })
            }
            basic::AMQPMethod::Get(g) => {
                let queue = self.queue_name(g.queue.as_str())?;
                self.allow(Access::Read, Resource::Queue(&queue))?;
                let handle = vhost.queue_for(&queue, conn)?;
                self.core.touch(handle.name().clone());
                match handle.get(self.core.id(), g.no_ack).await? {
                    None => Ok(self.reply(AMQPClass::Basic(basic::AMQPMethod::GetEmpty(
                        basic::GetEmpty {},
                    )))),
                    Some((d, remaining)) => {
                        let tag = self.core.track(&d, g.no_ack);
                        let head = AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
                            delivery_tag: tag,
                            redelivered: d.redelivered,
                            exchange: short(&d.message.exchange),
                            routing_key: short(&d.message.routing_key),
                            message_count: u32::try_from(remaining).unwrap_or(u32::MAX),
                        }));
                        let mut out = Vec::new();
                        self.content_frames(head, &d.message, &mut out);
                        Ok(Outcome::Send(out))
                    }
                }
            }
            basic::AMQPMethod::Ack(a) => self.settle(Settle {
                delivery_tag: a.delivery_tag,
                multiple: a.multiple,
                kind: SettleKind::Ack,
            }),
            basic::AMQPMethod::Nack(n) => self.settle(Settle {
                delivery_tag: n.delivery_tag,
                multiple: n.multiple,
                kind: SettleKind::Reject { requeue: n.requeue },
            }),
            basic::AMQPMethod::Reject(r) => self.settle(Settle {
                delivery_tag: r.delivery_tag,
                multiple: false,
                kind: SettleKind::Reject { requeue: r.requeue },
            }),
            basic::AMQPMethod::Recover(r) => {
                self.recover(r.requeue)?;
                Ok(self.reply(AMQPClass::Basic(basic::AMQPMethod::RecoverOk(
                    basic::RecoverOk {},
                ))))
            }
            basic::AMQPMethod::RecoverAsync(r) => {
                self.recover(r.requeue)?;
                Ok(Outcome::Send(Vec::new()))
            }
            other => Err(unexpected_method(AMQPClass::Basic(other))),
        }
    }

    /// 403 unless this channel's user has `access` to `resource` in its vhost.
    fn allow(&self, access: Access, resource: Resource<'_>) -> Result<(), AmqpError> {
        let vhost = self.core.vhost().name().to_string();
        // The default exchange is "amq.default" to permissions, as in RabbitMQ.
        let resource = match resource {
            Resource::Exchange("") => Resource::Exchange("amq.default"),
            other => other,
        };
        self.access
            .check(&self.user, &vhost, access, resource)
            .map_err(AmqpError::from)
    }

    /// Write access to the exchange of a publish, checked once per exchange for as
    /// long as no user or permission changes (a publish is checked against the
    /// permissions in force when it arrives, as in RabbitMQ, which caches too).
    fn allow_publish(&mut self, exchange: &str) -> Result<(), AmqpError> {
        let generation = self.access.generation();
        if let Some((cached, at)) = &self.publish_allowed {
            if *at == generation && cached == exchange {
                return Ok(());
            }
        }
        self.allow(Access::Write, Resource::Exchange(exchange))?;
        self.publish_allowed = Some((exchange.to_string(), generation));
        Ok(())
    }

    /// The binding of a bind or unbind, after RabbitMQ's checks: write access to the
    /// destination, read access to the source exchange.
    fn binding(
        &self,
        source: &str,
        destination: Destination,
        routing_key: &ShortString,
        arguments: &WireTable,
    ) -> Result<Binding, AmqpError> {
        let target = match &destination {
            Destination::Queue(q) => Resource::Queue(q),
            Destination::Exchange(x) => Resource::Exchange(x),
        };
        self.allow(Access::Write, target)?;
        self.allow(Access::Read, Resource::Exchange(source))?;
        Ok(Binding {
            source: source.to_string(),
            destination,
            routing_key: routing_key.as_str().to_string(),
            arguments: table_from_wire(arguments),
        })
    }

    /// A queue name from a method: empty means the queue last declared on this channel.
    fn queue_name(&self, name: &str) -> Result<String, AmqpError> {
        if !name.is_empty() {
            return Ok(name.to_string());
        }
        self.last_queue.clone().ok_or_else(|| {
            AmqpError::channel(code::NOT_FOUND, "NOT_FOUND - no previously declared queue")
        })
    }

    fn recover(&mut self, requeue: bool) -> Result<(), AmqpError> {
        if !requeue {
            return Err(AmqpError::connection(
                code::NOT_IMPLEMENTED,
                "NOT_IMPLEMENTED - requeue=false",
            ));
        }
        self.core.requeue_unsettled();
        self.core.give_back(self.channel_prefetch.take_all());
        Ok(())
    }

    fn settle(&mut self, settle: Settle) -> Result<Outcome, AmqpError> {
        if self.tx {
            // Checked now (an unknown tag fails at once, counting the acks already
            // in the transaction), applied at commit.
            self.tx_settles.push(settle);
            if let Err(e) = self.core.check_settle(&self.tx_settles) {
                self.tx_settles.pop();
                return Err(e.into());
            }
            return Ok(Outcome::Send(Vec::new()));
        }
        self.core.settle(&[settle])?;
        Ok(self.reply_and_release(None))
    }

    async fn tx(&mut self, m: tx::AMQPMethod) -> Result<Outcome, AmqpError> {
        match m {
            tx::AMQPMethod::Select(_) => {
                if self.confirm {
                    return Err(AmqpError::channel(
                        code::PRECONDITION_FAILED,
                        "PRECONDITION_FAILED - cannot switch from confirm to tx mode",
                    ));
                }
                self.tx = true;
                Ok(self.reply(AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {}))))
            }
            tx::AMQPMethod::Commit(_) => {
                self.no_tx("commit")?;
                let settles = std::mem::take(&mut self.tx_settles);
                self.core.settle(&settles)?;
                self.ready.append(&mut self.tx_publishes);
                if let Some(Some((routed, _))) = self.route_ready() {
                    // Commit-ok only once every publish of the transaction is enqueued.
                    for outcome in routed.await {
                        if let PublishOutcome::Failed(e) = outcome {
                            return Err(e.into());
                        }
                    }
                }
                let ok = AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {}));
                Ok(self.reply_and_release(Some(ok)))
            }
            tx::AMQPMethod::Rollback(_) => {
                self.no_tx("rollback")?;
                self.tx_settles.clear();
                self.tx_publishes.clear();
                Ok(self.reply(AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {}))))
            }
            other => Err(unexpected_method(AMQPClass::Tx(other))),
        }
    }

    fn no_tx(&self, what: &str) -> Result<(), AmqpError> {
        if self.tx {
            Ok(())
        } else {
            Err(AmqpError::channel(
                code::PRECONDITION_FAILED,
                format!("PRECONDITION_FAILED - channel is not transactional ({what})"),
            ))
        }
    }
}

fn unexpected_method(class: AMQPClass) -> AmqpError {
    AmqpError::connection(
        code::COMMAND_INVALID,
        format!(
            "COMMAND_INVALID - method {}.{} is not one a client sends",
            class.get_amqp_class_id(),
            class.get_amqp_method_id()
        ),
    )
}

/// A channel error as the frames that close the channel.
pub fn close_frame(number: u16, e: &ChannelError) -> AMQPFrame {
    AMQPFrame::Method(
        number,
        AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
            reply_code: e.code,
            reply_text: short(&e.text),
            class_id: e.class_id,
            method_id: e.method_id,
        })),
    )
}
