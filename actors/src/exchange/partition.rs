//! The `x-partition-hash` exchange type: routes each message to one partition of a
//! partitioned stream by hashing its routing key with Kafka's default partitioner
//! (murmur2, positive, modulo the number of partitions), so a key lands on the same
//! partition number as it would in Kafka.
//!
//! A binding names its partition in `x-stream-partition-order` (the argument
//! RabbitMQ's super streams put on their bindings). With partitions numbered
//! `0..N`, a key goes to partition `murmur2(key) % N`; with gaps, to the `p`-th
//! partition in order.

use super::binding::Destination;
use super::dests::Dests;
use super::error::InvalidBinding;
use crate::message::FieldTable;

/// The binding argument that numbers a partition (RabbitMQ's super streams').
pub const PARTITION_ORDER_ARG: &str = "x-stream-partition-order";

/// Kafka's `Utils.murmur2`: the 32-bit MurmurHash2 of `data` with Kafka's seed.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition, of `partitions`, Kafka's default partitioner picks for `key`.
pub fn partition_of(key: &[u8], partitions: u32) -> u32 {
    if partitions == 0 {
        return 0;
    }
    ((murmur2(key) & 0x7fff_ffff) as u32) % partitions
}

/// A binding's partition number: its `x-stream-partition-order`, a non-negative
/// integer (406 otherwise).
pub fn partition_order(arguments: &FieldTable) -> Result<u64, InvalidBinding> {
    let value = arguments
        .get(PARTITION_ORDER_ARG)
        .ok_or(InvalidBinding::PartitionOrder {
            given: "none".to_string(),
        })?;
    value
        .as_i64()
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| InvalidBinding::PartitionOrder {
            given: format!("a {}", value.type_name()),
        })
}

/// The partitions of one exchange, in order, each with its destinations.
#[derive(Clone, Debug, Default)]
pub(crate) struct Partitions {
    by_order: Vec<(u64, Dests)>,
}

impl Partitions {
    pub(crate) fn add(&mut self, order: u64, dest: Destination) {
        match self.by_order.binary_search_by_key(&order, |(o, _)| *o) {
            Ok(i) => self.by_order[i].1.add(dest),
            Err(i) => {
                let mut dests = Dests::default();
                dests.add(dest);
                self.by_order.insert(i, (order, dests));
            }
        }
    }

    pub(crate) fn remove(&mut self, order: u64, dest: &Destination) {
        if let Ok(i) = self.by_order.binary_search_by_key(&order, |(o, _)| *o) {
            self.by_order[i].1.remove(dest);
            if self.by_order[i].1.is_empty() {
                self.by_order.remove(i);
            }
        }
    }

    /// The destinations of the partition `key` hashes to.
    pub(crate) fn route(&self, key: &str) -> impl Iterator<Item = &Destination> {
        let n = self.by_order.len() as u32;
        let chosen = (n > 0).then(|| &self.by_order[partition_of(key.as_bytes(), n) as usize].1);
        chosen.into_iter().flat_map(|d| d.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's `UtilsTest.testMurmur2` values (and a few more computed with Kafka's
    /// code): the same keys land on the same partitions as in Kafka.
    #[test]
    fn murmur2_is_kafkas() {
        let cases: [(&[u8], i32); 8] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
            (&[12, 42, 56, 24, 109, 111], 274_204_207),
            (b"", 275_646_681),
        ];
        for (key, hash) in cases {
            assert_eq!(murmur2(key), hash, "{key:?}");
        }
        assert_eq!(partition_of(b"a-little-bit-longer-string", 6), 5);
        assert_eq!(partition_of(b"abc", 3), 0);
        assert_eq!(partition_of(b"abc", 6), 3);
        assert_eq!(partition_of(b"anything", 0), 0);
    }

    #[test]
    fn keys_go_to_their_partition_in_order_and_gaps_are_skipped() {
        let q = |n: &str| Destination::Queue(n.into());
        let mut p = Partitions::default();
        for (order, name) in [(2, "c"), (0, "a"), (1, "b")] {
            p.add(order, q(name));
        }
        let routed = |p: &Partitions, key: &str| p.route(key).cloned().collect::<Vec<_>>();
        // "abc" hashes to partition 0 of 3; "a-little-bit-long-string" to 2.
        assert_eq!(routed(&p, "abc"), [q("a")]);
        assert_eq!(routed(&p, "a-little-bit-long-string"), [q("c")]);
        p.remove(1, &q("b"));
        // Two partitions left (0 and 2): "abc" hashes to 1 of 2, the second: "c".
        assert_eq!(partition_of(b"abc", 2), 1);
        assert_eq!(routed(&p, "abc"), [q("c")]);
        assert!(routed(&Partitions::default(), "abc").is_empty());
    }
}
