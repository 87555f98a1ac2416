//! A virtual host: its exchanges, queues and bindings, and the operations on them.
//!
//! The vhost keeps:
//! - the routing snapshot ([`SharedTopology`]): publishers route against it without a
//!   mailbox hop; changes swap in a new snapshot;
//! - the registry of queues (name -> [`QueueHandle`]): every queue of the cluster,
//!   whose actor runs under the `queues:<vhost>` supervisor of its home node; the
//!   handle of a queue that lives elsewhere forwards to that node;
//! - the definitions in storage (on a disk node), so that a restart finds them.
//!
//! Changes go through the metadata log when there is one (a cluster, even of one
//! node) and are applied on every node in log order ([`apply`]); without a log they
//! are applied at once. The operations clients call ([`operations`]) check what they
//! can, then propose. Messages never take the metadata lock.

mod apply;
mod exchange_actor;
mod operations;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use warren_storage::{MetaTable, Store};
use warren_supervisor::{ChildSpec, Restart, Strategy, Supervisor, SupervisorSpec};

pub use exchange_actor::{ExchangeActor, ExchangeArgs, ExchangeMsg};

use crate::delivery::ChannelId;
use crate::error::BrokerError;
use crate::exchange::{Binding, ExchangeDef, RouteResult, SharedTopology, Topology};
use crate::message::{FieldTable, SharedMessage};
use crate::metadata::MetadataLog;
use crate::queue::{QueueConfig, QueueStats};
use crate::queue_actor::{QueueActor, QueueArgs, QueueHandle, QueueShared};
use crate::queue_memory::QueueMemory;
use crate::remote::{Home, QueueForwarder, REMOTE_OWNER};

/// A queue as the metadata log and storage know it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueueDef {
    pub name: String,
    /// Its storage id on its home node (its messages are keyed by it there).
    pub id: u64,
    /// The node its actor runs on.
    pub node: String,
    pub durable: bool,
    /// For an exclusive queue: the channel (on the home node) whose connection owns it.
    pub owner: Option<ChannelId>,
    pub auto_delete: bool,
    pub arguments: FieldTable,
}

impl QueueDef {
    /// Whether the queue dies with its home node's process: transient or exclusive.
    pub fn dies_with_node(&self) -> bool {
        !self.durable || self.owner.is_some()
    }
}

/// What a queue declaration answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueDeclareOk {
    pub name: String,
    pub messages: u64,
    pub consumers: u32,
}

/// A queue as listings show it.
#[derive(Clone, Debug)]
pub struct QueueSummary {
    pub name: String,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub arguments: FieldTable,
    pub stats: QueueStats,
    /// How often its actor was restarted.
    pub restarts: u64,
    /// The node its actor runs on.
    pub node: String,
}

/// Where this vhost runs: the node it belongs to and how it keeps metadata.
#[derive(Clone)]
pub struct Placement {
    /// This node's name: queues declared through it live here.
    pub node: String,
    /// A RAM node: metadata is kept in memory only (the log gives it back at start).
    pub in_memory: bool,
    /// How to reach queues on other nodes; `None` outside a cluster.
    pub forwarder: Option<Arc<dyn QueueForwarder>>,
    /// The node's budget for bodies its queues keep in memory for their consumers.
    pub queue_memory: Arc<QueueMemory>,
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
    queues: RwLock<HashMap<Arc<str>, QueueHandle>>,
    /// Queue definitions, by name (what the registry's handles were made from).
    defs: RwLock<HashMap<Arc<str>, QueueDef>>,
    /// What died with this node's last run, to be deleted through the log.
    stale: std::sync::Mutex<Stale>,
    /// One metadata change applied at a time.
    meta: Mutex<()>,
    /// Where changes go to be replicated; none: applied at once.
    log: OnceLock<Arc<dyn MetadataLog>>,
    /// Becomes true when the vhost is deleted: its connections and sessions close.
    deleted: tokio::sync::watch::Sender<bool>,
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
    BrokerError::new(e.reply_code(), e.to_string())
}

fn storage_error(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::internal(format!("storage failed: {e}"))
}

impl VHost {
    /// Loads a vhost's definitions from storage (starting no actors: the supervisors
    /// start them from [`VHost::exchange_children`] and [`VHost::queue_children`]).
    pub async fn load(
        name: &str,
        store: Store,
        placement: Placement,
    ) -> Result<VHost, BrokerError> {
        let prefix = format!("{name}\u{0}");
        let read = |table| -> Result<Vec<Vec<u8>>, BrokerError> {
            if placement.in_memory {
                return Ok(Vec::new());
            }
            Ok(store
                .read_meta(table)
                .map_err(storage_error)?
                .into_iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .map(|(_, v)| v)
                .collect())
        };
        let exchanges: Vec<ExchangeDef> = decode_all(read(MetaTable::Exchanges)?, "exchange");
        let queues: Vec<QueueDef> = decode_all(read(MetaTable::Queues)?, "queue");
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
                defs: RwLock::new(HashMap::new()),
                stale: std::sync::Mutex::new(Stale::default()),
                meta: Mutex::new(()),
                log: OnceLock::new(),
                deleted: tokio::sync::watch::Sender::new(false),
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
            if vhost.is_home(&def) && def.dies_with_node() {
                vhost.stale().queues.push(def);
                continue;
            }
            match vhost.handle_for(&def) {
                Ok(handle) => vhost.register(def, handle),
                Err(e) => tracing::error!(
                    "stored queue '{}' has arguments this build refuses: {e}",
                    def.name
                ),
            }
        }
        Ok(vhost)
    }

    /// The storage ids of the queues that live on this node.
    pub fn local_queue_ids(&self) -> Vec<u64> {
        self.queues_read()
            .values()
            .filter(|h| h.is_local())
            .map(|h| h.shared.id)
            .collect()
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

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The node this vhost runs on.
    pub fn node(&self) -> &str {
        &self.inner.placement.node
    }

    /// From now on, changes go through `log` (the cluster's metadata log).
    pub fn set_metadata_log(&self, log: Arc<dyn MetadataLog>) {
        let _ = self.inner.log.set(log);
    }

    /// The name of this vhost's supervisor in the node's tree.
    pub fn supervisor_name(&self) -> String {
        format!("vhost:{}", self.inner.name)
    }

    pub fn exchanges_supervisor_name(&self) -> String {
        format!("exchanges:{}", self.inner.name)
    }

    pub fn queues_supervisor_name(&self) -> String {
        format!("queues:{}", self.inner.name)
    }

    fn queues_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Arc<str>, QueueHandle>> {
        self.inner.queues.read().unwrap_or_else(|p| p.into_inner())
    }

    fn queues_write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Arc<str>, QueueHandle>> {
        self.inner.queues.write().unwrap_or_else(|p| p.into_inner())
    }

    fn defs_write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Arc<str>, QueueDef>> {
        self.inner.defs.write().unwrap_or_else(|p| p.into_inner())
    }

    fn stale(&self) -> std::sync::MutexGuard<'_, Stale> {
        self.inner.stale.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The definition of the queue `name`, if it exists.
    pub fn queue_def(&self, name: &str) -> Option<QueueDef> {
        self.inner
            .defs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// The current routing snapshot.
    pub fn topology(&self) -> Arc<Topology> {
        self.inner.topology.load_full()
    }

    fn is_home(&self, def: &QueueDef) -> bool {
        def.node == self.inner.placement.node
    }

    /// A handle for a queue definition: local if it lives here, else forwarding.
    fn handle_for(&self, def: &QueueDef) -> Result<QueueHandle, BrokerError> {
        let config = QueueConfig::from_declare(
            &def.name,
            &self.inner.name,
            def.durable,
            def.owner.is_some(),
            def.auto_delete,
            &def.arguments,
        )
        .map_err(|e| BrokerError::new(e.reply_code(), e.to_string()))?;
        let (home, owner) = if self.is_home(def) {
            (Home::Local, def.owner)
        } else {
            let forwarder = self.inner.placement.forwarder.clone().ok_or_else(|| {
                BrokerError::internal(format!(
                    "queue '{}' lives on node '{}', and this node is not in a cluster",
                    def.name, def.node
                ))
            })?;
            (
                Home::Remote {
                    node: def.node.as_str().into(),
                    forwarder,
                },
                def.owner.map(|_| REMOTE_OWNER),
            )
        };
        Ok(QueueHandle {
            shared: QueueShared::new(def.id, config, owner, def.arguments.clone(), home),
        })
    }

    fn register(&self, def: QueueDef, handle: QueueHandle) {
        self.defs_write().insert(handle.name().clone(), def);
        self.queues_write().insert(handle.name().clone(), handle);
    }

    fn unregister(&self, name: &str) {
        self.defs_write().remove(name);
        self.queues_write().remove(name);
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

    fn queue_spec(&self, handle: &QueueHandle) -> ChildSpec {
        let args = QueueArgs {
            shared: handle.shared.clone(),
            store: self.inner.store.clone(),
            dead_letter: self.dead_letter_fn(),
            delete_self: self.delete_self_fn(),
            memory: self.inner.placement.queue_memory.clone(),
        };
        // Exclusive queues die with their connection: a restart would outlive it.
        let restart = if handle.shared.owner.is_some() {
            Restart::Transient
        } else {
            Restart::Permanent
        };
        ChildSpec::for_actor(
            handle.shared.actor_name.clone(),
            "queue",
            restart,
            move || (QueueActor, args.clone()),
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

    /// The children of the queues supervisor: one actor per queue that lives here.
    pub fn queue_children(&self) -> Vec<ChildSpec> {
        let mut handles: Vec<QueueHandle> = self
            .queues_read()
            .values()
            .filter(|h| h.is_local())
            .cloned()
            .collect();
        handles.sort_by(|a, b| a.name().cmp(b.name()));
        handles.iter().map(|h| self.queue_spec(h)).collect()
    }

    fn dead_letter_fn(&self) -> crate::queue_actor::DeadLetterFn {
        let vhost = Arc::downgrade(&self.inner);
        Arc::new(
            move |exchange: &str, routing_key: &str, message: SharedMessage| {
                let Some(inner) = vhost.upgrade() else { return };
                let vhost = VHost { inner };
                let headers = message.properties.headers.as_ref();
                // A dead-letter exchange that does not exist drops the message, as in RabbitMQ.
                if let Ok(queues) = vhost.topology().route(exchange, routing_key, headers) {
                    let mut message = message;
                    if message.routing_key != routing_key || message.exchange != exchange {
                        let m = Arc::make_mut(&mut message);
                        m.exchange = exchange.to_string();
                        m.routing_key = routing_key.to_string();
                    }
                    for q in queues.iter() {
                        if let Some(handle) = vhost.queue(q) {
                            handle.publish(vec![message.clone()], None);
                        }
                    }
                }
            },
        )
    }

    fn delete_self_fn(&self) -> crate::queue_actor::DeleteSelfFn {
        let vhost = Arc::downgrade(&self.inner);
        Arc::new(move |queue: Arc<str>| {
            let Some(inner) = vhost.upgrade() else { return };
            let vhost = VHost { inner };
            tokio::spawn(async move {
                if let Err(e) = vhost.remove_queue(&queue, false, false).await {
                    tracing::warn!(queue = %queue, "automatic delete failed: {e}");
                }
            });
        })
    }

    // ----- queues ---------------------------------------------------------------

    /// The queue, if it exists.
    pub fn queue(&self, name: &str) -> Option<QueueHandle> {
        self.queues_read().get(name).cloned()
    }

    /// The queue for use by `channel`: 404 if missing, 405 if another connection
    /// holds it exclusively.
    pub fn queue_for(&self, name: &str, channel: ChannelId) -> Result<QueueHandle, BrokerError> {
        let handle = self.queue(name).ok_or_else(|| self.no_queue(name))?;
        match handle.shared.owner {
            Some(owner) if owner != channel => Err(BrokerError::resource_locked(format!(
                "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{name}' in vhost '{}'. \
                 It could be originally declared on another connection or the exclusive property \
                 value does not match that of the original declaration.",
                self.inner.name
            ))),
            _ => Ok(handle),
        }
    }

    fn no_queue(&self, name: &str) -> BrokerError {
        BrokerError::not_found(format!(
            "NOT_FOUND - no queue '{name}' in vhost '{}'",
            self.inner.name
        ))
    }

    /// The queues of this vhost that live on `node`.
    pub fn queues_on(&self, node: &str) -> Vec<QueueDef> {
        self.inner
            .defs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|d| d.node == node)
            .cloned()
            .collect()
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
            .map_err(|e| BrokerError::new(e.reply_code(), e.to_string()))
    }

    // ----- listings -------------------------------------------------------------

    /// Every queue with its counters; those of queues on other nodes are asked of
    /// their nodes (one call per node), and a node that does not answer leaves its
    /// queues' counters at zero.
    pub async fn list_queues(&self) -> Vec<QueueSummary> {
        let handles: Vec<QueueHandle> = self.queues_read().values().cloned().collect();
        let mut remote: HashMap<String, HashMap<String, crate::remote::RemoteQueueStats>> =
            HashMap::new();
        for h in &handles {
            if let Home::Remote { node, forwarder } = &h.shared.home {
                if !remote.contains_key(&**node) {
                    let stats = forwarder
                        .stats(node, &self.inner.name)
                        .await
                        .unwrap_or_default();
                    remote.insert(
                        node.to_string(),
                        stats.into_iter().map(|s| (s.name.clone(), s)).collect(),
                    );
                }
            }
        }
        handles
            .iter()
            .map(|h| {
                let (stats, restarts, node) = match &h.shared.home {
                    Home::Local => (h.stats(), self.restarts(h), self.node().to_string()),
                    Home::Remote { node, .. } => {
                        let s = remote.get(&**node).and_then(|m| m.get(&**h.name()));
                        (
                            s.map(|s| s.stats).unwrap_or_default(),
                            s.map(|s| s.restarts).unwrap_or(0),
                            node.to_string(),
                        )
                    }
                };
                QueueSummary {
                    name: h.name().to_string(),
                    durable: h.shared.config.durable,
                    exclusive: h.shared.owner.is_some(),
                    auto_delete: h.shared.config.auto_delete,
                    arguments: h.shared.arguments.clone(),
                    stats,
                    restarts,
                    node,
                }
            })
            .collect()
    }

    fn restarts(&self, h: &QueueHandle) -> u64 {
        h.shared
            .incarnations
            .load(std::sync::atomic::Ordering::Relaxed)
            .saturating_sub(1)
    }

    /// The counters of the queues that live on this node (what another node's
    /// listing asks for).
    pub fn local_stats(&self) -> Vec<crate::remote::RemoteQueueStats> {
        self.queues_read()
            .values()
            .filter(|h| h.is_local())
            .map(|h| crate::remote::RemoteQueueStats {
                name: h.name().to_string(),
                stats: h.stats(),
                restarts: self.restarts(h),
            })
            .collect()
    }

    pub fn list_exchanges(&self) -> Vec<ExchangeDef> {
        self.topology().exchanges().into_iter().cloned().collect()
    }

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
