//! The metadata replica: this node's member of the cluster's Raft group.
//!
//! Metadata changes are Raft log entries (TiKV's `raft` crate: elections, log
//! matching, commit rules; nothing hand-made). Disk nodes vote; RAM nodes are
//! learners. Raft messages travel as actor messages between the replicas (process
//! group `warren.metadata.NODE`, big ones in parts: [`transport`]); the log and hard
//! state live in redb on disk nodes ([`crate::raft_log`]), in memory on RAM nodes,
//! which take the log from the leader when they (re)join. Readies are pipelined
//! ([`ready`]): writes go to the group-commit writer without waiting, committed
//! entries to an applier task ([`applying`]). Every [`snapshot::SNAPSHOT_EVERY`]
//! entries a replica snapshots the metadata and compacts its log ([`log_store`]); a
//! node far behind, or new, gets the snapshot from the leader.
//!
//! A change is proposed on the node that took the request and answered when that node
//! has applied it. A proposal waits while no leader is known (an election, a node still
//! joining) and is handed to Raft again when it may have been lost ([`proposals`]);
//! after [`COMMIT_TIMEOUT`] it fails with a clear error (a minority side of a
//! partition). Before a node answers "no such queue" or routes a message to nothing it
//! catches up with the leader's commit index ([`barrier`]); reads keep being served
//! from what the node has when no leader can be reached.
//!
//! Forming the cluster: a fresh disk node whose seeds are all down (or that has none)
//! starts a group of its own after [`DISCOVERY_WINDOW`]; fresh disk nodes that see
//! each other leave it to the one with the smallest name; a fresh node that sees an
//! initialised member asks it to add it (voter for disk, learner for RAM). A RAM node
//! never forms a group.

mod applying;
mod barrier;
pub(crate) mod proposals;
mod ready;
mod snapshot;
mod transport;

pub use applying::Applied;
pub use snapshot::SNAPSHOT_EVERY;
pub use transport::{Part, RaftBatch};

use std::sync::Arc;
use std::time::{Duration, Instant};

use protobuf::Message as _;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use raft::prelude::{ConfChange, ConfChangeType, ConfState, EntryType, HardState, Message};
use raft::{Config, RawNode};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use warren_actors::changes::{BrokerChange, ChangeLog};
use warren_actors::error::{code, BrokerError};
use warren_actors::BoxFuture;
use warren_storage::Store;

use crate::log_store::LogStore;
use crate::members::{Health, Role};
use crate::membership::MembershipHandle;
use crate::metadata::{MetaCommand, MetadataApplier};
use crate::protocol::{ErrorReply, LocalOnly};
use crate::raft_group::{GroupId, Joiner, RaftGroup};
use crate::raft_log::{self, raft_id, RaftRecord, METADATA_GROUP};
use crate::wire::Wire;
use applying::ApplyJob;
use barrier::Barrier;
use proposals::{Proposals, Recent};
use snapshot::SnapshotData;
use transport::Assembly;

/// How often Raft ticks. Elections after 10 silent ticks, heartbeats every 2.
pub(crate) const TICK: Duration = Duration::from_millis(100);
const ELECTION_TICKS: usize = 10;
const HEARTBEAT_TICKS: usize = 2;
/// How long a fresh disk node looks for a cluster before starting its own.
pub const DISCOVERY_WINDOW: Duration = Duration::from_secs(3);
/// How often a fresh node looks again.
const DISCOVERY_EVERY: Duration = Duration::from_millis(500);
/// How long a proposal may take to be committed and applied here.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a node waits to catch up with the leader before it answers from what it
/// has (an election takes 1-2 s); a node without a leader for longer answers at once.
pub const CATCH_UP_WAIT: Duration = Duration::from_secs(3);

/// The process group of node `node`'s replica.
pub fn replica_group(node: &str) -> String {
    format!("warren.metadata.{node}")
}

/// The registry name of node `node`'s replica.
pub fn replica_name(node: &str) -> String {
    format!("metadata@{node}")
}

/// A metadata log entry's payload.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Proposal {
    /// The node whose client asked, which answers it once applied.
    origin: String,
    id: u64,
    command: MetaCommand,
}

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

/// The metadata group as one node knows it (`cluster status`).
#[derive(Clone, Debug, Default)]
pub struct GroupView {
    /// The names of its members (voters and learners): a node that is up but not
    /// among them is still joining.
    pub members: Vec<String>,
    /// The current term.
    pub term: u64,
    /// The leader in that term, when this node knows one.
    pub leader: Option<String>,
    /// This node's log.
    pub log: crate::protocol::MetadataLog,
}

/// Node-internal requests.
pub enum LocalReplica {
    /// Time passed: Raft's tick, expiry of proposals not committed in time, and a
    /// discovery round while this node is not in a group.
    Tick,
    /// Propose a command; answered once it is applied on this node, with the result.
    Propose(MetaCommand, oneshot::Sender<Result<(), BrokerError>>),
    /// Answered once this node has applied everything the leader had committed when
    /// it was asked (or after [`CATCH_UP_WAIT`]).
    CatchUp(oneshot::Sender<()>),
    /// What the replica says of itself.
    Status(oneshot::Sender<ReplicaStatus>),
    /// The group as this node knows it.
    Group(oneshot::Sender<GroupView>),
    /// What a discovery round found: each up peer's status.
    Discovered(Vec<ReplicaStatus>),
    /// A join request was accepted by a member.
    JoinAccepted,
    /// Remove a member from the group (it left, or was forgotten).
    Remove(String, oneshot::Sender<Result<(), BrokerError>>),
    /// The applier's report.
    Applied(Applied),
    /// The write of a ready (by number) completed, or failed.
    Persisted(u64, Result<(), String>),
}

/// Messages to a replica.
#[derive(RactorClusterMessage)]
pub enum ReplicaMsg {
    /// Raft messages, protobuf-encoded, each with its group.
    Raft(Wire<RaftBatch>),
    /// A fresh node asks to be added (as a voter for `disk`, a learner for `ram`),
    /// with its Raft id.
    #[rpc]
    Join(
        Wire<(String, Role, u64)>,
        RpcReplyPort<Wire<Result<(), ErrorReply>>>,
    ),
    /// What the replica says of itself (discovery by a node looking for a cluster).
    #[rpc]
    Status(Wire<()>, RpcReplyPort<Wire<ReplicaStatus>>),
    /// Node-internal requests; never sent over the wire.
    Local(LocalOnly<LocalReplica>),
    /// A piece of a Raft message too big for one cast (a snapshot).
    RaftPart(Wire<Part>),
}

impl ReplicaMsg {
    fn local(l: LocalReplica) -> ReplicaMsg {
        ReplicaMsg::Local(LocalOnly::new(l))
    }
}

/// The metadata replica actor (see the module documentation).
pub struct Replica;

/// What a replica starts with.
pub struct ReplicaArgs {
    /// This node's name (its Raft id is derived from it).
    pub name: String,
    /// A disk node joins as a voter, a RAM node as a learner.
    pub role: Role,
    /// The node's store, which holds the metadata log.
    pub store: Store,
    /// Applies committed commands to this node's broker state.
    pub applier: Arc<dyn MetadataApplier>,
    /// Whether seeds were given (without them a disk node forms its group at once).
    pub has_seeds: bool,
    /// Entries applied between two snapshots ([`SNAPSHOT_EVERY`] by default).
    pub snapshot_every: u64,
}

/// The replica's state: its Raft node, the stored record and the proposals waiting
/// to be applied.
pub struct ReplicaState {
    name: String,
    id: u64,
    role: Role,
    store: Store,
    has_seeds: bool,
    snapshot_every: u64,
    myself: ActorRef<ReplicaMsg>,
    /// The metadata group's driver: Raft, the log, the state record.
    group: RaftGroup,
    started: Instant,
    last_discovery: Option<Instant>,
    discovering: bool,
    last_complaint: Option<Instant>,
    /// This node's proposals not applied yet.
    proposals: Proposals,
    /// Where committed entries go to be applied.
    apply_tx: tokio::sync::mpsc::UnboundedSender<ApplyJob>,
    /// A snapshot is being taken.
    snapshotting: bool,
    /// Big messages sent (numbers their parts) and being received.
    big_seq: u64,
    assembly: Assembly,
    /// Who waits to catch up with the leader.
    barrier: Barrier,
    /// Since when this node has known no leader.
    leaderless_since: Option<Instant>,
    /// The (term, leader) the proposals and the barrier last saw.
    seen_leader: (u64, u64),
}

/// The Raft configuration of every metadata replica (the simulation runs the same).
pub(crate) fn raft_config(id: u64, applied: u64) -> Config {
    Config {
        id,
        election_tick: ELECTION_TICKS,
        heartbeat_tick: HEARTBEAT_TICKS,
        applied,
        check_quorum: true,
        pre_vote: true,
        max_size_per_msg: 1024 * 1024,
        max_inflight_msgs: 256,
        ..Config::default()
    }
}

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

fn broker_error(text: String) -> BrokerError {
    BrokerError::new(code::INTERNAL_ERROR, text)
}

impl Actor for Replica {
    type Msg = ReplicaMsg;
    type State = ReplicaState;
    type Arguments = ReplicaArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ReplicaMsg>,
        args: ReplicaArgs,
    ) -> Result<ReplicaState, ActorProcessingErr> {
        // A RAM node keeps nothing: it takes the log again from the leader, as a new
        // learner each time it starts (Raft forbids a member to forget its log, so
        // each start is a new incarnation with its own id; the old one is removed).
        let id = match args.role {
            Role::Disk => raft_id(&args.name),
            Role::Ram => raft_id(&format!("{}#{:016x}", args.name, rand::random::<u64>())),
        };
        let loaded = match args.role {
            Role::Disk => Some(raft_log::load(&args.store, METADATA_GROUP)?),
            Role::Ram => None,
        };
        let mut log = LogStore::default();
        let mut record = RaftRecord::default();
        let mut recent = Recent::default();
        if let Some(loaded) = loaded {
            record = loaded.record;
            // Applied never passes commit (a crash between the two writes).
            record.applied = record.applied.min(loaded.hard_state.commit);
            let snap_index = loaded
                .snapshot
                .as_ref()
                .map_or(0, |s| s.get_metadata().index);
            if let Some(snapshot) = &loaded.snapshot {
                let data = SnapshotData::decode(&snapshot.data)?;
                for (id, name) in &data.names {
                    record.names.entry(*id).or_insert_with(|| name.clone());
                }
                recent = Recent::import(data.recent.clone());
                if record.applied < snap_index {
                    // A snapshot from the leader, stored but not applied here yet (a
                    // crash in between).
                    applying::restore(args.applier.as_ref(), &data.image).await;
                    record.applied = snap_index;
                }
            }
            // The filter of proposals applied twice, as it stood at the last applied
            // entry: the snapshot's, then the entries after it.
            let from = snap_index.max(record.applied.saturating_sub(proposals::DEDUPE_WINDOW));
            for entry in loaded
                .entries
                .iter()
                .filter(|e| e.index > from && e.index <= record.applied)
                .filter(|e| e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty())
            {
                if let Ok(p) = warren_storage::codec::decode::<Proposal>(&entry.data) {
                    recent.first_time(&p.origin, p.id, entry.index);
                }
            }
            tracing::debug!(
                snapshot = snap_index,
                entries = loaded.entries.len(),
                applied = record.applied,
                "read the metadata log"
            );
            log = LogStore::restored(
                loaded.hard_state,
                loaded.conf_state,
                loaded.snapshot,
                loaded.entries,
            );
        }
        record.names.insert(id, args.name.clone());
        let node = RawNode::new(&raft_config(id, record.applied), log, &logger())?;
        let apply_tx = applying::start(
            args.name.clone(),
            args.applier.clone(),
            record.applied,
            recent,
            myself.clone(),
        );
        ractor::pg::join(replica_group(&args.name), vec![myself.get_cell()]);
        myself.send_interval(TICK, || ReplicaMsg::local(LocalReplica::Tick));
        let mut state = ReplicaState {
            name: args.name,
            id,
            role: args.role,
            store: args.store,
            has_seeds: args.has_seeds,
            snapshot_every: args.snapshot_every.max(1),
            myself: myself.clone(),
            group: RaftGroup::new(METADATA_GROUP, node, record, args.role == Role::Disk),
            started: Instant::now(),
            last_discovery: None,
            discovering: false,
            last_complaint: None,
            proposals: Proposals::default(),
            apply_tx,
            snapshotting: false,
            big_seq: 0,
            assembly: Assembly::default(),
            barrier: Barrier::default(),
            leaderless_since: None,
            seen_leader: (0, 0),
        };
        if !state.initialized() && state.role == Role::Disk && !state.has_seeds {
            state.bootstrap().await?;
        } else if state.conf_state().voters == [state.id] {
            // The group's only voter, started again: nobody else can lead, so it
            // need not wait an election timeout (1-2 s) to find that out.
            state.group.node.campaign()?;
        }
        if state.initialized() {
            tracing::info!(
                applied = state.group.record.applied,
                "metadata replica ready (members: {})",
                state.member_names().join(", ")
            );
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<ReplicaMsg>,
        message: ReplicaMsg,
        state: &mut ReplicaState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ReplicaMsg::Raft(batch) => {
                let Ok(batch) = batch.into_result() else {
                    return Ok(());
                };
                for (group, bytes) in batch.messages {
                    state.step(&batch.sender, group, &bytes);
                }
            }
            ReplicaMsg::RaftPart(part) => {
                if let Ok(part) = part.into_result() {
                    let (sender, group) = (part.sender.clone(), part.group);
                    if let Some(bytes) = state.assembly.add(part) {
                        state.step(&sender, group, &bytes);
                    }
                }
            }
            ReplicaMsg::Join(who, reply) => {
                let answer = match who.into_result() {
                    Ok((name, role, id)) => {
                        state.add_member(&name, role, id).map_err(ErrorReply::from)
                    }
                    Err(why) => Err(ErrorReply {
                        code: code::INTERNAL_ERROR,
                        text: why,
                    }),
                };
                let _ = reply.send(answer.into());
            }
            ReplicaMsg::Status(_, reply) => {
                let _ = reply.send(state.status().into());
            }
            ReplicaMsg::Local(local) => {
                let Some(local) = local.take() else {
                    return Ok(());
                };
                match local {
                    LocalReplica::Tick => {
                        state.group.node.tick();
                        let now = Instant::now();
                        state.expire_pending(now);
                        state.barrier.tick(now);
                        // Counted from when the node is in its group: a node still
                        // joining has no leader to lose.
                        if state.group.node.raft.leader_id == 0 && state.joined() {
                            state.leaderless_since.get_or_insert(now);
                        } else {
                            state.leaderless_since = None;
                        }
                        state.hand_over(now);
                        if !state.joined() {
                            state.discover(&myself);
                        }
                    }
                    LocalReplica::Propose(command, reply) => state.propose(command, reply),
                    LocalReplica::CatchUp(ready) => state.catch_up(ready),
                    LocalReplica::Status(reply) => {
                        let _ = reply.send(state.status());
                    }
                    LocalReplica::Group(reply) => {
                        let _ = reply.send(GroupView {
                            members: state.member_names(),
                            term: state.group.node.raft.term,
                            leader: state.leader(),
                            log: state.log_info(),
                        });
                    }
                    LocalReplica::Discovered(peers) => {
                        state.discovering = false;
                        state.decide(&myself, peers).await?;
                    }
                    LocalReplica::JoinAccepted => {
                        tracing::info!(
                            "a member accepted this node; taking the metadata log from the leader"
                        );
                    }
                    LocalReplica::Remove(name, reply) => {
                        let _ = reply.send(state.remove_member(&name));
                    }
                    LocalReplica::Applied(report) => state.applied(report)?,
                    LocalReplica::Persisted(number, result) => state.persisted(number, result)?,
                }
            }
        }
        let leader = (state.group.node.raft.term, state.group.node.raft.leader_id);
        if leader != state.seen_leader {
            // A new leader (or term): what waits may go now, and what was handed to
            // the old leader may be lost.
            state.seen_leader = leader;
            state.hand_over(Instant::now());
        }
        state.on_ready()?;
        Ok(())
    }
}

impl ReplicaState {
    /// Hands Raft a message from the peer on node `sender`.
    fn step(&mut self, sender: &str, group: GroupId, bytes: &[u8]) {
        if group != self.group.id {
            tracing::debug!(group, "a raft message for a group this node does not run");
            return;
        }
        match Message::parse_from_bytes(bytes) {
            // For an earlier incarnation of this (RAM) node.
            Ok(m) if m.to != self.id => {}
            Ok(m) => {
                // A member this node has not seen join yet (its entry is not applied
                // here, or not even here): known by name from now on, so that the
                // answer reaches it.
                self.group
                    .record
                    .names
                    .entry(m.from)
                    .or_insert_with(|| sender.to_string());
                if let Err(e) = self.group.node.step(m) {
                    tracing::debug!("raft step: {e}");
                }
            }
            Err(e) => tracing::warn!("a raft message did not decode: {e}"),
        }
    }

    fn log_info(&self) -> crate::protocol::MetadataLog {
        let store = self.group.node.store();
        crate::protocol::MetadataLog {
            applied: self.group.record.applied,
            committed: self.group.node.raft.raft_log.committed,
            first: store.first(),
            last: store.last(),
            snapshot: store.latest_snapshot().get_metadata().index,
        }
    }

    fn conf_state(&self) -> ConfState {
        self.group.node.raft.prs().conf().to_conf_state()
    }

    /// Whether this node knows a group (formed one, or starts from one it joins).
    fn initialized(&self) -> bool {
        let cs = self.conf_state();
        !cs.voters.is_empty() || !cs.learners.is_empty()
    }

    /// Whether this node is a member of its group.
    fn joined(&self) -> bool {
        let cs = self.conf_state();
        cs.voters.contains(&self.id) || cs.learners.contains(&self.id)
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
        let mut record = std::mem::take(&mut self.group.record);
        record.conf_state = cs.write_to_bytes()?;
        self.group = RaftGroup::new(self.group.id, node, record, self.role == Role::Disk);
        Ok(())
    }

    fn name_of(&self, id: u64) -> String {
        self.group
            .record
            .names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("#{id:x}"))
    }

    fn member_names(&self) -> Vec<String> {
        let cs = self.conf_state();
        cs.voters
            .iter()
            .chain(cs.learners.iter())
            .map(|id| self.name_of(*id))
            .collect()
    }

    fn leader(&self) -> Option<String> {
        let lead = self.group.node.raft.leader_id;
        (lead != 0).then(|| self.name_of(lead))
    }

    fn status(&self) -> ReplicaStatus {
        ReplicaStatus {
            name: self.name.clone(),
            initialized: self.initialized(),
            leader: self.leader(),
            names: self
                .group
                .record
                .names
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
            base_voters: self.group.record.base_voters.clone(),
        }
    }

    /// Starts a group of one voter: this node.
    async fn bootstrap(&mut self) -> Result<(), ActorProcessingErr> {
        self.restart_raft(vec![self.id])?;
        self.group.record.base_voters = vec![self.id];
        let record = raft_log::record_op(self.group.id, &self.group.record);
        raft_log::write(&self.store, vec![record], true).await?;
        self.group.node.campaign()?;
        tracing::info!("formed a new cluster with this node as its first metadata member");
        Ok(())
    }

    /// Asks the up members for their replicas' status, in a task (so that two fresh
    /// nodes asking each other never wait on each other).
    fn discover(&mut self, myself: &ActorRef<ReplicaMsg>) {
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
    async fn decide(
        &mut self,
        myself: &ActorRef<ReplicaMsg>,
        peers: Vec<ReplicaStatus>,
    ) -> Result<(), ActorProcessingErr> {
        if self.joined() {
            return Ok(());
        }
        if let Some(member) = peers.iter().find(|p| p.initialized && p.leader.is_some()) {
            for (id, name) in &member.names {
                self.group.record.names.insert(*id, name.clone());
            }
            // A fresh node starts from the voters the group was formed with; the log
            // it receives then carries every change since.
            if !self.initialized() && !member.base_voters.is_empty() {
                self.group.record.base_voters = member.base_voters.clone();
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
            Role::Disk if !self.initialized() => {
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

    fn add_member(&mut self, name: &str, role: Role, id: u64) -> Result<(), BrokerError> {
        if !self.joined() {
            return Err(broker_error(
                "this node has not joined a cluster yet".into(),
            ));
        }
        let cs = self.conf_state();
        let already = match role {
            Role::Disk => cs.voters.contains(&id),
            Role::Ram => cs.learners.contains(&id),
        };
        if already {
            return Ok(());
        }
        // An earlier incarnation of a RAM node goes first (one change at a time; the
        // node asks again).
        let earlier = cs.learners.iter().find(|l| {
            **l != id && self.group.record.names.get(l).map(String::as_str) == Some(name)
        });
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
        self.group
            .node
            .propose_conf_change(context, cc)
            .map_err(|e| broker_error(format!("cannot change members for {name} now ({e})")))
    }

    fn remove_member(&mut self, name: &str) -> Result<(), BrokerError> {
        let cs = self.conf_state();
        let named = |id: &&u64| self.group.record.names.get(id).map(String::as_str) == Some(name);
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

    /// Takes a proposal; it is handed to Raft as soon as a leader is known.
    fn propose(&mut self, command: MetaCommand, reply: oneshot::Sender<Result<(), BrokerError>>) {
        let proposal = Proposal {
            origin: self.name.clone(),
            id: proposals::nonce(),
            command,
        };
        let data = match warren_storage::codec::encode(&proposal) {
            Ok(d) => d,
            Err(e) => {
                let _ = reply.send(Err(broker_error(e.to_string())));
                return;
            }
        };
        let now = Instant::now();
        self.proposals.add(proposal.id, data, reply, now);
        if self.alone(now) {
            self.expire_pending(now);
            return;
        }
        self.hand_over(now);
    }

    /// Hands Raft the proposals that are due (see [`Proposals::due`]) and asks the
    /// leader's commit index for whoever waits to catch up, once this node is in its
    /// group and knows a leader.
    fn hand_over(&mut self, now: Instant) {
        if !self.joined() || self.group.node.raft.leader_id == 0 {
            return;
        }
        if !self.proposals.is_empty() {
            for data in self.proposals.due(self.group.node.raft.term, now) {
                if self.group.node.propose(Vec::new(), data).is_err() {
                    // No leader after all (it stepped down): due again with the next.
                    self.proposals.unsent();
                    break;
                }
            }
        }
        if let Some(ctx) = self.barrier.question(now) {
            self.group.node.read_index(ctx);
        }
    }

    /// `ready` is told once this node has applied what the leader had committed by
    /// now; at once when, a member of the group, it has been without a leader for
    /// longer than an election takes (a node still joining waits to join).
    fn catch_up(&mut self, ready: oneshot::Sender<()>) {
        let now = Instant::now();
        if self.alone(now) || self.sole_voter_caught_up() {
            let _ = ready.send(());
            return;
        }
        self.barrier.wait(ready, now + CATCH_UP_WAIT);
        self.hand_over(now);
    }

    /// The group's only voter, which has applied everything it committed: nobody else
    /// can have committed anything (a single node, or RAM nodes only besides it).
    fn sole_voter_caught_up(&self) -> bool {
        let raft = &self.group.node.raft;
        raft.state == raft::StateRole::Leader
            && raft.prs().conf().voters().ids().iter().eq([self.id])
            && self.group.record.applied >= raft.raft_log.committed
    }

    /// A member of the group without a leader for longer than an election takes: on
    /// the minority side of a partition, or the other disk nodes are down.
    fn alone(&self, now: Instant) -> bool {
        self.joined()
            && self
                .leaderless_since
                .is_some_and(|since| now.duration_since(since) >= CATCH_UP_WAIT)
    }

    /// Fails the proposals that waited [`COMMIT_TIMEOUT`], and every one at once when
    /// this node is [alone](Self::alone).
    fn expire_pending(&mut self, now: Instant) {
        let (name, joined) = (self.name.clone(), self.joined());
        let leader = self.group.node.raft.leader_id != 0;
        let alone = self.alone(now);
        let limit = if alone {
            Duration::ZERO
        } else {
            COMMIT_TIMEOUT
        };
        self.proposals.expire(now, limit, |handed_over| {
            let secs = COMMIT_TIMEOUT.as_secs();
            broker_error(if alone {
                format!(
                    "metadata change refused: no metadata leader reachable from '{name}' for {} s (a minority side of a partition, or the other disk nodes are down; see `warren cluster status`); reads are still served",
                    CATCH_UP_WAIT.as_secs()
                )
            } else if !joined {
                format!(
                    "metadata change refused: node '{name}' has not joined a cluster within {secs} s (see `warren cluster status`)"
                )
            } else if handed_over && leader {
                format!(
                    "metadata change not confirmed within {secs} s: no majority of disk nodes reachable from '{name}' (see `warren cluster status`); it takes effect if the metadata group commits it later"
                )
            } else {
                format!(
                    "metadata change refused: no metadata leader reachable from '{name}' within {secs} s (a minority side of a partition, or the disk nodes are down; see `warren cluster status`)"
                )
            })
        });
    }
}

/// The replica of member `name`, wherever it runs.
fn replica_of(name: &str) -> Option<ActorRef<ReplicaMsg>> {
    ractor::pg::get_members(&replica_group(name))
        .into_iter()
        .next()
        .map(ActorRef::from)
}

/// This node's replica: where the node proposes metadata commands (the broker's
/// [`ChangeLog`], and the node assembly's for users and permissions).
#[derive(Clone)]
pub struct ReplicaHandle {
    /// This node's name (the replica is registered under it).
    pub node: String,
}

impl ReplicaHandle {
    fn local(&self) -> Result<ActorRef<ReplicaMsg>, BrokerError> {
        ractor::registry::where_is(replica_name(&self.node))
            .map(ActorRef::from)
            .ok_or_else(|| broker_error("the metadata replica is restarting; retry".into()))
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

    /// Proposes `command`; resolves once it is committed and applied on this node,
    /// with the result of applying it.
    pub async fn propose(&self, command: MetaCommand) -> Result<(), BrokerError> {
        let what = command.describe();
        let rx = self.ask(|tx| LocalReplica::Propose(command, tx))?;
        match tokio::time::timeout(COMMIT_TIMEOUT + Duration::from_secs(1), rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(broker_error(format!(
                "{what}: the metadata replica restarted before the change was applied; check and retry"
            ))),
            Err(_) => Err(broker_error(format!("{what}: not committed in time"))),
        }
    }

    /// Resolves once this node has applied everything the metadata leader had
    /// committed when it was called: what any node acknowledged before is visible here
    /// then. Without a leader it resolves after [`CATCH_UP_WAIT`] at most (at once when
    /// the node has been without one for longer), and the node answers from what it
    /// has.
    pub async fn catch_up(&self) {
        let Ok(rx) = self.ask(LocalReplica::CatchUp) else {
            return;
        };
        let _ = tokio::time::timeout(CATCH_UP_WAIT + Duration::from_secs(1), rx).await;
    }

    /// What this node's replica says of itself (its leader, say).
    pub async fn status(&self) -> Result<ReplicaStatus, BrokerError> {
        self.ask(LocalReplica::Status)?.await.map_err(|_| stopped())
    }

    /// The metadata group as this node knows it.
    pub async fn group(&self) -> Result<GroupView, BrokerError> {
        self.ask(LocalReplica::Group)?.await.map_err(|_| stopped())
    }

    /// Removes a member from the metadata group (leave, forget).
    pub async fn remove(&self, name: &str) -> Result<(), BrokerError> {
        let name = name.to_string();
        self.ask(|tx| LocalReplica::Remove(name, tx))?
            .await
            .map_err(|_| stopped())?
    }
}

fn stopped() -> BrokerError {
    broker_error("the metadata replica stopped".into())
}

impl ChangeLog for ReplicaHandle {
    fn commit(&self, change: BrokerChange) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(self.propose(change.into()))
    }

    fn caught_up(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.catch_up())
    }
}
