//! The AMQP 0-9-1 listener: accepts TCP connections and serves each in its own task.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::connection::{serve, Server};

/// A bound listener; dropping the handle does not stop it, [`Listener::stop`] does.
pub struct Listener {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Listener {
    /// Binds `addr` and starts accepting.
    pub async fn start(addr: SocketAddr, server: Server) -> std::io::Result<Listener> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let server = Arc::new(server);
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((socket, peer)) => {
                        tokio::spawn(serve(socket, peer, server.clone()));
                    }
                    Err(e) => {
                        // Out of file descriptors, say: keep serving the others.
                        tracing::warn!("AMQP accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        });
        tracing::info!(listen = %addr, "AMQP 0-9-1 listener ready");
        Ok(Listener { addr, task })
    }

    /// Stops accepting (open connections run on until they close).
    pub fn stop(&self) {
        self.task.abort();
    }
}
