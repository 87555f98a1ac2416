//! What the debug shell and the CLI ask of a node: its supervision tree, an actor's
//! state, stop and crash an actor, its recent log, its cluster members, and changes
//! of users and permissions. Sessions call these for the shell's requests (`warren
//! shell`) and the CLI's (`warren user ...`, `warren permissions ...`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::ActorRef;
use warren_access::{AccessChange, Permission};
use warren_actors::error::{code, BrokerError};
use warren_actors::vhost::{ExchangeMsg, VHost};
use warren_cluster::members::Health;
use warren_cluster::membership::{MembershipError, MembershipHandle};
use warren_cluster::protocol::{
    ActorDetails, ExchangeDetails, LogLine, NodeInfo, QueueDetails, QueueInfo,
};
use warren_cluster::replica::ReplicaHandle;
use warren_supervisor::{ChildStatus, SupervisorHandle, TreeSnapshot};

use super::info::{binding_info, exchange_info, queue_info};
use super::log_ring::{parse_level, LogRing};

/// The registry name of the node's root supervisor.
pub const ROOT: &str = "node";
/// How long a tree snapshot may take (nested supervisors answer in turn).
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(5);

/// The node facts the shell shows, shared by every session.
pub struct Admin {
    /// The AMQP connections, shown in the tree under their listener's supervisor.
    pub connection_tasks: warren_amqp::ConnectionTasks,
    pub node_name: String,
    pub access: warren_access::AccessControl,
    pub address: String,
    pub started: Instant,
    pub log: Arc<LogRing>,
    pub vhosts: warren_actors::vhosts::VHosts,
    pub resources: Arc<super::resources::Resources>,
}

fn not_found(what: &str) -> BrokerError {
    BrokerError::new(
        code::NOT_FOUND,
        format!("no actor '{what}' on this node (see `tree` for the names)"),
    )
}

impl Admin {
    async fn tree_root(&self) -> Result<TreeSnapshot, BrokerError> {
        let root = SupervisorHandle::lookup(ROOT).map_err(|e| {
            BrokerError::new(
                code::INTERNAL_ERROR,
                format!("the root supervisor is not running: {e}"),
            )
        })?;
        let mut tree = root.snapshot(SNAPSHOT_TIMEOUT).await.map_err(|e| {
            BrokerError::new(
                code::INTERNAL_ERROR,
                format!("cannot take the tree snapshot: {e}"),
            )
        })?;
        self.add_connections(&mut tree);
        Ok(tree)
    }

    /// Shows each AMQP connection (a task, not an actor) as a leaf under its
    /// listener's supervisor (`amqp-connection:PEER` under `amqp`).
    fn add_connections(&self, tree: &mut TreeSnapshot) {
        for (name, uptime) in self.connection_tasks.list() {
            let listener = if name.starts_with("amqps-") {
                warren_amqp::TLS_SUPERVISOR
            } else {
                warren_amqp::SUPERVISOR
            };
            if let Some(parent) = find_mut(tree, listener) {
                parent.children.push(TreeSnapshot {
                    name,
                    kind: "amqp connection".into(),
                    status: ChildStatus::Running,
                    restarts: 0,
                    mailbox_len: None,
                    uptime_ms: uptime.as_millis() as u64,
                    strategy: None,
                    children: Vec::new(),
                });
            }
        }
    }

    /// Whether `name` is an AMQP connection (they are tasks, stopped their own way).
    fn is_connection(name: &str) -> bool {
        name.starts_with("amqp-connection:") || name.starts_with("amqps-connection:")
    }

    pub async fn tree(&self, name: Option<&str>) -> Result<TreeSnapshot, BrokerError> {
        let tree = self.tree_root().await?;
        match name {
            None => Ok(tree),
            Some(name) => tree.find(name).cloned().ok_or_else(|| not_found(name)),
        }
    }

    pub async fn inspect(&self, vhost: &VHost, name: &str) -> Result<ActorDetails, BrokerError> {
        let tree = self.tree_root().await?;
        let location = tree.locate(name).ok_or_else(|| not_found(name))?;
        let mut details = ActorDetails {
            location,
            queue: None,
            exchange: None,
        };
        if let Some(queue) = name.strip_prefix("queue:/") {
            if let Some(handle) = vhost.queue(queue) {
                let info = vhost
                    .list_queues_named(&[queue])
                    .await
                    .into_iter()
                    .next()
                    .map(queue_info);
                let consumers = handle.consumers().await.unwrap_or_default();
                let stats = handle.status().await.unwrap_or_default().stats;
                details.queue = info.map(|info: QueueInfo| QueueDetails {
                    info,
                    stats,
                    consumers,
                });
            }
        } else if let Some(exchange) = name.strip_prefix("exchange:/") {
            let exchange = if exchange == "amq.default" {
                ""
            } else {
                exchange
            };
            if let Some(def) = vhost
                .list_exchanges()
                .into_iter()
                .find(|x| x.name == exchange)
            {
                details.exchange = Some(ExchangeDetails {
                    info: exchange_info(def),
                    bindings: vhost
                        .list_bindings()
                        .into_iter()
                        .filter(|b| b.source == exchange)
                        .map(binding_info)
                        .collect(),
                });
            }
        }
        Ok(details)
    }

    /// Stops `name` normally: a permanent child is restarted by its supervisor.
    pub async fn stop(&self, name: &str) -> Result<(), BrokerError> {
        if Self::is_connection(name) {
            // Closed with 320, its deliveries back to their queues.
            return self
                .connection_tasks
                .close(name)
                .then_some(())
                .ok_or_else(|| not_found(name));
        }
        let cell = self.target(name).await?;
        cell.stop(Some("stopped from the debug shell".into()));
        Ok(())
    }

    /// Makes `name` fail: queues and exchanges fail in their own handler (as a bug
    /// would), other actors are killed.
    pub async fn crash(&self, name: &str) -> Result<(), BrokerError> {
        if Self::is_connection(name) {
            // Ended at once, as a killed process would be: no word to the client.
            return self
                .connection_tasks
                .abort(name)
                .then_some(())
                .ok_or_else(|| not_found(name));
        }
        if name.starts_with("queue:") {
            // Through its handle: a hibernating queue starts, then fails.
            if self.tree_root().await?.find(name).is_none() {
                return Err(not_found(name));
            }
            let queue = self
                .vhosts
                .queue_by_actor(name)
                .ok_or_else(|| not_found(name))?;
            return queue.crash().map_err(|_| {
                BrokerError::new(
                    code::NOT_FOUND,
                    format!("actor '{name}' stopped before it could be crashed"),
                )
            });
        }
        let cell = self.target(name).await?;
        let sent = if name.starts_with("exchange:") {
            ActorRef::<ExchangeMsg>::from(cell)
                .cast(ExchangeMsg::Crash)
                .is_ok()
        } else {
            cell.kill();
            true
        };
        if sent {
            Ok(())
        } else {
            Err(BrokerError::new(
                code::NOT_FOUND,
                format!("actor '{name}' stopped before it could be crashed"),
            ))
        }
    }

    /// The running actor called `name`, if it is in the tree and may be stopped.
    async fn target(&self, name: &str) -> Result<ractor::ActorCell, BrokerError> {
        if name == ROOT {
            return Err(BrokerError::new(
                code::NOT_ALLOWED,
                "the root supervisor cannot be stopped from the shell: stop the node with SIGTERM",
            ));
        }
        let tree = self.tree_root().await?;
        let Some(node) = tree.find(name) else {
            return Err(not_found(name));
        };
        if node.status == ChildStatus::Hibernated {
            return Err(BrokerError::new(
                code::NOT_FOUND,
                format!(
                    "actor '{name}' is hibernating (its queue is idle): it starts again with the queue's next publish or consumer"
                ),
            ));
        }
        ractor::registry::where_is(name).ok_or_else(|| {
            BrokerError::new(
                code::NOT_FOUND,
                format!("actor '{name}' is not running right now (restarting?)"),
            )
        })
    }

    pub fn log(&self, level: &str, lines: u32) -> Result<Vec<LogLine>, BrokerError> {
        let level =
            parse_level(level).map_err(|text| BrokerError::new(code::PRECONDITION_FAILED, text))?;
        Ok(self.log.recent(level, lines as usize))
    }

    /// The members as this node sees them, this node first.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, BrokerError> {
        let members = self
            .membership()?
            .status()
            .await
            .map_err(membership_error)?;
        let group = self.replica().group().await.unwrap_or_default();
        Ok(members
            .into_iter()
            .map(|m| NodeInfo {
                leader: group.leader.as_deref() == Some(m.name.as_str()),
                term: group.term,
                // Up, but not in the metadata group yet (as far as this node has
                // applied): joining.
                health: if m.health == Health::Up && !group.members.contains(&m.name) {
                    "joining".to_string()
                } else {
                    m.health.as_str().to_string()
                },
                name: m.name,
                address: m.address,
                role: m.role.to_string(),
                metadata_log: m.this_node.then(|| group.log.clone()),
                this_node: m.this_node,
                uptime_ms: m.uptime_ms,
            })
            .collect())
    }

    pub(super) fn membership(&self) -> Result<MembershipHandle, BrokerError> {
        MembershipHandle::lookup(&self.node_name)
            .ok_or_else(|| membership_error(MembershipError::Unavailable))
    }

    pub(super) fn replica(&self) -> ReplicaHandle {
        ReplicaHandle {
            node: self.node_name.clone(),
        }
    }

    // ----- users and permissions -----------------------------------------------

    /// Adds a user (`warren user add`).
    pub async fn add_user(
        &self,
        name: &str,
        password: &str,
        tags: Vec<String>,
    ) -> Result<(), BrokerError> {
        let change = self.access.prepare_add_user(name, password, tags)?;
        self.commit(change).await
    }

    /// Deletes a user and all their permissions.
    pub async fn delete_user(&self, name: &str) -> Result<(), BrokerError> {
        let change = self.access.prepare_delete_user(name)?;
        self.commit(change).await
    }

    /// Sets (replaces) a user's permissions in a vhost.
    pub async fn set_permissions(&self, p: Permission) -> Result<(), BrokerError> {
        let change = self.access.prepare_set_permissions(p)?;
        self.commit(change).await
    }

    /// Removes a user's permissions in a vhost.
    pub async fn clear_permissions(&self, user: &str, vhost: &str) -> Result<(), BrokerError> {
        let change = self.access.prepare_clear_permissions(user, vhost)?;
        self.commit(change).await
    }

    /// Commits a prepared change to the metadata log; resolves once this node has
    /// applied it, with the result of applying it (every node applies it alike).
    pub(super) async fn commit(&self, change: AccessChange) -> Result<(), BrokerError> {
        self.replica().propose(change.into()).await
    }

    /// This node tells the members it leaves, then stops (shortly, so that the
    /// answer reaches the operator first).
    pub async fn leave(&self) -> Result<(), BrokerError> {
        let membership = self.membership()?;
        // Out of the metadata group first: the last disk node may not leave.
        self.replica().remove(&self.node_name).await?;
        membership.leave().await.map_err(membership_error)?;
        tracing::info!("left the cluster; stopping");
        tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            super::request_stop();
        });
        Ok(())
    }

    /// Removes a member that is down from the cluster.
    pub async fn forget(&self, name: &str) -> Result<(), BrokerError> {
        self.membership()?
            .forget(name)
            .await
            .map_err(membership_error)?;
        self.replica().remove(name).await?;
        self.replace_replicas_of(name).await;
        Ok(())
    }
}

/// A membership refusal with its AMQP reply code.
fn membership_error(e: MembershipError) -> BrokerError {
    let reply = match e {
        MembershipError::NoSuchMember { .. } => code::NOT_FOUND,
        MembershipError::StillUp(_) | MembershipError::Myself => code::PRECONDITION_FAILED,
        _ => code::INTERNAL_ERROR,
    };
    BrokerError::new(reply, e.to_string())
}

/// The node called `name` in `tree`, to change.
fn find_mut<'a>(tree: &'a mut TreeSnapshot, name: &str) -> Option<&'a mut TreeSnapshot> {
    if tree.name == name {
        return Some(tree);
    }
    tree.children.iter_mut().find_map(|c| find_mut(c, name))
}
