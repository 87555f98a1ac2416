//! The stream producer: records batched per partition, as Kafka's producer batches
//! them (`batch.size`, `linger.ms`).
//!
//! A stream node appends what one publish frame brings to each partition as one chunk,
//! and pays per chunk (an actor message, a log write, a confirm) more than per
//! record. A producer that sends records round many partitions one at a time makes a
//! chunk per record: with 1 000 partitions a frame of 1 024 records became about
//! 1 000 one-record appends. So the producer keeps a batch per partition and queues it
//! for publishing, records in order, when
//!
//! - it holds [`ProducerOptions::batch_bytes`] of bodies (or 1 024 records),
//! - its first record has waited [`ProducerOptions::linger`] and no earlier batch of
//!   its partition is unconfirmed (under load a batch gathers for a round trip,
//!   as Kafka's do while their requests are in flight),
//! - nothing this producer sent is unconfirmed (a lone record goes at once: an idle
//!   producer adds no latency), or
//! - [`StreamProducer::flush`] is called, or the producer is dropped.
//!
//! A record without a key goes to the producer's current partition until a batch's
//! worth (`batch_bytes`, or 1 024 records) went there, then to the next partition in
//! turn, starting from a random one: Kafka's uniform sticky partitioner (KIP-794).
//! Round the partitions one record at a time, a batch of a stream of N partitions
//! fills N times slower, so with many partitions batches leave by the linger timer
//! nearly empty and the node pays per append for a record or two; sticking to a
//! partition for a batch fills batches as fast on 1 000 partitions as on one, and
//! spreads records as evenly over time.
//!
//! A record is encoded into its partition's batch when it is sent, as Kafka's
//! accumulator does, and the batch goes to the node as those bytes. With many
//! partitions a record waits long in its batch; held as a structure it had gone cold
//! by then, and copying it into the frame cost more than all the rest (27 % of the
//! producer's CPU with 1 000 partitions, `docs/2026-12-07-encoded-batches.md`).
//!
//! Records of one partition keep their order; a record's [`Confirm`] resolves once
//! its batch was sent and stored (the batch's records share one outcome).
//! Back-pressure is the client's: a record holds its permits, as many as its
//! encoding's bytes, from [`StreamProducer::send`] on, so batches waiting here count
//! toward what a client may have unconfirmed.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit};
use warren_actors::exchange::partition::partition_of;
use warren_actors::message::{FieldTable, FieldValue};
use warren_cluster::protocol::PublishRef;

use super::publisher::{BatchOutcome, EncodedBatch, SharedOutcome};
use super::stream::{Partition, KEY_HEADER};
use super::{Client, ClientError, Confirm, PublishOptions};

/// How a [`StreamProducer`] batches.
#[derive(Clone, Debug)]
pub struct ProducerOptions {
    /// A partition's batch is sent once its bodies reach this many bytes (Kafka's
    /// `batch.size`, 16 KiB by default, as Kafka's).
    pub batch_bytes: usize,
    /// A record waits at most this long for its batch to fill (Kafka's `linger.ms`;
    /// 5 ms by default, as Kafka 4's). A record sent while nothing of this producer is
    /// unconfirmed goes at once whatever this says.
    pub linger: Duration,
}

impl Default for ProducerOptions {
    fn default() -> Self {
        ProducerOptions {
            batch_bytes: 16 * 1024,
            linger: Duration::from_millis(5),
        }
    }
}

/// Records in one batch at most (one publish frame holds 1 024).
const BATCH_RECORDS: usize = 1024;

/// A batch is sent once its records' encodings reach this many bytes, whatever
/// [`ProducerOptions::batch_bytes`] says, as the client's frames of single
/// publishes close at 1 MiB (a frame is then at most this plus one record).
const BATCH_ENCODED_BYTES: usize = 1 << 20;

/// Batches of one partition the linger timer lets be unconfirmed at once (a full
/// batch goes whatever this says).
const LINGERED_IN_FLIGHT: usize = 1;

/// Publishes to a partitioned stream: by key (Kafka's partitioner), a batch's worth
/// to each partition in turn, or to a partition named; batched per partition (see
/// the module doc).
pub struct StreamProducer {
    stream: String,
    partitions: Vec<Partition>,
    /// Where records without a key go.
    sticky: Mutex<Sticky>,
    shared: Arc<Shared>,
    flusher: tokio::task::AbortHandle,
}

/// What the producer, its linger task and its confirm tasks share.
struct Shared {
    client: Client,
    options: ProducerOptions,
    state: Mutex<State>,
    /// Wakes the linger task when a batch starts.
    started: Notify,
    /// Wakes the linger task when a batch that waited for its partition's batch on
    /// the way is due before the time it sleeps to.
    rearm: Notify,
}

#[derive(Default)]
struct State {
    /// One batch per partition (by index).
    batches: Vec<Batch>,
    /// Each partition's batches sent and not yet confirmed (by index).
    in_flight: Vec<usize>,
    /// When the linger task wakes next (`None`: when a batch starts).
    wakes: Option<Instant>,
    /// Records waiting in batches.
    waiting: usize,
    /// Records sent and not yet confirmed.
    unconfirmed: usize,
}

impl State {
    /// When partition `index`'s batch may go by the linger timer: once its first
    /// record waited `linger`, if fewer than [`LINGERED_IN_FLIGHT`] of its batches
    /// are unconfirmed. (Under load a partition's records gather while its batch is
    /// on the way, as Kafka's do while its requests are in flight: with many
    /// partitions and keyed records, a batch then holds what came during a round
    /// trip instead of what came during the linger.) `None`: an empty batch, a
    /// batch waiting for its partition's batch on the way, or a linger too long to
    /// add to a time (never due).
    fn due(&self, index: usize, linger: Duration) -> Option<Instant> {
        if self.in_flight[index] >= LINGERED_IN_FLIGHT {
            return None;
        }
        self.batches[index].since?.checked_add(linger)
    }

    /// Whether partition `index`'s batch may go by the linger timer at `now`.
    fn lingered(&self, index: usize, now: Instant, linger: Duration) -> bool {
        self.due(index, linger).is_some_and(|due| now >= due)
    }
}

/// The partition records without a key go to, and what went there since it was
/// chosen.
struct Sticky {
    index: usize,
    bytes: usize,
    records: usize,
}

impl Sticky {
    /// The partition (index) of the next keyless record of `len` bytes of body, out
    /// of `partitions`: the current one, which it leaves once a batch's worth went
    /// there.
    fn place(&mut self, len: usize, partitions: usize, batch_bytes: usize) -> usize {
        let index = self.index;
        self.bytes += len;
        self.records += 1;
        if self.bytes >= batch_bytes || self.records >= BATCH_RECORDS {
            *self = Sticky {
                index: (index + 1) % partitions.max(1),
                bytes: 0,
                records: 0,
            };
        }
        index
    }
}

#[derive(Default)]
struct Batch {
    /// Its records, each encoded as a publish when it was sent.
    publishes: Vec<u8>,
    /// How many records it holds.
    records: usize,
    /// Their bodies' bytes (what [`ProducerOptions::batch_bytes`] counts).
    bytes: usize,
    /// The permits its records hold, merged.
    permit: Option<OwnedSemaphorePermit>,
    /// Where its outcome goes, and its records' confirms' side of it (from its
    /// first record on).
    outcome: Option<(oneshot::Sender<BatchOutcome>, SharedOutcome)>,
    /// When its first record came.
    since: Option<Instant>,
    /// How many bytes the partition's batch before held: room for as many is made
    /// at the first record, so a batch does not grow by reallocating.
    last_len: usize,
}

impl Client {
    /// A producer for stream `name` (its partitions as they are now), batching as
    /// [`ProducerOptions::default`] says.
    pub async fn stream_producer(&self, name: &str) -> Result<StreamProducer, ClientError> {
        self.stream_producer_with(name, ProducerOptions::default())
            .await
    }

    /// A producer for stream `name` that batches as `options` say.
    pub async fn stream_producer_with(
        &self,
        name: &str,
        options: ProducerOptions,
    ) -> Result<StreamProducer, ClientError> {
        let partitions = self.stream_partitions(name).await?;
        if partitions.is_empty() {
            return Err(ClientError::NotFound(format!(
                "no stream '{name}' with partitions (declare it with `warren stream declare`)"
            )));
        }
        let state = State {
            batches: (0..partitions.len()).map(|_| Batch::default()).collect(),
            in_flight: vec![0; partitions.len()],
            ..Default::default()
        };
        let shared = Arc::new(Shared {
            client: self.clone(),
            options,
            state: Mutex::new(state),
            started: Notify::new(),
            rearm: Notify::new(),
        });
        let flusher = tokio::spawn(linger(Arc::clone(&shared))).abort_handle();
        Ok(StreamProducer {
            stream: name.to_string(),
            sticky: Mutex::new(Sticky {
                // Producers that start together do not all fill the same partition.
                index: RandomState::new().hash_one(0u8) as usize % partitions.len(),
                bytes: 0,
                records: 0,
            }),
            partitions,
            shared,
            flusher,
        })
    }
}

impl StreamProducer {
    /// The stream's partitions, in order.
    pub fn partitions(&self) -> &[Partition] {
        &self.partitions
    }

    /// The partition (its index in [`partitions`](Self::partitions)) a key goes to.
    pub fn partition_for(&self, key: &[u8]) -> usize {
        partition_of(key, self.partitions.len() as u32) as usize
    }

    /// Publishes `body` with `key` (in the [`KEY_HEADER`] header) to the partition
    /// the key hashes to; without a key, to the producer's current partition, which
    /// it leaves for the next once a batch's worth went there (see the module doc).
    /// Returns the partition's number and the confirm.
    pub async fn send(
        &self,
        key: Option<&str>,
        body: impl Into<Bytes>,
        options: PublishOptions,
    ) -> Result<(u64, Confirm), ClientError> {
        let body = body.into();
        let index = match key {
            Some(key) => self.partition_for(key.as_bytes()),
            None => self
                .sticky
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .place(
                    body.len(),
                    self.partitions.len(),
                    self.shared.options.batch_bytes,
                ),
        };
        self.send_to(index, key, body, options).await
    }

    /// Publishes to the partition at `index` of [`partitions`](Self::partitions).
    pub async fn send_to(
        &self,
        index: usize,
        key: Option<&str>,
        body: impl Into<Bytes>,
        mut options: PublishOptions,
    ) -> Result<(u64, Confirm), ClientError> {
        let partition = self.partitions.get(index).ok_or_else(|| {
            ClientError::NotFound(format!(
                "stream '{}' has no partition {index} (it has {})",
                self.stream,
                self.partitions.len()
            ))
        })?;
        if let Some(key) = key {
            options
                .properties
                .headers
                .get_or_insert_with(FieldTable::new)
                .insert(KEY_HEADER.to_string(), FieldValue::string(key));
        }
        let mandatory = options.mandatory;
        let properties = options.into_properties();
        let body = body.into();
        let publish = PublishRef {
            exchange: &self.stream,
            routing_key: &partition.routing_key,
            mandatory,
            properties: &properties,
            body: &body,
        };
        let (permit, len) = self.shared.client.reserve_encoded(&publish).await?;
        let confirm = self.shared.add(index, &publish, len, permit)?;
        Ok((partition.number, confirm))
    }

    /// Sends every batch now.
    pub fn flush(&self) {
        self.shared.flush_all(&mut self.shared.lock());
    }
}

impl Drop for StreamProducer {
    /// What waits in batches is sent, so that its confirms resolve.
    fn drop(&mut self) {
        self.flusher.abort();
        self.flush();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Encodes a record (`len` bytes) into its partition's batch and sends what is
    /// due; the record's confirm.
    fn add(
        self: &Arc<Self>,
        index: usize,
        publish: &PublishRef<'_>,
        len: usize,
        permit: OwnedSemaphorePermit,
    ) -> Result<Confirm, ClientError> {
        let mut state = self.lock();
        let batch = &mut state.batches[index];
        let first = batch.records == 0;
        if first {
            batch
                .publishes
                .reserve(batch.last_len.min(BATCH_ENCODED_BYTES).max(len));
        }
        warren_storage::codec::encode_element_into(publish, &mut batch.publishes)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        match &mut batch.permit {
            Some(held) => held.merge(permit),
            None => batch.permit = Some(permit),
        }
        let (_, outcome) = batch.outcome.get_or_insert_with(|| {
            let (done, rx) = oneshot::channel();
            (done, rx.shared())
        });
        let confirm = Confirm::in_batch(outcome.clone(), batch.records);
        batch.records += 1;
        batch.bytes += publish.body.len();
        batch.since.get_or_insert_with(Instant::now);
        let full = batch.bytes >= self.options.batch_bytes
            || batch.records >= BATCH_RECORDS
            || batch.publishes.len() >= BATCH_ENCODED_BYTES;
        state.waiting += 1;
        if state.unconfirmed == 0 {
            self.flush_all(&mut state);
        } else if full {
            self.flush_batch(&mut state, index);
        } else if first {
            self.started.notify_one();
        }
        Ok(confirm)
    }

    fn flush_all(self: &Arc<Self>, state: &mut State) {
        for index in 0..state.batches.len() {
            if state.batches[index].records > 0 {
                self.flush_batch(state, index);
            }
        }
    }

    /// Queues partition `index`'s batch for publishing (under the lock, so batches
    /// of a partition leave in order), and watches its outcome.
    fn flush_batch(self: &Arc<Self>, state: &mut State, index: usize) {
        let last_len = state.batches[index].publishes.len();
        let batch = std::mem::replace(
            &mut state.batches[index],
            Batch {
                last_len,
                ..Batch::default()
            },
        );
        let count = batch.records;
        let (Some(permit), Some((done, outcome))) = (batch.permit, batch.outcome) else {
            return; // empty
        };
        state.waiting -= count;
        let encoded = EncodedBatch {
            publishes: batch.publishes,
            count,
            permit,
            done,
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Dropped outside a runtime: nothing here can watch the outcome, and the
            // producer is gone and sends no more; its confirms still resolve.
            self.client.enqueue_encoded(encoded);
            return;
        };
        state.unconfirmed += count;
        state.in_flight[index] += 1;
        self.client.enqueue_encoded(encoded);
        let shared = Arc::clone(self);
        runtime.spawn(async move {
            let _ = outcome.await;
            let mut state = shared.lock();
            state.unconfirmed -= count;
            state.in_flight[index] -= 1;
            if state.unconfirmed == 0 && state.waiting > 0 {
                shared.flush_all(&mut state);
            } else if let Some(due) = state.due(index, shared.options.linger) {
                // The partition's next batch waited for this one: it goes if its
                // linger is up, else the timer watches it again.
                if Instant::now() >= due {
                    shared.flush_batch(&mut state, index);
                } else if state.wakes.is_none_or(|wakes| due < wakes) {
                    shared.rearm.notify_one();
                }
            }
        });
    }
}

/// Sends batches whose first record has waited the linger time.
async fn linger(shared: Arc<Shared>) {
    loop {
        let wakes = {
            let mut state = shared.lock();
            state.wakes = (0..state.batches.len())
                .filter_map(|index| state.due(index, shared.options.linger))
                .min();
            state.wakes
        };
        match wakes {
            None => {
                tokio::select! {
                    _ = shared.started.notified() => {}
                    _ = shared.rearm.notified() => {}
                }
            }
            Some(wakes) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(wakes.into()) => {}
                    _ = shared.rearm.notified() => continue,
                }
                let mut state = shared.lock();
                let now = Instant::now();
                for index in 0..state.batches.len() {
                    if state.lingered(index, now, shared.options.linger) {
                        shared.flush_batch(&mut state, index);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyless_records_fill_a_batch_on_one_partition_then_go_to_the_next() {
        let mut sticky = Sticky {
            index: 2,
            bytes: 0,
            records: 0,
        };
        // Batches of 100 bytes, records of 30: four to a partition (the fourth
        // reaches 120), then the next, round the three partitions.
        let placed: Vec<usize> = (0..12).map(|_| sticky.place(30, 3, 100)).collect();
        assert_eq!(placed, [2, 2, 2, 2, 0, 0, 0, 0, 1, 1, 1, 1]);
        // Empty bodies: 1 024 records, the most a batch holds.
        let mut sticky = Sticky {
            index: 0,
            bytes: 0,
            records: 0,
        };
        let placed: Vec<usize> = (0..2 * BATCH_RECORDS)
            .map(|_| sticky.place(0, 2, 100))
            .collect();
        assert!(placed[..BATCH_RECORDS].iter().all(|&i| i == 0));
        assert!(placed[BATCH_RECORDS..].iter().all(|&i| i == 1));
    }

    #[test]
    fn a_lingered_batch_waits_while_its_partitions_last_batch_is_on_the_way() {
        let linger = Duration::from_millis(5);
        let now = Instant::now();
        let mut state = State {
            batches: vec![Batch::default(), Batch::default()],
            in_flight: vec![0, 0],
            ..Default::default()
        };
        assert!(!state.lingered(0, now, linger), "an empty batch never goes");
        state.batches[0].since = Some(now);
        assert!(!state.lingered(0, now, linger), "its linger is not up");
        let later = now + linger;
        assert!(state.lingered(0, later, linger));
        state.in_flight[0] = 1;
        assert!(
            !state.lingered(0, later, linger),
            "it waits for its partition's batch on the way"
        );
        state.in_flight[1] = 1;
        state.in_flight[0] = 0;
        assert!(
            state.lingered(0, later, linger),
            "another partition's batch does not hold it"
        );
        assert!(
            !state.lingered(0, later, Duration::MAX),
            "a linger too long to add to a time never falls due"
        );
    }
}
