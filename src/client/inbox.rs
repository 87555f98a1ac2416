//! The client's inbox: the actor the node's session pushes deliveries to.
//!
//! It joins a process group of its own, which ractor_cluster syncs to the node; the
//! node's session finds it there. Deliveries are handed to the consumer they are for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc::UnboundedSender;
use warren_actors::delivery::TracedMessage;
use warren_cluster::protocol::{Delivery, InboxMsg, Push, Records};

/// What a consumer receives: a delivery, or the news that the node ended it.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // deliveries are the common case; boxing them costs more
pub(crate) enum ConsumerEvent {
    Delivery(Delivery),
    Records(Records),
    Cancelled(String),
}

/// Consumers by tag, shared between the client handle and its inbox.
#[derive(Default)]
pub(crate) struct Consumers {
    by_tag: Mutex<HashMap<String, UnboundedSender<ConsumerEvent>>>,
    /// Why the session ended, once it has.
    closed: Mutex<Option<String>>,
    /// Where traced messages go (the shell's `trace`), while one traces.
    tracer: Mutex<Option<UnboundedSender<Vec<TracedMessage>>>>,
}

impl Consumers {
    pub(crate) fn add(&self, tag: String, tx: UnboundedSender<ConsumerEvent>) {
        self.lock().insert(tag, tx);
    }

    pub(crate) fn remove(&self, tag: &str) {
        self.lock().remove(tag);
    }

    pub(crate) fn set_tracer(&self, tx: Option<UnboundedSender<Vec<TracedMessage>>>) {
        *self.tracer.lock().unwrap_or_else(|p| p.into_inner()) = tx;
    }

    pub(crate) fn closed_reason(&self) -> Option<String> {
        self.closed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, UnboundedSender<ConsumerEvent>>> {
        // A poisoned map is still a valid map: a panic elsewhere must not stop deliveries.
        self.by_tag.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, push: Push) {
        match push {
            Push::Deliveries(deliveries) => {
                let map = self.lock();
                for d in deliveries {
                    if let Some(tx) = map.get(&d.consumer_tag) {
                        let _ = tx.send(ConsumerEvent::Delivery(d));
                    }
                }
            }
            Push::Records(run) => {
                if let Some(tx) = self.lock().get(&run.consumer_tag) {
                    let _ = tx.send(ConsumerEvent::Records(run));
                }
            }
            Push::ConsumerCancelled { tag, reason } => {
                if let Some(tx) = self.lock().remove(&tag) {
                    let _ = tx.send(ConsumerEvent::Cancelled(reason));
                }
            }
            Push::Closed(reply) => {
                *self.closed.lock().unwrap_or_else(|p| p.into_inner()) = Some(reply.to_string());
                for (_, tx) in self.lock().drain() {
                    let _ = tx.send(ConsumerEvent::Cancelled(reply.to_string()));
                }
                self.set_tracer(None);
            }
            Push::Traced(messages) => {
                if let Some(tx) = &*self.tracer.lock().unwrap_or_else(|p| p.into_inner()) {
                    let _ = tx.send(messages);
                }
            }
        }
    }
}

pub(crate) struct Inbox;

impl Actor for Inbox {
    type Msg = InboxMsg;
    type State = Arc<Consumers>;
    type Arguments = (String, Arc<Consumers>);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (group, consumers): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(group, vec![myself.get_cell()]);
        Ok(consumers)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        consumers: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            InboxMsg::Push(push) => match push.into_result() {
                Ok(push) => consumers.push(push),
                Err(why) => tracing::warn!("dropped an undecodable push from the node: {why}"),
            },
        }
        Ok(())
    }
}
