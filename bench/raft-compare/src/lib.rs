//! What both harnesses share: reading the process's CPU time and resident memory, the
//! group counts from the command line, one child process per count (so that each
//! count's memory starts from a fresh process), and the report line.

use std::time::Duration;

/// Three nodes, each a voter of every group.
pub const NODES: u64 = 3;
/// How long the idle measurement runs: 10 s, or RAFT_COMPARE_IDLE_S seconds.
pub fn idle() -> Duration {
    let s = std::env::var("RAFT_COMPARE_IDLE_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    Duration::from_secs(s)
}
/// How long each busy-group measurement runs.
pub const BUSY: Duration = Duration::from_secs(3);
/// Proposals in flight in the pipelined busy measurement.
pub const PIPELINE: usize = 64;
/// Payload of one proposal.
pub const PAYLOAD: usize = 64;
/// Give up waiting for leaders after this long.
pub const ELECTION_LIMIT: Duration = Duration::from_secs(120);

/// CPU seconds this process has used (user + system), from /proc/self/stat.
pub fn cpu_seconds() -> f64 {
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
    // The clock tick is 100 Hz on Linux (sysconf(_SC_CLK_TCK)).
    (ticks(11) + ticks(12)) / 100.0
}

/// Resident set size in KiB, from /proc/self/status (VmRSS).
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// What one run of one group count measured.
#[derive(Default, Debug)]
pub struct Report {
    pub lib: &'static str,
    pub groups: usize,
    /// Seconds to create the 3 x G group members.
    pub create_s: f64,
    /// Seconds from the first campaign (raft-rs) / initialize (openraft) until every group has a leader.
    pub elect_s: f64,
    /// Groups that had a leader when the election wait ended (all, unless it timed out).
    pub led: usize,
    /// RSS before creating anything, after the groups have leaders, after the idle period.
    pub rss_base_kib: u64,
    pub rss_elected_kib: u64,
    pub rss_idle_kib: u64,
    /// Live heap (glibc mallinfo2: allocated, touched or not) after the groups have leaders.
    pub heap_elected_kib: u64,
    /// Raft messages per second while idle (requests and responses both count).
    pub idle_msgs_s: f64,
    /// Heartbeats (leader to follower, requests only) per second while idle.
    pub idle_hb_s: f64,
    /// Vote requests sent during the idle period (should be 0: no elections while idle).
    pub idle_votes: u64,
    /// Process CPU seconds per wall second while idle, in % of one core.
    pub idle_cpu_pct: f64,
    /// Tasks alive in the tokio runtime (openraft only).
    pub tasks: Option<usize>,
    /// Appends per second committed by one busy group, one proposal at a time.
    pub seq_appends_s: f64,
    /// Same with PIPELINE proposals in flight.
    pub pipe_appends_s: f64,
    /// Process CPU % of a core during the sequential busy run.
    pub busy_cpu_pct: f64,
}

impl Report {
    pub fn print(&self) {
        let per_group =
            (self.rss_elected_kib.saturating_sub(self.rss_base_kib)) as f64 / self.groups as f64;
        println!(
            "{lib:<8} G={g:<6} create {create:>6.2} s  elect {elect:>6.2} s{unled} | idle: {msgs:>8.0} msgs/s ({hb:>7.0} hb/s, {votes} votes) CPU {cpu:>6.1} %  RSS {rss:>7.1} MiB ({pg:>6.1} KiB/group, after idle {rss2:.1} MiB) heap {heap:.1} MiB ({hpg:.1} KiB/group){tasks} | busy: {seq:>7.0} appends/s seq (CPU {bcpu:.0} %), {pipe:>7.0} appends/s with {p} in flight",
            lib = self.lib,
            g = self.groups,
            create = self.create_s,
            elect = self.elect_s,
            unled = if self.led < self.groups {
                format!(" (only {} groups led: gave up)", self.led)
            } else {
                String::new()
            },
            msgs = self.idle_msgs_s,
            hb = self.idle_hb_s,
            votes = self.idle_votes,
            cpu = self.idle_cpu_pct,
            rss = self.rss_elected_kib as f64 / 1024.0,
            pg = per_group,
            rss2 = self.rss_idle_kib as f64 / 1024.0,
            heap = self.heap_elected_kib as f64 / 1024.0,
            hpg = self.heap_elected_kib as f64 / self.groups as f64,
            tasks = self
                .tasks
                .map(|t| format!(", {t} tasks"))
                .unwrap_or_default(),
            seq = self.seq_appends_s,
            bcpu = self.busy_cpu_pct,
            pipe = self.pipe_appends_s,
            p = PIPELINE,
        );
    }
}

/// Group counts from the command line (default 1, 1000, 10000).
pub fn counts() -> Vec<usize> {
    let counts: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if counts.is_empty() {
        vec![1, 1_000, 10_000]
    } else {
        counts
    }
}

const CHILD: &str = "RAFT_COMPARE_GROUPS";

/// Runs `run` for each group count, each in a fresh child process of this same program
/// (the RSS of one count must not carry the heap of the one before).
pub fn each_count_in_a_child(run: impl Fn(usize) -> Report) {
    if let Ok(g) = std::env::var(CHILD) {
        let g: usize = g.parse().expect("a group count");
        run(g).print();
        return;
    }
    let exe = std::env::current_exe().expect("this program");
    for g in counts() {
        let status = std::process::Command::new(&exe)
            .env(CHILD, g.to_string())
            .status()
            .expect("run a child");
        if !status.success() {
            println!("G={g}: the child failed ({status})");
        }
    }
}

#[repr(C)]
#[derive(Default)]
struct MallInfo2 {
    arena: usize,
    ordblks: usize,
    smblks: usize,
    hblks: usize,
    hblkhd: usize,
    usmblks: usize,
    fsmblks: usize,
    uordblks: usize,
    fordblks: usize,
    keepcost: usize,
}

extern "C" {
    fn mallinfo2() -> MallInfo2;
}

/// Bytes the allocator (glibc malloc) has handed out and not had back: the live heap.
pub fn heap_in_use_kib() -> u64 {
    // SAFETY: mallinfo2 only reads the allocator's counters (glibc 2.33 and later).
    let m = unsafe { mallinfo2() };
    ((m.uordblks + m.hblkhd) / 1024) as u64
}
