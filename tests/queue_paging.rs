//! A backlog beyond a queue's body window, end to end against a real node: transient
//! bodies go to the queue's page file (segment files under `DATA_DIR/paging`), come
//! back in order and exactly once, and their segments are deleted once consumed,
//! purged or deleted with the queue; a restart leaves no segment behind, while the
//! persistent messages of the same backlog survive it. A queue whose consumer is
//! behind keeps the same backlog in memory instead.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{eventually, free_port, NodeProcess};
use warren::client::{
    Client, ConsumeOptions, Consumer, PublishOptions, PublishResult, QueueOptions,
};

/// Well past the default window of 2 048 bodies.
const BACKLOG: u64 = 6_000;

fn segments(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("paging"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn body(i: u64) -> String {
    format!("{i:08}-{}", "p".repeat(1000))
}

/// Publishes `BACKLOG` messages, every third one persistent, and waits for every
/// confirm.
async fn fill(client: &Client, queue: &str) {
    let mut confirms = Vec::new();
    for i in 0..BACKLOG {
        let options = PublishOptions {
            persistent: i % 3 == 0,
            ..Default::default()
        };
        confirms.push(client.publish("", queue, body(i), options).await.unwrap());
    }
    for c in confirms {
        assert_eq!(c.await.unwrap(), PublishResult::Confirmed);
    }
}

/// Takes the `BACKLOG` messages `fill` published, checking their order, and acks them.
async fn consume_in_order(consumer: &mut Consumer) {
    for i in 0..BACKLOG {
        let d = tokio::time::timeout(Duration::from_secs(20), consumer.next())
            .await
            .expect("a delivery in time")
            .expect("the consumer is open")
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&d.body), body(i), "delivery {i}");
        d.ack().unwrap();
    }
}

async fn declare(client: &Client, queue: &str) {
    client
        .declare_queue(
            queue,
            QueueOptions {
                durable: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_pages_to_segments_and_comes_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let node = NodeProcess::start(&data, free_port());
    let client = node.client().await;
    declare(&client, "backlog").await;
    fill(&client, "backlog").await;
    assert!(
        segments(&data) > 0,
        "transient bodies beyond the window are in segment files"
    );

    let mut consumer = client
        .consume(
            "backlog",
            ConsumeOptions {
                prefetch: 300,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    consume_in_order(&mut consumer).await;
    client.flush_settles().await;
    consumer.cancel().await.unwrap();
    eventually("the consumed segments are deleted", || segments(&data) == 0);
    assert!(client.get("backlog", true).await.unwrap().is_none());

    // Purge and delete drop the segments too.
    fill(&client, "backlog").await;
    assert!(segments(&data) > 0);
    assert_eq!(client.purge("backlog").await.unwrap(), BACKLOG);
    eventually("purged segments are deleted", || segments(&data) == 0);
    declare(&client, "gone").await;
    fill(&client, "gone").await;
    assert!(segments(&data) > 0);
    client.delete_queue("gone", false, false).await.unwrap();
    eventually("a deleted queue's segments are deleted", || {
        segments(&data) == 0
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_with_a_consumer_stays_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let node = NodeProcess::start(&data, free_port());
    let client = node.client().await;
    client
        .declare_queue("behind", QueueOptions::default())
        .await
        .unwrap();
    // A consumer that holds its one delivery unacked: the backlog waits for it.
    let mut consumer = client
        .consume(
            "behind",
            ConsumeOptions {
                prefetch: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    fill(&client, "behind").await;
    assert_eq!(
        segments(&data),
        0,
        "bodies about to be delivered draw on the node's queue memory, not the page file"
    );
    consume_in_order(&mut consumer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_persistent_part_of_a_backlog_and_no_segment() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let port = free_port();
    let mut node = NodeProcess::start(&data, port);
    let client = node.client().await;
    declare(&client, "backlog").await;
    fill(&client, "backlog").await;
    assert!(segments(&data) > 0);
    drop(client);
    node.kill();

    let node = NodeProcess::start(&data, port);
    let client = node.client().await; // the node serves: its store is open
    let left: Vec<_> = std::fs::read_dir(data.join("paging"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "a restart empties the page files: {left:?}"
    );
    // Only the persistent third survives, in order, as RabbitMQ's durable queues do.
    for i in (0..BACKLOG).step_by(3) {
        let d = client.get("backlog", true).await.unwrap();
        let d = d.unwrap_or_else(|| panic!("persistent message {i} is back"));
        assert_eq!(String::from_utf8_lossy(&d.body), body(i));
    }
    assert!(client.get("backlog", true).await.unwrap().is_none());
}
