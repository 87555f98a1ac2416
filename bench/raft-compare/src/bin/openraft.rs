//! openraft 0.9: three nodes in one process, each running G groups of the same three
//! voters (3 x G `openraft::Raft` instances on one tokio runtime), an in-memory network
//! whose client hands each RPC straight to the target node's `Raft` of the same group,
//! and in-memory log stores and state machines. heartbeat_interval 200 ms, election
//! timeout 1000..2000 ms.
//!
//!     cargo run --release --bin openraft -- 1 1000 10000
//!
//! OPENRAFT_HEARTBEAT_MS changes the heartbeat interval (openraft ticks every 1.5 x it).
//! OPENRAFT_THREADS=n runs a multi-thread runtime with n workers instead of the default
//! current-thread runtime (one thread, like the raft-rs harness).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
    InstallSnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Config, Entry, EntryPayload, LogId, RaftLogReader, RaftNetwork,
    RaftNetworkFactory, RaftSnapshotBuilder, ServerState, SnapshotMeta, StorageError,
    StoredMembership, Vote,
};
use raft_compare::*;

openraft::declare_raft_types!(
    pub Tc:
        D = Vec<u8>,
        R = (),
);

type Raft = openraft::Raft<Tc>;
type NodeId = u64;

// ---------------------------------------------------------------- log store

#[derive(Default)]
struct Log {
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    last_purged: Option<LogId<NodeId>>,
    entries: BTreeMap<u64, Entry<Tc>>,
}

/// One group member's log, in memory. Cloned as its own reader.
#[derive(Clone, Default)]
struct LogStore(Arc<Mutex<Log>>);

impl RaftLogReader<Tc> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<Tc>>, StorageError<NodeId>> {
        let log = self.0.lock().unwrap();
        Ok(log.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<Tc> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<Tc>, StorageError<NodeId>> {
        let log = self.0.lock().unwrap();
        let last = log
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(log.last_purged);
        Ok(LogState {
            last_purged_log_id: log.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.0.lock().unwrap().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.0.lock().unwrap().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.0.lock().unwrap().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.0.lock().unwrap().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<Tc>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<Tc>> + Send,
        I::IntoIter: Send,
    {
        {
            let mut log = self.0.lock().unwrap();
            for e in entries {
                log.entries.insert(e.log_id.index, e);
            }
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut log = self.0.lock().unwrap();
        let _ = log.entries.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut log = self.0.lock().unwrap();
        log.last_purged = Some(log_id);
        let keep = log.entries.split_off(&(log_id.index + 1));
        log.entries = keep;
        Ok(())
    }
}

// ---------------------------------------------------------------- state machine

#[derive(Default)]
struct Machine {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    applied: u64,
    snapshots: u64,
    snapshot: Option<SnapshotMeta<NodeId, BasicNode>>,
}

/// One group member's state machine: it counts what it applies. Its snapshots are empty.
#[derive(Clone, Default)]
struct StateMachine(Arc<Mutex<Machine>>);

impl RaftSnapshotBuilder<Tc> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<Tc>, StorageError<NodeId>> {
        let mut m = self.0.lock().unwrap();
        m.snapshots += 1;
        let meta = SnapshotMeta {
            last_log_id: m.last_applied,
            last_membership: m.membership.clone(),
            snapshot_id: format!("{}", m.snapshots),
        };
        m.snapshot = Some(meta.clone());
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(Vec::new())),
        })
    }
}

impl RaftStateMachine<Tc> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        let m = self.0.lock().unwrap();
        Ok((m.last_applied, m.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<Tc>> + Send,
        I::IntoIter: Send,
    {
        let mut m = self.0.lock().unwrap();
        let mut out = Vec::new();
        for e in entries {
            m.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(_) => m.applied += 1,
                EntryPayload::Membership(mem) => {
                    m.membership = StoredMembership::new(Some(e.log_id), mem)
                }
            }
            out.push(());
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        _snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let mut m = self.0.lock().unwrap();
        m.last_applied = meta.last_log_id;
        m.membership = meta.last_membership.clone();
        m.snapshot = Some(meta.clone());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<Tc>>, StorageError<NodeId>> {
        let m = self.0.lock().unwrap();
        Ok(m.snapshot.clone().map(|meta| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(Vec::new())),
        }))
    }
}

// ---------------------------------------------------------------- network

/// Every node's member of every group, and what went over the "wire".
struct Router {
    groups: usize,
    /// rafts[(node - 1) * groups + group]
    rafts: Vec<OnceLock<Raft>>,
    appends: AtomicU64,
    heartbeats: AtomicU64,
    votes: AtomicU64,
    snapshots: AtomicU64,
}

impl Router {
    fn new(groups: usize) -> Router {
        Router {
            groups,
            rafts: (0..NODES as usize * groups).map(|_| OnceLock::new()).collect(),
            appends: AtomicU64::new(0),
            heartbeats: AtomicU64::new(0),
            votes: AtomicU64::new(0),
            snapshots: AtomicU64::new(0),
        }
    }

    fn get(&self, node: NodeId, group: usize) -> Option<&Raft> {
        self.rafts[(node - 1) as usize * self.groups + group].get()
    }

    fn raft(&self, node: NodeId, group: usize) -> &Raft {
        self.get(node, group).expect("created")
    }

    /// RPCs; each is two Raft messages (request and response).
    fn rpcs(&self) -> u64 {
        self.appends.load(Relaxed) + self.votes.load(Relaxed) + self.snapshots.load(Relaxed)
    }
}

#[derive(Clone)]
struct NetworkFactory {
    router: Arc<Router>,
    group: usize,
}

impl RaftNetworkFactory<Tc> for NetworkFactory {
    type Network = Network;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Network {
        Network {
            router: self.router.clone(),
            group: self.group,
            target,
        }
    }
}

/// A leader's or candidate's connection to one other member of its group.
struct Network {
    router: Arc<Router>,
    group: usize,
    target: NodeId,
}

impl Network {
    fn target<E: std::error::Error>(&self) -> Result<&Raft, RPCError<NodeId, BasicNode, E>> {
        self.router.get(self.target, self.group).ok_or_else(|| {
            RPCError::Unreachable(Unreachable::new(&std::io::Error::other("not created yet")))
        })
    }
}

impl RaftNetwork<Tc> for Network {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<Tc>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.router.appends.fetch_add(1, Relaxed);
        if rpc.entries.is_empty() {
            self.router.heartbeats.fetch_add(1, Relaxed);
        }
        let target = self.target()?;
        target
            .append_entries(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<Tc>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.router.snapshots.fetch_add(1, Relaxed);
        let target = self.target()?;
        target
            .install_snapshot(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.router.votes.fetch_add(1, Relaxed);
        let target = self.target()?;
        target
            .vote(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

// ---------------------------------------------------------------- harness

fn leader_of(router: &Router, group: usize) -> Option<NodeId> {
    (1..=NODES).find(|n| {
        router
            .get(*n, group)
            .map(|r| r.metrics().borrow().state == ServerState::Leader)
            .unwrap_or(false)
    })
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current().metrics().num_alive_tasks()
}

async fn run(groups: usize) -> Report {
    let mut r = Report {
        lib: "openraft",
        groups,
        rss_base_kib: rss_kib(),
        ..Report::default()
    };
    let heartbeat: u64 = std::env::var("OPENRAFT_HEARTBEAT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let config = Arc::new(
        Config {
            cluster_name: "bench".into(),
            heartbeat_interval: heartbeat,
            election_timeout_min: 1000,
            election_timeout_max: 2000,
            ..Config::default()
        }
        .validate()
        .expect("a valid config"),
    );
    let router = Arc::new(Router::new(groups));

    let start = Instant::now();
    for node in 1..=NODES {
        for group in 0..groups {
            let network = NetworkFactory {
                router: router.clone(),
                group,
            };
            let raft = Raft::new(
                node,
                config.clone(),
                network,
                LogStore::default(),
                StateMachine::default(),
            )
            .await
            .expect("a raft node");
            let _ = router.rafts[(node - 1) as usize * groups + group].set(raft);
        }
    }
    r.create_s = start.elapsed().as_secs_f64();

    // Leaders spread over the nodes: group g is initialized (and so campaigns first) on
    // node g % 3 + 1.
    let start = Instant::now();
    let members: BTreeSet<NodeId> = (1..=NODES).collect();
    for group in 0..groups {
        let raft = router.raft(group as u64 % NODES + 1, group).clone();
        let members = members.clone();
        tokio::spawn(async move {
            raft.initialize(members).await.expect("initialize");
        });
    }
    loop {
        let led = (0..groups).filter(|g| leader_of(&router, *g).is_some()).count();
        if led == groups || start.elapsed() > ELECTION_LIMIT {
            r.led = led;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    r.elect_s = start.elapsed().as_secs_f64();
    // Let the first entries (membership, the leader's blank) commit everywhere.
    tokio::time::sleep(Duration::from_secs(1)).await;
    r.rss_elected_kib = rss_kib();
    r.heap_elected_kib = heap_in_use_kib();
    r.tasks = Some(alive_tasks());

    // Idle.
    let (rpcs, heartbeats, votes, cpu, wall) = (
        router.rpcs(),
        router.heartbeats.load(Relaxed),
        router.votes.load(Relaxed),
        cpu_seconds(),
        Instant::now(),
    );
    let idle_end = Instant::now() + idle();
    while Instant::now() < idle_end {
        tokio::time::sleep(Duration::from_secs(5).min(idle_end - Instant::now())).await;
        if std::env::var("RAFT_COMPARE_VERBOSE").is_ok() {
            eprintln!(
                "  idle {:>4.0} s: RSS {:.1} MiB, heap {:.1} MiB, {} tasks, {} in the global queue",
                wall.elapsed().as_secs_f64(),
                rss_kib() as f64 / 1024.0,
                heap_in_use_kib() as f64 / 1024.0,
                alive_tasks(),
                tokio::runtime::Handle::current().metrics().global_queue_depth(),
            );
        }
    }
    let seconds = wall.elapsed().as_secs_f64();
    r.idle_cpu_pct = (cpu_seconds() - cpu) / seconds * 100.0;
    r.idle_msgs_s = 2.0 * (router.rpcs() - rpcs) as f64 / seconds;
    r.idle_hb_s = (router.heartbeats.load(Relaxed) - heartbeats) as f64 / seconds;
    r.idle_votes = router.votes.load(Relaxed) - votes;
    r.rss_idle_kib = rss_kib();

    // One busy group among the idle ones: one proposal at a time, each awaited until
    // committed (and applied) on the leader.
    let wait = Instant::now();
    let leader = loop {
        match leader_of(&router, 0) {
            Some(l) => break l,
            None if wait.elapsed() < ELECTION_LIMIT => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            None => panic!("group 0 has no leader"),
        }
    };
    let raft = router.raft(leader, 0).clone();
    let (cpu, start) = (cpu_seconds(), Instant::now());
    let mut appended = 0u64;
    while start.elapsed() < BUSY {
        raft.client_write(vec![0u8; PAYLOAD])
            .await
            .expect("client_write");
        appended += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    r.seq_appends_s = appended as f64 / seconds;
    r.busy_cpu_pct = (cpu_seconds() - cpu) / seconds * 100.0;

    // Pipelined: PIPELINE writers, each one proposal at a time.
    let start = Instant::now();
    let writers = (0..PIPELINE).map(|_| {
        let raft = raft.clone();
        async move {
            let mut n = 0u64;
            while start.elapsed() < BUSY {
                raft.client_write(vec![0u8; PAYLOAD])
                    .await
                    .expect("client_write");
                n += 1;
            }
            n
        }
    });
    let appended: u64 = futures::future::join_all(writers).await.into_iter().sum();
    r.pipe_appends_s = appended as f64 / start.elapsed().as_secs_f64();
    r
}

fn main() {
    each_count_in_a_child(|groups| {
        let threads: usize = std::env::var("OPENRAFT_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let runtime = if threads == 0 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_all()
                .build()
        }
        .expect("a tokio runtime");
        runtime.block_on(run(groups))
    });
}
