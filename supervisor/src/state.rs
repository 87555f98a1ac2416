//! [`SupervisorState`]: a running supervisor's child table and restart
//! bookkeeping. What the supervisor does with it is spread over the modules
//! above this one, each adding its own `impl SupervisorState` block:
//! `recovery.rs` (a child exited), `hibernation.rs` (`wake_child`),
//! `dynamic.rs` (`start_child` / `add_child` / `terminate_child`) and
//! `tree.rs` (the `Describe` report).

use tokio::time::Instant;

use crate::intensity::RestartIntensity;
use crate::retry::RetryBackoff;
use crate::strategy::Strategy;
use crate::table::ChildTable;

/// The supervisor's state: its child table in start order and the restart
/// bookkeeping. Opaque; observe it through snapshots.
pub struct SupervisorState {
    /// Registered name, shown in logs, snapshots and errors.
    pub(crate) name: String,
    /// Kind shown in snapshots (`"supervisor"` unless the caller chose one).
    pub(crate) kind: String,
    /// Which siblings go with a child that is restarted.
    pub(crate) strategy: Strategy,
    /// Restarts counted against the allowance.
    pub(crate) intensity: RestartIntensity,
    /// The child table, in start order, indexed by name and by the
    /// `ActorId` of each current instance: nothing that concerns one child
    /// scans a table of 100 000 queues.
    pub(crate) children: ChildTable,
    /// For the supervisor's own uptime in snapshots.
    pub(crate) started_at: Instant,
    /// When to try again to start children whose restart failed.
    pub(crate) retry: RetryBackoff,
}

impl SupervisorState {
    /// The state of a supervisor that just started `children` (running or
    /// hibernated, in start order), with no restart counted yet.
    pub(crate) fn new(
        name: String,
        kind: String,
        strategy: Strategy,
        intensity: RestartIntensity,
        children: ChildTable,
    ) -> Self {
        Self {
            name,
            kind,
            strategy,
            intensity,
            children,
            started_at: Instant::now(),
            retry: RetryBackoff::new(),
        }
    }
}
