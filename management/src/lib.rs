//! warren-management: the management HTTP API with RabbitMQ's paths and JSON field
//! names (so `rabbitmqadmin`, Terraform providers and KEDA's scaler work against
//! Warren), and the Prometheus metrics with RabbitMQ's metric names.
//!
//! | file | concern |
//! | --- | --- |
//! | `lib.rs` | [`Management`]: what the API reads (vhosts, users, connections, the node); the routers |
//! | `server.rs` | [`server::HttpListener`]: a bound port served by a supervised actor |
//! | `auth.rs` | [`auth::Caller`]: basic auth, user tags, what a caller sees and may do |
//! | `error.rs` | [`error::ApiError`]: HTTP status and RabbitMQ's `{"error", "reason"}` body |
//! | `json.rs` | arguments, headers and message properties between the broker and JSON |
//! | `listing.rs` | pages, sorting, name filters and columns of lists |
//! | `rates.rs` | the counters sampled each second: rates and their history |
//! | `peer.rs` | `management@NODE`: each node answers for its connections; requests gather the cluster's |
//! | `snapshot.rs` | every queue's counts at one moment, shared by the overview and the metrics, taken while read |
//! | `node.rs` | [`node::NodeFacts`]: what the node assembly provides (members, tree, limits, commits) |
//! | `api/overview.rs` | overview, nodes, cluster name, whoami, health checks, aliveness |
//! | `api/queues.rs` | queues: list, declare, delete, purge, get messages |
//! | `api/exchanges.rs` | exchanges: list, declare, delete, publish |
//! | `api/bindings.rs` | bindings: list, create, delete |
//! | `api/connections.rs` | connections (list, close), channels, consumers |
//! | `api/access.rs` | vhosts, users, permissions |
//! | `api/definitions.rs` | definitions export and import |
//! | `api/warren.rs` | Warren's own: the supervision tree, cluster members, streams |
//! | `metrics.rs` | Prometheus metrics (RabbitMQ's names and Warren's own) |
//! | `ui.rs` | the web UI's files (`ui/`), built into the binary |
//!
//! Dependencies point down: `api/*` use `auth`, `json`, `listing`, `rates` and
//! `error`; `metrics` uses `rates`; nothing here is used by the broker's crates.

pub mod api;
pub mod auth;
pub mod error;
pub mod json;
pub mod listing;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod rates;
pub mod server;
pub mod snapshot;
pub mod ui;

use std::sync::Arc;

use warren_access::AccessControl;
use warren_actors::vhosts::VHosts;
use warren_amqp::registry::Connections;

pub use node::{Listener, NodeFacts};
pub use server::HttpListener;

/// What the API and the metrics read and change.
pub struct Management {
    /// The node's vhosts and everything in them.
    pub vhosts: VHosts,
    /// Users and permissions.
    pub access: AccessControl,
    /// The node's AMQP connections.
    pub connections: Connections,
    /// The node assembly's part.
    pub node: Arc<dyn NodeFacts>,
    /// The sampled counters.
    pub rates: rates::Rates,
    /// Every queue's counts, as last taken.
    pub queues: snapshot::QueueSnapshots,
    /// The metrics' last texts.
    pub metrics: metrics::Cache,
}

/// The state handlers get.
pub type State = Arc<Management>;

impl Management {
    /// The management state; starts sampling the node's counters (for as long as the
    /// runtime runs).
    pub fn start(
        vhosts: VHosts,
        access: AccessControl,
        connections: Connections,
        node: Arc<dyn NodeFacts>,
    ) -> State {
        let rates = rates::Rates::default();
        let queues = snapshot::QueueSnapshots::default();
        tokio::spawn(
            rates
                .clone()
                .run(connections.clone(), vhosts.clone(), queues.clone()),
        );
        Arc::new(Management {
            vhosts,
            access,
            connections,
            node,
            rates,
            queues,
            metrics: Default::default(),
        })
    }
}

/// The management port's router: the API (`/api/...`) and the web UI (`/`).
pub fn api_router(state: State) -> axum::Router {
    ui::router().merge(api::router(state))
}

/// The Prometheus endpoint's router (`/metrics`, `/metrics/per-object`).
pub fn metrics_router(state: State) -> axum::Router {
    metrics::router(state)
}
