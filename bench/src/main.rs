//! `warren-bench`: Warren's benchmark program, a tool of its own outside the server
//! (DESIGN.md §8). It drives a Warren node through the Rust client handle, or any
//! AMQP 0-9-1 broker (Warren or RabbitMQ) through the amqprs client library or the
//! bench's own raw-frame client, and reports msg/s, latency percentiles, its own CPU
//! per message, and whether every message arrived exactly once.
//!
//! | file | concern |
//! | --- | --- |
//! | `args.rs` | the flags |
//! | `run.rs` | one run: queues, consumers and publishers, the report |
//! | `account.rs` | what every client shares: the exactly-once record, pacing, the silence limit |
//! | `message.rs` | the bench's header in every body: publisher, seq, send time |
//! | `handle.rs` | the client-handle client (`warren::client`) |
//! | `amqp.rs` | the AMQP client through amqprs (`--amqp URI`) |
//! | `confirms.rs` | publisher confirms: which delivery tags are settled, how many refused |
//! | `uri.rs` | `amqp://` URIs as RabbitMQ reads them |
//! | `raw.rs`, `raw/` | the raw-frame AMQP client (`--amqp URI --raw-frames`) |
//! | `declare.rs` | `--declarations N`: metadata throughput of a cluster |
//! | `churn.rs` | `--churn N`: connection churn |
//! | `many_queues.rs` | `--many-queues N`: declaring, idling and publishing across many queues |
//! | `delayed.rs` | `--delayed SPREAD_MS`: delayed messages, how late each arrives |
//! | `stream.rs` | `--stream-partitions N`: appends to and reads of a partitioned stream through the client handle |

mod account;
mod amqp;
mod args;
mod churn;
mod confirms;
mod declare;
mod delayed;
mod handle;
mod many_queues;
mod message;
mod raw;
mod run;
mod stream;
mod uri;

use clap::Parser;

/// mimalloc, as in the `warren` binary: the clients allocate a buffer or more per
/// message, and glibc's malloc costs more CPU per message on several threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // As the node does: the clients' fresh pages are not zeroed 2 MiB at a time.
    warren::process::without_transparent_huge_pages();
    let args = args::BenchArgs::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(run::run(args));
    if let Err(message) = result {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
    // The client handle leaves actors (the transport) running: end the process now.
    std::process::exit(0);
}
