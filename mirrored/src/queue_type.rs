//! [`Mirrored`]: the mirrored (quorum) queue type.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use warren_actors::classic::machine::QueueConfig;
use warren_actors::classic::Classic;
use warren_actors::error::BrokerError;
use warren_actors::queue::{HostEnv, Hosted, QueueDef, QueueKind, QueueRef, QueueType};
use warren_actors::BoxFuture;
use warren_cluster::membership::watch_down;
use warren_cluster::raft_group::GroupId;
use warren_cluster::raft_log::raft_id;
use warren_cluster::replica::{GroupSpec, ReplicaHandle, SNAPSHOT_EVERY};

use crate::handle::{MirroredQueue, Place, Route};
use crate::log::{Deleted, Group, Members, RaftLog};
use crate::machine::{Mirrors, Serving};
use crate::member;

/// How often a replica that left its queue looks whether its group still counts it,
/// and how long it keeps running for it at most.
const LEAVE_CHECK: Duration = Duration::from_millis(250);
const LEAVE_WITHIN: Duration = Duration::from_secs(600);

/// The declare argument that sets the number of replicas (RabbitMQ's name).
pub const GROUP_SIZE_ARG: &str = "x-quorum-initial-group-size";

/// Replicas of a queue declared without [`GROUP_SIZE_ARG`] (fewer when the cluster
/// has fewer nodes).
pub const DEFAULT_GROUP_SIZE: usize = 3;

/// The declare argument that bounds how often a message may be returned before it is
/// dead-lettered (or dropped); `-1` for no bound.
pub const DELIVERY_LIMIT_ARG: &str = "x-delivery-limit";

/// Returns a message of a queue declared without [`DELIVERY_LIMIT_ARG`] may have (as
/// RabbitMQ 4's quorum queues).
pub const DEFAULT_DELIVERY_LIMIT: u64 = 20;

/// `at-most-once` or `at-least-once` (RabbitMQ's); dead-lettering is at least once
/// either way.
pub const DEAD_LETTER_STRATEGY_ARG: &str = "x-dead-letter-strategy";

/// The Raft group of queue `def` of `vhost`: one per declaration (a queue declared
/// again under the same name is another group).
pub fn group_of(vhost: &str, def: &QueueDef) -> GroupId {
    raft_id(&format!("{vhost}/{}@{}#{}", def.name, def.node, def.id))
}

/// The mirrored queue type (`x-queue-type: quorum` or `mirrored`).
#[derive(Clone)]
pub struct Mirrored {
    replica: ReplicaHandle,
    mirrors: Mirrors,
    /// The members of each queue run here, by group.
    members: Arc<Mutex<HashMap<GroupId, Members>>>,
    /// Where each group run here is served, and its notice of changes, shared by
    /// every `Group` made for it: a member added back while its group still runs
    /// here sees what that run's machine applies.
    served: Served,
    /// The tasks of groups this node left, which close them here once their Raft
    /// members no longer count it (`left`): stopped if the node is added back first.
    leaving: Arc<Mutex<HashMap<GroupId, tokio::task::AbortHandle>>>,
    /// Whether each queue run here was deleted, by group, shared by every `Group`
    /// made for it: set (and forgotten here) as it is deleted, before its group is
    /// closed, so that a leader's `lead` still under way never opens it again.
    deleted: Arc<Mutex<HashMap<GroupId, Deleted>>>,
    /// Entries applied between two snapshots of a queue's group, at least.
    snapshot_every: u64,
}

impl Mirrored {
    /// The type on node `node`.
    pub fn new(node: &str) -> Mirrored {
        Mirrored {
            replica: ReplicaHandle {
                node: node.to_string(),
            },
            mirrors: Mirrors::default(),
            members: Default::default(),
            served: Default::default(),
            leaving: Default::default(),
            deleted: Default::default(),
            snapshot_every: SNAPSHOT_EVERY,
        }
    }

    /// Its queues' groups take a snapshot every `every` entries at least.
    pub fn snapshot_every(mut self, every: u64) -> Mirrored {
        self.snapshot_every = every;
        self
    }

    fn members(&self) -> MutexGuard<'_, HashMap<GroupId, Members>> {
        lock(&self.members)
    }

    fn leaving(&self) -> MutexGuard<'_, HashMap<GroupId, tokio::task::AbortHandle>> {
        lock(&self.leaving)
    }

    /// The watched members of queue `def` (group `id`), as `def` has them.
    fn watched_members(&self, id: GroupId, def: &QueueDef) -> Members {
        let now = Arc::new(members(def));
        let members = self
            .members()
            .entry(id)
            .or_insert_with(|| Arc::new(watch::Sender::new(now.clone())))
            .clone();
        members.send_replace(now);
        members
    }

    /// The machine's configuration of a declaration: a classic queue's, every
    /// message written to the log.
    pub(crate) fn config(def: &QueueDef, vhost: &str) -> Result<QueueConfig, BrokerError> {
        let refuse = |property: &str| {
            BrokerError::precondition_failed(format!(
                "invalid property '{property}' for queue '{}' in vhost '{vhost}': a {} queue is durable, shared and kept when unused",
                def.name,
                QueueKind::Quorum
            ))
        };
        if !def.durable {
            return Err(refuse("non-durable"));
        }
        if def.owner.is_some() {
            return Err(refuse("exclusive-owner"));
        }
        if def.auto_delete {
            return Err(refuse("auto-delete"));
        }
        let invalid = |arg: &str, why: &str| {
            BrokerError::precondition_failed(format!(
                "invalid arg '{arg}' for queue '{}' in vhost '{vhost}': {why}",
                def.name
            ))
        };
        group_size(def).map_err(|why| invalid(GROUP_SIZE_ARG, why))?;
        // Every dead letter leaves only once its targets hold it (at least once), so
        // both strategies are accepted and behave alike.
        match def.arguments.get(DEAD_LETTER_STRATEGY_ARG) {
            None => {}
            Some(v) if matches!(v.as_str(), Some("at-most-once" | "at-least-once")) => {}
            Some(_) => {
                return Err(invalid(
                    DEAD_LETTER_STRATEGY_ARG,
                    "it must be 'at-most-once' or 'at-least-once'",
                ))
            }
        }
        // RabbitMQ's quorum queues: 20 returns by default, -1 for no limit.
        let limit = def.arguments.get(DELIVERY_LIMIT_ARG);
        let unlimited = limit.and_then(|v| v.as_i64()) == Some(-1);
        let mut config = if unlimited {
            let mut without = def.clone();
            without.arguments.remove(DELIVERY_LIMIT_ARG);
            Classic::config(&without, vhost)?
        } else {
            Classic::config(def, vhost)?
        };
        if limit.is_none() {
            config.delivery_limit = Some(DEFAULT_DELIVERY_LIMIT);
        }
        config.write_all = true;
        config.delivery_count_header = true;
        Ok(config)
    }

    pub(crate) fn group(&self, def: &QueueDef, vhost: &str) -> Result<Group, BrokerError> {
        let config = Mirrored::config(def, vhost)?;
        let label = format!("queue '{}' in vhost '{vhost}'", def.name);
        let id = group_of(vhost, def);
        let members = self.watched_members(id, def);
        let founders = founders(def);
        // Once its members changed, a replica opened with an empty log joins (a
        // founder's log may have gone with an earlier removal).
        let joining = !founders.contains(&self.replica.node) || !def.founders.is_empty();
        let (serving, led) = lock(&self.served)
            .entry(id)
            .or_insert_with(|| (Serving::default(), Default::default()))
            .clone();
        let deleted = lock(&self.deleted).entry(id).or_default().clone();
        Ok(Group {
            replica: self.replica.clone(),
            spec: GroupSpec {
                joining,
                snapshot_every: self.snapshot_every,
                ..GroupSpec::new(id, label, founders)
            },
            config,
            mirrors: self.mirrors.clone(),
            serving,
            led,
            members,
            deleted,
        })
    }

    /// The nodes a new queue may have replicas on: the cluster's members not down,
    /// this node first.
    async fn candidates(&self) -> Vec<String> {
        warren_cluster::placement::nodes_up(&self.replica.node).await
    }
}

/// The nodes that hold a replica of `def` (its home alone for a definition from
/// before replicas were recorded).
fn members(def: &QueueDef) -> Vec<String> {
    if def.replicas.is_empty() {
        vec![def.node.clone()]
    } else {
        def.replicas.clone()
    }
}

/// Stops running group `group` here (`remove`: its log goes too) and forgets the copy
/// of the run it stopped: a run opened meanwhile (the queue's replica added here
/// again) keeps the copy it registered.
async fn close(
    replica: &ReplicaHandle,
    mirrors: &Mirrors,
    served: &Served,
    group: GroupId,
    remove: bool,
) -> Result<(), BrokerError> {
    let copy = mirrors.get(group);
    let closed = replica.close(group, remove).await;
    if let Some(copy) = copy {
        if mirrors.remove_if(group, &copy) {
            lock(served).remove(&group);
        }
    }
    closed
}

/// Forgets a leaving task's entry in `Mirrored::leaving` when the task ends (closed
/// the group, or found it gone), unless a later task took the entry.
struct ForgetLeaving {
    tasks: Arc<Mutex<HashMap<GroupId, tokio::task::AbortHandle>>>,
    group: GroupId,
}

impl Drop for ForgetLeaving {
    fn drop(&mut self) {
        let Some(me) = tokio::task::try_id() else {
            return;
        };
        let mut tasks = lock(&self.tasks);
        if tasks.get(&self.group).is_some_and(|t| t.id() == me) {
            tasks.remove(&self.group);
        }
    }
}

/// Where each group run here is served, and the notice of its changes (see
/// `Mirrored::served`).
type Served = Arc<Mutex<HashMap<GroupId, (Serving, Arc<tokio::sync::Notify>)>>>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The first members of `def`'s group (see [`QueueDef::founders`]).
fn founders(def: &QueueDef) -> Vec<String> {
    if def.founders().is_empty() {
        vec![def.node.clone()]
    } else {
        def.founders().to_vec()
    }
}

/// `x-quorum-initial-group-size`, if given: a positive integer, or why not.
fn group_size(def: &QueueDef) -> Result<Option<usize>, &'static str> {
    let Some(value) = def.arguments.get(GROUP_SIZE_ARG) else {
        return Ok(None);
    };
    match value.as_i64() {
        Some(n) if n >= 1 => Ok(Some(n as usize)),
        _ => Err("it must be a positive integer"),
    }
}

impl QueueType for Mirrored {
    fn kind(&self) -> QueueKind {
        QueueKind::Quorum
    }

    fn validate(&self, def: &QueueDef, vhost: &str) -> Result<(), BrokerError> {
        Mirrored::config(def, vhost).map(drop)
    }

    fn check_equivalent(
        &self,
        current: &QueueDef,
        requested: &QueueDef,
        vhost: &str,
    ) -> Result<(), BrokerError> {
        Mirrored::config(current, vhost)?
            .check_equivalent(&Mirrored::config(requested, vhost)?)
            .map_err(BrokerError::from)
    }

    fn place<'a>(&'a self, def: &'a mut QueueDef) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            // (Validated before: a bad size was refused with 406.)
            let size = group_size(def).ok().flatten().unwrap_or(DEFAULT_GROUP_SIZE);
            let mut nodes = self.candidates().await;
            // Spread: the others in an order that depends on the queue's name.
            if nodes.len() > 2 {
                let turn = (raft_id(&def.name) as usize) % (nodes.len() - 1);
                nodes[1..].rotate_left(turn);
            }
            nodes.truncate(size.max(1));
            def.replicas = nodes;
            Ok(())
        })
    }

    fn runs_here(&self, def: &QueueDef, node: &str) -> bool {
        members(def).iter().any(|m| m == node)
    }

    /// On each node that holds a replica: the replica's actor (`mirror:/NAME`), which
    /// runs the queue's leader (`queue:/NAME`) while this node leads the group, and the
    /// handle that sends everything to wherever the queue is served.
    fn host(&self, def: &QueueDef, env: &HostEnv) -> Result<Hosted, BrokerError> {
        // Added back before the group it left was closed here: the group goes on
        // running here, and the node rejoins it as any new member does.
        if let Some(leaving) = self.leaving().remove(&group_of(&env.vhost, def)) {
            leaving.abort();
        }
        let group = self.group(def, &env.vhost)?;
        let log = RaftLog::new(group.clone());
        let leader = Classic::host_with(def, group.config.clone(), env, Some(Arc::new(log)));
        let queue = MirroredQueue {
            route: Arc::new(Route {
                def: def.clone(),
                name: def.name.as_str().into(),
                vhost: env.vhost.clone(),
                me: self.replica.node.clone(),
                place: Place::Member {
                    local: leader.queue,
                    serving: group.serving.clone(),
                    group: Box::new(group.clone()),
                },
                remote: env.remote.clone(),
                elsewhere: Default::default(),
                attached: Default::default(),
            }),
        };
        let name = if env.vhost == "/" {
            format!("mirror:/{}", def.name)
        } else {
            format!("mirror:{}/{}", env.vhost, def.name)
        };
        Ok(Hosted {
            queue: Arc::new(queue),
            child: member::child(name, group, leader.child),
        })
    }

    /// On a node that holds no replica: a handle that goes through a member that is
    /// up, and resumes this node's consumers through another when that one goes down.
    fn reach(&self, def: &QueueDef, env: &HostEnv) -> Option<QueueRef> {
        env.remote.as_ref()?;
        let members = self.watched_members(group_of(&env.vhost, def), def);
        let down = watch_down(&self.replica.node);
        Some(Arc::new(MirroredQueue {
            route: Arc::new(Route {
                def: def.clone(),
                name: def.name.as_str().into(),
                vhost: env.vhost.clone(),
                me: self.replica.node.clone(),
                place: Place::Outside { members, down },
                remote: env.remote.clone(),
                elsewhere: Default::default(),
                attached: Default::default(),
            }),
        }))
    }

    fn redefined(&self, def: &QueueDef, vhost: &str) {
        if let Some(members) = self.members().get(&group_of(vhost, def)) {
            members.send_replace(Arc::new(self::members(def)));
        }
    }

    /// The group keeps running here, a member that serves nothing, until its Raft
    /// members no longer count this node (handing the leadership over first while it
    /// leads): its log goes only then, so that a removal never leaves a voter without
    /// its log, nor a group short of a majority it still needs.
    fn left(&self, def: &QueueDef, vhost: &str) -> BoxFuture<'static, ()> {
        let group = group_of(vhost, def);
        let (replica, mirrors) = (self.replica.clone(), self.mirrors.clone());
        let served = self.served.clone();
        let (name, members) = (def.name.clone(), self::members(def));
        let tasks = self.leaving.clone();
        let leaving = tokio::spawn(async move {
            let _forget = ForgetLeaving { tasks, group };
            let me = replica.node.clone();
            let deadline = Instant::now() + LEAVE_WITHIN;
            loop {
                let view = match replica.view(group).await {
                    Ok(Some(view)) => view,
                    // Closed meanwhile (the queue was deleted).
                    _ => return,
                };
                if !view.members.contains(&me) {
                    break;
                }
                if Instant::now() >= deadline {
                    tracing::warn!(queue = %name, "the queue's group still counts this node after {LEAVE_WITHIN:?}: it stops running here and keeps its log");
                    let _ = close(&replica, &mirrors, &served, group, false).await;
                    return;
                }
                if view.leader.as_deref() == Some(me.as_str()) {
                    let _ = replica.reconcile(group, members.clone()).await;
                }
                tokio::time::sleep(LEAVE_CHECK).await;
            }
            if let Err(e) = close(&replica, &mirrors, &served, group, true).await {
                tracing::warn!(queue = %name, "the replica's log was not removed: {e}");
            }
        });
        if let Some(earlier) = self.leaving().insert(group, leaving.abort_handle()) {
            earlier.abort();
        }
        Box::pin(async {})
    }

    fn removed(&self, def: &QueueDef, vhost: &str) -> BoxFuture<'static, ()> {
        let group = group_of(vhost, def);
        // (Before the close below is sent: see `Group::open`.)
        if let Some(deleted) = lock(&self.deleted).remove(&group) {
            deleted.store(true, Ordering::Release);
        }
        self.members().remove(&group);
        lock(&self.served).remove(&group);
        if let Some(leaving) = self.leaving().remove(&group) {
            leaving.abort();
        }
        let (replica, mirrors) = (self.replica.clone(), self.mirrors.clone());
        let served = self.served.clone();
        let name = def.name.clone();
        Box::pin(async move {
            if let Err(e) = close(&replica, &mirrors, &served, group, true).await {
                tracing::warn!(queue = %name, "the replica's log was not removed: {e}");
            }
        })
    }
}
