//! `warren shell`: every command through `--eval`, the crash-and-restart story, and one
//! interactive session through a pseudo-terminal (tmux) for completion and history.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{eventually, free_port, NodeProcess};

fn start() -> (tempfile::TempDir, NodeProcess) {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProcess::start(&dir.path().join("data"), free_port());
    (dir, node)
}

/// `warren shell --eval CMD` (plus `extra` flags): (success, stdout, stderr).
fn eval(node: &NodeProcess, cmd: &str, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec!["shell", "--eval", cmd];
    args.extend_from_slice(extra);
    node.cli(&args)
}

fn ok(node: &NodeProcess, cmd: &str) -> String {
    let (success, out, err) = eval(node, cmd, &[]);
    assert!(success, "`{cmd}` failed: {err}");
    assert!(err.is_empty(), "`{cmd}` wrote to stderr: {err}");
    out
}

fn json(node: &NodeProcess, cmd: &str) -> serde_json::Value {
    let (success, out, err) = eval(node, cmd, &["--json"]);
    assert!(success, "`{cmd} --json` failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("`{cmd} --json` is not JSON ({e}): {out}"))
}

/// Waits for the node to answer, then declares `queue` with `n` persistent messages.
async fn queue_with_messages(node: &NodeProcess, queue: &str, n: usize) {
    let client = node.client().await;
    client
        .declare_queue(
            queue,
            warren::client::QueueOptions {
                durable: true,
                ..Default::default()
            },
        )
        .await
        .expect("declare");
    for i in 0..n {
        let confirm = client
            .publish(
                "",
                queue,
                format!("message {i}"),
                warren::client::PublishOptions {
                    persistent: true,
                    ..Default::default()
                },
            )
            .await
            .expect("publish");
        confirm.await.expect("confirmed");
    }
}

fn restarts(tree: &serde_json::Value) -> u64 {
    tree["restarts"].as_u64().expect("restarts is a number")
}

fn message_count(node: &NodeProcess, queue: &str) -> u64 {
    let queues = json(node, "queues");
    queues
        .as_array()
        .expect("an array")
        .iter()
        .find(|q| q["name"] == queue)
        .and_then(|q| q["messages"].as_u64())
        .unwrap_or_else(|| panic!("no queue {queue} in {queues}"))
}

/// Polls `check` until it holds (bounded), for things that settle asynchronously.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_a_queue_and_watch_it_come_back_with_its_messages() {
    let (_dir, node) = start();
    queue_with_messages(&node, "orders", 7).await;

    let tree = ok(&node, "tree");
    for line in [
        "node  [supervisor one_for_one]  running",
        "├── vhost:/  [supervisor one_for_all]",
        "queues:/  [supervisor one_for_one]",
        "queue:/orders  [queue]  running  restarts=0  mailbox=-",
        "exchange:/amq.topic  [exchange]  running",
        "├── gateway@test  [gateway]  running",
        "├── amqp  [supervisor one_for_one]  running",
        "amqp-acceptor  [amqp acceptor]  running",
        "└── management@test  [management peer]  running",
    ] {
        assert!(tree.contains(line), "tree lacks {line:?}:\n{tree}");
    }
    assert_eq!(restarts(&json(&node, "tree queue:/orders")), 0);

    assert_eq!(ok(&node, "crash queue:/orders"), "crashed queue:/orders\n");
    eventually("the queue restarted once", || {
        let t = json(&node, "tree queue:/orders");
        restarts(&t) == 1 && t["status"] == "running"
    });
    assert!(ok(&node, "tree queue:/orders").contains("restarts=1"));
    assert_eq!(message_count(&node, "orders"), 7, "the queue lost messages");

    // `stop` is a normal exit: the permanent queue is restarted all the same.
    assert_eq!(ok(&node, "stop queue:/orders"), "stopped queue:/orders\n");
    eventually("the queue restarted twice", || {
        restarts(&json(&node, "tree queue:/orders")) == 2
    });
    assert_eq!(message_count(&node, "orders"), 7);

    // An exchange crashes and comes back too; the tree below `exchanges:/` shows it.
    ok(&node, "crash exchange:/amq.direct");
    eventually("the exchange restarted", || {
        restarts(&json(&node, "tree exchange:/amq.direct")) == 1
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_answers() {
    let (_dir, node) = start();
    queue_with_messages(&node, "jobs", 3).await;
    let client = node.client().await;
    let mut consumer = client
        .consume(
            "jobs",
            warren::client::ConsumeOptions {
                prefetch: 10,
                tag: "worker-1".into(),
                ..Default::default()
            },
        )
        .await
        .expect("consume");
    for _ in 0..3 {
        consumer.next().await.expect("a delivery").expect("ok");
    }

    let nodes = ok(&node, "nodes");
    assert!(
        nodes.contains("test") && nodes.contains("disk") && nodes.contains("leader"),
        "{nodes}"
    );
    assert_eq!(json(&node, "nodes")[0]["this_node"], true);

    let queues = ok(&node, "queues");
    assert!(
        queues.lines().next().unwrap_or("").contains("memory"),
        "{queues}"
    );
    assert!(queues.contains("jobs"), "{queues}");
    assert!(ok(&node, "exchanges").contains("amq.topic"));
    let bindings = json(&node, "bindings");
    assert!(bindings.is_array(), "{bindings}");

    let inspect = ok(&node, "inspect queue:/jobs");
    for part in [
        "supervisor:  queues:/ (one_for_one)",
        "messages:    0 ready, 3 unacked",
        "worker-1  channel=",
        "prefetch=10 unacked=3 credit=7",
    ] {
        assert!(inspect.contains(part), "inspect lacks {part:?}:\n{inspect}");
    }
    let details = json(&node, "inspect queue:/jobs");
    assert_eq!(details["queue"]["stats"]["unacked"], 3);
    assert!(ok(&node, "inspect vhost:/").contains("supervisor:  node (one_for_one)"));

    let log = ok(&node, "log --level debug --lines 200");
    assert!(log.contains("session opened"), "{log}");
    let lines = json(&node, "log --level info --lines 3");
    assert!(lines.as_array().is_some_and(|l| l.len() <= 3), "{lines}");

    assert!(ok(&node, "help").contains("trace QUEUE [--count N]"));
    assert!(ok(&node, "help crash").starts_with("crash NAME"));
    assert_eq!(ok(&node, "quit"), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_tails_the_messages_entering_a_queue() {
    let (_dir, node) = start();
    queue_with_messages(&node, "audit", 0).await;
    let tracer = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["shell", "--eval", "trace audit --count 3", "--node"])
        .arg(node.addr.to_string())
        .arg("--cookie-file")
        .arg(node.cookie_file())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the tracer starts");
    // Publish until the tracer has seen three (it may attach after the first ones).
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(tracer.wait_with_output());
    });
    let client = node.client().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let output = loop {
        client
            .publish("", "audit", "order #42 shipped", Default::default())
            .await
            .expect("publish")
            .await
            .expect("confirm");
        if let Ok(done) = done_rx.recv_timeout(Duration::from_millis(100)) {
            break done.expect("tracer output");
        }
        assert!(Instant::now() < deadline, "the tracer never saw 3 messages");
    };
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let traced: Vec<_> = out.lines().filter(|l| l.starts_with("audit ")).collect();
    assert_eq!(traced.len(), 3, "{out}");
    assert!(
        traced[0].contains("routing_key=audit size=17 body=\"order #42 shipped\""),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistakes_get_one_line_and_a_failing_exit() {
    let (_dir, node) = start();
    let _ = node.client().await; // the node is up
    for (cmd, expected) in [
        ("frobnicate", "unknown command 'frobnicate'"),
        ("inspect queue:/nope", "no actor 'queue:/nope' on this node"),
        ("crash nope", "no actor 'nope' on this node"),
        ("stop node", "the root supervisor cannot be stopped"),
        (
            "tree --node elsewhere",
            "no member 'elsewhere' in this cluster (members: test)",
        ),
        ("trace nope", "no queue 'nope'"),
        ("log --level loud", "unknown log level 'loud'"),
        ("inspect", "inspect needs NAME"),
    ] {
        let (success, out, err) = eval(&node, cmd, &[]);
        assert!(!success, "`{cmd}` succeeded: {out}");
        assert!(
            err.contains(expected),
            "`{cmd}` said {err:?}, not {expected:?}"
        );
        assert_eq!(err.trim().lines().count(), 1, "`{cmd}`: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // A node that is not there.
    let down = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args([
            "shell",
            "--eval",
            "tree",
            "--node",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .arg("--cookie-file")
        .arg(node.cookie_file())
        .output()
        .expect("runs");
    assert!(!down.status.success());
    let err = String::from_utf8_lossy(&down.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// tmux drives the real prompt: Tab completes a command and an actor name, the
/// up arrow recalls the previous line, an unknown command leaves the prompt alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_interactive_prompt_completes_and_remembers() {
    let (dir, node) = start();
    queue_with_messages(&node, "payments", 2).await;
    let session = format!("warren-shell-test-{}", std::process::id());
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .args(args)
            .output()
            .expect("tmux runs (the test command installs it)")
    };
    let shell = format!(
        "HOME={} {} shell --node {} --cookie-file {}",
        dir.path().display(),
        env!("CARGO_BIN_EXE_warren"),
        node.addr,
        node.cookie_file().display()
    );
    let started = tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "200",
        "-y",
        "50",
        &shell,
    ]);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    struct Kill(String);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("tmux")
                .args(["kill-session", "-t", &self.0])
                .output();
        }
    }
    let _guard = Kill(session.clone());
    let screen = || {
        String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", &session]).stdout).into_owned()
    };
    let wait_for = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = screen();
            if s.contains(what) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the screen never showed {what:?}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let keys = |k: &[&str]| {
        let mut args = vec!["send-keys", "-t", session.as_str()];
        args.extend_from_slice(k);
        assert!(tmux(&args).status.success());
    };
    wait_for("type `help` for the commands");

    // "insp<Tab>" completes to "inspect ", "queue:/pay<Tab>" to the queue's actor name.
    keys(&["insp", "Tab"]);
    wait_for("> inspect");
    keys(&["queue:/pay", "Tab"]);
    wait_for("> inspect queue:/payments");
    keys(&["Enter"]);
    wait_for("messages:    2 ready, 0 unacked");

    // A mistake: one line, and the prompt is still there.
    keys(&["bogus", "Enter"]);
    wait_for("error: unknown command 'bogus'");

    // History: Up twice recalls the inspect line.
    keys(&["Up", "Up", "Enter"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while screen().matches("messages:    2 ready").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "history did not recall the line:\n{}",
            screen()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    keys(&["quit", "Enter"]);
    let history = dir.path().join(".warren_shell_history");
    eventually("the history file is written", || {
        std::fs::read_to_string(&history).is_ok_and(|h| h.contains("inspect queue:/payments"))
    });
}
