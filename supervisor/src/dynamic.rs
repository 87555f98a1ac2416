//! Dynamic children: `start_child` and `terminate_child`.

use ractor::{ActorCell, ActorStatus};

use crate::child_spec::ChildSpec;
use crate::children::{spawn_child, stop_child, ChildEntry};
use crate::error::SupervisorError;
use crate::snapshot::ChildStatus;
use crate::state::SupervisorState;

/// Stop reason given to a child removed with `terminate_child`.
const TERMINATE_REASON: &str = "terminated by supervisor";

impl SupervisorState {
    fn position(&self, name: &str) -> Option<usize> {
        if !self.names.contains(name) {
            return None;
        }
        self.children.iter().position(|c| c.spec.name == name)
    }

    /// Starts `spec` and appends it to the start order.
    ///
    /// Refused when a live child (running, starting or being restarted) has
    /// the same name, or when a live actor this supervisor does not own
    /// holds the name in ractor's registry. A dead entry of the same name
    /// (a temporary or transient child that will not be restarted) is
    /// replaced once the new child is running. `supervisor` is this
    /// supervisor's own cell, which the child is linked to.
    pub(crate) async fn start_child(
        &mut self,
        supervisor: &ActorCell,
        spec: ChildSpec,
    ) -> Result<ActorCell, SupervisorError> {
        if let Some(idx) = self.position(&spec.name) {
            if matches!(
                self.children[idx].status,
                ChildStatus::Starting | ChildStatus::Running | ChildStatus::Restarting
            ) {
                return Err(SupervisorError::ChildExists(spec.name));
            }
        }
        // Checked up front: otherwise a start function that registers the
        // name would only fail after the registry-race retries.
        if ractor::registry::where_is(&spec.name)
            .is_some_and(|holder| holder.get_status() < ActorStatus::Stopping)
        {
            return Err(SupervisorError::NameTaken(spec.name));
        }

        let cell = match spawn_child(&spec, supervisor).await {
            Ok(cell) => cell,
            Err(source) => {
                return Err(SupervisorError::StartFailed {
                    name: spec.name,
                    source,
                })
            }
        };
        if let Some(idx) = self.position(&spec.name) {
            self.children.remove(idx);
        }
        tracing::info!(supervisor = %self.name, child = %spec.name, "dynamic child started");
        self.names.insert(spec.name.clone());
        self.children.push(ChildEntry::running(spec, cell.clone()));
        Ok(cell)
    }

    /// Stops the child `name` (waiting for it) and forgets its spec.
    pub(crate) async fn terminate_child(&mut self, name: &str) -> Result<(), SupervisorError> {
        let idx = self
            .position(name)
            .ok_or_else(|| SupervisorError::NoSuchChild(name.to_string()))?;
        // Removing the entry first turns the exit event that follows into
        // one for an unknown instance, which `on_child_exit` ignores: no
        // restart.
        let entry = self.children.remove(idx);
        self.names.remove(name);
        if let Some(cell) = entry.cell {
            stop_child(&cell, TERMINATE_REASON, entry.spec.shutdown).await;
        }
        tracing::info!(supervisor = %self.name, child = %name, "child terminated");
        Ok(())
    }
}
