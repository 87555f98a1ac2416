//! Three replicas in one process running many groups besides their own metadata
//! group: every group applies the same entries on every node, the messages of all
//! groups between two nodes share casts, a stopped node's groups elect new leaders,
//! and a restarted node rebuilds its machines from its log and snapshots.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorRef};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use warren_actors::error::BrokerError;
use warren_actors::BoxFuture;
use warren_storage::Store;

use super::*;
use crate::metadata::NoMetadata;

#[derive(Serialize, Deserialize)]
enum KvCommand {
    Put(String, u64),
}

type Map = Arc<Mutex<BTreeMap<String, u64>>>;

/// A machine holding a map in memory (its state is rebuilt from the log).
struct Kv(Map);

impl Machine for Kv {
    type Command = KvCommand;
    type Image = BTreeMap<String, u64>;

    fn apply(&mut self, _index: u64, command: KvCommand) -> BoxFuture<'_, Answer> {
        let KvCommand::Put(key, value) = command;
        let before = self.0.lock().unwrap().insert(key, value);
        Box::pin(async move { Ok(Box::new(before) as Box<dyn Any + Send>) })
    }

    fn image(&mut self) -> BoxFuture<'_, BTreeMap<String, u64>> {
        let image = self.0.lock().unwrap().clone();
        Box::pin(async move { image })
    }

    fn restore(&mut self, image: BTreeMap<String, u64>) -> BoxFuture<'_, ()> {
        *self.0.lock().unwrap() = image;
        Box::pin(async {})
    }
}

struct Node {
    name: String,
    store: Store,
    actor: ActorRef<ReplicaMsg>,
    handle: ReplicaHandle,
    /// Each group's map on this node.
    maps: BTreeMap<GroupId, Map>,
}

async fn start(name: &str, store: Store) -> ActorRef<ReplicaMsg> {
    let args = ReplicaArgs {
        name: name.to_string(),
        role: Role::Disk,
        store,
        applier: Arc::new(NoMetadata),
        has_seeds: false,
        snapshot_every: SNAPSHOT_EVERY,
    };
    Actor::spawn(Some(replica_name(name)), Replica, args)
        .await
        .expect("replica starts")
        .0
}

async fn nodes(prefix: &str, dirs: &[tempfile::TempDir]) -> Vec<Node> {
    let mut out = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let name = format!("{prefix}{i}");
        let store = Store::open(dir.path().join("w.redb")).unwrap();
        let actor = start(&name, store.clone()).await;
        out.push(Node {
            handle: ReplicaHandle { node: name.clone() },
            name,
            store,
            actor,
            maps: BTreeMap::new(),
        });
    }
    out
}

fn names(nodes: &[Node]) -> Vec<String> {
    nodes.iter().map(|n| n.name.clone()).collect()
}

async fn open(node: &mut Node, group: GroupId, members: &[String], snapshot_every: u64) {
    let map = Map::default();
    let spec = GroupSpec {
        snapshot_every,
        ..GroupSpec::new(group, format!("test group {group}"), members.to_vec())
    };
    node.handle
        .open(spec, Kv(map.clone()))
        .await
        .expect("group opens");
    node.maps.insert(group, map);
}

/// Proposes `key = value` to `group` through `node`, in a task. A proposal not
/// confirmed in time (an election that ran long on a loaded machine: the test suite
/// runs beside other tests) is made again, for up to a minute; a put is idempotent.
fn put(tasks: &mut JoinSet<Result<(), BrokerError>>, node: &Node, group: GroupId, key: String) {
    let handle = node.handle.clone();
    let value = group * 1000 + key.len() as u64;
    tasks.spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match handle
                .propose_to(group, &KvCommand::Put(key.clone(), value))
                .await
            {
                Err(e) if Instant::now() < deadline && e.text().contains("not confirmed") => {}
                other => return other.map(|_| ()),
            }
        }
    });
}

/// Nodes on `dirs`, all members of `group` (no snapshots), with `puts` keys written
/// round the nodes and applied on each; with the members' names.
async fn one_group_written(
    prefix: &str,
    dirs: &[tempfile::TempDir],
    group: GroupId,
    puts: usize,
) -> (Vec<Node>, Vec<String>) {
    let mut nodes = nodes(prefix, dirs).await;
    let members = names(&nodes);
    for n in nodes.iter_mut() {
        open(n, group, &members, 10_000).await;
    }
    let mut tasks = JoinSet::new();
    for i in 0..puts {
        put(&mut tasks, &nodes[i % 3], group, format!("k{i}"));
    }
    all_ok(tasks).await;
    let all: Vec<&Node> = nodes.iter().collect();
    converged(&all, [group].into_iter(), puts).await;
    (nodes, members)
}

async fn all_ok(mut tasks: JoinSet<Result<(), BrokerError>>) {
    while let Some(result) = tasks.join_next().await {
        result.unwrap().expect("proposal applied");
    }
}

/// Waits (bounded) until every node's map of every group equals the first node's,
/// and the first node's holds `keys` keys per group.
async fn converged(nodes: &[&Node], groups: impl Iterator<Item = GroupId> + Clone, keys: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut behind = Vec::new();
        for g in groups.clone() {
            let first = nodes[0].maps[&g].lock().unwrap().clone();
            if first.len() != keys {
                behind.push(format!(
                    "{} holds {} keys of group {g}: {:?}",
                    nodes[0].name,
                    first.len(),
                    first.keys().collect::<Vec<_>>()
                ));
            }
            for n in &nodes[1..] {
                if *n.maps[&g].lock().unwrap() != first {
                    behind.push(format!("{} differs in group {g}", n.name));
                }
            }
        }
        if behind.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "not converged: {behind:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops `node`'s replica (if it runs), starts it again from its store and opens its
/// groups with empty machines.
async fn restart(node: Node, members: &[String]) -> Node {
    // (It may have stopped already.)
    let _ = node.actor.stop_and_wait(None, None).await;
    let actor = start(&node.name, node.store.clone()).await;
    let groups: Vec<GroupId> = node.maps.keys().copied().collect();
    let mut back = Node {
        actor,
        maps: BTreeMap::new(),
        ..node
    };
    for g in groups {
        open(&mut back, g, members, 8).await;
    }
    back
}

/// Waits (bounded) until `count` groups are quiet on every node.
async fn all_quiet(nodes: &[Node], count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut quiet = Vec::new();
        for n in nodes {
            quiet.push(n.handle.stats().await.unwrap().quiet);
        }
        if quiet.iter().all(|q| *q == count) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "quiet groups per node: {quiet:?} of {count}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn total_stats(nodes: &[Node]) -> (u64, u64) {
    let mut sum = (0, 0);
    for n in nodes {
        let s = n.handle.stats().await.unwrap();
        sum.0 += s.messages;
        sum.1 += s.casts;
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_groups_replicate_through_one_replica_per_node_and_go_quiet_when_settled() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = nodes("many-", &dirs).await;
    let members = names(&nodes);
    const GROUPS: u64 = 40;
    for g in 1..=GROUPS {
        for n in nodes.iter_mut() {
            open(n, g, &members, SNAPSHOT_EVERY).await;
        }
    }
    assert_eq!(
        nodes[0].handle.stats().await.unwrap().groups,
        GROUPS as usize + 1
    );
    // Five keys per group, each through another node, all at once (many go through
    // followers, and some arrive before the group has elected its first leader).
    let mut tasks = JoinSet::new();
    for g in 1..=GROUPS {
        for i in 0..5 {
            put(&mut tasks, &nodes[(g as usize + i) % 3], g, format!("k{i}"));
        }
    }
    all_ok(tasks).await;
    let all: Vec<&Node> = nodes.iter().collect();
    converged(&all, 1..=GROUPS, 5).await;
    for g in 1..=GROUPS {
        let view = nodes[1].handle.view(g).await.unwrap().expect("runs there");
        assert_eq!(view.members.len(), 3);
        assert!(view.log.applied >= 5, "{view:?}");
    }
    assert!(nodes[0].handle.view(GROUPS + 1).await.unwrap().is_none());
    // Settled, every group goes quiet on every node: no ticks, no heartbeats.
    let (messages, casts) = total_stats(&nodes).await;
    eprintln!("{messages} raft messages in {casts} casts so far");
    all_quiet(&nodes, GROUPS as usize).await;
    let before = total_stats(&nodes).await;
    let ticks = nodes[0].handle.stats().await.unwrap().ticks;
    while nodes[0].handle.stats().await.unwrap().ticks < ticks + 30 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        total_stats(&nodes).await.0,
        before.0,
        "quiet groups sent raft messages over 30 ticks"
    );
    // A change to a quiet group through a follower wakes it, and it settles again.
    let leader = nodes[0]
        .handle
        .view(7)
        .await
        .unwrap()
        .unwrap()
        .leader
        .unwrap();
    let follower = nodes.iter().find(|n| n.name != leader).unwrap();
    let mut tasks = JoinSet::new();
    put(&mut tasks, follower, 7, "k-late".into());
    all_ok(tasks).await;
    converged(&all, 7..=7, 6).await;
    all_quiet(&nodes, GROUPS as usize).await;
    for n in &nodes {
        n.actor.stop(None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_fail_over_and_a_restarted_node_rebuilds_its_machines_from_log_and_snapshot() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = nodes("restart-", &dirs).await;
    let members = names(&nodes);
    const GROUPS: u64 = 12;
    // Snapshots every 8 entries: a restart reads a snapshot and the tail after it.
    for g in 1..=GROUPS {
        for n in nodes.iter_mut() {
            open(n, g, &members, 8).await;
        }
    }
    let mut tasks = JoinSet::new();
    for g in 1..=GROUPS {
        for i in 0..20 {
            put(&mut tasks, &nodes[i % 3], g, format!("k{i}"));
        }
    }
    all_ok(tasks).await;
    let all: Vec<&Node> = nodes.iter().collect();
    converged(&all, 1..=GROUPS, 20).await;
    let view = nodes[2].handle.view(1).await.unwrap().unwrap();
    assert!(view.log.snapshot >= 8, "a snapshot was taken: {view:?}");

    // Node 1 starts again from its store: each group's machine is rebuilt from the
    // latest snapshot and the entries after it.
    let node = restart(nodes.remove(1), &members).await;
    nodes.push(node);
    let all: Vec<&Node> = nodes.iter().collect();
    converged(&all, 1..=GROUPS, 20).await;

    // It stops again: the groups it led elect another leader and changes go on
    // through the other two; back, it catches up with what it missed (a snapshot
    // from the leader, which kept a tail of one entry).
    let stopped = nodes.pop().unwrap();
    stopped
        .actor
        .stop_and_wait(None, None)
        .await
        .expect("stops");
    let mut tasks = JoinSet::new();
    for g in 1..=GROUPS {
        for i in 20..30 {
            put(&mut tasks, &nodes[i % 2], g, format!("k{i}"));
        }
    }
    all_ok(tasks).await;
    let node = restart(stopped, &members).await;
    nodes.push(node);
    let all: Vec<&Node> = nodes.iter().collect();
    converged(&all, 1..=GROUPS, 30).await;

    // A group closed for good leaves no log behind.
    for n in &nodes {
        n.handle.close(GROUPS, true).await.expect("closes");
        assert!(n.handle.view(GROUPS).await.unwrap().is_none());
        let log = crate::raft_log::load(&n.store, GROUPS, 0).unwrap();
        assert!(log.tail.last == 0 && log.snapshot.is_none());
        assert!(log.record.conf_state.is_empty());
    }
    let refused = nodes[0]
        .handle
        .propose_to(GROUPS, &KvCommand::Put("x".into(), 1))
        .await
        .expect_err("a closed group takes no proposals");
    assert!(
        refused.text().contains("does not run"),
        "{}",
        refused.text()
    );
    let refused = nodes[0]
        .handle
        .open(
            GroupSpec::new(7_000, "elsewhere", vec!["n9".into()]),
            Kv(Map::default()),
        )
        .await
        .expect_err("not a member");
    assert!(
        refused.text().contains("not among its replicas"),
        "{}",
        refused.text()
    );

    // Opened again at once under the same id, while the last run's writes and applies
    // are still on their way: the new run takes none of their reports.
    for round in 0..3 {
        for n in nodes.iter_mut() {
            open(n, GROUPS, &members, 8).await;
        }
        let mut tasks = JoinSet::new();
        for i in 0..20 {
            put(&mut tasks, &nodes[i % 3], GROUPS, format!("r{round}-{i}"));
        }
        if round < 2 {
            for n in &nodes {
                n.handle.close(GROUPS, true).await.expect("closes");
            }
            // (Proposals cut short by the close fail; none is applied twice.)
            while tasks.join_next().await.is_some() {}
        } else {
            all_ok(tasks).await;
        }
    }
    let all: Vec<&Node> = nodes.iter().collect();
    converged(&all, [GROUPS].into_iter(), 20).await;
    for n in &nodes {
        n.actor.stop(None);
    }
}

/// A forwarded proposal of group `group` as node `from` sends it to `to`'s replica.
fn forwarded(group: GroupId, from: &str, to: &str, key: &str) -> ReplicaMsg {
    let command = super::entry::command(&KvCommand::Put(key.into(), 1)).unwrap();
    let mut entry = raft::prelude::Entry::default();
    entry.data = super::entry::encode(from, rand::random(), &command).into();
    let mut m = raft::prelude::Message::default();
    m.set_msg_type(raft::prelude::MessageType::MsgPropose);
    m.from = raft_id(from);
    m.to = raft_id(to);
    m.entries = vec![entry].into();
    let bytes = protobuf::Message::write_to_bytes(&m).unwrap();
    ReplicaMsg::Raft(
        RaftBatch {
            sender: from.to_string(),
            messages: vec![(group, bytes)],
            quiet: Vec::new(),
        }
        .into(),
    )
}

/// A message for a group not opened here yet is kept and stepped when it opens; one
/// for a group just closed here is from the run that closed and is dropped: a
/// proposal a follower forwarded before the close never lands in the next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_for_a_group_just_closed_never_reaches_its_next_run() {
    let dirs: Vec<_> = (0..1).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = nodes("closed-", &dirs).await;
    let members = names(&nodes);
    let node = &mut nodes[0];
    // Group 4 is not open yet: what reaches it is kept for its opening.
    node.actor
        .cast(forwarded(4, "closed-9", &node.name, "early"))
        .unwrap();
    // Group 5 runs, closes (its log removed), hears a late forwarded proposal of the
    // run that closed, and opens again.
    open(node, 5, &members, 8).await;
    let mut tasks = JoinSet::new();
    put(&mut tasks, node, 5, "before".into());
    all_ok(tasks).await;
    node.handle.close(5, true).await.expect("closes");
    node.actor
        .cast(forwarded(5, "closed-9", &node.name, "late"))
        .unwrap();
    open(node, 4, &members, 8).await;
    open(node, 5, &members, 8).await;
    let mut tasks = JoinSet::new();
    put(&mut tasks, node, 4, "after".into());
    put(&mut tasks, node, 5, "after".into());
    all_ok(tasks).await;
    let keys =
        |g: GroupId| -> Vec<String> { node.maps[&g].lock().unwrap().keys().cloned().collect() };
    assert_eq!(keys(4), ["after", "early"]);
    assert_eq!(keys(5), ["after"]);
    node.actor.stop(None);
}

/// Asks every node to take one step towards `group`'s members being `desired`, until
/// the one that leads it finds them so (bounded).
async fn reconciled(nodes: &[&Node], group: GroupId, desired: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = Vec::new();
    loop {
        last.clear();
        for n in nodes {
            match n.handle.reconcile(group, desired.to_vec()).await {
                Ok(Reconciled::Settled) => return,
                other => last.push(format!("{}: {other:?}", n.name)),
            }
        }
        assert!(
            Instant::now() < deadline,
            "group {group} did not reach {desired:?}: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_change_one_at_a_time_and_a_new_member_catches_up_by_log_or_snapshot() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = nodes("members-", &dirs).await;
    let all_names = names(&nodes);
    let founders = all_names[..3].to_vec();
    // Group 1 snapshots every 8 entries (the new member gets a snapshot); group 2
    // never within this test (it replays the whole log).
    let every = |g: GroupId| if g == 1 { 8 } else { 10_000 };
    for g in [1, 2] {
        for n in nodes[..3].iter_mut() {
            open(n, g, &founders, every(g)).await;
        }
    }
    let mut tasks = JoinSet::new();
    for g in [1, 2] {
        for i in 0..20 {
            put(&mut tasks, &nodes[i % 3], g, format!("k{i}"));
        }
    }
    all_ok(tasks).await;

    // Node 3 joins both groups: it opens them from their first members, without a
    // vote, and the leader adds it (a learner, then a voter once caught up).
    for g in [1, 2] {
        let map = Map::default();
        let spec = GroupSpec {
            snapshot_every: every(g),
            joining: true,
            ..GroupSpec::new(g, format!("test group {g}"), founders.clone())
        };
        nodes[3]
            .handle
            .open(spec, Kv(map.clone()))
            .await
            .expect("joins");
        nodes[3].maps.insert(g, map);
        let all: Vec<&Node> = nodes.iter().collect();
        reconciled(&all, g, &all_names).await;
    }
    let all: Vec<&Node> = nodes.iter().collect();
    converged(&all, [1, 2].into_iter(), 20).await;
    for g in [1, 2] {
        let leader = nodes[0]
            .handle
            .view(g)
            .await
            .unwrap()
            .unwrap()
            .leader
            .unwrap();
        let at = nodes.iter().position(|n| n.name == leader).unwrap();
        let view = nodes[at].handle.view(g).await.unwrap().unwrap();
        let mut members = view.members.clone();
        members.sort();
        assert_eq!(members, all_names, "group {g}'s members");
        assert_eq!(view.progress.len(), 4, "{view:?}");
        assert!(view.progress.iter().all(|p| p.voter), "{view:?}");
    }

    // The leader of group 2 is left out: it hands over first, then the new leader
    // removes it; changes go on through the other three.
    let leader = nodes[0]
        .handle
        .view(2)
        .await
        .unwrap()
        .unwrap()
        .leader
        .unwrap();
    let rest: Vec<String> = all_names
        .iter()
        .filter(|n| **n != leader)
        .cloned()
        .collect();
    reconciled(&all, 2, &rest).await;
    let staying: Vec<&Node> = nodes.iter().filter(|n| n.name != leader).collect();
    let view = staying[0].handle.view(2).await.unwrap().unwrap();
    let mut members = view.members.clone();
    members.sort();
    assert_eq!(members, rest);
    assert_ne!(view.leader.as_deref(), Some(leader.as_str()));
    let mut tasks = JoinSet::new();
    for i in 20..30 {
        put(&mut tasks, staying[i % 3], 2, format!("k{i}"));
    }
    all_ok(tasks).await;
    converged(&staying, [2].into_iter(), 30).await;
    // Refusals: no member at all, and the metadata group.
    let none = nodes[0].handle.reconcile(2, Vec::new()).await;
    assert!(none.is_err(), "{none:?}");
    let meta = nodes[0].handle.reconcile(0, all_names.clone()).await;
    assert!(meta.is_err(), "{meta:?}");
    for n in &nodes {
        n.actor.stop(None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_lost_its_log_takes_it_again_without_a_panic() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut nodes, members) = one_group_written("wiped-", &dirs, 1, 20).await;
    // A follower's log goes (its replica removed and added again before the removal
    // took effect) while the group still counts it with everything: the leader's
    // heartbeats say so, and it takes the log again.
    let leader = nodes[0]
        .handle
        .view(1)
        .await
        .unwrap()
        .unwrap()
        .leader
        .unwrap();
    let at = nodes.iter().position(|n| n.name != leader).unwrap();
    nodes[at].handle.close(1, true).await.expect("closes");
    let map = Map::default();
    let spec = GroupSpec {
        snapshot_every: 10_000,
        joining: true,
        ..GroupSpec::new(1, "test group 1", members.clone())
    };
    nodes[at]
        .handle
        .open(spec, Kv(map.clone()))
        .await
        .expect("opens again");
    nodes[at].maps.insert(1, map);
    let mut tasks = JoinSet::new();
    for i in 20..30 {
        put(&mut tasks, &nodes[i % 3], 1, format!("k{i}"));
    }
    all_ok(tasks).await;
    let all: Vec<&Node> = nodes.iter().collect();
    converged(&all, [1].into_iter(), 30).await;
    assert!(nodes[at].actor.get_status() == ractor::ActorStatus::Running);
    for n in &nodes {
        n.actor.stop(None);
    }
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum KeptCommand {
    Put(String),
    Take(String),
}

/// Key -> the index of the entry that put it.
type KeptMap = Arc<Mutex<BTreeMap<String, u64>>>;

/// A machine whose state needs the entries that put its keys (as a mirrored queue
/// needs the entries that hold its messages' bodies).
struct Kept(KeptMap);

impl Machine for Kept {
    type Command = KeptCommand;
    type Image = BTreeMap<String, u64>;

    fn apply(&mut self, index: u64, command: KeptCommand) -> BoxFuture<'_, Answer> {
        let mut map = self.0.lock().unwrap();
        match command {
            KeptCommand::Put(key) => map.insert(key, index),
            KeptCommand::Take(key) => map.remove(&key),
        };
        Box::pin(async { Ok(Box::new(()) as Box<dyn Any + Send>) })
    }

    fn needed_from(&self) -> Option<u64> {
        self.0.lock().unwrap().values().min().copied()
    }

    fn image(&mut self) -> BoxFuture<'_, BTreeMap<String, u64>> {
        let image = self.0.lock().unwrap().clone();
        Box::pin(async move { image })
    }

    fn restore(&mut self, image: BTreeMap<String, u64>) -> BoxFuture<'_, ()> {
        *self.0.lock().unwrap() = image;
        Box::pin(async {})
    }
}

/// Proposes `command` to `group` through `node`, again while it is not confirmed.
async fn keep(node: &Node, group: GroupId, command: KeptCommand) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match node.handle.propose_to(group, &command).await {
            Err(e) if Instant::now() < deadline && e.text().contains("not confirmed") => {}
            other => {
                other.expect("applied");
                return;
            }
        }
    }
}

/// Every key of `map` reads back from `reader` as the command that put it.
fn reads_back(reader: &LogReader, map: &KeptMap, who: &str) {
    let map = map.lock().unwrap().clone();
    let indexes: Vec<u64> = map.values().copied().collect();
    let (read, failed) = reader.commands::<KeptCommand>(&indexes);
    assert!(failed.is_empty(), "{who}: {failed:?}");
    let by_index: BTreeMap<u64, KeptCommand> = read.into_iter().collect();
    for (key, index) in map {
        assert_eq!(
            by_index.get(&index),
            Some(&KeptCommand::Put(key.clone())),
            "{who}: entry {index} of key {key}"
        );
    }
}

/// A machine that needs the entries behind its snapshot keeps them through
/// compactions; a member that joins after they were compacted gets them with the
/// snapshot and stores them, and reads them back after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_a_snapshot_needs_are_kept_and_travel_with_it() {
    const G: GroupId = 5;
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = nodes("kept-", &dirs).await;
    let all_names = names(&nodes);
    let founders = all_names[..3].to_vec();
    let spec = |joining| GroupSpec {
        snapshot_every: 8,
        joining,
        ..GroupSpec::new(G, "kept group", founders.clone())
    };
    let mut maps = Vec::new();
    let mut readers = Vec::new();
    for n in &nodes[..3] {
        let map = KeptMap::default();
        readers.push(n.handle.open(spec(false), Kept(map.clone())).await.unwrap());
        maps.push(map);
    }
    // Ten keys put and taken (their entries are not needed), five kept, then many
    // more put and taken: snapshots every 8 entries, each needing the five's.
    for i in 0..10 {
        keep(&nodes[i % 3], G, KeptCommand::Put(format!("gone{i}"))).await;
        keep(&nodes[i % 3], G, KeptCommand::Take(format!("gone{i}"))).await;
    }
    for i in 0..5 {
        keep(&nodes[i % 3], G, KeptCommand::Put(format!("kept{i}"))).await;
    }
    for i in 0..40 {
        keep(&nodes[i % 3], G, KeptCommand::Put(format!("t{i}"))).await;
        keep(&nodes[i % 3], G, KeptCommand::Take(format!("t{i}"))).await;
    }
    let view = nodes[0].handle.view(G).await.unwrap().unwrap();
    let needed = *maps[0].lock().unwrap().values().min().unwrap();
    assert!(
        needed > 20,
        "the five come after the first twenty entries: {needed}"
    );
    for (i, n) in nodes[..3].iter().enumerate() {
        let log = n.handle.view(G).await.unwrap().unwrap().log;
        assert!(log.snapshot > needed, "{}: {log:?}", n.name);
        assert!(
            log.first <= needed,
            "{} compacted what is needed: {log:?}",
            n.name
        );
        assert!(log.first > 1, "{} compacted nothing: {log:?}", n.name);
        reads_back(&readers[i], &maps[i], &n.name);
    }
    drop(view);

    // A fourth member joins: the entries before the five are gone everywhere, so
    // it takes a snapshot, and the five's entries with it.
    let joined = KeptMap::default();
    let reader = nodes[3]
        .handle
        .open(spec(true), Kept(joined.clone()))
        .await
        .unwrap();
    let all: Vec<&Node> = nodes.iter().collect();
    reconciled(&all, G, &all_names).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while *joined.lock().unwrap() != *maps[0].lock().unwrap() {
        assert!(Instant::now() < deadline, "the new member never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = nodes[3].handle.view(G).await.unwrap().unwrap().log;
    assert!(log.snapshot > 0, "it took a snapshot: {log:?}");
    reads_back(&reader, &joined, "the new member");

    // Restarted, it reads its snapshot and the entries from its store again.
    let node = nodes.pop().unwrap();
    let _ = node.actor.stop_and_wait(None, None).await;
    let actor = start(&node.name, node.store.clone()).await;
    let again = KeptMap::default();
    let reader = node
        .handle
        .open(spec(true), Kept(again.clone()))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while *again.lock().unwrap() != *maps[0].lock().unwrap() {
        assert!(
            Instant::now() < deadline,
            "the restarted member never caught up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reads_back(&reader, &again, "the restarted member");
    actor.stop(None);
    for n in &nodes {
        n.actor.stop(None);
    }
}

/// Who leads `group`, as `node` knows it.
async fn leader_of(node: &Node, group: GroupId) -> Option<String> {
    node.handle
        .view(group)
        .await
        .ok()
        .flatten()
        .and_then(|v| v.leader)
}

/// The leader hands its leadership to a member named (where a mirrored queue is
/// served): that member leads, and the others answer that they do not lead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leadership_goes_to_the_member_asked_for() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (nodes, members) = one_group_written("handover-", &dirs, 7, 10).await;
    let before = leader_of(&nodes[0], 7).await.expect("a leader");
    let to = members.iter().find(|m| **m != before).unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut answers = Vec::new();
        for n in &nodes {
            answers.push(n.handle.hand_over(7, &to).await.expect("an answer"));
        }
        // The member asked for leads: it has nothing to do, the others do not lead.
        let done = nodes.iter().zip(&answers).all(|(n, a)| {
            if n.name == to {
                *a == Reconciled::Settled
            } else {
                *a == Reconciled::NotLeader
            }
        });
        if done && leader_of(&nodes[0], 7).await.as_deref() == Some(to.as_str()) {
            break;
        }
        assert!(Instant::now() < deadline, "{to} never led: {answers:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Still a working group.
    let mut tasks = JoinSet::new();
    put(&mut tasks, &nodes[1], 7, "after".into());
    all_ok(tasks).await;
    for n in nodes {
        n.actor.stop(None);
    }
}
