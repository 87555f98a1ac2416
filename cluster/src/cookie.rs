//! The cluster cookie: a shared secret that every node and client of one cluster
//! presents in ractor_cluster's challenge handshake.
//!
//! Like Erlang's `~/.erlang.cookie`, it lives in a file that is created with a random
//! value on first start and readable by its owner only. Clients read the same file.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rand::distr::Alphanumeric;
use rand::Rng;

/// Why the cookie could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CookieError {
    /// The cookie file cannot be read (a client finds none, say).
    #[error(
        "cannot read cookie file {path}: {source}; pass --cookie-file with the node's cookie file"
    )]
    Read {
        /// The cookie file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The cookie file (or its directory) cannot be created or written.
    #[error("cannot create cookie file {path}: {source}")]
    Create {
        /// The cookie file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The cookie file holds nothing but whitespace.
    #[error("cookie file {path} is empty; delete it to have a new cookie made, or write the cluster's cookie into it")]
    Empty {
        /// The cookie file.
        path: PathBuf,
    },
}

/// Reads the cookie from `path`, or creates the file with a fresh random cookie.
pub fn read_or_create(path: &Path) -> Result<String, CookieError> {
    if path.exists() {
        return read(path);
    }
    let cookie: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect();
    let create = |e| CookieError::Create {
        path: path.to_path_buf(),
        source: e,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(create)?;
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(cookie.as_bytes()).map_err(create)?;
            file.sync_all().map_err(create)?;
            Ok(cookie)
        }
        // Another process created it between our check and our create: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(path),
        Err(e) => Err(create(e)),
    }
}

/// Reads an existing cookie file (clients never create one).
pub fn read(path: &Path) -> Result<String, CookieError> {
    let text = fs::read_to_string(path).map_err(|e| CookieError::Read {
        path: path.to_path_buf(),
        source: e,
    })?;
    let cookie = text.trim().to_string();
    if cookie.is_empty() {
        return Err(CookieError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(cookie)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/cookie");
        let first = read_or_create(&path).unwrap();
        assert_eq!(first.len(), 32);
        assert_eq!(read_or_create(&path).unwrap(), first);
        assert_eq!(read(&path).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn missing_and_empty_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = read(&missing).unwrap_err().to_string();
        assert!(err.contains("--cookie-file"), "{err}");
        let empty = dir.path().join("empty");
        fs::write(&empty, "\n").unwrap();
        assert!(matches!(read(&empty), Err(CookieError::Empty { .. })));
    }
}
