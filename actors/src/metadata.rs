//! Metadata changes as commands: what a cluster replicates through its metadata log.
//!
//! A change of the broker's replicated metadata is a [`MetaCommand`]. Today that is
//! users and permissions; exchanges, queues and bindings join them with the cluster's
//! location transparency (they need a queue's home node first). On a single node the command is applied at once; in a
//! cluster it goes through the replicated log ([`MetadataLog`], implemented by
//! `warren-cluster` with Raft), and every node applies the same commands in the same
//! order. Applying is deterministic: whatever a command checks (does the user exist)
//! depends only on earlier commands, so every node reaches the same answer.

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::access::{Permission, User};
use crate::error::BrokerError;

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
}

impl MetaCommand {
    /// A short description for logs and errors.
    pub fn describe(&self) -> String {
        match self {
            MetaCommand::AddUser(u) => format!("add user '{}'", u.name),
            MetaCommand::DeleteUser { name } => format!("delete user '{name}'"),
            MetaCommand::SetPermissions(p) => format!("set permissions of '{}'", p.user),
            MetaCommand::ClearPermissions { user, .. } => format!("clear permissions of '{user}'"),
        }
    }
}

/// A boxed future, so the traits below stay object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where metadata changes go to be replicated; resolves once the change is
/// committed and applied on this node, with the result of applying it.
pub trait MetadataLog: Send + Sync + 'static {
    fn commit(&self, command: MetaCommand) -> BoxFuture<'_, Result<(), BrokerError>>;
}

/// Applies committed commands to this node's broker state.
pub trait MetadataApplier: Send + Sync + 'static {
    fn apply(&self, command: MetaCommand) -> BoxFuture<'_, Result<(), BrokerError>>;
}
