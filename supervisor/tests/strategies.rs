//! one_for_one, one_for_all and rest_for_one.

mod common;

use std::time::Duration;

use common::*;
use ractor::{Actor, ActorId};
use warren_supervisor::{
    ChildSpec, ChildStatus, Restart, Strategy, Supervisor, SupervisorHandle, SupervisorSpec,
};

/// Generous window: only the count matters in these tests.
const WINDOW: Duration = Duration::from_secs(60);

async fn start(name: &str, strategy: Strategy, children: Vec<ChildSpec>) -> SupervisorHandle {
    let spec = SupervisorSpec {
        strategy,
        max_restarts: 10,
        within: WINDOW,
        children,
    };
    let (sup, _join) = Supervisor::start(name, None, spec, None)
        .await
        .expect("supervisor starts");
    SupervisorHandle::new(sup)
}

async fn ids(sup: &SupervisorHandle, names: &[&str]) -> Vec<ActorId> {
    let mut out = Vec::new();
    for n in names {
        out.push(cell_of(sup, n).await.get_id());
    }
    out
}

#[tokio::test]
async fn one_for_one_restarts_only_the_failed_child() {
    // One child written with the closure-style constructor, to show that
    // registering under the name is what makes where_is work.
    let name_b = "o41:b".to_string();
    let b = ChildSpec::new(name_b.clone(), "queue", Restart::Permanent, move |sup| {
        let name = name_b.clone();
        async move {
            Actor::spawn_linked(
                Some(name.clone()),
                Worker,
                WorkerArgs {
                    name,
                    ..WorkerArgs::default()
                },
                sup,
            )
            .await
            .map(|(r, _)| r.get_cell())
        }
    });
    let sup = start(
        "o41:sup",
        Strategy::OneForOne,
        vec![
            worker("o41:a", Restart::Permanent),
            b,
            worker("o41:c", Restart::Permanent),
        ],
    )
    .await;
    let before = ids(&sup, &["o41:a", "o41:b", "o41:c"]).await;
    let registered_before = ractor::registry::where_is("o41:b")
        .expect("b registered")
        .get_id();
    assert_eq!(registered_before, before[1]);

    tell("o41:b", WorkerMsg::Fail);
    wait_restarted(&sup, "o41:b", 1).await;

    let after = ids(&sup, &["o41:a", "o41:b", "o41:c"]).await;
    assert_eq!(after[0], before[0], "a untouched");
    assert_ne!(after[1], before[1], "b replaced");
    assert_eq!(after[2], before[2], "c untouched");
    assert_eq!(sup.restart_count("o41:a").await.unwrap(), 0);
    assert_eq!(sup.restart_count("o41:c").await.unwrap(), 0);
    // The registry follows the new instance.
    assert_eq!(
        ractor::registry::where_is("o41:b").map(|c| c.get_id()),
        Some(after[1])
    );
    assert_eq!(ping("o41:b").await, "o41:b");

    sup.shutdown(WAIT).await.unwrap();
}

#[tokio::test]
async fn one_for_all_restarts_all_children() {
    let sup = start(
        "o4a:sup",
        Strategy::OneForAll,
        vec![
            worker("o4a:a", Restart::Permanent),
            worker("o4a:b", Restart::Transient),
            worker("o4a:c", Restart::Permanent),
            worker("o4a:t", Restart::Temporary),
        ],
    )
    .await;
    let before = ids(&sup, &["o4a:a", "o4a:b", "o4a:c"]).await;

    tell("o4a:c", WorkerMsg::Fail);
    wait_restarted(&sup, "o4a:c", 1).await;

    for (i, n) in ["o4a:a", "o4a:b", "o4a:c"].iter().enumerate() {
        let c = child(&sup, n).await;
        assert_eq!(c.restarts, 1, "{n} restarted once");
        assert_eq!(c.status, ChildStatus::Running);
        assert_ne!(c.cell.expect("running").get_id(), before[i], "{n} replaced");
        assert_eq!(ping(n).await, *n);
    }
    // A temporary sibling is stopped with the group but not restarted.
    let t = child(&sup, "o4a:t").await;
    assert_eq!(t.status, ChildStatus::Stopped);
    assert!(t.cell.is_none());
    assert!(ractor::registry::where_is("o4a:t").is_none());

    sup.shutdown(WAIT).await.unwrap();
}

#[tokio::test]
async fn rest_for_one_restarts_the_failed_child_and_later_ones() {
    let names = ["r41:a", "r41:b", "r41:c", "r41:d"];
    let sup = start(
        "r41:sup",
        Strategy::RestForOne,
        names
            .iter()
            .map(|n| worker(n, Restart::Permanent))
            .collect(),
    )
    .await;
    let before = ids(&sup, &names).await;

    tell("r41:b", WorkerMsg::Fail);
    wait_restarted(&sup, "r41:b", 1).await;
    // c and d are restarted in the same pass, before the supervisor answers.
    let after = ids(&sup, &names).await;
    assert_eq!(after[0], before[0], "a (started before b) untouched");
    for i in 1..4 {
        assert_ne!(after[i], before[i], "{} replaced", names[i]);
    }
    assert_eq!(sup.restart_count("r41:a").await.unwrap(), 0);
    assert_eq!(sup.restart_count("r41:c").await.unwrap(), 1);
    assert_eq!(sup.restart_count("r41:d").await.unwrap(), 1);

    // The last child fails: only it restarts.
    tell("r41:d", WorkerMsg::Fail);
    wait_restarted(&sup, "r41:d", 2).await;
    let again = ids(&sup, &names).await;
    assert_eq!(&again[..3], &after[..3]);
    assert_ne!(again[3], after[3]);

    sup.shutdown(WAIT).await.unwrap();
}

#[tokio::test]
async fn panicking_child_is_restarted() {
    let sup = start(
        "pan:sup",
        Strategy::OneForOne,
        vec![
            worker("pan:a", Restart::Permanent),
            worker("pan:b", Restart::Transient),
        ],
    )
    .await;
    let a0 = cell_of(&sup, "pan:a").await.get_id();

    tell("pan:a", WorkerMsg::Panic);
    wait_restarted(&sup, "pan:a", 1).await;
    assert_ne!(cell_of(&sup, "pan:a").await.get_id(), a0);
    assert_eq!(ping("pan:a").await, "pan:a");

    // A panic is abnormal, so a transient child is restarted too.
    tell("pan:b", WorkerMsg::Panic);
    wait_restarted(&sup, "pan:b", 1).await;
    assert_eq!(ping("pan:b").await, "pan:b");

    sup.shutdown(WAIT).await.unwrap();
}
