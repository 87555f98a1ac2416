//! [`Connections`]: the node's open AMQP connections and their channels and
//! consumers, with their counters, as the management API and the metrics show them.
//!
//! A connection registers once its handshake is done and is removed when it ends; a
//! channel registers when it opens and is removed when it closes (its guard's drop).
//! Counters are relaxed atomics bumped by the connection's own task (one writer,
//! uncontended), so the message path pays a few nanoseconds for them. What a
//! closed channel counted moves to the node's totals, so that node-wide counts never
//! go backwards.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use warren_actors::delivery::ChannelId;
use warren_actors::message::FieldTable;

/// The node's open AMQP connections (cheap to clone; one per node, shared by its
/// listeners and read by the management API).
#[derive(Clone, Default)]
pub struct Connections(Arc<Shared>);

#[derive(Default)]
struct Shared {
    open: RwLock<BTreeMap<ChannelId, Arc<ConnectionEntry>>>,
    /// What channels that closed counted.
    retired: Counts,
    churn: Churn,
}

/// How many connections and channels were opened and closed since the node started.
#[derive(Default)]
struct Churn {
    connections_opened: AtomicU64,
    connections_closed: AtomicU64,
    channels_opened: AtomicU64,
    channels_closed: AtomicU64,
}

/// A snapshot of `Churn`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChurnCounts {
    /// Connections opened (handshake done).
    pub connections_opened: u64,
    /// Connections ended.
    pub connections_closed: u64,
    /// Channels opened.
    pub channels_opened: u64,
    /// Channels closed.
    pub channels_closed: u64,
}

/// Message counters of a channel (RabbitMQ's `message_stats` names).
#[derive(Default)]
pub struct Counts {
    /// Messages published (content complete).
    pub publish: AtomicU64,
    /// Publisher confirms (basic.ack) sent for them.
    pub confirm: AtomicU64,
    /// Deliveries to consumers that ack.
    pub deliver: AtomicU64,
    /// Deliveries to consumers that do not ack.
    pub deliver_no_ack: AtomicU64,
    /// basic.get answers with a message, acked later.
    pub get: AtomicU64,
    /// basic.get answers with a message and no ack.
    pub get_no_ack: AtomicU64,
    /// Messages acked by the client.
    pub ack: AtomicU64,
    /// Deliveries that were redeliveries.
    pub redeliver: AtomicU64,
    /// Mandatory messages returned (no queue took them).
    pub return_unroutable: AtomicU64,
    /// Messages rejected or nacked by the client.
    pub reject: AtomicU64,
}

/// A snapshot of [`Counts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessageCounts {
    /// See [`Counts::publish`].
    pub publish: u64,
    /// See [`Counts::confirm`].
    pub confirm: u64,
    /// See [`Counts::deliver`].
    pub deliver: u64,
    /// See [`Counts::deliver_no_ack`].
    pub deliver_no_ack: u64,
    /// See [`Counts::get`].
    pub get: u64,
    /// See [`Counts::get_no_ack`].
    pub get_no_ack: u64,
    /// See [`Counts::ack`].
    pub ack: u64,
    /// See [`Counts::redeliver`].
    pub redeliver: u64,
    /// See [`Counts::return_unroutable`].
    pub return_unroutable: u64,
    /// See [`Counts::reject`].
    pub reject: u64,
}

impl MessageCounts {
    /// Every delivery and get (RabbitMQ's `deliver_get`).
    pub fn deliver_get(&self) -> u64 {
        self.deliver + self.deliver_no_ack + self.get + self.get_no_ack
    }
}

impl std::ops::AddAssign for MessageCounts {
    fn add_assign(&mut self, o: MessageCounts) {
        self.publish += o.publish;
        self.confirm += o.confirm;
        self.deliver += o.deliver;
        self.deliver_no_ack += o.deliver_no_ack;
        self.get += o.get;
        self.get_no_ack += o.get_no_ack;
        self.ack += o.ack;
        self.redeliver += o.redeliver;
        self.return_unroutable += o.return_unroutable;
        self.reject += o.reject;
    }
}

/// Adds `n` to a counter.
pub fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counts {
    /// What the counters hold now.
    pub fn snapshot(&self) -> MessageCounts {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MessageCounts {
            publish: r(&self.publish),
            confirm: r(&self.confirm),
            deliver: r(&self.deliver),
            deliver_no_ack: r(&self.deliver_no_ack),
            get: r(&self.get),
            get_no_ack: r(&self.get_no_ack),
            ack: r(&self.ack),
            redeliver: r(&self.redeliver),
            return_unroutable: r(&self.return_unroutable),
            reject: r(&self.reject),
        }
    }

    fn add(&self, c: MessageCounts) {
        bump(&self.publish, c.publish);
        bump(&self.confirm, c.confirm);
        bump(&self.deliver, c.deliver);
        bump(&self.deliver_no_ack, c.deliver_no_ack);
        bump(&self.get, c.get);
        bump(&self.get_no_ack, c.get_no_ack);
        bump(&self.ack, c.ack);
        bump(&self.redeliver, c.redeliver);
        bump(&self.return_unroutable, c.return_unroutable);
        bump(&self.reject, c.reject);
    }
}

/// What a connection is, fixed once its handshake is done.
#[derive(Clone, Debug)]
pub struct Opened {
    /// The client's address.
    pub peer: SocketAddr,
    /// The node's address the client connected to.
    pub local: Option<SocketAddr>,
    /// Over TLS (`--amqps-listen`).
    pub tls: bool,
    /// The authenticated user.
    pub user: String,
    /// The vhost it opened.
    pub vhost: String,
    /// What the client said about itself in `connection.start-ok`.
    pub client_properties: FieldTable,
    /// The negotiated largest frame.
    pub frame_max: u32,
    /// The negotiated highest channel number.
    pub channel_max: u16,
    /// The negotiated heartbeat interval, in seconds (0: none).
    pub heartbeat: u16,
    /// When the handshake finished, in ms since the Unix epoch.
    pub connected_at: u64,
}

/// One open connection.
pub struct ConnectionEntry {
    /// The connection's id (the owner id of its exclusive queues).
    pub id: ChannelId,
    /// RabbitMQ's connection name: `PEER -> LOCAL`.
    pub name: String,
    /// What it is.
    pub opened: Opened,
    /// Bytes read from the socket.
    pub bytes_in: AtomicU64,
    /// Bytes handed to the socket.
    pub bytes_out: AtomicU64,
    /// Frames read.
    pub frames_in: AtomicU64,
    /// Writes handed to the socket.
    pub writes_out: AtomicU64,
    /// Not reading its socket because a resource alarm is up.
    pub blocked: AtomicBool,
    channels: Mutex<BTreeMap<u16, Arc<ChannelEntry>>>,
    /// Set (with a reason) to close the connection from outside.
    close: tokio::sync::watch::Sender<Option<String>>,
}

/// A consumer as a channel registered it.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsumerEntry {
    /// The queue it consumes from.
    pub queue: String,
    /// Whether deliveries wait for an ack.
    pub ack_required: bool,
    /// Exclusive consumer.
    pub exclusive: bool,
    /// Its prefetch (0: unlimited).
    pub prefetch: u32,
    /// Its `basic.consume` arguments.
    pub arguments: FieldTable,
}

/// One open channel.
pub struct ChannelEntry {
    /// The channel number the client chose.
    pub number: u16,
    /// The channel's id for its queues.
    pub id: ChannelId,
    /// Its message counters.
    pub counts: Counts,
    /// `basic.qos global=false`.
    pub prefetch: AtomicU32,
    /// `basic.qos global=true`.
    pub global_prefetch: AtomicU32,
    /// In confirm mode.
    pub confirm: AtomicBool,
    /// In tx mode.
    pub transactional: AtomicBool,
    /// Deliveries not yet settled.
    pub unacked: AtomicU64,
    consumers: Mutex<BTreeMap<String, ConsumerEntry>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ChannelEntry {
    /// Registers a consumer (basic.consume).
    pub fn add_consumer(&self, tag: &str, consumer: ConsumerEntry) {
        lock(&self.consumers).insert(tag.to_string(), consumer);
    }

    /// Forgets a consumer (cancelled by either side).
    pub fn remove_consumer(&self, tag: &str) {
        lock(&self.consumers).remove(tag);
    }

    /// Its consumers by tag.
    pub fn consumers(&self) -> Vec<(String, ConsumerEntry)> {
        lock(&self.consumers)
            .iter()
            .map(|(t, c)| (t.clone(), c.clone()))
            .collect()
    }
}

impl ConnectionEntry {
    /// Its open channels, by number.
    pub fn channels(&self) -> Vec<Arc<ChannelEntry>> {
        lock(&self.channels).values().cloned().collect()
    }

    /// Closes the connection: the client gets `connection.close` 320 with `reason`.
    pub fn close(&self, reason: &str) {
        self.close.send_replace(Some(reason.to_string()));
    }

    /// Waits until somebody asks the connection to close; the reason.
    pub async fn close_requested(&self) -> String {
        let mut rx = self.close.subscribe();
        loop {
            if let Some(reason) = rx.borrow_and_update().clone() {
                return reason;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// A connection's registration: removes it from the registry when dropped.
pub struct ConnectionGuard {
    shared: Arc<Shared>,
    /// The registered connection.
    pub entry: Arc<ConnectionEntry>,
}

/// A channel's registration: removes it (and moves its counts to the node's totals)
/// when dropped.
pub struct ChannelGuard {
    shared: Arc<Shared>,
    connection: Arc<ConnectionEntry>,
    /// The registered channel.
    pub entry: Arc<ChannelEntry>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut open = self.shared.open.write().unwrap_or_else(|p| p.into_inner());
        open.remove(&self.entry.id);
        bump(&self.shared.churn.connections_closed, 1);
    }
}

impl Drop for ChannelGuard {
    fn drop(&mut self) {
        // Under the registry's write lock: a reader of the totals sees the channel's
        // counts either in it or in `retired`, never in neither (counters that dip
        // look like a reset to Prometheus).
        let _open = self.shared.open.write().unwrap_or_else(|p| p.into_inner());
        let mut channels = lock(&self.connection.channels);
        if channels
            .get(&self.entry.number)
            .is_some_and(|c| Arc::ptr_eq(c, &self.entry))
        {
            channels.remove(&self.entry.number);
        }
        drop(channels);
        self.shared.retired.add(self.entry.counts.snapshot());
        bump(&self.shared.churn.channels_closed, 1);
    }
}

impl ConnectionGuard {
    /// Registers a channel of this connection.
    pub fn open_channel(&self, number: u16, id: ChannelId) -> ChannelGuard {
        let entry = Arc::new(ChannelEntry {
            number,
            id,
            counts: Counts::default(),
            prefetch: AtomicU32::new(0),
            global_prefetch: AtomicU32::new(0),
            confirm: AtomicBool::new(false),
            transactional: AtomicBool::new(false),
            unacked: AtomicU64::new(0),
            consumers: Mutex::new(BTreeMap::new()),
        });
        lock(&self.entry.channels).insert(number, entry.clone());
        bump(&self.shared.churn.channels_opened, 1);
        ChannelGuard {
            shared: self.shared.clone(),
            connection: self.entry.clone(),
            entry,
        }
    }
}

impl Connections {
    /// Registers a connection whose handshake is done.
    pub fn register(&self, id: ChannelId, opened: Opened) -> ConnectionGuard {
        let name = match opened.local {
            Some(local) => format!("{} -> {local}", opened.peer),
            None => opened.peer.to_string(),
        };
        let entry = Arc::new(ConnectionEntry {
            id,
            name,
            opened,
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            frames_in: AtomicU64::new(0),
            writes_out: AtomicU64::new(0),
            blocked: AtomicBool::new(false),
            channels: Mutex::new(BTreeMap::new()),
            close: tokio::sync::watch::channel(None).0,
        });
        self.0
            .open
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, entry.clone());
        bump(&self.0.churn.connections_opened, 1);
        ConnectionGuard {
            shared: self.0.clone(),
            entry,
        }
    }

    /// The open connections, oldest first.
    pub fn list(&self) -> Vec<Arc<ConnectionEntry>> {
        self.0
            .open
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The open connection called `name` (`PEER -> LOCAL`).
    pub fn find(&self, name: &str) -> Option<Arc<ConnectionEntry>> {
        self.list().into_iter().find(|c| c.name == name)
    }

    /// Every message the node's connections counted, closed channels included.
    pub fn totals(&self) -> MessageCounts {
        // Read under the lock a closing channel moves its counts under.
        let open = self.0.open.read().unwrap_or_else(|p| p.into_inner());
        let mut total = self.0.retired.snapshot();
        for connection in open.values() {
            for channel in connection.channels() {
                total += channel.counts.snapshot();
            }
        }
        total
    }

    /// Connections and channels opened and closed so far.
    pub fn churn(&self) -> ChurnCounts {
        let c = &self.0.churn;
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ChurnCounts {
            connections_opened: r(&c.connections_opened),
            connections_closed: r(&c.connections_closed),
            channels_opened: r(&c.channels_opened),
            channels_closed: r(&c.channels_closed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opened() -> Opened {
        Opened {
            peer: "127.0.0.1:5000".parse().unwrap(),
            local: Some("127.0.0.1:5672".parse().unwrap()),
            tls: false,
            user: "guest".into(),
            vhost: "/".into(),
            client_properties: FieldTable::new(),
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat: 60,
            connected_at: 0,
        }
    }

    #[test]
    fn closed_channels_keep_counting_in_the_totals() {
        let connections = Connections::default();
        let conn = connections.register(1, opened());
        assert_eq!(conn.entry.name, "127.0.0.1:5000 -> 127.0.0.1:5672");
        let a = conn.open_channel(1, 10);
        let b = conn.open_channel(2, 11);
        bump(&a.entry.counts.publish, 3);
        bump(&b.entry.counts.deliver, 2);
        assert_eq!(connections.totals().publish, 3);
        drop(a);
        assert_eq!(conn.entry.channels().len(), 1);
        assert_eq!(connections.totals().publish, 3, "moved to the totals");
        assert_eq!(connections.totals().deliver_get(), 2);
        drop(b);
        drop(conn);
        assert!(connections.list().is_empty());
        assert_eq!(connections.totals().deliver, 2);
        assert_eq!(
            connections.churn(),
            ChurnCounts {
                connections_opened: 1,
                connections_closed: 1,
                channels_opened: 2,
                channels_closed: 2
            }
        );
    }

    #[tokio::test]
    async fn a_close_request_carries_its_reason() {
        let connections = Connections::default();
        let conn = connections.register(1, opened());
        let entry = connections
            .find("127.0.0.1:5000 -> 127.0.0.1:5672")
            .unwrap();
        entry.close("Closed via management plugin");
        assert_eq!(
            conn.entry.close_requested().await,
            "Closed via management plugin"
        );
    }
}
