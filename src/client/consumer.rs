//! Consuming with the client handle: a stream of deliveries that are settled by hand.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
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
/// with the node once each of its records is acked. A multiple ack of a record
/// settles the records before it in its run and the runs before its run, never
/// the records after it (a consumer group's offset moves only over what was acked).
/// A nack or reject of a record is refused by the node, as for any stream delivery.
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
    settle: Settler,
    /// The run it came in and its place there, if it came in one.
    run: Option<(Arc<RunSettle>, usize)>,
}

/// Where a client's settlements go, and the runs it holds unsettled.
#[derive(Clone, Debug)]
pub(crate) struct Settler {
    pub(crate) tx: UnboundedSender<SettleItem>,
    /// The tags of runs handed to the application and not settled with the node
    /// (neither on their own nor by a multiple settle).
    runs: Arc<Mutex<BTreeSet<u64>>>,
}

impl Settler {
    pub(crate) fn new(tx: UnboundedSender<SettleItem>) -> Settler {
        Settler {
            tx,
            runs: Arc::default(),
        }
    }

    fn runs(&self) -> MutexGuard<'_, BTreeSet<u64>> {
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn send(&self, item: SettleItem) -> Result<(), ClientError> {
        self.tx
            .send(item)
            .map_err(|_| ClientError::Disconnected("the client is closed".into()))
    }
}

/// Which records of one run are settled.
#[derive(Debug)]
struct RunSettle {
    state: Mutex<RunState>,
}

#[derive(Debug)]
struct RunState {
    settled: Vec<bool>,
    left: usize,
}

impl RunSettle {
    /// Marks the records `at` (or, for a multiple settle, every one up to it) as
    /// settled; whether that settled the last of them.
    fn settle(&self, at: usize, multiple: bool) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let from = if multiple { 0 } else { at };
        let was = state.left;
        for i in from..=at {
            if !std::mem::replace(&mut state.settled[i], true) {
                state.left -= 1;
            }
        }
        was > 0 && state.left == 0
    }
}

/// A run of a stream's records being handed out one by one.
pub(crate) struct RunOut {
    tag: u64,
    consumer_tag: String,
    queue: String,
    next_offset: u64,
    at: usize,
    records: std::vec::IntoIter<SharedMessage>,
    settle: Arc<RunSettle>,
}

impl RunOut {
    fn new(run: Records, settler: &Settler) -> RunOut {
        settler.runs().insert(run.delivery_tag);
        let count = run.messages.len();
        RunOut {
            tag: run.delivery_tag,
            settle: Arc::new(RunSettle {
                state: Mutex::new(RunState {
                    settled: vec![false; count],
                    left: count,
                }),
            }),
            consumer_tag: run.consumer_tag,
            queue: run.queue,
            next_offset: run.first_offset,
            at: 0,
            records: run.messages.into_iter(),
        }
    }

    /// The next record as a delivery, its offset in `x-stream-offset` as a
    /// per-record delivery carries it.
    fn next(&mut self, settle: Settler) -> Option<Delivery> {
        let message = Arc::unwrap_or_clone(self.records.next()?);
        let offset = self.next_offset;
        self.next_offset += 1;
        let at = self.at;
        self.at += 1;
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
            run: Some((self.settle.clone(), at)),
        })
    }
}

impl Delivery {
    pub(crate) fn new(d: WireDelivery, settle: Settler) -> Self {
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
        let tag = self.delivery_tag;
        let settle = |delivery_tag, multiple| Settle {
            delivery_tag,
            multiple,
            kind,
        };
        if self.run.is_none() && !multiple {
            // A single delivery's own settle touches no run: no lock.
            return self.settle.send(SettleItem::Settle(settle(tag, false)));
        }
        // Chosen and sent under the lock, so that what two deliveries send reaches
        // the settler in the order they chose it.
        let mut runs = self.settle.runs();
        let Some((run, at)) = &self.run else {
            runs.retain(|t| *t > tag);
            return self.settle.send(SettleItem::Settle(settle(tag, multiple)));
        };
        if kind != SettleKind::Ack {
            // Streams refuse nacks and rejects: the node answers this one as it
            // answers one for a single delivery.
            return self.settle.send(SettleItem::Settle(settle(tag, false)));
        }
        if run.settle(*at, multiple) {
            // The run's last record: the run is settled, with what came before it
            // for a multiple settle.
            if runs.remove(&tag) {
                if multiple {
                    runs.retain(|t| *t > tag);
                }
                return self.settle.send(SettleItem::Run(settle(tag, multiple)));
            }
            // (Settled already by a multiple settle of a later delivery.)
            return Ok(());
        }
        if multiple {
            // What came before the run: up to the last run still unsettled before
            // it (a tag the node still holds, so the node takes the settle).
            if let Some(&before) = runs.range(..tag).next_back() {
                runs.retain(|t| *t > before);
                return self.settle.send(SettleItem::Settle(settle(before, true)));
            }
        }
        Ok(())
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
                    self.run = Some(RunOut::new(run, &self.client.settle_sender()));
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
    /// settles them or closes. What the application settled before the call reaches
    /// the node before the cancel does: a stream forgets a cancelled consumer's
    /// deliveries, and a group's offset moves only over the acks it got.
    pub async fn cancel(mut self) -> Result<(), ClientError> {
        self.ended = true;
        self.client.settles_sent().await;
        self.client.cancel(&self.tag).await
    }
}

impl futures_core::Stream for Consumer {
    type Item = Result<Delivery, ClientError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_event(cx)
    }
}
