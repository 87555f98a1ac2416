//! The partition's actor: the thin shell that performs what the machine decides.
//!
//! - **Appends**: one append in flight at a time. A publish that finds none starts one
//!   at once (a lone write waits for no batch); publishes that arrive meanwhile wait
//!   and go together in the next. An append is split into chunks, written durably in
//!   one batch through the store's group-commit writer, and confirmed once fsynced;
//!   only then do consumers see it, so an offset a consumer saw is never handed out
//!   again after a crash.
//! - **Reads**: each consumer is sent the offsets the machine gives it, from the
//!   chunks appended last (kept decoded while it has consumers, up to [`TAIL_BYTES`])
//!   or read from the log
//!   (one read of about [`READ_BYTES`] at a time, per consumer): memory stays flat
//!   whatever the backlog, and a consumer replaying from `first` does not push the
//!   tail out for the others.
//! - **Retention**: after appends when the log is over its size, and every
//!   [`RETAIN_EVERY`] when it has a maximum age.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;
use warren_actors::delivery::{ChannelId, ChannelSink, QueueDelivery, QueueEvent, RecordRun};
use warren_actors::error::BrokerError;
use warren_actors::message::{FieldTable, FieldValue, Message, SharedMessage};
use warren_actors::queue::{
    ConsumeRequest, ConsumerSummary, Enqueue, EnqueueOutcome, GroupStatus, StreamInfo,
};
use warren_storage::{Batch, Op, Store};

use crate::args::StreamConfig;
use crate::chunk::{self, ChunkHeader};
use crate::filter::TagFilter;
use crate::group::GroupArgs;
use crate::handle::StreamShared;
use crate::keys::{key_hash, key_of};
use crate::machine::{Command, ConsumerKey, Effect, Join, Partition};
use crate::offset::{LogBounds, OffsetSpec, STREAM_OFFSET_ARG};
use crate::retention;

/// Decoded chunks appended last that the partition keeps for consumers at the end
/// (none while it has no consumer).
pub const TAIL_BYTES: usize = 2 << 20;
/// Bytes of chunks one read of a consumer behind the tail fetches.
pub const READ_BYTES: usize = 1 << 20;
/// How often a stream with a maximum age looks for chunks to drop.
pub const RETAIN_EVERY: Duration = Duration::from_secs(1);
/// How long a group's moved offset waits to be stored with the others.
pub const OFFSET_FLUSH: Duration = Duration::from_millis(200);
/// Bytes of old chunks one retention pass reads (headers are what it needs).
const RETAIN_READ_BYTES: usize = 4 << 20;

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A chunk decoded, as consumers are sent from it.
pub(crate) struct Decoded {
    header: ChunkHeader,
    messages: Vec<SharedMessage>,
    bytes: usize,
}

impl Decoded {
    fn holds(&self, offset: u64) -> bool {
        self.header.first <= offset && offset < self.header.next()
    }
}

/// An append on its way to the disk.
pub(crate) struct Appended {
    batches: Vec<Enqueue>,
    chunks: Vec<Arc<Decoded>>,
    next: u64,
    end: u64,
    /// The last interval indexed before it (what it is again if it fails).
    index_before: u64,
}

/// What the partition's actor is told.
pub(crate) enum StreamMsg {
    Enqueue(Enqueue),
    Appended(Appended, Result<(), String>),
    Consume {
        request: ConsumeRequest,
        spec: OffsetSpec,
        group: Option<GroupArgs>,
        reply: oneshot::Sender<Result<(), BrokerError>>,
    },
    Cancel {
        key: ConsumerKey,
        reply: oneshot::Sender<Result<(), BrokerError>>,
    },
    Settle {
        channel: ChannelId,
        seqs: Vec<u64>,
    },
    ChannelDown {
        channel: ChannelId,
    },
    Read {
        key: ConsumerKey,
        id: u64,
        chunks: Result<Vec<Arc<Decoded>>, String>,
    },
    Consumers {
        reply: oneshot::Sender<Result<Vec<ConsumerSummary>, BrokerError>>,
    },
    Info {
        reply: oneshot::Sender<Result<StreamInfo, BrokerError>>,
    },
    Delete {
        reply: oneshot::Sender<Result<u64, BrokerError>>,
    },
    Retain,
    Retained(Result<Option<ChunkHeader>, String>),
    FlushOffsets,
    Crash,
}

impl ractor::Message for StreamMsg {}

/// What starts (and restarts) the actor.
#[derive(Clone)]
pub(crate) struct StreamArgs {
    pub shared: Arc<StreamShared>,
    pub store: Store,
    pub config: StreamConfig,
}

pub(crate) struct StreamActor;

/// One consumer's sending side.
struct Reader {
    sink: ChannelSink,
    tag: Arc<str>,
    /// Offsets the machine gave it that are not sent yet, in order.
    pending: VecDeque<Range<u64>>,
    /// The chunks of its last read from the log.
    buffer: Vec<Arc<Decoded>>,
    /// The read of the log under way: its id and the offset it was issued for.
    read: Option<(u64, u64)>,
    /// Its tag filter.
    filter: Option<TagFilter>,
    /// Sent runs of records ([`QueueEvent::Records`]) rather than deliveries: its
    /// channel asked for them and it has no filter (a run has no gaps).
    runs: bool,
    /// The most records in one run: half its prefetch, so that the credit of a
    /// run the application finished comes back while it reads the next.
    run_max: u64,
}

pub(crate) struct StreamShell {
    myself: ActorRef<StreamMsg>,
    shared: Arc<StreamShared>,
    store: Store,
    config: StreamConfig,
    machine: Partition,
    /// The offset, byte position and time the next append starts from.
    next_offset: u64,
    next_position: u64,
    last_ms: u64,
    /// The last interval of the timestamp index with an entry.
    last_indexed: u64,
    appending: bool,
    waiting: Vec<Enqueue>,
    tail: VecDeque<Arc<Decoded>>,
    tail_bytes: usize,
    readers: HashMap<ConsumerKey, Reader>,
    retaining: bool,
    /// Group offsets that moved since they were last stored.
    dirty_offsets: HashMap<Arc<str>, u64>,
    flush_scheduled: bool,
    /// The deliveries (and runs) not settled yet, by seq: their consumer and
    /// offsets.
    sent: HashMap<u64, (ConsumerKey, Range<u64>)>,
    /// The id the next read of the log gets.
    next_read: u64,
    /// Consumers with something new to send, and whether they are being served.
    to_pump: VecDeque<ConsumerKey>,
    pumping: bool,
}

impl Actor for StreamActor {
    type Msg = StreamMsg;
    type State = StreamShell;
    type Arguments = StreamArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<StreamMsg>,
        args: StreamArgs,
    ) -> Result<StreamShell, ActorProcessingErr> {
        let StreamArgs {
            shared,
            store,
            config,
        } = args;
        // What an incarnation before this one submitted (an append, offsets) is
        // committed first: the log's end must include it, or its offsets would be
        // handed out again.
        store.flush().await?;
        // Only the first and the last chunk are read, whatever the log's length.
        let id = shared.def.id;
        let reading = store.clone();
        let ends = tokio::task::spawn_blocking(move || reading.partition_ends(id)).await??;
        let (bounds, last_ms) = match ends {
            None => (LogBounds::default(), 0),
            Some(((_, first), (_, last))) => {
                let head = chunk::header(&first)?;
                let tail = chunk::header(&last)?;
                let bounds = LogBounds {
                    first: head.first,
                    next: tail.next(),
                    last_chunk: tail.first,
                    start: head.position,
                    end: tail.position + last.len() as u64,
                };
                (bounds, tail.timestamp_ms)
            }
        };
        if !bounds.is_empty() {
            tracing::info!(stream = %shared.name, first = bounds.first, next = bounds.next, bytes = bounds.bytes(), "recovered the stream's log");
        }
        shared.started(myself.clone());
        if config.max_age.is_some() {
            let ticker = myself.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(RETAIN_EVERY);
                every.tick().await;
                loop {
                    every.tick().await;
                    if ticker.cast(StreamMsg::Retain).is_err() {
                        break;
                    }
                }
            });
        }
        let mut shell = StreamShell {
            myself,
            shared: shared.clone(),
            store,
            config,
            machine: Partition::new(bounds, partition_number(&shared.name)),
            next_offset: bounds.next,
            next_position: bounds.end,
            last_ms,
            last_indexed: time_bucket(last_ms),
            appending: false,
            waiting: Vec::new(),
            tail: VecDeque::new(),
            tail_bytes: 0,
            readers: HashMap::new(),
            retaining: false,
            dirty_offsets: HashMap::new(),
            flush_scheduled: false,
            sent: HashMap::new(),
            next_read: 1,
            to_pump: VecDeque::new(),
            pumping: false,
        };
        // Consumers of the incarnation before go on after what they were sent.
        for (request, next, group) in shared.journal() {
            let key: ConsumerKey = (request.channel, request.tag.clone());
            let start = next.max(bounds.first);
            if let Err(e) = shell.attach(request, start, group) {
                tracing::warn!(stream = %shared.name, tag = %key.1, "consumer not re-attached: {e}");
            }
        }
        shell.publish_stats();
        Ok(shell)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<StreamMsg>,
        shell: &mut StreamShell,
    ) -> Result<(), ActorProcessingErr> {
        // Stopped (the node shuts down, the stream is deleted): the groups' offsets
        // that moved are stored now, not lost with the pending flush.
        if let Some(ops) = shell.offset_ops() {
            if let Err(e) = shell.store.submit(Batch::durable(ops)).await {
                tracing::error!(stream = %shell.shared.name, "storing consumer group offsets failed: {e}");
            }
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<StreamMsg>,
        msg: StreamMsg,
        shell: &mut StreamShell,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            StreamMsg::Enqueue(batch) => shell.enqueue(batch),
            StreamMsg::Appended(appended, result) => shell.appended(appended, result),
            StreamMsg::Consume {
                request,
                spec,
                group,
                reply,
            } => {
                let answer = shell.consume(request, spec, group);
                let _ = reply.send(answer);
            }
            StreamMsg::Cancel { key, reply } => {
                shell.readers.remove(&key);
                shell.sent.retain(|_, (k, _)| *k != key);
                shell.shared.journal_forget(|k| *k == key);
                shell.apply(Command::Cancel { key });
                let _ = reply.send(Ok(()));
            }
            StreamMsg::Settle { channel, seqs } => shell.settle(channel, seqs),
            StreamMsg::ChannelDown { channel } => {
                shell.readers.retain(|(ch, _), _| *ch != channel);
                shell.sent.retain(|_, ((ch, _), _)| *ch != channel);
                shell.apply(Command::ChannelDown { channel });
            }
            StreamMsg::Read { key, id, chunks } => shell.read_done(key, id, chunks),
            StreamMsg::Consumers { reply } => {
                let _ = reply.send(Ok(shell.consumer_summaries()));
            }
            StreamMsg::Info { reply } => {
                let bounds = *shell.machine.bounds();
                let _ = reply.send(shell.groups().map(|groups| StreamInfo {
                    first: bounds.first,
                    end: bounds.next,
                    bytes: bounds.bytes(),
                    groups,
                }));
            }
            StreamMsg::Delete { reply } => {
                let held = shell.machine.bounds().len();
                shell.end_consumers("the stream was deleted");
                let _ = reply.send(Ok(held));
            }
            StreamMsg::Retain => shell.retain(),
            StreamMsg::Retained(result) => shell.retained(result),
            StreamMsg::FlushOffsets => shell.flush_offsets(),
            StreamMsg::Crash => {
                return Err(format!("stream '{}' was crashed on purpose", shell.shared.name).into())
            }
        }
        shell.publish_stats();
        Ok(())
    }
}

impl StreamShell {
    fn apply(&mut self, command: Command) {
        match self.machine.apply(command) {
            Ok(effects) => self.perform(effects),
            Err(e) => tracing::warn!(stream = %self.shared.name, "command refused: {e}"),
        }
    }

    fn perform(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Deliver { key, offsets } => {
                    if let Some(reader) = self.readers.get_mut(&key) {
                        reader.pending.push_back(offsets);
                        self.to_pump.push_back(key);
                    }
                }
                Effect::Deactivated { key } => {
                    if let Some(reader) = self.readers.get_mut(&key) {
                        reader.pending.clear();
                        reader.buffer.clear();
                        // A read under way is for what it no longer gets.
                        reader.read = None;
                    }
                    self.sent.retain(|_, (k, _)| *k != key);
                }
                Effect::Commit { group, offset } => {
                    self.shared.note_commit(&group, offset);
                    self.dirty_offsets.insert(group, offset);
                    if !self.flush_scheduled {
                        self.flush_scheduled = true;
                        let myself = self.myself.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(OFFSET_FLUSH).await;
                            let _ = myself.cast(StreamMsg::FlushOffsets);
                        });
                    }
                }
            }
        }
        // Sends what the effects gave consumers; sending may give more (filtered
        // messages passed over give credit back), which joins the queue.
        if !self.pumping {
            self.pumping = true;
            while let Some(key) = self.to_pump.pop_front() {
                self.pump(&key);
            }
            self.pumping = false;
        }
    }

    /// The writes of the groups' offsets that moved (`None`: none did).
    fn offset_ops(&mut self) -> Option<Vec<Op>> {
        if self.dirty_offsets.is_empty() {
            return None;
        }
        let partition = self.shared.def.id;
        Some(
            self.dirty_offsets
                .drain()
                .map(|(group, offset)| Op::PutConsumerOffset {
                    partition,
                    group: group.to_string(),
                    offset,
                })
                .collect(),
        )
    }

    /// Stores the groups' offsets that moved (one batch, not fsynced on its own:
    /// a crash may lose the last [`OFFSET_FLUSH`] of commits, and the group gets
    /// those messages again).
    fn flush_offsets(&mut self) {
        self.flush_scheduled = false;
        let Some(ops) = self.offset_ops() else {
            return;
        };
        let commit = self.store.submit(Batch::non_durable(ops));
        let name = self.shared.name.clone();
        tokio::spawn(async move {
            if let Err(e) = commit.await {
                tracing::error!(stream = %name, "storing consumer group offsets failed: {e}");
            }
        });
    }

    /// A channel settled deliveries, by the seqs they carried: each is its
    /// consumer's offset (two consumers of a channel may both hold an offset).
    fn settle(&mut self, channel: ChannelId, seqs: Vec<u64>) {
        let mut by_consumer: HashMap<ConsumerKey, Vec<u64>> = HashMap::new();
        for seq in seqs {
            if let Some((key, offsets)) = self.sent.remove(&seq) {
                if key.0 == channel {
                    by_consumer.entry(key).or_default().extend(offsets);
                }
            }
        }
        for (key, offsets) in by_consumer {
            self.apply(Command::Settle { key, offsets });
        }
    }

    // ----- appends -------------------------------------------------------------------

    fn enqueue(&mut self, batch: Enqueue) {
        self.shared.emit_trace(&batch.messages);
        self.waiting.push(batch);
        if !self.appending {
            self.append();
        }
    }

    /// Writes what waits as one append: its chunks in one durable batch.
    fn append(&mut self) {
        let batches = std::mem::take(&mut self.waiting);
        let messages: Vec<SharedMessage> = batches
            .iter()
            .flat_map(|b| b.messages.iter().cloned())
            .collect();
        if messages.is_empty() {
            answer(batches, |_| Vec::new());
            return;
        }
        // Chunk times never go back, so the timestamp index stays ordered. Its entry
        // is the first chunk of each second.
        let timestamp_ms = now_ms().max(self.last_ms);
        let index_before = self.last_indexed;
        let mut time_index = None;
        if time_bucket(timestamp_ms) > self.last_indexed {
            self.last_indexed = time_bucket(timestamp_ms);
            time_index = Some(self.last_indexed);
        }
        let mut ops = Vec::new();
        let mut chunks = Vec::new();
        let (mut offset, mut position) = (self.next_offset, self.next_position);
        let mut rest = &messages[..];
        for len in chunk::chunk_lengths(messages.iter().map(|m| m.body.len())) {
            let (these, after) = rest.split_at(len);
            rest = after;
            // The keyed messages go into the key index with the chunk.
            let keys: Vec<(u64, u64)> = these
                .iter()
                .zip(offset..)
                .filter_map(|(m, o)| key_of(m).map(|k| (key_hash(k.as_bytes()), o)))
                .collect();
            let header = ChunkHeader {
                first: offset,
                count: len as u32,
                timestamp_ms,
                position,
                keys: keys.clone(),
            };
            let record = match chunk::encode(&header, these) {
                Ok(record) => record,
                Err(e) => {
                    self.last_indexed = index_before;
                    tracing::error!(stream = %self.shared.name, "cannot encode a chunk: {e}");
                    let why = format!("the stream cannot store the message: {e}");
                    answer(batches, |n| vec![EnqueueOutcome::Rejected(why.clone()); n]);
                    return;
                }
            };
            let first = header.first;
            let bytes = record.len();
            ops.push(Op::AppendChunk {
                partition: self.shared.def.id,
                first,
                // (Only the append's first chunk starts an interval.)
                time_index: time_index.take(),
                chunk: record,
                keys,
            });
            chunks.push(Arc::new(Decoded {
                header,
                messages: these.to_vec(),
                bytes,
            }));
            offset += len as u64;
            position += bytes as u64;
        }
        self.appending = true;
        self.last_ms = timestamp_ms;
        self.next_offset = offset;
        self.next_position = position;
        let commit = self.store.submit(Batch::durable(ops));
        let appended = Appended {
            batches,
            chunks,
            next: offset,
            end: position,
            index_before,
        };
        let myself = self.myself.clone();
        tokio::spawn(async move {
            let result = commit.await.map_err(|e| e.to_string());
            // The actor gone (deleted, crashed), the batches drop: their confirms go
            // unanswered, which is the truth, and their credit comes back.
            let _ = myself.cast(StreamMsg::Appended(appended, result));
        });
    }

    fn appended(&mut self, appended: Appended, result: Result<(), String>) {
        self.appending = false;
        let Appended {
            batches,
            chunks,
            next,
            end,
            index_before,
        } = appended;
        match result {
            Ok(()) => {
                answer(batches, |n| vec![EnqueueOutcome::Confirmed; n]);
                let last_chunk = chunks.last().map_or(0, |c| c.header.first);
                if self.readers.is_empty() {
                    // Nobody reads at the end: a stream being filled holds nothing.
                    self.tail.clear();
                    self.tail_bytes = 0;
                } else {
                    for chunk in chunks {
                        self.tail_bytes += chunk.bytes;
                        self.tail.push_back(chunk);
                    }
                }
                while self.tail_bytes > TAIL_BYTES && self.tail.len() > 1 {
                    if let Some(old) = self.tail.pop_front() {
                        self.tail_bytes -= old.bytes;
                    }
                }
                self.apply(Command::Appended {
                    next,
                    last_chunk,
                    end,
                });
                if self
                    .config
                    .max_bytes
                    .is_some_and(|max| self.machine.bounds().bytes() > max)
                {
                    self.retain();
                }
            }
            Err(e) => {
                tracing::error!(stream = %self.shared.name, "an append failed: {e}");
                // Nothing of it was stored: the next append takes its offsets (and
                // indexes its interval).
                self.last_indexed = index_before;
                let bounds = *self.machine.bounds();
                self.next_offset = bounds.next;
                self.next_position = bounds.end;
                let why = format!("the stream could not store the message: {e}");
                answer(batches, |n| vec![EnqueueOutcome::Rejected(why.clone()); n]);
            }
        }
        if !self.waiting.is_empty() {
            self.append();
        }
    }

    // ----- consumers -----------------------------------------------------------------

    fn consume(
        &mut self,
        request: ConsumeRequest,
        spec: OffsetSpec,
        group: Option<GroupArgs>,
    ) -> Result<(), BrokerError> {
        let id = self.shared.def.id;
        let store = &self.store;
        let start = self.machine.bounds().resolve(spec, |ms| {
            // The first chunk of the second that holds the time: a start at most a
            // second early, never late.
            store.partition_offset_at(id, time_bucket(ms)).unwrap_or_else(|e| {
                tracing::warn!(stream = %self.shared.name, "timestamp lookup failed, starting at the end: {e}");
                None
            })
        });
        // Journaled first: what `attach` sends at once is noted as sent in it.
        let key: ConsumerKey = (request.channel, request.tag.clone());
        let known = self.readers.contains_key(&key);
        if !known {
            self.shared
                .journal_consume(request.clone(), start, group.clone());
        }
        let attached = self.attach(request, start, group);
        if attached.is_err() && !known {
            self.shared.journal_forget(|k| *k == key);
        }
        attached
    }

    /// The group a consumer joins, with the offset stored for it (what is not
    /// flushed yet counts: it is newer).
    fn join(&self, group: GroupArgs) -> Result<Join, BrokerError> {
        let name: Arc<str> = group.key.as_str().into();
        let stored = match self
            .shared
            .commit_of(&name)
            .or_else(|| self.dirty_offsets.get(&name).copied())
        {
            Some(offset) => Some(offset),
            None => self
                .store
                .consumer_offset(self.shared.def.id, &group.key)
                .map_err(|e| {
                    BrokerError::internal(format!("reading the group's offset failed: {e}"))
                })?,
        };
        Ok(Join {
            group: name,
            stored,
            commit: group.commit,
        })
    }

    fn attach(
        &mut self,
        request: ConsumeRequest,
        start: u64,
        group: Option<GroupArgs>,
    ) -> Result<(), BrokerError> {
        let join = group.map(|g| self.join(g)).transpose()?;
        let key: ConsumerKey = (request.channel, request.tag.clone());
        if self.readers.contains_key(&key) {
            return Err(BrokerError::new(
                warren_actors::error::code::NOT_ALLOWED,
                format!("attempt to reuse consumer tag '{}'", request.tag),
            ));
        }
        let filter = TagFilter::of(&request.arguments).ok().flatten();
        self.readers.insert(
            key.clone(),
            Reader {
                sink: request.sink,
                tag: request.tag,
                pending: VecDeque::new(),
                buffer: Vec::new(),
                read: None,
                runs: request.records && filter.is_none(),
                run_max: u64::from(request.prefetch / 2).max(1),
                filter,
            },
        );
        let effects = self
            .machine
            .apply(Command::Consume {
                key: key.clone(),
                start,
                prefetch: request.prefetch,
                join,
            })
            .map_err(|e| BrokerError::new(warren_actors::error::code::NOT_ALLOWED, e.to_string()));
        match effects {
            Ok(effects) => {
                self.perform(effects);
                Ok(())
            }
            Err(e) => {
                self.readers.remove(&key);
                Err(e)
            }
        }
    }

    /// Sends consumer `key` what it is owed from the chunks at hand, and starts a
    /// read of the log for the first offset that is not.
    fn pump(&mut self, key: &ConsumerKey) {
        let Some(reader) = self.readers.get_mut(key) else {
            return;
        };
        let mut out = Vec::new();
        let mut runs = Vec::new();
        let mut skipped = Vec::new();
        let mut sent_upto = None;
        let first_kept = self.machine.bounds().first;
        while let Some(range) = reader.pending.front_mut() {
            if range.start < first_kept {
                // Retention removed these before they were read.
                let gone = range.start..first_kept.min(range.end);
                range.start = gone.end;
                skipped.push(gone);
                if range.is_empty() {
                    reader.pending.pop_front();
                }
                continue;
            }
            let chunk = reader
                .buffer
                .iter()
                .chain(self.tail.iter())
                .find(|c| c.holds(range.start))
                .cloned();
            let Some(chunk) = chunk else {
                if reader.read.is_none() {
                    let id = self.next_read;
                    self.next_read += 1;
                    reader.read = Some((id, range.start));
                    read(
                        &self.store,
                        self.shared.def.id,
                        (key.clone(), id),
                        range.start,
                        self.myself.clone(),
                    );
                }
                break;
            };
            let mut upto = range.end.min(chunk.header.next());
            if reader.runs {
                upto = upto.min(range.start + reader.run_max);
                // One run for what this chunk holds of the range: one seq.
                let seq = self.shared.next_seq();
                let at = (range.start - chunk.header.first) as usize;
                let end = (upto - chunk.header.first) as usize;
                self.sent.insert(seq, (key.clone(), range.start..upto));
                runs.push(RecordRun {
                    queue: self.shared.name.clone(),
                    consumer_tag: reader.tag.clone(),
                    seq,
                    first_offset: range.start,
                    messages: chunk.messages[at..end].to_vec(),
                });
            }
            let singles = if reader.runs { 0..0 } else { range.start..upto };
            for offset in singles {
                let index = (offset - chunk.header.first) as usize;
                let message = &chunk.messages[index];
                if reader.filter.as_ref().is_some_and(|f| !f.admits(message)) {
                    // Filtered out: passed over, as if acked at once.
                    match skipped.last_mut() {
                        Some(r) if r.end == offset => r.end = offset + 1,
                        _ => skipped.push(offset..offset + 1),
                    }
                    continue;
                }
                // Its own seq, which the channel settles: what names the consumer
                // and the offset here.
                let seq = self.shared.next_seq();
                self.sent.insert(seq, (key.clone(), offset..offset + 1));
                out.push(QueueDelivery {
                    queue: self.shared.name.clone(),
                    consumer_tag: reader.tag.clone(),
                    seq,
                    message: with_offset(message, offset),
                    redelivered: false,
                    no_ack: false,
                });
            }
            range.start = upto;
            sent_upto = Some(upto);
            if range.is_empty() {
                reader.pending.pop_front();
            }
        }
        if let Some(next) = sent_upto {
            self.shared.journal_sent(key, next);
        }
        if !out.is_empty() {
            (reader.sink)(QueueEvent::Deliver(out));
        }
        for run in runs {
            (reader.sink)(QueueEvent::Records(run));
        }
        // (Applying these may give the consumer more to send: `perform` queues it,
        // and the loop in `perform` sends it, without recursion.)
        for offsets in skipped {
            self.apply(Command::Skipped {
                key: key.clone(),
                offsets,
            });
        }
    }

    fn read_done(&mut self, key: ConsumerKey, id: u64, chunks: Result<Vec<Arc<Decoded>>, String>) {
        let Some(reader) = self.readers.get_mut(&key) else {
            return;
        };
        // A read for a consumer that stopped and started again since (or was
        // deactivated) is for what it no longer gets: dropped, and read again.
        let Some((_, issued_for)) = reader.read.filter(|(r, _)| *r == id) else {
            self.to_pump.push_back(key);
            self.perform(Vec::new());
            return;
        };
        reader.read = None;
        match chunks {
            Ok(chunks) => {
                // Offsets before the first chunk read are gone (retention); so is
                // everything when nothing came back. Only said of the offset the read
                // was for.
                let from = reader
                    .pending
                    .front()
                    .map(|r| r.start)
                    .filter(|start| *start == issued_for);
                let found = chunks.first().map(|c| c.header.first);
                reader.buffer = chunks;
                if let Some(from) = from {
                    let gone_upto = match found {
                        Some(first) => first,
                        None => self.machine.bounds().next,
                    };
                    if gone_upto > from {
                        let mut skipped = Vec::new();
                        while let Some(range) = reader.pending.front_mut() {
                            if range.start >= gone_upto {
                                break;
                            }
                            let gone = range.start..gone_upto.min(range.end);
                            range.start = gone.end;
                            skipped.push(gone);
                            if range.is_empty() {
                                reader.pending.pop_front();
                            }
                        }
                        for offsets in skipped {
                            self.apply(Command::Skipped {
                                key: key.clone(),
                                offsets,
                            });
                        }
                    }
                }
                self.pump(&key);
            }
            Err(e) => {
                tracing::error!(stream = %self.shared.name, tag = %key.1, "reading the stream's log failed: {e}");
                if let Some(reader) = self.readers.remove(&key) {
                    (reader.sink)(QueueEvent::ConsumerCancelled {
                        tag: reader.tag,
                        reason: format!("reading the stream's log failed: {e}"),
                        resumable: false,
                    });
                }
                self.shared.journal_forget(|k| *k == key);
                self.apply(Command::Cancel { key });
            }
        }
    }

    fn end_consumers(&mut self, reason: &str) {
        for ((channel, _), reader) in self.readers.drain() {
            (reader.sink)(QueueEvent::ConsumerCancelled {
                tag: reader.tag.clone(),
                reason: reason.to_string(),
                resumable: false,
            });
            let _ = self.machine.apply(Command::Cancel {
                key: (channel, reader.tag),
            });
        }
        self.shared.journal_forget(|_| true);
    }

    /// The groups with members here, and those with only an offset (stored, or
    /// committed and about to be).
    fn groups(&self) -> Result<Vec<GroupStatus>, BrokerError> {
        let end = self.machine.bounds().next;
        let split = |key: &str| match key.split_once('\u{0}') {
            Some((group, member)) => (group.to_string(), Some(member.to_string())),
            None => (key.to_string(), None),
        };
        let mut by_key: std::collections::BTreeMap<String, GroupStatus> = self
            .store
            .consumer_offsets(self.shared.def.id)
            .map_err(|e| BrokerError::internal(format!("reading the groups' offsets failed: {e}")))?
            .into_iter()
            .map(|(key, committed)| {
                let (group, member) = split(&key);
                let status = GroupStatus {
                    group,
                    member,
                    committed,
                    end,
                    members: 0,
                    active: None,
                };
                (key, status)
            })
            .collect();
        // Offsets committed and not stored yet are newer.
        for (key, committed) in self.shared.commits() {
            let (group, member) = split(&key);
            by_key
                .entry(key.to_string())
                .and_modify(|s| s.committed = committed)
                .or_insert(GroupStatus {
                    group,
                    member,
                    committed,
                    end,
                    members: 0,
                    active: None,
                });
        }
        for (key, g) in self.machine.groups() {
            let (group, member) = split(key);
            let active = g
                .members
                .iter()
                .find(|m| self.machine.consumers().any(|(k, c)| k == *m && c.active))
                .map(|(_, tag)| tag.to_string());
            by_key.insert(
                key.to_string(),
                GroupStatus {
                    group,
                    member,
                    committed: g.committed,
                    end,
                    members: g.members.len() as u32,
                    active,
                },
            );
        }
        Ok(by_key.into_values().collect())
    }

    fn consumer_summaries(&self) -> Vec<ConsumerSummary> {
        self.machine
            .consumers()
            .map(|((channel, tag), c)| ConsumerSummary {
                tag: tag.to_string(),
                channel: *channel,
                prefetch: c.prefetch,
                unacked: c.unacked.len() as u32,
                no_ack: false,
                exclusive: false,
                active: c.active,
            })
            .collect()
    }

    // ----- retention -----------------------------------------------------------------

    fn retain(&mut self) {
        if self.retaining || (self.config.max_age.is_none() && self.config.max_bytes.is_none()) {
            return;
        }
        let bounds = *self.machine.bounds();
        if bounds.first == bounds.last_chunk {
            return;
        }
        self.retaining = true;
        let store = self.store.clone();
        let id = self.shared.def.id;
        let config = self.config;
        let myself = self.myself.clone();
        tokio::spawn(async move {
            let reading = store.clone();
            let front = tokio::task::spawn_blocking(move || {
                reading.partition_chunks(id, bounds.first, RETAIN_READ_BYTES)
            })
            .await;
            let result = match front {
                Ok(Ok(front)) => {
                    let headers: Result<Vec<ChunkHeader>, _> = front
                        .iter()
                        .map(|(_, record)| chunk::header(record))
                        .collect();
                    match headers {
                        Ok(headers) => {
                            match retention::keep_from(&headers, &bounds, &config, now_ms()) {
                                Some(at) => {
                                    let keep = headers[at].clone();
                                    let keys = headers[..at]
                                        .iter()
                                        .flat_map(|h| h.keys.iter().copied())
                                        .collect();
                                    store
                                        .submit(Batch::durable(vec![Op::DropChunks {
                                            partition: id,
                                            before: keep.first,
                                            // (The kept chunk's interval stays indexed.)
                                            before_ms: time_bucket(keep.timestamp_ms),
                                            keys,
                                        }]))
                                        .await
                                        .map(|()| Some(keep))
                                        .map_err(|e| e.to_string())
                                }
                                None => Ok(None),
                            }
                        }
                        Err(e) => Err(e.to_string()),
                    }
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let _ = myself.cast(StreamMsg::Retained(result));
        });
    }

    fn retained(&mut self, result: Result<Option<ChunkHeader>, String>) {
        self.retaining = false;
        match result {
            Ok(Some(keep)) => {
                tracing::debug!(stream = %self.shared.name, first = keep.first, "retention dropped old chunks");
                self.apply(Command::Truncated {
                    first: keep.first,
                    start: keep.position,
                });
                while self
                    .tail
                    .front()
                    .is_some_and(|c| c.header.next() <= keep.first)
                {
                    if let Some(old) = self.tail.pop_front() {
                        self.tail_bytes -= old.bytes;
                    }
                }
                // More may go than one pass read (by size or by age).
                self.retain();
            }
            Ok(None) => {}
            Err(e) => tracing::error!(stream = %self.shared.name, "retention failed: {e}"),
        }
    }

    fn publish_stats(&self) {
        let bounds = self.machine.bounds();
        self.shared.publish_stats(
            bounds.len(),
            self.machine.unacked(),
            self.readers.len() as u64,
            bounds.bytes(),
            self.waiting.iter().map(|b| b.messages.len() as u64).sum(),
        );
    }
}

/// Answers each batch's publisher with `outcome(n)` for its `n` messages.
fn answer(batches: Vec<Enqueue>, outcome: impl Fn(usize) -> Vec<EnqueueOutcome>) {
    for batch in batches {
        if let Some(confirm) = batch.confirm {
            let _ = confirm.send(outcome(batch.messages.len()));
        }
        drop(batch.credit);
    }
}

/// Reads the chunks from the one holding `from` (about [`READ_BYTES`]) off the
/// actor's thread, and hands them to the actor decoded.
fn read(
    store: &Store,
    id: u64,
    (key, read): (ConsumerKey, u64),
    from: u64,
    myself: ActorRef<StreamMsg>,
) {
    let store = store.clone();
    tokio::spawn(async move {
        let chunks = tokio::task::spawn_blocking(move || {
            let records = store
                .partition_chunks(id, from, READ_BYTES)
                .map_err(|e| e.to_string())?;
            records
                .into_iter()
                .map(|(_, record)| {
                    let bytes = record.len();
                    chunk::decode(&record)
                        .map(|(header, messages)| {
                            Arc::new(Decoded {
                                header,
                                messages,
                                bytes,
                            })
                        })
                        .map_err(|e| e.to_string())
                })
                .collect::<Result<Vec<_>, String>>()
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        let _ = myself.cast(StreamMsg::Read {
            key,
            id: read,
            chunks,
        });
    });
}

/// The message as a consumer gets it: with its offset in `x-stream-offset` (a
/// `long`, replacing one the publisher set).
pub(crate) fn with_offset(message: &SharedMessage, offset: u64) -> SharedMessage {
    let mut delivered: Message = (**message).clone();
    delivered
        .properties
        .headers
        .get_or_insert_with(FieldTable::new)
        .insert(
            STREAM_OFFSET_ARG.to_string(),
            FieldValue::I64(i64::try_from(offset).unwrap_or(i64::MAX)),
        );
    Arc::new(delivered)
}

/// The partition's number in its stream, from its name as a partitioned stream
/// names its partitions (`clicks-3`: 3); 0 for a stream of its own.
fn partition_number(name: &str) -> u64 {
    name.rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}

/// The timestamp index's interval of a time: its second.
fn time_bucket(ms: u64) -> u64 {
    ms - ms % 1000
}
