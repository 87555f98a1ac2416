//! The basic class: a publish and the content frames that complete it, routing the
//! completed publishes of a channel as one batch; qos (per consumer and channel-wide),
//! consume, cancel, get, ack, nack, reject and recover; deliveries to consumers.

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame};
use amq_protocol::protocol::{basic, AMQPClass};
use bytes::Bytes;
use warren_access::{Access, Resource};
use warren_actors::channel::{PublishOutcome, Settle, SettleKind};
use warren_actors::delivery::{ChannelId, QueueDelivery};
use warren_actors::error::BrokerError;
use warren_actors::message::Message;
use warren_actors::queue::{ConsumeRequest, Qos};
use warren_actors::vhost::{VHost, REPLY_TO};

use super::{unexpected_method, AmqpChannel, Incoming, Outcome, Ready};
use crate::codec::{write_body, write_frame};
use crate::convert::{properties_from_wire, properties_to_wire, short, table_from_wire};
use crate::error::AmqpError;

/// The largest message body accepted (RabbitMQ's default `max_message_size`).
pub const MAX_MESSAGE_BYTES: u64 = 128 * 1024 * 1024;

impl AmqpChannel {
    // ----- basic.publish and its content ------------------------------------------

    /// A content header frame arrived.
    pub fn header(&mut self, header: AMQPContentHeader) -> Result<(), AmqpError> {
        if self.incoming.as_ref().is_none_or(|i| i.header.is_some()) {
            return Err(AmqpError::ContentWithoutPublish {
                frame: "content header",
                channel: self.number,
            });
        }
        if header.class_id != 60 {
            return Err(AmqpError::ContentClass {
                class_id: header.class_id,
            });
        }
        if header.body_size > MAX_MESSAGE_BYTES {
            self.incoming = None;
            return Err(AmqpError::MessageTooLarge {
                size: header.body_size,
                max: MAX_MESSAGE_BYTES,
            }
            .at(60, 40));
        }
        let mut properties = properties_from_wire(&header.properties);
        if let Err(e) = self.check_properties(&properties) {
            // The publish is dropped with the channel.
            self.incoming = None;
            return Err(e.at(60, 40));
        }
        if properties.reply_to.as_deref() == Some(REPLY_TO) {
            // Direct reply-to: the answer comes to this channel's reply consumer.
            match &self.reply {
                Some((_, address)) => properties.reply_to = Some(address.clone()),
                None => {
                    self.incoming = None;
                    return Err(AmqpError::Broker(BrokerError::precondition_failed(
                        "PRECONDITION_FAILED - fast reply consumer does not exist",
                    ))
                    .at(60, 40));
                }
            }
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
                return Err(AmqpError::UserIdMismatch {
                    user_id: user_id.clone(),
                    user: self.user.to_string(),
                });
            }
        }
        if let Some(expiration) = &p.expiration {
            if expiration.parse::<u64>().is_err() {
                return Err(AmqpError::InvalidExpiration {
                    expiration: expiration.clone(),
                });
            }
        }
        Ok(())
    }

    /// A content body frame arrived.
    pub fn body(&mut self, data: Vec<u8>) -> Result<(), AmqpError> {
        let Some(incoming) = self.incoming.as_mut() else {
            return Err(AmqpError::ContentWithoutPublish {
                frame: "content body",
                channel: self.number,
            });
        };
        let Some((size, _)) = &incoming.header else {
            return Err(AmqpError::BodyBeforeHeader);
        };
        if incoming.body.len() as u64 + data.len() as u64 > *size {
            return Err(AmqpError::BodyTooLong { announced: *size });
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
    /// How many complete publishes wait to be routed.
    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }

    /// Whether a publish waits for its header or body (a method now is an error).
    pub fn expects_content(&self) -> bool {
        self.incoming.is_some()
    }

    /// The publish's content is all here: it waits to be routed (or for tx.commit).
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
        self.count(1, |c| &c.publish);
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
    ///
    /// In a cluster, a batch with a message that would go nowhere waits until this
    /// node has caught up with the cluster's metadata, then is routed whole.
    #[allow(clippy::type_complexity)]
    pub async fn route_ready(
        &mut self,
    ) -> Option<
        Option<(
            impl std::future::Future<Output = Vec<PublishOutcome>> + Send + 'static,
            Vec<(Option<u64>, Option<Message>)>,
        )>,
    > {
        self.route(false).await
    }

    /// [`Self::route_ready`]; `committing` (tx.commit) wants the outcomes whatever
    /// the publishes are, as confirm mode does: commit-ok waits for them.
    #[allow(clippy::type_complexity)]
    pub(super) async fn route(
        &mut self,
        committing: bool,
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
        let want_outcomes = self.confirm || committing;
        let outcomes = self
            .core
            .publish_in_order(batch, want_outcomes, Some(&self.in_flight))
            .await;
        Some(outcomes.map(|outcomes| (outcomes, answers)))
    }

    // ----- methods ----------------------------------------------------------------

    /// One method of the basic class.
    pub(super) async fn basic(
        &mut self,
        m: basic::AMQPMethod,
        vhost: &VHost,
        conn: ChannelId,
    ) -> Result<Outcome, AmqpError> {
        match m {
            basic::AMQPMethod::Publish(p) => {
                if p.immediate {
                    return Err(AmqpError::NotImplemented {
                        what: "immediate=true",
                    });
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
                let count = u32::from(q.prefetch_count);
                if q.global {
                    self.channel_prefetch.set_limit(count);
                } else {
                    self.prefetch = count;
                }
                if let Some(entry) = self.entry() {
                    let gauge = if q.global {
                        &entry.global_prefetch
                    } else {
                        &entry.prefetch
                    };
                    gauge.store(count, std::sync::atomic::Ordering::Relaxed);
                }
                let ok = AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {}));
                Ok(self.reply_and_release(Some(ok)))
            }
            basic::AMQPMethod::Consume(c) if c.queue.as_str() == REPLY_TO => {
                self.consume_replies(c, vhost)
            }
            basic::AMQPMethod::Consume(c) => {
                let queue = self.queue_name(c.queue.as_str())?;
                self.allow(Access::Read, Resource::Queue(&queue))?;
                let handle = vhost.find_queue(&queue, conn).await?;
                let tag = self.consumer_tag(c.consumer_tag.as_str());
                if self.consumers.contains_key(&tag) {
                    return Err(AmqpError::ConsumerTagInUse { tag });
                }
                // Register first so that deliveries that follow find the consumer; the
                // consume-ok goes out before them because the connection sends this
                // method's frames before it looks at queue events again.
                let consumer = crate::registry::ConsumerEntry {
                    queue: queue.clone(),
                    ack_required: !c.no_ack,
                    exclusive: c.exclusive,
                    prefetch: self.prefetch,
                    arguments: table_from_wire(&c.arguments),
                };
                self.add_consumer_entry(&tag, handle.name().clone(), Some(consumer));
                self.core.touch(handle.name().clone());
                let prefetch = self.channel_prefetch.for_consumer(self.prefetch);
                // A consumer that nothing else holds back (no acks, or no prefetch)
                // gets a window of what this connection has not written yet.
                let windowed = c.no_ack || prefetch == 0;
                let request = ConsumeRequest {
                    tag: tag.as_str().into(),
                    channel: self.core.id(),
                    sink: self.sink.clone(),
                    prefetch,
                    no_ack: c.no_ack,
                    exclusive: c.exclusive,
                    priority: consumer_priority(&c.arguments, &queue, vhost.name())?,
                    origin: None,
                    arguments: table_from_wire(&c.arguments),
                    qos: Qos {
                        consumer: self.prefetch,
                        channel: self.channel_prefetch.limit(),
                    },
                    window: if windowed {
                        warren_actors::queue::WRITE_WINDOW
                    } else {
                        0
                    },
                    records: false,
                };
                if windowed {
                    let entry = super::Windowed {
                        queue: handle.clone(),
                        written: 0,
                    };
                    self.windowed.insert(tag.as_str().into(), entry);
                }
                if let Err(e) = handle.consume(request).await {
                    self.remove_consumer_entry(&tag);
                    return Err(e.into());
                }
                Ok(self.consume_ok(&tag, c.nowait))
            }
            basic::AMQPMethod::Cancel(c) => {
                let tag = c.consumer_tag.as_str();
                if let Some(queue) = self.remove_consumer_entry(tag) {
                    if let Some((_, address)) = self.reply.take_if(|(t, _)| t == tag) {
                        vhost.end_reply_consumer(&address);
                    } else if let Some(handle) = vhost.queue(&queue) {
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
                let handle = vhost.find_queue(&queue, conn).await?;
                self.core.touch(handle.name().clone());
                match handle.get(self.core.id(), g.no_ack).await? {
                    None => Ok(self.reply(AMQPClass::Basic(basic::AMQPMethod::GetEmpty(
                        basic::GetEmpty {},
                    )))),
                    Some((d, remaining)) => {
                        let tag = self.core.track(&d, g.no_ack);
                        if g.no_ack {
                            self.count(1, |c| &c.get_no_ack);
                        } else {
                            self.count(1, |c| &c.get);
                            self.note_unacked();
                        }
                        if d.redelivered {
                            self.count(1, |c| &c.redeliver);
                        }
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
    /// The consumer tag asked for, or one the node makes (never made twice on a
    /// channel: a count, not the number of consumers, which falls after a cancel).
    fn consumer_tag(&mut self, asked: &str) -> String {
        if !asked.is_empty() {
            return asked.to_string();
        }
        self.tags_made += 1;
        format!("amq.ctag-{}-{}", self.core.id(), self.tags_made)
    }

    /// basic.consume from `amq.rabbitmq.reply-to`: the channel's direct-reply
    /// consumer (one per channel, no-ack, as on RabbitMQ).
    fn consume_replies(&mut self, c: basic::Consume, vhost: &VHost) -> Result<Outcome, AmqpError> {
        let refuse = |text: &str| {
            Err(AmqpError::Broker(BrokerError::precondition_failed(
                format!("PRECONDITION_FAILED - {text}"),
            )))
        };
        if !c.no_ack {
            return refuse("reply consumer cannot acknowledge");
        }
        if self.reply.is_some() {
            return refuse("reply consumer already set");
        }
        let tag = self.consumer_tag(c.consumer_tag.as_str());
        if self.consumers.contains_key(&tag) {
            return Err(AmqpError::ConsumerTagInUse { tag });
        }
        let address =
            vhost.add_reply_consumer(self.core.id(), tag.as_str().into(), self.sink.clone());
        let consumer = crate::registry::ConsumerEntry {
            queue: REPLY_TO.to_string(),
            ack_required: false,
            exclusive: false,
            prefetch: 0,
            arguments: Default::default(),
        };
        self.add_consumer_entry(&tag, REPLY_TO.into(), Some(consumer));
        self.reply = Some((tag.clone(), address));
        Ok(self.consume_ok(&tag, c.nowait))
    }

    /// basic.recover: every unsettled delivery goes back to its queue (requeue=true
    /// only, as in RabbitMQ).
    /// The answer to a `basic.consume` that started consumer `tag`.
    fn consume_ok(&self, tag: &str, nowait: bool) -> Outcome {
        if nowait {
            return Outcome::Send(Vec::new());
        }
        self.reply(AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(
            basic::ConsumeOk {
                consumer_tag: short(tag),
            },
        )))
    }

    fn recover(&mut self, requeue: bool) -> Result<(), AmqpError> {
        if !requeue {
            return Err(AmqpError::NotImplemented {
                what: "requeue=false",
            });
        }
        self.core.requeue_unsettled();
        self.core.give_back(self.channel_prefetch.take_all());
        self.note_unacked();
        Ok(())
    }

    /// basic.ack, nack or reject: applied now, or at tx.commit on a transactional
    /// channel.
    pub(super) fn settle(&mut self, settle: Settle) -> Result<Outcome, AmqpError> {
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
        let before = self.core.unsettled();
        let ack = matches!(settle.kind, SettleKind::Ack);
        self.core.settle(&[settle])?;
        let settled = before.saturating_sub(self.core.unsettled()) as u64;
        if ack {
            self.count(settled, |c| &c.ack);
        } else {
            self.count(settled, |c| &c.reject);
        }
        self.note_unacked();
        Ok(self.reply_and_release(None))
    }

    // ----- deliveries -------------------------------------------------------------

    /// Frames for deliveries from a queue (those the channel-wide prefetch admits now;
    /// it holds the others).
    /// (Deliveries of windowed consumers are counted: their queues are told once the
    /// output goes to the writer, [`report_written`](Self::report_written).)
    pub fn deliver(&mut self, deliveries: Vec<QueueDelivery>, out: &mut Vec<u8>) {
        let now = self
            .channel_prefetch
            .admit(deliveries, self.core.unsettled());
        self.write_deliveries(now, out);
    }

    /// basic.deliver with its content, for each delivery, each with its delivery tag.
    fn write_deliveries(&mut self, deliveries: Vec<QueueDelivery>, out: &mut Vec<u8>) {
        if deliveries.is_empty() {
            return;
        }
        let (mut acked, mut no_ack, mut redelivered) = (0, 0, 0);
        for d in deliveries {
            if let Some(w) = self.windowed.get_mut(&d.consumer_tag) {
                w.written += 1;
            }
            if d.no_ack {
                no_ack += 1;
            } else {
                acked += 1;
            }
            redelivered += u64::from(d.redelivered);
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
        if let Some(entry) = self.entry() {
            let counts = &entry.counts;
            crate::registry::bump(&counts.deliver, acked);
            crate::registry::bump(&counts.deliver_no_ack, no_ack);
            crate::registry::bump(&counts.redeliver, redelivered);
        }
        self.note_unacked();
    }

    /// The node ended a consumer: tell the client (consumer_cancel_notify).
    pub fn consumer_cancelled(&mut self, tag: &str) -> Option<AMQPFrame> {
        self.remove_consumer_entry(tag)?;
        self.core
            .give_back(self.channel_prefetch.take_consumer(tag));
        Some(AMQPFrame::Method(
            self.number,
            AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                consumer_tag: short(tag),
                nowait: true,
            })),
        ))
    }

    /// The reply, followed by the held deliveries the channel-wide prefetch now admits
    /// (after settlements, or a raised limit).
    pub(super) fn reply_and_release(&mut self, reply: Option<AMQPClass>) -> Outcome {
        let mut out = Vec::new();
        self.write_reply_and_release(reply, &mut out);
        Outcome::Send(out)
    }

    /// [`Self::reply_and_release`], appended to `out`.
    pub(super) fn write_reply_and_release(&mut self, reply: Option<AMQPClass>, out: &mut Vec<u8>) {
        if let Some(class) = reply {
            write_frame(&AMQPFrame::Method(self.number, class), out);
        }
        let released = self.channel_prefetch.release(self.core.unsettled());
        self.write_deliveries(released, out);
    }

    /// basic.return of a mandatory message no queue took (312 NO_ROUTE), with its
    /// content.
    pub fn write_return(&self, message: &Message, out: &mut Vec<u8>) {
        self.count(1, |c| &c.return_unroutable);
        let head = AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
            reply_code: 312,
            reply_text: short("NO_ROUTE"),
            exchange: short(&message.exchange),
            routing_key: short(&message.routing_key),
        }));
        self.content_frames(head, message, out);
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
}

/// A consumer's `x-priority` (0 when absent): an integer, else 406 as RabbitMQ.
fn consumer_priority(
    arguments: &amq_protocol::types::FieldTable,
    queue: &str,
    vhost: &str,
) -> Result<i32, AmqpError> {
    use amq_protocol::types::AMQPValue;
    let value = match arguments.inner().get(&short("x-priority")) {
        None => return Ok(0),
        Some(v) => v,
    };
    let priority = match value {
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongLongInt(v) => Some(*v),
        _ => None,
    };
    match priority.and_then(|p| i32::try_from(p).ok()) {
        Some(p) => Ok(p),
        None => Err(AmqpError::Broker(BrokerError::precondition_failed(format!(
            "PRECONDITION_FAILED - invalid arg 'x-priority' for queue '{queue}' in vhost '{vhost}': an integer is expected, not {:?}",
            value.get_type()
        )))),
    }
}
