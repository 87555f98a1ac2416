//! Power cuts, simulated: a disk that keeps only what was synced, plus any part of
//! what was written after, and a seeded test that cuts the power under a working
//! store and checks that every write it answered as durable is there after.
//!
//! A kill -9 keeps the kernel's page cache, so it never tests what `fdatasync`
//! promises. Here the data file (through redb's [`StorageBackend`]) and the two
//! journal files (through [`JournalFile`]) live on a [`Disk`]. At the cut, each file
//! becomes what its last sync left, with each 512-byte piece of every later write
//! kept or lost at random, in any order: torn records, pages of a commit half on the
//! disk, a file that grew or not. The store then opens on that image as a node that
//! restarts after the cut would, and must hold every confirmed write, unchanged, and
//! every write submitted before one (a durable commit makes what came before it
//! durable too, as the store promises: the non-durable writes before a confirmed one
//! may not be lost while it is kept).
//!
//! Each seed runs three generations (a store on the image the last cut left, more
//! writes, another cut), so that recovery from the journal of an earlier run is cut
//! too. `WARREN_POWER_CUT_SEEDS` sets how many seeds (default 24); a failure names
//! its seed (`WARREN_POWER_CUT_SEED=N` runs that one). A seed fixes the workload,
//! the options and where each cut comes; what the store's threads had written by
//! then, and so the sectors a cut keeps, may differ from run to run.
//!
//! Each generation draws its options: mostly the node's defaults, a fifth of them
//! without the journal, a fifth with redb's quick repair.
//!
//! What the model does not cover: files and directories are never lost (creating the
//! journal files and the data file, and fsyncing their directory, are not tested
//! here), and the writes are puts of new messages and appends of chunks to three
//! partitions (held for the checkpoint and stored as runs, `runs.rs`), with reads
//! of the partitions now and then (which store what is held at once), but no
//! removals.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redb::StorageBackend;

use crate::batch::{Batch, Op};
use crate::journal::JournalFile;
use crate::open::open_backend_with_journal;
use crate::options::StoreOptions;
use crate::store::Store;

/// What reaches the disk in one piece: a sector.
const SECTOR: u64 = 512;

/// How long the data file's fsync takes.
const DATA_SYNC: Duration = Duration::from_millis(2);

/// A write or length change not synced yet.
#[derive(Clone, Debug)]
enum Unsynced {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

/// One file: what reads see, what the last sync made durable, and what came since.
#[derive(Clone, Debug, Default)]
struct FileState {
    seen: Vec<u8>,
    synced: Vec<u8>,
    since: Vec<Unsynced>,
}

fn write_into(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let end = offset as usize + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[offset as usize..end].copy_from_slice(bytes);
}

/// A small seeded generator (splitmix64): the same seed, the same choices.
pub(crate) struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Files by name, shared by the handles the store holds.
#[derive(Clone, Debug, Default)]
pub(crate) struct Disk {
    // (Ordered: a cut draws for the files in the same order in every run.)
    files: Arc<Mutex<BTreeMap<&'static str, FileState>>>,
}

impl Disk {
    fn with<T>(&self, name: &'static str, f: impl FnOnce(&mut FileState) -> T) -> T {
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        f(files.entry(name).or_default())
    }

    fn file(&self, name: &'static str) -> DiskFile {
        self.with(name, |_| ());
        DiskFile {
            disk: self.clone(),
            name,
        }
    }

    /// The disk as a power cut now leaves it: each file as synced, then each sector
    /// of each later write kept or lost at random, and each length change kept or
    /// lost. Everything on the new disk counts as synced.
    fn cut(&self, rng: &mut Rng) -> Disk {
        let files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        let mut after = BTreeMap::new();
        for (name, file) in files.iter() {
            let mut data = file.synced.clone();
            for unsynced in &file.since {
                match unsynced {
                    Unsynced::SetLen(len) => {
                        if rng.chance(50) {
                            data.resize(*len as usize, 0);
                        }
                    }
                    Unsynced::Write { offset, bytes } => {
                        let end = offset + bytes.len() as u64;
                        let mut at = *offset;
                        while at < end {
                            let piece_end = ((at / SECTOR + 1) * SECTOR).min(end);
                            if rng.chance(50) {
                                let from = (at - offset) as usize;
                                let to = (piece_end - offset) as usize;
                                write_into(&mut data, at, &bytes[from..to]);
                            }
                            at = piece_end;
                        }
                    }
                }
            }
            after.insert(
                *name,
                FileState {
                    seen: data.clone(),
                    synced: data,
                    since: Vec::new(),
                },
            );
        }
        Disk {
            files: Arc::new(Mutex::new(after)),
        }
    }
}

/// One file of a [`Disk`].
#[derive(Debug)]
struct DiskFile {
    disk: Disk,
    name: &'static str,
}

impl DiskFile {
    fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.disk.with(self.name, |file| {
            let end = offset as usize + out.len();
            let Some(bytes) = file.seen.get(offset as usize..end) else {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{}: read past the end", self.name),
                ));
            };
            out.copy_from_slice(bytes);
            Ok(())
        })
    }

    fn write_at(&self, offset: u64, bytes: &[u8]) {
        self.disk.with(self.name, |file| {
            write_into(&mut file.seen, offset, bytes);
            file.since.push(Unsynced::Write {
                offset,
                bytes: bytes.to_vec(),
            });
        });
    }

    fn sync(&self) {
        self.sync_first(usize::MAX);
    }

    /// Makes the first `count` writes since the last sync durable (a sync covers
    /// what was written before it started, not what comes while it runs).
    fn sync_first(&self, count: usize) {
        self.disk.with(self.name, |file| {
            let count = count.min(file.since.len());
            // (What was written since, replayed: cheaper than copying the file.)
            for unsynced in file.since.drain(..count) {
                match unsynced {
                    Unsynced::SetLen(len) => file.synced.resize(len as usize, 0),
                    Unsynced::Write { offset, bytes } => {
                        write_into(&mut file.synced, offset, &bytes)
                    }
                }
            }
        });
    }

    fn length(&self) -> u64 {
        self.disk.with(self.name, |file| file.seen.len() as u64)
    }
}

impl StorageBackend for DiskFile {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.length())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.read_at(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.disk.with(self.name, |file| {
            file.seen.resize(len as usize, 0);
            file.since.push(Unsynced::SetLen(len));
        });
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        // The data file's fsync takes a while, as on a disk: a cut often comes
        // while a checkpoint commits on its own thread and the journal goes on.
        let before = self.disk.with(self.name, |file| file.since.len());
        std::thread::sleep(DATA_SYNC);
        self.sync_first(before);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.write_at(offset, data);
        Ok(())
    }
}

impl JournalFile for DiskFile {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_at(offset, buf);
        Ok(())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.read_at(offset, buf)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync();
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.length())
    }
}

/// The queue the test writes, and where it lives.
const QUEUE: u64 = 7;

fn path() -> PathBuf {
    PathBuf::from("/power-cut/warren.redb")
}

/// A store on `disk` (its data file and journal created if new).
fn open(disk: &Disk, options: &StoreOptions) -> Store {
    let files: [Box<dyn JournalFile>; 2] = [
        Box::new(disk.file("journal.0")),
        Box::new(disk.file("journal.1")),
    ];
    let opened = open_backend_with_journal(&path(), options, disk.file("data"), files)
        .unwrap_or_else(|err| panic!("the store does not open after the cut: {err}"));
    Store::start(path(), opened, options).expect("the writer starts")
}

/// The body of message `seq`: its length and bytes follow from it, so a body
/// brought back changed is seen.
fn body(seq: u64, rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(100) {
        // Now and then a group over the journal's limit, straight to redb.
        0..=1 => 1_200_000 + rng.below(200_000) as usize,
        2..=11 => 16_384 + rng.below(65_536) as usize,
        _ => 16 + rng.below(2_000) as usize,
    };
    (0..len).map(|i| (seq as usize * 31 + i) as u8).collect()
}

/// The partitions chunks are appended to.
const PARTITIONS: u64 = 3;

/// What the test wrote: every message's body, every chunk (by its first offset, a
/// write's seq: increasing in each partition) with its partition, and the last
/// write answered as durable.
#[derive(Default)]
struct Written {
    bodies: BTreeMap<u64, Vec<u8>>,
    chunks: BTreeMap<u64, (u64, Vec<u8>)>,
    durable_through: u64,
}

/// Every chunk of the test's partitions, by first offset, as `store` reads them.
fn stored_chunks(store: &Store) -> BTreeMap<u64, (u64, Vec<u8>)> {
    let mut chunks = BTreeMap::new();
    for partition in 0..PARTITIONS {
        let read = store
            .partition_chunks(partition, 0, usize::MAX)
            .expect("chunks read");
        for (first, chunk) in read {
            let earlier = chunks.insert(first, (partition, chunk));
            assert!(earlier.is_none(), "chunk {first} is stored twice");
        }
    }
    chunks
}

/// Checks that `store` holds every message and chunk up to the last write answered
/// as durable (before the cut that made its disk), each as written. Of the writes
/// after that one, kept or lost are both right: `written` keeps what the store holds,
/// and the test goes on from there.
fn check(store: &Store, written: &mut Written) {
    let seqs: Vec<u64> = written.bodies.keys().copied().collect();
    let found: BTreeMap<u64, Vec<u8>> = store
        .read_bodies(QUEUE, &seqs)
        .expect("bodies read")
        .into_iter()
        .collect();
    kept("message", &written.bodies, &found, written.durable_through);
    // What the cut took after the last durable one is gone for good.
    written.bodies.retain(|seq, _| found.contains_key(seq));
    let found = stored_chunks(store);
    kept("chunk", &written.chunks, &found, written.durable_through);
    written.chunks.retain(|first, _| found.contains_key(first));
}

/// Checks what a store holds (`found`, by seq) against what was written: every write
/// up to `durable_through` is there, each as written, and nothing that was not
/// written (or was lost to an earlier cut) is.
fn kept<V: PartialEq>(
    what: &str,
    written: &BTreeMap<u64, V>,
    found: &BTreeMap<u64, V>,
    durable_through: u64,
) {
    for (seq, want) in written {
        match found.get(seq) {
            None if *seq <= durable_through => panic!(
                "{what} {seq} is gone after the cut, and write {durable_through} was \
                 answered as durable after it"
            ),
            Some(got) if got != want => panic!("{what} {seq} came back changed"),
            _ => {}
        }
    }
    for seq in found.keys() {
        assert!(
            written.contains_key(seq),
            "{what} {seq} is stored, and was never written (or lost before)"
        );
    }
}

/// One generation: a store on `disk`, checked; then up to 200 more batches, some
/// durable, up to `in_flight` at once, and a cut (its sectors drawn from `cuts`)
/// after a random number of them. Returns the disk the cut left.
fn generation(
    disk: &Disk,
    rng: &mut Rng,
    cuts: &mut Rng,
    written: &mut Written,
    next_seq: &mut u64,
) -> Disk {
    // Mostly the node's defaults; now and then without the journal (every durable
    // write a durable commit of the data file), or with redb's quick repair.
    let options = StoreOptions {
        flush_interval: Duration::from_millis([1, 10, 1000][rng.below(3) as usize]),
        journal: !rng.chance(20),
        quick_repair: rng.chance(20),
        ..StoreOptions::default()
    };
    let store = open(disk, &options);
    check(&store, written);
    let writes = 40 + rng.below(160);
    let cut_after = rng.below(writes);
    // Alone or many at once; mostly durable, or mostly not.
    let in_flight = [1, 4, 48][rng.below(3) as usize];
    let durable_percent = [30, 85][rng.below(2) as usize];
    let mut waiting = VecDeque::new();
    for i in 0..writes {
        let seq = *next_seq;
        *next_seq += 1;
        let durable = rng.chance(durable_percent);
        let body = body(seq, rng);
        let op = if rng.chance(50) {
            let partition = rng.below(PARTITIONS);
            written.chunks.insert(seq, (partition, body.clone()));
            Op::AppendChunk {
                partition,
                first: seq,
                time_index: None,
                chunk: body,
                keys: Vec::new(),
            }
        } else {
            written.bodies.insert(seq, body.clone());
            Op::PutMessage {
                queue: QUEUE,
                seq,
                index: seq.to_le_bytes().to_vec(),
                body,
            }
        };
        let batch = if durable {
            Batch::durable(vec![op])
        } else {
            Batch::non_durable(vec![op])
        };
        waiting.push_back((seq, durable, store.submit(batch)));
        if rng.chance(3) {
            // A read of a partition stores what is held back for it at once.
            store
                .partition_chunks(rng.below(PARTITIONS), 0, 1)
                .expect("a read of a partition");
        }
        while waiting.len() > in_flight {
            settle(waiting.pop_front(), written);
        }
        if i == cut_after {
            // Only what was answered before the cut counts.
            let cut = disk.cut(cuts);
            drop(waiting);
            store.close();
            return cut;
        }
    }
    unreachable!("the cut comes before the last write")
}

/// Waits for a write's answer; a durable one answered `Ok` is confirmed, and so
/// is everything written before it.
fn settle(write: Option<(u64, bool, crate::Commit)>, written: &mut Written) {
    if let Some((seq, durable, commit)) = write {
        let answer = commit.wait();
        assert!(answer.is_ok(), "message {seq}: {answer:?}");
        if durable {
            written.durable_through = seq;
        }
    }
}

fn run(seed: u64) {
    // The workload and the cut points come from one generator, the sectors a cut
    // keeps from another: how many writes a cut finds unsynced depends on how far
    // the store's threads got, and must not change the workload after it.
    let mut rng = Rng(seed);
    let mut cuts = Rng(seed ^ 0x5eed_c07f_00d5_eed5);
    let mut disk = Disk::default();
    let mut written = Written::default();
    let mut next_seq = 1;
    for _ in 0..3 {
        disk = generation(&disk, &mut rng, &mut cuts, &mut written, &mut next_seq);
    }
    // The last cut's image, opened and checked like the others.
    let store = open(&disk, &StoreOptions::default());
    check(&store, &mut written);
    store.close();
}

#[test]
fn a_power_cut_loses_no_write_answered_as_durable() {
    let seeds: Vec<u64> = match std::env::var("WARREN_POWER_CUT_SEED") {
        Ok(seed) => vec![seed.parse().expect("WARREN_POWER_CUT_SEED is a number")],
        Err(_) => {
            let count = std::env::var("WARREN_POWER_CUT_SEEDS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(24);
            (0..count).collect()
        }
    };
    for seed in seeds {
        let outcome = std::panic::catch_unwind(|| run(seed));
        if let Err(payload) = outcome {
            eprintln!("power-cut seed {seed} failed (WARREN_POWER_CUT_SEED={seed} runs it alone)");
            std::panic::resume_unwind(payload);
        }
    }
}

/// The model itself: synced bytes survive, later ones may not, and a cut keeps
/// whole sectors only.
#[test]
fn the_disk_keeps_what_was_synced_and_pieces_of_the_rest() {
    let disk = Disk::default();
    let file = disk.file("f");
    file.write_at(0, &[1; 1024]);
    file.sync();
    file.write_at(512, &[2; 1024]);
    let mut kept_new = false;
    let mut lost_new = false;
    for seed in 0..64 {
        let after = disk.cut(&mut Rng(seed)).file("f");
        let mut first = vec![0; 512];
        after.read_at(0, &mut first).unwrap();
        assert_eq!(first, vec![1; 512], "synced bytes survive");
        let len = after.length();
        assert!(len == 1024 || len == 1536, "{len}");
        let mut second = vec![0; 512];
        after.read_at(512, &mut second).unwrap();
        assert!(
            second == vec![1; 512] || second == vec![2; 512],
            "a sector is whole"
        );
        kept_new |= second == vec![2; 512];
        lost_new |= second == vec![1; 512];
    }
    assert!(
        kept_new && lost_new,
        "unsynced sectors are sometimes kept, sometimes not"
    );
}
