//! The journal beside the data file (`warren.redb.journal`): small durable groups
//! are fsynced there, and opening the store after a crash applies them, once
//! each, in order, even after a second crash that followed the first replay.
//!
//! The tests re-run their own binary as the child that writes and then dies
//! without running destructors (a redb file cannot be opened twice in one
//! process).

use std::path::Path;

mod common;
use std::time::Duration;

use warren_storage::{Batch, Op, Store, StoreOptions};

const CHILD_ENV: &str = "WARREN_JOURNAL_CHILD";
const ROUND_ENV: &str = "WARREN_JOURNAL_ROUND";
const TEST_NAME: &str = "journaled_writes_survive_two_crashes_in_a_row_applied_once_each";
const QUEUE: u64 = 1;

fn put(seq: u64, fill: u8) -> Op {
    Op::PutMessage {
        queue: QUEUE,
        seq,
        index: vec![seq as u8],
        body: vec![fill; 200],
    }
}

/// Options under which nothing but the open commits to the data file durably:
/// every write of the child stays in the journal until the crash.
fn journal_only() -> StoreOptions {
    let mut options = StoreOptions::default();
    options.flush_interval = Duration::from_secs(3600);
    options
}

/// Round 1: thirty durable puts of body `A`, each its own group, with a
/// non-durable index update between two of them. Round 2 (after round 1's
/// crash and the replay at its open): one durable put over seq 1 with body `B`,
/// a record exactly as long as round 1's first, so that round 1's second record
/// lies right behind it in the file.
fn child(path: &Path, round: u32) -> ! {
    let store = Store::open_with(path, journal_only()).expect("child open");
    match round {
        1 => {
            for seq in 0..30 {
                store
                    .submit(Batch::durable(vec![put(seq, b'A')]))
                    .wait()
                    .expect("durable put");
                if seq == 10 {
                    store
                        .submit(Batch::non_durable(vec![Op::UpdateIndex {
                            queue: QUEUE,
                            seq: 3,
                            index: vec![99],
                        }]))
                        .wait()
                        .expect("non-durable update");
                }
            }
        }
        _ => {
            store
                .submit(Batch::durable(vec![put(1, b'B')]))
                .wait()
                .expect("durable overwrite");
        }
    }
    let stats = store.stats();
    assert_eq!(
        stats.fsyncs, 0,
        "the child's writes all went to the journal"
    );
    assert!(stats.journal_syncs > 0);
    common::die();
}

fn run_child(path: &Path, round: u32) {
    common::crash(
        common::rerun(TEST_NAME)
            .env(CHILD_ENV, path)
            .env(ROUND_ENV, round.to_string()),
        &format!("child round {round}"),
    );
}

#[test]
fn journaled_writes_survive_two_crashes_in_a_row_applied_once_each() {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        let round = std::env::var(ROUND_ENV)
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(1);
        child(Path::new(&path), round);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("warren.redb");
    run_child(&path, 1);
    run_child(&path, 2);

    // Opened without writing a journal: one left behind is still applied.
    let mut options = StoreOptions::default();
    options.journal = false;
    let store = Store::open_with(&path, options).expect("open after two crashes");
    let mut indexes = Vec::new();
    store
        .for_each_index(QUEUE, |seq, index| indexes.push((seq, index.to_vec())))
        .expect("index");
    let seqs: Vec<u64> = indexes.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (0..30).collect::<Vec<_>>(), "every durable put");
    assert_eq!(
        indexes[3].1,
        vec![99],
        "the non-durable update between durable puts was made durable by the next one"
    );
    let bodies = store.read_bodies(QUEUE, &[0, 1, 2]).expect("bodies");
    let fills: Vec<u8> = bodies.iter().map(|(_, body)| body[0]).collect();
    assert_eq!(
        fills,
        vec![b'A', b'B', b'A'],
        "round 2's overwrite stays: round 1's records behind it were not applied again"
    );
}

#[test]
fn a_small_durable_batch_is_fsynced_in_the_journal_and_a_large_one_in_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("warren.redb")).expect("open");
    let before = store.stats();
    store
        .submit(Batch::durable(vec![put(0, b'A')]))
        .wait()
        .expect("small");
    let after_small = store.stats();
    assert_eq!(after_small.journal_syncs, before.journal_syncs + 1);
    assert_eq!(after_small.fsyncs, before.fsyncs);

    // Over the journal's 1 MiB limit for a durable group: 6 000 × 200 B bodies.
    let large: Vec<Op> = (1..=6_000).map(|seq| put(seq, b'L')).collect();
    store.submit(Batch::durable(large)).wait().expect("large");
    let after_large = store.stats();
    assert_eq!(after_large.journal_syncs, after_small.journal_syncs);
    assert_eq!(after_large.fsyncs, after_small.fsyncs + 1);
}

#[test]
fn a_read_sees_every_write_answered_before_it_while_the_writer_holds_them_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("warren.redb")).expect("open");
    for seq in 0..200 {
        store
            .submit(Batch::durable(vec![put(seq, b'R')]))
            .wait()
            .expect("put");
        let mut last = None;
        store
            .for_each_index(QUEUE, |seq, _| last = Some(seq))
            .expect("index");
        assert_eq!(
            last,
            Some(seq),
            "a read right after the answer sees the write"
        );
        let body = store.read_bodies(QUEUE, &[seq]).expect("body");
        assert_eq!(body.len(), 1);
    }
    let stats = store.stats();
    assert_eq!(stats.journal_syncs, 200);
}

const CHECKPOINT_CHILD_ENV: &str = "WARREN_JOURNAL_CHECKPOINT_CHILD";
const CHECKPOINT_TEST_NAME: &str = "durable_writes_across_checkpoints_survive_a_crash";
const CHECKPOINT_PUTS: u64 = 4_000;

/// Four megabytes of durable 1 KiB puts, one per batch, from two threads: the
/// writer makes several checkpoints on their own thread meanwhile (one per
/// megabyte), and the child dies wherever the last one is.
fn checkpoint_child(path: &Path) -> ! {
    let store = Store::open(path).expect("child open");
    let threads: Vec<_> = (0..2u64)
        .map(|queue| {
            let store = store.clone();
            std::thread::spawn(move || {
                for seq in 0..CHECKPOINT_PUTS / 2 {
                    store
                        .submit(Batch::durable(vec![Op::PutMessage {
                            queue: 10 + queue,
                            seq,
                            index: vec![1],
                            body: vec![b'C'; 1024],
                        }]))
                        .wait()
                        .expect("durable put");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("writer thread");
    }
    assert!(
        store.stats().fsyncs >= 2,
        "checkpoints ran: {:?}",
        store.stats()
    );
    common::die();
}

#[test]
fn durable_writes_across_checkpoints_survive_a_crash() {
    if let Some(path) = std::env::var_os(CHECKPOINT_CHILD_ENV) {
        checkpoint_child(Path::new(&path));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("warren.redb");
    common::crash(
        common::rerun(CHECKPOINT_TEST_NAME).env(CHECKPOINT_CHILD_ENV, &path),
        "the child",
    );
    let store = Store::open(&path).expect("open after the crash");
    for queue in [10, 11] {
        let mut seqs = Vec::new();
        store
            .for_each_index(queue, |seq, _| seqs.push(seq))
            .expect("index");
        assert_eq!(
            seqs,
            (0..CHECKPOINT_PUTS / 2).collect::<Vec<_>>(),
            "queue {queue}: every acknowledged put, once"
        );
    }
}

#[test]
fn a_store_opened_without_the_journal_writes_none_though_its_files_exist() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("warren.redb");
    drop(Store::open(&path).expect("with the journal"));
    let mut options = StoreOptions::default();
    options.journal = false;
    let store = Store::open_with(&path, options).expect("without");
    store
        .submit(Batch::durable(vec![put(0, b'N')]))
        .wait()
        .expect("durable put");
    let stats = store.stats();
    assert_eq!(stats.journal_syncs, 0, "{stats:?}");
    assert_eq!(
        stats.fsyncs, 1,
        "a durable commit of the data file: {stats:?}"
    );
}
