//! The group-commit writer: one OS thread that owns every write transaction.
//!
//! redb allows one write transaction at a time and a durable commit blocks on
//! fsync (about 1–4 k commits/s on ordinary disks). So callers do not write:
//! they send [`Request`]s down one channel, and this thread
//!
//! 1. blocks for the first request,
//! 2. drains whatever else is already queued, up to
//!    [`StoreOptions::max_group_ops`] ops or [`StoreOptions::max_group_bytes`]
//!    bytes (the request that does not fit waits for the next group),
//! 3. writes a small group as one record to the journal (`journal.rs`),
//!    fsynced if any batch in the group asked for durability, and holds its ops
//!    back (at most [`APPLY_AFTER`] or [`APPLY_BYTES`]) to apply them with the
//!    groups after it, in arrival order, in ONE write transaction committed
//!    without fsync ([`Durability::None`]), except appends to partition logs,
//!    held for the checkpoint so that they reach redb as runs (`held.rs`); a
//!    durable group of more than [`JOURNAL_GROUP_MAX`] bytes, not counting small
//!    appends (or one that would take the journal past
//!    [`JOURNAL_MAX`]) skips the journal and is committed durably
//!    ([`Durability::Immediate`], redb's fsync), which also empties the journal,
//! 4. answers every request of the group with the same result.
//!
//! One fsync therefore serves every caller that queued while the previous fsync
//! ran: the busier the store, the bigger the groups. A lone small write costs
//! one appended record and one `fdatasync`, not the ten or so pages of a durable
//! redb commit. A store opened without a journal ([`StoreOptions::journal`] off)
//! commits every group to redb, durably if any batch asked for it.
//!
//! # Non-durable commits and crashes
//!
//! A [`Durability::None`] commit is visible to reads at once but is written
//! without fsync and is not part of the file's durable state: after a crash
//! (kill -9, power loss) the file opens at the last durable commit, consistent,
//! without the non-durable commits after it. Opening then applies the journal's
//! records on top, which brings back every group whose record was fsynced (and
//! every group before it, durable or not). Without the journal, non-durable
//! commits become durable with the next durable commit. Either way, so that
//! they are not left hanging, the writer makes a durable commit of the data file
//! (an empty transaction, if it has to) at most [`StoreOptions::flush_interval`]
//! after the first of them, and when the store closes. redb also cannot reuse
//! pages freed by non-durable commits until a durable one, another reason to
//! bound the interval.
//!
//! # Checkpoints
//!
//! With a journal, the durable commit of the data file that makes the journaled
//! groups durable there (a checkpoint) is due once a flush interval passed since
//! the first commit without fsync, or [`FLUSH_BYTES`] were committed without
//! fsync, or once the held appends reach [`crate::held::HELD_MAX`] or waited a
//! flush interval. The writer starts it after answering the group that found it
//! due: it moves the journal on to its other file and hands what it holds back to
//! a thread of its own (`warren-store-checkpoint`), which applies it in a durable
//! transaction that advances the data file's journal epoch, and commits it. It
//! goes on journaling and answering groups meanwhile, holding them back from redb
//! until the checkpoint is done (it looks every [`CHECKPOINT_POLL`]). A read, a
//! group that commits to the data file directly, compaction and shutdown wait for
//! the checkpoint first; only one runs at a time (`journal.rs` says why that keeps
//! a crash safe).
//!
//! # Failures
//!
//! If a commit fails, every request of the group gets the [`CommitError`] and
//! the writer carries on with the next group. redb refuses write transactions
//! after a failed commit until the file is reopened, so in practice the later
//! groups fail too, with an error that names the first failure; the node must
//! restart, and redb repairs the file on open.
//!
//! # Fault injection for crash tests
//!
//! With [`FAULT_ABORT_IN_COMMIT_ENV`] (`WARREN_FAULT_ABORT_IN_COMMIT`) set to `N`
//! when the writer starts, the writer kills its own process with
//! [`std::process::abort`] in the middle of its `N`-th durable commit that writes
//! something (counted from 1 since the writer started; the empty commits that
//! only flush earlier non-durable ones are not counted): after the first half of
//! the group's ops (at least one) went into the write transaction, before the
//! rest and before `commit()`; for a group that goes through the journal, after
//! the first half of its record's bytes went into the journal. An abort is as abrupt as kill -9 (no destructors,
//! no flush, no final commit), so a test gets the file a crash during a group
//! commit leaves behind, at a point it chooses: `tests/mirrored_crash.rs` kills a
//! replica of a mirrored queue that way and checks that it catches up from the
//! others. Unset, the hook costs one branch per commit on a value read once. It
//! is a hook for tests only: a node started with it says so at start, and logs an
//! error before it aborts, so that whoever set it by mistake sees why the node
//! died.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use redb::{CompactionError, Durability, WriteTransaction};
use tokio::sync::oneshot;

use crate::apply::GroupTables;
use crate::batch::{Batch, Op};
use crate::error::{CommitError, CompactError};
use crate::held::Held;
use crate::journal::{Journal, HEADER_LEN};
use crate::options::StoreOptions;
use crate::runs;
use crate::shared::Shared;
use crate::tables::{FORMAT, JOURNAL_EPOCH_KEY, NEXT_ID_KEY};

/// The environment variable of the fault-injection hook (see the module doc):
/// the writer aborts the process in the middle of its N-th durable commit.
/// For tests only.
pub const FAULT_ABORT_IN_COMMIT_ENV: &str = "WARREN_FAULT_ABORT_IN_COMMIT";

/// A durable group carrying more bytes than this commits to the data file
/// durably instead of going through the journal: its pages are mostly its own
/// data, so writing it twice would cost more than the fsync of redb's few extra
/// pages.
pub(crate) const JOURNAL_GROUP_MAX: usize = 1024 * 1024;

/// The journal's size: a group that would take it past this commits to the data
/// file durably instead, which empties the journal.
pub(crate) const JOURNAL_MAX: u64 = 64 * 1024 * 1024;

/// How long a journaled group may wait to be applied to redb, so that the groups
/// of a slow, steady writer (one confirmed message at a time) share one redb
/// commit. A read applies them at once (see [`Request::Apply`]).
pub(crate) const APPLY_AFTER: Duration = Duration::from_millis(10);

/// Bytes of journaled ops held back from redb that make the writer apply them
/// without waiting for [`APPLY_AFTER`].
pub(crate) const APPLY_BYTES: usize = 128 * 1024;

/// Bytes committed to redb without fsync after which a checkpoint (a durable
/// commit) is due, whatever the flush interval says. redb keeps what a commit
/// without fsync wrote in its write buffer and writes it all at the next durable
/// commit: the more it holds, the longer that commit, and the longer reads and
/// large groups wait for it.
pub(crate) const FLUSH_BYTES: usize = 1024 * 1024;

/// How often the writer looks whether a checkpoint's thread is done, while it
/// waits for requests.
const CHECKPOINT_POLL: Duration = Duration::from_millis(1);

/// redb's limit on one key or value (3 GiB). A larger one is refused before it
/// joins a shared transaction, so that it fails alone.
pub(crate) const MAX_VALUE_LEN: usize = 3 * 1024 * 1024 * 1024;

/// What callers send to the writer thread.
pub(crate) enum Request {
    /// Apply a batch; answer once committed.
    Write {
        batch: Batch,
        answer: oneshot::Sender<Result<(), CommitError>>,
    },
    /// Make everything committed so far durable; answer once fsynced.
    Flush {
        answer: oneshot::Sender<Result<(), CommitError>>,
    },
    /// Apply the journaled groups held back from redb, with the held appends to
    /// partition logs if `appends`; answer once a read transaction begun after the
    /// answer sees them. Sent by readers while [`Shared::unapplied`] is set (or
    /// [`Shared::unapplied_appends`], for a read of a partition).
    Apply {
        answer: oneshot::Sender<Result<(), CommitError>>,
        appends: bool,
    },
    /// Compact the file (after the writes queued before it).
    Compact {
        answer: oneshot::Sender<Result<bool, CompactError>>,
    },
    /// Finish the queued requests, make everything durable, and stop.
    Shutdown,
}

/// The limits and intervals the writer works with, taken from [`StoreOptions`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct WriterConfig {
    pub(crate) max_group_ops: usize,
    pub(crate) max_group_bytes: usize,
    pub(crate) flush_interval: Duration,
    pub(crate) quick_repair: bool,
}

impl From<&StoreOptions> for WriterConfig {
    fn from(options: &StoreOptions) -> Self {
        WriterConfig {
            max_group_ops: options.max_group_ops.max(1),
            max_group_bytes: options.max_group_bytes.max(1),
            flush_interval: options.flush_interval,
            quick_repair: options.quick_repair,
        }
    }
}

/// A request admitted to the current group.
struct Pending {
    ops: Vec<Op>,
    durable: bool,
    /// A flush request rather than a caller's batch (not counted as a batch).
    flush: bool,
    payload: usize,
    answer: oneshot::Sender<Result<(), CommitError>>,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    requests: Receiver<Request>,
    config: WriterConfig,
    /// A request taken from the channel that did not fit in the last group.
    carried: Option<Request>,
    /// The id counter value last written to the `format` table.
    persisted_next_id: u64,
    /// When the oldest commit not yet made durable was made.
    unflushed_since: Option<Instant>,
    /// Bytes of keys and values committed since the last durable commit.
    unflushed_bytes: usize,
    /// The first failed commit, named in later errors (redb refuses writes
    /// after it).
    failure: Option<String>,
    /// The fault-injection hook, when [`FAULT_ABORT_IN_COMMIT_ENV`] is set.
    abort_in_commit: Option<AbortInCommit>,
    /// The journal small groups go through (`journal.rs`); `None` when the store
    /// was opened without one.
    journal: Option<Journal>,
    /// Ops of journaled groups (durable in the journal, answered) not yet applied
    /// to redb: the next write transaction applies them first.
    deferred: Vec<Op>,
    /// Bytes of keys and values in `deferred`.
    deferred_bytes: usize,
    /// When the oldest group in `deferred` was journaled.
    deferred_since: Option<Instant>,
    /// Journaled appends to partition logs held back until the checkpoint
    /// (`held.rs`), so that a partition's chunks reach redb as runs.
    held: Held,
    /// Whether `deferred` holds an op that must follow the held appends
    /// ([`Held::must_follow`]): the next apply takes them too.
    deferred_follows_held: bool,
    /// The checkpoint whose durable commit runs on its own thread, if any.
    checkpoint: Option<Checkpoint>,
}

/// A durable commit of the data file running on its own thread, while the writer
/// goes on journaling and answering groups (`journal.rs`: checkpoints).
struct Checkpoint {
    /// The commit's outcome.
    done: Receiver<Result<(), String>>,
    thread: JoinHandle<()>,
}

/// What a checkpoint's thread applies and commits.
struct CheckpointWork {
    shared: Arc<Shared>,
    quick_repair: bool,
    /// The held appends (`held.rs`), applied first, as runs.
    held: Vec<Op>,
    /// The other journaled ops held back.
    deferred: Vec<Op>,
    /// The id counter, if it moved.
    next_id: Option<u64>,
    /// The journal's epoch the data file holds everything before, once committed.
    epoch: u64,
}

impl CheckpointWork {
    /// One durable transaction of everything held back: the checkpoint.
    fn commit(self) -> Result<(), String> {
        let guard = self
            .shared
            .db
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(db) = guard.as_ref() else {
            return Err("the store is closed".to_string());
        };
        let mut txn = db.begin_write().map_err(|err| err.to_string())?;
        txn.set_quick_repair(self.quick_repair);
        apply_group(
            &txn,
            &self.held,
            &self.deferred,
            &[],
            self.next_id,
            Some(self.epoch),
        )
        .map_err(|err| err.to_string())?;
        txn.commit().map_err(|err| err.to_string())
    }
}

/// How a group reaches the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// A record in the journal (fsynced if any batch is durable), then a redb
    /// commit without fsync.
    Journal,
    /// A redb commit, durable or not.
    File { durable: bool },
}

/// The fault-injection hook: which durable commit to abort in, and how many
/// have been made.
#[derive(Debug)]
struct AbortInCommit {
    /// The durable commit (that writes something) to abort in, from 1.
    at: u64,
    /// Such commits begun so far.
    begun: u64,
}

impl AbortInCommit {
    /// The hook as [`FAULT_ABORT_IN_COMMIT_ENV`] sets it, read once when the
    /// writer starts; `None` when unset, or set to something other than a
    /// positive number (said in the log, so that a typo does not go unnoticed).
    fn from_env(path: &Path) -> Option<AbortInCommit> {
        let value = std::env::var_os(FAULT_ABORT_IN_COMMIT_ENV)?;
        match value.to_str().and_then(|v| v.trim().parse::<u64>().ok()) {
            Some(at) if at > 0 => {
                tracing::warn!(
                    path = %path.display(),
                    "{FAULT_ABORT_IN_COMMIT_ENV}={at}: this process will abort in the middle of \
                     durable commit {at} of its store, on purpose (a fault-injection hook for \
                     tests)"
                );
                Some(AbortInCommit { at, begun: 0 })
            }
            _ => {
                tracing::error!(
                    "{FAULT_ABORT_IN_COMMIT_ENV}={value:?} ignored: the fault-injection hook \
                     takes the number (from 1) of the durable commit to abort in"
                );
                None
            }
        }
    }

    /// Counts a durable commit of `group` that is about to be applied; true if
    /// it is the one to abort in. Commits that write nothing are not counted.
    fn due(&mut self, group: &[Pending]) -> bool {
        if group.iter().all(|pending| pending.ops.is_empty()) {
            return false;
        }
        self.begun += 1;
        self.begun == self.at
    }
}

impl Writer {
    /// Starts the writer thread.
    pub(crate) fn spawn(
        shared: Arc<Shared>,
        requests: Receiver<Request>,
        config: WriterConfig,
        persisted_next_id: u64,
        journal: Option<Journal>,
    ) -> std::io::Result<JoinHandle<()>> {
        let abort_in_commit = AbortInCommit::from_env(&shared.path);
        let writer = Writer {
            shared,
            requests,
            config,
            carried: None,
            persisted_next_id,
            unflushed_since: None,
            unflushed_bytes: 0,
            failure: None,
            abort_in_commit,
            journal,
            deferred: Vec::new(),
            deferred_bytes: 0,
            deferred_since: None,
            held: Held::default(),
            deferred_follows_held: false,
            checkpoint: None,
        };
        thread::Builder::new()
            .name("warren-store-writer".to_string())
            .spawn(move || writer.run())
    }

    fn run(mut self) {
        while let Some(request) = self.next_request() {
            match request {
                Request::Shutdown => break,
                Request::Compact { answer } => {
                    let result = self.compact();
                    // The caller may have stopped waiting; nothing to do then.
                    let _ = answer.send(result);
                }
                Request::Apply { answer, appends } => {
                    let result = self.apply_deferred(appends);
                    let _ = answer.send(result);
                }
                first @ (Request::Write { .. } | Request::Flush { .. }) => {
                    let group = self.gather(first);
                    self.commit_group(group);
                }
            }
        }
        self.final_flush();
        tracing::debug!(path = %self.path().display(), "store writer stopped");
    }

    fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The next request: the carried one, else the channel. While journaled
    /// groups wait to be applied, waits no longer than [`APPLY_AFTER`] after the
    /// first of them, and applies them when it runs out; while non-durable
    /// commits are pending, no longer than the flush interval, and makes them
    /// durable when it runs out; while a checkpoint runs, no longer than
    /// [`CHECKPOINT_POLL`], and takes its outcome when it is done. `None` once
    /// every sender is gone.
    fn next_request(&mut self) -> Option<Request> {
        if let Some(request) = self.carried.take() {
            return Some(request);
        }
        loop {
            self.finish_checkpoint(false);
            let idle = self.checkpoint.is_none();
            let apply_at = self
                .deferred_since
                .filter(|_| idle)
                .map(|since| since + APPLY_AFTER);
            let flush_at = self
                .unflushed_since
                .map(|since| since + self.config.flush_interval)
                .into_iter()
                .chain(self.held.due_at(self.config.flush_interval))
                .min()
                .filter(|_| idle);
            let poll_at = (!idle).then(|| Instant::now() + CHECKPOINT_POLL);
            let Some(deadline) = apply_at.into_iter().chain(flush_at).chain(poll_at).min() else {
                return self.requests.recv().ok();
            };
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.requests.recv_timeout(wait) {
                Ok(request) => return Some(request),
                Err(RecvTimeoutError::Timeout) if !idle => {}
                Err(RecvTimeoutError::Timeout) => {
                    if self.flush_due() || self.held.due(self.config.flush_interval) {
                        self.flush_in_background();
                    } else if let Err(err) = self.apply_deferred(false) {
                        tracing::error!(error = %err, "store could not apply journaled writes");
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Takes `first` and whatever else is queued, within the group limits.
    fn gather(&mut self, first: Request) -> Vec<Pending> {
        let mut group = Vec::new();
        let mut ops = 0usize;
        let mut bytes = 0usize;
        self.admit(first, &mut group, &mut ops, &mut bytes);
        while let Ok(next) = self.requests.try_recv() {
            let fits = match &next {
                Request::Write { batch, .. } => {
                    ops + batch.ops.len() <= self.config.max_group_ops
                        && bytes + batch.payload_len() <= self.config.max_group_bytes
                }
                Request::Flush { .. } => true,
                Request::Compact { .. } | Request::Apply { .. } | Request::Shutdown => false,
            };
            if !fits {
                self.carried = Some(next);
                break;
            }
            self.admit(next, &mut group, &mut ops, &mut bytes);
        }
        group
    }

    /// Adds a write or flush request to the group; refuses at once a batch with
    /// a value redb cannot store, so that it fails alone.
    fn admit(
        &self,
        request: Request,
        group: &mut Vec<Pending>,
        ops: &mut usize,
        bytes: &mut usize,
    ) {
        match request {
            Request::Write { batch, answer } => {
                let largest = batch.ops.iter().map(Op::largest_value).max().unwrap_or(0);
                if largest > MAX_VALUE_LEN {
                    let _ = answer.send(Err(CommitError::ValueTooLarge {
                        path: self.path().to_path_buf(),
                        len: largest,
                        max: MAX_VALUE_LEN,
                    }));
                    return;
                }
                let like_run = batch.ops.iter().find_map(|op| match op {
                    Op::AppendChunk {
                        partition,
                        first,
                        chunk,
                        ..
                    } if runs::looks_like_run(chunk) => Some((*partition, *first)),
                    _ => None,
                });
                if let Some((partition, first)) = like_run {
                    let _ = answer.send(Err(CommitError::ChunkLikeRun {
                        path: self.path().to_path_buf(),
                        partition,
                        first,
                    }));
                    return;
                }
                let payload = batch.payload_len();
                *ops += batch.ops.len();
                *bytes += payload;
                group.push(Pending {
                    ops: batch.ops,
                    durable: batch.durable,
                    flush: false,
                    payload,
                    answer,
                });
            }
            Request::Flush { answer } => group.push(Pending {
                ops: Vec::new(),
                durable: true,
                flush: true,
                payload: 0,
                answer,
            }),
            // Never admitted: `gather` carries them to the next round.
            Request::Compact { .. } | Request::Apply { .. } | Request::Shutdown => {}
        }
    }

    fn commit_group(&mut self, mut group: Vec<Pending>) {
        if group.is_empty() {
            return;
        }
        let durable = group.iter().any(|pending| pending.durable);
        let result = self.commit(&mut group, durable);
        if let Err(err) = &result {
            tracing::error!(batches = group.len(), error = %err, "store commit failed");
        }
        for pending in group {
            let _ = pending.answer.send(result.clone());
        }
        // After the answers: the group that finds a durable commit of the data
        // file due does not wait for it. While a checkpoint runs, what is held
        // back waits for it.
        if self.checkpoint.is_some() {
            return;
        }
        let held_due = self.held.due(self.config.flush_interval);
        if self.journal.is_some() && (self.flush_due() || held_due) {
            self.flush_in_background();
        } else if self.deferred_bytes >= APPLY_BYTES {
            if let Err(err) = self.apply_deferred(false) {
                tracing::error!(error = %err, "store could not apply journaled writes");
            }
        }
    }

    /// Whether pending non-durable commits have waited a full flush interval, or
    /// carry [`FLUSH_BYTES`] or more.
    fn flush_due(&self) -> bool {
        self.unflushed_bytes >= FLUSH_BYTES
            || self
                .unflushed_since
                .is_some_and(|since| since.elapsed() >= self.config.flush_interval)
    }

    /// Commits the group (`durable`: some batch of it needs an fsync) and counts
    /// the outcome in the stats. An empty group makes every earlier commit
    /// durable in the data file.
    fn commit(&mut self, group: &mut [Pending], durable: bool) -> Result<(), CommitError> {
        if let Some(refused) = self.refused() {
            self.shared.stats.failed();
            return Err(refused);
        }
        let batches = group.iter().filter(|pending| !pending.flush).count() as u64;
        let ops = group.iter().map(|pending| pending.ops.len() as u64).sum();
        let bytes = group.iter().map(|pending| pending.payload as u64).sum();
        let mut route = self.route(group, durable);
        if route == Route::Journal {
            match self.journal_group(group, durable) {
                Ok(()) => {}
                Err(err) => {
                    // The record may be half written: only a durable commit of
                    // the data file (which empties the journal) is safe now.
                    tracing::error!(
                        error = %err,
                        "store journal write failed; committing to the data file instead"
                    );
                    route = Route::File { durable: true };
                }
            }
        }
        let result = match route {
            Route::Journal => {
                self.defer(group);
                Ok(())
            }
            Route::File { .. } => {
                // A checkpoint finishes first: groups commit in order. If it failed,
                // the epoch it left is not in the data file: a durable commit now
                // would move the journal past it, and lose it.
                self.finish_checkpoint(true);
                match self.refused() {
                    Some(refused) => Err(refused),
                    None => self.try_commit(group, route, true),
                }
            }
        };
        match &result {
            Ok(()) => {
                let file_durable = route == Route::File { durable: true };
                self.shared.stats.committed(
                    route != Route::Journal,
                    file_durable,
                    batches,
                    ops,
                    bytes,
                );
            }
            Err(err) => {
                self.shared.stats.failed();
                self.record_failure(err);
            }
        }
        result
    }

    /// Remembers the store's first failure: named in later errors, and with a
    /// journal the reason every later request is refused ([`Writer::refused`]).
    fn record_failure(&mut self, cause: impl std::fmt::Display) {
        if self.failure.is_none() {
            self.failure = Some(cause.to_string());
        }
    }

    /// With a journal, after a failure (a commit, a journal write and the commit
    /// that stood in for it, a checkpoint): the error every later request gets.
    /// Going on would answer groups whose records may follow a damaged one, or
    /// whose held-back predecessors redb never got; the node must restart, and
    /// opening applies the journal. Without a journal redb refuses writes by
    /// itself, with its own error.
    fn refused(&self) -> Option<CommitError> {
        self.journal.as_ref()?;
        self.failure
            .as_ref()
            .map(|_| self.storage_error("the store refuses writes until the node restarts"))
    }

    /// Holds a journaled group's ops back from redb: the next write transaction
    /// applies them first, at most [`APPLY_AFTER`] from now, or at once when a
    /// read asks. Readers see [`Shared::unapplied`] before the group's callers
    /// get their answer.
    /// Appends to partition logs are held until the checkpoint instead
    /// (`held.rs`), and readers of partitions see [`Shared::unapplied_appends`].
    fn defer(&mut self, group: &mut [Pending]) {
        for pending in group.iter_mut() {
            for op in pending.ops.drain(..) {
                if Held::holds(&op) {
                    self.held.push(op);
                } else {
                    self.deferred_follows_held |= Held::must_follow(&op);
                    self.deferred_bytes += op.payload_len();
                    self.deferred.push(op);
                }
            }
        }
        if !self.held.is_empty() {
            self.shared.unapplied_appends.store(true, Ordering::SeqCst);
        }
        if !self.deferred.is_empty() {
            self.deferred_since.get_or_insert_with(Instant::now);
            self.shared.unapplied.store(true, Ordering::SeqCst);
        }
    }

    /// Applies the journaled groups held back from redb in one commit without
    /// fsync (they are durable in the journal), with the held appends to partition
    /// logs if `appends`.
    fn apply_deferred(&mut self, appends: bool) -> Result<(), CommitError> {
        // What a running checkpoint holds becomes visible when it is done.
        self.finish_checkpoint(true);
        if let Some(refused) = self.refused() {
            // Reads get the error rather than a file without answered writes;
            // the timer tries again only after a flush interval.
            if self.deferred_since.is_some() {
                self.deferred_since = Some(Instant::now() + self.config.flush_interval);
            }
            return Err(refused);
        }
        let appends = (appends || self.deferred_follows_held) && !self.held.is_empty();
        if self.deferred_since.is_none() && !appends {
            return Ok(());
        }
        let result = self.try_commit(&[], Route::File { durable: false }, appends);
        match &result {
            Ok(()) => self.shared.stats.committed(true, false, 0, 0, 0),
            Err(err) => {
                // The ops stay durable in the journal; from here on the store
                // refuses, and the next try waits a flush interval (above).
                self.shared.stats.failed();
                self.record_failure(err);
            }
        }
        result
    }

    /// Where the group goes. Without a journal: a redb commit, durable if the
    /// group needs it or earlier non-durable commits waited long enough. With
    /// one, every commit to the data file is durable (it empties the journal);
    /// the journal takes the group unless it is empty (a flush of the data file),
    /// it is durable and large, or it would fill the journal. (A durable commit of
    /// the data file that is due comes after the group is answered.)
    fn route(&self, group: &[Pending], durable: bool) -> Route {
        let Some(journal) = &self.journal else {
            return Route::File {
                durable: durable || self.flush_due(),
            };
        };
        let payload: usize = group.iter().map(|pending| pending.payload).sum();
        // A large group goes to the data file, but not for its small appends to
        // partition logs: redb's cost for them is per chunk, and held for the
        // checkpoint they go to it as runs (`held.rs`).
        let small_appends = Held::small_appends(group.iter().flat_map(|p| &p.ops));
        let large = durable && payload - small_appends > JOURNAL_GROUP_MAX;
        let to_file = group.is_empty()
            || large
            || journal.end() + (payload + HEADER_LEN) as u64 > JOURNAL_MAX;
        if to_file {
            Route::File { durable: true }
        } else {
            Route::Journal
        }
    }

    /// Writes the group's record to the journal, fsynced if `durable`.
    fn journal_group(&mut self, group: &[Pending], durable: bool) -> Result<(), String> {
        let next_id = self.shared.next_id.load(Ordering::SeqCst);
        let Some(journal) = self.journal.as_mut() else {
            return Err("no journal".to_string());
        };
        let ops = group.iter().flat_map(|pending| &pending.ops);
        let len = journal
            .encode(next_id, ops)
            .map_err(|err| err.to_string())?;
        if durable
            && self
                .abort_in_commit
                .as_mut()
                .is_some_and(|hook| hook.due(group))
        {
            let torn = journal.append_torn();
            abort_in_journal(group, journal.path(), torn);
        }
        journal
            .append(durable)
            .map_err(|err| format!("{}: {err}", journal.path().display()))?;
        self.shared.stats.journaled(len as u64, durable);
        Ok(())
    }

    /// One write transaction holding every op of the group (and the id counter
    /// if it moved), after the ops held back (the appends too if `appends`). After a
    /// journal write it is committed without fsync; a durable commit to the data
    /// file also empties the journal, so it takes the held appends whatever
    /// `appends` says.
    fn try_commit(
        &mut self,
        group: &[Pending],
        route: Route,
        appends: bool,
    ) -> Result<(), CommitError> {
        let durable = route == Route::File { durable: true };
        let appends = appends || durable;
        let shared = Arc::clone(&self.shared);
        let guard = shared.db.read().unwrap_or_else(PoisonError::into_inner);
        let Some(db) = guard.as_ref() else {
            return Err(CommitError::Closed {
                path: self.path().to_path_buf(),
            });
        };
        let mut txn = db.begin_write().map_err(|err| self.storage_error(err))?;
        if durable {
            txn.set_quick_repair(self.config.quick_repair);
        } else {
            txn.set_durability(Durability::None)
                .map_err(|err| self.storage_error(err))?;
        }
        // Loaded after the whole group was received: every id handed out before
        // a batch of this group was submitted is covered by this value.
        let next_id = self.shared.next_id.load(Ordering::SeqCst);
        if durable
            && self
                .abort_in_commit
                .as_mut()
                .is_some_and(|hook| hook.due(group))
        {
            abort_in_commit(&txn, group, self.path());
        }
        // The journal's next epoch, when this durable commit empties it.
        let emptied = match &self.journal {
            Some(journal) if durable && journal.touched() => Some(journal.epoch() + 1),
            _ => None,
        };
        let held: &[Op] = if appends { self.held.ops() } else { &[] };
        let applied = apply_group(
            &txn,
            held,
            &self.deferred,
            group,
            (next_id != self.persisted_next_id).then_some(next_id),
            emptied,
        );
        if let Err(err) = applied {
            // Dropping the transaction rolls it back.
            drop(txn);
            return Err(self.storage_error(err));
        }
        if let Err(err) = txn.commit() {
            let wrapped = self.storage_error(&err);
            self.record_failure(err);
            return Err(wrapped);
        }
        self.persisted_next_id = next_id;
        let payload: usize = group.iter().map(|pending| pending.payload).sum();
        self.unflushed_bytes += payload + self.deferred_bytes;
        if appends && !self.held.is_empty() {
            self.unflushed_bytes += self.held.bytes();
            self.held.take();
            self.shared.unapplied_appends.store(false, Ordering::SeqCst);
        }
        if self.deferred_since.take().is_some() {
            self.deferred.clear();
            self.deferred_bytes = 0;
            self.deferred_follows_held = false;
            self.shared.unapplied.store(false, Ordering::SeqCst);
        }
        if let (Some(journal), Some(_)) = (self.journal.as_mut(), emptied) {
            // This commit holds everything journaled: nothing to fsync first, and
            // a switch without one cannot fail.
            let _ = journal.switch(false);
        }
        if durable {
            self.unflushed_since = None;
            self.unflushed_bytes = 0;
        } else if self.unflushed_since.is_none() {
            self.unflushed_since = Some(Instant::now());
        }
        Ok(())
    }

    /// Starts a checkpoint: moves the journal on to its next epoch and hands what
    /// is held back (the held appends as runs, then the other ops) to a thread of
    /// its own, which applies it in a durable transaction that also advances the
    /// data file's journal epoch, and commits it. Groups go on being journaled and
    /// answered meanwhile (`journal.rs`). Called with a journal and no checkpoint
    /// running.
    fn start_checkpoint(&mut self) {
        let Some(journal) = self.journal.as_ref() else {
            return;
        };
        let next_id = self.shared.next_id.load(Ordering::SeqCst);
        if !journal.touched()
            && self.deferred_since.is_none()
            && self.held.is_empty()
            && next_id == self.persisted_next_id
        {
            // Nothing the data file lacks that the journal does not hold: only
            // the flush timer to reset.
            self.unflushed_since = None;
            self.unflushed_bytes = 0;
            return;
        }
        if self.refused().is_some() {
            // Not in a loop: the timers wait a flush interval again.
            self.unflushed_since = Some(Instant::now());
            self.unflushed_bytes = 0;
            self.held.retry_later();
            return;
        }
        let epoch = journal.epoch() + 1;
        // Records of the epoch left that were not fsynced must be on the disk
        // before a durable record of the next can be.
        if let Some(Err(err)) = self.journal.as_mut().map(|journal| journal.switch(true)) {
            tracing::error!(error = %err, "store could not fsync its journal for a checkpoint");
            self.shared.stats.failed();
            self.record_failure(err);
            return;
        }
        let work = CheckpointWork {
            shared: Arc::clone(&self.shared),
            quick_repair: self.config.quick_repair,
            held: self.held.take(),
            deferred: std::mem::take(&mut self.deferred),
            next_id: (next_id != self.persisted_next_id).then_some(next_id),
            epoch,
        };
        let (answer, done) = mpsc::channel();
        let spawned = thread::Builder::new()
            .name("warren-store-checkpoint".to_string())
            .spawn(move || {
                let _ = answer.send(work.commit());
            });
        // Held by the checkpoint now: visible, and durable, when it is done
        // (`unapplied` and `unapplied_appends` stay set until then).
        self.deferred_bytes = 0;
        self.deferred_follows_held = false;
        self.deferred_since = None;
        self.unflushed_since = None;
        self.unflushed_bytes = 0;
        match spawned {
            Ok(thread) => {
                self.checkpoint = Some(Checkpoint { done, thread });
                self.persisted_next_id = next_id;
            }
            Err(err) => {
                // The work was dropped with the closure. The journal moved on, and
                // must not move again before the data file holds the epoch left:
                // refuse from here on (opening the file applies the journal).
                tracing::error!(error = %err, "store could not start a checkpoint thread");
                self.shared.stats.failed();
                self.record_failure(err);
            }
        }
    }

    /// Takes the outcome of the running checkpoint, if any: waiting for it with
    /// `wait`, else only if it is done.
    fn finish_checkpoint(&mut self, wait: bool) {
        let Some(checkpoint) = self.checkpoint.as_ref() else {
            return;
        };
        let outcome = if wait {
            checkpoint
                .done
                .recv()
                .map_err(|_| "the checkpoint thread stopped".to_string())
        } else {
            match checkpoint.done.try_recv() {
                Ok(outcome) => Ok(outcome),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => Err("the checkpoint thread stopped".to_string()),
            }
        };
        let Some(checkpoint) = self.checkpoint.take() else {
            return;
        };
        if checkpoint.thread.join().is_err() {
            tracing::error!("store checkpoint thread panicked");
        }
        match outcome.and_then(|committed| committed) {
            Ok(()) => self.shared.stats.committed(true, true, 0, 0, 0),
            Err(err) => {
                // redb refuses writes from now on; the journal still holds every
                // record since the data file's last durable epoch.
                tracing::error!(error = %err, "store checkpoint failed");
                self.shared.stats.failed();
                self.record_failure(err);
                // What it held is in no file redb reads: reads keep asking, and
                // get the error.
                return;
            }
        }
        if self.deferred_since.is_none() {
            self.shared.unapplied.store(false, Ordering::SeqCst);
        }
        if self.held.is_empty() {
            self.shared.unapplied_appends.store(false, Ordering::SeqCst);
        }
    }

    fn storage_error(&self, err: impl std::fmt::Display) -> CommitError {
        let cause = match &self.failure {
            Some(first) => format!("{err} (after an earlier failed commit: {first})"),
            None => err.to_string(),
        };
        CommitError::Storage {
            path: self.path().to_path_buf(),
            cause,
        }
    }

    /// A durable empty commit, for non-durable commits that waited long enough
    /// or carry [`FLUSH_BYTES`]: with a journal, a checkpoint on its own thread
    /// (unless one runs already); without, here.
    fn flush_in_background(&mut self) {
        if self.journal.is_some() {
            if self.checkpoint.is_none() {
                self.start_checkpoint();
            }
            return;
        }
        if let Err(err) = self.commit(&mut [], true) {
            tracing::error!(error = %err, "store could not make non-durable commits durable");
            // The store refuses writes now; do not retry in a loop.
            self.unflushed_since = None;
            self.unflushed_bytes = 0;
        }
    }

    /// On shutdown: make non-durable commits and the id counter durable.
    fn final_flush(&mut self) {
        self.finish_checkpoint(true);
        let id_moved = self.shared.next_id.load(Ordering::SeqCst) != self.persisted_next_id;
        let held = !self.held.is_empty();
        if self.unflushed_since.is_some() || self.deferred_since.is_some() || held || id_moved {
            if let Err(err) = self.commit(&mut [], true) {
                tracing::error!(error = %err, "store could not flush on shutdown");
            }
        }
    }

    fn compact(&mut self) -> Result<bool, CompactError> {
        let path = self.path().to_path_buf();
        self.finish_checkpoint(true);
        if self.unflushed_since.is_some() || self.deferred_since.is_some() || !self.held.is_empty()
        {
            self.commit(&mut [], true)
                .map_err(|err| CompactError::Storage {
                    path: path.clone(),
                    cause: err.to_string(),
                })?;
        }
        let shared = Arc::clone(&self.shared);
        let mut guard = shared.db.write().unwrap_or_else(PoisonError::into_inner);
        let Some(db) = guard.as_mut() else {
            return Err(CompactError::Closed { path });
        };
        db.compact().map_err(|err| match err {
            CompactionError::TransactionInProgress => CompactError::ReadsInProgress { path },
            other => CompactError::Storage {
                path,
                cause: other.to_string(),
            },
        })
    }
}

/// The fault-injection hook's crash: applies the first half of the group's ops
/// (at least one) to `txn`, so that the transaction holds part of the group, and
/// aborts the process before the rest and before the commit.
fn abort_in_commit(txn: &WriteTransaction, group: &[Pending], path: &Path) -> ! {
    let total: usize = group.iter().map(|pending| pending.ops.len()).sum();
    let half = total.div_ceil(2);
    let mut tables = GroupTables::new(txn);
    let applied = group
        .iter()
        .flat_map(|pending| &pending.ops)
        .take(half)
        .map(|op| tables.apply(op))
        .take_while(Result::is_ok)
        .count();
    tracing::error!(
        path = %path.display(),
        batches = group.len(),
        ops = total,
        applied,
        "aborting the process in the middle of a durable commit, on purpose: \
         {FAULT_ABORT_IN_COMMIT_ENV} is set (a fault-injection hook for tests)"
    );
    std::process::abort()
}

/// The fault-injection hook's crash in a journal write: half of the group's
/// record is in the journal (`torn` says whether that write went through), none
/// of it in the data file; aborts the process.
fn abort_in_journal(group: &[Pending], path: &Path, torn: std::io::Result<()>) -> ! {
    tracing::error!(
        path = %path.display(),
        batches = group.len(),
        torn_write = ?torn,
        "aborting the process in the middle of a durable commit (in its journal write), on purpose: \
         {FAULT_ABORT_IN_COMMIT_ENV} is set (a fault-injection hook for tests)"
    );
    std::process::abort()
}

/// Applies the held appends (as runs), the other journaled ops held back, then
/// every op of the group in order, the id counter if it moved, and the journal's
/// next epoch if the commit empties it.
fn apply_group(
    txn: &WriteTransaction,
    held: &[Op],
    deferred: &[Op],
    group: &[Pending],
    next_id: Option<u64>,
    journal_epoch: Option<u64>,
) -> Result<(), redb::Error> {
    let mut tables = GroupTables::new(txn);
    tables.apply_held(held)?;
    for op in deferred {
        tables.apply(op)?;
    }
    for pending in group {
        for op in &pending.ops {
            tables.apply(op)?;
        }
    }
    if next_id.is_some() || journal_epoch.is_some() {
        let mut format = txn.open_table(FORMAT)?;
        if let Some(next_id) = next_id {
            format.insert(NEXT_ID_KEY, next_id)?;
        }
        if let Some(epoch) = journal_epoch {
            format.insert(JOURNAL_EPOCH_KEY, epoch)?;
        }
    }
    Ok(())
}
