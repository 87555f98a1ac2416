//! The bench's messages: every body starts with the publisher's number, the message's
//! sequence number and the wall-clock time it was published (all in one process, so
//! one clock), then padding. The consumers read them back from it.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes of the bench's header at the start of every body.
pub const HEADER: usize = 24;

/// Nanoseconds since the Unix epoch.
pub fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The bench's header at the start of every body: publisher, seq, send time.
pub fn header(publisher: u32, seq: u64, sent_nanos: u64) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..8].copy_from_slice(&u64::from(publisher).to_be_bytes());
    h[8..16].copy_from_slice(&seq.to_be_bytes());
    h[16..].copy_from_slice(&sent_nanos.to_be_bytes());
    h
}

/// A message body: the bench's header, stamped now, and padding.
pub fn body(publisher: u32, seq: u64, padding: &[u8]) -> Bytes {
    let mut body = BytesMut::with_capacity(HEADER + padding.len());
    body.put_slice(&header(publisher, seq, now_nanos()));
    body.put_slice(padding);
    body.freeze()
}

/// A body just received: (publisher, seq, latency in ns), the latency taken now (not
/// when the batch of arrivals is recorded).
pub fn arrival(b: &[u8]) -> Option<(u64, u64, u64)> {
    if b.len() < HEADER {
        return None;
    }
    let word = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
    Some((word(0), word(8), now_nanos().saturating_sub(word(16))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_reads_back_as_its_publisher_and_seq() {
        let b = body(3, 77, &[b'w'; 1000]);
        assert_eq!(b.len(), HEADER + 1000);
        let (publisher, seq, latency) = arrival(&b).unwrap();
        assert_eq!((publisher, seq), (3, 77));
        assert!(latency < 60_000_000_000, "{latency}");
        assert_eq!(arrival(&b[..HEADER - 1]), None);
    }
}
