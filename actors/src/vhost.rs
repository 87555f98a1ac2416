//! A virtual host: its exchanges, queues and bindings, and the operations on them.
//!
//! The vhost keeps:
//! - the routing snapshot ([`SharedTopology`]): publishers route against it without a
//!   mailbox hop; changes swap in a new snapshot;
//! - the registry of queues (name -> [`QueueHandle`]), whose actors run under the
//!   `queues:<vhost>` supervisor;
//! - the durable definitions in storage (written, fsynced, before a declaration
//!   returns).
//!
//! Metadata changes are rare and go one at a time (a lock held across the change and
//! its storage write); messages never take that lock. Binding changes of an exchange go
//! through that exchange's actor, which owns them.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, Mutex};
use warren_storage::{Batch, MetaTable, Op, Store};
use warren_supervisor::{ChildSpec, Restart, SupervisorHandle};

use crate::delivery::ChannelId;
use crate::error::{code, BrokerError};
use crate::exchange::{
    Binding, Change, Destination, ExchangeDef, ExchangeKind, RouteResult, SharedTopology, Topology,
};
use crate::message::{FieldTable, SharedMessage};
use crate::queue::{QueueConfig, QueueStats};
use crate::queue_actor::{QueueActor, QueueArgs, QueueHandle, QueueShared};

/// A durable queue as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct QueueRecord {
    id: u64,
    name: String,
    auto_delete: bool,
    arguments: FieldTable,
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
}

/// A virtual host (cheap to clone).
#[derive(Clone)]
pub struct VHost {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    store: Store,
    topology: SharedTopology,
    queues: RwLock<HashMap<Arc<str>, QueueHandle>>,
    /// One metadata change at a time.
    meta: Mutex<()>,
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
    pub async fn load(name: &str, store: Store) -> Result<VHost, BrokerError> {
        let prefix = format!("{name}\u{0}");
        let read = |table| -> Result<Vec<Vec<u8>>, BrokerError> {
            Ok(store
                .read_meta(table)
                .map_err(storage_error)?
                .into_iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .map(|(_, v)| v)
                .collect())
        };
        let exchanges: Vec<ExchangeDef> = decode_all(read(MetaTable::Exchanges)?, "exchange");
        let queues: Vec<QueueRecord> = decode_all(read(MetaTable::Queues)?, "queue");
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
        let mut registry = HashMap::new();
        for q in &queues {
            let config = match QueueConfig::from_declare(
                &q.name,
                name,
                true,
                false,
                q.auto_delete,
                &q.arguments,
            ) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(
                        "stored queue '{}' has arguments this build refuses: {e}",
                        q.name
                    );
                    continue;
                }
            };
            let shared = QueueShared::new(q.id, config, None, q.arguments.clone());
            registry.insert(shared.name.clone(), QueueHandle { shared });
        }
        // Messages of queues that no longer exist (transient queues of the last run,
        // or a delete that crashed half-way) are dropped.
        let live: std::collections::HashSet<u64> = queues.iter().map(|q| q.id).collect();
        let orphans: Vec<Op> = store
            .queues_with_messages()
            .map_err(storage_error)?
            .into_iter()
            .filter(|id| !live.contains(id))
            .map(|queue| Op::DeleteQueueMessages { queue })
            .collect();
        if !orphans.is_empty() {
            tracing::info!(
                "dropping the stored messages of {} queues that no longer exist",
                orphans.len()
            );
            store
                .submit(Batch::durable(orphans))
                .await
                .map_err(storage_error)?;
        }
        Ok(VHost {
            inner: Arc::new(Inner {
                name: name.to_string(),
                store,
                topology: SharedTopology::new(restored.topology),
                queues: RwLock::new(registry),
                meta: Mutex::new(()),
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.inner.name
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

    fn queue_spec(&self, handle: &QueueHandle) -> ChildSpec {
        let args = QueueArgs {
            shared: handle.shared.clone(),
            store: self.inner.store.clone(),
            dead_letter: self.dead_letter_fn(),
            delete_self: self.delete_self_fn(),
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

    /// The children of the queues supervisor: one actor per queue.
    pub fn queue_children(&self) -> Vec<ChildSpec> {
        let mut handles: Vec<QueueHandle> = self.queues_read().values().cloned().collect();
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

    // ----- exchanges ------------------------------------------------------------

    /// `exchange.declare`.
    #[allow(clippy::too_many_arguments)]
    pub async fn declare_exchange(
        &self,
        name: &str,
        kind: &str,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        passive: bool,
        arguments: FieldTable,
    ) -> Result<(), BrokerError> {
        let _guard = self.inner.meta.lock().await;
        if passive {
            return match self.topology().exchange(name) {
                Some(_) => Ok(()),
                None => Err(BrokerError::not_found(format!(
                    "NOT_FOUND - no exchange '{name}' in vhost '{}'",
                    self.inner.name
                ))),
            };
        }
        let kind: ExchangeKind =
            kind.parse()
                .map_err(|e: crate::exchange::UnknownExchangeKind| {
                    BrokerError::new(e.reply_code(), e.to_string())
                })?;
        let def = ExchangeDef {
            name: name.to_string(),
            kind,
            durable,
            auto_delete,
            internal,
            arguments,
        };
        let change = self
            .inner
            .topology
            .update(|t| t.declare_exchange(def.clone()))
            .map_err(topology_error)?;
        if let Some(created) = &change.declared_exchange {
            if created.durable {
                self.write(vec![self.put_exchange(created)?]).await?;
            }
            if let Ok(sup) = SupervisorHandle::lookup(&self.exchanges_supervisor_name()) {
                if let Err(e) = sup.start_child(self.exchange_spec(&created.name)).await {
                    tracing::warn!("exchange actor for '{}' did not start: {e}", created.name);
                }
            }
        }
        Ok(())
    }

    /// `exchange.delete`.
    pub async fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<(), BrokerError> {
        let _guard = self.inner.meta.lock().await;
        let change = self
            .inner
            .topology
            .update(|t| t.delete_exchange(name, if_unused))
            .map_err(topology_error)?;
        self.persist_change(&change).await
    }

    fn put_exchange(&self, def: &ExchangeDef) -> Result<Op, BrokerError> {
        Ok(Op::PutMeta {
            table: MetaTable::Exchanges,
            key: key(&self.inner.name, &def.name),
            value: warren_storage::codec::encode(def).map_err(storage_error)?,
        })
    }

    async fn write(&self, ops: Vec<Op>) -> Result<(), BrokerError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.inner
            .store
            .submit(Batch::durable(ops))
            .await
            .map_err(storage_error)
    }

    /// Whether a binding survives a restart: its source and destination both do.
    fn is_durable(&self, b: &Binding) -> bool {
        let topology = self.topology();
        let source = topology.exchange(&b.source).is_some_and(|d| d.durable);
        let destination = match &b.destination {
            Destination::Queue(q) => self
                .queue(q)
                .is_some_and(|h| h.shared.config.durable && h.shared.owner.is_none()),
            Destination::Exchange(x) => topology.exchange(x).is_some_and(|d| d.durable),
        };
        source && destination
    }

    /// Stores what a topology change did and stops the actors of deleted exchanges.
    async fn persist_change(&self, change: &Change) -> Result<(), BrokerError> {
        let vhost = &self.inner.name;
        let mut ops = Vec::new();
        for b in &change.added_bindings {
            if self.is_durable(b) {
                ops.push(Op::PutMeta {
                    table: MetaTable::Bindings,
                    key: binding_key(vhost, b),
                    value: warren_storage::codec::encode(b).map_err(storage_error)?,
                });
            }
        }
        for b in &change.removed_bindings {
            ops.push(Op::DeleteMeta {
                table: MetaTable::Bindings,
                key: binding_key(vhost, b),
            });
        }
        for x in &change.deleted_exchanges {
            ops.push(Op::DeleteMeta {
                table: MetaTable::Exchanges,
                key: key(vhost, &x.name),
            });
        }
        self.write(ops).await?;
        if !change.deleted_exchanges.is_empty() {
            if let Ok(sup) = SupervisorHandle::lookup(&self.exchanges_supervisor_name()) {
                for x in &change.deleted_exchanges {
                    let _ = sup
                        .terminate_child(&self.exchange_actor_name(&x.name))
                        .await;
                }
            }
        }
        Ok(())
    }

    // ----- bindings -------------------------------------------------------------

    /// `queue.bind` / `exchange.bind`, through the source exchange's actor.
    pub async fn bind(&self, binding: Binding, channel: ChannelId) -> Result<(), BrokerError> {
        self.check_destination(&binding, channel)?;
        self.via_exchange(binding, true).await
    }

    /// `queue.unbind` / `exchange.unbind`.
    pub async fn unbind(&self, binding: Binding, channel: ChannelId) -> Result<(), BrokerError> {
        self.check_destination(&binding, channel)?;
        self.via_exchange(binding, false).await
    }

    fn check_destination(&self, b: &Binding, channel: ChannelId) -> Result<(), BrokerError> {
        if let Destination::Queue(q) = &b.destination {
            self.queue_for(q, channel)?;
        }
        Ok(())
    }

    async fn via_exchange(&self, binding: Binding, add: bool) -> Result<(), BrokerError> {
        if binding.source.is_empty() {
            // The default exchange binds every queue implicitly and takes no others.
            return Err(BrokerError::access_refused(format!(
                "ACCESS_REFUSED - operation not permitted on the default exchange in vhost '{}'",
                self.inner.name
            )));
        }
        let actor = ractor::registry::where_is(self.exchange_actor_name(&binding.source))
            .map(ActorRef::<ExchangeMsg>::from);
        match actor {
            Some(actor) => {
                let (tx, rx) = oneshot::channel();
                let msg = if add {
                    ExchangeMsg::Bind(binding, tx)
                } else {
                    ExchangeMsg::Unbind(binding, tx)
                };
                if actor.cast(msg).is_err() {
                    return Err(self.exchange_unavailable());
                }
                rx.await.map_err(|_| self.exchange_unavailable())?
            }
            // No actor: either no such exchange (the topology says 404) or it is
            // restarting right now.
            None => {
                if self.topology().exchange(&binding.source).is_none() {
                    Err(BrokerError::not_found(format!(
                        "NOT_FOUND - no exchange '{}' in vhost '{}'",
                        binding.source, self.inner.name
                    )))
                } else {
                    Err(self.exchange_unavailable())
                }
            }
        }
    }

    fn exchange_unavailable(&self) -> BrokerError {
        BrokerError::new(
            code::NOT_FOUND,
            "the exchange is restarting; retry".to_string(),
        )
    }

    /// Applies a binding change (run by the source exchange's actor).
    async fn apply_binding(&self, binding: Binding, add: bool) -> Result<(), BrokerError> {
        let _guard = self.inner.meta.lock().await;
        let change = if add {
            self.inner.topology.update(|t| t.bind(binding.clone()))
        } else {
            self.inner.topology.update(|t| t.unbind(&binding))
        }
        .map_err(topology_error)?;
        self.persist_change(&change).await
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

    /// `queue.declare`. `owner` is set for an exclusive queue.
    #[allow(clippy::too_many_arguments)]
    pub async fn declare_queue(
        &self,
        name: &str,
        durable: bool,
        owner: Option<ChannelId>,
        auto_delete: bool,
        passive: bool,
        arguments: FieldTable,
        channel: ChannelId,
    ) -> Result<QueueDeclareOk, BrokerError> {
        let server_named = name.is_empty();
        if server_named && passive {
            return Err(self.no_queue(name));
        }
        let name = if server_named {
            format!("amq.gen-{:016x}{:08x}", rand_u64(), channel)
        } else {
            name.to_string()
        };
        if !server_named && name.starts_with("amq.") && !passive {
            return Err(BrokerError::access_refused(format!(
                "ACCESS_REFUSED - queue name '{name}' contains reserved prefix 'amq.*'"
            )));
        }
        let _guard = self.inner.meta.lock().await;
        if let Some(existing) = self.queue(&name) {
            let handle = self.queue_for(&name, channel)?;
            if !passive {
                let requested = QueueConfig::from_declare(
                    &name,
                    &self.inner.name,
                    durable,
                    owner.is_some(),
                    auto_delete,
                    &arguments,
                )
                .map_err(|e| BrokerError::new(e.reply_code(), e.to_string()))?;
                existing
                    .shared
                    .config
                    .check_equivalent(&requested)
                    .map_err(|e| BrokerError::new(e.reply_code(), e.to_string()))?;
            }
            handle.touch();
            let stats = handle.stats();
            return Ok(QueueDeclareOk {
                name,
                messages: stats.ready,
                consumers: stats.consumers as u32,
            });
        }
        if passive {
            return Err(self.no_queue(&name));
        }
        let config = QueueConfig::from_declare(
            &name,
            &self.inner.name,
            durable,
            owner.is_some(),
            auto_delete,
            &arguments,
        )
        .map_err(|e| BrokerError::new(e.reply_code(), e.to_string()))?;
        let id = self.inner.store.allocate_id();
        if durable && owner.is_none() {
            let record = QueueRecord {
                id,
                name: name.clone(),
                auto_delete,
                arguments: arguments.clone(),
            };
            self.write(vec![Op::PutMeta {
                table: MetaTable::Queues,
                key: key(&self.inner.name, &name),
                value: warren_storage::codec::encode(&record).map_err(storage_error)?,
            }])
            .await?;
        }
        let handle = QueueHandle {
            shared: QueueShared::new(id, config, owner, arguments),
        };
        self.queues_write()
            .insert(handle.name().clone(), handle.clone());
        let _ = self
            .inner
            .topology
            .update(|t| Ok(t.declare_queue_name(&name)));
        let started = match SupervisorHandle::lookup(&self.queues_supervisor_name()) {
            Ok(sup) => sup
                .start_child(self.queue_spec(&handle))
                .await
                .map(drop)
                .map_err(|e| BrokerError::internal(format!("queue actor did not start: {e}"))),
            Err(e) => Err(BrokerError::internal(format!(
                "queues supervisor unavailable: {e}"
            ))),
        };
        if let Err(e) = started {
            self.queues_write().remove(name.as_str());
            let _ = self.inner.topology.update(|t| Ok(t.remove_queue(&name)));
            return Err(e);
        }
        Ok(QueueDeclareOk {
            name,
            messages: 0,
            consumers: 0,
        })
    }

    /// `queue.delete`; returns how many messages the queue held.
    pub async fn delete_queue(
        &self,
        name: &str,
        if_unused: bool,
        if_empty: bool,
        channel: ChannelId,
    ) -> Result<u64, BrokerError> {
        // Deleting a queue that is not there succeeds, as in RabbitMQ (queue.delete is
        // idempotent, like exchange.delete).
        if self.queue(name).is_none() {
            return Ok(0);
        }
        self.queue_for(name, channel)?;
        match self.remove_queue(name, if_unused, if_empty).await {
            // Deleted by someone else meanwhile.
            Err(e) if e.code == crate::error::code::NOT_FOUND && self.queue(name).is_none() => {
                Ok(0)
            }
            other => other,
        }
    }

    /// Deletes a queue whoever owns it (expiry, auto-delete, owner gone, delete).
    async fn remove_queue(
        &self,
        name: &str,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<u64, BrokerError> {
        let _guard = self.inner.meta.lock().await;
        let handle = self.queue(name).ok_or_else(|| self.no_queue(name))?;
        let count = handle.delete(if_unused, if_empty).await?;
        self.queues_write().remove(name);
        let change = self
            .inner
            .topology
            .update(|t| Ok(t.remove_queue(name)))
            .map_err(topology_error)?;
        let mut ops = vec![Op::DeleteMeta {
            table: MetaTable::Queues,
            key: key(&self.inner.name, name),
        }];
        for b in &change.removed_bindings {
            ops.push(Op::DeleteMeta {
                table: MetaTable::Bindings,
                key: binding_key(&self.inner.name, b),
            });
        }
        self.write(ops).await?;
        if let Ok(sup) = SupervisorHandle::lookup(&self.queues_supervisor_name()) {
            let _ = sup.terminate_child(&handle.shared.actor_name).await;
        }
        Ok(count)
    }

    /// `queue.purge`.
    pub async fn purge_queue(&self, name: &str, channel: ChannelId) -> Result<u64, BrokerError> {
        self.queue_for(name, channel)?.purge().await
    }

    /// A connection (channel) ended: delete the exclusive queues it owned.
    pub async fn owner_gone(&self, channel: ChannelId) {
        let owned: Vec<Arc<str>> = self
            .queues_read()
            .values()
            .filter(|h| h.shared.owner == Some(channel))
            .map(|h| h.name().clone())
            .collect();
        for name in owned {
            if let Err(e) = self.remove_queue(&name, false, false).await {
                tracing::warn!(queue = %name, "exclusive queue not deleted: {e}");
            }
        }
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

    pub fn list_queues(&self) -> Vec<QueueSummary> {
        self.queues_read()
            .values()
            .map(|h| QueueSummary {
                name: h.name().to_string(),
                durable: h.shared.config.durable,
                exclusive: h.shared.owner.is_some(),
                auto_delete: h.shared.config.auto_delete,
                arguments: h.shared.arguments.clone(),
                stats: h.stats(),
                restarts: h
                    .shared
                    .incarnations
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .saturating_sub(1),
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

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

// ----- the exchange actor ---------------------------------------------------------

/// Messages to an exchange actor: changes of the bindings it is the source of.
pub enum ExchangeMsg {
    Bind(Binding, oneshot::Sender<Result<(), BrokerError>>),
    Unbind(Binding, oneshot::Sender<Result<(), BrokerError>>),
    /// Fail on purpose (debug shell, tests).
    Crash,
}

impl ractor::Message for ExchangeMsg {}

/// One exchange: it owns the bindings it is the source of, applies their changes one
/// at a time, persists them, and publishes the new routing snapshot. Its routing
/// state lives in the vhost's snapshot (and, for durable bindings, in storage), so a
/// restarted exchange actor has nothing to lose.
pub struct ExchangeActor;

pub struct ExchangeArgs {
    pub vhost: VHost,
    pub name: String,
}

impl Actor for ExchangeActor {
    type Msg = ExchangeMsg;
    type State = ExchangeArgs;
    type Arguments = ExchangeArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: ExchangeArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ExchangeMsg::Bind(b, reply) => {
                let _ = reply.send(state.vhost.apply_binding(b, true).await);
            }
            ExchangeMsg::Unbind(b, reply) => {
                let _ = reply.send(state.vhost.apply_binding(b, false).await);
            }
            ExchangeMsg::Crash => {
                return Err(format!("exchange {} crashed on request", state.name).into());
            }
        }
        Ok(())
    }
}
