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

/// What a child exits with once it has written what it was to write: its crash.
pub const CHILD_EXIT: i32 = 3;

/// Dies like kill -9: no destructors, no close, no final fsync (exit, not abort,
/// so that no core file is left behind).
pub fn die() -> ! {
    std::process::exit(CHILD_EXIT)
}

/// Runs `child` (from [`rerun`]) and checks that it reached its crash.
pub fn crash(child: &mut Command, what: &str) {
    let status = child.status().expect("spawn child");
    assert_eq!(
        status.code(),
        Some(CHILD_EXIT),
        "{what} must reach its crash"
    );
}
