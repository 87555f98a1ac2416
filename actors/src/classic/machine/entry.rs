//! One message in the queue, in two halves: its [`Record`] in the replicated core
//! (where it is, what it is), and its [`Body`] in the local part (where this node keeps
//! its bytes). And [`IndexRecord`], the record as stored next to the body.

use serde::{Deserialize, Serialize};

use crate::message::SharedMessage;

use super::command::ChannelId;
use super::consumers::ConsumerId;
use super::effects::DeadLetterReason;

/// Where a message is in its life in the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Place {
    /// Waiting for a consumer, in the ready order.
    Ready,
    /// Given to `channel` (to `consumer`, or to a `basic.get` when `None`) and not yet
    /// settled. A `no_ack` one is settled as soon as it has gone out.
    Unacked {
        channel: ChannelId,
        consumer: Option<ConsumerId>,
        no_ack: bool,
    },
    /// Left the queue for its dead-letter exchange; stays until its targets hold it.
    DeadLettering(DeadLetterReason),
}

/// A message as the replicated core knows it: small, always in memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
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
}

impl Record {
    pub fn is_ready(&self) -> bool {
        matches!(self.place, Place::Ready)
    }

    pub fn is_expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The metadata to store next to the body.
    pub fn index(&self) -> IndexRecord {
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

/// The local part's mirror of where the core has a message, kept by the core's outs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Held {
    /// Ready: counts in the window.
    Ready,
    /// Given to a channel (sent, or waiting for its body to be sent).
    Out,
    /// Leaving for the dead-letter exchange.
    Leaving(DeadLetterReason),
}

/// Where this node keeps a message's bytes.
#[derive(Clone, Debug)]
pub(crate) struct Body {
    /// The body; `None` only when `storage == Stored` (paged out).
    pub message: Option<SharedMessage>,
    pub size: u64,
    /// The record's priority (the order of loads ahead).
    pub priority: u8,
    pub held: Held,
    pub storage: Storage,
    /// `Effect::LoadBodies` asked for it.
    pub loading: bool,
    /// A ready body that leaves memory when its write is confirmed.
    pub page_out: bool,
    /// Given to a channel and not sent yet: its delivery waits for it.
    pub awaited: bool,
}

impl Body {
    pub fn is_ready(&self) -> bool {
        self.held == Held::Ready
    }

    /// Whether it waits in storage for a load ahead (member of the paged set).
    pub fn is_paged(&self) -> bool {
        self.is_ready() && self.message.is_none() && !self.loading
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
    /// AMQP's redelivered flag as it was when stored (everything recovered is
    /// delivered redelivered anyway).
    pub redelivered: bool,
    /// Delivery mode 2: recovered after a restart. Transient messages are written only
    /// to leave memory and are dropped at recovery.
    pub persistent: bool,
}
