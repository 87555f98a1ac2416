//! The membership actor: dials seeds and members, says hello, notices who is gone.
//!
//! ractor_cluster gives authenticated sessions and process groups, but it neither
//! reconnects, nor times out a silent peer, nor dials transitively more than once. This
//! actor adds those on top of the pure [`MemberTable`]:
//!
//! - every [`Timing::heartbeat`] it sends a [`Hello`] (its name, address, role and the
//!   members it knows) to every peer's membership actor, found in the
//!   [`MEMBERS_GROUP`] process group; a hello is the heartbeat;
//! - it dials the seeds and every known member that is not up, with backoff, so the
//!   mesh is full and heals after restarts;
//! - it turns silence into suspect then down, and closes a session whose peer went
//!   silent so that a redial starts afresh;
//! - a session that closes before it authenticated is logged as a cookie mismatch.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use ractor::pg::GroupChangeMessage;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster::{NodeServerMessage, RactorClusterMessage};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use crate::members::{Health, MemberAddress, MemberTable, Role, Timing, Transition};
use crate::node_server::SessionEvent;
use crate::protocol::LocalOnly;
use crate::wire::Wire;

/// The process group of every node's membership actor.
pub const MEMBERS_GROUP: &str = "warren.members";
/// The registry name of node `node`'s membership actor (`membership@NODE`: see
/// `gateway@NODE` in the node assembly for why it carries the node's name).
pub fn membership_name(node: &str) -> String {
    format!("membership@{node}")
}

/// A heartbeat: who I am and whom I know.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Hello {
    /// The sender's name, address and role.
    pub from: MemberAddress,
    /// Every member the sender knows, itself included: how a node learns of members
    /// it has not dialled yet.
    pub known: Vec<MemberAddress>,
    /// How long the sender has been running, in milliseconds.
    pub uptime_ms: u64,
}

/// A member as `warren cluster status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// The node's name.
    pub name: String,
    /// Its cluster address (`IP:PORT`).
    pub address: String,
    /// Disk or RAM node.
    pub role: Role,
    /// How it is doing, as this node sees it (this node is always up).
    pub health: Health,
    /// This is the node that answered.
    pub this_node: bool,
    /// How long it has been running, in milliseconds; 0 for a member that is down or
    /// not heard from yet.
    pub uptime_ms: u64,
}

/// Why a membership request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MembershipError {
    /// `forget` names a node this one does not know.
    #[error("no member '{name}' in this cluster (members: {members})")]
    NoSuchMember {
        /// The name given.
        name: String,
        /// The known members, comma-separated, for the message.
        members: String,
    },
    /// `forget` names a member that is up or suspect: only a down member is forgotten.
    #[error("node '{0}' is up: stop it first, or run `warren cluster leave` on it")]
    StillUp(String),
    /// `forget` names this node.
    #[error("a node cannot forget itself: run `warren cluster leave` on it instead")]
    Myself,
    /// The membership actor is not running (or stopped before it answered).
    #[error("the membership actor is not running")]
    Unavailable,
}

/// Node-internal requests and events.
pub enum Local {
    /// The heartbeat: update health, close silent members' sessions, redial, and say
    /// hello to every peer.
    Tick,
    /// A cluster session opened, authenticated or closed.
    Session(SessionEvent),
    /// `warren cluster status`: every member, this node first.
    Status(oneshot::Sender<Vec<MemberView>>),
    /// `warren cluster forget NAME`: remove a down member and tell the others.
    Forget(String, oneshot::Sender<Result<(), MembershipError>>),
    /// This node leaves: tell every member, then answer.
    Leave(oneshot::Sender<()>),
    /// A session a dial opened, to check on later (authenticated or refused?).
    Dialled {
        /// The address dialled.
        address: String,
    },
}

/// The names of the members held down.
pub type DownSet = std::sync::Arc<BTreeSet<String>>;

/// Each node's down set in this process, made on first use: whatever starts before the
/// node's membership actor (queues recovered at start) watches it already, and it
/// outlives a restart of that actor.
fn down_sender(node: &str) -> watch::Sender<DownSet> {
    static SENDERS: std::sync::OnceLock<std::sync::Mutex<HashMap<String, watch::Sender<DownSet>>>> =
        std::sync::OnceLock::new();
    SENDERS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(node.to_string())
        .or_insert_with(|| watch::Sender::new(DownSet::default()))
        .clone()
}

/// The members node `node` holds down, now and at every change (empty until its
/// membership actor runs).
pub fn watch_down(node: &str) -> watch::Receiver<DownSet> {
    down_sender(node).subscribe()
}

/// Messages to a membership actor.
#[derive(RactorClusterMessage)]
pub enum MembershipMsg {
    /// A peer's heartbeat.
    Hello(Wire<Hello>),
    /// A member left, or an operator forgot it: remove it.
    Removed(Wire<String>),
    /// Node-internal requests and events; never sent over the wire.
    Local(LocalOnly<Local>),
}

impl MembershipMsg {
    /// Wraps a node-internal request or event.
    pub fn local(l: Local) -> MembershipMsg {
        MembershipMsg::Local(LocalOnly::new(l))
    }
}

/// The membership actor (see the module documentation).
pub struct Membership;

/// What a membership actor starts with.
pub struct MembershipArgs {
    /// This node's name, address and role.
    pub me: MemberAddress,
    /// Cluster addresses to dial until a live member answers there.
    pub seeds: Vec<String>,
    /// Heartbeat, health and backoff timing.
    pub timing: Timing,
    /// This node's ractor_cluster node server: its sessions are watched, dialled
    /// through and closed.
    pub node_server: ActorRef<NodeServerMessage>,
}

/// The membership actor's state: the member table and what it knows of sessions.
pub struct MembershipState {
    table: MemberTable,
    started: Instant,
    node_server: ActorRef<NodeServerMessage>,
    /// Authenticated sessions by peer name (a pair may briefly have two).
    sessions: HashMap<String, BTreeSet<u64>>,
    authenticated: BTreeSet<u64>,
    /// Each member's uptime as of its last hello.
    uptimes: HashMap<String, (u64, Instant)>,
    /// Addresses whose last dial failed, so a failure is logged once, not every retry.
    unreachable: BTreeSet<String>,
    /// When a cookie refusal was last logged (by dialled address, or `inbound`): a
    /// refused peer redials every few seconds and must not flood the log.
    refusals: HashMap<String, Instant>,
    /// Sessions of named members that closed before they authenticated, by member:
    /// when, and the peer's address. Two nodes that dial each other at once lose one
    /// of the two sessions that way (ractor_cluster keeps one per pair), and a node
    /// killed while a session with it opens loses it too: only when another session
    /// with that member closed the same way and none authenticated within
    /// [`REFUSAL_GRACE`] of the first is it a refusal. With how many closed so far.
    unauthenticated: HashMap<String, (Instant, String, u32)>,
    /// The members held down, for whoever watches them on this node.
    down: watch::Sender<DownSet>,
}

/// How often one cookie refusal is logged again.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

/// Marks a key of [`MembershipState::unauthenticated`] that is a dialled address
/// whose member's name is not known yet.
const UNNAMED: &str = "@";

/// How long a named member's unauthenticated session waits for another session with
/// that member to authenticate before it counts as a cookie refusal.
const REFUSAL_GRACE: Duration = Duration::from_secs(3);

/// How long one unauthenticated session of a member is remembered, waiting for a
/// second one (a refusing peer is dialled again well within it).
const REFUSAL_FORGET: Duration = Duration::from_secs(60);

impl Actor for Membership {
    type Msg = MembershipMsg;
    type State = MembershipState;
    type Arguments = MembershipArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<MembershipMsg>,
        args: MembershipArgs,
    ) -> Result<MembershipState, ActorProcessingErr> {
        ractor::pg::join(MEMBERS_GROUP.to_string(), vec![myself.get_cell()]);
        ractor::pg::monitor(MEMBERS_GROUP.to_string(), myself.get_cell());
        let me = myself.clone();
        crate::node_server::watch_sessions(&args.node_server, "warren.membership", move |e| {
            let _ = me.cast(MembershipMsg::local(Local::Session(e)));
        })?;
        myself.send_interval(args.timing.heartbeat, || MembershipMsg::local(Local::Tick));
        let _ = myself.cast(MembershipMsg::local(Local::Tick));
        let down = down_sender(&args.me.name);
        Ok(MembershipState {
            table: MemberTable::new(args.me, args.seeds, args.timing),
            started: Instant::now(),
            node_server: args.node_server,
            sessions: HashMap::new(),
            authenticated: BTreeSet::new(),
            uptimes: HashMap::new(),
            unreachable: BTreeSet::new(),
            refusals: HashMap::new(),
            unauthenticated: HashMap::new(),
            down,
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<MembershipMsg>,
        _state: &mut MembershipState,
    ) -> Result<(), ActorProcessingErr> {
        ractor::pg::demonitor(MEMBERS_GROUP.to_string(), myself.get_id());
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<MembershipMsg>,
        message: MembershipMsg,
        state: &mut MembershipState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            MembershipMsg::Hello(hello) => match hello.into_result() {
                Ok(hello) => state.heard(hello),
                Err(why) => tracing::warn!("a member's hello did not decode: {why}"),
            },
            MembershipMsg::Removed(name) => {
                if let Ok(name) = name.into_result() {
                    state.removed(&name).await;
                }
            }
            MembershipMsg::Local(local) => {
                let Some(local) = local.take() else {
                    return Ok(());
                };
                match local {
                    Local::Tick => state.tick(&myself).await,
                    Local::Session(e) => state.session(e),
                    Local::Status(reply) => {
                        let _ = reply.send(state.status());
                    }
                    Local::Forget(name, reply) => {
                        let _ = reply.send(state.forget(&name).await);
                    }
                    Local::Leave(reply) => {
                        let me = state.table.me().name.clone();
                        state.broadcast(|| MembershipMsg::Removed(me.clone().into()));
                        let _ = reply.send(());
                    }
                    Local::Dialled { address } => state.check_dial(&address).await,
                }
            }
        }
        state.publish_down();
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<MembershipMsg>,
        event: SupervisionEvent,
        state: &mut MembershipState,
    ) -> Result<(), ActorProcessingErr> {
        // A peer's membership actor appeared: greet it now rather than at the next tick.
        if let SupervisionEvent::ProcessGroupChanged(GroupChangeMessage::Join(_, _, cells)) = event
        {
            let hello = state.hello();
            for cell in cells.into_iter().filter(|c| !c.get_id().is_local()) {
                let _ = ActorRef::<MembershipMsg>::from(cell)
                    .cast(MembershipMsg::Hello(hello.clone().into()));
            }
        }
        Ok(())
    }
}

impl MembershipState {
    /// Tells the watchers which members are down, when that changed.
    fn publish_down(&self) {
        let down: BTreeSet<String> = self
            .table
            .members()
            .filter(|m| m.health == Health::Down)
            .map(|m| m.id.name.clone())
            .collect();
        self.down.send_if_modified(|now| {
            let changed = **now != down;
            if changed {
                *now = DownSet::new(down);
            }
            changed
        });
    }

    fn hello(&self) -> Hello {
        Hello {
            from: self.table.me().clone(),
            known: self.table.known(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
        }
    }

    /// Sends a message to every peer's membership actor.
    fn broadcast(&self, message: impl Fn() -> MembershipMsg) {
        for cell in ractor::pg::get_members(&MEMBERS_GROUP.to_string()) {
            if !cell.get_id().is_local() {
                let _ = ActorRef::<MembershipMsg>::from(cell).cast(message());
            }
        }
    }

    fn report(&mut self, changes: Vec<Transition>) {
        for c in changes {
            let member = self.table.get(&c.name);
            let address = member.map(|m| m.id.address.as_str()).unwrap_or("?");
            match (c.from, c.to) {
                (None, Health::Up) => {
                    tracing::info!(member = %c.name, %address, "a member joined")
                }
                (_, Health::Up) => tracing::info!(member = %c.name, %address, "member is up"),
                (_, Health::Suspect) => {
                    tracing::warn!(member = %c.name, %address, "member is silent: suspect")
                }
                (_, Health::Down) => tracing::warn!(member = %c.name, %address, "member is down"),
            }
        }
    }

    fn heard(&mut self, hello: Hello) {
        if hello.from.name == self.table.me().name {
            tracing::error!(
                address = %hello.from.address,
                "another node uses this node's name '{}': give every node its own --name",
                hello.from.name
            );
            return;
        }
        self.unreachable.remove(&hello.from.address);
        self.uptimes
            .insert(hello.from.name.clone(), (hello.uptime_ms, Instant::now()));
        let changes = self.table.heard(hello.from, &hello.known, Instant::now());
        self.report(changes);
    }

    fn session(&mut self, event: SessionEvent) {
        // ractor_cluster names a peer `NAME@HOST`; members are known by NAME.
        let member_name = |n: Option<String>| {
            n.map(|n| match n.split_once('@') {
                Some((name, _)) => name.to_string(),
                None => n,
            })
        };
        match event {
            SessionEvent::Authenticated {
                node_id, peer_name, ..
            } => {
                self.authenticated.insert(node_id);
                if let Some(name) = member_name(peer_name) {
                    self.sessions.entry(name).or_default().insert(node_id);
                }
            }
            SessionEvent::Disconnected {
                node_id,
                peer_addr,
                peer_name,
            } => {
                if !self.authenticated.remove(&node_id) {
                    // A node we dialled, or one that dialled us, never passed the
                    // challenge: two different cookies, or the one of two sessions a
                    // pair dialled at once that ractor_cluster dropped (then the other
                    // authenticates: see `check_refusals`).
                    let client = peer_name
                        .as_deref()
                        .is_some_and(|n| n.starts_with("warren-client-"));
                    if client {
                        return;
                    }
                    // A session this node dialled may close before the names are
                    // exchanged (the peer restarting, or keeping its own session of
                    // the pair): known by the address it dialled.
                    let name = member_name(peer_name).or_else(|| {
                        let member = self
                            .table
                            .known()
                            .into_iter()
                            .find(|m| m.address == peer_addr);
                        match member {
                            Some(m) => Some(m.name),
                            None if self.unreachable.contains(&peer_addr) => {
                                Some(format!("{UNNAMED}{peer_addr}"))
                            }
                            None => None,
                        }
                    });
                    if let Some(name) = name {
                        self.unauthenticated
                            .entry(name)
                            .or_insert((Instant::now(), peer_addr, 0))
                            .2 += 1;
                        return;
                    }
                    if self.should_log_refusal(&peer_addr) {
                        tracing::error!(
                            peer = %peer_addr,
                            "a cluster session closed before it authenticated: the peer's cookie does not match this node's (every node of a cluster needs the same cookie file)"
                        );
                    }
                    return;
                }
                let Some(name) = member_name(peer_name) else {
                    return;
                };
                let last = match self.sessions.get_mut(&name) {
                    Some(ids) => {
                        ids.remove(&node_id);
                        ids.is_empty()
                    }
                    None => true,
                };
                if last {
                    self.sessions.remove(&name);
                    let changes = self.table.session_closed(&name, Instant::now());
                    self.report(changes);
                }
            }
        }
    }

    /// Logs the refusals: named members whose session closed unauthenticated and with
    /// which no session authenticated since.
    fn check_refusals(&mut self, now: Instant) {
        let due: Vec<(String, String, u32, Duration)> = self
            .unauthenticated
            .iter()
            .filter(|(_, (at, _, _))| now.duration_since(*at) >= REFUSAL_GRACE)
            .map(|(name, (at, addr, closed))| {
                (name.clone(), addr.clone(), *closed, now.duration_since(*at))
            })
            .collect();
        for (key, addr, closed, waited) in due {
            // One close alone may be a node killed as the session opened: wait for a
            // second (kept until it comes, a session authenticates, or it is old).
            if closed < 2 && waited < REFUSAL_FORGET {
                let connected = self.sessions.get(&key).is_some_and(|ids| !ids.is_empty());
                if !connected {
                    continue;
                }
            }
            self.unauthenticated.remove(&key);
            if closed < 2 {
                continue;
            }
            // A seed dialled before its name was known: it may be known by now.
            let name = match key.strip_prefix(UNNAMED) {
                Some(address) => self
                    .table
                    .members()
                    .find(|m| m.id.address == address)
                    .map(|m| m.id.name.clone())
                    .unwrap_or(key),
                None => key,
            };
            let connected = self.sessions.get(&name).is_some_and(|ids| !ids.is_empty());
            if !connected && self.should_log_refusal(&addr) {
                tracing::error!(
                    peer = %addr,
                    member = %name,
                    "a cluster session closed before it authenticated: the peer's cookie does not match this node's (every node of a cluster needs the same cookie file)"
                );
            }
        }
    }

    async fn tick(&mut self, myself: &ActorRef<MembershipMsg>) {
        let now = Instant::now();
        self.check_refusals(now);
        let changes = self.table.tick(now);
        self.report(changes);
        for name in self.table.stale_sessions() {
            tracing::warn!(member = %name, "closing the session of a silent member, to redial it");
            self.close_sessions(&name).await;
        }
        for address in self.table.due_dials(now) {
            let server = self.node_server.clone();
            let me = myself.clone();
            let first = !self.unreachable.contains(&address);
            self.unreachable.insert(address.clone());
            tokio::spawn(async move {
                match ractor_cluster::client_connect(&server, address.as_str()).await {
                    Ok(()) => {
                        // Check later whether it authenticated.
                        tokio::time::sleep(HANDSHAKE_CHECK).await;
                        let _ = me.cast(MembershipMsg::local(Local::Dialled { address }));
                    }
                    Err(e) if first => {
                        tracing::info!(%address, "cannot reach member or seed yet ({e}); retrying with backoff")
                    }
                    Err(e) => tracing::debug!(%address, "still cannot reach: {e}"),
                }
            });
        }
        let hello = self.hello();
        self.broadcast(|| MembershipMsg::Hello(hello.clone().into()));
    }

    /// A dial connected a while ago: if no member answers on that address yet and its
    /// session never authenticated, the cookie is the likely cause; close it.
    async fn check_dial(&mut self, address: &str) {
        let answered = self
            .table
            .members()
            .any(|m| m.id.address == address && m.health == Health::Up);
        if answered {
            return;
        }
        let Ok(sessions) = ractor::call_t!(self.node_server, NodeServerMessage::GetSessions, 5_000)
        else {
            return;
        };
        for (id, info) in sessions {
            if info.peer_addr == address && !info.is_server && !self.authenticated.contains(&id) {
                if !self.should_log_refusal(address) {
                    info.actor.stop(Some("not authenticated".into()));
                    continue;
                }
                tracing::error!(
                    peer = %address,
                    "the node at {address} did not accept this node's cookie (every node of a cluster needs the same cookie file)"
                );
                info.actor.stop(Some("not authenticated".into()));
            }
        }
    }

    /// Whether a cookie refusal involving `peer` is worth a log line now. Inbound
    /// sessions come from ephemeral ports, so they share one key.
    fn should_log_refusal(&mut self, peer: &str) -> bool {
        let dialled =
            self.table.known().iter().any(|m| m.address == peer) || self.unreachable.contains(peer);
        let key = if dialled { peer } else { "inbound" };
        let now = Instant::now();
        match self.refusals.get(key) {
            Some(at) if now.duration_since(*at) < REFUSAL_LOG_EVERY => false,
            _ => {
                self.refusals.insert(key.to_string(), now);
                true
            }
        }
    }

    async fn close_sessions(&mut self, name: &str) {
        let Some(ids) = self.sessions.get(name).cloned() else {
            return;
        };
        if let Ok(sessions) =
            ractor::call_t!(self.node_server, NodeServerMessage::GetSessions, 5_000)
        {
            for (id, info) in sessions {
                if ids.contains(&id) {
                    info.actor.stop(Some("member silent".into()));
                }
            }
        }
    }

    fn status(&self) -> Vec<MemberView> {
        let me = self.table.me();
        let mut views = vec![MemberView {
            name: me.name.clone(),
            address: me.address.clone(),
            role: me.role,
            health: Health::Up,
            this_node: true,
            uptime_ms: self.started.elapsed().as_millis() as u64,
        }];
        for m in self.table.members() {
            let uptime_ms = match (m.health, self.uptimes.get(&m.id.name)) {
                (Health::Down, _) | (_, None) => 0,
                (_, Some((ms, at))) => ms + at.elapsed().as_millis() as u64,
            };
            views.push(MemberView {
                name: m.id.name.clone(),
                address: m.id.address.clone(),
                role: m.id.role,
                health: m.health,
                this_node: false,
                uptime_ms,
            });
        }
        views
    }

    async fn forget(&mut self, name: &str) -> Result<(), MembershipError> {
        if name == self.table.me().name {
            return Err(MembershipError::Myself);
        }
        match self.table.get(name) {
            None => Err(MembershipError::NoSuchMember {
                name: name.to_string(),
                members: self
                    .table
                    .known()
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
            Some(m) if m.health != Health::Down => Err(MembershipError::StillUp(name.to_string())),
            Some(_) => {
                self.removed(name).await;
                let name = name.to_string();
                self.broadcast(|| MembershipMsg::Removed(name.clone().into()));
                Ok(())
            }
        }
    }

    async fn removed(&mut self, name: &str) {
        if name == self.table.me().name {
            tracing::warn!(
                "the cluster removed this node; it stays up alone until restarted with seeds"
            );
            return;
        }
        if self.table.remove(name).is_some() {
            tracing::info!(member = %name, "member removed from the cluster");
            self.close_sessions(name).await;
            self.uptimes.remove(name);
        }
    }
}

/// How long after a dial connected to check that its session authenticated.
const HANDSHAKE_CHECK: Duration = Duration::from_secs(3);

/// A handle on the local membership actor.
#[derive(Clone)]
pub struct MembershipHandle(pub ActorRef<MembershipMsg>);

impl MembershipHandle {
    /// The membership actor of `node`, when it runs in this process.
    pub fn lookup(node: &str) -> Option<MembershipHandle> {
        ractor::registry::where_is(membership_name(node))
            .map(|c| MembershipHandle(ActorRef::from(c)))
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Local,
    ) -> Result<T, MembershipError> {
        let (tx, rx) = oneshot::channel();
        self.0
            .cast(MembershipMsg::local(make(tx)))
            .map_err(|_| MembershipError::Unavailable)?;
        rx.await.map_err(|_| MembershipError::Unavailable)
    }

    /// Every member as this node sees it, this node first.
    pub async fn status(&self) -> Result<Vec<MemberView>, MembershipError> {
        self.ask(Local::Status).await
    }

    /// Removes down member `name` from the cluster and tells every member.
    pub async fn forget(&self, name: &str) -> Result<(), MembershipError> {
        self.ask(|tx| Local::Forget(name.to_string(), tx)).await?
    }

    /// Tells every member that this node leaves (the caller then stops it).
    pub async fn leave(&self) -> Result<(), MembershipError> {
        self.ask(Local::Leave).await
    }
}
