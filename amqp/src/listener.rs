//! The AMQP 0-9-1 front door in the node's supervision tree:
//!
//! ```text
//! amqp                              one_for_one
//! ├── amqp-acceptor                 permanent: accepts TCP connections
//! ├── amqp-connection:127.0.0.1:53124   temporary, one per client connection
//! └── ...
//! ```
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

use crate::connection::{serve_until, Server};

/// The name of the AMQP supervisor in the node's tree.
pub const SUPERVISOR: &str = "amqp";
/// The name of the acceptor.
const ACCEPTOR: &str = "amqp-acceptor";
/// How long a connection told to close (node shutdown, `stop` in the shell) gets to
/// send its close and requeue its deliveries.
const CLOSE_GRACE: Duration = Duration::from_secs(3);

/// A bound AMQP socket, not yet accepting.
pub struct Listener {
    /// The address bound (with the port the system chose, if it was 0).
    pub addr: SocketAddr,
    socket: Arc<TcpListener>,
    server: Arc<Server>,
}

impl Listener {
    /// Binds `addr`.
    pub async fn bind(addr: SocketAddr, server: Server) -> std::io::Result<Listener> {
        let socket = TcpListener::bind(addr).await?;
        Ok(Listener {
            addr: socket.local_addr()?,
            socket: Arc::new(socket),
            server: Arc::new(server),
        })
    }

    /// The `amqp` supervisor with its acceptor, for the node's root supervisor.
    pub fn child_spec(&self, max_restarts: u32, window: Duration) -> ChildSpec {
        let (socket, server) = (self.socket.clone(), self.server.clone());
        let acceptor =
            ChildSpec::for_actor(ACCEPTOR, "amqp acceptor", Restart::Permanent, move || {
                (
                    Acceptor,
                    AcceptorArgs {
                        socket: socket.clone(),
                        server: server.clone(),
                    },
                )
            });
        let spec = SupervisorSpec::new(Strategy::OneForOne)
            .with_intensity(max_restarts, window)
            .child(acceptor);
        ChildSpec::supervisor(SUPERVISOR, Restart::Permanent, spec)
    }
}

struct Acceptor;

struct AcceptorArgs {
    socket: Arc<TcpListener>,
    server: Arc<Server>,
}

/// A local-only message: a connection to hand to the supervisor.
struct Accepted(TcpStream, SocketAddr);

impl ractor::Message for Accepted {}

impl Actor for Acceptor {
    type Msg = Accepted;
    type State = (Arc<Server>, JoinHandle<()>);
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
        tracing::info!("AMQP 0-9-1 listener ready");
        Ok((args.server, task))
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
        let server = state.0.clone();
        // The supervisor answers start_child only after the child started: do not
        // hold up the next accept for it.
        tokio::spawn(async move {
            let supervisor = match SupervisorHandle::lookup(SUPERVISOR) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(peer = %peer, "AMQP connection refused: {e}");
                    return;
                }
            };
            let name = format!("amqp-connection:{peer}");
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
        let name = args.name;
        let task = tokio::spawn(async move {
            serve_until(socket, args.peer, args.server, closed).await;
            // Done: leave the tree (a temporary child would stay listed as stopped).
            tokio::spawn(async move {
                if let Ok(supervisor) = SupervisorHandle::lookup(SUPERVISOR) {
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
