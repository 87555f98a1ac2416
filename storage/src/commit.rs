//! [`Commit`]: the answer to a submitted batch, as a future (for actors) or a
//! blocking wait (for threads and tests).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use tokio::sync::oneshot;

use crate::error::CommitError;

/// Resolves once the batch is committed (fsynced if it was durable), or with the
/// reason it was not.
///
/// Dropping it does not cancel the batch: the writes still happen, nobody hears
/// about it. `Send + 'static`, so it can be moved into any task.
#[must_use = "a Commit tells whether the batch was stored; drop it explicitly to ignore that"]
#[derive(Debug)]
pub struct Commit {
    /// The data file, for the error if the writer never answers.
    path: Arc<Path>,
    state: State,
}

#[derive(Debug)]
enum State {
    /// The writer holds the other end.
    Waiting(oneshot::Receiver<Result<(), CommitError>>),
    /// Answered without reaching the writer (store closed); taken once.
    Ready(Option<Result<(), CommitError>>),
}

impl Commit {
    pub(crate) fn waiting(
        answer: oneshot::Receiver<Result<(), CommitError>>,
        path: Arc<Path>,
    ) -> Commit {
        Commit {
            path,
            state: State::Waiting(answer),
        }
    }

    pub(crate) fn ready(result: Result<(), CommitError>, path: Arc<Path>) -> Commit {
        Commit {
            path,
            state: State::Ready(Some(result)),
        }
    }

    /// Blocks the calling thread until the commit resolves. Works inside or
    /// outside an async runtime, but inside one it blocks a runtime thread: await
    /// the `Commit` there instead.
    pub fn wait(self) -> Result<(), CommitError> {
        block_on(self)
    }
}

/// Runs a future to completion on the calling thread, parking between polls.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut context = Context::from_waker(&waker);
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => return output,
            // Spurious wake-ups just poll again.
            Poll::Pending => thread::park(),
        }
    }
}

impl Future for Commit {
    type Output = Result<(), CommitError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let stopped = || CommitError::WriterStopped {
            path: this.path.to_path_buf(),
        };
        match &mut this.state {
            State::Waiting(answer) => match Pin::new(answer).poll(cx) {
                Poll::Ready(Ok(result)) => Poll::Ready(result),
                Poll::Ready(Err(_)) => Poll::Ready(Err(stopped())),
                Poll::Pending => Poll::Pending,
            },
            // Polled again after completion: answer rather than panic.
            State::Ready(result) => Poll::Ready(result.take().unwrap_or_else(|| Err(stopped()))),
        }
    }
}

// A Commit must be able to travel into any task or thread.
const _: fn() = || {
    fn send_static<T: Send + 'static>() {}
    send_static::<Commit>();
};

/// Wakes the thread blocked in [`Commit::wait`].
struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn path() -> Arc<Path> {
        Arc::from(Path::new("/data/warren.redb"))
    }

    #[test]
    fn wait_returns_the_answer_sent_from_another_thread() {
        let (tx, rx) = oneshot::channel();
        let commit = Commit::waiting(rx, path());
        let sender = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            tx.send(Ok(())).expect("receiver alive");
        });
        assert_eq!(commit.wait(), Ok(()));
        sender.join().expect("sender thread");
    }

    #[test]
    fn dropped_answer_is_writer_stopped() {
        let (tx, rx) = oneshot::channel::<Result<(), CommitError>>();
        drop(tx);
        let err = Commit::waiting(rx, path()).wait().expect_err("no answer");
        assert_eq!(
            err,
            CommitError::WriterStopped {
                path: "/data/warren.redb".into()
            }
        );
    }

    #[test]
    fn ready_commit_resolves_immediately() {
        let err = CommitError::Closed { path: "/x".into() };
        assert_eq!(Commit::ready(Err(err.clone()), path()).wait(), Err(err));
    }
}
