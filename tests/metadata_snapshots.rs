//! The metadata log's snapshots and compaction, with real `warren node` processes on
//! 127.0.0.1 taking a snapshot every 32 entries (`--metadata-snapshot-every 32`):
//!
//! - A disk node that was down while hundreds of changes happened (queues declared,
//!   bound and deleted, an exchange and a user deleted) comes back through the
//!   leader's snapshot: what was deleted meanwhile is gone there too.
//! - A new disk node and a restarted RAM node start from the snapshot.
//! - A restarted disk node reads its snapshot and the tail only, and its log stays
//!   bounded.
//!
//! Every node ends with the same definitions, and takes declarations; no node logs
//! a cookie refusal (nodes that dial each other at once lose one session of the two
//! before it authenticates, which is not one).

mod common;

use std::path::Path;

use common::{eventually, free_port, leader, members, status_rows, NodeProcess};
use warren::client::{ExchangeOptions, QueueOptions};
use warren_actors::message::FieldTable;

const SNAPSHOT_EVERY: &str = "32";

fn start(dir: &Path, name: &str, port: u16, seeds: &[u16], role: &str) -> NodeProcess {
    let seeds: Vec<String> = seeds.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let seeds = seeds.join(",");
    NodeProcess::start_with(
        &dir.join(name),
        port,
        &[
            "--name",
            name,
            "--seeds",
            &seeds,
            "--role",
            role,
            "--metadata-snapshot-every",
            SNAPSHOT_EVERY,
        ],
    )
}

/// What a node holds: queue, exchange, binding and user names, sorted.
type Definitions = (Vec<String>, Vec<String>, Vec<String>, Vec<String>);

fn definitions(rt: &tokio::runtime::Runtime, node: &NodeProcess) -> Definitions {
    rt.block_on(async {
        let client = node.client().await;
        let mut queues: Vec<String> = client
            .queues()
            .await
            .map(|q| q.into_iter().map(|q| q.name).collect())
            .unwrap_or_default();
        let mut exchanges: Vec<String> = client
            .exchanges()
            .await
            .map(|x| x.into_iter().map(|x| x.name).collect())
            .unwrap_or_default();
        let mut bindings: Vec<String> = client
            .bindings()
            .await
            .map(|b| {
                b.into_iter()
                    .map(|b| format!("{} -> {:?} ({})", b.source, b.target, b.routing_key))
                    .collect()
            })
            .unwrap_or_default();
        let mut users: Vec<String> = client
            .users()
            .await
            .map(|u| u.into_iter().map(|(name, _)| name).collect())
            .unwrap_or_default();
        queues.sort();
        exchanges.sort();
        bindings.sort();
        users.sort();
        (queues, exchanges, bindings, users)
    })
}

/// The answering node's metadata log (`cluster status --json`).
fn log_of(node: &NodeProcess) -> serde_json::Value {
    status_rows(node)
        .into_iter()
        .find(|r| r["this_node"].as_bool() == Some(true))
        .map(|r| r["metadata_log"].clone())
        .unwrap_or_default()
}

fn all_up(names: &[&str]) -> Vec<(String, String)> {
    names
        .iter()
        .map(|n| (n.to_string(), "up".to_string()))
        .collect()
}

#[test]
fn nodes_behind_new_or_restarted_start_from_the_snapshot_and_hold_the_same_definitions() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let names = ["n1", "n2", "n3", "n4"];
    let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let seeds_of =
        |i: usize| -> Vec<u16> { ports.iter().copied().filter(|p| *p != ports[i]).collect() };
    let role = |i: usize| if i == 3 { "ram" } else { "disk" };
    let mut nodes: Vec<NodeProcess> = (0..4)
        .map(|i| start(dir.path(), names[i], ports[i], &seeds_of(i), role(i)))
        .collect();
    let show_logs = |nodes: &[NodeProcess]| {
        for n in nodes {
            eprintln!("----- {} log -----\n{}", n.addr, n.log());
        }
    };
    for node in &nodes {
        eventually("the four members are up", || {
            members(node) == all_up(&names)
        });
    }

    // Things that go while a disk node is down.
    rt.block_on(async {
        let c = nodes[0].client().await;
        let durable = QueueOptions {
            durable: true,
            ..QueueOptions::default()
        };
        c.declare_queue("doomed", durable.clone()).await.unwrap();
        let topic = ExchangeOptions {
            durable: true,
            ..ExchangeOptions::default()
        };
        c.declare_exchange("x-doomed", "topic", topic)
            .await
            .unwrap();
        c.bind_queue("doomed", "x-doomed", "k", FieldTable::default())
            .await
            .unwrap();
        c.add_user("gone-user", "secret", vec![]).await.unwrap();
        c.declare_queue("keep", durable).await.unwrap();
    });
    let lead = leader(&nodes[0]).expect("a leader");
    let down = (1..3)
        .find(|i| names[*i] != lead)
        .expect("a follower disk node");
    let up: Vec<usize> = (0..3).filter(|i| *i != down).collect();
    nodes[down].kill();

    // Hundreds of changes through the two disk nodes left: several snapshots.
    rt.block_on(async {
        let a = nodes[up[0]].client().await;
        let b = nodes[up[1]].client().await;
        for i in 0..120 {
            let c = if i % 2 == 0 { &a } else { &b };
            let name = format!("q-{i}");
            c.declare_queue(
                &name,
                QueueOptions {
                    durable: true,
                    ..QueueOptions::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("declaring {name}: {e}"));
            c.bind_queue(&name, "amq.topic", &format!("k.{i}"), FieldTable::default())
                .await
                .unwrap_or_else(|e| panic!("binding {name}: {e}"));
        }
        for i in (0..120).step_by(3) {
            b.delete_queue(&format!("q-{i}"), false, false)
                .await
                .unwrap();
        }
        a.delete_queue("doomed", false, false).await.unwrap();
        a.delete_exchange("x-doomed", false).await.unwrap();
        a.delete_user("gone-user").await.unwrap();
        a.add_user("new-user", "secret", vec![]).await.unwrap();
    });
    let expected = definitions(&rt, &nodes[up[0]]);
    assert!(expected.0.contains(&"q-1".to_string()));
    assert!(!expected.0.contains(&"doomed".to_string()));
    assert!(!expected.3.contains(&"gone-user".to_string()));

    // The leader's log is compacted: a snapshot, and a bounded tail.
    let log = log_of(&nodes[up[0]]);
    let (first, last, snapshot) = (
        log["first"].as_u64().unwrap_or(0),
        log["last"].as_u64().unwrap_or(0),
        log["snapshot"].as_u64().unwrap_or(0),
    );
    assert!(
        snapshot > 200 && first > 1 && last - first < 100,
        "the log is not compacted: {log}"
    );

    // The node that was down comes back and takes the snapshot.
    nodes[down] = start(
        dir.path(),
        names[down],
        ports[down],
        &seeds_of(down),
        "disk",
    );
    let same = |nodes: &[NodeProcess], i: usize, what: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let got = definitions(&rt, &nodes[i]);
            if got == expected {
                return;
            }
            if std::time::Instant::now() > deadline {
                show_logs(nodes);
                panic!(
                    "{what}: {} holds {got:?}\nexpected {expected:?}",
                    names.get(i).unwrap_or(&"n5")
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    same(&nodes, down, "the disk node that was down");

    // A new disk node joins from the snapshot.
    let p5 = free_port();
    let mut seeds5 = ports.clone();
    seeds5.truncate(3);
    nodes.push(start(dir.path(), "n5", p5, &seeds5, "disk"));
    same(&nodes, 4, "the new disk node");

    // The RAM node starts again from nothing, and from the snapshot.
    nodes[3].kill();
    nodes[3] = start(dir.path(), "n4", ports[3], &seeds_of(3), "ram");
    same(&nodes, 3, "the restarted RAM node");

    // A restarted disk node reads its snapshot and tail only.
    let restart = up[1];
    nodes[restart].kill();
    nodes[restart] = start(
        dir.path(),
        names[restart],
        ports[restart],
        &seeds_of(restart),
        "disk",
    );
    same(&nodes, restart, "the restarted disk node");
    let log = log_of(&nodes[restart]);
    assert!(
        log["snapshot"].as_u64().unwrap_or(0) > 0 && log["first"].as_u64().unwrap_or(0) > 1,
        "the restarted disk node read a whole log: {log}"
    );

    // Nodes dialling each other at once lose one of the two sessions before it
    // authenticates: that is not a cookie refusal, and no node may say it is.
    for node in &nodes {
        assert!(
            !node.log().contains("cookie does not match"),
            "a false cookie refusal in the log of {}:\n{}",
            node.addr,
            node.log()
        );
    }

    // Every node takes a declaration on its first try.
    rt.block_on(async {
        for (i, node) in nodes.iter().enumerate() {
            let c = node.client().await;
            c.declare_queue(&format!("after-{i}"), QueueOptions::default())
                .await
                .unwrap_or_else(|e| panic!("a declaration through node {i}: {e}"));
        }
    });
}
