//! Raft messages between nodes as actor messages: each names its group, the messages
//! of one handling to one node travel as one cast (whatever their groups), a cast
//! carries at most [`MAX_CAST`] bytes (a node pair's session dies on a frame over
//! 16 MiB), and a message bigger than that (a snapshot for a node far behind or new) is
//! cut into [`Part`]s that the receiver puts back together ([`Assembly`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The most bytes of Raft messages one cast carries.
pub(super) const MAX_CAST: usize = 4 << 20;

/// Raft messages from one node, each with its group.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RaftBatch {
    /// The sending node's name (a member may hear from one whose joining it has not
    /// applied yet, and must be able to answer).
    pub sender: String,
    /// (group, protobuf-encoded message), in the order sent.
    #[serde(with = "message_bytes")]
    pub messages: Vec<(u64, Vec<u8>)>,
    /// Groups whose leader on the sending node stops ticking, and asks its follower
    /// here to do the same (see `Quiet`).
    pub quiet: Vec<Quiet>,
}

/// A leader's word that its group is settled (every member holds and has committed
/// every entry, nothing is in flight): the follower may stop ticking until anything
/// happens in the group. It does only if it holds the same: same term, same leader,
/// last and committed index both at `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quiet {
    /// The group.
    pub group: u64,
    /// The leader's term.
    pub term: u64,
    /// The leader's Raft id.
    pub leader: u64,
    /// The last (and committed) index.
    pub index: u64,
}

/// A piece of one big Raft message.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Part {
    /// The sending replica's incarnation (a number it picks when it starts).
    pub incarnation: u64,
    /// The sender's node name.
    pub sender: String,
    /// The Raft group the message belongs to.
    pub group: u64,
    /// Which of the sender's big messages it belongs to.
    pub seq: u64,
    /// Its place among the message's parts.
    pub index: u32,
    /// How many parts the message has.
    pub count: u32,
    /// Its bytes.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// Raft messages as byte strings, not sequences of bytes: the same encoding (a length,
/// then the bytes), written and read in one copy instead of byte by byte (which cost a
/// tenth of a busy mirrored queue's CPU on each node).
mod message_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub fn serialize<S: Serializer>(messages: &[(u64, Vec<u8>)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(messages.iter().map(|(g, m)| (g, Bytes::new(m))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(u64, Vec<u8>)>, D::Error> {
        let messages: Vec<(u64, ByteBuf)> = Deserialize::deserialize(d)?;
        Ok(messages
            .into_iter()
            .map(|(g, m)| (g, m.into_vec()))
            .collect())
    }
}

/// What goes to a peer in one cast.
#[derive(Debug)]
pub(super) enum Cast {
    /// Whole messages, each with its group.
    Batch(Vec<(u64, Vec<u8>)>),
    /// A piece of a big one.
    Part(Part),
}

/// The casts that carry `messages` (encoded, each with its group, to one node, in
/// order) from the replica `sender` in its `incarnation`; `seq` numbers big messages.
pub(super) fn casts(
    messages: Vec<(u64, Vec<u8>)>,
    (incarnation, sender): (u64, &str),
    seq: &mut u64,
) -> Vec<Cast> {
    let mut out = Vec::new();
    let (mut batch, mut size) = (Vec::new(), 0);
    for (group, message) in messages {
        if message.len() > MAX_CAST {
            if !batch.is_empty() {
                out.push(Cast::Batch(std::mem::take(&mut batch)));
                size = 0;
            }
            *seq += 1;
            let count = message.len().div_ceil(MAX_CAST) as u32;
            for (index, piece) in message.chunks(MAX_CAST).enumerate() {
                out.push(Cast::Part(Part {
                    incarnation,
                    sender: sender.to_string(),
                    group,
                    seq: *seq,
                    index: index as u32,
                    count,
                    bytes: piece.to_vec(),
                }));
            }
            continue;
        }
        if size + message.len() > MAX_CAST && !batch.is_empty() {
            out.push(Cast::Batch(std::mem::take(&mut batch)));
            size = 0;
        }
        size += message.len();
        batch.push((group, message));
    }
    if !batch.is_empty() {
        out.push(Cast::Batch(batch));
    }
    out
}

/// Big messages being put back together, one per sender and group (a newer one, or
/// one from a new incarnation of the sender, replaces an unfinished older one: Raft
/// sends a snapshot again if one is lost).
#[derive(Default)]
pub(super) struct Assembly {
    /// By sender and group: the sender's incarnation, the message's number and its
    /// parts so far.
    pending: BTreeMap<(String, u64), (u64, u64, Pieces)>,
}

/// The parts of one message, by place; `None` until it arrives.
type Pieces = Vec<Option<Vec<u8>>>;

impl Assembly {
    /// Takes a part; returns the whole message once every part arrived.
    pub(super) fn add(&mut self, part: Part) -> Option<Vec<u8>> {
        if part.count == 0 || part.index >= part.count {
            return None;
        }
        let key = (part.sender.clone(), part.group);
        let slot = self
            .pending
            .entry(key.clone())
            .or_insert_with(|| (part.incarnation, part.seq, Vec::new()));
        let same = slot.0 == part.incarnation && slot.1 == part.seq;
        if !same || slot.2.len() != part.count as usize {
            if slot.0 == part.incarnation && part.seq < slot.1 {
                return None;
            }
            *slot = (part.incarnation, part.seq, vec![None; part.count as usize]);
        }
        slot.2[part.index as usize] = Some(part.bytes);
        if slot.2.iter().any(Option::is_none) {
            return None;
        }
        let (_, _, pieces) = self.pending.remove(&key)?;
        Some(pieces.into_iter().flatten().flatten().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_encode_as_before_as_byte_strings() {
        // The shapes before: byte vectors as sequences of bytes.
        #[derive(Serialize)]
        struct BatchBefore {
            sender: String,
            messages: Vec<(u64, Vec<u8>)>,
            quiet: Vec<Quiet>,
        }
        #[derive(Serialize)]
        struct PartBefore {
            incarnation: u64,
            sender: String,
            group: u64,
            seq: u64,
            index: u32,
            count: u32,
            bytes: Vec<u8>,
        }
        let messages = vec![
            (3, vec![1u8, 2, 250, 255]),
            (9, Vec::new()),
            (1, vec![7; 300]),
        ];
        let quiet = vec![Quiet {
            group: 3,
            term: 2,
            leader: 5,
            index: 40,
        }];
        let batch = RaftBatch {
            sender: "n1".into(),
            messages: messages.clone(),
            quiet: quiet.clone(),
        };
        let before = BatchBefore {
            sender: "n1".into(),
            messages,
            quiet,
        };
        fn encode<T: Serialize>(v: &T) -> Vec<u8> {
            warren_storage::codec::encode(v).unwrap()
        }
        let bytes = encode(&batch);
        assert_eq!(bytes, encode(&before));
        let back: RaftBatch = warren_storage::codec::decode(&bytes).unwrap();
        assert_eq!(back.messages, batch.messages);
        let part = Part {
            incarnation: 1,
            sender: "n2".into(),
            group: 4,
            seq: 5,
            index: 0,
            count: 2,
            bytes: vec![0, 1, 2, 255],
        };
        let part_before = PartBefore {
            incarnation: 1,
            sender: "n2".into(),
            group: 4,
            seq: 5,
            index: 0,
            count: 2,
            bytes: vec![0, 1, 2, 255],
        };
        assert_eq!(encode(&part), encode(&part_before));
    }

    #[test]
    fn small_messages_share_casts_and_big_ones_are_cut_and_put_back() {
        let small = (0, vec![1u8; 1000]);
        let big: Vec<u8> = (0..(2 * MAX_CAST + 5)).map(|i| i as u8).collect();
        let big = (3, big);
        let mut seq = 0;
        let out = casts(
            vec![small.clone(), small.clone(), big.clone(), small.clone()],
            (7, "n7"),
            &mut seq,
        );
        let kinds: Vec<&str> = out
            .iter()
            .map(|c| match c {
                Cast::Batch(_) => "batch",
                Cast::Part(_) => "part",
            })
            .collect();
        assert_eq!(kinds, ["batch", "part", "part", "part", "batch"]);
        let mut assembly = Assembly::default();
        let mut whole = None;
        // Parts arrive in any order.
        let mut parts: Vec<Part> = out
            .into_iter()
            .filter_map(|c| match c {
                Cast::Part(p) => Some(p),
                Cast::Batch(_) => None,
            })
            .collect();
        parts.reverse();
        for p in parts {
            assert!(whole.is_none());
            whole = assembly.add(p);
        }
        assert_eq!(whole.unwrap(), big.1);
    }

    #[test]
    fn casts_stay_under_the_limit() {
        let message = (0, vec![0u8; MAX_CAST / 3 + 1]);
        let mut seq = 0;
        for cast in casts(vec![message; 10], (1, "n1"), &mut seq) {
            match cast {
                Cast::Batch(b) => {
                    assert!(b.iter().map(|(_, m)| m.len()).sum::<usize>() <= MAX_CAST)
                }
                Cast::Part(_) => panic!("no message is big"),
            }
        }
    }

    #[test]
    fn a_newer_big_message_replaces_an_unfinished_one() {
        let mut assembly = Assembly::default();
        let part = |seq, index, count| Part {
            incarnation: 1,
            sender: "n1".into(),
            group: 0,
            seq,
            index,
            count,
            bytes: vec![seq as u8],
        };
        assert!(assembly.add(part(1, 0, 2)).is_none());
        assert!(assembly.add(part(2, 0, 2)).is_none());
        assert!(assembly.add(part(1, 1, 2)).is_none(), "the old one is gone");
        assert_eq!(assembly.add(part(2, 1, 2)).unwrap(), vec![2, 2]);
        assert!(assembly.add(part(3, 5, 2)).is_none(), "a part out of range");
        // The sender started again: its numbers start again too.
        assert!(assembly.add(part(9, 0, 2)).is_none());
        let again = Part {
            incarnation: 2,
            ..part(1, 0, 2)
        };
        assert!(assembly.add(again.clone()).is_none());
        let last = Part {
            index: 1,
            bytes: vec![5],
            ..again
        };
        assert_eq!(assembly.add(last).unwrap(), vec![1, 5]);
    }
}
