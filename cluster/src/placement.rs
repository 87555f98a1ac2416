//! Where new queues may go: the cluster's members that are not down, as one node
//! sees them (the metadata group's members, less those membership finds down).

use crate::members::Health;
use crate::membership::MembershipHandle;
use crate::replica::ReplicaHandle;

/// The members of node `me`'s cluster that are not down, `me` first and the others
/// in name order (just `me` outside a cluster, or while the metadata group is not
/// known yet).
pub async fn nodes_up(me: &str) -> Vec<String> {
    let replica = ReplicaHandle {
        node: me.to_string(),
    };
    let mut nodes = match replica.group().await {
        Ok(view) if !view.members.is_empty() => view.members,
        _ => vec![me.to_string()],
    };
    if let Some(membership) = MembershipHandle::lookup(me) {
        if let Ok(status) = membership.status().await {
            let down: Vec<String> = status
                .into_iter()
                .filter(|m| m.health == Health::Down)
                .map(|m| m.name)
                .collect();
            nodes.retain(|n| !down.contains(n));
        }
    }
    nodes.retain(|n| n != me);
    nodes.sort();
    nodes.dedup();
    nodes.insert(0, me.to_string());
    nodes
}
