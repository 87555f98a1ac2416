//! A seeded, deterministic simulation of the metadata Raft group.
//!
//! **What it models.** N members (3 or 5 voters, sometimes a learner) running the
//! production Raft configuration (`replica::raft_config`: pre-vote, check-quorum,
//! elections after 10 ticks, heartbeats every 2) on raft-rs's `RawNode`, each over a
//! disk of its own ([`storage`]) and a state machine modelling the metadata
//! ([`state_machine`]: the commands applied, in order, and the map they change,
//! through the real replica's `Recent` filter so that a command in the log twice is
//! applied once). A node handles a Ready as the real replica does (disk first, then
//! the messages that need it, then apply, then advance). Clients propose at random
//! nodes, which hand proposals to Raft when a leader is known and again after a term
//! change or a silence ([`client`]). The network delays, reorders, loses and duplicates
//! messages and cuts links one way or both ([`network`]). Nodes crash (losing all but
//! their disk, sometimes in the middle of a Ready: a leader's messages sent but its
//! entries not written, or the Ready written but its messages not sent) and restart
//! from their disk. Nodes compact their logs behind a snapshot of their state machine,
//! so that a follower far behind, or restarted, gets the leader's snapshot. Everything
//! runs in one thread on a logical clock ([`world`]), driven by one generator seeded
//! from the run's seed ([`rng`]); raft-rs's own election timeouts (from
//! `thread_rng`) are overwritten by seeded ones. The same seed gives the same run.
//!
//! After every step the safety invariants are checked ([`invariants`]: election
//! safety, log matching, leader completeness, state-machine safety). At the end of a
//! run every link is healed, every node restarted and the loss stopped; within a
//! bounded simulated time the group must have a leader, every node must have applied
//! its whole log, every command answered "committed" must be applied everywhere, and
//! the state machines must be equal.
//!
//! **What it does not model.** Membership changes (the members are fixed from the
//! start; the real group grows from one node by conf changes), RAM nodes' fresh
//! incarnations (the learner keeps its disk like a voter), read-index catch-up
//! (`barrier`), disk faults (a write either happens whole or the crash comes before
//! it; nothing is torn or corrupted), the actor runtime, transport batching and the
//! encoding of messages. The commit index a LightReady announces is written durably
//! here (the real replica writes it without fsync; Raft does not need it durable).
//!
//! **Running it.** `cargo test -p warren-cluster simulation` runs
//! `simulation_holds_for_many_seeds` (300 seeds, 10 000 steps each, on every core).
//! A failure prints `metadata simulation failed: seed=NNN step=MMM: <what broke>`;
//! `WARREN_SIM_SEED=NNN` runs exactly that seed again (the same run, step for step),
//! `WARREN_SIM_SEEDS=N` and `WARREN_SIM_STEPS=N` change the number of seeds and the
//! steps of each run, `WARREN_SIM_FIRST_SEED=N` the first seed.
//! `scripts/simulate-metadata [SEEDS]` runs many more seeds in a release build.

mod client;
mod invariants;
mod network;
mod node;
mod rng;
mod state_machine;
mod storage;
mod world;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use world::{Sabotage, Stats, World};

/// Seeds a run of the test covers by default.
const SEEDS: u64 = 300;
/// Steps of each run by default (before the settling at the end).
const STEPS: u64 = 10_000;
/// How long (simulated ms) the group has to settle at the end of a run.
const SETTLE_WITHIN: u64 = 60_000;

/// Why a run failed.
#[derive(Debug)]
struct Failure {
    seed: u64,
    step: u64,
    what: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "metadata simulation failed: seed={} step={}: {}",
            self.seed, self.step, self.what
        )
    }
}

/// Runs seed `seed` for `steps` steps and the settling; what it did, or why it failed
/// (a broken invariant, or a panic in Raft or in the simulation).
fn run(seed: u64, steps: u64, sabotage: Sabotage) -> Result<Stats, Failure> {
    let mut world = World::new(seed, sabotage);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        for _ in 0..steps {
            world.step()?;
        }
        world.settle_down(SETTLE_WITHIN)
    }));
    let what = match outcome {
        Ok(Ok(())) => return Ok(world.stats()),
        Ok(Err(what)) => what,
        Err(panic) => {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            format!("panicked: {text}")
        }
    };
    Err(Failure {
        seed,
        step: world.step,
        what: format!("{what} (plan: {:?})", world.plan),
    })
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value}: not a number")),
    )
}

/// Runs `seeds` on every core; their results in seed order.
fn run_all(seeds: &[u64], steps: u64, sabotage: Sabotage) -> Vec<Result<Stats, Failure>> {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(seeds.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(seed) = seeds.get(k) else { break };
                let result = run(*seed, steps, sabotage);
                results.lock().unwrap().push((k, result));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(k, _)| *k);
    results.into_iter().map(|(_, r)| r).collect()
}

#[test]
fn simulation_holds_for_many_seeds() {
    let steps = env_u64("WARREN_SIM_STEPS").unwrap_or(STEPS);
    let seeds: Vec<u64> = match env_u64("WARREN_SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let first = env_u64("WARREN_SIM_FIRST_SEED").unwrap_or(1);
            let count = env_u64("WARREN_SIM_SEEDS").unwrap_or(SEEDS);
            (first..first + count).collect()
        }
    };
    let started = Instant::now();
    let results = run_all(&seeds, steps, Sabotage::None);
    let mut total = Stats::default();
    let mut failures = Vec::new();
    for result in results {
        match result {
            Ok(s) => {
                total.steps += s.steps;
                total.proposed += s.proposed;
                total.answered += s.answered;
                total.duplicates_skipped += s.duplicates_skipped;
                total.snapshots_installed += s.snapshots_installed;
                total.compactions += s.compactions;
                total.crashes += s.crashes;
                total.crashes_in_ready += s.crashes_in_ready;
                total.partitions += s.partitions;
                total.leaders += s.leaders;
                total.messages_lost += s.messages_lost;
                total.messages_delivered += s.messages_delivered;
                // One hash over every run's trace, in seed order: two machines that
                // ran the same seeds print the same.
                total.trace = rng::Fnv::default().u64(total.trace).u64(s.trace).finish();
            }
            Err(f) => failures.push(f),
        }
    }
    let passed = seeds.len() - failures.len();
    println!(
        "metadata simulation: {passed} of {} seeds passed ({steps} steps each) in {:.1} s",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
    println!("metadata simulation: over the passing runs (trace: their traces' hash): {total:?}");
    for f in failures.iter().take(20) {
        println!("{f}");
        println!(
            "  rerun it: WARREN_SIM_SEED={} cargo test -p warren-cluster simulation_holds_for_many_seeds -- --nocapture",
            f.seed
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} seeds failed; the first: {}",
        failures.len(),
        seeds.len(),
        failures[0]
    );
    if seeds.len() >= 100 && steps >= STEPS {
        // The runs reach what they are for (nothing here holds vacuously).
        for (what, n) in [
            ("snapshots installed", total.snapshots_installed),
            ("duplicate entries skipped", total.duplicates_skipped),
            ("crashes", total.crashes),
            ("crashes in the middle of a Ready", total.crashes_in_ready),
            ("partitions", total.partitions),
            ("commands answered committed", total.answered),
        ] {
            assert!(n > 0, "no {what} in {} runs", seeds.len());
        }
        assert!(
            total.leaders > seeds.len() as u64 * 2,
            "few elections: {total:?}"
        );
    }
}

#[test]
fn a_seed_replays_the_same_run() {
    let (a, b) = (run(7, 1_000, Sabotage::None), run(7, 1_000, Sabotage::None));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b, "the same seed, another run");
    let c = run(8, 1_000, Sabotage::None).unwrap();
    assert_ne!(a.trace, c.trace, "another seed, the same trace");
}

/// Runs seeds with `sabotage` until one fails; its failure.
fn first_failure(sabotage: Sabotage, seeds: u64, steps: u64) -> Option<Failure> {
    let seeds: Vec<u64> = (1..=seeds).collect();
    for chunk in seeds.chunks(8) {
        if let Some(f) = run_all(chunk, steps, sabotage)
            .into_iter()
            .find_map(Result::err)
        {
            return Some(f);
        }
    }
    None
}

#[test]
fn the_checks_catch_a_node_that_applies_a_command_twice() {
    let f = first_failure(Sabotage::ApplyDuplicates, 100, STEPS)
        .expect("a node that ignores the dedupe filter goes unnoticed");
    println!("caught: {f}");
    assert!(f.what.starts_with("state-machine safety"), "{f}");
}

#[test]
fn the_checks_catch_nodes_that_forget_their_votes() {
    let f = first_failure(Sabotage::ForgetVote, 300, 20_000)
        .expect("nodes that vote twice in a term go unnoticed");
    println!("caught: {f}");
    assert!(
        f.what.starts_with("election safety")
            || f.what.starts_with("log matching")
            || f.what.starts_with("leader completeness")
            || f.what.starts_with("state-machine safety"),
        "{f}"
    );
}
