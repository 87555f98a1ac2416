//! [`ReplicaHandle`]: how the rest of the node talks to its replica: metadata
//! changes (the broker's [`ChangeLog`]), the metadata group's view, and running other
//! groups ([`ReplicaHandle::open`], [`ReplicaHandle::propose_to`]).

use std::collections::BTreeSet;
use std::time::Duration;

use ractor::ActorRef;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;
use warren_actors::changes::{BrokerChange, ChangeLog};
use warren_actors::error::BrokerError;
use warren_actors::BoxFuture;

use super::machine::{Answer, Machine};
use super::{
    applying, broker_error, entry, proposals, replica_name, GroupView, LocalReplica, Opening,
    ReplicaMsg, ReplicaStats, ReplicaStatus, CATCH_UP_WAIT, COMMIT_TIMEOUT, SNAPSHOT_EVERY,
};
use crate::log_store::DiskLog;
use crate::metadata::MetaCommand;
use crate::raft_group::GroupId;
use crate::raft_log::METADATA_GROUP;

/// A group to run on this node.
#[derive(Clone, Debug)]
pub struct GroupSpec {
    /// The group's id (never 0, the metadata's).
    pub group: GroupId,
    /// What errors and logs call it ("queue 'orders' in vhost '/'").
    pub label: String,
    /// Its members by node name, all voters, when it is new (every member must be
    /// opened with the same list); a group with a stored log starts from the log.
    pub members: Vec<String>,
    /// Entries applied between two snapshots.
    pub snapshot_every: u64,
    /// This node joins the group after its start (it is not among `members`, the
    /// group's first members): it starts from them without a vote, and takes the log
    /// (or a snapshot) from the leader, whose membership changes make it a member.
    pub joining: bool,
}

impl GroupSpec {
    /// Group `group` of `members`, snapshotting every [`SNAPSHOT_EVERY`] entries.
    pub fn new(group: GroupId, label: impl Into<String>, members: Vec<String>) -> GroupSpec {
        GroupSpec {
            group,
            label: label.into(),
            members,
            snapshot_every: SNAPSHOT_EVERY,
            joining: false,
        }
    }
}

/// This node's replica: where the node proposes metadata commands (the broker's
/// [`ChangeLog`], and the node assembly's for users and permissions) and runs other
/// groups.
#[derive(Clone)]
pub struct ReplicaHandle {
    /// This node's name (the replica is registered under it).
    pub node: String,
}

impl ReplicaHandle {
    fn local(&self) -> Result<ActorRef<ReplicaMsg>, BrokerError> {
        ractor::registry::where_is(replica_name(&self.node))
            .map(ActorRef::from)
            .ok_or_else(|| broker_error("the raft replica is restarting; retry".into()))
    }

    /// Sends the request `make` builds; the receiver resolves with the answer (or
    /// fails if the replica stopped first).
    fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> LocalReplica,
    ) -> Result<oneshot::Receiver<T>, BrokerError> {
        let (tx, rx) = oneshot::channel();
        self.local()?
            .cast(ReplicaMsg::local(make(tx)))
            .map_err(|e| broker_error(e.to_string()))?;
        Ok(rx)
    }

    /// Proposes a metadata `command`; resolves once it is committed and applied on
    /// this node, with the result of applying it.
    pub async fn propose(&self, command: MetaCommand) -> Result<(), BrokerError> {
        let what = command.describe();
        self.propose_as(METADATA_GROUP, &command, &what)
            .await
            .map(|_| ())
    }

    /// Proposes `command` to group `group`; resolves once it is committed and
    /// applied on this node, with the machine's answer.
    pub async fn propose_to<C: Serialize>(&self, group: GroupId, command: &C) -> Answer {
        self.propose_as(group, command, &format!("raft group {group}"))
            .await
    }

    /// [`Self::propose_to`], handed to the replica before it returns (so proposals
    /// made one after another by one caller keep their order); the future resolves
    /// with the machine's answer.
    pub fn submit_to<C: Serialize>(
        &self,
        group: GroupId,
        command: &C,
    ) -> BoxFuture<'static, Answer> {
        self.submit_as(group, command, format!("raft group {group}"), 0)
    }

    /// [`Self::propose_to`], with errors of its own saying `what` was proposed.
    async fn propose_as<C: Serialize>(&self, group: GroupId, command: &C, what: &str) -> Answer {
        self.submit_as(group, command, what.to_string(), 0).await
    }

    /// [`Self::submit_to`] for a command that carries about `size_hint` bytes (a
    /// mirrored queue's bodies): its entry is encoded once, into a buffer that size.
    pub fn submit_sized<C: Serialize>(
        &self,
        group: GroupId,
        command: &C,
        size_hint: usize,
    ) -> BoxFuture<'static, Answer> {
        self.submit_as(group, command, format!("raft group {group}"), size_hint)
    }

    fn submit_as<C: Serialize>(
        &self,
        group: GroupId,
        command: &C,
        what: String,
        size_hint: usize,
    ) -> BoxFuture<'static, Answer> {
        let id = proposals::nonce();
        let rx = entry::build(&self.node, id, command, size_hint)
            .map_err(broker_error)
            .and_then(|data| self.ask(|tx| LocalReplica::Propose(group, id, data, tx)));
        Box::pin(async move {
            match tokio::time::timeout(COMMIT_TIMEOUT + Duration::from_secs(1), rx?).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) => Err(broker_error(format!(
                    "{what}: the raft replica restarted before the change was applied; check and retry"
                ))),
                Err(_) => Err(broker_error(format!("{what}: not committed in time"))),
            }
        })
    }

    /// Resolves once this node has applied everything the metadata leader had
    /// committed when it was called: what any node acknowledged before is visible here
    /// then. Without a leader it resolves after [`CATCH_UP_WAIT`] at most (at once when
    /// the node has been without one for longer), and the node answers from what it
    /// has. `true`: caught up; `false`: served from what it has.
    pub async fn catch_up(&self) -> bool {
        self.catch_up_with(METADATA_GROUP).await
    }

    /// [`Self::catch_up`] for group `group` (`false` when it does not run here).
    pub async fn catch_up_with(&self, group: GroupId) -> bool {
        let Ok(rx) = self.ask(|tx| LocalReplica::CatchUp(group, tx)) else {
            return false;
        };
        matches!(
            tokio::time::timeout(CATCH_UP_WAIT + Duration::from_secs(1), rx).await,
            Ok(Ok(true))
        )
    }

    /// What this node's replica says of itself (its leader, say).
    pub async fn status(&self) -> Result<ReplicaStatus, BrokerError> {
        self.ask(LocalReplica::Status)?.await.map_err(|_| stopped())
    }

    /// The metadata group as this node knows it.
    pub async fn group(&self) -> Result<GroupView, BrokerError> {
        Ok(self.view(METADATA_GROUP).await?.unwrap_or_default())
    }

    /// Group `group` as this node knows it; none when it does not run here.
    pub async fn view(&self, group: GroupId) -> Result<Option<GroupView>, BrokerError> {
        self.ask(|tx| LocalReplica::View(group, tx))?
            .await
            .map_err(|_| stopped())
    }

    /// Who leads group `group`, now and at every change, while it runs here (the
    /// receiver ends when the group is closed here); none when it does not run here.
    pub async fn watch(
        &self,
        group: GroupId,
    ) -> Result<Option<tokio::sync::watch::Receiver<super::Seat>>, BrokerError> {
        self.ask(|tx| LocalReplica::Watch(group, tx))?
            .await
            .map_err(|_| stopped())
    }

    /// One step towards group `group`'s members being `desired`, when this node leads
    /// it (call again while it answers
    /// [`Reconciled::Changing`](crate::replica::Reconciled::Changing)).
    pub async fn reconcile(
        &self,
        group: GroupId,
        desired: Vec<String>,
    ) -> Result<super::Reconciled, BrokerError> {
        self.ask(|tx| LocalReplica::Reconcile(group, desired, tx))?
            .await
            .map_err(|_| stopped())?
    }

    /// Hands group `group`'s leadership to member `to` when this node leads it and
    /// `to` is a voter that holds about everything committed: `Changing` while the
    /// transfer is under way, `Settled` once `to` leads (or nothing is to be done:
    /// `to` is this node), `NotLeader` when this node does not lead.
    pub async fn hand_over(
        &self,
        group: GroupId,
        to: &str,
    ) -> Result<super::Reconciled, BrokerError> {
        let to = to.to_string();
        self.ask(|tx| LocalReplica::HandOver(group, to, tx))?
            .await
            .map_err(|_| stopped())?
    }

    /// Group `group`'s leader is no longer a member: this node's member campaigns at
    /// its next tick (a quiet follower would wait for a heartbeat that never comes).
    pub fn leader_gone(&self, group: GroupId) {
        if let Ok(replica) = self.local() {
            let _ = replica.cast(ReplicaMsg::local(LocalReplica::LeaderGone(group)));
        }
    }

    /// What the replica did since it started.
    pub async fn stats(&self) -> Result<ReplicaStats, BrokerError> {
        self.ask(LocalReplica::Stats)?.await.map_err(|_| stopped())
    }

    /// Removes a member from the metadata group (leave, forget).
    pub async fn remove(&self, name: &str) -> Result<(), BrokerError> {
        let name = name.to_string();
        self.ask(|tx| LocalReplica::Remove(name, tx))?
            .await
            .map_err(|_| stopped())?
    }

    /// Runs group `spec.group` on this node, applying its entries to `machine` (in a
    /// task of its own; [`Machine::opened`] is called first). Nothing happens if it
    /// runs here already (`machine` is dropped unused). Returns where the group's
    /// entries are read back.
    pub async fn open<M: Machine>(
        &self,
        spec: GroupSpec,
        machine: M,
    ) -> Result<LogReader, BrokerError> {
        let opening = Opening {
            spec,
            keeps_state: M::KEEPS_STATE,
            start: Box::new(move |start, replica| {
                let mut machine = machine;
                machine.opened();
                applying::start(start, machine, replica)
            }),
        };
        self.ask(|tx| LocalReplica::Open(opening, tx))?
            .await
            .map_err(|_| stopped())?
    }

    /// Removes the logs this node holds of groups that neither run here nor are in
    /// `claimed`; returns them. Call it with the groups of every queue the metadata
    /// names, once caught up with the metadata leader ([`Self::catch_up`] said
    /// `true`): a log no queue claims then is one a crash left behind while its
    /// queue was being deleted.
    pub async fn remove_unclaimed(
        &self,
        claimed: BTreeSet<GroupId>,
    ) -> Result<Vec<GroupId>, BrokerError> {
        self.ask(|tx| LocalReplica::RemoveUnclaimed(claimed, tx))?
            .await
            .map_err(|_| stopped())?
    }

    /// Stops running group `group` here; with `remove`, its log is removed too (the
    /// group is gone for good).
    pub async fn close(&self, group: GroupId, remove: bool) -> Result<(), BrokerError> {
        self.ask(|tx| LocalReplica::Close(group, remove, tx))?
            .await
            .map_err(|_| stopped())?
    }
}

/// Reads a group's committed entries back from this node's log (a mirrored queue's
/// bodies are stored in the entries that enqueued them).
#[derive(Clone)]
pub struct LogReader(pub(super) DiskLog);

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogReader(group {})", self.0.group)
    }
}

impl LogReader {
    /// The commands of the entries `indexes` (applied on this node, so on its disk),
    /// in index order, and what went wrong with those that could not be read (not on
    /// disk, or not decodable): one failed entry never hides the others. Reads the
    /// store on the calling thread.
    pub fn commands<C: DeserializeOwned>(&self, indexes: &[u64]) -> (Vec<(u64, C)>, Vec<String>) {
        let mut wanted = indexes.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let mut out = Vec::with_capacity(wanted.len());
        let mut failed = Vec::new();
        let mut rest = wanted.as_slice();
        while let Some(&from) = rest.first() {
            // A run of consecutive indexes in one read; one by one if that fails.
            let run = rest
                .iter()
                .enumerate()
                .take_while(|(i, index)| **index == from + *i as u64)
                .count();
            let to = from + run as u64 - 1;
            let entries = match self.0.read(from, to, u64::MAX) {
                Ok(entries) => entries,
                Err(_) if run > 1 => (from..=to)
                    .filter_map(|i| match self.0.read(i, i, u64::MAX) {
                        Ok(mut one) => one.pop(),
                        Err(e) => {
                            failed.push(e);
                            None
                        }
                    })
                    .collect(),
                Err(e) => {
                    failed.push(e);
                    Vec::new()
                }
            };
            for e in entries {
                match entry::decode::<C>(&e.data) {
                    Ok(p) => out.push((e.index, p.command)),
                    Err(why) => failed.push(format!("entry {} does not decode: {why}", e.index)),
                }
            }
            rest = &rest[run..];
        }
        (out, failed)
    }
}

fn stopped() -> BrokerError {
    broker_error("the raft replica stopped".into())
}

impl ChangeLog for ReplicaHandle {
    fn commit(&self, change: BrokerChange) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(self.propose(change.into()))
    }

    fn caught_up(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {
            self.catch_up().await;
        })
    }
}
