//! [`SupervisorState`]: a running supervisor's child table and restart
//! bookkeeping. What the supervisor does with it is spread over the modules
//! above this one, each adding its own `impl SupervisorState` block:
//! `recovery.rs` (a child exited), `dynamic.rs` (`start_child` /
//! `terminate_child`) and `tree.rs` (the `Describe` report).

use std::collections::HashSet;

use tokio::time::Instant;

use crate::children::ChildEntry;
use crate::intensity::RestartIntensity;
use crate::retry::RetryBackoff;
use crate::strategy::Strategy;

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
    /// The child table, in start order.
    pub(crate) children: Vec<ChildEntry>,
    /// The names in `children` (one entry per name at most): a dynamic start of a
    /// new name is answered without scanning a table of 100 000 queues.
    pub(crate) names: HashSet<String>,
    /// For the supervisor's own uptime in snapshots.
    pub(crate) started_at: Instant,
    /// When to try again to start children whose restart failed.
    pub(crate) retry: RetryBackoff,
}

impl SupervisorState {
    /// The state of a supervisor that just started `children` (already
    /// running, in start order), with no restart counted yet.
    pub(crate) fn new(
        name: String,
        kind: String,
        strategy: Strategy,
        intensity: RestartIntensity,
        children: Vec<ChildEntry>,
    ) -> Self {
        Self {
            name,
            kind,
            strategy,
            intensity,
            names: children.iter().map(|c| c.spec.name.clone()).collect(),
            children,
            started_at: Instant::now(),
            retry: RetryBackoff::new(),
        }
    }
}
