//! The supervised actor of a mirrored queue's replica, on each node that holds one
//! (`mirror:/orders`): it runs the queue's group here, and the queue's leader
//! (`queue:/orders`, the classic shell on the group's log) while this node serves it:
//! a new queue is served where it was declared; when the node that serves it is down,
//! the node that leads the group in Raft (elected among the others: pre-vote,
//! check-quorum) takes over, from its copy.

use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use warren_cluster::members::Health;
use warren_cluster::membership::MembershipHandle;
use warren_supervisor::{ChildSpec, Restart};

use crate::log::Group;

/// How often a replica looks at who leads its group.
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// How soon a leader that failed is started again, at the most.
const RESTART_EVERY: Duration = Duration::from_secs(1);

/// Whether this node's member list holds node `node` down.
pub(crate) async fn down(me: &str, node: &str) -> bool {
    let Some(membership) = MembershipHandle::lookup(me) else {
        return false;
    };
    membership.status().await.is_ok_and(|members| {
        members
            .iter()
            .any(|m| m.name == node && m.health == Health::Down)
    })
}

/// A replica's actor.
pub(crate) struct Member;

/// What it starts with.
#[derive(Clone)]
pub(crate) struct MemberArgs {
    pub group: Group,
    /// The queue's leader, started here while this node leads the group.
    pub leader: ChildSpec,
}

pub(crate) struct MemberState {
    args: MemberArgs,
    /// The leader, while it runs here.
    running: Option<ActorCell>,
    /// When the leader last failed.
    failed_at: Option<Instant>,
}

/// What a replica's actor is told.
pub(crate) enum MemberMsg {
    /// Time to look at who leads the group.
    Check,
    /// Start the leader that failed, unless it runs again.
    Restart,
}

impl Actor for Member {
    type Msg = MemberMsg;
    type State = MemberState;
    type Arguments = MemberArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<MemberMsg>,
        args: MemberArgs,
    ) -> Result<MemberState, ActorProcessingErr> {
        let mut state = MemberState {
            args,
            running: None,
            failed_at: None,
        };
        // A queue just declared (the replica runs, the group's log is empty): where it
        // was declared, its leader runs before the declaration is answered, so that
        // what the client sends next finds it (and waits in its mailbox until it
        // leads). At a node's start the replica is not there yet: the checks decide.
        if state.args.group.replica.view(0).await.is_ok() {
            state.args.group.open().await?;
            state.check(&myself).await?;
        }
        Ok(state)
    }

    // Opened after the start: at a node's start the replica comes after the queues,
    // and the supervisor does not wait for it.
    async fn post_start(
        &self,
        myself: ActorRef<MemberMsg>,
        state: &mut MemberState,
    ) -> Result<(), ActorProcessingErr> {
        state.args.group.open().await?;
        myself.send_interval(CHECK_EVERY, || MemberMsg::Check);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<MemberMsg>,
        message: MemberMsg,
        state: &mut MemberState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            MemberMsg::Check => state.check(&myself).await,
            MemberMsg::Restart => state.restart(&myself).await,
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<MemberMsg>,
        state: &mut MemberState,
    ) -> Result<(), ActorProcessingErr> {
        // The queue's leader goes with its replica (deleted, or the node stops), even
        // while it waits to lead.
        if let Some(cell) = state.running.take() {
            cell.kill();
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<MemberMsg>,
        event: SupervisionEvent,
        state: &mut MemberState,
    ) -> Result<(), ActorProcessingErr> {
        // The leader stopped (another leader started): the next check starts it again
        // if this node serves. It failed: started again at once, to lead again or to
        // tell its consumers that the queue is served elsewhere (a failed actor told
        // nobody; its next incarnation does).
        let (ended, failed) = match &event {
            SupervisionEvent::ActorTerminated(cell, _, _) => (Some(cell.get_id()), false),
            SupervisionEvent::ActorFailed(cell, e) => {
                tracing::warn!(group = %state.args.group.spec.label, "the queue's leader failed: {e}");
                (Some(cell.get_id()), true)
            }
            _ => (None, false),
        };
        if ended.is_some() && state.running.as_ref().map(|c| c.get_id()) == ended {
            state.running = None;
            if failed {
                // (One that keeps failing is started once a second, not in a loop.)
                let recently = state.failed_at.is_some_and(|t| t.elapsed() < RESTART_EVERY);
                state.failed_at = Some(Instant::now());
                if recently {
                    myself.send_after(RESTART_EVERY, || MemberMsg::Restart);
                } else {
                    state.restart(&myself).await?;
                }
            }
        }
        Ok(())
    }
}

impl MemberState {
    /// Starts the leader that failed (unless it runs again): it leads again, or tells
    /// the consumers of the one that failed that the queue is served elsewhere.
    async fn restart(&mut self, myself: &ActorRef<MemberMsg>) -> Result<(), ActorProcessingErr> {
        if self.running.is_none() {
            let cell = (self.args.leader.start)(myself.get_cell()).await?;
            self.running = Some(cell);
        }
        Ok(())
    }

    /// Starts the queue's leader here if this node is to serve it, stops it if another
    /// node has taken over.
    async fn check(&mut self, myself: &ActorRef<MemberMsg>) -> Result<(), ActorProcessingErr> {
        let group = &self.args.group;
        let me = group.replica.node.as_str();
        let Some(view) = group.replica.view(group.spec.group).await.ok().flatten() else {
            return Ok(());
        };
        let leads = view.leader.as_deref() == Some(me);
        let serving = group.serving.load_full();
        let serve = match serving.as_deref() {
            // A new queue (nothing logged yet): where it was declared. One whose log
            // holds no leader yet (caught up with it): where the group is led.
            None if view.log.last == 0 => group.spec.members.first().is_some_and(|m| m == me),
            None => leads && view.log.applied >= view.log.committed,
            Some(node) if node == me => true,
            // Another node serves: taken over only when that node is down and this
            // one leads the group (a live leader is not disturbed).
            Some(node) => leads && down(me, node).await,
        };
        tracing::trace!(
            group = %group.spec.label,
            leads,
            leader = ?view.leader,
            term = view.term,
            serving = ?serving,
            serve,
            running = self.running.is_some(),
            "checked who serves"
        );
        match &self.running {
            None if serve => {
                tracing::debug!(group = %group.spec.label, "this node serves the queue: starting its leader");
                let cell = (self.args.leader.start)(myself.get_cell()).await?;
                self.running = Some(cell);
            }
            // Another node has taken over: this one stops (its consumers are told,
            // and consume again where the queue is served now).
            Some(cell) if !serve && serving.is_some() => {
                cell.stop(Some("another node serves the queue".into()));
                self.running = None;
            }
            _ => {}
        }
        Ok(())
    }
}

impl ractor::Message for MemberMsg {}

/// The child spec of the replica actor `name` of the queue whose group `group` is,
/// which starts the queue's leader `leader` while this node leads.
pub(crate) fn child(name: String, group: Group, leader: ChildSpec) -> ChildSpec {
    let args = MemberArgs { group, leader };
    ChildSpec::for_actor(name, "mirror", Restart::Permanent, move || {
        (Member, args.clone())
    })
}
