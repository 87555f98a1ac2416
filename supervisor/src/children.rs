//! The rows of the supervisor's child table (the table itself, with its
//! indexes, is `table.rs`), and the two primitive operations on a child:
//! start it (riding out registry races) and stop it (grace period, then
//! kill).

use std::time::Duration;

use ractor::{ActorCell, ActorStatus, SpawnErr};
use tokio::time::Instant;

use crate::child_spec::ChildSpec;
use crate::restart::Restart;
use crate::snapshot::{ChildStatus, TreeSnapshot};

/// How many times a start is retried when the child's registry name is
/// still held. ractor unregisters a name when the old instance moves to
/// `Stopping`, which is before its exit reaches us, so this mostly covers
/// instances killed asynchronously (e.g. grandchildren of a killed nested
/// supervisor) and names held by actors that are about to stop.
pub(crate) const REGISTRY_RETRY_ATTEMPTS: u32 = 50;
/// Pause between those retries (so at most ~1 s in total).
pub(crate) const REGISTRY_RETRY_DELAY: Duration = Duration::from_millis(20);
/// After a child ignored its graceful-stop grace period and was killed,
/// how long we still wait for it to be gone.
pub(crate) const KILL_WAIT: Duration = Duration::from_secs(1);

/// One row of a supervisor's table, in start order.
///
/// Once the row is in a `ChildTable`, its `cell` and its `spec.name` are
/// indexed: change the cell only through `ChildTable::set_cell` /
/// `ChildTable::take_cell`, and never rename.
pub(crate) struct ChildEntry {
    pub(crate) spec: ChildSpec,
    /// The running instance, if any.
    pub(crate) cell: Option<ActorCell>,
    /// The supervisor's view; refined by the cell's own status when read.
    pub(crate) status: ChildStatus,
    pub(crate) restarts: u32,
    pub(crate) started_at: Option<Instant>,
    /// Set while the child is `Restarting` only because a strategy stopped
    /// it for a sibling's sake: before it is started again its dormancy
    /// test is asked (the child that itself exited is restarted per its
    /// policy regardless).
    pub(crate) for_sibling: bool,
}

impl ChildEntry {
    pub(crate) fn running(spec: ChildSpec, cell: ActorCell) -> Self {
        Self {
            spec,
            cell: Some(cell),
            status: ChildStatus::Running,
            restarts: 0,
            started_at: Some(Instant::now()),
            for_sibling: false,
        }
    }

    /// A row for a child that was not started because it is dormant.
    pub(crate) fn hibernated(spec: ChildSpec) -> Self {
        Self {
            spec,
            cell: None,
            status: ChildStatus::Hibernated,
            restarts: 0,
            started_at: None,
            for_sibling: false,
        }
    }

    /// The entry's status, corrected by what ractor says about the cell:
    /// between a child's exit and the supervisor processing that exit, the
    /// table still says `Running`.
    pub(crate) fn effective_status(&self) -> ChildStatus {
        match (&self.cell, self.status) {
            (Some(cell), ChildStatus::Running | ChildStatus::Starting) => match cell.get_status() {
                ActorStatus::Unstarted | ActorStatus::Starting => ChildStatus::Starting,
                ActorStatus::Running | ActorStatus::Upgrading | ActorStatus::Draining => {
                    ChildStatus::Running
                }
                ActorStatus::Stopping | ActorStatus::Stopped => ChildStatus::Stopped,
            },
            (_, status) => status,
        }
    }

    /// A live cell: present and not stopping.
    pub(crate) fn live_cell(&self) -> Option<&ActorCell> {
        self.cell
            .as_ref()
            .filter(|c| c.get_status() < ActorStatus::Stopping)
    }

    pub(crate) fn uptime_ms(&self, now: Instant) -> u64 {
        self.started_at
            .map(|t| {
                u64::try_from(now.saturating_duration_since(t).as_millis()).unwrap_or(u64::MAX)
            })
            .unwrap_or(0)
    }

    /// This entry as a leaf node (nested supervisors get their subtree
    /// filled in by `tree::snapshot_tree`).
    pub(crate) fn snapshot(&self, now: Instant) -> TreeSnapshot {
        TreeSnapshot {
            name: self.spec.name.clone(),
            kind: self.spec.kind.clone(),
            status: self.effective_status(),
            restarts: self.restarts,
            mailbox_len: None,
            uptime_ms: self.uptime_ms(now),
            // The nested supervisor's own answer replaces this; the hint
            // only shows when it does not answer.
            strategy: self.spec.strategy_hint.map(|s| s.as_str().to_string()),
            children: Vec::new(),
        }
    }

    pub(crate) fn info(&self) -> ChildInfo {
        ChildInfo {
            name: self.spec.name.clone(),
            kind: self.spec.kind.clone(),
            restart: self.spec.restart,
            is_supervisor: self.spec.is_supervisor,
            status: self.effective_status(),
            restarts: self.restarts,
            cell: self.cell.clone(),
        }
    }
}

/// A child as listed by `SupervisorHandle::children`.
#[derive(Debug, Clone)]
pub struct ChildInfo {
    /// Readable name, as given in its [`ChildSpec`]; what `terminate_child`
    /// takes.
    pub name: String,
    /// Kind from the spec (e.g. `"queue"`, `"supervisor"`), for grouping.
    pub kind: String,
    /// Whether and when it is restarted after it exits.
    pub restart: Restart,
    /// Whether the spec says it is a supervisor (snapshots recurse into it).
    pub is_supervisor: bool,
    /// Current status, corrected by ractor's view of the instance (an exit
    /// not yet processed shows as `Stopped`).
    pub status: ChildStatus,
    /// Replacement instances started so far.
    pub restarts: u32,
    /// The current instance, if one is running.
    pub cell: Option<ActorCell>,
}

/// Runs the spec's start function, retrying a bounded number of times
/// while the child's name is still registered (see
/// [`REGISTRY_RETRY_ATTEMPTS`]). Any other error is returned at once.
pub(crate) async fn spawn_child(
    spec: &ChildSpec,
    supervisor: &ActorCell,
) -> Result<ActorCell, SpawnErr> {
    let mut attempt = 0;
    loop {
        match (spec.start)(supervisor.clone()).await {
            Err(SpawnErr::ActorAlreadyRegistered(name)) if attempt < REGISTRY_RETRY_ATTEMPTS => {
                attempt += 1;
                tracing::debug!(child = %spec.name, %name, attempt, "name still registered, retrying start");
                tokio::time::sleep(REGISTRY_RETRY_DELAY).await;
            }
            Ok(cell) => {
                adopt(&cell, supervisor, &spec.name);
                return Ok(cell);
            }
            Err(err) => return Err(err),
        }
    }
}

/// Start functions are supposed to spawn linked to the supervisor. If one
/// did not (and the child is still alive), link it now so that its exit is
/// not lost. A child that is already gone and unlinked was linked and then
/// unlinked by its own exit, whose event is already in our mailbox.
fn adopt(cell: &ActorCell, supervisor: &ActorCell, name: &str) {
    let linked = cell
        .try_get_supervisor()
        .is_some_and(|s| s.get_id() == supervisor.get_id());
    if !linked && cell.get_status() < ActorStatus::Stopping {
        tracing::warn!(child = %name, "start function did not link the child to its supervisor; linking it");
        cell.link(supervisor.clone());
    }
}

/// Stops a child gracefully and waits for it; kills it if it does not stop
/// within `grace`. Never fails: a child that is already gone is fine.
pub(crate) async fn stop_child(cell: &ActorCell, reason: &str, grace: Duration) {
    // `stop` then `wait` rather than `stop_and_wait`: the latter returns at
    // once, without waiting, when a stop was already sent by someone else.
    cell.stop(Some(reason.to_string()));
    if cell.wait(Some(grace)).await.is_err() {
        tracing::warn!(child = ?cell.get_name(), ?grace, "child ignored graceful stop, killing it");
        cell.kill();
        if cell.wait(Some(KILL_WAIT)).await.is_err() {
            tracing::error!(child = ?cell.get_name(), "child still running after kill");
        }
    }
}
