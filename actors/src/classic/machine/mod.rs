//! The classic queue's pure, versioned state machine.
//!
//! The queue is modelled on RabbitMQ's `rabbit_fifo`: [`QueueState::apply`] takes a
//! [`Command`] and the time, changes the state, answers a [`Reply`] and pushes
//! [`Effect`]s (store, load, remove, deliver, confirm, dead-letter, delete) that the
//! shell performs. No actors, no I/O, no clock: time is an argument (milliseconds
//! since the Unix epoch) and the shell asks [`QueueState::next_deadline`] when to
//! send the next [`Command::Tick`]. Its behaviour follows RabbitMQ's classic queues.
//!
//! # Two parts: replicated and local
//!
//! The state has two named parts (`state.rs` puts them together):
//!
//! - the **replicated** core (`core.rs`): each message's record and place, the ready
//!   order, the consumers and their credit, the queue's expiry and deletion. It
//!   applies [`Op`]s — what a replicated queue would append to its Raft log — and
//!   decides every delivery, expiry, drop, requeue and dead-lettering from them
//!   alone: the same ops from the same start give the same core on every replica,
//!   whatever each holds in memory. Its ops carry a [`MACHINE_VERSION`]; a log of a
//!   version up to this one replays here (`golden/` holds the version 1 log the
//!   tests replay).
//! - the **local** part (`local.rs`): where each body is (memory, page file, redb),
//!   writes and loads, the memory window and allowance, publisher confirms, the
//!   deliveries whose bodies are still loading, and dead letters on their way. It
//!   turns the core's decisions into effects and proposes the ops only it can know
//!   are due (a no-ack delivery went out, dead letters are held, bodies are lost,
//!   which assignments never left this node).
//!
//! # Layout
//!
//! | file | concern |
//! | --- | --- |
//! | `config.rs` | [`QueueConfig`]: declare flags and `x-` arguments, validation, equivalence |
//! | `command.rs` | [`Command`], [`Reply`] and the identifiers ([`Seq`], [`ChannelId`], ...) |
//! | `effects.rs` | [`Effect`], [`DeadLetterReason`], [`DeleteReason`] |
//! | `errors.rs` | [`QueueError`] with AMQP reply codes |
//! | `entry.rs` | a message's two halves: its record (core) and its body (local); [`IndexRecord`] |
//! | `ready.rs` | the ready set, ordered by (priority desc, seq asc) |
//! | `consumers.rs` | consumers, exclusive use, single active consumer, credit rotation |
//! | `core.rs` | the replicated core: [`Op`]s and every decision about messages |
//! | `local.rs` | the local part: bodies, storage, loads, confirms, pending deliveries, dead letters |
//! | `window.rs` | [`WindowLimits`] and the paging decisions of the body memory window |
//! | `deadletter.rs` | `x-death` headers and the dead-letter cycle check |
//! | `stats.rs` | the local counters and the [`QueueStats`](crate::queue::QueueStats) built from both parts |
//! | `state.rs` | [`QueueState`]: the two parts together, `apply` |
//! | `replicated.rs` | [`ReplicatedQueue`]: a replica's core fed the leader's logged ops; a new leader's state |
//!
//! # Messages, seqs and bodies
//!
//! Each message gets a queue-local [`Seq`] at enqueue: strictly increasing, never
//! reused, and its key in storage. The core keeps a small record for every message
//! (size, priority, expiry, delivery count, flags); the local part keeps its body
//! only inside the window: the ready messages nearest the head, at most
//! [`WindowLimits::messages`] bodies and [`WindowLimits::bytes`] bytes (2048 / 8 MiB
//! by default). Persistent messages on durable queues are written at once
//! (`Store { durable: true }`); everything else is written (unsynced, to the shell's
//! page file, see `warren_storage::paging`) only when its body must leave memory. A
//! body leaves memory only after storage confirms the write (`Command::Stored`).
//!
//! The core hands a message to a consumer whether or not its body is in memory; a
//! delivery whose body is not waits in the local part's pending line (with every
//! delivery and get answer made after it, so each channel sees them in order) while
//! the body loads (`LoadBodies`, answered by `Command::BodiesLoaded`), so `apply` never
//! blocks. A consumer cancelled or a channel closed before its deliveries left gets
//! them back in the queue untouched (not redelivered). Unacked messages keep their body
//! only until it is stored (the consumer has it; a requeue loads it again).
//!
//! A message is in one of three places: **ready** (in the ready order), **unacked**
//! (given to a channel, by a consumer or a `basic.get`), or **dead-lettering**
//! (republished to the dead-letter exchange, it stays until its targets hold it:
//! at-least-once dead-lettering; a target that refuses it is tried again after
//! [`DEAD_LETTER_RETRY_MS`]).
//!
//! # Invariants
//!
//! Checked after every step of the property tests (`check_invariants`):
//!
//! 1. Every live message is in exactly one place; the ready set holds exactly the
//!    ready ones, the per-channel unacked sets exactly the unacked ones.
//! 2. Every record has a body entry and the body mirrors the record's place, size and
//!    priority; no body is lost: a message without its body in memory is stored
//!    (`Stored` received).
//! 3. A sent unacked message whose write is confirmed holds no body; a ready message
//!    marked for page-out is being written; a loading message has no body; a
//!    dead-lettering message is loading, queued for a load, or republished with its
//!    body (waiting for its targets or for its retry).
//! 4. The counters (ready, unacked, bytes, resident, paged out, loading) equal
//!    their recomputation from the records and bodies; so do the paged set and
//!    the expiry index.
//! 5. A consumer's unacked count is the number of its unacked messages and never
//!    exceeds its prefetch; the rotation holds exactly the eligible consumers with
//!    credit; under single-active-consumer the active one is the oldest.
//! 6. A publisher confirm waits only for a write in flight.
//! 7. Liveness: no consumer has credit while a message is ready (the core hands out
//!    everything it can), and the first delivery of the pending line waits only for
//!    its body's load.
//!
//! And, checked by a model of the shell: a message is delivered to at most one
//! consumer at a time; every enqueued message ends acked, dropped, expired,
//! dead-lettered, purged or still in the queue; every publish gets exactly one
//! confirm or reject, a persistent one on a durable queue only once written. And by
//! replay: every run's ops, applied again to a new core, give the same core.
//!
//! # Choices that differ from RabbitMQ
//!
//! - Messages expire anywhere in the queue, not only at the head.
//! - `x-delivery-limit` (a quorum-queue feature in RabbitMQ) counts returns
//!   (requeues and channel closes); a message returned more often is dead-lettered.
//! - Dead-lettering is at least once (RabbitMQ's classic queues: at most once).
//! - After a restart every recovered message is marked redelivered (the spec allows
//!   it; recording each delivery would cost a write per message).
//! - Under single-active-consumer the oldest consumer is active, whatever the
//!   consumers' `x-priority`.
//! - `x-max-priority: 0` is accepted (as RabbitMQ does) and means no priorities.
//! - Dead-lettered messages also get RabbitMQ 3.13's `x-last-death-*` headers.
//!
//! # What the shell does
//!
//! - Performs the effects in order, batching storage effects into group commits;
//!   answers `Store` with `Command::Stored` and `LoadBodies` with
//!   `Command::BodiesLoaded` (or `BodiesMissing`).
//! - Maps AMQP delivery tags to seqs per channel and expands `multiple` acks/nacks.
//! - Routes `DeadLetter` effects (checking [`is_dead_letter_cycle`] per target queue)
//!   and answers with `Command::DeadLettered`.
//! - Sends `Command::Tick` at [`QueueState::next_deadline`].
//! - Recovers durable queues with [`QueueState::recover`]; deletes the stored range of
//!   a deleted queue.

mod command;
mod config;
mod consumers;
mod core;
mod deadletter;
mod effects;
mod entry;
mod errors;
pub(crate) mod fasthash;
mod local;
mod ready;
mod replicated;
mod seqmap;
mod state;
mod stats;
mod window;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod replay_tests;
#[cfg(test)]
mod tests;

pub use command::{ChannelId, Command, ConsumerTag, PublishId, Reply, Seq};
pub use config::{Overflow, QueueConfig, MAX_SUPPORTED_PRIORITY};
pub use core::{Op, MACHINE_VERSION};
pub use deadletter::{dead_lettered, is_dead_letter_cycle};
pub use effects::{DeadLetterReason, DeleteReason, Effect};
pub use entry::IndexRecord;
pub use errors::{reply_code, QueueError};
pub use local::DEAD_LETTER_RETRY_MS;
pub use replicated::{Locator, ReplicatedImage, ReplicatedQueue};
pub use state::QueueState;
pub use window::WindowLimits;
