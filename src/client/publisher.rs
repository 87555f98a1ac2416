//! Publishing from the client handle: batching, confirms and back-pressure.
//!
//! `Client::publish` queues a message and returns a [`Confirm`] future. One task per
//! client gathers what is queued into batches (one frame, one reply for many messages)
//! and sends them in publish order; each batch's reply resolves its messages' confirms.
//!
//! Back-pressure: every queued message holds permits from a semaphore of 64-byte permits
//! until its confirm arrives. A publisher that outruns the broker waits in `publish`
//! for permits instead of growing the client's memory without bound.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ractor::{ActorRef, RpcReplyPort};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use warren_cluster::protocol::{Publish, PublishResult, SessionMsg};

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

/// What the batching task is given: one publish, or a producer's batch of them, which
/// goes through the channel as one item instead of one per record. (`One` is kept
/// inline: boxing it would add an allocation to every single publish.)
#[allow(clippy::large_enum_variant)]
pub(crate) enum Queued {
    One(Pending),
    Many(Vec<Pending>),
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
            Queued::Many(ps) => ps.into_iter().for_each(fail),
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
        self.permits
            .clone()
            .acquire_many_owned(self.permits_for(size))
            .await
            .map_err(|_| ClientError::Disconnected("the client is closed".into()))
    }
}

/// Resolves when the broker has confirmed (or refused) one published message.
pub struct Confirm {
    pub(crate) rx: oneshot::Receiver<Result<PublishResult, ClientError>>,
}

impl Future for Confirm {
    type Output = Result<PublishResult, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            Poll::Ready(Err(_)) => Poll::Ready(Err(ClientError::Disconnected(
                "the client stopped before the message was confirmed".into(),
            ))),
            Poll::Pending => Poll::Pending,
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
    // One buffer for every batch: grown from empty each time, a batch of a thousand
    // publishes was reallocated ten times and, at its size, on pages fresh from the
    // kernel.
    let mut batch: Vec<Pending> = Vec::with_capacity(BATCH_MESSAGES);
    let mut bytes = 0;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut close = false;
        // What is queued goes in publish order, a batch sent each time it is full.
        while let Some(queued) = next.take() {
            let mut full = false;
            let mut add = |p: Pending| {
                bytes += p.publish.body.len();
                batch.push(p);
                if batch.len() >= BATCH_MESSAGES || bytes >= BATCH_BYTES {
                    send(&session, &mut batch, timeout);
                    bytes = 0;
                    full = true;
                }
            };
            match queued {
                Queued::One(p) => add(p),
                Queued::Many(ps) => ps.into_iter().for_each(add),
                // (Nothing is queued after it: it comes from the last handle's drop.)
                Queued::Close => close = true,
            }
            if full {
                // `try_recv` takes nothing from the task's budget: without this, a
                // queue kept full would hold the thread, and the reply tasks behind.
                tokio::task::consume_budget().await;
            }
            next = rx.try_recv().ok();
        }
        if !batch.is_empty() {
            send(&session, &mut batch, timeout);
            bytes = 0;
        }
        if close {
            let _ = session.cast(SessionMsg::Close(().into()));
        }
    }
}

/// Sends one batch now (so batches leave in publish order) and awaits its reply apart.
/// Takes the batch's messages, leaving its buffer empty for the next.
fn send(session: &ActorRef<SessionMsg>, batch: &mut Vec<Pending>, timeout: Duration) {
    let mut publishes = Vec::with_capacity(batch.len());
    let mut waiters = Vec::with_capacity(batch.len());
    for p in batch.drain(..) {
        publishes.push(p.publish);
        waiters.push((p.done, p.permit));
    }
    let (reply_tx, reply_rx) = ractor::concurrency::oneshot();
    let port: RpcReplyPort<_> = (reply_tx, timeout).into();
    if let Err(e) = session.cast(SessionMsg::Publish(publishes.into(), port)) {
        let why = format!("cannot send to the node: {e}");
        for (done, _permit) in waiters {
            let _ = done.send(Err(ClientError::Disconnected(why.clone())));
        }
        return;
    }
    tokio::spawn(async move {
        let outcome = match tokio::time::timeout(timeout, reply_rx).await {
            Ok(Ok(wire)) => wire.into_result().map_err(ClientError::Protocol),
            Ok(Err(_)) => Err(ClientError::Disconnected(
                "the node dropped the publish (connection lost?)".into(),
            )),
            Err(_) => Err(ClientError::Timeout(timeout.as_secs())),
        };
        match outcome {
            Ok(results) if results.len() == waiters.len() => {
                for ((done, _permit), result) in waiters.into_iter().zip(results) {
                    let _ = done.send(Ok(result));
                }
            }
            Ok(results) => {
                let why = format!(
                    "the node answered {} results for {} messages",
                    results.len(),
                    waiters.len()
                );
                for (done, _permit) in waiters {
                    let _ = done.send(Err(ClientError::Protocol(why.clone())));
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
