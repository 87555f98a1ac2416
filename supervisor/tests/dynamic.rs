//! Dynamic children, name conflicts and the registry race on restart.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ractor::{Actor, ActorStatus, SpawnErr};
use warren_supervisor::{
    ChildSpec, ChildStatus, Restart, Strategy, Supervisor, SupervisorError, SupervisorHandle,
    SupervisorSpec,
};

async fn start(name: &str) -> SupervisorHandle {
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .with_intensity(10, Duration::from_secs(60))
        .child(worker(&format!("{name}/static"), Restart::Permanent));
    let (sup, _) = Supervisor::start(name, None, spec, None).await.unwrap();
    SupervisorHandle::new(sup)
}

#[tokio::test]
async fn start_child_then_terminate_child() {
    let sup = start("dyn:sup").await;

    let cell = sup
        .start_child(worker("dyn:q1", Restart::Permanent))
        .await
        .unwrap();
    assert_eq!(
        ractor::registry::where_is("dyn:q1").map(|c| c.get_id()),
        Some(cell.get_id())
    );
    let names = child_names(&sup).await;
    assert_eq!(
        names,
        ["dyn:sup/static", "dyn:q1"],
        "appended in start order"
    );

    // A dynamic child is supervised like any other.
    tell("dyn:q1", WorkerMsg::Fail);
    wait_restarted(&sup, "dyn:q1", 1).await;
    assert_eq!(sup.restart_count("dyn:q1").await.unwrap(), 1);

    let current = cell_of(&sup, "dyn:q1").await;
    sup.terminate_child("dyn:q1").await.unwrap();
    // terminate_child waits for the stop, and the spec is gone: no restart.
    assert_eq!(current.get_status(), ActorStatus::Stopped);
    assert!(ractor::registry::where_is("dyn:q1").is_none());
    let names = child_names(&sup).await;
    assert_eq!(names, ["dyn:sup/static"]);
    assert!(matches!(
        sup.restart_count("dyn:q1").await,
        Err(SupervisorError::NoSuchChild(_))
    ));

    // The name can be used again.
    sup.start_child(worker("dyn:q1", Restart::Permanent))
        .await
        .unwrap();
    assert_eq!(sup.restart_count("dyn:q1").await.unwrap(), 0);
    assert_eq!(ping("dyn:q1").await, "dyn:q1");

    sup.shutdown(WAIT).await.unwrap();
}

#[tokio::test]
async fn start_child_refuses_taken_names() {
    let sup = start("taken:sup").await;

    sup.start_child(worker("taken:q", Restart::Permanent))
        .await
        .unwrap();
    let err = sup
        .start_child(worker("taken:q", Restart::Permanent))
        .await
        .expect_err("same name twice");
    assert!(matches!(err, SupervisorError::ChildExists(n) if n == "taken:q"));

    // A live actor outside this supervisor holds the name.
    let (stranger, _) = Actor::spawn(Some("taken:stranger".into()), Worker, WorkerArgs::default())
        .await
        .unwrap();
    let err = sup
        .start_child(worker("taken:stranger", Restart::Permanent))
        .await
        .expect_err("registered elsewhere");
    assert!(matches!(err, SupervisorError::NameTaken(n) if n == "taken:stranger"));

    let err = sup
        .terminate_child("taken:nope")
        .await
        .expect_err("unknown");
    assert!(matches!(err, SupervisorError::NoSuchChild(_)));

    // A dead temporary child's name is free again: its entry is replaced.
    sup.start_child(worker("taken:temp", Restart::Temporary))
        .await
        .unwrap();
    tell("taken:temp", WorkerMsg::Fail);
    wait_until("temporary child failed", || async {
        child(&sup, "taken:temp").await.status == ChildStatus::Failed
    })
    .await;
    sup.start_child(worker("taken:temp", Restart::Temporary))
        .await
        .unwrap();
    let temps = sup
        .children()
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.name == "taken:temp")
        .count();
    assert_eq!(temps, 1);
    assert_eq!(child(&sup, "taken:temp").await.status, ChildStatus::Running);

    assert!(matches!(
        SupervisorHandle::lookup("taken:stranger"),
        Err(SupervisorError::NotASupervisor(_))
    ));
    stranger.stop(None);
    sup.shutdown(WAIT).await.unwrap();
    assert!(matches!(
        sup.children().await,
        Err(SupervisorError::Unreachable(_))
    ));
}

#[tokio::test]
async fn start_rides_out_a_name_that_is_still_registered() {
    // The start function registers "race:held", which a stranger holds
    // until the first attempt asks it to stop: the supervisor must retry
    // instead of failing the start.
    let (stranger, _) = Actor::spawn(Some("race:held".into()), Worker, WorkerArgs::default())
        .await
        .unwrap();
    let attempts = Arc::new(AtomicU32::new(0));
    let spec = {
        let attempts = attempts.clone();
        let stranger = stranger.get_cell();
        ChildSpec::new("race:child", "worker", Restart::Permanent, move |sup| {
            let (attempts, stranger) = (attempts.clone(), stranger.clone());
            async move {
                attempts.fetch_add(1, Ordering::SeqCst);
                let args = WorkerArgs {
                    name: "race:held".into(),
                    ..WorkerArgs::default()
                };
                let res = Actor::spawn_linked(Some("race:held".into()), Worker, args, sup).await;
                if matches!(res, Err(SpawnErr::ActorAlreadyRegistered(_))) {
                    stranger.stop(None);
                }
                res.map(|(r, _)| r.get_cell())
            }
        })
    };
    let sup = start("race:sup").await;
    let cell = sup.start_child(spec).await.expect("started after retrying");

    assert!(attempts.load(Ordering::SeqCst) >= 2, "retried");
    assert_eq!(
        ractor::registry::where_is("race:held").map(|c| c.get_id()),
        Some(cell.get_id())
    );
    assert_eq!(stranger.get_status(), ActorStatus::Stopped);
    sup.shutdown(WAIT).await.unwrap();
}
