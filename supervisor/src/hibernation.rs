//! Waking a hibernated child: `wake_child`.
//!
//! How a child comes to hibernate is decided elsewhere: `recovery.rs` records
//! a child that stopped with [`HIBERNATE_REASON`](crate::HIBERNATE_REASON),
//! and the start paths (`supervisor.rs` for the initial children,
//! `dynamic.rs` for `add_child`, `recovery.rs` for siblings a strategy took
//! along) ask a spec's dormancy test before starting it.

use ractor::ActorCell;
use tokio::time::Instant;

use crate::children::spawn_child;
use crate::error::SupervisorError;
use crate::snapshot::ChildStatus;
use crate::state::SupervisorState;

impl SupervisorState {
    /// Makes sure the child `name` runs and answers its current instance.
    ///
    /// * Hibernated: started now (a wake is not a restart: `restarts` is
    ///   unchanged and the intensity is not touched).
    /// * Running with a live instance: that instance. (One that has been
    ///   asked to hibernate but has not stopped yet is still live; a caller
    ///   that then loses a message to it has to wake it again.)
    /// * Running, but the instance is stopping (its exit not processed yet;
    ///   e.g. the instance itself asks for the wake from its `post_stop`
    ///   after hibernating): a new instance is started now and recorded, and
    ///   the old instance's exit, when it arrives, no longer matches and is
    ///   ignored whatever it was.
    /// * Restarting, stopped or failed: [`SupervisorError::NotHibernated`],
    ///   nothing started. Unknown: [`SupervisorError::NoSuchChild`].
    ///
    /// If the start fails the answer is [`SupervisorError::StartFailed`] and
    /// the entry is left as it was (hibernated, or waiting for the old
    /// instance's exit).
    pub(crate) async fn wake_child(
        &mut self,
        supervisor: &ActorCell,
        name: &str,
    ) -> Result<ActorCell, SupervisorError> {
        let Some((idx, entry)) = self
            .children
            .position(name)
            .and_then(|idx| self.children.get(idx).map(|entry| (idx, entry)))
        else {
            return Err(SupervisorError::NoSuchChild(name.to_string()));
        };
        match entry.status {
            ChildStatus::Hibernated => {}
            ChildStatus::Running | ChildStatus::Starting => {
                if let Some(cell) = entry.live_cell() {
                    return Ok(cell.clone());
                }
            }
            ChildStatus::Restarting | ChildStatus::Stopped | ChildStatus::Failed => {
                return Err(SupervisorError::NotHibernated(name.to_string()));
            }
        }

        let cell = spawn_child(&entry.spec, supervisor)
            .await
            .map_err(|source| SupervisorError::StartFailed {
                name: name.to_string(),
                source,
            })?;
        self.children.set_cell(idx, cell.clone());
        if let Some(entry) = self.children.get_mut(idx) {
            entry.status = ChildStatus::Running;
            entry.started_at = Some(Instant::now());
            entry.for_sibling = false;
        }
        tracing::debug!(supervisor = %self.name, child = %name, "child woken");
        Ok(cell)
    }
}
