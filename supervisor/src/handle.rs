//! [`SupervisorHandle`]: the async API for talking to a running supervisor.

use std::time::Duration;

use ractor::{ActorCell, ActorRef, RpcReplyPort};

use crate::child_spec::ChildSpec;
use crate::children::ChildInfo;
use crate::error::SupervisorError;
use crate::message::{display_name, request, SupervisorMsg};
use crate::snapshot::{ChildLocation, TreeSnapshot};
use crate::tree::snapshot_tree;

/// Default time a [`SupervisorHandle`] waits for an answer. Generous
/// because `start_child` waits for the child's `pre_start`.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A cheap, cloneable handle on a running [`crate::Supervisor`].
#[derive(Debug, Clone)]
pub struct SupervisorHandle {
    actor: ActorRef<SupervisorMsg>,
    call_timeout: Duration,
}

impl SupervisorHandle {
    /// Wraps the reference returned by [`crate::Supervisor::start`].
    pub fn new(actor: ActorRef<SupervisorMsg>) -> Self {
        Self {
            actor,
            call_timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

    /// Finds a supervisor by its registered name.
    pub fn lookup(name: &str) -> Result<Self, SupervisorError> {
        let cell = ractor::registry::where_is(name)
            .ok_or_else(|| SupervisorError::Unreachable(name.to_string()))?;
        if cell.is_message_type_of::<SupervisorMsg>() != Some(true) {
            return Err(SupervisorError::NotASupervisor(name.to_string()));
        }
        Ok(Self::new(ActorRef::from(cell)))
    }

    /// Changes how long calls wait for an answer (default
    /// [`DEFAULT_CALL_TIMEOUT`]).
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The supervisor's actor reference.
    pub fn actor(&self) -> &ActorRef<SupervisorMsg> {
        &self.actor
    }

    /// The supervisor's cell (e.g. to link something to it).
    pub fn cell(&self) -> ActorCell {
        self.actor.get_cell()
    }

    /// Starts a dynamic child; see [`SupervisorError::ChildExists`] and
    /// [`SupervisorError::NameTaken`] for why it can be refused. Always
    /// starts it: its [`ChildSpec::with_dormant`] test is not asked (see
    /// [`SupervisorHandle::add_child`]).
    pub async fn start_child(&self, spec: ChildSpec) -> Result<ActorCell, SupervisorError> {
        self.call(|reply| SupervisorMsg::StartChild(spec, reply))
            .await?
    }

    /// Adds a dynamic child, refused for the same reasons as
    /// [`SupervisorHandle::start_child`] (a hibernated child of the same
    /// name counts as present). If the spec's [`ChildSpec::with_dormant`]
    /// test says `true`, the child is not started but recorded as
    /// [`ChildStatus::Hibernated`](crate::ChildStatus::Hibernated) and the
    /// answer is `Ok(None)`; otherwise it is started and its cell answered.
    pub async fn add_child(&self, spec: ChildSpec) -> Result<Option<ActorCell>, SupervisorError> {
        self.call(|reply| SupervisorMsg::AddChild(spec, reply))
            .await?
    }

    /// Makes sure the child `name` runs, and answers its instance.
    ///
    /// A hibernated child (see [`crate::HIBERNATE_REASON`]) is started
    /// again; that is not a restart (its restart count is unchanged and the
    /// restart intensity is not touched). A running child's instance is
    /// answered as is. An instance that is already stopping but whose exit
    /// the supervisor has not processed yet (say, it hibernated and asks
    /// for the wake from its own `post_stop`) is replaced by a new one at
    /// once. Errors: [`SupervisorError::NoSuchChild`];
    /// [`SupervisorError::NotHibernated`] for a child being restarted,
    /// stopped or failed; [`SupervisorError::StartFailed`] if its start
    /// function fails (it then stays hibernated).
    ///
    /// Called from the child's own `post_stop`, this must not race the
    /// supervisor stopping that child (shutdown, `terminate_child`): the
    /// supervisor waits for the child while the child waits for the
    /// supervisor, until the child's grace period runs out.
    pub async fn wake_child(&self, name: &str) -> Result<ActorCell, SupervisorError> {
        let name = name.to_string();
        self.call(|reply| SupervisorMsg::WakeChild(name, reply))
            .await?
    }

    /// Stops the child `name` (gracefully, waiting for it) and removes its
    /// spec: it will not be restarted.
    pub async fn terminate_child(&self, name: &str) -> Result<(), SupervisorError> {
        let name = name.to_string();
        self.call(|reply| SupervisorMsg::TerminateChild(name, reply))
            .await?
    }

    /// The children in start order.
    pub async fn children(&self) -> Result<Vec<ChildInfo>, SupervisorError> {
        self.call(SupervisorMsg::ListChildren).await
    }

    /// How many replacement instances of the child `name` were started.
    pub async fn restart_count(&self, name: &str) -> Result<u32, SupervisorError> {
        self.children()
            .await?
            .into_iter()
            .find(|c| c.name == name)
            .map(|c| c.restarts)
            .ok_or_else(|| SupervisorError::NoSuchChild(name.to_string()))
    }

    /// Snapshot of the whole tree below (and including) this supervisor;
    /// each supervisor gets `per_node_timeout` to answer.
    pub async fn snapshot(
        &self,
        per_node_timeout: Duration,
    ) -> Result<TreeSnapshot, SupervisorError> {
        snapshot_tree(&self.actor, per_node_timeout).await
    }

    /// Where the actor named `name` sits in this tree: its node, path, and
    /// the supervisor and strategy it belongs to. `Ok(None)` if it is not
    /// in the tree.
    pub async fn locate(
        &self,
        name: &str,
        per_node_timeout: Duration,
    ) -> Result<Option<ChildLocation>, SupervisorError> {
        Ok(self.snapshot(per_node_timeout).await?.locate(name))
    }

    /// Stops the supervisor gracefully (its children first, in reverse
    /// start order) and waits up to `timeout` for it to be gone.
    pub async fn shutdown(&self, timeout: Duration) -> Result<(), SupervisorError> {
        self.actor.stop(None);
        self.actor
            .wait(Some(timeout))
            .await
            .map_err(|_| SupervisorError::Timeout {
                name: display_name(&self.actor),
                timeout,
            })
    }

    async fn call<T: Send + 'static>(
        &self,
        build: impl FnOnce(RpcReplyPort<T>) -> SupervisorMsg,
    ) -> Result<T, SupervisorError> {
        request(&self.actor, build, self.call_timeout).await
    }
}
