//! The node's side of the management API and the metrics ([`warren_management`]):
//! what only the node assembly knows (its listeners, members, tree, limits, store)
//! and committing changes of users through the metadata log, as the CLI's do.

use std::sync::Arc;

use warren_access::AccessChange;
use warren_actors::error::BrokerError;
use warren_cluster::protocol::{LimitsInfo, NodeInfo};
use warren_management::{Listener, NodeFacts};
use warren_supervisor::TreeSnapshot;

use super::admin::Admin;

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

    async fn tree(&self) -> Result<TreeSnapshot, BrokerError> {
        self.admin.tree(None).await
    }

    async fn commit_access(&self, change: AccessChange) -> Result<(), BrokerError> {
        self.admin.commit(change).await
    }
}
