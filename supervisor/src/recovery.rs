//! What a supervisor does when a child exits: decide whether to restart it
//! (restart policy), which siblings go with it (strategy), whether it is
//! still allowed to (intensity), and retry starts that failed.

use ractor::{ActorId, ActorRef};
use tokio::time::Instant;

use crate::children::{spawn_child, stop_all, stop_child};
use crate::error::SupervisorError;
use crate::message::SupervisorMsg;
use crate::restart::{Exit, Restart};
use crate::snapshot::ChildStatus;
use crate::state::SupervisorState;
use crate::strategy::Strategy;

/// Stop reason given to siblings stopped so they can be restarted.
const RESTART_REASON: &str = "sibling restart";
/// Stop reason given to children when the intensity is exceeded.
const GIVE_UP_REASON: &str = "restart intensity exceeded";

impl SupervisorState {
    /// Handles the exit of the actor `id`. Exits of instances that are no
    /// longer in the table (already replaced, or removed with
    /// `terminate_child`) are ignored: matching on the `ActorId` is what
    /// keeps the stops we cause ourselves from triggering restarts.
    ///
    /// Returns an error only when the restart intensity is exceeded; the
    /// children are all stopped by then.
    pub(crate) async fn on_child_exit(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        id: ActorId,
        exit: Exit,
    ) -> Result<(), SupervisorError> {
        let Some(idx) = self
            .children
            .iter()
            .position(|c| c.cell.as_ref().is_some_and(|cell| cell.get_id() == id))
        else {
            tracing::trace!(supervisor = %self.name, %id, "exit of a former child instance ignored");
            return Ok(());
        };

        let entry = &mut self.children[idx];
        entry.cell = None;
        entry.started_at = None;
        if !entry.spec.restart.should_restart(&exit) {
            entry.status = if exit.is_abnormal() {
                ChildStatus::Failed
            } else {
                ChildStatus::Stopped
            };
            tracing::info!(supervisor = %self.name, child = %entry.spec.name, ?exit,
                restart = %entry.spec.restart, "child exited and is not restarted");
            return Ok(());
        }
        tracing::warn!(supervisor = %self.name, child = %entry.spec.name, ?exit,
            strategy = %self.strategy, "child exited, restarting");
        entry.status = ChildStatus::Restarting;

        // One failure counts once, however many siblings it takes along.
        self.count_restart().await?;

        let group = self.strategy.affected(idx, self.children.len());
        for j in group.rev().filter(|&j| j != idx) {
            let sibling = &mut self.children[j];
            let Some(cell) = sibling.cell.take() else {
                continue;
            };
            stop_child(&cell, RESTART_REASON, sibling.spec.shutdown).await;
            sibling.started_at = None;
            // OTP: a temporary child stopped for a sibling's sake is not
            // restarted either.
            sibling.status = if sibling.spec.restart == Restart::Temporary {
                ChildStatus::Stopped
            } else {
                ChildStatus::Restarting
            };
        }

        self.start_pending(myself).await;
        Ok(())
    }

    /// The `RetryPending` tick: another attempt at starting the children
    /// left in `Restarting`. Each attempt counts against the intensity, so
    /// a child that can never start eventually fails the supervisor.
    pub(crate) async fn retry_pending(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
    ) -> Result<(), SupervisorError> {
        self.retry.fired();
        if !self.has_pending() {
            return Ok(());
        }
        self.count_restart().await?;
        self.start_pending(myself).await;
        Ok(())
    }

    /// Starts every child marked `Restarting`, in start order. For
    /// `one_for_all` and `rest_for_one` a failed start stops the pass, since
    /// later children may depend on the one that did not start; the rest
    /// are retried by a scheduled `RetryPending`.
    async fn start_pending(&mut self, myself: &ActorRef<SupervisorMsg>) {
        let sup = myself.get_cell();
        for i in 0..self.children.len() {
            if self.children[i].status != ChildStatus::Restarting {
                continue;
            }
            match spawn_child(&self.children[i].spec, &sup).await {
                Ok(cell) => {
                    let entry = &mut self.children[i];
                    entry.cell = Some(cell);
                    entry.status = ChildStatus::Running;
                    entry.restarts = entry.restarts.saturating_add(1);
                    entry.started_at = Some(Instant::now());
                }
                Err(err) => {
                    tracing::warn!(supervisor = %self.name, child = %self.children[i].spec.name,
                        error = %err, "restart failed, will retry");
                    if self.strategy != Strategy::OneForOne {
                        break;
                    }
                }
            }
        }

        if self.has_pending() {
            self.schedule_retry(myself);
        } else {
            self.retry.reset();
        }
    }

    fn has_pending(&self) -> bool {
        self.children
            .iter()
            .any(|c| c.status == ChildStatus::Restarting)
    }

    fn schedule_retry(&mut self, myself: &ActorRef<SupervisorMsg>) {
        if let Some(delay) = self.retry.schedule() {
            // Detached timer: if we are gone when it fires, the send just fails.
            drop(myself.send_after(delay, || SupervisorMsg::RetryPending));
        }
    }

    /// Records one restart; when that exceeds the intensity, stops all
    /// children (reverse start order) and returns the error the supervisor
    /// fails with.
    async fn count_restart(&mut self) -> Result<(), SupervisorError> {
        if self.intensity.record(Instant::now()) {
            return Ok(());
        }
        tracing::error!(supervisor = %self.name, max_restarts = self.intensity.max_restarts(),
            within = ?self.intensity.within(), "restart intensity exceeded, giving up");
        stop_all(&mut self.children, GIVE_UP_REASON).await;
        Err(SupervisorError::IntensityExceeded {
            supervisor: self.name.clone(),
            max_restarts: self.intensity.max_restarts(),
            within: self.intensity.within(),
        })
    }
}
