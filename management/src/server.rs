//! The HTTP listeners as supervised actors: one actor per listener owns the task that
//! serves it; if it fails, its supervisor starts it again on the same bound socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;
use warren_supervisor::{ChildSpec, Restart};

/// A bound HTTP listener.
pub struct HttpListener {
    /// The address it is bound to.
    pub addr: SocketAddr,
    socket: Arc<std::net::TcpListener>,
}

impl HttpListener {
    /// Binds `addr` now, so that a port in use fails the node's start with a clear
    /// error.
    pub fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let socket = std::net::TcpListener::bind(addr)?;
        socket.set_nonblocking(true)?;
        Ok(HttpListener {
            addr: socket.local_addr()?,
            socket: Arc::new(socket),
        })
    }

    /// The actor `name` that serves `router` on it, for the node's supervisor.
    pub fn child_spec(&self, name: &'static str, router: Router) -> ChildSpec {
        let socket = self.socket.clone();
        ChildSpec::for_actor(name, "http listener", Restart::Permanent, move || {
            (
                Serving,
                ServingArgs {
                    socket: socket.clone(),
                    router: router.clone(),
                },
            )
        })
        .with_shutdown(Duration::from_secs(5))
    }
}

struct Serving;

struct ServingArgs {
    socket: Arc<std::net::TcpListener>,
    router: Router,
}

enum NoMsg {}

impl ractor::Message for NoMsg {}

impl Actor for Serving {
    type Msg = NoMsg;
    type State = JoinHandle<()>;
    type Arguments = ServingArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<NoMsg>,
        args: ServingArgs,
    ) -> Result<JoinHandle<()>, ActorProcessingErr> {
        let listener = tokio::net::TcpListener::from_std(args.socket.try_clone()?)?;
        let service = args
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        Ok(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, service).await {
                tracing::warn!("HTTP listener stopped: {e}");
            }
        }))
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<NoMsg>,
        task: &mut JoinHandle<()>,
    ) -> Result<(), ActorProcessingErr> {
        task.abort();
        Ok(())
    }
}
