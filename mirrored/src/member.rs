//! The supervised actor of a mirrored queue's replica, on each node that holds one
//! (`mirror:/orders`): it runs the queue's group here, and the queue's leader
//! (`queue:/orders`, the classic shell on the group's log) while this node serves it:
//! a new queue is served where it was declared; when the node that serves it is down,
//! the node that leads the group in Raft (elected among the others: pre-vote,
//! check-quorum) takes over, from its copy.
//!
//! It looks again at who serves when something that decides it changes: the group's
//! Raft leader or term (the replica's [`Seat`] watch), a `Lead` applied here, the set of
//! nodes held down (the membership's watch), the queue's members (the metadata's);
//! and, as a safety net, every [`SAFETY_NET`] or so. An idle queue costs nothing
//! between those.
//!
//! While this node leads the group in Raft, it also brings the group's Raft members
//! to the queue's members ([`ReplicaHandle::reconcile`]), one change at a time.
//!
//! [`ReplicaHandle::reconcile`]: warren_cluster::replica::ReplicaHandle::reconcile

use std::future::pending;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use warren_cluster::membership::{watch_down, DownSet};
use warren_cluster::replica::{GroupView, Reconciled, Seat};
use warren_supervisor::{ChildSpec, Restart};

use crate::log::Group;

/// How often a replica looks at who serves when nothing told it to (at least; each
/// waits up to as long again, at random, so that a node's replicas do not look all at
/// once).
const SAFETY_NET: Duration = Duration::from_secs(60);

/// How soon a replica looks again while its node leads the group but has not applied
/// what the group committed yet.
const CATCHING_UP: Duration = Duration::from_millis(100);

/// How soon the group's leader looks again while the group's members change.
const CHANGING: Duration = Duration::from_millis(250);

/// How soon a leader that failed is started again, at the most.
const RESTART_EVERY: Duration = Duration::from_secs(1);

/// Whether this node's member list holds node `node` down.
pub(crate) fn down(me: &str, node: &str) -> bool {
    watch_down(me).borrow().contains(node)
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
    /// Which members this node holds down.
    down: watch::Receiver<DownSet>,
    /// The task that says when to look again at who serves.
    watcher: Option<JoinHandle<()>>,
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
        let down = watch_down(&args.group.replica.node);
        let mut state = MemberState {
            args,
            running: None,
            failed_at: None,
            down,
            watcher: None,
        };

        // A queue just declared (the replica runs, nothing is logged yet but what
        // the group's first election wrote): where it was declared, its leader runs
        // before the declaration is answered, so that what the client sends next
        // finds it (and waits in its mailbox until it leads). At a node's start the
        // replica is not there yet: the checks decide.
        if state.args.group.replica.view(0).await.is_ok() {
            state.args.group.open().await?;
            state.check(&myself, true).await?;
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
        let seat = state
            .args
            .group
            .replica
            .watch(state.args.group.spec.group)
            .await
            .ok()
            .flatten();
        state.watcher = Some(tokio::spawn(watch(
            myself.clone(),
            state.args.group.clone(),
            seat,
            Some(state.down.clone()),
        )));
        // (What changed while the watches were set up.)
        myself.send_message(MemberMsg::Check)?;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<MemberMsg>,
        message: MemberMsg,
        state: &mut MemberState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            MemberMsg::Check => state.check(&myself, false).await,
            MemberMsg::Restart => state.restart(&myself).await,
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<MemberMsg>,
        state: &mut MemberState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(watcher) = state.watcher.take() {
            watcher.abort();
        }
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
    /// node has taken over. `starting`: called as the replica's actor starts (see
    /// [`serves`]).
    async fn check(
        &mut self,
        myself: &ActorRef<MemberMsg>,
        starting: bool,
    ) -> Result<(), ActorProcessingErr> {
        let group = &self.args.group;
        let me = group.replica.node.as_str();
        let Some(view) = group.replica.view(group.spec.group).await.ok().flatten() else {
            return Ok(());
        };
        let leads = view.leader.as_deref() == Some(me);
        // A leader whose node is no longer a member closed its group there: the
        // others elect another one (quiet, they would wait for it forever).
        if let Some(leader) = view.leader.as_deref() {
            if leader != me && !group.has_member(leader) {
                group.replica.leader_gone(group.spec.group);
                myself.send_after(CHANGING, || MemberMsg::Check);
            }
        }
        let serving = group.serving.load_full();
        let declared_here =
            !group.spec.joining && group.spec.members.first().is_some_and(|m| m == me);
        let serve = match serves(
            &view,
            serving.as_deref().map(String::as_str),
            me,
            declared_here,
            starting,
            |node| group.has_member(node),
            |node| self.down.borrow().contains(node),
        ) {
            Serves::Yes => true,
            Serves::No => false,
            Serves::CatchingUp => {
                myself.send_after(CATCHING_UP, || MemberMsg::Check);
                false
            }
        };
        if leads {
            let desired = group.members.borrow().to_vec();
            match group.replica.reconcile(group.spec.group, desired).await {
                Ok(Reconciled::Changing(what)) => {
                    tracing::debug!(group = %group.spec.label, "members changing: {what}");
                    myself.send_after(CHANGING, || MemberMsg::Check);
                }
                Ok(Reconciled::Settled) => {
                    // The Raft leadership goes where the queue is served (a live
                    // member's leader is not moved: the leadership follows it). A
                    // failover can leave them apart: the old leader handed over to one
                    // member while another campaigned.
                    // (Only on a copy that applied all it committed: an older `Lead`
                    // would send the leadership back and forth.)
                    let elsewhere = serving
                        .as_deref()
                        .filter(|_| view.log.applied >= view.log.committed)
                        .filter(|node| node.as_str() != me && group.has_member(node))
                        .filter(|node| !self.down.borrow().contains(node.as_str()));
                    if let Some(node) = elsewhere {
                        match group.replica.hand_over(group.spec.group, node).await {
                            Ok(Reconciled::Changing(what)) => {
                                tracing::debug!(group = %group.spec.label, "{what}, which serves the queue");
                                myself.send_after(CHANGING, || MemberMsg::Check);
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(group = %group.spec.label, "the leadership stays here: {e}");
                                myself.send_after(CHANGING * 4, || MemberMsg::Check);
                            }
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(group = %group.spec.label, "the members did not change: {e}");
                    myself.send_after(CHANGING * 4, || MemberMsg::Check);
                }
            }
        }
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
            // and consume again where the queue is served now). It stops once it has
            // handled what its mailbox holds, so that each request there is answered
            // (a commit's confirms sent, a publish refused), not dropped.
            Some(cell) if !serve && serving.is_some() => {
                tracing::debug!(group = %group.spec.label, "another node serves the queue: stopping its leader here");
                let _ = cell.drain();
                self.running = None;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Whether a replica serves its queue, as [`serves`] decides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Serves {
    /// This node serves the queue: its leader runs here.
    Yes,
    /// It does not (its leader stops if another node serves).
    No,
    /// Not yet: this node leads the group but has not applied all it committed (a
    /// `Lead` may be among it); it looks again in [`CATCHING_UP`].
    CatchingUp,
}

/// Whether node `me` serves the queue, as its replica sees the group (`view`) and its
/// copy names the node that serves (`serving`: none before the first `Lead` applied
/// here). `declared_here`: `me` is the group's first member, not joining (where the
/// queue was declared). `starting`: the replica's actor is starting while the node's
/// replica runs (the queue was just declared here; its declaration is answered once
/// this start is done). `is_member` and `is_down` say whether a node is one of the
/// queue's members, and held down.
///
/// A group of one elects itself as it opens: by the time its actor looks, the log
/// holds its leader's first (empty) entry, committed maybe but not applied yet, and
/// nothing else (so no `Lead`: nobody serves yet). Its leader starts all the same: waiting for the copy to catch up would leave the
/// queue without a leader when the first publish comes (refused: the publisher got no
/// confirm). A leader started too early is harmless: its `Lead` replaces the epoch it
/// read, and stops it if another node serves.
pub(crate) fn serves(
    view: &GroupView,
    serving: Option<&str>,
    me: &str,
    declared_here: bool,
    starting: bool,
    is_member: impl Fn(&str) -> bool,
    is_down: impl Fn(&str) -> bool,
) -> Serves {
    let leads = view.leader.as_deref() == Some(me);
    let yes = |serve: bool| if serve { Serves::Yes } else { Serves::No };
    match serving {
        // A new queue (nothing logged yet): where it was declared. One whose log
        // holds no leader yet (caught up with it): where the group is led.
        None if view.log.last == 0 => yes(declared_here),
        // Where it was declared, as its actor starts (see above).
        None if starting && declared_here && leads && view.log.last <= 1 => Serves::Yes,
        None if leads && view.log.applied < view.log.committed => Serves::CatchingUp,
        None => yes(leads),
        Some(node) if node == me => Serves::Yes,
        // Another node serves: taken over only when that node is down, or no longer
        // a member, and this one leads the group (a live leader is not disturbed).
        Some(node) => yes(leads && (!is_member(node) || is_down(node))),
    }
}

impl ractor::Message for MemberMsg {}

/// Tells replica `myself` to look at who serves each time something that decides it
/// changes (see the module documentation); ends with the replica.
async fn watch(
    myself: ActorRef<MemberMsg>,
    group: Group,
    mut seat: Option<watch::Receiver<Seat>>,
    mut down: Option<watch::Receiver<DownSet>>,
) {
    let mut members = group.members.subscribe();
    loop {
        let wait = SAFETY_NET.mul_f64(1.0 + rand::random::<f64>());
        tokio::select! {
            changed = changed(&mut seat) => if changed.is_err() {
                // The group was closed here and opened again: its new watch.
                seat = group.replica.watch(group.spec.group).await.ok().flatten();
            },
            changed = changed(&mut down) => if changed.is_err() {
                down = None;
            },
            // (The sender lives as long as the group does.)
            _ = members.changed() => {}
            () = group.led.notified() => {}
            () = tokio::time::sleep(wait) => {
                if seat.is_none() {
                    seat = group.replica.watch(group.spec.group).await.ok().flatten();
                }
            }
        }
        if myself.cast(MemberMsg::Check).is_err() {
            return;
        }
    }
}

/// The next change `watch` tells of; never, without a watch.
async fn changed<T>(watch: &mut Option<watch::Receiver<T>>) -> Result<(), watch::error::RecvError> {
    match watch {
        Some(watch) => watch.changed().await,
        None => pending().await,
    }
}

/// The child spec of the replica actor `name` of the queue whose group `group` is,
/// which starts the queue's leader `leader` while this node leads.
pub(crate) fn child(name: String, group: Group, leader: ChildSpec) -> ChildSpec {
    let args = MemberArgs { group, leader };
    ChildSpec::for_actor(name, "mirror", Restart::Permanent, move || {
        (Member, args.clone())
    })
}

#[cfg(test)]
mod tests {
    use warren_cluster::protocol::MetadataLog;
    use warren_cluster::replica::GroupView;

    use super::{serves, Serves};

    /// A group of one as its replica's actor sees it right after `open`: it elected
    /// itself as it opened, and its leader's empty entry is committed, not yet applied
    /// (the flake of `a_mirrored_queue_of_one_replica_conforms`: the leader did not
    /// start, and the first publish was dropped).
    fn one_replica_just_opened() -> GroupView {
        GroupView {
            members: vec!["n1".into()],
            term: 1,
            leader: Some("n1".into()),
            log: MetadataLog {
                applied: 0,
                committed: 1,
                first: 1,
                last: 1,
                snapshot: 0,
            },
            progress: Vec::new(),
        }
    }

    fn nobody(_: &str) -> bool {
        false
    }

    #[test]
    fn a_group_of_one_serves_where_declared_as_its_replica_starts() {
        let view = one_replica_just_opened();
        // Before the fix this was `CatchingUp`: no leader when the declaration was
        // answered.
        assert_eq!(
            serves(&view, None, "n1", true, true, nobody, nobody),
            Serves::Yes
        );
        // Later checks still wait for the copy to catch up...
        assert_eq!(
            serves(&view, None, "n1", true, false, nobody, nobody),
            Serves::CatchingUp
        );
        // ...and serve once it has.
        let mut caught_up = view.clone();
        caught_up.log.applied = 1;
        assert_eq!(
            serves(&caught_up, None, "n1", true, false, nobody, nobody),
            Serves::Yes
        );
        // A replica that is not where the queue was declared does not start early.
        assert_eq!(
            serves(&view, None, "n1", false, true, nobody, nobody),
            Serves::CatchingUp
        );
    }

    #[test]
    fn the_rules_for_a_served_queue_are_unchanged() {
        let mut view = one_replica_just_opened();
        view.log.applied = 1;
        // A new group with an empty log: where it was declared only.
        let mut empty = view.clone();
        empty.log = MetadataLog::default();
        empty.leader = None;
        assert_eq!(
            serves(&empty, None, "n1", true, true, nobody, nobody),
            Serves::Yes
        );
        assert_eq!(
            serves(&empty, None, "n2", false, true, nobody, nobody),
            Serves::No
        );
        // Served here; served by a live member elsewhere; by one held down.
        assert_eq!(
            serves(&view, Some("n1"), "n1", true, false, nobody, nobody),
            Serves::Yes
        );
        let member = |n: &str| n == "n2";
        assert_eq!(
            serves(&view, Some("n2"), "n1", true, true, member, nobody),
            Serves::No
        );
        assert_eq!(
            serves(&view, Some("n2"), "n1", true, false, member, |n: &str| n
                == "n2"),
            Serves::Yes
        );
    }
}
