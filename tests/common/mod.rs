//! Starting and stopping real `warren node` processes for tests.

#![allow(dead_code)]

pub mod lapin_ops;
pub mod netns;
pub mod raw_amqp;

use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use warren::client::{Client, ConnectOptions};

/// Runs `tests/amqp/<name>.py` with `args`; fails with its output unless it prints
/// "ok" last and exits 0. Returns what it printed.
pub fn python_script(name: &str, args: &[String]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/amqp")
        .join(format!("{name}.py"));
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3 runs (./scripts/test installs pika)");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "tests/amqp/{name}.py failed\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}"
    );
    stdout.into_owned()
}

/// How a script run by [`run_script_to_end`] ended.
pub struct ScriptEnd {
    /// Its exit status; `None` if it was killed at the deadline (hung).
    pub status: Option<ExitStatus>,
    /// What it printed.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

impl ScriptEnd {
    /// It exited 0 and printed "ok" last.
    pub fn passed(&self) -> bool {
        self.status.is_some_and(|s| s.success())
            && self.stdout.lines().last().map(str::trim) == Some("ok")
    }
}

/// Runs the Python script `script` with `args` and `env` to its end, its output in
/// files of `dir`, killing it if it has not ended by `deadline` (which bounds a hang;
/// it is not a measure of speed).
pub fn run_script_to_end(
    script: &Path,
    args: &[String],
    env: &[(&str, &std::ffi::OsStr)],
    dir: &Path,
    deadline: Duration,
) -> ScriptEnd {
    use std::fs::File;
    assert!(script.exists(), "no script {}", script.display());
    let (stdout_path, stderr_path) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = Command::new("python3")
        .arg(script)
        .args(args)
        .envs(env.iter().copied())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(File::create(&stdout_path).expect("stdout file"))
        .stderr(File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("python3 runs");
    let deadline = Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the script") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let read = |path: &Path| {
        std::fs::read(path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    ScriptEnd {
        status,
        stdout: read(&stdout_path),
        stderr: read(&stderr_path),
    }
}

/// A `tests/amqp/<name>.py` run in the background, for a test that acts while the
/// script runs (kills a node under a consumer, say); killed when dropped.
pub struct PythonRun {
    name: String,
    child: Child,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    /// What it printed so far.
    printed: String,
}

impl PythonRun {
    /// Starts `tests/amqp/<name>.py` with `args`.
    pub fn start(name: &str, args: &[String]) -> PythonRun {
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/amqp")
            .join(format!("{name}.py"));
        let mut child = Command::new("python3")
            .arg(&script)
            .args(args)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs (./scripts/test installs pika)");
        let stdout = std::io::BufReader::new(child.stdout.take().expect("piped"));
        PythonRun {
            name: name.to_string(),
            child,
            stdout,
            printed: String::new(),
        }
    }

    /// Reads what the script prints until a line that starts with `prefix`; fails
    /// with its output if it ends first.
    pub fn until_line(&mut self, prefix: &str) -> String {
        use std::io::BufRead;
        loop {
            let mut line = String::new();
            let read = self.stdout.read_line(&mut line).unwrap_or(0);
            self.printed.push_str(&line);
            if read == 0 {
                let rest = self.finish_output();
                panic!(
                    "tests/amqp/{}.py ended before printing {prefix:?}\n{rest}",
                    self.name
                );
            }
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    /// Writes `line` to the script's standard input.
    pub fn say(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("piped");
        writeln!(stdin, "{line}").expect("the script reads its input");
        stdin.flush().expect("the script reads its input");
    }

    /// Waits for the script to end; fails with its output unless it prints "ok" last
    /// and exits 0. Returns what it printed.
    pub fn finish(mut self) -> String {
        use std::io::Read;
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        self.printed.push_str(&rest);
        let status = self.child.wait().expect("the script ends");
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        assert!(
            status.success() && self.printed.trim_end().ends_with("ok"),
            "tests/amqp/{}.py failed\n--- stdout:\n{}\n--- stderr:\n{stderr}",
            self.name,
            self.printed
        );
        std::mem::take(&mut self.printed)
    }

    fn finish_output(&mut self) -> String {
        use std::io::Read;
        let _ = self.child.wait();
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        format!("--- stdout:\n{}\n--- stderr:\n{stderr}", self.printed)
    }
}

impl Drop for PythonRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `warren node` child process; killed when dropped, so no test leaves one behind.
pub struct NodeProcess {
    child: Option<Child>,
    pub addr: SocketAddr,
    /// Where AMQP 0-9-1 clients connect.
    pub amqp_addr: SocketAddr,
    pub data_dir: PathBuf,
}

/// In a test that is failing (a panic under way), prints what each node logged, as
/// n1, n2, … in order.
pub fn show_logs_if_failing(nodes: &[NodeProcess]) {
    if std::thread::panicking() {
        for (i, node) in nodes.iter().enumerate() {
            eprintln!("----- n{} log -----\n{}", i + 1, node.log());
        }
    }
}

/// A port that was free a moment ago on loopback, below the kernel's ephemeral range
/// (32768 and up): a port the kernel hands out for port 0 may be taken, before the node
/// binds it, as the local port of some process's outgoing connection.
///
/// The port stays this test process's for as long as it runs: tests run in parallel
/// processes, and a node stopped and started again on its port (a restart test) must
/// not find it taken by another test that drew it while it was free. A file per port
/// under the temp dir names the process that drew it; a port of a live process is
/// never drawn again.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering};
    static DRAWN: AtomicU64 = AtomicU64::new(0);
    loop {
        let draw = RandomState::new().hash_one(DRAWN.fetch_add(1, Ordering::Relaxed));
        let port = 10_000 + (draw % 22_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() && reserve(port) {
            return port;
        }
    }
}

/// Marks `port` as this process's; false when a live process holds it.
fn reserve(port: u16) -> bool {
    let dir = std::env::temp_dir().join("warren-test-ports");
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join(port.to_string());
    let me = std::process::id().to_string();
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&file)
        {
            Ok(mut f) => {
                use std::io::Write as _;
                return f.write_all(me.as_bytes()).is_ok();
            }
            Err(_) => {
                let holder = std::fs::read_to_string(&file).unwrap_or_default();
                // (Empty: being written by another process right now.)
                let alive = Path::new("/proc").join(holder.trim()).exists();
                if holder.is_empty() || holder == me || alive {
                    return false;
                }
                // Left by a process that ended: taken over.
                let _ = std::fs::remove_file(&file);
            }
        }
    }
    false
}

/// The cookie every test node gets: a test process talks to all its nodes through one
/// client transport, which presents one cookie (see `warren_cluster::connect`).
pub const TEST_COOKIE: &str = "warren-test-cookie-shared-by-every-test-node";

impl NodeProcess {
    pub fn start(data_dir: &Path, port: u16) -> NodeProcess {
        NodeProcess::start_with(data_dir, port, &["--name", "test"])
    }

    /// A cluster member: its name, its seeds' ports, its role (`disk` or `ram`).
    pub fn start_member(
        data_dir: &Path,
        port: u16,
        name: &str,
        seeds: &[u16],
        role: &str,
    ) -> NodeProcess {
        NodeProcess::start_member_with_env(data_dir, port, name, seeds, role, &[])
    }

    /// [`NodeProcess::start_member`] with `env` added to the node's environment (a
    /// fault-injection hook, say).
    pub fn start_member_with_env(
        data_dir: &Path,
        port: u16,
        name: &str,
        seeds: &[u16],
        role: &str,
        env: &[(&str, &str)],
    ) -> NodeProcess {
        let seeds: Vec<String> = seeds.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let seeds = seeds.join(",");
        NodeProcess::start_with_env(
            data_dir,
            port,
            &["--name", name, "--seeds", &seeds, "--role", role],
            env,
        )
    }

    /// A node with `args` added to the usual test flags.
    pub fn start_with(data_dir: &Path, port: u16, args: &[&str]) -> NodeProcess {
        NodeProcess::start_with_env(data_dir, port, args, &[])
    }

    /// [`NodeProcess::start_with`] with `env` added to the node's environment.
    pub fn start_with_env(
        data_dir: &Path,
        port: u16,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> NodeProcess {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let amqp_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        NodeProcess::spawn(None, addr, amqp_addr, data_dir, args, env)
    }

    /// A cluster member inside network namespace `netns`, listening on `ip` (an
    /// address that exists only there): its name, its seeds, its role.
    pub fn start_in_netns(
        netns: &str,
        ip: std::net::Ipv4Addr,
        data_dir: &Path,
        name: &str,
        seeds: &[SocketAddr],
        role: &str,
    ) -> NodeProcess {
        let seeds: Vec<String> = seeds.iter().map(|s| s.to_string()).collect();
        let seeds = seeds.join(",");
        NodeProcess::spawn(
            Some(netns),
            (ip, 4370).into(),
            (ip, 5672).into(),
            data_dir,
            &["--name", name, "--seeds", &seeds, "--role", role],
            &[],
        )
    }

    fn spawn(
        netns: Option<&str>,
        addr: SocketAddr,
        amqp_addr: SocketAddr,
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> NodeProcess {
        let cookie = data_dir.join("cookie");
        if !cookie.exists() {
            std::fs::create_dir_all(data_dir).expect("data dir");
            std::fs::write(&cookie, TEST_COOKIE).expect("cookie file");
        }
        // Appended to, so a restarted node's log follows its earlier life.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.with_extension("log"))
            .expect("log file");
        let binary = env!("CARGO_BIN_EXE_warren");
        // `ip netns exec` enters the namespace and then runs the node in its place
        // (the same process: killing it kills the node).
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, binary]);
                c
            }
            None => Command::new(binary),
        };
        // A node that aborts (a crash test's fault-injection hook makes it, on
        // purpose) leaves no core file in the working directory, which is the
        // repository's.
        // SAFETY: setrlimit is async-signal-safe, and nothing else runs between fork
        // and exec.
        unsafe {
            command.pre_exec(|| {
                let no_core = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                if libc::setrlimit(libc::RLIMIT_CORE, &no_core) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .envs(env.iter().copied())
            // WARREN_TEST_LOG sets the nodes' log filter (`warn` when unset).
            .args(["node", "--log"])
            .arg(std::env::var("WARREN_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--cluster-listen")
            .arg(addr.to_string())
            .arg("--amqp-listen")
            .arg(amqp_addr.to_string())
            // Many nodes run at once: no management or metrics port unless a test
            // asks for one.
            .args(
                ["--http-listen", "--prometheus-listen"]
                    .into_iter()
                    .filter(|flag| !args.contains(flag))
                    .flat_map(|flag| [flag, "off"]),
            )
            // The node logs to stdout; panics go to stderr: both land in the log.
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("warren node starts");
        NodeProcess {
            child: Some(child),
            addr,
            amqp_addr,
            data_dir: data_dir.to_path_buf(),
        }
    }

    pub fn cookie_file(&self) -> PathBuf {
        self.data_dir.join("cookie")
    }

    /// Connects a client, retrying while the node starts (bounded).
    pub async fn client(&self) -> Client {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let attempt = match ConnectOptions::new(self.addr, &self.cookie_file()) {
                Ok(options) => Client::connect(options).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match attempt {
                Ok(c) => return c,
                Err(e) if Instant::now() > deadline => {
                    panic!("node at {} never served: {e}", self.addr)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// What the node has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.with_extension("log")).unwrap_or_default()
    }

    /// Whether the process has exited (e.g. after `warren cluster leave`).
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().ok().flatten().is_some(),
            None => true,
        }
    }

    /// How the process ended, once it has (`None` while it runs, or once killed by
    /// [`NodeProcess::kill`]).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// The node's process id while it runs (`None` once killed by
    /// [`NodeProcess::kill`]).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: the node gets no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The CLI against this node: (exit success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        cli_at(self.addr, &self.cookie_file(), args)
    }
}

/// The CLI against the node at `addr`: (exit success, stdout, stderr).
pub fn cli_at(addr: SocketAddr, cookie_file: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(args)
        .arg("--node")
        .arg(addr.to_string())
        .arg("--cookie-file")
        .arg(cookie_file)
        .output()
        .expect("warren runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits (bounded, 30 s) until `check` holds; a test that needs something to happen
/// eventually does not depend on how fast it happens.
pub fn eventually(what: &str, check: impl FnMut() -> bool) {
    eventually_within(what, Duration::from_secs(30), check)
}

/// [`eventually`], for something that may take longer than 30 s on a slow machine.
pub fn eventually_within(what: &str, bound: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while !check() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// [`eventually`], with `check` saying what it saw when it never happens.
pub fn eventually_or(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match check() {
            Ok(()) => return,
            Err(seen) if Instant::now() >= deadline => panic!("never happened: {what}; {seen}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The rows of `warren cluster status --json` through `node` (none if it fails).
pub fn status_rows(node: &NodeProcess) -> Vec<serde_json::Value> {
    let (ok, out, _) = node.cli(&["cluster", "status", "--json"]);
    if !ok {
        return Vec::new();
    }
    serde_json::from_str(&out).unwrap_or_default()
}

/// (name, health) of every member as `node` sees them, sorted by name.
pub fn members(node: &NodeProcess) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = status_rows(node)
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_string(),
                r["health"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// The metadata leader as `node` sees it (`warren cluster status`), if it knows one.
pub fn leader(node: &NodeProcess) -> Option<String> {
    status_rows(node)
        .iter()
        .find(|r| r["leader"].as_bool() == Some(true))
        .and_then(|r| r["name"].as_str().map(str::to_string))
}

/// `args` through `node`'s CLI, which must succeed; its standard output.
pub fn ok(node: &NodeProcess, args: &[&str]) -> String {
    let (ok, out, err) = node.cli(args);
    assert!(ok, "warren {args:?} failed: {err}");
    out
}

/// The `warren queues --json` row of `queue` as `node` sees it.
pub fn queue_row(node: &NodeProcess, queue: &str) -> Option<serde_json::Value> {
    let (ok, out, _) = node.cli(&["queues", "--json"]);
    if !ok {
        return None;
    }
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
    rows.into_iter().find(|r| r["name"] == queue)
}
