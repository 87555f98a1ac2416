//! [`ConnectionTasks`]: the node's AMQP connections as the tasks that serve them, by
//! their names in the tree (`amqp-connection:PEER`, `amqps-connection:PEER`).
//!
//! A connection is a plain task, not an actor: an actor's mailboxes and processing
//! loop cost 17 KiB of memory per idle connection here (40.5 KiB with, 23.6 KiB
//! without, 8 000 idle connections), and a connection never takes messages through a
//! mailbox. The tree still shows each one under its listener's supervisor (the debug
//! shell adds them from here), `stop` closes one with 320 as before, and the node
//! closes them all first when it shuts down ([`ConnectionTasks::close_all`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::AbortHandle;

/// One connection's task: how to tell it to close, how to end it, since when.
struct Entry {
    close: watch::Sender<bool>,
    abort: AbortHandle,
    started: Instant,
}

/// The node's connection tasks (cheap to clone; shared by its listeners).
#[derive(Clone, Default)]
pub struct ConnectionTasks {
    inner: Arc<Mutex<HashMap<String, Entry>>>,
}

impl ConnectionTasks {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Spawns connection `name`'s task, made by `serve` from the receiver that tells
    /// it to close; it leaves the map when it ends.
    pub(crate) fn spawn<F>(&self, name: String, serve: impl FnOnce(watch::Receiver<bool>) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let (close, closed) = watch::channel(false);
        let served = serve(closed);
        let tasks = self.clone();
        let key = name.clone();
        // Entered under the lock, so the task's own removal (which takes the lock)
        // comes after its entry even if it ends at once.
        let mut map = self.lock();
        let task = tokio::spawn(async move {
            served.await;
            tasks.lock().remove(&key);
        });
        map.insert(
            name,
            Entry {
                close,
                abort: task.abort_handle(),
                started: Instant::now(),
            },
        );
    }

    /// The connections, with how long each has run, sorted by name.
    pub fn list(&self) -> Vec<(String, Duration)> {
        let mut all: Vec<(String, Duration)> = self
            .lock()
            .iter()
            .map(|(name, e)| (name.clone(), e.started.elapsed()))
            .collect();
        all.sort();
        all
    }

    /// Tells connection `name` to close (its client gets 320 and its deliveries go
    /// back to their queues); `false` if there is no such connection.
    pub fn close(&self, name: &str) -> bool {
        self.lock()
            .get(name)
            .map(|e| e.close.send_replace(true))
            .is_some()
    }

    /// Ends connection `name` at once, without a word to its client (the shell's
    /// `crash`); `false` if there is no such connection.
    pub fn abort(&self, name: &str) -> bool {
        match self.lock().remove(name) {
            Some(e) => {
                e.abort.abort();
                true
            }
            None => false,
        }
    }

    /// Tells every connection to close and waits up to `grace` for them to end; those
    /// still running then are ended. The node's shutdown calls it first.
    pub async fn close_all(&self, grace: Duration) {
        for entry in self.lock().values() {
            entry.close.send_replace(true);
        }
        let deadline = Instant::now() + grace;
        while !self.lock().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for (_, entry) in self.lock().drain() {
            entry.abort.abort();
        }
    }
}
