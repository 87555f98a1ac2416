//! The world: the nodes, the network, the logical clock and the step loop.
//!
//! Time is simulated milliseconds and moves only when an event is due: a node's tick
//! (every ~100 ms, `replica::TICK`, each node's clock a little off), a message's
//! delivery, a node's writes completing (then its driver hears they are persisted).
//! Each step is one of: the next due event, a client command at a
//! random node, a fault (a partition, a heal, a crash, a restart, a reboot), or a
//! compaction. Every choice comes from the run's one seeded generator; after every
//! step the invariants are checked ([`super::invariants`]).

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use raft::prelude::{ConfState, Message, MessageType};

use super::client::Millis;
use super::invariants::{log_matching, Checker, LogView};
use super::network::{Network, Sent, Weather};
use super::node::{CrashPoint, Seen, SimNode, SnapshotPolicy};
use super::rng::{Fnv, SimRng};
use super::state_machine::{Applied, Command, Op};
use super::storage::SimDisk;
use crate::replica::TICK;

/// A deliberately broken behaviour, to show the checks catch it (tests only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sabotage {
    /// Nothing broken.
    None,
    /// Node 0 applies a command again when it stands in the log twice (no dedupe).
    ApplyDuplicates,
    /// A restarted node forgets whom it voted for in its term (and may vote twice).
    ForgetVote,
}

/// How one run goes, drawn from its seed.
#[derive(Clone, Debug)]
pub(super) struct Plan {
    pub(super) voters: usize,
    pub(super) learner: bool,
    pub(super) weather: Weather,
    /// Per step: a client command, a fault, a compaction.
    pub(super) p_propose: f64,
    pub(super) p_fault: f64,
    pub(super) p_compact: f64,
    /// Per completion of writes: the node crashes there instead (before or after
    /// the writes reach the disk).
    pub(super) p_crash_in_ready: f64,
    /// The most a write takes to complete.
    pub(super) disk_latency: Millis,
    /// When nodes take snapshots, and the tail they keep.
    pub(super) snapshots: SnapshotPolicy,
}

impl Plan {
    fn draw(rng: &mut SimRng) -> Plan {
        let lossy = rng.chance(0.7);
        Plan {
            voters: if rng.chance(0.5) { 3 } else { 5 },
            learner: rng.chance(0.3),
            weather: Weather {
                loss: if lossy { rng.unit() * 0.15 } else { 0.0 },
                duplicate: if lossy { rng.unit() * 0.05 } else { 0.0 },
                max_delay: rng.below(1, 41),
                spike: if rng.chance(0.5) {
                    rng.unit() * 0.02
                } else {
                    0.0
                },
                spike_delay: rng.below(200, 2_001),
            },
            p_propose: 0.03 + rng.unit() * 0.07,
            p_fault: 0.005 + rng.unit() * 0.025,
            p_compact: 0.002 + rng.unit() * 0.008,
            p_crash_in_ready: if rng.chance(0.5) {
                rng.unit() * 0.01
            } else {
                0.0
            },
            disk_latency: rng.below(0, 11),
            snapshots: SnapshotPolicy {
                every: rng.below(20, 51),
                keep: rng.below(0, 9),
            },
        }
    }
}

/// What a run did (for the trace and for the coverage the seeds test asserts).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Stats {
    pub(super) steps: u64,
    pub(super) proposed: u64,
    pub(super) answered: u64,
    pub(super) duplicates_skipped: u64,
    pub(super) snapshots_installed: u64,
    pub(super) compactions: u64,
    /// Snapshots the nodes took (every so many entries, when Raft wanted one, and the
    /// compactions at random steps).
    pub(super) snapshots_taken: u64,
    /// Crashes that lost completed non-durable writes.
    pub(super) lost_unsynced: u64,
    pub(super) crashes: u64,
    pub(super) crashes_in_ready: u64,
    pub(super) partitions: u64,
    pub(super) leaders: u64,
    pub(super) messages_lost: u64,
    pub(super) messages_delivered: u64,
    /// The hash of everything that happened, in order.
    pub(super) trace: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    Tick,
    /// Writes of the node complete.
    WritesDone,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Timer {
    at: Millis,
    seq: u64,
    node: usize,
    incarnation: u64,
    kind: TimerKind,
}

/// A run of the simulation.
pub(super) struct World {
    pub(super) step: u64,
    now: Millis,
    rng: SimRng,
    pub(super) plan: Plan,
    sabotage: Sabotage,
    nodes: Vec<SimNode>,
    network: Network,
    timers: BinaryHeap<Reverse<Timer>>,
    timer_seq: u64,
    /// Each node's tick period (clocks differ a little).
    tick_every: Vec<Millis>,
    checker: Checker,
    views: Vec<LogView>,
    /// The commit index the checks last read from each node.
    commit_seen: Vec<u64>,
    /// Commands whose client was told "committed", (origin, id).
    acked: BTreeSet<(u64, u64)>,
    trace: Fnv,
    pub(super) stats: Stats,
}

fn is_snapshot(m: &Message) -> bool {
    m.get_msg_type() == MessageType::MsgSnapshot
}

impl World {
    pub(super) fn new(seed: u64, sabotage: Sabotage) -> World {
        let mut rng = SimRng::new(seed);
        let plan = Plan::draw(&mut rng);
        let n = plan.voters + usize::from(plan.learner);
        let conf_state = ConfState {
            voters: (1..=plan.voters as u64).collect(),
            learners: if plan.learner {
                vec![n as u64]
            } else {
                Vec::new()
            },
            ..ConfState::default()
        };
        let tick = TICK.as_millis() as Millis;
        let tick_every = (0..n)
            .map(|_| rng.below(tick * 95 / 100, tick * 105 / 100 + 1))
            .collect();
        let mut nodes: Vec<SimNode> = (0..n)
            .map(|i| {
                SimNode::new(
                    i,
                    SimDisk::new(0, &conf_state),
                    plan.snapshots,
                    plan.disk_latency,
                )
            })
            .collect();
        if sabotage == Sabotage::ApplyDuplicates {
            nodes[0].no_dedupe = true;
        }
        let mut world = World {
            step: 0,
            now: 0,
            network: Network::new(plan.weather),
            plan,
            sabotage,
            nodes,
            timers: BinaryHeap::new(),
            timer_seq: 0,
            tick_every,
            checker: Checker::default(),
            views: vec![
                LogView {
                    first: 1,
                    entries: Vec::new()
                };
                n
            ],
            commit_seen: vec![0; n],
            acked: BTreeSet::new(),
            trace: Fnv::default(),
            stats: Stats::default(),
            rng,
        };
        world.note(&[seed]);
        for i in 0..n {
            world.start(i);
        }
        world
    }

    fn schedule(&mut self, at: Millis, node: usize, kind: TimerKind) {
        self.timer_seq += 1;
        self.timers.push(Reverse(Timer {
            at,
            seq: self.timer_seq,
            node,
            incarnation: self.nodes[node].incarnation,
            kind,
        }));
    }

    fn start(&mut self, i: usize) {
        let salt = self.rng.next_u64();
        self.nodes[i].start(salt, self.sabotage == Sabotage::ForgetVote, self.now);
        self.commit_seen[i] = 0;
        let first_tick = self.now + self.rng.below(1, self.tick_every[i] + 1);
        self.schedule(first_tick, i, TimerKind::Tick);
    }

    fn crash(&mut self, i: usize) {
        if self.nodes[i].crash().pending > 0 {
            // Writes were under way: the crash came in the middle of the pipeline.
            self.stats.crashes_in_ready += 1;
        }
        self.stats.crashes += 1;
    }

    fn note(&mut self, what: &[u64]) {
        for w in what {
            self.trace.u64(*w);
        }
    }

    /// One step, then the checks; the error says which invariant broke.
    pub(super) fn step(&mut self) -> Result<(), String> {
        self.step += 1;
        self.stats.steps = self.step;
        let mut touched = Vec::new();
        let roll = self.rng.unit();
        let p = &self.plan;
        if roll < p.p_propose {
            self.client_proposes(&mut touched);
        } else if roll < p.p_propose + p.p_fault {
            self.fault(&mut touched);
        } else if roll < p.p_propose + p.p_fault + p.p_compact {
            let up: Vec<usize> = (0..self.nodes.len())
                .filter(|i| self.nodes[*i].is_up())
                .collect();
            if !up.is_empty() {
                let i = up[self.rng.pick(up.len())];
                self.compact(i, &mut touched);
            }
        } else {
            self.next_event(&mut touched);
        }
        self.settle(&touched)
    }

    fn compact(&mut self, i: usize, touched: &mut Vec<usize>) {
        let keep = self.rng.below(0, 8);
        if self.nodes[i].compact(keep, self.now) {
            self.stats.compactions += 1;
            self.note(&[10, i as u64, keep]);
            touched.push(i);
        }
    }

    fn client_proposes(&mut self, touched: &mut Vec<usize>) {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_up())
            .collect();
        if up.is_empty() {
            return;
        }
        let i = up[self.rng.pick(up.len())];
        let key = self.rng.below(0, 8) as u8;
        let op = if self.rng.chance(0.8) {
            Op::Put {
                key,
                value: self.rng.below(0, 1_000) as u32,
            }
        } else {
            Op::Delete { key }
        };
        let command = Command::new(i as u64, self.rng.next_u64(), op);
        self.note(&[1, i as u64, command.id]);
        self.nodes[i].propose(command, self.now);
        self.stats.proposed += 1;
        touched.push(i);
    }

    fn fault(&mut self, touched: &mut Vec<usize>) {
        let n = self.nodes.len();
        let up: Vec<usize> = (0..n).filter(|i| self.nodes[*i].is_up()).collect();
        let down: Vec<usize> = (0..n).filter(|i| !self.nodes[*i].is_up()).collect();
        match self.rng.pick(100) {
            0..=29 => {
                self.stats.partitions += 1;
                match self.rng.pick(3) {
                    0 => {
                        let x = self.rng.pick(n);
                        let rest: Vec<usize> = (0..n).filter(|i| *i != x).collect();
                        self.network.split(&[x], &rest);
                        self.note(&[2, x as u64]);
                    }
                    1 => {
                        let (mut side, mut others) = (Vec::new(), Vec::new());
                        for i in 0..n {
                            if self.rng.chance(0.5) {
                                side.push(i);
                            } else {
                                others.push(i);
                            }
                        }
                        self.network.split(&side, &others);
                        self.note(&[3, side.len() as u64]);
                    }
                    _ => {
                        let (a, b) = (self.rng.pick(n), self.rng.pick(n));
                        self.network.cut(a, b);
                        self.note(&[4, a as u64, b as u64]);
                    }
                }
            }
            30..=54 => {
                if self.rng.chance(0.5) {
                    self.network.heal_all();
                    self.note(&[5]);
                } else {
                    let pick = self.rng.pick(64);
                    self.network.heal_one(pick);
                    self.note(&[6, pick as u64]);
                }
            }
            55..=66 => {
                if !up.is_empty() && down.len() + 1 < n {
                    let i = up[self.rng.pick(up.len())];
                    self.crash(i);
                    self.note(&[7, i as u64]);
                    touched.push(i);
                }
            }
            67..=74 => {
                // A reboot: down and up again at once.
                if !up.is_empty() {
                    let i = up[self.rng.pick(up.len())];
                    self.crash(i);
                    self.start(i);
                    self.note(&[9, i as u64]);
                    touched.push(i);
                }
            }
            _ => {
                if !down.is_empty() {
                    let i = down[self.rng.pick(down.len())];
                    self.start(i);
                    self.note(&[8, i as u64]);
                    touched.push(i);
                }
            }
        }
    }

    /// The next due event (a message or a timer); when nothing is due at all (every
    /// node down), a node restarts.
    fn next_event(&mut self, touched: &mut Vec<usize>) {
        let timer_at = self.timers.peek().map(|Reverse(t)| t.at);
        let message_at = self.network.next_due();
        let take_timer = match (timer_at, message_at) {
            (None, None) => {
                let down: Vec<usize> = (0..self.nodes.len())
                    .filter(|i| !self.nodes[*i].is_up())
                    .collect();
                if let Some(i) = down.first().copied() {
                    self.start(i);
                    touched.push(i);
                }
                return;
            }
            (Some(t), Some(m)) => t <= m,
            (Some(_), None) => true,
            (None, Some(_)) => false,
        };
        if take_timer {
            let Some(Reverse(timer)) = self.timers.pop() else {
                return;
            };
            self.now = self.now.max(timer.at);
            let i = timer.node;
            if self.nodes[i].incarnation != timer.incarnation || !self.nodes[i].is_up() {
                return;
            }
            touched.push(i);
            match timer.kind {
                TimerKind::Tick => {
                    self.note(&[20, self.now, i as u64]);
                    self.nodes[i].tick(self.now);
                    let next = self.now + self.tick_every[i];
                    self.schedule(next, i, TimerKind::Tick);
                }
                TimerKind::WritesDone => {
                    let crash = if self.rng.chance(self.plan.p_crash_in_ready) {
                        Some(if self.rng.chance(0.5) {
                            CrashPoint::BeforeWrite
                        } else {
                            CrashPoint::AfterWrite
                        })
                    } else {
                        None
                    };
                    self.note(&[21, self.now, i as u64, crash.map_or(0, |c| c as u64 + 1)]);
                    self.nodes[i].writes_done(self.now, crash);
                    if crash.is_some() {
                        self.stats.crashes += 1;
                        self.stats.crashes_in_ready += 1;
                    }
                }
            }
        } else {
            let Some((at, m)) = self.network.pop() else {
                return;
            };
            self.now = self.now.max(at);
            let (from, to) = (m.from as usize - 1, m.to as usize - 1);
            let arrives = self.network.link_up(from, to) && self.nodes[to].is_up();
            self.note(&[
                23,
                self.now,
                m.from,
                m.to,
                m.get_msg_type() as u64,
                m.term,
                m.index,
                m.log_term,
                m.commit,
                m.entries.len() as u64,
                u64::from(m.reject),
                u64::from(arrives),
            ]);
            if arrives {
                self.stats.messages_delivered += 1;
                if is_snapshot(&m) {
                    self.stats.snapshots_installed += 1;
                }
                self.nodes[to].deliver(m, self.now);
                touched.push(to);
            } else {
                self.stats.messages_lost += 1;
            }
        }
    }

    /// After a step: the touched nodes' messages go out and their Readies are
    /// scheduled; the checks read what they did and hold.
    fn settle(&mut self, touched: &[usize]) -> Result<(), String> {
        let mut touched = touched.to_vec();
        touched.sort_unstable();
        touched.dedup();
        let max_term = self.nodes.iter().map(SimNode::term).max().unwrap_or(0);
        for node in &self.nodes {
            if let Some(term) = node.leading() {
                self.checker.leader(term, node.id)?;
            }
        }
        for &i in &touched {
            for m in std::mem::take(&mut self.nodes[i].outbox) {
                if let Sent::Lost = self.network.send(m, self.now, &mut self.rng) {
                    self.stats.messages_lost += 1;
                }
            }
            let mut due = std::mem::take(&mut self.nodes[i].writes_due);
            due.dedup();
            for at in due {
                self.schedule(at, i, TimerKind::WritesDone);
            }
            let id = self.nodes[i].id;
            for seen in std::mem::take(&mut self.nodes[i].seen) {
                match seen {
                    Seen::Applied {
                        index,
                        term,
                        data,
                        outcome,
                    } => {
                        if let Applied::Duplicate(_) = outcome {
                            self.stats.duplicates_skipped += 1;
                        }
                        self.checker
                            .applied(id, index, term, data, outcome, max_term)?;
                    }
                    Seen::Restored => self.note(&[30, i as u64]),
                    Seen::Answered(c) => {
                        self.stats.answered += 1;
                        self.acked.insert((c.origin, c.id));
                    }
                }
            }
            self.views[i] = self.nodes[i].log_view();
            if let Some(r) = self.nodes[i].running() {
                let committed = r.group.node.raft.raft_log.committed;
                for index in self.commit_seen[i] + 1..=committed {
                    if let Some((term, data)) = self.views[i].get(index) {
                        self.checker.committed(id, index, term, data, max_term)?;
                    }
                }
                self.commit_seen[i] = self.commit_seen[i].max(committed);
                self.checker.state_machine(id, r.sm.chain())?;
            }
            self.nodes[i].needed_held()?;
            for j in 0..self.nodes.len() {
                if j != i {
                    log_matching(id, &self.views[i], self.nodes[j].id, &self.views[j])?;
                }
            }
        }
        for i in 0..self.nodes.len() {
            if let Some(term) = self.nodes[i].leading() {
                let id = self.nodes[i].id;
                self.checker.leader_complete(id, term, &self.views[i])?;
            }
        }
        self.stats.leaders = self.checker.terms_led() as u64;
        Ok(())
    }

    /// The end of a run: every link healed, every node up, no more loss; then the
    /// group must settle within `within` simulated ms: one leader, every node applied
    /// all of its log, every command answered "committed" applied everywhere, equal
    /// state machines.
    pub(super) fn settle_down(&mut self, within: Millis) -> Result<(), String> {
        self.network.heal_all();
        self.network.weather = Weather::calm(self.plan.weather.max_delay);
        self.plan.p_crash_in_ready = 0.0;
        for i in 0..self.nodes.len() {
            if !self.nodes[i].is_up() {
                self.start(i);
                self.settle(&[i])?;
            }
        }
        let deadline = self.now + within;
        while self.now <= deadline {
            self.step += 1;
            self.stats.steps = self.step;
            let mut touched = Vec::new();
            self.next_event(&mut touched);
            self.settle(&touched)?;
            if self.converged() {
                return self.agree();
            }
        }
        Err(format!(
            "liveness: the group did not settle within {within} ms after healing and restarting everything: {}",
            self.describe()
        ))
    }

    fn converged(&self) -> bool {
        let Some(leader) = self
            .nodes
            .iter()
            .filter_map(|n| n.running())
            .find(|r| r.group.node.raft.state == raft::StateRole::Leader)
        else {
            return false;
        };
        let last = leader.group.node.raft.raft_log.last_index();
        leader.group.node.raft.raft_log.committed == last
            && self.nodes.iter().all(|n| {
                n.running().is_some_and(|r| {
                    r.sm.applied_index() == last
                        && r.group.node.raft.leader_id == leader.group.node.raft.id
                })
            })
    }

    /// Every node holds the same state, with every command answered "committed".
    fn agree(&mut self) -> Result<(), String> {
        let sms: Vec<_> = self
            .nodes
            .iter()
            .filter_map(|n| n.running())
            .map(|r| &r.sm)
            .collect();
        let first = sms[0];
        for (k, sm) in sms.iter().enumerate() {
            if sm.chain() != first.chain() || sm.map() != first.map() {
                return Err(format!(
                    "liveness: node {} and node 1 settled with different state machines ({} and {} commands)",
                    k + 1,
                    sm.chain().len(),
                    first.chain().len()
                ));
            }
        }
        for (origin, id) in &self.acked {
            if !first.has(*origin, *id) {
                return Err(format!(
                    "liveness: command ({origin}, {id:x}) was answered committed but is not applied"
                ));
            }
        }
        let (applied, last) = (first.applied_index(), first.chain().last().copied());
        self.note(&[40, applied, last.unwrap_or(0)]);
        Ok(())
    }

    /// What the run did, with the hash of its trace so far.
    pub(super) fn stats(&self) -> Stats {
        Stats {
            trace: self.trace.finish(),
            snapshots_taken: self.nodes.iter().map(|n| n.snapshots_taken).sum(),
            lost_unsynced: self.nodes.iter().map(|n| n.lost_unsynced).sum(),
            ..self.stats.clone()
        }
    }

    /// The nodes' state in a line (for a failure's message).
    fn describe(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| match n.running() {
                None => format!("n{}: down", n.id),
                Some(r) => format!(
                    "n{}: {:?} term {} leader {} last {} commit {} applied {}",
                    n.id,
                    r.group.node.raft.state,
                    r.group.node.raft.term,
                    r.group.node.raft.leader_id,
                    r.group.node.raft.raft_log.last_index(),
                    r.group.node.raft.raft_log.committed,
                    r.sm.applied_index()
                ),
            })
            .collect();
        format!(
            "{}; {} messages in flight, {} links cut",
            nodes.join("; "),
            self.network.in_flight(),
            self.network.cut_links()
        )
    }
}
