//! The supervisor actor: starting it (on its own or as a nested child), and
//! the ractor `Actor` glue that routes its messages (`message.rs`) and its
//! children's exits to the restart logic (`recovery.rs`), the dynamic child
//! operations (`dynamic.rs`), waking hibernated children (`hibernation.rs`)
//! and the snapshot report (`tree.rs`), all of which
//! work on [`SupervisorState`] (`state.rs`). It is the top of the crate: no
//! other module uses it.
//!
//! [`ChildSpec::supervisor`] is defined here rather than in `child_spec.rs`
//! because its start function is [`Supervisor::start`].

use std::collections::HashSet;

use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::child_spec::{ChildSpec, DEFAULT_SHUTDOWN, SUPERVISOR_KIND};
use crate::children::{spawn_child, ChildEntry};
use crate::error::SupervisorError;
use crate::intensity::RestartIntensity;
use crate::message::SupervisorMsg;
use crate::restart::{classify, Restart};
use crate::spec::SupervisorSpec;
use crate::state::SupervisorState;
use crate::table::ChildTable;

/// Stop reason given to children when their supervisor shuts down.
pub const SHUTDOWN_REASON: &str = "supervisor shutdown";

/// The supervisor actor. Start it with [`Supervisor::start`] (or as a
/// nested child with [`ChildSpec::supervisor`]) and talk to it through
/// [`crate::SupervisorHandle`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Supervisor;

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

impl Supervisor {
    /// Spawns a supervisor registered under `name` (so
    /// `ractor::registry::where_is(name)` finds it), starts `spec.children`
    /// in order (recording those whose [`ChildSpec::with_dormant`] test
    /// says `true` as hibernated instead), and links it to `parent` when
    /// given. If a child fails to
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

impl ChildSpec {
    /// A nested [`Supervisor`] (kind `"supervisor"`), registered under `name`:
    /// every (re)start runs [`Supervisor::start`] with a clone of `spec`,
    /// linked to the parent. Snapshots recurse into it, and it gets twice
    /// [`DEFAULT_SHUTDOWN`] to stop, since it first waits for its own children.
    pub fn supervisor(name: impl Into<String>, restart: Restart, spec: SupervisorSpec) -> Self {
        let name = name.into();
        let strategy = spec.strategy;
        let registered = name.clone();
        let mut child = Self::new(name, SUPERVISOR_KIND, restart, move |sup| {
            let registered = registered.clone();
            let spec = spec.clone();
            async move {
                Supervisor::start(registered, None, spec, Some(sup))
                    .await
                    .map(|(actor, _join)| actor.get_cell())
                    .map_err(|e| e.into_spawn_err())
            }
        });
        child.is_supervisor = true;
        child.strategy_hint = Some(strategy);
        // A supervisor's own shutdown waits for its children, so give it
        // longer than a leaf before it is killed.
        child.shutdown = DEFAULT_SHUTDOWN * 2;
        child
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
        let mut children = ChildTable::with_capacity(spec.children.len());
        for child in spec.children {
            if child.is_dormant() {
                tracing::debug!(supervisor = %name, child = %child.name,
                    "child dormant, recorded as hibernated");
                children.push(ChildEntry::hibernated(child));
                continue;
            }
            match spawn_child(&child, &sup).await {
                Ok(cell) => {
                    children.push(ChildEntry::running(child, cell));
                }
                Err(source) => {
                    children.stop_all(SHUTDOWN_REASON).await;
                    return Err(Box::new(SupervisorError::StartFailed {
                        name: child.name,
                        source,
                    }));
                }
            }
        }
        tracing::debug!(supervisor = %name, children = children.len(), "supervisor started");

        Ok(SupervisorState::new(
            name,
            kind,
            spec.strategy,
            RestartIntensity::new(spec.max_restarts, spec.within),
            children,
        ))
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Without this, ractor would kill the children (no post_stop for
        // them) once we are gone; a graceful, ordered stop is the contract.
        // Hibernated children have nothing to stop and stay hibernated.
        state.children.stop_all(SHUTDOWN_REASON).await;
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
                let _ = reply.send(state.start_child(&myself.get_cell(), spec).await);
            }
            SupervisorMsg::AddChild(spec, reply) => {
                let _ = reply.send(state.add_child(&myself.get_cell(), spec).await);
            }
            SupervisorMsg::WakeChild(name, reply) => {
                let _ = reply.send(state.wake_child(&myself.get_cell(), &name).await);
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
