//! [`PageFile`]: where a queue puts the bodies of messages that must leave memory but
//! need not survive a restart (transient messages, and every message of a
//! non-durable queue).
//!
//! Such a body used to go through redb like a persistent one: a B-tree insert, a read
//! back and a delete, about 20 µs of CPU per message, so a queue whose consumers fell
//! a window behind got four times as expensive per message just when it needed to
//! catch up. Here it is appended to a segment file instead, as RabbitMQ's classic
//! queues (v2) do: one `pwrite` per flush for all of its bodies, one `pread` per run of
//! consecutive bodies loaded, nothing to delete but whole segments once every body in
//! them is gone. Nothing is fsynced and nothing is recovered: a restart drops these
//! messages anyway ([`crate::Store::open_with`] empties the directory; a queue's
//! restarted actor removes its own old segments when it opens its page file).
//!
//! The index (seq -> segment, offset, length) lives in memory, 16 bytes per body.
//!
//! The owner (a queue actor) calls [`PageFile::append`] and [`PageFile::remove`] on its
//! own thread; the I/O itself runs elsewhere through [`PageWrite::perform`] and
//! [`PageRead::perform`], which hold the segment files open, so a segment deleted
//! meanwhile (its file unlinked when the last holder lets go) still reads and writes.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes after which a segment is closed and a new one begun.
pub const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;

/// The directory of the page files next to the data file `store_path`.
pub fn directory_of(store_path: &Path) -> PathBuf {
    store_path
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("paging")
}

/// Removes every page file in `dir` (what a node does when it starts: nothing in them
/// survives a restart). A missing directory is fine.
pub fn clear_directory(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Segment numbers are unique in the process: a restarted queue actor's segments never
/// take the names of segments its crashed incarnation still has in flight (whose drop
/// unlinks by name).
fn next_segment_number() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// One segment file; unlinked when the last holder (the page file, a write or a read
/// in flight) drops it.
struct SegmentFile {
    file: File,
    path: PathBuf,
}

impl Drop for SegmentFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), "cannot remove a page segment: {e}");
            }
        }
    }
}

/// Where one body is: (seq, offset in the segment, length); length `DEAD` once removed.
type Slot = (u64, u32, u32);
const DEAD: u32 = u32::MAX;

struct Segment {
    file: Arc<SegmentFile>,
    /// Bytes appended (written or pending).
    len: u64,
    /// Bytes appended since the last [`PageFile::take_writes`], to go at `len - pending.len()`.
    pending: Vec<u8>,
    /// Sorted by seq.
    slots: Vec<Slot>,
    live: usize,
}

impl Segment {
    fn find(&self, seq: u64) -> Option<usize> {
        self.slots
            .binary_search_by_key(&seq, |s| s.0)
            .ok()
            .filter(|&i| self.slots[i].2 != DEAD)
    }

    fn covers(&self, seq: u64) -> bool {
        matches!((self.slots.first(), self.slots.last()), (Some(a), Some(b)) if a.0 <= seq && seq <= b.0)
    }
}

/// A queue's page file: its segments and the index of the bodies in them.
pub struct PageFile {
    dir: PathBuf,
    prefix: String,
    /// Oldest first; the last one takes appends.
    segments: VecDeque<Segment>,
    live: usize,
}

impl PageFile {
    /// Opens queue `queue`'s page file in `dir`, removing the segments an earlier
    /// incarnation of the queue left (their bodies are not recovered).
    pub fn open(dir: &Path, queue: u64) -> io::Result<PageFile> {
        std::fs::create_dir_all(dir)?;
        let prefix = format!("{queue}-");
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(PageFile {
            dir: dir.to_path_buf(),
            prefix,
            segments: VecDeque::new(),
            live: 0,
        })
    }

    /// Bodies in the page file.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no body is paged out, i.e. every body of the queue is in memory
    /// or in redb.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Segment files held (including ones only a write or read in flight still uses
    /// are not counted).
    pub fn segments(&self) -> usize {
        self.segments.len()
    }

    /// Appends the body `seq`, written by `encode` into the segment's buffer (which
    /// returns an error to leave it out). It goes to disk with the next
    /// [`PageFile::take_writes`]. A seq already in the page file is an error.
    pub fn append<E>(
        &mut self,
        seq: u64,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), AppendError<E>> {
        if self.contains(seq) {
            return Err(AppendError::Duplicate(seq));
        }
        let roll = self.segments.back().is_none_or(|s| s.len >= SEGMENT_BYTES);
        if roll {
            self.roll().map_err(AppendError::Io)?;
        }
        let Some(segment) = self.segments.back_mut() else {
            return Err(AppendError::Io(io::Error::other("no segment to append to")));
        };
        let start = segment.pending.len();
        encode(&mut segment.pending).map_err(AppendError::Encode)?;
        let size = segment.pending.len() - start;
        let offset = segment.len;
        let (Ok(offset32), Ok(size32)) = (u32::try_from(offset), u32::try_from(size)) else {
            segment.pending.truncate(start);
            return Err(AppendError::Io(io::Error::other(
                "a body does not fit a page segment",
            )));
        };
        segment.len += size as u64;
        let slot = (seq, offset32, size32);
        // Appends come in seq order but for the odd requeued message.
        match segment.slots.last() {
            Some(last) if last.0 > seq => {
                let at = segment.slots.partition_point(|s| s.0 < seq);
                segment.slots.insert(at, slot);
            }
            _ => segment.slots.push(slot),
        }
        segment.live += 1;
        self.live += 1;
        Ok(())
    }

    fn roll(&mut self) -> io::Result<()> {
        let path = self
            .dir
            .join(format!("{}{}", self.prefix, next_segment_number()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        self.segments.push_back(Segment {
            file: Arc::new(SegmentFile { file, path }),
            len: 0,
            pending: Vec::with_capacity(64 * 1024),
            slots: Vec::new(),
            live: 0,
        });
        Ok(())
    }

    /// Whether body `seq` is in the page file.
    pub fn contains(&self, seq: u64) -> bool {
        self.locate(seq).is_some()
    }

    fn locate(&self, seq: u64) -> Option<(usize, usize)> {
        // Oldest first: loads and removals mostly hit the head of the queue.
        self.segments
            .iter()
            .enumerate()
            .filter(|(_, s)| s.covers(seq))
            .find_map(|(i, s)| s.find(seq).map(|j| (i, j)))
    }

    /// Forgets body `seq`; returns whether it was here. A segment left without bodies
    /// (other than the one taking appends) is deleted.
    pub fn remove(&mut self, seq: u64) -> bool {
        let Some((i, j)) = self.locate(seq) else {
            return false;
        };
        let segment = &mut self.segments[i];
        segment.slots[j].2 = DEAD;
        segment.live -= 1;
        self.live -= 1;
        if segment.live == 0 && segment.pending.is_empty() {
            self.segments.remove(i);
        }
        true
    }

    /// Forgets every body (the queue was purged or deleted).
    pub fn clear(&mut self) {
        self.segments.clear();
        self.live = 0;
    }

    /// Deletes the segments without bodies (the one taking appends too, once nothing
    /// waits to be written to it: the next append begins a new one).
    fn drop_empty(&mut self) {
        self.segments
            .retain(|s| s.live > 0 || !s.pending.is_empty());
    }

    /// The writes of everything appended since the last call, one per segment.
    pub fn take_writes(&mut self) -> Vec<PageWrite> {
        let writes = self
            .segments
            .iter_mut()
            .filter(|s| !s.pending.is_empty())
            .map(|s| {
                let bytes = std::mem::replace(&mut s.pending, Vec::with_capacity(64 * 1024));
                PageWrite {
                    file: Arc::clone(&s.file),
                    offset: s.len - bytes.len() as u64,
                    bytes,
                }
            })
            .collect();
        self.drop_empty();
        writes
    }

    /// The reads that bring back bodies `seqs` (consecutive bodies of a segment in one
    /// read), and the seqs that are not in the page file.
    pub fn plan_read(&self, seqs: &[u64]) -> (PageRead, Vec<u64>) {
        let mut located: Vec<(usize, Slot)> = Vec::with_capacity(seqs.len());
        let mut missing = Vec::new();
        for &seq in seqs {
            match self.locate(seq) {
                Some((i, j)) => located.push((i, self.segments[i].slots[j])),
                None => missing.push(seq),
            }
        }
        located.sort_unstable_by_key(|&(i, (_, offset, _))| (i, offset));
        let mut runs: Vec<Run> = Vec::new();
        for (i, (seq, offset, len)) in located {
            let (offset, len) = (u64::from(offset), u64::from(len));
            let segment = &self.segments[i];
            // Bodies not written yet are read from the buffer (the owner normally
            // loads only what a finished write stored, but a read must never see
            // zeros); a run never mixes the two.
            let written = segment.len - segment.pending.len() as u64;
            let unwritten = offset >= written;
            match runs.last_mut() {
                Some(run)
                    if run.segment == i
                        && run.offset + run.len == offset
                        && run.len + len <= MAX_RUN_BYTES
                        && run.unwritten == unwritten =>
                {
                    run.bodies.push((seq, run.len as usize, len as usize));
                    run.len += len;
                }
                _ => runs.push(Run {
                    segment: i,
                    file: Arc::clone(&segment.file),
                    offset,
                    len,
                    bodies: vec![(seq, 0, len as usize)],
                    unwritten,
                    pending: None,
                }),
            }
        }
        for run in runs.iter_mut().filter(|r| r.unwritten) {
            let s = &self.segments[run.segment];
            let written = s.len - s.pending.len() as u64;
            let from = (run.offset - written) as usize;
            run.pending = Some(s.pending[from..from + run.len as usize].to_vec());
        }
        (PageRead { runs }, missing)
    }
}

/// Largest single read.
const MAX_RUN_BYTES: u64 = 4 * 1024 * 1024;

/// Why [`PageFile::append`] did not take a body. Nothing of the body stays in the
/// page file, so the caller can store it elsewhere (a queue writes it to redb).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError<E> {
    /// The caller's `encode` closure failed; its error is passed on as is.
    #[error("cannot encode the body: {0}")]
    Encode(#[source] E),
    /// A body with this seq is already in the page file; taking a second one
    /// would leave two copies under one seq.
    #[error("body {0} is already paged out")]
    Duplicate(u64),
    /// A new segment file could not be created, or the body does not fit in a
    /// segment (offsets and lengths are 32 bits).
    #[error("cannot create a page segment: {0}")]
    Io(#[source] io::Error),
}

/// Bytes to write at an offset of a segment.
pub struct PageWrite {
    file: Arc<SegmentFile>,
    offset: u64,
    bytes: Vec<u8>,
}

impl PageWrite {
    /// Writes (blocking; no fsync).
    pub fn perform(self) -> io::Result<()> {
        self.file.file.write_all_at(&self.bytes, self.offset)
    }
}

struct Run {
    segment: usize,
    file: Arc<SegmentFile>,
    offset: u64,
    len: u64,
    /// (seq, offset in the run, length).
    bodies: Vec<(u64, usize, usize)>,
    unwritten: bool,
    /// The run's bytes when they were still in the write buffer.
    pending: Option<Vec<u8>>,
}

/// Reads of bodies, planned by [`PageFile::plan_read`].
#[derive(Default)]
pub struct PageRead {
    runs: Vec<Run>,
}

impl PageRead {
    /// Whether there is nothing to read (none of the seqs asked was in the page
    /// file), so the caller need not hand it to a blocking task.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The bodies it reads.
    pub fn seqs(&self) -> Vec<u64> {
        self.runs
            .iter()
            .flat_map(|r| r.bodies.iter().map(|b| b.0))
            .collect()
    }

    /// Reads (blocking) and hands each body to `f` as (seq, bytes).
    pub fn perform(self, mut f: impl FnMut(u64, &[u8])) -> io::Result<()> {
        for run in self.runs {
            let buf = match run.pending {
                Some(bytes) => bytes,
                None => {
                    let mut buf = vec![0u8; run.len as usize];
                    run.file.file.read_exact_at(&mut buf, run.offset)?;
                    buf
                }
            };
            for (seq, at, len) in run.bodies {
                f(seq, &buf[at..at + len]);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(p: &mut PageFile, seq: u64, body: &[u8]) {
        p.append::<std::convert::Infallible>(seq, |out| {
            out.extend_from_slice(body);
            Ok(())
        })
        .unwrap();
    }

    fn flush(p: &mut PageFile) {
        for w in p.take_writes() {
            w.perform().unwrap();
        }
    }

    fn read(p: &PageFile, seqs: &[u64]) -> (Vec<(u64, Vec<u8>)>, Vec<u64>) {
        let (plan, missing) = p.plan_read(seqs);
        let mut got = Vec::new();
        plan.perform(|seq, b| got.push((seq, b.to_vec()))).unwrap();
        got.sort();
        (got, missing)
    }

    fn files(dir: &Path) -> usize {
        std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
    }

    #[test]
    fn bodies_come_back_as_written_and_missing_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = PageFile::open(dir.path(), 7).unwrap();
        for seq in 1..=100u64 {
            put(&mut p, seq, &vec![seq as u8; seq as usize]);
        }
        flush(&mut p);
        let (got, missing) = read(&p, &[3, 50, 51, 52, 100, 101]);
        assert_eq!(missing, vec![101]);
        assert_eq!(got.len(), 5);
        for (seq, b) in got {
            assert_eq!(b, vec![seq as u8; seq as usize]);
        }
        assert_eq!(p.len(), 100);
    }

    #[test]
    fn unwritten_bodies_read_from_the_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = PageFile::open(dir.path(), 1).unwrap();
        put(&mut p, 1, b"one");
        flush(&mut p);
        put(&mut p, 2, b"two");
        put(&mut p, 3, b"three");
        let (got, _) = read(&p, &[1, 2, 3]);
        assert_eq!(
            got,
            vec![
                (1, b"one".to_vec()),
                (2, b"two".to_vec()),
                (3, b"three".to_vec())
            ]
        );
    }

    #[test]
    fn segments_roll_and_are_deleted_once_empty() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = PageFile::open(dir.path(), 3).unwrap();
        let body = vec![b'x'; 64 * 1024];
        let n = (3 * SEGMENT_BYTES / body.len() as u64) + 1;
        for seq in 0..n {
            put(&mut p, seq, &body);
            if seq % 10 == 0 {
                flush(&mut p);
            }
        }
        flush(&mut p);
        let before = p.segments();
        assert!(before >= 3, "{before} segments");
        assert_eq!(files(dir.path()), p.segments());
        // Consume the first half: the first segments go.
        for seq in 0..n / 2 {
            assert!(p.remove(seq));
        }
        assert!(!p.remove(0), "removed twice");
        assert_eq!(files(dir.path()), p.segments());
        assert!(p.segments() < before);
        let (got, missing) = read(&p, &[n / 2, n - 1]);
        assert!(missing.is_empty());
        assert_eq!(got.len(), 2);
        for seq in n / 2..n {
            p.remove(seq);
        }
        assert!(p.is_empty());
        assert_eq!(files(dir.path()), 0);
        // Appended and removed before any write: gone with the next flush.
        put(&mut p, n, &body);
        assert!(p.remove(n));
        assert_eq!(files(dir.path()), 1);
        let writes = p.take_writes();
        assert_eq!(writes.len(), 1);
        for w in writes {
            w.perform().unwrap();
        }
        assert_eq!(files(dir.path()), 0);
        put(&mut p, n + 1, &body);
        p.clear();
        assert_eq!(files(dir.path()), 0);
    }

    #[test]
    fn out_of_order_appends_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = PageFile::open(dir.path(), 2).unwrap();
        put(&mut p, 10, b"ten");
        put(&mut p, 12, b"twelve");
        put(&mut p, 11, b"eleven");
        assert!(p.append::<()>(12, |_| Ok(())).is_err());
        flush(&mut p);
        let (got, missing) = read(&p, &[11, 12, 10]);
        assert!(missing.is_empty());
        assert_eq!(
            got,
            vec![
                (10, b"ten".to_vec()),
                (11, b"eleven".to_vec()),
                (12, b"twelve".to_vec())
            ]
        );
    }

    #[test]
    fn opening_removes_what_an_earlier_incarnation_left() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = PageFile::open(dir.path(), 5).unwrap();
        put(&mut p, 1, b"a");
        flush(&mut p);
        let mut other = PageFile::open(dir.path(), 55).unwrap();
        put(&mut other, 1, b"b");
        flush(&mut other);
        std::mem::forget(p); // a crash: nothing dropped
        assert_eq!(files(dir.path()), 2);
        let again = PageFile::open(dir.path(), 5).unwrap();
        assert!(again.is_empty());
        assert_eq!(files(dir.path()), 1, "queue 55's segment stays");
        clear_directory(dir.path()).unwrap();
        assert!(!dir.path().exists());
        clear_directory(dir.path()).unwrap();
    }

    #[test]
    fn a_new_incarnation_keeps_its_segments_when_the_old_one_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut old = PageFile::open(dir.path(), 4).unwrap();
        put(&mut old, 1, b"old");
        flush(&mut old);
        let (in_flight, _) = old.plan_read(&[1]);
        drop(old); // a crash: only the read in flight holds the old segment
        let mut new = PageFile::open(dir.path(), 4).unwrap();
        put(&mut new, 1, b"new");
        flush(&mut new);
        drop(in_flight);
        assert_eq!(files(dir.path()), 1, "the new incarnation's segment stays");
        assert_eq!(read(&new, &[1]).0, vec![(1, b"new".to_vec())]);
    }

    #[test]
    fn a_read_in_flight_survives_the_segment_being_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = PageFile::open(dir.path(), 9).unwrap();
        put(&mut p, 1, b"kept");
        flush(&mut p);
        let (plan, _) = p.plan_read(&[1]);
        p.clear();
        assert_eq!(files(dir.path()), 1, "the read still holds it");
        let mut got = Vec::new();
        plan.perform(|_, b| got.extend_from_slice(b)).unwrap();
        assert_eq!(got, b"kept");
        assert_eq!(files(dir.path()), 0);
    }
}
