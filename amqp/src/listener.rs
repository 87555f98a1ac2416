//! The AMQP 0-9-1 front door in the node's supervision tree (and the AMQPS one,
//! `amqps`, `amqps-acceptor`, `amqps-connection:…`, when TLS is on):
//!
//! ```text
//! amqp                              one_for_one
//! ├── amqp-acceptor                 permanent: accepts TCP connections
//! ├── amqp-connection:127.0.0.1:53124   a task per client connection (shown, not supervised)
//! └── ...
//! ```
//!
//! An AMQPS connection does its TLS handshake in its own task (bounded by the AMQP
//! handshake timeout), then runs as any other.
//!
//! The socket is bound before the tree starts (so a port in use is a clear start-up
//! error) and shared with the acceptor: a restarted acceptor accepts on the same
//! socket. A connection is a task in the node's [`crate::ConnectionTasks`], not an
//! actor (see `tasks.rs` for why): it is never restarted (its TCP connection is
//! gone), the tree shows it under its listener's supervisor while it runs, and the
//! node closes every connection first when it shuts down. Its channels are
//! state machines inside it, not actors of their own: a mailbox hop per frame would
//! cost more than the whole AMQP path does today, and a channel error already closes
//! only that channel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use warren_supervisor::{ChildSpec, Restart, Strategy, SupervisorSpec};

use tokio_rustls::TlsAcceptor;

use crate::connection::{serve_until, Server, HANDSHAKE_TIMEOUT};

/// The name of the AMQP supervisor in the node's tree.
pub const SUPERVISOR: &str = "amqp";
/// The name of the AMQPS supervisor.
pub const TLS_SUPERVISOR: &str = "amqps";

/// One front door: its names in the tree and, for AMQPS, its TLS acceptor.
#[derive(Clone)]
pub(crate) struct Door {
    supervisor: &'static str,
    acceptor: &'static str,
    connection: &'static str,
    tls: Option<TlsAcceptor>,
}

impl Door {
    /// The plain AMQP door.
    pub(crate) fn plain() -> Door {
        Door {
            supervisor: SUPERVISOR,
            acceptor: "amqp-acceptor",
            connection: "amqp-connection",
            tls: None,
        }
    }
}
/// How long a connection told to close (node shutdown, `stop` in the shell) gets to
/// send its close and requeue its deliveries.
pub const CLOSE_GRACE: Duration = Duration::from_secs(3);

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
        Listener::bind_door(addr, Arc::new(server), Door::plain()).await
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
        let name = format!("{}:{peer}", door.connection);
        let tasks = server.tasks.clone();
        tasks.spawn(name, move |closed| {
            serve_door(door, stream, peer, server, closed)
        });
        Ok(())
    }
}

/// Serves one accepted connection as its door says: plain, or TLS first. A task's
/// future is as large as its largest state, and every connection's task lives as
/// long as the connection: the TLS side (its handshake and its stream's state) is
/// boxed, so a plain connection's task holds only the plain connection's future
/// (20 696 bytes before, for every connection).
pub(crate) fn serve_door(
    door: Door,
    stream: TcpStream,
    peer: SocketAddr,
    server: Arc<Server>,
    closed: watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    use futures_util::future::Either;
    match door.tls {
        None => Either::Left(serve_until(stream, peer, server, closed)),
        Some(tls) => Either::Right(Box::pin(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                Ok(Ok(stream)) => serve_until(stream, peer, server, closed).await,
                Ok(Err(e)) => tracing::info!(peer = %peer, "AMQPS: TLS handshake failed: {e}"),
                Err(_) => tracing::info!(peer = %peer, "AMQPS: TLS handshake timed out"),
            }
        })),
    }
}
