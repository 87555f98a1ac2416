//! Applying committed changes of exchanges, queues and bindings to this node.
//!
//! Every node applies the same commands in the same order and reaches the same
//! topology and registry; what differs is what runs here: the home node of a queue
//! starts its actor, the others route to it. A disk node stores every definition
//! (transient ones too: they belong to the cluster, which outlives this process); a
//! RAM node stores none. Applying a command twice changes nothing the second time.

use warren_storage::{Batch, MetaTable, Op};
use warren_supervisor::SupervisorHandle;

use super::queues::Registered;
use super::{binding_key, key, topology_error, VHost};
use crate::changes::VhostChange;
use crate::error::BrokerError;
use crate::exchange::{Binding, Change, ExchangeDef};
use crate::queue::QueueDef;

/// How long applying a queue's deletion waits for the queue to drop what it holds
/// here (stored messages it left behind go at the node's next start).
const DELETE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl VHost {
    /// Applies a committed change of this vhost's exchanges, queues or bindings.
    pub async fn apply(&self, change: VhostChange) -> Result<(), BrokerError> {
        let _guard = self.inner.meta.lock().await;
        match change {
            VhostChange::DeclareExchange { def } => self.apply_declare_exchange(def).await,
            VhostChange::DeleteExchange { name, if_unused } => {
                let change = self
                    .inner
                    .topology
                    .update(|t| t.delete_exchange(&name, if_unused))
                    .map_err(topology_error)?;
                self.persist_change(&change).await
            }
            VhostChange::Bind { binding } => self.apply_binding(binding, true).await,
            VhostChange::Unbind { binding } => self.apply_binding(binding, false).await,
            VhostChange::DeclareQueue { def } => self.apply_declare_queue(def).await,
            VhostChange::DeleteQueue { name, node, id } => {
                self.apply_delete_queue(&name, &node, id).await
            }
            VhostChange::SetReplicas {
                name,
                id,
                from,
                replicas,
            } => self.apply_set_replicas(&name, id, &from, replicas).await,
        }
    }

    /// Stores definitions: durably without a log; with one, the log is what is
    /// durable (an entry lost with these writes is applied again at restart), so the
    /// write is not waited for: the applier goes on with the next entry while the
    /// writer commits, and many entries' definitions share a commit (waiting cost a
    /// third of a declaration's CPU). The writer commits in submission order, and
    /// whoever reads definitions back waits for what was submitted before
    /// ([`written`]).
    async fn persist(&self, ops: Vec<Op>) -> Result<(), BrokerError> {
        if ops.is_empty() || self.inner.placement.in_memory {
            return Ok(());
        }
        if self.inner.log.is_set() {
            let commit = self.inner.store.submit(Batch::non_durable(ops));
            let vhost = self.inner.name.clone();
            tokio::spawn(async move {
                if let Err(e) = commit.await {
                    tracing::error!(%vhost, "definitions applied from the log were not stored (the node applies them again at its next start): {e}");
                }
            });
            return Ok(());
        }
        self.inner
            .store
            .submit(Batch::durable(ops))
            .await
            .map_err(BrokerError::storage)
    }

    fn put_exchange(&self, def: &ExchangeDef) -> Result<Op, BrokerError> {
        Ok(Op::PutMeta {
            table: MetaTable::Exchanges,
            key: key(&self.inner.name, &def.name),
            value: warren_storage::codec::encode(def).map_err(BrokerError::storage)?,
        })
    }

    async fn apply_declare_exchange(&self, def: ExchangeDef) -> Result<(), BrokerError> {
        // A new exchange's actor runs before the exchange is routable, so that a
        // delayed message published the moment it is finds it (changes are applied
        // one at a time, so "new" cannot change meanwhile).
        let new = self.topology().exchange(&def.name).is_none();
        let sup = SupervisorHandle::lookup(&self.exchanges_supervisor_name()).ok();
        let mut started = false;
        if let (true, Some(sup)) = (new, &sup) {
            match sup.start_child(self.exchange_spec(&def.name)).await {
                Ok(_) => started = true,
                Err(e) => tracing::warn!("exchange actor for '{}' did not start: {e}", def.name),
            }
        }
        let change = match self
            .inner
            .topology
            .update(|t| t.declare_exchange(def.clone()))
        {
            Ok(change) => change,
            Err(e) => {
                if let (true, Some(sup)) = (started, &sup) {
                    let _ = sup
                        .terminate_child(&self.exchange_actor_name(&def.name))
                        .await;
                }
                return Err(topology_error(e));
            }
        };
        if let Some(created) = &change.declared_exchange {
            self.persist(vec![self.put_exchange(created)?]).await?;
        }
        Ok(())
    }

    async fn apply_binding(&self, binding: Binding, add: bool) -> Result<(), BrokerError> {
        let change = if add {
            self.inner.topology.update(|t| t.bind(binding.clone()))
        } else {
            self.inner.topology.update(|t| t.unbind(&binding))
        }
        .map_err(topology_error)?;
        self.persist_change(&change).await
    }

    /// Stores what a topology change did and stops the actors of deleted exchanges.
    async fn persist_change(&self, change: &Change) -> Result<(), BrokerError> {
        let vhost = &self.inner.name;
        let mut ops = Vec::new();
        for b in &change.added_bindings {
            ops.push(Op::PutMeta {
                table: MetaTable::Bindings,
                key: binding_key(vhost, b),
                value: warren_storage::codec::encode(b).map_err(BrokerError::storage)?,
            });
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
        self.persist(ops).await?;
        // What a deleted delayed exchange holds goes with it (stored on RAM nodes
        // too; its actor drops it again as it stops, after its last write).
        let held: Vec<Op> = change
            .deleted_exchanges
            .iter()
            .filter(|x| x.kind == crate::exchange::ExchangeKind::DelayedMessage)
            .map(|x| Op::DropDelayed {
                exchange: key(vhost, &x.name),
            })
            .collect();
        if !held.is_empty() {
            drop(self.inner.store.submit(Batch::non_durable(held)));
        }
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

    /// A new queue: the first declaration of a name wins (a later one, from another
    /// node at the same time, finds it and is answered as a redeclaration).
    async fn apply_declare_queue(&self, def: QueueDef) -> Result<(), BrokerError> {
        if self.queue(&def.name).is_some() {
            return Ok(());
        }
        let registered = self.open(&def)?;
        // A new queue holds nothing: one that hibernates stays asleep until used.
        registered.queue.found(false).await;
        self.persist(vec![self.put_queue(&def)?]).await?;
        let name = def.name.clone();
        // Its actor runs before the queue is routable: a publish routed to it in
        // between would find no actor and be dropped.
        let started = self.start_queue(&registered).await;
        self.register(registered);
        let _ = self
            .inner
            .topology
            .update(|t| Ok(t.declare_queue_name(&name)));
        started
    }

    fn put_queue(&self, def: &QueueDef) -> Result<Op, BrokerError> {
        Ok(Op::PutMeta {
            table: MetaTable::Queues,
            key: key(&self.inner.name, &def.name),
            value: def.encode_stored().map_err(BrokerError::storage)?,
        })
    }

    /// Starts the supervised actor of a queue this node runs (none for one it reaches
    /// on another node).
    async fn start_queue(&self, registered: &Registered) -> Result<(), BrokerError> {
        let Some(child) = registered.child.clone() else {
            return Ok(());
        };
        let started = match SupervisorHandle::lookup(&self.queues_supervisor_name()) {
            // (A queue that sleeps is recorded as the supervisor's dormant child.)
            Ok(sup) => sup
                .add_child(child)
                .await
                .map(drop)
                .map_err(|e| BrokerError::internal(format!("queue actor did not start: {e}"))),
            Err(e) => Err(BrokerError::internal(format!(
                "queues supervisor unavailable: {e}"
            ))),
        };
        if let Err(e) = &started {
            tracing::error!(queue = %registered.def.name, "{e}");
        }
        started
    }

    /// Stops the supervised actor of a queue this node ran.
    async fn stop_queue(&self, registered: &Registered) {
        if let Some(child) = &registered.child {
            if let Ok(sup) = SupervisorHandle::lookup(&self.queues_supervisor_name()) {
                let _ = sup.terminate_child(&child.name).await;
            }
        }
    }

    /// Replicated queue `name` (if still the one with storage id `id`, and its members
    /// still `from`) has the members `replicas` from now on: a node added starts its replica (which catches up from
    /// the others), a node left out stops its own and removes its log, the others keep
    /// theirs (the group's leader changes the group's Raft members to match). Its home
    /// node stays what it was (it names the queue's group), in the list or not.
    async fn apply_set_replicas(
        &self,
        name: &str,
        id: u64,
        from: &[String],
        replicas: Vec<String>,
    ) -> Result<(), BrokerError> {
        let Some(current) = self.queue_def(name) else {
            return Ok(());
        };
        // (Another change came first: this one, made from what it changed, is void.)
        if current.id != id || current.replicas != from || replicas.is_empty() {
            return Ok(());
        }
        if current.replicas == replicas {
            return Ok(());
        }
        let mut def = current.clone();
        if def.founders.is_empty() {
            def.founders = current.replicas.clone();
        }
        def.replicas = replicas;
        let (was, now) = (self.runs_here(&current), self.runs_here(&def));
        self.persist(vec![self.put_queue(&def)?]).await?;
        let queue_type = self
            .inner
            .placement
            .queue_types
            .of(&def, &self.inner.name)?;
        if was == now {
            queue_type.redefined(&def, &self.inner.name);
            self.redefine(def);
            return Ok(());
        }
        if was {
            // Its actors stop; its replica goes once the others no longer count on it.
            if let Some(registered) = self.unregister(name) {
                self.stop_queue(&registered).await;
            }
            queue_type.left(&def, &self.inner.name).await;
        }
        let registered = self.open(&def)?;
        let started = self.start_queue(&registered).await;
        self.register(registered);
        started
    }

    /// Removes the queue `name` if it is still the one declared as `id` on `node`.
    async fn apply_delete_queue(&self, name: &str, node: &str, id: u64) -> Result<(), BrokerError> {
        let current = self.queue_def(name);
        if let Some(current) = &current {
            if current.node != node || current.id != id {
                return Ok(()); // declared again since: another queue
            }
        }
        let hosted = self.hosted().into_iter().find(|q| &**q.name() == name);
        if let Some(queue) = &hosted {
            // Deleted through another node, or cleaned up: drop messages and
            // consumers here (a queue already deleted answers at once).
            // Bounded: the metadata log is applied in order, and waits for nothing that
            // may not come.
            match tokio::time::timeout(DELETE_WAIT, queue.delete(false, false)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(queue = %name, "queue did not delete its messages: {e}")
                }
                Err(_) => tracing::warn!(
                    queue = %name,
                    "queue did not answer its deletion within {} s; removed anyway",
                    DELETE_WAIT.as_secs()
                ),
            }
        }
        let registered = self.unregister(name);
        let change = self
            .inner
            .topology
            .update(|t| Ok(t.remove_queue(name)))
            .map_err(topology_error)?;
        self.persist(vec![Op::DeleteMeta {
            table: MetaTable::Queues,
            key: key(&self.inner.name, name),
        }])
        .await?;
        // Its bindings, and the auto-delete exchanges that lost their last one.
        self.persist_change(&change).await?;
        let def = registered.as_ref().map(|r| r.def.clone());
        if let Some(registered) = &registered {
            self.stop_queue(registered).await;
        }
        if let Some(def) = def {
            if let Ok(queue_type) = self.inner.placement.queue_types.of(&def, &self.inner.name) {
                queue_type.removed(&def, &self.inner.name).await;
            }
        }
        Ok(())
    }
}

impl VHost {
    /// Deletes everything of this vhost on this node (its vhost was deleted): the
    /// messages and consumers of its queues that live here, and every stored
    /// definition. The actors stop with the vhost's supervisors afterwards.
    pub(crate) async fn erase(&self) -> Result<(), BrokerError> {
        let _guard = self.inner.meta.lock().await;
        let local = self.hosted();
        for queue in &local {
            if let Err(e) = queue.delete(false, false).await {
                tracing::warn!(queue = %queue.name(), "queue of a deleted vhost did not delete its messages: {e}");
            }
        }
        self.clear_registry();
        // Messages are stored on RAM nodes too; definitions only on disk nodes.
        let mut messages: Vec<Op> = local
            .iter()
            .map(|q| Op::DeleteQueueMessages { queue: q.def().id })
            .collect();
        messages.extend(self.drop_delayed());
        if !messages.is_empty() {
            self.inner
                .store
                .submit(Batch::durable(messages))
                .await
                .map_err(BrokerError::storage)?;
        }
        let mut ops = Vec::new();
        if !self.inner.placement.in_memory {
            written(&self.inner.store).await?;
            let prefix = format!("{}\u{0}", self.inner.name);
            for table in [MetaTable::Exchanges, MetaTable::Queues, MetaTable::Bindings] {
                let rows = self
                    .inner
                    .store
                    .read_meta(table)
                    .map_err(BrokerError::storage)?;
                ops.extend(
                    rows.into_iter()
                        .filter(|(k, _)| k.starts_with(&prefix))
                        .map(|(key, _)| Op::DeleteMeta { table, key }),
                );
            }
        }
        self.persist(ops).await
    }
}

/// Waits until every write submitted to `store` before is committed, so that a read
/// of the definitions sees them ([`VHost::persist`] does not wait for its writes).
pub(crate) async fn written(store: &warren_storage::Store) -> Result<(), BrokerError> {
    store
        .submit(Batch::non_durable(Vec::new()))
        .await
        .map_err(BrokerError::storage)
}
