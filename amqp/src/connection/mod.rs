//! One AMQP connection: [`serve_until`] runs the handshake (`handshake.rs`), then a
//! loop over socket input, queue events and publish outcomes, and heartbeats. Frames
//! that arrive together are handled together: their publishes are routed as one batch
//! per channel, their replies written in one write.
//!
//! | file | concern |
//! | --- | --- |
//! | `mod.rs` | [`Server`], the limits, the `Connection` state, the frame loop, the writer task |
//! | `handshake.rs` | protocol header, start / start-ok (PLAIN, AMQPLAIN), tune, open |
//! | `channels.rs` | channel.open and close-ok, a channel's methods and content frames |
//! | `published.rs` | routing completed publishes; their outcomes: basic.return, confirm acks and nacks |
//! | `flow.rs` | when the socket is read: credit (bytes in flight) and resource alarms (connection.blocked) |
//! | `close.rs` | connection.close either way, a channel closed for an error, the end of a connection |
//! | `tests.rs` | (tests) channels and their events driven in this process, without a socket |

mod channels;
mod close;
mod flow;
mod handshake;
mod published;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{channel, AMQPClass};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
#[cfg(test)]
use tokio::net::TcpStream;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::mpsc::{Receiver, Sender};
use tokio::time::Instant;
use warren_access::AccessControl;
use warren_actors::channel::PublishOutcome;
use warren_actors::delivery::{next_channel_id, ChannelId, QueueEvent};
use warren_actors::message::Message;
use warren_actors::queue::InFlight;
use warren_actors::vhost::VHost;
use warren_actors::vhosts::VHosts;

use crate::channel::AmqpChannel;
use crate::coalesce;
use crate::codec::{read_frame, write_frame};
use crate::error::AmqpError;
use crate::socket::Socket;

/// What every connection of a listener shares.
pub struct Server {
    /// The node's vhosts: `connection.open` picks one.
    pub vhosts: VHosts,
    /// The node's memory and disk alarms: publishers are blocked while one is up.
    pub alarms: warren_resources::alarm::Alarms,
    /// Users and permissions: login, vhost access, each method's checks.
    pub access: AccessControl,
    /// The `version` the server properties announce.
    pub product_version: String,
    /// The `cluster_name` the server properties announce.
    pub node_name: String,
    /// The node's open connections (shared by its listeners, read by the management
    /// API and the metrics).
    pub connections: crate::registry::Connections,
    /// The tasks that serve them, by their names in the tree (shared by its
    /// listeners, read by the debug shell).
    pub tasks: crate::ConnectionTasks,
}

/// The highest channel number a connection offers in `connection.tune`.
pub const CHANNEL_MAX: u16 = 2047;
/// The largest frame a connection offers in `connection.tune` (RabbitMQ's default).
pub const FRAME_MAX: u32 = 131_072;
/// The heartbeat interval a connection offers in `connection.tune`, in seconds.
pub const HEARTBEAT_SECS: u16 = 60;
/// Buffers the connection may queue for its writer before it waits for it.
const WRITER_QUEUE: usize = 64;

/// Bytes handed to the writer task and not yet written to the socket, at most: what a
/// client that reads slowly, or not at all, can make the node hold beyond the socket's
/// own buffers.
const WRITER_BYTES: usize = 4 << 20;

/// The writer task's inbox: buffers to write in order, and the budget of
/// [`WRITER_BYTES`] they take until written.
pub(super) struct Writer {
    buffers: Sender<Vec<u8>>,
    budget: Arc<tokio::sync::Semaphore>,
}

/// What a buffer takes of the writer's budget (a larger one takes all of it).
fn budget_of(buffer: &[u8]) -> u32 {
    buffer.len().min(WRITER_BYTES) as u32
}
/// A handshake that takes longer is abandoned (RabbitMQ: 10 s).
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Events that reach the connection from outside its socket. Each names its channel
/// by number and by id (the [`AmqpChannel::id`] of that channel's life): a client may
/// close a channel and open its number again while events of the old one are on
/// their way, and those are dropped.
enum Event {
    /// From a queue to one of the channels (deliveries, a consumer cancelled).
    Queue(u16, ChannelId, QueueEvent),
    /// A routed batch's outcomes, in publish order, with what a return needs.
    Published(
        u16,
        ChannelId,
        Vec<(Option<u64>, Option<Message>, PublishOutcome)>,
    ),
}

/// Serves one TCP connection until it closes (the in-process fuzz test's entry).
#[cfg(test)]
pub async fn serve(socket: TcpStream, peer: SocketAddr, server: Arc<Server>) {
    let (_never, closed) = tokio::sync::watch::channel(false);
    serve_until(socket, peer, server, closed).await
}

/// Serves one TCP connection until it closes, or until `close` turns true: then the
/// client gets `connection.close` 320 and its channels' deliveries are requeued.
pub async fn serve_until<S: Socket>(
    mut socket: S,
    peer: SocketAddr,
    server: Arc<Server>,
    close: tokio::sync::watch::Receiver<bool>,
) {
    socket.set_nodelay();
    let mut conn = Connection::new(peer, server);
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
    conn.register(socket.local_addr(), socket.coalescible_fd().is_none());
    // From here on a writer task owns the socket's write half: bytes handed to it
    // while it is writing go out together in its next write, so a busy connection
    // makes few large writes instead of one per delivery.
    let fd = socket.coalescible_fd();
    let (mut reader, writer_half) = socket.split();
    let (buffers, writes) = tokio::sync::mpsc::channel(WRITER_QUEUE);
    let budget = Arc::new(tokio::sync::Semaphore::new(WRITER_BYTES));
    let writer = Writer {
        buffers,
        budget: budget.clone(),
    };
    let mut writer_task = tokio::spawn(write_loop(writer_half, writes, budget));
    let ended = conn
        .run(&mut reader, fd, &writer, events_tx, events_rx, close)
        .await;
    // Whatever ended it, its exclusive queues are gone for everybody else now.
    conn.vhost.owner_leaving(conn.id);
    match ended {
        Err(e @ AmqpError::WriteStalled { .. }) => {
            // Nothing more can reach the client: no close to send, no close-ok to
            // wait for, and the writer is stuck in its write.
            tracing::warn!(peer = %peer, "{e}");
            writer_task.abort();
        }
        Err(e) => conn.fail_after_open(&mut reader, &writer, e).await,
        Ok(()) => {}
    }
    drop(writer);
    // What is left goes out unless the client stopped reading.
    if tokio::time::timeout(conn.write_stall(), &mut writer_task)
        .await
        .is_err()
    {
        tracing::warn!(peer = %peer, "the client read nothing of the connection's last frames: dropping them");
        writer_task.abort();
    }
    conn.close_all().await;
    if conn.client_closed {
        // As RabbitMQ: after close-ok the node reads (and drops) what the client still
        // sends until it closes its socket, so that frames it had buffered (a burst of
        // publishes right before the close) do not meet a closed socket: a reset
        // would fail its writes (EPIPE) and its close would never complete.
        drain_until_closed(&mut reader).await;
    }
    tracing::debug!(peer = %peer, "AMQP connection closed");
}

/// One open connection: its buffers, channels, credit and alarm state.
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
    /// The highest channel number the handshake settled on.
    channel_max: u16,
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
    /// The client sent `connection.close` and was answered.
    client_closed: bool,
    /// Frames read since the handshake (what shows the client is alive).
    frames_in: u64,
    /// What the client said about itself in `connection.start-ok`.
    client_properties: warren_actors::message::FieldTable,
    /// Its entry in the node's registry (from the end of the handshake on).
    registration: Option<crate::registry::ConnectionGuard>,
}

/// Why the loop ended without an error.
enum End {
    /// The client sent connection.close (and got close-ok).
    ClientClosed,
    /// The client answered the node's connection.close.
    PeerGone,
}

/// A method frame on channel 0 (the connection class).
fn method0(class: AMQPClass) -> AMQPFrame {
    AMQPFrame::Method(0, class)
}

impl Connection {
    /// A connection from `peer` before its handshake: no user, the default vhost.
    fn new(peer: SocketAddr, server: Arc<Server>) -> Connection {
        Connection {
            peer,
            // Empty until used: the handshake needs a few hundred bytes of each.
            // Then the loop reserves its read chunk in `in_buf`, and `hand_off`
            // sizes each next `out` by the last (4-64 KiB): an idle connection's
            // output buffer stays at 4 KiB instead of 64 (every page it touched
            // counts in the node's memory).
            in_buf: Vec::new(),
            out: Vec::new(),
            channels: HashMap::new(),
            closing: HashSet::new(),
            frame_max: FRAME_MAX,
            channel_max: CHANNEL_MAX,
            heartbeat: 0,
            id: next_channel_id(),
            in_flight: InFlight::new(),
            user: String::new(),
            vhost: server.vhosts.default_vhost(),
            hears_blocked: false,
            published: false,
            blocked: false,
            told_blocked: false,
            client_closed: false,
            frames_in: 0,
            client_properties: Default::default(),
            registration: None,
            server,
        }
    }

    /// Enters the connection in the node's registry (its handshake is done).
    fn register(&mut self, local: Option<SocketAddr>, tls: bool) {
        let connected_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let opened = crate::registry::Opened {
            peer: self.peer,
            local,
            tls,
            user: self.user.clone(),
            vhost: self.vhost.name().to_string(),
            client_properties: std::mem::take(&mut self.client_properties),
            frame_max: self.frame_max,
            channel_max: self.channel_max,
            heartbeat: self.heartbeat,
            connected_at,
        };
        self.registration = Some(self.server.connections.register(self.id, opened));
    }

    /// The registry entry (`None` only before the handshake ends).
    fn entry(&self) -> Option<&crate::registry::ConnectionEntry> {
        self.registration.as_ref().map(|r| &*r.entry)
    }

    /// Queues a frame for the next write.
    fn send(&mut self, frame: &AMQPFrame) {
        write_frame(frame, &mut self.out);
    }

    /// Writes what is queued to the socket itself (before the writer task exists).
    async fn flush(&mut self, socket: &mut (impl AsyncWrite + Unpin)) -> std::io::Result<()> {
        if !self.out.is_empty() {
            socket.write_all(&self.out).await?;
            socket.flush().await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Hands what is to be sent to the writer task (waits while it is far behind).
    async fn hand_off(&mut self, writer: &Writer) -> Result<(), AmqpError> {
        if self.out.is_empty() {
            return Ok(());
        }
        // The next buffer is sized by this one (a connection that sends confirms
        // needs a few KiB, one that delivers up to 64 KiB): a fresh 64 KiB buffer
        // each time cost a busy node page faults.
        let next = self.out.len().next_power_of_two().clamp(4 << 10, 64 << 10);
        let bytes = std::mem::replace(&mut self.out, Vec::with_capacity(next));
        if let Some(entry) = self.entry() {
            crate::registry::bump(&entry.bytes_out, bytes.len() as u64);
            crate::registry::bump(&entry.writes_out, 1);
        }
        let stall = self.write_stall();
        let handed = async {
            let room = writer
                .budget
                .acquire_many(budget_of(&bytes))
                .await
                .map_err(|_| AmqpError::SocketClosed)?;
            // Given back by the writer task once the buffer is written.
            room.forget();
            writer
                .buffers
                .send(bytes)
                .await
                .map_err(|_| AmqpError::SocketClosed)
        };
        match tokio::time::timeout(stall, handed).await {
            Ok(Ok(())) => {
                // What windowed consumers were sent in this buffer is the writer's now.
                for ch in self.channels.values_mut() {
                    ch.report_written();
                }
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            // Nothing the node wrote left for that long: the client reads nothing.
            Err(_) => Err(AmqpError::WriteStalled {
                secs: stall.as_secs(),
            }),
        }
    }

    /// How long the node waits for a client that reads nothing of what it is sent:
    /// the heartbeat timeout (two intervals), or [`WRITE_STALL_WITHOUT_HEARTBEATS`].
    fn write_stall(&self) -> Duration {
        if self.heartbeat > 0 {
            Duration::from_secs(2 * u64::from(self.heartbeat))
        } else {
            WRITE_STALL_WITHOUT_HEARTBEATS
        }
    }

    /// The open connection's loop, until the client closes or goes (`Ok`) or an
    /// error closes the connection (`Err`).
    #[allow(clippy::too_many_arguments)]
    async fn run(
        &mut self,
        socket: &mut (impl AsyncRead + Unpin),
        fd: Option<std::os::fd::RawFd>,
        writer: &Writer,
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
        let vhost_gone = |vhost: &VHost| AmqpError::VhostDeleted {
            vhost: vhost.name().to_string(),
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
        // Plain TCP only: coalescing reads the socket itself.
        let mut coalescing = fd.map(coalesce::Coalescing::new);
        let mut last_input = Instant::now();
        let mut got: Option<usize> = None;
        let registered = self.registration.as_ref().map(|r| r.entry.clone());
        let closed_by_operator = async {
            match &registered {
                Some(entry) => entry.close_requested().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(closed_by_operator);
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
                        return Err(AmqpError::Shutdown);
                    }
                }
                reason = &mut closed_by_operator => {
                    return Err(AmqpError::ClosedByOperator { reason });
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
                    if coalescing.as_ref().is_some_and(|c| c.active()) && self.may_read() =>
                {
                    // Input slowed below the raised mark: take what is there, and
                    // wake for every byte again until the rate is measured anew.
                    if let Some(c) = coalescing.as_mut() {
                        c.off(Instant::now());
                        match c.read_now(&mut self.in_buf) {
                            Ok(n) => got = Some(n),
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(e) => return Err(io_error(e)),
                        }
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
                            tracing::warn!(peer = %self.peer, "missed heartbeats from the client: closing");
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
                if let Some(entry) = &registered {
                    crate::registry::bump(&entry.bytes_in, n as u64);
                }
                let now = Instant::now();
                last_input = now;
                if let Some(c) = coalescing.as_mut() {
                    c.on_read(n, now);
                }
                // Only whole frames show the client alive: one that sends a frame a
                // byte at a time is cut off after the heartbeat timeout.
                let frames_before = self.frames_in;
                let end = self.process_input(&events_tx).await?;
                if self.frames_in > frames_before {
                    last_read = now;
                }
                match end {
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
                    self.frames_in += 1;
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
        self.route_ready(events).await;
        if matches!(result, Ok(Some(End::ClientClosed))) {
            // Its exclusive queues are gone for everybody else from now on.
            self.vhost.owner_leaving(self.id);
            // Then the channels close, before the close-ok goes out, as on RabbitMQ:
            // their consumers are gone and their unacked messages back in their
            // queues by the time the client can reconnect (and declare an
            // auto-delete queue again: it finds it either alive or gone).
            for (_, mut ch) in self.channels.drain() {
                ch.close();
            }
        }
        result
    }

    /// One frame: to the connection, to its channel, or dropped (a closing channel).
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
                    self.send_channel_close_ok(n);
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
            AMQPFrame::ProtocolHeader(_) => Err(AmqpError::ProtocolHeaderInside),
            AMQPFrame::InvalidHeartbeat(n) => Err(AmqpError::HeartbeatOnChannel { channel: n }),
        };
        match result {
            Ok(()) => Ok(None),
            Err(e) if !e.closes_connection() => {
                self.channel_error(n, &e);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// What a queue or a publish outcome brings: frames for the client. Events of a
    /// channel that closed are dropped (its queues requeued what it had).
    fn event(&mut self, event: Event) {
        match event {
            Event::Queue(n, id, QueueEvent::Deliver(deliveries)) => {
                // Encoded straight into the output buffer: a body is copied once.
                if let Some(ch) = channel_of(&mut self.channels, n, id) {
                    ch.deliver(deliveries, &mut self.out);
                }
            }
            Event::Queue(n, id, QueueEvent::ConsumerCancelled { tag, .. }) => {
                if let Some(frame) =
                    channel_of(&mut self.channels, n, id).and_then(|ch| ch.consumer_cancelled(&tag))
                {
                    self.send(&frame);
                }
            }
            Event::Queue(_, _, QueueEvent::Traced(_)) => {}
            // (An AMQP channel asks for deliveries, never for runs of records.)
            Event::Queue(_, _, QueueEvent::Records(run)) => {
                tracing::error!(queue = %run.queue, "a run of records for an AMQP consumer, which asked for none");
            }
            Event::Published(n, id, results) => self.published(n, id, results),
        }
    }
}

/// Channel `n` if it is open and is the channel `id`, not a later one that reuses its
/// number (one integer compared).
fn channel_of(
    channels: &mut HashMap<u16, AmqpChannel>,
    n: u16,
    id: ChannelId,
) -> Option<&mut AmqpChannel> {
    channels.get_mut(&n).filter(|ch| ch.id() == id)
}

/// The writer task: writes what the connection hands it, several buffers per write
/// when they queue up, until the connection drops its sender or the socket fails.
async fn write_loop(
    mut socket: impl AsyncWrite + Unpin,
    mut writes: Receiver<Vec<u8>>,
    budget: Arc<tokio::sync::Semaphore>,
) {
    let mut queued: Vec<Vec<u8>> = Vec::with_capacity(WRITEV_BUFFERS);
    while let Some(first) = writes.recv().await {
        queued.push(first);
        while queued.len() < WRITEV_BUFFERS {
            match writes.try_recv() {
                Ok(more) => queued.push(more),
                Err(_) => break,
            }
        }
        // A flush after each write: TLS (rustls) may hold written bytes in its own
        // buffer until flushed (a no-op on plain TCP).
        if write_all_vectored(&mut socket, &queued).await.is_err() || socket.flush().await.is_err()
        {
            break;
        }
        let written: u32 = queued.iter().map(|b| budget_of(b)).sum();
        budget.add_permits(written as usize);
        queued.clear();
    }
    let _ = socket.shutdown().await;
}

/// Most buffers one vectored write takes (well under the kernel's IOV_MAX).
const WRITEV_BUFFERS: usize = 64;

/// Writes every buffer, in order, with vectored writes: buffers that queued up while
/// the socket was busy go out together without being copied into one.
async fn write_all_vectored(
    socket: &mut (impl AsyncWrite + Unpin),
    buffers: &[Vec<u8>],
) -> std::io::Result<()> {
    let (mut index, mut offset) = (0, 0);
    while index < buffers.len() {
        let slices: Vec<std::io::IoSlice<'_>> = std::iter::once(&buffers[index][offset..])
            .chain(buffers[index + 1..].iter().map(Vec::as_slice))
            .map(std::io::IoSlice::new)
            .collect();
        let mut written = socket.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        // Advance past what went out.
        while index < buffers.len() {
            let left = buffers[index].len() - offset;
            if written < left {
                offset += written;
                break;
            }
            written -= left;
            index += 1;
            offset = 0;
        }
    }
    Ok(())
}

/// How long a client without heartbeats may leave the node's writes unread before it
/// is disconnected (RabbitMQ's `send_timeout` is 15 s; a client with heartbeats gets
/// its heartbeat timeout).
const WRITE_STALL_WITHOUT_HEARTBEATS: Duration = Duration::from_secs(30);

/// How long a client that was answered `close-ok` has to close its socket.
const CLOSE_DRAIN: Duration = Duration::from_secs(10);

/// Reads and drops what comes until the client closes its socket, for
/// [`CLOSE_DRAIN`] at most.
async fn drain_until_closed(reader: &mut (impl AsyncRead + Unpin)) {
    let _ = tokio::time::timeout(CLOSE_DRAIN, async {
        let mut scratch = vec![0u8; 16 * 1024];
        while let Ok(n) = reader.read(&mut scratch).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Free space the input buffer has before each read.
const READ_CHUNK: usize = 64 * 1024;

/// A socket failure: the connection ends.
fn io_error(e: std::io::Error) -> AmqpError {
    AmqpError::Socket {
        reason: e.to_string(),
    }
}
