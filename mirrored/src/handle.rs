//! [`MirroredQueue`]: a mirrored queue as the callers on a node that holds a replica
//! see it. Everything goes to the node that serves the queue now (the latest `Lead`
//! the group applied here): this node's leader, or the serving node through the
//! cluster, as any remote queue.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use warren_actors::delivery::{ChannelId, ChannelSink};
use warren_actors::error::BrokerError;
use warren_actors::queue::{
    ConsumeRequest, ConsumerSummary, Enqueue, Got, Queue, QueueDef, QueueRef, QueueStatus,
    RemoteReach, Settlement,
};
use warren_actors::BoxFuture;

use crate::machine::Serving;

/// A mirrored queue's handle (see the module documentation).
pub(crate) struct MirroredQueue {
    pub def: QueueDef,
    pub name: Arc<str>,
    pub vhost: String,
    /// This node's name.
    pub me: String,
    /// This node's leader of the queue (running while this node leads).
    pub local: QueueRef,
    pub serving: Serving,
    pub remote: Option<Arc<dyn RemoteReach>>,
    /// The handle of the serving node, when that is another one.
    pub elsewhere: ArcSwapOption<(String, QueueRef)>,
}

impl MirroredQueue {
    /// Where requests go now.
    fn target(&self) -> QueueRef {
        let serving = self.serving.load();
        let node = serving.as_deref().unwrap_or(&self.def.node);
        if *node == self.me {
            return self.local.clone();
        }
        let Some(remote) = &self.remote else {
            return self.local.clone();
        };
        if let Some(known) = &*self.elsewhere.load() {
            if known.0 == *node {
                return known.1.clone();
            }
        }
        let def = QueueDef {
            node: node.clone(),
            ..self.def.clone()
        };
        let queue = remote.queue(&self.vhost, &def);
        self.elsewhere
            .store(Some(Arc::new((node.clone(), queue.clone()))));
        queue
    }
}

impl Queue for MirroredQueue {
    fn def(&self) -> &QueueDef {
        &self.def
    }

    fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn enqueue(&self, batch: Enqueue) {
        self.target().enqueue(batch)
    }

    fn consume(&self, request: ConsumeRequest) -> BoxFuture<'_, Result<(), BrokerError>> {
        let target = self.target();
        Box::pin(async move { target.consume(request).await })
    }

    fn cancel(&self, channel: ChannelId, tag: Arc<str>) -> BoxFuture<'_, Result<(), BrokerError>> {
        let target = self.target();
        Box::pin(async move { target.cancel(channel, tag).await })
    }

    fn settle(&self, channel: ChannelId, settlement: Settlement, seqs: Vec<u64>) {
        self.target().settle(channel, settlement, seqs)
    }

    fn get(
        &self,
        channel: ChannelId,
        no_ack: bool,
    ) -> BoxFuture<'_, Result<Option<Got>, BrokerError>> {
        let target = self.target();
        Box::pin(async move { target.get(channel, no_ack).await })
    }

    fn channel_down(&self, channel: ChannelId) {
        self.target().channel_down(channel)
    }

    fn purge(&self) -> BoxFuture<'_, Result<u64, BrokerError>> {
        let target = self.target();
        Box::pin(async move { target.purge().await })
    }

    fn delete(&self, if_unused: bool, if_empty: bool) -> BoxFuture<'_, Result<u64, BrokerError>> {
        // Never led (just declared, or declared and deleted in a log a node replays):
        // nothing to delete, and no leader to wait for.
        if self.serving.load().is_none() {
            return Box::pin(async { Ok(0) });
        }
        let target = self.target();
        Box::pin(async move { target.delete(if_unused, if_empty).await })
    }

    fn touch(&self) {
        self.target().touch()
    }

    fn redeclared(&self) -> BoxFuture<'_, Result<(), BrokerError>> {
        let target = self.target();
        Box::pin(async move { target.redeclared().await })
    }

    fn status(&self) -> BoxFuture<'_, Result<QueueStatus, BrokerError>> {
        let target = self.target();
        Box::pin(async move { target.status().await })
    }

    fn consumers(&self) -> BoxFuture<'_, Result<Vec<ConsumerSummary>, BrokerError>> {
        let target = self.target();
        Box::pin(async move { target.consumers().await })
    }

    fn trace(&self, channel: ChannelId, sink: Option<ChannelSink>) -> Result<(), BrokerError> {
        self.target().trace(channel, sink)
    }

    fn serving_node(&self) -> Option<String> {
        self.serving.load().as_deref().cloned()
    }

    fn crash(&self) -> Result<(), BrokerError> {
        self.target().crash()
    }
}
