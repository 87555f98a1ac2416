//! One error type per operation. Each says which data file, what went wrong, and
//! what the operator can do about it.
//!
//! redb's own errors are kept as text (`cause`): they are not `Clone`, and a
//! commit error must reach every caller whose batch shared the failed commit.

use std::path::PathBuf;

/// Why [`Store::open`](crate::Store::open) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The directory that should hold the data file could not be created.
    #[error(
        "cannot create data directory {}: {source}; create it by hand, fix its \
         permissions, or point --data-dir elsewhere",
        dir.display()
    )]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file could not be opened or read (permissions, a directory in its
    /// place, a failing disk...).
    #[error(
        "cannot open data file {}: {source}; check that it is a readable and writable \
         file, or point --data-dir elsewhere",
        path.display()
    )]
    Io {
        /// The data file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Another process (most likely another Warren node) has the file open.
    #[error(
        "data file {} is in use by another process (is another Warren node running \
         with the same data directory?); stop that node, or give this one its own \
         --data-dir",
        path.display()
    )]
    Locked {
        /// The data file.
        path: PathBuf,
    },
    /// The file exists but is not a redb database at all.
    #[error(
        "{} is not a Warren data file (it is not a redb database); move it away, or \
         point --data-dir elsewhere",
        path.display()
    )]
    NotADatabase {
        /// The data file.
        path: PathBuf,
    },
    /// The file is a redb database, but not one Warren wrote (no `format` table,
    /// or tables of other types).
    #[error(
        "{} is a redb database but not a Warren data file ({cause}); move it away, \
         or point --data-dir elsewhere",
        path.display()
    )]
    NotWarren {
        /// The data file.
        path: PathBuf,
        /// What gave it away.
        cause: String,
    },
    /// The file is a Warren data file but damaged: truncated, overwritten, or
    /// with bad checksums.
    #[error(
        "data file {} is damaged: {cause}; restore it from a backup (or let the node \
         resync from its cluster peers), or move it away to start with an empty store",
        path.display()
    )]
    Corrupt {
        /// The data file.
        path: PathBuf,
        /// What redb found wrong.
        cause: String,
    },
    /// Written by a newer Warren whose file format this build does not know.
    #[error(
        "data file {} was written by a newer Warren (format {found}, this build reads \
         up to {supported}); upgrade Warren or point --data-dir elsewhere",
        path.display()
    )]
    NewerFormat {
        /// The data file.
        path: PathBuf,
        /// The format version in the file.
        found: u64,
        /// The newest format this build reads.
        supported: u64,
    },
    /// The file uses an on-disk format of an old redb release that redb 4 cannot
    /// open without an upgrade.
    #[error(
        "data file {} uses the old redb file format {version}, which this Warren's redb \
         cannot open; upgrade the file with the Warren release that wrote it, or move \
         it away",
        path.display()
    )]
    OldRedbFormat {
        /// The data file.
        path: PathBuf,
        /// redb's file format version.
        version: u8,
    },
    /// redb failed while opening or initialising the file, for a reason not
    /// covered above.
    #[error(
        "cannot open data file {}: {cause}; if this repeats, check the disk and \
         restore the file from a backup",
        path.display()
    )]
    Storage {
        /// The data file.
        path: PathBuf,
        /// redb's description.
        cause: String,
    },
    /// The writer thread could not be started.
    #[error(
        "cannot start the writer thread for data file {}: {source}; the system is out \
         of threads or memory",
        path.display()
    )]
    WriterThread {
        /// The data file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// Why a submitted batch was not committed. `Clone`, because every batch that
/// shared a failed commit receives the same error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// redb failed to start, apply or commit the transaction.
    ///
    /// After a failed commit redb refuses further writes until the file is
    /// reopened: every later batch fails too, until the node restarts, which
    /// repairs the file. The failed writes may or may not be on disk.
    #[error(
        "committing to data file {} failed: {cause}; the writes of this batch may or \
         may not be stored; the store refuses writes until the node restarts and \
         repairs the file (check free disk space and the disk)",
        path.display()
    )]
    Storage {
        /// The data file.
        path: PathBuf,
        /// redb's description.
        cause: String,
    },
    /// A key or value exceeds redb's limit; nothing of the batch was written.
    #[error(
        "a value of {len} bytes cannot be stored in data file {} (the limit is {max} \
         bytes); nothing of this batch was written",
        path.display()
    )]
    ValueTooLarge {
        /// The data file.
        path: PathBuf,
        /// The offending size.
        len: usize,
        /// The largest size redb stores.
        max: usize,
    },
    /// A chunk of a partition's log begins with the four `0xFF` bytes the store keeps
    /// for runs of chunks (a caller's bug: a stream's chunk never does); nothing of
    /// the batch was written.
    #[error(
        "a chunk at offset {first} of partition {partition} begins with four 0xFF bytes, \
         which data file {} keeps for runs of chunks; nothing of this batch was written",
        path.display()
    )]
    ChunkLikeRun {
        /// The data file.
        path: PathBuf,
        /// The partition.
        partition: u64,
        /// The chunk's first offset.
        first: u64,
    },
    /// The store was closed before the batch was committed.
    #[error(
        "the store of data file {} is closed (the node is shutting down); the batch \
         was not written",
        path.display()
    )]
    Closed {
        /// The data file.
        path: PathBuf,
    },
    /// The writer thread stopped without answering (it panicked): a bug.
    #[error(
        "the writer of data file {} stopped unexpectedly; the batch may or may not be \
         stored; restart the node and report a bug",
        path.display()
    )]
    WriterStopped {
        /// The data file.
        path: PathBuf,
    },
}

/// Why a read failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The store was closed.
    #[error(
        "the store of data file {} is closed (the node is shutting down)",
        path.display()
    )]
    Closed {
        /// The data file.
        path: PathBuf,
    },
    /// redb failed to read.
    #[error(
        "reading table {table} of data file {} failed: {cause}; if this repeats the \
         file may be damaged: stop the node, check the disk, restore from a backup",
        path.display()
    )]
    Storage {
        /// The data file.
        path: PathBuf,
        /// The table being read.
        table: &'static str,
        /// redb's description.
        cause: String,
    },
}

/// Why [`Store::compact`](crate::Store::compact) failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompactError {
    /// Reads were running; compaction needs the file to itself.
    #[error(
        "cannot compact data file {} while reads are in progress; retry when the node \
         is idle",
        path.display()
    )]
    ReadsInProgress {
        /// The data file.
        path: PathBuf,
    },
    /// The store was closed.
    #[error("the store of data file {} is closed", path.display())]
    Closed {
        /// The data file.
        path: PathBuf,
    },
    /// redb failed.
    #[error(
        "compacting data file {} failed: {cause}; restart the node to let redb repair \
         the file",
        path.display()
    )]
    Storage {
        /// The data file.
        path: PathBuf,
        /// redb's description.
        cause: String,
    },
    /// The writer thread stopped without answering (it panicked): a bug.
    #[error("the writer of data file {} stopped unexpectedly; restart the node", path.display())]
    WriterStopped {
        /// The data file.
        path: PathBuf,
    },
}
