//! One message in the queue: small metadata, always in memory, and the body, in
//! memory only inside the window. And [`IndexRecord`], the metadata as stored.

use serde::{Deserialize, Serialize};

use crate::message::SharedMessage;

use super::command::ChannelId;
use super::consumers::ConsumerId;
use super::effects::DeadLetterReason;

/// Where a message is in its life in the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// Waiting for a consumer, in the ready order.
    Ready,
    /// Delivered to `channel` (by `consumer`, or by `basic.get` when `None`) and not
    /// yet acked.
    Unacked {
        channel: ChannelId,
        consumer: Option<ConsumerId>,
    },
    /// Left the queue; waits for its body to be dead-lettered.
    DeadLettering(DeadLetterReason),
}

/// How far the message's write has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Storage {
    /// Only in memory.
    NotStored,
    /// `Effect::Store` emitted, `Command::Stored` not yet received.
    Writing,
    /// In storage: the body may leave memory.
    Stored,
}

/// A message's metadata and, inside the window, its body.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// The body; `None` only when `storage == Stored` (paged out).
    pub body: Option<SharedMessage>,
    /// Body size in bytes (what max-length-bytes and the window count).
    pub size: u64,
    /// When the message expires (ms since the epoch), if it has a TTL.
    pub expires_at: Option<u64>,
    pub place: Place,
    /// How many times it returned to the queue (requeue, channel down).
    pub delivery_count: u32,
    /// Its effective priority (0 in a queue without priorities).
    pub priority: u8,
    /// Set when it returns to the queue (and for everything recovered).
    pub redelivered: bool,
    /// The publisher asked for persistence (delivery mode 2).
    pub persistent: bool,
    pub storage: Storage,
    /// `Effect::LoadBodies` asked for its body.
    pub loading: bool,
    /// Ready body that leaves memory when its write is confirmed.
    pub page_out: bool,
}

impl Entry {
    pub fn is_ready(&self) -> bool {
        matches!(self.place, Place::Ready)
    }

    /// Whether it waits in storage for a load to be asked (member of the paged set).
    pub fn is_paged(&self) -> bool {
        self.is_ready() && self.body.is_none() && !self.loading
    }

    pub fn is_expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The metadata to store next to the body.
    pub fn record(&self) -> IndexRecord {
        IndexRecord {
            size: self.size,
            priority: self.priority,
            expires_at: self.expires_at,
            delivery_count: self.delivery_count,
            redelivered: self.redelivered,
            persistent: self.persistent,
        }
    }
}

/// A message's metadata as stored next to its body, read for every message at
/// recovery (bodies load on demand).
///
/// The death history is not here: it travels in the body's `x-death` header, and a
/// message is only ever dead-lettered with its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexRecord {
    /// Body size in bytes.
    pub size: u64,
    /// Effective priority.
    pub priority: u8,
    /// Expiry deadline, ms since the epoch.
    pub expires_at: Option<u64>,
    /// Returns to the queue so far (kept current by `Effect::UpdateIndex` on queues
    /// with a delivery limit).
    pub delivery_count: u32,
    pub redelivered: bool,
    /// Delivery mode 2: recovered after a restart. Transient messages are written only
    /// to leave memory and are dropped at recovery.
    pub persistent: bool,
}
