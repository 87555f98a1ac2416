//! What a snapshot of the metadata log carries ([`SnapshotData`], the `data` of
//! Raft's snapshot), and when a replica takes one.
//!
//! A snapshot stands for every entry up to its index: the metadata as a whole (an
//! [image](crate::image)), who is who in the group, and the proposals applied lately
//! (so that a node starting from the snapshot skips a proposal applied twice as the
//! others do). It is versioned: a node refuses a snapshot from a newer format rather
//! than misread it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::metadata::MetaCommand;

/// The format of [`SnapshotData`] this build writes and reads.
pub(super) const SNAPSHOT_FORMAT: u32 = 1;

/// By default a replica takes a snapshot (and compacts its log) once this many
/// entries were applied since the last one.
pub const SNAPSHOT_EVERY: u64 = 8192;

/// The content of a metadata snapshot.
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
    /// The metadata, as the commands that build it.
    pub image: Vec<MetaCommand>,
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
            .map_err(|e| format!("a metadata snapshot that does not decode: {e}"))?;
        if envelope.format != SNAPSHOT_FORMAT {
            return Err(format!(
                "a metadata snapshot of format {}; this build reads format {SNAPSHOT_FORMAT} (upgrade this node)",
                envelope.format
            ));
        }
        warren_storage::codec::decode(&envelope.body)
            .map_err(|e| format!("a metadata snapshot that does not decode: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_access::VHostDef;

    #[test]
    fn snapshots_read_back_and_other_formats_are_refused() {
        let mut data = SnapshotData {
            format: SNAPSHOT_FORMAT,
            names: BTreeMap::from([(7, "n1".to_string())]),
            base_voters: vec![7],
            recent: vec![(3, "n1".into(), 11)],
            image: vec![MetaCommand::AddVhost(VHostDef {
                name: "v".into(),
                description: String::new(),
            })],
        };
        let back = SnapshotData::decode(&data.encode().unwrap()).unwrap();
        assert_eq!(back.names, data.names);
        assert_eq!(back.recent, data.recent);
        assert_eq!(back.image.len(), 1);
        data.format = SNAPSHOT_FORMAT + 1;
        let refused = SnapshotData::decode(&data.encode().unwrap()).unwrap_err();
        assert!(refused.contains("upgrade"), "{refused}");
    }
}
