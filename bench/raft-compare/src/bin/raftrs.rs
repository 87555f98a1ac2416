//! raft-rs 0.7 (TiKV's `raft` crate): three nodes in one process, each running G groups
//! of the same three voters, one ticker for all groups every 100 ms (heartbeat_tick 2 =
//! 200 ms, election_tick 10 = 1 s), messages handed between the nodes' groups in memory,
//! logs in `MemStorage`; it reports idle messages and CPU, memory, election time, and
//! one busy group's appends (one and 64 in flight).
//!
//!     cargo run --release --bin raftrs -- 1 1000 10000

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use raft::prelude::{ConfState, Message, MessageType};
use raft::storage::MemStorage;
use raft::{Config, RawNode, StateRole};
use raft_compare::*;

const TICK: Duration = Duration::from_millis(100);

struct Cluster {
    /// nodes[n][g]: node n+1's member of group g.
    nodes: Vec<Vec<RawNode<MemStorage>>>,
    /// Messages on their way: (to node, group, message).
    wire: VecDeque<(u64, usize, Message)>,
    sent: u64,
    heartbeats: u64,
    votes: u64,
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
            votes: 0,
        }
    }

    /// Handles the readies of the groups in `todo` and of every group a message reaches,
    /// until nothing moves (as a node that keeps a list of its groups with work).
    fn settle(&mut self, mut todo: Vec<(usize, usize)>) {
        loop {
            for (n, g) in todo.drain(..) {
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
                    match m.get_msg_type() {
                        MessageType::MsgHeartbeat => self.heartbeats += 1,
                        MessageType::MsgRequestVote | MessageType::MsgRequestPreVote => {
                            self.votes += 1
                        }
                        _ => {}
                    }
                    self.wire.push_back((m.to, g, m));
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

    /// Groups with a leader.
    fn led(&self) -> usize {
        (0..self.nodes[0].len())
            .filter(|g| {
                self.nodes
                    .iter()
                    .any(|node| node[*g].raft.state == StateRole::Leader)
            })
            .count()
    }

    /// Ticks every 100 ms of wall time for `d`.
    fn tick_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        let mut next = Instant::now();
        while next < end {
            next += TICK;
            self.tick();
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    }

    fn committed(&self, n: usize) -> u64 {
        self.nodes[n][0].raft.raft_log.committed
    }
}

fn run(groups: usize) -> Report {
    let mut r = Report {
        lib: "raft-rs",
        groups,
        rss_base_kib: rss_kib(),
        ..Report::default()
    };
    let start = Instant::now();
    let mut c = Cluster::new(groups);
    r.create_s = start.elapsed().as_secs_f64();

    // Leaders spread over the nodes: group g campaigns on node g % 3.
    let start = Instant::now();
    let mut todo = Vec::new();
    for g in 0..groups {
        let n = g % NODES as usize;
        let _ = c.nodes[n][g].campaign();
        todo.push((n, g));
    }
    c.settle(todo);
    let mut next = Instant::now();
    while c.led() < groups && start.elapsed() < ELECTION_LIMIT {
        next += TICK;
        c.tick();
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    r.elect_s = start.elapsed().as_secs_f64();
    r.led = c.led();
    // Let the first entries commit everywhere, as the openraft side does.
    c.tick_for(Duration::from_secs(1));
    r.rss_elected_kib = rss_kib();
    r.heap_elected_kib = heap_in_use_kib();

    // Idle.
    let (sent, heartbeats, votes, cpu, wall) =
        (c.sent, c.heartbeats, c.votes, cpu_seconds(), Instant::now());
    c.tick_for(idle());
    let seconds = wall.elapsed().as_secs_f64();
    r.idle_cpu_pct = (cpu_seconds() - cpu) / seconds * 100.0;
    r.idle_msgs_s = (c.sent - sent) as f64 / seconds;
    r.idle_hb_s = (c.heartbeats - heartbeats) as f64 / seconds;
    r.idle_votes = c.votes - votes;
    r.rss_idle_kib = rss_kib();

    // One busy group among the idle ones: proposals one at a time, each handled until
    // committed on the leader; the ticker keeps running every 100 ms.
    let leader = (0..NODES as usize)
        .find(|n| c.nodes[*n][0].raft.state == StateRole::Leader)
        .expect("group 0 has a leader");
    let (cpu, start) = (cpu_seconds(), Instant::now());
    let mut appended = 0u64;
    let mut last_tick = Instant::now();
    while start.elapsed() < BUSY {
        let before = c.committed(leader);
        c.nodes[leader][0]
            .propose(vec![], vec![0u8; PAYLOAD])
            .expect("propose");
        c.settle(vec![(leader, 0)]);
        if c.committed(leader) > before {
            appended += 1;
        }
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            c.tick();
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    r.seq_appends_s = appended as f64 / seconds;
    r.busy_cpu_pct = (cpu_seconds() - cpu) / seconds * 100.0;

    // Pipelined: keep PIPELINE proposals outstanding. Delivery is synchronous here, so
    // a settle commits all that were proposed: this is 64 proposals per round.
    let start = Instant::now();
    let first = c.committed(leader);
    let mut proposed = 0u64;
    let mut last_tick = Instant::now();
    while start.elapsed() < BUSY {
        let done = c.committed(leader) - first;
        while proposed - done.min(proposed) < PIPELINE as u64 {
            c.nodes[leader][0]
                .propose(vec![], vec![0u8; PAYLOAD])
                .expect("propose");
            proposed += 1;
        }
        c.settle(vec![(leader, 0)]);
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            c.tick();
        }
    }
    r.pipe_appends_s = (c.committed(leader) - first) as f64 / start.elapsed().as_secs_f64();
    r
}

fn main() {
    each_count_in_a_child(run);
}
