//! Real network partitions: every node in a network namespace of its own, joined to a
//! bridge by a veth pair, listening on an address that exists only inside the
//! namespaces this test made (10.213.X.0/24). A partition is made with nftables rules
//! inside a node's namespace that drop what it exchanges with some peers; the test
//! process itself (on the bridge) keeps reaching every node.
//!
//! Three disk nodes and a RAM node. Scenarios: the leader cut off, a follower cut off,
//! the RAM node cut off, and partitions made and healed again and again. Invariants: a
//! node cut off from the majority never commits a change (it refuses with a clear
//! error); the majority side keeps taking changes; after healing every node holds the
//! same definitions and they agree on one leader.
//!
//! Namespaces need root, iproute2 and nftables (`scripts/test` installs them). Where
//! they cannot be made the test says why on its output and returns without checking
//! anything (its output is shown even when it passes: `.config/nextest.toml`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::netns::Net;
use common::{cli_at, eventually, members, status_rows, NodeProcess};

const NAMES: [&str; 4] = ["n1", "n2", "n3", "n4"];
const ROLES: [&str; 4] = ["disk", "disk", "disk", "ram"];

/// Every (term, leader) any node reported while the test ran: Raft allows at most one
/// leader per term, so a term with two names is a split brain.
struct Leaders {
    seen: Arc<Mutex<BTreeMap<u64, BTreeSet<String>>>>,
    stop: Arc<AtomicBool>,
    sampler: Option<std::thread::JoinHandle<()>>,
}

impl Leaders {
    /// Asks every node in turn, without pause, for its term and leader.
    fn watch(nodes: Vec<(SocketAddr, PathBuf)>) -> Leaders {
        let seen: Arc<Mutex<BTreeMap<u64, BTreeSet<String>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let sampler = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                for (addr, cookie) in &nodes {
                    let (ok, out, _) = cli_at(*addr, cookie, &["cluster", "status", "--json"]);
                    if !ok {
                        continue;
                    }
                    let rows: Vec<serde_json::Value> =
                        serde_json::from_str(&out).unwrap_or_default();
                    for r in rows.iter().filter(|r| r["leader"].as_bool() == Some(true)) {
                        if let (Some(term), Some(name)) = (r["term"].as_u64(), r["name"].as_str()) {
                            s.lock()
                                .unwrap()
                                .entry(term)
                                .or_default()
                                .insert(name.to_string());
                        }
                    }
                }
            }
        });
        Leaders {
            seen,
            stop,
            sampler: Some(sampler),
        }
    }

    /// At most one leader in every term seen so far.
    fn check(&self) {
        let seen = self.seen.lock().unwrap();
        assert!(!seen.is_empty(), "the sampler saw no leader at all");
        println!("leaders by term so far: {seen:?}");
        for (term, leaders) in seen.iter() {
            assert!(
                leaders.len() <= 1,
                "two leaders in term {term}: {leaders:?} (all: {seen:?})"
            );
        }
    }
}

impl Drop for Leaders {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.join();
        }
    }
}

/// The nodes of one test, in their namespaces; their logs on failure.
struct Cluster {
    leaders: Leaders,
    nodes: Vec<NodeProcess>,
    // Dropped after the nodes: they are killed before their namespaces go.
    net: Net,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (i, node) in self.nodes.iter().enumerate() {
                eprintln!("----- {} log -----\n{}", NAMES[i], node.log());
            }
        }
        for node in &mut self.nodes {
            node.kill();
        }
    }
}

/// Four members in namespaces of their own, once every one sees all four up; `None`
/// (with the reason printed) when namespaces cannot be made here.
fn cluster(test: &str) -> Option<Cluster> {
    let net = match Net::make(NAMES.len()) {
        Ok(net) => net,
        Err(why) => {
            println!("SKIPPED {test}: cannot make network namespaces here: {why}");
            return None;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let addrs: Vec<SocketAddr> = (0..NAMES.len()).map(|i| (net.ip(i), 4370).into()).collect();
    let nodes = (0..NAMES.len())
        .map(|i| {
            let seeds: Vec<SocketAddr> = addrs
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, a)| *a)
                .collect();
            NodeProcess::start_in_netns(
                &net.ns(i),
                net.ip(i),
                &dir.path().join(NAMES[i]),
                NAMES[i],
                &seeds,
                ROLES[i],
            )
        })
        .collect();
    let nodes: Vec<NodeProcess> = nodes;
    let leaders = Leaders::watch(nodes.iter().map(|n| (n.addr, n.cookie_file())).collect());
    let cluster = Cluster {
        leaders,
        nodes,
        net,
        _dir: dir,
    };
    for node in &cluster.nodes {
        eventually("every member sees four up", || members(node) == all_up());
    }
    Some(cluster)
}

/// (name, health, leader) of every member as `node` sees them, sorted by name.
fn status(node: &NodeProcess) -> Vec<(String, String, bool)> {
    let mut rows: Vec<(String, String, bool)> = status_rows(node)
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_string(),
                r["health"].as_str().unwrap_or_default().to_string(),
                r["leader"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    rows.sort();
    rows
}

fn all_up() -> Vec<(String, String)> {
    NAMES
        .iter()
        .map(|n| (n.to_string(), "up".to_string()))
        .collect()
}

fn leader_of(node: &NodeProcess) -> Option<usize> {
    let name = status(node).into_iter().find(|(_, _, l)| *l)?.0;
    NAMES.iter().position(|n| *n == name)
}

/// The queue names `node` lists.
fn queues(node: &NodeProcess) -> Option<BTreeSet<String>> {
    let (ok, out, _) = node.cli(&["queues", "--json"]);
    if !ok {
        return None;
    }
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).ok()?;
    Some(
        rows.iter()
            .filter_map(|r| r["name"].as_str().map(str::to_string))
            .collect(),
    )
}

/// Declares a durable queue through `node`: Ok, or the CLI's error line.
fn declare(node: &NodeProcess, queue: &str) -> Result<(), String> {
    let (ok, _, err) = node.cli(&["declare", "queue", queue, "--durable"]);
    if ok {
        Ok(())
    } else {
        Err(err)
    }
}

/// Node `i` is cut off from every other member.
fn isolate(c: &Cluster, i: usize) {
    let others: Vec<usize> = (0..NAMES.len()).filter(|j| *j != i).collect();
    for j in &others {
        c.net.cut(*j, &[i]);
    }
    c.net.cut(i, &others);
}

fn heal_all(c: &Cluster) {
    for i in 0..NAMES.len() {
        c.net.heal(i);
    }
}

/// After healing: every member up, one leader every node names, and every node
/// lists the same queues, which include `expected`.
fn converged(c: &Cluster, expected: &BTreeSet<String>) {
    for node in &c.nodes {
        eventually("every member up again", || members(node) == all_up());
    }
    eventually("every node names the same leader", || {
        let seen: Vec<Option<usize>> = c.nodes.iter().map(leader_of).collect();
        seen[0].is_some() && seen.iter().all(|s| *s == seen[0])
    });
    c.leaders.check();
    eventually("every node lists the same queues", || {
        let lists: Vec<Option<BTreeSet<String>>> = c.nodes.iter().map(queues).collect();
        lists.iter().all(|l| l.as_ref() == lists[0].as_ref())
            && lists[0].as_ref().is_some_and(|l| l.is_superset(expected))
    });
}

/// A node cut off from the majority refuses a change with a clear error (after at
/// most the commit timeout), and the change is never applied anywhere.
fn refused_on_the_minority(node: &NodeProcess, queue: &str) {
    let asked = Instant::now();
    let err = declare(node, queue).expect_err("a minority must not commit a change");
    assert!(
        err.contains("no metadata leader reachable") || err.contains("not confirmed"),
        "{err}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "{:?}",
        asked.elapsed()
    );
}

#[test]
fn the_leader_cut_off_steps_down_and_the_majority_goes_on() {
    let Some(c) = cluster("the_leader_cut_off_steps_down_and_the_majority_goes_on") else {
        return;
    };
    let mut expected = BTreeSet::new();
    declare(&c.nodes[0], "before").unwrap();
    expected.insert("before".to_string());
    let mut lead = None;
    eventually("a leader", || {
        lead = leader_of(&c.nodes[0]);
        lead.is_some()
    });
    let lead = lead.unwrap();
    isolate(&c, lead);
    // The majority elects another leader and takes changes, through every member on
    // its side, the first try each (a declaration waits out the election).
    for i in (0..NAMES.len()).filter(|i| *i != lead) {
        let q = format!("majority-{}", NAMES[i]);
        declare(&c.nodes[i], &q).unwrap_or_else(|e| panic!("through {}: {e}", NAMES[i]));
        expected.insert(q);
    }
    refused_on_the_minority(&c.nodes[lead], "minority");
    // What the cut-off node has, it still serves.
    assert!(queues(&c.nodes[lead]).is_some_and(|q| q.contains("before")));
    heal_all(&c);
    converged(&c, &expected);
    for node in &c.nodes {
        assert!(!queues(node).unwrap().contains("minority"));
    }
}

#[test]
fn a_follower_or_the_ram_node_cut_off_refuses_changes_and_catches_up_after() {
    let Some(c) =
        cluster("a_follower_or_the_ram_node_cut_off_refuses_changes_and_catches_up_after")
    else {
        return;
    };
    let mut expected = BTreeSet::new();
    let mut lead = None;
    eventually("a leader", || {
        lead = leader_of(&c.nodes[0]);
        lead.is_some()
    });
    let lead = lead.unwrap();
    let follower = (0..3).find(|i| *i != lead).unwrap();
    for cut in [follower, 3] {
        isolate(&c, cut);
        let through = (0..3).find(|i| *i != cut).unwrap();
        let q = format!("while-{}-cut", NAMES[cut]);
        declare(&c.nodes[through], &q).unwrap();
        expected.insert(q);
        refused_on_the_minority(&c.nodes[cut], &format!("on-{}", NAMES[cut]));
        heal_all(&c);
        converged(&c, &expected);
    }
}

#[test]
fn partitions_made_and_healed_again_and_again_leave_one_set_of_definitions() {
    let Some(c) =
        cluster("partitions_made_and_healed_again_and_again_leave_one_set_of_definitions")
    else {
        return;
    };
    let mut expected = BTreeSet::new();
    // Who is cut off, round by round: each disk node, the RAM node, and a split of the
    // disk nodes 1 | 2 with the RAM node on the minority side.
    for round in 0..5usize {
        match round {
            0..=3 => isolate(&c, round),
            _ => {
                for (i, peers) in [
                    (0, vec![1, 2]),
                    (3, vec![1, 2]),
                    (1, vec![0, 3]),
                    (2, vec![0, 3]),
                ] {
                    c.net.cut(i, &peers);
                }
            }
        }
        // Through every node: the majority side takes it, a minority refuses.
        for (i, node) in c.nodes.iter().enumerate() {
            let q = format!("r{round}-{}", NAMES[i]);
            let minority = match round {
                0..=3 => i == round,
                _ => i == 0 || i == 3,
            };
            match declare(node, &q) {
                Ok(()) => {
                    assert!(
                        !minority,
                        "round {round}: {} committed on a minority",
                        NAMES[i]
                    );
                    expected.insert(q);
                }
                Err(e) => {
                    assert!(minority, "round {round}: through {}: {e}", NAMES[i]);
                }
            }
        }
        heal_all(&c);
        converged(&c, &expected);
    }
}
