//! How many durable 1 KiB message puts per second the group-commit writer
//! sustains with 1, 8 and 64 concurrent submitters, each waiting for its commit
//! (fsync) before submitting the next message, as a publisher waiting for
//! confirms one at a time would.
//!
//! ```text
//! cargo run --release -p warren-storage --example commit_bench -- [SECONDS] [DIR]
//! ```
//!
//! SECONDS per run (default 3); DIR on the disk to measure (default: a temporary
//! directory under the system temp dir). Runs in three modes: the journal (the
//! default: small groups fsynced as a record of the journal beside the file),
//! durable redb commits (journal off), and durable redb commits with quick
//! repair on. CPU is the process's (submitters and writer), per message.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use warren_storage::{Batch, Op, Store, StoreOptions};

const BODY_LEN: usize = 1024;
const INDEX_LEN: usize = 16;

/// How the store is opened.
#[derive(Clone, Copy)]
struct Mode {
    name: &'static str,
    journal: bool,
    quick_repair: bool,
}

const MODES: [Mode; 3] = [
    Mode {
        name: "journal",
        journal: true,
        quick_repair: false,
    },
    Mode {
        name: "redb",
        journal: false,
        quick_repair: false,
    },
    Mode {
        name: "redb+qr",
        journal: false,
        quick_repair: true,
    },
];

struct Run {
    submitters: usize,
    mode: Mode,
    messages: u64,
    elapsed: Duration,
    cpu: Duration,
    commits: u64,
    fsyncs: u64,
    journal_syncs: u64,
    largest_group: u64,
    latencies: Vec<Duration>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let seconds: f64 = match args.next() {
        Some(text) => text.parse()?,
        None => 3.0,
    };
    let base = args.next().map(PathBuf::from);
    let duration = Duration::from_secs_f64(seconds);
    let scratch = match &base {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    println!(
        "durable {BODY_LEN} B message puts, one message per batch, each submitter waits for its commit"
    );
    println!(
        "data dir: {}, {seconds} s per run\n",
        scratch.path().display()
    );
    println!(
        "{:>10} {:>8} {:>10} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "submitters",
        "mode",
        "msg/s",
        "cpu µs",
        "commits/s",
        "file sync",
        "jrnl sync",
        "avg group",
        "max group",
        "p50 ms",
        "p99 ms"
    );
    for mode in MODES {
        for submitters in [1usize, 8, 64] {
            let path = scratch
                .path()
                .join(format!("bench-{submitters}-{}.redb", mode.name));
            let run = run(&path, submitters, mode, duration)?;
            print_run(&run);
            std::fs::remove_file(&path)?;
            let _ = std::fs::remove_file(path.with_extension("redb.journal"));
        }
    }
    println!(
        "\none thread keeping WINDOW durable single-message batches in flight \
         (as a queue actor that does not wait), quick_repair off (the default)"
    );
    println!(
        "{:>10} {:>12} {:>10} {:>10}",
        "window", "msg/s", "commits/s", "avg group"
    );
    for window in [64usize, 1024] {
        let path = scratch.path().join(format!("pipelined-{window}.redb"));
        let (messages, commits, seconds) = pipelined(&path, window, duration)?;
        println!(
            "{:>10} {:>12.0} {:>10.0} {:>10.1}",
            window,
            messages as f64 / seconds,
            commits as f64 / seconds,
            messages as f64 / commits.max(1) as f64
        );
        std::fs::remove_file(&path)?;
    }
    Ok(())
}

fn run(
    path: &std::path::Path,
    submitters: usize,
    mode: Mode,
    duration: Duration,
) -> Result<Run, Box<dyn std::error::Error>> {
    let mut options = StoreOptions::default();
    options.quick_repair = mode.quick_repair;
    options.journal = mode.journal;
    let store = Store::open_with(path, options)?;
    let stop = Arc::new(AtomicBool::new(false));
    let before = store.stats();
    let cpu_before = process_cpu();
    let started = Instant::now();
    let workers: Vec<_> = (0..submitters)
        .map(|worker| {
            let store = store.clone();
            let stop = Arc::clone(&stop);
            thread::spawn(
                move || -> Result<Vec<Duration>, warren_storage::CommitError> {
                    let queue = worker as u64;
                    let mut latencies = Vec::new();
                    let mut seq = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let op = Op::PutMessage {
                            queue,
                            seq,
                            index: vec![0x11; INDEX_LEN],
                            body: vec![0x42; BODY_LEN],
                        };
                        let submitted = Instant::now();
                        store.submit(Batch::durable(vec![op])).wait()?;
                        latencies.push(submitted.elapsed());
                        seq += 1;
                    }
                    Ok(latencies)
                },
            )
        })
        .collect();
    thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for worker in workers {
        let worker_latencies = worker.join().map_err(|_| "a submitter thread panicked")??;
        latencies.extend(worker_latencies);
    }
    let elapsed = started.elapsed();
    let cpu = process_cpu().saturating_sub(cpu_before);
    let after = store.stats();
    store.close();
    latencies.sort_unstable();
    Ok(Run {
        submitters,
        mode,
        messages: latencies.len() as u64,
        elapsed,
        cpu,
        commits: after.commits - before.commits,
        fsyncs: after.fsyncs - before.fsyncs,
        journal_syncs: after.journal_syncs - before.journal_syncs,
        largest_group: after.largest_group,
        latencies,
    })
}

/// One thread, `window` commits outstanding: submit, and wait for the oldest
/// once the window is full.
fn pipelined(
    path: &std::path::Path,
    window: usize,
    duration: Duration,
) -> Result<(u64, u64, f64), Box<dyn std::error::Error>> {
    let store = Store::open(path)?;
    let before = store.stats();
    let started = Instant::now();
    let mut in_flight = std::collections::VecDeque::with_capacity(window);
    let mut messages = 0u64;
    while started.elapsed() < duration {
        let op = Op::PutMessage {
            queue: 1,
            seq: messages,
            index: vec![0x11; INDEX_LEN],
            body: vec![0x42; BODY_LEN],
        };
        in_flight.push_back(store.submit(Batch::durable(vec![op])));
        messages += 1;
        if in_flight.len() >= window {
            if let Some(oldest) = in_flight.pop_front() {
                oldest.wait()?;
            }
        }
    }
    for commit in in_flight {
        commit.wait()?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let commits = store.stats().commits - before.commits;
    store.close();
    Ok((messages, commits, seconds))
}

/// User and system CPU of this process so far.
fn process_cpu() -> Duration {
    // SAFETY: getrusage writes into the struct it is given and nothing else.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let micros = |time: libc::timeval| time.tv_sec as u64 * 1_000_000 + time.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() - 1) as f64 * fraction).round() as usize;
    sorted[at].as_secs_f64() * 1000.0
}

fn print_run(run: &Run) {
    let seconds = run.elapsed.as_secs_f64();
    let average_group = if run.commits == 0 {
        0.0
    } else {
        run.messages as f64 / run.commits as f64
    };
    println!(
        "{:>10} {:>8} {:>10.0} {:>8.0} {:>10.0} {:>10} {:>10} {:>10.1} {:>10} {:>10.2} {:>10.2}",
        run.submitters,
        run.mode.name,
        run.messages as f64 / seconds,
        run.cpu.as_secs_f64() * 1e6 / run.messages.max(1) as f64,
        run.commits as f64 / seconds,
        run.fsyncs,
        run.journal_syncs,
        average_group,
        run.largest_group,
        percentile(&run.latencies, 0.50),
        percentile(&run.latencies, 0.99),
    );
}
