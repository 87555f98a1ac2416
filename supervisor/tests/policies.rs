//! Restart policies, restart intensity, failed restarts.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use ractor::{Actor, ActorStatus};
use warren_supervisor::{
    ChildSpec, ChildStatus, Restart, Strategy, Supervisor, SupervisorHandle, SupervisorSpec,
};

const WINDOW: Duration = Duration::from_secs(60);

async fn start(name: &str, max_restarts: u32, children: Vec<ChildSpec>) -> SupervisorHandle {
    let spec = SupervisorSpec {
        strategy: Strategy::OneForOne,
        max_restarts,
        within: WINDOW,
        children,
    };
    let (sup, _join) = Supervisor::start(name, None, spec, None)
        .await
        .expect("supervisor starts");
    SupervisorHandle::new(sup)
}

#[tokio::test]
async fn permanent_child_restarts_after_normal_stop_failure_and_kill() {
    let sup = start("perm:sup", 10, vec![worker("perm:a", Restart::Permanent)]).await;

    tell("perm:a", WorkerMsg::StopNormally);
    wait_restarted(&sup, "perm:a", 1).await;

    tell("perm:a", WorkerMsg::Fail);
    wait_restarted(&sup, "perm:a", 2).await;

    cell_of(&sup, "perm:a").await.kill();
    wait_restarted(&sup, "perm:a", 3).await;
    assert_eq!(ping("perm:a").await, "perm:a");

    sup.shutdown(WAIT).await.unwrap();
}

#[tokio::test]
async fn transient_child_restarts_only_after_abnormal_exit() {
    let sup = start(
        "tran:sup",
        10,
        vec![
            worker("tran:normal", Restart::Transient),
            worker("tran:failed", Restart::Transient),
            worker("tran:killed", Restart::Transient),
        ],
    )
    .await;

    tell("tran:failed", WorkerMsg::Fail);
    wait_restarted(&sup, "tran:failed", 1).await;

    // ActorCell::kill reports ActorTerminated("killed"): abnormal for us.
    cell_of(&sup, "tran:killed").await.kill();
    wait_restarted(&sup, "tran:killed", 1).await;

    tell("tran:normal", WorkerMsg::StopNormally);
    wait_until("normal transient exit recorded", || async {
        let c = child(&sup, "tran:normal").await;
        c.status == ChildStatus::Stopped && c.cell.is_none()
    })
    .await;
    // A restart would have happened in the same step that cleared the cell.
    // A later failure of a sibling, processed after it, shows the
    // supervisor moved on without revisiting the stopped child.
    tell("tran:failed", WorkerMsg::Fail);
    wait_restarted(&sup, "tran:failed", 2).await;
    let c = child(&sup, "tran:normal").await;
    assert_eq!(c.restarts, 0);
    assert_eq!(c.status, ChildStatus::Stopped);
    assert!(ractor::registry::where_is("tran:normal").is_none());

    sup.shutdown(WAIT).await.unwrap();
}

#[tokio::test]
async fn temporary_child_is_never_restarted() {
    let sup = start(
        "temp:sup",
        10,
        vec![
            worker("temp:failed", Restart::Temporary),
            worker("temp:normal", Restart::Temporary),
            worker("temp:witness", Restart::Permanent),
        ],
    )
    .await;

    tell("temp:failed", WorkerMsg::Fail);
    tell("temp:normal", WorkerMsg::StopNormally);
    wait_until("both temporary exits recorded", || async {
        child(&sup, "temp:failed").await.status == ChildStatus::Failed
            && child(&sup, "temp:normal").await.cell.is_none()
    })
    .await;
    // As above: the supervisor moves on and the temporaries stay down.
    tell("temp:witness", WorkerMsg::Fail);
    wait_restarted(&sup, "temp:witness", 1).await;

    let failed = child(&sup, "temp:failed").await;
    assert_eq!((failed.status, failed.restarts), (ChildStatus::Failed, 0));
    let normal = child(&sup, "temp:normal").await;
    assert_eq!((normal.status, normal.restarts), (ChildStatus::Stopped, 0));

    sup.shutdown(WAIT).await.unwrap();
}

#[tokio::test]
async fn exceeding_intensity_stops_children_and_fails_to_the_parent() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (probe, _) = Actor::spawn(None, Probe, seen.clone()).await.unwrap();
    let spec = SupervisorSpec {
        strategy: Strategy::OneForOne,
        max_restarts: 2,
        within: WINDOW,
        children: vec![
            worker("int:crashy", Restart::Permanent),
            worker("int:bystander", Restart::Permanent),
        ],
    };
    let (sup, join) = Supervisor::start("int:sup", None, spec, Some(probe.get_cell()))
        .await
        .unwrap();
    let handle = SupervisorHandle::new(sup.clone());
    let bystander = cell_of(&handle, "int:bystander").await;

    for n in 1..=2 {
        tell("int:crashy", WorkerMsg::Fail);
        wait_restarted(&handle, "int:crashy", n).await;
    }
    // The third restart within the window is one too many.
    tell("int:crashy", WorkerMsg::Fail);
    tokio::time::timeout(WAIT, join)
        .await
        .expect("supervisor exits")
        .expect("supervisor task ends cleanly");

    assert_eq!(sup.get_status(), ActorStatus::Stopped);
    assert_eq!(
        bystander.get_status(),
        ActorStatus::Stopped,
        "children are stopped"
    );
    assert!(ractor::registry::where_is("int:crashy").is_none());
    assert!(ractor::registry::where_is("int:sup").is_none());

    wait_until("probe saw the failure", || async {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    let events = seen.lock().unwrap().clone();
    match &events[..] {
        [Seen::Failed { name, reason }] => {
            assert_eq!(name.as_deref(), Some("int:sup"));
            assert!(reason.contains("restart intensity"), "reason: {reason}");
        }
        other => panic!("expected one ActorFailed, got {other:?}"),
    }
    probe.stop(None);
}

#[tokio::test]
async fn parent_restarts_a_nested_supervisor_that_gave_up() {
    let nested = SupervisorSpec {
        strategy: Strategy::OneForOne,
        max_restarts: 1,
        within: WINDOW,
        children: vec![worker("nest:leaf", Restart::Permanent)],
    };
    let root = start(
        "nest:root",
        5,
        vec![
            worker("nest:sibling", Restart::Permanent),
            ChildSpec::supervisor("nest:inner", Restart::Permanent, nested),
        ],
    )
    .await;
    let sibling = cell_of(&root, "nest:sibling").await.get_id();
    let inner0 = cell_of(&root, "nest:inner").await.get_id();
    let inner = SupervisorHandle::lookup("nest:inner").expect("inner registered");

    tell("nest:leaf", WorkerMsg::Fail);
    wait_restarted(&inner, "nest:leaf", 1).await;
    // Second restart within the window: the inner supervisor gives up and
    // the root (permanent child, one_for_one) starts a fresh one.
    tell("nest:leaf", WorkerMsg::Fail);
    wait_restarted(&root, "nest:inner", 1).await;

    let inner1 = cell_of(&root, "nest:inner").await.get_id();
    assert_ne!(inner1, inner0);
    assert_eq!(cell_of(&root, "nest:sibling").await.get_id(), sibling);
    let inner = SupervisorHandle::lookup("nest:inner").expect("new inner registered");
    assert_eq!(inner.cell().get_id(), inner1);
    // The fresh inner supervisor started its own fresh leaf.
    assert_eq!(inner.restart_count("nest:leaf").await.unwrap(), 0);
    assert_eq!(ping("nest:leaf").await, "nest:leaf");

    root.shutdown(WAIT).await.unwrap();
    assert!(ractor::registry::where_is("nest:leaf").is_none());
}

#[tokio::test]
async fn failed_restart_shows_restarting_and_is_retried() {
    let broken = Arc::new(AtomicBool::new(false));
    let starts = Arc::new(AtomicU32::new(0));
    let spec = {
        let (broken, starts) = (broken.clone(), starts.clone());
        ChildSpec::new("retry:a", "worker", Restart::Permanent, move |sup| {
            let fail = broken.load(Ordering::SeqCst);
            starts.fetch_add(1, Ordering::SeqCst);
            async move {
                if fail {
                    return Err(ractor::SpawnErr::StartupFailed(
                        "storage unavailable".into(),
                    ));
                }
                let args = WorkerArgs {
                    name: "retry:a".into(),
                    ..WorkerArgs::default()
                };
                Actor::spawn_linked(Some("retry:a".into()), Worker, args, sup)
                    .await
                    .map(|(r, _)| r.get_cell())
            }
        })
    };
    let sup = start("retry:sup", 100, vec![spec]).await;

    broken.store(true, Ordering::SeqCst);
    tell("retry:a", WorkerMsg::Fail);
    wait_until("restart attempt failed", || async {
        child(&sup, "retry:a").await.status == ChildStatus::Restarting
    })
    .await;
    // Retried in the background (first retry after 50 ms).
    let attempts = starts.load(Ordering::SeqCst);
    wait_until("a retry happened", || async {
        starts.load(Ordering::SeqCst) > attempts
    })
    .await;
    assert_eq!(child(&sup, "retry:a").await.status, ChildStatus::Restarting);

    broken.store(false, Ordering::SeqCst);
    wait_restarted(&sup, "retry:a", 1).await;
    assert_eq!(ping("retry:a").await, "retry:a");

    sup.shutdown(WAIT).await.unwrap();
}
