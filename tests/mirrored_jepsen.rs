//! A Jepsen-style run against a mirrored (quorum) queue: three disk nodes, each in a
//! network namespace of its own (`common::netns`), a publisher with confirms and a
//! consumer with manual acks through every node (`tests/amqp/jepsen_mirrored.py`),
//! while a nemesis SIGKILLs and restarts the node that serves the queue and the
//! others, and cuts the serving node or another one off from its peers and heals it.
//! After the faults stop, everything is healed and restarted, the consumers drain the
//! queue, and the checker compares every publisher's confirmed set with what was
//! consumed: **0 confirmed messages lost** is the only pass; duplicates (at-least-once
//! allows them) and order, per publisher, of messages consumed once, are counted and
//! printed.
//!
//! The nemesis is seeded: the seed is printed (and taken from `JEPSEN_SEED` when set),
//! so a failing schedule can be run again. `JEPSEN_SECONDS` sets how long the faults
//! go on (20 s by default, for CI); `scripts/jepsen-mirrored` runs ten rounds of 60 s
//! and prints the tallies. Where namespaces cannot be made the test says why on its
//! output and returns without checking anything.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::netns::Net;
use common::{eventually, members, NodeProcess, PythonRun};

const NAMES: [&str; 3] = ["j1", "j2", "j3"];
const QUEUE: &str = "jq";

/// A small deterministic generator (xorshift64*), for the nemesis's schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A whole number in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// The nodes of the run, in their namespaces; their logs on failure.
struct Cluster {
    nodes: Vec<Option<NodeProcess>>,
    dir: tempfile::TempDir,
    // Dropped after the nodes: they are killed before their namespaces go.
    net: Net,
}

impl Cluster {
    fn addr(&self, i: usize) -> SocketAddr {
        (self.net.ip(i), 4370).into()
    }

    fn start(&mut self, i: usize) {
        let seeds: Vec<SocketAddr> = (0..NAMES.len())
            .filter(|j| *j != i)
            .map(|j| self.addr(j))
            .collect();
        self.nodes[i] = Some(NodeProcess::start_in_netns(
            &self.net.ns(i),
            self.net.ip(i),
            &self.dir.path().join(NAMES[i]),
            NAMES[i],
            &seeds,
            "disk",
        ));
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut node) = self.nodes[i].take() {
            node.kill();
        }
    }

    /// Node `i` cut off from the others (both ways; the test process still reaches
    /// it, and so do the clients).
    fn isolate(&self, i: usize) {
        let others: Vec<usize> = (0..NAMES.len()).filter(|j| *j != i).collect();
        for j in &others {
            self.net.cut(*j, &[i]);
        }
        self.net.cut(i, &others);
    }

    fn heal(&self) {
        for i in 0..NAMES.len() {
            self.net.heal(i);
        }
    }

    /// The node that serves the queue, as the first running node that answers says.
    fn serving(&self) -> Option<usize> {
        for node in self.nodes.iter().flatten() {
            let (ok, out, _) = node.cli(&["queues", "--json"]);
            if !ok {
                continue;
            }
            let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
            let name = rows
                .iter()
                .find(|r| r["name"] == QUEUE)
                .and_then(|r| r["node"].as_str().map(str::to_string));
            if let Some(name) = name {
                return NAMES.iter().position(|n| *n == name);
            }
        }
        None
    }

    fn all_up(&self) {
        let expected: Vec<(String, String)> = NAMES
            .iter()
            .map(|n| (n.to_string(), "up".to_string()))
            .collect();
        for node in self.nodes.iter().flatten() {
            eventually("every member sees the others up", || {
                members(node) == expected
            });
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (i, node) in self.nodes.iter().enumerate() {
                if let Some(node) = node {
                    eprintln!("----- {} log -----\n{}", NAMES[i], node.log());
                }
            }
        }
        for i in 0..NAMES.len() {
            self.kill(i);
        }
    }
}

/// One fault of the nemesis: what it did, for the run's record.
fn fault(c: &mut Cluster, rng: &mut Rng) -> String {
    let serving = c.serving();
    let victim = match serving {
        Some(s) if rng.between(0, 2) > 0 => s,
        _ => rng.between(0, NAMES.len() as u64 - 1) as usize,
    };
    let role = if Some(victim) == serving {
        "serving"
    } else {
        "other"
    };
    let hold = Duration::from_millis(rng.between(2_000, 6_000));
    if rng.between(0, 1) == 0 {
        c.kill(victim);
        std::thread::sleep(hold);
        c.start(victim);
        format!(
            "kill -9 {} ({role}), restarted after {hold:?}",
            NAMES[victim]
        )
    } else {
        c.isolate(victim);
        std::thread::sleep(hold);
        c.heal();
        format!("isolate {} ({role}), healed after {hold:?}", NAMES[victim])
    }
}

#[test]
fn a_mirrored_queue_loses_no_confirmed_message_under_kills_and_partitions() {
    let test = "a_mirrored_queue_loses_no_confirmed_message_under_kills_and_partitions";
    let net = match Net::make(NAMES.len()) {
        Ok(net) => net,
        Err(why) => {
            println!("SKIPPED {test}: cannot make network namespaces here: {why}");
            return;
        }
    };
    let seconds: u64 = std::env::var("JEPSEN_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("JEPSEN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
        .max(1);
    println!(
        "jepsen seed {seed} ({seconds} s of faults; JEPSEN_SEED={seed} runs this schedule again)"
    );
    let mut rng = Rng(seed);
    let mut c = Cluster {
        nodes: (0..NAMES.len()).map(|_| None).collect(),
        dir: tempfile::tempdir().unwrap(),
        net,
    };
    for i in 0..NAMES.len() {
        c.start(i);
    }
    c.all_up();
    let first = c.nodes[0].as_ref().unwrap();
    // The clients come from the bridge, not loopback: `guest` is loopback only.
    for args in [
        &["user", "add", "jepsen", "--password", "jepsen"][..],
        &[
            "permissions",
            "set",
            "--user",
            "jepsen",
            "--configure",
            ".*",
            "--write",
            ".*",
            "--read",
            ".*",
        ],
    ] {
        let (ok, _, err) = first.cli(args);
        assert!(ok, "{args:?}: {err}");
    }
    let (ok, _, err) = first.cli(&[
        "declare",
        "queue",
        QUEUE,
        "--durable",
        "--arg",
        "x-queue-type=quorum",
    ]);
    assert!(ok, "declare: {err}");

    let mut args: Vec<String> = c
        .nodes
        .iter()
        .flatten()
        .map(|n| n.amqp_addr.to_string())
        .collect();
    args.push(QUEUE.to_string());
    let mut workload = PythonRun::start("jepsen_mirrored", &args);
    workload.until_line("running");

    // The faults, one after another, each followed by a calm while.
    let until = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < until {
        let done = fault(&mut c, &mut rng);
        println!("nemesis: {done}");
        std::thread::sleep(Duration::from_millis(rng.between(1_000, 3_000)));
    }

    // Everything healed and running: the workload stops publishing, drains and checks.
    c.heal();
    for i in 0..NAMES.len() {
        if c.nodes[i].is_none() {
            c.start(i);
        }
    }
    c.all_up();
    workload.say("healed");
    let out = workload.finish();
    println!("{}", out.trim_end());
}
