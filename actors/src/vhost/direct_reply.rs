//! Direct reply-to (RabbitMQ's `amq.rabbitmq.reply-to`): an RPC client consumes from
//! the pseudo-queue [`REPLY_TO`] (no-ack), publishes its requests with `reply_to` set
//! to it, and the node rewrites that to an address of the client's channel
//! ([`address`]); a responder publishing to the default exchange with that address as
//! routing key reaches the channel directly, without a queue, from any node.
//!
//! An address names the node of the consumer (hex) and a random key
//! (`amq.rabbitmq.reply-to.<node>.<key>`). Replies go through the queue-type seam as
//! if to a queue ([`ReplyQueue`]): on the consumer's node they are handed to its
//! channel at once; on any other node, to the consumer's node as a publish to a queue
//! there. A reply whose consumer is gone is dropped (returned if mandatory), as on
//! RabbitMQ.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::VHost;
use crate::delivery::{ChannelId, ChannelSink, QueueDelivery, QueueEvent};
use crate::error::BrokerError;
use crate::message::FieldTable;
use crate::queue::{
    ConsumeRequest, ConsumerSummary, Enqueue, EnqueueOutcome, Got, Queue, QueueDef, QueueRef,
    QueueStatus, Settlement,
};
use crate::BoxFuture;

/// The pseudo-queue an RPC client consumes from and names in `reply_to`.
pub const REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// A consumer of direct replies.
struct Consumer {
    channel: ChannelId,
    tag: Arc<str>,
    sink: ChannelSink,
}

/// The direct-reply consumers of a vhost on this node, by key.
#[derive(Default)]
pub(super) struct DirectReplies {
    consumers: Mutex<HashMap<String, Consumer>>,
}

/// The parts of a reply address: the consumer's node and its key.
fn parse(name: &str) -> Option<(String, &str)> {
    let rest = name.strip_prefix(REPLY_TO)?.strip_prefix('.')?;
    let (node, key) = rest.split_once('.')?;
    let node = unhex(node)?;
    (key.len() == 32 && key.bytes().all(|b| b.is_ascii_hexdigit())).then_some((node, key))
}

fn unhex(s: &str) -> Option<String> {
    if s.is_empty() || !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// Whether `name` is a reply address (the routing key of a reply).
pub fn is_address(name: &str) -> bool {
    parse(name).is_some()
}

/// The address of the consumer with `key` on `node`.
fn address(node: &str, key: &str) -> String {
    let node: String = node.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{REPLY_TO}.{node}.{key}")
}

impl VHost {
    /// Registers a direct-reply consumer of `channel`; returns its reply address.
    pub fn add_reply_consumer(
        &self,
        channel: ChannelId,
        tag: Arc<str>,
        sink: ChannelSink,
    ) -> String {
        let key = format!(
            "{:016x}{:016x}",
            rand::random::<u64>(),
            rand::random::<u64>()
        );
        let at = address(self.node(), &key);
        lock(&self.inner.direct_replies.consumers).insert(key, Consumer { channel, tag, sink });
        at
    }

    /// Ends the direct-reply consumer at `address`.
    pub fn end_reply_consumer(&self, address: &str) {
        if let Some((_, key)) = parse(address) {
            lock(&self.inner.direct_replies.consumers).remove(key);
        }
    }

    /// Ends the direct-reply consumers of `channel` (it closed).
    pub fn end_reply_consumers_of(&self, channel: ChannelId) {
        lock(&self.inner.direct_replies.consumers).retain(|_, c| c.channel != channel);
    }

    /// Whether a consumer waits at `address` (on this node).
    pub fn reply_consumer_exists(&self, address: &str) -> bool {
        match parse(address) {
            Some((node, key)) if node == self.node() => {
                lock(&self.inner.direct_replies.consumers).contains_key(key)
            }
            _ => false,
        }
    }

    /// Where a reply to `address` goes, as a queue: the consumer's channel on this
    /// node, or its node. `None` when `address` is not a reply address (or names
    /// another node outside a cluster).
    pub fn direct_reply(&self, address: &str) -> Option<QueueRef> {
        let (node, key) = parse(address)?;
        let def = QueueDef {
            name: address.to_string(),
            id: 0,
            node: node.clone(),
            durable: false,
            owner: None,
            auto_delete: false,
            arguments: FieldTable::new(),
            replicas: Vec::new(),
            founders: Vec::new(),
        };
        if node == self.node() {
            return Some(Arc::new(ReplyQueue {
                name: address.into(),
                key: key.to_string(),
                def,
                vhost: self.clone(),
            }));
        }
        let remote = self.inner.placement.remote.as_ref()?;
        Some(remote.queue(&self.inner.name, &def))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Replies to one direct-reply consumer of this node, as a queue.
struct ReplyQueue {
    name: Arc<str>,
    key: String,
    def: QueueDef,
    vhost: VHost,
}

impl ReplyQueue {
    fn not_a_queue(&self) -> BrokerError {
        BrokerError::precondition_failed(format!(
            "PRECONDITION_FAILED - '{}' is a direct reply-to address, not a queue",
            self.name
        ))
    }
}

impl Queue for ReplyQueue {
    fn def(&self) -> &QueueDef {
        &self.def
    }

    fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn enqueue(&self, batch: Enqueue) {
        let count = batch.messages.len();
        let delivered = {
            let consumers = lock(&self.vhost.inner.direct_replies.consumers);
            match consumers.get(&self.key) {
                Some(c) => {
                    let deliveries = batch
                        .messages
                        .into_iter()
                        .map(|message| QueueDelivery {
                            queue: self.name.clone(),
                            consumer_tag: c.tag.clone(),
                            seq: 0,
                            message,
                            redelivered: false,
                            no_ack: true,
                        })
                        .collect();
                    (c.sink)(QueueEvent::Deliver(deliveries));
                    true
                }
                None => false,
            }
        };
        if let Some(confirm) = batch.confirm {
            // The consumer went: as if the reply had not been routed to it.
            let outcome = match delivered {
                true => EnqueueOutcome::Confirmed,
                false => EnqueueOutcome::Gone,
            };
            let _ = confirm.send(vec![outcome; count]);
        }
    }

    fn consume(&self, _: ConsumeRequest) -> BoxFuture<'_, Result<(), BrokerError>> {
        let e = self.not_a_queue();
        Box::pin(async move { Err(e) })
    }

    fn cancel(&self, _: ChannelId, _: Arc<str>) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async { Ok(()) })
    }

    fn settle(&self, _: ChannelId, _: Settlement, _: Vec<u64>) {}

    fn get(&self, _: ChannelId, _: bool) -> BoxFuture<'_, Result<Option<Got>, BrokerError>> {
        let e = self.not_a_queue();
        Box::pin(async move { Err(e) })
    }

    fn channel_down(&self, _: ChannelId) {}

    fn purge(&self) -> BoxFuture<'_, Result<u64, BrokerError>> {
        let e = self.not_a_queue();
        Box::pin(async move { Err(e) })
    }

    fn delete(&self, _: bool, _: bool) -> BoxFuture<'_, Result<u64, BrokerError>> {
        let e = self.not_a_queue();
        Box::pin(async move { Err(e) })
    }

    fn touch(&self) {}

    fn status(&self) -> BoxFuture<'_, Result<QueueStatus, BrokerError>> {
        Box::pin(async { Ok(QueueStatus::default()) })
    }

    fn consumers(&self) -> BoxFuture<'_, Result<Vec<ConsumerSummary>, BrokerError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn trace(&self, _: ChannelId, _: Option<ChannelSink>) -> Result<(), BrokerError> {
        Err(self.not_a_queue())
    }

    fn crash(&self) -> Result<(), BrokerError> {
        Err(self.not_a_queue())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_name_their_node_and_key() {
        let key = "0123456789abcdef0123456789abcdef";
        let at = address("n1.example", key);
        assert!(at.starts_with("amq.rabbitmq.reply-to."));
        assert_eq!(parse(&at), Some(("n1.example".to_string(), key)));
        assert!(is_address(&at));
        assert!(!is_address(REPLY_TO));
        assert!(!is_address("amq.rabbitmq.reply-to.zz.0123"));
        assert!(!is_address("amq.rabbitmq.reply-to.6e31.short"));
        assert!(!is_address("orders"));
    }
}
