//! What the crash tests share: running their own test binary again as the child
//! that writes and then dies without closing its store (a redb file cannot be
//! opened twice in one process).

use std::process::Command;

/// This test binary, set to run only the test `name` (which, seeing the
/// environment the caller adds, plays the child).
pub fn rerun(name: &str) -> Command {
    let mut child = Command::new(std::env::current_exe().expect("test binary"));
    child.args(["--exact", name, "--test-threads=1", "--nocapture"]);
    child
}
