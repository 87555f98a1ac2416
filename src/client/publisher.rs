//! Publishing from the client handle: batching, confirms and back-pressure.
//!
//! `Client::publish` queues a message and returns a [`Confirm`] future. One task per
//! client gathers what is queued into batches (one frame, one reply for many messages)
//! and sends them in publish order; each batch's reply resolves its messages' confirms.
//!
//! Back-pressure: every queued message holds permits from a semaphore sized in KiB
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

/// What a client keeps unconfirmed before `publish` waits, in units of
/// [`PERMIT_BYTES`]: 32 MiB (Kafka's producer `buffer.memory`), counting each message
/// as its body and [`MESSAGE_OVERHEAD`].
pub(crate) const IN_FLIGHT_PERMITS: u32 = (32 << 20) / PERMIT_BYTES as u32;
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

/// Permits a message of `size` bytes holds while unconfirmed.
pub(crate) fn permits_for(size: usize) -> u32 {
    let units = size.saturating_add(MESSAGE_OVERHEAD).div_ceil(PERMIT_BYTES);
    u32::try_from(units)
        .unwrap_or(u32::MAX)
        .min(IN_FLIGHT_PERMITS)
}

/// Takes permits for a message, waiting while too much is unconfirmed.
pub(crate) async fn reserve(
    permits: &Arc<Semaphore>,
    size: usize,
) -> Result<OwnedSemaphorePermit, ClientError> {
    permits
        .clone()
        .acquire_many_owned(permits_for(size))
        .await
        .map_err(|_| ClientError::Disconnected("the client is closed".into()))
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
pub(crate) fn spawn(session: ActorRef<SessionMsg>, timeout: Duration) -> UnboundedSender<Pending> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(run(session, rx, timeout));
    tx
}

async fn run(session: ActorRef<SessionMsg>, mut rx: UnboundedReceiver<Pending>, timeout: Duration) {
    while let Some(first) = rx.recv().await {
        let mut bytes = first.publish.body.len();
        let mut batch = vec![first];
        while batch.len() < BATCH_MESSAGES && bytes < BATCH_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.publish.body.len();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        send(&session, batch, timeout);
    }
}

/// Sends one batch now (so batches leave in publish order) and awaits its reply apart.
fn send(session: &ActorRef<SessionMsg>, batch: Vec<Pending>, timeout: Duration) {
    let (publishes, waiters): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|p| (p.publish, (p.done, p.permit)))
        .unzip();
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
    use super::*;

    #[test]
    fn permits_grow_with_size_and_are_capped() {
        // An empty message still costs its overhead; a 100-byte record 384 bytes.
        assert_eq!(permits_for(0), 4);
        assert_eq!(permits_for(100), 6);
        assert_eq!(permits_for(1024), 20);
        // 32 MiB of 100-byte records: 87 381 in flight (a KiB each allowed 32 768).
        assert_eq!(IN_FLIGHT_PERMITS / permits_for(100), 87_381);
        // The largest body waits until nothing else is in flight, never for ever.
        assert_eq!(permits_for(usize::MAX), IN_FLIGHT_PERMITS);
        assert!(permits_for(MAX_BODY_BYTES) <= IN_FLIGHT_PERMITS);
    }
}
