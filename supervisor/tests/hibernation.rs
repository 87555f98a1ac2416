//! Hibernated children: a child that stops itself with HIBERNATE_REASON,
//! waking it (including racing its exit), dormant specs, and a large table.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, ActorStatus, RpcReplyPort};
use warren_supervisor::{
    ChildSpec, ChildStatus, Restart, Strategy, Supervisor, SupervisorError, SupervisorHandle,
    SupervisorSpec, HIBERNATE_REASON,
};

const WINDOW: Duration = Duration::from_secs(60);
const NODE_TIMEOUT: Duration = Duration::from_secs(2);

/// A leaf that hibernates on request and counts its live instances.
struct Sleeper;

enum SleeperMsg {
    /// Stop with HIBERNATE_REASON.
    Hibernate,
    Ping(RpcReplyPort<String>),
}

impl ractor::Message for SleeperMsg {}

#[derive(Clone)]
struct SleeperArgs {
    name: String,
    /// Instances between `pre_start` and the end of `post_stop`.
    live: Arc<AtomicUsize>,
    /// When set, a hibernating instance asks this supervisor to wake its
    /// child from its own `post_stop` (racing its exit event).
    wake_from: Option<String>,
    /// What those wakes answered, when not a new instance.
    wake_errors: Arc<Mutex<Vec<String>>>,
}

struct SleeperState {
    args: SleeperArgs,
    hibernating: bool,
}

impl Actor for Sleeper {
    type Msg = SleeperMsg;
    type State = SleeperState;
    type Arguments = SleeperArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        args.live.fetch_add(1, Ordering::SeqCst);
        Ok(SleeperState {
            args,
            hibernating: false,
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let (true, Some(sup)) = (state.hibernating, &state.args.wake_from) {
            let outcome = match SupervisorHandle::lookup(sup) {
                Ok(sup) => sup.wake_child(&state.args.name).await,
                Err(err) => Err(err),
            };
            match outcome {
                Ok(cell) if cell.get_id() != myself.get_id() => {}
                Ok(_) => state
                    .args
                    .wake_errors
                    .lock()
                    .unwrap()
                    .push("woken as itself".into()),
                Err(err) => state.args.wake_errors.lock().unwrap().push(err.to_string()),
            }
        }
        state.args.live.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SleeperMsg::Hibernate => {
                state.hibernating = true;
                myself.stop(Some(HIBERNATE_REASON.into()));
            }
            SleeperMsg::Ping(reply) => {
                let _ = reply.send(state.args.name.clone());
            }
        }
        Ok(())
    }
}

fn sleeper_args(name: &str, live: &Arc<AtomicUsize>) -> SleeperArgs {
    SleeperArgs {
        name: name.to_string(),
        live: live.clone(),
        wake_from: None,
        wake_errors: Arc::new(Mutex::new(Vec::new())),
    }
}

fn sleeper_with(args: SleeperArgs) -> ChildSpec {
    let name = args.name.clone();
    ChildSpec::for_actor(name, "queue", Restart::Permanent, move || {
        (Sleeper, args.clone())
    })
}

/// A permanent sleeper child registered under `name`.
fn sleeper(name: &str, live: &Arc<AtomicUsize>) -> ChildSpec {
    sleeper_with(sleeper_args(name, live))
}

fn hibernate(cell: &ActorCell) {
    ActorRef::<SleeperMsg>::from(cell.clone())
        .cast(SleeperMsg::Hibernate)
        .expect("send hibernate");
}

async fn ping_sleeper(name: &str) -> String {
    let cell =
        ractor::registry::where_is(name).unwrap_or_else(|| panic!("{name} is not registered"));
    ractor::call_t!(ActorRef::<SleeperMsg>::from(cell), SleeperMsg::Ping, 5_000)
        .unwrap_or_else(|e| panic!("ping {name}: {e:?}"))
}

async fn start(name: &str, strategy: Strategy, children: Vec<ChildSpec>) -> SupervisorHandle {
    let spec = SupervisorSpec {
        strategy,
        max_restarts: 2,
        within: WINDOW,
        children,
    };
    let (sup, _join) = Supervisor::start(name, None, spec, None)
        .await
        .expect("supervisor starts");
    SupervisorHandle::new(sup)
}

async fn wait_hibernated(sup: &SupervisorHandle, name: &str) {
    wait_until(&format!("{name} hibernated"), || async {
        child(sup, name).await.status == ChildStatus::Hibernated
    })
    .await;
}

/// The table holds `name` exactly once, running `cell` (which the registry
/// also names), never restarted. (A fresh instance shows `Starting` until its
/// `post_start` is done, hence the wait.)
async fn assert_runs_once(sup: &SupervisorHandle, name: &str, cell: &ActorCell) {
    wait_until(&format!("{name} running"), || async {
        child(sup, name).await.status == ChildStatus::Running
    })
    .await;
    let rows: Vec<_> = sup
        .children()
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.name == name)
        .collect();
    assert_eq!(rows.len(), 1, "{name} listed once");
    let row = &rows[0];
    assert_eq!(row.status, ChildStatus::Running);
    assert_eq!(row.restarts, 0, "a wake is not a restart");
    assert_eq!(row.cell.as_ref().map(|c| c.get_id()), Some(cell.get_id()));
    assert_eq!(
        ractor::registry::where_is(name).map(|c| c.get_id()),
        Some(cell.get_id())
    );
    assert_eq!(cell.get_status(), ActorStatus::Running);
}

#[tokio::test]
async fn hibernating_child_is_not_restarted_and_costs_no_intensity() {
    let live = Arc::new(AtomicUsize::new(0));
    // one_for_all with an allowance of 2: a restart would take the sibling
    // along, and five of them would kill the supervisor.
    let sup = start(
        "hib:sup",
        Strategy::OneForAll,
        vec![
            sleeper("hib:q", &live),
            worker("hib:sibling", Restart::Permanent),
        ],
    )
    .await;
    let sibling = cell_of(&sup, "hib:sibling").await.get_id();
    let mut previous = cell_of(&sup, "hib:q").await;

    for round in 0..5 {
        hibernate(&previous);
        wait_hibernated(&sup, "hib:q").await;
        let row = child(&sup, "hib:q").await;
        assert!(row.cell.is_none(), "round {round}: no instance");
        assert_eq!(row.restarts, 0, "not restarted (permanent policy)");
        assert!(ractor::registry::where_is("hib:q").is_none());
        assert_eq!(previous.get_status(), ActorStatus::Stopped);
        assert_eq!(live.load(Ordering::SeqCst), 0);
        let tree = sup.snapshot(NODE_TIMEOUT).await.unwrap();
        let node = tree.find("hib:q").expect("listed");
        assert_eq!((node.status, node.uptime_ms), (ChildStatus::Hibernated, 0));

        let woken = sup.wake_child("hib:q").await.expect("woken");
        assert_ne!(woken.get_id(), previous.get_id(), "a new instance");
        assert_runs_once(&sup, "hib:q", &woken).await;
        assert_eq!(ping_sleeper("hib:q").await, "hib:q");
        assert_eq!(live.load(Ordering::SeqCst), 1);
        // Waking a running child answers the instance that runs.
        let again = sup.wake_child("hib:q").await.unwrap();
        assert_eq!(again.get_id(), woken.get_id());
        previous = woken;
    }

    // No sibling was taken along, and the allowance is intact: two real
    // crashes are still fine.
    assert_eq!(cell_of(&sup, "hib:sibling").await.get_id(), sibling);
    assert_eq!(sup.restart_count("hib:sibling").await.unwrap(), 0);
    for n in 1..=2 {
        tell("hib:sibling", WorkerMsg::Fail);
        wait_restarted(&sup, "hib:sibling", n).await;
    }
    assert_eq!(sup.cell().get_status(), ActorStatus::Running);
    // one_for_all took the sleeper along for those restarts: counted there.
    assert_eq!(sup.restart_count("hib:q").await.unwrap(), 2);

    sup.shutdown(WAIT).await.unwrap();
    assert_eq!(live.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn wake_and_friends_refuse_what_is_not_hibernated() {
    let live = Arc::new(AtomicUsize::new(0));
    let sup = start(
        "hibx:sup",
        Strategy::OneForOne,
        vec![
            sleeper("hibx:q", &live),
            worker("hibx:done", Restart::Transient),
        ],
    )
    .await;

    assert!(matches!(
        sup.wake_child("hibx:nope").await,
        Err(SupervisorError::NoSuchChild(n)) if n == "hibx:nope"
    ));
    tell("hibx:done", WorkerMsg::StopNormally);
    wait_until("transient child stopped", || async {
        child(&sup, "hibx:done").await.status == ChildStatus::Stopped
    })
    .await;
    assert!(matches!(
        sup.wake_child("hibx:done").await,
        Err(SupervisorError::NotHibernated(n)) if n == "hibx:done"
    ));
    assert!(
        ractor::registry::where_is("hibx:done").is_none(),
        "not started"
    );

    // A hibernated child is present: neither start_child nor add_child
    // replaces it.
    hibernate(&cell_of(&sup, "hibx:q").await);
    wait_hibernated(&sup, "hibx:q").await;
    assert!(matches!(
        sup.start_child(sleeper("hibx:q", &live)).await,
        Err(SupervisorError::ChildExists(_))
    ));
    assert!(matches!(
        sup.add_child(sleeper("hibx:q", &live)).await,
        Err(SupervisorError::ChildExists(_))
    ));
    assert_eq!(live.load(Ordering::SeqCst), 0);

    // terminate_child of a hibernated child just forgets it.
    sup.terminate_child("hibx:q").await.unwrap();
    let names = child_names(&sup).await;
    assert_eq!(names, ["hibx:done"]);
    assert!(matches!(
        sup.wake_child("hibx:q").await,
        Err(SupervisorError::NoSuchChild(_))
    ));
    sup.shutdown(WAIT).await.unwrap();
}

#[tokio::test]
async fn wake_from_the_hibernating_instance_own_post_stop() {
    let live = Arc::new(AtomicUsize::new(0));
    let args = SleeperArgs {
        wake_from: Some("race1:sup".into()),
        ..sleeper_args("race1:q", &live)
    };
    let errors = args.wake_errors.clone();
    let sup = start("race1:sup", Strategy::OneForOne, vec![sleeper_with(args)]).await;

    let mut current = cell_of(&sup, "race1:q").await;
    for round in 0..200 {
        hibernate(&current);
        // The instance wakes its successor before it is Stopped.
        current.wait(Some(WAIT)).await.expect("old instance stops");
        let woken = cell_of(&sup, "race1:q").await;
        assert_ne!(woken.get_id(), current.get_id(), "round {round}");
        assert_runs_once(&sup, "race1:q", &woken).await;
        assert_eq!(live.load(Ordering::SeqCst), 1, "round {round}");
        current = woken;
    }
    assert!(errors.lock().unwrap().is_empty(), "{:?}", errors.lock());
    // The last old instance's exit event, if still in flight, is ignored too.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_runs_once(&sup, "race1:q", &current).await;
    assert_eq!(ping_sleeper("race1:q").await, "race1:q");

    sup.shutdown(WAIT).await.unwrap();
    assert_eq!(live.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn wake_right_after_the_stop_races_the_exit() {
    let live = Arc::new(AtomicUsize::new(0));
    let sup = start(
        "race2:sup",
        Strategy::OneForOne,
        vec![sleeper("race2:q", &live)],
    )
    .await;

    let mut current = cell_of(&sup, "race2:q").await;
    for round in 0..200 {
        current.stop(Some(HIBERNATE_REASON.into()));
        if round % 2 == 0 {
            // Wake once the instance is stopping: its exit event may or
            // may not have been processed yet.
            while current.get_status() < ActorStatus::Stopping {
                tokio::task::yield_now().await;
            }
        }
        // Without waiting, the wake may still find the old instance live;
        // it is then answered, and a wake after it stopped starts anew.
        let woken = loop {
            let cell = sup.wake_child("race2:q").await.expect("woken");
            if cell.get_id() != current.get_id() {
                break cell;
            }
            assert!(round % 2 == 1, "a stopping instance was answered");
            current.wait(Some(WAIT)).await.expect("old instance stops");
        };
        current.wait(Some(WAIT)).await.expect("old instance stops");
        assert_runs_once(&sup, "race2:q", &woken).await;
        assert_eq!(live.load(Ordering::SeqCst), 1, "round {round}");
        current = woken;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_runs_once(&sup, "race2:q", &current).await;

    sup.shutdown(WAIT).await.unwrap();
    assert_eq!(live.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn dormant_specs_are_recorded_hibernated_instead_of_started() {
    let live = Arc::new(AtomicUsize::new(0));
    let sup = start(
        "dorm:sup",
        Strategy::OneForOne,
        vec![
            sleeper("dorm:a", &live).with_dormant(|| true),
            sleeper("dorm:b", &live).with_dormant(|| false),
        ],
    )
    .await;
    assert_eq!(live.load(Ordering::SeqCst), 1, "only b started");
    let a = child(&sup, "dorm:a").await;
    assert_eq!((a.status, a.restarts), (ChildStatus::Hibernated, 0));
    assert!(a.cell.is_none());
    assert!(ractor::registry::where_is("dorm:a").is_none());
    assert_eq!(child(&sup, "dorm:b").await.status, ChildStatus::Running);
    let tree = sup.snapshot(NODE_TIMEOUT).await.unwrap();
    let node = tree.find("dorm:a").unwrap();
    assert_eq!((node.status, node.uptime_ms), (ChildStatus::Hibernated, 0));

    // A wake does not ask the dormancy test.
    let woken = sup.wake_child("dorm:a").await.unwrap();
    assert_runs_once(&sup, "dorm:a", &woken).await;

    // add_child asks it; start_child does not.
    let added = sup
        .add_child(sleeper("dorm:c", &live).with_dormant(|| true))
        .await
        .unwrap();
    assert!(added.is_none());
    assert_eq!(child(&sup, "dorm:c").await.status, ChildStatus::Hibernated);
    assert!(ractor::registry::where_is("dorm:c").is_none());
    let added = sup
        .add_child(sleeper("dorm:d", &live).with_dormant(|| false))
        .await
        .unwrap()
        .expect("started");
    assert_runs_once(&sup, "dorm:d", &added).await;
    assert!(matches!(
        sup.add_child(sleeper("dorm:d", &live)).await,
        Err(SupervisorError::ChildExists(_))
    ));
    let started = sup
        .start_child(sleeper("dorm:e", &live).with_dormant(|| true))
        .await
        .unwrap();
    assert_runs_once(&sup, "dorm:e", &started).await;
    assert_eq!(live.load(Ordering::SeqCst), 4);

    let names = child_names(&sup).await;
    assert_eq!(names, ["dorm:a", "dorm:b", "dorm:c", "dorm:d", "dorm:e"]);

    sup.shutdown(WAIT).await.unwrap();
    assert_eq!(live.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_strategy_restart_leaves_dormant_siblings_hibernated() {
    let live = Arc::new(AtomicUsize::new(0));
    let dormant = Arc::new(AtomicBool::new(false));
    let is_dormant = |flag: &Arc<AtomicBool>| {
        let flag = flag.clone();
        move || flag.load(Ordering::SeqCst)
    };
    let sup = start(
        "dsib:sup",
        Strategy::OneForAll,
        vec![
            sleeper("dsib:idle", &live).with_dormant(is_dormant(&dormant)),
            worker("dsib:crashy", Restart::Permanent).with_dormant(is_dormant(&dormant)),
            worker("dsib:other", Restart::Permanent),
        ],
    )
    .await;
    assert_eq!(live.load(Ordering::SeqCst), 1, "not dormant at start");
    let other = cell_of(&sup, "dsib:other").await.get_id();

    dormant.store(true, Ordering::SeqCst);
    tell("dsib:crashy", WorkerMsg::Fail);
    // The child that crashed is restarted per its policy, dormant or not.
    wait_restarted(&sup, "dsib:crashy", 1).await;
    assert_eq!(ping("dsib:crashy").await, "dsib:crashy");
    // The dormant sibling was stopped with the group but not started again.
    let idle = child(&sup, "dsib:idle").await;
    assert_eq!((idle.status, idle.restarts), (ChildStatus::Hibernated, 0));
    assert!(idle.cell.is_none());
    assert!(ractor::registry::where_is("dsib:idle").is_none());
    assert_eq!(live.load(Ordering::SeqCst), 0);
    // A sibling without a dormancy test was restarted as usual.
    let o = child(&sup, "dsib:other").await;
    assert_eq!((o.status, o.restarts), (ChildStatus::Running, 1));
    assert_ne!(o.cell.unwrap().get_id(), other);

    let woken = sup.wake_child("dsib:idle").await.unwrap();
    assert_runs_once(&sup, "dsib:idle", &woken).await;
    sup.shutdown(WAIT).await.unwrap();
}

#[tokio::test]
async fn twenty_thousand_children_hibernate_and_wake() {
    const N: usize = 20_000;
    let live = Arc::new(AtomicUsize::new(0));
    let spec = SupervisorSpec::new(Strategy::OneForOne).with_intensity(0, WINDOW);
    let (sup, _join) = Supervisor::start("many:sup", None, spec, None)
        .await
        .unwrap();
    let sup = SupervisorHandle::new(sup);
    let names: Arc<Vec<String>> = Arc::new((0..N).map(|i| format!("many:q{i}")).collect());

    // Declared dormant: nothing starts.
    for name in names.iter() {
        let added = sup
            .add_child(sleeper(name, &live).with_dormant(|| true))
            .await
            .unwrap();
        assert!(added.is_none());
    }
    assert_eq!(live.load(Ordering::SeqCst), 0);

    // Wake all (pipelined from a few tasks; the supervisor serialises).
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (sup, names) = (sup.clone(), names.clone());
        tasks.push(tokio::spawn(async move {
            for name in names.iter().skip(t).step_by(8) {
                sup.wake_child(name).await.expect("woken");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(live.load(Ordering::SeqCst), N);

    // Every one hibernates. Intensity 0: a single restart would kill
    // the supervisor.
    for info in sup.children().await.unwrap() {
        hibernate(&info.cell.expect("running"));
    }
    wait_until("all hibernated", || async {
        live.load(Ordering::SeqCst) == 0
            && sup
                .children()
                .await
                .unwrap()
                .iter()
                .all(|c| c.status == ChildStatus::Hibernated)
    })
    .await;

    let rows = sup.children().await.unwrap();
    assert_eq!(rows.len(), N);
    for (row, name) in rows.iter().zip(names.iter()) {
        assert_eq!(&row.name, name, "start order kept");
        assert_eq!(row.restarts, 0);
        assert!(row.cell.is_none());
    }
    // Remove every other child, then wake the rest a second time: lookups
    // stay right across the table's compaction.
    for name in names.iter().step_by(2) {
        sup.terminate_child(name).await.unwrap();
    }
    for name in names.iter().skip(1).step_by(2) {
        let cell = sup.wake_child(name).await.unwrap();
        assert_eq!(
            ractor::registry::where_is(name).map(|c| c.get_id()),
            Some(cell.get_id())
        );
    }
    wait_until("the woken half running", || async {
        let rows = sup.children().await.unwrap();
        rows.len() == N / 2
            && rows
                .iter()
                .all(|c| c.status == ChildStatus::Running && c.restarts == 0)
    })
    .await;
    assert_eq!(live.load(Ordering::SeqCst), N / 2);

    sup.shutdown(Duration::from_secs(60)).await.unwrap();
    assert_eq!(live.load(Ordering::SeqCst), 0);
}
