//! Cleans up after nodes whose process is gone.
//!
//! - This node's own transient and exclusive queues of its last run: they died with
//!   that process, and the log still names them. Deleted through the log as soon as
//!   it takes changes (on a node with no seeds, before the node reports ready).
//! - The transient and exclusive queues of a member that is down: deleted through the
//!   log by the node that leads the metadata group (one proposer, not every node).
//! - The Raft logs of quorum queues deleted while this node went down between the
//!   deletion and the removal of its replica's log: once after start, when the node
//!   has caught up with the metadata leader (so that every queue that still has a log
//!   here is known), the logs no queue claims and no group runs on are removed.

use std::collections::BTreeSet;
use std::time::Duration;

use warren_actors::queue::QueueKind;
use warren_actors::vhosts::VHosts;
use warren_cluster::members::Health;
use warren_cluster::membership::MembershipHandle;
use warren_cluster::replica::ReplicaHandle;

/// How often the janitor looks.
const EVERY: Duration = Duration::from_secs(1);

/// Deletes this node's stale queues, retrying until the log takes the changes or
/// `patience` ran out; returns how many are left.
pub async fn remove_stale(vhosts: &VHosts, alone: bool, patience: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let mut left = 0;
        for vhost in vhosts.all() {
            left += vhost.remove_stale(alone).await;
        }
        if left == 0 || tokio::time::Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs for the node's life: finishes the stale cleanup, then deletes the queues
/// that died with down members while this node leads.
pub async fn run(vhosts: VHosts, node: String, alone: bool) {
    let mut logs_swept = false;
    loop {
        tokio::time::sleep(EVERY).await;
        for vhost in vhosts.all() {
            vhost.remove_stale(alone).await;
        }
        let replica = ReplicaHandle { node: node.clone() };
        if !logs_swept {
            logs_swept = remove_unclaimed_logs(&vhosts, &replica).await;
        }
        let leads =
            matches!(replica.status().await, Ok(s) if s.leader.as_deref() == Some(node.as_str()));
        if !leads {
            continue;
        }
        let Some(membership) = MembershipHandle::lookup(&node) else {
            continue;
        };
        let Ok(members) = membership.status().await else {
            continue;
        };
        for member in members.iter().filter(|m| m.health == Health::Down) {
            let mut deleted = 0;
            for vhost in vhosts.all() {
                deleted += vhost.remove_queues_of(&member.name).await;
            }
            if deleted > 0 {
                tracing::info!(
                    member = %member.name,
                    "deleted {deleted} transient or exclusive queues of a member that is down"
                );
            }
        }
    }
}

/// Removes the logs of quorum queues that no longer exist (see the module's doc);
/// `false` when it could not be done yet (not caught up with the metadata leader).
async fn remove_unclaimed_logs(vhosts: &VHosts, replica: &ReplicaHandle) -> bool {
    if !replica.catch_up().await {
        return false;
    }
    let claimed: BTreeSet<u64> = vhosts
        .all()
        .iter()
        .flat_map(|vhost| {
            vhost
                .queue_defs()
                .into_iter()
                .filter(|def| def.kind() == Ok(QueueKind::Quorum))
                .map(|def| warren_mirrored::group_of(vhost.name(), &def))
                .collect::<Vec<_>>()
        })
        .collect();
    match replica.remove_unclaimed(claimed).await {
        Ok(removed) => {
            for group in removed {
                tracing::warn!(
                    "removed the raft log of group {group}: no queue claims it (a queue \
                     deleted while this node went down before its replica's log was removed)"
                );
            }
            true
        }
        Err(e) => {
            tracing::warn!("could not look for raft logs of deleted queues: {e}");
            false
        }
    }
}
