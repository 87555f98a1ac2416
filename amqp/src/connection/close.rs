//! Closing: connection.close from the client (close-ok) or from the node (for an
//! error, then a short wait for the client's close-ok), a channel closed for an
//! error, and what a connection's end gives back.

use std::time::Duration;

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{channel, connection, AMQPClass};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::{method0, Connection, End, FRAME_MAX};
use crate::codec::read_frame;
use crate::convert::short;
use crate::error::AmqpError;

impl Connection {
    /// A method on channel 0 after the handshake: connection.close and close-ok, and
    /// connection.update-secret (a client refreshing its credentials: a rotated
    /// password is checked as the user's password; a wrong one closes with 530, as
    /// RabbitMQ does).
    pub(super) fn connection_method(&mut self, m: AMQPClass) -> Result<Option<End>, AmqpError> {
        match m {
            AMQPClass::Connection(connection::AMQPMethod::UpdateSecret(update)) => {
                let secret = String::from_utf8_lossy(update.new_secret.as_bytes());
                if !self.server.access.authenticate(&self.user, &secret) {
                    return Err(AmqpError::SecretUpdateRefused {
                        user: self.user.clone(),
                    }
                    .at(10, 70));
                }
                tracing::info!(
                    peer = %self.peer,
                    user = %self.user,
                    reason = %update.reason.as_str(),
                    "the client updated its secret"
                );
                self.send(&method0(AMQPClass::Connection(
                    connection::AMQPMethod::UpdateSecretOk(connection::UpdateSecretOk {}),
                )));
                Ok(None)
            }
            AMQPClass::Connection(connection::AMQPMethod::Close(_)) => {
                // Queued, not sent yet: the channels close before it goes out (see
                // `process_input`).
                self.send(&method0(AMQPClass::Connection(
                    connection::AMQPMethod::CloseOk(connection::CloseOk {}),
                )));
                self.client_closed = true;
                Ok(Some(End::ClientClosed))
            }
            AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)) => Ok(Some(End::PeerGone)),
            other => Err(AmqpError::UnexpectedMethod {
                class_id: other.get_amqp_class_id(),
                method_id: other.get_amqp_method_id(),
                channel: 0,
            }),
        }
    }

    /// Closes channel `n` for an error: its deliveries go back to their queues, its
    /// frames are dropped until the client's close-ok.
    pub(super) fn channel_error(&mut self, n: u16, e: &AmqpError) {
        let (code, text) = (e.reply_code(), e.reply_text());
        tracing::debug!(peer = %self.peer, channel = n, "channel error {code}: {text}");
        self.forget_channel(n);
        self.closing.insert(n);
        let (class_id, method_id) = e.method();
        self.send(&AMQPFrame::Method(
            n,
            AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                reply_code: code,
                reply_text: short(&text),
                class_id,
                method_id,
            })),
        ));
    }

    /// Channel `n` is closed (either side): its deliveries go back to their queues.
    pub(super) fn forget_channel(&mut self, n: u16) {
        if let Some(mut ch) = self.channels.remove(&n) {
            ch.close();
        }
    }

    /// Answers the client's channel.close.
    pub(super) fn send_channel_close_ok(&mut self, n: u16) {
        self.send(&AMQPFrame::Method(
            n,
            AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
        ));
    }

    /// Queues the `connection.close` for an error.
    pub(super) fn close_with(&mut self, e: AmqpError) {
        let (code, text) = (e.reply_code(), e.reply_text());
        let (class_id, method_id) = e.method();
        tracing::info!(peer = %self.peer, "closing AMQP connection: {code} {text}");
        self.send(&method0(AMQPClass::Connection(
            connection::AMQPMethod::Close(connection::Close {
                reply_code: code,
                reply_text: short(&text),
                class_id,
                method_id,
            }),
        )));
    }

    /// Sends the connection error and closes (before the writer task exists).
    pub(super) async fn fail<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        socket: &mut S,
        e: AmqpError,
    ) {
        self.close_with(e);
        let _ = self.flush(socket).await;
        await_close_ok(socket, std::mem::take(&mut self.in_buf)).await;
    }

    /// Sends the connection error and closes, once the writer task owns the socket's
    /// write half.
    pub(super) async fn fail_after_open(
        &mut self,
        reader: &mut (impl AsyncRead + Unpin),
        writer: &super::Writer,
        e: AmqpError,
    ) {
        self.close_with(e);
        let _ = self.hand_off(writer).await;
        await_close_ok(reader, std::mem::take(&mut self.in_buf)).await;
    }

    /// The connection ended: every channel gives its deliveries back, exclusive
    /// queues go.
    pub(super) async fn close_all(&mut self) {
        for (_, mut ch) in self.channels.drain() {
            ch.close();
        }
        self.vhost.owner_gone(self.id).await;
    }
}

/// Waits briefly for the client's close-ok (or the end of its stream), as RabbitMQ
/// does, so that the close reaches it before the socket goes.
/// `pending` is what was read and not handled yet (frames the client sent before it
/// saw the close are skipped; its close-ok ends the wait at once).
async fn await_close_ok(socket: &mut (impl AsyncRead + Unpin), mut pending: Vec<u8>) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        // On the heap: an array here would make every connection's future larger.
        let mut scratch = vec![0u8; 4096];
        // After a frame error the stream cannot be followed: wait for its end.
        let mut scanning = true;
        loop {
            while scanning {
                match read_frame(&pending, FRAME_MAX) {
                    Ok(Some((frame, used))) => {
                        pending.drain(..used);
                        if matches!(
                            frame,
                            AMQPFrame::Method(
                                0,
                                AMQPClass::Connection(connection::AMQPMethod::CloseOk(_))
                            )
                        ) {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => scanning = false,
                }
            }
            match socket.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(n) if scanning => pending.extend_from_slice(&scratch[..n]),
                Ok(_) => {}
            }
        }
    })
    .await;
}
