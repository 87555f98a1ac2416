//! `warren-bench` against a real `warren node`: each client (the client handle,
//! amqprs, the raw-frame client) runs a small scenario to the end with every message
//! checked off exactly once, and a broker that refuses the bench is one error line.
//!
//! The node is the `warren` binary beside `warren-bench` in the target directory,
//! which a workspace build (`cargo build`, `cargo nextest run --workspace`) makes;
//! `cargo nextest run -p warren-bench` alone uses whatever `warren` was built last.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port that was free a moment ago on loopback.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A `warren node` child process, killed when dropped.
struct Node {
    child: Child,
    cluster: SocketAddr,
    amqp: SocketAddr,
    data_dir: PathBuf,
}

impl Node {
    fn start(data_dir: &Path) -> Node {
        let bench = PathBuf::from(env!("CARGO_BIN_EXE_warren-bench"));
        let warren = bench.with_file_name("warren");
        assert!(
            warren.exists(),
            "{} is missing: build it first (cargo build -p warren)",
            warren.display()
        );
        let cluster: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let amqp: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let log = std::fs::File::create(data_dir.with_extension("log")).expect("log file");
        let child = Command::new(warren)
            .args(["node", "--log", "warn", "--name", "bench-test"])
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--cluster-listen")
            .arg(cluster.to_string())
            .arg("--amqp-listen")
            .arg(amqp.to_string())
            .args(["--http-listen", "off", "--prometheus-listen", "off"])
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("warren node starts");
        let node = Node {
            child,
            cluster,
            amqp,
            data_dir: data_dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(amqp).is_err() || !data_dir.join("cookie").exists() {
            assert!(
                Instant::now() < deadline,
                "the node never listened on {amqp}: {}",
                node.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        node
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.with_extension("log")).unwrap_or_default()
    }

    fn uri(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.amqp)
    }

    /// `warren-bench ARGS` (with --node and --cookie-file of this node): (exit
    /// success, stdout, stderr).
    fn bench(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_warren-bench"))
            .args(args)
            .arg("--node")
            .arg(self.cluster.to_string())
            .arg("--cookie-file")
            .arg(self.data_dir.join("cookie"))
            .output()
            .expect("warren-bench runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs a scenario that must end with every message checked off once.
    fn exactly_once(&self, args: &[&str], client: &str) -> String {
        let (ok, out, err) = self.bench(args);
        assert!(
            ok,
            "{args:?} failed: {err}\n{out}\nnode log:\n{}",
            self.log()
        );
        assert!(
            out.lines().next().is_some_and(|l| l.contains(client)),
            "{args:?}: the report names its client ({client}): {out}"
        );
        assert!(
            out.contains("exactly-once check: missing 0, duplicates 0, refused 0, foreign 0"),
            "{args:?}: {out}"
        );
        assert!(out.contains("bench CPU"), "{out}");
        out
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn every_client_runs_its_scenarios_to_the_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&dir.path().join("node"));
    let uri = node.uri();

    let out = node.exactly_once(&["--count", "3000", "--queue", "h"], "client handle");
    assert!(out.contains("latency p50"), "{out}");
    node.exactly_once(
        &[
            "--amqp",
            &uri,
            "--count",
            "3000",
            "--queue",
            "lib",
            "--persistent",
            "--confirm",
            "--window",
            "100",
            "--prefetch",
            "50",
        ],
        "amqprs",
    );
    node.exactly_once(
        &[
            "--amqp",
            &uri,
            "--count",
            "2000",
            "--publishers",
            "2",
            "--consumers",
            "2",
            "--queues",
            "2",
            "--queue",
            "lib4",
            "--rate",
            "4000",
        ],
        "amqprs",
    );
    node.exactly_once(
        &[
            "--amqp",
            &uri,
            "--raw-frames",
            "--count",
            "3000",
            "--queue",
            "raw",
            "--confirm",
            "--window",
            "100",
        ],
        "raw frames",
    );
    // A fill through the library, drained by the raw-frame client.
    node.exactly_once(
        &[
            "--amqp",
            &uri,
            "--count",
            "2000",
            "--consumers",
            "0",
            "--queue",
            "fill",
        ],
        "amqprs",
    );
    let out = node.exactly_once(
        &[
            "--amqp",
            &uri,
            "--raw-frames",
            "--count",
            "2000",
            "--publishers",
            "0",
            "--drain-only",
            "--queue",
            "fill",
        ],
        "raw frames",
    );
    assert!(out.contains("consumed 2000 msgs"), "{out}");
}

#[test]
fn a_broker_that_refuses_the_bench_is_one_error_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&dir.path().join("node"));
    let wrong = format!("amqp://guest:wrong@{}/%2f", node.amqp);
    for client in [&[][..], &["--raw-frames"][..]] {
        let args = [&["--amqp", wrong.as_str(), "--count", "10"][..], client].concat();
        let (ok, _, err) = node.bench(&args);
        assert!(!ok, "{args:?} should fail");
        let first = err.lines().next().unwrap_or_default();
        assert!(first.starts_with("error:"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // No such vhost: the broker closes the connection with its reason.
    let vhost = format!("amqp://guest:guest@{}/nowhere", node.amqp);
    let (ok, _, err) = node.bench(&["--amqp", &vhost, "--count", "10"]);
    assert!(!ok && err.starts_with("error:"), "{err}");
    let (ok, _, err) = node.bench(&["--raw-frames", "--count", "10"]);
    assert!(!ok && err.contains("--amqp"), "{err}");
}
