//! One AMQP connection: the handshake (protocol header, start / start-ok with PLAIN or
//! AMQPLAIN, tune, open), then a loop over socket input, queue events and publish
//! outcomes, and heartbeats. Frames that arrive together are handled together: their
//! publishes are routed as one batch per channel, their replies written in one write.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{basic, channel, connection, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable as WireTable, LongString};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::mpsc::{Receiver, Sender};
use tokio::time::Instant;
use warren_access::AccessControl;
use warren_actors::channel::PublishOutcome;
use warren_actors::delivery::{next_channel_id, ChannelId, ChannelSink, QueueEvent};
use warren_actors::message::Message;
use warren_actors::queue::InFlight;
use warren_actors::vhost::VHost;
use warren_actors::vhosts::VHosts;

use std::os::fd::AsRawFd;

use crate::auth::{self, Credentials};
use crate::channel::{close_frame, AmqpChannel, ConnectionPart, Outcome};
use crate::coalesce;
use crate::codec::{greeting, read_frame, write_frame, Greeting, PROTOCOL_HEADER};
use crate::convert::short;
use crate::error::{code, AmqpError, ConnectionError};

/// What every connection of a listener shares.
pub struct Server {
    pub vhosts: VHosts,
    /// The node's memory and disk alarms: publishers are blocked while one is up.
    pub alarms: warren_resources::alarm::Alarms,
    pub access: AccessControl,
    pub product_version: String,
    pub node_name: String,
}

/// The limits a connection offers in `connection.tune`.
pub const CHANNEL_MAX: u16 = 2047;
pub const FRAME_MAX: u32 = 131_072;
pub const HEARTBEAT_SECS: u16 = 60;
/// Most body bytes a connection has routed whose queues have not answered yet; above
/// it the connection stops reading its socket until they do (credit flow: a publisher
/// that outruns the queues, or their storage, is held back by TCP).
const MAX_IN_FLIGHT_BYTES: u64 = 16 * 1024 * 1024;
/// Most publishes of one channel routed together (one read can hold hundreds).
const ROUTE_BATCH: usize = 32;
/// Buffers the connection may queue for its writer before it waits for it.
const WRITER_QUEUE: usize = 64;
/// A handshake that takes longer is abandoned (RabbitMQ: 10 s).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Events that reach the connection from outside its socket.
enum Event {
    Queue(u16, QueueEvent),
    /// A routed batch's outcomes, in publish order, with what a return needs.
    Published(u16, Vec<(Option<u64>, Option<Message>, PublishOutcome)>),
}

/// Serves one TCP connection until it closes (the in-process fuzz test's entry).
#[cfg(test)]
pub async fn serve(socket: TcpStream, peer: SocketAddr, server: Arc<Server>) {
    let (_never, closed) = tokio::sync::watch::channel(false);
    serve_until(socket, peer, server, closed).await
}

/// Serves one TCP connection until it closes, or until `close` turns true: then the
/// client gets `connection.close` 320 and its channels' deliveries are requeued.
pub async fn serve_until(
    mut socket: TcpStream,
    peer: SocketAddr,
    server: Arc<Server>,
    close: tokio::sync::watch::Receiver<bool>,
) {
    let _ = socket.set_nodelay(true);
    let mut conn = Connection {
        peer,
        in_buf: Vec::with_capacity(64 * 1024),
        out: Vec::with_capacity(64 * 1024),
        channels: HashMap::new(),
        closing: HashSet::new(),
        frame_max: FRAME_MAX,
        heartbeat: 0,
        id: next_channel_id(),
        in_flight: InFlight::new(),
        user: String::new(),
        vhost: server.vhosts.default_vhost(),
        hears_blocked: false,
        published: false,
        blocked: false,
        told_blocked: false,
        server,
    };
    let (events_tx, events_rx) = unbounded_channel();
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, conn.handshake(&mut socket)).await {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => return,
        Ok(Err(e)) => {
            conn.fail(&mut socket, e).await;
            return;
        }
        Err(_) => {
            tracing::info!(peer = %peer, "AMQP handshake timed out");
            return;
        }
    }
    tracing::debug!(peer = %peer, user = %conn.user, "AMQP connection open");
    // From here on a writer task owns the socket's write half: bytes handed to it
    // while it is writing go out together in its next write, so a busy connection
    // makes few large writes instead of one per delivery.
    let (mut reader, writer_half) = socket.into_split();
    let (writer, writes) = tokio::sync::mpsc::channel(WRITER_QUEUE);
    let writer_task = tokio::spawn(write_loop(writer_half, writes));
    if let Err(e) = conn
        .run(&mut reader, &writer, events_tx, events_rx, close)
        .await
    {
        conn.close_with(e);
        let _ = conn.hand_off(&writer).await;
        await_close_ok(&mut reader, std::mem::take(&mut conn.in_buf)).await;
    }
    drop(writer);
    let _ = writer_task.await;
    conn.close_all().await;
    tracing::debug!(peer = %peer, "AMQP connection closed");
}

struct Connection {
    server: Arc<Server>,
    peer: SocketAddr,
    in_buf: Vec<u8>,
    out: Vec<u8>,
    channels: HashMap<u16, AmqpChannel>,
    /// Channels the node closed and whose close-ok has not come yet: their other
    /// frames are dropped (the client may have sent them before it saw the close).
    closing: HashSet<u16>,
    frame_max: u32,
    heartbeat: u16,
    /// Owner id of this connection's exclusive queues.
    id: ChannelId,
    /// Body bytes routed and not yet answered by their queues (credit flow).
    in_flight: Arc<InFlight>,
    user: String,
    /// The vhost the client opened (the default one until `connection.open`).
    vhost: VHost,
    /// The client said it understands `connection.blocked` (its capabilities).
    hears_blocked: bool,
    /// Publishes were routed since the alarms were last looked at.
    published: bool,
    /// Stopped reading because it published while an alarm was up.
    blocked: bool,
    /// The client was sent `connection.blocked` (and is owed `unblocked`).
    told_blocked: bool,
}

/// Why the loop ended without an error.
enum End {
    ClientClosed,
    PeerGone,
}

fn method0(class: AMQPClass) -> AMQPFrame {
    AMQPFrame::Method(0, class)
}

impl Connection {
    fn send(&mut self, frame: &AMQPFrame) {
        write_frame(frame, &mut self.out);
    }

    async fn flush(&mut self, socket: &mut TcpStream) -> std::io::Result<()> {
        if !self.out.is_empty() {
            socket.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Hands what is to be sent to the writer task (waits while it is far behind).
    async fn hand_off(&mut self, writer: &Sender<Vec<u8>>) -> Result<(), AmqpError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let bytes = std::mem::replace(&mut self.out, Vec::with_capacity(64 * 1024));
        writer
            .send(bytes)
            .await
            .map_err(|_| AmqpError::connection(code::CONNECTION_FORCED, "the socket closed"))
    }

    /// Reads at least one more byte into `in_buf`; `Ok(false)` at end of stream.
    async fn fill(&mut self, socket: &mut TcpStream) -> std::io::Result<bool> {
        let mut chunk = [0u8; 64 * 1024];
        let n = socket.read(&mut chunk).await?;
        self.in_buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// The next frame during the handshake.
    async fn next_frame(&mut self, socket: &mut TcpStream) -> Result<Option<AMQPFrame>, AmqpError> {
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

    async fn expect_method(
        &mut self,
        socket: &mut TcpStream,
        what: &str,
    ) -> Result<Option<AMQPClass>, AmqpError> {
        loop {
            match self.next_frame(socket).await? {
                None => return Ok(None),
                Some(AMQPFrame::Heartbeat) => continue,
                Some(AMQPFrame::Method(0, m)) => return Ok(Some(m)),
                Some(other) => {
                    return Err(ConnectionError::unexpected(format!(
                        "UNEXPECTED_FRAME - expected {what}, got {other}"
                    ))
                    .into())
                }
            }
        }
    }

    /// `Ok(true)` once the connection is open; `Ok(false)` if the peer went away or
    /// was not an AMQP 0-9-1 client.
    async fn handshake(&mut self, socket: &mut TcpStream) -> Result<bool, AmqpError> {
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
        self.send(&method0(AMQPClass::Connection(
            connection::AMQPMethod::Start(connection::Start {
                version_major: 0,
                version_minor: 9,
                server_properties: self.server_properties(),
                mechanisms: LongString::from("PLAIN AMQPLAIN"),
                locales: LongString::from("en_US"),
            }),
        )));
        self.flush(socket).await.map_err(io_error)?;

        let Some(m) = self.expect_method(socket, "connection.start-ok").await? else {
            return Ok(false);
        };
        let AMQPClass::Connection(connection::AMQPMethod::StartOk(ok)) = m else {
            return Err(ConnectionError::syntax(format!(
                "COMMAND_INVALID - expected connection.start-ok, got {}.{}",
                m.get_amqp_class_id(),
                m.get_amqp_method_id()
            ))
            .into());
        };
        self.hears_blocked = client_capability(&ok.client_properties, "connection.blocked");
        let credentials = Credentials::parse(ok.mechanism.as_str(), ok.response.as_bytes())?;
        auth::check(&credentials, self.peer, &self.server.access)?;
        self.user = credentials.user;

        self.send(&method0(AMQPClass::Connection(
            connection::AMQPMethod::Tune(connection::Tune {
                channel_max: CHANNEL_MAX,
                frame_max: FRAME_MAX,
                heartbeat: HEARTBEAT_SECS,
            }),
        )));
        self.flush(socket).await.map_err(io_error)?;

        let Some(m) = self.expect_method(socket, "connection.tune-ok").await? else {
            return Ok(false);
        };
        let AMQPClass::Connection(connection::AMQPMethod::TuneOk(tune)) = m else {
            return Err(
                ConnectionError::syntax("COMMAND_INVALID - expected connection.tune-ok").into(),
            );
        };
        // The client may lower the limits; 0 means "no limit" and takes ours.
        if tune.frame_max != 0 && tune.frame_max < 4096 {
            return Err(AmqpError::connection(
                code::NOT_ALLOWED,
                format!(
                    "NOT_ALLOWED - frame_max {} is below the minimum of 4096",
                    tune.frame_max
                ),
            ));
        }
        if tune.frame_max > FRAME_MAX {
            return Err(AmqpError::connection(
                code::NOT_ALLOWED,
                format!(
                    "NOT_ALLOWED - frame_max {} is above the maximum of {FRAME_MAX}",
                    tune.frame_max
                ),
            ));
        }
        self.frame_max = if tune.frame_max == 0 {
            FRAME_MAX
        } else {
            tune.frame_max
        };
        self.heartbeat = tune.heartbeat;

        let Some(m) = self.expect_method(socket, "connection.open").await? else {
            return Ok(false);
        };
        let AMQPClass::Connection(connection::AMQPMethod::Open(open)) = m else {
            return Err(
                ConnectionError::syntax("COMMAND_INVALID - expected connection.open").into(),
            );
        };
        let vhost = open.virtual_host.as_str();
        let Some(found) = self.server.vhosts.get(vhost) else {
            return Err(AmqpError::connection(
                code::NOT_ALLOWED,
                format!("NOT_ALLOWED - vhost {vhost} not found"),
            ));
        };
        if !self.server.access.may_open(&self.user, vhost) {
            return Err(AmqpError::connection(
                code::NOT_ALLOWED,
                format!(
                    "NOT_ALLOWED - access to vhost '{vhost}' refused for user '{}'",
                    self.user
                ),
            ));
        }
        self.vhost = found;
        self.send(&method0(AMQPClass::Connection(
            connection::AMQPMethod::OpenOk(connection::OpenOk {}),
        )));
        self.flush(socket).await.map_err(io_error)?;
        Ok(true)
    }

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

    async fn run(
        &mut self,
        socket: &mut OwnedReadHalf,
        writer: &Sender<Vec<u8>>,
        events_tx: UnboundedSender<Event>,
        mut events_rx: UnboundedReceiver<Event>,
        mut close: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), AmqpError> {
        let beat = (self.heartbeat > 0).then(|| Duration::from_secs(u64::from(self.heartbeat)));
        let mut last_read = Instant::now();
        let mut last_write = Instant::now();
        let mut ticker = tokio::time::interval(beat.map_or(Duration::from_secs(3600), |b| {
            (b / 2).max(Duration::from_millis(500))
        }));
        let mut deleted = self.vhost.deleted();
        let vhost_gone = |vhost: &VHost| {
            AmqpError::connection(
                code::CONNECTION_FORCED,
                format!("CONNECTION_FORCED - vhost '{}' is deleted", vhost.name()),
            )
        };
        if *deleted.borrow_and_update() {
            return Err(vhost_gone(&self.vhost));
        }
        // Frames the client sent right behind connection.open were read with it.
        if !self.in_buf.is_empty() {
            let end = self.process_input(&events_tx).await?;
            self.hand_off(writer).await?;
            if end.is_some() {
                return Ok(());
            }
        }
        let mut alarms = self.server.alarms.watch();
        let mut may_close = true;
        let mut coalescing = coalesce::Coalescing::new(socket.as_ref().as_raw_fd());
        let mut last_input = Instant::now();
        let mut got: Option<usize> = None;
        loop {
            // Read straight into the input buffer (no copy from a scratch chunk).
            if self.in_buf.capacity() - self.in_buf.len() < READ_CHUNK / 4 {
                self.in_buf.reserve(READ_CHUNK);
            }
            tokio::select! {
                changed = close.changed(), if may_close => {
                    if changed.is_err() {
                        may_close = false; // nobody can close it from outside any more
                    } else if *close.borrow_and_update() {
                        return Err(AmqpError::connection(
                            code::CONNECTION_FORCED,
                            "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'",
                        ));
                    }
                }
                changed = alarms.changed() => {
                    if changed.is_ok() {
                        let state = *alarms.borrow_and_update();
                        self.on_alarm(state);
                    }
                }
                changed = deleted.changed() => {
                    if changed.is_err() || *deleted.borrow_and_update() {
                        return Err(vhost_gone(&self.vhost));
                    }
                }
                read = socket.read_buf(&mut self.in_buf), if self.may_read() => {
                    got = Some(read.map_err(io_error)?);
                }
                _ = tokio::time::sleep_until(last_input + coalesce::FALLBACK),
                    if coalescing.active() && self.may_read() =>
                {
                    // Input slowed below the raised mark: take what is there, and
                    // wake for every byte again until the rate is measured anew.
                    coalescing.off(Instant::now());
                    match coalescing.read_now(&mut self.in_buf) {
                        Ok(n) => got = Some(n),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(io_error(e)),
                    }
                    last_input = Instant::now();
                }
                Some(event) = events_rx.recv() => {
                    self.event(event);
                    while let Ok(event) = events_rx.try_recv() {
                        self.event(event);
                    }
                }
                _ = self.in_flight.answered(), if !self.may_read() => {}
                _ = ticker.tick() => {
                    if !self.may_read() {
                        // Not reading (blocked, or credit flow): the client's
                        // heartbeats wait in the socket, they are not missing.
                        last_read = Instant::now();
                    }
                    if let Some(b) = beat {
                        if last_read.elapsed() > b * 2 {
                            tracing::info!(peer = %self.peer, "missed heartbeats from the client: closing");
                            return Ok(());
                        }
                        if last_write.elapsed() >= b / 2 {
                            self.send(&AMQPFrame::Heartbeat);
                        }
                    }
                }
            }
            if let Some(n) = got.take() {
                if n == 0 {
                    return Ok(());
                }
                let now = Instant::now();
                (last_read, last_input) = (now, now);
                coalescing.on_read(n, now);
                match self.process_input(&events_tx).await? {
                    Some(End::ClientClosed) | Some(End::PeerGone) => {
                        self.hand_off(writer).await?;
                        return Ok(());
                    }
                    None => {}
                }
                if self.published {
                    let state = *alarms.borrow();
                    self.on_alarm(state);
                    self.published = false;
                }
            }
            if !self.out.is_empty() {
                self.hand_off(writer).await?;
                last_write = Instant::now();
            }
        }
    }

    /// Whether the connection reads its socket (its routed publishes are answered
    /// enough).
    fn may_read(&self) -> bool {
        !self.blocked && self.in_flight.bytes() < MAX_IN_FLIGHT_BYTES
    }

    /// RabbitMQ's resource alarm handling: a connection that publishes while an
    /// alarm is up stops being read and is told `connection.blocked` (if it said it
    /// understands it); once every alarm cleared it is read again and told
    /// `connection.unblocked`. A connection that does not publish (a consumer) is
    /// not held back: consuming is what frees memory and disk.
    fn on_alarm(&mut self, state: warren_resources::alarm::AlarmState) {
        if !state.raised() {
            self.blocked = false;
            if self.told_blocked {
                self.told_blocked = false;
                self.send(&method0(AMQPClass::Connection(
                    connection::AMQPMethod::Unblocked(connection::Unblocked {}),
                )));
            }
            return;
        }
        if !self.published && !self.blocked {
            return;
        }
        self.blocked = true;
        if self.hears_blocked && !self.told_blocked {
            self.told_blocked = true;
            tracing::info!(peer = %self.peer, "publisher blocked: {}", state.reason());
            self.send(&method0(AMQPClass::Connection(
                connection::AMQPMethod::Blocked(connection::Blocked {
                    reason: short(state.reason()),
                }),
            )));
        }
    }

    /// Handles every complete frame in the input buffer, then routes the publishes
    /// they completed.
    async fn process_input(
        &mut self,
        events: &UnboundedSender<Event>,
    ) -> Result<Option<End>, AmqpError> {
        // Frames are taken off with a cursor and the buffer shifted once: draining
        // per frame would move the rest of a 64 KiB read for every frame in it.
        let mut at = 0;
        let result = loop {
            let frame = match read_frame(&self.in_buf[at..], self.frame_max) {
                Ok(Some((frame, used))) => {
                    at += used;
                    frame
                }
                Ok(None) => break Ok(None),
                Err(e) => break Err(e),
            };
            match self.frame(frame, events).await {
                Ok(Some(end)) => break Ok(Some(end)),
                Ok(None) => {}
                Err(e) => break Err(e),
            }
        };
        self.in_buf.drain(..at);
        // Publishes completed before whatever ended the input are routed even when it
        // ended the connection (a client may publish and close in one write; a bad
        // frame does not undo the valid publishes before it).
        self.route_ready(events);
        result
    }

    async fn frame(
        &mut self,
        frame: AMQPFrame,
        events: &UnboundedSender<Event>,
    ) -> Result<Option<End>, AmqpError> {
        let n = frame.channel_id();
        if n != 0 && self.closing.contains(&n) {
            match frame {
                AMQPFrame::Method(_, AMQPClass::Channel(channel::AMQPMethod::CloseOk(_))) => {
                    self.closing.remove(&n);
                }
                // Both sides closed at once: answer theirs too.
                AMQPFrame::Method(_, AMQPClass::Channel(channel::AMQPMethod::Close(_))) => {
                    self.send(&AMQPFrame::Method(
                        n,
                        AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                    ));
                }
                _ => {}
            }
            return Ok(None);
        }
        let result = match frame {
            AMQPFrame::Heartbeat => Ok(()),
            AMQPFrame::Method(0, m) => return self.connection_method(m),
            AMQPFrame::Method(n, m) => self.channel_method(n, m, events).await,
            AMQPFrame::Header(n, h) => self.open_channel(n)?.header(h),
            AMQPFrame::Body(n, b) => self.open_channel(n)?.body(b),
            AMQPFrame::ProtocolHeader(_) => Err(ConnectionError::unexpected(
                "UNEXPECTED_FRAME - protocol header inside the connection",
            )
            .into()),
            AMQPFrame::InvalidHeartbeat(n) => Err(ConnectionError::unexpected(format!(
                "UNEXPECTED_FRAME - heartbeat on channel {n}"
            ))
            .into()),
        };
        match result {
            Ok(()) => Ok(None),
            Err(AmqpError::Channel(e)) => {
                self.channel_error(n, &e);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Closes channel `n` for an error: its deliveries go back to their queues, its
    /// frames are dropped until the client's close-ok.
    fn channel_error(&mut self, n: u16, e: &crate::error::ChannelError) {
        tracing::debug!(peer = %self.peer, channel = n, "channel error {}: {}", e.code, e.text);
        if let Some(mut ch) = self.channels.remove(&n) {
            ch.close();
        }
        self.closing.insert(n);
        self.send(&close_frame(n, e));
    }

    fn open_channel(&mut self, n: u16) -> Result<&mut AmqpChannel, AmqpError> {
        self.channels.get_mut(&n).ok_or_else(|| {
            AmqpError::connection(
                code::CHANNEL_ERROR,
                format!("CHANNEL_ERROR - expected 'channel.open' on channel {n}"),
            )
        })
    }

    fn connection_method(&mut self, m: AMQPClass) -> Result<Option<End>, AmqpError> {
        match m {
            AMQPClass::Connection(connection::AMQPMethod::Close(_)) => {
                self.send(&method0(AMQPClass::Connection(
                    connection::AMQPMethod::CloseOk(connection::CloseOk {}),
                )));
                Ok(Some(End::ClientClosed))
            }
            AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)) => Ok(Some(End::PeerGone)),
            other => Err(AmqpError::connection(
                code::COMMAND_INVALID,
                format!(
                    "COMMAND_INVALID - unexpected method {}.{} on channel 0",
                    other.get_amqp_class_id(),
                    other.get_amqp_method_id()
                ),
            )),
        }
    }

    async fn channel_method(
        &mut self,
        n: u16,
        m: AMQPClass,
        events: &UnboundedSender<Event>,
    ) -> Result<(), AmqpError> {
        if let AMQPClass::Channel(channel::AMQPMethod::Open(_)) = &m {
            if self.channels.contains_key(&n) {
                return Err(AmqpError::connection(
                    code::CHANNEL_ERROR,
                    format!("CHANNEL_ERROR - second 'channel.open' seen on channel {n}"),
                ));
            }
            if n > CHANNEL_MAX {
                return Err(AmqpError::connection(
                    code::CHANNEL_ERROR,
                    format!("CHANNEL_ERROR - channel {n} is above channel_max {CHANNEL_MAX}"),
                ));
            }
            let tx = events.clone();
            let sink_for = move |_id: ChannelId| -> ChannelSink {
                Arc::new(move |event: QueueEvent| {
                    let _ = tx.send(Event::Queue(n, event));
                })
            };
            let part = ConnectionPart {
                vhost: self.vhost.clone(),
                connection: self.id,
                frame_max: self.frame_max,
                user: self.user.as_str().into(),
                access: self.server.access.clone(),
                in_flight: self.in_flight.clone(),
            };
            let ch = AmqpChannel::new(n, part, sink_for);
            self.channels.insert(n, ch);
            self.send(&AMQPFrame::Method(
                n,
                AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
            ));
            return Ok(());
        }
        if let AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) = &m {
            // We closed it: now it is gone.
            if let Some(mut ch) = self.channels.remove(&n) {
                ch.close();
            }
            return Ok(());
        }
        let ch = self.open_channel(n)?;
        if ch.expects_content() {
            return Err(ConnectionError::unexpected(format!(
                "UNEXPECTED_FRAME - expected content header for class 60, got a method on channel {n}"
            ))
            .into());
        }
        // Publishes completed before this method go out first (order on a channel). A
        // run of publishes is routed as one batch (one mailbox message per queue, one
        // outcome task), capped so the first of a long read is not held up by the rest.
        let publish = matches!(&m, AMQPClass::Basic(basic::AMQPMethod::Publish(_)));
        if !publish || ch.ready_len() >= ROUTE_BATCH {
            self.route_ready(events);
        }
        let Some(ch) = self.channels.get_mut(&n) else {
            return Ok(());
        };
        match ch.method(m).await {
            Ok(Outcome::Send(bytes)) => self.out.extend_from_slice(&bytes),
            Ok(Outcome::Closed) => {
                if let Some(mut ch) = self.channels.remove(&n) {
                    ch.close();
                }
                self.send(&AMQPFrame::Method(
                    n,
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                ));
            }
            Err(AmqpError::Channel(e)) => self.channel_error(n, &e),
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Routes what each channel completed; outcomes come back as events.
    fn route_ready(&mut self, events: &UnboundedSender<Event>) {
        for (&n, ch) in self.channels.iter_mut() {
            let Some(routed) = ch.route_ready() else {
                continue;
            };
            self.published = true;
            // Nobody needs the outcomes: nothing waits for the queues (their credit
            // comes back by itself).
            let Some((routed, meta)) = routed else {
                continue;
            };
            let confirming = ch.confirm_mode();
            let tx = events.clone();
            tokio::spawn(async move {
                let outcomes = routed.await;
                // Without confirms and returns there is nothing to tell the client,
                // except a failed publish (it closes the channel).
                let needed = confirming
                    || outcomes.iter().any(|o| {
                        !matches!(o, PublishOutcome::Confirmed | PublishOutcome::Rejected(_))
                    });
                if needed {
                    let results = meta
                        .into_iter()
                        .zip(outcomes)
                        .map(|((seq, message), outcome)| (seq, message, outcome))
                        .collect();
                    let _ = tx.send(Event::Published(n, results));
                }
            });
        }
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Queue(n, QueueEvent::Deliver(deliveries)) => {
                // Encoded straight into the output buffer: a body is copied once.
                if let Some(ch) = self.channels.get_mut(&n) {
                    ch.deliver(deliveries, &mut self.out);
                }
            }
            Event::Queue(n, QueueEvent::ConsumerCancelled { tag, .. }) => {
                if let Some(frame) = self
                    .channels
                    .get_mut(&n)
                    .and_then(|ch| ch.consumer_cancelled(&tag))
                {
                    self.send(&frame);
                }
            }
            Event::Queue(_, QueueEvent::Traced(_)) => {}
            Event::Published(n, results) => self.published(n, results),
        }
    }

    /// Returns unroutable mandatory messages, then acks or nacks confirms.
    fn published(&mut self, n: u16, results: Vec<(Option<u64>, Option<Message>, PublishOutcome)>) {
        let Some(ch) = self.channels.get_mut(&n) else {
            return;
        };
        let out = &mut self.out;
        let mut failed = None;
        let mut acked = Vec::new();
        for (seq, message, outcome) in results {
            match &outcome {
                PublishOutcome::Unroutable => {
                    if let Some(m) = &message {
                        let head = AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
                            reply_code: 312,
                            reply_text: short("NO_ROUTE"),
                            exchange: short(&m.exchange),
                            routing_key: short(&m.routing_key),
                        }));
                        ch.content_frames(head, m, out);
                    }
                }
                PublishOutcome::Failed(e) => {
                    failed.get_or_insert_with(|| e.clone());
                }
                _ => {}
            }
            if let Some(seq) = seq {
                ch.outstanding.remove(&seq);
                // A publish that failed (no such exchange) gets neither ack nor nack:
                // the channel closes, which fails it at the client, as in RabbitMQ.
                if matches!(outcome, PublishOutcome::Failed(_)) {
                    continue;
                }
                if matches!(outcome, PublishOutcome::Rejected(_)) {
                    let nack = basic::AMQPMethod::Nack(basic::Nack {
                        delivery_tag: seq,
                        multiple: false,
                        requeue: false,
                    });
                    write_frame(&AMQPFrame::Method(n, AMQPClass::Basic(nack)), out);
                } else {
                    acked.push(seq);
                }
            }
        }
        // As RabbitMQ: one `multiple` ack when it settles exactly these (nothing lower
        // is still unconfirmed), one ack each otherwise.
        let top = acked.iter().max().copied();
        let acks: Vec<(u64, bool)> = match top {
            Some(t) if acked.len() > 1 && ch.outstanding.range(..t).next().is_none() => {
                vec![(t, true)]
            }
            _ => acked.into_iter().map(|seq| (seq, false)).collect(),
        };
        for (delivery_tag, multiple) in acks {
            let ack = basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag,
                multiple,
            });
            write_frame(&AMQPFrame::Method(n, AMQPClass::Basic(ack)), out);
        }
        if let Some(e) = failed {
            // As RabbitMQ: publishing to a missing exchange closes the channel (404).
            let e = match AmqpError::from(e).at(60, 40) {
                AmqpError::Channel(c) => c,
                AmqpError::Connection(c) => crate::error::ChannelError {
                    code: c.code,
                    text: c.text,
                    class_id: c.class_id,
                    method_id: c.method_id,
                },
            };
            self.channel_error(n, &e);
        }
    }

    /// Queues the `connection.close` for an error.
    fn close_with(&mut self, e: AmqpError) {
        let (code, text, class_id, method_id) = match &e {
            AmqpError::Connection(c) => (c.code, c.text.clone(), c.class_id, c.method_id),
            AmqpError::Channel(c) => (c.code, c.text.clone(), c.class_id, c.method_id),
        };
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
    async fn fail(&mut self, socket: &mut TcpStream, e: AmqpError) {
        self.close_with(e);
        let _ = self.flush(socket).await;
        await_close_ok(socket, std::mem::take(&mut self.in_buf)).await;
    }

    /// The connection ended: every channel gives its deliveries back, exclusive
    /// queues go.
    async fn close_all(&mut self) {
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
        let mut scratch = [0u8; 4096];
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

/// The writer task: writes what the connection hands it, several buffers per write
/// when they queue up, until the connection drops its sender or the socket fails.
async fn write_loop(mut socket: OwnedWriteHalf, mut writes: Receiver<Vec<u8>>) {
    while let Some(mut bytes) = writes.recv().await {
        while let Ok(more) = writes.try_recv() {
            bytes.extend_from_slice(&more);
        }
        if socket.write_all(&bytes).await.is_err() {
            break;
        }
    }
    let _ = socket.shutdown().await;
}

/// Free space the input buffer has before each read.
const READ_CHUNK: usize = 64 * 1024;

fn io_error(e: std::io::Error) -> AmqpError {
    AmqpError::connection(code::CONNECTION_FORCED, format!("socket error: {e}"))
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
