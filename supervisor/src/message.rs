//! What a supervisor can be asked: [`SupervisorMsg`], the [`SupervisorReport`]
//! it answers `Describe` with, and one request/reply round trip with a
//! timeout. Both the [`SupervisorHandle`](crate::SupervisorHandle) and the
//! tree walk in `tree.rs` send requests through here, so neither needs the
//! other.

use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorCell, ActorRef, RpcReplyPort};

use crate::child_spec::ChildSpec;
use crate::children::ChildInfo;
use crate::error::SupervisorError;
use crate::snapshot::TreeSnapshot;

/// Messages a supervisor understands. [`crate::SupervisorHandle`] wraps
/// them; they are public so that other actors can `call!` a supervisor
/// directly.
pub enum SupervisorMsg {
    /// Start a dynamic child (appended to the start order); its dormancy
    /// test is not asked.
    StartChild(ChildSpec, RpcReplyPort<Result<ActorCell, SupervisorError>>),
    /// Add a dynamic child: like `StartChild`, but a spec whose dormancy
    /// test ([`ChildSpec::with_dormant`]) says `true` is recorded as
    /// hibernated instead of started, answered with `None`.
    AddChild(
        ChildSpec,
        RpcReplyPort<Result<Option<ActorCell>, SupervisorError>>,
    ),
    /// Start a hibernated child again (or answer its running instance);
    /// see [`crate::SupervisorHandle::wake_child`].
    WakeChild(String, RpcReplyPort<Result<ActorCell, SupervisorError>>),
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

/// One supervisor's answer to `Describe`: its node with its children as
/// leaves, and the nested supervisors to ask for the level below.
#[derive(Debug, Clone)]
pub struct SupervisorReport {
    /// This supervisor, `children` filled with its own view of each child.
    pub node: TreeSnapshot,
    /// `(index into node.children, supervisor)` for each running nested
    /// supervisor.
    pub nested: Vec<(usize, ActorRef<SupervisorMsg>)>,
}

/// One request/reply round trip with a timeout, with ractor's outcomes
/// mapped onto [`SupervisorError`].
pub(crate) async fn request<T: Send + 'static>(
    actor: &ActorRef<SupervisorMsg>,
    build: impl FnOnce(RpcReplyPort<T>) -> SupervisorMsg,
    timeout: Duration,
) -> Result<T, SupervisorError> {
    match actor.call(build, Some(timeout)).await {
        Ok(CallResult::Success(value)) => Ok(value),
        Ok(CallResult::Timeout) => Err(SupervisorError::Timeout {
            name: display_name(actor),
            timeout,
        }),
        // The send failed or the supervisor dropped the reply port: it is
        // stopping or gone.
        Ok(CallResult::SenderError) | Err(_) => {
            Err(SupervisorError::Unreachable(display_name(actor)))
        }
    }
}

/// The supervisor's registered name, or its id when it has none: what errors
/// about it show.
pub(crate) fn display_name(actor: &ActorRef<SupervisorMsg>) -> String {
    actor
        .get_name()
        .unwrap_or_else(|| actor.get_id().to_string())
}
