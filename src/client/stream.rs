//! Partitioned streams through the client handle (RabbitMQ's super streams, Kafka's
//! topics), laid out as RabbitMQ lays super streams out, so AMQP clients see the same
//! objects:
//!
//! - a durable direct exchange named after the stream, with `x-super-stream: true`;
//! - one stream queue per partition, `NAME-0` … `NAME-(N-1)`;
//! - a binding from the exchange to each, keyed by the partition's number (`"0"`…),
//!   with `x-stream-partition-order` set to it.
//!
//! A [`StreamProducer`](super::StreamProducer) (`producer.rs`) picks the partition of
//! a keyed message with Kafka's default partitioner (murmur2 of the key, modulo the
//! partitions), so a key lands on the same partition number as in Kafka; without a
//! key it goes to one partition for a batch's worth, then the next (Kafka's sticky
//! partitioner). The key travels with the message in the
//! [`KEY_HEADER`] header.

use warren_actors::exchange::partition::PARTITION_ORDER_ARG;
use warren_actors::message::{FieldTable, FieldValue};
use warren_cluster::protocol::BindTarget;

use super::{Client, ClientError, ExchangeOptions, QueueOptions};

/// The exchange argument RabbitMQ marks a super stream's exchange with.
pub const SUPER_STREAM_ARG: &str = "x-super-stream";

pub use warren_streams::keys::KEY_HEADER;

/// Partitions one stream may have at most.
pub const MAX_PARTITIONS: u32 = 1024;

/// How to declare a partitioned stream.
#[derive(Clone, Debug)]
pub struct StreamOptions {
    /// How many partitions (1 or more).
    pub partitions: u32,
    /// Each partition's stream arguments (`x-max-age`, `x-max-length-bytes`…).
    pub arguments: FieldTable,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            partitions: 1,
            arguments: FieldTable::new(),
        }
    }
}

/// One partition of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// Its number (`x-stream-partition-order`).
    pub number: u64,
    /// Its stream queue (`NAME-NUMBER`).
    pub queue: String,
    /// The binding key that routes to it from the stream's exchange.
    pub routing_key: String,
}

fn partition_queue(stream: &str, number: u64) -> String {
    format!("{stream}-{number}")
}

impl Client {
    /// Declares a partitioned stream of `options.partitions` partitions (each a
    /// durable stream queue) and returns its partitions. Declaring it again as it is
    /// changes nothing; with another number of partitions it is refused (406): add
    /// partitions with [`Client::add_partitions`].
    pub async fn declare_stream(
        &self,
        name: &str,
        options: StreamOptions,
    ) -> Result<Vec<Partition>, ClientError> {
        if name.is_empty() || name.starts_with("amq.") {
            return Err(ClientError::PreconditionFailed(format!(
                "'{name}' is not a correct name for a stream: it must not be empty or start with 'amq.'"
            )));
        }
        if options.partitions == 0 || options.partitions > MAX_PARTITIONS {
            return Err(ClientError::PreconditionFailed(format!(
                "a stream has 1 to {MAX_PARTITIONS} partitions, not {}",
                options.partitions
            )));
        }
        let existing = self.stream_partitions(name).await?;
        if !existing.is_empty() && existing.len() as u32 != options.partitions {
            return Err(ClientError::PreconditionFailed(format!(
                "stream '{name}' has {} partitions, not {}: add partitions with `warren stream add-partitions`",
                existing.len(),
                options.partitions
            )));
        }
        self.declare_exchange(
            name,
            "direct",
            ExchangeOptions {
                durable: true,
                arguments: FieldTable::from([(
                    SUPER_STREAM_ARG.to_string(),
                    FieldValue::Bool(true),
                )]),
                ..Default::default()
            },
        )
        .await?;
        self.declare_partitions(name, 0..u64::from(options.partitions), &options.arguments)
            .await
    }

    /// Adds `count` partitions to stream `name` (numbered after the last one), with
    /// the arguments of its first partition; returns every partition. Keys hashed to
    /// partitions move as they do in Kafka when a topic grows.
    pub async fn add_partitions(
        &self,
        name: &str,
        count: u32,
    ) -> Result<Vec<Partition>, ClientError> {
        let existing = self.stream_partitions(name).await?;
        let Some(first) = existing.first() else {
            return Err(ClientError::NotFound(format!(
                "no stream '{name}' (declare it first)"
            )));
        };
        let total = existing.len() as u32 + count;
        if count == 0 || total > MAX_PARTITIONS {
            return Err(ClientError::PreconditionFailed(format!(
                "a stream has 1 to {MAX_PARTITIONS} partitions: cannot add {count} to {}",
                existing.len()
            )));
        }
        let arguments = self
            .queues()
            .await?
            .into_iter()
            .find(|q| q.name == first.queue)
            .map(|q| q.arguments)
            .unwrap_or_default();
        let next = existing.last().map_or(0, |p| p.number + 1);
        self.declare_partitions(name, next..next + u64::from(count), &arguments)
            .await
    }

    async fn declare_partitions(
        &self,
        name: &str,
        numbers: std::ops::Range<u64>,
        arguments: &FieldTable,
    ) -> Result<Vec<Partition>, ClientError> {
        let mut arguments = arguments.clone();
        arguments.insert("x-queue-type".into(), FieldValue::string("stream"));
        // Partitions are spread over the cluster's nodes unless asked otherwise.
        arguments
            .entry("x-queue-leader-locator".into())
            .or_insert_with(|| FieldValue::string("balanced"));
        for number in numbers {
            let queue = partition_queue(name, number);
            self.declare_queue(
                &queue,
                QueueOptions {
                    durable: true,
                    arguments: arguments.clone(),
                    ..Default::default()
                },
            )
            .await?;
            let order = FieldTable::from([(
                PARTITION_ORDER_ARG.to_string(),
                FieldValue::I64(number as i64),
            )]);
            self.bind_queue(&queue, name, &number.to_string(), order)
                .await?;
        }
        self.stream_partitions(name).await
    }

    /// The partitions of stream `name`, in order: the stream queues its exchange is
    /// bound to with a partition number. Empty when there is no such stream.
    pub async fn stream_partitions(&self, name: &str) -> Result<Vec<Partition>, ClientError> {
        let mut partitions: Vec<Partition> = self
            .bindings()
            .await?
            .into_iter()
            .filter(|b| b.source == name)
            .filter_map(|b| {
                let BindTarget::Queue(queue) = b.target else {
                    return None;
                };
                let number = b.arguments.get(PARTITION_ORDER_ARG)?.as_i64()?;
                Some(Partition {
                    number: u64::try_from(number).ok()?,
                    queue,
                    routing_key: b.routing_key,
                })
            })
            .collect();
        partitions.sort_by_key(|p| p.number);
        partitions.dedup_by_key(|p| p.number);
        Ok(partitions)
    }
}

/// A message found by its key.
#[derive(Clone, Debug)]
pub struct Found {
    /// The partition it is in.
    pub partition: u64,
    /// Its offset there.
    pub offset: u64,
    /// The message.
    pub message: warren_actors::message::Message,
}

impl Client {
    /// The messages of stream `name` published with `key` (its partitions' key
    /// indexes, RocketMQ's lookup by key), oldest first in each partition, at most
    /// `limit` per partition.
    pub async fn lookup(
        &self,
        name: &str,
        key: &str,
        limit: u32,
    ) -> Result<Vec<Found>, ClientError> {
        let partitions = self.stream_partitions(name).await?;
        if partitions.is_empty() {
            return Err(ClientError::NotFound(format!(
                "no stream '{name}' (declare it with `warren stream declare`)"
            )));
        }
        let mut found = Vec::new();
        for p in partitions {
            let request = warren_cluster::protocol::Request::Lookup {
                queue: p.queue.clone(),
                key: key.to_string(),
                limit,
            };
            match self.call(request).await? {
                warren_cluster::protocol::Response::Found(messages) => {
                    found.extend(messages.into_iter().map(|(offset, message)| Found {
                        partition: p.number,
                        offset,
                        message,
                    }));
                }
                other => return Err(super::unexpected(other)),
            }
        }
        Ok(found)
    }
}

impl Client {
    /// Stream `name`'s partitions with what each holds (first and next offset,
    /// bytes) and its consumer groups (committed offset, lag, members, the active
    /// one).
    pub async fn stream_info(
        &self,
        name: &str,
    ) -> Result<Vec<(Partition, warren_actors::queue::StreamInfo)>, ClientError> {
        let partitions = self.stream_partitions(name).await?;
        if partitions.is_empty() {
            return Err(ClientError::NotFound(format!(
                "no stream '{name}' (declare it with `warren stream declare`)"
            )));
        }
        let mut infos = Vec::new();
        for p in partitions {
            let request = warren_cluster::protocol::Request::StreamInfo {
                queue: p.queue.clone(),
            };
            match self.call(request).await? {
                warren_cluster::protocol::Response::StreamInfo(info) => infos.push((p, info)),
                other => return Err(super::unexpected(other)),
            }
        }
        Ok(infos)
    }
}

/// How to read a partitioned stream.
#[derive(Clone, Debug)]
pub struct StreamConsumeOptions {
    /// Where to start in each partition (`x-stream-offset`): `first`, `last`, `next`
    /// (the default), an offset, or an interval such as `1h`. A group's stored offset
    /// wins over it.
    pub offset: FieldValue,
    /// Unacked deliveries per partition.
    pub prefetch: u32,
    /// Read as a member of this consumer group (one member per partition at a time,
    /// the group's offset kept by the node).
    pub group: Option<String>,
    /// With a group: this member's name; with `broadcast`, every member gets every
    /// message and its offset is kept under this name.
    pub member: Option<String>,
    /// With a group and a member: RocketMQ's broadcast mode.
    pub broadcast: bool,
    /// With a group: its offset moves as messages are sent, not as they are acked.
    pub commit_on_delivery: bool,
    /// Only messages with these tags (`tagA || tagB`).
    pub filter: Option<String>,
}

impl Default for StreamConsumeOptions {
    fn default() -> Self {
        StreamConsumeOptions {
            offset: FieldValue::string("next"),
            prefetch: 100,
            group: None,
            member: None,
            broadcast: false,
            commit_on_delivery: false,
            filter: None,
        }
    }
}

impl StreamConsumeOptions {
    /// The consumer arguments these options make.
    pub fn arguments(&self) -> FieldTable {
        let mut args = FieldTable::from([("x-stream-offset".to_string(), self.offset.clone())]);
        let mut text = |k: &str, v: &str| {
            args.insert(k.to_string(), FieldValue::string(v));
        };
        if let Some(filter) = &self.filter {
            text("x-stream-filter", filter);
        }
        if let Some(group) = &self.group {
            text("x-stream-group", group);
            if let Some(member) = &self.member {
                text("x-stream-member", member);
            }
            if self.broadcast {
                text("x-stream-group-mode", "broadcast");
            }
            if self.commit_on_delivery {
                text("x-stream-commit", "delivery");
            }
        }
        args
    }
}

/// A message read from a partitioned stream.
#[derive(Debug)]
pub struct StreamDelivery {
    /// The partition it was read from.
    pub partition: u64,
    /// Its offset in that partition.
    pub offset: u64,
    /// Its key, when the producer gave one.
    pub key: Option<String>,
    /// The message; [`Delivery::ack`](super::Delivery::ack) gives the consumer credit
    /// and, for a group, commits the offset.
    pub delivery: super::Delivery,
}

/// Reads every partition of a stream (or one): a consumer per partition, their
/// deliveries merged.
pub struct StreamConsumer {
    consumers: Vec<(u64, super::Consumer)>,
    /// The consumer polled first next time (each gets its turn).
    turn: usize,
}

impl Client {
    /// Reads stream `name`: every partition, or only `partition`.
    pub async fn consume_stream(
        &self,
        name: &str,
        partition: Option<u64>,
        options: StreamConsumeOptions,
    ) -> Result<StreamConsumer, ClientError> {
        let chosen: Vec<Partition> = self
            .stream_partitions(name)
            .await?
            .into_iter()
            .filter(|p| partition.is_none_or(|n| p.number == n))
            .collect();
        if chosen.is_empty() {
            return Err(ClientError::NotFound(match partition {
                Some(n) => format!("stream '{name}' has no partition {n}"),
                None => format!("no stream '{name}' (declare it with `warren stream declare`)"),
            }));
        }
        let mut made = StreamConsumer {
            consumers: Vec::with_capacity(chosen.len()),
            turn: 0,
        };
        for p in chosen {
            // On a failure, those made so far are cancelled as `made` drops.
            let consumer = self
                .consume(
                    &p.queue,
                    super::ConsumeOptions {
                        prefetch: options.prefetch,
                        arguments: options.arguments(),
                        ..Default::default()
                    },
                )
                .await?;
            made.consumers.push((p.number, consumer));
        }
        Ok(made)
    }
}

impl StreamConsumer {
    /// The next message from any partition; `None` once every partition's consumer
    /// ended.
    pub async fn next(&mut self) -> Option<Result<StreamDelivery, ClientError>> {
        std::future::poll_fn(|cx| self.poll_next_delivery(cx)).await
    }

    fn poll_next_delivery(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<StreamDelivery, ClientError>>> {
        use std::task::Poll;
        let n = self.consumers.len();
        let mut ended = Vec::new();
        for i in 0..n {
            let at = (self.turn + i) % n;
            let (partition, consumer) = &mut self.consumers[at];
            match consumer.poll_event(cx) {
                Poll::Ready(Some(result)) => {
                    self.turn = (at + 1) % n;
                    let partition = *partition;
                    return Poll::Ready(Some(result.map(|delivery| {
                        let header = |k: &str| {
                            delivery
                                .properties
                                .headers
                                .as_ref()
                                .and_then(|h| h.get(k))
                                .cloned()
                        };
                        StreamDelivery {
                            partition,
                            offset: header("x-stream-offset")
                                .and_then(|v| v.as_i64())
                                .and_then(|o| u64::try_from(o).ok())
                                .unwrap_or(0),
                            key: header(KEY_HEADER).and_then(|v| v.as_str().map(str::to_string)),
                            delivery,
                        }
                    })));
                }
                Poll::Ready(None) => ended.push(at),
                Poll::Pending => {}
            }
        }
        if !ended.is_empty() {
            let mut at = 0;
            self.consumers.retain(|_| {
                at += 1;
                !ended.contains(&(at - 1))
            });
            self.turn = 0;
        }
        if self.consumers.is_empty() {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }

    /// Stops reading every partition.
    pub async fn cancel(mut self) -> Result<(), ClientError> {
        for (_, consumer) in std::mem::take(&mut self.consumers) {
            consumer.cancel().await?;
        }
        Ok(())
    }
}

impl Drop for StreamConsumer {
    /// A stream consumer dropped without `cancel` is cancelled all the same (in the
    /// background): a group member nobody reads must not keep its partitions from
    /// the others.
    fn drop(&mut self) {
        let consumers = std::mem::take(&mut self.consumers);
        if consumers.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for (_, consumer) in consumers {
                    let _ = consumer.cancel().await;
                }
            });
        }
    }
}
