//! [`QueueDef`]: a queue as the metadata log and storage know it, whatever its type.

use serde::{Deserialize, Serialize};

use crate::delivery::ChannelId;
use crate::message::FieldTable;

use super::kind::{KindError, QueueKind};

/// A queue as declared: what every node knows of it. Its type is in `arguments`
/// (`x-queue-type`); its home node runs it, the others reach it there.
///
/// Its serde form is the one every earlier Warren wrote (the metadata log, snapshots,
/// the wire): [`QueueDef::replicas`] is not part of it, and travels beside it (the
/// metadata log's command for a replicated queue; [`QueueDef::encode_stored`]).
/// New fields go the same way.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueueDef {
    /// The queue's name, unique in its vhost.
    pub name: String,
    /// Its storage id on its home node (its messages are keyed by it there); a queue
    /// declared again under the same name gets another id, so a late command for the
    /// old queue cannot touch the new one.
    pub id: u64,
    /// The node that runs it.
    pub node: String,
    /// Survives a restart of its node.
    pub durable: bool,
    /// For an exclusive queue: the connection (a channel id on the home node) that
    /// owns it. Only that connection may use it, and it goes when the connection does.
    pub owner: Option<ChannelId>,
    /// Deleted when its last consumer goes (if it ever had one).
    pub auto_delete: bool,
    /// The declare arguments, as declared (`x-` arguments and `x-queue-type`).
    pub arguments: FieldTable,
    /// For a replicated queue (quorum / mirrored): the nodes that hold a replica,
    /// picked at declaration, its home node first. Empty for the other types.
    #[serde(skip)]
    pub replicas: Vec<String>,
    /// For a replicated queue whose members changed since its declaration
    /// (`warren queue add-member`...): the replicas it was declared with, its Raft
    /// group's first members (a new member starts from them and replays the changes).
    /// Empty while the members are the first ones.
    #[serde(skip)]
    pub founders: Vec<String>,
}

#[cfg(test)]
impl QueueDef {
    /// A durable queue `name` declared on `n1`, with these replicas (tests).
    pub(crate) fn durable_on_n1(name: &str, replicas: &[&str]) -> QueueDef {
        QueueDef {
            name: name.into(),
            id: 1,
            node: "n1".into(),
            durable: true,
            owner: None,
            auto_delete: false,
            arguments: crate::message::FieldTable::new(),
            replicas: replicas.iter().map(|r| r.to_string()).collect(),
            founders: Vec::new(),
        }
    }
}

impl QueueDef {
    /// The definition as the node's queue table stores it: the serde form, then its
    /// replicas, then (when its members changed) its founders.
    pub fn encode_stored(&self) -> Result<Vec<u8>, warren_storage::codec::EncodeError> {
        if self.founders.is_empty() {
            warren_storage::codec::encode(&(self, &self.replicas))
        } else {
            warren_storage::codec::encode(&(self, &self.replicas, &self.founders))
        }
    }

    /// A stored definition: [`encode_stored`](Self::encode_stored)'s forms, or the
    /// serde form alone (written before replicas existed).
    pub fn decode_stored(bytes: &[u8]) -> Result<QueueDef, warren_storage::codec::DecodeError> {
        use warren_storage::codec::decode;
        if let Ok((def, replicas, founders)) = decode::<(QueueDef, Vec<String>, Vec<String>)>(bytes)
        {
            return Ok(QueueDef {
                replicas,
                founders,
                ..def
            });
        }
        match decode::<(QueueDef, Vec<String>)>(bytes) {
            Ok((def, replicas)) => Ok(QueueDef { replicas, ..def }),
            Err(e) => decode::<QueueDef>(bytes).map_err(|_| e),
        }
    }

    /// A replicated queue's Raft group's first members.
    pub fn founders(&self) -> &[String] {
        if self.founders.is_empty() {
            &self.replicas
        } else {
            &self.founders
        }
    }

    /// The queue's type (`x-queue-type`; classic when absent).
    pub fn kind(&self) -> Result<QueueKind, KindError> {
        QueueKind::of(&self.arguments)
    }

    /// Whether the queue dies with its home node's process: transient or exclusive.
    pub fn dies_with_node(&self) -> bool {
        !self.durable || self.owner.is_some()
    }

    /// Whether `channel` of `node` may use the queue: anyone for a shared queue, only
    /// the owning connection for an exclusive one. Channel ids are per node, so the
    /// owner is known only on the home node.
    pub fn usable_by(&self, node: &str, channel: ChannelId) -> bool {
        match self.owner {
            None => true,
            Some(owner) => owner == channel && node == self.node,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_definition_stored_before_replicas_existed_still_reads() {
        #[derive(Serialize)]
        struct Old<'a> {
            name: &'a str,
            id: u64,
            node: &'a str,
            durable: bool,
            owner: Option<ChannelId>,
            auto_delete: bool,
            arguments: FieldTable,
        }
        let old = Old {
            name: "q",
            id: 7,
            node: "n1",
            durable: true,
            owner: None,
            auto_delete: false,
            arguments: FieldTable::new(),
        };
        let bytes = warren_storage::codec::encode(&old).unwrap();
        let def = QueueDef::decode_stored(&bytes).unwrap();
        assert_eq!((def.name.as_str(), def.id, def.durable), ("q", 7, true));
        assert!(def.replicas.is_empty());
        // The serde form is still the old one.
        assert_eq!(warren_storage::codec::encode(&def).unwrap(), bytes);
        let mut new = def.clone();
        new.replicas = vec!["n1".into(), "n2".into()];
        let bytes = new.encode_stored().unwrap();
        assert_eq!(QueueDef::decode_stored(&bytes).unwrap(), new);
        new.founders = vec!["n1".into(), "n3".into()];
        let bytes = new.encode_stored().unwrap();
        assert_eq!(QueueDef::decode_stored(&bytes).unwrap(), new);
    }
}
