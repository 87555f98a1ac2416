//! A queue actor that crashes is restarted by its supervisor and rebuilds its messages
//! from storage; an exchange actor that crashes comes back with its bindings.
//! (One node per test binary: ractor's registry is process-global.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use warren::node::{self, NodeConfig};
use warren_actors::exchange::{Binding, Destination, RouteResult};
use warren_actors::message::{FieldTable, Message, PERSISTENT};
use warren_actors::queue::{Enqueue, EnqueueOutcome, QueueRef};

async fn wait_for(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_queue_restarts_with_its_messages() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = NodeConfig {
        data_dir: dir.path().join("data"),
        cluster_listen: ([127, 0, 0, 1], port).into(),
        // Not the AMQP default port: it may be taken (a RabbitMQ beside us).
        amqp_listen: None,
        http_listen: None,
        prometheus_listen: None,
        ..NodeConfig::default()
    };
    let node = node::start(config).await.unwrap();
    let vhost = node.vhosts.default_vhost();
    vhost
        .declare_queue("jobs", true, None, false, false, FieldTable::new(), 1)
        .await
        .unwrap();
    vhost
        .bind(
            Binding::new("amq.direct", Destination::Queue("jobs".into()), "work"),
            1,
        )
        .await
        .unwrap();

    let queue = vhost.queue("jobs").unwrap();
    let messages: Vec<_> = (0..500)
        .map(|i| {
            let mut m = Message::new("amq.direct", "work", Bytes::from(format!("job-{i}")));
            m.properties.delivery_mode = Some(PERSISTENT);
            Arc::new(m)
        })
        .collect();
    let (batch, rx) = Enqueue::confirmed(messages);
    queue.enqueue(batch);
    let outcomes = rx.await.unwrap();
    assert!(outcomes.iter().all(|o| *o == EnqueueOutcome::Confirmed));
    assert_eq!(ready(&queue).await, 500);

    // Crash the queue actor: its supervisor restarts it and it recovers from storage.
    queue.crash().unwrap();
    wait_for("the queue's restart", async || {
        queue.status().await.unwrap().restarts == 1 && ready(&queue).await == 500
    })
    .await;
    let restarts = node.root.snapshot(Duration::from_secs(5)).await.unwrap();
    let entry = restarts.find("queue:/jobs").expect("queue in the tree");
    assert_eq!(entry.restarts, 1);

    // Declared again right after a crash, while the actor restarts: the declaration
    // waits for the queue to answer and sees it as it stands (not a 405 after a wait
    // for a deletion that never comes).
    for round in 0..5u64 {
        queue.crash().unwrap();
        let ok = vhost
            .declare_queue("jobs", true, None, false, false, FieldTable::new(), 1)
            .await
            .expect("redeclared while restarting");
        assert_eq!(ok.messages, 500);
        wait_for("the queue's restart", async || {
            queue.status().await.unwrap().restarts == 2 + round
        })
        .await;
    }

    // Crash the exchange actor: routing still works and new bindings still apply.
    let exchange = ractor::registry::where_is("exchange:/amq.direct").unwrap();
    ractor::ActorRef::<warren_actors::vhost::ExchangeMsg>::from(exchange)
        .cast(warren_actors::vhost::ExchangeMsg::Crash)
        .unwrap();
    wait_for("the exchange's restart", async || {
        ractor::registry::where_is("exchange:/amq.direct")
            .is_some_and(|c| c.get_status() == ractor::ActorStatus::Running)
    })
    .await;
    let mut routed = RouteResult::default();
    vhost
        .route("amq.direct", "work", None, &mut routed)
        .unwrap();
    assert_eq!(routed.len(), 1);

    // Every message comes back, in order, exactly once.
    for i in 0..500 {
        let (delivery, _) = queue.get(7, true).await.unwrap().expect("a message");
        assert_eq!(delivery.message.body, Bytes::from(format!("job-{i}")));
    }
    assert!(queue.get(7, true).await.unwrap().is_none());
    node.shutdown().await;
}

/// The queue's ready messages as it reports them.
async fn ready(queue: &QueueRef) -> u64 {
    queue.status().await.unwrap().stats.ready
}
