//! [`QueueLog`]: the classic queue's shell as a replicated queue's leader. The
//! replicated queue types (the mirrored queue) run a classic queue on the leader
//! whose state logs every op its core applies, and whose messages are stored in the
//! log instead of the node's queue tables:
//!
//! - at start, the state comes from the log ([`QueueLog::lead`]), not from storage;
//! - after each step the ops applied go to the log ([`QueueLog::append`]), handed
//!   over in step order; a message's write is the append that carries its enqueue,
//!   answered (`Command::Stored`, then its confirm) once the log has committed it;
//! - bodies not in memory are read back from the log ([`QueueLog::bodies`]);
//! - an append that fails (no majority within the bound, another leader started)
//!   ends this state: its publishers get no confirm, its consumers a consumer cancel
//!   notification, and the queue leads again from its log ([`QueueLog::lead`]), or
//!   stops if another node serves it now;
//! - a new leader starts with every channel of the last one closed (what they held
//!   is redelivered).

use crate::error::BrokerError;
use crate::message::SharedMessage;
use crate::BoxFuture;

use super::machine::{Op, QueueState, Seq};

/// Where a replicated queue's leader logs what its core applied (see the module
/// documentation).
pub trait QueueLog: Send + Sync + 'static {
    /// The state to serve from at `now` ([`QueueState::led`]), once everything logged
    /// before (by this leader's predecessors too) is applied here; every append after
    /// it belongs to this leader, and appends of an earlier one are refused.
    fn lead(&self, now: u64) -> BoxFuture<'static, Result<QueueState, BrokerError>>;

    /// Appends `ops` (each with its time): handed to the log before it returns, so
    /// appends keep the order they were made in; resolves once they are committed.
    fn append(&self, ops: Vec<(Op, u64)>) -> BoxFuture<'static, Result<(), BrokerError>>;

    /// The bodies of messages in the queue, from the log, and the seqs it lacks.
    /// Reads the node's store: called on a blocking thread.
    fn bodies(&self, seqs: &[Seq]) -> (Vec<(Seq, SharedMessage)>, Vec<Seq>);
}
