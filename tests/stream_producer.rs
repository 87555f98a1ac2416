//! The client handle's stream producer against a real `warren node`: records batched
//! per partition keep each partition's order, every confirm resolves, and nothing
//! waits for the linger timer to send (the timer is set to an hour here, so a record
//! that only the timer would send makes the test fail by its deadline). And a merged
//! read of several partitions may ack with `multiple` out of tag order without the
//! node closing the session.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{free_port, NodeProcess};
use warren::client::{
    Client, ClientError, Confirm, ConnectOptions, FieldValue, Partition, ProducerOptions,
    PublishOptions, PublishResult, StreamConsumeOptions, StreamConsumer, StreamDelivery,
    StreamOptions, MAX_BUFFER_BYTES, MIN_BUFFER_BYTES,
};

/// How long any confirm or read may take before the test fails.
const WAIT: Duration = Duration::from_secs(60);

fn never_linger() -> ProducerOptions {
    ProducerOptions {
        linger: Duration::from_secs(3600),
        ..Default::default()
    }
}

/// Declares stream `name` of `partitions` partitions; its partitions.
async fn declare(client: &Client, name: &str, partitions: u32) -> Vec<Partition> {
    client
        .declare_stream(
            name,
            StreamOptions {
                partitions,
                ..Default::default()
            },
        )
        .await
        .unwrap()
}

/// A reader of every partition of stream `name` from `first`.
async fn from_first(client: &Client, name: &str) -> StreamConsumer {
    let options = StreamConsumeOptions {
        offset: FieldValue::string("first"),
        prefetch: 1000,
        ..Default::default()
    };
    client.consume_stream(name, None, options).await.unwrap()
}

/// The next record `consumer` reads, within [`WAIT`].
async fn next_record(consumer: &mut StreamConsumer) -> StreamDelivery {
    tokio::time::timeout(WAIT, consumer.next())
        .await
        .expect("a record within the deadline")
        .expect("the consumer goes on")
        .unwrap()
}

/// Reads `count` records of every partition of `name` from `first`: each partition's
/// bodies in the order read.
async fn read_all(client: &Client, name: &str, count: usize) -> BTreeMap<u64, Vec<String>> {
    let mut consumer = from_first(client, name).await;
    let mut read: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for _ in 0..count {
        let d = next_record(&mut consumer).await;
        d.delivery.ack().unwrap();
        read.entry(d.partition)
            .or_default()
            .push(String::from_utf8(d.delivery.body.to_vec()).unwrap());
    }
    consumer.cancel().await.unwrap();
    read
}

/// Awaits every confirm (each within [`WAIT`], else panics saying `why`); each
/// must be `Confirmed`.
async fn all_confirmed(confirms: Vec<Confirm>, why: &str) {
    for confirm in confirms {
        let outcome = tokio::time::timeout(WAIT, confirm)
            .await
            .unwrap_or_else(|_| panic!("{why}"));
        assert_eq!(outcome.unwrap(), PublishResult::Confirmed);
    }
}

#[tokio::test]
async fn batched_records_keep_each_partitions_order_and_are_all_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("node"), free_port());
    let client = node.client().await;
    declare(&client, "views", 10).await;
    // Batches of 50 bytes: ten 5-byte records to a partition, then the next.
    let producer = client
        .stream_producer_with(
            "views",
            ProducerOptions {
                batch_bytes: 50,
                ..never_linger()
            },
        )
        .await
        .unwrap();

    // Sent without waiting: the first goes at once (nothing unconfirmed), the rest
    // gather per partition until a batch is full or everything sent is confirmed.
    let total = 5_000;
    let mut confirms = Vec::new();
    let mut sent: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut placed = Vec::new();
    for i in 0..total {
        let body = format!("{i:05}");
        let (partition, confirm) = producer
            .send(None, body.clone(), PublishOptions::default())
            .await
            .unwrap();
        sent.entry(partition).or_default().push(body);
        placed.push(partition);
        confirms.push(confirm);
    }
    // Without a key: a batch's worth to one partition, then the next in turn.
    for (n, run) in placed.chunks(10).enumerate() {
        assert!(
            run.iter().all(|p| *p == run[0]),
            "run {n} went to one partition: {run:?}"
        );
        if n > 0 {
            assert_eq!(
                run[0],
                (placed[(n - 1) * 10] + 1) % 10,
                "run {n} is the next partition"
            );
        }
    }
    all_confirmed(confirms, "every confirm resolves without the linger timer").await;
    // A lone keyed record on an idle producer goes at once.
    let (partition, confirm) = producer
        .send(Some("ada"), "lone", PublishOptions::default())
        .await
        .unwrap();
    let outcome = tokio::time::timeout(WAIT, confirm)
        .await
        .expect("a lone record is sent at once");
    assert_eq!(outcome.unwrap(), PublishResult::Confirmed);
    sent.entry(partition).or_default().push("lone".into());

    assert_eq!(sent.len(), 10, "every partition got its batches");
    let read = read_all(&client, "views", total + 1).await;
    assert_eq!(
        read, sent,
        "each partition holds its records once, in the order sent"
    );
}

#[tokio::test]
async fn keyed_records_sent_faster_than_confirmed_all_go_by_the_linger_timer() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("node"), free_port());
    let client = node.client().await;
    declare(&client, "taps", 4).await;
    // A short linger, and no flush: records that gather while their partition's
    // batch is on the way must be sent by the timer once that batch is confirmed.
    let producer = client
        .stream_producer_with(
            "taps",
            ProducerOptions {
                linger: Duration::from_millis(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut confirms = Vec::new();
    let mut sent: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for i in 0..3_000 {
        let key = format!("user-{}", i % 50);
        let body = format!("{i}");
        let (partition, confirm) = producer
            .send(Some(&key), body.clone(), PublishOptions::default())
            .await
            .unwrap();
        sent.entry(partition).or_default().push(body);
        confirms.push(confirm);
    }
    all_confirmed(confirms, "the linger timer sends every batch").await;
    let read = read_all(&client, "taps", 3_000).await;
    assert_eq!(
        read, sent,
        "each partition holds its records in the order sent"
    );
}

#[tokio::test]
async fn a_producer_whose_buffer_is_full_waits_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("node"), free_port());
    let admin = node.client().await;
    declare(&admin, "small", 3).await;
    // The smallest buffer holds 170 records of 100 bytes: the 3 000 sent without
    // awaiting a confirm must wait in `send` for confirms to free it.
    let mut options = ConnectOptions::new(node.addr, &node.cookie_file()).unwrap();
    options.buffer_bytes = MIN_BUFFER_BYTES;
    let client = Client::connect(options).await.unwrap();
    let producer = client.stream_producer("small").await.unwrap();
    let mut confirms = Vec::new();
    let mut sent: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    // While the node is stopped nothing is confirmed: records fill the buffer, and
    // the next one waits (it cannot go on before the node does).
    let pid = node.pid().unwrap() as libc::pid_t;
    // SAFETY: kill(2) with a signal number; the node is a child process of this test.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let record = |i: usize| (format!("device-{}", i % 17), format!("{i:0>100}"));
    let mut held = 0;
    loop {
        let (key, body) = record(held);
        let next = producer.send(Some(&key), body.clone(), PublishOptions::default());
        match tokio::time::timeout(Duration::from_millis(300), next).await {
            Ok(sent_now) => {
                let (partition, confirm) = sent_now.unwrap();
                sent.entry(partition).or_default().push(body);
                confirms.push(confirm);
                held += 1;
            }
            // (Dropped while it waited for the buffer: it was not sent.)
            Err(_) => break,
        }
        assert!(held < 3_000, "the buffer never filled");
    }
    // A record counts its encoding (its 100-byte body, its key header, its
    // partition's name...) and 32 bytes for its confirm, in 64-byte permits: 3 or
    // 4 of them (about 190 to 250 bytes), so 64 KiB holds 256 to 341.
    assert!(
        (256..=341).contains(&held),
        "the buffer held {held} records"
    );
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    for i in held..3_000 {
        let (key, body) = record(i);
        let (partition, confirm) = tokio::time::timeout(
            WAIT,
            producer.send(Some(&key), body.clone(), PublishOptions::default()),
        )
        .await
        .expect("the buffer frees as confirms come")
        .unwrap();
        sent.entry(partition).or_default().push(body);
        confirms.push(confirm);
    }
    all_confirmed(confirms, "every confirm resolves").await;
    assert_eq!(read_all(&admin, "small", 3_000).await, sent);

    // A buffer out of range is refused before connecting, saying what to give.
    for bytes in [0, MIN_BUFFER_BYTES - 1, MAX_BUFFER_BYTES + 1] {
        let mut options = ConnectOptions::new(node.addr, &node.cookie_file()).unwrap();
        options.buffer_bytes = bytes;
        match Client::connect(options).await {
            Err(ClientError::InvalidOptions(why)) => {
                assert!(
                    why.contains("buffer_bytes") && why.contains("65536"),
                    "{why}"
                );
            }
            Err(other) => panic!("{bytes}: wrong error {other}"),
            Ok(_) => panic!("{bytes}: a buffer out of range was taken"),
        }
    }
}

#[tokio::test]
async fn records_larger_than_a_batch_go_whole_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("node"), free_port());
    let client = node.client().await;
    declare(&client, "big", 2).await;
    let producer = client.stream_producer("big").await.unwrap();
    // Records of 2 and 3 MiB (more than a batch's 1 MiB of encodings) between
    // small ones, to one partition: each is a batch's first record or closes one.
    let mut sent: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut confirms = Vec::new();
    for (i, size) in [10, 2 << 20, 10, 10, 3 << 20, 10].into_iter().enumerate() {
        let body = format!("{i}").repeat(size);
        let (partition, confirm) = producer
            .send(Some("one-key"), body.clone(), PublishOptions::default())
            .await
            .unwrap();
        sent.entry(partition).or_default().push(body);
        confirms.push(confirm);
    }
    all_confirmed(confirms, "every confirm resolves").await;
    assert_eq!(read_all(&client, "big", 6).await, sent);
}

#[tokio::test]
async fn records_waiting_in_batches_go_on_flush_and_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("node"), free_port());
    let client = node.client().await;
    declare(&client, "clicks", 3).await;

    for how in ["flush", "drop"] {
        let producer = client
            .stream_producer_with("clicks", never_linger())
            .await
            .unwrap();
        // The first record is unconfirmed while the others are sent, so they wait in
        // their batches (far from full) unless its confirm was quick; either way
        // flush and drop must send them.
        // Round the three partitions, so that flush and drop send several batches.
        let mut confirms = Vec::new();
        for i in 0..30 {
            let body = format!("{how}-{i}");
            confirms.push(
                producer
                    .send_to(i % 3, None, body, PublishOptions::default())
                    .await
                    .unwrap()
                    .1,
            );
        }
        match how {
            "flush" => producer.flush(),
            _ => drop(producer),
        }
        all_confirmed(confirms, &format!("{how} sends what waits in batches")).await;
    }
    let read = read_all(&client, "clicks", 60).await;
    assert_eq!(read.values().map(Vec::len).sum::<usize>(), 60);
}

#[tokio::test]
async fn a_multiple_ack_already_covered_by_a_later_one_keeps_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("node"), free_port());
    let client = node.client().await;
    declare(&client, "taps", 2).await;
    let producer = client.stream_producer("taps").await.unwrap();
    // Both partitions, so that the reader merges them.
    for i in 0..100 {
        let (_, confirm) = producer
            .send_to(i % 2, None, format!("{i}"), PublishOptions::default())
            .await
            .unwrap();
        assert_eq!(confirm.await.unwrap(), PublishResult::Confirmed);
    }
    let mut consumer = from_first(&client, "taps").await;
    let mut held = Vec::new();
    for _ in 0..100 {
        let d = next_record(&mut consumer).await;
        held.push(d);
    }
    // Acked as merged partitions may be read: the highest tag first, then lower
    // ones, each with `multiple`. The later ones settle nothing more; the node must
    // not see them as unknown tags (406, which closes the session).
    // Each ack is sent on its own (the node checks a batch of settles against what
    // was unsettled before it).
    held.sort_by_key(|d| std::cmp::Reverse(d.delivery.delivery_tag));
    for d in &held {
        d.delivery.ack_multiple().unwrap();
        client.flush_settles().await;
    }
    let (_, confirm) = producer
        .send(None, "after", PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(confirm.await.unwrap(), PublishResult::Confirmed);
    let d = next_record(&mut consumer).await;
    assert_eq!(&d.delivery.body[..], b"after");
}

/// The next record of `consumer`, or `None` if none comes within a moment (used
/// where none may come: a consumer without credit).
async fn record_within_a_moment(consumer: &mut StreamConsumer) -> Option<StreamDelivery> {
    tokio::time::timeout(Duration::from_millis(300), consumer.next())
        .await
        .ok()
        .map(|d| d.expect("the consumer goes on").unwrap())
}

/// Reads the `n` records of one partition's run: they share one delivery tag and
/// carry the offsets `first..first + n` in order.
async fn run_of(consumer: &mut StreamConsumer, first: u64, n: u64) -> Vec<StreamDelivery> {
    let mut run = Vec::new();
    for offset in first..first + n {
        let d = next_record(consumer).await;
        assert_eq!(d.offset, offset, "offsets in order, without gaps");
        let header = d.delivery.properties.headers.as_ref().unwrap();
        assert_eq!(
            header.get("x-stream-offset"),
            Some(&FieldValue::I64(offset as i64))
        );
        assert_eq!(d.delivery.body, format!("r{offset}").as_bytes());
        run.push(d);
    }
    let tag = run[0].delivery.delivery_tag;
    assert!(
        run.iter().all(|d| d.delivery.delivery_tag == tag),
        "one run of {n} from {first}, one tag: {:?}",
        run.iter()
            .map(|d| d.delivery.delivery_tag)
            .collect::<Vec<_>>()
    );
    run
}

/// A stream's records reach a client-handle consumer in runs (one delivery tag for
/// consecutive records of a chunk, at most half the consumer's prefetch): a run
/// gives its credit back once each of its records is acked. A multiple ack settles
/// the records before it and the runs before its run, never the records after it;
/// acks the node no longer holds are not sent (it would close the session), and a
/// record acked twice counts once.
#[tokio::test]
async fn a_streams_records_come_in_runs_that_give_credit_back_once_all_are_settled() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("node"), free_port());
    let client = node.client().await;
    let partitions = declare(&client, "runs", 1).await;
    // Queued before the client's publisher runs: one publish frame, one append, one
    // chunk of 40 records (`run_of` says so if not).
    let mut confirms = Vec::new();
    for i in 0..40 {
        let options = PublishOptions::default();
        let to = &partitions[0].routing_key;
        confirms.push(
            client
                .publish("runs", to, format!("r{i}"), options)
                .await
                .unwrap(),
        );
    }
    for confirm in confirms {
        assert_eq!(confirm.await.unwrap(), PublishResult::Confirmed);
    }
    let options = StreamConsumeOptions {
        offset: FieldValue::string("first"),
        prefetch: 10,
        ..Default::default()
    };
    let mut consumer = client.consume_stream("runs", None, options).await.unwrap();

    // The credit's worth: two runs of half of it.
    let a = run_of(&mut consumer, 0, 5).await;
    let b = run_of(&mut consumer, 5, 5).await;
    assert_ne!(a[0].delivery.delivery_tag, b[0].delivery.delivery_tag);
    // A multiple ack in the middle of run b settles run a (its credit comes back:
    // run c), not the rest of b.
    b[2].delivery.ack_multiple().unwrap();
    let c = run_of(&mut consumer, 10, 5).await;
    client.flush_settles().await;
    assert!(
        record_within_a_moment(&mut consumer).await.is_none(),
        "run b holds its credit while two of its records are unacked"
    );
    b[3].delivery.ack().unwrap();
    b[4].delivery.ack().unwrap();
    let d = run_of(&mut consumer, 15, 5).await;

    // A multiple ack of d's first record settles c; c's own acks afterwards are
    // not sent (the node no longer holds c).
    d[0].delivery.ack_multiple().unwrap();
    let e = run_of(&mut consumer, 20, 5).await;
    for r in &c {
        r.delivery.ack().unwrap();
    }
    // A record acked twice counts once: d is not settled while d[4] is unacked.
    d[1].delivery.ack().unwrap();
    d[1].delivery.ack().unwrap();
    d[2].delivery.ack().unwrap();
    d[3].delivery.ack().unwrap();
    client.flush_settles().await;
    assert!(
        record_within_a_moment(&mut consumer).await.is_none(),
        "run d holds its credit while d[4] is unacked"
    );
    d[4].delivery.ack().unwrap();
    run_of(&mut consumer, 25, 5).await;
    drop(e);
    // The session is still open: a publish is confirmed.
    let confirm = client
        .publish(
            "runs",
            &partitions[0].routing_key,
            "r40",
            PublishOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(confirm.await.unwrap(), PublishResult::Confirmed);
}
