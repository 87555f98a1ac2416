//! Bounded lapin operations shared by the tests that drive nodes with lapin, as
//! applications use the broker: each fails the test with what it was doing, instead of
//! hanging.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::{BasicGetMessage, Delivery};
use lapin::options::BasicGetOptions;
use lapin::{Channel, Consumer};

/// How long one broker operation may take before the test fails (a bound on a hang,
/// not a measure of speed).
pub const LAPIN_WAIT: Duration = Duration::from_secs(60);

/// Awaits a broker operation for at most [`LAPIN_WAIT`]; fails the test on an error.
pub async fn within<T>(what: &str, f: impl std::future::Future<Output = lapin::Result<T>>) -> T {
    match tokio::time::timeout(LAPIN_WAIT, f).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("{what} failed: {e}"),
        Err(_) => panic!("{what}: no answer within {LAPIN_WAIT:?}"),
    }
}

/// The next delivery of `consumer`, within [`LAPIN_WAIT`].
pub async fn next(consumer: &mut Consumer, what: &str) -> Delivery {
    match tokio::time::timeout(LAPIN_WAIT, consumer.next()).await {
        Ok(Some(Ok(d))) => d,
        Ok(Some(Err(e))) => panic!("{what}: the consumer failed: {e}"),
        Ok(None) => panic!("{what}: the consumer ended"),
        Err(_) => panic!("{what}: no delivery within {LAPIN_WAIT:?}"),
    }
}

/// basic.get of `queue`.
pub async fn get(channel: &Channel, queue: &str, no_ack: bool) -> Option<BasicGetMessage> {
    within(
        &format!("basic.get {queue}"),
        channel.basic_get(queue.into(), BasicGetOptions { no_ack }),
    )
    .await
}
