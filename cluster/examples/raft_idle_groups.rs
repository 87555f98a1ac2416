//! What many Raft groups cost with the `raft` crate (TiKV's raft-rs), before any
//! transport or disk: three nodes in one process, each running G groups of the same
//! three voters, one ticker per node (every 100 ms, Warren's tick), messages handed
//! between the nodes' groups in memory, logs in `MemStorage`.
//!
//! It reports, for idle groups, the Raft messages per second (heartbeats and their
//! answers) and the CPU the process spent per second of wall time; then the appends
//! per second one busy group commits while the G-1 others idle (one proposal at a
//! time, each waited until committed on the leader, as a client that waits for its
//! confirm).
//!
//!     cargo run --release -p warren-cluster --example raft_idle_groups -- 1 1000 10000
//!
//! Numbers: docs/2026-12-04-metadata-consistency.md (the Raft layer's library).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use raft::prelude::{ConfState, Message, MessageType};
use raft::storage::MemStorage;
use raft::{Config, RawNode, StateRole};

const NODES: u64 = 3;
const TICK: Duration = Duration::from_millis(100);

struct Cluster {
    /// nodes[n][g]: node n+1's member of group g.
    nodes: Vec<Vec<RawNode<MemStorage>>>,
    /// Messages on their way: (to node, group, message).
    wire: VecDeque<(u64, usize, Message)>,
    sent: u64,
    heartbeats: u64,
}

impl Cluster {
    fn new(groups: usize) -> Cluster {
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let nodes = (1..=NODES)
            .map(|id| {
                (0..groups)
                    .map(|_| {
                        let storage = MemStorage::new_with_conf_state(ConfState::from((
                            (1..=NODES).collect::<Vec<u64>>(),
                            vec![],
                        )));
                        let config = Config {
                            id,
                            election_tick: 10,
                            heartbeat_tick: 2,
                            check_quorum: true,
                            pre_vote: true,
                            ..Config::default()
                        };
                        RawNode::new(&config, storage, &logger).expect("a raft node")
                    })
                    .collect()
            })
            .collect();
        Cluster {
            nodes,
            wire: VecDeque::new(),
            sent: 0,
            heartbeats: 0,
        }
    }

    /// Handles the readies of the groups in `todo` and of every group a message reaches,
    /// until nothing moves (as a node that keeps a list of its groups with work).
    fn settle(&mut self, mut todo: Vec<(usize, usize)>) {
        loop {
            for (n, g) in todo.drain(..) {
                {
                    let node = &mut self.nodes[n][g];
                    if !node.has_ready() {
                        continue;
                    }
                    let mut ready = node.ready();
                    let mut out = ready.take_messages();
                    if !ready.entries().is_empty() {
                        node.mut_store()
                            .wl()
                            .append(ready.entries())
                            .expect("append");
                    }
                    if let Some(hs) = ready.hs() {
                        node.mut_store().wl().set_hardstate(hs.clone());
                    }
                    out.extend(ready.take_persisted_messages());
                    let mut light = node.advance(ready);
                    if let Some(commit) = light.commit_index() {
                        node.mut_store().wl().mut_hard_state().commit = commit;
                    }
                    out.extend(light.take_messages());
                    node.advance_apply();
                    for m in out {
                        self.sent += 1;
                        if m.get_msg_type() == MessageType::MsgHeartbeat {
                            self.heartbeats += 1;
                        }
                        self.wire.push_back((m.to, g, m));
                    }
                }
            }
            if self.wire.is_empty() {
                return;
            }
            while let Some((to, g, m)) = self.wire.pop_front() {
                let n = (to - 1) as usize;
                let _ = self.nodes[n][g].step(m);
                todo.push((n, g));
            }
            todo.sort_unstable();
            todo.dedup();
        }
    }

    fn tick(&mut self) {
        let mut todo = Vec::new();
        for (n, node) in self.nodes.iter_mut().enumerate() {
            for (g, group) in node.iter_mut().enumerate() {
                if group.tick() {
                    todo.push((n, g));
                }
            }
        }
        self.settle(todo);
    }

    fn leaders(&self) -> usize {
        self.nodes
            .iter()
            .flatten()
            .filter(|g| g.raft.state == StateRole::Leader)
            .count()
    }
}

/// CPU seconds this process has used (user + system).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn run(groups: usize) {
    let mut c = Cluster::new(groups);
    // Leaders spread over the nodes.
    let mut todo = Vec::new();
    for g in 0..groups {
        let n = g % NODES as usize;
        let _ = c.nodes[n][g].campaign();
        todo.push((n, g));
    }
    c.settle(todo);
    let elected = Instant::now();
    while c.leaders() < groups && elected.elapsed() < Duration::from_secs(60) {
        c.tick();
    }
    // Idle: 10 s of ticks.
    let (sent, heartbeats, cpu, wall) = (c.sent, c.heartbeats, cpu_seconds(), Instant::now());
    let mut next = Instant::now();
    let ticks = 100;
    for _ in 0..ticks {
        next += TICK;
        c.tick();
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let seconds = wall.elapsed().as_secs_f64();
    let idle_cpu = (cpu_seconds() - cpu) / seconds;
    let msgs = (c.sent - sent) as f64 / seconds;
    let hbs = (c.heartbeats - heartbeats) as f64 / seconds;
    // One busy group among the idle ones: proposals one at a time for 3 s.
    let leader = (0..NODES as usize)
        .find(|n| c.nodes[*n][0].raft.state == StateRole::Leader)
        .expect("group 0 has a leader");
    let start = Instant::now();
    let mut appended = 0u64;
    let mut last_tick = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let before = c.nodes[leader][0].raft.raft_log.committed;
        c.nodes[leader][0]
            .propose(vec![], vec![0u8; 64])
            .expect("propose");
        c.settle(vec![(leader, 0)]);
        if c.nodes[leader][0].raft.raft_log.committed > before {
            appended += 1;
        }
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            c.tick();
        }
    }
    let appends = appended as f64 / start.elapsed().as_secs_f64();
    println!(
        "{groups:>6} groups: idle {msgs:>9.0} raft msgs/s ({hbs:>8.0} heartbeats/s), CPU {:>5.1} % of a core; one busy group among them: {appends:>7.0} appends/s",
        idle_cpu * 100.0
    );
}

fn main() {
    let counts: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let counts = if counts.is_empty() {
        vec![1, 1_000, 10_000]
    } else {
        counts
    };
    for groups in counts {
        run(groups);
    }
}
