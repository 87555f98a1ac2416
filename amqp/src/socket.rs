//! What a client connection runs over ([`Socket`]): plain TCP (`--amqp-listen`) or
//! TLS over TCP (`--amqps-listen`). The connection code is the same for both; only
//! adaptive input coalescing needs the raw socket, so a TLS connection goes without
//! it (its bytes must pass through TLS).

use std::os::fd::{AsRawFd, RawFd};

use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A client connection's byte stream.
pub trait Socket: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The half the connection's loop reads.
    type Reader: AsyncRead + Unpin + Send + 'static;
    /// The half the writer task writes.
    type Writer: AsyncWrite + Unpin + Send + 'static;

    /// Sends small frames at once (no Nagle delay).
    fn set_nodelay(&self);

    /// The descriptor whose input coalescing may read directly: plain TCP only.
    fn coalescible_fd(&self) -> Option<RawFd>;

    /// The node's address of this connection.
    fn local_addr(&self) -> Option<std::net::SocketAddr>;

    /// Splits the stream for the connection's loop and its writer task.
    fn split(self) -> (Self::Reader, Self::Writer);
}

impl Socket for TcpStream {
    type Reader = OwnedReadHalf;
    type Writer = OwnedWriteHalf;

    fn set_nodelay(&self) {
        let _ = TcpStream::set_nodelay(self, true);
    }

    fn coalescible_fd(&self) -> Option<RawFd> {
        Some(self.as_raw_fd())
    }

    fn local_addr(&self) -> Option<std::net::SocketAddr> {
        TcpStream::local_addr(self).ok()
    }

    fn split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.into_split()
    }
}

impl Socket for TlsStream<TcpStream> {
    type Reader = ReadHalf<TlsStream<TcpStream>>;
    type Writer = WriteHalf<TlsStream<TcpStream>>;

    fn set_nodelay(&self) {
        let _ = self.get_ref().0.set_nodelay(true);
    }

    fn coalescible_fd(&self) -> Option<RawFd> {
        None
    }

    fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.get_ref().0.local_addr().ok()
    }

    fn split(self) -> (Self::Reader, Self::Writer) {
        tokio::io::split(self)
    }
}
