//! A node that dies without closing its store (kill -9, panic=abort): durable
//! batches and every id they mention survive, and the file opens again. And the
//! fault-injection hook (`WARREN_FAULT_ABORT_IN_COMMIT`) aborts in the middle of
//! the durable commit it names, leaving a file without that commit.
//!
//! The tests re-run their own binary as the child that writes and then dies
//! without running destructors, since a redb file cannot be opened twice in one
//! process.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;

mod common;

use warren_storage::{Batch, MetaTable, Op, Store, FAULT_ABORT_IN_COMMIT_ENV};

const CHILD_ENV: &str = "WARREN_STORAGE_CRASH_CHILD";
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
    common::die();
}

#[test]
fn durable_batches_and_their_ids_survive_a_crash() {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&path));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("warren.redb");
    common::crash(common::rerun(TEST_NAME).env(CHILD_ENV, &path), "the child");

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

const ABORT_CHILD_ENV: &str = "WARREN_STORAGE_ABORT_CHILD";
/// The child's exit code if the hook let it finish.
const NEVER_ABORTED: i32 = 4;
const ABORT_TEST_NAME: &str = "the_fault_hook_aborts_in_the_middle_of_the_durable_commit_it_names";

fn put(seq: u64) -> Op {
    Op::PutMessage {
        queue: 1,
        seq,
        index: vec![seq as u8],
        body: vec![0xC0; 64],
    }
}

/// What the child does, run with the hook set to 3: two durable commits that
/// count, two that do not (the non-durable one, the empty flush), then a third
/// durable commit of four ops that the hook aborts in.
fn aborting_child(path: &Path) -> ! {
    let store = Store::open(path).expect("child open");
    store
        .submit(Batch::durable(vec![put(1)]))
        .wait()
        .expect("durable commit 1");
    // Not counted: a commit that is not durable, and the empty durable commit
    // that only makes it durable.
    store
        .submit(Batch::non_durable(vec![put(2)]))
        .wait()
        .expect("non-durable commit");
    store.flush().wait().expect("flush");
    store
        .submit(Batch::durable(vec![put(3)]))
        .wait()
        .expect("durable commit 2");
    // Durable commit 3: the hook aborts after two of its four ops.
    let _ = store
        .submit(Batch::durable((10..14).map(put).collect()))
        .wait();
    std::process::exit(NEVER_ABORTED);
}

#[test]
fn the_fault_hook_aborts_in_the_middle_of_the_durable_commit_it_names() {
    if let Some(path) = std::env::var_os(ABORT_CHILD_ENV) {
        aborting_child(Path::new(&path));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("warren.redb");
    let mut child = common::rerun(ABORT_TEST_NAME);
    child
        .env(ABORT_CHILD_ENV, &path)
        .env(FAULT_ABORT_IN_COMMIT_ENV, "3");
    // The abort is on purpose: no core file of it.
    // SAFETY: setrlimit is async-signal-safe, and nothing else runs between
    // fork and exec.
    unsafe {
        child.pre_exec(|| {
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::setrlimit(libc::RLIMIT_CORE, &none) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = child.status().expect("spawn child");
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "the hook must abort the child in durable commit 3 (status {status})"
    );

    let store = Store::open(&path).expect("open after the abort");
    let mut seqs = Vec::new();
    store
        .for_each_index(1, |seq, _| seqs.push(seq))
        .expect("index");
    assert_eq!(
        seqs,
        [1, 2, 3],
        "the commits before the aborted one are kept, none of the aborted one's ops"
    );
}
