//! The members of replicated queues: `warren queue add-member / delete-member / grow /
//! shrink`, and a new member for each queue that had one on a node the cluster
//! forgot. The metadata's list of members changes here; each queue's Raft group follows
//! it (its leader adds a new member as a learner, makes it a voter once it caught up,
//! and removes the ones left out).

use warren_actors::error::{code, BrokerError};
use warren_actors::queue::QueueDef;
use warren_actors::vhost::VHost;
use warren_cluster::membership::watch_down;
use warren_cluster::protocol::MembersChanged;

use super::admin::Admin;

impl Admin {
    /// Adds (`add`) or removes a replica on `node` to queue `queue` of `vhost`, or with
    /// no queue, to each of its quorum queues that lacks (has) one there.
    pub async fn change_members(
        &self,
        vhost: &VHost,
        queue: Option<&str>,
        node: &str,
        add: bool,
    ) -> Result<Vec<MembersChanged>, BrokerError> {
        if add {
            self.check_host(node).await?;
        }
        let Some(queue) = queue else {
            let mut changes = Vec::new();
            for def in vhost.queue_defs() {
                let has = def.replicas.iter().any(|r| r == node);
                // (A queue's last replica stays where it is: `shrink` leaves it.)
                if def.replicas.is_empty() || has == add || (!add && def.replicas.len() == 1) {
                    continue;
                }
                let outcome = self.change_member(vhost, &def, node, add).await;
                changes.push(MembersChanged {
                    queue: def.name,
                    outcome: outcome.map_err(Into::into),
                });
            }
            return Ok(changes);
        };
        let def = vhost.queue_def(queue).ok_or_else(|| {
            BrokerError::not_found(format!("no queue '{queue}' in vhost '{}'", vhost.name()))
        })?;
        let members = self.change_member(vhost, &def, node, add).await?;
        Ok(vec![MembersChanged {
            queue: def.name,
            outcome: Ok(members),
        }])
    }

    /// One queue's change (see [`Admin::change_members`]).
    async fn change_member(
        &self,
        vhost: &VHost,
        def: &QueueDef,
        node: &str,
        add: bool,
    ) -> Result<Vec<String>, BrokerError> {
        let mut replicas = def.replicas.clone();
        let member = replicas.iter().any(|r| r == node);
        let (queue, listed) = (&def.name, replicas.join(", "));
        if add && member {
            return Err(BrokerError::precondition_failed(format!(
                "node '{node}' is a member of queue '{queue}' already (members: {listed})"
            )));
        }
        if !add && !member && !replicas.is_empty() {
            return Err(BrokerError::not_found(format!(
                "node '{node}' is not a member of queue '{queue}' (members: {listed})"
            )));
        }
        if add {
            replicas.push(node.to_string());
        } else {
            if replicas.len() == 1 {
                return Err(BrokerError::precondition_failed(format!(
                    "node '{node}' is the last member of queue '{queue}': delete the queue instead"
                )));
            }
            replicas.retain(|r| r != node);
        }
        Ok(vhost.set_replicas(queue, replicas).await?.replicas)
    }

    /// Node `node` may hold a new replica: a member of the cluster, and not down.
    async fn check_host(&self, node: &str) -> Result<(), BrokerError> {
        let members = self.replica().group().await?.members;
        if !members.iter().any(|m| m == node) {
            return Err(BrokerError::not_found(format!(
                "no node '{node}' in the cluster (its nodes: {})",
                members.join(", ")
            )));
        }
        if self.down_nodes().iter().any(|d| d == node) {
            return Err(BrokerError::new(
                code::RESOURCE_LOCKED,
                format!("node '{node}' is down: a new replica needs a node that is up"),
            ));
        }
        Ok(())
    }

    /// The nodes this node's member list holds down.
    fn down_nodes(&self) -> Vec<String> {
        watch_down(&self.node_name)
            .borrow()
            .iter()
            .cloned()
            .collect()
    }

    /// After node `gone` was forgotten: each replicated queue that had a replica there
    /// gets one on another node that is up and holds none of it (the one with the
    /// fewest replicas), or, with no such node, just loses that one.
    pub(super) async fn replace_replicas_of(&self, gone: &str) {
        let Ok(group) = self.replica().group().await else {
            return;
        };
        let down = self.down_nodes();
        let mut load: Vec<(usize, String)> = group
            .members
            .iter()
            .filter(|n| *n != gone && !down.contains(n))
            .map(|n| (0, n.clone()))
            .collect();
        let vhosts = self.vhosts.all();
        for vhost in &vhosts {
            for def in vhost.queue_defs() {
                for (count, node) in load.iter_mut() {
                    *count += def.replicas.iter().filter(|r| *r == node).count();
                }
            }
        }
        for vhost in &vhosts {
            for def in vhost.queue_defs() {
                if !def.replicas.iter().any(|r| r == gone) {
                    continue;
                }
                let mut replicas: Vec<String> = def
                    .replicas
                    .iter()
                    .filter(|r| *r != gone)
                    .cloned()
                    .collect();
                load.sort();
                if let Some((count, node)) = load.iter_mut().find(|(_, n)| !replicas.contains(n)) {
                    replicas.push(node.clone());
                    *count += 1;
                }
                if replicas.is_empty() {
                    tracing::warn!(queue = %def.name, vhost = %vhost.name(), "the forgotten node held the queue's only replica: its messages are lost; delete the queue");
                    continue;
                }
                match vhost.set_replicas(&def.name, replicas).await {
                    Ok(def) => {
                        tracing::info!(queue = %def.name, vhost = %vhost.name(), members = %def.replicas.join(", "), "replaced the replica on the forgotten node '{gone}'")
                    }
                    Err(e) => {
                        tracing::warn!(queue = %def.name, vhost = %vhost.name(), "the replica on the forgotten node '{gone}' was not replaced: {e}")
                    }
                }
            }
        }
    }
}
