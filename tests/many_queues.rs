//! Issue 21's test at CI size: 20 000 durable queues on one node, a confirmed
//! persistent message in each, SIGKILL, restart: every queue is back, holding its
//! message, and the listing pages through all of them.

mod common;

use common::{free_port, NodeProcess};
use warren::client::{Client, PublishOptions, PublishResult, QueueOptions};

const QUEUES: usize = 20_000;
/// Requests in flight at once (as many clients would have).
const IN_FLIGHT: usize = 64;

fn name(i: usize) -> String {
    format!("many-{i}")
}

/// Runs `each(client, i)` for every queue, `IN_FLIGHT` at a time.
async fn for_every_queue<F, Fut>(client: &Client, each: F)
where
    F: Fn(Client, usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    for start in (0..QUEUES).step_by(IN_FLIGHT) {
        let tasks: Vec<_> = (start..(start + IN_FLIGHT).min(QUEUES))
            .map(|i| tokio::spawn(each(client.clone(), i)))
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_durable_queues_come_back_with_their_messages_after_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let port = free_port();
    let mut node = NodeProcess::start(&data, port);
    let client = node.client().await;
    for_every_queue(&client, |client, i| async move {
        let durable = QueueOptions {
            durable: true,
            ..Default::default()
        };
        client.declare_queue(&name(i), durable).await.unwrap();
    })
    .await;
    for_every_queue(&client, |client, i| async move {
        let persistent = PublishOptions {
            persistent: true,
            ..Default::default()
        };
        let confirm = client
            .publish("", &name(i), format!("message of queue {i}"), persistent)
            .await
            .unwrap();
        assert_eq!(confirm.await.unwrap(), PublishResult::Confirmed);
    })
    .await;
    drop(client);

    node.kill();
    let node = NodeProcess::start(&data, port);
    let client = node.client().await;
    for_every_queue(&client, |client, i| async move {
        let passive = QueueOptions {
            durable: true,
            passive: true,
            ..Default::default()
        };
        let declared = client.declare_queue(&name(i), passive).await.unwrap();
        assert_eq!(declared.messages, 1, "queue {} after the restart", name(i));
    })
    .await;
    // The listing, a page at a time (one answer would not fit in a cluster frame at
    // 100 000 queues): every queue once, in name order, each with its message.
    let listed = client.queues().await.unwrap();
    let mut expected: Vec<String> = (0..QUEUES).map(name).collect();
    expected.sort();
    let names: Vec<&str> = listed.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, expected, "every queue once, in name order");
    assert!(listed.iter().all(|q| q.messages == 1));
    let (first, more) = client.queues_page("", 0).await.unwrap();
    assert_eq!(
        (first.len(), more),
        (1, true),
        "a page holds one queue at least"
    );
    assert_eq!(first[0].name, expected[0]);
    let (last, more) = client.queues_page(&expected[QUEUES - 2], 5).await.unwrap();
    assert_eq!(last.len(), 1);
    assert!(!more, "nothing after the last queue");
    let got = client.get(&name(QUEUES - 1), true).await.unwrap();
    let body = got.expect("the last queue's message").body;
    assert_eq!(
        &body[..],
        format!("message of queue {}", QUEUES - 1).as_bytes()
    );
}
