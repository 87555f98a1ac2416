//! Publishes through one node to a queue homed on another keep their order.
//!
//! Two real `warren node` processes, `a` and `b`. The queue lives on `a`; a publisher
//! on `b` (frames written by hand to the socket, no confirms) writes its messages in bursts far larger
//! than the channel's route batch (32), so that one read of the socket hands the queue
//! several batches at once; a lapin consumer on `a` reads them back and checks the
//! exact sequence. A node that sent two batches of one channel in the wrong order, or
//! lost one, fails it.
//!
//! Nothing waits a fixed time: every wait is bounded and polls or awaits the broker.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use common::raw_amqp::{open_channel, publish_frames};
use common::{eventually, free_port, leader, NodeProcess};
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

/// How long anything asynchronous may take before the test fails.
const WAIT: Duration = Duration::from_secs(30);
/// Messages per round.
const MESSAGES: usize = 5_000;
/// Messages per write on the publisher's socket: many route batches per read.
const BURST: usize = 250;
/// Rounds, back to back.
const ROUNDS: usize = 4;
const QUEUE: &str = "ordered";

/// The two nodes; on a failure, what each logged.
struct Pair {
    nodes: Vec<NodeProcess>,
}

impl Drop for Pair {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for node in &self.nodes {
                eprintln!(
                    "----- {} log -----\n{}",
                    node.data_dir.display(),
                    node.log()
                );
            }
        }
    }
}

/// The home node of `queue` as `node` lists it.
fn home_of(node: &NodeProcess, queue: &str) -> Option<String> {
    let (ok, out, _) = node.cli(&["queues", "--json"]);
    if !ok {
        return None;
    }
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
    rows.into_iter()
        .find(|r| r["name"] == queue)
        .and_then(|r| r["node"].as_str().map(str::to_string))
}

/// Two disk members, `a` and `b`, each the other's seed, once both know the leader.
fn pair(dir: &Path) -> Pair {
    let ports = [free_port(), free_port()];
    let nodes: Vec<NodeProcess> = ["a", "b"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            NodeProcess::start_member(&dir.join(name), ports[i], name, &[ports[1 - i]], "disk")
        })
        .collect();
    let pair = Pair { nodes };
    for node in &pair.nodes {
        eventually("both nodes know the metadata leader", || {
            leader(node).is_some()
        });
    }
    pair
}

#[test]
fn publishes_through_another_node_arrive_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let pair = pair(dir.path());
    let (a, b) = (&pair.nodes[0], &pair.nodes[1]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // The queue is declared through a, so it lives there; the consumer reads it there.
    let uri = format!("amqp://guest:guest@{}/%2f", a.amqp_addr);
    let (_connection, mut consumer) = rt.block_on(async {
        let deadline = Instant::now() + WAIT;
        let connection = loop {
            match Connection::connect(&uri, ConnectionProperties::default()).await {
                Ok(c) => break c,
                Err(e) if Instant::now() > deadline => panic!("a never served AMQP: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let ch = connection.create_channel().await.expect("channel");
        ch.queue_declare(
            QUEUE.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("queue.declare on a");
        ch.basic_qos(1_000, BasicQosOptions::default())
            .await
            .expect("basic.qos");
        let consumer = ch
            .basic_consume(
                QUEUE.into(),
                "order-check".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("basic.consume on a");
        (connection, consumer)
    });
    eventually("b knows the queue lives on a", || {
        home_of(b, QUEUE).as_deref() == Some("a")
    });

    let mut publisher = open_channel(b);
    for round in 0..ROUNDS {
        let bodies: Vec<String> = (0..MESSAGES).map(|i| format!("{round}:{i}")).collect();
        for burst in bodies.chunks(BURST) {
            let frames: Vec<u8> = burst
                .iter()
                .flat_map(|body| publish_frames(QUEUE, body.as_bytes()))
                .collect();
            publisher
                .write_all(&frames)
                .expect("the node takes the publishes");
        }
        let got: Vec<String> = rt.block_on(async {
            let mut got = Vec::with_capacity(MESSAGES);
            while got.len() < MESSAGES {
                match tokio::time::timeout(WAIT, consumer.next()).await {
                    Ok(Some(Ok(d))) => got.push(String::from_utf8_lossy(&d.data).into_owned()),
                    Ok(other) => panic!("the consumer ended: {other:?}"),
                    Err(_) => panic!(
                        "round {round}: {} of {MESSAGES} messages within {WAIT:?}",
                        got.len()
                    ),
                }
            }
            got
        });
        if let Some(i) = (0..MESSAGES).find(|&i| got[i] != bodies[i]) {
            let sent: HashSet<&String> = bodies.iter().collect();
            let received: HashSet<&String> = got.iter().collect();
            panic!(
                "round {round}: {} lost, {} foreign or repeated; the first difference is at \
                 {i}: got {:?}, expected {:?}",
                sent.difference(&received).count(),
                MESSAGES
                    - got
                        .iter()
                        .filter(|g| sent.contains(g))
                        .collect::<HashSet<_>>()
                        .len(),
                &got[i..(i + 5).min(MESSAGES)],
                &bodies[i..(i + 5).min(MESSAGES)]
            );
        }
    }
}
