//! What crosses a queue link (see [`crate::link`]): the items a client node sends a
//! queue's node ([`ToQueue`]) and those that come back ([`ToClient`]), and how many of
//! them are laid out in one frame.
//!
//! ```text
//! frame   = length (u32 LE, of what follows) item*
//! item    = kind (u8) head [message*]
//! head    = the item's fields, one value of warren_storage::codec (bincode)
//! message = (exchange, routing key, properties) as one codec value,
//!           body length (u32 LE), body
//! ```
//!
//! Bodies are written raw behind their message's head, so the receiving side takes a
//! delivered body as a slice of the frame it read ([`Bytes::slice`]): no copy between
//! the socket and the consuming channel. A published body is copied once into an
//! allocation of its own, since the queue may keep it for long. Everything else goes
//! through the codec, whose version byte lets a later Warren change a head.

use std::sync::Arc;

use bytes::{BufMut, Bytes};
use warren_actors::delivery::{ChannelId, QueueDelivery, RecordRun};
use warren_actors::message::{Message, Properties, SharedMessage};
use warren_actors::queue::{EnqueueOutcome, QueueStatus};
use warren_storage::codec;

use crate::protocol::ErrorReply;
use crate::queue_wire::{QueueAnswer, QueueNote, QueueRequest};

/// The largest frame a link reads: far above any batch a writer makes (it stops
/// adding items at [`crate::link::FRAME_TARGET`]), room for one very large message.
pub const MAX_FRAME: usize = 1 << 30;

/// From a client node to a queue's node.
#[derive(Debug)]
pub enum ToQueue {
    /// A request with an answer ([`ToClient::Answer`] with the same id).
    Call {
        /// Names the answer.
        id: u64,
        /// The queue's vhost.
        vhost: String,
        /// The queue's name.
        queue: String,
        /// What is asked.
        request: QueueRequest,
    },
    /// Messages routed to a queue, in publish order.
    Publish {
        /// Names the answer ([`ToClient::Published`]); 0 when nobody waits for one.
        id: u64,
        /// The queue's vhost.
        vhost: String,
        /// The queue's name.
        queue: String,
        /// The messages.
        messages: Vec<SharedMessage>,
    },
    /// An operation without an answer.
    Note {
        /// The queue's vhost.
        vhost: String,
        /// The queue's name.
        queue: String,
        /// What to do.
        note: QueueNote,
    },
    /// The counters of the vhost's queues on the queue's node
    /// ([`ToClient::Stats`] with the same id).
    Stats {
        /// Names the answer.
        id: u64,
        /// The vhost.
        vhost: String,
    },
    /// Nothing: sent when the link is otherwise idle, so that the far side knows it
    /// lives.
    Ping,
}

/// From a queue's node back to a client node.
#[derive(Debug)]
pub enum ToClient {
    /// The answer to a [`ToQueue::Call`].
    Answer {
        /// The call's id.
        id: u64,
        /// Its answer, or the refusal.
        answer: Result<QueueAnswer, ErrorReply>,
    },
    /// The outcomes of a [`ToQueue::Publish`], one per message, in order.
    Published {
        /// The publish's id.
        id: u64,
        /// The outcomes.
        outcomes: Vec<EnqueueOutcome>,
    },
    /// Deliveries for consumers of a channel of the client node, in queue order.
    Deliver {
        /// The queue's vhost.
        vhost: String,
        /// The queue (each delivery's `queue` is this).
        queue: Arc<str>,
        /// The channel, as the client node numbers it.
        channel: ChannelId,
        /// The deliveries.
        deliveries: Vec<QueueDelivery>,
    },
    /// A run of a stream's records for a consumer of a channel of the client node
    /// that asked for runs (link version 3): settled as one under its `seq`.
    Records {
        /// The stream's vhost.
        vhost: String,
        /// The channel, as the client node numbers it.
        channel: ChannelId,
        /// The run (its `queue` names the stream).
        run: RecordRun,
    },
    /// The queue ended a consumer of a channel of the client node.
    Cancelled {
        /// The queue's vhost.
        vhost: String,
        /// The queue.
        queue: Arc<str>,
        /// The channel, as the client node numbers it.
        channel: ChannelId,
        /// The consumer's tag.
        tag: String,
        /// Why, for the consumer.
        reason: String,
        /// The queue goes on, served elsewhere.
        resumable: bool,
    },
    /// The answer to a [`ToQueue::Stats`].
    Stats {
        /// The question's id.
        id: u64,
        /// The counters of the vhost's queues on the node, by name.
        statuses: Vec<(String, QueueStatus)>,
    },
    /// Nothing (see [`ToQueue::Ping`]).
    Ping,
}

/// What a link's writer and reader need of the items of one direction.
pub trait LinkItem: Sized + Send + 'static {
    /// The item that says nothing (sent when idle).
    fn ping() -> Self;
    /// Appends the item to a frame being built.
    fn encode(&self, out: &mut Vec<u8>);
    /// The item at `frame[*at..]`, moving `at` past it; bodies are slices of `frame`.
    fn decode(frame: &Bytes, at: &mut usize) -> Result<Self, String>;
    /// About how many bytes the item takes in a frame (what caps merging).
    fn size(&self) -> usize;
    /// Takes `next` into `self` when both can travel as one item (settlements of one
    /// channel, deliveries to one channel); gives it back otherwise.
    fn merge(&mut self, next: Self) -> Result<(), Self> {
        Err(next)
    }
}

const CALL: u8 = 1;
const PUBLISH: u8 = 2;
const NOTE: u8 = 3;
const STATS: u8 = 4;
const PING: u8 = 5;
const ANSWER: u8 = 11;
const PUBLISHED: u8 = 12;
const DELIVER: u8 = 13;
const CANCELLED: u8 = 14;
const STATUSES: u8 = 15;
const RECORDS: u8 = 16;

fn put<T: serde::Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    if let Err(e) = codec::encode_into(value, out) {
        // Our heads are plain derived data, so this is a bug; the far side sees a
        // frame it cannot read and drops the link (it says why).
        tracing::error!("cannot encode a queue link item: {e}");
    }
}

fn take<T: serde::de::DeserializeOwned>(frame: &Bytes, at: &mut usize) -> Result<T, String> {
    let rest = frame.get(*at..).ok_or("an item past the frame's end")?;
    let (value, used) = codec::decode_prefix(rest).map_err(|e| e.to_string())?;
    *at += used;
    Ok(value)
}

fn put_message(m: &Message, out: &mut Vec<u8>) {
    put(&(&m.exchange, &m.routing_key, &m.properties), out);
    out.put_u32_le(m.body.len() as u32);
    out.extend_from_slice(&m.body);
}

/// The message at `frame[*at..]`; its body a slice of the frame, or with `own` a copy
/// in an allocation of its own. (A message that stays in a queue must not hold its
/// whole frame, and every other message of the frame, alive: published bodies are
/// copied once, as the AMQP reader copies them; delivered ones are on their way out.)
fn take_message(frame: &Bytes, at: &mut usize, own: bool) -> Result<Message, String> {
    let (exchange, routing_key, properties): (String, String, Properties) = take(frame, at)?;
    let len = frame
        .get(*at..*at + 4)
        .ok_or("a body length past the frame's end")?;
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    *at += 4;
    if frame.len() - *at < len {
        return Err(format!("a body of {len} bytes past the frame's end"));
    }
    let body = if own {
        Bytes::copy_from_slice(&frame[*at..*at + len])
    } else {
        frame.slice(*at..*at + len)
    };
    *at += len;
    Ok(Message {
        exchange,
        routing_key,
        properties,
        body,
    })
}

fn kind(frame: &Bytes, at: &mut usize) -> Result<u8, String> {
    let k = *frame.get(*at).ok_or("an item past the frame's end")?;
    *at += 1;
    Ok(k)
}

/// About what a message takes in a frame: its body and a head.
fn message_size(m: &Message) -> usize {
    m.body.len() + 64
}

impl LinkItem for ToQueue {
    fn ping() -> Self {
        ToQueue::Ping
    }

    fn size(&self) -> usize {
        match self {
            ToQueue::Publish { messages, .. } => {
                messages.iter().map(|m| message_size(m)).sum::<usize>() + 64
            }
            ToQueue::Note {
                note: QueueNote::Settle { seqs, .. },
                ..
            } => seqs.len() * 8 + 64,
            _ => 64,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ToQueue::Call {
                id,
                vhost,
                queue,
                request,
            } => {
                out.push(CALL);
                put(&(id, vhost, queue, request), out);
            }
            ToQueue::Publish {
                id,
                vhost,
                queue,
                messages,
            } => {
                out.push(PUBLISH);
                put(&(id, vhost, queue, messages.len() as u32), out);
                for m in messages {
                    put_message(m, out);
                }
            }
            ToQueue::Note { vhost, queue, note } => {
                out.push(NOTE);
                put(&(vhost, queue, note), out);
            }
            ToQueue::Stats { id, vhost } => {
                out.push(STATS);
                put(&(id, vhost), out);
            }
            ToQueue::Ping => out.push(PING),
        }
    }

    fn decode(frame: &Bytes, at: &mut usize) -> Result<Self, String> {
        Ok(match kind(frame, at)? {
            CALL => {
                let (id, vhost, queue, request) = take(frame, at)?;
                ToQueue::Call {
                    id,
                    vhost,
                    queue,
                    request,
                }
            }
            PUBLISH => {
                let (id, vhost, queue, count): (u64, String, String, u32) = take(frame, at)?;
                let mut messages = Vec::with_capacity((count as usize).min(4096));
                for _ in 0..count {
                    messages.push(Arc::new(take_message(frame, at, true)?));
                }
                ToQueue::Publish {
                    id,
                    vhost,
                    queue,
                    messages,
                }
            }
            NOTE => {
                let (vhost, queue, note) = take(frame, at)?;
                ToQueue::Note { vhost, queue, note }
            }
            STATS => {
                let (id, vhost) = take(frame, at)?;
                ToQueue::Stats { id, vhost }
            }
            PING => ToQueue::Ping,
            other => return Err(format!("unknown item kind {other} to a queue's node")),
        })
    }

    /// Settlements of one channel with one outcome travel as one note.
    fn merge(&mut self, next: Self) -> Result<(), Self> {
        let ToQueue::Note {
            vhost,
            queue,
            note:
                QueueNote::Settle {
                    channel,
                    settlement,
                    seqs,
                },
        } = self
        else {
            return Err(next);
        };
        match next {
            ToQueue::Note {
                vhost: v,
                queue: q,
                note:
                    QueueNote::Settle {
                        channel: c,
                        settlement: s,
                        seqs: more,
                    },
            } if v == *vhost && q == *queue && c == *channel && s == *settlement => {
                seqs.extend(more);
                Ok(())
            }
            other => Err(other),
        }
    }
}

impl LinkItem for ToClient {
    fn ping() -> Self {
        ToClient::Ping
    }

    fn size(&self) -> usize {
        match self {
            ToClient::Deliver { deliveries, .. } => {
                deliveries
                    .iter()
                    .map(|d| message_size(&d.message))
                    .sum::<usize>()
                    + 64
            }
            ToClient::Records { run, .. } => {
                run.messages.iter().map(|m| message_size(m)).sum::<usize>() + 64
            }
            ToClient::Published { outcomes, .. } => outcomes.len() * 2 + 64,
            _ => 64,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ToClient::Answer { id, answer } => {
                out.push(ANSWER);
                put(&(id, answer), out);
            }
            ToClient::Published { id, outcomes } => {
                out.push(PUBLISHED);
                put(&(id, outcomes), out);
            }
            ToClient::Deliver {
                vhost,
                queue,
                channel,
                deliveries,
            } => {
                out.push(DELIVER);
                put(&(vhost, &**queue, channel, deliveries.len() as u32), out);
                // A consumer's tag is written when it changes, not with every delivery.
                let mut last: Option<&str> = None;
                for d in deliveries {
                    let tag = (last != Some(&*d.consumer_tag)).then_some(&*d.consumer_tag);
                    last = Some(&d.consumer_tag);
                    put(&(tag, d.seq, d.redelivered, d.no_ack), out);
                    put_message(&d.message, out);
                }
            }
            ToClient::Records {
                vhost,
                channel,
                run,
            } => {
                out.push(RECORDS);
                put(
                    &(
                        vhost,
                        &*run.queue,
                        channel,
                        &*run.consumer_tag,
                        run.seq,
                        run.first_offset,
                        run.messages.len() as u32,
                    ),
                    out,
                );
                for m in &run.messages {
                    put_message(m, out);
                }
            }
            ToClient::Cancelled {
                vhost,
                queue,
                channel,
                tag,
                reason,
                resumable,
            } => {
                out.push(CANCELLED);
                put(&(vhost, &**queue, channel, tag, reason, resumable), out);
            }
            ToClient::Stats { id, statuses } => {
                out.push(STATUSES);
                put(&(id, statuses), out);
            }
            ToClient::Ping => out.push(PING),
        }
    }

    fn decode(frame: &Bytes, at: &mut usize) -> Result<Self, String> {
        Ok(match kind(frame, at)? {
            ANSWER => {
                let (id, answer) = take(frame, at)?;
                ToClient::Answer { id, answer }
            }
            PUBLISHED => {
                let (id, outcomes) = take(frame, at)?;
                ToClient::Published { id, outcomes }
            }
            DELIVER => {
                let (vhost, queue, channel, count): (String, String, ChannelId, u32) =
                    take(frame, at)?;
                let queue: Arc<str> = queue.into();
                let mut deliveries = Vec::with_capacity((count as usize).min(4096));
                // A consumer's tag comes when it changes, and its deliveries share it.
                let mut last_tag: Option<Arc<str>> = None;
                for _ in 0..count {
                    let (tag, seq, redelivered, no_ack): (Option<String>, u64, bool, bool) =
                        take(frame, at)?;
                    let consumer_tag = match (tag, last_tag.take()) {
                        (Some(tag), _) => Arc::from(tag),
                        (None, Some(last)) => last,
                        (None, None) => return Err("a delivery without a consumer tag".into()),
                    };
                    last_tag = Some(consumer_tag.clone());
                    deliveries.push(QueueDelivery {
                        queue: queue.clone(),
                        consumer_tag,
                        seq,
                        message: Arc::new(take_message(frame, at, false)?),
                        redelivered,
                        no_ack,
                    });
                }
                ToClient::Deliver {
                    vhost,
                    queue,
                    channel,
                    deliveries,
                }
            }
            RECORDS => {
                let (vhost, queue, channel, tag, seq, first_offset, count): (
                    String,
                    String,
                    ChannelId,
                    String,
                    u64,
                    u64,
                    u32,
                ) = take(frame, at)?;
                let mut messages = Vec::with_capacity((count as usize).min(4096));
                for _ in 0..count {
                    messages.push(Arc::new(take_message(frame, at, false)?));
                }
                ToClient::Records {
                    vhost,
                    channel,
                    run: RecordRun {
                        queue: queue.into(),
                        consumer_tag: tag.into(),
                        seq,
                        first_offset,
                        messages,
                    },
                }
            }
            CANCELLED => {
                let (vhost, queue, channel, tag, reason, resumable): (
                    String,
                    String,
                    ChannelId,
                    String,
                    String,
                    bool,
                ) = take(frame, at)?;
                ToClient::Cancelled {
                    vhost,
                    queue: queue.into(),
                    channel,
                    tag,
                    reason,
                    resumable,
                }
            }
            STATUSES => {
                let (id, statuses) = take(frame, at)?;
                ToClient::Stats { id, statuses }
            }
            PING => ToClient::Ping,
            other => return Err(format!("unknown item kind {other} to a client node")),
        })
    }

    /// Deliveries to one channel from one queue travel as one item.
    fn merge(&mut self, next: Self) -> Result<(), Self> {
        let ToClient::Deliver {
            vhost,
            queue,
            channel,
            deliveries,
        } = self
        else {
            return Err(next);
        };
        match next {
            ToClient::Deliver {
                vhost: v,
                queue: q,
                channel: c,
                deliveries: more,
            } if v == *vhost && q == *queue && c == *channel => {
                deliveries.extend(more);
                Ok(())
            }
            other => Err(other),
        }
    }
}

/// The items of one frame's payload (what follows its length), in order.
pub fn decode_frame<T: LinkItem>(frame: Bytes) -> Result<Vec<T>, String> {
    let mut items = Vec::new();
    let mut at = 0;
    while at < frame.len() {
        items.push(T::decode(&frame, &mut at)?);
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_actors::queue::{QueueStats, Settlement};

    fn message(body: &'static str) -> SharedMessage {
        let mut m = Message::new("ex", "rk", Bytes::from_static(body.as_bytes()));
        m.properties.delivery_mode = Some(2);
        Arc::new(m)
    }

    fn frame_of<T: LinkItem>(items: &[T]) -> Bytes {
        let mut out = Vec::new();
        for i in items {
            i.encode(&mut out);
        }
        Bytes::from(out)
    }

    #[test]
    fn items_to_a_queue_node_round_trip_with_bodies_of_their_own() {
        let items = vec![
            ToQueue::Publish {
                id: 7,
                vhost: "/".into(),
                queue: "q".into(),
                messages: vec![message("one"), message(""), message("three")],
            },
            ToQueue::Call {
                id: 8,
                vhost: "/".into(),
                queue: "q".into(),
                request: QueueRequest::Purge,
            },
            ToQueue::Note {
                vhost: "v".into(),
                queue: "q".into(),
                note: QueueNote::Settle {
                    channel: 3,
                    settlement: Settlement::Ack,
                    seqs: vec![1, 2],
                },
            },
            ToQueue::Stats {
                id: 9,
                vhost: "/".into(),
            },
            ToQueue::Ping,
        ];
        let frame = frame_of(&items);
        let back: Vec<ToQueue> = decode_frame(frame.clone()).expect("decodes");
        assert_eq!(format!("{items:?}"), format!("{back:?}"));
        let ToQueue::Publish { messages, .. } = &back[0] else {
            panic!("a publish first");
        };
        let inside = frame.as_ptr_range();
        assert!(
            !inside.contains(&messages[2].body.as_ptr()),
            "a published body does not hold the frame"
        );
        assert_eq!(messages[0].properties.delivery_mode, Some(2));
    }

    #[test]
    fn items_to_a_client_node_round_trip() {
        let delivery = |seq, tag: &str| QueueDelivery {
            queue: "q".into(),
            consumer_tag: tag.into(),
            seq,
            message: message("body"),
            redelivered: seq == 2,
            no_ack: false,
        };
        let items = vec![
            ToClient::Deliver {
                vhost: "/".into(),
                queue: "q".into(),
                channel: 4,
                deliveries: vec![delivery(1, "a"), delivery(2, "a"), delivery(3, "b")],
            },
            ToClient::Records {
                vhost: "/".into(),
                channel: 4,
                run: RecordRun {
                    queue: "s".into(),
                    consumer_tag: "c".into(),
                    seq: 9,
                    first_offset: 1_000,
                    messages: vec![message("r0"), message(""), message("r2")],
                },
            },
            ToClient::Answer {
                id: 1,
                answer: Err(ErrorReply {
                    code: 404,
                    text: "no".into(),
                }),
            },
            ToClient::Published {
                id: 2,
                outcomes: vec![EnqueueOutcome::Confirmed, EnqueueOutcome::Gone],
            },
            ToClient::Cancelled {
                vhost: "/".into(),
                queue: "q".into(),
                channel: 4,
                tag: "a".into(),
                reason: "deleted".into(),
                resumable: false,
            },
            ToClient::Stats {
                id: 3,
                statuses: vec![(
                    "q".into(),
                    QueueStatus {
                        stats: QueueStats {
                            ready: 5,
                            ..QueueStats::default()
                        },
                        ..QueueStatus::default()
                    },
                )],
            },
        ];
        let frame = frame_of(&items);
        let back: Vec<ToClient> = decode_frame(frame.clone()).expect("decodes");
        assert_eq!(format!("{items:?}"), format!("{back:?}"));
        let ToClient::Deliver { deliveries, .. } = &back[0] else {
            panic!("deliveries first");
        };
        assert!(
            frame
                .as_ptr_range()
                .contains(&deliveries[2].message.body.as_ptr()),
            "a delivered body is a slice of the frame, not a copy"
        );
        assert!(Arc::ptr_eq(
            &deliveries[0].consumer_tag,
            &deliveries[1].consumer_tag
        ));
        let ToClient::Records { run, .. } = &back[1] else {
            panic!("a run second");
        };
        assert!(
            frame
                .as_ptr_range()
                .contains(&run.messages[2].body.as_ptr()),
            "a run's bodies are slices of the frame"
        );
    }

    #[test]
    fn a_cut_or_garbled_frame_is_an_error_not_a_panic() {
        let frame = frame_of(&[ToQueue::Publish {
            id: 1,
            vhost: "/".into(),
            queue: "q".into(),
            messages: vec![message("a body of some length")],
        }]);
        for cut in 0..frame.len() {
            let _ = decode_frame::<ToQueue>(frame.slice(..cut));
        }
        for cut in 1..frame.len() {
            assert!(
                decode_frame::<ToQueue>(frame.slice(..cut)).is_err(),
                "{cut}"
            );
        }
        assert!(decode_frame::<ToClient>(Bytes::from_static(&[99])).is_err());
        let run = frame_of(&[ToClient::Records {
            vhost: "/".into(),
            channel: 1,
            run: RecordRun {
                queue: "s".into(),
                consumer_tag: "c".into(),
                seq: 1,
                first_offset: 0,
                messages: vec![message("one record"), message("and another")],
            },
        }]);
        for cut in 1..run.len() {
            assert!(decode_frame::<ToClient>(run.slice(..cut)).is_err(), "{cut}");
        }
        let mut flipped = frame.to_vec();
        flipped[3] ^= 0xff;
        let _ = decode_frame::<ToQueue>(Bytes::from(flipped));
    }

    #[test]
    fn settlements_and_deliveries_of_one_channel_merge() {
        let settle = |channel, settlement, seqs| ToQueue::Note {
            vhost: "/".into(),
            queue: "q".into(),
            note: QueueNote::Settle {
                channel,
                settlement,
                seqs,
            },
        };
        let mut first = settle(1, Settlement::Ack, vec![1]);
        assert!(first.merge(settle(1, Settlement::Ack, vec![2, 3])).is_ok());
        assert!(first.merge(settle(2, Settlement::Ack, vec![4])).is_err());
        assert!(first
            .merge(settle(1, Settlement::Requeue, vec![4]))
            .is_err());
        let ToQueue::Note {
            note: QueueNote::Settle { seqs, .. },
            ..
        } = first
        else {
            panic!("still a settlement");
        };
        assert_eq!(seqs, [1, 2, 3]);
        let deliver = |channel| ToClient::Deliver {
            vhost: "/".into(),
            queue: "q".into(),
            channel,
            deliveries: Vec::new(),
        };
        assert!(deliver(1).merge(deliver(1)).is_ok());
        assert!(deliver(1).merge(deliver(2)).is_err());
    }
}
