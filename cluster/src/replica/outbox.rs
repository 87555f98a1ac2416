//! Raft messages on their way out: every group's messages of one handling, gathered
//! per peer node and sent when the handling ends, as few casts as
//! [`transport::casts`] allows (one, unless they exceed its size limit). A node pair
//! carries all its groups' messages over its one session this way: a thousand
//! groups' heartbeats to a peer are one cast, not a thousand.

use std::collections::BTreeMap;

use raft::prelude::Message;

use super::transport::{self, Cast, RaftBatch};
use super::{replica_of, ReplicaMsg};
use crate::raft_group::{GroupId, RaftGroup};

/// Messages waiting for the end of the handling, and what was sent so far.
#[derive(Default)]
pub(super) struct Outbox {
    /// By peer node: (group, protobuf-encoded message), in the order sent.
    by_peer: BTreeMap<String, Vec<(GroupId, Vec<u8>)>>,
    /// Numbers big messages (see [`transport::Part`]).
    big_seq: u64,
    /// Raft messages sent since the replica started.
    pub messages: u64,
    /// Casts that carried them.
    pub casts: u64,
}

impl Outbox {
    /// Takes `group`'s messages, addressed by Raft id (its record names the nodes).
    pub fn add(&mut self, group: &RaftGroup, messages: Vec<Message>) {
        for m in messages {
            let Some(name) = group.record.names.get(&m.to) else {
                tracing::debug!(
                    group = group.id,
                    to = m.to,
                    "a raft message to nobody known"
                );
                continue;
            };
            match protobuf::Message::write_to_bytes(&m) {
                Ok(bytes) => self
                    .by_peer
                    .entry(name.clone())
                    .or_default()
                    .push((group.id, bytes)),
                Err(e) => tracing::warn!(group = group.id, "a raft message did not encode: {e}"),
            }
        }
    }

    /// Sends what was gathered, from the replica `sender` in its `incarnation`.
    pub fn flush(&mut self, sender: &str, incarnation: u64) {
        for (name, batch) in std::mem::take(&mut self.by_peer) {
            let Some(peer) = replica_of(&name) else {
                continue;
            };
            self.messages += batch.len() as u64;
            for cast in transport::casts(batch, (incarnation, sender), &mut self.big_seq) {
                self.casts += 1;
                let _ = match cast {
                    Cast::Batch(messages) => peer.cast(ReplicaMsg::Raft(
                        RaftBatch {
                            sender: sender.to_string(),
                            messages,
                        }
                        .into(),
                    )),
                    Cast::Part(p) => peer.cast(ReplicaMsg::RaftPart(p.into())),
                };
            }
        }
    }
}
