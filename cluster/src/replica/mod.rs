//! The node's replica: its member of every Raft group it runs. Group 0 is the
//! cluster's metadata; every other group (a mirrored queue) is opened by its owner on
//! each node that holds a replica of it ([`ReplicaHandle::open`]).
//!
//! One actor runs Raft (TiKV's `raft` crate: elections, log matching, commit rules;
//! nothing hand-made) for all of them: one ticker drives every group; the messages
//! of all groups to one peer node leave as one cast per handling (`outbox`, big
//! ones in parts: `transport`) to the peer's replica (process group
//! `warren.raft.NODE`), which hands each to its group by id. Every group's log and
//! hard state live in the node's redb ([`crate::raft_log`]) and go through its
//! group-commit writer, pipelined (`hosted`): writes are not waited for, committed
//! entries go to the group's applier task (`applying`), which feeds the group's
//! state machine ([`machine`]). Every so many entries a group snapshots its machine
//! and compacts its log ([`crate::log_store`]); a node far behind, or new, gets the
//! snapshot from the leader.
//!
//! A change is proposed on the node that took the request and answered when that node
//! has applied it. A proposal waits while no leader is known (an election, a node still
//! joining) and is handed to Raft again when it may have been lost (`proposals`);
//! after [`COMMIT_TIMEOUT`] it fails with a clear error (a minority side of a
//! partition). Before a node answers "no such queue" or routes a message to nothing it
//! catches up with the leader's commit index (`barrier`); reads keep being served
//! from what the node has when no leader can be reached.
//!
//! The metadata group has disk nodes as voters and RAM nodes as learners (whose log
//! stays in memory, taken from the leader at every start); how it forms and changes
//! is in `formation`. Other groups keep their logs on disk on every node.

mod applying;
mod barrier;
mod entry;
mod formation;
mod handle;
mod hosted;
pub mod machine;
mod outbox;
pub(crate) mod proposals;
mod reconcile;
mod snapshot;
mod transport;

#[cfg(test)]
mod tests;

pub use applying::Applied;
pub use formation::ReplicaStatus;
pub use handle::{GroupSpec, LogReader, ReplicaHandle};
pub use machine::{Answer, Machine, MetadataMachine};
pub use reconcile::{MemberProgress, Reconciled};
pub use snapshot::SNAPSHOT_EVERY;
#[cfg(test)]
pub(crate) use snapshot::SNAPSHOT_FORMAT;
pub(crate) use snapshot::{take_entries, with_entries, SnapshotData};
pub use transport::{Part, RaftBatch};

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use raft::prelude::Entry;
use raft::{Config, RawNode};
use tokio::sync::{mpsc, oneshot};
use warren_actors::error::{code, BrokerError};
use warren_storage::Store;

use crate::log_store::{DiskLog, LogStore};
use crate::members::Role;
use crate::metadata::MetadataApplier;
use crate::protocol::{ErrorReply, LocalOnly};
use crate::raft_group::{GroupId, RaftGroup};
use crate::raft_log::{self, raft_id, RaftRecord, METADATA_GROUP};
use crate::wire::Wire;
use applying::ApplyJob;
use hosted::{Hosted, Io};
use outbox::Outbox;
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
    format!("warren.raft.{node}")
}

/// The registry name of node `node`'s replica.
pub fn replica_name(node: &str) -> String {
    format!("raft@{node}")
}

/// One run of a group on this node: from its opening to its closing (the metadata
/// group's is 0, for as long as the replica runs). Reports of the applier and the
/// writer carry it, so that those of a closed run are told from the current one's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupRun {
    /// The group.
    pub group: GroupId,
    /// Which opening of it.
    pub run: u64,
}

/// A group as one node knows it (`cluster status` shows the metadata group's).
#[derive(Clone, Debug, Default)]
pub struct GroupView {
    /// The names of its members (voters and learners): for the metadata group, a
    /// node that is up but not among them is still joining.
    pub members: Vec<String>,
    /// The current term.
    pub term: u64,
    /// The leader in that term, when this node knows one.
    pub leader: Option<String>,
    /// This node's log.
    pub log: crate::protocol::MetadataLog,
    /// Each member's replication, when this node leads the group (else empty).
    pub progress: Vec<MemberProgress>,
}

/// Who leads a group in which term, as this node knows it: what
/// [`ReplicaHandle::watch`] tells of a group each time it changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seat {
    /// The current term.
    pub term: u64,
    /// The leader in that term, when this node knows one.
    pub leader: Option<String>,
}

/// What the replica did since it started.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReplicaStats {
    /// The groups it runs, the metadata's included.
    pub groups: usize,
    /// Of them, the groups settled and not ticking (quiet).
    pub quiet: usize,
    /// Ticks since it started.
    pub ticks: u64,
    /// Raft messages it sent.
    pub messages: u64,
    /// The casts that carried them.
    pub casts: u64,
}

/// Raft messages for a group not opened here: since when, and each with its sender.
type Early = (Instant, Vec<(String, Vec<u8>)>);

/// How long messages for a group not opened here are kept.
const EARLY_KEPT: Duration = Duration::from_secs(2);
/// At most so many such messages per group, and groups.
const EARLY_MESSAGES: usize = 32;
const EARLY_GROUPS: usize = 4096;

/// Every so many ticks, while groups are quiet, the replica asks the member list which
/// nodes are down: a quiet follower whose leader's node is down campaigns.
const DOWN_CHECK_TICKS: u64 = 3;

/// How a group's applier task is started (the group's machine goes with it).
type Starter = Box<
    dyn FnOnce(applying::Start, ActorRef<ReplicaMsg>) -> mpsc::UnboundedSender<ApplyJob> + Send,
>;

/// A group to run on this node (see [`ReplicaHandle::open`]).
pub struct Opening {
    spec: GroupSpec,
    /// The machine keeps its state across restarts ([`Machine::KEEPS_STATE`]).
    keeps_state: bool,
    start: Starter,
}

/// Node-internal requests.
pub enum LocalReplica {
    /// Time passed: Raft's tick, expiry of proposals not committed in time, and a
    /// discovery round while this node is not in the metadata group.
    Tick,
    /// Propose a command (encoded) to a group; answered once it is applied on this
    /// node, with the machine's answer.
    /// A proposal: its group, its id and its entry (`entry::build`).
    Propose(GroupId, u64, Vec<u8>, oneshot::Sender<Answer>),
    /// Answered once this node has applied everything the group's leader had
    /// committed when it was asked (or after [`CATCH_UP_WAIT`]).
    CatchUp(GroupId, oneshot::Sender<bool>),
    /// What the replica says of itself.
    Status(oneshot::Sender<ReplicaStatus>),
    /// A group as this node knows it (none: not run here).
    View(GroupId, oneshot::Sender<Option<GroupView>>),
    /// One step towards a group's members being the list given (see
    /// `reconcile`).
    Reconcile(
        GroupId,
        Vec<String>,
        oneshot::Sender<Result<Reconciled, BrokerError>>,
    ),
    /// Hand a group's leadership to the named member, when this node leads it and
    /// that member is a voter holding about everything committed (see `hand_over`).
    HandOver(
        GroupId,
        String,
        oneshot::Sender<Result<Reconciled, BrokerError>>,
    ),
    /// Group `group`'s leader left it (its node no longer holds a member): this
    /// follower campaigns at its next tick.
    LeaderGone(GroupId),
    /// Who leads a group, now and at every change (none: not run here).
    Watch(
        GroupId,
        oneshot::Sender<Option<tokio::sync::watch::Receiver<Seat>>>,
    ),
    /// What the replica did so far.
    Stats(oneshot::Sender<ReplicaStats>),
    /// What a discovery round found: each up peer's status.
    Discovered(Vec<ReplicaStatus>),
    /// The nodes the member list holds down.
    Down(Vec<String>),
    /// A join request was accepted by a member.
    JoinAccepted,
    /// Remove a member from the metadata group (it left, or was forgotten).
    Remove(String, oneshot::Sender<Result<(), BrokerError>>),
    /// Run a group on this node (nothing if it runs already).
    Open(Opening, oneshot::Sender<Result<LogReader, BrokerError>>),
    /// Stop running a group here; with `true`, its log is removed too (the group is
    /// gone).
    Close(GroupId, bool, oneshot::Sender<Result<(), BrokerError>>),
    /// Remove the logs this node holds of groups not running here and not among
    /// those given (the groups of every queue the metadata names); answered with the
    /// groups removed.
    RemoveUnclaimed(
        BTreeSet<GroupId>,
        oneshot::Sender<Result<Vec<GroupId>, BrokerError>>,
    ),
    /// A group's applier's report, with the run of the group it belongs to.
    Applied(GroupRun, Applied),
    /// The write of a group's ready (by number) completed, or failed.
    Persisted(GroupRun, u64, Result<(), String>),
}

/// Messages to a replica.
#[derive(RactorClusterMessage)]
pub enum ReplicaMsg {
    /// Raft messages, protobuf-encoded, each with its group.
    Raft(Wire<RaftBatch>),
    /// A fresh node asks to be added to the metadata group (as a voter for `disk`, a
    /// learner for `ram`), with its Raft id.
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

/// The replica actor (see the module documentation).
pub struct Replica;

/// What a replica starts with.
pub struct ReplicaArgs {
    /// This node's name (its Raft ids are derived from it).
    pub name: String,
    /// A disk node is a voter of the metadata group, a RAM node a learner.
    pub role: Role,
    /// The node's store, which holds the Raft logs.
    pub store: Store,
    /// Applies committed metadata commands to this node's broker state.
    pub applier: Arc<dyn MetadataApplier>,
    /// Whether seeds were given (without them a disk node forms its group at once).
    pub has_seeds: bool,
    /// Metadata entries applied between two snapshots ([`SNAPSHOT_EVERY`] by
    /// default).
    pub snapshot_every: u64,
}

/// The replica's state: the groups it runs and what forming the metadata group takes.
pub struct ReplicaState {
    name: String,
    /// This node's Raft id in the metadata group (a RAM node's changes at every
    /// start; in other groups a node's id is [`raft_id`] of its name).
    id: u64,
    role: Role,
    store: Store,
    has_seeds: bool,
    myself: ActorRef<ReplicaMsg>,
    /// A number picked at start, which tells this run's big messages from an earlier
    /// run's.
    incarnation: u64,
    /// The metadata group.
    meta: Hosted,
    /// Every other group run here.
    groups: HashMap<GroupId, Hosted>,
    /// Groups opened since the replica started (each opening is a run of its own).
    runs: u64,
    /// The groups touched in this handling: their readies are handled at its end.
    dirty: BTreeSet<GroupId>,
    outbox: Outbox,
    /// Big messages being received.
    assembly: Assembly,
    /// Raft messages for groups not opened here yet (a new queue's first election
    /// reaches a node before it has applied the queue's declaration), stepped when
    /// the group opens; dropped after [`EARLY_KEPT`].
    early: HashMap<GroupId, Early>,
    /// Groups closed here in the last [`EARLY_KEPT`]: a message for one is from the
    /// run that closed (a proposal a follower forwarded, a snapshot its leader sent)
    /// and is dropped, never kept for the next run (a member removed and added again
    /// at once): Raft sends what the next run needs again.
    closed: HashMap<GroupId, Instant>,
    ticks: u64,
    /// Asking the member list which nodes are down.
    checking_down: bool,
    started: Instant,
    last_discovery: Option<Instant>,
    discovering: bool,
    last_complaint: Option<Instant>,
}

/// The Raft configuration of every group (the simulation runs the same).
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
        // A restart applies a long log again in pieces, not in one ready.
        max_committed_size_per_ready: 8 << 20,
        ..Config::default()
    }
}

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

fn broker_error(text: String) -> BrokerError {
    BrokerError::new(code::INTERNAL_ERROR, text)
}

/// A group's log as stored, ready for Raft and for the group's applier.
struct Stored {
    log: LogStore,
    record: RaftRecord,
    snapshot: Option<(u64, SnapshotData)>,
    entries: Vec<Entry>,
}

/// Reads group `group`'s log from `store`; `keeps_state`: the machine's state is
/// kept across restarts (the applier needs the entries before the last applied one
/// for its filter of proposals applied twice).
fn load(store: &Store, group: GroupId, keeps_state: bool) -> Result<Stored, ActorProcessingErr> {
    let window = if keeps_state {
        proposals::DEDUPE_WINDOW
    } else {
        0
    };
    let loaded = raft_log::load(store, group, window)?;
    let mut record = loaded.record;
    // Applied never passes commit (a crash between the two writes).
    record.applied = record.applied.min(loaded.hard_state.commit);
    let mut snapshot = None;
    if let Some(s) = &loaded.snapshot {
        let data = SnapshotData::decode(&s.data)?;
        for (id, name) in &data.names {
            record.names.entry(*id).or_insert_with(|| name.clone());
        }
        let index = s.get_metadata().index;
        snapshot = Some((index, data));
    }
    tracing::debug!(
        group,
        snapshot = snapshot.as_ref().map_or(0, |(i, _)| *i),
        last = loaded.tail.last,
        held = loaded.tail.held.len(),
        applied = record.applied,
        "read a raft log"
    );
    let log = LogStore::restored_paged(
        loaded.hard_state,
        loaded.conf_state,
        loaded.snapshot,
        loaded.tail,
        Some(DiskLog {
            store: store.clone(),
            group,
        }),
    );
    Ok(Stored {
        log,
        record,
        snapshot,
        entries: loaded.window,
    })
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
        // A RAM node keeps no metadata: it takes the log again from the leader, as a
        // new learner each time it starts (Raft forbids a member to forget its log,
        // so each start is a new incarnation with its own id; the old one is removed).
        let id = match args.role {
            Role::Disk => raft_id(&args.name),
            Role::Ram => raft_id(&format!("{}#{:016x}", args.name, rand::random::<u64>())),
        };
        let stored = match args.role {
            Role::Disk => load(&args.store, METADATA_GROUP, true)?,
            Role::Ram => Stored {
                log: LogStore::default(),
                record: RaftRecord::default(),
                snapshot: None,
                entries: Vec::new(),
            },
        };
        let Stored {
            log,
            mut record,
            snapshot,
            entries,
        } = stored;
        let applied = record.applied;
        // A snapshot from the leader stored but not applied (a crash in between):
        // the applier restores it first.
        if let Some((index, _)) = &snapshot {
            record.applied = record.applied.max(*index);
        }
        record.names.insert(id, args.name.clone());
        let node = RawNode::new(&raft_config(id, record.applied), log, &logger())?;
        let apply_tx = applying::start(
            applying::Start {
                origin: args.name.clone(),
                run: GroupRun {
                    group: METADATA_GROUP,
                    run: 0,
                },
                applied,
                snapshot,
                entries,
            },
            MetadataMachine(args.applier.clone()),
            myself.clone(),
        );
        let durable = args.role == Role::Disk;
        let meta = Hosted::new(
            RaftGroup::new(METADATA_GROUP, node, record, durable),
            0,
            ("metadata".into(), "disk nodes".into()),
            durable,
            args.snapshot_every,
            apply_tx,
        );
        ractor::pg::join(replica_group(&args.name), vec![myself.get_cell()]);
        myself.send_interval(TICK, || ReplicaMsg::local(LocalReplica::Tick));
        let mut state = ReplicaState {
            name: args.name,
            id,
            role: args.role,
            store: args.store,
            has_seeds: args.has_seeds,
            myself: myself.clone(),
            incarnation: rand::random(),
            meta,
            groups: HashMap::new(),
            runs: 0,
            dirty: BTreeSet::new(),
            outbox: Outbox::default(),
            assembly: Assembly::default(),
            early: HashMap::new(),
            closed: HashMap::new(),
            ticks: 0,
            checking_down: false,
            started: Instant::now(),
            last_discovery: None,
            discovering: false,
            last_complaint: None,
        };
        if !state.meta.initialized() && state.role == Role::Disk && !state.has_seeds {
            state.bootstrap().await?;
        } else if state.meta.conf_state().voters == [state.id] {
            // The group's only voter, started again: nobody else can lead, so it
            // need not wait an election timeout (1-2 s) to find that out.
            state.meta.group.node.campaign()?;
        }
        if state.meta.initialized() {
            tracing::info!(
                applied = state.meta.group.record.applied,
                "metadata replica ready (members: {})",
                state.meta.member_names().join(", ")
            );
        }
        state.dirty.insert(METADATA_GROUP);
        state.end_of_handling()?;
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
                for word in batch.quiet {
                    if let Some(hosted) = state.groups.get_mut(&word.group) {
                        hosted.hear_quiet(word);
                    }
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
                state.dirty.insert(METADATA_GROUP);
                let _ = reply.send(answer.into());
            }
            ReplicaMsg::Status(_, reply) => {
                let _ = reply.send(state.status().into());
            }
            ReplicaMsg::Local(local) => {
                if let Some(local) = local.take() {
                    state.local(&myself, local).await?;
                }
            }
        }
        state.end_of_handling()
    }
}

impl ReplicaState {
    async fn local(
        &mut self,
        myself: &ActorRef<ReplicaMsg>,
        local: LocalReplica,
    ) -> Result<(), ActorProcessingErr> {
        match local {
            LocalReplica::Tick => {
                let now = Instant::now();
                self.ticks += 1;
                let name = self.name.clone();
                self.meta.tick(&name, now);
                self.dirty.insert(METADATA_GROUP);
                let mut quiet = 0;
                for (id, hosted) in self.groups.iter_mut() {
                    if hosted.quiet {
                        quiet += 1;
                        continue;
                    }
                    hosted.tick(&name, now);
                    self.dirty.insert(*id);
                    if let Some(word) = hosted.try_quiesce() {
                        for follower in hosted.followers() {
                            if let Some(to) = hosted.group.record.names.get(&follower) {
                                self.outbox.quiet(to, word);
                            }
                        }
                    }
                }
                if quiet > 0 && self.ticks.is_multiple_of(DOWN_CHECK_TICKS) {
                    self.check_down(myself);
                }
                if !self.meta.joined() {
                    self.discover(myself);
                }
                self.early
                    .retain(|_, (since, _)| now.duration_since(*since) < EARLY_KEPT);
                self.closed
                    .retain(|_, since| now.duration_since(*since) < EARLY_KEPT);
            }
            LocalReplica::Down(down) => {
                self.checking_down = false;
                for (id, hosted) in self.groups.iter_mut() {
                    let leader = hosted.leader_id();
                    if leader == 0 || leader == hosted.id() {
                        continue;
                    }
                    if down.contains(&hosted.name_of(leader)) {
                        tracing::debug!(group = %hosted.label, "the leader's node is down: this replica campaigns");
                        hosted.leader_lost();
                        self.dirty.insert(*id);
                    }
                }
            }
            LocalReplica::Propose(group, id, entry, reply) => {
                let name = self.name.clone();
                match self.hosted_mut(group) {
                    Some(hosted) => hosted.propose(&name, id, entry, reply),
                    None => {
                        let _ = reply.send(Err(not_here(group)));
                    }
                }
            }
            LocalReplica::CatchUp(group, ready) => {
                if let Some(hosted) = self.hosted_mut(group) {
                    hosted.catch_up(ready);
                }
            }
            LocalReplica::Status(reply) => {
                let _ = reply.send(self.status());
            }
            LocalReplica::View(group, reply) => {
                let view = self.hosted(group).map(|h| GroupView {
                    members: h.member_names(),
                    term: h.group.node.raft.term,
                    leader: h.leader(),
                    log: h.log_info(),
                    progress: h.progress(),
                });
                let _ = reply.send(view);
            }
            LocalReplica::Reconcile(group, desired, reply) => {
                let _ = reply.send(self.reconcile(group, &desired));
            }
            LocalReplica::HandOver(group, to, reply) => {
                let _ = reply.send(self.hand_over(group, &to));
            }
            LocalReplica::LeaderGone(group) => {
                if let Some(hosted) = self.groups.get_mut(&group) {
                    if hosted.leader_id() != hosted.id() {
                        tracing::debug!(group = %hosted.label, "the leader left the group: this replica campaigns");
                        hosted.leader_lost();
                        self.dirty.insert(group);
                    }
                }
            }
            LocalReplica::Watch(group, reply) => {
                let _ = reply.send(self.hosted(group).map(|h| h.seat.subscribe()));
            }
            LocalReplica::Stats(reply) => {
                let _ = reply.send(ReplicaStats {
                    groups: 1 + self.groups.len(),
                    quiet: self.groups.values().filter(|h| h.quiet).count(),
                    ticks: self.ticks,
                    messages: self.outbox.messages,
                    casts: self.outbox.casts,
                });
            }
            LocalReplica::Discovered(peers) => {
                self.discovering = false;
                self.decide(myself, peers).await?;
            }
            LocalReplica::JoinAccepted => {
                tracing::info!(
                    "a member accepted this node; taking the metadata log from the leader"
                );
            }
            LocalReplica::Remove(name, reply) => {
                let _ = reply.send(self.remove_member(&name));
            }
            LocalReplica::Open(opening, reply) => {
                let _ = reply.send(self.open(opening));
            }
            LocalReplica::Close(group, remove, reply) => match self.close(group, remove) {
                Ok(commit) => answer_when_written(
                    commit,
                    (),
                    format!("removing the log of raft group {group}"),
                    reply,
                ),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            LocalReplica::RemoveUnclaimed(claimed, reply) => {
                match self.remove_unclaimed(&claimed) {
                    Ok((removed, commit)) => answer_when_written(
                        commit,
                        removed,
                        "removing unclaimed raft logs".to_string(),
                        reply,
                    ),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            LocalReplica::Applied(run, report) => {
                if self.runs(run) {
                    self.with_io(run.group, |hosted, io| hosted.applied(report, io))?;
                }
            }
            LocalReplica::Persisted(run, number, result) => {
                if self.runs(run) {
                    self.with_io(run.group, |hosted, io| hosted.persisted(number, result, io))?;
                }
            }
        }
        Ok(())
    }

    /// Asks the member list which nodes are down, in a task.
    fn check_down(&mut self, myself: &ActorRef<ReplicaMsg>) {
        if self.checking_down {
            return;
        }
        let Some(membership) = crate::membership::MembershipHandle::lookup(&self.name) else {
            return;
        };
        self.checking_down = true;
        let me = myself.clone();
        tokio::spawn(async move {
            let down = match membership.status().await {
                Ok(members) => members
                    .into_iter()
                    .filter(|m| m.health == crate::members::Health::Down)
                    .map(|m| m.name)
                    .collect(),
                Err(_) => Vec::new(),
            };
            let _ = me.cast(ReplicaMsg::local(LocalReplica::Down(down)));
        });
    }

    /// Whether `run` is the group's current run here: a report of a run closed since
    /// (the group closed and opened again) must not reach the new one.
    fn runs(&self, run: GroupRun) -> bool {
        self.hosted(run.group).is_some_and(|h| h.run == run.run)
    }

    fn hosted(&self, group: GroupId) -> Option<&Hosted> {
        match group {
            METADATA_GROUP => Some(&self.meta),
            g => self.groups.get(&g),
        }
    }

    fn hosted_mut(&mut self, group: GroupId) -> Option<&mut Hosted> {
        self.dirty.insert(group);
        match group {
            METADATA_GROUP => Some(&mut self.meta),
            g => self.groups.get_mut(&g),
        }
    }

    /// Hands Raft a message of group `group` from the peer on node `sender`.
    fn step(&mut self, sender: &str, group: GroupId, bytes: &[u8]) {
        // Closed here a moment ago: for the run that closed.
        if self.closed.contains_key(&group) {
            return;
        }
        match self.hosted_mut(group) {
            Some(hosted) => hosted.step(sender, bytes),
            // Not opened here yet (its owner has not applied its creation): kept a
            // moment; or closed: the sender tries again.
            None => {
                if self.early.len() >= EARLY_GROUPS && !self.early.contains_key(&group) {
                    return;
                }
                let (_, messages) = self
                    .early
                    .entry(group)
                    .or_insert_with(|| (Instant::now(), Vec::new()));
                if messages.len() < EARLY_MESSAGES {
                    messages.push((sender.to_string(), bytes.to_vec()));
                }
            }
        }
    }

    /// Runs `f` on group `group` (if it runs here) with the node's shared I/O, marks
    /// it touched, and handles a driver failure.
    fn with_io(
        &mut self,
        group: GroupId,
        f: impl FnOnce(&mut Hosted, &mut Io<'_>) -> Result<(), crate::raft_group::GroupError>,
    ) -> Result<(), ActorProcessingErr> {
        let mut io = Io {
            store: &self.store,
            myself: &self.myself,
            outbox: &mut self.outbox,
        };
        let hosted = match group {
            METADATA_GROUP => Some(&mut self.meta),
            g => self.groups.get_mut(&g),
        };
        let Some(hosted) = hosted else {
            return Ok(());
        };
        let result = f(hosted, &mut io);
        self.dirty.insert(group);
        self.failed(group, result)
    }

    /// Handles the readies of every group touched, then sends what they say to send.
    fn end_of_handling(&mut self) -> Result<(), ActorProcessingErr> {
        let now = Instant::now();
        for group in std::mem::take(&mut self.dirty) {
            self.with_io(group, |hosted, io| {
                hosted.check_leader(now);
                hosted.advance(io)
            })?;
        }
        // (with_io marked them touched again: they were just handled.)
        self.dirty.clear();
        self.outbox.flush(&self.name, self.incarnation);
        Ok(())
    }

    /// A group's driver failed: the metadata group starts again from the store (the
    /// replica restarts); any other group stops running here, with an error in the log.
    fn failed(
        &mut self,
        group: GroupId,
        result: Result<(), crate::raft_group::GroupError>,
    ) -> Result<(), ActorProcessingErr> {
        let Err(e) = result else {
            return Ok(());
        };
        if group == METADATA_GROUP {
            return Err(e.into());
        }
        if let Some(hosted) = self.groups.remove(&group) {
            tracing::error!(group = %hosted.label, "stopped running the group here: {e}");
        }
        Ok(())
    }

    /// Starts running a group here: from its stored log if it has one, else as a
    /// new group of the members the spec names. Returns where its entries are read.
    fn open(&mut self, opening: Opening) -> Result<LogReader, BrokerError> {
        let spec = opening.spec;
        if spec.group == METADATA_GROUP {
            return Err(BrokerError::precondition_failed(
                "group 0 is the metadata group; pick another id".to_string(),
            ));
        }
        let reader = LogReader(DiskLog {
            store: self.store.clone(),
            group: spec.group,
        });
        if self.groups.contains_key(&spec.group) {
            return Ok(reader);
        }
        let id = raft_id(&self.name);
        let fail = |what: String| broker_error(format!("opening {}: {what}", spec.label));
        let Stored {
            log,
            mut record,
            snapshot,
            entries,
        } = load(&self.store, spec.group, opening.keeps_state).map_err(|e| fail(e.to_string()))?;
        let members = raft::Storage::initial_state(&log)
            .map_err(|e| fail(e.to_string()))?
            .conf_state;
        let fresh = members.voters.is_empty() && members.learners.is_empty();
        let log = if fresh {
            if !spec.members.contains(&self.name) && !spec.joining {
                return Err(BrokerError::precondition_failed(format!(
                    "{}: node '{}' is not among its replicas ({})",
                    spec.label,
                    self.name,
                    spec.members.join(", ")
                )));
            }
            let voters: Vec<u64> = spec.members.iter().map(|m| raft_id(m)).collect();
            for (member, id) in spec.members.iter().zip(&voters) {
                record.names.insert(*id, member.clone());
            }
            let cs = raft::prelude::ConfState {
                voters: voters.clone(),
                ..Default::default()
            };
            record.conf_state =
                protobuf::Message::write_to_bytes(&cs).map_err(|e| fail(e.to_string()))?;
            record.base_voters = voters;
            // Not waited for: the writer keeps order, so no ready of the group is on
            // disk without it; lost in a crash, the group starts fresh the same way.
            drop(
                self.store
                    .submit(warren_storage::Batch::durable(vec![raft_log::record_op(
                        spec.group, &record,
                    )])),
            );
            LogStore::restored(Default::default(), cs, None, Vec::new()).with_disk(DiskLog {
                store: self.store.clone(),
                group: spec.group,
            })
        } else {
            log
        };
        if !opening.keeps_state {
            // The machine starts empty: from the snapshot, then every entry after it.
            record.applied = 0;
        }
        let applied = record.applied;
        if let Some((index, _)) = &snapshot {
            record.applied = record.applied.max(*index);
        }
        record.names.insert(id, self.name.clone());
        let node = RawNode::new(&raft_config(id, record.applied), log, &logger())
            .map_err(|e| fail(e.to_string()))?;
        self.runs += 1;
        let run = GroupRun {
            group: spec.group,
            run: self.runs,
        };
        let apply_tx = (opening.start)(
            applying::Start {
                origin: self.name.clone(),
                run,
                applied,
                snapshot,
                entries,
            },
            self.myself.clone(),
        );
        let mut hosted = Hosted::new(
            RaftGroup::new(spec.group, node, record, true),
            run.run,
            (spec.label, "replicas".into()),
            true,
            spec.snapshot_every,
            apply_tx,
        );
        hosted.may_quiesce = true;
        // (Its machine starts empty and applies the log again at every start.)
        hosted.group.store_applied = opening.keeps_state;
        hosted.joining = fresh && spec.joining;
        // The only voter need not wait out an election timeout; nor does a new
        // group's first member (its owner: it most likely leads, and at once). A
        // member joining with an empty log waits to hear from the leader.
        if !hosted.joining
            && (hosted.conf_state().voters == [id]
                || (fresh && spec.members.first() == Some(&self.name)))
        {
            let _ = hosted.group.node.campaign();
        }
        if let Some((_, early)) = self.early.remove(&spec.group) {
            for (sender, bytes) in early {
                hosted.step(&sender, &bytes);
            }
        }
        self.closed.remove(&spec.group);
        self.groups.insert(spec.group, hosted);
        self.dirty.insert(spec.group);
        Ok(reader)
    }

    /// Stops running a group here; `remove` also removes its log (done when the
    /// commit returned is).
    fn close(
        &mut self,
        group: GroupId,
        remove: bool,
    ) -> Result<Option<warren_storage::Commit>, BrokerError> {
        if group == METADATA_GROUP {
            return Err(BrokerError::precondition_failed(
                "the metadata group cannot be closed".to_string(),
            ));
        }
        self.early.remove(&group);
        if let Some(hosted) = self.groups.remove(&group) {
            self.closed.insert(group, Instant::now());
            for w in hosted.proposals.into_replies() {
                let _ = w.send(Err(broker_error(format!(
                    "{} stopped running on node '{}'",
                    hosted.label, self.name
                ))));
            }
        }
        Ok(remove.then(|| {
            self.store
                .submit(warren_storage::Batch::durable(vec![raft_log::drop_op(
                    group,
                )]))
        }))
    }

    /// The logs of groups neither running here nor `claimed`, and the commit that
    /// removes them (none when there are none). A group that runs is never among
    /// them, so a group opened since its claimant was looked up keeps its log.
    fn remove_unclaimed(
        &mut self,
        claimed: &BTreeSet<GroupId>,
    ) -> Result<(Vec<GroupId>, Option<warren_storage::Commit>), BrokerError> {
        let stored = self
            .store
            .log_groups()
            .map_err(|e| broker_error(format!("listing the raft logs: {e}")))?;
        let removed: Vec<GroupId> = stored
            .into_iter()
            .filter(|g| {
                *g != METADATA_GROUP && !claimed.contains(g) && !self.groups.contains_key(g)
            })
            .collect();
        if removed.is_empty() {
            return Ok((removed, None));
        }
        let ops = removed.iter().map(|g| raft_log::drop_op(*g)).collect();
        let commit = self.store.submit(warren_storage::Batch::durable(ops));
        Ok((removed, Some(commit)))
    }
}

/// Answers `reply` with `value` once `commit` (if any) is done, on a task of its own:
/// the replica runs every group of the node and does not wait for an fsync.
fn answer_when_written<T: Send + 'static>(
    commit: Option<warren_storage::Commit>,
    value: T,
    what: String,
    reply: oneshot::Sender<Result<T, BrokerError>>,
) {
    let Some(commit) = commit else {
        let _ = reply.send(Ok(value));
        return;
    };
    tokio::spawn(async move {
        let result = commit
            .await
            .map(|()| value)
            .map_err(|e| broker_error(format!("{what}: {e}")));
        let _ = reply.send(result);
    });
}

fn not_here(group: GroupId) -> BrokerError {
    broker_error(format!(
        "raft group {group} does not run on this node (not opened, or closed)"
    ))
}

/// The replica of member `name`, wherever it runs.
fn replica_of(name: &str) -> Option<ActorRef<ReplicaMsg>> {
    ractor::pg::get_members(&replica_group(name))
        .into_iter()
        .next()
        .map(ActorRef::from)
}
