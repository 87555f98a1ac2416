//! Child specifications: what a supervisor needs to (re)start one child.
//!
//! The constructor for a nested supervisor, [`ChildSpec::supervisor`], lives
//! with the supervisor actor in `supervisor.rs`: it calls
//! [`Supervisor::start`](crate::Supervisor::start), and this module stays below
//! the actor.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorCell, SpawnErr};

use crate::restart::Restart;
use crate::strategy::Strategy;

/// The future a start function returns.
pub type StartFuture = Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send>>;

/// A cloneable async factory. It is given the supervisor's `ActorCell` and
/// must spawn the child **linked** to it (`Actor::spawn_linked(.., sup)`),
/// returning the child's cell. It is called again for every restart.
pub type StartFn = Arc<dyn Fn(ActorCell) -> StartFuture + Send + Sync>;

/// How long a child gets to stop gracefully before it is killed, unless
/// [`ChildSpec::with_shutdown`] says otherwise.
pub const DEFAULT_SHUTDOWN: Duration = Duration::from_secs(5);

/// The kind given to children built with [`ChildSpec::supervisor`].
pub const SUPERVISOR_KIND: &str = "supervisor";

/// Everything a supervisor needs to start, restart and describe a child.
///
/// # Names and the registry
///
/// `name` is the readable name shown in snapshots and used by
/// `terminate_child`. It is the start function that decides whether the
/// actor is also registered in ractor's global registry: registration
/// happens when the start function passes `Some(name)` to
/// `Actor::spawn_linked` (as [`ChildSpec::for_actor`] and
/// [`ChildSpec::supervisor`] do). That registration is what makes
/// `ractor::registry::where_is("queue:/orders")` find the current instance,
/// including after a restart.
#[derive(Clone)]
pub struct ChildSpec {
    /// Readable, unique among the supervisor's children, e.g. `"queue:/orders"`.
    pub name: String,
    /// Free-form category, e.g. `"queue"`, `"exchange"`, `"supervisor"`.
    pub kind: String,
    /// Restart policy: whether the child is restarted after it exits.
    pub restart: Restart,
    /// The factory; see [`StartFn`].
    pub start: StartFn,
    /// Whether the child is a [`Supervisor`](crate::Supervisor); snapshots recurse into such
    /// children. (It is also checked at run time, so a wrong `true` only
    /// costs the recursion, never a failure.)
    pub is_supervisor: bool,
    /// Grace period for a graceful stop before the child is killed.
    pub shutdown: Duration,
    /// For nested supervisors built with [`ChildSpec::supervisor`]: its
    /// strategy, shown when the nested supervisor does not answer a
    /// snapshot request in time.
    pub strategy_hint: Option<Strategy>,
    /// Whether the child has nothing to do and need not run; see
    /// [`ChildSpec::with_dormant`]. `None`: never dormant.
    pub dormant: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
}

impl ChildSpec {
    /// A leaf child from any start closure, e.g.
    ///
    /// ```
    /// # use ractor::{Actor, ActorProcessingErr, ActorRef};
    /// # use warren_supervisor::{ChildSpec, Restart};
    /// # struct MyActor;
    /// # impl Actor for MyActor {
    /// #     type Msg = (); type State = (); type Arguments = u32;
    /// #     async fn pre_start(&self, _: ActorRef<()>, _: u32) -> Result<(), ActorProcessingErr> { Ok(()) }
    /// # }
    /// let name = "queue:/orders".to_string();
    /// let spec = ChildSpec::new(name.clone(), "queue", Restart::Permanent, move |sup| {
    ///     // Called for every (re)start, so it clones what the future takes.
    ///     let name = name.clone();
    ///     async move {
    ///         Actor::spawn_linked(Some(name), MyActor, 42, sup).await.map(|(r, _)| r.get_cell())
    ///     }
    /// });
    /// assert_eq!(spec.kind, "queue");
    /// ```
    pub fn new<F, Fut>(
        name: impl Into<String>,
        kind: impl Into<String>,
        restart: Restart,
        start: F,
    ) -> Self
    where
        F: Fn(ActorCell) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ActorCell, SpawnErr>> + Send + 'static,
    {
        let start: StartFn = Arc::new(move |sup| Box::pin(start(sup)) as StartFuture);
        Self {
            name: name.into(),
            kind: kind.into(),
            restart,
            start,
            is_supervisor: false,
            shutdown: DEFAULT_SHUTDOWN,
            strategy_hint: None,
            dormant: None,
        }
    }

    /// A leaf child that is one ractor actor, registered under `name`.
    /// `make` builds a fresh handler and arguments for every (re)start.
    pub fn for_actor<A, F>(
        name: impl Into<String>,
        kind: impl Into<String>,
        restart: Restart,
        make: F,
    ) -> Self
    where
        A: Actor,
        F: Fn() -> (A, A::Arguments) + Send + Sync + 'static,
    {
        let name = name.into();
        let registered = name.clone();
        Self::new(name, kind, restart, move |sup| {
            let (handler, args) = make();
            let registered = registered.clone();
            async move {
                Actor::spawn_linked(Some(registered), handler, args, sup)
                    .await
                    .map(|(actor, _join)| actor.get_cell())
            }
        })
    }

    /// Marks a hand-written start function as one that starts a
    /// [`Supervisor`](crate::Supervisor), so that snapshots recurse into it.
    pub fn as_supervisor(mut self) -> Self {
        self.is_supervisor = true;
        self
    }

    /// Sets the graceful-stop grace period (default [`DEFAULT_SHUTDOWN`]).
    pub fn with_shutdown(mut self, grace: Duration) -> Self {
        self.shutdown = grace;
        self
    }

    /// Makes the child *hibernatable at start*: whenever the supervisor is
    /// about to start it on its own initiative, it first asks `dormant()`,
    /// and if that says `true` it does not spawn the child but records it
    /// as [`ChildStatus::Hibernated`](crate::ChildStatus::Hibernated), to be
    /// started by [`SupervisorHandle::wake_child`](crate::SupervisorHandle::wake_child).
    ///
    /// Consulted for the initial children of a
    /// [`SupervisorSpec`](crate::SupervisorSpec), for
    /// [`SupervisorHandle::add_child`](crate::SupervisorHandle::add_child),
    /// and for siblings that a `one_for_all` / `rest_for_one` strategy
    /// stopped for another child's sake. Never consulted for
    /// [`SupervisorHandle::start_child`](crate::SupervisorHandle::start_child),
    /// for a wake, or for the child that itself exited: that one is
    /// restarted per its [`Restart`] policy. It runs inside the supervisor,
    /// so it must be quick and must not call the supervisor.
    pub fn with_dormant(mut self, dormant: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        self.dormant = Some(Arc::new(dormant));
        self
    }

    /// What the dormancy test says now (`false` without one).
    pub(crate) fn is_dormant(&self) -> bool {
        self.dormant.as_ref().is_some_and(|dormant| dormant())
    }
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("restart", &self.restart)
            .field("is_supervisor", &self.is_supervisor)
            .field("shutdown", &self.shutdown)
            .finish_non_exhaustive()
    }
}
