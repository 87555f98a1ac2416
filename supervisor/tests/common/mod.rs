//! Test actors and helpers shared by the integration tests.
//!
//! Registry names are process-global and tests in one binary run in
//! parallel, so every test uses names with its own prefix.

#![allow(dead_code)] // each test binary uses a different subset

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use warren_supervisor::{ChildInfo, ChildSpec, Restart, SupervisorHandle};

/// Upper bound for every "wait until" in the tests. Generous: it only
/// matters when a test is about to fail.
pub const WAIT: Duration = Duration::from_secs(10);

pub type Log = Arc<Mutex<Vec<String>>>;

pub fn new_log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

pub fn read_log(log: &Log) -> Vec<String> {
    log.lock().expect("log lock").clone()
}

/// A leaf that crashes, fails or stops on request.
pub struct Worker;

pub enum WorkerMsg {
    /// `panic!()` inside the handler.
    Panic,
    /// The handler returns an error.
    Fail,
    /// The worker stops itself normally.
    StopNormally,
    Ping(RpcReplyPort<String>),
}

impl ractor::Message for WorkerMsg {}

#[derive(Clone, Default)]
pub struct WorkerArgs {
    pub name: String,
    /// post_stop appends the worker's name here.
    pub stop_log: Option<Log>,
    /// post_stop sleeps this long first (to show that shutdown waits).
    pub stop_delay: Duration,
}

impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = WorkerArgs;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(args)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if !state.stop_delay.is_zero() {
            tokio::time::sleep(state.stop_delay).await;
        }
        if let Some(log) = &state.stop_log {
            log.lock().expect("log lock").push(state.name.clone());
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WorkerMsg::Panic => panic!("worker {} panics on request", state.name),
            WorkerMsg::Fail => return Err(format!("worker {} fails on request", state.name).into()),
            WorkerMsg::StopNormally => myself.stop(None),
            WorkerMsg::Ping(reply) => {
                let _ = reply.send(state.name.clone());
            }
        }
        Ok(())
    }
}

/// A worker child registered under `name`.
pub fn worker(name: &str, restart: Restart) -> ChildSpec {
    let n = name.to_string();
    ChildSpec::for_actor(name, "worker", restart, move || {
        (
            Worker,
            WorkerArgs {
                name: n.clone(),
                ..WorkerArgs::default()
            },
        )
    })
}

/// A worker child of the given kind that logs its stop after `delay`.
pub fn logged_worker(name: &str, kind: &str, log: &Log, delay: Duration) -> ChildSpec {
    let args = WorkerArgs {
        name: name.to_string(),
        stop_log: Some(log.clone()),
        stop_delay: delay,
    };
    ChildSpec::for_actor(name, kind, Restart::Permanent, move || {
        (Worker, args.clone())
    })
}

/// Sends `msg` to the worker registered under `name`.
pub fn tell(name: &str, msg: WorkerMsg) {
    let cell =
        ractor::registry::where_is(name).unwrap_or_else(|| panic!("{name} is not registered"));
    ActorRef::<WorkerMsg>::from(cell)
        .cast(msg)
        .unwrap_or_else(|_| panic!("could not send to {name}"));
}

/// Asks the worker registered under `name` for its name (proves it runs).
pub async fn ping(name: &str) -> String {
    let cell =
        ractor::registry::where_is(name).unwrap_or_else(|| panic!("{name} is not registered"));
    ractor::call_t!(ActorRef::<WorkerMsg>::from(cell), WorkerMsg::Ping, 5_000)
        .unwrap_or_else(|e| panic!("ping {name}: {e:?}"))
}

/// Polls `cond` every 10 ms until it holds; panics after [`WAIT`].
pub async fn wait_until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if cond().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The names of `sup`'s children, in start order.
pub async fn child_names(sup: &SupervisorHandle) -> Vec<String> {
    sup.children()
        .await
        .expect("list children")
        .into_iter()
        .map(|c| c.name)
        .collect()
}

/// The child `name` of `sup`.
pub async fn child(sup: &SupervisorHandle, name: &str) -> ChildInfo {
    sup.children()
        .await
        .expect("list children")
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no child {name}"))
}

/// The id of the current instance of child `name`.
pub async fn cell_of(sup: &SupervisorHandle, name: &str) -> ActorCell {
    child(sup, name)
        .await
        .cell
        .unwrap_or_else(|| panic!("child {name} has no running instance"))
}

/// Waits until child `name` has been restarted `n` times and runs again.
pub async fn wait_restarted(sup: &SupervisorHandle, name: &str, n: u32) {
    wait_until(
        &format!("{name} restarted {n} times and running"),
        || async {
            let c = child(sup, name).await;
            c.restarts == n && c.status == warren_supervisor::ChildStatus::Running
        },
    )
    .await;
}

/// What a [`Probe`] saw.
#[derive(Debug, Clone)]
pub enum Seen {
    Failed {
        name: Option<String>,
        reason: String,
    },
    Terminated {
        name: Option<String>,
        reason: Option<String>,
    },
}

/// A bare parent that records its children's exits and does nothing else.
pub struct Probe;

impl Actor for Probe {
    type Msg = ();
    type State = Arc<Mutex<Vec<Seen>>>;
    type Arguments = Arc<Mutex<Vec<Seen>>>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let seen = match event {
            SupervisionEvent::ActorFailed(cell, err) => Seen::Failed {
                name: cell.get_name(),
                reason: err.to_string(),
            },
            SupervisionEvent::ActorTerminated(cell, _, reason) => Seen::Terminated {
                name: cell.get_name(),
                reason,
            },
            _ => return Ok(()),
        };
        state.lock().expect("probe lock").push(seen);
        Ok(())
    }
}
