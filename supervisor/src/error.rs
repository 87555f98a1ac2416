//! The one error type of the crate.
//!
//! Every fallible public call returns [`SupervisorError`]; the supervisor
//! actor also fails with it (boxed into ractor's `ActorProcessingErr`), so a
//! parent that receives `SupervisionEvent::ActorFailed` can downcast the
//! reason back to this type.

use std::time::Duration;

use ractor::SpawnErr;

/// Why a supervision operation did not happen.
///
/// `#[non_exhaustive]`: later versions may add reasons, so a `match` on it
/// outside this crate needs a catch-all arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SupervisorError {
    /// `start_child` / `add_child` (or a `SupervisorSpec`) named a child
    /// twice. A hibernated child counts as present.
    #[error("supervisor already has a live child named {0:?}")]
    ChildExists(String),

    /// The name is held in ractor's registry by a live actor that this
    /// supervisor does not own.
    #[error("the name {0:?} is already registered to another live actor")]
    NameTaken(String),

    /// `terminate_child` / `restart_count` / `wake_child` named a child this
    /// supervisor does not have.
    #[error("supervisor has no child named {0:?}")]
    NoSuchChild(String),

    /// A child's start function returned an error (after the bounded
    /// registry-race retries).
    #[error("child {name:?} failed to start: {source}")]
    StartFailed {
        /// The child's readable name.
        name: String,
        /// What ractor reported.
        #[source]
        source: SpawnErr,
    },

    /// More than `max_restarts` restarts happened within `within`: the
    /// supervisor stopped all its children and failed itself.
    #[error(
        "supervisor {supervisor:?} exceeded its restart intensity \
         ({max_restarts} restarts within {within:?})"
    )]
    IntensityExceeded {
        /// Name of the supervisor that gave up.
        supervisor: String,
        /// The configured allowance.
        max_restarts: u32,
        /// The configured window.
        within: Duration,
    },

    /// The supervisor actor itself could not be spawned.
    #[error("supervisor could not be spawned: {0}")]
    Spawn(#[source] SpawnErr),

    /// A supervisor did not answer a request in time.
    #[error("supervisor {name:?} did not answer within {timeout:?}")]
    Timeout {
        /// Name (or id) of the supervisor that was asked.
        name: String,
        /// How long we waited.
        timeout: Duration,
    },

    /// A supervisor is stopped or stopping, so it cannot be asked anything.
    #[error("supervisor {0:?} is not reachable (stopped or stopping)")]
    Unreachable(String),

    /// The registry holds an actor under that name, but it is not a
    /// [`crate::Supervisor`].
    #[error("actor {0:?} is not a supervisor")]
    NotASupervisor(String),

    /// `wake_child` named a child that is neither hibernated nor running:
    /// it is being restarted, or it stopped or failed for good. Nothing was
    /// started.
    #[error("child {0:?} is not hibernated (it is restarting, stopped or failed)")]
    NotHibernated(String),
}

impl SupervisorError {
    /// Turns a `SpawnErr` produced by spawning a supervisor back into the
    /// typed error its `pre_start` failed with, when there is one.
    pub(crate) fn from_spawn(err: SpawnErr) -> Self {
        match err {
            SpawnErr::StartupFailed(inner) => match inner.downcast::<SupervisorError>() {
                Ok(typed) => *typed,
                Err(other) => SupervisorError::Spawn(SpawnErr::StartupFailed(other)),
            },
            other => SupervisorError::Spawn(other),
        }
    }

    /// The `SpawnErr` a start function must return when the nested
    /// supervisor it starts fails: a spawn error is passed on as is, any
    /// other reason travels boxed in `SpawnErr::StartupFailed`, from which it
    /// can be downcast back to this type.
    pub fn into_spawn_err(self) -> SpawnErr {
        match self {
            SupervisorError::Spawn(inner) => inner,
            other => SpawnErr::StartupFailed(Box::new(other)),
        }
    }
}
