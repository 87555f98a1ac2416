//! Dialling a node from a client process and finding its gateway.
//!
//! A process that uses the client handle runs one node server per cookie (ractor's
//! registry and process groups are process-global, so one is all it needs); every
//! client handle in the process to the same node shares that node-pair session, as
//! ractor_cluster allows only one session per pair.
//!
//! That transport (the node server, its sessions and their sockets) runs on a runtime
//! of its own, not on the runtime of the caller that connected first: each
//! `#[tokio::test]` has a runtime of its own, and a program may start and drop
//! runtimes. On the first caller's runtime, the transport died with it, and every
//! later client in the process failed with "channel is closed".

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use ractor::{ActorCell, ActorRef};
use ractor_cluster::NodeServerMessage;
use tokio::runtime::Handle;
use tokio::sync::Mutex;
use tokio::time::{sleep, Instant};

use crate::protocol::GatewayMsg;
use crate::GATEWAY_GROUP;

/// Why a client could not reach a node.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The TCP connection to the node failed (nothing listens there, say).
    #[error("cannot reach a Warren node at {addr}: {reason}; is `warren node` running there? (--node ADDR)")]
    Unreachable {
        /// The node's cluster address.
        addr: SocketAddr,
        /// The transport's error.
        reason: String,
    },
    /// The node closed the session during the handshake, or it opened and never
    /// authenticated: what a cookie mismatch looks like.
    #[error("the node at {addr} did not accept the handshake: the cookie does not match (--cookie-file must name the node's cookie file), or it is not a Warren node")]
    Refused {
        /// The node's cluster address.
        addr: SocketAddr,
    },
    /// No session appeared, or the node's gateway did not, within the handshake
    /// timeout.
    #[error(
        "the node at {addr} did not finish the handshake within {secs} s: the cookie does not match (--cookie-file must name the node's cookie file), or it is not a Warren node"
    )]
    Timeout {
        /// The node's cluster address.
        addr: SocketAddr,
        /// The timeout, in seconds.
        secs: u64,
    },
    /// This process's own node server could not be started or asked for its sessions.
    #[error("cannot start the client's transport: {0}")]
    Local(String),
    /// The process already has a client transport with a different cookie.
    #[error("this process already talks to Warren nodes with another cookie: one process uses one cookie (ractor_cluster numbers the peers of each local transport from 0, so two transports would mix up their nodes)")]
    OtherCookie,
}

/// A ready connection to one node: its gateway and the session's node id.
#[derive(Clone)]
pub struct NodeLink {
    /// The node's gateway, which opens client sessions.
    pub gateway: ActorRef<GatewayMsg>,
    /// The node id ractor_cluster gave this node-pair session in this process.
    pub node_id: u64,
    /// The node's cluster address.
    pub addr: SocketAddr,
}

/// How long to wait for the handshake and for the gateway to appear.
/// (Authentication takes milliseconds on a healthy link.)
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(5);

/// The process's client transport and the cookie it presents.
type ClientServer = Option<(String, ActorRef<NodeServerMessage>)>;

fn client_server() -> &'static Mutex<ClientServer> {
    static SERVER: OnceLock<Mutex<ClientServer>> = OnceLock::new();
    SERVER.get_or_init(|| Mutex::new(None))
}

/// Threads of the runtime the client transport runs on.
const TRANSPORT_THREADS: usize = 2;

/// The runtime the process's client transport runs on, started at the first connect;
/// it lives as long as the process.
fn transport_runtime() -> Result<Handle, ConnectError> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(TRANSPORT_THREADS)
                .thread_name("warren-client-transport")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map(|runtime| runtime.handle().clone())
        .map_err(|e| ConnectError::Local(format!("cannot start its runtime: {e}")))
}

/// Runs `work` on the transport's runtime and waits for it.
async fn on_transport<T: Send + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T, ConnectError> {
    transport_runtime()?
        .spawn(work)
        .await
        .map_err(|e| ConnectError::Local(e.to_string()))
}

/// Connects this process to the node at `addr` (or reuses the session it has) and
/// returns the node's gateway.
///
/// A process has one client transport, so all the nodes it talks to must share one
/// cookie (as the nodes of one cluster do): ractor_cluster identifies peers by a
/// counter per transport, and two transports would give two nodes the same id.
pub async fn connect(addr: SocketAddr, cookie: &str) -> Result<NodeLink, ConnectError> {
    // One connect at a time per process: two handles dialling the same node at once
    // would open two sessions for one pair, and ractor_cluster keeps only one.
    let mut slot = client_server().lock().await;
    let server = match &*slot {
        Some((c, s)) if s.get_status() == ractor::ActorStatus::Running => {
            if c != cookie {
                return Err(ConnectError::OtherCookie);
            }
            s.clone()
        }
        _ => {
            let name = format!("warren-client-{}", std::process::id());
            let listen: SocketAddr = ([127, 0, 0, 1], 0).into();
            let presented = cookie.to_string();
            let s =
                on_transport(
                    async move { crate::node_server::start(&name, listen, presented).await },
                )
                .await?
                .map_err(|e| ConnectError::Local(e.to_string()))?;
            *slot = Some((cookie.to_string(), s.clone()));
            s
        }
    };

    let node_id = match ready_session(&server, addr).await? {
        Some(id) => id,
        None => {
            // The socket belongs to the runtime that opens it: the transport's.
            let dialler = server.clone();
            on_transport(async move { ractor_cluster::client_connect(&dialler, addr).await })
                .await?
                .map_err(|e| ConnectError::Unreachable {
                    addr,
                    reason: e.to_string(),
                })?;
            wait_ready(&server, addr).await?
        }
    };
    drop(slot);

    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    loop {
        if let Some(cell) = gateway_of(node_id) {
            return Ok(NodeLink {
                gateway: ActorRef::from(cell),
                node_id,
                addr,
            });
        }
        if Instant::now() > deadline {
            return Err(ConnectError::Timeout {
                addr,
                secs: HANDSHAKE_TIMEOUT.as_secs(),
            });
        }
        sleep(POLL).await;
    }
}

/// The gateway actor of the node behind session `node_id`, once its group has synced.
pub fn gateway_of(node_id: u64) -> Option<ActorCell> {
    ractor::pg::get_members(&GATEWAY_GROUP.to_string())
        .into_iter()
        .find(|c| !c.get_id().is_local() && c.get_id().node() == node_id)
}

/// Whether a live session to `addr` exists; returns its node id when it is ready.
async fn ready_session(
    server: &ActorRef<NodeServerMessage>,
    addr: SocketAddr,
) -> Result<Option<u64>, ConnectError> {
    let sessions = ractor::call_t!(server, NodeServerMessage::GetSessions, 5_000)
        .map_err(|e| ConnectError::Local(e.to_string()))?;
    let target = addr.to_string();
    for (id, info) in sessions {
        if info.peer_addr == target && !info.is_server {
            let ready = ractor::call_t!(
                info.actor,
                ractor_cluster::NodeSessionMessage::GetReadyState,
                5_000
            )
            .unwrap_or(false);
            if ready {
                return Ok(Some(id));
            }
        }
    }
    Ok(None)
}

/// Waits until the session to `addr` has authenticated and synced its groups.
async fn wait_ready(
    server: &ActorRef<NodeServerMessage>,
    addr: SocketAddr,
) -> Result<u64, ConnectError> {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let target = addr.to_string();
    let mut seen = false;
    loop {
        let sessions = ractor::call_t!(server, NodeServerMessage::GetSessions, 5_000)
            .map_err(|e| ConnectError::Local(e.to_string()))?;
        let mine = sessions
            .iter()
            .find(|(_, info)| info.peer_addr == target && !info.is_server);
        match mine {
            Some((id, info)) => {
                seen = true;
                let ready = ractor::call_t!(
                    info.actor,
                    ractor_cluster::NodeSessionMessage::GetReadyState,
                    5_000
                )
                .unwrap_or(false);
                if ready {
                    return Ok(*id);
                }
            }
            // The session existed and is gone before becoming ready: the node closed
            // it during the handshake, which is what a cookie mismatch looks like.
            None if seen => return Err(ConnectError::Refused { addr }),
            None => {}
        }
        if Instant::now() > deadline {
            // A session that opened and never authenticated was refused (ractor_cluster
            // keeps it around rather than reporting the failed challenge).
            return Err(if seen {
                ConnectError::Refused { addr }
            } else {
                ConnectError::Timeout {
                    addr,
                    secs: HANDSHAKE_TIMEOUT.as_secs(),
                }
            });
        }
        sleep(POLL).await;
    }
}
