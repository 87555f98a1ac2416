//! Idle queues hibernate (issue 21): a classic queue with no message and no consumer
//! stops its actor after `--queue-hibernate-after` and starts it again with the next
//! publish, get or consumer. Real node processes; the tree of the `queues:/`
//! supervisor says which queues run. Nothing may be lost, reordered or counted wrong
//! across a hibernation, whenever the request comes.

mod common;

use std::time::Duration;

use common::{free_port, NodeProcess};
use warren::client::{Client, ConsumeOptions, PublishOptions, PublishResult, QueueOptions};
use warren_supervisor::ChildStatus;

/// Queues of each kind (durable, transient).
const QUEUES: usize = 40;
/// An idle queue keeps its actor this long (ms).
const HIBERNATE_AFTER: &str = "50";

fn durable(i: usize) -> String {
    format!("hib-d-{i}")
}

fn transient(i: usize) -> String {
    format!("hib-t-{i}")
}

fn names() -> Vec<(String, bool)> {
    (0..QUEUES)
        .flat_map(|i| [(durable(i), true), (transient(i), false)])
        .collect()
}

/// The status of each queue actor under `queues:/`, by queue name.
async fn statuses(client: &Client) -> Vec<(String, ChildStatus, u32)> {
    let tree = client.tree(Some("queues:/")).await.expect("tree");
    tree.children
        .iter()
        .map(|c| {
            let name = c
                .name
                .strip_prefix("queue:/")
                .unwrap_or(&c.name)
                .to_string();
            (name, c.status, c.restarts)
        })
        .collect()
}

/// Waits (bounded) until every queue named in `which` hibernates.
async fn all_hibernate(client: &Client, which: &[String]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let statuses = statuses(client).await;
        let awake: Vec<&String> = statuses
            .iter()
            .filter(|(n, s, _)| which.contains(n) && *s != ChildStatus::Hibernated)
            .map(|(n, _, _)| n)
            .collect();
        if awake.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still awake after 30 s: {awake:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn publish(client: &Client, queue: &str, body: String, persistent: bool) {
    let options = PublishOptions {
        persistent,
        ..Default::default()
    };
    let confirm = client
        .publish("", queue, body, options)
        .await
        .expect("publish");
    assert_eq!(confirm.await.expect("confirm"), PublishResult::Confirmed);
}

/// Takes `expected` off `queue` with `basic.get`, in order, acking each, then finds
/// it empty.
async fn get_all(client: &Client, queue: &str, expected: &[String]) {
    for want in expected {
        let got = client
            .get(queue, false)
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("queue {queue} lost '{want}'"));
        assert_eq!(&got.body[..], want.as_bytes(), "queue {queue}: order");
        got.ack().expect("ack");
    }
    client.flush_settles().await;
    assert!(
        client.get(queue, true).await.expect("get").is_none(),
        "queue {queue} holds more than was published"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_queues_hibernate_and_wake_without_losing_or_reordering_anything() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let port = free_port();
    let args = ["--name", "hib", "--queue-hibernate-after", HIBERNATE_AFTER];
    let mut node = NodeProcess::start_with(&data, port, &args);
    let client = node.client().await;
    let queues = names();
    for (name, durable) in &queues {
        let options = QueueOptions {
            durable: *durable,
            ..Default::default()
        };
        client.declare_queue(name, options).await.unwrap();
    }
    // A new queue never started an actor.
    let all: Vec<String> = queues.iter().map(|(n, _)| n.clone()).collect();
    for (name, status, _) in statuses(&client).await {
        if all.contains(&name) {
            assert_eq!(status, ChildStatus::Hibernated, "new queue {name}");
        }
    }
    // A sleeping queue answers for itself: empty, nothing to purge, alive.
    assert!(client.get(&all[0], true).await.unwrap().is_none());
    assert_eq!(client.purge(&all[1]).await.unwrap(), 0);
    let passive = QueueOptions {
        passive: true,
        ..Default::default()
    };
    let declared = client
        .declare_queue(&all[2], passive.clone())
        .await
        .unwrap();
    assert_eq!((declared.messages, declared.consumers), (0, 0));

    // Rounds of publish-then-get through every queue, each round after they all
    // hibernated again: what went in comes out, in order.
    for round in 0..3 {
        for (name, durable) in &queues {
            for k in 0..3 {
                publish(&client, name, format!("{name} r{round} m{k}"), *durable).await;
            }
        }
        for (name, _) in &queues {
            let declared = client.declare_queue(name, passive.clone()).await.unwrap();
            assert_eq!(declared.messages, 3, "queue {name} counts what it holds");
            let expected: Vec<String> = (0..3).map(|k| format!("{name} r{round} m{k}")).collect();
            get_all(&client, name, &expected).await;
        }
        all_hibernate(&client, &all).await;
    }

    // Requests that come as a queue hibernates: publish, wait a little longer each
    // time (around the 50 ms the queue waits), publish again, then take both.
    for i in 0..60u64 {
        let (name, durable) = &queues[i as usize % queues.len()];
        publish(&client, name, format!("a{i}"), *durable).await;
        let first = client.get(name, false).await.unwrap().expect("first");
        first.ack().unwrap();
        client.flush_settles().await;
        tokio::time::sleep(Duration::from_millis(i % 12 * 5)).await;
        publish(&client, name, format!("b{i}"), *durable).await;
        publish(&client, name, format!("c{i}"), *durable).await;
        get_all(&client, name, &[format!("b{i}"), format!("c{i}")]).await;
        assert_eq!(&first.body[..], format!("a{i}").as_bytes());
    }

    // A consumer wakes a sleeping queue and keeps it awake; once it cancels, the
    // queue sleeps again.
    all_hibernate(&client, &all).await;
    let mut consumer = client
        .consume(&all[3], ConsumeOptions::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = statuses(&client)
        .await
        .into_iter()
        .find(|(n, _, _)| *n == all[3])
        .map(|(_, s, _)| s);
    assert_eq!(
        status,
        Some(ChildStatus::Running),
        "a queue with a consumer runs"
    );
    for k in 0..5 {
        publish(&client, &all[3], format!("to consumer {k}"), false).await;
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("delivery in time")
            .expect("a delivery")
            .expect("no error");
        assert_eq!(&d.body[..], format!("to consumer {k}").as_bytes());
        d.ack().unwrap();
    }
    consumer.cancel().await.unwrap();
    all_hibernate(&client, &all).await;

    // Hibernation is not a failure: no queue counts a restart.
    for (name, _, restarts) in statuses(&client).await {
        if all.contains(&name) {
            assert_eq!(restarts, 0, "queue {name} restarted");
        }
    }
    // The shell's crash wakes a sleeping queue to fail it: its supervisor restarts it.
    client
        .crash_actor(&format!("queue:/{}", all[4]))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !statuses(&client)
        .await
        .iter()
        .any(|(n, s, r)| *n == all[4] && *r == 1 && *s != ChildStatus::Restarting)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no restart after the crash"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    publish(&client, &all[4], "after the crash".into(), true).await;
    get_all(&client, &all[4], &["after the crash".to_string()]).await;

    // A durable queue holding persistent messages it never delivered hibernates with
    // them (they are in the store as they were); its counts stay known while it
    // sleeps, and they come back in order, not redelivered. A queue holding a
    // transient message, which the store would not give back, keeps its actor.
    let (resting, awake) = (durable(5), durable(6));
    for k in 0..3 {
        publish(&client, &resting, format!("resting {k}"), true).await;
    }
    publish(&client, &awake, "transient".into(), false).await;
    all_hibernate(&client, std::slice::from_ref(&resting)).await;
    let declared = client
        .declare_queue(&resting, passive.clone())
        .await
        .unwrap();
    assert_eq!(
        declared.messages, 3,
        "a sleeping queue counts what it holds"
    );
    let status_of = |name: String| {
        let client = client.clone();
        async move {
            statuses(&client)
                .await
                .into_iter()
                .find(|(n, _, _)| *n == name)
                .map(|(_, s, _)| s)
        }
    };
    assert_eq!(
        status_of(resting.clone()).await,
        Some(ChildStatus::Hibernated),
        "declaring it did not wake it"
    );
    assert_eq!(
        status_of(awake.clone()).await,
        Some(ChildStatus::Running),
        "a queue holding a transient message keeps its actor"
    );
    for k in 0..3 {
        let got = client
            .get(&resting, false)
            .await
            .unwrap()
            .expect("a message");
        assert_eq!(&got.body[..], format!("resting {k}").as_bytes());
        assert!(!got.redelivered, "never delivered before its queue slept");
        got.ack().unwrap();
    }
    client.flush_settles().await;
    get_all(&client, &awake, &["transient".to_string()]).await;

    // Half the durable queues hold a message when the node is killed: after the
    // restart each counts what it holds, the empty ones sleep, and the others
    // started by themselves.
    for i in (0..QUEUES).step_by(2) {
        publish(&client, &durable(i), format!("kept {i}"), true).await;
    }
    drop(client);
    node.kill();
    let mut node = NodeProcess::start_with(&data, port, &args);
    let client = node.client().await;
    for i in 0..QUEUES {
        let declared = client
            .declare_queue(&durable(i), passive.clone())
            .await
            .unwrap();
        assert_eq!(
            declared.messages,
            u64::from(i % 2 == 0),
            "queue {}",
            durable(i)
        );
    }
    for i in 0..QUEUES {
        let expected: Vec<String> = if i % 2 == 0 {
            vec![format!("kept {i}")]
        } else {
            Vec::new()
        };
        get_all(&client, &durable(i), &expected).await;
    }
    let durables: Vec<String> = (0..QUEUES).map(durable).collect();
    all_hibernate(&client, &durables).await;
    drop(client);
    node.kill();
}
