//! Snapshots, locating a child, start-up failure and ordered shutdown.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use ractor::{Actor, ActorStatus};
use tokio::sync::Notify;
use warren_supervisor::{
    ChildSpec, ChildStatus, Restart, Strategy, Supervisor, SupervisorError, SupervisorHandle,
    SupervisorSpec, TreeSnapshot,
};

const WINDOW: Duration = Duration::from_secs(60);
const NODE_TIMEOUT: Duration = Duration::from_secs(2);

fn spec(strategy: Strategy, children: Vec<ChildSpec>) -> SupervisorSpec {
    SupervisorSpec {
        strategy,
        max_restarts: 10,
        within: WINDOW,
        children,
    }
}

#[tokio::test]
async fn snapshot_shows_names_kinds_restarts_and_nested_children() {
    let log = new_log();
    let exchanges = spec(
        Strategy::RestForOne,
        vec![logged_worker(
            "snap:ex/amq.direct",
            "exchange",
            &log,
            Duration::ZERO,
        )],
    );
    let (root, _) = Supervisor::start(
        "snap:root",
        Some("node".into()),
        spec(
            Strategy::OneForOne,
            vec![
                logged_worker("snap:queue:/orders", "queue", &log, Duration::ZERO),
                ChildSpec::supervisor("snap:exchanges", Restart::Permanent, exchanges),
            ],
        ),
        None,
    )
    .await
    .unwrap();
    let root = SupervisorHandle::new(root);

    tell("snap:queue:/orders", WorkerMsg::Panic);
    wait_restarted(&root, "snap:queue:/orders", 1).await;

    let tree = root.snapshot(NODE_TIMEOUT).await.unwrap();
    assert_eq!(tree.name, "snap:root");
    assert_eq!(tree.kind, "node");
    assert_eq!(tree.status, ChildStatus::Running);
    assert_eq!(tree.strategy.as_deref(), Some("one_for_one"));
    assert_eq!(tree.mailbox_len, None);
    assert_eq!(tree.len(), 4);

    let names: Vec<_> = tree.children.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["snap:queue:/orders", "snap:exchanges"]);

    let queue = &tree.children[0];
    assert_eq!((queue.kind.as_str(), queue.restarts), ("queue", 1));
    assert_eq!(queue.status, ChildStatus::Running);
    assert_eq!(queue.strategy, None);
    assert!(queue.children.is_empty());

    let ex = &tree.children[1];
    assert_eq!((ex.kind.as_str(), ex.restarts), ("supervisor", 0));
    assert_eq!(ex.strategy.as_deref(), Some("rest_for_one"));
    assert_eq!(ex.children.len(), 1);
    assert_eq!(ex.children[0].name, "snap:ex/amq.direct");
    assert_eq!(ex.children[0].kind, "exchange");
    assert_eq!(ex.children[0].status, ChildStatus::Running);

    // inspect: which supervisor and strategy a named actor belongs to.
    let loc = root
        .locate("snap:ex/amq.direct", NODE_TIMEOUT)
        .await
        .unwrap()
        .expect("found");
    assert_eq!(loc.supervisor.as_deref(), Some("snap:exchanges"));
    assert_eq!(loc.strategy.as_deref(), Some("rest_for_one"));
    assert_eq!(
        loc.path,
        ["snap:root", "snap:exchanges", "snap:ex/amq.direct"]
    );
    assert!(root
        .locate("snap:nope", NODE_TIMEOUT)
        .await
        .unwrap()
        .is_none());

    // Serialize + Deserialize round trip.
    let cfg = bincode::config::standard();
    let bytes = bincode::serde::encode_to_vec(&tree, cfg).unwrap();
    let (back, _): (TreeSnapshot, usize) = bincode::serde::decode_from_slice(&bytes, cfg).unwrap();
    assert_eq!(back, tree);

    root.shutdown(WAIT).await.unwrap();
}

#[tokio::test]
async fn snapshot_does_not_hang_on_a_busy_nested_supervisor() {
    let (root, _) = Supervisor::start(
        "busy:root",
        None,
        spec(
            Strategy::OneForOne,
            vec![
                worker("busy:leaf", Restart::Permanent),
                ChildSpec::supervisor(
                    "busy:inner",
                    Restart::Permanent,
                    spec(
                        Strategy::OneForAll,
                        vec![worker("busy:inner/leaf", Restart::Permanent)],
                    ),
                ),
                // Flagged as a supervisor but is not one: must be skipped,
                // not asked.
                worker("busy:liar", Restart::Permanent).as_supervisor(),
            ],
        ),
        None,
    )
    .await
    .unwrap();
    let root = SupervisorHandle::new(root);
    let inner = SupervisorHandle::lookup("busy:inner").unwrap();

    // Keep the inner supervisor busy inside a start function until released.
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let slow = {
        let (entered, release) = (entered.clone(), release.clone());
        ChildSpec::new("busy:slow", "worker", Restart::Temporary, move |sup| {
            let (entered, release) = (entered.clone(), release.clone());
            async move {
                entered.notify_one();
                release.notified().await;
                let args = WorkerArgs {
                    name: "busy:slow".into(),
                    ..WorkerArgs::default()
                };
                Actor::spawn_linked(Some("busy:slow".into()), Worker, args, sup)
                    .await
                    .map(|(r, _)| r.get_cell())
            }
        })
    };
    let pending = {
        let inner = inner.clone();
        tokio::spawn(async move { inner.start_child(slow).await })
    };
    entered.notified().await;

    let timeout = Duration::from_millis(200);
    // A hang would trip this outer timeout and fail the test.
    let tree = tokio::time::timeout(WAIT, root.snapshot(timeout))
        .await
        .expect("snapshot returns despite the busy nested supervisor")
        .unwrap();

    let busy = tree.find("busy:inner").expect("inner listed");
    assert_eq!(busy.status, ChildStatus::Running);
    assert!(busy.children.is_empty(), "no answer, no children");
    assert_eq!(
        busy.strategy.as_deref(),
        Some("one_for_all"),
        "from the spec"
    );
    let liar = tree.find("busy:liar").expect("liar listed");
    assert!(liar.children.is_empty() && liar.strategy.is_none());

    release.notify_one();
    pending.await.unwrap().expect("slow child started");
    let tree = root.snapshot(NODE_TIMEOUT).await.unwrap();
    let names: Vec<_> = tree
        .find("busy:inner")
        .unwrap()
        .children
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(names, ["busy:inner/leaf", "busy:slow"]);

    root.shutdown(WAIT).await.unwrap();
}

#[tokio::test]
async fn shutdown_stops_children_in_reverse_order_and_waits() {
    let log = new_log();
    let delay = Duration::from_millis(30);
    let inner = spec(
        Strategy::OneForOne,
        vec![
            logged_worker("down:inner/x", "worker", &log, delay),
            logged_worker("down:inner/y", "worker", &log, delay),
        ],
    );
    let (sup, join) = Supervisor::start(
        "down:sup",
        None,
        spec(
            Strategy::OneForOne,
            vec![
                logged_worker("down:a", "worker", &log, delay),
                ChildSpec::supervisor("down:inner", Restart::Permanent, inner),
                logged_worker("down:b", "worker", &log, delay),
            ],
        ),
        None,
    )
    .await
    .unwrap();
    let sup = SupervisorHandle::new(sup);
    let cells: Vec<_> = sup
        .children()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.cell.unwrap())
        .collect();

    sup.shutdown(WAIT).await.unwrap();
    join.await.unwrap();

    // Every post_stop ran (and slept) before the supervisor was gone.
    assert_eq!(
        read_log(&log),
        ["down:b", "down:inner/y", "down:inner/x", "down:a"]
    );
    for cell in cells {
        assert_eq!(cell.get_status(), ActorStatus::Stopped);
    }
    for name in ["down:sup", "down:a", "down:b", "down:inner", "down:inner/x"] {
        assert!(
            ractor::registry::where_is(name).is_none(),
            "{name} unregistered"
        );
    }
}

#[tokio::test]
async fn start_fails_and_cleans_up_when_a_child_cannot_start() {
    let log = new_log();
    let broken = ChildSpec::new("fail:b", "worker", Restart::Permanent, |_sup| async {
        Err(ractor::SpawnErr::StartupFailed("no disk".into()))
    });
    let err = Supervisor::start(
        "fail:sup",
        None,
        spec(
            Strategy::OneForOne,
            vec![
                logged_worker("fail:a", "worker", &log, Duration::ZERO),
                broken,
            ],
        ),
        None,
    )
    .await
    .expect_err("start fails");
    match err {
        SupervisorError::StartFailed { name, .. } => assert_eq!(name, "fail:b"),
        other => panic!("unexpected error {other:?}"),
    }
    assert_eq!(
        read_log(&log),
        ["fail:a"],
        "the started sibling was stopped"
    );
    assert!(ractor::registry::where_is("fail:sup").is_none());
    assert!(ractor::registry::where_is("fail:a").is_none());

    let dup = Supervisor::start(
        "dup:sup",
        None,
        spec(
            Strategy::OneForOne,
            vec![
                worker("dup:a", Restart::Permanent),
                worker("dup:a", Restart::Permanent),
            ],
        ),
        None,
    )
    .await
    .expect_err("duplicate names refused");
    assert!(matches!(dup, SupervisorError::ChildExists(n) if n == "dup:a"));
}
