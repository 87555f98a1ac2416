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
}
