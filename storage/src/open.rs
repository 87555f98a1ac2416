//! Opening a data file: create it if missing, refuse anything that is not a
//! Warren data file this build can read, and make sure every table exists.
//!
//! Each failure maps to its own [`OpenError`] variant, so that the operator reads
//! what is wrong and what to do instead of a redb error code.

use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

use redb::{Database, DatabaseError, ReadableDatabase, StorageError, TableError, TableHandle};

use crate::apply::GroupTables;
use crate::error::OpenError;
use crate::journal::{self, Journal, Record};
use crate::options::StoreOptions;
use crate::tables::{
    MetaTable, CONSUMER_OFFSETS, DELAYED, FILE_FORMAT_VERSION, FORMAT, FORMAT_VERSION_KEY,
    JOURNAL_EPOCH_KEY, JOURNAL_KEY_KEY, NEXT_ID_KEY, PARTITION_KEYS, PARTITION_LOG, PARTITION_TIME,
    QUEUE_BODY, QUEUE_INDEX, REPLICATION_LOG, REPLICATION_SNAPSHOT,
};

/// The first id [`crate::Store::allocate_id`] hands out in a new file. Zero is
/// never handed out, so callers may use it as "no id".
pub(crate) const FIRST_ID: u64 = 1;

/// An open, validated data file.
pub(crate) struct Opened {
    pub(crate) db: Database,
    /// The persisted id counter.
    pub(crate) next_id: u64,
    /// The journal, its records applied, ready to write; `None` for a store
    /// opened without one.
    pub(crate) journal: Option<Journal>,
}

/// Opens (creating if needed) and validates the data file at `path`.
pub(crate) fn open_file(path: &Path, options: &StoreOptions) -> Result<Opened, OpenError> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| OpenError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
    }
    if path.is_dir() {
        return Err(OpenError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                "a directory is in the place of the data file",
            ),
        });
    }
    guarded(path, || {
        let db = builder(path, options)
            .create(path)
            .map_err(|err| map_database_error(path, err))?;
        validate(
            path,
            db,
            Some(JournalAt::Paths(Journal::paths_of(path), options.journal)),
        )
    })
}

/// Opens a database on any redb backend (tests inject failing disks with it).
#[cfg(test)]
pub(crate) fn open_backend(
    path: &Path,
    options: &StoreOptions,
    backend: impl redb::StorageBackend,
) -> Result<Opened, OpenError> {
    guarded(path, || {
        let db = builder(path, options)
            .create_with_backend(backend)
            .map_err(|err| map_database_error(path, err))?;
        validate(path, db, None)
    })
}

/// [`open_backend`] with a journal on `files` (the power-cut tests' simulated disk).
#[cfg(test)]
pub(crate) fn open_backend_with_journal(
    path: &Path,
    options: &StoreOptions,
    backend: impl redb::StorageBackend,
    files: [Box<dyn journal::JournalFile>; 2],
) -> Result<Opened, OpenError> {
    let db = builder(path, options)
        .create_with_backend(backend)
        .map_err(|err| map_database_error(path, err))?;
    validate(path, db, Some(JournalAt::Files(files, options.journal)))
}

/// Where a store's journal is.
enum JournalAt {
    /// In these files, created if missing with `true`.
    Paths([std::path::PathBuf; 2], bool),
    /// In files already open (tests), written on with `true` (with `false` only
    /// read, as a store opened without a journal reads the one a run before left).
    #[cfg(test)]
    Files([Box<dyn journal::JournalFile>; 2], bool),
}

fn builder(path: &Path, options: &StoreOptions) -> redb::Builder {
    let mut builder = Database::builder();
    builder.set_cache_size(options.cache_size);
    builder.set_check_integrity_on_open(options.verify_on_open);
    builder.set_repair_callback(repair_progress(path));
    builder
}

/// Logs how far redb's repair of a file not closed cleanly has come, every tenth of
/// the way: without quick repair it walks the whole file, which takes a while for a
/// big one, and the operator should see why the node is not up yet.
fn repair_progress(path: &Path) -> impl Fn(&mut redb::RepairSession) + 'static {
    let path = path.display().to_string();
    let logged = std::cell::Cell::new(-1);
    move |session| {
        let tenth = (session.progress() * 10.0) as i32;
        if tenth > logged.get() {
            logged.set(tenth);
            tracing::warn!(
                "repairing {path} after an unclean shutdown: {}% done",
                tenth * 10
            );
        }
    }
}

/// Runs an open attempt, turning a redb panic into [`OpenError::Corrupt`]: redb
/// trusts a file that was shut down cleanly and may panic on one damaged
/// behind its back; the operator must get an error to act on, not a crash.
fn guarded(
    path: &Path,
    attempt: impl FnOnce() -> Result<Opened, OpenError>,
) -> Result<Opened, OpenError> {
    match panic::catch_unwind(AssertUnwindSafe(attempt)) {
        Ok(result) => result,
        Err(payload) => Err(OpenError::Corrupt {
            path: path.to_path_buf(),
            cause: format!(
                "its pages are not what redb wrote (redb: {}); opening with \
                 verify_on_open checks every page",
                panic_message(&*payload)
            ),
        }),
    }
}

/// Checks the format of an open database, applies what its journal holds (the
/// journal's path, and whether to create it if missing), and creates missing
/// tables.
fn validate(path: &Path, db: Database, journal: Option<JournalAt>) -> Result<Opened, OpenError> {
    let format = check_format(path, &db)?;
    let key = format.journal_key.unwrap_or_else(random_key);
    // The journal read, what it held, and whether the store goes on writing it.
    let (journal, records, keep) = match journal {
        Some(JournalAt::Paths(journal_paths, create)) => {
            let named = journal_paths[0].clone();
            match Journal::open(journal_paths, format.journal_epoch, key, create) {
                Ok(Some((journal, records))) => (Some(journal), records, create),
                Ok(None) => (None, Vec::new(), false),
                Err(err) => return Err(journal_error(&named, err)),
            }
        }
        #[cfg(test)]
        Some(JournalAt::Files(files, keep)) => {
            let paths = Journal::paths_of(path);
            let named = paths[0].clone();
            match Journal::on_files(files, paths, format.journal_epoch, key) {
                Ok((journal, records)) => (Some(journal), records, keep),
                Err(err) => return Err(journal_error(&named, err)),
            }
        }
        None => (None, Vec::new(), false),
    };
    let next_id = records
        .iter()
        .map(|record| record.next_id)
        .fold(format.next_id, u64::max);
    if !records.is_empty() {
        let ops: usize = records.iter().map(|record| record.ops.len()).sum();
        tracing::info!(
            path = %path.display(),
            records = records.len(),
            ops,
            "applying the journal's writes the data file did not hold yet"
        );
    }
    // The epoch advances past both epochs read (to the one the journal now
    // writes) even when the journal held nothing, so that no record of them can
    // be read behind new ones (`journal.rs`).
    let journal_format = journal.as_ref().map(|journal| (journal.epoch(), key));
    initialise(path, &db, next_id, journal_format, &records)?;
    // A store opened without a journal applied what one left, and writes none:
    // the epoch advanced past every record in the files.
    let journal = journal.filter(|_| keep);
    Ok(Opened {
        db,
        next_id,
        journal,
    })
}

/// [`OpenError`] for a journal that cannot be read.
fn journal_error(journal_path: &Path, err: journal::ReadError) -> OpenError {
    match err {
        journal::ReadError::Io(source) => OpenError::Io {
            path: journal_path.to_path_buf(),
            source,
        },
        journal::ReadError::Undecodable { offset, cause } => OpenError::Corrupt {
            path: journal_path.to_path_buf(),
            cause: format!(
                "the journal's record at byte {offset} is whole but cannot be read ({cause}); \
                 it holds durable writes, so the store does not open without them"
            ),
        },
    }
}

/// What the `format` table says.
struct Format {
    /// The persisted id counter.
    next_id: u64,
    /// The journal epoch whose records the file does not hold yet.
    journal_epoch: u64,
    /// The journal key mixed into its records' CRCs; `None` before the first.
    journal_key: Option<u64>,
}

/// A new journal key: random, from the standard library's per-process random
/// hash keys and the clock.
fn random_key() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    hasher.write_u128(now);
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Reads the `format` table: the file's layout version, the id counter and the
/// journal's epoch. Refuses newer formats and foreign redb files before anything
/// is written.
fn check_format(path: &Path, db: &Database) -> Result<Format, OpenError> {
    let storage = |cause: String| OpenError::Storage {
        path: path.to_path_buf(),
        cause,
    };
    let txn = db.begin_read().map_err(|err| storage(err.to_string()))?;
    let format = match txn.open_table(FORMAT) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => {
            let tables: Vec<String> = txn
                .list_tables()
                .map_err(|err| map_storage_error(path, err))?
                .map(|table| table.name().to_string())
                .collect();
            let multimap = txn
                .list_multimap_tables()
                .map_err(|err| map_storage_error(path, err))?
                .count();
            if tables.is_empty() && multimap == 0 {
                // A new (or empty) file.
                return Ok(Format {
                    next_id: FIRST_ID,
                    journal_epoch: 0,
                    journal_key: None,
                });
            }
            return Err(OpenError::NotWarren {
                path: path.to_path_buf(),
                cause: format!("it has tables {} but no `format` table", tables.join(", ")),
            });
        }
        Err(err) => return Err(map_table_error(path, err)),
    };
    let version = format
        .get(FORMAT_VERSION_KEY)
        .map_err(|err| map_storage_error(path, err))?
        .map(|guard| guard.value());
    let Some(version) = version else {
        return Err(OpenError::NotWarren {
            path: path.to_path_buf(),
            cause: "its `format` table has no format version".to_string(),
        });
    };
    if version > FILE_FORMAT_VERSION {
        return Err(OpenError::NewerFormat {
            path: path.to_path_buf(),
            found: version,
            supported: FILE_FORMAT_VERSION,
        });
    }
    if version == 0 {
        return Err(OpenError::Corrupt {
            path: path.to_path_buf(),
            cause: "format version 0 was never written by any Warren".to_string(),
        });
    }
    let next_id = format
        .get(NEXT_ID_KEY)
        .map_err(|err| map_storage_error(path, err))?
        .map_or(FIRST_ID, |guard| guard.value());
    let journal_epoch = format
        .get(JOURNAL_EPOCH_KEY)
        .map_err(|err| map_storage_error(path, err))?
        .map_or(0, |guard| guard.value());
    let journal_key = format
        .get(JOURNAL_KEY_KEY)
        .map_err(|err| map_storage_error(path, err))?
        .map(|guard| guard.value());
    Ok(Format {
        next_id: next_id.max(FIRST_ID),
        journal_epoch,
        journal_key,
    })
}

/// Creates every table (new files, and tables added by a later format of the
/// same version line), applies the journal's records and advances its epoch, and
/// records the format version. One durable commit.
fn initialise(
    path: &Path,
    db: &Database,
    next_id: u64,
    journal: Option<(u64, u64)>,
    records: &[Record],
) -> Result<(), OpenError> {
    let txn = db.begin_write().map_err(|err| OpenError::Storage {
        path: path.to_path_buf(),
        cause: err.to_string(),
    })?;
    {
        let mut format = txn
            .open_table(FORMAT)
            .map_err(|err| map_table_error(path, err))?;
        format
            .insert(FORMAT_VERSION_KEY, FILE_FORMAT_VERSION)
            .map_err(|err| map_storage_error(path, err))?;
        format
            .insert(NEXT_ID_KEY, next_id)
            .map_err(|err| map_storage_error(path, err))?;
        for table in MetaTable::ALL {
            txn.open_table(table.definition())
                .map_err(|err| map_table_error(path, err))?;
        }
        for definition in [QUEUE_INDEX, QUEUE_BODY, PARTITION_LOG, REPLICATION_LOG] {
            txn.open_table(definition)
                .map_err(|err| map_table_error(path, err))?;
        }
        txn.open_table(CONSUMER_OFFSETS)
            .map_err(|err| map_table_error(path, err))?;
        txn.open_table(PARTITION_TIME)
            .map_err(|err| map_table_error(path, err))?;
        txn.open_table(PARTITION_KEYS)
            .map_err(|err| map_table_error(path, err))?;
        txn.open_table(REPLICATION_SNAPSHOT)
            .map_err(|err| map_table_error(path, err))?;
        txn.open_table(DELAYED)
            .map_err(|err| map_table_error(path, err))?;
        if let Some((epoch, key)) = journal {
            format
                .insert(JOURNAL_EPOCH_KEY, epoch)
                .map_err(|err| map_storage_error(path, err))?;
            format
                .insert(JOURNAL_KEY_KEY, key)
                .map_err(|err| map_storage_error(path, err))?;
        }
        let mut tables = GroupTables::new(&txn);
        for op in records.iter().flat_map(|record| &record.ops) {
            tables.apply(op).map_err(|err| OpenError::Storage {
                path: path.to_path_buf(),
                cause: format!("applying the journal: {err}"),
            })?;
        }
    }
    txn.commit().map_err(|err| OpenError::Storage {
        path: path.to_path_buf(),
        cause: err.to_string(),
    })
}

fn map_database_error(path: &Path, err: DatabaseError) -> OpenError {
    let path_buf = path.to_path_buf();
    match err {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            OpenError::Locked { path: path_buf }
        }
        DatabaseError::UpgradeRequired(version) => OpenError::OldRedbFormat {
            path: path_buf,
            version,
        },
        DatabaseError::RepairAborted => OpenError::Corrupt {
            path: path_buf,
            cause: "redb's repair of the file was aborted".to_string(),
        },
        DatabaseError::Storage(err) => map_storage_error(path, err),
        other => OpenError::Storage {
            path: path_buf,
            cause: other.to_string(),
        },
    }
}

fn map_storage_error(path: &Path, err: StorageError) -> OpenError {
    let path_buf = path.to_path_buf();
    match err {
        // redb reports "this is not a redb file" as InvalidData.
        StorageError::Io(source) if source.kind() == std::io::ErrorKind::InvalidData => {
            OpenError::NotADatabase { path: path_buf }
        }
        // Shorter than redb's own header: cut off.
        StorageError::Io(source) if source.kind() == std::io::ErrorKind::UnexpectedEof => {
            OpenError::Corrupt {
                path: path_buf,
                cause: format!("the file ends early, it was truncated ({source})"),
            }
        }
        StorageError::Io(source) => OpenError::Io {
            path: path_buf,
            source,
        },
        StorageError::Corrupted(cause) => OpenError::Corrupt {
            path: path_buf,
            cause,
        },
        other => OpenError::Storage {
            path: path_buf,
            cause: other.to_string(),
        },
    }
}

fn map_table_error(path: &Path, err: TableError) -> OpenError {
    match err {
        TableError::Storage(err) => map_storage_error(path, err),
        TableError::TableTypeMismatch { .. }
        | TableError::TableIsMultimap(_)
        | TableError::TableIsNotMultimap(_)
        | TableError::TypeDefinitionChanged { .. } => OpenError::NotWarren {
            path: path.to_path_buf(),
            cause: err.to_string(),
        },
        other => OpenError::Storage {
            path: path.to_path_buf(),
            cause: other.to_string(),
        },
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> StoreOptions {
        StoreOptions::default()
    }

    #[test]
    fn new_file_gets_format_version_and_every_table() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/warren.redb");
        let opened = open_file(&path, &options()).expect("opens");
        assert_eq!(opened.next_id, FIRST_ID);
        let txn = opened.db.begin_read().expect("read");
        let format = txn.open_table(FORMAT).expect("format table");
        assert_eq!(
            format
                .get(FORMAT_VERSION_KEY)
                .expect("get")
                .map(|g| g.value()),
            Some(FILE_FORMAT_VERSION)
        );
        let names: Vec<String> = txn
            .list_tables()
            .expect("list")
            .map(|t| t.name().to_string())
            .collect();
        for expected in [
            "queue.index",
            "queue.body",
            "partition.log",
            "consumer.offsets",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} in {names:?}"
            );
        }
        assert!(names.iter().any(|n| n == "replication.log"));
        for table in MetaTable::ALL {
            assert!(names.iter().any(|n| n == table.table_name()), "{table:?}");
        }
    }

    #[test]
    fn newer_format_is_refused_and_the_file_left_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("warren.redb");
        {
            let opened = open_file(&path, &options()).expect("opens");
            let txn = opened.db.begin_write().expect("write");
            txn.open_table(FORMAT)
                .expect("format")
                .insert(FORMAT_VERSION_KEY, FILE_FORMAT_VERSION + 1)
                .expect("insert");
            txn.commit().expect("commit");
        }
        let err = open_file(&path, &options())
            .err()
            .expect("newer format refused");
        assert!(
            matches!(
                err,
                OpenError::NewerFormat {
                    found,
                    supported: FILE_FORMAT_VERSION,
                    ..
                } if found == FILE_FORMAT_VERSION + 1
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains(&format!(
                "written by a newer Warren (format {}, this build reads up to {})",
                FILE_FORMAT_VERSION + 1,
                FILE_FORMAT_VERSION
            )),
            "{text}"
        );
        assert!(text.contains(&path.display().to_string()), "{text}");
        // Refusing did not rewrite the version.
        let db = Database::open(&path).expect("plain redb open");
        let txn = db.begin_read().expect("read");
        let version = txn
            .open_table(FORMAT)
            .expect("format")
            .get(FORMAT_VERSION_KEY)
            .expect("get")
            .map(|g| g.value());
        assert_eq!(version, Some(FILE_FORMAT_VERSION + 1));
    }

    #[test]
    fn opening_applies_the_journal_of_the_files_epoch_and_of_the_next() {
        use crate::batch::Op;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("warren.redb");
        let key = {
            let opened = open_file(&path, &options()).expect("create");
            let txn = opened.db.begin_read().expect("read");
            let format = txn.open_table(FORMAT).expect("format");
            let key = format.get(JOURNAL_KEY_KEY).expect("get").map(|g| g.value());
            key.expect("a journal key")
        };
        // What a crash in the middle of a checkpoint leaves: records of the
        // file's epoch (2, in file 0) and of the next (3, in file 1).
        let (mut journal, none) = Journal::open(Journal::paths_of(&path), 0, key, true)
            .expect("journal")
            .expect("files");
        assert!(none.is_empty());
        assert_eq!(journal.epoch(), 2);
        let put = |seq: u64| Op::PutMessage {
            queue: 9,
            seq,
            index: vec![seq as u8],
            body: vec![1; 10],
        };
        journal.encode(50, [put(1)].iter()).expect("encode");
        journal.append(true).expect("append");
        journal.switch(true).expect("switch");
        journal.encode(60, [put(2), put(3)].iter()).expect("encode");
        journal.append(true).expect("append");
        drop(journal);

        let opened = open_file(&path, &options()).expect("reopen");
        assert_eq!(opened.next_id, 60);
        let txn = opened.db.begin_read().expect("read");
        let index = txn.open_table(QUEUE_INDEX).expect("index");
        let seqs: Vec<u64> = index
            .range((9, 0)..=(9, u64::MAX))
            .expect("range")
            .map(|entry| entry.expect("entry").0.value().1)
            .collect();
        assert_eq!(seqs, vec![1, 2, 3], "both epochs applied, in order");
        let format = txn.open_table(FORMAT).expect("format");
        let epoch = format
            .get(JOURNAL_EPOCH_KEY)
            .expect("get")
            .map(|g| g.value());
        assert_eq!(epoch, Some(4), "past both epochs read");
    }

    #[test]
    fn a_version_1_file_opens_and_becomes_the_current_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("warren.redb");
        {
            let opened = open_file(&path, &options()).expect("opens");
            let txn = opened.db.begin_write().expect("write");
            {
                let mut format = txn.open_table(FORMAT).expect("format");
                format.insert(FORMAT_VERSION_KEY, 1).expect("insert");
                format.remove(JOURNAL_EPOCH_KEY).expect("remove");
            }
            txn.commit().expect("commit");
        }
        for journal in Journal::paths_of(&path) {
            std::fs::remove_file(journal).expect("no journal in version 1");
        }
        let opened = open_file(&path, &options()).expect("a version 1 file opens");
        let txn = opened.db.begin_read().expect("read");
        let format = txn.open_table(FORMAT).expect("format");
        let value = |key| format.get(key).expect("get").map(|g| g.value());
        assert_eq!(value(FORMAT_VERSION_KEY), Some(FILE_FORMAT_VERSION));
        assert_eq!(value(JOURNAL_EPOCH_KEY), Some(2));
        assert!(Journal::paths_of(&path).iter().all(|p| p.exists()));
    }

    #[test]
    fn foreign_redb_file_is_not_warren() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("other.redb");
        {
            let db = Database::create(&path).expect("create");
            let txn = db.begin_write().expect("write");
            let other: redb::TableDefinition<&str, &str> = redb::TableDefinition::new("sessions");
            txn.open_table(other)
                .expect("table")
                .insert("a", "b")
                .expect("insert");
            txn.commit().expect("commit");
        }
        let err = open_file(&path, &options())
            .err()
            .expect("foreign file refused");
        assert!(matches!(err, OpenError::NotWarren { .. }), "{err:?}");
        assert!(err.to_string().contains("sessions"), "{err}");
    }

    #[test]
    fn mistyped_warren_table_is_not_warren() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("other.redb");
        {
            let db = Database::create(&path).expect("create");
            let txn = db.begin_write().expect("write");
            let wrong: redb::TableDefinition<&str, &str> = redb::TableDefinition::new("format");
            txn.open_table(wrong)
                .expect("table")
                .insert("format_version", "1")
                .expect("insert");
            txn.commit().expect("commit");
        }
        let err = open_file(&path, &options())
            .err()
            .expect("mistyped table refused");
        assert!(matches!(err, OpenError::NotWarren { .. }), "{err:?}");
    }
}
