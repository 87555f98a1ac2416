//! The supervisor actor: its messages, its state, and the ractor `Actor`
//! glue that routes them to the restart logic (`recovery.rs`), the dynamic
//! child operations (`dynamic.rs`) and the snapshot report (`tree.rs`).

use std::collections::HashSet;
use std::time::Duration;

use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::time::Instant;

use crate::child_spec::{ChildSpec, SUPERVISOR_KIND};
use crate::children::{spawn_child, stop_all, ChildEntry, ChildInfo};
use crate::error::SupervisorError;
use crate::intensity::RestartIntensity;
use crate::restart::classify;
use crate::spec::SupervisorSpec;
use crate::strategy::Strategy;
use crate::tree::SupervisorReport;

/// Stop reason given to children when their supervisor shuts down.
pub const SHUTDOWN_REASON: &str = "supervisor shutdown";

/// The supervisor actor. Start it with [`Supervisor::start`] (or as a
/// nested child with [`ChildSpec::supervisor`]) and talk to it through
/// [`crate::SupervisorHandle`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Supervisor;

/// Messages a supervisor understands. [`crate::SupervisorHandle`] wraps
/// them; they are public so that other actors can `call!` a supervisor
/// directly.
pub enum SupervisorMsg {
    /// Start a dynamic child (appended to the start order).
    StartChild(ChildSpec, RpcReplyPort<Result<ActorCell, SupervisorError>>),
    /// Stop a child and forget its spec; it is not restarted.
    TerminateChild(String, RpcReplyPort<Result<(), SupervisorError>>),
    /// List the children in start order.
    ListChildren(RpcReplyPort<Vec<ChildInfo>>),
    /// This supervisor's own node plus the nested supervisors to ask next;
    /// see [`crate::snapshot_tree`].
    Describe(RpcReplyPort<SupervisorReport>),
    /// Internal timer tick: retry starting children whose restart failed.
    /// Harmless if sent by anyone else (does nothing when none are pending).
    RetryPending,
}

impl ractor::Message for SupervisorMsg {}

/// Start-up arguments of the [`Supervisor`] actor.
pub struct SupervisorArgs {
    pub(crate) name: String,
    pub(crate) kind: String,
    pub(crate) spec: SupervisorSpec,
}

impl SupervisorArgs {
    /// Arguments for `Actor::spawn*` when not going through
    /// [`Supervisor::start`]; `kind` defaults to `"supervisor"`.
    pub fn new(name: impl Into<String>, kind: Option<String>, spec: SupervisorSpec) -> Self {
        Self {
            name: name.into(),
            kind: kind.unwrap_or_else(|| SUPERVISOR_KIND.to_string()),
            spec,
        }
    }
}

/// The supervisor's state: its child table in start order and the restart
/// bookkeeping. Opaque; observe it through snapshots.
pub struct SupervisorState {
    pub(crate) name: String,
    pub(crate) kind: String,
    pub(crate) strategy: Strategy,
    pub(crate) intensity: RestartIntensity,
    pub(crate) children: Vec<ChildEntry>,
    pub(crate) started_at: Instant,
    /// A `RetryPending` tick is in flight.
    pub(crate) retry_scheduled: bool,
    /// Delay before the next `RetryPending`; doubles up to a cap.
    pub(crate) retry_backoff: Duration,
}

impl Supervisor {
    /// Spawns a supervisor registered under `name` (so
    /// `ractor::registry::where_is(name)` finds it), starts `spec.children`
    /// in order, and links it to `parent` when given. If a child fails to
    /// start, the ones already started are stopped and the error is
    /// returned (typically [`SupervisorError::StartFailed`]).
    pub async fn start(
        name: impl Into<String>,
        kind: Option<String>,
        spec: SupervisorSpec,
        parent: Option<ActorCell>,
    ) -> Result<(ActorRef<SupervisorMsg>, JoinHandle<()>), SupervisorError> {
        let args = SupervisorArgs::new(name, kind, spec);
        let name = Some(args.name.clone());
        let spawned = match parent {
            Some(parent) => Actor::spawn_linked(name, Supervisor, args, parent).await,
            None => Actor::spawn(name, Supervisor, args).await,
        };
        spawned.map_err(SupervisorError::from_spawn)
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let SupervisorArgs { name, kind, spec } = args;

        let mut seen = HashSet::new();
        if let Some(dup) = spec.children.iter().find(|c| !seen.insert(c.name.as_str())) {
            return Err(Box::new(SupervisorError::ChildExists(dup.name.clone())));
        }

        // Children start here rather than in post_start so that a child
        // that cannot start makes `Supervisor::start` fail, as in OTP.
        let sup = myself.get_cell();
        let mut children: Vec<ChildEntry> = Vec::with_capacity(spec.children.len());
        for child in spec.children {
            match spawn_child(&child, &sup).await {
                Ok(cell) => children.push(ChildEntry::running(child, cell)),
                Err(source) => {
                    stop_all(&mut children, SHUTDOWN_REASON).await;
                    return Err(Box::new(SupervisorError::StartFailed {
                        name: child.name,
                        source,
                    }));
                }
            }
        }
        tracing::debug!(supervisor = %name, children = children.len(), "supervisor started");

        Ok(SupervisorState {
            name,
            kind,
            strategy: spec.strategy,
            intensity: RestartIntensity::new(spec.max_restarts, spec.within),
            children,
            started_at: Instant::now(),
            retry_scheduled: false,
            retry_backoff: crate::recovery::INITIAL_RETRY_BACKOFF,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Without this, ractor would kill the children (no post_stop for
        // them) once we are gone; a graceful, ordered stop is the contract.
        stop_all(&mut state.children, SHUTDOWN_REASON).await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A caller that gave up waiting drops its reply port; sending to it
        // then fails, which is nobody's error, hence the ignored results.
        match message {
            SupervisorMsg::StartChild(spec, reply) => {
                let _ = reply.send(state.start_child(&myself, spec).await);
            }
            SupervisorMsg::TerminateChild(name, reply) => {
                let _ = reply.send(state.terminate_child(&name).await);
            }
            SupervisorMsg::ListChildren(reply) => {
                let _ = reply.send(state.children.iter().map(ChildEntry::info).collect());
            }
            SupervisorMsg::Describe(reply) => {
                let _ = reply.send(state.report());
            }
            SupervisorMsg::RetryPending => state.retry_pending(&myself).await?,
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Unlike ractor's default, a child's exit never stops us by itself;
        // only an exceeded restart intensity does (returned as an error, so
        // our own parent sees `ActorFailed`).
        if let Some((id, exit)) = classify(&event) {
            state.on_child_exit(&myself, id, exit).await?;
        }
        Ok(())
    }
}
