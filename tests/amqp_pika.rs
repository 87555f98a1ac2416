//! A real AMQP 0-9-1 client against a real node: each test starts a `warren node` and
//! runs one pika (RabbitMQ's Python client) script of `tests/amqp/` against its AMQP
//! port. The scripts check RabbitMQ 3.x behaviour with plain asserts and print "ok".
//! Where RabbitMQ's behaviour was unclear, the scripts follow `rabbit_channel.erl`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, NodeProcess};

/// A script that has not finished by then is hung (its own waits are 20 s at most);
/// this bounds a hang, it is not a measure of speed.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(180);

/// pika must be importable: `scripts/test` installs it. Fails (never skips) without it.
fn require_pika() {
    let probe = Command::new("python3")
        .args(["-c", "import pika"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "python3 cannot import pika, which the AMQP client tests need: run the README's \
             test command, ./scripts/test, which installs it (or `python3 -m pip install pika`).\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "python3 did not run ({e}): the AMQP client tests need Python 3 with pika; run the \
             README's test command, ./scripts/test"
        ),
    }
}

fn script_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("amqp")
        .join(format!("{name}.py"))
}

fn read(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Starts a node, runs `tests/amqp/<name>.py <amqp port>`, and fails with the script's
/// output (and the node's log) unless it exits 0 after printing "ok".
fn run_script(name: &str) {
    require_pika();
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProcess::start(&dir.path().join("data"), free_port());
    run_script_on(&node, dir.path(), name);
    drop(node);
}

/// Runs `tests/amqp/<name>.py` against a running node; `dir` holds its output files.
fn run_script_on(node: &NodeProcess, dir: &Path, name: &str) {
    run_script_with(node, dir, name, &[]);
}

/// Runs `tests/amqp/<name>.py <amqp port> <args>...` against a running node.
fn run_script_with(node: &NodeProcess, dir: &Path, name: &str, args: &[&str]) {
    let mut all = vec![node.amqp_addr.port().to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    let (warren_node, cookie) = (node.addr.to_string(), node.cookie_file());
    let env: [(&str, &std::ffi::OsStr); 3] = [
        ("WARREN", env!("CARGO_BIN_EXE_warren").as_ref()),
        ("WARREN_NODE", warren_node.as_ref()),
        ("WARREN_COOKIE_FILE", cookie.as_os_str()),
    ];
    let end = common::run_script_to_end(&script_path(name), &all, &env, dir, SCRIPT_DEADLINE);
    if !end.passed() {
        let (status, stdout, stderr) = (end.status, end.stdout, end.stderr);
        let outcome = match status {
            Some(s) => format!("exited with {s}"),
            None => format!("was killed after {SCRIPT_DEADLINE:?} (hung)"),
        };
        let log = read(&dir.join("data.log"));
        panic!(
            "tests/amqp/{name}.py {outcome}\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}\n--- node log:\n{log}"
        );
    }
}

#[test]
fn exchanges() {
    run_script("exchanges");
}

#[test]
fn acks() {
    run_script("acks");
}

#[test]
fn prefetch() {
    run_script("prefetch");
}

#[test]
fn confirms() {
    run_script("confirms");
}

#[test]
fn queues() {
    run_script("queues");
}

#[test]
fn transactions() {
    run_script("transactions");
}

#[test]
fn errors() {
    run_script("errors");
}

#[test]
fn consumers() {
    run_script("consumers");
}

#[test]
fn queue_lifetimes() {
    run_script("queue_lifetimes");
}

#[test]
fn closing_channel() {
    run_script("closing_channel");
}

/// tx.commit-ok comes after the transaction's basic.returns, with its messages counted
/// in their queues, and persistent ones on disk: the script kills the node the moment
/// commit-ok arrives, and after a restart every committed message is there.
#[test]
fn tx_commit() {
    require_pika();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let port = free_port();
    let mut node = NodeProcess::start(&data, port);
    run_script_with(&node, dir.path(), "tx_commit", &["commit"]);
    common::eventually("the script killed the node", || node.exited());
    drop(node);
    let node = NodeProcess::start(&data, port);
    run_script_with(&node, dir.path(), "tx_commit", &["restarted"]);
}

/// Streams as RabbitMQ has them: offsets, credit, retention, refusals.
#[test]
fn streams() {
    run_script("streams");
}

/// Partitions over AMQP: the x-partition-hash exchange puts keys where Kafka would.
#[test]
fn streams_partitioned() {
    require_pika();
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProcess::start(&dir.path().join("data"), free_port());
    run_script_with(&node, dir.path(), "streams", &["partitioned"]);
}

/// Consumer groups on a partitioned stream: one active member per partition, offsets
/// kept by the broker, broadcast members.
#[test]
fn streams_groups() {
    require_pika();
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProcess::start(&dir.path().join("data"), free_port());
    run_script_with(&node, dir.path(), "streams", &["groups"]);
}

/// A stream's log survives a SIGKILL: every confirmed message is there after the
/// restart, at its offset, and offsets go on from there.
#[test]
fn streams_after_kill() {
    require_pika();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let port = free_port();
    let mut node = NodeProcess::start(&data, port);
    run_script_with(&node, dir.path(), "streams", &["fill"]);
    node.kill();
    drop(node);
    let node = NodeProcess::start(&data, port);
    run_script_with(&node, dir.path(), "streams", &["restarted"]);
}

/// A SIGKILL while four publishers append with confirms loses no confirmed message:
/// after the restart the log is dense, each message once, in each publisher's order.
#[test]
fn streams_kill_during_appends() {
    require_pika();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let port = free_port();
    let mut node = NodeProcess::start(&data, port);
    let confirmed = dir.path().join("confirmed");
    let mut publisher = common::PythonRun::start(
        "streams",
        &[
            node.amqp_addr.port().to_string(),
            "publish-until-killed".into(),
            confirmed.display().to_string(),
        ],
    );
    publisher.until_line("started");
    node.kill();
    publisher.finish();
    drop(node);
    let node = NodeProcess::start(&data, port);
    let confirmed = confirmed.display().to_string();
    run_script_with(&node, dir.path(), "streams", &["check-killed", &confirmed]);
}

/// A consumer-group member SIGKILLed while it holds unacked messages: the other
/// member takes its partition over from the group's offset, with no ack lost.
#[test]
fn streams_group_member_killed() {
    require_pika();
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProcess::start(&dir.path().join("data"), free_port());
    run_script_with(&node, dir.path(), "streams", &["group-member-killed"]);
}

/// Delayed messages (`x-delayed-message`), as RabbitMQ's plugin has them.
#[test]
fn delayed() {
    run_script("delayed");
}

/// Delayed messages of a durable exchange survive a SIGKILL: after the restart every
/// confirmed one arrives, once, when due.
#[test]
fn delayed_after_kill() {
    require_pika();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let port = free_port();
    let mut node = NodeProcess::start(&data, port);
    run_script_with(&node, dir.path(), "delayed", &["fill"]);
    node.kill();
    drop(node);
    let node = NodeProcess::start(&data, port);
    run_script_with(&node, dir.path(), "delayed", &["restarted"]);
}

#[test]
fn tx_unknown_tag() {
    run_script("tx_unknown_tag");
}

#[test]
fn queue_delete_missing() {
    run_script("queue_delete_missing");
}

#[test]
fn publish_validation() {
    run_script("publish_validation");
}

#[test]
fn queue_name_shortcut() {
    run_script("queue_name_shortcut");
}

#[test]
fn not_implemented() {
    run_script("not_implemented");
}

/// AMQP connections in the supervision tree; stopped from the shell.
#[test]
fn connections() {
    run_script("connections");
}

/// Memory and disk alarms raised and cleared with `warren limits` block and unblock
/// a pika publisher.
#[test]
fn alarms() {
    run_script("alarms");
}

/// Vhosts added, used and deleted through the CLI while pika clients use them.
#[test]
fn vhosts() {
    run_script("vhosts");
}

#[test]
fn queue_types() {
    run_script("queue_types");
}

/// Users and permissions set through the CLI, then exercised by pika.
#[test]
fn users_and_permissions() {
    require_pika();
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProcess::start(&dir.path().join("data"), free_port());
    let wait_until = Instant::now() + Duration::from_secs(60);
    let cli = |args: &[&str]| {
        let (ok, out, err) = node.cli(args);
        assert!(ok, "warren {args:?} failed: {err}");
        out
    };
    // The node may still be starting: the first command retries briefly.
    while !node.cli(&["user", "list"]).0 {
        assert!(Instant::now() < wait_until, "the node never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(cli(&["user", "list"]).contains("guest"));
    cli(&["user", "add", "app", "--password", "s3cret"]);
    cli(&[
        "permissions",
        "set",
        "--user",
        "app",
        "--configure",
        r"app-.*|amq\.gen-.*",
        "--write",
        r"app-.*|amq\.default",
        "--read",
        "app-.*",
    ]);
    cli(&["user", "add", "idle", "--password", "idle"]);
    let (ok, _, err) = node.cli(&["user", "add", "app", "--password", "again"]);
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = node.cli(&[
        "permissions",
        "set",
        "--user",
        "app",
        "--configure",
        "(",
        "--write",
        "",
        "--read",
        "",
    ]);
    assert!(
        !ok && err.contains("not a valid regular expression"),
        "{err}"
    );
    let listed = cli(&["permissions", "list", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&listed).expect("JSON");
    assert!(
        rows.as_array().is_some_and(|r| r
            .iter()
            .any(|p| p["user"] == "app" && p["read"] == "app-.*")),
        "{listed}"
    );
    run_script_on(&node, dir.path(), "users");
    cli(&["user", "delete", "app"]);
    assert!(!cli(&["user", "list"]).contains("app"));
}

#[test]
fn idempotent_unbind() {
    run_script("idempotent_unbind");
}

#[test]
fn update_secret() {
    run_script("update_secret");
}

#[test]
fn auto_delete_race() {
    run_script("auto_delete_race");
}

#[test]
fn direct_reply_to() {
    run_script("direct_reply_to");
}

#[test]
fn rabbitmq_fidelity() {
    run_script("rabbitmq_fidelity");
}
