//! What a snapshot of the metadata log carries ([`SnapshotData`], the `data` of
//! Raft's snapshot), and when a replica takes one.
//!
//! A snapshot stands for every entry up to its index: the group's state as a whole
//! (its machine's image: for the metadata, the [commands that build it](crate::image)),
//! who is who in the group, and the proposals applied lately (so that a node starting
//! from the snapshot skips a proposal applied twice as the others do). It is versioned:
//! a node refuses a snapshot of another format rather than misread it.
//!
//! A mirrored queue's state names the log entries that hold its messages' bodies
//! (bodies are stored once, in the log); a snapshot sent to a member carries those
//! entries with it ([`with_entries`]), and the member stores them as its log behind
//! the snapshot ([`take_entries`]). A stored snapshot never holds them.

use std::collections::BTreeMap;

use protobuf::Message as _;
use raft::prelude::Entry;
use serde::{Deserialize, Serialize};

/// The format of [`SnapshotData`] this build writes and reads.
/// (Format 1, before groups other than the metadata, held the metadata image in place
/// of `state`; format 2 had no `log`, and still reads.)
pub(crate) const SNAPSHOT_FORMAT: u32 = 3;

/// By default a replica takes a snapshot (and compacts its log) once this many
/// entries were applied since the last one.
pub const SNAPSHOT_EVERY: u64 = 8192;

/// The content of a group's snapshot.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SnapshotData {
    /// [`SNAPSHOT_FORMAT`] when written.
    pub format: u32,
    /// Raft id -> member name, for every member the log named.
    pub names: BTreeMap<u64, String>,
    /// The voters the group was formed with.
    pub base_voters: Vec<u64>,
    /// The proposals applied lately, as (index, origin, id).
    pub recent: Vec<(u64, String, u64)>,
    /// The machine's image, encoded by its applier (see [`super::machine::Machine`]).
    #[serde(with = "serde_bytes")]
    pub state: Vec<u8>,
    /// The log entries the state needs (protobuf-encoded, in order up to the
    /// snapshot's index), in a snapshot sent to a member; empty in a stored one.
    pub log: Vec<serde_bytes::ByteBuf>,
}

/// [`SnapshotData`] as format 2 wrote it.
#[derive(Deserialize)]
struct Format2 {
    format: u32,
    names: BTreeMap<u64, String>,
    base_voters: Vec<u64>,
    recent: Vec<(u64, String, u64)>,
    #[serde(with = "serde_bytes")]
    state: Vec<u8>,
}

/// The envelope: the format first, so that a node reads it whatever follows.
#[derive(Serialize, Deserialize)]
struct Envelope {
    format: u32,
    body: Vec<u8>,
}

impl SnapshotData {
    pub(crate) fn encode(&self) -> Result<Vec<u8>, String> {
        let e = |e: warren_storage::codec::EncodeError| format!("encoding a snapshot: {e}");
        let body = warren_storage::codec::encode(self).map_err(e)?;
        warren_storage::codec::encode(&Envelope {
            format: self.format,
            body,
        })
        .map_err(e)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<SnapshotData, String> {
        let envelope: Envelope = warren_storage::codec::decode(bytes)
            .map_err(|e| format!("a raft snapshot that does not decode: {e}"))?;
        if envelope.format == 2 {
            let old: Format2 = warren_storage::codec::decode(&envelope.body)
                .map_err(|e| format!("a raft snapshot that does not decode: {e}"))?;
            return Ok(SnapshotData {
                format: old.format,
                names: old.names,
                base_voters: old.base_voters,
                recent: old.recent,
                state: old.state,
                log: Vec::new(),
            });
        }
        if envelope.format != SNAPSHOT_FORMAT {
            return Err(format!(
                "a raft snapshot of format {}; this build reads format {SNAPSHOT_FORMAT} ({})",
                envelope.format,
                if envelope.format > SNAPSHOT_FORMAT {
                    "upgrade this node"
                } else {
                    "written by a development build before groups other than the metadata; move this node's data directory away and let it join again"
                }
            ));
        }
        warren_storage::codec::decode(&envelope.body)
            .map_err(|e| format!("a raft snapshot that does not decode: {e}"))
    }
}

/// The snapshot data `data` with the log entries `entries` (the ones its state
/// needs), for a member that takes the snapshot.
pub(crate) fn with_entries(data: &[u8], entries: &[Entry]) -> Result<Vec<u8>, String> {
    let mut snapshot = SnapshotData::decode(data)?;
    snapshot.format = SNAPSHOT_FORMAT;
    snapshot.log = entries
        .iter()
        .map(|e| e.write_to_bytes().map(serde_bytes::ByteBuf::from))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("encoding a snapshot's entries: {e}"))?;
    snapshot.encode()
}

/// The entries a snapshot from the leader carries, and its data without them (as it
/// is stored).
pub(crate) fn take_entries(data: &[u8]) -> Result<(Vec<u8>, Vec<Entry>), String> {
    let mut snapshot = SnapshotData::decode(data)?;
    if snapshot.log.is_empty() {
        return Ok((data.to_vec(), Vec::new()));
    }
    let entries = std::mem::take(&mut snapshot.log)
        .iter()
        .map(|bytes| Entry::parse_from_bytes(bytes))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("a snapshot's entries do not decode: {e}"))?;
    Ok((snapshot.encode()?, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_read_back_and_other_formats_are_refused() {
        let mut data = SnapshotData {
            format: SNAPSHOT_FORMAT,
            names: BTreeMap::from([(7, "n1".to_string())]),
            base_voters: vec![7],
            recent: vec![(3, "n1".into(), 11)],
            state: vec![1, 2, 3],
            log: Vec::new(),
        };
        let back = SnapshotData::decode(&data.encode().unwrap()).unwrap();
        assert_eq!(back.names, data.names);
        assert_eq!(back.recent, data.recent);
        assert_eq!(back.state, data.state);
        data.format = SNAPSHOT_FORMAT + 1;
        let refused = SnapshotData::decode(&data.encode().unwrap()).unwrap_err();
        assert!(refused.contains("upgrade"), "{refused}");
    }

    #[test]
    fn entries_travel_with_a_snapshot_and_format_2_still_reads() {
        let data = SnapshotData {
            format: SNAPSHOT_FORMAT,
            names: BTreeMap::new(),
            base_voters: vec![1],
            recent: Vec::new(),
            state: vec![4, 5],
            log: Vec::new(),
        }
        .encode()
        .unwrap();
        let entries: Vec<Entry> = (7..=9)
            .map(|index| Entry {
                index,
                term: 2,
                data: vec![index as u8; 3].into(),
                ..Entry::default()
            })
            .collect();
        let sent = with_entries(&data, &entries).unwrap();
        let (stored, kept) = take_entries(&sent).unwrap();
        assert_eq!(kept, entries);
        assert_eq!(stored, data, "stored without them");
        let (same, none) = take_entries(&data).unwrap();
        assert_eq!((same, none.len()), (data, 0));

        #[derive(Serialize)]
        struct Old {
            format: u32,
            names: BTreeMap<u64, String>,
            base_voters: Vec<u64>,
            recent: Vec<(u64, String, u64)>,
            state: Vec<u8>,
        }
        let old = Old {
            format: 2,
            names: BTreeMap::from([(3, "n3".to_string())]),
            base_voters: vec![3],
            recent: Vec::new(),
            state: vec![1, 2, 3],
        };
        let body = warren_storage::codec::encode(&old).unwrap();
        let bytes = warren_storage::codec::encode(&Envelope { format: 2, body }).unwrap();
        let back = SnapshotData::decode(&bytes).unwrap();
        assert_eq!((back.state, back.names), (old.state, old.names));
    }
}
