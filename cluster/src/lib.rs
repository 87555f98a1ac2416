//! warren-cluster: how Warren nodes and clients reach each other.
//!
//! - [`cookie`]: the shared secret, read from a file created on first start (as Erlang's).
//! - [`wire`]: the envelope that carries Warren's messages over ractor_cluster.
//! - [`protocol`]: the messages between a client handle and a node (requests,
//!   publishes, deliveries) and the actor message types that carry them.
//! - [`node_server`]: starting ractor_cluster's node server on an address and watching
//!   its sessions (so that a node notices a client that went away).
//! - [`connect`]: dialling a node from a client process and finding its gateway.
//! - [`members`]: the member list as one node sees it (a pure state machine: health
//!   by heartbeat silence, whom to dial and when).
//! - [`membership`]: the actor around it: seeds, hellos (the heartbeats), redials with
//!   backoff, `cluster status`, leave and forget.
//! - [`metadata`]: the metadata log's command ([`metadata::MetaCommand`]: changes of
//!   users, permissions, vhosts, exchanges, queues and bindings, in the encoding the
//!   logs on disk hold) and who applies it on a node.
//! - [`image`]: the metadata as a whole (what a snapshot carries) and how a node
//!   turns its state into an image's.
//! - [`raft_group`]: one Raft group's driver without I/O (pipelined readies,
//!   snapshots, compaction), whose effects a shell performs; [`log_store`]: its log
//!   in memory.
//! - [`raft_log`]: every group's Raft log in redb (the metadata's is group 0),
//!   snapshots included.
//! - [`replica`]: this node's member of every Raft group it runs (TiKV's `raft`),
//!   under one actor and one ticker, their messages batched per peer node: the
//!   metadata group (group 0: it forms or joins it, replicates metadata commands and
//!   applies them; the broker's change log) and any other group a state machine
//!   ([`replica::Machine`]) is opened for.
//! - [`placement`]: the nodes new queues may go to (members not down).
//! - [`queue_wire`]: what nodes say to each other about queues (publish, consume,
//!   settle, deliveries back) and the queue endpoint where they find each other's
//!   link listeners.
//! - [`link`]: queue links, the data plane between nodes (one TCP connection per
//!   client node and queue node, frames of many items, the cookie handshake);
//!   [`link_wire`]: the items and their layout in a frame.
//! - [`remote_queues`]: how this node reaches queues that live on other nodes.
//! - [`queue_endpoint`]: where other nodes reach this node's queues.
//! - `simulation` (tests only): a seeded deterministic simulation of the metadata
//!   group running the production driver, with Raft's safety invariants after every
//!   step.

#![deny(missing_docs)]

pub mod connect;
pub mod cookie;
pub mod image;
pub mod link;
pub mod link_wire;
pub mod log_store;
pub mod members;
pub mod membership;
pub mod metadata;
pub mod node_server;
pub mod placement;
pub mod protocol;
pub mod queue_endpoint;
pub mod queue_wire;
pub mod raft_group;
pub mod raft_log;
pub mod remote_queues;
pub mod replica;
pub mod wire;

#[cfg(test)]
mod simulation;

/// The process group every node's client gateway joins; a client finds it there.
pub const GATEWAY_GROUP: &str = "warren.gateway";

/// The process group of one node's gateway, where other nodes find it (the
/// management API asks it for its node's supervision tree).
pub fn gateway_group(node: &str) -> String {
    format!("{GATEWAY_GROUP}.{node}")
}
