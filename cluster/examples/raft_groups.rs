//! What many Raft groups cost on the node's replica: three replicas (three "nodes")
//! in this process, each on its own store, run N groups of all three besides their
//! metadata group. Reports, for N idle groups: CPU (share of one core, the three
//! nodes together), Raft messages and casts per second, memory per group; then the
//! appends per second of one busy group among them (64 proposals in flight through
//! the leader's node, each answered once applied there).
//!
//! `cargo run --release -p warren-cluster --example raft_groups -- 1 1000 10000`

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::Actor;
use serde::{Deserialize, Serialize};
use warren_actors::BoxFuture;
use warren_cluster::members::Role;
use warren_cluster::metadata::NoMetadata;
use warren_cluster::replica::{
    replica_name, Answer, GroupSpec, Machine, Replica, ReplicaArgs, ReplicaHandle, SNAPSHOT_EVERY,
};
use warren_storage::Store;

#[derive(Serialize, Deserialize)]
struct Bump;

/// A counter: the smallest machine.
struct Counter(u64);

impl Machine for Counter {
    type Command = Bump;
    type Image = u64;

    fn apply(&mut self, _: u64, _: Bump) -> BoxFuture<'_, Answer> {
        self.0 += 1;
        let n = self.0;
        Box::pin(async move { Ok(Box::new(n) as Box<dyn Any + Send>) })
    }

    fn image(&mut self) -> BoxFuture<'_, u64> {
        let n = self.0;
        Box::pin(async move { n })
    }

    fn restore(&mut self, image: u64) -> BoxFuture<'_, ()> {
        self.0 = image;
        Box::pin(async {})
    }
}

/// This process's CPU time so far (user + system), from /proc.
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn run(count: u64, round: usize) {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let names: Vec<String> = (0..3).map(|i| format!("bench{round}-{i}")).collect();
    let mut actors = Vec::new();
    for (name, dir) in names.iter().zip(&dirs) {
        let args = ReplicaArgs {
            name: name.clone(),
            role: Role::Disk,
            store: Store::open(dir.path().join("w.redb")).unwrap(),
            applier: Arc::new(NoMetadata),
            has_seeds: false,
            snapshot_every: SNAPSHOT_EVERY,
        };
        let (actor, _) = Actor::spawn(Some(replica_name(name)), Replica, args)
            .await
            .unwrap();
        actors.push(actor);
    }
    let handles: Vec<ReplicaHandle> = names
        .iter()
        .map(|n| ReplicaHandle { node: n.clone() })
        .collect();
    let rss_before = rss_kib();
    let opened = Instant::now();
    for g in 1..=count {
        for h in &handles {
            let spec = GroupSpec::new(g, format!("group {g}"), names.clone());
            h.open(spec, Counter(0)).await.unwrap();
        }
    }
    // Every group has a leader (a first entry committed through each).
    for g in 1..=count {
        handles[(g % 3) as usize]
            .propose_to(g, &Bump)
            .await
            .unwrap_or_else(|e| panic!("group {g}: {e}"));
    }
    let ready = opened.elapsed();
    let rss = rss_kib().saturating_sub(rss_before);

    // Idle.
    let window = Duration::from_secs(10);
    let stats = |hs: Vec<ReplicaHandle>| async move {
        let mut sum = (0, 0, 0);
        for h in hs {
            let s = h.stats().await.unwrap();
            sum = (sum.0 + s.messages, sum.1 + s.casts, sum.2 + s.quiet);
        }
        sum
    };
    // Settled groups go quiet; the idle cost is measured once they all are.
    let quiet_from = Instant::now();
    while stats(handles.clone()).await.2 < 3 * count as usize
        && quiet_from.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let quiet_after = quiet_from.elapsed();
    let (cpu0, s0) = (cpu(), stats(handles.clone()).await);
    tokio::time::sleep(window).await;
    let (cpu1, s1) = (cpu(), stats(handles.clone()).await);
    let secs = window.as_secs_f64();
    let core = (cpu1 - cpu0).as_secs_f64() / secs * 100.0;

    // One busy group: proposals through its leader's node.
    let leader = handles[0].view(1).await.unwrap().unwrap().leader.unwrap();
    let via = handles.iter().find(|h| h.node == leader).unwrap().clone();
    let busy = Duration::from_secs(5);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let h = via.clone();
        tasks.spawn(async move {
            let mut done = 0u64;
            while started.elapsed() < busy {
                h.propose_to(1, &Bump).await.unwrap();
                done += 1;
            }
            done
        });
    }
    let mut appends = 0;
    while let Some(done) = tasks.join_next().await {
        appends += done.unwrap();
    }
    let rate = appends as f64 / started.elapsed().as_secs_f64();
    println!(
        "{count:>6} idle groups: ready in {:>6.2} s, all quiet {:>5.2} s later ({}..{} of {}); {core:>5.1} % of a core; {:>8.0} raft messages/s in {:>6.0} casts/s; {:>6.1} KiB per group (3 replicas); busy group: {rate:>7.0} appends/s",
        ready.as_secs_f64(),
        quiet_after.as_secs_f64(),
        s0.2,
        s1.2,
        3 * count,
        (s1.0 - s0.0) as f64 / secs,
        (s1.1 - s0.1) as f64 / secs,
        rss as f64 / count as f64,
    );
    for a in actors {
        a.stop_and_wait(None, None).await.ok();
    }
}

#[tokio::main]
async fn main() {
    let counts: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let counts = if counts.is_empty() {
        vec![1, 1_000, 10_000]
    } else {
        counts
    };
    for (round, count) in counts.into_iter().enumerate() {
        run(count, round).await;
    }
}
