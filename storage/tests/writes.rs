//! The store's write and read paths through the public API.

use std::thread;
use std::time::{Duration, Instant};

use warren_storage::{Batch, CommitError, MetaTable, Op, ReadError, Store, StoreOptions};

fn put(queue: u64, seq: u64) -> Op {
    Op::PutMessage {
        queue,
        seq,
        index: index_of(queue, seq),
        body: body_of(queue, seq),
    }
}

fn index_of(queue: u64, seq: u64) -> Vec<u8> {
    format!("i{queue}.{seq}").into_bytes()
}

fn body_of(queue: u64, seq: u64) -> Vec<u8> {
    format!("body of {queue}.{seq}").into_bytes()
}

fn indexes(store: &Store, queue: u64) -> Vec<(u64, Vec<u8>)> {
    let mut seen = Vec::new();
    store
        .for_each_index(queue, |seq, index| seen.push((seq, index.to_vec())))
        .expect("index read");
    seen
}

fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("warren.redb")).expect("open");
    (dir, store)
}

#[test]
fn concurrent_submitters_all_see_their_writes_in_fewer_commits() {
    const THREADS: u64 = 32;
    const PER_THREAD: u64 = 40;
    let (_dir, store) = temp_store();
    let before = store.stats();
    let workers: Vec<_> = (0..THREADS)
        .map(|queue| {
            let store = store.clone();
            thread::spawn(move || {
                for seq in 0..PER_THREAD {
                    store
                        .submit(Batch::durable(vec![put(queue, seq)]))
                        .wait()
                        .expect("durable commit");
                    // Read-your-writes: committed means visible.
                    let body = store.read_bodies(queue, &[seq]).expect("read");
                    assert_eq!(body, vec![(seq, body_of(queue, seq))]);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("submitter");
    }
    for queue in 0..THREADS {
        let seen = indexes(&store, queue);
        let expected: Vec<_> = (0..PER_THREAD).map(|s| (s, index_of(queue, s))).collect();
        assert_eq!(seen, expected, "queue {queue}");
    }
    let stats = store.stats();
    let batches = THREADS * PER_THREAD;
    assert_eq!(stats.batches - before.batches, batches);
    assert_eq!(stats.ops - before.ops, batches);
    let commits = stats.commits - before.commits;
    assert!(
        commits < batches,
        "group commit should share commits: {commits} commits for {batches} batches"
    );
    assert!(stats.largest_group > 1, "{stats:?}");
    assert_eq!(stats.failed_commits, 0);
}

#[test]
fn pipelined_batches_from_one_thread_apply_in_order() {
    let (_dir, store) = temp_store();
    let mut commits = Vec::new();
    for seq in 0..200 {
        commits.push(store.submit(Batch::non_durable(vec![put(7, seq)])));
        if seq % 2 == 0 {
            commits.push(store.submit(Batch::non_durable(vec![Op::DeleteMessage {
                queue: 7,
                seq,
            }])));
        }
    }
    commits.push(store.submit(Batch::durable(vec![Op::UpdateIndex {
        queue: 7,
        seq: 1,
        index: b"updated".to_vec(),
    }])));
    for commit in commits {
        commit.wait().expect("commit");
    }
    let seen = indexes(&store, 7);
    assert_eq!(seen.len(), 100);
    assert!(seen.iter().all(|(seq, _)| seq % 2 == 1));
    assert_eq!(seen[0], (1, b"updated".to_vec()));
    assert_eq!(seen[1], (3, index_of(7, 3)));
}

#[test]
fn durable_writes_are_there_after_close_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("data/warren.redb");
    {
        let store = Store::open(&path).expect("open");
        store
            .submit(Batch::durable(vec![
                put(1, 1),
                put(1, 2),
                Op::PutMeta {
                    table: MetaTable::Queues,
                    key: "/\u{0}orders".to_string(),
                    value: vec![1, 2, 3],
                },
            ]))
            .wait()
            .expect("commit");
        store.close();
    }
    let store = Store::open(&path).expect("reopen");
    assert_eq!(
        indexes(&store, 1),
        vec![(1, index_of(1, 1)), (2, index_of(1, 2))]
    );
    assert_eq!(
        store.read_meta(MetaTable::Queues).expect("meta"),
        vec![("/\u{0}orders".to_string(), vec![1, 2, 3])]
    );
}

#[test]
fn non_durable_writes_are_made_durable_on_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("warren.redb");
    {
        let store = Store::open(&path).expect("open");
        let fsyncs = store.stats().fsyncs;
        store
            .submit(Batch::non_durable(vec![put(3, 9)]))
            .wait()
            .expect("commit");
        assert_eq!(
            store.stats().fsyncs,
            fsyncs,
            "non-durable commit must not fsync"
        );
        assert_eq!(
            store.stats().journal_syncs,
            0,
            "non-durable commit must not fsync the journal"
        );
        // Dropping the last handle closes the store.
    }
    let store = Store::open(&path).expect("reopen");
    assert_eq!(indexes(&store, 3), vec![(9, index_of(3, 9))]);
}

#[test]
fn non_durable_writes_are_fsynced_within_the_flush_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut options = StoreOptions::default();
    options.flush_interval = Duration::from_millis(50);
    let store = Store::open_with(dir.path().join("warren.redb"), options).expect("open");
    let fsyncs = store.stats().fsyncs;
    store
        .submit(Batch::non_durable(vec![put(1, 1)]))
        .wait()
        .expect("commit");
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.stats().fsyncs == fsyncs {
        assert!(
            Instant::now() < deadline,
            "no fsync after the flush interval"
        );
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(store.stats().fsyncs, fsyncs + 1);
}

#[test]
fn flush_makes_earlier_non_durable_batches_durable() {
    let (_dir, store) = temp_store();
    // An fsync of the journal or of the data file: either makes it durable.
    let syncs = |store: &Store| store.stats().fsyncs + store.stats().journal_syncs;
    let before = syncs(&store);
    let pending = store.submit(Batch::non_durable(vec![put(1, 1)]));
    store.flush().wait().expect("flush");
    pending.wait().expect("commit");
    assert!(syncs(&store) > before);
}

#[test]
fn delete_queue_messages_removes_exactly_one_queue() {
    let (_dir, store) = temp_store();
    let mut ops = Vec::new();
    for queue in [1u64, 2, 3] {
        for seq in [0, 1, 500, u64::MAX] {
            ops.push(put(queue, seq));
        }
    }
    store.submit(Batch::durable(ops)).wait().expect("commit");
    store
        .submit(Batch::durable(vec![Op::DeleteQueueMessages { queue: 2 }]))
        .wait()
        .expect("commit");
    assert!(indexes(&store, 2).is_empty());
    assert!(store
        .read_bodies(2, &[0, 1, 500, u64::MAX])
        .expect("read")
        .is_empty());
    for queue in [1u64, 3] {
        let seqs: Vec<u64> = indexes(&store, queue).into_iter().map(|(s, _)| s).collect();
        assert_eq!(seqs, vec![0, 1, 500, u64::MAX], "queue {queue}");
        assert_eq!(
            store
                .read_bodies(queue, &[0, u64::MAX])
                .expect("read")
                .len(),
            2
        );
    }
    assert_eq!(store.queues_with_messages().expect("queues"), vec![1, 3]);
}

#[test]
fn for_each_index_yields_numeric_seq_order() {
    let (_dir, store) = temp_store();
    let seqs = [256u64, 1, u64::MAX, 255, 0, 65_536, 2];
    store
        .submit(Batch::durable(seqs.iter().map(|&s| put(4, s)).collect()))
        .wait()
        .expect("commit");
    // A neighbour queue must not leak into the scan.
    store
        .submit(Batch::durable(vec![put(5, 0), put(3, u64::MAX)]))
        .wait()
        .expect("commit");
    let mut sorted = seqs.to_vec();
    sorted.sort_unstable();
    let expected: Vec<_> = sorted.iter().map(|&s| (s, index_of(4, s))).collect();
    assert_eq!(indexes(&store, 4), expected);
}

#[test]
fn read_bodies_returns_stored_ones_in_the_order_asked() {
    let (_dir, store) = temp_store();
    store
        .submit(Batch::durable(vec![put(8, 1), put(8, 2), put(8, 3)]))
        .wait()
        .expect("commit");
    let bodies = store.read_bodies(8, &[3, 99, 1]).expect("read");
    assert_eq!(bodies, vec![(3, body_of(8, 3)), (1, body_of(8, 1))]);
    assert!(store.read_bodies(9, &[1]).expect("read").is_empty());
}

#[test]
fn update_index_replaces_but_never_resurrects() {
    let (_dir, store) = temp_store();
    store
        .submit(Batch::durable(vec![put(1, 1), put(1, 2)]))
        .wait()
        .expect("commit");
    store
        .submit(Batch::durable(vec![
            Op::DeleteMessage { queue: 1, seq: 2 },
            Op::UpdateIndex {
                queue: 1,
                seq: 1,
                index: b"redelivered".to_vec(),
            },
            Op::UpdateIndex {
                queue: 1,
                seq: 2,
                index: b"late".to_vec(),
            },
        ]))
        .wait()
        .expect("commit");
    assert_eq!(indexes(&store, 1), vec![(1, b"redelivered".to_vec())]);
    // The body is untouched by an index update, and gone with the delete.
    assert_eq!(
        store.read_bodies(1, &[1, 2]).expect("read"),
        vec![(1, body_of(1, 1))]
    );
}

#[test]
fn meta_tables_are_separate_and_sorted_by_key() {
    let (_dir, store) = temp_store();
    let meta = |table, key: &str, value: &[u8]| Op::PutMeta {
        table,
        key: key.to_string(),
        value: value.to_vec(),
    };
    store
        .submit(Batch::durable(vec![
            meta(MetaTable::Exchanges, "/\u{0}b", b"2"),
            meta(MetaTable::Exchanges, "/\u{0}a", b"1"),
            meta(MetaTable::Exchanges, "/\u{0}c", b"3"),
            meta(MetaTable::Bindings, "/\u{0}a", b"binding"),
            meta(MetaTable::Users, "guest", b"hash"),
        ]))
        .wait()
        .expect("commit");
    store
        .submit(Batch::durable(vec![
            Op::DeleteMeta {
                table: MetaTable::Exchanges,
                key: "/\u{0}c".to_string(),
            },
            Op::DeleteMeta {
                table: MetaTable::Exchanges,
                key: "absent".to_string(),
            },
        ]))
        .wait()
        .expect("commit");
    assert_eq!(
        store.read_meta(MetaTable::Exchanges).expect("read"),
        vec![
            ("/\u{0}a".to_string(), b"1".to_vec()),
            ("/\u{0}b".to_string(), b"2".to_vec())
        ]
    );
    assert_eq!(
        store.read_meta(MetaTable::Bindings).expect("read"),
        vec![("/\u{0}a".to_string(), b"binding".to_vec())]
    );
    assert!(store
        .read_meta(MetaTable::Policies)
        .expect("read")
        .is_empty());
}

#[test]
fn queues_with_messages_lists_each_queue_once() {
    let (_dir, store) = temp_store();
    assert!(store.queues_with_messages().expect("queues").is_empty());
    let mut ops = Vec::new();
    for queue in [u64::MAX, 0, 42, 7] {
        for seq in 0..50 {
            ops.push(put(queue, seq));
        }
    }
    store.submit(Batch::durable(ops)).wait().expect("commit");
    assert_eq!(
        store.queues_with_messages().expect("queues"),
        vec![0, 7, 42, u64::MAX]
    );
    let deletes = (0..50)
        .map(|seq| Op::DeleteMessage { queue: 42, seq })
        .collect();
    store
        .submit(Batch::durable(deletes))
        .wait()
        .expect("commit");
    assert_eq!(
        store.queues_with_messages().expect("queues"),
        vec![0, 7, u64::MAX]
    );
}

#[test]
fn allocate_id_is_unique_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("warren.redb");
    let mut first = Vec::new();
    {
        let store = Store::open(&path).expect("open");
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                thread::spawn(move || (0..250).map(|_| store.allocate_id()).collect::<Vec<_>>())
            })
            .collect();
        for worker in workers {
            first.extend(worker.join().expect("allocator"));
        }
        // No batch submitted: the counter is persisted by close.
        store.close();
    }
    let mut sorted = first.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 1000, "ids unique within one run");
    assert!(!sorted.contains(&0), "0 is never handed out");
    let store = Store::open(&path).expect("reopen");
    let next = store.allocate_id();
    assert!(
        next > *sorted.last().expect("ids"),
        "{next} reused after reopen"
    );
}

#[test]
fn closed_store_refuses_writes_and_reads() {
    let (_dir, store) = temp_store();
    let other = store.clone();
    store.close();
    store.close(); // idempotent
    let err = other
        .submit(Batch::durable(vec![put(1, 1)]))
        .wait()
        .expect_err("closed");
    assert!(matches!(err, CommitError::Closed { .. }), "{err:?}");
    assert!(err
        .to_string()
        .contains(&store.path().display().to_string()));
    assert!(matches!(
        other.read_meta(MetaTable::Vhosts),
        Err(ReadError::Closed { .. })
    ));
    assert!(matches!(
        other.flush().wait(),
        Err(CommitError::Closed { .. })
    ));
}

#[test]
fn close_releases_the_file_for_a_new_store() {
    let (dir, store) = temp_store();
    let keep_alive = store.clone();
    store.close();
    // `keep_alive` still exists, but the file is closed and unlocked.
    let again = Store::open(dir.path().join("warren.redb")).expect("reopen after close");
    drop(keep_alive);
    again.close();
}

#[test]
fn batches_submitted_before_close_are_committed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("warren.redb");
    {
        let store = Store::open(&path).expect("open");
        let commits: Vec<_> = (0..100)
            .map(|seq| store.submit(Batch::non_durable(vec![put(2, seq)])))
            .collect();
        store.close();
        for commit in commits {
            commit.wait().expect("queued before close, so committed");
        }
    }
    let store = Store::open(&path).expect("reopen");
    assert_eq!(indexes(&store, 2).len(), 100);
}

#[test]
fn compaction_keeps_the_data() {
    let (_dir, store) = temp_store();
    let ops = (0..2000)
        .map(|seq| Op::PutMessage {
            queue: 1,
            seq,
            index: vec![1],
            body: vec![7; 1024],
        })
        .collect();
    store.submit(Batch::durable(ops)).wait().expect("commit");
    store
        .submit(Batch::durable(vec![Op::DeleteQueueMessages { queue: 1 }]))
        .wait()
        .expect("commit");
    store
        .submit(Batch::durable(vec![put(2, 1)]))
        .wait()
        .expect("commit");
    store.compact().expect("compact");
    assert_eq!(indexes(&store, 2), vec![(1, index_of(2, 1))]);
    assert!(indexes(&store, 1).is_empty());
    // The writer still works after compaction.
    store
        .submit(Batch::durable(vec![put(2, 2)]))
        .wait()
        .expect("commit");
}
