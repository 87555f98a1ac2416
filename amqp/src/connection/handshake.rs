//! The handshake of a connection: the protocol header, connection.start / start-ok
//! (PLAIN or AMQPLAIN, checked by `auth.rs`), tune / tune-ok, open / open-ok.

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{connection, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable as WireTable, LongString};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{io_error, method0, Connection, CHANNEL_MAX, FRAME_MAX, HEARTBEAT_SECS};
use crate::auth::{self, Credentials};
use crate::codec::{greeting, read_frame, Greeting, PROTOCOL_HEADER};
use crate::convert::short;
use crate::error::AmqpError;

impl Connection {
    /// Reads at least one more byte into `in_buf`; `Ok(false)` at end of stream.
    /// (Straight into the buffer: a scratch array here would live inside every
    /// connection's future, 64 KiB each for the connection's whole life.)
    async fn fill<S: AsyncRead + Unpin>(&mut self, socket: &mut S) -> std::io::Result<bool> {
        self.in_buf.reserve(1024);
        let n = socket.read_buf(&mut self.in_buf).await?;
        Ok(n > 0)
    }

    /// The next frame during the handshake.
    async fn next_frame<S: AsyncRead + Unpin>(
        &mut self,
        socket: &mut S,
    ) -> Result<Option<AMQPFrame>, AmqpError> {
        loop {
            if let Some((frame, used)) = read_frame(&self.in_buf, self.frame_max)? {
                self.in_buf.drain(..used);
                return Ok(Some(frame));
            }
            match self.fill(socket).await {
                Ok(true) => {}
                _ => return Ok(None),
            }
        }
    }

    /// Sends a connection method at once (the handshake writes each step as it goes).
    async fn send_now<S: AsyncWrite + Unpin>(
        &mut self,
        socket: &mut S,
        method: connection::AMQPMethod,
    ) -> Result<(), AmqpError> {
        self.send(&method0(AMQPClass::Connection(method)));
        self.flush(socket).await.map_err(io_error)
    }

    /// The next method on channel 0 (heartbeats skipped); `Ok(None)` if the peer went
    /// away.
    async fn expect_method<S: AsyncRead + Unpin>(
        &mut self,
        socket: &mut S,
        what: &'static str,
    ) -> Result<Option<AMQPClass>, AmqpError> {
        loop {
            match self.next_frame(socket).await? {
                None => return Ok(None),
                Some(AMQPFrame::Heartbeat) => continue,
                Some(AMQPFrame::Method(0, m)) => return Ok(Some(m)),
                Some(other) => {
                    return Err(AmqpError::HandshakeFrame {
                        expected: what,
                        frame: other.to_string(),
                    })
                }
            }
        }
    }

    /// `Ok(true)` once the connection is open; `Ok(false)` if the peer went away or
    /// was not an AMQP 0-9-1 client.
    pub(super) async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        socket: &mut S,
    ) -> Result<bool, AmqpError> {
        loop {
            match greeting(&self.in_buf) {
                Greeting::Accepted => {
                    self.in_buf.drain(..PROTOCOL_HEADER.len());
                    break;
                }
                Greeting::Refused => {
                    // The spec: answer with the header we speak, then close.
                    let _ = socket.write_all(PROTOCOL_HEADER).await;
                    return Ok(false);
                }
                Greeting::Incomplete => {
                    if !self.fill(socket).await.unwrap_or(false) {
                        return Ok(false);
                    }
                }
            }
        }
        self.send_now(
            socket,
            connection::AMQPMethod::Start(connection::Start {
                version_major: 0,
                version_minor: 9,
                server_properties: self.server_properties(),
                mechanisms: LongString::from("PLAIN AMQPLAIN"),
                locales: LongString::from("en_US"),
            }),
        )
        .await?;

        let Some(m) = self.expect_method(socket, "connection.start-ok").await? else {
            return Ok(false);
        };
        let AMQPClass::Connection(connection::AMQPMethod::StartOk(ok)) = m else {
            return Err(AmqpError::HandshakeMethod {
                expected: "connection.start-ok",
                got: Some((m.get_amqp_class_id(), m.get_amqp_method_id())),
            });
        };
        self.hears_blocked = client_capability(&ok.client_properties, "connection.blocked");
        self.client_properties = crate::convert::table_from_wire(&ok.client_properties);
        let credentials = Credentials::parse(ok.mechanism.as_str(), ok.response.as_bytes())?;
        auth::check(&credentials, self.peer, &self.server.access)?;
        self.user = credentials.user;

        self.send_now(
            socket,
            connection::AMQPMethod::Tune(connection::Tune {
                channel_max: CHANNEL_MAX,
                frame_max: FRAME_MAX,
                heartbeat: HEARTBEAT_SECS,
            }),
        )
        .await?;

        let Some(m) = self.expect_method(socket, "connection.tune-ok").await? else {
            return Ok(false);
        };
        let AMQPClass::Connection(connection::AMQPMethod::TuneOk(tune)) = m else {
            return Err(AmqpError::HandshakeMethod {
                expected: "connection.tune-ok",
                got: None,
            });
        };
        // The client may lower the limits; 0 means "no limit" and takes ours.
        if tune.frame_max != 0 && tune.frame_max < 4096 {
            return Err(AmqpError::FrameMaxTooSmall {
                frame_max: tune.frame_max,
                min: 4096,
            });
        }
        if tune.frame_max > FRAME_MAX {
            return Err(AmqpError::FrameMaxTooLarge {
                frame_max: tune.frame_max,
                max: FRAME_MAX,
            });
        }
        self.frame_max = if tune.frame_max == 0 {
            FRAME_MAX
        } else {
            tune.frame_max
        };
        self.heartbeat = tune.heartbeat;
        // 0: no limit of the client's, ours holds.
        if tune.channel_max != 0 {
            self.channel_max = tune.channel_max.min(CHANNEL_MAX);
        }

        let Some(m) = self.expect_method(socket, "connection.open").await? else {
            return Ok(false);
        };
        let AMQPClass::Connection(connection::AMQPMethod::Open(open)) = m else {
            return Err(AmqpError::HandshakeMethod {
                expected: "connection.open",
                got: None,
            });
        };
        let vhost = open.virtual_host.as_str();
        let Some(found) = self.server.vhosts.get(vhost) else {
            return Err(AmqpError::VhostNotFound {
                vhost: vhost.to_string(),
            });
        };
        if !self.server.access.may_open(&self.user, vhost) {
            return Err(AmqpError::VhostAccessRefused {
                vhost: vhost.to_string(),
                user: self.user.clone(),
            });
        }
        self.vhost = found;
        self.send_now(
            socket,
            connection::AMQPMethod::OpenOk(connection::OpenOk {}),
        )
        .await?;
        Ok(true)
    }

    /// connection.start's server properties: what Warren is and the RabbitMQ
    /// capabilities it has.
    fn server_properties(&self) -> WireTable {
        let mut capabilities = WireTable::default();
        for cap in [
            "publisher_confirms",
            "exchange_exchange_bindings",
            "basic.nack",
            "consumer_cancel_notify",
            "authentication_failure_close",
            "per_consumer_qos",
            "connection.blocked",
            "consumer_priorities",
            "direct_reply_to",
        ] {
            capabilities.insert(short(cap), AMQPValue::Boolean(true));
        }
        let mut props = WireTable::default();
        props.insert(short("capabilities"), AMQPValue::FieldTable(capabilities));
        props.insert(
            short("product"),
            AMQPValue::LongString(LongString::from("Warren")),
        );
        props.insert(
            short("version"),
            AMQPValue::LongString(LongString::from(self.server.product_version.as_str())),
        );
        props.insert(
            short("platform"),
            AMQPValue::LongString(LongString::from("Rust")),
        );
        props.insert(
            short("cluster_name"),
            AMQPValue::LongString(LongString::from(self.server.node_name.as_str())),
        );
        props
    }
}

/// Whether the client's properties say it understands `name`
/// (`capabilities.<name> = true`).
fn client_capability(properties: &WireTable, name: &str) -> bool {
    let Some(AMQPValue::FieldTable(caps)) = properties.inner().get(&short("capabilities")) else {
        return false;
    };
    matches!(
        caps.inner().get(&short(name)),
        Some(AMQPValue::Boolean(true))
    )
}
