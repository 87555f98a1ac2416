//! warren-access: who may connect to a node, and what they may do in which vhost
//! (RabbitMQ's model of users, permissions and virtual hosts).
//!
//! Layout:
//! - `user`: a user record and its salted password hash ([`User`], [`DEFAULT_USER`]).
//! - `permission`: the three regular expressions of a user in a vhost ([`Permission`])
//!   and what they are checked against ([`Access`], [`Resource`]).
//! - `vhost`: a vhost's record and the rules for its name ([`VHostDef`],
//!   [`check_vhost_name`]).
//! - `control`: the node's registry of users and permissions ([`AccessControl`], with
//!   the permissions compiled for checks) and the changes it applies
//!   ([`AccessChange`]).
//! - `error`: why a check or a change was refused ([`AccessError`]).
//!
//! Dependencies inside the crate point one way: `control` uses every other module,
//! `vhost` uses `error`, `error` uses `permission`.
//!
//! The registry keeps its records in the node's store but has no log: a change is
//! first prepared against what this node knows (`prepare_*`, which checks the request
//! and builds the complete record), then applied ([`AccessControl::apply`]), at once
//! or, in a cluster, by every node once the node assembly has committed it to the
//! metadata log. Applying checks again, so every node reaches the same answer.

#![deny(missing_docs)]

mod control;
mod error;
mod permission;
mod user;
mod vhost;

pub use control::{AccessChange, AccessControl};
pub use error::{AccessError, VhostNameProblem};
pub use permission::{Access, Permission, Resource, ResourceKind};
pub use user::{
    HashError, LegacyUser, User, DEFAULT_USER, RABBIT_SHA256, RABBIT_SHA512, WARREN_SHA256,
};
pub use vhost::{check_vhost_name, VHostDef, DEFAULT_VHOST, MAX_VHOST_NAME};
