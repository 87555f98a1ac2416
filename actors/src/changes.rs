//! Changes of vhosts, exchanges, queues and bindings, in the broker's own words, and
//! the log they go through.
//!
//! The registries ([`crate::vhosts`], [`crate::vhost`]) check a request against this
//! node's view, then propose a [`BrokerChange`]. In a cluster it goes through the
//! metadata log ([`ChangeLog`], implemented by warren-cluster with Raft) and every
//! node applies the same changes in the same order; without a log it is applied at
//! once. Applying is deterministic: whatever a change checks (does the exchange exist,
//! is it unused) depends only on earlier changes, so every node reaches the same
//! answer. Applying twice is harmless (a node that crashed between applying and
//! recording a change applies it again).

use std::future::Future;
use std::sync::{Arc, OnceLock};

use warren_access::VHostDef;

use crate::error::BrokerError;
use crate::exchange::{Binding, ExchangeDef};
use crate::queue::QueueDef;
use crate::BoxFuture;

/// A change of the node's vhosts or of what is in one.
#[derive(Clone, Debug)]
pub enum BrokerChange {
    /// A new vhost (empty but for the default exchanges).
    AddVhost(VHostDef),
    /// Deletes a vhost with its exchanges, queues (and their messages), bindings and
    /// permissions.
    DeleteVhost {
        /// The vhost's name.
        name: String,
    },
    /// A change inside the vhost `vhost`.
    Vhost {
        /// The vhost's name.
        vhost: String,
        /// What changes in it.
        change: VhostChange,
    },
}

/// A change of one vhost's exchanges, queues or bindings.
#[derive(Clone, Debug)]
pub enum VhostChange {
    /// A new exchange.
    DeclareExchange {
        /// The exchange as declared.
        def: ExchangeDef,
    },
    /// Deletes an exchange (refused while it has bindings if `if_unused`).
    DeleteExchange {
        /// The exchange's name.
        name: String,
        /// Only if no binding has it as its source.
        if_unused: bool,
    },
    /// A new queue; its home node runs its actor, the others route to it.
    DeclareQueue {
        /// The queue as declared, with its home node and storage id.
        def: QueueDef,
    },
    /// Deletes the queue `name` if it is still the one with storage id `id` on
    /// `node` (a queue declared again since is another queue).
    DeleteQueue {
        /// The queue's name.
        name: String,
        /// Its home node when the deletion was asked for.
        node: String,
        /// Its storage id there.
        id: u64,
    },
    /// Adds a binding.
    Bind {
        /// The binding.
        binding: Binding,
    },
    /// Removes a binding.
    Unbind {
        /// The binding.
        binding: Binding,
    },
    /// The nodes that hold replicas of replicated queue `name` (if it is still the one
    /// with storage id `id`, and its members are still `from`) are now `replicas`:
    /// nodes added start a replica, which catches up from the others; nodes left out
    /// stop theirs and remove its log once the others no longer count on it.
    SetReplicas {
        /// The queue's name.
        name: String,
        /// Its storage id.
        id: u64,
        /// Its members this change was made from (another change first: none).
        from: Vec<String>,
        /// Its members from now on, the first one its home.
        replicas: Vec<String>,
    },
}

/// Where changes go to be replicated.
pub trait ChangeLog: Send + Sync {
    /// Proposes `change`; resolves once it is committed and applied on this node, with
    /// the result of applying it.
    fn commit(&self, change: BrokerChange) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// Resolves once this node has applied every change committed (through any node)
    /// before the call, as far as it can tell in a bounded time: called before the
    /// node answers "not found" or routes a message to nothing, so that what another
    /// node acknowledged is seen here.
    fn caught_up(&self) -> BoxFuture<'_, ()>;
}

/// The node's log once it has one, shared by the vhost registry and every vhost.
#[derive(Clone, Default)]
pub(crate) struct LogSlot(Arc<OnceLock<Arc<dyn ChangeLog>>>);

impl LogSlot {
    /// From now on, changes go through `log` (set once; later calls change nothing).
    pub(crate) fn set(&self, log: Arc<dyn ChangeLog>) {
        let _ = self.0.set(log);
    }

    /// Resolves once this node has applied every change committed before the call
    /// (at once without a log: then every change is applied where it is made).
    pub(crate) async fn caught_up(&self) {
        if let Some(log) = self.0.get() {
            log.caught_up().await;
        }
    }

    /// Whether changes go through a log (which is then what makes them durable).
    pub(crate) fn is_set(&self) -> bool {
        self.0.get().is_some()
    }

    /// Makes a change: through the log when there is one (`logged` says it in the
    /// log's words), else applied here at once (`here`). Either way it resolves once
    /// this node has applied it, with the result of applying it.
    pub(crate) async fn change<C, F>(
        &self,
        change: C,
        logged: impl FnOnce(C) -> BrokerChange,
        here: impl FnOnce(C) -> F,
    ) -> Result<(), BrokerError>
    where
        F: Future<Output = Result<(), BrokerError>>,
    {
        match self.0.get() {
            Some(log) => log.commit(logged(change)).await,
            None => here(change).await,
        }
    }
}
