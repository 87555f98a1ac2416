//! The `warren` command against a real node: commands work, wrong input gets one clear
//! line and a non-zero exit.

mod common;

use common::{free_port, NodeProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_commands_and_their_errors() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("node"), free_port());
    drop(node.client().await); // wait until it serves

    let ok = |args: &[&str]| {
        let (success, out, err) = node.cli(args);
        assert!(success, "{args:?} failed: {err}");
        out
    };
    let fails = |args: &[&str], needle: &str| {
        let (success, _, err) = node.cli(args);
        assert!(!success, "{args:?} should fail");
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error:") && first.contains(needle),
            "{args:?}: expected '{needle}' in: {err}"
        );
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{err}"
        );
    };

    // A publish that reaches no queue says so: a warning, or with --mandatory an error
    // (with or without --confirm).
    let (success, out, err) = node.cli(&[
        "publish",
        "--routing-key",
        "nowhere",
        "--body",
        "x",
        "--count",
        "3",
    ]);
    assert!(success, "{err}");
    assert!(out.contains("published 3 messages"), "{out}");
    assert!(err.contains("3 of 3 messages reached no queue"), "{err}");
    fails(
        &[
            "publish",
            "--routing-key",
            "nowhere",
            "--body",
            "x",
            "--mandatory",
        ],
        "1 of 1 messages reached no queue",
    );
    fails(
        &[
            "publish",
            "--routing-key",
            "nowhere",
            "--body",
            "x",
            "--mandatory",
            "--confirm",
        ],
        "1 of 1 messages reached no queue",
    );

    // A stream through the CLI: declared durable, read from an offset; a consumer
    // without a prefetch, or a stream that is not durable, is refused with a reason.
    ok(&[
        "declare",
        "queue",
        "clicks",
        "--durable",
        "--arg",
        "x-queue-type=stream",
        "--arg",
        "x-max-age=7D",
    ]);
    fails(
        &["declare", "queue", "loose", "--arg", "x-queue-type=stream"],
        "invalid property 'non-durable'",
    );
    let out = ok(&[
        "publish",
        "--routing-key",
        "clicks",
        "--confirm",
        "--count",
        "4",
        "--body",
        "click",
    ]);
    assert!(out.contains("4 confirmed"), "{out}");
    for (offset, count) in [("first", "4"), ("2", "2"), ("last", "1")] {
        let out = ok(&["consume", "clicks", "--offset", offset, "--count", count]);
        assert_eq!(
            out.lines().count(),
            count.parse::<usize>().unwrap(),
            "{offset}: {out}"
        );
    }
    fails(
        &["consume", "clicks", "--prefetch", "0", "--count", "1"],
        "consumer prefetch count is not set",
    );
    fails(
        &["consume", "clicks", "--offset", "10x", "--count", "1"],
        "invalid_stream_offset_arg",
    );

    // A partitioned stream: RabbitMQ's super-stream layout, keys on Kafka's partitions.
    let out = ok(&[
        "stream",
        "declare",
        "views",
        "--partitions",
        "3",
        "--arg",
        "x-max-age=1D",
    ]);
    assert!(out.contains("3 partitions"), "{out}");
    ok(&[
        "stream",
        "declare",
        "views",
        "--partitions",
        "3",
        "--arg",
        "x-max-age=1D",
    ]);
    fails(
        &[
            "stream",
            "declare",
            "views",
            "--partitions",
            "4",
            "--arg",
            "x-max-age=1D",
        ],
        "add-partitions",
    );
    fails(&["stream", "declare", "amq.views"], "not a correct name");
    for (key, partition) in [
        ("abc", "0"),
        ("a-little-bit-long-string", "2"),
        ("foobar", "0"),
    ] {
        let out = ok(&["stream", "publish", "views", "--key", key, "--body", key]);
        assert!(
            out.contains(&format!("(partitions {partition})")),
            "{key}: {out}"
        );
    }
    let out = ok(&[
        "stream",
        "publish",
        "views",
        "--partition",
        "1",
        "--body",
        "one",
        "--count",
        "2",
    ]);
    assert!(out.contains("(partitions 1)"), "{out}");
    let out = ok(&[
        "stream",
        "consume",
        "views",
        "--offset",
        "first",
        "--count",
        "5",
        "--verbose",
    ]);
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "0\t0\tabc\tabc",
            "0\t1\tfoobar\tfoobar",
            "1\t0\t\tone",
            "1\t1\t\tone",
            "2\t0\ta-little-bit-long-string\ta-little-bit-long-string",
        ]
    );
    let out = ok(&["stream", "add-partitions", "views", "--count", "2"]);
    assert!(out.contains("5 partitions"), "{out}");
    let out = ok(&["stream", "partitions", "views"]);
    assert!(out.contains("views-4"), "{out}");
    let out = ok(&[
        "stream",
        "consume",
        "views",
        "--partition",
        "2",
        "--offset",
        "first",
        "--count",
        "1",
    ]);
    assert_eq!(out.trim(), "a-little-bit-long-string");
    fails(
        &[
            "stream",
            "consume",
            "views",
            "--partition",
            "9",
            "--count",
            "1",
        ],
        "no partition 9",
    );
    // A consumer group goes on where it left off: its offsets are kept by the node.
    let group = |count: &str| {
        let out = ok(&[
            "stream",
            "consume",
            "views",
            "--group",
            "billing",
            "--offset",
            "first",
            "--count",
            count,
            "--verbose",
        ]);
        let mut seen: Vec<String> = out
            .lines()
            .map(|l| l.split('\t').take(2).collect::<Vec<_>>().join(":"))
            .collect();
        seen.sort();
        seen
    };
    let first = group("3");
    let rest = group("2");
    let mut all: Vec<String> = first.iter().chain(&rest).cloned().collect();
    all.sort();
    assert_eq!(
        all,
        ["0:0", "0:1", "1:0", "1:1", "2:0"],
        "{first:?} then {rest:?}"
    );
    fails(
        &[
            "stream",
            "consume",
            "views",
            "--group",
            "g",
            "--broadcast",
            "--count",
            "1",
        ],
        "required arguments",
    );
    // The stream as a whole: partitions with their offsets and size, and the groups.
    let info: serde_json::Value =
        serde_json::from_str(&ok(&["stream", "info", "views", "--json"])).unwrap();
    let parts = info["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 5, "{info}");
    assert_eq!(parts[1]["end"], 2, "{info}");
    assert_eq!(parts[1]["first"], 0, "{info}");
    assert!(parts[1]["bytes"].as_u64().unwrap() > 0, "{info}");
    assert!(!info["groups"].as_array().unwrap().is_empty(), "{info}");
    let out = ok(&[
        "stream",
        "consume",
        "views",
        "--from",
        "first",
        "--partition",
        "1",
        "--count",
        "1",
    ]);
    assert_eq!(out, "one\n");
    // The group's offsets and lag, per partition.
    let out = ok(&["stream", "groups", "views", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let billing: Vec<_> = rows.iter().filter(|r| r["group"] == "billing").collect();
    // (Partitions 3 and 4 never had a message for the group to commit.)
    assert_eq!(billing.len(), 3, "{out}");
    let (committed, lag): (u64, u64) = billing.iter().fold((0, 0), |(c, l), r| {
        (
            c + r["committed"].as_u64().unwrap(),
            l + r["lag"].as_u64().unwrap(),
        )
    });
    // 5 messages consumed and acked; none behind (partitions 3 and 4 are empty).
    assert_eq!((committed, lag), (5, 0), "{out}");
    assert!(ok(&["stream", "groups", "views"]).contains("billing"));
    // The key index: messages found by key, in whichever partition they are (with 5
    // partitions now, "abc" hashes to partition 2, where it was 0 of 3).
    for body in ["abc again", "abc thrice"] {
        ok(&["stream", "publish", "views", "--key", "abc", "--body", body]);
    }
    let out = ok(&["stream", "lookup", "views", "--key", "abc"]);
    assert_eq!(out, "0\t0\tabc\n2\t1\tabc again\n2\t2\tabc thrice\n");
    let out = ok(&["stream", "lookup", "views", "--key", "abc", "--limit", "1"]);
    assert_eq!(out, "0\t0\tabc\n2\t1\tabc again\n");
    assert_eq!(ok(&["stream", "lookup", "views", "--key", "nobody"]), "");
    // Tags, filtered on the node.
    for tag in ["red", "blue", "red"] {
        ok(&[
            "stream",
            "publish",
            "views",
            "--partition",
            "3",
            "--tag",
            tag,
            "--body",
            tag,
        ]);
    }
    let out = ok(&[
        "stream",
        "consume",
        "views",
        "--partition",
        "3",
        "--offset",
        "first",
        "--filter",
        "red",
        "--count",
        "2",
    ]);
    assert_eq!(out, "red\nred\n");
    fails(
        &["stream", "publish", "nothing", "--body", "x"],
        "no stream 'nothing'",
    );

    ok(&[
        "declare",
        "exchange",
        "logs",
        "--type",
        "topic",
        "--durable",
    ]);
    ok(&[
        "declare",
        "queue",
        "errors",
        "--durable",
        "--arg",
        "x-max-length=3",
    ]);
    ok(&[
        "bind",
        "--exchange",
        "logs",
        "--queue",
        "errors",
        "--routing-key",
        "*.error",
    ]);
    let out = ok(&[
        "publish",
        "--exchange",
        "logs",
        "--routing-key",
        "db.error",
        "--confirm",
        "--count",
        "5",
        "--body",
        "boom",
    ]);
    assert!(out.contains("5 confirmed"), "{out}");
    // max-length 3 with drop-head keeps the newest three.
    let queues: serde_json::Value = serde_json::from_str(&ok(&["queues", "--json"])).unwrap();
    let errors = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "errors")
        .unwrap();
    assert_eq!(errors["messages"], 3);
    assert_eq!(
        ok(&["consume", "errors", "--count", "3"]),
        "boom\nboom\nboom\n"
    );
    let bindings = ok(&["bindings", "--json"]);
    assert!(bindings.contains("*.error"), "{bindings}");

    // A delayed exchange through the CLI: the message waits in it, then is routed with
    // x-delay negated; without x-delayed-type the declaration is refused.
    ok(&[
        "declare",
        "exchange",
        "later",
        "--type",
        "x-delayed-message",
        "--arg",
        "x-delayed-type=direct",
        "--durable",
    ]);
    fails(
        &[
            "declare",
            "exchange",
            "later2",
            "--type",
            "x-delayed-message",
        ],
        "x-delayed-type",
    );
    ok(&["declare", "queue", "reminders", "--durable"]);
    ok(&[
        "bind",
        "--exchange",
        "later",
        "--queue",
        "reminders",
        "--routing-key",
        "email",
    ]);
    let out = ok(&[
        "publish",
        "--exchange",
        "later",
        "--routing-key",
        "email",
        "--header",
        "x-delay=300",
        "--body",
        "remind me",
        "--confirm",
        "--mandatory",
    ]);
    assert!(out.contains("1 confirmed"), "{out}");
    assert_eq!(ok(&["consume", "reminders", "--count", "1"]), "remind me\n");

    fails(
        &["declare", "exchange", "x", "--type", "fanciful"],
        "fanciful",
    );
    fails(&["consume", "nope", "--count", "1"], "no queue 'nope'");
    // The benchmarks are the warren-bench binary's, not the server's.
    fails(
        &["bench", "--count", "1"],
        "unrecognized subcommand 'bench'",
    );
    fails(
        &[
            "declare",
            "queue",
            "errors",
            "--durable",
            "--arg",
            "x-max-length=4",
        ],
        "inequivalent arg 'x-max-length'",
    );
    fails(
        &["declare", "queue", "bad", "--arg", "x-max-length=-1"],
        "x-max-length",
    );
    fails(&["declare", "queue", "amq.mine"], "reserved prefix");
    fails(
        &[
            "publish",
            "--exchange",
            "missing",
            "--confirm",
            "--body",
            "x",
        ],
        "no exchange 'missing'",
    );
    fails(&["declare", "queue", "x", "--arg", "novalue"], "K=V");

    // A node that is not there, and a wrong cookie.
    let (success, _, err) = std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["queues", "--node", &format!("127.0.0.1:{}", free_port())])
        .arg("--cookie-file")
        .arg(node.cookie_file())
        .output()
        .map(|o| {
            (
                o.status.success(),
                (),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
        .unwrap();
    assert!(!success && err.contains("cannot reach"), "{err}");
    let wrong = dir.path().join("wrong-cookie");
    std::fs::write(&wrong, "not-the-cookie").unwrap();
    let (success, _, err) = std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["queues", "--node", &node.addr.to_string()])
        .arg("--cookie-file")
        .arg(&wrong)
        .output()
        .map(|o| {
            (
                o.status.success(),
                (),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
        .unwrap();
    assert!(!success && err.contains("cookie"), "{err}");
}
