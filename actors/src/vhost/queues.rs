//! The vhost's registry of queues: every queue of the cluster, as a [`QueueRef`] of
//! the queue-type seam. A queue whose home is this node is run by its type (and its
//! actor supervised under `queues:<vhost>`); one of another node is reached there.

use std::collections::HashMap;
use std::sync::Arc;

use warren_supervisor::{ChildSpec, SupervisorHandle};

use super::dead_letters::VhostDeadLetters;
use super::VHost;
use crate::delivery::ChannelId;
use crate::error::BrokerError;
use crate::message::FieldTable;
use crate::queue::{
    Hibernation, HostEnv, QueueDef, QueueRef, QueueStats, QueueStatus, Replication, Settlement,
};

/// One queue of the registry.
#[derive(Clone)]
pub(super) struct Registered {
    pub queue: QueueRef,
    /// Its definition as applied here (a replicated queue's members change; its
    /// handle keeps the one it was made with).
    pub def: QueueDef,
    /// The supervised actor of a queue this node runs.
    pub child: Option<ChildSpec>,
}

/// A queue as listings show it.
#[derive(Clone, Debug)]
pub struct QueueSummary {
    /// The queue's name.
    pub name: String,
    /// Survives a restart of its node.
    pub durable: bool,
    /// Owned by one connection, and deleted with it.
    pub exclusive: bool,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// The declare arguments (`x-queue-type`, `x-max-length`...).
    pub arguments: FieldTable,
    /// Its counters (ready, unacked, consumers, bytes...).
    pub stats: QueueStats,
    /// How often its actor was restarted.
    pub restarts: u64,
    /// The node its actor runs on (a replicated queue's: where it is served now).
    pub node: String,
    /// A replicated queue's members (nodes), as the metadata says.
    pub members: Vec<String>,
    /// A replicated queue's Raft group, as its leader reports it.
    pub replication: Option<Replication>,
}

impl VHost {
    fn registry(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Arc<str>, Registered>> {
        self.inner.queues.read().unwrap_or_else(|p| p.into_inner())
    }

    fn registry_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Arc<str>, Registered>> {
        self.inner.queues.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this node runs the queue `def` (its home, or a replica of it).
    pub fn runs_here(&self, def: &QueueDef) -> bool {
        let node = &self.inner.placement.node;
        match self.inner.placement.queue_types.of(def, &self.inner.name) {
            Ok(queue_type) => queue_type.runs_here(def, node),
            Err(_) => def.node == *node,
        }
    }

    /// What a queue type needs to run one of this vhost's queues here.
    fn host_env(&self) -> HostEnv {
        self.inner
            .host_env
            .get_or_init(|| self.make_host_env())
            .clone()
    }

    fn make_host_env(&self) -> HostEnv {
        let vhost = Arc::downgrade(&self.inner);
        let hibernation = self.inner.placement.hibernate_after.map(|after| {
            let supervisor = self.queues_supervisor_name();
            Hibernation {
                after,
                wake: Arc::new(move |child: String| {
                    let supervisor = supervisor.clone();
                    Box::pin(async move {
                        SupervisorHandle::lookup(&supervisor)
                            .map_err(|e| {
                                BrokerError::internal(format!("queues supervisor unavailable: {e}"))
                            })?
                            .wake_child(&child)
                            .await
                            .map(drop)
                            .map_err(|e| {
                                BrokerError::internal(format!("queue actor did not start: {e}"))
                            })
                    })
                }),
            }
        });
        HostEnv {
            hibernation,
            vhost: self.inner.name.clone(),
            store: self.inner.store.clone(),
            memory: self.inner.placement.queue_memory.clone(),
            dead_letters: Arc::new(VhostDeadLetters::new(&self.inner)),
            remote: self.inner.placement.remote.clone(),
            delete_self: Arc::new(move |queue: Arc<str>| {
                let Some(inner) = vhost.upgrade() else { return };
                let vhost = VHost { inner };
                tokio::spawn(async move {
                    if let Err(e) = vhost.remove_queue(&queue, false, false).await {
                        tracing::warn!(queue = %queue, "automatic delete failed: {e}");
                    }
                });
            }),
        }
    }

    /// The queue `def` through the seam: run by its type if it lives here, reached on
    /// its node otherwise.
    pub(super) fn open(&self, def: &QueueDef) -> Result<Registered, BrokerError> {
        if self.runs_here(def) {
            let queue_type = self.inner.placement.queue_types.of(def, &self.inner.name)?;
            let hosted = queue_type.host(def, &self.host_env())?;
            return Ok(Registered {
                def: def.clone(),
                queue: hosted.queue,
                child: Some(hosted.child),
            });
        }
        if let Ok(queue_type) = self.inner.placement.queue_types.of(def, &self.inner.name) {
            if let Some(queue) = queue_type.reach(def, &self.host_env()) {
                return Ok(Registered {
                    def: def.clone(),
                    queue,
                    child: None,
                });
            }
        }
        let remote = self.inner.placement.remote.as_ref().ok_or_else(|| {
            BrokerError::internal(format!(
                "queue '{}' lives on node '{}', and this node is not in a cluster",
                def.name, def.node
            ))
        })?;
        // A replicated queue is reached through a node that holds a replica: its home,
        // unless that one's replica was moved away.
        let through = match def.replicas.first() {
            Some(first) if !def.replicas.contains(&def.node) => QueueDef {
                node: first.clone(),
                ..def.clone()
            },
            _ => def.clone(),
        };
        Ok(Registered {
            def: def.clone(),
            queue: remote.queue(&self.inner.name, &through),
            child: None,
        })
    }

    pub(super) fn register(&self, registered: Registered) {
        let name = registered.queue.name().clone();
        self.registry_mut().insert(name, registered);
    }

    /// Keeps `def` as the definition of the queue it names (its handle stays).
    pub(super) fn redefine(&self, def: QueueDef) {
        if let Some(registered) = self.registry_mut().get_mut(def.name.as_str()) {
            registered.def = def;
        }
    }

    pub(super) fn unregister(&self, name: &str) -> Option<Registered> {
        self.registry_mut().remove(name)
    }

    /// Forgets every queue (the vhost was deleted).
    pub(super) fn clear_registry(&self) {
        self.registry_mut().clear();
    }

    /// The queue, if it exists.
    pub fn queue(&self, name: &str) -> Option<QueueRef> {
        self.registry().get(name).map(|r| r.queue.clone())
    }

    /// The definition of the queue `name`, if it exists.
    pub fn queue_def(&self, name: &str) -> Option<QueueDef> {
        self.registry().get(name).map(|r| r.def.clone())
    }

    /// Refuses a settlement of deliveries from queue `name` that its type does not
    /// take from clients (see
    /// [`QueueType::check_settlement`](crate::queue::QueueType::check_settlement)); a
    /// queue gone since takes anything (its deliveries are settled as nothing).
    pub fn check_settlement(&self, name: &str, settlement: Settlement) -> Result<(), BrokerError> {
        let Some(queue) = self.queue(name) else {
            return Ok(());
        };
        let def = queue.def();
        self.inner
            .placement
            .queue_types
            .of(def, &self.inner.name)?
            .check_settlement(def, &self.inner.name, settlement)
    }

    /// The queue for use by `channel` of this node: 404 if missing, 405 if another
    /// connection holds it exclusively.
    pub fn queue_for(&self, name: &str, channel: ChannelId) -> Result<QueueRef, BrokerError> {
        let queue = self.queue(name).ok_or_else(|| self.no_queue(name))?;
        if queue.def().node == self.node() && queue.def().owner.is_some_and(|o| self.departed(o)) {
            // Its connection ended: gone, though its deletion is still under way.
            return Err(self.no_queue(name));
        }
        if !queue.def().usable_by(self.node(), channel) {
            return Err(BrokerError::resource_locked(format!(
                "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{name}' in vhost '{}'. \
                 It could be originally declared on another connection or the exclusive property \
                 value does not match that of the original declaration.",
                self.inner.name
            )));
        }
        Ok(queue)
    }

    /// [`Self::queue_for`], after catching up with the cluster's metadata when the
    /// queue is not known here (declared through another node a moment ago): what
    /// callers use before they answer 404.
    pub async fn find_queue(
        &self,
        name: &str,
        channel: ChannelId,
    ) -> Result<QueueRef, BrokerError> {
        if self.queue(name).is_none() {
            self.catch_up().await;
        }
        self.queue_for(name, channel)
    }

    /// [`Self::queue`], after catching up with the cluster's metadata on a miss.
    pub async fn find_queue_any(&self, name: &str) -> Option<QueueRef> {
        if let Some(queue) = self.queue(name) {
            return Some(queue);
        }
        self.catch_up().await;
        self.queue(name)
    }

    pub(super) fn no_queue(&self, name: &str) -> BrokerError {
        BrokerError::not_found(format!(
            "NOT_FOUND - no queue '{name}' in vhost '{}'",
            self.inner.name
        ))
    }

    /// How many queues this vhost has (wherever they live).
    pub fn queue_count(&self) -> usize {
        self.registry().len()
    }

    /// Every queue of this vhost, wherever it lives, sorted by name.
    pub fn queue_defs(&self) -> Vec<QueueDef> {
        let mut defs: Vec<QueueDef> = self.registry().values().map(|r| r.def.clone()).collect();
        defs.sort_by(|a, b| a.name.cmp(&b.name));
        defs
    }

    /// The queues of this vhost that live on `node`.
    pub fn queues_on(&self, node: &str) -> Vec<QueueDef> {
        self.registry()
            .values()
            .map(|r| r.queue.def())
            .filter(|d| d.node == node)
            .cloned()
            .collect()
    }

    /// The queue this node runs whose supervised actor is called `actor`
    /// (`queue:/orders`), for the debug shell.
    pub fn queue_by_actor(&self, actor: &str) -> Option<QueueRef> {
        self.registry()
            .values()
            .find(|r| r.child.as_ref().is_some_and(|c| c.name == actor))
            .map(|r| r.queue.clone())
    }

    /// The queues this node runs.
    pub(super) fn hosted(&self) -> Vec<QueueRef> {
        self.registry()
            .values()
            .filter(|r| r.child.is_some())
            .map(|r| r.queue.clone())
            .collect()
    }

    /// Tells the queues this node runs whether the store held messages of them as
    /// the node started (see [`crate::queue::Queue::found`]); answers how many did.
    pub async fn found_at_start(&self, stored: &std::collections::HashSet<u64>) -> usize {
        let mut with_messages = 0;
        for queue in self.hosted() {
            let has = stored.contains(&queue.def().id);
            with_messages += usize::from(has);
            queue.found(has).await;
        }
        with_messages
    }

    /// The storage ids of the queues that live on this node.
    pub fn local_queue_ids(&self) -> Vec<u64> {
        self.hosted().iter().map(|q| q.def().id).collect()
    }

    /// The children of the queues supervisor: one actor per queue that lives here.
    pub fn queue_children(&self) -> Vec<ChildSpec> {
        let mut children: Vec<(Arc<str>, ChildSpec)> = self
            .registry()
            .iter()
            .filter_map(|(name, r)| r.child.clone().map(|c| (name.clone(), c)))
            .collect();
        children.sort_by(|a, b| a.0.cmp(&b.0));
        children.into_iter().map(|(_, c)| c).collect()
    }

    // ----- listings -------------------------------------------------------------

    /// Every queue with its counters, asked of every queue at once (a queue on another
    /// node answers through its node; one that does not answer shows zeros).
    pub async fn list_queues(&self) -> Vec<QueueSummary> {
        let picked: Vec<(QueueRef, QueueDef)> = self
            .registry()
            .values()
            .map(|r| (r.queue.clone(), r.def.clone()))
            .collect();
        Self::summaries(picked).await
    }

    /// At most `limit` queues named after `after` ("": from the first), in name
    /// order, and whether more come after them: a listing in pages, which asks only
    /// the page's queues for their counts.
    pub async fn list_queues_page(&self, after: &str, limit: usize) -> (Vec<QueueSummary>, bool) {
        let (picked, more) = {
            // One look at the registry: every queue picked for the page is there.
            let registry = self.registry();
            let mut names: Vec<&Arc<str>> = registry
                .keys()
                .filter(|name| name.as_ref() > after)
                .collect();
            let more = names.len() > limit;
            if more {
                names.select_nth_unstable(limit);
                names.truncate(limit);
            }
            names.sort_unstable();
            let picked: Vec<(QueueRef, QueueDef)> = names
                .iter()
                .filter_map(|n| registry.get(*n).map(|r| (r.queue.clone(), r.def.clone())))
                .collect();
            (picked, more)
        };
        (Self::summaries(picked).await, more)
    }

    /// The queues called `names` (those that exist), with their counts, in the order
    /// given: a listing that picked its page by name asks only the page's queues.
    pub async fn list_queues_named(&self, names: &[&str]) -> Vec<QueueSummary> {
        let picked: Vec<(QueueRef, QueueDef)> = {
            let registry = self.registry();
            names
                .iter()
                .filter_map(|n| registry.get(*n).map(|r| (r.queue.clone(), r.def.clone())))
                .collect()
        };
        Self::summaries(picked).await
    }

    /// `picked`'s queues with their counts, asked of all of them at once.
    async fn summaries(picked: Vec<(QueueRef, QueueDef)>) -> Vec<QueueSummary> {
        let (queues, defs): (Vec<QueueRef>, Vec<QueueDef>) = picked.into_iter().unzip();
        let mut asked = tokio::task::JoinSet::new();
        for (i, queue) in queues.iter().cloned().enumerate() {
            asked.spawn(async move { (i, queue.status().await.unwrap_or_default()) });
        }
        let mut statuses = vec![QueueStatus::default(); queues.len()];
        while let Some(answer) = asked.join_next().await {
            if let Ok((i, status)) = answer {
                statuses[i] = status;
            }
        }
        queues
            .iter()
            .zip(defs)
            .zip(statuses)
            .map(|((q, def), status)| QueueSummary {
                name: def.name.clone(),
                durable: def.durable,
                exclusive: def.owner.is_some(),
                auto_delete: def.auto_delete,
                arguments: def.arguments.clone(),
                stats: status.stats,
                restarts: status.restarts,
                node: q
                    .serving_node()
                    .or(status.serving)
                    .unwrap_or_else(|| def.node.clone()),
                members: def.replicas,
                replication: status.replication,
            })
            .collect()
    }

    /// The counters of the queues that live on this node, by name (what another
    /// node's listing asks for).
    pub async fn local_stats(&self) -> Vec<(String, QueueStatus)> {
        let mut out = Vec::new();
        for queue in self.hosted() {
            if let Ok(status) = queue.status().await {
                out.push((queue.name().to_string(), status));
            }
        }
        out
    }
}
