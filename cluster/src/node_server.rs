//! Starting ractor_cluster's node server and watching its sessions.
//!
//! Every Warren process (a node, or a client handle's process) runs one node server:
//! it listens for node sessions, authenticates them with the cookie, and keeps process
//! groups in sync across them. A [`SessionWatch`] turns session events into messages,
//! so that a node notices a client process that went away and cleans up after it.

use std::net::SocketAddr;

use ractor::{Actor, ActorRef};
use ractor_cluster::node::{NodeConnectionMode, NodeServerSessionInformation};
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage};

/// The largest frame a Warren process accepts from a peer. ractor_cluster kills the
/// whole node-pair session on a larger one, so senders keep batches well below it.
pub const MAX_FRAME_BYTES: u64 = 64 * 1024 * 1024;

/// Why the node server did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The node server could not start listening on the address (it is taken, say).
    #[error("cannot listen for cluster connections on {addr}: {reason}; pick a free address with --cluster-listen")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// The error ractor_cluster gave.
        reason: String,
    },
}

/// Starts a node server named `name` that listens on `listen` (port 0: any free port).
pub async fn start(
    name: &str,
    listen: SocketAddr,
    cookie: String,
) -> Result<ActorRef<NodeServerMessage>, StartError> {
    let server = NodeServer::new(
        listen.port(),
        cookie,
        name.to_string(),
        listen.ip().to_string(),
        None,
        // Warren dials its members itself (cluster/ owns membership); a client must
        // never be dialled transitively.
        Some(NodeConnectionMode::Isolated),
    )
    .with_listen_addr(listen.ip())
    .with_max_inbound_frame_size(MAX_FRAME_BYTES);
    let (server, _handle) =
        Actor::spawn(None, server, ())
            .await
            .map_err(|e| StartError::Listen {
                addr: listen,
                reason: e.to_string(),
            })?;
    Ok(server)
}

/// What a watched session did.
#[derive(Clone, Debug)]
pub enum SessionEvent {
    /// The session passed the cookie challenge.
    Authenticated {
        /// ractor_cluster's id of the session (per node server).
        node_id: u64,
        /// The peer's address as the session sees it.
        peer_addr: String,
        /// The peer's name (`NAME@HOST`), once it has told it.
        peer_name: Option<String>,
    },
    /// The session closed; one that never authenticated almost always means the
    /// cookies differ.
    Disconnected {
        /// ractor_cluster's id of the session (per node server).
        node_id: u64,
        /// The peer's address as the session sees it.
        peer_addr: String,
        /// The peer's name (`NAME@HOST`), once it has told it.
        peer_name: Option<String>,
    },
}

/// Forwards node-session events to a function (usually a cast to an actor).
pub struct SessionWatch<F>(pub F);

impl<F: Fn(SessionEvent) + Send + 'static> NodeEventSubscription for SessionWatch<F> {
    fn node_session_opened(&self, _ses: NodeServerSessionInformation) {}

    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        (self.0)(SessionEvent::Disconnected {
            node_id: ses.node_id,
            peer_addr: ses.peer_addr,
            peer_name: ses.peer_name.map(|n| n.name),
        });
    }

    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        (self.0)(SessionEvent::Authenticated {
            node_id: ses.node_id,
            peer_addr: ses.peer_addr,
            peer_name: ses.peer_name.map(|n| n.name),
        });
    }
}

/// Subscribes `f` to the session events of `server`.
pub fn watch_sessions(
    server: &ActorRef<NodeServerMessage>,
    id: &str,
    f: impl Fn(SessionEvent) + Send + 'static,
) -> Result<(), String> {
    server
        .cast(NodeServerMessage::SubscribeToEvents {
            id: id.to_string(),
            subscription: Box::new(SessionWatch(f)),
        })
        .map_err(|e| e.to_string())
}
