//! Permissions: three regular expressions per (user, vhost), matched against the whole
//! resource name (RabbitMQ's model).
//!
//! `configure` covers declaring and deleting queues and exchanges, `write` publishing
//! to an exchange and binding to a queue, `read` consuming, getting, purging and
//! binding from an exchange.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One user's permissions in one vhost, as stored and replicated (the patterns as
/// written; they are compiled anchored when applied).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    /// The user they are given to.
    pub user: String,
    /// The vhost they hold in.
    pub vhost: String,
    /// Which queues and exchanges the user may declare and delete.
    pub configure: String,
    /// Which exchanges the user may publish to and which queues bind to.
    pub write: String,
    /// Which queues the user may consume from and which exchanges bind from.
    pub read: String,
}

/// The three kinds of access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Declare or delete.
    Configure,
    /// Publish to, bind to.
    Write,
    /// Consume, get, purge, bind from.
    Read,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Configure => "configure",
            Access::Write => "write",
            Access::Read => "read",
        })
    }
}

/// A resource an access is checked against.
#[derive(Clone, Copy, Debug)]
pub enum Resource<'a> {
    /// A queue, by name.
    Queue(&'a str),
    /// An exchange, by name (the default exchange is `amq.default`).
    Exchange(&'a str),
}

/// What kind of resource a refusal was about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceKind {
    /// A queue.
    Queue,
    /// An exchange.
    Exchange,
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResourceKind::Queue => "queue",
            ResourceKind::Exchange => "exchange",
        })
    }
}

impl Resource<'_> {
    /// The resource's name.
    pub fn name(&self) -> &str {
        match self {
            Resource::Queue(n) | Resource::Exchange(n) => n,
        }
    }

    /// Queue or exchange.
    pub fn kind(&self) -> ResourceKind {
        match self {
            Resource::Queue(_) => ResourceKind::Queue,
            Resource::Exchange(_) => ResourceKind::Exchange,
        }
    }
}
