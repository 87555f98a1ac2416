//! Retention: which of the oldest chunks go, by age (`x-max-age`) and by size
//! (`x-max-length-bytes`). Whole chunks go, continuously (after appends, and on a
//! timer for age), never the last chunk: it tells a restarted partition where its
//! log ends.

use crate::args::StreamConfig;
use crate::chunk::ChunkHeader;
use crate::offset::LogBounds;

/// Given the oldest chunks of the log, in order (`front`, read from storage), the
/// index in `front` of the first chunk to keep when some before it must go; `None`
/// when none goes.
///
/// A chunk goes when it was appended more than `max_age` before `now_ms`, or while
/// the log from that chunk on holds more than `max_bytes`. The chunk kept is always
/// one of `front` and never after the log's last chunk, so the caller can name it
/// (its offset, position and time) without another read; a log with more to drop
/// than `front` shows is trimmed again at the next call.
pub fn keep_from(
    front: &[ChunkHeader],
    bounds: &LogBounds,
    config: &StreamConfig,
    now_ms: u64,
) -> Option<usize> {
    let too_old = |c: &ChunkHeader| {
        config.max_age.is_some_and(|age| {
            let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
            c.timestamp_ms.saturating_add(age_ms) < now_ms
        })
    };
    let too_big = |c: &ChunkHeader| {
        config
            .max_bytes
            .is_some_and(|max| bounds.end.saturating_sub(c.position) > max)
    };
    let mut keep = None;
    for (i, chunk) in front.iter().enumerate() {
        if i + 1 >= front.len()
            || chunk.first >= bounds.last_chunk
            || !(too_old(chunk) || too_big(chunk))
        {
            break;
        }
        keep = Some(i + 1);
    }
    keep
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Ten chunks of 10 messages and 100 bytes, appended at ms 1000, 2000, …
    fn log() -> (Vec<ChunkHeader>, LogBounds) {
        let chunks: Vec<ChunkHeader> = (0..10)
            .map(|i| ChunkHeader {
                first: i * 10,
                count: 10,
                timestamp_ms: (i + 1) * 1000,
                position: i * 100,
                keys: Vec::new(),
            })
            .collect();
        let bounds = LogBounds {
            first: 0,
            next: 100,
            last_chunk: 90,
            start: 0,
            end: 1000,
        };
        (chunks, bounds)
    }

    #[test]
    fn size_keeps_the_newest_chunks_that_fit() {
        let (chunks, bounds) = log();
        let config = StreamConfig {
            max_bytes: Some(350),
            ..Default::default()
        };
        // 300 bytes from chunk 7 on: chunks 0..=6 go.
        assert_eq!(
            keep_from(&chunks, &bounds, &config, 0).map(|i| chunks[i].first),
            Some(70)
        );
        // Only three chunks read: two go now, the rest next time.
        assert_eq!(
            keep_from(&chunks[..3], &bounds, &config, 0).map(|i| chunks[i].first),
            Some(20)
        );
        let roomy = StreamConfig {
            max_bytes: Some(1000),
            ..Default::default()
        };
        assert_eq!(keep_from(&chunks, &bounds, &roomy, 0), None);
    }

    #[test]
    fn age_drops_old_chunks_and_never_the_last() {
        let (chunks, bounds) = log();
        let config = StreamConfig {
            max_age: Some(Duration::from_secs(3)),
            ..Default::default()
        };
        // At 6.5 s, chunks appended before 3.5 s go: 1000, 2000, 3000.
        assert_eq!(
            keep_from(&chunks, &bounds, &config, 6_500).map(|i| chunks[i].first),
            Some(30)
        );
        // Long after, everything but the last chunk goes.
        assert_eq!(
            keep_from(&chunks, &bounds, &config, 1_000_000).map(|i| chunks[i].first),
            Some(90)
        );
        assert_eq!(
            keep_from(&chunks, &bounds, &StreamConfig::default(), 1_000_000),
            None
        );
        assert_eq!(keep_from(&chunks[9..], &bounds, &config, 1_000_000), None);
    }

    use proptest::prelude::*;

    proptest! {
        /// Whatever the chunks and limits: the last chunk is never dropped, every
        /// chunk dropped was too old or the log from it too big, and what is kept
        /// starts at a chunk of `front`.
        #[test]
        fn retention_drops_only_what_is_beyond_its_limits(
            sizes in prop::collection::vec(1..500u64, 1..40),
            gaps in prop::collection::vec(0..3_000u64, 40),
            max_age_s in prop::option::of(1..20u64),
            max_bytes in prop::option::of(1..5_000u64),
            now_ms in 0..150_000u64,
            read in 1..40usize,
        ) {
            let mut chunks = Vec::new();
            let (mut position, mut ts) = (0u64, 0u64);
            for (i, size) in sizes.iter().enumerate() {
                ts += gaps[i];
                chunks.push(ChunkHeader {
                    first: i as u64 * 10,
                    count: 10,
                    timestamp_ms: ts,
                    position,
                    keys: Vec::new(),
                });
                position += size;
            }
            let bounds = LogBounds {
                first: 0,
                next: chunks.len() as u64 * 10,
                last_chunk: chunks.last().map_or(0, |c| c.first),
                start: 0,
                end: position,
            };
            let config = StreamConfig {
                max_age: max_age_s.map(Duration::from_secs),
                max_bytes,
            };
            let front = &chunks[..read.min(chunks.len())];
            if let Some(at) = keep_from(front, &bounds, &config, now_ms) {
                prop_assert!(at >= 1 && at < front.len());
                prop_assert!(front[at].first <= bounds.last_chunk);
                for dropped in &front[..at] {
                    let too_old = config.max_age.is_some_and(|a| {
                        dropped.timestamp_ms + (a.as_millis() as u64) < now_ms
                    });
                    let too_big = config
                        .max_bytes
                        .is_some_and(|m| bounds.end - dropped.position > m);
                    prop_assert!(too_old || too_big, "{dropped:?} was within the limits");
                    prop_assert!(dropped.first < bounds.last_chunk);
                }
            }
        }
    }
}
