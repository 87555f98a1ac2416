//! The management HTTP API and the Prometheus metrics against a real node: each test
//! starts a `warren node` with its management and metrics ports on, and runs a
//! Python script of `tests/management/` against it. `api.py` checks RabbitMQ 3.10's
//! answers with plain HTTP (access control included); `rabbitmqadmin.py` drives
//! RabbitMQ's own CLI, rabbitmqadmin v2, unchanged.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_port, NodeProcess};

/// A script that has not finished by then is hung (its own waits are 20 s at most);
/// this bounds a hang, it is not a measure of speed.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(300);

/// The rabbitmqadmin the test command installs (`scripts/test`), or `RABBITMQADMIN`.
fn rabbitmqadmin() -> PathBuf {
    let path = std::env::var_os("RABBITMQADMIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/bin/rabbitmqadmin")
        });
    assert!(
        path.exists(),
        "no rabbitmqadmin at {}: run the README's test command, ./scripts/test, which installs \
         it (cargo install rabbitmqadmin --version 2.35.0 --root target/tools), or set RABBITMQADMIN",
        path.display()
    );
    path
}

/// Starts a node with its HTTP ports on, runs `tests/management/<name>.py AMQP HTTP
/// PROMETHEUS`, and fails with the script's output and the node's log unless it
/// prints "ok".
fn run_script(name: &str, env: &[(&str, &Path)]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (http, prometheus) = (free_port(), free_port());
    let http_flag = format!("127.0.0.1:{http}");
    let prometheus_flag = format!("127.0.0.1:{prometheus}");
    let node = NodeProcess::start_with(
        &dir.path().join("data"),
        free_port(),
        &[
            "--name",
            "mgmt",
            "--http-listen",
            &http_flag,
            "--prometheus-listen",
            &prometheus_flag,
        ],
    );
    let logs = || node.log();
    wait_for_port(http, &logs);
    let args = [
        node.amqp_addr.port().to_string(),
        http.to_string(),
        prometheus.to_string(),
    ];
    run_python(name, &args, env, dir.path(), &logs);
    drop(node);
}

/// Runs `tests/management/<name>.py ARGS...`; fails with its output and `logs`
/// unless it prints "ok".
fn run_python(
    name: &str,
    args: &[String],
    env: &[(&str, &Path)],
    dir: &Path,
    logs: &dyn Fn() -> String,
) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/management")
        .join(format!("{name}.py"));
    let env: Vec<(&str, &std::ffi::OsStr)> = env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
    let end = common::run_script_to_end(&script, args, &env, dir, SCRIPT_DEADLINE);
    let (status, stdout, stderr) = (&end.status, &end.stdout, &end.stderr);
    if !end.passed() {
        panic!(
            "tests/management/{name}.py {status:?}\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}\n--- node logs:\n{}",
            logs()
        );
    }
}

/// Waits until something accepts connections on `port` (bounded).
fn wait_for_port(port: u16, log: &dyn Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the node never served: {}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_cluster_is_managed_through_any_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (p1, p2) = (free_port(), free_port());
    let (h1, h2) = (free_port(), free_port());
    let start = |name: &str, port: u16, http: u16, seeds: &[u16], extra: &[&str]| {
        let seeds: Vec<String> = seeds.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let http = format!("127.0.0.1:{http}");
        let mut args = vec!["--name", name, "--http-listen", &http];
        args.extend(extra);
        let seeds = seeds.join(",");
        if !seeds.is_empty() {
            args.extend(["--seeds", &seeds]);
        }
        NodeProcess::start_with(&dir.path().join(name), port, &args)
    };
    let n1 = start("n1", p1, h1, &[], &[]);
    // n2's memory alarm is up from its start (a watermark below any process's size):
    // the cluster-wide alarm check must see it through n1.
    let n2 = start("n2", p2, h2, &[p1], &["--memory-high-watermark", "1MiB"]);
    let logs = || format!("n1:\n{}\nn2:\n{}", n1.log(), n2.log());
    wait_for_port(h1, &logs);
    wait_for_port(h2, &logs);
    run_python(
        "cluster",
        &[
            h1.to_string(),
            h2.to_string(),
            n1.amqp_addr.port().to_string(),
            n2.amqp_addr.port().to_string(),
        ],
        &[],
        dir.path(),
        &logs,
    );
}

#[test]
fn the_management_api_answers_as_rabbitmq_and_enforces_access() {
    run_script("api", &[]);
}

/// The browser test's tools: Chromium, its driver and Selenium, which the test
/// command installs. Fails (never skips) without them.
fn require_browser() {
    for (tool, path) in [
        ("Chromium", "/usr/bin/chromium"),
        ("chromedriver", "/usr/bin/chromedriver"),
    ] {
        let path = std::env::var(tool.to_uppercase()).unwrap_or_else(|_| path.to_string());
        assert!(
            Path::new(&path).exists(),
            "no {tool} at {path}: the web UI test needs it; run the README's test command, \
             ./scripts/test, which installs it (apt-get install chromium chromium-driver)"
        );
    }
    let selenium = Command::new("python3")
        .args(["-c", "import selenium, pika"])
        .status()
        .expect("python3 runs");
    assert!(
        selenium.success(),
        "python3 cannot import selenium and pika: run ./scripts/test, which installs them"
    );
}

#[test]
fn the_web_ui_works_in_a_real_browser() {
    require_browser();
    run_script("ui", &[]);
}

#[test]
fn rabbitmqadmin_v2_works_unchanged() {
    let binary = rabbitmqadmin();
    run_script("rabbitmqadmin", &[("RABBITMQADMIN", &binary)]);
}
