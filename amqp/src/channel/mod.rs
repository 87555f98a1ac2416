//! One AMQP channel: [`AmqpChannel`], its state and the dispatch of its methods to
//! the file of their class. The channel class itself (flow, close) is here; the
//! others are `impl AmqpChannel` blocks in `exchange.rs`, `queue.rs`, `basic.rs`,
//! `confirm.rs` and `tx.rs`, with the permission checks they share in `access.rs`.
//! Routing, delivery tags and settlements are [`ChannelState`]'s, shared with the
//! client-handle session.

mod access;
mod basic;
mod confirm;
mod exchange;
mod queue;
mod tx;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{channel, AMQPClass};
use warren_access::AccessControl;
use warren_actors::channel::{ChannelState, Settle};
use warren_actors::delivery::{next_channel_id, ChannelId, ChannelSink};
use warren_actors::message::Message;
use warren_actors::queue::InFlight;
use warren_actors::vhost::VHost;

use warren_actors::queue::QueueRef;

use crate::codec::write_frame;
use crate::error::AmqpError;
use crate::prefetch::ChannelPrefetch;

/// A publish whose content is still arriving.
struct Incoming {
    exchange: String,
    routing_key: String,
    mandatory: bool,
    /// Set once the content header arrived.
    header: Option<(u64, warren_actors::message::Properties)>,
    body: Vec<u8>,
}

/// A complete publish waiting to be routed with the others of its batch.
struct Ready {
    message: Message,
    mandatory: bool,
    /// Its publisher-confirm sequence number (confirm mode only).
    confirm_seq: Option<u64>,
}

/// What the connection must do after a method.
pub enum Outcome {
    /// Encoded frames to send (maybe none).
    Send(Vec<u8>),
    /// The client closed the channel: send close-ok and forget it.
    Closed,
}

/// One open channel of a connection: the broker-side [`ChannelState`] plus what AMQP
/// adds (content being assembled, confirm and tx modes, consumers, prefetch, the
/// permission cache).
pub struct AmqpChannel {
    /// The channel number the client chose.
    pub number: u16,
    core: ChannelState,
    /// The connection's id: owner of its exclusive queues.
    connection: ChannelId,
    sink: ChannelSink,
    incoming: Option<Incoming>,
    /// Publishes complete and not yet routed.
    ready: Vec<Ready>,
    confirm: bool,
    next_confirm_seq: u64,
    /// Confirm seqs sent to queues and not yet acked or nacked.
    pub outstanding: BTreeSet<u64>,
    /// Confirm seqs settled (true: ack, false: nack) and not yet told to the client:
    /// confirms go out in tag order.
    pub settled: std::collections::BTreeMap<u64, bool>,
    /// Consumer tag -> queue.
    consumers: HashMap<String, Arc<str>>,
    /// The consumers with a write window (no-ack, or without a prefetch), by tag: their
    /// queue and how many of their deliveries went to the writer since the queue was
    /// last told (see [`WRITE_WINDOW`](warren_actors::queue::WRITE_WINDOW)).
    windowed: HashMap<Arc<str>, Windowed>,
    /// `basic.qos global=false`: the prefetch of consumers started from now on.
    prefetch: u32,
    /// `basic.qos global=true`: the channel-wide limit.
    channel_prefetch: ChannelPrefetch,
    /// tx.select: publishes and settlements wait for tx.commit.
    tx: bool,
    tx_publishes: Vec<Ready>,
    tx_settles: Vec<Settle>,
    frame_max: u32,
    /// The authenticated user: a publish's `user_id` must be this.
    user: Arc<str>,
    access: AccessControl,
    /// The exchange a publish was last allowed to, and the access generation then.
    publish_allowed: Option<(String, u64)>,
    /// The queue last declared on this channel: what an empty queue name means.
    last_queue: Option<String>,
    /// The connection's publishes not yet answered by their queues (credit flow).
    in_flight: Arc<InFlight>,
    /// The direct reply-to consumer: its tag and its reply address.
    reply: Option<(String, String)>,
    /// Consumer tags the node made for this channel.
    tags_made: u64,
    /// Its entry in the node's registry of connections (counters, consumers).
    pub stats: Option<crate::registry::ChannelGuard>,
}

/// What a channel takes from its connection.
pub struct ConnectionPart {
    /// The vhost the client opened.
    pub vhost: VHost,
    /// The connection's id: owner of its exclusive queues.
    pub connection: ChannelId,
    /// The negotiated largest frame.
    pub frame_max: u32,
    /// The authenticated user.
    pub user: Arc<str>,
    /// Users and permissions, for the channel's checks.
    pub access: AccessControl,
    /// The connection's publishes not yet answered by their queues (credit flow).
    pub in_flight: Arc<InFlight>,
}

impl AmqpChannel {
    /// A channel just opened: `sink_for` gives the sink its queues deliver to, from
    /// the channel's id.
    pub fn new(
        number: u16,
        part: ConnectionPart,
        sink_for: impl FnOnce(ChannelId) -> ChannelSink,
    ) -> Self {
        let id = next_channel_id();
        let ConnectionPart {
            vhost,
            connection,
            frame_max,
            user,
            access,
            in_flight,
        } = part;
        AmqpChannel {
            number,
            core: ChannelState::new(vhost, id),
            connection,
            sink: sink_for(id),
            incoming: None,
            ready: Vec::new(),
            confirm: false,
            next_confirm_seq: 1,
            outstanding: BTreeSet::new(),
            settled: Default::default(),
            consumers: HashMap::new(),
            windowed: HashMap::new(),
            prefetch: 0,
            channel_prefetch: ChannelPrefetch::default(),
            tx: false,
            tx_publishes: Vec::new(),
            tx_settles: Vec::new(),
            frame_max,
            user,
            access,
            publish_allowed: None,
            last_queue: None,
            in_flight,
            reply: None,
            tags_made: 0,
            stats: None,
        }
    }

    /// Its registry entry, if registered.
    fn entry(&self) -> Option<&crate::registry::ChannelEntry> {
        self.stats.as_ref().map(|s| &*s.entry)
    }

    /// Adds `n` to one of its counters.
    fn count(&self, n: u64, counter: impl FnOnce(&crate::registry::Counts) -> &AtomicU64) {
        if let Some(entry) = self.entry() {
            crate::registry::bump(counter(&entry.counts), n);
        }
    }

    /// One more publish confirmed to the client.
    pub fn count_confirmed(&self) {
        self.count(1, |c| &c.confirm);
    }

    /// Publishes the number of unsettled deliveries to the registry.
    fn note_unacked(&self) {
        if let Some(entry) = self.entry() {
            entry
                .unacked
                .store(self.core.unsettled() as u64, Ordering::Relaxed);
        }
    }

    /// Starts consumer `tag` on `queue`, in the channel and its registry entry.
    fn add_consumer_entry(
        &mut self,
        tag: &str,
        queue: Arc<str>,
        consumer: Option<crate::registry::ConsumerEntry>,
    ) {
        if let (Some(entry), Some(consumer)) = (self.entry(), consumer) {
            entry.add_consumer(tag, consumer);
        }
        self.consumers.insert(tag.to_string(), queue);
    }

    /// Ends consumer `tag`; its queue, if it was one of this channel's.
    fn remove_consumer_entry(&mut self, tag: &str) -> Option<Arc<str>> {
        if let Some(entry) = self.entry() {
            entry.remove_consumer(tag);
        }
        self.windowed.remove(tag);
        self.consumers.remove(tag)
    }

    /// Tells the queues of windowed consumers how many of their deliveries went to
    /// the connection's writer (which holds a bounded number of bytes, and waits while
    /// the client does not read): each consumer's window opens by as many. Called
    /// once the buffer they were encoded into was handed to the writer.
    pub fn report_written(&mut self) {
        let channel = self.core.id();
        for (tag, w) in &mut self.windowed {
            if w.written > 0 {
                w.queue.written(channel, tag.clone(), w.written);
                w.written = 0;
            }
        }
    }

    /// The id its queues know it by, unique to this channel's life: a channel opened
    /// again on the same number has another.
    pub fn id(&self) -> ChannelId {
        self.core.id()
    }

    /// The sink its queues deliver to (tests play a queue with it).
    #[cfg(test)]
    pub fn sink(&self) -> ChannelSink {
        self.sink.clone()
    }

    /// Records a consumer as basic.consume does, without a queue (tests).
    #[cfg(test)]
    pub fn add_consumer(&mut self, tag: &str, queue: &str) {
        self.add_consumer_entry(tag, queue.into(), None);
    }

    /// The method's `-ok`, unless the client asked for `nowait`.
    fn answer(&self, nowait: bool, class: AMQPClass) -> Outcome {
        if nowait {
            Outcome::Send(Vec::new())
        } else {
            self.reply(class)
        }
    }

    /// The method's `-ok` (or other answer) on this channel.
    fn reply(&self, class: AMQPClass) -> Outcome {
        let mut out = Vec::new();
        write_frame(&AMQPFrame::Method(self.number, class), &mut out);
        Outcome::Send(out)
    }

    /// The channel closes (either side): deliveries return to their queues.
    pub fn close(&mut self) {
        // Held deliveries are unacked at their queues, which requeue them now.
        self.channel_prefetch.take_all();
        self.core.close();
    }

    // ----- methods ----------------------------------------------------------------

    /// Handles one method on this channel.
    pub async fn method(&mut self, class: AMQPClass) -> Result<Outcome, AmqpError> {
        let (class_id, method_id) = (class.get_amqp_class_id(), class.get_amqp_method_id());
        self.dispatch(class)
            .await
            .map_err(|e| e.at(class_id, method_id))
    }

    async fn dispatch(&mut self, class: AMQPClass) -> Result<Outcome, AmqpError> {
        let vhost = self.core.vhost().clone();
        let conn = self.connection;
        match class {
            AMQPClass::Channel(channel::AMQPMethod::Close(_)) => Ok(Outcome::Closed),
            AMQPClass::Channel(channel::AMQPMethod::Flow(f)) => {
                if !f.active {
                    return Err(AmqpError::NotImplemented {
                        what: "active=false is not supported (use basic.qos)",
                    });
                }
                Ok(self.reply(AMQPClass::Channel(channel::AMQPMethod::FlowOk(
                    channel::FlowOk { active: true },
                ))))
            }
            AMQPClass::Channel(channel::AMQPMethod::Open(_)) => Err(AmqpError::SecondChannelOpen {
                channel: self.number,
            }),
            AMQPClass::Exchange(m) => self.exchange(m, &vhost, conn).await,
            AMQPClass::Queue(m) => self.queue(m, &vhost, conn).await,
            AMQPClass::Basic(m) => self.basic(m, &vhost, conn).await,
            AMQPClass::Confirm(m) => self.confirm(m),
            AMQPClass::Tx(m) => self.tx(m).await,
            other => Err(self.unexpected_here(other)),
        }
    }

    /// A method that has no place on a channel (a connection method, an `-ok` the
    /// client may not send).
    fn unexpected_here(&self, class: AMQPClass) -> AmqpError {
        AmqpError::UnexpectedMethod {
            class_id: class.get_amqp_class_id(),
            method_id: class.get_amqp_method_id(),
            channel: self.number,
        }
    }
}

/// A method of the class being handled that only a server sends.
fn unexpected_method(class: AMQPClass) -> AmqpError {
    AmqpError::NotAClientMethod {
        class_id: class.get_amqp_class_id(),
        method_id: class.get_amqp_method_id(),
    }
}

/// A windowed consumer's queue and its deliveries written since the queue was told.
struct Windowed {
    queue: QueueRef,
    written: u32,
}
