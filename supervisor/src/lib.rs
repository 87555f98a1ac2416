//! # warren-supervisor
//!
//! Erlang/OTP-style supervision for ractor 0.16.5. ractor links actors and
//! tells a parent when a child starts, stops or fails, but decides nothing;
//! this crate supplies the decisions: restart policies, restart strategies,
//! restart intensity, ordered shutdown, dynamic children and a serialisable
//! snapshot of the tree. It knows nothing about brokers.
//!
//! ## Using it
//!
//! ```
//! # use std::time::Duration;
//! # use ractor::{Actor, ActorProcessingErr, ActorRef};
//! use warren_supervisor::*;
//! # struct Queue;
//! # impl Actor for Queue {
//! #     type Msg = (); type State = (); type Arguments = ();
//! #     async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> { Ok(()) }
//! # }
//! # #[tokio::main] async fn main() -> Result<(), SupervisorError> {
//! let exchanges = SupervisorSpec::new(Strategy::RestForOne);
//! let spec = SupervisorSpec::new(Strategy::OneForOne)
//!     .with_intensity(3, Duration::from_secs(5))
//!     .child(ChildSpec::for_actor("queue:/orders", "queue", Restart::Permanent, || (Queue, ())))
//!     .child(ChildSpec::supervisor("exchanges", Restart::Permanent, exchanges));
//! let (root, _join) = Supervisor::start("root", None, spec, None).await?;
//! let root = SupervisorHandle::new(root);
//! root.start_child(ChildSpec::for_actor("queue:/audit", "queue", Restart::Transient, || (Queue, ()))).await?;
//! assert!(ractor::registry::where_is("queue:/audit").is_some());
//! let tree = root.snapshot(Duration::from_millis(500)).await?; // serde-serialisable TreeSnapshot
//! assert_eq!(tree.locate("queue:/orders").unwrap().strategy.as_deref(), Some("one_for_one"));
//! root.shutdown(Duration::from_secs(10)).await?; // children stop in reverse start order
//! # Ok(()) }
//! ```
//!
//! ## Layout (one concern per file)
//!
//! Modules depend downwards only: each one uses only modules listed below it
//! (the actor in `supervisor.rs` calls the `impl SupervisorState` blocks of
//! `recovery.rs`, `hibernation.rs`, `dynamic.rs` and `tree.rs`; none of them
//! knows the actor).
//!
//! | file | concern | uses |
//! | --- | --- | --- |
//! | `supervisor.rs` | the [`Supervisor`] actor: [`Supervisor::start`], [`SupervisorArgs`], [`ChildSpec::supervisor`], ractor glue | state, table, message, spec, children, child_spec, intensity, restart, error (and the four below) |
//! | `handle.rs` | [`SupervisorHandle`], the async request API | tree, message, children, child_spec, snapshot, error |
//! | `tree.rs` | the `Describe` report; collecting a snapshot across nested supervisors, with timeouts | state, table, message, snapshot, error |
//! | `recovery.rs` | reacting to a child's exit: hibernation, restart, strategy (asking siblings' dormancy), intensity, retries | state, table, message, children, child_spec, restart, strategy, snapshot, error |
//! | `hibernation.rs` | `wake_child`: starting a hibernated child again | state, table, children, snapshot, error |
//! | `dynamic.rs` | `start_child` / `add_child` / `terminate_child` | state, table, children, child_spec, snapshot, error |
//! | `state.rs` | [`SupervisorState`]: the child table and restart bookkeeping | table, intensity, retry, strategy |
//! | `message.rs` | [`SupervisorMsg`], [`SupervisorReport`] and one request/reply round trip | children, child_spec, snapshot, error |
//! | `table.rs` | the child table: rows in start order with tombstones, O(1) lookup by name and by current `ActorId`, stopping all | children, snapshot |
//! | `children.rs` | the child table rows, [`ChildInfo`], start-with-retry and stop-then-kill | child_spec, restart, snapshot |
//! | `spec.rs` | [`SupervisorSpec`]: strategy, intensity, initial children | child_spec, strategy |
//! | `child_spec.rs` | [`ChildSpec`]: name, kind, policy, start factory and dormancy test of a child | restart, strategy |
//! | `retry.rs` | when to retry a failed restart: one tick at a time, doubling delay | — |
//! | `intensity.rs` | [`RestartIntensity`]: at most R restarts within T | — |
//! | `strategy.rs` | [`Strategy`]: which siblings restart with a child | — |
//! | `restart.rs` | [`Restart`] policies, [`HIBERNATE_REASON`] and classifying an exit as normal/abnormal/hibernation ([`Exit`]) | — |
//! | `snapshot.rs` | [`TreeSnapshot`], [`ChildStatus`], [`ChildLocation`] and lookups | — |
//! | `error.rs` | [`SupervisorError`], the crate's only error type | — |
//!
//! ## Semantics, briefly
//!
//! * **Exit classification.** `ActorFailed` (panic or handler error) is
//!   abnormal; `ActorTerminated` is normal unless its reason is ractor's
//!   `"killed"` (from `ActorCell::kill`) or a cancelled task.
//! * **Policies.** Permanent: always restarted. Transient: only after an
//!   abnormal exit. Temporary: never. A child that is not restarted stays in
//!   the table as `Stopped`/`Failed` until `terminate_child` or a
//!   `start_child` of the same name replaces it.
//! * **Strategies.** The siblings a strategy takes along are stopped in
//!   reverse start order (waiting for each) and restarted in start order;
//!   temporary siblings are stopped but not restarted; siblings that had
//!   already stopped for good stay stopped.
//! * **Intensity.** Each exit that leads to a restart, and each retry of a
//!   failed start, counts once. Going over `max_restarts` within `within`
//!   stops every child and fails the supervisor with
//!   [`SupervisorError::IntensityExceeded`], so its parent sees
//!   `ActorFailed` and applies its own policy.
//! * **Failed restarts.** If a start function fails during a restart the
//!   child shows as `Restarting` and is retried with a doubling delay
//!   (50 ms up to 2 s), each attempt counting against the intensity.
//! * **Names.** Whether a child is in ractor's registry is up to its start
//!   function (the provided constructors register it under its name); a
//!   start that finds its name still registered is retried briefly.
//! * **Shutdown.** Stopping a supervisor stops its children in reverse start
//!   order, each with its grace period (then killed), and waits for them.
//!   Hibernated children have nothing to stop and stay `Hibernated`.
//! * **Hibernation.** A child that stops itself normally with
//!   [`HIBERNATE_REASON`] is not restarted (whatever its policy), counts
//!   nothing against the intensity, takes no sibling along, and stays in
//!   the table as [`ChildStatus::Hibernated`] with its restart count;
//!   [`SupervisorHandle::wake_child`] starts it again (not a restart). A
//!   spec with a [`ChildSpec::with_dormant`] test that says `true` is
//!   recorded as hibernated instead of started when it is an initial
//!   child, added with [`SupervisorHandle::add_child`], or a sibling a
//!   strategy took along; [`SupervisorHandle::start_child`] and the child
//!   that itself exited ignore it. Lookups by name and by instance are
//!   O(1), so a supervisor of 100 000 queues that hibernate and wake costs
//!   the same per event as one of ten.

#![deny(missing_docs)]

mod child_spec;
mod children;
mod dynamic;
mod error;
mod handle;
mod hibernation;
mod intensity;
mod message;
mod recovery;
mod restart;
mod retry;
mod snapshot;
mod spec;
mod state;
mod strategy;
mod supervisor;
mod table;
mod tree;

pub use child_spec::{ChildSpec, StartFn, StartFuture, DEFAULT_SHUTDOWN, SUPERVISOR_KIND};
pub use children::ChildInfo;
pub use error::SupervisorError;
pub use handle::{SupervisorHandle, DEFAULT_CALL_TIMEOUT};
pub use intensity::RestartIntensity;
pub use message::{SupervisorMsg, SupervisorReport};
pub use restart::{Exit, Restart, HIBERNATE_REASON};
pub use snapshot::{ChildLocation, ChildStatus, TreeSnapshot};
pub use spec::SupervisorSpec;
pub use state::SupervisorState;
pub use strategy::Strategy;
pub use supervisor::{Supervisor, SupervisorArgs, SHUTDOWN_REASON};
pub use tree::{snapshot_tree, MAX_SNAPSHOT_DEPTH};
