//! One Warren node: configuration, the root supervisor, the gateway.
//!
//! The supervision tree (DESIGN.md section 2):
//!
//! ```text
//! node                 one_for_one
//! ├── vhost:/          one_for_all (and one such subtree per vhost, see vhost_tree)
//! │   ├── exchanges:/  one_for_one, one actor per exchange (exchange:/amq.topic)
//! │   └── queues:/     one_for_one, one actor per queue (queue:/orders)
//! ├── cluster          one_for_one
//! │   ├── membership@NODE  seeds, heartbeats, redials, the member list
//! │   └── raft@NODE        this node's member of every Raft group (metadata: group 0)
//! ├── gateway@NODE     where client handles open sessions (session actors below it)
//! ├── amqp             one_for_one: amqp-acceptor (and, shown, a task per client: amqp-connection:PEER)
//! ├── management@NODE  answers other nodes' management API for this node's connections
//! ├── http             the management API and web UI (--http-listen)
//! └── prometheus       the metrics (--prometheus-listen)
//! ```
//!
//! The exchange and queue supervisors build their children from the vhost's registry
//! each time they start, so a restart of `vhost:/` brings every queue back, and each
//! queue actor rebuilds its messages from storage.

pub mod admin;
pub mod config;
mod gateway;
mod info;
mod janitor;
pub mod log_ring;
mod management;
mod queue_members;
mod resources;
mod session;
mod vhost_tree;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::ActorRef;
use ractor_cluster::NodeServerMessage;
use warren_actors::changes::BrokerChange;
use warren_actors::classic::Classic;
use warren_actors::error::BrokerError;
use warren_actors::queue::QueueTypes;
use warren_actors::vhost::Placement;
use warren_actors::vhosts::VHosts;
use warren_actors::BoxFuture;
use warren_cluster::members::{MemberAddress, Role, Timing};
use warren_cluster::membership::{membership_name, Membership, MembershipArgs};
use warren_cluster::metadata::{MetaChange, MetaCommand, MetadataApplier};
use warren_cluster::node_server::{watch_sessions, SessionEvent};
use warren_cluster::protocol::{GatewayMsg, LocalOnly};
use warren_cluster::queue_endpoint::{EndpointArgs, QueueEndpoint, Serving};
use warren_cluster::queue_wire::endpoint_name;
use warren_cluster::remote_queues::RemoteQueues;
use warren_cluster::replica::{replica_name, Replica, ReplicaArgs, ReplicaHandle};
use warren_resources::queue_memory::QueueMemory;
use warren_storage::Store;
use warren_supervisor::{
    ChildSpec, Restart, Strategy, Supervisor, SupervisorHandle, SupervisorSpec,
};

pub use config::NodeConfig;
use gateway::{Gateway, GatewayArgs};

/// Why a node did not start. Each says what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Cookie(#[from] warren_cluster::cookie::CookieError),
    #[error(transparent)]
    Store(#[from] warren_storage::OpenError),
    #[error("cannot recover the broker's state: {0}")]
    Recovery(String),
    #[error(transparent)]
    Listen(#[from] warren_cluster::node_server::StartError),
    #[error("cannot listen for AMQP clients on {addr}: {source} (is RabbitMQ or another node using the port? choose one with --amqp-listen ADDR, or 'off')")]
    AmqpListen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen for queue links from other nodes on {addr}: {source} (choose an address with --link-listen ADDR)")]
    LinkListen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the supervision tree: {0}")]
    Supervision(#[from] warren_supervisor::SupervisorError),
    #[error("AMQPS: {0}")]
    Tls(String),
    #[error("cannot listen for {what} on {addr}: {source} (is RabbitMQ or another node using the port? choose one with {flag} ADDR, or 'off')")]
    HttpListen {
        what: &'static str,
        flag: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// A started node.
pub struct RunningNode {
    pub config: NodeConfig,
    pub root: SupervisorHandle,
    pub vhosts: VHosts,
    pub store: Store,
    /// The AMQP listener's address, unless turned off.
    pub amqp: Option<std::net::SocketAddr>,
    /// The AMQPS listener's address, when on.
    pub amqps: Option<std::net::SocketAddr>,
    /// The management API's address, when on.
    pub http: Option<std::net::SocketAddr>,
    /// The Prometheus metrics' address, when on.
    pub prometheus: Option<std::net::SocketAddr>,
    node_server: ActorRef<NodeServerMessage>,
    /// The queue link listener and the links to other nodes' queues.
    serving: Serving,
    remote: RemoteQueues,
    /// The AMQP connections' tasks: closed first at shutdown.
    connection_tasks: warren_amqp::ConnectionTasks,
}

/// The registry name of a node's gateway actor: `gateway@NODE`.
///
/// Actors that join a cluster-wide process group carry their node's name: ractor
/// removes a name from the local registry when a remote actor of that name stops, so
/// a peer's `gateway` dying would otherwise unregister this node's.
fn gateway_name(node: &str) -> String {
    format!("gateway@{node}")
}
/// How long a node without seeds waits for its metadata group to delete the
/// transient queues and exchanges of its last run before it serves anyway.
const STALE_PATIENCE: Duration = Duration::from_secs(10);
/// Restart intensity of the node's supervisors: at most this many restarts ...
const MAX_RESTARTS: u32 = 10;
/// ... within this window.
const RESTART_WINDOW: Duration = Duration::from_secs(10);

/// Starts a node and returns once it serves clients.
pub async fn start(config: NodeConfig) -> Result<RunningNode, NodeError> {
    let began = Instant::now();
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir).map_err(|e| NodeError::DataDir {
        path: config.data_dir.clone(),
        source: e,
    })?;
    let cookie = warren_cluster::cookie::read_or_create(&config.cookie_path())?;
    let store = Store::open_with(config.store_path(), config.store_options())?;
    let remote = RemoteQueues::new(&config.name, &cookie);
    // Resources first: the memory high watermark sizes the queues' memory budget.
    let alarms = warren_resources::alarm::Alarms::default();
    let queue_memory = QueueMemory::new(0);
    let resources = resources::Resources::new(
        alarms.clone(),
        resources::Limits {
            memory: config.memory_high_watermark,
            disk_free: config.disk_free_limit,
        },
        config.data_dir.clone(),
        queue_memory.clone(),
    );
    resources.check();
    let placement = Placement {
        node: config.name.clone(),
        in_memory: config.role == Role::Ram,
        remote: Some(Arc::new(remote.clone())),
        queue_memory,
        queue_types: QueueTypes::default()
            .with(Arc::new(Classic))
            .with(Arc::new(
                warren_mirrored::Mirrored::new(&config.name)
                    .snapshot_every(config.queue_snapshot_every),
            ))
            .with(Arc::new(
                warren_streams::Stream::new(store.clone()).with_placement(&config.name, {
                    let node = config.name.clone();
                    Arc::new(move || {
                        let node = node.clone();
                        Box::pin(async move { warren_cluster::placement::nodes_up(&node).await })
                    })
                }),
            )),
        hibernate_after: config.hibernate_after(),
    };
    let vhosts = VHosts::load(store.clone(), placement)
        .await
        .map_err(|e| NodeError::Recovery(e.to_string()))?;
    let access = warren_access::AccessControl::load(store.clone())
        .await
        .map_err(|e| NodeError::Recovery(e.to_string()))?;

    let root_spec = vhosts.all().iter().fold(
        SupervisorSpec::new(Strategy::OneForOne).with_intensity(MAX_RESTARTS, RESTART_WINDOW),
        |spec, vhost| spec.child(vhost.supervisor_spec(MAX_RESTARTS, RESTART_WINDOW)),
    );
    let (root, _) = Supervisor::start(admin::ROOT, None, root_spec, None).await?;
    let root = SupervisorHandle::new(root);
    vhosts.set_supervision(Arc::new(vhost_tree::VHostTree {
        root: root.clone(),
        max_restarts: MAX_RESTARTS,
        window: RESTART_WINDOW,
    }));
    {
        // Queues that sleep until used start now if the store holds messages of
        // theirs, behind the listeners: the node serves meanwhile (a request to one
        // not started yet starts it).
        let vhosts = vhosts.clone();
        tokio::spawn(async move {
            let began = std::time::Instant::now();
            let started = vhosts.recover_queues().await;
            if started > 0 {
                tracing::info!(
                    "started {started} queues holding messages in {} ms",
                    began.elapsed().as_millis()
                );
            }
        });
    }

    tokio::spawn(resources.clone().run());
    let link_listen = config
        .link_listen
        .unwrap_or_else(|| std::net::SocketAddr::new(config.cluster_listen.ip(), 0));
    let serving = Serving::listen(&config.name, vhosts.clone(), &cookie, link_listen)
        .await
        .map_err(|source| NodeError::LinkListen {
            addr: link_listen,
            source,
        })?;
    let link_address = serving.address();
    let node_server =
        warren_cluster::node_server::start(&config.name, config.cluster_listen, cookie).await?;
    let connection_tasks = warren_amqp::ConnectionTasks::default();
    let admin = Arc::new(admin::Admin {
        connection_tasks: connection_tasks.clone(),
        node_name: config.name.clone(),
        access: access.clone(),
        address: config.cluster_listen.to_string(),
        started: began,
        log: log_ring::LogRing::global(),
        vhosts: vhosts.clone(),
        resources: resources.clone(),
    });
    let membership = {
        let me = MemberAddress {
            name: config.name.clone(),
            address: config.cluster_listen.to_string(),
            role: config.role,
        };
        let (seeds, server) = (config.seeds.clone(), node_server.clone());
        ChildSpec::for_actor(
            membership_name(&config.name),
            "membership",
            Restart::Permanent,
            move || {
                (
                    Membership,
                    MembershipArgs {
                        me: me.clone(),
                        seeds: seeds.clone(),
                        timing: Timing::default(),
                        node_server: server.clone(),
                    },
                )
            },
        )
    };
    let replica = {
        let applier: Arc<dyn MetadataApplier> = Arc::new(NodeApplier {
            access: access.clone(),
            vhosts: vhosts.clone(),
        });
        let (name, role, store, has_seeds, snapshot_every) = (
            config.name.clone(),
            config.role,
            store.clone(),
            !config.seeds.is_empty(),
            config.metadata_snapshot_every,
        );
        ChildSpec::for_actor(
            replica_name(&config.name),
            "metadata",
            Restart::Permanent,
            move || {
                (
                    Replica,
                    ReplicaArgs {
                        name: name.clone(),
                        role,
                        store: store.clone(),
                        applier: applier.clone(),
                        has_seeds,
                        snapshot_every,
                    },
                )
            },
        )
    };
    let endpoint = {
        let (node, serving, remote) = (config.name.clone(), serving.clone(), remote.clone());
        ChildSpec::for_actor(
            endpoint_name(&config.name),
            "queue endpoint",
            Restart::Permanent,
            move || {
                (
                    QueueEndpoint,
                    EndpointArgs {
                        node: node.clone(),
                        serving: serving.clone(),
                        remote: remote.clone(),
                    },
                )
            },
        )
    };
    root.start_child(ChildSpec::supervisor(
        "cluster",
        Restart::Permanent,
        SupervisorSpec::new(Strategy::OneForOne)
            .with_intensity(MAX_RESTARTS, RESTART_WINDOW)
            .child(membership)
            .child(endpoint)
            .child(replica),
    ))
    .await?;
    if config.role == Role::Ram {
        access.keep_in_memory();
    }
    let log = Arc::new(ReplicaHandle {
        node: config.name.clone(),
    });
    vhosts.set_change_log(log);
    // Alone (no seeds): the group forms at once, so this node's dead transient queues
    // and exchanges are gone before it serves. With seeds, the janitor finishes it.
    let alone = config.seeds.is_empty();
    if alone {
        janitor::remove_stale(&vhosts, true, STALE_PATIENCE).await;
    }
    tokio::spawn(janitor::run(vhosts.clone(), config.name.clone(), alone));
    let gateway_args = (config.name.clone(), vhosts.clone(), admin.clone());
    let gateway = gateway_name(&config.name);
    root.start_child(ChildSpec::for_actor(
        gateway.clone(),
        "gateway",
        Restart::Permanent,
        move || {
            (
                Gateway,
                GatewayArgs {
                    node_name: gateway_args.0.clone(),
                    vhosts: gateway_args.1.clone(),
                    admin: gateway_args.2.clone(),
                },
            )
        },
    ))
    .await?;
    // A client process whose transport closed: its sessions end, its deliveries requeue.
    let watched = watch_sessions(&node_server, "warren.gateway", move |event| {
        if let SessionEvent::Disconnected { node_id, .. } = event {
            if let Some(cell) = ractor::registry::where_is(gateway.clone()) {
                let _ = ActorRef::<GatewayMsg>::from(cell)
                    .cast(GatewayMsg::ClientGone(LocalOnly::new(node_id)));
            }
        }
    });
    if let Err(e) = watched {
        return Err(NodeError::Recovery(format!(
            "cannot watch client sessions: {e}"
        )));
    }
    let connections = warren_amqp::registry::Connections::default();
    let amqp_server = || warren_amqp::Server {
        vhosts: vhosts.clone(),
        access: access.clone(),
        alarms: alarms.clone(),
        product_version: env!("CARGO_PKG_VERSION").to_string(),
        node_name: config.name.clone(),
        connections: connections.clone(),
        tasks: connection_tasks.clone(),
    };
    let amqp = match config.amqp_listen {
        Some(addr) => {
            let listener = warren_amqp::Listener::bind(addr, amqp_server())
                .await
                .map_err(|source| NodeError::AmqpListen { addr, source })?;
            root.start_child(listener.child_spec(MAX_RESTARTS, RESTART_WINDOW))
                .await?;
            Some(listener.addr)
        }
        None => None,
    };
    let amqps = match config.amqps().map_err(NodeError::Tls)? {
        Some((addr, tls)) => {
            let acceptor = tls.acceptor().map_err(NodeError::Tls)?;
            let listener = warren_amqp::Listener::bind_tls(addr, amqp_server(), acceptor)
                .await
                .map_err(|source| NodeError::AmqpListen { addr, source })?;
            root.start_child(listener.child_spec(MAX_RESTARTS, RESTART_WINDOW))
                .await?;
            Some(listener.addr)
        }
        None => None,
    };
    let bind_http = |addr: Option<std::net::SocketAddr>, what, flag| match addr {
        Some(addr) => warren_management::HttpListener::bind(addr)
            .map(Some)
            .map_err(|source| NodeError::HttpListen {
                what,
                flag,
                addr,
                source,
            }),
        None => Ok(None),
    };
    let http = bind_http(config.http_listen, "the management API", "--http-listen")?;
    let prometheus = bind_http(
        config.prometheus_listen,
        "Prometheus metrics",
        "--prometheus-listen",
    )?;
    let listeners = [
        ("clustering", Some(config.cluster_listen)),
        ("queue links", Some(link_address)),
        ("amqp", amqp),
        ("amqp/ssl", amqps),
        ("http", http.as_ref().map(|h| h.addr)),
        ("http/prometheus", prometheus.as_ref().map(|p| p.addr)),
    ]
    .into_iter()
    .filter_map(|(protocol, addr)| addr.map(|addr| warren_management::Listener { protocol, addr }))
    .collect();
    let facts = Arc::new(management::ManagementNode {
        admin,
        role: config.role.to_string(),
        listeners,
        store: store.clone(),
    });
    let state =
        warren_management::Management::start(vhosts.clone(), access.clone(), connections, facts);
    root.start_child(warren_management::peer::child_spec(state.clone()))
        .await?;
    if let Some(h) = &http {
        root.start_child(h.child_spec("http", warren_management::api_router(state.clone())))
            .await?;
    }
    if let Some(p) = &prometheus {
        root.start_child(p.child_spec("prometheus", warren_management::metrics_router(state)))
            .await?;
    }
    if let Some(h) = &http {
        tracing::info!("management UI and API on http://{}/", h.addr);
    }
    tracing::info!(
        node = %config.name,
        listen = %config.cluster_listen,
        links = %link_address,
        data_dir = %config.data_dir.display(),
        "node ready in {} ms",
        began.elapsed().as_millis()
    );
    Ok(RunningNode {
        config,
        root,
        vhosts,
        store,
        amqp,
        amqps,
        http: http.map(|h| h.addr),
        prometheus: prometheus.map(|p| p.addr),
        node_server,
        serving,
        remote,
        connection_tasks,
    })
}

impl RunningNode {
    /// Stops serving, stops every actor in order, and flushes storage.
    pub async fn shutdown(self) {
        tracing::info!(node = %self.config.name, "shutting down");
        self.node_server.stop(None);
        // AMQP connections first: each tells its client and requeues its deliveries.
        self.connection_tasks
            .close_all(warren_amqp::CLOSE_GRACE)
            .await;
        // Queue links next: other nodes see them end and end what they carried.
        self.serving.stop();
        self.remote.stop();
        // The tree stops in reverse start order: the queues last.
        if let Err(e) = self.root.shutdown(Duration::from_secs(30)).await {
            tracing::warn!("shutdown of the supervision tree: {e}");
        }
        self.store.close();
        tracing::info!(node = %self.config.name, "stopped");
    }
}

/// Applies committed metadata commands to this node's state: users and permissions
/// to the access registry, the rest to the vhosts (which hand a vhost its own).
struct NodeApplier {
    access: warren_access::AccessControl,
    vhosts: VHosts,
}

impl MetadataApplier for NodeApplier {
    fn apply(&self, command: MetaCommand) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            match MetaChange::from(command) {
                MetaChange::Access(change) => Ok(self.access.apply(change).await?),
                // The vhost's permissions go with it, as part of the same change.
                MetaChange::Broker(BrokerChange::DeleteVhost { name }) => {
                    let delete = BrokerChange::DeleteVhost { name: name.clone() };
                    self.vhosts.apply(delete).await?;
                    Ok(self.access.forget_vhost(&name).await?)
                }
                MetaChange::Broker(change) => self.vhosts.apply(change).await,
            }
        })
    }

    fn image(&self) -> BoxFuture<'_, Vec<MetaCommand>> {
        Box::pin(async move {
            let mut image: Vec<MetaCommand> = self
                .vhosts
                .list()
                .into_iter()
                .map(MetaCommand::AddVhost)
                .collect();
            image.extend(
                self.access
                    .user_records()
                    .into_iter()
                    .map(|user| MetaCommand::from(warren_access::AccessChange::AddUser(user))),
            );
            image.extend(
                self.access
                    .list_permissions()
                    .into_iter()
                    .map(MetaCommand::SetPermissions),
            );
            for vhost in self.vhosts.all() {
                let name = vhost.name().to_string();
                // The built-in exchanges and the default exchange's implicit
                // bindings come with every vhost.
                image.extend(
                    vhost
                        .list_exchanges()
                        .into_iter()
                        .filter(|def| !def.name.is_empty() && !def.name.starts_with("amq."))
                        .map(|def| MetaCommand::DeclareExchange {
                            vhost: name.clone(),
                            def,
                        }),
                );
                image.extend(
                    vhost
                        .queue_defs()
                        .into_iter()
                        .flat_map(|def| MetaCommand::build_queue(name.clone(), def)),
                );
                image.extend(
                    vhost
                        .list_bindings()
                        .into_iter()
                        .filter(|b| !b.source.is_empty())
                        .map(|binding| MetaCommand::Bind {
                            vhost: name.clone(),
                            binding,
                        }),
                );
            }
            image
        })
    }
}

fn stop_signal() -> &'static tokio::sync::Notify {
    static STOP: std::sync::OnceLock<tokio::sync::Notify> = std::sync::OnceLock::new();
    STOP.get_or_init(tokio::sync::Notify::new)
}

/// Asks the node process to shut down (after `warren cluster leave`).
pub fn request_stop() {
    stop_signal().notify_one();
}

/// Completes once [`request_stop`] was called.
pub async fn stop_requested() {
    stop_signal().notified().await
}

/// Keeps the node in its own variable so callers cannot drop the supervisor early.
pub fn supervisor_handle(name: &str) -> Option<SupervisorHandle> {
    SupervisorHandle::lookup(name).ok()
}
