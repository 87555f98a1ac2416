//! Restart policies (permanent / transient / temporary) and how a child's
//! exit is classified as normal or abnormal.

use ractor::{ActorId, Signal, SupervisionEvent};
use serde::{Deserialize, Serialize};

/// When a child is restarted after it exits (Erlang/OTP's `restart` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    /// Always restarted, whatever the exit.
    Permanent,
    /// Restarted only after an abnormal exit (see [`Exit`]).
    Transient,
    /// Never restarted.
    Temporary,
}

impl Restart {
    /// Whether a child with this policy is restarted after `exit`.
    pub fn should_restart(self, exit: &Exit) -> bool {
        match self {
            Restart::Permanent => true,
            Restart::Transient => exit.is_abnormal(),
            Restart::Temporary => false,
        }
    }

    /// Lower-case name, as used in snapshots and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Restart::Permanent => "permanent",
            Restart::Transient => "transient",
            Restart::Temporary => "temporary",
        }
    }
}

impl std::fmt::Display for Restart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stop reason with which a child *hibernates*: a child that stops
/// itself normally with it (`myself.stop(Some(HIBERNATE_REASON.into()))`)
/// is not restarted whatever its [`Restart`] policy, does not count against
/// the restart intensity, takes no sibling along, and stays in its
/// supervisor's table as
/// [`ChildStatus::Hibernated`](crate::ChildStatus::Hibernated) until
/// [`SupervisorHandle::wake_child`](crate::SupervisorHandle::wake_child)
/// starts it again. Meant for actors that are idle and cheap to start again
/// on demand (e.g. 100 000 idle queues need not each cost an actor).
pub const HIBERNATE_REASON: &str = "hibernate";

/// How a child ended, as far as restart decisions care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The child stopped itself or was stopped (`ActorCell::stop`), with
    /// the optional stop reason.
    Normal(Option<String>),
    /// The child panicked, its handler returned an error, or it was killed
    /// (`ActorCell::kill`) or its task was cancelled.
    Abnormal(String),
}

impl Exit {
    /// True for panics, handler errors, kills and cancellations.
    pub fn is_abnormal(&self) -> bool {
        matches!(self, Exit::Abnormal(_))
    }

    /// True for a normal stop with [`HIBERNATE_REASON`].
    pub fn is_hibernation(&self) -> bool {
        matches!(self, Exit::Normal(Some(reason)) if reason == HIBERNATE_REASON)
    }
}

/// The reason ractor attaches to `ActorTerminated` when an actor's task was
/// dropped from under it (see `ActorLifecycleGuard` in ractor 0.16.5).
const TASK_CANCELLED_REASON: &str = "actor_task_cancelled";

/// Extracts "which actor ended, and how" from a supervision event; `None`
/// for events that are not exits (started, process groups, pid lifecycle).
///
/// ractor reports a kill as `ActorTerminated` with the reason `"killed"`
/// (the `Display` of `Signal::Kill`), which would otherwise look like a
/// normal stop; OTP treats `kill` as abnormal, so we do too. A child that
/// calls `stop(Some("killed"))` itself is indistinguishable and is also
/// treated as abnormal.
pub(crate) fn classify(event: &SupervisionEvent) -> Option<(ActorId, Exit)> {
    match event {
        SupervisionEvent::ActorFailed(cell, err) => {
            Some((cell.get_id(), Exit::Abnormal(err.to_string())))
        }
        SupervisionEvent::ActorTerminated(cell, _, reason) => {
            let killed = Signal::Kill.to_string();
            let exit = match reason {
                Some(r) if *r == killed || r == TASK_CANCELLED_REASON => Exit::Abnormal(r.clone()),
                other => Exit::Normal(other.clone()),
            };
            Some((cell.get_id(), exit))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_table_matches_otp() {
        let normal = Exit::Normal(None);
        let abnormal = Exit::Abnormal("boom".into());
        assert!(Restart::Permanent.should_restart(&normal));
        assert!(Restart::Permanent.should_restart(&abnormal));
        assert!(!Restart::Transient.should_restart(&normal));
        assert!(Restart::Transient.should_restart(&abnormal));
        assert!(!Restart::Temporary.should_restart(&normal));
        assert!(!Restart::Temporary.should_restart(&abnormal));
    }

    #[test]
    fn hibernation_is_a_normal_stop_with_its_reason() {
        assert!(Exit::Normal(Some(HIBERNATE_REASON.into())).is_hibernation());
        assert!(!Exit::Normal(None).is_hibernation());
        assert!(!Exit::Normal(Some("other".into())).is_hibernation());
        assert!(!Exit::Abnormal(HIBERNATE_REASON.into()).is_hibernation());
    }

    #[test]
    fn kill_reason_is_what_ractor_reports() {
        // If ractor ever renames the kill reason, classify() silently turns
        // kills into normal exits; pin it here.
        assert_eq!(Signal::Kill.to_string(), "killed");
    }
}
