//! Message keys: the key a producer gives a message (`x-stream-key`), hashed for the
//! partition's key index (RocketMQ's index: find messages by key), and found again.

use warren_actors::message::{FieldValue, Message};

/// The header a message's key travels in.
pub const KEY_HEADER: &str = "x-stream-key";

/// Messages one lookup returns at most.
pub const MAX_LOOKUP: usize = 1000;

/// The key index's hash of a key: 64-bit FNV-1a (stable across versions: it is
/// stored).
pub fn key_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A message's key, when it has one.
pub fn key_of(message: &Message) -> Option<&str> {
    message
        .properties
        .headers
        .as_ref()
        .and_then(|h| h.get(KEY_HEADER))
        .and_then(FieldValue::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fnv1a_and_never_changes() {
        // FNV-1a's published test values: the index on disk depends on them.
        assert_eq!(key_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(key_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(key_hash(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
