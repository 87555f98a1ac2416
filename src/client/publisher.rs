//! Publishing from the client handle: batching, confirms and back-pressure.
//!
//! `Client::publish` queues a message and returns a [`Confirm`] future. One task per
//! client gathers what is queued into batches (one frame, one reply for many messages)
//! and sends them in publish order; each batch's reply resolves its messages' confirms.
//!
//! A stream producer's batches come encoded (each publish encoded when it was sent,
//! while in cache) and go as they are, several to a frame; their publishes share one
//! outcome per batch instead of a channel each.
//!
//! Back-pressure: every queued message holds permits from a semaphore of 64-byte permits
//! until its confirm arrives. A publisher that outruns the broker waits in `publish`
//! for permits instead of growing the client's memory without bound.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::Shared;
use ractor::{ActorRef, RpcReplyPort};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use warren_cluster::protocol::{Publish, PublishResult, SessionMsg};
use warren_cluster::wire::Wire;

use super::error::ClientError;

/// What a client keeps unconfirmed before `publish` waits by default: 32 MiB (Kafka's
/// producer `buffer.memory`), counting each message as its body and
/// [`MESSAGE_OVERHEAD`]. [`crate::client::ConnectOptions::buffer_bytes`] sets it.
pub const DEFAULT_BUFFER_BYTES: usize = 32 << 20;
/// The least a client may keep unconfirmed: a buffer smaller than a few messages
/// would make every publish wait for the one before.
pub const MIN_BUFFER_BYTES: usize = 64 << 10;
/// The most a client may keep unconfirmed: its permits are counted in a `u32` (and,
/// on a 32-bit target, within what a semaphore holds).
pub const MAX_BUFFER_BYTES: usize = {
    let permits = u32::MAX as u64 * PERMIT_BYTES as u64;
    let semaphore = (usize::MAX >> 3) as u64;
    (if permits < semaphore {
        permits
    } else {
        semaphore
    }) as usize
};
/// The bytes one permit stands for.
const PERMIT_BYTES: usize = 64;
/// What a message costs the client beside its body while unconfirmed (the publish,
/// its properties, its confirm's channel), so that small messages count for what
/// they take: a 100-byte record counts 384 bytes, not a KiB.
const MESSAGE_OVERHEAD: usize = 256;
/// What a publish encoded into a stream producer's batch costs beside its encoding
/// while unconfirmed: its confirm (the batch's shared outcome and an index). A
/// 100-byte record to a partition counts 192 bytes.
const ENCODED_OVERHEAD: usize = 32;
/// A batch is sent once it holds this many messages or bytes, or nothing more is queued.
const BATCH_MESSAGES: usize = 1024;
const BATCH_BYTES: usize = 1024 * 1024;
/// The largest body a client handle sends (the cluster transport's frames are bounded).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// A queued publish and where its outcome goes.
pub(crate) struct Pending {
    pub(crate) publish: Publish,
    pub(crate) done: oneshot::Sender<Result<PublishResult, ClientError>>,
    pub(crate) permit: OwnedSemaphorePermit,
}

/// A stream producer's batch: its publishes, each encoded as a [`Publish`] when it
/// was sent, the permits they hold, and where their shared outcome goes.
pub(crate) struct EncodedBatch {
    pub(crate) publishes: Vec<u8>,
    pub(crate) count: usize,
    pub(crate) permit: OwnedSemaphorePermit,
    pub(crate) done: oneshot::Sender<BatchOutcome>,
}

/// What became of a batch's publishes, in order, shared by their confirms.
pub(crate) type BatchOutcome = Arc<Result<Vec<PublishResult>, ClientError>>;

/// The confirms' side of a batch's outcome.
pub(crate) type SharedOutcome = Shared<oneshot::Receiver<BatchOutcome>>;

/// What the batching task is given: one publish, or a producer's encoded batch of
/// them. (`One` is kept inline: boxing it would add an allocation to every single
/// publish.)
#[allow(clippy::large_enum_variant)]
pub(crate) enum Queued {
    One(Pending),
    Encoded(EncodedBatch),
    /// The client's last handle is gone: the session closes after what is queued.
    Close,
}

impl Queued {
    /// Fails every publish it holds with `why`.
    pub(crate) fn refuse(self, why: &ClientError) {
        let fail = |p: Pending| {
            let _ = p.done.send(Err(why.clone()));
        };
        match self {
            Queued::One(p) => fail(p),
            Queued::Encoded(batch) => {
                let _ = batch.done.send(Arc::new(Err(why.clone())));
            }
            Queued::Close => {}
        }
    }
}

/// What a client may keep unconfirmed: a semaphore of permits, each standing for
/// [`PERMIT_BYTES`], that messages hold until their confirms arrive.
pub(crate) struct Buffer {
    permits: Arc<Semaphore>,
    total: u32,
}

impl Buffer {
    /// A buffer of `bytes` (checked by the caller to be within
    /// [`MIN_BUFFER_BYTES`]..=[`MAX_BUFFER_BYTES`]).
    pub(crate) fn new(bytes: usize) -> Buffer {
        let total = u32::try_from(bytes / PERMIT_BYTES).unwrap_or(u32::MAX);
        Buffer {
            permits: Arc::new(Semaphore::new(total as usize)),
            total,
        }
    }

    /// Permits a message of `size` bytes holds while unconfirmed: never more than the
    /// whole buffer, so the largest message waits until nothing else is in flight,
    /// never for ever.
    fn permits_for(&self, size: usize) -> u32 {
        let units = size.saturating_add(MESSAGE_OVERHEAD).div_ceil(PERMIT_BYTES);
        u32::try_from(units).unwrap_or(u32::MAX).min(self.total)
    }

    /// Takes permits for a message, waiting while too much is unconfirmed.
    pub(crate) async fn reserve(&self, size: usize) -> Result<OwnedSemaphorePermit, ClientError> {
        self.take(self.permits_for(size)).await
    }

    /// Takes permits for a publish encoded in `len` bytes into a stream producer's
    /// batch, waiting while too much is unconfirmed.
    pub(crate) async fn reserve_encoded(
        &self,
        len: usize,
    ) -> Result<OwnedSemaphorePermit, ClientError> {
        let units = len.saturating_add(ENCODED_OVERHEAD).div_ceil(PERMIT_BYTES);
        self.take(u32::try_from(units).unwrap_or(u32::MAX).min(self.total))
            .await
    }

    async fn take(&self, permits: u32) -> Result<OwnedSemaphorePermit, ClientError> {
        self.permits
            .clone()
            .acquire_many_owned(permits)
            .await
            .map_err(|_| ClientError::Disconnected("the client is closed".into()))
    }
}

/// Resolves when the broker has confirmed (or refused) one published message.
pub struct Confirm {
    of: Awaited,
}

/// What a [`Confirm`] waits for.
enum Awaited {
    /// Its publish's own outcome.
    Own(oneshot::Receiver<Result<PublishResult, ClientError>>),
    /// Its batch's outcome, in which it is at `index`.
    InBatch { batch: SharedOutcome, index: usize },
}

impl Confirm {
    pub(crate) fn own(rx: oneshot::Receiver<Result<PublishResult, ClientError>>) -> Confirm {
        Confirm {
            of: Awaited::Own(rx),
        }
    }

    pub(crate) fn in_batch(batch: SharedOutcome, index: usize) -> Confirm {
        Confirm {
            of: Awaited::InBatch { batch, index },
        }
    }
}

impl Future for Confirm {
    type Output = Result<PublishResult, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let gone = || {
            Err(ClientError::Disconnected(
                "the client stopped before the message was confirmed".into(),
            ))
        };
        match &mut self.of {
            Awaited::Own(rx) => match Pin::new(rx).poll(cx) {
                Poll::Ready(Ok(result)) => Poll::Ready(result),
                Poll::Ready(Err(_)) => Poll::Ready(gone()),
                Poll::Pending => Poll::Pending,
            },
            Awaited::InBatch { batch, index } => match Pin::new(batch).poll(cx) {
                Poll::Ready(Ok(outcome)) => Poll::Ready(match &*outcome {
                    Ok(results) => results.get(*index).cloned().ok_or_else(|| {
                        ClientError::Protocol(format!(
                            "the node answered {} results for a batch in which this \
                             message is number {}",
                            results.len(),
                            *index + 1
                        ))
                    }),
                    Err(e) => Err(e.clone()),
                }),
                Poll::Ready(Err(_)) => Poll::Ready(gone()),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// Spawns the batching task for one session.
pub(crate) fn spawn(session: ActorRef<SessionMsg>, timeout: Duration) -> UnboundedSender<Queued> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(run(session, rx, timeout));
    tx
}

async fn run(session: ActorRef<SessionMsg>, mut rx: UnboundedReceiver<Queued>, timeout: Duration) {
    // One buffer for every frame of single publishes: grown from empty each time, a
    // frame of a thousand publishes was reallocated ten times and, at its size, on
    // pages fresh from the kernel.
    let mut frame = Frame {
        single: Vec::with_capacity(BATCH_MESSAGES),
        ..Frame::default()
    };
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut close = false;
        // What is queued goes in publish order, a frame sent each time it is full.
        while let Some(queued) = next.take() {
            let full = match queued {
                Queued::One(p) => frame.add(p, &session, timeout),
                Queued::Encoded(batch) => frame.add_encoded(batch, &session, timeout),
                // (Nothing is queued after it: it comes from the last handle's drop.)
                Queued::Close => {
                    close = true;
                    false
                }
            };
            if full {
                // `try_recv` takes nothing from the task's budget: without this, a
                // queue kept full would hold the thread, and the reply tasks behind.
                tokio::task::consume_budget().await;
            }
            next = rx.try_recv().ok();
        }
        frame.send(&session, timeout);
        if close {
            let _ = session.cast(SessionMsg::Close(().into()));
        }
    }
}

/// The publishes of the frame being gathered: single publishes or encoded batches,
/// never both (a frame is one or the other, and frames leave in publish order).
#[derive(Default)]
struct Frame {
    single: Vec<Pending>,
    batches: Vec<EncodedBatch>,
    /// Publishes in it.
    count: usize,
    /// Their bodies' bytes (single publishes), or encodings' (batches).
    bytes: usize,
}

impl Frame {
    /// Adds a publish; sends the frame first if it holds batches, and after if it
    /// is full. Whether it was full.
    fn add(&mut self, p: Pending, session: &ActorRef<SessionMsg>, timeout: Duration) -> bool {
        if !self.batches.is_empty() {
            self.send(session, timeout);
        }
        self.count += 1;
        self.bytes += p.publish.body.len();
        self.single.push(p);
        self.send_if_full(session, timeout)
    }

    /// Adds a batch whole; sends the frame first if it holds single publishes or
    /// has no room for the batch, and after if it is full. Whether it was full.
    fn add_encoded(
        &mut self,
        batch: EncodedBatch,
        session: &ActorRef<SessionMsg>,
        timeout: Duration,
    ) -> bool {
        if !self.single.is_empty()
            || self.count + batch.count > BATCH_MESSAGES
            || self.bytes + batch.publishes.len() > BATCH_BYTES
        {
            self.send(session, timeout);
        }
        self.count += batch.count;
        self.bytes += batch.publishes.len();
        self.batches.push(batch);
        self.send_if_full(session, timeout)
    }

    fn send_if_full(&mut self, session: &ActorRef<SessionMsg>, timeout: Duration) -> bool {
        let full = self.count >= BATCH_MESSAGES || self.bytes >= BATCH_BYTES;
        if full {
            self.send(session, timeout);
        }
        full
    }

    /// Sends what it holds now (so frames leave in publish order) and awaits the
    /// reply apart; leaves it empty, its buffers kept for the next.
    fn send(&mut self, session: &ActorRef<SessionMsg>, timeout: Duration) {
        let count = std::mem::take(&mut self.count);
        self.bytes = 0;
        if !self.single.is_empty() {
            send_single(session, &mut self.single, timeout);
        } else if !self.batches.is_empty() {
            send_batches(session, &mut self.batches, count, timeout);
        }
    }
}

/// Sends single publishes as one frame, leaving `batch`'s buffer empty for the next.
fn send_single(session: &ActorRef<SessionMsg>, batch: &mut Vec<Pending>, timeout: Duration) {
    let mut publishes = Vec::with_capacity(batch.len());
    let mut waiters = Vec::with_capacity(batch.len());
    for p in batch.drain(..) {
        publishes.push(p.publish);
        waiters.push((p.done, p.permit));
    }
    let reply = call(session, publishes.into(), waiters.len(), timeout);
    tokio::spawn(async move {
        match reply.await {
            Ok(results) => {
                for ((done, _permit), result) in waiters.into_iter().zip(results) {
                    let _ = done.send(Ok(result));
                }
            }
            Err(e) => {
                for (done, _permit) in waiters {
                    let _ = done.send(Err(e.clone()));
                }
            }
        }
    });
}

/// Sends encoded batches as one frame of `count` publishes, leaving `batches` empty.
fn send_batches(
    session: &ActorRef<SessionMsg>,
    batches: &mut Vec<EncodedBatch>,
    count: usize,
    timeout: Duration,
) {
    let frame = warren_storage::codec::encode_sequence(
        count,
        batches.iter().map(|b| b.publishes.as_slice()),
    );
    let waiters: Vec<_> = batches
        .drain(..)
        .map(|b| (b.count, b.done, b.permit))
        .collect();
    let reply = call(session, Wire::Encoded(frame), count, timeout);
    tokio::spawn(async move {
        match reply.await {
            Ok(results) => {
                let mut results = results.into_iter();
                for (n, done, _permit) in waiters {
                    let _ = done.send(Arc::new(Ok(results.by_ref().take(n).collect())));
                }
            }
            Err(e) => {
                let e = Arc::new(Err(e));
                for (_, done, _permit) in waiters {
                    let _ = done.send(Arc::clone(&e));
                }
            }
        }
    });
}

/// Casts a frame of `count` publishes to the session now (so frames leave in
/// publish order); the future of its results: exactly `count` of them, or the error
/// that says why not (the session could not be reached, did not answer, or
/// answered wrong).
fn call(
    session: &ActorRef<SessionMsg>,
    frame: Wire<Vec<Publish>>,
    count: usize,
    timeout: Duration,
) -> impl Future<Output = Result<Vec<PublishResult>, ClientError>> {
    let (reply_tx, reply_rx) = ractor::concurrency::oneshot();
    let port: RpcReplyPort<_> = (reply_tx, timeout).into();
    let cast = session
        .cast(SessionMsg::Publish(frame, port))
        .map_err(|e| ClientError::Disconnected(format!("cannot send to the node: {e}")));
    async move {
        cast?;
        let results = match tokio::time::timeout(timeout, reply_rx).await {
            Ok(Ok(wire)) => wire.into_result().map_err(ClientError::Protocol),
            Ok(Err(_)) => Err(ClientError::Disconnected(
                "the node dropped the publish (connection lost?)".into(),
            )),
            Err(_) => Err(ClientError::Timeout(timeout.as_secs())),
        }?;
        if results.len() != count {
            return Err(ClientError::Protocol(format!(
                "the node answered {} results for {count} messages",
                results.len()
            )));
        }
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[test]
    fn permits_grow_with_size_and_are_capped() {
        let buffer = Buffer::new(DEFAULT_BUFFER_BYTES);
        // An empty message still costs its overhead; a 100-byte record 384 bytes.
        assert_eq!(buffer.permits_for(0), 4);
        assert_eq!(buffer.permits_for(100), 6);
        assert_eq!(buffer.permits_for(1024), 20);
        // 32 MiB of 100-byte records: 87 381 in flight (a KiB each allowed 32 768).
        assert_eq!(buffer.total / buffer.permits_for(100), 87_381);
        // The largest body waits until nothing else is in flight, never for ever.
        assert_eq!(buffer.permits_for(usize::MAX), buffer.total);
        assert!(buffer.permits_for(MAX_BODY_BYTES) <= buffer.total);
        // A larger buffer holds proportionally more; the largest one still counts.
        let big = Buffer::new(128 << 20);
        assert_eq!(big.total / big.permits_for(100), 349_525);
        assert_eq!(Buffer::new(MAX_BUFFER_BYTES).total, u32::MAX);
        assert_eq!(
            Buffer::new(MIN_BUFFER_BYTES).permits_for(MAX_BODY_BYTES),
            1024
        );
    }

    #[tokio::test]
    async fn a_publish_waits_while_the_buffer_is_full_and_goes_on_when_a_confirm_frees_it() {
        let buffer = Buffer::new(MIN_BUFFER_BYTES);
        // 64 KiB holds 170 records of 100 bytes (384 bytes each).
        let mut held = Vec::new();
        for _ in 0..170 {
            held.push(buffer.reserve(100).await.unwrap());
        }
        let next = buffer.reserve(100);
        tokio::pin!(next);
        assert!((&mut next).now_or_never().is_none());
        held.pop();
        assert!((&mut next).now_or_never().is_some());
    }
}
