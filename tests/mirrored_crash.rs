//! A crash image of a mirrored queue's replica (issue 17): a replica is killed in the
//! middle of a group commit while a publisher streams confirmed messages, restarted
//! on its data directory, and catches up from the others without losing or
//! duplicating a confirmed message.
//!
//! Three disk nodes on loopback hold a quorum queue. A node that does not serve the
//! queue is restarted with the storage's fault-injection hook
//! ([`warren_storage::FAULT_ABORT_IN_COMMIT_ENV`]): it aborts (as abruptly as
//! kill -9) in the middle of one of its durable commits, with part of the group's ops
//! in the write transaction, while a publisher with confirms streams unique ids
//! through the serving node and keeps having them confirmed by the two replicas left.
//! Restarted without the hook, the node rejoins and catches up while more are
//! published. Then the other nodes are killed and restarted one at a time (a majority
//! is always up) until the restarted node serves the queue, and everything is
//! consumed through it: every confirmed id exactly once, nothing that was never
//! published, nothing left. 0 lost and 0 duplicated is the only pass.
//!
//! And a node that went down while a quorum queue was being deleted, before its
//! replica's log was removed, removes that log once back (and nothing else).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use common::{
    eventually, eventually_within, free_port, leader, members, ok, queue_row, NodeProcess,
    PythonRun,
};
use warren_storage::FAULT_ABORT_IN_COMMIT_ENV;

const NAMES: [&str; 3] = ["c1", "c2", "c3"];
const QUEUE: &str = "crash-image";
/// The durable commit the replica aborts in, counted from its start with the hook.
/// Its restart into the cluster costs it almost none (nothing changed while it was
/// down: one, measured, by the time the first message is confirmed); then every
/// message the publisher streams costs it at least one (the append of the message's
/// entry, fsynced before it answers the leader). So the abort lands while the
/// publisher streams, a few hundred messages in; the test checks both ends (alive
/// once the first message is confirmed, dead while the publisher still publishes).
const ABORT_IN_COMMIT: u64 = 300;
/// Messages published while the replica is down: it has them to catch up on.
const PUBLISHED_WHILE_DOWN: u64 = 200;
/// Messages published once the replica is back, while it catches up.
const PUBLISHED_AFTER_RESTART: u64 = 300;
/// At most this many kills of the serving node to make the restarted one serve. The
/// two replicas left campaign at their next tick once they see the serving node down,
/// and the one killed comes back with its ticks started anew, so each election
/// between two up-to-date replicas is close to a coin toss: 20 losses in a row (one
/// chance in a million) would be a bug (the restarted replica unable to lead), not
/// bad luck.
const MAX_HANDOVERS: usize = 20;
/// How long the faulty replica may take to reach its aborting commit, and a node to
/// be serving again: generous, for slow machines.
const SLOW: Duration = Duration::from_secs(120);
/// What the storage logs just before the hook aborts the process.
const ABORT_LINE: &str = "aborting the process in the middle of a durable commit";

/// The three nodes, each a seed of the others; their logs on failure.
struct Cluster {
    ports: [u16; 3],
    dir: tempfile::TempDir,
    nodes: Vec<NodeProcess>,
}

impl Cluster {
    fn three() -> Cluster {
        let mut c = Cluster {
            ports: [free_port(), free_port(), free_port()],
            dir: tempfile::tempdir().unwrap(),
            nodes: Vec::new(),
        };
        c.nodes = (0..NAMES.len()).map(|i| c.start(i, &[])).collect();
        c
    }

    /// Node `i` on its port and data directory, with `env` added.
    fn start(&self, i: usize, env: &[(&str, &str)]) -> NodeProcess {
        let seeds: Vec<u16> = (0..NAMES.len())
            .filter(|j| *j != i)
            .map(|j| self.ports[j])
            .collect();
        NodeProcess::start_member_with_env(
            &self.dir.path().join(NAMES[i]),
            self.ports[i],
            NAMES[i],
            &seeds,
            "disk",
            env,
        )
    }

    /// Node `i` killed (SIGKILL) and started again, with `env`.
    fn restart(&mut self, i: usize, env: &[(&str, &str)]) {
        self.nodes[i].kill();
        self.nodes[i] = self.start(i, env);
    }

    /// Waits until every node sees all three up.
    fn all_up(&self) {
        let expected: Vec<(String, String)> = NAMES
            .iter()
            .map(|n| (n.to_string(), "up".to_string()))
            .collect();
        for node in &self.nodes {
            eventually("every node sees the three members up", || {
                members(node) == expected
            });
        }
    }

    /// The node that serves the queue, as node `asked` sees it.
    fn serving(&self, asked: usize) -> Option<usize> {
        let row = queue_row(&self.nodes[asked], QUEUE)?;
        NAMES.iter().position(|n| row["node"] == *n)
    }

    fn amqp_port(&self, i: usize) -> String {
        self.nodes[i].amqp_addr.port().to_string()
    }
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

/// A node's log line without its terminal colour codes (ESC [ ... m).
fn without_colours(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            plain.push(c);
        }
    }
    plain
}

/// The value of the line of `out` that starts with `key` and a space.
fn field<'o>(out: &'o str, key: &str) -> &'o str {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {key:?} line in\n{out}"))
}

/// The ids of the line of `out` that starts with `key` (a JSON list).
fn ids(out: &str, key: &str) -> Vec<u64> {
    serde_json::from_str(field(out, key))
        .unwrap_or_else(|e| panic!("the {key:?} line is not a list of ids: {e}"))
}

#[test]
fn a_replica_killed_in_a_group_commit_catches_up_and_loses_or_duplicates_nothing_confirmed() {
    let started = Instant::now();
    let mut c = Cluster::three();
    c.all_up();
    for node in &c.nodes {
        eventually("a metadata leader every node knows", || {
            leader(node).is_some()
        });
    }
    ok(
        &c.nodes[0],
        &[
            "declare",
            "queue",
            QUEUE,
            "--durable",
            "--arg",
            "x-queue-type=quorum",
        ],
    );
    let mut serving = None;
    eventually("every node knows the node that serves the queue", || {
        let seen: BTreeSet<Option<usize>> = (0..NAMES.len()).map(|i| c.serving(i)).collect();
        serving = *seen.first().unwrap();
        seen.len() == 1 && serving.is_some()
    });
    let serving = serving.unwrap();

    // A replica that does not serve the queue gets the hook: it will abort in the
    // middle of its durable commit number ABORT_IN_COMMIT.
    let faulty = (serving + 1) % NAMES.len();
    let name = NAMES[faulty];
    let at = ABORT_IN_COMMIT.to_string();
    c.restart(faulty, &[(FAULT_ABORT_IN_COMMIT_ENV, &at)]);
    c.all_up();
    eventually(
        &format!("{name}, restarted, knows that {} serves", NAMES[serving]),
        || c.serving(faulty) == Some(serving),
    );
    assert_eq!(
        c.serving(serving),
        Some(serving),
        "the queue changed hands when {name} restarted"
    );

    let mut publisher = PythonRun::start(
        "mirrored_crash",
        &[
            c.amqp_port(serving),
            QUEUE.to_string(),
            "publish".to_string(),
        ],
    );
    publisher.until_line("running");
    assert!(
        !c.nodes[faulty].exited(),
        "{name} aborted before the publisher started: its start took {ABORT_IN_COMMIT} durable \
         commits or more (raise ABORT_IN_COMMIT)"
    );
    eventually_within(
        &format!("{name} aborts in durable commit {ABORT_IN_COMMIT} while the publisher streams"),
        SLOW,
        || c.nodes[faulty].exited(),
    );
    let status = c.nodes[faulty].exit_status().expect("exited");
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "{name} must end by the hook's abort, not {status}"
    );
    let log = c.nodes[faulty].log();
    let aborted = log
        .lines()
        .find(|l| l.contains(ABORT_LINE))
        .map(without_colours)
        .unwrap_or_else(|| panic!("{name} aborted without the hook's line"));

    // Confirmed by the two replicas left; then the aborted one is back without the
    // hook, on the same data directory: it rejoins and catches up on what it missed
    // while more messages are published.
    publisher.say(&format!("report {PUBLISHED_WHILE_DOWN}"));
    publisher.until_line("passed");
    c.restart(faulty, &[]);
    c.all_up();
    publisher.say(&format!("then {PUBLISHED_AFTER_RESTART}"));
    let out = publisher.finish();
    let published: u64 = field(&out, "published").parse().expect("a count");
    let confirmed = ids(&out, "confirmed");
    let nacked = ids(&out, "nacked");
    assert!(
        nacked.is_empty(),
        "publishes nacked with two of the three replicas up all along: {nacked:?}"
    );

    // The restarted replica serves the queue: the node that does is killed and
    // restarted, one at a time, until the election falls on it. Raft elects only a
    // replica whose log holds every committed entry, and it serves from its own copy.
    let mut handovers = Vec::new();
    loop {
        let mut now = None;
        eventually_within(
            "the restarted node knows who serves the queue",
            SLOW,
            || {
                now = c.serving(faulty);
                now.is_some()
            },
        );
        let now = now.unwrap();
        if now == faulty {
            break;
        }
        assert!(
            handovers.len() < MAX_HANDOVERS,
            "{name} never came to serve the queue: {MAX_HANDOVERS} elections went to the \
             others ({handovers:?})"
        );
        c.nodes[now].kill();
        eventually_within("another node serves the queue", SLOW, || {
            c.serving(faulty).is_some_and(|s| s != now)
        });
        c.restart(now, &[]);
        c.all_up();
        handovers.push(NAMES[now]);
    }

    let consumer = PythonRun::start(
        "mirrored_crash",
        &[
            c.amqp_port(faulty),
            QUEUE.to_string(),
            "consume".to_string(),
        ],
    );
    let out = consumer.finish();
    assert_eq!(
        c.serving(faulty),
        Some(faulty),
        "the queue changed hands while it was consumed through {name}"
    );
    let consumed = ids(&out, "consumed");
    let left: u64 = field(&out, "left").parse().expect("a count");

    let mut times: BTreeMap<u64, usize> = BTreeMap::new();
    for id in &consumed {
        *times.entry(*id).or_default() += 1;
    }
    let twice: Vec<u64> = times
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| *id)
        .collect();
    let unknown: Vec<u64> = times
        .keys()
        .copied()
        .filter(|id| *id >= published)
        .collect();
    let lost: Vec<u64> = confirmed
        .iter()
        .copied()
        .filter(|id| !times.contains_key(id))
        .collect();
    println!(
        "{name}: {}\npublished {published}, confirmed {}; handovers to make {name} \
         serve: {handovers:?}; consumed through {name}: {} ({} distinct, {} never confirmed), \
         left {left}, redelivered {}; lost {}, duplicated {}, unknown {}; {:.1} s",
        aborted.trim(),
        confirmed.len(),
        consumed.len(),
        times.len(),
        times.len() - (confirmed.len() - lost.len()),
        field(&out, "redelivered"),
        lost.len(),
        twice.len(),
        unknown.len(),
        started.elapsed().as_secs_f64(),
    );
    assert!(
        lost.is_empty(),
        "{} confirmed messages lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert!(
        twice.is_empty(),
        "{} messages consumed more than once, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(10)]
    );
    assert!(
        unknown.is_empty(),
        "consumed ids that were never published: {unknown:?}"
    );
    assert_eq!(left, 0, "messages left in the queue after it was drained");
}

/// A node that went down between a quorum queue's deletion and the removal of its
/// replica's log (here: a log written into its data file while it was down, for a
/// group no queue has) removes that log once it is back and caught up, and keeps the
/// logs of the queues that exist, with their messages.
#[test]
fn a_log_left_by_a_deleted_queue_is_removed_at_start_and_live_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n1");
    let port = free_port();
    let mut node = NodeProcess::start(&data, port);
    eventually("the node serves", || node.cli(&["queues"]).0);
    ok(
        &node,
        &[
            "declare",
            "queue",
            "kept",
            "--durable",
            "--arg",
            "x-queue-type=quorum",
        ],
    );
    ok(
        &node,
        &[
            "publish",
            "--routing-key",
            "kept",
            "--confirm",
            "--body",
            "still here",
        ],
    );
    node.kill();

    const ORPHAN: u64 = 0xdead_beef;
    let stored = {
        let store = warren_storage::Store::open(data.join("warren.redb")).unwrap();
        let record = |index| warren_storage::Op::PutLogRecord {
            group: ORPHAN,
            index,
            record: vec![7; 16],
        };
        let mut ops: Vec<_> = (0..4).map(record).collect();
        ops.push(warren_storage::Op::PutLogSnapshot {
            group: ORPHAN,
            snapshot: vec![7; 16],
        });
        store
            .submit(warren_storage::Batch::durable(ops))
            .wait()
            .unwrap();
        let stored = store.log_groups().unwrap();
        store.close();
        stored
    };
    assert_eq!(
        stored.len(),
        3,
        "metadata, the queue's and the orphan: {stored:?}"
    );

    let mut node = NodeProcess::start(&data, port);
    let line = format!("removed the raft log of group {ORPHAN}");
    eventually_within("the orphaned log is removed", SLOW, || {
        node.log().contains(&line)
    });
    let out = ok(&node, &["consume", "kept", "--count", "1"]);
    assert_eq!(out.trim(), "still here");
    node.kill();

    let store = warren_storage::Store::open(data.join("warren.redb")).unwrap();
    let left = store.log_groups().unwrap();
    store.close();
    let expected: Vec<u64> = stored.into_iter().filter(|g| *g != ORPHAN).collect();
    assert_eq!(left, expected, "only the orphan went");
}
