//! Streams (RabbitMQ's stream queues, Kafka's and RocketMQ's partitions): an
//! append-only log per partition in the node's store, read from any offset by any
//! number of consumers, each at its own position; acks give credit, they do not
//! remove messages; retention drops the oldest chunks by age and size.
//!
//! | file | concern |
//! | --- | --- |
//! | `args.rs` | [`StreamConfig`]: a declaration's flags and arguments, checked as RabbitMQ does |
//! | `offset.rs` | [`OffsetSpec`] (`x-stream-offset`) and [`LogBounds`]: where a consumer starts |
//! | `chunk.rs` | a chunk: the messages of one append, one record of the log, header first |
//! | `group.rs` | [`group::GroupArgs`]: a consumer's group, from its arguments |
//! | `filter.rs` | [`filter::TagFilter`]: tags and the filters consumers set on them |
//! | `keys.rs` | message keys and the hash of the key index |
//! | `machine.rs` | [`Partition`]: the pure state machine (bounds, consumers, credit) |
//! | `retention.rs` | which old chunks go (pure) |
//! | `shell.rs` | the partition's actor: appends, reads, retention, deliveries |
//! | `handle.rs` | [`StreamQueue`]: the queue-type seam's `Queue` for a stream |
//! | `queue_type.rs` | [`Stream`]: the queue type (validation, hosting, removal) |
//!
//! The log lives in the store's `partition.log` table, keyed by (partition, first
//! offset of the chunk), with a timestamp index in `partition.time`. A partition
//! reads only its first and last chunk when it starts, whatever its length, and keeps
//! a bounded tail of recent chunks decoded for consumers at the end: memory is flat
//! whatever the backlog. A chunk's offsets are what a Raft index of a replicated
//! partition will map to later (one append, one entry).

#![deny(missing_docs)]

pub mod args;
pub mod chunk;
pub mod filter;
pub mod group;
mod handle;
pub mod keys;
pub mod machine;
pub mod offset;
mod queue_type;
pub mod retention;
mod shell;

pub use args::StreamConfig;
pub use handle::StreamQueue;
pub use machine::Partition;
pub use offset::{LogBounds, OffsetSpec, STREAM_OFFSET_ARG};
pub use queue_type::Stream;
