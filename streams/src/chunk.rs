//! A chunk: the messages of one append, stored as one record of the partition's log
//! (`partition.log`, keyed by its first offset).
//!
//! ```text
//! +-------------------+----------------------------+------------------------------+
//! | header length u32 | header (codec: version, …) | messages (codec: version, …) |
//! +-------------------+----------------------------+------------------------------+
//! ```
//!
//! The header comes first with its length, so retention and recovery read where a
//! chunk starts, when it was written and how many messages it holds without decoding
//! its messages. Every part starts with the codec's version byte.

use serde::{Deserialize, Serialize};
use warren_actors::message::SharedMessage;
use warren_storage::codec::{self, DecodeError, EncodeError};

/// A chunk of this many bytes of bodies (or more, for one large message) is closed
/// and the append goes on in a new one: reads fetch a bounded amount at a time.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Messages a chunk holds at most.
pub const CHUNK_MESSAGES: usize = 4096;

/// What a chunk says of itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkHeader {
    /// The offset of its first message.
    pub first: u64,
    /// How many messages it holds (offsets `first..first + count`).
    pub count: u32,
    /// When it was appended, in milliseconds since the Unix epoch (never before the
    /// chunk ahead of it).
    pub timestamp_ms: u64,
    /// The log's byte position where it starts: the stored size of every chunk
    /// appended before it, since the stream began.
    pub position: u64,
    /// Its messages published with a key, as (key hash, offset): its entries in the
    /// key index, which go with it.
    pub keys: Vec<(u64, u64)>,
}

impl ChunkHeader {
    /// The offset after its last message.
    pub fn next(&self) -> u64 {
        self.first + u64::from(self.count)
    }
}

/// Why a stored chunk could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// Shorter than its header says.
    #[error("chunk record of {len} bytes is truncated (its header claims {claimed})")]
    Truncated {
        /// The record's length.
        len: usize,
        /// What its header length claims.
        claimed: usize,
    },
    /// A part did not decode.
    #[error("chunk record does not decode: {0}")]
    Decode(#[from] DecodeError),
    /// Its header counts another number of messages than it holds.
    #[error("chunk record's header counts {header} messages but it holds {found}")]
    Count {
        /// What the header says.
        header: u32,
        /// What the record holds.
        found: usize,
    },
}

/// Encodes a chunk of `messages` (one or more) whose header is `header`: the stored
/// record.
pub fn encode(header: &ChunkHeader, messages: &[SharedMessage]) -> Result<Vec<u8>, EncodeError> {
    // One buffer, sized for the bodies and what goes around them (their encoding
    // is copied once, here; growing it as bincode writes copied it again and again).
    let around: usize = messages
        .iter()
        .map(|m| 96 + m.exchange.len() + m.routing_key.len())
        .sum();
    let bodies: usize = messages.iter().map(|m| m.body.len()).sum();
    let mut record = Vec::with_capacity(4 + 64 + 16 * header.keys.len() + around + bodies);
    record.extend_from_slice(&[0; 4]);
    codec::encode_into(header, &mut record)?;
    let head_len = (record.len() - 4) as u32;
    record[..4].copy_from_slice(&head_len.to_le_bytes());
    codec::encode_into(&messages, &mut record)?;
    Ok(record)
}

fn split(record: &[u8]) -> Result<(&[u8], &[u8]), ChunkError> {
    let truncated = |claimed| ChunkError::Truncated {
        len: record.len(),
        claimed,
    };
    let len_bytes: [u8; 4] = record
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| truncated(4))?;
    let head_len = u32::from_le_bytes(len_bytes) as usize;
    let end = 4usize
        .checked_add(head_len)
        .ok_or_else(|| truncated(usize::MAX))?;
    if record.len() < end {
        return Err(truncated(end));
    }
    Ok((&record[4..end], &record[end..]))
}

/// The header of a stored chunk, without decoding its messages.
pub fn header(record: &[u8]) -> Result<ChunkHeader, ChunkError> {
    let (head, _) = split(record)?;
    Ok(codec::decode(head)?)
}

/// A stored chunk, whole.
pub fn decode(record: &[u8]) -> Result<(ChunkHeader, Vec<SharedMessage>), ChunkError> {
    let (head, body) = split(record)?;
    let header: ChunkHeader = codec::decode(head)?;
    let messages: Vec<SharedMessage> = codec::decode(body)?;
    if messages.len() != header.count as usize {
        return Err(ChunkError::Count {
            header: header.count,
            found: messages.len(),
        });
    }
    Ok((header, messages))
}

/// Splits an append of `messages` into chunks: at most [`CHUNK_MESSAGES`] each, and
/// closed once their bodies reach [`CHUNK_BYTES`]. Takes the messages' body sizes,
/// yields the chunks' lengths.
pub fn chunk_lengths(body_sizes: impl IntoIterator<Item = usize>) -> Vec<usize> {
    let mut lengths = Vec::new();
    let (mut count, mut bytes) = (0usize, 0usize);
    for size in body_sizes {
        count += 1;
        bytes += size;
        if count == CHUNK_MESSAGES || bytes >= CHUNK_BYTES {
            lengths.push(count);
            (count, bytes) = (0, 0);
        }
    }
    if count > 0 {
        lengths.push(count);
    }
    lengths
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::Arc;
    use warren_actors::message::Message;

    fn message(size: usize) -> SharedMessage {
        Arc::new(Message {
            exchange: String::new(),
            routing_key: "s1".into(),
            properties: Default::default(),
            body: Bytes::from(vec![7u8; size]),
        })
    }

    #[test]
    fn a_chunk_round_trips_and_its_header_reads_alone() {
        let header = ChunkHeader {
            first: 40,
            count: 2,
            timestamp_ms: 1_700_000_000_000,
            position: 9_000,
            keys: vec![(7, 41)],
        };
        let messages = vec![message(3), message(5)];
        let record = encode(&header, &messages).unwrap();
        assert_eq!(self::header(&record).unwrap(), header);
        let (h, m) = decode(&record).unwrap();
        assert_eq!((h, m), (header, messages));
        assert!(matches!(
            self::header(&record[..6]),
            Err(ChunkError::Truncated { .. })
        ));
        assert!(self::header(&[]).is_err());
    }

    #[test]
    fn appends_split_by_count_and_bytes() {
        let small = std::iter::repeat_n(1, CHUNK_MESSAGES + 10);
        assert_eq!(chunk_lengths(small), [CHUNK_MESSAGES, 10]);
        assert_eq!(chunk_lengths([CHUNK_BYTES, 10, CHUNK_BYTES / 2]), [1, 2]);
        assert!(chunk_lengths([]).is_empty());
    }
}
