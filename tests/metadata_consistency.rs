//! Cluster metadata as a user sees it, without pauses between steps: three disk nodes
//! and a RAM node, real `warren node` processes on 127.0.0.1.
//!
//! - A declaration acknowledged through one node is seen at once through every other:
//!   a mandatory publish through n2 right after `queue.declare` through n1 is routed,
//!   and `basic.get` / a passive declare through n3 and n4 find the queue.
//! - After SIGKILL of the metadata leader, the first declaration through each survivor
//!   succeeds: it waits for the election instead of failing.
//! - Once `cluster status` shows every member up, a declaration through each of them
//!   succeeds on its first try.
//!
//! Nothing here waits a fixed time; every wait is bounded and polls the cluster.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{eventually, eventually_or, free_port, leader, members, NodeProcess};
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

const NAMES: [&str; 4] = ["n1", "n2", "n3", "n4"];

/// Four members (n4 a RAM node), each with every other as a seed.
struct Cluster {
    nodes: Vec<NodeProcess>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (i, node) in self.nodes.iter().enumerate() {
                eprintln!("----- {} log -----\n{}", NAMES[i], node.log());
            }
        }
    }
}

fn all_up(names: &[&str]) -> Vec<(String, String)> {
    names
        .iter()
        .map(|n| (n.to_string(), "up".to_string()))
        .collect()
}

/// Starts the four members; returns as soon as they are started (not formed).
fn start(dir: &Path) -> Cluster {
    let ports: Vec<u16> = NAMES.iter().map(|_| free_port()).collect();
    let nodes = NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let seeds: Vec<u16> = ports.iter().copied().filter(|p| *p != ports[i]).collect();
            let role = if i == 3 { "ram" } else { "disk" };
            NodeProcess::start_member(&dir.join(name), ports[i], name, &seeds, role)
        })
        .collect();
    Cluster { nodes }
}

/// Started, and every member sees every member up.
fn formed(dir: &Path) -> Cluster {
    let cluster = start(dir);
    for node in &cluster.nodes {
        eventually("every member sees four up", || {
            members(node) == all_up(&NAMES)
        });
    }
    cluster
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// An AMQP connection to `node` and a channel on it (retried while the node starts).
async fn channel(node: &NodeProcess) -> (Connection, Channel) {
    let uri = format!("amqp://guest:guest@{}/%2f", node.amqp_addr);
    let deadline = Instant::now() + Duration::from_secs(60);
    let connection = loop {
        match Connection::connect(&uri, ConnectionProperties::default()).await {
            Ok(c) => break c,
            Err(e) if Instant::now() > deadline => panic!("{} never served AMQP: {e}", uri),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let channel = connection.create_channel().await.expect("a channel");
    (connection, channel)
}

async fn declare(channel: &Channel, queue: &str) -> Result<(), lapin::Error> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map(|_| ())
}

#[test]
fn a_declaration_through_one_node_is_seen_at_once_through_every_other() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = formed(dir.path());
    let rt = runtime();
    rt.block_on(async {
        let mut open = Vec::new();
        for node in &cluster.nodes {
            open.push(channel(node).await);
        }
        let publisher = &open[1].1;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm.select");
        const ROUNDS: usize = 20;
        const MESSAGES: usize = 50;
        for round in 0..ROUNDS {
            let queue = format!("ryw-{round}");
            // Through n1 ...
            declare(&open[0].1, &queue)
                .await
                .unwrap_or_else(|e| panic!("round {round}: declare through n1: {e}"));
            // ... then at once, mandatory and persistent, through n2.
            let mut confirms = Vec::with_capacity(MESSAGES);
            for i in 0..MESSAGES {
                let confirm = publisher
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        format!("{round}:{i}").as_bytes(),
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                    .expect("basic.publish");
                confirms.push(confirm);
            }
            let mut returned = 0;
            for confirm in confirms {
                let confirmation = confirm.await.expect("a confirm");
                assert!(confirmation.is_ack(), "round {round}: a nack");
                if confirmation.take_message().is_some() {
                    returned += 1;
                }
            }
            assert_eq!(
                returned, 0,
                "round {round}: {returned} of {MESSAGES} mandatory publishes through n2 came back unroutable"
            );
            // Through n3 and the RAM node n4: the queue is there.
            open[2]
                .1
                .basic_get(queue.as_str().into(), BasicGetOptions::default())
                .await
                .unwrap_or_else(|e| panic!("round {round}: basic.get through n3: {e}"));
            open[3]
                .1
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .unwrap_or_else(|e| panic!("round {round}: passive declare through n4: {e}"));
        }
    });
}

#[test]
fn after_the_leader_is_killed_the_first_declaration_through_each_survivor_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = formed(dir.path());
    let rt = runtime();
    for round in 0..2 {
        let mut lead = String::new();
        eventually("the members agree on a leader", || {
            let seen: Vec<Option<String>> = cluster.nodes.iter().map(leader).collect();
            match seen.first() {
                Some(Some(l)) if seen.iter().all(|s| s.as_deref() == Some(l)) => {
                    lead = l.clone();
                    true
                }
                _ => false,
            }
        });
        let killed = NAMES.iter().position(|n| *n == lead).unwrap();
        let survivors: Vec<usize> = (0..NAMES.len()).filter(|i| *i != killed).collect();
        rt.block_on(async {
            let mut open = Vec::new();
            for i in &survivors {
                open.push((*i, channel(&cluster.nodes[*i]).await));
            }
            cluster.nodes[killed].kill();
            let killed_at = Instant::now();
            for (i, (_connection, ch)) in &open {
                let queue = format!("after-kill-{round}-{}", NAMES[*i]);
                declare(ch, &queue).await.unwrap_or_else(|e| {
                    panic!(
                        "round {round}: the first declaration through {} after SIGKILL of the leader {lead} failed after {:?}: {e}",
                        NAMES[*i],
                        killed_at.elapsed()
                    )
                });
                eprintln!(
                    "round {round}: leader {lead} killed; first declaration through {} accepted after {:?}",
                    NAMES[*i],
                    killed_at.elapsed()
                );
            }
        });
        if round == 0 {
            // The killed disk node comes back; the next round kills the next leader.
            cluster.nodes[killed] = restart(dir.path(), &cluster, killed);
            for node in &cluster.nodes {
                eventually_or("every member sees four up again", || {
                    let seen = members(node);
                    if seen == all_up(&NAMES) {
                        Ok(())
                    } else {
                        let views: Vec<String> = cluster
                            .nodes
                            .iter()
                            .map(|n| format!("{:?}", common::status_rows(n)))
                            .collect();
                        Err(format!(
                            "{} sees {seen:?}; every member's view:\n{}",
                            node.addr,
                            views.join("\n")
                        ))
                    }
                });
            }
        }
    }
}

/// Member `i` started again with its data dir, port and seeds.
fn restart(dir: &Path, cluster: &Cluster, i: usize) -> NodeProcess {
    let seeds: Vec<u16> = cluster
        .nodes
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .map(|(_, n)| n.addr.port())
        .collect();
    let role = if i == 3 { "ram" } else { "disk" };
    NodeProcess::start_member(
        &dir.join(NAMES[i]),
        cluster.nodes[i].addr.port(),
        NAMES[i],
        &seeds,
        role,
    )
}

#[test]
fn once_status_shows_every_member_up_each_of_them_takes_declarations() {
    for round in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let cluster = start(dir.path());
        let rt = runtime();
        rt.block_on(async {
            let mut open = Vec::new();
            for node in &cluster.nodes {
                open.push(channel(node).await);
            }
            // The first moment status through n1 shows four up: no pause after it.
            eventually("n1 shows four members up", || {
                members(&cluster.nodes[0]) == all_up(&NAMES)
            });
            for (i, (_connection, ch)) in open.iter().enumerate() {
                declare(ch, &format!("formed-{}", NAMES[i]))
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "round {round}: declaration through {} right after status showed all up: {e}",
                            NAMES[i]
                        )
                    });
            }
        });
    }
}

#[test]
fn a_dead_letter_target_bound_through_one_node_takes_what_another_dead_letters_at_once() {
    use lapin::options::{BasicRejectOptions, ExchangeDeclareOptions, QueueBindOptions};
    use lapin::types::AMQPValue;
    use lapin::ExchangeKind;

    let dir = tempfile::tempdir().unwrap();
    let cluster = formed(dir.path());
    let rt = runtime();
    rt.block_on(async {
        let (_c1, n1) = channel(&cluster.nodes[0]).await;
        let (_c2, n2) = channel(&cluster.nodes[1]).await;
        for round in 0..10 {
            let (dlx, source, dead) = (
                format!("dlx-{round}"),
                format!("source-{round}"),
                format!("dead-{round}"),
            );
            // The source queue lives on n2 and dead-letters to an exchange that does
            // not exist yet.
            let mut arguments = FieldTable::default();
            arguments.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(dlx.as_str().into()),
            );
            n2.queue_declare(
                source.as_str().into(),
                QueueDeclareOptions::default(),
                arguments,
            )
            .await
            .expect("source queue through n2");
            n2.basic_publish(
                "".into(),
                source.as_str().into(),
                BasicPublishOptions::default(),
                b"to be dead-lettered",
                BasicProperties::default(),
            )
            .await
            .expect("publish");
            // Through n1: the exchange, its queue and the binding ...
            n1.exchange_declare(
                dlx.as_str().into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("exchange through n1");
            declare(&n1, &dead)
                .await
                .expect("dead-letter queue through n1");
            n1.queue_bind(
                dead.as_str().into(),
                dlx.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind through n1");
            // ... then at once, through n2, the message is rejected: n2 dead-letters it.
            let got = loop {
                if let Some(m) = n2
                    .basic_get(source.as_str().into(), BasicGetOptions::default())
                    .await
                    .expect("basic.get through n2")
                {
                    break m;
                }
            };
            got.reject(BasicRejectOptions { requeue: false })
                .await
                .expect("reject");
            // It is in the dead-letter queue (read through n1, where it lives).
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let m = n1
                    .basic_get(dead.as_str().into(), BasicGetOptions::default())
                    .await
                    .expect("basic.get through n1");
                if m.is_some() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "round {round}: the dead-lettered message never reached '{dead}'"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
}

#[test]
fn a_batch_naming_a_queue_declared_through_another_node_a_moment_ago_arrives_whole_and_in_order() {
    use common::raw_amqp::{open_channel, publish_frames_with};
    use std::io::Write;

    let dir = tempfile::tempdir().unwrap();
    let cluster = formed(dir.path());
    let rt = runtime();
    const ROUNDS: usize = 10;
    let (_connection, n1) = rt.block_on(channel(&cluster.nodes[0]));
    rt.block_on(declare(&n1, "steady"))
        .expect("declare through n1");
    let mut publisher = open_channel(&cluster.nodes[1]);
    for round in 0..ROUNDS {
        let late = format!("late-{round}");
        rt.block_on(declare(&n1, &late))
            .expect("declare through n1");
        // One write, so that n2 routes the three as one batch: the middle one names
        // the queue n1 has just declared.
        let mut frames = publish_frames_with("steady", format!("{round}:a").as_bytes(), true);
        frames.extend(publish_frames_with(
            &late,
            format!("{round}:b").as_bytes(),
            true,
        ));
        frames.extend(publish_frames_with(
            "steady",
            format!("{round}:c").as_bytes(),
            true,
        ));
        publisher.write_all(&frames).expect("publish through n2");
    }
    rt.block_on(async {
        let get = |queue: String| {
            let n1 = n1.clone();
            async move {
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    if let Some(m) = n1
                        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
                        .await
                        .expect("basic.get through n1")
                    {
                        return String::from_utf8_lossy(&m.delivery.data).into_owned();
                    }
                    assert!(Instant::now() < deadline, "nothing more in '{queue}'");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let mut steady = Vec::new();
        for _ in 0..ROUNDS * 2 {
            steady.push(get("steady".to_string()).await);
        }
        let expected: Vec<String> = (0..ROUNDS)
            .flat_map(|r| [format!("{r}:a"), format!("{r}:c")])
            .collect();
        assert_eq!(steady, expected, "'steady' in the order n2 took them");
        for round in 0..ROUNDS {
            assert_eq!(
                get(format!("late-{round}")).await,
                format!("{round}:b"),
                "round {round}: the message for the queue declared a moment before"
            );
        }
    });
}
