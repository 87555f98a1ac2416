//! A virtual host: its exchanges, queues and bindings, and the operations on them.
//!
//! The vhost keeps:
//! - the routing snapshot ([`SharedTopology`]): publishers route against it without a
//!   mailbox hop; changes swap in a new snapshot;
//! - the registry of queues (name -> [`QueueRef`](crate::queue::QueueRef), `queues.rs`): every queue of the
//!   cluster, reached through the queue-type seam; a queue of this node runs under the
//!   `queues:<vhost>` supervisor, one of another node is reached there;
//! - the definitions in storage (on a disk node), so that a restart finds them.
//!
//! Changes ([`VhostChange`](crate::changes::VhostChange)) go through the node's
//! [`ChangeLog`](crate::changes::ChangeLog) when there is one (a cluster, even of one
//! node) and are applied on every node in log order (`apply`); without a log they
//! are applied at once. The operations clients call (`operations`) check what they
//! can, then propose. Messages never take the metadata lock.

mod apply;
mod dead_letters;
mod delayed;
mod direct_reply;
mod exchange_actor;
mod operations;
mod queues;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::Mutex;
use warren_resources::queue_memory::QueueMemory;
use warren_storage::{MetaTable, Store};
use warren_supervisor::{ChildSpec, Restart, Strategy, Supervisor, SupervisorSpec};

pub use delayed::{Delay, Stored};
pub use direct_reply::{is_address as is_reply_address, REPLY_TO};
pub use exchange_actor::{ExchangeActor, ExchangeArgs, ExchangeMsg, ExchangeState};
pub use queues::QueueSummary;

use crate::changes::LogSlot;
use crate::error::BrokerError;
use crate::exchange::{Binding, ExchangeDef, RouteResult, SharedTopology, Topology};
use crate::message::FieldTable;
use crate::queue::{QueueDef, QueueTypes, RemoteReach};

use queues::Registered;

/// What a queue declaration answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueDeclareOk {
    /// The queue's name: the one generated (`amq.gen-...`) when the client gave none.
    pub name: String,
    /// Ready messages (0 for a new queue).
    pub messages: u64,
    /// Consumers (0 for a new queue).
    pub consumers: u32,
}

/// Where this vhost runs: the node it belongs to and how it keeps metadata.
#[derive(Clone)]
pub struct Placement {
    /// This node's name: queues declared through it live here.
    pub node: String,
    /// A RAM node: metadata is kept in memory only (the log gives it back at start).
    pub in_memory: bool,
    /// How to reach queues on other nodes; `None` outside a cluster.
    pub remote: Option<Arc<dyn RemoteReach>>,
    /// The node's budget for bodies its queues keep in memory for their consumers.
    pub queue_memory: Arc<QueueMemory>,
    /// The queue types this node runs.
    pub queue_types: QueueTypes,
    /// How long a queue stays idle before its actor stops until the next request
    /// (`None`: queue actors run as long as their queues exist).
    pub hibernate_after: Option<std::time::Duration>,
}

impl Placement {
    /// A disk node outside any cluster, running this build's queue types.
    pub fn standalone(node: &str, queue_memory: Arc<QueueMemory>) -> Placement {
        Placement {
            node: node.to_string(),
            in_memory: false,
            remote: None,
            queue_memory,
            queue_types: QueueTypes::default().with(Arc::new(crate::classic::Classic)),
            hibernate_after: None,
        }
    }
}

/// A virtual host (cheap to clone).
#[derive(Clone)]
pub struct VHost {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    store: Store,
    placement: Placement,
    topology: SharedTopology,
    /// Every queue of the vhost, by name: those this node runs and those it reaches
    /// on other nodes.
    queues: RwLock<HashMap<Arc<str>, Registered>>,
    /// What died with this node's last run, to be deleted through the log.
    stale: std::sync::Mutex<Stale>,
    /// One metadata change applied at a time.
    meta: Mutex<()>,
    /// Where changes go to be replicated (the node's, shared by its vhosts); none:
    /// applied at once.
    log: LogSlot,
    /// Becomes true when the vhost is deleted: its connections and sessions close.
    deleted: tokio::sync::watch::Sender<bool>,
    /// Direct reply-to consumers of this node.
    direct_replies: direct_reply::DirectReplies,
    /// Connections of this node that ended and whose exclusive queues are being
    /// deleted: those queues are gone for everybody else already.
    departed_owners: std::sync::Mutex<std::collections::HashSet<crate::delivery::ChannelId>>,
    /// What the queues this node runs get from the vhost, made once (each queue keeps
    /// a clone: pointers, not its own closures).
    host_env: std::sync::OnceLock<crate::queue::HostEnv>,
}

/// What a node's last run left in the metadata that died with it.
#[derive(Default)]
struct Stale {
    /// Its transient and exclusive queues: routable names without a live queue until
    /// they are deleted.
    queues: Vec<QueueDef>,
    /// The transient exchanges found at load (deleted only on a node that is alone).
    exchanges: Vec<String>,
}

fn key(vhost: &str, name: &str) -> String {
    format!("{vhost}\u{0}{name}")
}

fn binding_key(vhost: &str, b: &Binding) -> String {
    let args = warren_storage::codec::encode(&b.arguments).unwrap_or_default();
    let args_hex: String = args.iter().map(|byte| format!("{byte:02x}")).collect();
    format!(
        "{vhost}\u{0}{}\u{0}{}\u{0}{}\u{0}{}\u{0}{args_hex}",
        b.source,
        b.destination.kind(),
        b.destination.name(),
        b.routing_key
    )
}

fn topology_error(e: crate::exchange::TopologyError) -> BrokerError {
    BrokerError::from(e)
}

impl VHost {
    /// Loads a vhost's definitions from storage (starting no actors: the supervisors
    /// start them from [`VHost::exchange_children`] and [`VHost::queue_children`]).
    /// Its changes go through `log` once the node has one.
    pub(crate) async fn load(
        name: &str,
        store: Store,
        placement: Placement,
        log: LogSlot,
    ) -> Result<VHost, BrokerError> {
        if !placement.in_memory {
            // A vhost of the same name deleted just before: its definitions' removal
            // may still be on its way to the file.
            apply::written(&store).await?;
        }
        let prefix = format!("{name}\u{0}");
        let read = |table| -> Result<Vec<Vec<u8>>, BrokerError> {
            if placement.in_memory {
                return Ok(Vec::new());
            }
            Ok(store
                .read_meta(table)
                .map_err(BrokerError::storage)?
                .into_iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .map(|(_, v)| v)
                .collect())
        };
        let exchanges: Vec<ExchangeDef> = decode_all(read(MetaTable::Exchanges)?, "exchange");
        let queues: Vec<QueueDef> = read(MetaTable::Queues)?
            .iter()
            .filter_map(|v| match QueueDef::decode_stored(v) {
                Ok(def) => Some(def),
                Err(e) => {
                    tracing::error!("a stored queue did not decode and is skipped: {e}");
                    None
                }
            })
            .collect();
        let bindings: Vec<Binding> = decode_all(read(MetaTable::Bindings)?, "binding");

        let restored = Topology::restore(
            name,
            exchanges,
            queues.iter().map(|q| q.name.clone()),
            bindings,
        );
        for (b, why) in &restored.rejected {
            tracing::warn!(
                "stored binding {} -> {} dropped: {why}",
                b.source,
                b.destination.name()
            );
        }
        let vhost = VHost {
            inner: Arc::new(Inner {
                name: name.to_string(),
                store: store.clone(),
                placement,
                topology: SharedTopology::new(restored.topology),
                queues: RwLock::new(HashMap::new()),
                stale: std::sync::Mutex::new(Stale::default()),
                meta: Mutex::new(()),
                log,
                deleted: tokio::sync::watch::Sender::new(false),
                direct_replies: Default::default(),
                departed_owners: Default::default(),
                host_env: Default::default(),
            }),
        };
        vhost.stale().exchanges = vhost
            .topology()
            .exchanges()
            .iter()
            .filter(|x| !x.durable && !x.name.is_empty() && !x.name.starts_with("amq."))
            .map(|x| x.name.clone())
            .collect();
        for def in queues {
            if vhost.runs_here(&def) && def.dies_with_node() {
                vhost.stale().queues.push(def);
                continue;
            }
            match vhost.open(&def) {
                Ok(registered) => vhost.register(registered),
                Err(e) => tracing::error!(
                    "stored queue '{}' has arguments this build refuses: {e}",
                    def.name
                ),
            }
        }
        Ok(vhost)
    }

    /// Marks the vhost deleted: whoever watches [`VHost::deleted`] closes.
    pub fn mark_deleted(&self) {
        self.inner.deleted.send_replace(true);
    }

    /// Turns true once the vhost is deleted (AMQP connections and client sessions
    /// on it close then).
    pub fn deleted(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.deleted.subscribe()
    }

    /// The vhost's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The node this vhost runs on.
    pub fn node(&self) -> &str {
        &self.inner.placement.node
    }

    /// The name of this vhost's supervisor in the node's tree.
    pub fn supervisor_name(&self) -> String {
        format!("vhost:{}", self.inner.name)
    }

    /// The name of the supervisor of this vhost's exchange actors.
    pub fn exchanges_supervisor_name(&self) -> String {
        format!("exchanges:{}", self.inner.name)
    }

    /// The name of the supervisor of the queue actors this node runs for this vhost.
    pub fn queues_supervisor_name(&self) -> String {
        format!("queues:{}", self.inner.name)
    }

    fn stale(&self) -> std::sync::MutexGuard<'_, Stale> {
        self.inner.stale.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves once this node has applied every metadata change committed through
    /// any node before the call (at once on a node without a cluster). Called on a
    /// miss only: before answering "no such queue / exchange" or routing a message to
    /// nothing.
    pub async fn catch_up(&self) {
        self.inner.log.caught_up().await;
    }

    /// Whether changes go through the cluster's log (so this node may be behind it).
    pub(crate) fn logged(&self) -> bool {
        self.inner.log.is_set()
    }

    /// The current routing snapshot.
    pub fn topology(&self) -> Arc<Topology> {
        self.inner.topology.load_full()
    }

    // ----- children -------------------------------------------------------------

    fn exchange_actor_name(&self, exchange: &str) -> String {
        let shown = if exchange.is_empty() {
            "amq.default"
        } else {
            exchange
        };
        format!("exchange:{}{}", prefix(&self.inner.name), shown)
    }

    fn exchange_spec(&self, exchange: &str) -> ChildSpec {
        let (vhost, name) = (self.clone(), exchange.to_string());
        ChildSpec::for_actor(
            self.exchange_actor_name(exchange),
            "exchange",
            Restart::Permanent,
            move || {
                (
                    ExchangeActor,
                    ExchangeArgs {
                        vhost: vhost.clone(),
                        name: name.clone(),
                    },
                )
            },
        )
    }

    /// The child spec of this vhost's supervisor, `vhost:NAME` (one_for_all) over
    /// `exchanges:NAME` and `queues:NAME` (one_for_one). Those two build their
    /// children from the registry each time they start, so a restart of `vhost:NAME`
    /// brings every queue back, and each queue actor rebuilds its messages from
    /// storage. Restart intensity: `max_restarts` within `window` (ten times that for
    /// the groups, which hold many actors).
    pub fn supervisor_spec(&self, max_restarts: u32, window: std::time::Duration) -> ChildSpec {
        let group = |name: String, children: fn(&VHost) -> Vec<ChildSpec>| {
            let vhost = self.clone();
            ChildSpec::new(
                name.clone(),
                warren_supervisor::SUPERVISOR_KIND,
                Restart::Permanent,
                move |parent| {
                    let (vhost, name) = (vhost.clone(), name.clone());
                    async move {
                        let spec = children(&vhost).into_iter().fold(
                            SupervisorSpec::new(Strategy::OneForOne)
                                .with_intensity(max_restarts * 10, window),
                            SupervisorSpec::child,
                        );
                        Supervisor::start(name, None, spec, Some(parent))
                            .await
                            .map(|(r, _)| r.get_cell())
                            .map_err(|e| e.into_spawn_err())
                    }
                },
            )
            .as_supervisor()
        };
        let spec = SupervisorSpec::new(Strategy::OneForAll)
            .with_intensity(max_restarts, window)
            .child(group(
                self.exchanges_supervisor_name(),
                VHost::exchange_children,
            ))
            .child(group(self.queues_supervisor_name(), VHost::queue_children));
        ChildSpec::supervisor(self.supervisor_name(), Restart::Permanent, spec)
    }

    /// The children of the exchanges supervisor: one actor per exchange.
    pub fn exchange_children(&self) -> Vec<ChildSpec> {
        let topology = self.topology();
        let mut names: Vec<String> = topology
            .exchanges()
            .iter()
            .map(|d| d.name.clone())
            .collect();
        names.sort();
        names.iter().map(|n| self.exchange_spec(n)).collect()
    }

    // ----- publishing -----------------------------------------------------------

    /// The queues a client's publish reaches (internal exchanges refuse it), written
    /// into `result` so that a publisher routing a batch allocates once.
    pub fn route(
        &self,
        exchange: &str,
        routing_key: &str,
        headers: Option<&FieldTable>,
        result: &mut RouteResult,
    ) -> Result<(), BrokerError> {
        self.inner
            .topology
            .load()
            .route_publish(exchange, routing_key, headers, result)
            .map_err(BrokerError::from)
    }

    // ----- listings -------------------------------------------------------------

    /// Every exchange, sorted by name (the default exchange first).
    pub fn list_exchanges(&self) -> Vec<ExchangeDef> {
        self.topology().exchanges().into_iter().cloned().collect()
    }

    /// The exchange called `name`, after catching up with the cluster's metadata on a
    /// miss (declared through another node a moment ago): what callers use before
    /// they answer 404.
    pub async fn find_exchange(&self, name: &str) -> Option<ExchangeDef> {
        if let Some(def) = self.topology().exchange(name) {
            return Some(def.clone());
        }
        self.catch_up().await;
        self.topology().exchange(name).cloned()
    }

    /// Every binding as RabbitMQ lists them: the default exchange's implicit ones
    /// first, then the declared ones, sorted.
    pub fn list_bindings(&self) -> Vec<Binding> {
        self.topology().bindings()
    }
}

/// Decodes stored definitions, skipping (and logging) any that do not decode.
fn decode_all<T: serde::de::DeserializeOwned>(rows: Vec<Vec<u8>>, what: &str) -> Vec<T> {
    rows.iter()
        .filter_map(|v| match warren_storage::codec::decode(v) {
            Ok(x) => Some(x),
            Err(e) => {
                tracing::error!("a stored {what} did not decode and is skipped: {e}");
                None
            }
        })
        .collect()
}

fn prefix(vhost: &str) -> String {
    if vhost == "/" {
        "/".into()
    } else {
        format!("{vhost}/")
    }
}
