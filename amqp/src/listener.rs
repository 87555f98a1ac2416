//! The AMQP 0-9-1 front door in the node's supervision tree (and the AMQPS one,
//! `amqps`, `amqps-acceptor`, `amqps-connection:…`, when TLS is on):
//!
//! ```text
//! amqp                              one_for_one
//! ├── amqp-acceptor                 permanent: accepts TCP connections
//! ├── amqp-connection:127.0.0.1:53124   temporary, one per client connection
//! └── ...
//! ```
//!
//! An AMQPS connection does its TLS handshake in its own task (bounded by the AMQP
//! handshake timeout), then runs as any other.
//!
//! The socket is bound before the tree starts (so a port in use is a clear start-up
//! error) and shared with the acceptor: a restarted acceptor accepts on the same
//! socket. A connection is a temporary child: it is never restarted (its TCP
//! connection is gone), and its entry leaves the tree when it ends. Its channels are
//! state machines inside it, not actors of their own: a mailbox hop per frame would
//! cost more than the whole AMQP path does today, and a channel error already closes
//! only that channel.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use warren_supervisor::{ChildSpec, Restart, Strategy, SupervisorHandle, SupervisorSpec};

use tokio_rustls::TlsAcceptor;

use crate::connection::{serve_until, Server, HANDSHAKE_TIMEOUT};

/// The name of the AMQP supervisor in the node's tree.
pub const SUPERVISOR: &str = "amqp";
/// The name of the AMQPS supervisor.
pub const TLS_SUPERVISOR: &str = "amqps";

/// One front door: its names in the tree and, for AMQPS, its TLS acceptor.
#[derive(Clone)]
struct Door {
    supervisor: &'static str,
    acceptor: &'static str,
    connection: &'static str,
    tls: Option<TlsAcceptor>,
}
/// How long a connection told to close (node shutdown, `stop` in the shell) gets to
/// send its close and requeue its deliveries.
const CLOSE_GRACE: Duration = Duration::from_secs(3);

/// A bound AMQP socket, not yet accepting.
pub struct Listener {
    /// The address bound (with the port the system chose, if it was 0).
    pub addr: SocketAddr,
    socket: Arc<TcpListener>,
    server: Arc<Server>,
    door: Door,
}

impl Listener {
    /// Binds `addr` for AMQP.
    pub async fn bind(addr: SocketAddr, server: Server) -> std::io::Result<Listener> {
        let door = Door {
            supervisor: SUPERVISOR,
            acceptor: "amqp-acceptor",
            connection: "amqp-connection",
            tls: None,
        };
        Listener::bind_door(addr, Arc::new(server), door).await
    }

    /// Binds `addr` for AMQP over TLS, with `tls`, serving as `server` does.
    pub async fn bind_tls(
        addr: SocketAddr,
        server: Server,
        tls: TlsAcceptor,
    ) -> std::io::Result<Listener> {
        let door = Door {
            supervisor: TLS_SUPERVISOR,
            acceptor: "amqps-acceptor",
            connection: "amqps-connection",
            tls: Some(tls),
        };
        Listener::bind_door(addr, Arc::new(server), door).await
    }

    async fn bind_door(
        addr: SocketAddr,
        server: Arc<Server>,
        door: Door,
    ) -> std::io::Result<Listener> {
        let socket = TcpListener::bind(addr).await?;
        Ok(Listener {
            addr: socket.local_addr()?,
            socket: Arc::new(socket),
            server,
            door,
        })
    }

    /// The supervisor with its acceptor, for the node's root supervisor.
    pub fn child_spec(&self, max_restarts: u32, window: Duration) -> ChildSpec {
        let (socket, server, door) = (self.socket.clone(), self.server.clone(), self.door.clone());
        let name = self.door.acceptor;
        let acceptor = ChildSpec::for_actor(name, "amqp acceptor", Restart::Permanent, move || {
            (
                Acceptor,
                AcceptorArgs {
                    socket: socket.clone(),
                    server: server.clone(),
                    door: door.clone(),
                },
            )
        });
        let spec = SupervisorSpec::new(Strategy::OneForOne)
            .with_intensity(max_restarts, window)
            .child(acceptor);
        ChildSpec::supervisor(self.door.supervisor, Restart::Permanent, spec)
    }
}

struct Acceptor;

struct AcceptorArgs {
    socket: Arc<TcpListener>,
    server: Arc<Server>,
    door: Door,
}

/// A local-only message: a connection to hand to the supervisor.
struct Accepted(TcpStream, SocketAddr);

impl ractor::Message for Accepted {}

impl Actor for Acceptor {
    type Msg = Accepted;
    type State = (Arc<Server>, JoinHandle<()>, Door);
    type Arguments = AcceptorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Accepted>,
        args: AcceptorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let socket = args.socket;
        let task = tokio::spawn(async move {
            loop {
                match socket.accept().await {
                    Ok((stream, peer)) => {
                        if myself.cast(Accepted(stream, peer)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        // Out of file descriptors, say: keep serving the others.
                        tracing::warn!("AMQP accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        match args.door.tls {
            Some(_) => tracing::info!("AMQP 0-9-1 over TLS listener ready"),
            None => tracing::info!("AMQP 0-9-1 listener ready"),
        }
        Ok((args.server, task, args.door))
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Accepted>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.1.abort();
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Accepted>,
        Accepted(stream, peer): Accepted,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (server, door) = (state.0.clone(), state.2.clone());
        // The supervisor answers start_child only after the child started: do not
        // hold up the next accept for it.
        tokio::spawn(async move {
            let supervisor = match SupervisorHandle::lookup(door.supervisor) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(peer = %peer, "AMQP connection refused: {e}");
                    return;
                }
            };
            let name = format!("{}:{peer}", door.connection);
            let socket = Arc::new(Mutex::new(Some(stream)));
            let spec = ChildSpec::for_actor(
                name.clone(),
                "amqp connection",
                Restart::Temporary,
                move || {
                    (
                        ConnectionActor,
                        ConnectionArgs {
                            socket: socket.clone(),
                            peer,
                            server: server.clone(),
                            name: name.clone(),
                            door: door.clone(),
                        },
                    )
                },
            )
            .with_shutdown(CLOSE_GRACE + Duration::from_secs(1));
            if let Err(e) = supervisor.start_child(spec).await {
                tracing::warn!(peer = %peer, "AMQP connection not started: {e}");
            }
        });
        Ok(())
    }
}

struct ConnectionActor;

struct ConnectionArgs {
    /// Taken by the one start of this temporary child.
    socket: Arc<Mutex<Option<TcpStream>>>,
    peer: SocketAddr,
    server: Arc<Server>,
    name: String,
    door: Door,
}

struct ConnectionState {
    close: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

/// Never sent: the connection runs in its task, the actor is its place in the tree.
enum NoMsg {}

impl ractor::Message for NoMsg {}

impl Actor for ConnectionActor {
    type Msg = NoMsg;
    type State = ConnectionState;
    type Arguments = ConnectionArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<NoMsg>,
        args: ConnectionArgs,
    ) -> Result<ConnectionState, ActorProcessingErr> {
        let socket = args
            .socket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or("an AMQP connection cannot be restarted")?;
        let (close, closed) = watch::channel(false);
        let (name, door) = (args.name, args.door);
        let task = tokio::spawn(async move {
            match &door.tls {
                None => serve_until(socket, args.peer, args.server, closed).await,
                Some(tls) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(socket)).await {
                        Ok(Ok(stream)) => serve_until(stream, args.peer, args.server, closed).await,
                        Ok(Err(e)) => {
                            tracing::info!(peer = %args.peer, "AMQPS: TLS handshake failed: {e}")
                        }
                        Err(_) => {
                            tracing::info!(peer = %args.peer, "AMQPS: TLS handshake timed out")
                        }
                    }
                }
            }
            // Done: leave the tree (a temporary child would stay listed as stopped).
            tokio::spawn(async move {
                if let Ok(supervisor) = SupervisorHandle::lookup(door.supervisor) {
                    let _ = supervisor.terminate_child(&name).await;
                }
            });
        });
        Ok(ConnectionState {
            close,
            task: Some(task),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<NoMsg>,
        state: &mut ConnectionState,
    ) -> Result<(), ActorProcessingErr> {
        // Stopped from outside (node shutdown, the shell's `stop`): the client is told
        // why, and the deliveries of its channels go back to their queues.
        state.close.send_replace(true);
        if let Some(mut task) = state.task.take() {
            if tokio::time::timeout(CLOSE_GRACE, &mut task).await.is_err() {
                task.abort();
            }
        }
        Ok(())
    }
}
