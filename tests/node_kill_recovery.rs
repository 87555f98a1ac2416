//! A node killed with SIGKILL loses no confirmed persistent message.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{free_port, NodeProcess};
use warren::client::{ConsumeOptions, PublishOptions, PublishResult, QueueOptions};

const MESSAGES: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_persistent_messages_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let port = free_port();
    let mut node = NodeProcess::start(&data, port);
    let client = node.client().await;
    client
        .declare_queue(
            "orders",
            QueueOptions {
                durable: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let persistent = PublishOptions {
        persistent: true,
        ..Default::default()
    };
    let mut confirms = Vec::with_capacity(MESSAGES);
    for i in 0..MESSAGES {
        let body = format!("order-{i}");
        confirms.push(
            client
                .publish("", "orders", body, persistent.clone())
                .await
                .unwrap(),
        );
    }
    for c in confirms {
        assert_eq!(c.await.unwrap(), PublishResult::Confirmed);
    }
    drop(client);

    node.kill();
    let node = NodeProcess::start(&data, port);
    let client = node.client().await;
    let declared = client
        .declare_queue(
            "orders",
            QueueOptions {
                durable: true,
                passive: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(declared.messages, MESSAGES as u64);

    let mut consumer = client
        .consume(
            "orders",
            ConsumeOptions {
                prefetch: 500,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut seen = HashSet::with_capacity(MESSAGES);
    while seen.len() < MESSAGES {
        let d = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .expect("deliveries keep coming")
            .expect("consumer open")
            .unwrap();
        let body = String::from_utf8(d.body.to_vec()).unwrap();
        assert!(seen.insert(body.clone()), "{body} delivered twice");
        d.ack().unwrap();
    }
    for i in 0..MESSAGES {
        assert!(seen.contains(&format!("order-{i}")), "order-{i} lost");
    }
    consumer.cancel().await.unwrap();
    client.flush_settles().await;
    assert!(
        client.get("orders", true).await.unwrap().is_none(),
        "nothing beyond the 10 000"
    );
}
