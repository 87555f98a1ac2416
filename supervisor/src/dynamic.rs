//! Dynamic children: `start_child`, `add_child` and `terminate_child`.

use ractor::{ActorCell, ActorStatus};

use crate::child_spec::ChildSpec;
use crate::children::{spawn_child, stop_child, ChildEntry};
use crate::error::SupervisorError;
use crate::snapshot::ChildStatus;
use crate::state::SupervisorState;

/// Stop reason given to a child removed with `terminate_child`.
const TERMINATE_REASON: &str = "terminated by supervisor";

impl SupervisorState {
    /// Starts `spec` and appends it to the start order. Its dormancy test
    /// is not asked: this always starts.
    ///
    /// Refused when a child with the same name is present (running,
    /// starting, being restarted or hibernated), or when a live actor this
    /// supervisor does not own holds the name in ractor's registry. A dead
    /// entry of the same name (a temporary or transient child that will not
    /// be restarted) is replaced once the new child is running.
    /// `supervisor` is this supervisor's own cell, which the child is
    /// linked to.
    pub(crate) async fn start_child(
        &mut self,
        supervisor: &ActorCell,
        spec: ChildSpec,
    ) -> Result<ActorCell, SupervisorError> {
        self.check_new_child(&spec)?;
        self.spawn_new_child(supervisor, spec).await
    }

    /// Like [`SupervisorState::start_child`] (same refusals), except that
    /// a spec whose dormancy test says `true` is not started but recorded
    /// as `Hibernated`, answered with `None`.
    pub(crate) async fn add_child(
        &mut self,
        supervisor: &ActorCell,
        spec: ChildSpec,
    ) -> Result<Option<ActorCell>, SupervisorError> {
        self.check_new_child(&spec)?;
        if spec.is_dormant() {
            tracing::debug!(supervisor = %self.name, child = %spec.name,
                "dynamic child dormant, recorded as hibernated");
            self.children.push(ChildEntry::hibernated(spec));
            return Ok(None);
        }
        self.spawn_new_child(supervisor, spec).await.map(Some)
    }

    /// The refusals of `start_child` / `add_child`.
    fn check_new_child(&self, spec: &ChildSpec) -> Result<(), SupervisorError> {
        if let Some(entry) = self
            .children
            .position(&spec.name)
            .and_then(|idx| self.children.get(idx))
        {
            if matches!(
                entry.status,
                ChildStatus::Starting
                    | ChildStatus::Running
                    | ChildStatus::Restarting
                    | ChildStatus::Hibernated
            ) {
                return Err(SupervisorError::ChildExists(spec.name.clone()));
            }
        }
        // Checked up front: otherwise a start function that registers the
        // name would only fail after the registry-race retries.
        if ractor::registry::where_is(&spec.name)
            .is_some_and(|holder| holder.get_status() < ActorStatus::Stopping)
        {
            return Err(SupervisorError::NameTaken(spec.name.clone()));
        }
        Ok(())
    }

    /// Spawns a child that passed `check_new_child` and appends it,
    /// replacing a dead entry of the same name.
    async fn spawn_new_child(
        &mut self,
        supervisor: &ActorCell,
        spec: ChildSpec,
    ) -> Result<ActorCell, SupervisorError> {
        let cell = match spawn_child(&spec, supervisor).await {
            Ok(cell) => cell,
            Err(source) => {
                return Err(SupervisorError::StartFailed {
                    name: spec.name,
                    source,
                })
            }
        };
        // Debug, not info: a node declares 100 000 queues this way.
        tracing::debug!(supervisor = %self.name, child = %spec.name, "dynamic child started");
        self.children.push(ChildEntry::running(spec, cell.clone()));
        Ok(cell)
    }

    /// Stops the child `name` (waiting for it) and forgets its spec. A
    /// hibernated child has nothing to stop: its entry is just removed.
    pub(crate) async fn terminate_child(&mut self, name: &str) -> Result<(), SupervisorError> {
        let entry = self
            .children
            .position(name)
            .and_then(|idx| self.children.remove(idx))
            .ok_or_else(|| SupervisorError::NoSuchChild(name.to_string()))?;
        // Removing the entry first turns the exit event that follows into
        // one for an unknown instance, which `on_child_exit` ignores: no
        // restart.
        if let Some(cell) = entry.cell {
            stop_child(&cell, TERMINATE_REASON, entry.spec.shutdown).await;
        }
        tracing::info!(supervisor = %self.name, child = %name, "child terminated");
        Ok(())
    }
}
