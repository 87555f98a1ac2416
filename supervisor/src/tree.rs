//! Collecting a [`TreeSnapshot`] of a whole supervision tree.
//!
//! Each supervisor answers `Describe` with only its own level (a
//! [`SupervisorReport`]); the recursion into nested supervisors happens
//! here, in the caller's task, with one timeout per supervisor. Doing it
//! in the caller rather than inside each supervisor means no supervisor is
//! blocked waiting on another and timeouts do not nest: a supervisor that
//! does not answer shows up as its parent saw it, without children, and the
//! whole call takes at most about depth × timeout.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use ractor::ActorRef;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::error::SupervisorError;
use crate::message::{request, SupervisorMsg, SupervisorReport};
use crate::snapshot::{ChildStatus, TreeSnapshot};
use crate::state::SupervisorState;

/// Nesting beyond this is not followed (supervision trees are shallow; this
/// only bounds the work on a pathological tree).
pub const MAX_SNAPSHOT_DEPTH: usize = 32;

impl SupervisorState {
    /// This supervisor's answer to `Describe`: its own level only.
    pub(crate) fn report(&self) -> SupervisorReport {
        let now = Instant::now();
        let node = TreeSnapshot {
            name: self.name.clone(),
            kind: self.kind.clone(),
            status: ChildStatus::Running,
            restarts: 0,
            mailbox_len: None,
            uptime_ms: u64::try_from(now.saturating_duration_since(self.started_at).as_millis())
                .unwrap_or(u64::MAX),
            strategy: Some(self.strategy.as_str().to_string()),
            children: self.children.iter().map(|c| c.snapshot(now)).collect(),
        };
        // The spec flag says which children should be supervisors; the
        // message-type check makes sure, so a wrong flag never leads to
        // sending `Describe` to an actor that cannot take it.
        // Enumerated over the rows only (no tombstones), so the index is the
        // child's place in `node.children`.
        let nested = self
            .children
            .iter()
            .enumerate()
            .filter(|(_, c)| c.spec.is_supervisor)
            .filter_map(|(i, c)| {
                c.live_cell()
                    .filter(|cell| cell.is_message_type_of::<SupervisorMsg>() == Some(true))
                    .map(|cell| (i, ActorRef::from(cell.clone())))
            })
            .collect();
        SupervisorReport { node, nested }
    }
}

/// Snapshot of the tree rooted at `root`. Fails only if `root` itself does
/// not answer within `per_node_timeout`; nested supervisors that do not
/// answer appear without children.
pub async fn snapshot_tree(
    root: &ActorRef<SupervisorMsg>,
    per_node_timeout: Duration,
) -> Result<TreeSnapshot, SupervisorError> {
    let report = request(root, SupervisorMsg::Describe, per_node_timeout).await?;
    Ok(expand(report, per_node_timeout, 0).await)
}

/// Fills in the nested supervisors of `report`, asking them in parallel.
/// Boxed because it is recursive.
fn expand(
    report: SupervisorReport,
    timeout: Duration,
    depth: usize,
) -> Pin<Box<dyn Future<Output = TreeSnapshot> + Send>> {
    Box::pin(async move {
        let SupervisorReport { mut node, nested } = report;
        if depth >= MAX_SNAPSHOT_DEPTH {
            return node;
        }
        let mut asks = JoinSet::new();
        for (idx, child) in nested {
            asks.spawn(async move {
                match request(&child, SupervisorMsg::Describe, timeout).await {
                    Ok(sub) => Some((idx, expand(sub, timeout, depth + 1).await)),
                    Err(err) => {
                        tracing::debug!(supervisor = ?child.get_name(), error = %err,
                            "nested supervisor left out of snapshot");
                        None
                    }
                }
            });
        }
        while let Some(joined) = asks.join_next().await {
            // A task that panicked is treated like one that did not answer.
            if let Ok(Some((idx, sub))) = joined {
                if let Some(slot) = node.children.get_mut(idx) {
                    // Keep the parent's view (status, restarts, uptime) and
                    // take what only the child knows.
                    slot.strategy = sub.strategy;
                    slot.children = sub.children;
                }
            }
        }
        node
    })
}
