//! What a snapshot of the metadata log carries ([`SnapshotData`], the `data` of
//! Raft's snapshot), and when a replica takes one.
//!
//! A snapshot stands for every entry up to its index: the group's state as a whole
//! (its machine's image: for the metadata, the [commands that build it](crate::image)),
//! who is who in the group, and the proposals applied lately (so that a node starting
//! from the snapshot skips a proposal applied twice as the others do). It is versioned:
//! a node refuses a snapshot of another format rather than misread it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The format of [`SnapshotData`] this build writes and reads.
/// (Format 1, before groups other than the metadata, held the metadata image in place
/// of `state`.)
pub(super) const SNAPSHOT_FORMAT: u32 = 2;

/// By default a replica takes a snapshot (and compacts its log) once this many
/// entries were applied since the last one.
pub const SNAPSHOT_EVERY: u64 = 8192;

/// The content of a group's snapshot.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct SnapshotData {
    /// [`SNAPSHOT_FORMAT`] when written.
    pub format: u32,
    /// Raft id -> member name, for every member the log named.
    pub names: BTreeMap<u64, String>,
    /// The voters the group was formed with.
    pub base_voters: Vec<u64>,
    /// The proposals applied lately, as (index, origin, id).
    pub recent: Vec<(u64, String, u64)>,
    /// The machine's image, encoded by its applier (see [`super::machine::Machine`]).
    pub state: Vec<u8>,
}

/// The envelope: the format first, so that a node reads it whatever follows.
#[derive(Serialize, Deserialize)]
struct Envelope {
    format: u32,
    body: Vec<u8>,
}

impl SnapshotData {
    pub(super) fn encode(&self) -> Result<Vec<u8>, String> {
        let e = |e: warren_storage::codec::EncodeError| format!("encoding a snapshot: {e}");
        let body = warren_storage::codec::encode(self).map_err(e)?;
        warren_storage::codec::encode(&Envelope {
            format: self.format,
            body,
        })
        .map_err(e)
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<SnapshotData, String> {
        let envelope: Envelope = warren_storage::codec::decode(bytes)
            .map_err(|e| format!("a raft snapshot that does not decode: {e}"))?;
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
        };
        let back = SnapshotData::decode(&data.encode().unwrap()).unwrap();
        assert_eq!(back.names, data.names);
        assert_eq!(back.recent, data.recent);
        assert_eq!(back.state, data.state);
        data.format = SNAPSHOT_FORMAT + 1;
        let refused = SnapshotData::decode(&data.encode().unwrap()).unwrap_err();
        assert!(refused.contains("upgrade"), "{refused}");
    }
}
