//! A classic queue used through every node of a cluster (issue 23).
//!
//! Three real `warren node` processes, n1, n2 and n3 (all disk members), and a durable
//! classic queue declared through n1: it lives on n1, and clients of n2 and n3 reach
//! it over queue links (`cluster/src/link.rs`, `remote_queues.rs` on the client's
//! node, `queue_endpoint.rs` on the queue's). The clients are lapin, as applications
//! use the broker. One test per claim:
//!
//! 1. [`every_operation_through_every_node_reaches_the_queue_on_n1`]: for every
//!    (publisher node, consumer node) pair, 2 000 persistent messages published with
//!    confirms arrive once each, in publish order, at a manual-ack consumer. Through the
//!    remote nodes: basic.get right after a publish on the same channel finds it
//!    (read-after-write), and a message confirmed through one node is there for a
//!    basic.get through another; nack with requeue brings a message back redelivered;
//!    reject without requeue drops it; queue.purge through n3 right after publishes
//!    through n3 counts exactly what was published and not taken; queue.delete through
//!    n2 returns the message count.
//! 2. [`killing_the_publishers_node_loses_no_confirmed_message`] (SIGKILL of n2, the
//!    publisher's node, while n3 consumes) and
//!    [`killing_the_queues_node_loses_no_confirmed_message`] (SIGKILL of n1, the queue's
//!    node, then a restart on the same data directory): every message whose confirm the
//!    publisher received is consumed or still in the queue, and the publisher's
//!    unconfirmed messages end in nacks or errors, never in a confirm that hangs.
//! 3. [`a_slow_remote_consumer_keeps_its_nodes_memory_flat`]: two consumers on n2 with
//!    prefetch 10, one acking a message per 20 ms and one that never reads its socket,
//!    while 50 000 × 4 KiB messages are published to the queue on n1: n2's resident
//!    memory stays flat (the messages wait on n1; a remote consumer gets what its
//!    prefetch allows, no more) and n1 counts at most 10 unacknowledged deliveries per
//!    consumer. (The consumer that never reads is what makes the memory bound bite: a
//!    lapin consumer reads everything n2 sends it, so deliveries pushed beyond the
//!    prefetch would pile up in the test process, not in n2. With an unlimited prefetch
//!    on that consumer, n2's RSS grows by some 240 MiB here.)
//! 4. [`a_remote_no_ack_consumer_that_reads_nothing_leaves_the_queue_on_n1`]: a no-ack
//!    consumer on n2 that reads nothing while the queue on n1 holds 160 MiB: its write
//!    window crosses the link, so most of the messages stay in the queue; then it reads
//!    every one.
//!
//! Nothing waits a fixed time: every wait is bounded by [`WAIT`] (a bound on a hang, not
//! a measure of speed) and polls or awaits the broker. A failed test prints what each
//! node logged.

mod common;

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::lapin_ops::{get, next, within};
use common::{eventually_within, free_port, members, queue_row, NodeProcess};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer,
    PublisherConfirm,
};
use tempfile::TempDir;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// How long anything may take before the test fails (a hang, not slowness).
const WAIT: Duration = Duration::from_secs(60);
/// Messages per (publisher node, consumer node) pair.
const ROUND: usize = 2_000;
/// Confirmed messages before a node is killed mid-stream.
const BEFORE_KILL: u64 = 2_000;
/// Confirms a streaming publisher leaves outstanding at most.
const WINDOW: usize = 500;

/// The three nodes; on a failure, what each logged. (Fields drop in order: the nodes
/// are killed before their directory goes.)
struct Cluster {
    nodes: Vec<NodeProcess>,
    ports: [u16; 3],
    dir: TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A failed test shows what each node logged.
        common::show_logs_if_failing(&self.nodes);
    }
}

/// Member `i` (n1, n2, n3) of a cluster on `ports`, the other two its seeds.
fn member(dir: &Path, ports: [u16; 3], i: usize) -> NodeProcess {
    let seeds: Vec<u16> = ports.iter().copied().filter(|p| *p != ports[i]).collect();
    let name = format!("n{}", i + 1);
    NodeProcess::start_member(&dir.join(&name), ports[i], &name, &seeds, "disk")
}

impl Cluster {
    /// n1, n2 and n3, once each sees all three up.
    fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports = [free_port(), free_port(), free_port()];
        let nodes = (0..3).map(|i| member(dir.path(), ports, i)).collect();
        let cluster = Cluster { nodes, ports, dir };
        cluster.await_all_up();
        cluster
    }

    fn await_all_up(&self) {
        let all_up: Vec<(String, String)> = ["n1", "n2", "n3"]
            .iter()
            .map(|n| (n.to_string(), "up".to_string()))
            .collect();
        for (i, node) in self.nodes.iter().enumerate() {
            eventually_within(&format!("n{} sees n1, n2 and n3 up", i + 1), WAIT, || {
                members(node) == all_up
            });
        }
    }

    /// Starts node `i` again (killed before) on its data directory, port and flags.
    fn restart(&mut self, i: usize) {
        self.nodes[i].kill();
        self.nodes[i] = member(self.dir.path(), self.ports, i);
    }

    /// A connection to n1, with durable queue `queue` declared through it once every
    /// node lists the queue on n1.
    fn queue_on_n1(&self, rt: &Runtime, queue: &str) -> Connection {
        let c1 = rt.block_on(connect(&self.nodes[0]));
        rt.block_on(async { declare_durable(&channel(&c1).await, queue).await });
        self.await_home(queue, "n1");
        c1
    }

    /// Waits until every node lists `queue` with home `home`.
    fn await_home(&self, queue: &str, home: &str) {
        for (i, node) in self.nodes.iter().enumerate() {
            eventually_within(
                &format!("n{} lists queue {queue} on {home}", i + 1),
                WAIT,
                || home_of(node, queue).as_deref() == Some(home),
            );
        }
    }

    /// Waits until `queue` holds no message, ready or unacknowledged, as n1 (its home)
    /// counts them.
    fn await_empty(&self, queue: &str) {
        let mut seen = None;
        eventually_within(&format!("queue {queue} empty"), WAIT, || {
            seen = held(&self.nodes[0], queue);
            seen == Some(0)
        });
    }
}

/// The home node of `queue` as `node` lists it.
fn home_of(node: &NodeProcess, queue: &str) -> Option<String> {
    queue_row(node, queue).and_then(|r| r["node"].as_str().map(str::to_string))
}

/// Messages in `queue`, ready and unacknowledged, as `node` lists them.
fn held(node: &NodeProcess, queue: &str) -> Option<u64> {
    let row = queue_row(node, queue)?;
    Some(row["ready"].as_u64()? + row["unacked"].as_u64()?)
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// An AMQP connection to `node`, retrying while it starts (bounded).
async fn connect(node: &NodeProcess) -> Connection {
    let uri = format!("amqp://guest:guest@{}/%2f", node.amqp_addr);
    let deadline = Instant::now() + WAIT;
    loop {
        let attempt = tokio::time::timeout(
            WAIT,
            Connection::connect(&uri, ConnectionProperties::default()),
        )
        .await;
        match attempt {
            Ok(Ok(c)) => return c,
            Err(_) => panic!("connecting to {uri}: no answer within {WAIT:?}"),
            Ok(Err(e)) if Instant::now() > deadline => panic!("{uri} never served AMQP: {e}"),
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn channel(connection: &Connection) -> Channel {
    within("channel.open", connection.create_channel()).await
}

/// A channel in publisher-confirm mode.
async fn confirming_channel(connection: &Connection) -> Channel {
    let ch = channel(connection).await;
    within(
        "confirm.select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await;
    ch
}

async fn declare_durable(ch: &Channel, queue: &str) {
    within(
        &format!("queue.declare {queue}"),
        ch.queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await;
}

/// A consumer of `queue` on `ch` with manual acks and prefetch `prefetch`.
async fn consume(ch: &Channel, queue: &str, tag: &str, prefetch: u16) -> Consumer {
    within(
        "basic.qos",
        ch.basic_qos(prefetch, BasicQosOptions::default()),
    )
    .await;
    within(
        &format!("basic.consume {queue}"),
        ch.basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

/// Publishes `body` to `queue` through the default exchange; the confirm to await.
async fn publish(
    ch: &Channel,
    queue: &str,
    body: &[u8],
    properties: BasicProperties,
) -> PublisherConfirm {
    within(
        "basic.publish",
        ch.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body,
            properties,
        ),
    )
    .await
}

/// Awaits `confirm` (bounded); fails unless the broker acked it.
async fn expect_ack(confirm: PublisherConfirm, what: &str) {
    let confirmation = within(&format!("the confirm of {what}"), confirm).await;
    assert!(
        confirmation.is_ack(),
        "{what} was not confirmed: {confirmation:?}"
    );
}

/// Publishes `body` persistent and waits for its confirm.
async fn publish_confirmed(ch: &Channel, queue: &str, body: &str) {
    let confirm = publish(ch, queue, body.as_bytes(), persistent()).await;
    expect_ack(confirm, body).await;
}

fn text(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.data).into_owned()
}

async fn ack(d: &Delivery) {
    within("basic.ack", d.acker.ack(BasicAckOptions::default())).await;
}

/// Closes `connection` (bounded; a connection to a killed node may fail to close).
async fn close(connection: Connection) {
    let _ = tokio::time::timeout(WAIT, connection.close(200, "done".into())).await;
}

// ----- 1. Every operation through every node -------------------------------------

const QUEUE: &str = "everywhere";

/// Messages published with confirms through `publisher` and consumed with manual acks
/// through `consumer` arrive once each, first deliveries, in publish order.
async fn publish_and_consume(publisher: &Connection, consumer: &Connection, label: &str) {
    let cch = channel(consumer).await;
    let mut deliveries = consume(&cch, QUEUE, label, 100).await;
    let pch = confirming_channel(publisher).await;
    let bodies: Vec<String> = (0..ROUND).map(|i| format!("{label}:{i}")).collect();
    let publishing = tokio::spawn({
        let (pch, bodies) = (pch.clone(), bodies.clone());
        async move {
            let mut confirms = Vec::with_capacity(bodies.len());
            for body in &bodies {
                confirms.push(publish(&pch, QUEUE, body.as_bytes(), persistent()).await);
            }
            for (confirm, body) in confirms.into_iter().zip(&bodies) {
                expect_ack(confirm, body).await;
            }
        }
    });
    let mut got = Vec::with_capacity(ROUND);
    while got.len() < ROUND {
        let d = next(&mut deliveries, &format!("{label}: message {}", got.len())).await;
        assert!(!d.redelivered, "{label}: {} redelivered", text(&d));
        got.push(text(&d));
        ack(&d).await;
    }
    if let Some(i) = (0..ROUND).find(|&i| got[i] != bodies[i]) {
        let sent: HashSet<&String> = bodies.iter().collect();
        let received: HashSet<&String> = got.iter().collect();
        panic!(
            "{label}: {} lost, {} repeated; the first difference is at {i}: got {:?}, \
             expected {:?}",
            sent.difference(&received).count(),
            ROUND - received.len(),
            &got[i..(i + 5).min(ROUND)],
            &bodies[i..(i + 5).min(ROUND)]
        );
    }
    match tokio::time::timeout(WAIT, publishing).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => std::panic::resume_unwind(e.into_panic()),
        Err(_) => panic!("{label}: the publisher's confirms did not all come within {WAIT:?}"),
    }
    within(
        "basic.cancel",
        cch.basic_cancel(label.into(), BasicCancelOptions::default()),
    )
    .await;
    within("channel.close", cch.close(200, "done".into())).await;
    within("channel.close", pch.close(200, "done".into())).await;
}

#[test]
fn every_operation_through_every_node_reaches_the_queue_on_n1() {
    let cluster = Cluster::start();
    let rt = runtime();
    let conns: Vec<Connection> = rt.block_on(async {
        let mut conns = Vec::new();
        for node in &cluster.nodes {
            conns.push(connect(node).await);
        }
        conns
    });
    rt.block_on(async { declare_durable(&channel(&conns[0]).await, QUEUE).await });
    cluster.await_home(QUEUE, "n1");

    // Every (publisher, consumer) pair, the local ones too.
    for p in 0..3 {
        for c in 0..3 {
            let label = format!("n{}>n{}", p + 1, c + 1);
            let started = Instant::now();
            rt.block_on(publish_and_consume(&conns[p], &conns[c], &label));
            cluster.await_empty(QUEUE);
            eprintln!(
                "{label}: {ROUND} messages published, confirmed, consumed in order in {:?}",
                started.elapsed()
            );
        }
    }

    // Read-after-write through the remote nodes: a basic.get right after a publish on
    // the same channel (its confirm not awaited) finds it; a message confirmed through
    // one node is there for a basic.get through another.
    for x in [1, 2] {
        let other = (x + 1) % 3;
        rt.block_on(async {
            let ch = confirming_channel(&conns[x]).await;
            let och = channel(&conns[other]).await;
            for i in 0..100 {
                let body = format!("read-after-write n{}:{i}", x + 1);
                let confirm = publish(&ch, QUEUE, body.as_bytes(), persistent()).await;
                let got = get(&ch, QUEUE, false).await.unwrap_or_else(|| {
                    panic!(
                        "basic.get through n{} right after {body} found nothing",
                        x + 1
                    )
                });
                assert_eq!(text(&got.delivery), body);
                assert_eq!(got.message_count, 0, "nothing else in the queue");
                ack(&got.delivery).await;
                expect_ack(confirm, &body).await;

                let body = format!("read-after-confirm n{}>n{}:{i}", x + 1, other + 1);
                publish_confirmed(&ch, QUEUE, &body).await;
                let got = get(&och, QUEUE, true).await.unwrap_or_else(|| {
                    panic!(
                        "basic.get through n{} after {body} was confirmed found nothing",
                        other + 1
                    )
                });
                assert_eq!(text(&got.delivery), body);
            }
            within("channel.close", ch.close(200, "done".into())).await;
            within("channel.close", och.close(200, "done".into())).await;
        });
        cluster.await_empty(QUEUE);
    }
    eprintln!("read-after-write through n2 and n3: ok");

    // Nack with requeue and reject without requeue through the remote nodes.
    rt.block_on(async {
        let pch = confirming_channel(&conns[0]).await;

        // A consumer on n2 nacks a message with requeue: it comes back, redelivered.
        let ch2 = channel(&conns[1]).await;
        let mut deliveries = consume(&ch2, QUEUE, "nacker", 1).await;
        publish_confirmed(&pch, QUEUE, "nack-me").await;
        let first = next(&mut deliveries, "nack-me").await;
        assert_eq!(text(&first), "nack-me");
        assert!(!first.redelivered, "a first delivery");
        within(
            "basic.nack",
            first.acker.nack(BasicNackOptions {
                requeue: true,
                multiple: false,
            }),
        )
        .await;
        let again = next(&mut deliveries, "nack-me, requeued").await;
        assert_eq!(text(&again), "nack-me");
        assert!(
            again.redelivered,
            "a requeued message comes back redelivered"
        );
        ack(&again).await;

        // The consumer on n2 rejects without requeue: the message is gone.
        publish_confirmed(&pch, QUEUE, "reject-me").await;
        let d = next(&mut deliveries, "reject-me").await;
        assert_eq!(text(&d), "reject-me");
        within(
            "basic.reject",
            d.acker.reject(BasicRejectOptions { requeue: false }),
        )
        .await;
        within(
            "basic.cancel",
            ch2.basic_cancel("nacker".into(), BasicCancelOptions::default()),
        )
        .await;
        assert!(
            get(&ch2, QUEUE, true).await.is_none(),
            "a message rejected without requeue through n2 is gone"
        );

        // basic.get through n3, nack with requeue, basic.get at once: it is back.
        let ch3 = channel(&conns[2]).await;
        publish_confirmed(&pch, QUEUE, "nack-me-too").await;
        let got = get(&ch3, QUEUE, false).await.expect("nack-me-too");
        assert_eq!(text(&got.delivery), "nack-me-too");
        assert!(!got.delivery.redelivered);
        within(
            "basic.nack",
            got.delivery.acker.nack(BasicNackOptions {
                requeue: true,
                multiple: false,
            }),
        )
        .await;
        let again = get(&ch3, QUEUE, false)
            .await
            .expect("basic.get right after a nack with requeue through n3 finds the message");
        assert_eq!(text(&again.delivery), "nack-me-too");
        assert!(again.delivery.redelivered, "requeued: redelivered");

        // ... and rejected without requeue through n3, it is gone at once.
        within(
            "basic.reject",
            again
                .delivery
                .acker
                .reject(BasicRejectOptions { requeue: false }),
        )
        .await;
        assert!(
            get(&ch3, QUEUE, false).await.is_none(),
            "a message rejected without requeue through n3 is gone"
        );
        for ch in [pch, ch2, ch3] {
            within("channel.close", ch.close(200, "done".into())).await;
        }
    });
    cluster.await_empty(QUEUE);
    eprintln!("nack with requeue and reject through n2 and n3: ok");

    // queue.purge through n3 right after publishes through n3 (their confirms not
    // awaited): it counts every one of them, less those taken since.
    rt.block_on(async {
        let ch = confirming_channel(&conns[2]).await;
        for taken in [0, 120] {
            const PUBLISHED: usize = 500;
            let mut confirms = Vec::with_capacity(PUBLISHED);
            for i in 0..PUBLISHED {
                let body = format!("purge-{taken}:{i}");
                confirms.push((
                    publish(&ch, QUEUE, body.as_bytes(), persistent()).await,
                    body,
                ));
            }
            for i in 0..taken {
                let got = get(&ch, QUEUE, true)
                    .await
                    .unwrap_or_else(|| panic!("basic.get {i} after the publishes found nothing"));
                assert_eq!(text(&got.delivery), format!("purge-{taken}:{i}"));
            }
            let purged = within(
                "queue.purge through n3",
                ch.queue_purge(QUEUE.into(), QueuePurgeOptions::default()),
            )
            .await;
            assert_eq!(
                purged as usize,
                PUBLISHED - taken,
                "queue.purge right after {PUBLISHED} publishes and {taken} gets through n3"
            );
            for (confirm, body) in confirms {
                expect_ack(confirm, &body).await;
            }
            assert!(get(&ch, QUEUE, true).await.is_none(), "purged: empty");
        }
        within("channel.close", ch.close(200, "done".into())).await;
    });
    cluster.await_empty(QUEUE);
    eprintln!("queue.purge through n3: ok");

    // queue.delete through n2 answers how many messages went with the queue.
    rt.block_on(async {
        let (ch1, ch3) = (
            confirming_channel(&conns[0]).await,
            confirming_channel(&conns[2]).await,
        );
        for i in 0..250 {
            publish_confirmed(&ch1, QUEUE, &format!("deleted n1:{i}")).await;
            publish_confirmed(&ch3, QUEUE, &format!("deleted n3:{i}")).await;
        }
        let ch2 = channel(&conns[1]).await;
        let deleted = within(
            "queue.delete through n2",
            ch2.queue_delete(QUEUE.into(), QueueDeleteOptions::default()),
        )
        .await;
        assert_eq!(deleted, 500, "queue.delete through n2 counts the messages");
    });
    for (i, node) in cluster.nodes.iter().enumerate() {
        eventually_within(&format!("n{} lists no {QUEUE}", i + 1), WAIT, || {
            home_of(node, QUEUE).is_none()
        });
    }
    rt.block_on(async {
        let ch = channel(&conns[2]).await;
        let passive = tokio::time::timeout(
            WAIT,
            ch.queue_declare(
                QUEUE.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await
        .expect("an answer to a passive queue.declare");
        assert!(passive.is_err(), "the deleted queue is gone: {passive:?}");
        for connection in conns {
            close(connection).await;
        }
    });
    eprintln!("queue.delete through n2: ok");
}

// ----- 2. A node killed mid-stream ----------------------------------------------

/// How a streaming publisher ended.
#[derive(Debug, Default)]
struct Published {
    /// Sequence numbers published, acked by the broker.
    confirmed: BTreeSet<u64>,
    /// Published, nacked.
    nacked: BTreeSet<u64>,
    /// Published (or attempted), failed with an error (a closed channel).
    failed: BTreeSet<u64>,
    /// Why it stopped.
    ended: String,
}

/// Publishes persistent messages numbered 0, 1, ... to `queue` on `ch` (a confirming
/// channel), at most [`WINDOW`] unconfirmed at a time, until a publish fails or is
/// nacked (or `stop` is set); then waits for every outstanding confirm. Counts the
/// confirmed ones in `progress`. Any wait longer than [`WAIT`] is a hang: it panics.
async fn publish_until_refused(
    ch: Channel,
    queue: &'static str,
    progress: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Published {
    let mut out = Published::default();
    let mut pending: VecDeque<(u64, PublisherConfirm)> = VecDeque::new();
    let mut seq = 0u64;
    let mut publishing = true;
    loop {
        if publishing && stop.load(Ordering::Relaxed) {
            publishing = false;
            out.ended = "told to stop".into();
        }
        if publishing && pending.len() < WINDOW {
            let attempt = tokio::time::timeout(
                WAIT,
                ch.basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    seq.to_string().as_bytes(),
                    persistent(),
                ),
            )
            .await;
            match attempt {
                Ok(Ok(confirm)) => pending.push_back((seq, confirm)),
                Ok(Err(e)) => {
                    out.failed.insert(seq);
                    out.ended = format!("basic.publish {seq} failed: {e}");
                    publishing = false;
                }
                Err(_) => panic!("basic.publish {seq} hung for {WAIT:?}"),
            }
            seq += 1;
            continue;
        }
        let Some((n, confirm)) = pending.pop_front() else {
            break;
        };
        match tokio::time::timeout(WAIT, confirm).await {
            Ok(Ok(Confirmation::Ack(_))) => {
                out.confirmed.insert(n);
                progress.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Ok(other)) => {
                out.nacked.insert(n);
                if publishing {
                    out.ended = format!("message {n}: {other:?}");
                    publishing = false;
                }
            }
            Ok(Err(e)) => {
                out.failed.insert(n);
                if publishing {
                    out.ended = format!("the confirm of {n} failed: {e}");
                    publishing = false;
                }
            }
            Err(_) => panic!(
                "the confirm of message {n} neither came nor failed within {WAIT:?} \
                 (a publisher left hanging)"
            ),
        }
    }
    out
}

/// A publisher running [`publish_until_refused`] through one node.
struct Publisher {
    connection: Connection,
    task: JoinHandle<Published>,
    progress: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Publisher {
    fn start(rt: &Runtime, node: &NodeProcess, queue: &'static str) -> Publisher {
        let (progress, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (connection, task) = rt.block_on(async {
            let connection = connect(node).await;
            let ch = confirming_channel(&connection).await;
            let task = tokio::spawn(publish_until_refused(
                ch,
                queue,
                progress.clone(),
                stop.clone(),
            ));
            (connection, task)
        });
        Publisher {
            connection,
            task,
            progress,
            stop,
        }
    }

    /// How many messages it saw confirmed so far.
    fn confirmed(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }

    /// Waits for it to end (see [`finish_publisher`]); gives back its connection.
    fn finish(self, rt: &Runtime) -> (Published, Connection) {
        (finish_publisher(rt, self.task, &self.stop), self.connection)
    }
}

/// Waits (bounded) for the publisher `task` to end by itself; if it is still getting
/// confirms after [`WAIT`], tells it to stop.
fn finish_publisher(rt: &Runtime, mut task: JoinHandle<Published>, stop: &AtomicBool) -> Published {
    let first = rt.block_on(async { tokio::time::timeout(WAIT, &mut task).await });
    let joined = match first {
        Ok(joined) => joined,
        Err(_) => {
            eprintln!("the publisher still publishes {WAIT:?} after the kill: stopping it");
            stop.store(true, Ordering::Relaxed);
            rt.block_on(async { tokio::time::timeout(WAIT, task).await })
                .expect("the publisher stops when told (each of its waits is bounded)")
        }
    };
    match joined {
        Ok(published) => published,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Consumes `deliveries` until aborted, acking each after noting its number in
/// `into`.
async fn consume_into(mut deliveries: Consumer, into: Arc<Mutex<Vec<u64>>>) -> String {
    while let Some(d) = deliveries.next().await {
        match d {
            Ok(d) => {
                into.lock().unwrap().push(number(&d));
                if let Err(e) = d.acker.ack(BasicAckOptions::default()).await {
                    return format!("basic.ack failed: {e}");
                }
            }
            Err(e) => return format!("the consumer failed: {e}"),
        }
    }
    "the consumer ended".into()
}

fn number(d: &Delivery) -> u64 {
    text(d)
        .parse()
        .unwrap_or_else(|_| panic!("a foreign message: {:?}", text(d)))
}

/// Takes every message `queue` holds through `connection` (basic.get, no ack), their
/// numbers in queue order. While the queue is starting (its node just restarted) a
/// basic.get may fail: it is tried again on a new channel (bounded).
async fn drain(connection: &Connection, queue: &str) -> Vec<u64> {
    let deadline = Instant::now() + WAIT;
    let mut found = Vec::new();
    let mut ch = channel(connection).await;
    loop {
        let got = tokio::time::timeout(
            WAIT,
            ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }),
        )
        .await;
        match got {
            Ok(Ok(Some(m))) => found.push(number(&m.delivery)),
            Ok(Ok(None)) => return found,
            Ok(Err(e)) => {
                assert!(
                    Instant::now() < deadline,
                    "basic.get {queue} still fails after {WAIT:?}: {e}"
                );
                eprintln!("basic.get {queue} failed ({e}); trying again");
                tokio::time::sleep(Duration::from_millis(100)).await;
                ch = channel(connection).await;
            }
            Err(_) => panic!("basic.get {queue}: no answer within {WAIT:?}"),
        }
    }
}

/// Every confirmed message is among `found` (what was consumed and drained); says
/// what was lost, repeated or present though unconfirmed.
fn check_nothing_confirmed_lost(what: &str, published: &Published, found: &[u64]) {
    let found_set: BTreeSet<u64> = found.iter().copied().collect();
    let lost: Vec<u64> = published
        .confirmed
        .difference(&found_set)
        .copied()
        .collect();
    let unconfirmed_present = found_set.difference(&published.confirmed).count();
    eprintln!(
        "{what}: {} confirmed, {} nacked, {} failed (the publisher ended: {}); \
         {} found ({} distinct, {} duplicates, {} of them unconfirmed); {} confirmed lost",
        published.confirmed.len(),
        published.nacked.len(),
        published.failed.len(),
        published.ended,
        found.len(),
        found_set.len(),
        found.len() - found_set.len(),
        unconfirmed_present,
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "{what}: {} confirmed messages lost, the first: {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
}

/// n2, the publisher's node, is killed while it publishes with confirms to the queue on
/// n1 and n3 consumes from it: no message the publisher saw confirmed is lost.
#[test]
fn killing_the_publishers_node_loses_no_confirmed_message() {
    const Q: &str = "cut-publisher";
    let mut cluster = Cluster::start();
    let rt = runtime();
    let c1 = cluster.queue_on_n1(&rt, Q);

    let consumed = Arc::new(Mutex::new(Vec::new()));
    let (c3, consuming) = rt.block_on(async {
        let c3 = connect(&cluster.nodes[2]).await;
        let deliveries = consume(&channel(&c3).await, Q, "on-n3", 100).await;
        let consuming = tokio::spawn(consume_into(deliveries, consumed.clone()));
        (c3, consuming)
    });
    let publisher = Publisher::start(&rt, &cluster.nodes[1], Q);
    eventually_within(
        "messages confirmed through n2 and consumed on n3",
        WAIT,
        || publisher.confirmed() >= BEFORE_KILL && !consumed.lock().unwrap().is_empty(),
    );
    cluster.nodes[1].kill();
    let (published, c2) = publisher.finish(&rt);
    drop(c2);

    // The consumer on n3 takes what the queue still holds; then the rest (nothing, if
    // all is well) is drained through n1.
    cluster.await_empty(Q);
    consuming.abort();
    rt.block_on(close(c3));
    let drained = rt.block_on(drain(&c1, Q));
    rt.block_on(close(c1));
    let consumed = consumed.lock().unwrap().clone();
    let mut found = consumed.clone();
    found.extend(&drained);
    eprintln!(
        "{} consumed on n3, {} drained through n1",
        consumed.len(),
        drained.len()
    );
    check_nothing_confirmed_lost("n2 killed", &published, &found);
    if let Some(w) = consumed.windows(2).find(|w| w[0] >= w[1]) {
        panic!(
            "the consumer on n3 got message {} after {}: out of publish order",
            w[1], w[0]
        );
    }
}

/// n1, the queue's node, is killed while n2 publishes to its queue with confirms, and
/// started again: every message the publisher saw confirmed is in the queue.
#[test]
fn killing_the_queues_node_loses_no_confirmed_message() {
    const Q: &str = "cut-home";
    let mut cluster = Cluster::start();
    let rt = runtime();
    let c1 = cluster.queue_on_n1(&rt, Q);

    let publisher = Publisher::start(&rt, &cluster.nodes[1], Q);
    eventually_within("messages confirmed through n2", WAIT, || {
        publisher.confirmed() >= BEFORE_KILL
    });
    cluster.nodes[0].kill();
    let killed = Instant::now();
    let (published, c2) = publisher.finish(&rt);
    eprintln!(
        "the publisher on n2 ended {:?} after n1 was killed: {}",
        killed.elapsed(),
        published.ended
    );
    drop(c1);
    rt.block_on(close(c2));

    cluster.restart(0);
    cluster.await_all_up();
    cluster.await_home(Q, "n1");
    let c1 = rt.block_on(connect(&cluster.nodes[0]));
    let found = rt.block_on(drain(&c1, Q));
    rt.block_on(close(c1));
    check_nothing_confirmed_lost("n1 killed and restarted", &published, &found);
}

// ----- 3. A slow remote consumer -------------------------------------------------

/// Resident memory of process `pid` in bytes (`VmRSS` of /proc/PID/status).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the node runs");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kib * 1024
}

/// A consumer of `queue` through `node` on a socket of its own, with prefetch
/// `prefetch` and manual acks, that never reads its deliveries: whatever the node sends
/// it beyond what the socket buffers must wait in the node. Returns the socket (the
/// consumer lives while it is open).
fn stalled_consumer(node: &NodeProcess, queue: &str, prefetch: u16) -> std::net::TcpStream {
    use common::raw_amqp::{consume_frame, expect_method, method_frame, open_channel};
    use std::io::Write;
    let mut s = open_channel(node);
    // basic.qos: prefetch size 0, prefetch count, not global.
    let mut qos = 0u32.to_be_bytes().to_vec();
    qos.extend(prefetch.to_be_bytes());
    qos.push(0);
    s.write_all(&method_frame(1, 60, 10, &qos)).unwrap();
    expect_method(&mut s, (60, 11));
    s.write_all(&consume_frame(queue, "stalled", false))
        .unwrap();
    expect_method(&mut s, (60, 21));
    s
}

/// Two consumers on n2, each with prefetch 10: one acks a message per 20 ms, the other
/// never reads its socket. 50 000 messages of 4 KiB (200 MiB) are published to the
/// queue on n1 meanwhile: they wait on n1, n2 never holds more than the prefetch of its
/// consumers, and its resident memory stays flat.
#[test]
fn a_slow_remote_consumer_keeps_its_nodes_memory_flat() {
    const Q: &str = "slow-remote";
    const MESSAGES: u64 = 50_000;
    const SIZE: usize = 4 * 1024;
    const PREFETCH: u16 = 10;
    const GROWTH_BOUND: u64 = 64 * 1024 * 1024;
    const MIB: u64 = 1024 * 1024;
    let cluster = Cluster::start();
    let (n1, n2) = (&cluster.nodes[0], &cluster.nodes[1]);
    let rt = runtime();
    let c1 = cluster.queue_on_n1(&rt, Q);

    let acked = Arc::new(AtomicUsize::new(0));
    let (c2, consuming) = rt.block_on(async {
        let c2 = connect(n2).await;
        let mut deliveries = consume(&channel(&c2).await, Q, "slow", PREFETCH).await;
        let acked = acked.clone();
        let consuming = tokio::spawn(async move {
            while let Some(Ok(d)) = deliveries.next().await {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if d.acker.ack(BasicAckOptions::default()).await.is_err() {
                    break;
                }
                acked.fetch_add(1, Ordering::Relaxed);
            }
        });
        (c2, consuming)
    });
    let stalled = stalled_consumer(n2, Q, PREFETCH);
    let pid = n2.pid().expect("n2 runs");
    let baseline = rss(pid);

    let done = AtomicBool::new(false);
    let (max_rss, max_unacked, publish_time) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let (mut max_rss, mut max_unacked) = (baseline, 0);
            let mut last_listing = Instant::now();
            while !done.load(Ordering::Relaxed) {
                max_rss = max_rss.max(rss(pid));
                if last_listing.elapsed() > Duration::from_millis(250) {
                    if let Some(row) = queue_row(n1, Q) {
                        max_unacked = max_unacked.max(row["unacked"].as_u64().unwrap_or(0));
                    }
                    last_listing = Instant::now();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (max_rss, max_unacked)
        });
        let started = Instant::now();
        rt.block_on(async {
            let ch = confirming_channel(&c1).await;
            let mut pending = VecDeque::with_capacity(WINDOW);
            let transient = BasicProperties::default();
            for i in 0..MESSAGES {
                let mut body = format!("{i:08}").into_bytes();
                body.resize(SIZE, b'.');
                pending.push_back((i, publish(&ch, Q, &body, transient.clone()).await));
                if pending.len() >= WINDOW {
                    let (n, confirm) = pending.pop_front().expect("pending");
                    expect_ack(confirm, &format!("message {n}")).await;
                }
            }
            for (n, confirm) in pending {
                expect_ack(confirm, &format!("message {n}")).await;
            }
        });
        let publish_time = started.elapsed();
        // The slow consumer goes on a while with the queue full.
        let then = acked.load(Ordering::Relaxed);
        eventually_within("the slow consumer acks 100 more", WAIT, || {
            acked.load(Ordering::Relaxed) >= then + 100
        });
        done.store(true, Ordering::Relaxed);
        let (max_rss, max_unacked) = sampler.join().expect("the sampler");
        (max_rss, max_unacked, publish_time)
    });

    let row = queue_row(n1, Q).expect("n1 lists the queue");
    let taken = acked.load(Ordering::Relaxed) as u64;
    let (ready, unacked) = (
        row["ready"].as_u64().unwrap_or(0),
        row["unacked"].as_u64().unwrap_or(0),
    );
    eprintln!(
        "{MESSAGES} × {SIZE} B published through n1 in {publish_time:?}; the slow consumer \
         on n2 acked {taken}; n1 holds {ready} ready, {unacked} unacked (at most \
         {max_unacked} seen); n2's RSS {} MiB at the start, {} MiB at most",
        baseline / MIB,
        max_rss / MIB
    );
    assert!(
        ready + unacked + taken >= MESSAGES,
        "nothing lost: {ready} ready + {unacked} unacked + {taken} acked < {MESSAGES}"
    );
    // (The slow consumer takes at most 50 a second: half of them would take 500 s.)
    assert!(
        ready >= MESSAGES / 2,
        "the messages wait on n1: {ready} ready of {MESSAGES}"
    );
    assert!(
        max_unacked <= 2 * u64::from(PREFETCH),
        "n2's two consumers held {max_unacked} unacknowledged deliveries, prefetch \
         {PREFETCH} each"
    );
    assert!(
        max_rss < baseline + GROWTH_BOUND,
        "n2's RSS grew by {} MiB (from {} MiB to {} MiB) with two prefetch-{PREFETCH} \
         consumers",
        (max_rss - baseline) / MIB,
        baseline / MIB,
        max_rss / MIB
    );
    consuming.abort();
    drop(stalled);
    rt.block_on(async {
        close(c2).await;
        close(c1).await;
    });
}

// ----- 4. A remote no-ack consumer that reads nothing -------------------------------

/// A no-ack consumer on n2 of a queue on n1 that reads nothing for a while: n2 reports
/// over the link what it wrote, so n1 sends it no more than its window and the rest
/// stays in the queue (`common::raw_amqp::unread_consumer`).
#[test]
fn a_remote_no_ack_consumer_that_reads_nothing_leaves_the_queue_on_n1() {
    let cluster = Cluster::start();
    common::raw_amqp::unread_consumer(&cluster.nodes[0], &cluster.nodes[1], "unread-remote", true);
}
