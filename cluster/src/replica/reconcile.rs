//! The members of a group other than the metadata's (a mirrored queue's), brought to
//! the list the metadata holds for it, one Raft membership change at a time, by the
//! group's leader: a new member joins as a learner and becomes a voter once it has
//! caught up (so that adding a member to a group with one member down does not stall
//! it); a member left out is removed; a leader left out hands its leadership to a
//! member first.

use raft::prelude::ConfChangeType;
use raft::StateRole;
use warren_actors::error::BrokerError;

use super::{broker_error, not_here, ReplicaState};
use crate::raft_group::{GroupId, Joiner};
use crate::raft_log::{raft_id, METADATA_GROUP};

/// How far behind the commit index a learner may be to become a voter.
const CAUGHT_UP_WITHIN: u64 = 64;

/// Where a group's members stand against the list they should be.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reconciled {
    /// They are the list.
    Settled,
    /// A change is under way (proposed, or a new member still catching up): ask again.
    Changing(String),
    /// This node does not lead the group: its leader does this.
    NotLeader,
}

/// One member's replication, as the group's leader sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberProgress {
    /// The member's node.
    pub name: String,
    /// The last log index the leader knows the member holds.
    pub matched: u64,
    /// A voter (else a learner, still catching up).
    pub voter: bool,
}

impl ReplicaState {
    /// Takes one step to make group `group`'s members `desired`, when this node leads
    /// it.
    pub(super) fn reconcile(
        &mut self,
        group: GroupId,
        desired: &[String],
    ) -> Result<Reconciled, BrokerError> {
        if group == METADATA_GROUP {
            return Err(BrokerError::precondition_failed(
                "the metadata group's members follow the cluster's".to_string(),
            ));
        }
        if desired.is_empty() {
            return Err(BrokerError::precondition_failed(
                "a group needs at least one member".to_string(),
            ));
        }
        self.dirty.insert(group);
        let hosted = self.groups.get_mut(&group).ok_or_else(|| not_here(group))?;
        let me = hosted.id();
        let raft = &mut hosted.group.node.raft;
        if raft.state != StateRole::Leader {
            return Ok(Reconciled::NotLeader);
        }
        if raft.has_pending_conf() {
            return Ok(Reconciled::Changing(
                "a membership change is being applied".into(),
            ));
        }
        let committed = raft.raft_log.committed;
        let cs = hosted.conf_state();
        let wanted = |id: u64| desired.iter().any(|n| raft_id(n) == id);
        // (Within a few entries of the commit index: under a steady load a learner is
        // always a little behind.)
        let caught_up = |hosted: &super::Hosted, id: u64| {
            hosted
                .group
                .node
                .raft
                .prs()
                .get(id)
                .is_some_and(|p| p.matched + CAUGHT_UP_WITHIN >= committed)
        };
        // A leader left out hands over to a member that has everything first.
        if !wanted(me) {
            if let Some(to) = cs
                .voters
                .iter()
                .copied()
                .find(|id| *id != me && wanted(*id) && caught_up(hosted, *id))
            {
                // (A quiet group ticks again, so that a lost transfer times out.)
                hosted.wake();
                hosted.group.node.transfer_leader(to);
                return Ok(Reconciled::Changing(format!(
                    "handing the leadership to {}",
                    hosted.name_of(to)
                )));
            }
        }
        // New members first as learners; a learner that caught up votes; one that has
        // not does not hold up the steps after (a member's removal above all).
        let mut catching_up = None;
        for name in desired {
            let id = raft_id(name);
            if cs.voters.contains(&id) {
                continue;
            }
            if !cs.learners.contains(&id) {
                self.change(group, name, id, ConfChangeType::AddLearnerNode)?;
                return Ok(Reconciled::Changing(format!("adding {name} as a learner")));
            }
            let hosted = &self.groups[&group];
            if !caught_up(hosted, id) {
                catching_up.get_or_insert_with(|| name.clone());
                continue;
            }
            self.change(group, name, id, ConfChangeType::AddNode)?;
            return Ok(Reconciled::Changing(format!("making {name} a voter")));
        }
        let hosted = &self.groups[&group];
        let extra = cs
            .voters
            .iter()
            .chain(cs.learners.iter())
            .copied()
            .find(|id| !wanted(*id) && *id != me);
        if let Some(id) = extra {
            let name = hosted.name_of(id);
            self.change(group, &name, id, ConfChangeType::RemoveNode)?;
            return Ok(Reconciled::Changing(format!("removing {name}")));
        }
        if let Some(name) = catching_up {
            return Ok(Reconciled::Changing(format!("{name} is catching up")));
        }
        if !wanted(me) {
            return Ok(Reconciled::Changing(
                "waiting for a member to catch up to hand the leadership to".into(),
            ));
        }
        Ok(Reconciled::Settled)
    }

    /// Hands group `group`'s leadership to member `to` (see
    /// [`ReplicaHandle::hand_over`](crate::replica::ReplicaHandle::hand_over)): a
    /// mirrored queue's leader runs where it is served, so that the Raft leader and
    /// the queue's leader are one node, as in RabbitMQ's quorum queues.
    pub(super) fn hand_over(
        &mut self,
        group: GroupId,
        to: &str,
    ) -> Result<Reconciled, BrokerError> {
        let hosted = self.groups.get_mut(&group).ok_or_else(|| not_here(group))?;
        let me = hosted.id();
        let id = raft_id(to);
        if id == me {
            return Ok(Reconciled::Settled);
        }
        let raft = &hosted.group.node.raft;
        if raft.state != StateRole::Leader {
            return Ok(Reconciled::NotLeader);
        }
        if raft.has_pending_conf() || raft.lead_transferee.is_some() {
            return Ok(Reconciled::Changing(
                "a membership change or a hand-over is under way".into(),
            ));
        }
        let committed = raft.raft_log.committed;
        let ready = hosted.conf_state().voters.contains(&id)
            && raft
                .prs()
                .get(id)
                .is_some_and(|p| p.matched + CAUGHT_UP_WITHIN >= committed);
        if !ready {
            return Ok(Reconciled::Changing(format!("{to} is catching up")));
        }
        self.dirty.insert(group);
        // (A quiet group ticks again, so that a lost transfer times out.)
        hosted.wake();
        hosted.group.node.transfer_leader(id);
        Ok(Reconciled::Changing(format!(
            "handing the leadership to {to}"
        )))
    }

    /// Proposes the membership change `change` of node `name` (Raft id `id`) to group
    /// `group`.
    fn change(
        &mut self,
        group: GroupId,
        name: &str,
        id: u64,
        change: ConfChangeType,
    ) -> Result<(), BrokerError> {
        let hosted = self.groups.get_mut(&group).ok_or_else(|| not_here(group))?;
        let mut cc = raft::prelude::ConfChange {
            node_id: id,
            ..Default::default()
        };
        cc.set_change_type(change);
        let context = warren_storage::codec::encode(&Joiner {
            name: name.to_string(),
        })
        .map_err(|e| broker_error(e.to_string()))?;
        hosted.wake();
        hosted
            .group
            .node
            .propose_conf_change(context, cc)
            .map_err(|e| {
                broker_error(format!(
                    "{}: cannot change members for {name} now ({e})",
                    hosted.label
                ))
            })
    }
}

impl super::Hosted {
    /// Each member's replication, when this node leads the group.
    pub(super) fn progress(&self) -> Vec<MemberProgress> {
        let raft = &self.group.node.raft;
        if raft.state != StateRole::Leader {
            return Vec::new();
        }
        let cs = self.conf_state();
        let mut out: Vec<MemberProgress> = raft
            .prs()
            .iter()
            .map(|(id, p)| MemberProgress {
                name: self.name_of(*id),
                matched: if *id == self.id() {
                    raft.raft_log.persisted
                } else {
                    p.matched
                },
                voter: cs.voters.contains(id),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}
