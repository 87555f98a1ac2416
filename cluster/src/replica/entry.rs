//! A log entry's payload: who proposed it, under which id, and the machine's command.
//!
//! The replica hands Raft the bytes and never decodes the command; the applier reads
//! the head (origin and id, for the filter of entries proposed twice and to answer the
//! client) and decodes the command in place, without copying it (a mirrored queue's
//! command carries message bodies).
//!
//! Layout: `TAG`, the id (8 bytes, big-endian), the origin's length (2 bytes) and its
//! name, then the command as [`warren_storage::codec`] encodes it. Entries written
//! before this layout (a codec-encoded `{origin, id, command}`) start with the codec's
//! format byte, never `TAG`, and still read back.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The first byte of an entry in this layout.
const TAG: u8 = 0xE1;

/// An entry's parts.
pub(crate) struct Entry<C> {
    /// The node whose client proposed it (and waits for the answer).
    pub origin: String,
    /// The proposal's id (a nonce: see [`super::proposals`]).
    pub id: u64,
    /// The machine's command.
    pub command: C,
}

/// The layout entries had before this one.
#[derive(Deserialize)]
struct Legacy<C> {
    origin: String,
    id: u64,
    command: C,
}

/// The entry for `command` (encoded already) proposed by `origin` as `id`.
#[cfg(test)]
pub(crate) fn encode(origin: &str, id: u64, command: &[u8]) -> Vec<u8> {
    let name = &origin.as_bytes()[..origin.len().min(u16::MAX as usize)];
    let mut out = Vec::with_capacity(11 + name.len() + command.len());
    out.push(TAG);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&(name.len() as u16).to_be_bytes());
    out.extend_from_slice(name);
    out.extend_from_slice(command);
    out
}

/// The entry for `command` proposed by `origin` as `id`, encoded once into a buffer
/// of about `size_hint` bytes (what the command carries: a mirrored queue's bodies),
/// so that it is not copied or grown on the way.
pub(crate) fn build<C: Serialize>(
    origin: &str,
    id: u64,
    command: &C,
    size_hint: usize,
) -> Result<Vec<u8>, String> {
    let name = &origin.as_bytes()[..origin.len().min(u16::MAX as usize)];
    let mut out = Vec::with_capacity(11 + name.len() + 64 + size_hint);
    out.push(TAG);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&(name.len() as u16).to_be_bytes());
    out.extend_from_slice(name);
    warren_storage::codec::encode_into(command, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Encodes a machine command for [`encode`].
pub(crate) fn command<C: Serialize>(command: &C) -> Result<Vec<u8>, String> {
    warren_storage::codec::encode(command).map_err(|e| e.to_string())
}

/// Reads an entry back.
pub(crate) fn decode<C: DeserializeOwned>(data: &[u8]) -> Result<Entry<C>, String> {
    if data.first() != Some(&TAG) {
        let legacy: Legacy<C> = warren_storage::codec::decode(data).map_err(|e| e.to_string())?;
        return Ok(Entry {
            origin: legacy.origin,
            id: legacy.id,
            command: legacy.command,
        });
    }
    let (origin, id, rest) = head(data).ok_or("an entry cut short")?;
    let command = warren_storage::codec::decode(rest).map_err(|e| e.to_string())?;
    Ok(Entry {
        origin: origin.to_string(),
        id,
        command,
    })
}

/// The origin, the id and the command's bytes of an entry in this layout.
fn head(data: &[u8]) -> Option<(&str, u64, &[u8])> {
    let id = u64::from_be_bytes(data.get(1..9)?.try_into().ok()?);
    let len = u16::from_be_bytes(data.get(9..11)?.try_into().ok()?) as usize;
    let origin = std::str::from_utf8(data.get(11..11 + len)?).ok()?;
    Some((origin, id, data.get(11 + len..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum Cmd {
        Put(String, Vec<u8>),
    }

    #[test]
    fn entries_read_back_in_this_layout_and_the_one_before() {
        let cmd = Cmd::Put("k".into(), vec![7; 100]);
        let data = encode("n1", 42, &command(&cmd).unwrap());
        let back: Entry<Cmd> = decode(&data).unwrap();
        assert_eq!((back.origin.as_str(), back.id), ("n1", 42));
        assert_eq!(back.command, cmd);
        assert_eq!(
            build("n1", 42, &cmd, 100).unwrap(),
            data,
            "built at once, the same"
        );

        #[derive(Serialize)]
        struct Before<'a> {
            origin: &'a str,
            id: u64,
            command: &'a Cmd,
        }
        let old = warren_storage::codec::encode(&Before {
            origin: "n2",
            id: 9,
            command: &cmd,
        })
        .unwrap();
        let back: Entry<Cmd> = decode(&old).unwrap();
        assert_eq!((back.origin.as_str(), back.id), ("n2", 9));
        assert_eq!(back.command, cmd);

        assert!(decode::<Cmd>(&data[..5]).is_err(), "cut short");
        assert!(decode::<Cmd>(&[]).is_err());
    }
}
