//! [`NodeFacts`]: what the API needs from the node assembly that the broker's crates
//! do not hold: the node's name and listeners, its cluster members, its supervision
//! tree, its resource limits, and committing changes of users through the cluster's
//! metadata log.

use warren_access::AccessChange;
use warren_actors::error::BrokerError;
use warren_cluster::protocol::{LimitsInfo, NodeInfo};
use warren_supervisor::TreeSnapshot;

/// A listener the node serves, as `/api/overview` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    /// RabbitMQ's protocol name: `amqp`, `amqp/ssl`, `http`, `http/prometheus`,
    /// `clustering`.
    pub protocol: &'static str,
    /// The address it is bound to.
    pub addr: std::net::SocketAddr,
}

/// The node, as the API sees it.
#[async_trait::async_trait]
pub trait NodeFacts: Send + Sync + 'static {
    /// The node's name.
    fn name(&self) -> String;
    /// `disk` or `ram`.
    fn role(&self) -> String;
    /// Milliseconds since the node started.
    fn uptime_ms(&self) -> u64;
    /// What the node listens on.
    fn listeners(&self) -> Vec<Listener>;
    /// Memory and disk, measured now, with their limits and alarms.
    fn limits(&self) -> LimitsInfo;
    /// The group-commit writer's counters.
    fn store_stats(&self) -> warren_storage::StoreStats;
    /// The cluster's members as this node sees them (this node first).
    async fn nodes(&self) -> Result<Vec<NodeInfo>, BrokerError>;
    /// The supervision tree of `node` (this node's when `None`), asked of that node
    /// over the cluster.
    async fn tree(&self, node: Option<&str>) -> Result<TreeSnapshot, BrokerError>;
    /// Commits a prepared change of users or permissions to the metadata log;
    /// resolves once this node applied it.
    async fn commit_access(&self, change: AccessChange) -> Result<(), BrokerError>;
}
