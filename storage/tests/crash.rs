//! A node that dies without closing its store (kill -9, panic=abort): durable
//! batches and every id they mention survive, and the file opens again.
//!
//! The test re-runs its own binary as the child that writes and then dies
//! without running destructors, since a redb file cannot be opened twice in one
//! process.

use std::path::Path;
use std::process::Command;

use warren_storage::{Batch, MetaTable, Op, Store};

const CHILD_ENV: &str = "WARREN_STORAGE_CRASH_CHILD";
const CHILD_EXIT: i32 = 3;
const TEST_NAME: &str = "durable_batches_and_their_ids_survive_a_crash";

/// What the child does before dying: allocate ids, store durable batches that
/// mention some of them, then leave a non-durable batch and more ids in flight.
fn child(path: &Path) -> ! {
    let store = Store::open(path).expect("child open");
    let mut last_stored = 0;
    for round in 0..20u64 {
        let queue = store.allocate_id();
        // Ids allocated but never stored: they may be reused, that's allowed.
        let _scratch = store.allocate_id();
        store
            .submit(Batch::durable(vec![
                Op::PutMeta {
                    table: MetaTable::Queues,
                    key: format!("/\u{0}q{round}"),
                    value: queue.to_le_bytes().to_vec(),
                },
                Op::PutMessage {
                    queue,
                    seq: round,
                    index: vec![round as u8],
                    body: vec![0xB0; 512],
                },
            ]))
            .wait()
            .expect("child commit");
        last_stored = queue;
    }
    let _in_flight = store.submit(Batch::non_durable(vec![Op::PutMessage {
        queue: last_stored,
        seq: 1_000,
        index: vec![],
        body: vec![],
    }]));
    // Die like kill -9: no destructors, no close, no final fsync. (exit, not
    // abort, so that no core file is left behind.)
    std::process::exit(CHILD_EXIT);
}

#[test]
fn durable_batches_and_their_ids_survive_a_crash() {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&path));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("warren.redb");
    let status = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", TEST_NAME, "--test-threads=1", "--nocapture"])
        .env(CHILD_ENV, &path)
        .status()
        .expect("spawn child");
    assert_eq!(
        status.code(),
        Some(CHILD_EXIT),
        "the child must reach its crash"
    );

    let store = Store::open(&path).expect("open after crash");
    let queues = store.read_meta(MetaTable::Queues).expect("meta");
    assert_eq!(queues.len(), 20, "every durable batch survived");
    let mut stored_ids = Vec::new();
    for (_, value) in &queues {
        let id = u64::from_le_bytes(value.as_slice().try_into().expect("8 bytes"));
        stored_ids.push(id);
        let mut seqs = Vec::new();
        store
            .for_each_index(id, |seq, _| seqs.push(seq))
            .expect("index");
        assert!(!seqs.is_empty(), "queue {id} lost its message");
    }
    let highest = stored_ids.iter().copied().max().expect("ids");
    for _ in 0..100 {
        let id = store.allocate_id();
        assert!(
            id > highest,
            "id {id} handed out again after the crash (highest stored {highest})"
        );
    }
}
