//! What a supervisor does when a child exits: record a hibernation, or
//! decide whether to restart it (restart policy), which siblings go with it
//! (strategy, asking their dormancy test), whether it is still allowed to
//! (intensity), and retry starts that failed.

use ractor::{ActorId, ActorRef};
use tokio::time::Instant;

use crate::children::{spawn_child, stop_child};
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
    /// longer in the table (already replaced, woken over by `wake_child`,
    /// or removed with `terminate_child`) are ignored: matching on the
    /// `ActorId` is what keeps the stops we cause ourselves from triggering
    /// restarts. An exit with [`HIBERNATE_REASON`](crate::HIBERNATE_REASON)
    /// just records the child as `Hibernated`.
    ///
    /// Returns an error only when the restart intensity is exceeded; the
    /// children are all stopped by then.
    pub(crate) async fn on_child_exit(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        id: ActorId,
        exit: Exit,
    ) -> Result<(), SupervisorError> {
        let Some(idx) = self.children.position_of(id) else {
            tracing::trace!(supervisor = %self.name, %id, "exit of a former child instance ignored");
            return Ok(());
        };

        self.children.take_cell(idx);
        let Some(entry) = self.children.get_mut(idx) else {
            return Ok(());
        };
        entry.started_at = None;
        entry.for_sibling = false;
        if exit.is_hibernation() {
            // Whatever the policy: no restart, no intensity, no strategy.
            entry.status = ChildStatus::Hibernated;
            tracing::debug!(supervisor = %self.name, child = %entry.spec.name, "child hibernated");
            return Ok(());
        }
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

        // Positions are start order; tombstones (removed children) are
        // skipped, as are siblings with no instance (stopped for good,
        // hibernated or already pending).
        let group = self.strategy.affected(idx, self.children.slots());
        for j in group.rev().filter(|&j| j != idx) {
            let Some(cell) = self.children.take_cell(j) else {
                continue;
            };
            let Some(grace) = self.children.get(j).map(|s| s.spec.shutdown) else {
                continue;
            };
            stop_child(&cell, RESTART_REASON, grace).await;
            let Some(sibling) = self.children.get_mut(j) else {
                continue;
            };
            sibling.started_at = None;
            // OTP: a temporary child stopped for a sibling's sake is not
            // restarted either.
            if sibling.spec.restart == Restart::Temporary {
                sibling.status = ChildStatus::Stopped;
            } else {
                sibling.status = ChildStatus::Restarting;
                sibling.for_sibling = true;
            }
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
    /// are retried by a scheduled `RetryPending`. A child that is pending
    /// only because a sibling took it along is first asked whether it is
    /// dormant; if so it is recorded as `Hibernated` instead of started.
    async fn start_pending(&mut self, myself: &ActorRef<SupervisorMsg>) {
        let sup = myself.get_cell();
        for i in 0..self.children.slots() {
            let Some(entry) = self.children.get_mut(i) else {
                continue;
            };
            if entry.status != ChildStatus::Restarting {
                continue;
            }
            if entry.for_sibling && entry.spec.is_dormant() {
                entry.status = ChildStatus::Hibernated;
                entry.for_sibling = false;
                tracing::debug!(supervisor = %self.name, child = %entry.spec.name,
                    "sibling dormant, hibernated instead of restarted");
                continue;
            }
            let spawned = spawn_child(&entry.spec, &sup).await;
            match spawned {
                Ok(cell) => {
                    self.children.set_cell(i, cell);
                    if let Some(entry) = self.children.get_mut(i) {
                        entry.status = ChildStatus::Running;
                        entry.restarts = entry.restarts.saturating_add(1);
                        entry.started_at = Some(Instant::now());
                        entry.for_sibling = false;
                    }
                }
                Err(err) => {
                    if let Some(entry) = self.children.get(i) {
                        tracing::warn!(supervisor = %self.name, child = %entry.spec.name,
                            error = %err, "restart failed, will retry");
                    }
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
        self.children.stop_all(GIVE_UP_REASON).await;
        Err(SupervisorError::IntensityExceeded {
            supervisor: self.name.clone(),
            max_restarts: self.intensity.max_restarts(),
            within: self.intensity.within(),
        })
    }
}
