//! A client handle's life: in a process whose async runtimes come and go (each
//! `#[tokio::test]` of a user's suite has a runtime of its own, and `cargo test` runs
//! them on threads of one process), the process's client transport must outlive the
//! runtime that connected first; and what a client queued before its last handle is
//! dropped still reaches the node.

mod common;

use std::time::Duration;

use common::{free_port, NodeProcess};
use warren::client::{ConsumeOptions, PublishOptions, PublishResult, QueueOptions};

const WAIT: Duration = Duration::from_secs(60);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Publishes `body` to `queue` persistently and waits for its confirm.
async fn publish_confirmed(client: &warren::client::Client, queue: &str, body: &str) {
    let confirm = client
        .publish(
            "",
            queue,
            body.to_string(),
            PublishOptions {
                persistent: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let outcome = tokio::time::timeout(WAIT, confirm).await.unwrap();
    assert_eq!(outcome.unwrap(), PublishResult::Confirmed);
}

#[test]
fn a_client_keeps_working_when_the_runtime_that_connected_first_ends() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("node"), free_port());

    // The first runtime connects, which starts the process's client transport.
    let first = runtime();
    first.block_on(async {
        let client = node.client().await;
        client
            .declare_queue(
                "jobs",
                QueueOptions {
                    durable: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        publish_confirmed(&client, "jobs", "from the first runtime").await;
    });
    // A second runtime connects while the first is still there (as two tests of one
    // `cargo test` process do), and keeps its client across the first one's end.
    let second = runtime();
    let client = second.block_on(node.client());
    drop(first);
    second.block_on(async {
        for round in 0..3 {
            let queue = format!("round-{round}");
            client
                .declare_queue(&queue, QueueOptions::default())
                .await
                .expect("the transport outlives the runtime that started it");
            publish_confirmed(&client, &queue, &queue).await;
            let mut wanted = vec![(queue.clone(), queue.clone())];
            if round == 0 {
                wanted.push(("jobs".into(), "from the first runtime".into()));
            }
            for (queue, body) in wanted {
                let mut consumer = client
                    .consume(&queue, ConsumeOptions::default())
                    .await
                    .unwrap();
                let delivery = tokio::time::timeout(WAIT, consumer.next())
                    .await
                    .expect("a delivery comes")
                    .unwrap()
                    .unwrap();
                assert_eq!(delivery.body.as_ref(), body.as_bytes());
                delivery.ack().unwrap();
            }
        }
    });
    // And a runtime started after both connects too.
    drop(client);
    drop(second);
    runtime().block_on(async {
        let client = tokio::time::timeout(WAIT, node.client())
            .await
            .expect("a later runtime connects");
        publish_confirmed(&client, "jobs", "from a later runtime").await;
    });
}

#[tokio::test]
async fn publishes_queued_before_the_last_handle_is_dropped_reach_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("node"), free_port());
    let admin = node.client().await;
    admin
        .declare_queue(
            "outbox",
            QueueOptions {
                durable: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    for round in 1..=3u64 {
        // Published without awaiting the confirms, and the client dropped at once:
        // its session must close after these, not before.
        let client = node.client().await;
        for i in 0..100 {
            let _confirm = client
                .publish(
                    "",
                    "outbox",
                    format!("{round}-{i}"),
                    PublishOptions {
                        persistent: true,
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
        }
        drop(client);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let declared = admin
                .declare_queue(
                    "outbox",
                    QueueOptions {
                        passive: true,
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            if declared.messages == 100 * round {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: {} messages of {} reached the queue",
                declared.messages,
                100 * round
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
