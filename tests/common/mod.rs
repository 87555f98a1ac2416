//! Starting and stopping real `warren node` processes for tests.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use warren::client::{Client, ConnectOptions};

/// A `warren node` child process; killed when dropped, so no test leaves one behind.
pub struct NodeProcess {
    child: Option<Child>,
    pub addr: SocketAddr,
    /// Where AMQP 0-9-1 clients connect.
    pub amqp_addr: SocketAddr,
    pub data_dir: PathBuf,
}

/// A port that was free a moment ago on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The cookie every test node gets: a test process talks to all its nodes through one
/// client transport, which presents one cookie (see `warren_cluster::connect`).
pub const TEST_COOKIE: &str = "warren-test-cookie-shared-by-every-test-node";

impl NodeProcess {
    pub fn start(data_dir: &Path, port: u16) -> NodeProcess {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let amqp_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let cookie = data_dir.join("cookie");
        if !cookie.exists() {
            std::fs::create_dir_all(data_dir).expect("data dir");
            std::fs::write(&cookie, TEST_COOKIE).expect("cookie file");
        }
        let log = std::fs::File::create(data_dir.with_extension("log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(["node", "--name", "test", "--log", "warn"])
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--cluster-listen")
            .arg(addr.to_string())
            .arg("--amqp-listen")
            .arg(amqp_addr.to_string())
            .stdout(Stdio::null())
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

    /// SIGKILL: the node gets no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The CLI against this node: (exit success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(args)
            .arg("--node")
            .arg(self.addr.to_string())
            .arg("--cookie-file")
            .arg(self.cookie_file())
            .output()
            .expect("warren runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
