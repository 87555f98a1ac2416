//! A vhost's record and the rules for its name.
//!
//! A vhost is a namespace of exchanges, queues, bindings and permissions: the record
//! is what storage and the metadata log know of it; running it is warren-actors'.

use serde::{Deserialize, Serialize};

use crate::error::{AccessError, VhostNameProblem};

/// The vhost every node has (it cannot be deleted).
pub const DEFAULT_VHOST: &str = "/";
/// Longest vhost name accepted (RabbitMQ's limit for names is 255 bytes).
pub const MAX_VHOST_NAME: usize = 255;

/// A vhost as the metadata log and storage know it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VHostDef {
    /// Its name, unique on the node (see [`check_vhost_name`]).
    pub name: String,
    /// Free text for operators.
    pub description: String,
}

/// Checks a name for a new vhost.
pub fn check_vhost_name(name: &str) -> Result<(), AccessError> {
    let problem = if name.is_empty() {
        VhostNameProblem::Empty
    } else if name.len() > MAX_VHOST_NAME {
        VhostNameProblem::TooLong
    } else if name.chars().any(|c| c.is_control()) {
        VhostNameProblem::ControlCharacters
    } else {
        return Ok(());
    };
    Err(AccessError::InvalidVhostName {
        name: name.to_string(),
        problem,
    })
}
