//! [`StoreOptions`]: the tuning a store is opened with. Read by `open.rs` (page
//! cache, verification) and by the writer (group limits, flush interval, quick
//! repair); it depends on nothing else in the crate.

use std::time::Duration;

/// Tuning of a [`Store`](crate::Store). `StoreOptions::default()` suits a broker
/// node; change fields on the default value.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreOptions {
    /// Bytes of redb page cache (read cache and write buffer together). Default
    /// 32 MiB: queue bodies are read back about once, in the order they were
    /// written, so a larger cache mostly holds pages nobody reads again.
    pub cache_size: usize,
    /// Most ops in one group commit (a larger single batch still commits alone).
    /// Default 50 000.
    pub max_group_ops: usize,
    /// Most bytes of keys and values in one group commit. Default 16 MiB.
    pub max_group_bytes: usize,
    /// Longest time a non-durable commit waits for an fsync. Default 1 s.
    pub flush_interval: Duration,
    /// redb quick repair: each durable commit also saves the allocator state
    /// (and uses two-phase commit, two fsyncs), so that opening after a crash
    /// does not walk and checksum the whole file. Default off
    /// (docs/2026-12-05-quick-repair-off.md).
    ///
    /// Measured here (`examples/commit_bench.rs`, `examples/recovery_bench.rs`):
    /// it costs a lone synchronous submitter about 40 % (2.6 k vs 4.6 k durable
    /// commits/s), and a mirrored queue, whose every Raft ready is a commit on
    /// three nodes, its latency at 5 000 msg/s (p50 5.5 ms on, 3.7 ms off); after
    /// kill -9 with 1 M stored messages (2.1 GiB file) the store opens in
    /// milliseconds instead of about 2.5 s with a warm page cache (more from a cold
    /// disk, growing with the file).
    pub quick_repair: bool,
    /// Verify the checksum of every page when opening, not only after a crash.
    /// Reads the whole file. Default off: redb trusts a cleanly closed file, and
    /// a file damaged behind its back is still reported as
    /// [`OpenError::Corrupt`](crate::OpenError::Corrupt) when redb trips over it.
    pub verify_on_open: bool,
    /// Make small durable groups durable through the journal beside the data file
    /// (one appended record and one `fdatasync`) instead of a durable redb commit
    /// (`journal.rs`). Default on: a lone durable write of 1 KiB here takes about
    /// 7 000 journal syncs/s against about 2 000 durable redb commits/s
    /// (docs/2026-12-06-store-journal.md). Off, the writer does not write the
    /// journal; a journal left by an earlier run is still applied at open.
    pub journal: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_size: 32 * 1024 * 1024,
            max_group_ops: 50_000,
            max_group_bytes: 16 * 1024 * 1024,
            flush_interval: Duration::from_secs(1),
            quick_repair: false,
            verify_on_open: false,
            journal: true,
        }
    }
}
