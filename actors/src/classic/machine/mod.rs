//! The classic queue's pure state machine.
//!
//! The queue is modelled on RabbitMQ's `rabbit_fifo`: [`QueueState::apply`] takes a
//! [`Command`] and the time, changes the state, answers a [`Reply`] and pushes
//! [`Effect`]s (store, load, remove, deliver, confirm, dead-letter, delete) that the
//! shell performs. No actors, no I/O, no clock: time is an argument (milliseconds
//! since the Unix epoch) and the shell asks [`QueueState::next_deadline`] when to
//! send the next [`Command::Tick`]. Its behaviour follows RabbitMQ's classic queues.
//!
//! # Layout
//!
//! | file | concern |
//! | --- | --- |
//! | `config.rs` | [`QueueConfig`]: declare flags and `x-` arguments, validation, equivalence |
//! | `command.rs` | [`Command`], [`Reply`] and the identifiers ([`Seq`], [`ChannelId`], ...) |
//! | `effects.rs` | [`Effect`], [`DeadLetterReason`], [`DeleteReason`] |
//! | `errors.rs` | [`QueueError`] with AMQP reply codes |
//! | `entry.rs` | a message's metadata in the queue; [`IndexRecord`], its stored form |
//! | `ready.rs` | the ready set, ordered by (priority desc, seq asc) |
//! | `consumers.rs` | consumers, exclusive use, single active consumer, credit rotation |
//! | `window.rs` | [`WindowLimits`] and the paging decisions of the body memory window |
//! | `deadletter.rs` | `x-death` headers and the dead-letter cycle check |
//! | `stats.rs` | [`QueueStats`] and the internal counters |
//! | `state.rs` | [`QueueState`]: `apply` and every command's semantics |
//!
//! # Messages, seqs and bodies
//!
//! Each message gets a queue-local [`Seq`] at enqueue: strictly increasing, never
//! reused, and its key in storage. The queue keeps small metadata for every message
//! (size, priority, expiry, delivery count, flags) and its body only inside the
//! window: the ready messages nearest the head, at most [`WindowLimits::messages`]
//! bodies and [`WindowLimits::bytes`] bytes (2048 / 8 MiB by default). Persistent
//! messages on durable queues are written at once (`Store { durable: true }`);
//! everything else is written (unsynced, to the shell's page file, see
//! `warren_storage::paging`) only when its body must leave memory. A body
//! leaves memory only after storage confirms the write (`Command::Stored`). A
//! delivery whose body is not in memory waits: the queue emits
//! `LoadBodies` and delivers when `Command::BodiesLoaded` arrives, so `apply` never
//! blocks. Unacked messages keep their body only until it is stored (the consumer has
//! it; a requeue loads it again).
//!
//! A message is in one of three places: **ready** (in the ready order), **unacked**
//! (delivered to a channel, by a consumer or a `basic.get`), or **dead-lettering**
//! (removed, waiting for its body to be republished to the dead-letter exchange).
//!
//! # Invariants
//!
//! Checked after every step of the property tests (`check_invariants`):
//!
//! 1. Every live message is in exactly one place; the ready set holds exactly the
//!    ready ones, the per-channel unacked sets exactly the unacked ones.
//! 2. No body is lost: a message without its body in memory is stored
//!    (`Stored` received). Memory ∪ storage ⊇ all live messages.
//! 3. An unacked message whose write is confirmed holds no body; a ready message marked
//!    for page-out is being written; a loading message has no body and is ready or
//!    dead-lettering; a dead-lettering message is loading or queued for a load.
//! 4. The counters (ready, unacked, bytes, resident, paged out, loading) equal
//!    their recomputation from the messages; so do the paged set and expiry index.
//! 5. A consumer's unacked count is the number of its unacked messages and never
//!    exceeds its prefetch; the rotation holds exactly the eligible consumers with
//!    credit; under single-active-consumer the active one is the oldest.
//! 6. A publisher confirm waits only for a write in flight.
//! 7. Liveness: after every command, if a consumer has credit or a `basic.get` waits
//!    and messages are ready, the head's body is being loaded (everything deliverable
//!    was delivered).
//!
//! And, checked by a model of the shell: a message is delivered to at most one
//! consumer at a time; every enqueued message ends acked, dropped, expired,
//! dead-lettered, purged or still in the queue; every publish gets exactly one
//! confirm or reject, a persistent one on a durable queue only once written.
//!
//! # Choices that differ from RabbitMQ
//!
//! - Messages expire anywhere in the queue, not only at the head.
//! - `x-delivery-limit` (a quorum-queue feature in RabbitMQ) counts returns
//!   (requeues and channel closes); a message returned more often is dead-lettered.
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
//! - Routes `DeadLetter` effects (checking [`is_dead_letter_cycle`] per target queue).
//! - Sends `Command::Tick` at [`QueueState::next_deadline`].
//! - Recovers durable queues with [`QueueState::recover`]; deletes the stored range of
//!   a deleted queue.

mod config;
mod deadletter;
mod effects;
mod errors;
mod state;
mod stats;
mod window;

mod command;
mod consumers;
mod entry;
mod fasthash;
mod ready;
mod seqmap;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use command::{ChannelId, Command, ConsumerTag, PublishId, Reply, Seq};
pub use config::{Overflow, QueueConfig, MAX_SUPPORTED_PRIORITY};
pub use deadletter::{dead_lettered, is_dead_letter_cycle};
pub use effects::{DeadLetterReason, DeleteReason, Effect};
pub use entry::IndexRecord;
pub use errors::{reply_code, QueueError};
pub use state::QueueState;
pub use window::WindowLimits;
