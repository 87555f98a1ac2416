//! The configuration of one supervisor.

use std::time::Duration;

use crate::child_spec::ChildSpec;
use crate::strategy::Strategy;

/// Strategy, restart intensity and initial children of a supervisor.
///
/// Can be written as a struct literal or built with [`SupervisorSpec::new`]
/// and the `with_*` / [`SupervisorSpec::child`] helpers.
#[derive(Debug, Clone)]
pub struct SupervisorSpec {
    /// Which siblings are restarted with a child that exited.
    pub strategy: Strategy,
    /// At most this many restarts within `within`; one more makes the
    /// supervisor stop its children and fail.
    pub max_restarts: u32,
    /// The sliding window for `max_restarts`.
    pub within: Duration,
    /// Started in this order when the supervisor starts; stopped in reverse.
    pub children: Vec<ChildSpec>,
}

impl SupervisorSpec {
    /// Default intensity when built with [`SupervisorSpec::new`].
    pub const DEFAULT_MAX_RESTARTS: u32 = 3;
    /// Default window when built with [`SupervisorSpec::new`].
    pub const DEFAULT_WITHIN: Duration = Duration::from_secs(5);

    /// No children, 3 restarts in 5 seconds.
    pub fn new(strategy: Strategy) -> Self {
        Self {
            strategy,
            max_restarts: Self::DEFAULT_MAX_RESTARTS,
            within: Self::DEFAULT_WITHIN,
            children: Vec::new(),
        }
    }

    /// Sets the restart intensity.
    pub fn with_intensity(mut self, max_restarts: u32, within: Duration) -> Self {
        self.max_restarts = max_restarts;
        self.within = within;
        self
    }

    /// Appends an initial child.
    pub fn child(mut self, child: ChildSpec) -> Self {
        self.children.push(child);
        self
    }
}
