//! A real Rust AMQP 0-9-1 client (lapin) against a real node: each test starts a
//! `warren node` and talks to its AMQP port as an application would. What the pika
//! scripts (`tests/amqp_pika.rs`) check is not repeated here; these tests cover what a
//! second client library sees: property and header round trips, frame splitting of
//! large bodies, lapin's error reporting, heartbeats, and messages crossing between
//! the AMQP listener and the Rust client handle.
//!
//! Nothing waits a fixed time: every await on the broker is bounded (by [`WAIT`] or
//! `common::lapin_ops::LAPIN_WAIT`), and what happens asynchronously (a requeue after a
//! connection closes, dead-lettering) is polled for with a bounded deadline.

mod common;

use std::time::{Duration, Instant};

use common::lapin_ops::{get, next, within};
use common::{free_port, NodeProcess};
use lapin::message::BasicGetMessage;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString};
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ErrorKind, ExchangeKind,
};
use tempfile::TempDir;
use warren::client::PublishOptions;
use warren_actors::message::{FieldValue, Properties};

/// How long anything asynchronous may take before a test fails.
const WAIT: Duration = Duration::from_secs(20);
/// How long a node may take to start serving AMQP.
const START: Duration = Duration::from_secs(60);

/// A node of the test's own. Fields drop in order: the node (killed), then its
/// directory.
struct Broker {
    node: NodeProcess,
    _dir: TempDir,
}

impl Broker {
    fn start() -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = NodeProcess::start(&dir.path().join("node"), free_port());
        Broker { node, _dir: dir }
    }

    fn uri(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.node.amqp_addr)
    }

    /// Connects with lapin, retrying while the node starts (bounded).
    async fn connect_uri(&self, uri: &str) -> Connection {
        let deadline = Instant::now() + START;
        loop {
            match Connection::connect(uri, ConnectionProperties::default()).await {
                Ok(c) => return c,
                Err(e) if Instant::now() > deadline => {
                    panic!("the node's AMQP listener at {uri} never served: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn connect(&self) -> Connection {
        self.connect_uri(&self.uri()).await
    }

    async fn channel(&self) -> (Connection, Channel) {
        let connection = self.connect().await;
        let channel = within("channel.open", connection.create_channel()).await;
        (connection, channel)
    }
}

/// Puts a channel in publisher-confirm mode.
async fn confirm_mode(ch: &Channel) {
    within(
        "confirm.select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await;
}

/// The AMQP reply code a lapin error carries (the broker's channel.close or
/// connection.close), if it is a protocol error.
fn reply_code(e: &lapin::Error) -> Option<u16> {
    match e.kind() {
        ErrorKind::ProtocolError(amqp) => Some(amqp.get_id()),
        _ => None,
    }
}

/// The reply text of a lapin protocol error (empty for other errors).
fn reply_text(e: &lapin::Error) -> String {
    match e.kind() {
        ErrorKind::ProtocolError(amqp) => amqp.get_message().as_str().to_owned(),
        _ => String::new(),
    }
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

async fn declare(channel: &Channel, queue: &str, arguments: FieldTable) {
    within(
        &format!("queue.declare {queue}"),
        channel.queue_declare(queue.into(), QueueDeclareOptions::default(), arguments),
    )
    .await;
}

/// Publishes and waits for the broker's ack (the channel must be in confirm mode).
async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) {
    let confirm = within(
        "basic.publish",
        channel.basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body,
            properties,
        ),
    )
    .await;
    let confirmation = within("publisher confirm", confirm).await;
    assert!(
        confirmation.is_ack(),
        "publish to '{exchange}' with key '{routing_key}' is acked: {confirmation:?}"
    );
}

/// Gets a message from `queue`, polling until one is there (bounded).
async fn get_eventually(channel: &Channel, queue: &str, no_ack: bool) -> BasicGetMessage {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(m) = get(channel, queue, no_ack).await {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "no message arrived in {queue} within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Takes every message `queue` holds now (no_ack), in order.
async fn drain(channel: &Channel, queue: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    while let Some(m) = get(channel, queue, true).await {
        bodies.push(String::from_utf8_lossy(&m.delivery.data).into_owned());
    }
    bodies
}

/// Ready messages in `queue` (passive declare).
async fn ready(channel: &Channel, queue: &str) -> u32 {
    within(
        &format!("passive queue.declare {queue}"),
        channel.queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .message_count()
}

/// Polls until `queue` holds `n` ready messages (bounded).
async fn wait_ready(channel: &Channel, queue: &str, n: u32) {
    let deadline = Instant::now() + WAIT;
    loop {
        let count = ready(channel, queue).await;
        if count == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{queue} holds {count} ready messages, not {n}, after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn consume(channel: &Channel, queue: &str) -> Consumer {
    within(
        &format!("basic.consume {queue}"),
        channel.basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
}

/// Every property set, and headers with most field types, nested tables and arrays.
fn properties_for(i: u32) -> BasicProperties {
    let nested = table(&[
        ("level", AMQPValue::LongInt(2)),
        ("name", long("inner")),
        (
            "list",
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::LongLongInt(-1),
                long("x"),
            ])),
        ),
    ]);
    let array = FieldArray::from(vec![
        AMQPValue::LongInt(i as i32),
        long("two"),
        AMQPValue::Boolean(false),
        AMQPValue::FieldTable(table(&[("k", long("v"))])),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::Double(0.5)])),
    ]);
    let headers = table(&[
        ("seq", AMQPValue::LongLongInt(i64::from(i))),
        ("even", AMQPValue::Boolean(i.is_multiple_of(2))),
        ("text", long(&format!("message {i}"))),
        ("int32", AMQPValue::LongInt(-7)),
        ("byte", AMQPValue::ShortShortInt(-3)),
        ("ratio", AMQPValue::Double(f64::from(i) / 4.0)),
        ("float", AMQPValue::Float(1.5)),
        (
            "decimal",
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 12345,
            }),
        ),
        ("when", AMQPValue::Timestamp(1_700_000_000 + u64::from(i))),
        (
            "bytes",
            AMQPValue::ByteArray(ByteArray::from(vec![0u8, 1, 254, 255])),
        ),
        ("nothing", AMQPValue::Void),
        ("nested", AMQPValue::FieldTable(nested)),
        ("array", AMQPValue::FieldArray(array)),
    ]);
    BasicProperties::default()
        .with_content_type("application/octet-stream".into())
        .with_content_encoding("identity".into())
        .with_headers(headers)
        .with_delivery_mode(if i.is_multiple_of(2) { 1 } else { 2 })
        .with_priority((i % 10) as u8)
        .with_correlation_id(format!("corr-{i}").into())
        .with_reply_to("replies".into())
        .with_expiration("3600000".into())
        .with_message_id(format!("msg-{i}").into())
        .with_timestamp(1_600_000_000 + u64::from(i))
        .with_type("test.message".into())
        .with_app_id("amqp_lapin".into())
}

/// 1 000 messages with confirms and manual acks: each arrives once, in order, with
/// every property and header as published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_with_confirms_acks_and_every_property() {
    const N: u32 = 1000;
    let broker = Broker::start();
    let (_consumer_conn, consumer_ch) = broker.channel().await;
    let (_publisher_conn, publisher_ch) = broker.channel().await;
    declare(&consumer_ch, "roundtrip", FieldTable::default()).await;
    within(
        "basic.qos",
        consumer_ch.basic_qos(100, BasicQosOptions::default()),
    )
    .await;
    let mut consumer = consume(&consumer_ch, "roundtrip").await;

    let publisher = tokio::spawn(async move {
        confirm_mode(&publisher_ch).await;
        let mut confirms = Vec::with_capacity(N as usize);
        for i in 0..N {
            let confirm = within(
                "basic.publish",
                publisher_ch.basic_publish(
                    "".into(),
                    "roundtrip".into(),
                    BasicPublishOptions::default(),
                    format!("body-{i}").as_bytes(),
                    properties_for(i),
                ),
            )
            .await;
            confirms.push(confirm);
        }
        for (i, confirm) in confirms.into_iter().enumerate() {
            let confirmation = within("publisher confirm", confirm).await;
            assert!(confirmation.is_ack(), "message {i} acked: {confirmation:?}");
        }
        publisher_ch
    });

    for i in 0..N {
        let d = next(&mut consumer, &format!("message {i}")).await;
        assert_eq!(
            String::from_utf8_lossy(&d.data),
            format!("body-{i}"),
            "bodies arrive once each, in publish order"
        );
        assert!(!d.redelivered, "message {i} is a first delivery");
        assert_eq!(d.exchange.as_str(), "");
        assert_eq!(d.routing_key.as_str(), "roundtrip");
        assert_eq!(d.properties, properties_for(i), "properties of message {i}");
        within("basic.ack", d.acker.ack(BasicAckOptions::default())).await;
    }
    let publisher_ch = tokio::time::timeout(WAIT, publisher)
        .await
        .expect("every publish confirmed in time")
        .expect("the publisher task");
    // Nothing more: the queue has no ready message left, and no duplicate follows
    // (a duplicate would already have broken the order above).
    wait_ready(&publisher_ch, "roundtrip", 0).await;
}

/// Topic and headers exchanges route what lapin publishes to the right queues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_and_headers_exchanges() {
    let broker = Broker::start();
    let (_conn, ch) = broker.channel().await;
    confirm_mode(&ch).await;

    within(
        "exchange.declare logs",
        ch.exchange_declare(
            "logs".into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    for (queue, key) in [
        ("t-errors", "*.error"),
        ("t-app", "app.#"),
        ("t-all", "#"),
        ("t-none", "nothing.here"),
    ] {
        declare(&ch, queue, FieldTable::default()).await;
        within(
            "queue.bind",
            ch.queue_bind(
                queue.into(),
                "logs".into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await;
    }
    for key in ["app.error", "db.error", "app.info.verbose", "x"] {
        publish_confirmed(&ch, "logs", key, key.as_bytes(), BasicProperties::default()).await;
    }
    assert_eq!(drain(&ch, "t-errors").await, ["app.error", "db.error"]);
    assert_eq!(drain(&ch, "t-app").await, ["app.error", "app.info.verbose"]);
    assert_eq!(
        drain(&ch, "t-all").await,
        ["app.error", "db.error", "app.info.verbose", "x"]
    );
    assert!(drain(&ch, "t-none").await.is_empty());

    within(
        "exchange.declare docs",
        ch.exchange_declare(
            "docs".into(),
            ExchangeKind::Headers,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    let bindings = [
        (
            "h-all",
            table(&[
                ("x-match", long("all")),
                ("format", long("pdf")),
                ("type", long("report")),
            ]),
        ),
        (
            "h-any",
            table(&[
                ("x-match", long("any")),
                ("format", long("pdf")),
                ("type", long("log")),
            ]),
        ),
        // RabbitMQ compares values, not their AMQP types: a long-long 5 in the
        // binding matches a long 5 in the message.
        ("h-size", table(&[("size", AMQPValue::LongLongInt(5))])),
        // Void: the header only has to be present.
        ("h-present", table(&[("trace", AMQPValue::Void)])),
    ];
    for (queue, arguments) in bindings {
        declare(&ch, queue, FieldTable::default()).await;
        within(
            "queue.bind",
            ch.queue_bind(
                queue.into(),
                "docs".into(),
                "ignored".into(),
                QueueBindOptions::default(),
                arguments,
            ),
        )
        .await;
    }
    let messages = [
        (
            "pdf-report",
            table(&[("format", long("pdf")), ("type", long("report"))]),
        ),
        ("pdf", table(&[("format", long("pdf"))])),
        (
            "log-5",
            table(&[("type", long("log")), ("size", AMQPValue::LongInt(5))]),
        ),
        (
            "traced",
            table(&[("trace", long("yes")), ("size", AMQPValue::LongInt(6))]),
        ),
    ];
    for (body, headers) in messages {
        publish_confirmed(
            &ch,
            "docs",
            "",
            body.as_bytes(),
            BasicProperties::default().with_headers(headers),
        )
        .await;
    }
    publish_confirmed(&ch, "docs", "", b"no-headers", BasicProperties::default()).await;
    assert_eq!(drain(&ch, "h-all").await, ["pdf-report"]);
    assert_eq!(drain(&ch, "h-any").await, ["pdf-report", "pdf", "log-5"]);
    assert_eq!(drain(&ch, "h-size").await, ["log-5"]);
    assert_eq!(drain(&ch, "h-present").await, ["traced"]);
}

fn header<'a>(properties: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
    properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name))
}

fn text_of(v: Option<&AMQPValue>) -> Option<String> {
    match v {
        Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Some(AMQPValue::ShortString(s)) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// A nack with requeue comes back redelivered; a reject without requeue goes to the
/// queue's dead-letter exchange with an `x-death` entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_requeue_then_reject_to_dead_letter_exchange() {
    let broker = Broker::start();
    let (_conn, ch) = broker.channel().await;
    confirm_mode(&ch).await;
    within(
        "exchange.declare dlx",
        ch.exchange_declare(
            "dlx".into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    declare(&ch, "dead", FieldTable::default()).await;
    within(
        "queue.bind dead",
        ch.queue_bind(
            "dead".into(),
            "dlx".into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    declare(
        &ch,
        "work",
        table(&[("x-dead-letter-exchange", long("dlx"))]),
    )
    .await;
    publish_confirmed(&ch, "", "work", b"job", BasicProperties::default()).await;

    let (_consumer_conn, consumer_ch) = broker.channel().await;
    let mut consumer = consume(&consumer_ch, "work").await;
    let first = next(&mut consumer, "first delivery").await;
    assert_eq!(first.data, b"job");
    assert!(!first.redelivered, "a first delivery is not redelivered");
    within(
        "basic.nack requeue",
        first.acker.nack(BasicNackOptions {
            multiple: false,
            requeue: true,
        }),
    )
    .await;

    let second = next(&mut consumer, "delivery after the nack").await;
    assert_eq!(second.data, b"job");
    assert!(
        second.redelivered,
        "a requeued message comes back redelivered"
    );
    within(
        "basic.reject",
        second.acker.reject(BasicRejectOptions { requeue: false }),
    )
    .await;

    let dead = get_eventually(&ch, "dead", true).await;
    assert_eq!(dead.delivery.data, b"job");
    assert_eq!(dead.delivery.exchange.as_str(), "dlx");
    assert_eq!(dead.delivery.routing_key.as_str(), "work");
    let properties = &dead.delivery.properties;
    let Some(AMQPValue::FieldArray(deaths)) = header(properties, "x-death") else {
        panic!("the dead-lettered message carries an x-death array: {properties:?}");
    };
    let Some(AMQPValue::FieldTable(death)) = deaths.as_slice().first() else {
        panic!("x-death holds a table: {deaths:?}");
    };
    let field = |name: &str| death.inner().get(name).cloned();
    assert_eq!(
        text_of(field("reason").as_ref()).as_deref(),
        Some("rejected")
    );
    assert_eq!(text_of(field("queue").as_ref()).as_deref(), Some("work"));
    assert_eq!(text_of(field("exchange").as_ref()).as_deref(), Some(""));
    assert_eq!(field("count"), Some(AMQPValue::LongLongInt(1)));
    assert_eq!(
        field("routing-keys"),
        Some(AMQPValue::FieldArray(FieldArray::from(vec![long("work")])))
    );
    assert_eq!(
        text_of(header(properties, "x-first-death-reason")).as_deref(),
        Some("rejected")
    );
    assert_eq!(
        text_of(header(properties, "x-first-death-queue")).as_deref(),
        Some("work")
    );
    assert_eq!(
        ready(&ch, "work").await,
        0,
        "the rejected message left work"
    );
}

/// A channel error reaches lapin with its reply code, and only the failed channel
/// closes: a new channel on the same connection works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_declare_of_a_missing_queue_closes_only_the_channel() {
    let broker = Broker::start();
    let (conn, ch) = broker.channel().await;

    let missing = tokio::time::timeout(
        WAIT,
        ch.queue_declare(
            "no-such-queue".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("an answer to the passive declare");
    let e = missing.expect_err("a passive declare of a missing queue fails");
    assert_eq!(reply_code(&e), Some(404), "NOT_FOUND: {e}");
    assert!(
        reply_text(&e).contains("no-such-queue"),
        "the 404 names the queue: {e}"
    );
    assert!(
        e.is_amqp_soft_error(),
        "a channel error, not a connection one: {e}"
    );
    assert!(!ch.status().connected(), "the failed channel is closed");

    assert!(conn.status().connected(), "the connection survives");
    let ch2 = within("channel.open after the error", conn.create_channel()).await;
    confirm_mode(&ch2).await;
    declare(&ch2, "present", FieldTable::default()).await;
    publish_confirmed(&ch2, "", "present", b"fine", BasicProperties::default()).await;
    let got = get_eventually(&ch2, "present", true).await;
    assert_eq!(got.delivery.data, b"fine");
}

/// A confirmed publish to a missing exchange is not confirmed: the channel closes
/// with 404 (RabbitMQ looks the exchange up before it numbers the publish, so no
/// basic.ack is ever sent for it), and lapin fails the pending confirm with that
/// code. A new channel on the same connection works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_publish_to_a_missing_exchange_fails_with_404() {
    let broker = Broker::start();
    let (conn, ch) = broker.channel().await;
    confirm_mode(&ch).await;
    let published = tokio::time::timeout(WAIT, async {
        let confirm = ch
            .basic_publish(
                "no-such-exchange".into(),
                "key".into(),
                BasicPublishOptions::default(),
                b"lost",
                BasicProperties::default(),
            )
            .await?;
        confirm.await
    })
    .await
    .expect("an answer to the publish");
    let e = published.expect_err("the confirm of a publish to a missing exchange fails");
    assert_eq!(reply_code(&e), Some(404), "NOT_FOUND: {e}");
    assert!(
        reply_text(&e).contains("no-such-exchange"),
        "the 404 names the exchange: {e}"
    );

    assert!(conn.status().connected(), "the connection survives");
    let ch2 = within("channel.open after the error", conn.create_channel()).await;
    declare(&ch2, "present", FieldTable::default()).await;
    assert_eq!(ready(&ch2, "present").await, 0);
}

/// A body larger than frame_max is split into frames and reassembled on both sides;
/// an empty body has no body frame at all. Both round-trip, with sizes at the edge of
/// one frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_and_empty_bodies_round_trip() {
    let broker = Broker::start();
    let (conn, ch) = broker.channel().await;
    let frame_max = conn.configuration().frame_max() as usize;
    assert!(
        (4096..(1 << 20)).contains(&frame_max),
        "frame_max {frame_max} is below the large body's size"
    );
    confirm_mode(&ch).await;
    declare(&ch, "sizes", FieldTable::default()).await;

    // A body frame carries frame_max - 8 bytes at most.
    let sizes = [
        0,
        1,
        frame_max - 8,
        frame_max - 7,
        1 << 20,
        3 * frame_max + 5,
    ];
    let body = |n: usize| -> Vec<u8> { (0..n).map(|i| (i * 31 % 251) as u8).collect() };
    for (i, &n) in sizes.iter().enumerate() {
        let properties = BasicProperties::default()
            .with_content_type("application/octet-stream".into())
            .with_message_id(format!("size-{i}").into());
        publish_confirmed(&ch, "", "sizes", &body(n), properties).await;
    }

    let (_consumer_conn, consumer_ch) = broker.channel().await;
    let mut consumer = consume(&consumer_ch, "sizes").await;
    for (i, &n) in sizes.iter().enumerate() {
        let d = next(&mut consumer, &format!("a body of {n} bytes")).await;
        assert_eq!(d.data.len(), n, "size of message {i}");
        assert!(d.data == body(n), "the {n}-byte body arrives intact");
        assert_eq!(
            d.properties.message_id().as_ref().map(|s| s.as_str()),
            Some(format!("size-{i}").as_str())
        );
        assert_eq!(
            d.properties.content_type().as_ref().map(|s| s.as_str()),
            Some("application/octet-stream")
        );
        within("basic.ack", d.acker.ack(BasicAckOptions::default())).await;
    }

    // basic.get takes the same content path as a delivery.
    publish_confirmed(&ch, "", "sizes", &body(1 << 20), BasicProperties::default()).await;
    publish_confirmed(&ch, "", "sizes", b"", BasicProperties::default()).await;
    drop(consumer);
    within("channel.close", consumer_ch.close(200, "OK".into())).await;
    let got = get_eventually(&ch, "sizes", true).await;
    assert!(
        got.delivery.data == body(1 << 20),
        "1 MiB through basic.get"
    );
    let got = get_eventually(&ch, "sizes", true).await;
    assert!(
        got.delivery.data.is_empty(),
        "an empty body through basic.get"
    );
}

/// The AMQP listener and the Rust client handle share queues: messages from either
/// side are consumed by the other, with their properties.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_and_client_handle_share_queues() {
    let broker = Broker::start();
    let (_conn, ch) = broker.channel().await;
    confirm_mode(&ch).await;
    declare(&ch, "shared", FieldTable::default()).await;
    let client = broker.node.client().await;

    publish_confirmed(
        &ch,
        "",
        "shared",
        b"from-lapin",
        BasicProperties::default().with_content_type("text/plain".into()),
    )
    .await;
    let mut headers = warren_actors::message::FieldTable::new();
    headers.insert("origin".into(), FieldValue::string("client"));
    headers.insert("n".into(), FieldValue::I64(42));
    let options = PublishOptions {
        properties: Properties {
            content_type: Some("application/json".into()),
            correlation_id: Some("c-1".into()),
            headers: Some(headers),
            ..Default::default()
        },
        ..Default::default()
    };
    let result = client
        .publish("", "shared", &b"from-client"[..], options)
        .await
        .expect("client publish")
        .await
        .expect("client confirm");
    assert!(
        matches!(result, warren::client::PublishResult::Confirmed),
        "the client's publish is confirmed: {result:?}"
    );

    let (_consumer_conn, consumer_ch) = broker.channel().await;
    let mut consumer = consume(&consumer_ch, "shared").await;
    let a = next(&mut consumer, "the lapin message").await;
    assert_eq!(a.data, b"from-lapin");
    assert_eq!(
        a.properties.content_type().as_ref().map(|s| s.as_str()),
        Some("text/plain")
    );
    let b = next(&mut consumer, "the client's message").await;
    assert_eq!(b.data, b"from-client");
    assert_eq!(b.routing_key.as_str(), "shared");
    assert_eq!(
        b.properties.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    assert_eq!(
        b.properties.correlation_id().as_ref().map(|s| s.as_str()),
        Some("c-1")
    );
    assert_eq!(
        text_of(header(&b.properties, "origin")).as_deref(),
        Some("client")
    );
    assert_eq!(
        header(&b.properties, "n"),
        Some(&AMQPValue::LongLongInt(42))
    );
    within("basic.ack", a.acker.ack(BasicAckOptions::default())).await;
    within("basic.ack", b.acker.ack(BasicAckOptions::default())).await;
    drop(consumer);
    within("channel.close", consumer_ch.close(200, "OK".into())).await;

    // The other way: lapin publishes, the client handle gets.
    publish_confirmed(
        &ch,
        "",
        "shared",
        b"to-client",
        BasicProperties::default()
            .with_message_id("m-7".into())
            .with_headers(table(&[
                ("k", long("v")),
                (
                    "nested",
                    AMQPValue::FieldTable(table(&[("x", AMQPValue::LongInt(1))])),
                ),
            ])),
    )
    .await;
    let deadline = Instant::now() + WAIT;
    let got = loop {
        if let Some(d) = client.get("shared", true).await.expect("client get") {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "the client never got the message"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(&got.body[..], b"to-client");
    assert_eq!(got.properties.message_id.as_deref(), Some("m-7"));
    assert_eq!(got.properties.header("k"), Some(&FieldValue::string("v")));
    assert_eq!(
        got.properties.header("nested"),
        Some(&FieldValue::Table(
            [("x".to_string(), FieldValue::I32(1))].into()
        ))
    );
}

/// Closing a connection with unacked deliveries returns them to the queue; another
/// connection gets them redelivered, in their order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_connection_requeues_its_unacked_messages() {
    let broker = Broker::start();
    let (_conn, ch) = broker.channel().await;
    confirm_mode(&ch).await;
    declare(&ch, "held", FieldTable::default()).await;
    for i in 0..3 {
        publish_confirmed(
            &ch,
            "",
            "held",
            format!("m{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await;
    }

    let (holder_conn, holder_ch) = broker.channel().await;
    within(
        "basic.qos",
        holder_ch.basic_qos(10, BasicQosOptions::default()),
    )
    .await;
    let mut consumer = consume(&holder_ch, "held").await;
    for i in 0..3 {
        let d = next(&mut consumer, &format!("m{i}")).await;
        assert_eq!(d.data, format!("m{i}").as_bytes());
        assert!(!d.redelivered);
    }
    assert_eq!(ready(&ch, "held").await, 0, "all three are out, unacked");
    within("connection.close", holder_conn.close(200, "OK".into())).await;

    let (_other_conn, other_ch) = broker.channel().await;
    for i in 0..3 {
        let m = get_eventually(&other_ch, "held", false).await;
        assert_eq!(
            String::from_utf8_lossy(&m.delivery.data),
            format!("m{i}"),
            "requeued messages keep their order"
        );
        assert!(m.delivery.redelivered, "m{i} comes back redelivered");
        within(
            "basic.ack",
            m.delivery.acker.ack(BasicAckOptions::default()),
        )
        .await;
    }
    assert!(get(&other_ch, "held", true).await.is_none());
}

/// A 1-second heartbeat is negotiated from the URI, and an idle connection stays up
/// well past the 2 s a missed heartbeat would take on either side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_an_idle_connection_alive() {
    let broker = Broker::start();
    let conn = broker
        .connect_uri(&format!("{}?heartbeat=1", broker.uri()))
        .await;
    assert_eq!(
        conn.configuration().heartbeat(),
        1,
        "the client's lower value wins"
    );
    let ch = within("channel.open", conn.create_channel()).await;
    declare(&ch, "idle", FieldTable::default()).await;

    // Idle on the wire: only local status checks for 4 s, twice the time after which
    // either side gives up on a silent peer.
    let idle_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < idle_until {
        assert!(
            conn.status().connected(),
            "the connection dropped while idle: {:?}",
            conn.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    confirm_mode(&ch).await;
    publish_confirmed(&ch, "", "idle", b"still here", BasicProperties::default()).await;
    let got = get_eventually(&ch, "idle", true).await;
    assert_eq!(got.delivery.data, b"still here");
}

/// A channel with prefetch `prefetch` consuming the stream `events` from `offset`
/// (an `x-stream-offset` form).
async fn stream_reader(conn: &Connection, prefetch: u16, offset: AMQPValue) -> (Channel, Consumer) {
    let reader = within("channel.open", conn.create_channel()).await;
    within(
        "basic.qos",
        reader.basic_qos(prefetch, BasicQosOptions::default()),
    )
    .await;
    let consumer = within(
        "basic.consume",
        reader.basic_consume(
            "events".into(),
            "".into(),
            BasicConsumeOptions::default(),
            table(&[("x-stream-offset", offset)]),
        ),
    )
    .await;
    (reader, consumer)
}

/// A lapin consumer of a stream with every `x-stream-offset` form (RabbitMQ's): each
/// delivery's offset is in its `x-stream-offset` header, a `long`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_read_from_every_offset_form() {
    let broker = Broker::start();
    let (conn, ch) = broker.channel().await;
    confirm_mode(&ch).await;
    within(
        "queue.declare events",
        ch.queue_declare(
            "events".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            table(&[("x-queue-type", long("stream"))]),
        ),
    )
    .await;
    for i in 0..10 {
        let body = format!("e{i}");
        publish_confirmed(
            &ch,
            "",
            "events",
            body.as_bytes(),
            BasicProperties::default(),
        )
        .await;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // (form, the offsets its first deliveries have)
    let forms: [(AMQPValue, Vec<i64>); 6] = [
        (long("first"), (0..10).collect()),
        (long("last"), vec![9]),
        (AMQPValue::LongLongInt(4), (4..10).collect()),
        (AMQPValue::ShortInt(7), (7..10).collect()),
        (AMQPValue::Timestamp(now - 60), (0..10).collect()),
        (long("1h"), (0..10).collect()),
    ];
    for (form, expected) in forms {
        let (reader, mut consumer) = stream_reader(&conn, 100, form.clone()).await;
        let mut offsets = Vec::new();
        while offsets.len() < expected.len() {
            let d = next(&mut consumer, &format!("{form:?}")).await;
            let header = d
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get("x-stream-offset").cloned());
            match header {
                Some(AMQPValue::LongLongInt(o)) => offsets.push(o),
                other => panic!("{form:?}: x-stream-offset is {other:?}, not a long"),
            }
            within("basic.ack", d.ack(BasicAckOptions::default())).await;
        }
        assert_eq!(offsets, expected, "{form:?}");
        within("channel.close", reader.close(200, "done".into())).await;
    }
    // next: only what is published from now on.
    let (_reader, mut consumer) = stream_reader(&conn, 10, long("next")).await;
    publish_confirmed(&ch, "", "events", b"later", BasicProperties::default()).await;
    let d = next(&mut consumer, "next").await;
    assert_eq!(d.data, b"later");
}
