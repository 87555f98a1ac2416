//! Consuming with the client handle: a stream of deliveries that are settled by hand.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use warren_actors::message::{FieldTable, FieldValue, Properties, SharedMessage};
use warren_cluster::protocol::{Delivery as WireDelivery, Records, Settle, SettleKind};
use warren_streams::offset::STREAM_OFFSET_ARG;

use super::error::ClientError;
use super::inbox::ConsumerEvent;
use super::{Client, SettleItem};

/// A message delivered to a consumer or got with [`Client::get`].
///
/// Unless the consumer was started with `no_ack`, settle it with [`Delivery::ack`],
/// [`Delivery::nack`] or [`Delivery::reject`]; until then it counts against the
/// consumer's prefetch and goes back to its queue if the client goes away.
///
/// A stream's records come in runs (consecutive records of a partition, delivered
/// together): the records of a run share a `delivery_tag`, and the run is settled
/// with the node once each of its records is settled, or by a multiple settle of
/// any of them (a stream's settlements only give its consumer credit, and a
/// multiple one covers the whole run).
#[derive(Debug)]
pub struct Delivery {
    pub delivery_tag: u64,
    pub consumer_tag: String,
    pub queue: String,
    pub exchange: String,
    pub routing_key: String,
    /// The message was delivered before and not acked (requeued or recovered).
    pub redelivered: bool,
    pub properties: Properties,
    pub body: Bytes,
    settle: UnboundedSender<SettleItem>,
    /// The run it came in, if it did.
    run: Option<Arc<RunSettle>>,
}

/// What the records of one run share: how many are not settled yet.
#[derive(Debug)]
struct RunSettle {
    left: AtomicUsize,
}

/// A run of a stream's records being handed out one by one.
pub(crate) struct RunOut {
    tag: u64,
    consumer_tag: String,
    queue: String,
    next_offset: u64,
    records: std::vec::IntoIter<SharedMessage>,
    settle: Arc<RunSettle>,
}

impl RunOut {
    fn new(run: Records) -> RunOut {
        RunOut {
            tag: run.delivery_tag,
            settle: Arc::new(RunSettle {
                left: AtomicUsize::new(run.messages.len()),
            }),
            consumer_tag: run.consumer_tag,
            queue: run.queue,
            next_offset: run.first_offset,
            records: run.messages.into_iter(),
        }
    }

    /// The next record as a delivery, its offset in `x-stream-offset` as a
    /// per-record delivery carries it.
    fn next(&mut self, settle: UnboundedSender<SettleItem>) -> Option<Delivery> {
        let message = Arc::unwrap_or_clone(self.records.next()?);
        let offset = self.next_offset;
        self.next_offset += 1;
        let mut properties = message.properties;
        properties
            .headers
            .get_or_insert_with(FieldTable::new)
            .insert(
                STREAM_OFFSET_ARG.to_string(),
                FieldValue::I64(i64::try_from(offset).unwrap_or(i64::MAX)),
            );
        Some(Delivery {
            delivery_tag: self.tag,
            consumer_tag: self.consumer_tag.clone(),
            queue: self.queue.clone(),
            exchange: message.exchange,
            routing_key: message.routing_key,
            redelivered: false,
            properties,
            body: message.body,
            settle,
            run: Some(self.settle.clone()),
        })
    }
}

impl Delivery {
    pub(crate) fn new(d: WireDelivery, settle: UnboundedSender<SettleItem>) -> Self {
        Delivery {
            delivery_tag: d.delivery_tag,
            consumer_tag: d.consumer_tag,
            queue: d.queue,
            exchange: d.exchange,
            routing_key: d.routing_key,
            redelivered: d.redelivered,
            properties: d.properties,
            body: d.body,
            settle,
            run: None,
        }
    }

    fn send(&self, multiple: bool, kind: SettleKind) -> Result<(), ClientError> {
        let settle = Settle {
            delivery_tag: self.delivery_tag,
            multiple,
            kind,
        };
        let item = match &self.run {
            // (A multiple settle covers the whole run, and what came before it.)
            None => SettleItem::Settle(settle),
            Some(_) if multiple => SettleItem::Settle(settle),
            Some(run) => {
                if run.left.fetch_sub(1, Ordering::AcqRel) != 1 {
                    // Records of its run are still unsettled.
                    return Ok(());
                }
                SettleItem::Run(settle)
            }
        };
        self.settle
            .send(item)
            .map_err(|_| ClientError::Disconnected("the client is closed".into()))
    }

    /// The message is done with: the queue forgets it.
    pub fn ack(&self) -> Result<(), ClientError> {
        self.send(false, SettleKind::Ack)
    }

    /// Acks this delivery and every earlier unsettled one of this client. If an
    /// earlier multiple settle already covered this delivery (deliveries of several
    /// consumers read merged, as a stream's partitions are, do not come in tag
    /// order), it settles nothing more and is not sent.
    pub fn ack_multiple(&self) -> Result<(), ClientError> {
        self.send(true, SettleKind::Ack)
    }

    /// Gives the message back: to its queue (`requeue`, keeping its position), or to
    /// the queue's dead-letter exchange (or nowhere) otherwise.
    pub fn nack(&self, requeue: bool) -> Result<(), ClientError> {
        self.send(false, SettleKind::Reject { requeue })
    }

    /// Nacks this delivery and every earlier unsettled one of this client.
    pub fn nack_multiple(&self, requeue: bool) -> Result<(), ClientError> {
        self.send(true, SettleKind::Reject { requeue })
    }

    /// Same as [`Delivery::nack`] (AMQP's basic.reject).
    pub fn reject(&self, requeue: bool) -> Result<(), ClientError> {
        self.nack(requeue)
    }
}

/// A windowed consumer reports what the application took at least this often.
const REPORT_EVERY: u32 = 100;

/// A consumer: a stream of deliveries from one queue.
pub struct Consumer {
    pub(crate) tag: String,
    pub(crate) rx: UnboundedReceiver<ConsumerEvent>,
    pub(crate) client: Client,
    pub(crate) ended: bool,
    /// No-ack, or without a prefetch: its queue sends it at most a window of
    /// deliveries the application has not taken, so each one taken is reported under
    /// this tag (shared, not built per delivery).
    pub(crate) windowed: Option<Arc<str>>,
    /// Deliveries taken and not yet reported (see [`REPORT_EVERY`]).
    pub(crate) taken: u32,
    /// Deliveries taken since the consumer started.
    pub(crate) taken_total: u64,
    /// The run of records being handed out.
    pub(crate) run: Option<RunOut>,
}

impl Consumer {
    /// The consumer tag (given or made up by the node).
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The next delivery; `None` once the consumer is cancelled or the client closed.
    /// A consumer the node ended (its queue was deleted, say) yields one error first.
    pub async fn next(&mut self) -> Option<Result<Delivery, ClientError>> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    pub(crate) fn poll_event(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Delivery, ClientError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        loop {
            if let Some(run) = &mut self.run {
                match run.next(self.client.settle_sender()) {
                    Some(d) => return Poll::Ready(Some(Ok(self.taken_one(d)))),
                    None => self.run = None,
                }
            }
            return match self.rx.poll_recv(cx) {
                Poll::Ready(Some(ConsumerEvent::Records(run))) => {
                    self.run = Some(RunOut::new(run));
                    continue;
                }
                Poll::Ready(Some(ConsumerEvent::Delivery(d))) => {
                    let d = Delivery::new(d, self.client.settle_sender());
                    Poll::Ready(Some(Ok(self.taken_one(d))))
                }
                Poll::Ready(Some(ConsumerEvent::Cancelled(reason))) => {
                    self.ended = true;
                    Poll::Ready(Some(Err(ClientError::Disconnected(format!(
                        "consumer {} was cancelled by the node: {reason}",
                        self.tag
                    )))))
                }
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            };
        }
    }

    /// Counts a delivery the application takes, for a windowed consumer.
    fn taken_one(&mut self, d: Delivery) -> Delivery {
        if let Some(tag) = &self.windowed {
            // Reported in batches: at every REPORT_EVERY-th taken since the start (so
            // an application that took a round number has had all of it reported,
            // whenever reports went in between), or when nothing more has arrived
            // (the application would wait for the window to open).
            self.taken += 1;
            self.taken_total += 1;
            if self.taken_total.is_multiple_of(u64::from(REPORT_EVERY))
                || self.taken >= REPORT_EVERY
                || (self.rx.is_empty() && self.run.is_none())
            {
                let count = std::mem::take(&mut self.taken);
                let _ = d.settle.send(SettleItem::Taken(tag.clone(), count));
            }
        }
        d
    }

    /// Stops the consumer. Deliveries not yet settled stay with this client until it
    /// settles them or closes.
    pub async fn cancel(mut self) -> Result<(), ClientError> {
        self.ended = true;
        self.client.cancel(&self.tag).await
    }
}

impl futures_core::Stream for Consumer {
    type Item = Result<Delivery, ClientError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_event(cx)
    }
}
