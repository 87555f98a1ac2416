//! The virtual hosts of a node: which exist, adding and deleting them.
//!
//! A vhost is a namespace of exchanges, queues, bindings and permissions (RabbitMQ's
//! model): the same queue name in two vhosts is two queues, and a user reaches only
//! the vhosts they have permissions in. The default vhost `/` exists on every node
//! from the start and cannot be deleted; others are added and deleted through the
//! node's change log like any other change, so every node of a cluster has the same
//! ones. The registry also applies the changes inside a vhost, by its name.
//!
//! Running a vhost means running its exchange and queue supervisors: the node
//! assembly provides that ([`VHostSupervision`]), this registry decides when.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, OnceLock, RwLock};

use tokio::sync::Mutex;
use warren_access::{check_vhost_name, VHostDef, DEFAULT_VHOST};
use warren_storage::{Batch, MetaTable, Op, Store};

use crate::changes::{BrokerChange, ChangeLog, LogSlot};
use crate::error::BrokerError;
use crate::vhost::{Placement, VHost};
use crate::BoxFuture;

/// Starts and stops the actors of a vhost (the node's supervision tree).
pub trait VHostSupervision: Send + Sync + 'static {
    /// Starts the vhost's supervisors under the node's root.
    fn start<'a>(&'a self, vhost: &'a VHost) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// Stops them (its queue and exchange actors with them).
    fn stop<'a>(&'a self, vhost: &'a VHost) -> BoxFuture<'a, ()>;
}

/// The registry of a node's vhosts (cheap to clone).
#[derive(Clone)]
pub struct VHosts {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    placement: Placement,
    vhosts: RwLock<BTreeMap<String, (VHostDef, VHost)>>,
    /// One add or delete applied at a time.
    changes: Mutex<()>,
    /// The node's log, shared with every vhost.
    log: LogSlot,
    supervision: OnceLock<Arc<dyn VHostSupervision>>,
    /// The queues the store held messages of as the node started, until
    /// [`VHosts::recover_queues`] took them.
    stored_at_start: std::sync::Mutex<Option<HashSet<u64>>>,
}

/// The 404 for a vhost that does not exist.
pub fn no_vhost(name: &str) -> BrokerError {
    BrokerError::not_found(format!("NOT_FOUND - vhost '{name}' not found"))
}

impl VHosts {
    /// Loads every vhost stored here (a RAM node stores none: the log gives them
    /// back), the default vhost always, and drops stored messages no queue owns.
    pub async fn load(store: Store, placement: Placement) -> Result<VHosts, BrokerError> {
        let mut defs = vec![VHostDef {
            name: DEFAULT_VHOST.into(),
            description: "Default virtual host".into(),
        }];
        if !placement.in_memory {
            for (_, value) in store
                .read_meta(MetaTable::Vhosts)
                .map_err(BrokerError::storage)?
            {
                match warren_storage::codec::decode::<VHostDef>(&value) {
                    Ok(def) if def.name != DEFAULT_VHOST => defs.push(def),
                    Ok(_) => {}
                    Err(e) => tracing::error!("a stored vhost did not decode and is skipped: {e}"),
                }
            }
        }
        let log = LogSlot::default();
        let mut vhosts = BTreeMap::new();
        for def in defs {
            let vhost =
                VHost::load(&def.name, store.clone(), placement.clone(), log.clone()).await?;
            vhosts.insert(def.name.clone(), (def, vhost));
        }
        let registry = VHosts {
            inner: Arc::new(Inner {
                store,
                placement,
                vhosts: RwLock::new(vhosts),
                changes: Mutex::new(()),
                log,
                supervision: OnceLock::new(),
                stored_at_start: std::sync::Mutex::new(None),
            }),
        };
        if !registry.inner.placement.in_memory {
            registry.drop_orphan_messages().await?;
        }
        Ok(registry)
    }

    /// Tells each queue this node runs what the store held of it at start (once,
    /// after the vhosts' supervisors started): those that sleep until used start now
    /// if they have messages, one after another, and know themselves empty
    /// otherwise. Answers how many were started so.
    pub async fn recover_queues(&self) -> usize {
        let stored = self
            .inner
            .stored_at_start
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default();
        let mut started = 0;
        for vhost in self.all() {
            started += vhost.found_at_start(&stored).await;
        }
        started
    }

    /// Drops the stored messages of queues and the logs of streams that no longer
    /// exist here, in any vhost (transient queues of the last run, a delete that
    /// crashed half-way). Not on a
    /// RAM node: its definitions come back from the log only after start.
    async fn drop_orphan_messages(&self) -> Result<(), BrokerError> {
        let live: HashSet<u64> = self
            .all()
            .iter()
            .flat_map(|v| v.local_queue_ids())
            .collect();
        let store = &self.inner.store;
        let queues = store.queues_with_messages().map_err(BrokerError::storage)?;
        *self
            .inner
            .stored_at_start
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(
            queues
                .iter()
                .copied()
                .filter(|id| live.contains(id))
                .collect(),
        );
        let streams = store.partitions().map_err(BrokerError::storage)?;
        let orphan_queues: Vec<Op> = queues
            .into_iter()
            .filter(|id| !live.contains(id))
            .map(|queue| Op::DeleteQueueMessages { queue })
            .collect();
        let orphan_streams: Vec<Op> = streams
            .into_iter()
            .filter(|id| !live.contains(id))
            .map(|partition| Op::DropPartition { partition })
            .collect();
        let (queues, streams) = (orphan_queues.len(), orphan_streams.len());
        let orphans: Vec<Op> = orphan_queues.into_iter().chain(orphan_streams).collect();
        if !orphans.is_empty() {
            tracing::info!(
                "dropping the stored messages of {queues} queues and the logs of {streams} streams that no longer exist"
            );
            self.inner
                .store
                .submit(Batch::durable(orphans))
                .await
                .map_err(BrokerError::storage)?;
        }
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, (VHostDef, VHost)>> {
        self.inner.vhosts.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, (VHostDef, VHost)>> {
        self.inner.vhosts.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The vhost `name`, if it exists.
    pub fn get(&self, name: &str) -> Option<VHost> {
        self.read().get(name).map(|(_, v)| v.clone())
    }

    /// The vhost `name`, or its 404.
    pub fn find(&self, name: &str) -> Result<VHost, BrokerError> {
        self.get(name).ok_or_else(|| no_vhost(name))
    }

    /// The default vhost `/`.
    pub fn default_vhost(&self) -> VHost {
        self.get(DEFAULT_VHOST)
            .expect("the default vhost is never removed")
    }

    /// The queue, in any vhost, whose supervised actor on this node is called `actor`.
    pub fn queue_by_actor(&self, actor: &str) -> Option<crate::queue::QueueRef> {
        self.all().iter().find_map(|v| v.queue_by_actor(actor))
    }

    /// Every vhost, by name.
    pub fn all(&self) -> Vec<VHost> {
        self.read().values().map(|(_, v)| v.clone()).collect()
    }

    /// Every vhost's record, by name.
    pub fn list(&self) -> Vec<VHostDef> {
        self.read().values().map(|(d, _)| d.clone()).collect()
    }

    /// From now on, changes go through `log`, for these vhosts and later ones.
    pub fn set_change_log(&self, log: Arc<dyn ChangeLog>) {
        self.inner.log.set(log);
    }

    /// Who starts and stops the actors of vhosts added and deleted from now on.
    pub fn set_supervision(&self, supervision: Arc<dyn VHostSupervision>) {
        let _ = self.inner.supervision.set(supervision);
    }

    /// Adds a vhost. Errors: an invalid name (406), an existing vhost (406).
    pub async fn add(&self, name: &str, description: &str) -> Result<(), BrokerError> {
        check_vhost_name(name)?;
        if self.get(name).is_some() {
            return Err(BrokerError::precondition_failed(format!(
                "PRECONDITION_FAILED - vhost '{name}' already exists"
            )));
        }
        let def = VHostDef {
            name: name.to_string(),
            description: description.to_string(),
        };
        self.inner
            .log
            .change(BrokerChange::AddVhost(def), |c| c, |c| self.apply(c))
            .await
    }

    /// Deletes a vhost with everything in it. Errors: the default vhost (403), a
    /// vhost that does not exist (404).
    pub async fn delete(&self, name: &str) -> Result<(), BrokerError> {
        if name == DEFAULT_VHOST {
            return Err(BrokerError::access_refused(
                "ACCESS_REFUSED - the default vhost '/' cannot be deleted",
            ));
        }
        self.find(name)?;
        let delete = BrokerChange::DeleteVhost {
            name: name.to_string(),
        };
        self.inner
            .log
            .change(delete, |c| c, |c| self.apply(c))
            .await
    }

    /// Applies a committed change: an add or delete of a vhost (one at a time), or a
    /// change inside one (by that vhost). Applying twice changes nothing the second
    /// time.
    pub async fn apply(&self, change: BrokerChange) -> Result<(), BrokerError> {
        match change {
            BrokerChange::AddVhost(def) => {
                let _guard = self.inner.changes.lock().await;
                self.apply_add(def).await
            }
            BrokerChange::DeleteVhost { name } => {
                let _guard = self.inner.changes.lock().await;
                self.apply_delete(&name).await
            }
            BrokerChange::Vhost { vhost, change } => self.find(&vhost)?.apply(change).await,
        }
    }

    async fn persist(&self, op: Op) -> Result<(), BrokerError> {
        if self.inner.placement.in_memory {
            return Ok(());
        }
        self.inner
            .store
            .submit(Batch::durable(vec![op]))
            .await
            .map_err(BrokerError::storage)
    }

    async fn apply_add(&self, def: VHostDef) -> Result<(), BrokerError> {
        if self.get(&def.name).is_some() {
            return Ok(());
        }
        self.persist(Op::PutMeta {
            table: MetaTable::Vhosts,
            key: def.name.clone(),
            value: warren_storage::codec::encode(&def).map_err(BrokerError::storage)?,
        })
        .await?;
        let vhost = VHost::load(
            &def.name,
            self.inner.store.clone(),
            self.inner.placement.clone(),
            self.inner.log.clone(),
        )
        .await?;
        if let Some(supervision) = self.inner.supervision.get() {
            supervision.start(&vhost).await?;
        }
        self.write().insert(def.name.clone(), (def, vhost));
        Ok(())
    }

    async fn apply_delete(&self, name: &str) -> Result<(), BrokerError> {
        if name == DEFAULT_VHOST {
            return Err(BrokerError::access_refused(
                "ACCESS_REFUSED - the default vhost '/' cannot be deleted",
            ));
        }
        let Some((_, vhost)) = self.write().remove(name) else {
            return Ok(());
        };
        // Connections and sessions on it close first, so nothing declares into it
        // while its contents go.
        vhost.mark_deleted();
        vhost.erase().await?;
        if let Some(supervision) = self.inner.supervision.get() {
            supervision.stop(&vhost).await;
        }
        self.persist(Op::DeleteMeta {
            table: MetaTable::Vhosts,
            key: name.to_string(),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The name check (warren-access's), as this registry answers it.
    fn check_name(name: &str) -> Result<(), BrokerError> {
        Ok(check_vhost_name(name)?)
    }

    fn placement() -> Placement {
        Placement::standalone(
            "n1",
            warren_resources::queue_memory::QueueMemory::new(64 << 20),
        )
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("prod").is_ok());
        assert!(check_name("a/b c").is_ok());
        assert_eq!(check_name("").unwrap_err().code(), 406);
        assert_eq!(check_name("a\nb").unwrap_err().code(), 406);
        assert_eq!(check_name(&"x".repeat(256)).unwrap_err().code(), 406);
    }

    #[tokio::test]
    async fn a_vhost_is_added_survives_a_restart_and_is_deleted_with_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        {
            let store = Store::open(&path).unwrap();
            let vhosts = VHosts::load(store.clone(), placement()).await.unwrap();
            assert_eq!(vhosts.list().len(), 1);
            vhosts.add("prod", "production").await.unwrap();
            assert_eq!(vhosts.add("prod", "").await.unwrap_err().code(), 406);
            assert_eq!(vhosts.delete("/").await.unwrap_err().code(), 403);
            assert_eq!(vhosts.delete("nope").await.unwrap_err().code(), 404);
            let prod = vhosts.find("prod").unwrap();
            prod.declare_exchange(
                "orders",
                "direct",
                true,
                false,
                false,
                false,
                Default::default(),
            )
            .await
            .unwrap();
            store.close();
        }
        let store = Store::open(&path).unwrap();
        let vhosts = VHosts::load(store.clone(), placement()).await.unwrap();
        let names: Vec<String> = vhosts.list().into_iter().map(|d| d.name).collect();
        assert_eq!(names, vec!["/".to_string(), "prod".to_string()]);
        let prod = vhosts.find("prod").unwrap();
        assert!(prod.list_exchanges().iter().any(|x| x.name == "orders"));
        assert!(!vhosts
            .default_vhost()
            .list_exchanges()
            .iter()
            .any(|x| x.name == "orders"));
        let deleted = prod.deleted();
        vhosts.delete("prod").await.unwrap();
        assert!(*deleted.borrow());
        assert!(vhosts.get("prod").is_none());
        // Added again, it is empty.
        vhosts.add("prod", "").await.unwrap();
        let prod = vhosts.find("prod").unwrap();
        assert!(!prod.list_exchanges().iter().any(|x| x.name == "orders"));
        store.close();
    }
}
