//! How fast a node's store comes back after kill -9 with many stored messages:
//! a child process fills a store with durable 1 KiB messages and dies without
//! closing it; the parent then times opening the file (redb's crash repair) and
//! reading every index record (what a queue reads at recovery).
//!
//! ```text
//! cargo run --release -p warren-storage --example recovery_bench -- [MESSAGES] [DIR]
//! ```
//!
//! MESSAGES in total, spread over 10 queues (default 1 000 000); DIR on the disk
//! to measure (default: the system temp dir). Runs with redb quick repair on
//! and off (Warren's default).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use warren_storage::{Batch, Op, Store, StoreOptions};

const QUEUES: u64 = 10;
const BATCH: u64 = 1000;
const CHILD_EXIT: i32 = 9;

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        let path = PathBuf::from(args.get(2).ok_or("child: path")?);
        let messages: u64 = args.get(3).ok_or("child: messages")?.parse()?;
        let quick_repair: bool = args.get(4).ok_or("child: quick_repair")?.parse()?;
        return fill_and_die(&path, messages, quick_repair);
    }
    let messages: u64 = match args.get(1) {
        Some(text) => text.parse()?,
        None => 1_000_000,
    };
    let scratch = match args.get(2) {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    println!("{messages} durable 1 KiB messages in {QUEUES} queues, writer killed without close\n");
    println!(
        "{:>12} {:>10} {:>10} {:>14} {:>14} {:>12}",
        "quick_repair", "file MiB", "fill s", "open after kill", "index scan s", "index/s"
    );
    for quick_repair in [true, false] {
        let path = scratch.path().join(format!("recovery-{quick_repair}.redb"));
        let filled = Instant::now();
        let status = Command::new(std::env::current_exe()?)
            .arg("--child")
            .arg(&path)
            .arg(messages.to_string())
            .arg(quick_repair.to_string())
            .status()?;
        if status.code() != Some(CHILD_EXIT) {
            return Err(format!("the child did not reach its crash: {status}").into());
        }
        let fill_seconds = filled.elapsed().as_secs_f64();
        let size = std::fs::metadata(&path)?.len() as f64 / (1024.0 * 1024.0);

        let mut options = StoreOptions::default();
        options.quick_repair = quick_repair;
        let opened = Instant::now();
        let store = Store::open_with(&path, options)?;
        let open_seconds = opened.elapsed().as_secs_f64();

        let scanned = Instant::now();
        let mut records = 0u64;
        for queue in store.queues_with_messages()? {
            store.for_each_index(queue, |_, _| records += 1)?;
        }
        let scan_seconds = scanned.elapsed().as_secs_f64();
        if records != messages {
            return Err(format!("found {records} index records, stored {messages}").into());
        }
        println!(
            "{:>12} {:>10.0} {:>10.1} {:>13.2}s {:>14.2} {:>12.0}",
            quick_repair,
            size,
            fill_seconds,
            open_seconds,
            scan_seconds,
            records as f64 / scan_seconds
        );
        store.close();
        std::fs::remove_file(&path)?;
    }
    Ok(())
}

/// Stores `messages` durable messages, then exits without closing the store.
fn fill_and_die(path: &Path, messages: u64, quick_repair: bool) -> Result<(), Error> {
    let mut options = StoreOptions::default();
    options.quick_repair = quick_repair;
    let store = Store::open_with(path, options)?;
    let mut in_flight = std::collections::VecDeque::new();
    let mut next = 0u64;
    while next < messages {
        let ops = (next..messages.min(next + BATCH))
            .map(|n| Op::PutMessage {
                queue: n % QUEUES + 1,
                seq: n / QUEUES,
                index: n.to_le_bytes().to_vec(),
                body: vec![0x42; 1024],
            })
            .collect::<Vec<_>>();
        next += ops.len() as u64;
        in_flight.push_back(store.submit(Batch::durable(ops)));
        if in_flight.len() >= 8 {
            if let Some(oldest) = in_flight.pop_front() {
                oldest.wait()?;
            }
        }
    }
    for commit in in_flight {
        commit.wait()?;
    }
    // Like kill -9: no close, no destructors.
    std::process::exit(CHILD_EXIT);
}
