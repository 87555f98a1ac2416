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
    Client, FieldValue, ProducerOptions, PublishOptions, PublishResult, StreamConsumeOptions,
    StreamConsumer, StreamDelivery, StreamOptions,
};

/// How long any confirm or read may take before the test fails.
const WAIT: Duration = Duration::from_secs(60);

fn never_linger() -> ProducerOptions {
    ProducerOptions {
        linger: Duration::from_secs(3600),
        ..Default::default()
    }
}

async fn declare(client: &Client, name: &str, partitions: u32) {
    client
        .declare_stream(
            name,
            StreamOptions {
                partitions,
                ..Default::default()
            },
        )
        .await
        .unwrap();
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

#[tokio::test]
async fn batched_records_keep_each_partitions_order_and_are_all_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("node"), free_port());
    let client = node.client().await;
    declare(&client, "views", 10).await;
    let producer = client
        .stream_producer_with("views", never_linger())
        .await
        .unwrap();

    // Sent without waiting: the first goes at once (nothing unconfirmed), the rest
    // gather per partition until a batch is full or everything sent is confirmed.
    let total = 5_000;
    let mut confirms = Vec::new();
    let mut sent: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for i in 0..total {
        let body = format!("{i:05}");
        let (partition, confirm) = producer
            .send(None, body.clone(), PublishOptions::default())
            .await
            .unwrap();
        sent.entry(partition).or_default().push(body);
        confirms.push(confirm);
    }
    for confirm in confirms {
        let outcome = tokio::time::timeout(WAIT, confirm)
            .await
            .expect("every confirm resolves without the linger timer");
        assert_eq!(outcome.unwrap(), PublishResult::Confirmed);
    }
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

    assert_eq!(sent.len(), 10, "round the partitions");
    let read = read_all(&client, "views", total + 1).await;
    assert_eq!(
        read, sent,
        "each partition holds its records once, in the order sent"
    );
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
        let mut confirms = Vec::new();
        for i in 0..30 {
            let body = format!("{how}-{i}");
            confirms.push(
                producer
                    .send(None, body, PublishOptions::default())
                    .await
                    .unwrap()
                    .1,
            );
        }
        match how {
            "flush" => producer.flush(),
            _ => drop(producer),
        }
        for confirm in confirms {
            let outcome = tokio::time::timeout(WAIT, confirm)
                .await
                .unwrap_or_else(|_| panic!("{how} sends what waits in batches"));
            assert_eq!(outcome.unwrap(), PublishResult::Confirmed);
        }
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
    for i in 0..100 {
        let (_, confirm) = producer
            .send(None, format!("{i}"), PublishOptions::default())
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

/// Reads `n` records of one partition's run: they share one delivery tag and carry
/// the offsets `first..first + n` in order.
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
        "one run, one tag"
    );
    run
}

/// A stream's records reach a client-handle consumer in runs (one delivery tag for
/// consecutive records of a chunk, up to the consumer's credit): the run gives its
/// credit back once every record of it is settled, or by a multiple ack of any of
/// them; records settled after a multiple ack covered their run settle nothing more
/// and keep the session.
#[tokio::test]
async fn a_streams_records_come_in_runs_that_give_credit_back_once_all_are_settled() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("node"), free_port());
    let client = node.client().await;
    declare(&client, "runs", 1).await;
    // One append: one chunk of 40 records.
    let producer = client
        .stream_producer_with("runs", never_linger())
        .await
        .unwrap();
    let mut confirms = Vec::new();
    for i in 0..40 {
        let (_, confirm) = producer
            .send(None, format!("r{i}"), PublishOptions::default())
            .await
            .unwrap();
        confirms.push(confirm);
    }
    producer.flush();
    for confirm in confirms {
        assert_eq!(confirm.await.unwrap(), PublishResult::Confirmed);
    }
    let options = StreamConsumeOptions {
        offset: FieldValue::string("first"),
        prefetch: 10,
        ..Default::default()
    };
    let mut consumer = client.consume_stream("runs", None, options).await.unwrap();

    // The credit's worth, as one run; nine of ten acked give no credit back.
    let run = run_of(&mut consumer, 0, 10).await;
    for d in &run[..9] {
        d.delivery.ack().unwrap();
    }
    client.flush_settles().await;
    assert!(
        record_within_a_moment(&mut consumer).await.is_none(),
        "a run with a record unsettled holds its credit"
    );
    // The tenth settles the run.
    run[9].delivery.ack().unwrap();
    let run = run_of(&mut consumer, 10, 10).await;

    // A multiple ack of one record settles the whole run; the acks of its other
    // records afterwards settle nothing more and are not sent.
    run[2].delivery.ack_multiple().unwrap();
    for d in &run[3..] {
        d.delivery.ack().unwrap();
    }
    client.flush_settles().await;
    let run = run_of(&mut consumer, 20, 10).await;
    for d in &run {
        d.delivery.ack().unwrap();
    }
    run_of(&mut consumer, 30, 10).await;
    // The session is still open: a publish is confirmed.
    let (_, confirm) = producer
        .send(None, "r40", PublishOptions::default())
        .await
        .unwrap();
    producer.flush();
    assert_eq!(confirm.await.unwrap(), PublishResult::Confirmed);
}
