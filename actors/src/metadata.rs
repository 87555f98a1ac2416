//! Metadata changes as commands: what a cluster replicates through its metadata log.
//!
//! A change of the broker's replicated metadata is a [`MetaCommand`]: users,
//! permissions, exchanges, queues (with their home node) and bindings. Without a log
//! the command is applied at once; in a cluster it goes through the replicated log
//! ([`MetadataLog`], implemented by `warren-cluster` with Raft), and every node applies
//! the same commands in the same order. Applying is deterministic: whatever a command
//! checks (does the user exist, is the exchange unused) depends only on earlier
//! commands, so every node reaches the same answer. Applying twice is harmless (a node
//! that crashed between applying and recording it applies the entry again).

use serde::{Deserialize, Serialize};

use warren_access::{AccessChange, Permission, User, VHostDef};

use crate::error::BrokerError;
use crate::exchange::{Binding, ExchangeDef};
use crate::queue::QueueDef;

/// One metadata change.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MetaCommand {
    /// The user record is complete (its password already salted and hashed by the
    /// node that took the request), so every node stores the same record.
    AddUser(User),
    DeleteUser {
        name: String,
    },
    SetPermissions(Permission),
    ClearPermissions {
        user: String,
        vhost: String,
    },
    /// A new vhost (empty but for the default exchanges).
    AddVhost(VHostDef),
    /// Deletes a vhost with its exchanges, queues (and their messages), bindings and
    /// permissions.
    DeleteVhost {
        name: String,
    },
    DeclareExchange {
        vhost: String,
        def: ExchangeDef,
    },
    DeleteExchange {
        vhost: String,
        name: String,
        if_unused: bool,
    },
    /// A new queue; its home node runs its actor, the others route to it.
    DeclareQueue {
        vhost: String,
        def: QueueDef,
    },
    /// Deletes the queue `name` if it is still the one with storage id `id` on
    /// `node` (a queue declared again since is another queue).
    DeleteQueue {
        vhost: String,
        name: String,
        node: String,
        id: u64,
    },
    Bind {
        vhost: String,
        binding: Binding,
    },
    Unbind {
        vhost: String,
        binding: Binding,
    },
}

impl From<AccessChange> for MetaCommand {
    fn from(change: AccessChange) -> Self {
        match change {
            AccessChange::AddUser(user) => MetaCommand::AddUser(user),
            AccessChange::DeleteUser { name } => MetaCommand::DeleteUser { name },
            AccessChange::SetPermissions(p) => MetaCommand::SetPermissions(p),
            AccessChange::ClearPermissions { user, vhost } => {
                MetaCommand::ClearPermissions { user, vhost }
            }
        }
    }
}

impl MetaCommand {
    /// The change of users or permissions this command is, if it is one.
    pub fn into_access_change(self) -> Result<AccessChange, Box<MetaCommand>> {
        match self {
            MetaCommand::AddUser(user) => Ok(AccessChange::AddUser(user)),
            MetaCommand::DeleteUser { name } => Ok(AccessChange::DeleteUser { name }),
            MetaCommand::SetPermissions(p) => Ok(AccessChange::SetPermissions(p)),
            MetaCommand::ClearPermissions { user, vhost } => {
                Ok(AccessChange::ClearPermissions { user, vhost })
            }
            other => Err(Box::new(other)),
        }
    }

    /// A short description for logs and errors.
    pub fn describe(&self) -> String {
        match self {
            MetaCommand::AddUser(u) => format!("add user '{}'", u.name),
            MetaCommand::DeleteUser { name } => format!("delete user '{name}'"),
            MetaCommand::SetPermissions(p) => format!("set permissions of '{}'", p.user),
            MetaCommand::ClearPermissions { user, .. } => format!("clear permissions of '{user}'"),
            MetaCommand::AddVhost(def) => format!("add vhost '{}'", def.name),
            MetaCommand::DeleteVhost { name } => format!("delete vhost '{name}'"),
            MetaCommand::DeclareExchange { def, .. } => format!("declare exchange '{}'", def.name),
            MetaCommand::DeleteExchange { name, .. } => format!("delete exchange '{name}'"),
            MetaCommand::DeclareQueue { def, .. } => format!("declare queue '{}'", def.name),
            MetaCommand::DeleteQueue { name, .. } => format!("delete queue '{name}'"),
            MetaCommand::Bind { binding, .. } => format!("bind '{}'", binding.source),
            MetaCommand::Unbind { binding, .. } => format!("unbind '{}'", binding.source),
        }
    }

    /// The vhost a command of exchanges, queues or bindings belongs to; `None` for
    /// users, permissions and vhosts themselves.
    pub fn vhost(&self) -> Option<&str> {
        match self {
            MetaCommand::AddVhost(_)
            | MetaCommand::DeleteVhost { .. }
            | MetaCommand::AddUser(_)
            | MetaCommand::DeleteUser { .. }
            | MetaCommand::SetPermissions(_)
            | MetaCommand::ClearPermissions { .. } => None,
            MetaCommand::DeclareExchange { vhost, .. }
            | MetaCommand::DeleteExchange { vhost, .. }
            | MetaCommand::DeclareQueue { vhost, .. }
            | MetaCommand::DeleteQueue { vhost, .. }
            | MetaCommand::Bind { vhost, .. }
            | MetaCommand::Unbind { vhost, .. } => Some(vhost),
        }
    }
}

/// A boxed future, so the traits below stay object-safe.
pub use crate::BoxFuture;

/// Where metadata changes go to be replicated; resolves once the change is
/// committed and applied on this node, with the result of applying it.
pub trait MetadataLog: Send + Sync + 'static {
    fn commit(&self, command: MetaCommand) -> BoxFuture<'_, Result<(), BrokerError>>;
}

/// Applies committed commands to this node's broker state.
pub trait MetadataApplier: Send + Sync + 'static {
    fn apply(&self, command: MetaCommand) -> BoxFuture<'_, Result<(), BrokerError>>;
}
