//! Warren: a distributed message broker on supervised actors.
//!
//! This package holds the node assembly and the user's entry points:
//! - [`client`]: the Rust client handle (connect, declare, bind, publish with confirms,
//!   consume with acks) that talks to a node over the cluster transport.
//! - [`node`]: one node: its configuration, its root supervisor, its gateway and the
//!   sessions that serve client handles.
//! - `main.rs` and [`cli`]: the `warren` command; [`conn`]: the flags its client
//!   commands and the shell take to reach a node.
//! - [`shell`]: the debug shell; [`listing`]: listings as text and JSON.
//! - [`process`]: settings of the process a node or a client program runs in
//!   (transparent huge pages off).
//!
//! The benchmark programs are not here: they are the `warren-bench` binary of the
//! workspace crate `bench/`, which drives a node through [`client`] or over AMQP.
//!
//! The broker's parts live in the workspace crates: `warren-supervisor` (supervision),
//! `warren-storage` (redb), `warren-resources` (alarms, the queues' memory budget),
//! `warren-access` (users, permissions, vhost records), `warren-actors` (exchanges,
//! queues, vhosts) and `warren-cluster` (transport, membership, roles, the metadata
//! log).

pub mod cli;
pub mod client;
pub mod conn;
pub mod listing;
pub mod node;
pub mod process;
pub mod shell;
