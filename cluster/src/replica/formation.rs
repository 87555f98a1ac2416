//! Forming and changing the metadata group (group 0): a fresh disk node whose seeds
//! are all down (or that has none) starts a group of its own after
//! [`DISCOVERY_WINDOW`]; fresh disk nodes that see each other leave it to the one
//! with the smallest name; a fresh node that sees an initialised member asks it to add
//! it (voter for disk, learner for RAM). A RAM node never forms a group. Members leave
//! (or are forgotten) through [`ReplicaState::remove_member`].

use std::time::{Duration, Instant};

use protobuf::Message as _;
use ractor::{ActorProcessingErr, ActorRef};
use raft::prelude::{ConfChange, ConfChangeType, ConfState, HardState};
use raft::RawNode;
use serde::{Deserialize, Serialize};
use warren_actors::error::BrokerError;

use super::{
    broker_error, logger, raft_config, replica_of, LocalReplica, ReplicaMsg, ReplicaState,
    DISCOVERY_EVERY, DISCOVERY_WINDOW,
};
use crate::log_store::LogStore;
use crate::members::{Health, Role};
use crate::membership::MembershipHandle;
use crate::raft_group::{Joiner, RaftGroup};
use crate::raft_log;

/// What a replica says of itself to a node looking for a cluster.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// The replica's node.
    pub name: String,
    /// It knows a group: it formed one, or starts from one it joins.
    pub initialized: bool,
    /// The group's leader, by node name, when this replica knows one.
    pub leader: Option<String>,
    /// Raft id -> name of every member the log names.
    pub names: Vec<(u64, String)>,
    /// The voters the group was formed with.
    pub base_voters: Vec<u64>,
}

impl ReplicaState {
    pub(super) fn status(&self) -> ReplicaStatus {
        ReplicaStatus {
            name: self.name.clone(),
            initialized: self.meta.initialized(),
            leader: self.meta.leader(),
            names: self
                .meta
                .group
                .record
                .names
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
            base_voters: self.meta.group.record.base_voters.clone(),
        }
    }

    /// Starts Raft again from `voters` (and the stored log), as Raft reads its
    /// members only when it starts.
    fn restart_raft(&mut self, voters: Vec<u64>) -> Result<(), ActorProcessingErr> {
        let cs = ConfState {
            voters,
            ..ConfState::default()
        };
        let log = LogStore::restored(HardState::default(), cs.clone(), None, Vec::new());
        let node = RawNode::new(&raft_config(self.id, 0), log, &logger())?;
        let mut record = std::mem::take(&mut self.meta.group.record);
        record.conf_state = cs.write_to_bytes()?;
        self.meta.group = RaftGroup::new(self.meta.group.id, node, record, self.meta.durable);
        Ok(())
    }

    /// Starts a group of one voter: this node.
    pub(super) async fn bootstrap(&mut self) -> Result<(), ActorProcessingErr> {
        self.restart_raft(vec![self.id])?;
        self.meta.group.record.base_voters = vec![self.id];
        let record = raft_log::record_op(self.meta.group.id, &self.meta.group.record);
        raft_log::write(&self.store, vec![record], true).await?;
        self.meta.group.node.campaign()?;
        tracing::info!("formed a new cluster with this node as its first metadata member");
        Ok(())
    }

    /// Asks the up members for their replicas' status, in a task (so that two fresh
    /// nodes asking each other never wait on each other).
    pub(super) fn discover(&mut self, myself: &ActorRef<ReplicaMsg>) {
        let due = self
            .last_discovery
            .is_none_or(|at| at.elapsed() >= DISCOVERY_EVERY);
        if self.discovering || !due {
            return;
        }
        self.discovering = true;
        self.last_discovery = Some(Instant::now());
        let (me, name) = (myself.clone(), self.name.clone());
        tokio::spawn(async move {
            let mut found = Vec::new();
            if let Some(membership) = MembershipHandle::lookup(&name) {
                if let Ok(members) = membership.status().await {
                    for m in members
                        .iter()
                        .filter(|m| !m.this_node && m.health == Health::Up)
                    {
                        if let Some(peer) = replica_of(&m.name) {
                            if let Ok(s) =
                                ractor::call_t!(peer, ReplicaMsg::Status, 1_000, ().into())
                            {
                                if let Ok(s) = s.into_result() {
                                    found.push(s);
                                }
                            }
                        }
                    }
                }
            }
            let _ = me.cast(ReplicaMsg::local(LocalReplica::Discovered(found)));
        });
    }

    /// Joins a cluster a peer belongs to, forms one, or waits.
    pub(super) async fn decide(
        &mut self,
        myself: &ActorRef<ReplicaMsg>,
        peers: Vec<ReplicaStatus>,
    ) -> Result<(), ActorProcessingErr> {
        if self.meta.joined() {
            return Ok(());
        }
        if let Some(member) = peers.iter().find(|p| p.initialized && p.leader.is_some()) {
            for (id, name) in &member.names {
                self.meta.group.record.names.insert(*id, name.clone());
            }
            // A fresh node starts from the voters the group was formed with; the log
            // it receives then carries every change since.
            if !self.meta.initialized() && !member.base_voters.is_empty() {
                self.meta.group.record.base_voters = member.base_voters.clone();
                self.restart_raft(member.base_voters.clone())?;
            }
            let target = member.leader.clone().unwrap_or_else(|| member.name.clone());
            if let Some(peer) = replica_of(&target) {
                let (me, who) = (myself.clone(), (self.name.clone(), self.role, self.id));
                tokio::spawn(async move {
                    match ractor::call_t!(peer, ReplicaMsg::Join, 5_000, who.into()) {
                        Ok(answer) => match answer.into_result() {
                            Ok(Ok(())) => {
                                let _ = me.cast(ReplicaMsg::local(LocalReplica::JoinAccepted));
                            }
                            Ok(Err(e)) => {
                                tracing::info!("joining {target} refused for now: {}", e)
                            }
                            Err(e) => tracing::info!("joining {target}: {e}"),
                        },
                        Err(e) => tracing::info!("joining {target}: {e}"),
                    }
                });
            }
            return Ok(());
        }
        match self.role {
            Role::Ram => {
                let complain = self
                    .last_complaint
                    .is_none_or(|at| at.elapsed() >= Duration::from_secs(10));
                if complain {
                    self.last_complaint = Some(Instant::now());
                    tracing::error!("a RAM node cannot form a cluster alone: it waits for a disk node among its seeds (start one, or give this node --role disk)");
                }
            }
            Role::Disk if !self.meta.initialized() => {
                let smallest = peers
                    .iter()
                    .filter(|p| !p.initialized)
                    .all(|p| p.name > self.name);
                if smallest && self.started.elapsed() >= DISCOVERY_WINDOW {
                    self.bootstrap().await?;
                }
            }
            // Knows its group but is not in it yet: the join above is retried.
            Role::Disk => {}
        }
        Ok(())
    }

    pub(super) fn add_member(
        &mut self,
        name: &str,
        role: Role,
        id: u64,
    ) -> Result<(), BrokerError> {
        if !self.meta.joined() {
            return Err(broker_error(
                "this node has not joined a cluster yet".into(),
            ));
        }
        let cs = self.meta.conf_state();
        let already = match role {
            Role::Disk => cs.voters.contains(&id),
            Role::Ram => cs.learners.contains(&id),
        };
        if already {
            return Ok(());
        }
        // An earlier incarnation of a RAM node goes first (one change at a time; the
        // node asks again).
        let names = &self.meta.group.record.names;
        let earlier = cs
            .learners
            .iter()
            .find(|l| **l != id && names.get(l).map(String::as_str) == Some(name));
        if let Some(earlier) = earlier.copied() {
            self.change_members(name, earlier, ConfChangeType::RemoveNode)?;
            return Err(broker_error(format!(
                "removing the earlier incarnation of {name} first; it asks again"
            )));
        }
        let change = match role {
            Role::Disk => ConfChangeType::AddNode,
            Role::Ram => ConfChangeType::AddLearnerNode,
        };
        self.change_members(name, id, change)
    }

    fn change_members(
        &mut self,
        name: &str,
        id: u64,
        change: ConfChangeType,
    ) -> Result<(), BrokerError> {
        let mut cc = ConfChange {
            node_id: id,
            ..ConfChange::default()
        };
        cc.set_change_type(change);
        let context = warren_storage::codec::encode(&Joiner {
            name: name.to_string(),
        })
        .map_err(|e| broker_error(e.to_string()))?;
        self.meta
            .group
            .node
            .propose_conf_change(context, cc)
            .map_err(|e| broker_error(format!("cannot change members for {name} now ({e})")))
    }

    pub(super) fn remove_member(&mut self, name: &str) -> Result<(), BrokerError> {
        let cs = self.meta.conf_state();
        let names = &self.meta.group.record.names;
        let named = |id: &&u64| names.get(id).map(String::as_str) == Some(name);
        let Some(id) = cs
            .voters
            .iter()
            .chain(cs.learners.iter())
            .find(named)
            .copied()
        else {
            return Ok(());
        };
        if cs.voters == [id] {
            return Err(BrokerError::precondition_failed(format!(
                "'{name}' is the last disk node: a cluster needs one to keep its metadata"
            )));
        }
        self.change_members(name, id, ConfChangeType::RemoveNode)
    }
}
