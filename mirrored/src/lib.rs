//! Mirrored queues (RabbitMQ's quorum queues): a queue replicated by a Raft group of
//! its own on the node's replica (`warren-cluster`'s multi-group layer).
//!
//! Every node that holds a replica runs the queue's group; the node that leads the
//! group in Raft runs the whole queue: the classic queue's shell and state as a
//! replicated queue's leader ([`warren_actors::classic::QueueLog`]). When that node
//! dies or is cut off, the group elects another, which serves from its copy; every
//! node sends what is for the queue to the node the group's latest `Lead` names. Every op its
//! core applies goes to the group's log; a message's write is the entry that carries
//! its enqueue, so a publish is confirmed once a majority of the replicas has fsynced
//! it. Every replica applies the committed entries to its copy of the core (the
//! classic core is deterministic), with the bodies: the log is the queue's storage.
//! A new leader serves from that copy. Entries carry the epoch of the leader
//! that made them: once a new leader has started, a late entry of the one before is
//! refused on every replica alike.
//!
//! | file | concern |
//! | --- | --- |
//! | `machine.rs` | [`MirrorCommand`]: the log's entries; the group's machine over the copy |
//! | `log.rs` | `RaftLog`: the leader's log, on the queue's group |
//! | `member.rs` | a replica's supervised actor: runs the group, and the leader while this node leads |
//! | `handle.rs` | `MirroredQueue`: the handle that sends everything to the serving node |
//! | `queue_type.rs` | [`Mirrored`]: the queue type: validation, placement, hosting |

mod handle;
mod log;
mod machine;
mod member;
mod queue_type;

#[cfg(test)]
mod conformance_tests;
#[cfg(test)]
mod quorum_tests;

pub use machine::MirrorCommand;
pub use queue_type::{
    group_of, Mirrored, DEAD_LETTER_STRATEGY_ARG, DEFAULT_DELIVERY_LIMIT, DEFAULT_GROUP_SIZE,
    DELIVERY_LIMIT_ARG, GROUP_SIZE_ARG,
};
