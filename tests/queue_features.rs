//! Queue features end to end: a real `warren node` process driven through the Rust
//! client handle. TTL and dead-lettering (`x-death`), nack and requeue, priorities,
//! length limits, get, purge and delete, exclusivity, single active consumer, the
//! delivery limit, mandatory publishes and alternate exchanges.
//!
//! Every test starts its own node. Nothing waits a fixed time: what happens
//! asynchronously (expiry, dead-lettering, an owner going away) is polled for with a
//! bounded deadline.

mod common;

use std::time::{Duration, Instant};

use common::{free_port, NodeProcess};
use tempfile::TempDir;
use warren::client::{
    Client, ClientError, ConsumeOptions, Consumer, Delivery, ExchangeOptions, PublishOptions,
    PublishResult, QueueOptions,
};
use warren_actors::message::{FieldTable, FieldValue, Properties};

/// How long anything asynchronous may take before a test fails.
const WAIT: Duration = Duration::from_secs(20);

/// One test at a time per process. nextest runs each test in its own process; plain
/// `cargo test` runs them as threads of one process, where a client dialling one node
/// while another node's session is live can land on the wrong node (ractor_cluster
/// numbers node ids per client transport, one transport per cookie, and
/// `warren_cluster::connect::gateway_of` matches the gateway by node id only).
static ONE_NODE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A node of the test's own and a client connected to it. Fields drop in order: the
/// client, then the node (killed), then its directory, then the lock.
struct Broker {
    client: Client,
    node: NodeProcess,
    _dir: TempDir,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

async fn broker() -> Broker {
    let serial = ONE_NODE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("node"), free_port());
    let client = node.client().await;
    Broker {
        client,
        node,
        _dir: dir,
        _serial: serial,
    }
}

fn args(pairs: &[(&str, FieldValue)]) -> FieldTable {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn text(s: &str) -> FieldValue {
    FieldValue::string(s)
}

async fn declare(client: &Client, name: &str, arguments: FieldTable) {
    client
        .declare_queue(
            name,
            QueueOptions {
                arguments,
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("declare queue {name}: {e}"));
}

/// A fanout exchange `dlx` and a queue `dead` bound to it.
async fn dead_letter_target(client: &Client) {
    client
        .declare_exchange("dlx", "fanout", ExchangeOptions::default())
        .await
        .unwrap();
    declare(client, "dead", FieldTable::new()).await;
    client
        .bind_queue("dead", "dlx", "", FieldTable::new())
        .await
        .unwrap();
}

async fn publish_with(
    client: &Client,
    exchange: &str,
    key: &str,
    body: &str,
    options: PublishOptions,
) -> PublishResult {
    client
        .publish(exchange, key, body.to_string(), options)
        .await
        .unwrap()
        .await
        .unwrap()
}

/// Publishes through the default exchange and expects a confirm.
async fn publish(client: &Client, queue: &str, body: &str) {
    let result = publish_with(client, "", queue, body, PublishOptions::default()).await;
    assert_eq!(result, PublishResult::Confirmed, "publishing {body}");
}

/// The next delivery of a consumer (bounded wait).
async fn next(consumer: &mut Consumer) -> Delivery {
    tokio::time::timeout(WAIT, consumer.next())
        .await
        .expect("a delivery in time")
        .expect("the consumer is open")
        .expect("a delivery, not an error")
}

/// Polls `get` until the queue hands out a message (bounded wait).
async fn get_eventually(client: &Client, queue: &str) -> Delivery {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(d) = client.get(queue, false).await.unwrap() {
            return d;
        }
        assert!(Instant::now() < deadline, "nothing arrived on {queue}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn get_body(client: &Client, queue: &str) -> Option<String> {
    client.get(queue, true).await.unwrap().map(|d| body(&d))
}

fn body(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.body).into_owned()
}

/// The reply code of a refusal (a success fails the test).
fn code<T>(result: Result<T, ClientError>) -> Option<u16> {
    match result {
        Ok(_) => panic!("expected a refusal, got a success"),
        Err(e) => e.code(),
    }
}

/// The `x-death` entries of a dead-lettered delivery, most recent first.
fn x_death(d: &Delivery) -> Vec<FieldTable> {
    match d.properties.header("x-death") {
        Some(FieldValue::Array(entries)) => entries
            .iter()
            .map(|e| match e {
                FieldValue::Table(t) => t.clone(),
                other => panic!("x-death entry {other:?}"),
            })
            .collect(),
        other => panic!("no x-death array on {:?}: {other:?}", body(d)),
    }
}

fn field<'a>(t: &'a FieldTable, key: &str) -> &'a str {
    t.get(key)
        .and_then(FieldValue::as_str)
        .unwrap_or_else(|| panic!("x-death field {key} in {t:?}"))
}

fn header<'a>(d: &'a Delivery, key: &str) -> Option<&'a str> {
    d.properties.header(key).and_then(FieldValue::as_str)
}

/// Checks the first `x-death` entry: reason, queue and count 1.
fn assert_died(d: &Delivery, reason: &str, queue: &str) {
    let deaths = x_death(d);
    let first = &deaths[0];
    assert_eq!(field(first, "reason"), reason, "{first:?}");
    assert_eq!(field(first, "queue"), queue, "{first:?}");
    assert_eq!(
        first.get("count").and_then(FieldValue::as_i64),
        Some(1),
        "{first:?}"
    );
    assert_eq!(header(d, "x-first-death-reason"), Some(reason));
    assert_eq!(header(d, "x-first-death-queue"), Some(queue));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_messages_are_dead_lettered() {
    let b = broker().await;
    let c = &b.client;
    dead_letter_target(c).await;

    // Per-queue TTL.
    declare(
        c,
        "short",
        args(&[
            ("x-message-ttl", FieldValue::I32(50)),
            ("x-dead-letter-exchange", text("dlx")),
        ]),
    )
    .await;
    publish(c, "short", "stale").await;
    let d = get_eventually(c, "dead").await;
    assert_eq!(body(&d), "stale");
    assert_died(&d, "expired", "short");
    let death = &x_death(&d)[0];
    assert_eq!(field(death, "exchange"), "");
    assert_eq!(
        death.get("routing-keys"),
        Some(&FieldValue::Array(vec![text("short")]))
    );
    assert_eq!(d.exchange, "dlx");
    assert_eq!(d.routing_key, "short", "no x-dead-letter-routing-key: kept");
    d.ack().unwrap();
    assert_eq!(get_body(c, "short").await, None);

    // Per-message TTL (`expiration`): only that message expires.
    declare(c, "mixed", args(&[("x-dead-letter-exchange", text("dlx"))])).await;
    let expiring = PublishOptions {
        properties: Properties {
            expiration: Some("50".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let result = publish_with(c, "", "mixed", "brief", expiring).await;
    assert_eq!(result, PublishResult::Confirmed);
    publish(c, "mixed", "lasting").await;
    let d = get_eventually(c, "dead").await;
    assert_eq!(body(&d), "brief");
    assert_died(&d, "expired", "mixed");
    assert_eq!(field(&x_death(&d)[0], "original-expiration"), "50");
    assert_eq!(
        d.properties.expiration, None,
        "dead-lettering drops the TTL"
    );
    d.ack().unwrap();
    assert_eq!(get_body(c, "mixed").await.as_deref(), Some("lasting"));
    assert_eq!(get_body(c, "mixed").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_messages_are_dead_lettered_with_the_dead_letter_routing_key() {
    let b = broker().await;
    let c = &b.client;
    c.declare_exchange("dlx", "direct", ExchangeOptions::default())
        .await
        .unwrap();
    declare(c, "dead", FieldTable::new()).await;
    c.bind_queue("dead", "dlx", "graveyard", FieldTable::new())
        .await
        .unwrap();
    declare(
        c,
        "work",
        args(&[
            ("x-dead-letter-exchange", text("dlx")),
            ("x-dead-letter-routing-key", text("graveyard")),
        ]),
    )
    .await;
    publish(c, "work", "a").await;
    publish(c, "work", "b").await;

    let mut consumer = c.consume("work", ConsumeOptions::default()).await.unwrap();
    let a = next(&mut consumer).await;
    let bb = next(&mut consumer).await;
    assert_eq!((body(&a).as_str(), body(&bb).as_str()), ("a", "b"));
    a.reject(false).unwrap();
    bb.nack(false).unwrap();

    for expected in ["a", "b"] {
        let d = get_eventually(c, "dead").await;
        assert_eq!(body(&d), expected);
        assert_died(&d, "rejected", "work");
        assert_eq!(d.exchange, "dlx");
        assert_eq!(d.routing_key, "graveyard");
        assert_eq!(
            x_death(&d)[0].get("routing-keys"),
            Some(&FieldValue::Array(vec![text("work")])),
            "x-death keeps the original routing key"
        );
        d.ack().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_with_requeue_redelivers_in_place() {
    let b = broker().await;
    let c = &b.client;
    declare(c, "q", FieldTable::new()).await;
    for m in ["a", "b", "c"] {
        publish(c, "q", m).await;
    }
    let mut consumer = c
        .consume(
            "q",
            ConsumeOptions {
                prefetch: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let first = next(&mut consumer).await;
    assert_eq!(body(&first), "a");
    assert!(!first.redelivered);
    first.nack(true).unwrap();

    let again = next(&mut consumer).await;
    assert_eq!(body(&again), "a", "the requeued message keeps its place");
    assert!(again.redelivered);
    again.ack().unwrap();
    for m in ["b", "c"] {
        let d = next(&mut consumer).await;
        assert_eq!(body(&d), m);
        assert!(!d.redelivered);
        d.ack().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_queue_delivers_highest_priority_first() {
    let b = broker().await;
    let c = &b.client;
    declare(c, "prio", args(&[("x-max-priority", FieldValue::I32(10))])).await;
    // `capped` asks for more than the maximum: it counts as priority 10.
    let published = [
        ("p1", Some(1)),
        ("none", None),
        ("p5", Some(5)),
        ("p9", Some(9)),
        ("p5-later", Some(5)),
        ("capped", Some(200)),
    ];
    for (m, priority) in published {
        let options = PublishOptions {
            properties: Properties {
                priority,
                ..Default::default()
            },
            ..Default::default()
        };
        let result = publish_with(c, "", "prio", m, options).await;
        assert_eq!(result, PublishResult::Confirmed);
    }
    let mut consumer = c.consume("prio", ConsumeOptions::default()).await.unwrap();
    let mut order = Vec::new();
    for _ in 0..published.len() {
        let d = next(&mut consumer).await;
        order.push(body(&d));
        d.ack().unwrap();
    }
    assert_eq!(order, ["capped", "p9", "p5", "p5-later", "p1", "none"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_length_drops_the_head_or_rejects_publishes() {
    let b = broker().await;
    let c = &b.client;
    dead_letter_target(c).await;

    // drop-head (the default): the oldest goes, dead-lettered as maxlen.
    declare(
        c,
        "bounded",
        args(&[
            ("x-max-length", FieldValue::I32(2)),
            ("x-dead-letter-exchange", text("dlx")),
        ]),
    )
    .await;
    for m in ["m1", "m2", "m3"] {
        publish(c, "bounded", m).await;
    }
    let d = get_eventually(c, "dead").await;
    assert_eq!(body(&d), "m1");
    assert_died(&d, "maxlen", "bounded");
    d.ack().unwrap();
    assert_eq!(get_body(c, "bounded").await.as_deref(), Some("m2"));
    assert_eq!(get_body(c, "bounded").await.as_deref(), Some("m3"));
    assert_eq!(get_body(c, "bounded").await, None);

    // reject-publish: the publish that does not fit is refused.
    declare(
        c,
        "strict",
        args(&[
            ("x-max-length", FieldValue::I32(1)),
            ("x-overflow", text("reject-publish")),
        ]),
    )
    .await;
    publish(c, "strict", "s1").await;
    let refused = publish_with(c, "", "strict", "s2", PublishOptions::default()).await;
    assert!(
        matches!(refused, PublishResult::Rejected(_)),
        "expected Rejected, got {refused:?}"
    );
    assert_eq!(get_body(c, "strict").await.as_deref(), Some("s1"));
    assert_eq!(get_body(c, "strict").await, None);
    // Room again: publishes are accepted.
    publish(c, "strict", "s3").await;
    assert_eq!(get_body(c, "strict").await.as_deref(), Some("s3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_takes_one_message_at_a_time() {
    let b = broker().await;
    let c = &b.client;
    declare(c, "g", FieldTable::new()).await;
    assert!(c.get("g", true).await.unwrap().is_none(), "empty queue");
    publish(c, "g", "a").await;
    publish(c, "g", "b").await;
    assert_eq!(get_body(c, "g").await.as_deref(), Some("a"));
    assert_eq!(get_body(c, "g").await.as_deref(), Some("b"));
    assert_eq!(get_body(c, "g").await, None);

    // Manual ack: a nack with requeue gives it back, marked redelivered.
    publish(c, "g", "c").await;
    let d = c.get("g", false).await.unwrap().expect("c");
    assert_eq!(body(&d), "c");
    assert!(!d.redelivered);
    assert!(
        c.get("g", false).await.unwrap().is_none(),
        "an unacked message is not ready"
    );
    d.nack(true).unwrap();
    c.flush_settles().await;
    let d = c.get("g", false).await.unwrap().expect("c again");
    assert_eq!(body(&d), "c");
    assert!(d.redelivered);
    d.ack().unwrap();
    c.flush_settles().await;
    assert!(c.get("g", false).await.unwrap().is_none());
    let info = c.queues().await.unwrap();
    let g = info.iter().find(|q| q.name == "g").expect("g listed");
    assert_eq!((g.ready, g.unacked), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_and_conditional_delete() {
    let b = broker().await;
    let c = &b.client;

    // Purge removes the ready messages only.
    declare(c, "p", FieldTable::new()).await;
    for m in ["a", "b", "c"] {
        publish(c, "p", m).await;
    }
    let held = c.get("p", false).await.unwrap().expect("a");
    assert_eq!(c.purge("p").await.unwrap(), 2);
    assert_eq!(c.purge("p").await.unwrap(), 0);
    held.ack().unwrap();

    // if-empty refuses a queue with ready messages.
    declare(c, "full", FieldTable::new()).await;
    publish(c, "full", "x").await;
    assert_eq!(code(c.delete_queue("full", false, true).await), Some(406));
    let still = c
        .declare_queue(
            "full",
            QueueOptions {
                passive: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(still.messages, 1);
    assert_eq!(c.delete_queue("full", false, false).await.unwrap(), 1);
    assert_eq!(code(c.purge("full").await), Some(404));

    // if-unused refuses a queue with a consumer.
    declare(c, "used", FieldTable::new()).await;
    let consumer = c.consume("used", ConsumeOptions::default()).await.unwrap();
    assert_eq!(code(c.delete_queue("used", true, false).await), Some(406));
    consumer.cancel().await.unwrap();
    assert_eq!(c.delete_queue("used", true, false).await.unwrap(), 0);
    // Deleting it again succeeds with 0, as in RabbitMQ (queue.delete is idempotent).
    assert_eq!(c.delete_queue("used", false, false).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_queue_cancels_its_consumers() {
    let b = broker().await;
    let c = &b.client;
    declare(c, "doomed", FieldTable::new()).await;
    let mut consumer = c
        .consume("doomed", ConsumeOptions::default())
        .await
        .unwrap();
    assert_eq!(c.delete_queue("doomed", false, false).await.unwrap(), 0);
    // The client documents it: a consumer the node ended yields one error, then None.
    let ended = tokio::time::timeout(WAIT, consumer.next())
        .await
        .expect("the consumer learns its queue was deleted");
    assert!(
        matches!(ended, Some(Err(ClientError::Disconnected(_))) | None),
        "{ended:?}"
    );
    assert!(consumer.next().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_queues_and_exclusive_consumers() {
    let b = broker().await;
    let c = &b.client;

    // An exclusive queue belongs to the connection that declared it.
    let owner = b.node.client().await;
    owner
        .declare_queue(
            "mine",
            QueueOptions {
                exclusive: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let owner_consumer = owner
        .consume("mine", ConsumeOptions::default())
        .await
        .unwrap();
    let as_exclusive = QueueOptions {
        exclusive: true,
        ..Default::default()
    };
    assert_eq!(code(c.declare_queue("mine", as_exclusive).await), Some(405));
    assert_eq!(
        code(c.declare_queue("mine", QueueOptions::default()).await),
        Some(405)
    );
    assert_eq!(
        code(c.consume("mine", ConsumeOptions::default()).await),
        Some(405)
    );
    assert_eq!(code(c.get("mine", false).await), Some(405));
    assert_eq!(code(c.purge("mine").await), Some(405));
    assert_eq!(code(c.delete_queue("mine", false, false).await), Some(405));

    // The owner goes away: its exclusive queue is deleted.
    drop(owner_consumer);
    drop(owner);
    let deadline = Instant::now() + WAIT;
    while c.queues().await.unwrap().iter().any(|q| q.name == "mine") {
        assert!(
            Instant::now() < deadline,
            "the exclusive queue outlived its owner"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let passive = QueueOptions {
        passive: true,
        ..Default::default()
    };
    assert_eq!(code(c.declare_queue("mine", passive).await), Some(404));

    // Exclusive consumers: 403 ACCESS_REFUSED both ways.
    declare(c, "shared", FieldTable::new()).await;
    let other = b.node.client().await;
    let exclusive = ConsumeOptions {
        exclusive: true,
        ..Default::default()
    };
    let sole = c.consume("shared", exclusive.clone()).await.unwrap();
    assert_eq!(
        code(other.consume("shared", ConsumeOptions::default()).await),
        Some(403)
    );
    assert_eq!(
        code(c.consume("shared", ConsumeOptions::default()).await),
        Some(403)
    );
    sole.cancel().await.unwrap();
    let plain = other
        .consume("shared", ConsumeOptions::default())
        .await
        .unwrap();
    assert_eq!(code(c.consume("shared", exclusive).await), Some(403));
    plain.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_active_consumer_hands_over_on_cancel() {
    let b = broker().await;
    let c = &b.client;
    declare(
        c,
        "sac",
        args(&[("x-single-active-consumer", FieldValue::Bool(true))]),
    )
    .await;
    let mut first = c.consume("sac", ConsumeOptions::default()).await.unwrap();
    let mut second = c.consume("sac", ConsumeOptions::default()).await.unwrap();
    for m in ["m1", "m2", "m3"] {
        publish(c, "sac", m).await;
    }
    // The first consumer gets everything (the second, with free credit, nothing).
    for m in ["m1", "m2", "m3"] {
        let d = next(&mut first).await;
        assert_eq!(body(&d), m);
        d.ack().unwrap();
    }
    c.flush_settles().await;
    first.cancel().await.unwrap();

    publish(c, "sac", "m4").await;
    let d = next(&mut second).await;
    assert_eq!(body(&d), "m4", "the second consumer's first delivery");
    d.ack().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_limit_dead_letters_after_too_many_returns() {
    let b = broker().await;
    let c = &b.client;
    dead_letter_target(c).await;
    declare(
        c,
        "limited",
        args(&[
            ("x-delivery-limit", FieldValue::I32(1)),
            ("x-dead-letter-exchange", text("dlx")),
        ]),
    )
    .await;
    publish(c, "limited", "m").await;
    let mut consumer = c
        .consume(
            "limited",
            ConsumeOptions {
                prefetch: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let d = next(&mut consumer).await;
    assert!(!d.redelivered);
    d.nack(true).unwrap(); // first return: within the limit
    let d = next(&mut consumer).await;
    assert_eq!(body(&d), "m");
    assert!(d.redelivered);
    d.nack(true).unwrap(); // second return: over the limit

    let dead = get_eventually(c, "dead").await;
    assert_eq!(body(&dead), "m");
    assert_died(&dead, "delivery_limit", "limited");
    dead.ack().unwrap();
    consumer.cancel().await.unwrap();
    assert_eq!(get_body(c, "limited").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_and_failed_publishes() {
    let b = broker().await;
    let c = &b.client;
    let mandatory = PublishOptions {
        mandatory: true,
        ..Default::default()
    };
    let r = publish_with(c, "amq.direct", "nobody", "x", mandatory.clone()).await;
    assert_eq!(r, PublishResult::Unroutable);
    let r = publish_with(c, "", "no-such-queue", "x", mandatory.clone()).await;
    assert_eq!(r, PublishResult::Unroutable);
    // Not mandatory: dropped silently, confirmed.
    let r = publish_with(c, "amq.direct", "nobody", "x", PublishOptions::default()).await;
    assert_eq!(r, PublishResult::Confirmed);

    let r = publish_with(c, "no-such-exchange", "k", "x", mandatory).await;
    match r {
        PublishResult::Failed(reply) => assert_eq!(reply.code, 404, "{reply:?}"),
        other => panic!("expected Failed(404), got {other:?}"),
    }
    // The session survives a failed publish.
    declare(c, "after", FieldTable::new()).await;
    publish(c, "after", "ok").await;
    assert_eq!(get_body(c, "after").await.as_deref(), Some("ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternate_exchange_takes_unroutable_messages() {
    let b = broker().await;
    let c = &b.client;
    c.declare_exchange("ae", "fanout", ExchangeOptions::default())
        .await
        .unwrap();
    declare(c, "unrouted", FieldTable::new()).await;
    c.bind_queue("unrouted", "ae", "", FieldTable::new())
        .await
        .unwrap();
    c.declare_exchange(
        "main",
        "direct",
        ExchangeOptions {
            arguments: args(&[("alternate-exchange", text("ae"))]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    declare(c, "routed", FieldTable::new()).await;
    c.bind_queue("routed", "main", "known", FieldTable::new())
        .await
        .unwrap();

    let mandatory = PublishOptions {
        mandatory: true,
        ..Default::default()
    };
    let r = publish_with(c, "main", "known", "k", mandatory.clone()).await;
    assert_eq!(r, PublishResult::Confirmed);
    let r = publish_with(c, "main", "unknown", "u", mandatory).await;
    assert_eq!(
        r,
        PublishResult::Confirmed,
        "the alternate exchange took it"
    );

    assert_eq!(get_body(c, "routed").await.as_deref(), Some("k"));
    assert_eq!(get_body(c, "routed").await, None);
    let d = c.get("unrouted", true).await.unwrap().expect("u");
    assert_eq!(body(&d), "u");
    assert_eq!(d.exchange, "main", "keeps the exchange it was published to");
    assert_eq!(d.routing_key, "unknown");
    assert_eq!(get_body(c, "unrouted").await, None);
}

/// A queue's counters as listed (ready, unacked) by name.
async fn counts(client: &Client, queue: &str) -> (u64, u64) {
    let q = client
        .queues()
        .await
        .unwrap()
        .into_iter()
        .find(|q| q.name == queue)
        .unwrap_or_else(|| panic!("no queue {queue}"));
    (q.ready, q.unacked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_cycle_without_rejection_is_cut() {
    let b = broker().await;
    let c = &b.client;
    // `loop` dead-letters to `dlx`, which routes back to `loop` itself and to `audit`.
    dead_letter_target(c).await;
    declare(
        c,
        "loop",
        args(&[
            ("x-message-ttl", FieldValue::I32(20)),
            ("x-dead-letter-exchange", text("dlx")),
        ]),
    )
    .await;
    c.bind_queue("loop", "dlx", "", FieldTable::new())
        .await
        .unwrap();
    publish(c, "loop", "round").await;
    // The copy for `dead` arrives once; the one back into `loop` closes a cycle that no
    // consumer took part in and is dropped there (as RabbitMQ does), so it never
    // expires again and nothing more reaches `dead`.
    let d = get_eventually(c, "dead").await;
    assert_died(&d, "expired", "loop");
    d.ack().unwrap();
    let deadline = Instant::now() + WAIT;
    while counts(c, "loop").await != (0, 0) {
        assert!(Instant::now() < deadline, "the message keeps going round");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(get_body(c, "dead").await, None, "only one copy was made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_leaves_only_once_its_target_holds_it() {
    let b = broker().await;
    let c = &b.client;
    // The target takes one message and refuses more (reject-publish).
    c.declare_exchange("dlx", "fanout", ExchangeOptions::default())
        .await
        .unwrap();
    declare(
        c,
        "narrow",
        args(&[
            ("x-max-length", FieldValue::I32(1)),
            ("x-overflow", text("reject-publish")),
        ]),
    )
    .await;
    c.bind_queue("narrow", "dlx", "", FieldTable::new())
        .await
        .unwrap();
    declare(c, "work", args(&[("x-dead-letter-exchange", text("dlx"))])).await;
    publish(c, "work", "first").await;
    publish(c, "work", "second").await;
    let first = get_eventually(c, "work").await;
    let second = get_eventually(c, "work").await;
    first.reject(false).unwrap();
    second.reject(false).unwrap();
    // `narrow` holds the first; the second stays with `work` (dead-lettering) while
    // `narrow` is full, instead of being lost.
    let held = get_eventually(c, "narrow").await;
    assert_eq!(body(&held), "first");
    // Room again: the retry puts the second there, and only then does it leave `work`.
    held.ack().unwrap();
    let later = get_eventually(c, "narrow").await;
    assert_eq!(body(&later), "second");
    assert_died(&later, "rejected", "work");
    later.ack().unwrap();
    // `work` lets it go once `narrow`'s confirm has come back to it.
    let deadline = Instant::now() + WAIT;
    while counts(c, "work").await != (0, 0) {
        assert!(
            Instant::now() < deadline,
            "work still holds the dead letter"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A dead letter one of its targets refuses is retried to that target only: the
/// targets that took it do not get another copy at each retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_retry_skips_the_targets_that_hold_it() {
    let b = broker().await;
    let c = &b.client;
    c.declare_exchange("dlx", "fanout", ExchangeOptions::default())
        .await
        .unwrap();
    // What `narrow` refuses is dead-lettered (at most once) into `refusals`: one
    // message there per try.
    c.declare_exchange("narrow-dlx", "fanout", ExchangeOptions::default())
        .await
        .unwrap();
    declare(c, "refusals", FieldTable::new()).await;
    c.bind_queue("refusals", "narrow-dlx", "", FieldTable::new())
        .await
        .unwrap();
    declare(
        c,
        "narrow",
        args(&[
            ("x-max-length", FieldValue::I32(1)),
            ("x-overflow", text("reject-publish-dlx")),
            ("x-dead-letter-exchange", text("narrow-dlx")),
        ]),
    )
    .await;
    declare(c, "wide", FieldTable::new()).await;
    for q in ["narrow", "wide"] {
        c.bind_queue(q, "dlx", "", FieldTable::new()).await.unwrap();
    }
    declare(c, "work", args(&[("x-dead-letter-exchange", text("dlx"))])).await;
    publish(c, "work", "first").await;
    publish(c, "work", "second").await;
    let first = get_eventually(c, "work").await;
    let second = get_eventually(c, "work").await;
    first.reject(false).unwrap();
    second.reject(false).unwrap();
    // `narrow` holds the first and refuses the second, at the first try and again at
    // a retry.
    let deadline = Instant::now() + WAIT;
    while counts(c, "refusals").await.0 < 2 {
        assert!(
            Instant::now() < deadline,
            "no retry of the refused dead letter"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let held = get_eventually(c, "narrow").await;
    assert_eq!(body(&held), "first");
    held.ack().unwrap();
    let later = get_eventually(c, "narrow").await;
    assert_eq!(body(&later), "second");
    later.ack().unwrap();
    while counts(c, "work").await != (0, 0) {
        assert!(
            Instant::now() < deadline,
            "work still holds the dead letter"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // `wide` took each message once, however often `narrow` was retried.
    assert_eq!(counts(c, "wide").await, (2, 0));
}

/// The application takes `n` deliveries (and acks each unless `no_ack`).
async fn take(consumer: &mut Consumer, n: u64, no_ack: bool) {
    for _ in 0..n {
        let d = next(consumer).await;
        if !no_ack {
            d.ack().unwrap();
        }
    }
}

/// The ready count of `queue` once it is at most `bound` (bounded wait).
async fn ready_at_most(client: &Client, queue: &str, bound: u64) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let (ready, _) = counts(client, queue).await;
        if ready <= bound {
            return ready;
        }
        assert!(
            Instant::now() < deadline,
            "{queue} still holds {ready} ready, more than {bound}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A consumer without acks, and one with acks and no prefetch, whose application takes
/// nothing at first: the queue sends each the window's worth (1 000) and keeps the
/// rest, and the window opens by what the application takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_held_by_nothing_else_get_a_window_of_what_the_application_takes() {
    const TOTAL: u64 = 3_000;
    const WINDOW: u64 = warren_actors::queue::WRITE_WINDOW as u64;
    let b = broker().await;
    let c = &b.client;
    for (queue, no_ack) in [("window-no-ack", true), ("window-no-prefetch", false)] {
        declare(c, queue, FieldTable::new()).await;
        let mut confirms = Vec::new();
        for i in 0..TOTAL {
            let options = PublishOptions::default();
            confirms.push(c.publish("", queue, format!("{i}"), options).await.unwrap());
        }
        for confirm in confirms {
            assert_eq!(confirm.await.unwrap(), PublishResult::Confirmed);
        }
        let options = ConsumeOptions {
            prefetch: 0,
            no_ack,
            ..Default::default()
        };
        let mut consumer = c.consume(queue, options).await.unwrap();
        // The first count at or below what the window leaves must be exactly that:
        // without a window the queue would go on to send everything.
        let left = ready_at_most(c, queue, TOTAL - WINDOW).await;
        assert_eq!(left, TOTAL - WINDOW, "{queue}: the window's worth, no more");
        take(&mut consumer, 500, no_ack).await;
        let left = ready_at_most(c, queue, TOTAL - WINDOW - 500).await;
        assert_eq!(
            left,
            TOTAL - WINDOW - 500,
            "{queue}: the window opened by 500"
        );
        take(&mut consumer, TOTAL - 500, no_ack).await;
        c.flush_settles().await;
        let deadline = Instant::now() + WAIT;
        while counts(c, queue).await != (0, 0) {
            assert!(Instant::now() < deadline, "{queue} is not emptied");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        consumer.cancel().await.unwrap();
    }
}
