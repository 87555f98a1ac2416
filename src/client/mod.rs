//! The client handle: Warren from Rust, over the cluster transport.
//!
//! ```no_run
//! # async fn demo() -> Result<(), warren::client::ClientError> {
//! use warren::client::{Client, ConnectOptions, QueueOptions, PublishOptions, ConsumeOptions};
//! let client = Client::connect(ConnectOptions::local()?).await?;
//! client.declare_queue("orders", QueueOptions { durable: true, ..Default::default() }).await?;
//! let confirm = client
//!     .publish("", "orders", "hello", PublishOptions { persistent: true, ..Default::default() })
//!     .await?;
//! confirm.await?; // on disk now
//! let mut consumer = client.consume("orders", ConsumeOptions::default()).await?;
//! if let Some(delivery) = consumer.next().await {
//!     let delivery = delivery?;
//!     delivery.ack()?;
//! }
//! # Ok(()) }
//! ```
//!
//! A client is a cheap handle (clone it freely); the session on the node closes, and
//! unsettled deliveries go back to their queues, when the last clone is dropped.

mod admin;
mod consumer;
mod error;
mod inbox;
mod producer;
mod publisher;
mod stream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ractor::{Actor, ActorRef};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::OwnedSemaphorePermit;
use warren_actors::message::{Properties, PERSISTENT};
use warren_cluster::protocol::{
    BindTarget, BindingInfo, ExchangeInfo, GatewayMsg, InboxMsg, OpenSession, Publish, PublishRef,
    QueueInfo, Request, Response, SessionMsg, SessionOpened, Settle, PROTOCOL_VERSION,
};

pub use admin::Trace;
pub use consumer::{Consumer, Delivery};
pub use error::ClientError;
pub use producer::{ProducerOptions, StreamProducer};
pub use publisher::{
    Confirm, DEFAULT_BUFFER_BYTES, MAX_BODY_BYTES, MAX_BUFFER_BYTES, MIN_BUFFER_BYTES,
};
pub use stream::{
    Found, Partition, StreamConsumeOptions, StreamConsumer, StreamDelivery, StreamOptions,
    KEY_HEADER, MAX_PARTITIONS, SUPER_STREAM_ARG,
};
/// Header and argument tables, as stream options and message properties take them.
pub use warren_actors::message::{FieldTable, FieldValue};
pub use warren_cluster::connect::ConnectError;
pub use warren_cluster::protocol::{Permission, PublishResult};

/// The cluster address a node listens on by default, and clients dial by default.
pub const DEFAULT_NODE_ADDR: &str = "127.0.0.1:4370";
/// The cookie file a node creates in its data directory on first start.
pub const DEFAULT_COOKIE_FILE: &str = "warren-data/cookie";

/// Queues per page when [`Client::queues`] lists them.
const QUEUES_PAGE: u32 = 2_000;

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    pub node: SocketAddr,
    pub cookie: String,
    pub vhost: String,
    /// Shown in the node's logs.
    pub client_name: String,
    /// How long a request may wait for the node's answer.
    pub timeout: Duration,
    /// What the client keeps unconfirmed before `publish` (and a stream producer's
    /// `send`) waits: each message counts its body and about 256 bytes (Kafka's
    /// producer `buffer.memory`). 32 MiB by default ([`DEFAULT_BUFFER_BYTES`]);
    /// [`MIN_BUFFER_BYTES`] to [`MAX_BUFFER_BYTES`]. A producer of keyed records over
    /// many partitions appends as many records at a time as its buffer holds per
    /// partition: give it more to keep its rate.
    pub buffer_bytes: usize,
}

impl ConnectOptions {
    /// A node on this machine with the default address and cookie file.
    pub fn local() -> Result<Self, ClientError> {
        Self::new(
            DEFAULT_NODE_ADDR
                .parse()
                .expect("the default address parses"),
            Path::new(DEFAULT_COOKIE_FILE),
        )
    }

    /// A node at `node`, with the cookie read from `cookie_file`.
    pub fn new(node: SocketAddr, cookie_file: &Path) -> Result<Self, ClientError> {
        let cookie = warren_cluster::cookie::read(cookie_file)
            .map_err(|e| ClientError::Connect(ConnectError::Local(format!("{e}"))))?;
        Ok(ConnectOptions {
            node,
            cookie,
            vhost: "/".into(),
            client_name: std::env::args()
                .next()
                .unwrap_or_else(|| "warren-client".into()),
            timeout: Duration::from_secs(30),
            buffer_bytes: DEFAULT_BUFFER_BYTES,
        })
    }

    pub fn cookie_file_default() -> PathBuf {
        PathBuf::from(DEFAULT_COOKIE_FILE)
    }
}

/// Options of a queue declaration (AMQP's queue.declare flags and arguments).
#[derive(Clone, Debug, Default)]
pub struct QueueOptions {
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    /// Only check that the queue exists.
    pub passive: bool,
    /// `x-message-ttl`, `x-max-length`, `x-dead-letter-exchange`, ... as in RabbitMQ.
    pub arguments: FieldTable,
}

/// Options of an exchange declaration.
#[derive(Clone, Debug, Default)]
pub struct ExchangeOptions {
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub passive: bool,
    /// e.g. `alternate-exchange`.
    pub arguments: FieldTable,
}

/// Options of a publish.
#[derive(Clone, Debug, Default)]
pub struct PublishOptions {
    /// Written to disk (fsynced before the confirm) on durable queues.
    pub persistent: bool,
    /// Report [`PublishResult::Unroutable`] when no queue takes the message.
    pub mandatory: bool,
    pub properties: Properties,
}

impl PublishOptions {
    /// The properties a publish with these options carries.
    pub(crate) fn into_properties(self) -> Properties {
        let mut properties = self.properties;
        if self.persistent {
            properties.delivery_mode = Some(PERSISTENT);
        }
        properties
    }
}

/// Refuses a body larger than a client handle sends.
fn check_body(body: &Bytes) -> Result<(), ClientError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ClientError::MessageTooLarge {
            size: body.len(),
            limit: MAX_BODY_BYTES,
        });
    }
    Ok(())
}

/// Options of a consumer.
#[derive(Clone, Debug)]
pub struct ConsumeOptions {
    /// Unsettled deliveries the consumer may hold (0: no limit).
    pub prefetch: u32,
    /// Deliveries count as settled when sent.
    pub no_ack: bool,
    /// No other consumer may use the queue meanwhile.
    pub exclusive: bool,
    /// A tag of your choosing; empty: the node makes one up.
    pub tag: String,
    pub arguments: FieldTable,
}

impl Default for ConsumeOptions {
    fn default() -> Self {
        ConsumeOptions {
            prefetch: 100,
            no_ack: false,
            exclusive: false,
            tag: String::new(),
            arguments: FieldTable::new(),
        }
    }
}

/// A queue as a declaration reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueDeclared {
    pub name: String,
    pub messages: u64,
    pub consumers: u32,
}

/// A connection to a Warren node.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    session: ActorRef<SessionMsg>,
    inbox: ActorRef<InboxMsg>,
    consumers: Arc<inbox::Consumers>,
    publish_tx: UnboundedSender<publisher::Queued>,
    settle_tx: consumer::Settler,
    buffer: publisher::Buffer,
    timeout: Duration,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The close goes through the batching task, after what is queued: the records
        // a producer sends when it is dropped with the client's last handle reach the
        // node before the session ends. (The task gone, the session closes at once.)
        if self.publish_tx.send(publisher::Queued::Close).is_err() {
            let _ = self.session.cast(SessionMsg::Close(().into()));
        }
        self.inbox.stop(None);
    }
}

impl Client {
    /// Connects to a node and opens a session on it.
    pub async fn connect(options: ConnectOptions) -> Result<Client, ClientError> {
        if !(MIN_BUFFER_BYTES..=MAX_BUFFER_BYTES).contains(&options.buffer_bytes) {
            return Err(ClientError::InvalidOptions(format!(
                "buffer_bytes is {}: give {MIN_BUFFER_BYTES} to {MAX_BUFFER_BYTES} bytes \
                 (what the client keeps unconfirmed before publish waits)",
                options.buffer_bytes
            )));
        }
        let link = warren_cluster::connect::connect(options.node, &options.cookie).await?;
        let inbox_group = format!(
            "warren.inbox.{}.{:016x}",
            std::process::id(),
            rand::random::<u64>()
        );
        let consumers = Arc::new(inbox::Consumers::default());
        let (inbox, _) = Actor::spawn(None, inbox::Inbox, (inbox_group.clone(), consumers.clone()))
            .await
            .map_err(|e| ClientError::Connect(ConnectError::Local(e.to_string())))?;
        let open = OpenSession {
            protocol_version: PROTOCOL_VERSION,
            client_name: options.client_name.clone(),
            inbox_group,
            vhost: options.vhost.clone(),
        };
        let opened = match ractor::call_t!(
            link.gateway,
            GatewayMsg::Open,
            options.timeout.as_millis() as u64,
            open.into()
        ) {
            Ok(wire) => wire.into_result().map_err(ClientError::Protocol),
            Err(e) => Err(call_error(e, options.timeout)),
        };
        let session_group = match opened {
            Ok(SessionOpened::Opened { session_group }) => session_group,
            Ok(SessionOpened::Refused(reply)) => {
                inbox.stop(None);
                return Err(reply.into());
            }
            Err(e) => {
                inbox.stop(None);
                return Err(e);
            }
        };
        let session = match wait_for_member(&session_group, link.node_id, options.timeout).await {
            Some(cell) => ActorRef::<SessionMsg>::from(cell),
            None => {
                inbox.stop(None);
                return Err(ClientError::Timeout(options.timeout.as_secs()));
            }
        };
        let publish_tx = publisher::spawn(session.clone(), options.timeout);
        let settle_tx = consumer::Settler::new(spawn_settler(session.clone()));
        Ok(Client {
            inner: Arc::new(Inner {
                session,
                inbox,
                consumers,
                publish_tx,
                settle_tx,
                buffer: publisher::Buffer::new(options.buffer_bytes),
                timeout: options.timeout,
            }),
        })
    }

    pub(crate) async fn call(&self, request: Request) -> Result<Response, ClientError> {
        let timeout = self.inner.timeout;
        match ractor::call_t!(
            self.inner.session,
            SessionMsg::Call,
            timeout.as_millis() as u64,
            request.into()
        ) {
            Ok(wire) => match wire.into_result().map_err(ClientError::Protocol)? {
                Response::Error(reply) => Err(reply.into()),
                other => Ok(other),
            },
            Err(e) => Err(self.closed_or(call_error(e, timeout))),
        }
    }

    /// The reason the node gave for closing the session, if it did; else `e`.
    fn closed_or(&self, e: ClientError) -> ClientError {
        match self.inner.consumers.closed_reason() {
            Some(reason) => ClientError::Disconnected(reason),
            None => e,
        }
    }

    /// Declares a queue (an empty name: the node names it). Returns its name and counts.
    pub async fn declare_queue(
        &self,
        name: &str,
        options: QueueOptions,
    ) -> Result<QueueDeclared, ClientError> {
        match self
            .call(Request::DeclareQueue {
                name: name.into(),
                durable: options.durable,
                exclusive: options.exclusive,
                auto_delete: options.auto_delete,
                passive: options.passive,
                arguments: options.arguments,
            })
            .await?
        {
            Response::QueueDeclared {
                name,
                messages,
                consumers,
            } => Ok(QueueDeclared {
                name,
                messages,
                consumers,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// Declares an exchange of `kind` (`direct`, `fanout`, `topic` or `headers`).
    pub async fn declare_exchange(
        &self,
        name: &str,
        kind: &str,
        options: ExchangeOptions,
    ) -> Result<(), ClientError> {
        self.call(Request::DeclareExchange {
            name: name.into(),
            kind: kind.into(),
            durable: options.durable,
            auto_delete: options.auto_delete,
            internal: options.internal,
            passive: options.passive,
            arguments: options.arguments,
        })
        .await
        .map(drop)
    }

    /// Deletes a queue; returns how many messages it held.
    pub async fn delete_queue(
        &self,
        name: &str,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<u64, ClientError> {
        self.removed(Request::DeleteQueue {
            name: name.into(),
            if_unused,
            if_empty,
        })
        .await
    }

    /// Deletes an exchange (and every binding from or to it).
    pub async fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<(), ClientError> {
        self.call(Request::DeleteExchange {
            name: name.into(),
            if_unused,
        })
        .await
        .map(drop)
    }

    /// Removes every ready message of a queue; returns how many.
    pub async fn purge(&self, queue: &str) -> Result<u64, ClientError> {
        self.removed(Request::PurgeQueue { name: queue.into() })
            .await
    }

    async fn removed(&self, request: Request) -> Result<u64, ClientError> {
        match self.call(request).await? {
            Response::Removed { messages } => Ok(messages),
            other => Err(unexpected(other)),
        }
    }

    /// Binds a queue to an exchange.
    pub async fn bind_queue(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<(), ClientError> {
        self.bind(
            exchange,
            BindTarget::Queue(queue.into()),
            routing_key,
            arguments,
            true,
        )
        .await
    }

    /// Removes a queue's binding.
    pub async fn unbind_queue(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<(), ClientError> {
        self.bind(
            exchange,
            BindTarget::Queue(queue.into()),
            routing_key,
            arguments,
            false,
        )
        .await
    }

    /// Binds exchange `destination` to exchange `source` (exchange-to-exchange).
    pub async fn bind_exchange(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<(), ClientError> {
        self.bind(
            source,
            BindTarget::Exchange(destination.into()),
            routing_key,
            arguments,
            true,
        )
        .await
    }

    /// Removes an exchange-to-exchange binding.
    pub async fn unbind_exchange(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<(), ClientError> {
        self.bind(
            source,
            BindTarget::Exchange(destination.into()),
            routing_key,
            arguments,
            false,
        )
        .await
    }

    async fn bind(
        &self,
        source: &str,
        target: BindTarget,
        routing_key: &str,
        arguments: FieldTable,
        add: bool,
    ) -> Result<(), ClientError> {
        let (source, routing_key) = (source.to_string(), routing_key.to_string());
        let request = if add {
            Request::Bind {
                source,
                target,
                routing_key,
                arguments,
            }
        } else {
            Request::Unbind {
                source,
                target,
                routing_key,
                arguments,
            }
        };
        self.call(request).await.map(drop)
    }

    /// Queues a message for publishing and returns the future of its confirm.
    ///
    /// Waits first if too much this client published is still unconfirmed
    /// (back-pressure). Await the returned [`Confirm`] to know the message is safe.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: impl Into<Bytes>,
        options: PublishOptions,
    ) -> Result<Confirm, ClientError> {
        let (pending, confirm) = self
            .prepare_publish(exchange, routing_key, body.into(), options)
            .await?;
        self.inner
            .publish_tx
            .send(publisher::Queued::One(pending))
            .map_err(|_| ClientError::Disconnected("the client is closed".into()))?;
        Ok(confirm)
    }

    /// A message ready to be queued for publishing, with its confirm: checked, its
    /// permits taken (waiting while too much is unconfirmed), not sent yet.
    async fn prepare_publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: Bytes,
        options: PublishOptions,
    ) -> Result<(publisher::Pending, Confirm), ClientError> {
        check_body(&body)?;
        let permit = self.inner.buffer.reserve(body.len()).await?;
        let mandatory = options.mandatory;
        let (done, rx) = tokio::sync::oneshot::channel();
        let pending = publisher::Pending {
            publish: Publish {
                exchange: exchange.into(),
                routing_key: routing_key.into(),
                mandatory,
                properties: options.into_properties(),
                body,
            },
            done,
            permit,
        };
        Ok((pending, Confirm::own(rx)))
    }

    /// Takes the permits a publish that a stream producer encodes into a batch holds
    /// (waiting while too much is unconfirmed): as many as its encoding's bytes.
    /// Returns them and the encoding's length.
    pub(crate) async fn reserve_encoded(
        &self,
        publish: &PublishRef<'_>,
    ) -> Result<(OwnedSemaphorePermit, usize), ClientError> {
        check_body(publish.body)?;
        let len = warren_storage::codec::element_len(publish)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok((self.inner.buffer.reserve_encoded(len).await?, len))
    }

    /// Queues a stream producer's batch; publishes leave in the order they were
    /// queued. If the client is closed, the batch's confirms say so.
    pub(crate) fn enqueue_encoded(&self, batch: publisher::EncodedBatch) {
        if let Err(refused) = self
            .inner
            .publish_tx
            .send(publisher::Queued::Encoded(batch))
        {
            refused
                .0
                .refuse(&ClientError::Disconnected("the client is closed".into()));
        }
    }

    /// Starts a consumer on a queue.
    pub async fn consume(
        &self,
        queue: &str,
        options: ConsumeOptions,
    ) -> Result<Consumer, ClientError> {
        // The tag is chosen here so the inbox knows it before the first delivery.
        let tag = if options.tag.is_empty() {
            format!("ctag-{:016x}", rand::random::<u64>())
        } else {
            options.tag
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.inner.consumers.add(tag.clone(), tx);
        // As the node's session decides: such a consumer gets a window of deliveries
        // the application has not taken.
        let windowed = (options.no_ack || options.prefetch == 0).then(|| tag.as_str().into());
        let started = self
            .call(Request::Consume {
                queue: queue.into(),
                tag: tag.clone(),
                prefetch: options.prefetch,
                no_ack: options.no_ack,
                exclusive: options.exclusive,
                arguments: options.arguments,
            })
            .await;
        match started {
            Ok(Response::ConsumeStarted { .. }) => Ok(Consumer {
                tag,
                rx,
                client: self.clone(),
                ended: false,
                windowed,
                taken: 0,
                taken_total: 0,
                run: None,
            }),
            Ok(other) => {
                self.inner.consumers.remove(&tag);
                Err(unexpected(other))
            }
            Err(e) => {
                self.inner.consumers.remove(&tag);
                Err(e)
            }
        }
    }

    pub(crate) async fn cancel(&self, tag: &str) -> Result<(), ClientError> {
        let result = self
            .call(Request::Cancel { tag: tag.into() })
            .await
            .map(drop);
        self.inner.consumers.remove(tag);
        result
    }

    /// Takes one message from a queue, if it has one ready.
    pub async fn get(&self, queue: &str, no_ack: bool) -> Result<Option<Delivery>, ClientError> {
        match self
            .call(Request::Get {
                queue: queue.into(),
                no_ack,
            })
            .await?
        {
            Response::Got { delivery, .. } => {
                Ok(delivery.map(|d| Delivery::new(*d, self.settle_sender())))
            }
            other => Err(unexpected(other)),
        }
    }

    /// Every queue of the vhost with its counts, in name order, asked a page at a
    /// time ([`Client::queues_page`]).
    pub async fn queues(&self) -> Result<Vec<QueueInfo>, ClientError> {
        let mut all = Vec::new();
        let mut after = String::new();
        loop {
            let (page, more) = self.queues_page(&after, QUEUES_PAGE).await?;
            let last = page.last().map(|q| q.name.clone());
            all.extend(page);
            match last {
                Some(last) if more => after = last,
                _ => return Ok(all),
            }
        }
    }

    /// At most `limit` queues (5 000 at the most) named after `after` ("" for the
    /// first page), in name order, and whether more come after them.
    pub async fn queues_page(
        &self,
        after: &str,
        limit: u32,
    ) -> Result<(Vec<QueueInfo>, bool), ClientError> {
        let request = Request::ListQueuesPage {
            after: after.to_string(),
            limit,
        };
        match self.call(request).await? {
            Response::QueuesPage { queues, more } => Ok((queues, more)),
            other => Err(unexpected(other)),
        }
    }

    /// Every exchange of the vhost.
    pub async fn exchanges(&self) -> Result<Vec<ExchangeInfo>, ClientError> {
        match self.call(Request::ListExchanges).await? {
            Response::Exchanges(e) => Ok(e),
            other => Err(unexpected(other)),
        }
    }

    /// Every binding of the vhost.
    pub async fn bindings(&self) -> Result<Vec<BindingInfo>, ClientError> {
        match self.call(Request::ListBindings).await? {
            Response::Bindings(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    pub(crate) fn settle_sender(&self) -> consumer::Settler {
        self.inner.settle_tx.clone()
    }

    /// Waits until every ack, nack and reject given so far has reached the node.
    pub async fn flush_settles(&self) {
        if self.settles_sent().await {
            let _ = self.call(Request::Ping).await;
        }
    }

    /// Waits until the settle task has sent the session every ack, nack and reject
    /// given so far: a request sent after this reaches the session behind them.
    /// `false` when the client is closed.
    pub(crate) async fn settles_sent(&self) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner.settle_tx.tx.send(SettleItem::Flush(tx)).is_ok() && rx.await.is_ok()
    }
}

/// What the settle task takes: a settlement, or a request to send what it holds now.
pub(crate) enum SettleItem {
    Settle(Settle),
    /// The last record of a run (a stream's records delivered together) was settled:
    /// the run's settlement (a multiple one if that record's was), unless a multiple
    /// settle covered it already.
    Run(Settle),
    /// The application took this many deliveries of this windowed consumer.
    Taken(Arc<str>, u32),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Gathers settlements into batches: one frame for every ack that is ready.
fn spawn_settler(session: ActorRef<SessionMsg>) -> UnboundedSender<SettleItem> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<SettleItem>();
    tokio::spawn(async move {
        let mut batch = Vec::new();
        let mut taken: std::collections::HashMap<Arc<str>, u32> = Default::default();
        let mut flushes = Vec::new();
        // The highest tag a multiple settle was sent for: everything up to it is
        // settled, so a later multiple settle at or below it settles nothing more
        // (and the node would refuse its tag as unknown, closing the session). Such
        // settles come from consumers whose deliveries are read merged, e.g. a
        // stream's partitions, where tags are not read in order.
        let mut settled_through = 0u64;
        while let Some(first) = rx.recv().await {
            let mut next = Some(first);
            while let Some(item) = next.take() {
                match item {
                    SettleItem::Settle(s) if s.multiple && s.delivery_tag <= settled_through => {}
                    SettleItem::Run(s) if s.delivery_tag <= settled_through => {}
                    SettleItem::Settle(s) | SettleItem::Run(s) => {
                        if s.multiple {
                            settled_through = s.delivery_tag;
                        }
                        batch.push(s);
                    }
                    SettleItem::Taken(tag, count) => *taken.entry(tag).or_default() += count,
                    SettleItem::Flush(done) => flushes.push(done),
                }
                if batch.len() < 4096 {
                    next = rx.try_recv().ok();
                }
            }
            if !batch.is_empty()
                && session
                    .cast(SessionMsg::Settle(std::mem::take(&mut batch).into()))
                    .is_err()
            {
                break;
            }
            if !taken.is_empty() {
                let written: Vec<(String, u32)> = taken
                    .drain()
                    .map(|(tag, count)| (tag.to_string(), count))
                    .collect();
                if session.cast(SessionMsg::Written(written.into())).is_err() {
                    break;
                }
            }
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
        }
    });
    tx
}

/// Waits until a process group has a member on node `node_id`.
async fn wait_for_member(
    group: &str,
    node_id: u64,
    timeout: Duration,
) -> Option<ractor::ActorCell> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let found = ractor::pg::get_members(&group.to_string())
            .into_iter()
            .find(|c| !c.get_id().is_local() && c.get_id().node() == node_id);
        if found.is_some() {
            return found;
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn call_error<M>(e: ractor::RactorErr<M>, timeout: Duration) -> ClientError {
    match e {
        ractor::RactorErr::Timeout => ClientError::Timeout(timeout.as_secs()),
        // The session or its transport is gone (the reply port was dropped, or the
        // remote actor stopped).
        other => ClientError::Disconnected(other.to_string()),
    }
}

pub(crate) fn unexpected(response: Response) -> ClientError {
    ClientError::Protocol(format!("unexpected answer from the node: {response:?}"))
}
