//! A seeded, deterministic simulation of the metadata Raft group.
//!
//! **What it models.** N members (3 or 5 voters, sometimes a learner), each running
//! the production driver of the metadata group ([`crate::raft_group::RaftGroup`],
//! group 0, durable) over the production [`crate::log_store::LogStore`], with raft-rs's
//! `RawNode` in the production configuration (`replica::raft_config`: pre-vote,
//! check-quorum, elections after 10 ticks, heartbeats every 2). Each node is the
//! driver's shell as the real replica is (`replica/ready.rs`, [`node`]): readies are
//! pipelined (a ready's messages go out at once; its writes go to the disk and the
//! messages that need them wait for `persisted`), committed entries and snapshots
//! from the leader are applied to a state machine modelling the metadata
//! ([`state_machine`]: the commands applied, in order, and the map they change,
//! through the real replica's `Recent` filter so that a command in the log twice is
//! applied once), then reported with `applied`. The disk ([`storage`]) holds the
//! store's rows as the driver's `Op`s leave them (the log's records by (group, index),
//! the snapshot row); writes complete in submission order after a seeded delay of up
//! to 10 ms; a crash loses every write not completed, and the completed non-durable
//! ones not followed by a completed durable one (as redb). A node restarts as the
//! real replica does: the rows read back and decoded as `raft_log::load` decodes
//! them, `LogStore::restored`, `RawNode::new`, `RaftGroup::new`. Nodes take a snapshot
//! of their state machine (its image and the `Recent` export) every 20 to 50 applied
//! entries, when Raft wants one (`snapshot_wanted`), and at random steps, and compact
//! their log behind it keeping a tail of 0 to 8 entries; a follower far behind, or
//! restarted, gets the leader's snapshot and installs it. Clients propose at random
//! nodes, which hand proposals to Raft when a leader is known and again after a term
//! change or a silence ([`client`]). The network delays, reorders, loses and
//! duplicates messages and cuts links one way or both ([`network`]). Nodes crash
//! (losing all but their disk), sometimes with writes under way: their readies'
//! messages sent but the writes never on disk, or the writes on disk but the driver
//! never told (the messages that needed them unsent). Everything runs in one thread on
//! a logical clock ([`world`]), driven by one generator seeded from the run's seed
//! ([`rng`]); raft-rs's own election timeouts (from `thread_rng`) are overwritten by
//! seeded ones. The same seed gives the same run.
//!
//! After every step the safety invariants are checked ([`invariants`]: election
//! safety, log matching over the entries each node's `LogStore` holds (its disk's,
//! read back, while it is down), leader completeness, state-machine safety). At the
//! end of a run every link is healed, every node restarted and the loss stopped;
//! within a bounded simulated time the group must have a leader, every node must have
//! applied its whole log, every command answered "committed" must be applied
//! everywhere, and the state machines must be equal.
//!
//! **What it does not model.** Membership changes (the members are fixed from the
//! start, written in each disk's state record; the real group grows from one node by
//! conf changes, so `apply_conf_change` is wired but never called), RAM nodes
//! (non-durable groups; the learner keeps its disk like a voter), read-index catch-up
//! (`barrier`; read states are ignored), disk faults (a write completes whole or is
//! lost whole; nothing is torn or corrupted, and no write fails), a durable state
//! machine (the real broker state is on disk; here it is rebuilt from the latest
//! snapshot and the log, so a node restarts at its snapshot's index and the stored
//! applied index is not used), an applier that lags (entries are applied as soon as
//! the driver hands them over, and snapshots are taken at once), the actor runtime,
//! the group-commit writer's batching, transport batching and the encoding of
//! messages.
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
                total.snapshots_taken += s.snapshots_taken;
                total.lost_unsynced += s.lost_unsynced;
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
            ("crashes with writes under way", total.crashes_in_ready),
            ("snapshots taken", total.snapshots_taken),
            (
                "crashes that lost completed non-durable writes",
                total.lost_unsynced,
            ),
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
