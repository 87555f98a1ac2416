//! The node's side of the management API and the metrics ([`warren_management`]):
//! what only the node assembly knows (its listeners, members, tree, limits, store)
//! and committing changes of users through the metadata log, as the CLI's do.

use std::sync::Arc;

use warren_access::AccessChange;
use warren_actors::error::BrokerError;
use warren_cluster::protocol::{LimitsInfo, NodeInfo};
use warren_management::{Listener, NodeFacts};
use warren_supervisor::TreeSnapshot;

use ractor::ActorRef;
use warren_actors::error::code;
use warren_cluster::protocol::GatewayMsg;

use super::admin::Admin;

/// How long another node may take to send its tree.
const TREE_TIMEOUT_MS: u64 = 10_000;

/// The facts of one running node.
pub(super) struct ManagementNode {
    pub admin: Arc<Admin>,
    pub role: String,
    pub listeners: Vec<Listener>,
    pub store: warren_storage::Store,
}

#[async_trait::async_trait]
impl NodeFacts for ManagementNode {
    fn name(&self) -> String {
        self.admin.node_name.clone()
    }

    fn role(&self) -> String {
        self.role.clone()
    }

    fn uptime_ms(&self) -> u64 {
        self.admin.started.elapsed().as_millis() as u64
    }

    fn listeners(&self) -> Vec<Listener> {
        self.listeners.clone()
    }

    fn limits(&self) -> LimitsInfo {
        self.admin.resources.check()
    }

    fn store_stats(&self) -> warren_storage::StoreStats {
        self.store.stats()
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, BrokerError> {
        self.admin.nodes().await
    }

    async fn tree(&self, node: Option<&str>) -> Result<TreeSnapshot, BrokerError> {
        let Some(node) = node.filter(|n| *n != self.admin.node_name) else {
            return self.admin.tree(None).await;
        };
        let gateway = ractor::pg::get_members(&warren_cluster::gateway_group(node))
            .into_iter()
            .next()
            .map(ActorRef::<GatewayMsg>::from)
            .ok_or_else(|| {
                BrokerError::new(
                    code::NOT_FOUND,
                    format!("node '{node}' is not reachable from this node (see /api/nodes)"),
                )
            })?;
        let answer = ractor::call_t!(gateway, GatewayMsg::Tree, TREE_TIMEOUT_MS, ().into())
            .map_err(|e| {
                BrokerError::new(
                    code::INTERNAL_ERROR,
                    format!("node '{node}' did not send its tree: {e}"),
                )
            })?;
        match answer.into_result() {
            Ok(Ok(tree)) => Ok(tree),
            Ok(Err(e)) => Err(BrokerError::new(e.code, e.text)),
            Err(why) => Err(BrokerError::new(
                code::INTERNAL_ERROR,
                format!("node '{node}' sent a tree this node cannot read: {why}"),
            )),
        }
    }

    async fn commit_access(&self, change: AccessChange) -> Result<(), BrokerError> {
        self.admin.commit(change).await
    }
}
