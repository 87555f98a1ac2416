//! What clients ask of a vhost: declare, delete, bind, unbind, purge.
//!
//! Each operation checks what it can against this node's view (so that most errors
//! cost no log entry), then proposes a [`VhostChange`] and returns once this node has
//! applied it, with the result of applying it. The check is advisory: applying decides,
//! in log order, on every node alike.

use ractor::ActorRef;
use tokio::sync::oneshot;

use super::{topology_error, QueueDeclareOk, VHost};
use crate::changes::{BrokerChange, VhostChange};
use crate::delivery::ChannelId;
use crate::error::{code, BrokerError};
use crate::exchange::{Binding, Destination, ExchangeDef, ExchangeKind};
use crate::message::FieldTable;
use crate::queue::{QueueDef, QueueKind, QueueRef, QUEUE_TYPE_ARG};

use super::ExchangeMsg;

/// How long a declaration waits for a queue that deleted itself to leave the
/// registry before it creates the queue anew.
const REMOVAL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl VHost {
    /// Proposes a change of this vhost (or applies it at once when there is no log).
    pub(super) async fn change(&self, change: VhostChange) -> Result<(), BrokerError> {
        let vhost = self.inner.name.clone();
        self.inner
            .log
            .change(
                change,
                |change| BrokerChange::Vhost { vhost, change },
                |change| self.apply(change),
            )
            .await
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
        if passive {
            if name.is_empty() {
                // As RabbitMQ: the default exchange cannot be declared, passively
                // either.
                return Err(BrokerError::access_refused(format!(
                    "ACCESS_REFUSED - operation not permitted on the default exchange in vhost '{}'",
                    self.inner.name
                )));
            }
            return match self.find_exchange(name).await {
                Some(_) => Ok(()),
                None => Err(self.no_exchange(name)),
            };
        }
        let kind: ExchangeKind = kind.parse().map_err(BrokerError::from)?;
        let def = ExchangeDef {
            name: name.to_string(),
            kind,
            durable,
            auto_delete,
            internal,
            arguments,
        };
        let check = self
            .topology()
            .declare_exchange(def.clone())
            .map_err(topology_error)?;
        if check.declared_exchange.is_none() {
            return Ok(()); // an equivalent exchange exists
        }
        self.change(VhostChange::DeclareExchange { def }).await
    }

    /// `exchange.delete`.
    pub async fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<(), BrokerError> {
        let check = self
            .topology()
            .delete_exchange(name, if_unused)
            .map_err(topology_error)?;
        if check.topology.is_none() {
            if self.topology().exchange(name).is_some() {
                return Ok(()); // nothing to delete (a default exchange, say)
            }
            // Not known here: it may have been declared through another node a moment
            // ago.
            self.catch_up().await;
            let check = self
                .topology()
                .delete_exchange(name, if_unused)
                .map_err(topology_error)?;
            if check.topology.is_none() {
                return Ok(()); // nothing to delete
            }
        }
        self.change(VhostChange::DeleteExchange {
            name: name.to_string(),
            if_unused,
        })
        .await
    }

    fn no_exchange(&self, name: &str) -> BrokerError {
        BrokerError::not_found(format!(
            "NOT_FOUND - no exchange '{name}' in vhost '{}'",
            self.inner.name
        ))
    }

    // ----- bindings -------------------------------------------------------------

    /// `queue.bind` / `exchange.bind`, through the source exchange's actor.
    pub async fn bind(&self, binding: Binding, channel: ChannelId) -> Result<(), BrokerError> {
        self.binding_known(&binding, channel).await?;
        self.via_exchange(binding, true).await
    }

    /// `queue.unbind` / `exchange.unbind`. Idempotent, as RabbitMQ's: unbinding from
    /// an exchange or a queue that is gone (an auto-delete one that went first, as
    /// client libraries meet when they clean up) answers ok.
    pub async fn unbind(&self, binding: Binding, channel: ChannelId) -> Result<(), BrokerError> {
        if !binding.source.is_empty() && !self.binding_ends_known(&binding).await {
            return Ok(());
        }
        if let Destination::Queue(q) = &binding.destination {
            self.queue_for(q, channel)?;
        }
        let source = binding.source.clone();
        match self.via_exchange(binding, false).await {
            // The source went meanwhile.
            Err(_) if !source.is_empty() && self.topology().exchange(&source).is_none() => Ok(()),
            other => other,
        }
    }

    /// Catches up with the cluster's metadata when the binding's source or
    /// destination is not known here, then checks that its queue is usable.
    async fn binding_known(&self, b: &Binding, channel: ChannelId) -> Result<(), BrokerError> {
        self.binding_ends_known(b).await;
        if let Destination::Queue(q) = &b.destination {
            self.queue_for(q, channel)?;
        }
        Ok(())
    }

    /// Whether the binding's source and destination exist, after catching up with
    /// the cluster's metadata when one of them is not known here.
    async fn binding_ends_known(&self, b: &Binding) -> bool {
        let ends = |vhost: &Self| {
            let topology = vhost.topology();
            let known =
                |exchange: &str| exchange.is_empty() || topology.exchange(exchange).is_some();
            let destination = match &b.destination {
                Destination::Queue(q) => vhost.queue(q).is_some(),
                Destination::Exchange(e) => known(e),
            };
            known(&b.source) && destination
        };
        if ends(self) {
            return true;
        }
        self.catch_up().await;
        ends(self)
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
                // The exchange's actor checks (changes of one exchange are checked one
                // at a time); the log orders and applies, and that wait is ours, not the
                // actor's mailbox's.
                match rx.await.map_err(|_| self.exchange_unavailable())?? {
                    Some(change) => self.change(change).await,
                    None => Ok(()),
                }
            }
            // No actor: either no such exchange (the topology says 404) or it is
            // restarting right now.
            None => {
                if self.topology().exchange(&binding.source).is_none() {
                    Err(self.no_exchange(&binding.source))
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

    /// Checks a binding change against the current topology: the change to propose,
    /// or `None` when there is nothing to do (already bound, or not bound). Run by the
    /// source exchange's actor, which answers at once.
    pub(super) fn check_binding(
        &self,
        binding: Binding,
        add: bool,
    ) -> Result<Option<VhostChange>, BrokerError> {
        let topology = self.topology();
        let check = if add {
            topology.bind(binding.clone())
        } else {
            topology.unbind(&binding)
        }
        .map_err(topology_error)?;
        if check.topology.is_none() {
            return Ok(None); // already bound, or not bound
        }
        Ok(Some(if add {
            VhostChange::Bind { binding }
        } else {
            VhostChange::Unbind { binding }
        }))
    }

    // ----- queues ---------------------------------------------------------------

    /// `queue.declare`. `owner` is set for an exclusive queue. A new queue lives on
    /// this node.
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
        // Direct reply-to: the pseudo-queue is there (clients check for the feature
        // so), and so is the address of a consumer this node has.
        let reply = name == super::REPLY_TO
            || (super::is_reply_address(name) && self.reply_consumer_exists(name));
        if passive && reply {
            return Ok(QueueDeclareOk {
                name: name.to_string(),
                messages: 0,
                consumers: 0,
            });
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
        let mut def = QueueDef {
            name: name.clone(),
            id: 0, // allocated below, for a queue that is new
            node: self.node().to_string(),
            durable,
            owner,
            auto_delete,
            arguments,
            replicas: Vec::new(),
            founders: Vec::new(),
        };
        // A passive declaration's arguments are ignored, as in RabbitMQ; otherwise the
        // type (`x-queue-type`) and its arguments are checked first.
        let checked = (!passive).then(|| self.check_declaration(&def));
        let existing = match self.queue(&name) {
            None if passive => self.find_queue_any(&name).await,
            known => known,
        };
        if let Some(existing) = existing {
            let requested = checked.clone().map(|c| c.map(|()| def.clone()));
            match self
                .redeclare(existing.clone(), requested.clone(), channel)
                .await
            {
                // It deleted itself meanwhile (auto-delete, expiry), or its actor is
                // restarting: once it is gone from the registry, this declaration
                // creates the queue anew; once it answers again, it is declared as it
                // stands. A declaration never answers ok for a queue that is gone.
                Err(e) if e.code() == code::NOT_FOUND => {
                    if self.until_removed_or_back(&existing).await? {
                        return self.redeclare(existing, requested, channel).await;
                    }
                }
                other => return other,
            }
        }
        if passive {
            return Err(self.no_queue(&name));
        }
        if let Some(Err(e)) = checked {
            return Err(e);
        }
        self.inner
            .placement
            .queue_types
            .of(&def, &self.inner.name)?
            .place(&mut def)
            .await?;
        // (A type that placed the queue on another node gave it an id fit for there.)
        if def.id == 0 {
            def.id = self.inner.store.allocate_id();
        }
        let id = def.id;
        self.change(VhostChange::DeclareQueue { def: def.clone() })
            .await?;
        match self.queue(&name) {
            Some(q) if q.def().node == def.node && q.def().id == id => Ok(QueueDeclareOk {
                name,
                messages: 0,
                consumers: 0,
            }),
            // Declared meanwhile through another node: that declaration won, and
            // this one is a redeclaration of it (checked against what was asked).
            Some(q) => self.redeclare(q, Some(Ok(def)), channel).await,
            None => Err(self.no_queue(&name)),
        }
    }

    /// Makes `replicas` the members of replicated queue `name` (`warren queue
    /// add-member`...), answered once this node has applied it, with the queue's
    /// definition as it is then: 404 when there is no such queue, 406 for a queue
    /// that is not replicated or an empty list. The group's Raft members follow (its
    /// leader changes them one at a time; a new member catches up first).
    pub async fn set_replicas(
        &self,
        name: &str,
        replicas: Vec<String>,
    ) -> Result<QueueDef, BrokerError> {
        let def = self.queue_def(name).ok_or_else(|| self.no_queue(name))?;
        if def.replicas.is_empty() && def.kind().is_ok_and(|k| k == QueueKind::Quorum) {
            return Err(BrokerError::precondition_failed(format!(
                "queue '{name}' in vhost '{}' was declared before Warren recorded replicas: its one replica on '{}' cannot change; declare a new quorum queue to have several",
                self.inner.name, def.node
            )));
        }
        if def.replicas.is_empty() {
            return Err(BrokerError::precondition_failed(format!(
                "queue '{name}' in vhost '{}' is a {} queue: only quorum (mirrored) queues have members",
                self.inner.name,
                def.kind().map(|k| k.to_string()).unwrap_or_else(|_| "classic".into())
            )));
        }
        if replicas.is_empty() {
            return Err(BrokerError::precondition_failed(format!(
                "queue '{name}' in vhost '{}' needs at least one member: delete the queue instead",
                self.inner.name
            )));
        }
        self.change(VhostChange::SetReplicas {
            name: name.to_string(),
            id: def.id,
            from: def.replicas.clone(),
            replicas: replicas.clone(),
        })
        .await?;
        let now = self.queue_def(name).ok_or_else(|| self.no_queue(name))?;
        if now.replicas != replicas {
            return Err(BrokerError::precondition_failed(format!(
                "the members of queue '{name}' in vhost '{}' changed meanwhile (now {}): look again and repeat",
                self.inner.name,
                now.replicas.join(", ")
            )));
        }
        Ok(now)
    }

    /// Checks a new declaration: its type exists here, and that type accepts its
    /// flags and arguments.
    fn check_declaration(&self, def: &QueueDef) -> Result<(), BrokerError> {
        let vhost = &self.inner.name;
        self.inner
            .placement
            .queue_types
            .of(def, vhost)?
            .validate(def, vhost)
    }

    /// A declaration of a queue that exists: passive (`requested` is `None`), or
    /// checked for equivalence against what was asked.
    async fn redeclare(
        &self,
        existing: QueueRef,
        requested: Option<Result<QueueDef, BrokerError>>,
        channel: ChannelId,
    ) -> Result<QueueDeclareOk, BrokerError> {
        let queue = self.queue_for(existing.name(), channel)?;
        // Alive first (a queue that deleted itself is declared anew, whatever its
        // arguments were), then equivalent.
        queue.redeclared().await?;
        if let Some(requested) = requested {
            self.check_equivalent(queue.def(), &requested?)?;
        }
        let status = queue.status().await?;
        Ok(QueueDeclareOk {
            name: queue.name().to_string(),
            messages: status.stats.ready,
            consumers: status.stats.consumers as u32,
        })
    }

    /// Waits (bounded) until the registry no longer holds `queue` (its deletion is
    /// applied through the metadata log: `false`) or the queue answers again (its
    /// actor restarted: `true`).
    async fn until_removed_or_back(&self, queue: &QueueRef) -> Result<bool, BrokerError> {
        let id = queue.def().id;
        let deadline = tokio::time::Instant::now() + REMOVAL_WAIT;
        let mut round = 0u32;
        loop {
            round += 1;
            match self.queue(queue.name()) {
                Some(q) if q.def().id == id => {}
                _ => return Ok(false),
            }
            // Asked again every 50 ms: a restart takes that long at least.
            if round.is_multiple_of(10) && queue.redeclared().await.is_ok() {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(BrokerError::new(
                    code::RESOURCE_LOCKED,
                    format!(
                        "RESOURCE_LOCKED - queue '{}' in vhost '{}' is being deleted or restarted; declare it again",
                        queue.name(),
                        self.inner.name
                    ),
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// 406 unless `requested` declares the same queue as `current`: the same type,
    /// and what that type compares.
    fn check_equivalent(
        &self,
        current: &QueueDef,
        requested: &QueueDef,
    ) -> Result<(), BrokerError> {
        let vhost = &self.inner.name;
        let (is, asked) = (current.kind(), requested.kind());
        if is != asked {
            let show = |k: &Result<crate::queue::QueueKind, _>| match k {
                Ok(k) => format!("'{k}'"),
                Err(_) => "invalid".to_string(),
            };
            return Err(BrokerError::precondition_failed(format!(
                "inequivalent arg '{QUEUE_TYPE_ARG}' for queue '{}' in vhost '{vhost}': received {} but current is {}",
                current.name,
                show(&asked),
                show(&is)
            )));
        }
        self.inner
            .placement
            .queue_types
            .of(current, vhost)?
            .check_equivalent(current, requested, vhost)
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
        if self.find_queue_any(name).await.is_none() {
            return Ok(0);
        }
        self.queue_for(name, channel)?;
        match self.remove_queue(name, if_unused, if_empty).await {
            // Deleted by someone else meanwhile.
            Err(e) if e.code() == code::NOT_FOUND && self.queue(name).is_none() => Ok(0),
            other => other,
        }
    }

    /// Deletes a queue whoever owns it (expiry, auto-delete, owner gone, delete): the
    /// queue checks the conditions and drops its messages, then the log removes it
    /// everywhere.
    pub(super) async fn remove_queue(
        &self,
        name: &str,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<u64, BrokerError> {
        let queue = self.queue(name).ok_or_else(|| self.no_queue(name))?;
        let count = queue.delete(if_unused, if_empty).await?;
        self.delete_def(queue.def()).await?;
        Ok(count)
    }

    /// Removes the queue `def` everywhere, through the log.
    async fn delete_def(&self, def: &QueueDef) -> Result<(), BrokerError> {
        self.change(VhostChange::DeleteQueue {
            name: def.name.clone(),
            node: def.node.clone(),
            id: def.id,
        })
        .await
    }

    /// `queue.purge`.
    pub async fn purge_queue(&self, name: &str, channel: ChannelId) -> Result<u64, BrokerError> {
        self.find_queue(name, channel).await?.purge().await
    }

    /// The connection `channel` is ending: its exclusive queues are gone for
    /// everybody from now on (404), before [`Self::owner_gone`] deletes them.
    pub fn owner_leaving(&self, channel: ChannelId) {
        lock(&self.inner.departed_owners).insert(channel);
    }

    /// Whether the connection `channel` of this node ended.
    pub(super) fn departed(&self, channel: ChannelId) -> bool {
        lock(&self.inner.departed_owners).contains(&channel)
    }

    /// A connection (channel) ended: delete the exclusive queues it owned.
    pub async fn owner_gone(&self, channel: ChannelId) {
        self.owner_leaving(channel);
        let owned: Vec<std::sync::Arc<str>> = self
            .hosted()
            .into_iter()
            .filter(|q| q.def().owner == Some(channel))
            .map(|q| q.name().clone())
            .collect();
        for name in owned {
            if let Err(e) = self.remove_queue(&name, false, false).await {
                tracing::warn!(queue = %name, "exclusive queue not deleted: {e}");
            }
        }
        lock(&self.inner.departed_owners).remove(&channel);
    }

    // ----- cleanup after a node's process ended ----------------------------------

    /// Deletes, through the log, what died with this node's last run: its transient
    /// and exclusive queues and, when the node is not in a cluster with others
    /// (`alone`), the transient exchanges found at load. Returns how many are left
    /// (call again later when that is not zero: the log may not take changes yet).
    pub async fn remove_stale(&self, alone: bool) -> usize {
        let queues: Vec<QueueDef> = self.stale().queues.clone();
        for def in queues {
            match self.delete_def(&def).await {
                Ok(()) => self.stale().queues.retain(|d| d != &def),
                Err(e) => tracing::debug!(queue = %def.name, "stale queue not deleted yet: {e}"),
            }
        }
        if !alone {
            // In a cluster, transient exchanges belong to the cluster, not to this run.
            self.stale().exchanges.clear();
        }
        let exchanges: Vec<String> = self.stale().exchanges.clone();
        for name in exchanges {
            match self.delete_exchange(&name, false).await {
                Ok(()) => self.stale().exchanges.retain(|x| x != &name),
                Err(e) => {
                    tracing::debug!(exchange = %name, "transient exchange not deleted yet: {e}")
                }
            }
        }
        let stale = self.stale();
        stale.queues.len() + stale.exchanges.len()
    }

    /// Deletes, through the log, the transient and exclusive queues that lived on
    /// `node`, whose process is gone. Returns how many were deleted.
    pub async fn remove_queues_of(&self, node: &str) -> usize {
        let mut deleted = 0;
        for def in self.queues_on(node) {
            if !def.dies_with_node() {
                continue;
            }
            match self.delete_def(&def).await {
                Ok(()) => deleted += 1,
                Err(e) => {
                    tracing::debug!(queue = %def.name, "queue of node '{node}' not deleted yet: {e}")
                }
            }
        }
        deleted
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

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
