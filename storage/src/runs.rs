//! Runs: several consecutive chunks of one partition stored as one value of
//! `partition.log`.
//!
//! With many partitions, each append is a small chunk, and redb pays per value (a
//! leaf of its own, the branch pages above it, their copies at the checkpoint) far
//! more than per byte. So the writer holds small chunks back until the checkpoint
//! (`writer.rs`) and writes a partition's consecutive chunks as one run, keyed by
//! the first chunk's first offset, as any chunk is. Reads split runs back into
//! their chunks ([`chunks`]): callers see the chunks they appended.
//!
//! A run begins with [`RUN_MARK`], four `0xFF` bytes. A chunk cannot begin with
//! them: a stream's chunk begins with the length of its header as a `u32`, and a
//! header of 4 GiB would exceed redb's 3 GiB limit on a value. The writer refuses
//! an [`crate::Op::AppendChunk`] whose chunk begins with the mark, so no chunk is
//! ever read as a run. Then, per chunk: its first offset (`u64`), its length
//! (`u32`), its bytes, all little-endian.

/// A chunk this large or smaller costs redb more as a value of its own than its
/// bytes do: only such chunks form runs, and a group's such appends go through the
/// journal however large the group (`writer.rs`: routes).
pub(crate) const RUN_CHUNK: usize = 64 * 1024;

/// The most bytes of chunks one run holds: a read of the log reads a value whole,
/// and a consumer asks for about 1 MiB at a time.
pub(crate) const RUN_MAX: usize = 1024 * 1024;

/// What a run value begins with.
pub(crate) const RUN_MARK: [u8; 4] = [0xFF; 4];

/// Bytes a run value adds per chunk.
const ENTRY_HEAD: usize = 8 + 4;

/// Whether `chunk` could be mistaken for a run (and is refused as a chunk).
pub(crate) fn looks_like_run(chunk: &[u8]) -> bool {
    chunk.starts_with(&RUN_MARK)
}

/// The run value of `chunks` (first offset, bytes), in their order.
pub(crate) fn encode<'c>(chunks: impl IntoIterator<Item = (u64, &'c [u8])> + Clone) -> Vec<u8> {
    let len: usize = chunks
        .clone()
        .into_iter()
        .map(|(_, bytes)| ENTRY_HEAD + bytes.len())
        .sum();
    let mut value = Vec::with_capacity(RUN_MARK.len() + len);
    value.extend_from_slice(&RUN_MARK);
    for (first, bytes) in chunks {
        value.extend_from_slice(&first.to_le_bytes());
        // Chunks are below redb's 3 GiB limit on a value, so their length fits.
        value.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        value.extend_from_slice(bytes);
    }
    value
}

/// The chunks stored under key `first` with `value`: the value itself when it is a
/// chunk, or the chunks of a run. An error names what is wrong with a run that does
/// not parse (the file is damaged).
pub(crate) fn chunks(first: u64, value: &[u8]) -> Result<Vec<(u64, &[u8])>, String> {
    if !looks_like_run(value) {
        return Ok(vec![(first, value)]);
    }
    let mut chunks = Vec::new();
    let mut rest = &value[RUN_MARK.len()..];
    while !rest.is_empty() {
        let (head, after) = rest
            .split_at_checked(ENTRY_HEAD)
            .ok_or_else(|| format!("the run at offset {first} ends inside a chunk's head"))?;
        let offset = u64::from_le_bytes(head[..8].try_into().unwrap_or_default());
        let len = u32::from_le_bytes(head[8..].try_into().unwrap_or_default()) as usize;
        let (bytes, after) = after.split_at_checked(len).ok_or_else(|| {
            format!("the run at offset {first} ends inside its chunk at offset {offset}")
        })?;
        let in_order = match chunks.last() {
            Some((previous, _)) => offset > *previous,
            None => offset == first,
        };
        if !in_order {
            return Err(format!(
                "the run at offset {first} holds a chunk at offset {offset} out of order"
            ));
        }
        chunks.push((offset, bytes));
        rest = after;
    }
    if chunks.is_empty() {
        return Err(format!("the run at offset {first} holds no chunk"));
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_gives_back_its_chunks_and_a_chunk_is_itself() {
        let run = encode([(10, &b"ten"[..]), (13, &b""[..]), (14, &b"fourteen"[..])]);
        assert_eq!(
            chunks(10, &run).unwrap(),
            vec![(10, &b"ten"[..]), (13, &b""[..]), (14, &b"fourteen"[..])]
        );
        assert_eq!(
            chunks(7, b"\x03\0\0\0abc").unwrap(),
            vec![(7, &b"\x03\0\0\0abc"[..])]
        );
        assert!(looks_like_run(&run));
        assert!(!looks_like_run(b"\xFF\xFF\xFF"));
    }

    #[test]
    fn a_damaged_run_is_an_error_at_every_cut() {
        let run = encode([(10, &b"ten"[..]), (13, &b"thirteen"[..])]);
        for cut in RUN_MARK.len()..run.len() {
            if cut == RUN_MARK.len() + ENTRY_HEAD + 3 {
                // A cut right after the first chunk is a run of that chunk alone.
                assert_eq!(chunks(10, &run[..cut]).unwrap().len(), 1);
                continue;
            }
            assert!(chunks(10, &run[..cut]).is_err(), "cut at {cut}");
        }
        // Keyed elsewhere than its first chunk, or out of order.
        assert!(chunks(9, &run).is_err());
        let backwards = encode([(13, &b"a"[..]), (10, &b"b"[..])]);
        assert!(chunks(13, &backwards).is_err());
    }
}
