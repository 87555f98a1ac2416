//! Every way opening a data file can fail gets its own error, whose message
//! names the file, says what is wrong and what to do. (A file from a newer
//! Warren is tested in `src/open.rs`, which can write one.)

use std::fs;
use std::io::Write;

use warren_storage::{Batch, Op, OpenError, Store, StoreOptions};

fn assert_names_file(err: &OpenError, path: &std::path::Path) {
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string()),
        "error should name {}: {text}",
        path.display()
    );
}

#[test]
fn missing_file_and_directories_are_created() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a/b/c/warren.redb");
    let store = Store::open(&path).expect("open creates");
    assert!(path.is_file());
    assert_eq!(store.path(), path.as_path());
}

#[test]
fn garbage_file_is_not_a_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("warren.redb");
    let garbage: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(&path, &garbage).expect("write garbage");
    let err = Store::open(&path).expect_err("garbage refused");
    assert!(matches!(err, OpenError::NotADatabase { .. }), "{err:?}");
    assert_names_file(&err, &path);
    assert!(err.to_string().contains("not a redb database"), "{err}");
    // Refusing must not have touched the file.
    assert_eq!(fs::read(&path).expect("read back"), garbage);
}

#[test]
fn text_file_is_not_a_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("warren.redb");
    fs::write(&path, "this is my shopping list\n").expect("write");
    let err = Store::open(&path).expect_err("text refused");
    assert!(matches!(err, OpenError::NotADatabase { .. }), "{err:?}");
}

/// A Warren file with a stretch of it overwritten by garbage (keeping redb's
/// header intact), as a failing disk or a stray `dd` would leave it.
#[test]
fn overwritten_file_is_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("warren.redb");
    write_some_messages(&path);
    let mut bytes = fs::read(&path).expect("read");
    assert!(bytes.len() > 8192, "file has pages beyond the header");
    for byte in &mut bytes[4096..] {
        *byte = 0xA5;
    }
    fs::write(&path, &bytes).expect("overwrite");
    let err = Store::open(&path).expect_err("damaged file refused");
    assert!(matches!(err, OpenError::Corrupt { .. }), "{err:?}");
    eprintln!("{err}");
    assert_names_file(&err, &path);
    assert!(err.to_string().contains("is damaged"), "{err}");
}

/// The same damage with `verify_on_open`: found by the checksums, before redb
/// trips over it.
#[test]
fn overwritten_file_is_corrupt_when_verified_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("warren.redb");
    write_some_messages(&path);
    let mut bytes = fs::read(&path).expect("read");
    for byte in &mut bytes[4096..] {
        *byte = 0xA5;
    }
    fs::write(&path, &bytes).expect("overwrite");
    let mut options = StoreOptions::default();
    options.verify_on_open = true;
    let err = Store::open_with(&path, options).expect_err("damaged file refused");
    assert!(matches!(err, OpenError::Corrupt { .. }), "{err:?}");
    eprintln!("{err}");
}

#[test]
fn truncated_file_is_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("warren.redb");
    write_some_messages(&path);
    let len = fs::metadata(&path).expect("metadata").len();
    let file = fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open for truncation");
    file.set_len(len / 3).expect("truncate");
    drop(file);
    let err = Store::open(&path).expect_err("truncated file refused");
    assert!(matches!(err, OpenError::Corrupt { .. }), "{err:?}");
    eprintln!("{err}");
    assert_names_file(&err, &path);
}

#[test]
fn file_cut_inside_the_header_is_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("warren.redb");
    write_some_messages(&path);
    let bytes = fs::read(&path).expect("read");
    fs::write(&path, &bytes[..100]).expect("cut");
    let err = Store::open(&path).expect_err("cut file refused");
    assert!(matches!(err, OpenError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("truncated"), "{err}");
    assert_names_file(&err, &path);
}

#[test]
fn file_open_in_another_store_is_locked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("warren.redb");
    let first = Store::open(&path).expect("first open");
    let err = Store::open(&path).expect_err("second open refused");
    assert!(matches!(err, OpenError::Locked { .. }), "{err:?}");
    assert_names_file(&err, &path);
    assert!(err.to_string().contains("another Warren node"), "{err}");
    first.close();
    Store::open(&path).expect("open after the first closed");
}

#[test]
fn directory_in_place_of_the_file_is_an_io_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("warren.redb");
    fs::create_dir(&path).expect("mkdir");
    let err = Store::open(&path).expect_err("directory refused");
    assert!(matches!(err, OpenError::Io { .. }), "{err:?}");
    assert_names_file(&err, &path);
}

#[test]
fn uncreatable_directory_is_reported_as_such() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blocker = dir.path().join("not-a-dir");
    fs::File::create(&blocker)
        .and_then(|mut f| f.write_all(b"x"))
        .expect("file");
    let path = blocker.join("warren.redb");
    let err = Store::open(&path).expect_err("parent is a file");
    assert!(matches!(err, OpenError::CreateDir { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&blocker.display().to_string()),
        "{err}"
    );
}

fn write_some_messages(path: &std::path::Path) {
    let store = Store::open(path).expect("open");
    let ops = (0..300)
        .map(|seq| Op::PutMessage {
            queue: 1,
            seq,
            index: vec![1; 16],
            body: vec![2; 1000],
        })
        .collect();
    store.submit(Batch::durable(ops)).wait().expect("commit");
    store.close();
}
