//! Fuzzing the connection reader with the bad input of the issue: truncated frames,
//! wrong frame ends, oversized frames, unknown frame types and class or method ids, a
//! body longer than its header said, and random bytes. Two layers:
//!
//! - the frame reader alone ([`read_frame`], [`greeting`]), no I/O: it never panics,
//!   every frame it returns moves it forward, it reads the same frames and stops at
//!   the same error whether the bytes come at once or in pieces (as off a socket),
//!   each fault is caught with its reply code, and that code is the one the error's
//!   text names;
//! - a whole connection ([`serve`]) on loopback against a vhost with its actors, in
//!   this process: one known fault after valid frames closes the connection with the
//!   expected reply code without the client having to hang up; a random or mutated
//!   stream ends with well-formed frames and a `connection.close` (if any) whose code
//!   its text names, once the client hangs up; the connection's task never panics nor
//!   hangs, nor does anything else in the process; and a connection opened before all
//!   that still consumes afterwards, as a new one declares, publishes and gets.
//!
//! A client stream goes out in two parts, the handshake and then, once the server has
//! answered connection.open, the rest (as clients do; what a server does with frames
//! sent together with the handshake is `frames_sent_with_the_handshake_are_answered`). Mutations hit either the whole stream or only what
//! follows the handshake, so that most mutated frames reach an open connection.
//!
//! The connection layer lives here rather than in `tests/` because `serve` is private
//! to the crate (awaiting its task is what tells a panic or a hang from a close). The
//! same kind of run against a real `warren node` process is `tests/amqp_fuzz.rs` at
//! the workspace root.
//!
//! Case counts are modest so that a debug build runs this in seconds;
//! `PROPTEST_CASES` raises them for a longer hunt.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame};
use amq_protocol::protocol::{basic, channel, confirm, connection, exchange, queue, AMQPClass};
use amq_protocol::types::{FieldTable, LongString};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::codec::{
    greeting, read_frame, write_frame, Greeting, FRAME_END, FRAME_HEADER, PROTOCOL_HEADER,
};
use crate::connection::{serve, Server, FRAME_MAX};
use crate::error::{code, code_name, AmqpError};

// ----- valid streams -------------------------------------------------------------

/// Queue names a session uses ("" asks for a server-named queue).
const QUEUES: [&str; 3] = ["fz.a", "fz.b", ""];
/// Exchanges a session publishes to and binds ("fz.x" only exists once declared).
const EXCHANGES: [&str; 4] = ["", "amq.direct", "amq.fanout", "fz.x"];
const KEYS: [&str; 3] = ["fz.a", "fz.b", "k"];

/// What a well-behaved client does after the handshake, one step at a time.
#[derive(Clone, Debug)]
enum Op {
    Heartbeat,
    OpenChannel(u16),
    CloseChannel(u16),
    Qos(u16, u16),
    Confirm(u16),
    DeclareQueue {
        ch: u16,
        queue: &'static str,
        exclusive: bool,
    },
    DeclareExchange {
        ch: u16,
        kind: &'static str,
    },
    Bind {
        ch: u16,
        queue: &'static str,
        exchange: &'static str,
        key: &'static str,
    },
    Publish {
        ch: u16,
        exchange: &'static str,
        key: &'static str,
        body: Vec<u8>,
        /// Largest body frame (bodies are split into several).
        piece: usize,
        mandatory: bool,
        persistent: bool,
    },
    Consume {
        ch: u16,
        queue: &'static str,
        no_ack: bool,
    },
    Get {
        ch: u16,
        queue: &'static str,
    },
    Ack {
        ch: u16,
        tag: u64,
        multiple: bool,
    },
}

impl Op {
    fn channel(&self) -> Option<u16> {
        match *self {
            Op::Heartbeat => None,
            Op::OpenChannel(ch) | Op::CloseChannel(ch) | Op::Qos(ch, _) | Op::Confirm(ch) => {
                Some(ch)
            }
            Op::DeclareQueue { ch, .. }
            | Op::DeclareExchange { ch, .. }
            | Op::Bind { ch, .. }
            | Op::Publish { ch, .. }
            | Op::Consume { ch, .. }
            | Op::Get { ch, .. }
            | Op::Ack { ch, .. } => Some(ch),
        }
    }
}

fn op() -> impl Strategy<Value = Op> {
    let ch = 1u16..=3;
    let queue = prop::sample::select(&QUEUES[..]);
    let exchange = prop::sample::select(&EXCHANGES[..]);
    let key = prop::sample::select(&KEYS[..]);
    prop_oneof![
        1 => Just(Op::Heartbeat),
        1 => ch.clone().prop_map(Op::OpenChannel),
        1 => ch.clone().prop_map(Op::CloseChannel),
        1 => (ch.clone(), 0u16..10).prop_map(|(ch, n)| Op::Qos(ch, n)),
        1 => ch.clone().prop_map(Op::Confirm),
        2 => (ch.clone(), queue.clone(), any::<bool>())
            .prop_map(|(ch, queue, exclusive)| Op::DeclareQueue { ch, queue, exclusive }),
        1 => (ch.clone(), prop::sample::select(&["direct", "fanout", "topic"][..]))
            .prop_map(|(ch, kind)| Op::DeclareExchange { ch, kind }),
        1 => (ch.clone(), queue.clone(), exchange.clone(), key.clone())
            .prop_map(|(ch, queue, exchange, key)| Op::Bind { ch, queue, exchange, key }),
        4 => (
            ch.clone(),
            exchange,
            key,
            prop::collection::vec(any::<u8>(), 0..200),
            1usize..80,
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(ch, exchange, key, body, piece, mandatory, persistent)| Op::Publish {
                ch,
                exchange,
                key,
                body,
                piece,
                mandatory,
                persistent,
            }),
        1 => (ch.clone(), queue.clone(), any::<bool>())
            .prop_map(|(ch, queue, no_ack)| Op::Consume { ch, queue, no_ack }),
        1 => (ch.clone(), queue).prop_map(|(ch, queue)| Op::Get { ch, queue }),
        1 => (ch, 1u64..5, any::<bool>())
            .prop_map(|(ch, tag, multiple)| Op::Ack { ch, tag, multiple }),
    ]
}

fn encode(frame: &AMQPFrame) -> Vec<u8> {
    let mut out = Vec::new();
    write_frame(frame, &mut out);
    out
}

fn method(ch: u16, class: AMQPClass) -> Vec<u8> {
    encode(&AMQPFrame::Method(ch, class))
}

/// A frame as the wire has it, whatever its bytes.
fn raw_frame(kind: u8, ch: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend_from_slice(&ch.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(FRAME_END);
    f
}

/// The protocol header, then start-ok (PLAIN guest), tune-ok, open: one "frame" each.
fn handshake(frame_max: u32) -> Vec<Vec<u8>> {
    vec![
        PROTOCOL_HEADER.to_vec(),
        method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: FieldTable::default(),
                mechanism: "PLAIN".into(),
                response: LongString::from(&b"\0guest\0guest"[..]),
                locale: "en_US".into(),
            })),
        ),
        method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: 0,
                frame_max,
                heartbeat: 0,
            })),
        ),
        method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: "/".into(),
            })),
        ),
    ]
}

fn publish_frames(
    ch: u16,
    exchange: &str,
    key: &str,
    body: &[u8],
    piece: usize,
    mandatory: bool,
    persistent: bool,
) -> Vec<Vec<u8>> {
    let mut frames = vec![method(
        ch,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: exchange.into(),
            routing_key: key.into(),
            mandatory,
            immediate: false,
        })),
    )];
    let mut properties = basic::AMQPProperties::default();
    if persistent {
        properties = properties.with_delivery_mode(2);
    }
    frames.push(encode(&AMQPFrame::Header(
        ch,
        AMQPContentHeader {
            class_id: 60,
            body_size: body.len() as u64,
            properties,
        },
    )));
    for chunk in body.chunks(piece.max(1)) {
        frames.push(raw_frame(3, ch, chunk));
    }
    frames
}

/// The frames of one step.
fn op_frames(op: &Op) -> Vec<Vec<u8>> {
    let no_args = FieldTable::default;
    match op {
        Op::Heartbeat => vec![encode(&AMQPFrame::Heartbeat)],
        Op::OpenChannel(ch) => vec![method(
            *ch,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        )],
        Op::CloseChannel(ch) => vec![method(
            *ch,
            AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                reply_code: 200,
                reply_text: "bye".into(),
                class_id: 0,
                method_id: 0,
            })),
        )],
        Op::Qos(ch, n) => vec![method(
            *ch,
            AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                prefetch_count: *n,
                global: false,
            })),
        )],
        Op::Confirm(ch) => vec![method(
            *ch,
            AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
                nowait: false,
            })),
        )],
        Op::DeclareQueue {
            ch,
            queue,
            exclusive,
        } => vec![method(
            *ch,
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: (*queue).into(),
                passive: false,
                durable: false,
                exclusive: *exclusive,
                auto_delete: false,
                nowait: false,
                arguments: no_args(),
            })),
        )],
        Op::DeclareExchange { ch, kind } => vec![method(
            *ch,
            AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                exchange: "fz.x".into(),
                kind: (*kind).into(),
                passive: false,
                durable: false,
                auto_delete: false,
                internal: false,
                nowait: false,
                arguments: no_args(),
            })),
        )],
        Op::Bind {
            ch,
            queue,
            exchange,
            key,
        } => vec![method(
            *ch,
            AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
                queue: (*queue).into(),
                exchange: (*exchange).into(),
                routing_key: (*key).into(),
                nowait: false,
                arguments: no_args(),
            })),
        )],
        Op::Publish {
            ch,
            exchange,
            key,
            body,
            piece,
            mandatory,
            persistent,
        } => publish_frames(*ch, exchange, key, body, *piece, *mandatory, *persistent),
        Op::Consume { ch, queue, no_ack } => vec![method(
            *ch,
            AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                queue: (*queue).into(),
                consumer_tag: "".into(),
                no_local: false,
                no_ack: *no_ack,
                exclusive: false,
                nowait: false,
                arguments: no_args(),
            })),
        )],
        Op::Get { ch, queue } => vec![method(
            *ch,
            AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
                queue: (*queue).into(),
                no_ack: false,
            })),
        )],
        Op::Ack { ch, tag, multiple } => vec![method(
            *ch,
            AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: *tag,
                multiple: *multiple,
            })),
        )],
    }
}

/// A client's whole stream, one entry per frame (the protocol header first): valid
/// frames in an order a client may send them (channels opened before use).
#[derive(Clone, Debug)]
struct Session {
    frame_max: u32,
    frames: Vec<Vec<u8>>,
}

impl Session {
    fn new(frame_max: u32, ops: &[Op]) -> Session {
        let mut frames = handshake(frame_max);
        let mut open = BTreeSet::new();
        for op in ops {
            match (op, op.channel()) {
                (Op::OpenChannel(ch), _) if !open.insert(*ch) => continue,
                (Op::CloseChannel(ch), _) if !open.remove(ch) => continue,
                (Op::OpenChannel(_) | Op::CloseChannel(_), _) | (_, None) => {}
                (_, Some(ch)) => {
                    if open.insert(ch) {
                        frames.extend(op_frames(&Op::OpenChannel(ch)));
                    }
                }
            }
            frames.extend(op_frames(op));
        }
        Session { frame_max, frames }
    }

    /// What the server reads against after the handshake (0 takes its maximum).
    fn effective_frame_max(&self) -> u32 {
        if self.frame_max == 0 {
            FRAME_MAX
        } else {
            self.frame_max
        }
    }

    fn bytes(&self) -> Vec<u8> {
        self.frames.concat()
    }
}

fn session() -> impl Strategy<Value = Session> {
    (
        prop::sample::select(&[0u32, 4096, 8192, FRAME_MAX][..]),
        prop::collection::vec(op(), 0..12),
    )
        .prop_map(|(frame_max, ops)| Session::new(frame_max, &ops))
}

// ----- mutations -----------------------------------------------------------------

/// A change to a valid stream. Frame-aware ones pick a frame (never the protocol
/// header); byte-level ones then work on the concatenated bytes.
#[derive(Clone, Debug)]
enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    Truncate(Index),
    /// The frame-end octet of a frame replaced.
    FrameEnd(Index, u8),
    /// The size field of a frame replaced (larger than frame_max, or just wrong).
    Size(Index, u32),
    /// The frame type replaced.
    FrameType(Index, u8),
    /// The channel number replaced.
    Channel(Index, u16),
    /// A method frame's class and method ids replaced.
    MethodIds(Index, u16, u16),
    /// A content header's body size replaced (smaller than its body, or larger).
    BodySize(Index, u64),
    /// A body frame given extra bytes (its size field kept right).
    LongerBody(Index, Vec<u8>),
    DropFrame(Index),
    DuplicateFrame(Index),
    SwapFrames(Index, Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let bytes = prop::collection::vec(any::<u8>(), 1..16);
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, v)| Mutation::SetByte(i, v)),
        (any::<Index>(), bytes.clone()).prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<Index>(), 1usize..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<Index>().prop_map(Mutation::Truncate),
        (
            any::<Index>(),
            any::<u8>().prop_filter("not 0xCE", |b| *b != FRAME_END)
        )
            .prop_map(|(i, b)| Mutation::FrameEnd(i, b)),
        (
            any::<Index>(),
            prop_oneof![any::<u32>(), 0u32..64, (FRAME_MAX - 8)..=(FRAME_MAX + 8)]
        )
            .prop_map(|(i, s)| Mutation::Size(i, s)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, t)| Mutation::FrameType(i, t)),
        (any::<Index>(), prop_oneof![0u16..5, any::<u16>()])
            .prop_map(|(i, c)| Mutation::Channel(i, c)),
        (
            any::<Index>(),
            prop_oneof![Just(10u16), Just(20), Just(50), Just(60), any::<u16>()],
            prop_oneof![0u16..130, any::<u16>()]
        )
            .prop_map(|(i, c, m)| Mutation::MethodIds(i, c, m)),
        (any::<Index>(), prop_oneof![0u64..300, any::<u64>()])
            .prop_map(|(i, s)| Mutation::BodySize(i, s)),
        (any::<Index>(), bytes).prop_map(|(i, v)| Mutation::LongerBody(i, v)),
        any::<Index>().prop_map(Mutation::DropFrame),
        any::<Index>().prop_map(Mutation::DuplicateFrame),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::SwapFrames(a, b)),
    ]
}

/// A frame past the first `protected` ones, if there is one.
fn pick(frames: &[Vec<u8>], protected: usize, i: &Index) -> Option<usize> {
    (frames.len() > protected).then(|| protected + i.index(frames.len() - protected))
}

/// Frames whose 7-byte header and end octet are there (a mutation may have cut one).
fn framed(f: &[u8]) -> bool {
    f.len() > FRAME_HEADER
}

fn set_size(f: &mut [u8], size: u32) {
    f[3..7].copy_from_slice(&size.to_be_bytes());
}

/// Applies mutations in order: the frame-aware ones on the frames (past the first
/// `protected`), the byte-level ones on the bytes.
fn mutate_frames(mut frames: Vec<Vec<u8>>, protected: usize, mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes_level = Vec::new();
    for m in mutations {
        match m {
            Mutation::FrameEnd(i, b) => {
                if let Some(f) = pick(&frames, protected, i).map(|k| &mut frames[k]) {
                    if let Some(last) = f.last_mut() {
                        *last = *b;
                    }
                }
            }
            Mutation::Size(i, s) => {
                if let Some(f) = pick(&frames, protected, i).map(|k| &mut frames[k]) {
                    if framed(f) {
                        set_size(f, *s);
                    }
                }
            }
            Mutation::FrameType(i, t) => {
                if let Some(f) = pick(&frames, protected, i).map(|k| &mut frames[k]) {
                    if let Some(first) = f.first_mut() {
                        *first = *t;
                    }
                }
            }
            Mutation::Channel(i, c) => {
                if let Some(f) = pick(&frames, protected, i).map(|k| &mut frames[k]) {
                    if framed(f) {
                        f[1..3].copy_from_slice(&c.to_be_bytes());
                    }
                }
            }
            Mutation::MethodIds(i, c, n) => {
                if let Some(f) = pick(&frames, protected, i).map(|k| &mut frames[k]) {
                    if f.first() == Some(&1) && f.len() >= FRAME_HEADER + 5 {
                        f[7..9].copy_from_slice(&c.to_be_bytes());
                        f[9..11].copy_from_slice(&n.to_be_bytes());
                    }
                }
            }
            Mutation::BodySize(i, s) => {
                // The i-th content header, wherever it is.
                let headers: Vec<usize> = (0..frames.len())
                    .filter(|&k| frames[k].first() == Some(&2) && frames[k].len() >= 19)
                    .collect();
                if !headers.is_empty() {
                    let k = headers[i.index(headers.len())];
                    frames[k][11..19].copy_from_slice(&s.to_be_bytes());
                }
            }
            Mutation::LongerBody(i, extra) => {
                let bodies: Vec<usize> = (0..frames.len())
                    .filter(|&k| frames[k].first() == Some(&3) && framed(&frames[k]))
                    .collect();
                if !bodies.is_empty() {
                    let f = &mut frames[bodies[i.index(bodies.len())]];
                    let end = f.pop().unwrap_or(FRAME_END);
                    f.extend_from_slice(extra);
                    f.push(end);
                    let size = (f.len() - FRAME_HEADER - 1) as u32;
                    set_size(f, size);
                }
            }
            Mutation::DropFrame(i) => {
                if let Some(k) = pick(&frames, protected, i) {
                    frames.remove(k);
                }
            }
            Mutation::DuplicateFrame(i) => {
                if let Some(k) = pick(&frames, protected, i) {
                    let f = frames[k].clone();
                    frames.insert(k, f);
                }
            }
            Mutation::SwapFrames(a, b) => {
                if let (Some(a), Some(b)) =
                    (pick(&frames, protected, a), pick(&frames, protected, b))
                {
                    frames.swap(a, b);
                }
            }
            other => bytes_level.push(other),
        }
    }
    let mut bytes = frames.concat();
    for m in bytes_level {
        let len = bytes.len();
        if len == 0 {
            break;
        }
        match m {
            Mutation::FlipBit(i, bit) => bytes[i.index(len)] ^= 1 << bit,
            Mutation::SetByte(i, v) => bytes[i.index(len)] = *v,
            Mutation::Insert(i, v) => {
                let at = i.index(bytes.len() + 1);
                bytes.splice(at..at, v.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let at = i.index(bytes.len());
                bytes.drain(at..(at + n).min(bytes.len()));
            }
            Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len())),
            _ => unreachable!("frame-aware mutations were applied above"),
        }
    }
    bytes
}

/// The handshake's frames in a [`Session`]: protocol header, start-ok, tune-ok, open.
const HANDSHAKE_FRAMES: usize = 4;

/// What a client sends, in two parts: the handshake, then, once the server has
/// answered it with connection.open-ok, the rest. (A client that sends everything at
/// once finds its frames after connection.open unread: see
/// `frames_sent_with_the_handshake_are_answered`.)
#[derive(Clone, Debug, Default)]
struct Parts {
    handshake: Vec<u8>,
    rest: Vec<u8>,
}

impl Parts {
    fn all(&self) -> Vec<u8> {
        [&self.handshake[..], &self.rest[..]].concat()
    }
}

/// Where the mutations of a stream go.
#[derive(Clone, Copy, Debug)]
enum Scope {
    /// Anywhere after the protocol header, so the handshake may break; sent at once.
    Everything,
    /// After connection.open only: the handshake goes first and is answered.
    AfterHandshake,
}

fn mutate(session: &Session, scope: Scope, mutations: &[Mutation]) -> Parts {
    match scope {
        Scope::Everything => Parts {
            handshake: mutate_frames(session.frames.clone(), 1, mutations),
            rest: Vec::new(),
        },
        Scope::AfterHandshake => Parts {
            handshake: session.frames[..HANDSHAKE_FRAMES].concat(),
            rest: mutate_frames(session.frames[HANDSHAKE_FRAMES..].to_vec(), 0, mutations),
        },
    }
}

fn mutated() -> impl Strategy<Value = (Session, Scope, Vec<Mutation>)> {
    (
        session(),
        prop_oneof![1 => Just(Scope::Everything), 3 => Just(Scope::AfterHandshake)],
        prop::collection::vec(mutation(), 1..4),
    )
}

// ----- single faults with a known reply code -------------------------------------

/// Class ids of AMQP 0-9-1 (30 is 0-8's access, which `amq-protocol` still parses).
const CLASSES: [u16; 8] = [10, 20, 30, 40, 50, 60, 85, 90];

/// One bad thing after valid frames. Each names the reply code of the
/// `connection.close` it must get, or none (the connection waits for more bytes).
#[derive(Clone, Debug)]
enum Fault {
    /// A frame whose end octet is not 0xCE: 501.
    WrongEnd { frame: u8, end: u8 },
    /// A frame header announcing a frame larger than frame_max: 501 from the 7-byte
    /// header alone, before any payload arrives.
    Oversized { kind: u8, ch: u16, excess: u32 },
    /// A frame type 0-9-1 does not have: 501.
    UnknownType { kind: u8, payload: Vec<u8> },
    /// A method frame with a class id that does not exist: 503.
    UnknownClass { ch: u16, class: u16, method: u16 },
    /// A known class, a method id that does not exist: 503.
    UnknownMethod { ch: u16, class: u16, method: u16 },
    /// A known method whose arguments are cut short: 501 (as RabbitMQ).
    CutArguments { cut: Index },
    /// A content header frame whose payload does not decode: 501.
    BadContentHeader { payload: Vec<u8> },
    /// Body frames adding up to more than the content header announced: 505 (as
    /// RabbitMQ).
    LongerBody {
        announced: u64,
        first: Index,
        extra: u64,
    },
    /// A body frame with no publish before it: 505.
    BodyWithoutPublish,
    /// A content header with no publish before it: 505.
    HeaderWithoutPublish,
    /// A method where a publish's content header belongs: 505.
    MethodInsteadOfHeader,
    /// A heartbeat on a channel other than 0: 505.
    HeartbeatOnChannel(u16),
    /// A method on a channel that was never opened: 504.
    ClosedChannel(u16),
    /// The first `keep` bytes of a valid frame, then nothing: no close, the
    /// connection waits (and ends without one when the client hangs up).
    Truncated { frame: u8, keep: Index },
}

/// Valid frames a fault is built from or placed after, all on channel 1 (opened).
fn sample_frame(which: u8) -> Vec<u8> {
    match which % 4 {
        0 => encode(&AMQPFrame::Heartbeat),
        1 => op_frames(&Op::Qos(1, 7)).remove(0),
        2 => op_frames(&Op::DeclareQueue {
            ch: 1,
            queue: "",
            exclusive: true,
        })
        .remove(0),
        _ => publish_frames(1, "", "fz.nowhere", b"x", 1, false, false).remove(0),
    }
}

impl Fault {
    fn bytes(&self, frame_max: u32) -> Vec<u8> {
        match self {
            Fault::WrongEnd { frame, end } => {
                let mut f = sample_frame(*frame);
                *f.last_mut().expect("a frame") = *end;
                f
            }
            Fault::Oversized { kind, ch, excess } => {
                // Exactly one octet over the limit when `excess` is 1.
                let size = u64::from(frame_max) - (FRAME_HEADER as u64 + 1) + u64::from(*excess);
                let size = size.min(u64::from(u32::MAX)) as u32;
                let mut f = vec![*kind];
                f.extend_from_slice(&ch.to_be_bytes());
                f.extend_from_slice(&size.to_be_bytes());
                f
            }
            Fault::UnknownType { kind, payload } => raw_frame(*kind, 1, payload),
            Fault::UnknownClass { ch, class, method }
            | Fault::UnknownMethod { ch, class, method } => {
                let mut payload = class.to_be_bytes().to_vec();
                payload.extend_from_slice(&method.to_be_bytes());
                payload.extend_from_slice(&[0, 0, 0, 0]);
                raw_frame(1, *ch, &payload)
            }
            Fault::CutArguments { cut } => {
                // queue.declare has arguments on every field type the parser reads.
                let f = sample_frame(2);
                let payload = &f[FRAME_HEADER..f.len() - 1];
                let keep = cut.index(payload.len());
                raw_frame(1, 1, &payload[..keep])
            }
            Fault::BadContentHeader { payload } => {
                let mut out = op_frames(&Op::Publish {
                    ch: 1,
                    exchange: "",
                    key: "fz.nowhere",
                    body: Vec::new(),
                    piece: 1,
                    mandatory: false,
                    persistent: false,
                })
                .remove(0);
                out.extend(raw_frame(2, 1, payload));
                out
            }
            Fault::LongerBody {
                announced,
                first,
                extra,
            } => {
                let mut out = method(
                    1,
                    AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                        exchange: "".into(),
                        routing_key: "fz.nowhere".into(),
                        mandatory: false,
                        immediate: false,
                    })),
                );
                out.extend(encode(&AMQPFrame::Header(
                    1,
                    AMQPContentHeader {
                        class_id: 60,
                        body_size: *announced,
                        properties: Default::default(),
                    },
                )));
                // Part of the body in a frame of its own (none when 0), then the
                // rest with `extra` octets too many.
                let first = first.index(*announced as usize) as u64;
                if first > 0 {
                    out.extend(raw_frame(3, 1, &vec![b'a'; first as usize]));
                }
                out.extend(raw_frame(
                    3,
                    1,
                    &vec![b'b'; (*announced - first + *extra) as usize],
                ));
                out
            }
            Fault::BodyWithoutPublish => raw_frame(3, 1, b"stray"),
            Fault::HeaderWithoutPublish => encode(&AMQPFrame::Header(
                1,
                AMQPContentHeader {
                    class_id: 60,
                    body_size: 3,
                    properties: Default::default(),
                },
            )),
            Fault::MethodInsteadOfHeader => {
                let mut out = sample_frame(3);
                out.extend(sample_frame(1));
                out
            }
            Fault::HeartbeatOnChannel(ch) => raw_frame(8, *ch, b""),
            Fault::ClosedChannel(ch) => op_frames(&Op::Qos(*ch, 1)).remove(0),
            Fault::Truncated { frame, keep } => {
                let f = sample_frame(*frame);
                f[..keep.index(f.len())].to_vec()
            }
        }
    }

    /// The reply code of the connection.close it must get.
    fn code(&self) -> Option<u16> {
        match self {
            Fault::WrongEnd { .. }
            | Fault::Oversized { .. }
            | Fault::UnknownType { .. }
            | Fault::BadContentHeader { .. }
            | Fault::CutArguments { .. } => Some(code::FRAME_ERROR),
            Fault::UnknownClass { .. } | Fault::UnknownMethod { .. } => Some(code::COMMAND_INVALID),
            Fault::LongerBody { .. }
            | Fault::BodyWithoutPublish
            | Fault::HeaderWithoutPublish
            | Fault::MethodInsteadOfHeader
            | Fault::HeartbeatOnChannel(_) => Some(code::UNEXPECTED_FRAME),
            Fault::ClosedChannel(_) => Some(code::CHANNEL_ERROR),
            Fault::Truncated { .. } => None,
        }
    }

    /// Whether the frame reader alone catches it (the others are the connection's).
    fn caught_by_reader(&self) -> bool {
        matches!(
            self,
            Fault::WrongEnd { .. }
                | Fault::Oversized { .. }
                | Fault::UnknownType { .. }
                | Fault::UnknownClass { .. }
                | Fault::UnknownMethod { .. }
                | Fault::CutArguments { .. }
                | Fault::BadContentHeader { .. }
        )
    }

    /// Valid frames the fault's bytes start with (before the bad one).
    fn valid_frames(&self) -> usize {
        match self {
            Fault::BadContentHeader { .. } => 1,
            _ => 0,
        }
    }
}

fn fault() -> impl Strategy<Value = Fault> {
    let unknown_kind =
        any::<u8>().prop_filter("not a 0-9-1 frame type", |k| !matches!(k, 1..=3 | 8));
    prop_oneof![
        (
            any::<u8>(),
            any::<u8>().prop_filter("not 0xCE", |b| *b != FRAME_END)
        )
            .prop_map(|(frame, end)| Fault::WrongEnd { frame, end }),
        (
            prop::sample::select(&[1u8, 2, 3, 8][..]),
            0u16..3,
            prop_oneof![1u32..4, any::<u32>()]
        )
            .prop_map(|(kind, ch, excess)| Fault::Oversized { kind, ch, excess }),
        (unknown_kind, prop::collection::vec(any::<u8>(), 0..16))
            .prop_map(|(kind, payload)| Fault::UnknownType { kind, payload }),
        (
            0u16..2,
            any::<u16>().prop_filter("unknown class", |c| !CLASSES.contains(c)),
            any::<u16>()
        )
            .prop_map(|(ch, class, method)| Fault::UnknownClass { ch, class, method }),
        (0u16..2, prop::sample::select(&CLASSES[..]), 1000u16..)
            .prop_map(|(ch, class, method)| Fault::UnknownMethod { ch, class, method }),
        any::<Index>().prop_map(|cut| Fault::CutArguments { cut }),
        prop::collection::vec(any::<u8>(), 0..12)
            .prop_map(|payload| Fault::BadContentHeader { payload }),
        (1u64..64, any::<Index>(), 1u64..64).prop_map(|(announced, first, extra)| {
            Fault::LongerBody {
                announced,
                first,
                extra,
            }
        }),
        Just(Fault::BodyWithoutPublish),
        Just(Fault::HeaderWithoutPublish),
        Just(Fault::MethodInsteadOfHeader),
        (1u16..=3).prop_map(Fault::HeartbeatOnChannel),
        (2u16..).prop_map(Fault::ClosedChannel),
        (any::<u8>(), any::<Index>()).prop_map(|(frame, keep)| Fault::Truncated { frame, keep }),
    ]
}

/// Valid steps that cannot close channel 1 or the connection (so that the fault is
/// what the connection answers): heartbeats, a qos, a server-named exclusive queue,
/// publishes nobody receives.
fn harmless_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Heartbeat),
        (0u16..10).prop_map(|n| Op::Qos(1, n)),
        Just(Op::DeclareQueue {
            ch: 1,
            queue: "",
            exclusive: true,
        }),
        (prop::collection::vec(any::<u8>(), 0..100), 1usize..60).prop_map(|(body, piece)| {
            Op::Publish {
                ch: 1,
                exchange: "",
                key: "fz.nowhere",
                body,
                piece,
                mandatory: false,
                persistent: false,
            }
        }),
    ]
}

/// A valid stream that opens channel 1, then a fault.
#[derive(Clone, Debug)]
struct Faulty {
    session: Session,
    fault: Fault,
}

impl Faulty {
    fn parts(&self) -> Parts {
        let frames = &self.session.frames;
        let mut rest = frames[HANDSHAKE_FRAMES..].concat();
        rest.extend(self.fault.bytes(self.session.effective_frame_max()));
        Parts {
            handshake: frames[..HANDSHAKE_FRAMES].concat(),
            rest,
        }
    }
}

fn faulty() -> impl Strategy<Value = Faulty> {
    (
        prop::sample::select(&[0u32, 4096, FRAME_MAX][..]),
        prop::collection::vec(harmless_op(), 0..6),
        fault(),
    )
        .prop_map(|(frame_max, ops, fault)| {
            let mut all = vec![Op::OpenChannel(1)];
            all.extend(ops);
            Faulty {
                session: Session::new(frame_max, &all),
                fault,
            }
        })
}

// ----- the frame reader alone ----------------------------------------------------

/// What the reader makes of a byte stream: its frames in order, the error that
/// stopped it (if any), and the bytes it left unread.
#[derive(Debug, PartialEq)]
struct Reading {
    frames: Vec<AMQPFrame>,
    error: Option<AmqpError>,
    rest: usize,
}

/// Reads a buffer that holds the whole stream.
fn read_whole(buf: &[u8], frame_max: u32) -> Reading {
    let mut at = 0;
    let mut frames = Vec::new();
    loop {
        match read_frame(&buf[at..], frame_max) {
            Ok(Some((frame, used))) => {
                // Progress on every frame, within the buffer: the loop ends.
                assert!(
                    used > FRAME_HEADER && used <= buf.len() - at,
                    "used {used} of {}",
                    buf.len() - at
                );
                at += used;
                frames.push(frame);
            }
            Ok(None) => {
                return Reading {
                    frames,
                    error: None,
                    rest: buf.len() - at,
                }
            }
            Err(e) => {
                return Reading {
                    frames,
                    error: Some(e),
                    rest: buf.len() - at,
                }
            }
        }
    }
}

/// Reads the stream as a socket delivers it: in pieces of the given sizes (cycled),
/// taking every complete frame after each piece, as `Connection::process_input`.
fn read_in_pieces(buf: &[u8], pieces: &[usize], frame_max: u32) -> Reading {
    let mut pending: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut frames = Vec::new();
    for &piece in pieces.iter().cycle() {
        if fed == buf.len() {
            break;
        }
        let n = piece.clamp(1, buf.len() - fed);
        pending.extend_from_slice(&buf[fed..fed + n]);
        fed += n;
        loop {
            match read_frame(&pending, frame_max) {
                Ok(Some((frame, used))) => {
                    pending.drain(..used);
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(e) => {
                    return Reading {
                        frames,
                        error: Some(e),
                        rest: pending.len() + buf.len() - fed,
                    }
                }
            }
        }
    }
    Reading {
        frames,
        error: None,
        rest: pending.len(),
    }
}

/// A reader error closes the connection with 501 or 503, and its text names that
/// code.
fn check_reader_error(e: &AmqpError) -> Result<(), TestCaseError> {
    if !e.closes_connection() {
        return Err(TestCaseError::fail(format!(
            "a reader error must close the connection: {e}"
        )));
    }
    let (code, text) = (e.reply_code(), e.reply_text());
    // 540 is the one method-level refusal the reader makes: basic.qos with a
    // prefetch_size, as RabbitMQ.
    prop_assert!(
        matches!(
            code,
            code::FRAME_ERROR | code::COMMAND_INVALID | code::NOT_IMPLEMENTED
        ),
        "{e}"
    );
    if code == code::NOT_IMPLEMENTED {
        prop_assert!(e.reply_text().contains("prefetch_size"), "{e}");
    }
    let name = code_name(code).unwrap_or("?");
    prop_assert!(text.starts_with(name), "code {} with text {:?}", code, text);
    Ok(())
}

/// Everything the reader must hold for one stream of frames (no protocol header).
fn check_reader(frames: &[u8], frame_max: u32, pieces: &[usize]) -> Result<Reading, TestCaseError> {
    let whole = read_whole(frames, frame_max);
    let pieced = read_in_pieces(frames, pieces, frame_max);
    prop_assert_eq!(&whole, &pieced, "whole and in pieces differ");
    if let Some(e) = &whole.error {
        check_reader_error(e)?;
    }
    Ok(whole)
}

/// The stream after its protocol header, if it has an acceptable one.
fn after_greeting(bytes: &[u8]) -> Option<&[u8]> {
    (greeting(bytes) == Greeting::Accepted).then(|| &bytes[PROTOCOL_HEADER.len()..])
}

fn pieces() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![1usize..16, 1usize..4096], 1..16)
}

proptest! {
    /// Valid frames read back as the same frames, whole or in pieces.
    #[test]
    fn valid_streams_read_back_exactly(session in session(), pieces in pieces()) {
        let bytes = session.bytes();
        let frames = after_greeting(&bytes).expect("a valid header");
        let reading = check_reader(frames, session.effective_frame_max(), &pieces)?;
        prop_assert_eq!(reading.error, None);
        prop_assert_eq!(reading.rest, 0);
        let again: Vec<Vec<u8>> = reading.frames.iter().map(encode).collect();
        prop_assert_eq!(&again[..], &session.frames[1..]);
    }

    /// Mutated streams: no panic, the same frames and error in pieces, and any error
    /// a connection error whose code its text names.
    #[test]
    fn mutated_streams_never_panic_and_read_alike_in_pieces(
        (session, scope, mutations) in mutated(),
        pieces in pieces(),
    ) {
        let bytes = mutate(&session, scope, &mutations).all();
        if let Some(frames) = after_greeting(&bytes) {
            check_reader(frames, session.effective_frame_max(), &pieces)?;
        }
    }

    /// Random bytes, bare or after the protocol header: the same.
    #[test]
    fn random_bytes_read_alike_in_pieces(
        junk in prop::collection::vec(any::<u8>(), 0..2048),
        header in any::<bool>(),
        frame_max in prop_oneof![Just(4096u32), Just(FRAME_MAX), any::<u32>()],
        pieces in pieces(),
    ) {
        let _ = greeting(&junk);
        let mut bytes = if header { PROTOCOL_HEADER.to_vec() } else { Vec::new() };
        bytes.extend(junk);
        if let Some(frames) = after_greeting(&bytes) {
            check_reader(frames, frame_max, &pieces)?;
        }
    }

    /// Each fault the reader is responsible for is caught right after the valid
    /// frames, with its code; the others read as valid frames (or wait, truncated).
    #[test]
    fn each_fault_is_caught_with_its_code(faulty in faulty(), pieces in pieces()) {
        let bytes = faulty.parts().all();
        let frames = after_greeting(&bytes).expect("a valid header");
        let frame_max = faulty.session.effective_frame_max();
        let valid = faulty.session.frames.len() - 1;
        let reading = check_reader(frames, frame_max, &pieces)?;
        prop_assert!(reading.frames.len() >= valid);
        match (&faulty.fault, reading.error) {
            (fault, Some(e)) if fault.caught_by_reader() => {
                prop_assert_eq!(reading.frames.len(), valid + fault.valid_frames());
                prop_assert_eq!(Some(e.reply_code()), fault.code(), "{}", e);
            }
            (Fault::Truncated { .. }, None) => {
                prop_assert_eq!(reading.frames.len(), valid);
            }
            (fault, None) if !fault.caught_by_reader() => prop_assert_eq!(reading.rest, 0),
            (fault, e) => {
                return Err(TestCaseError::fail(format!("{fault:?}: reader said {e:?}")))
            }
        }
    }

    /// An oversized frame is refused from its 7-byte header, before its payload.
    #[test]
    fn an_oversized_frame_is_refused_from_its_header(
        kind in prop::sample::select(&[1u8, 2, 3, 8][..]),
        ch in any::<u16>(),
        frame_max in 8u32..=FRAME_MAX,
        size in any::<u32>(),
    ) {
        let mut head = vec![kind];
        head.extend_from_slice(&ch.to_be_bytes());
        head.extend_from_slice(&size.to_be_bytes());
        let result = read_frame(&head, frame_max);
        if u64::from(size) + 8 > u64::from(frame_max) {
            let e = result.expect_err("too large");
            prop_assert_eq!(e.reply_code(), code::FRAME_ERROR);
        } else {
            prop_assert_eq!(result, Ok(None));
        }
    }
}

// ----- a whole connection --------------------------------------------------------

/// How long a connection may take to answer or end before the case fails: generous,
/// the cases take milliseconds.
const PATIENCE: Duration = Duration::from_secs(10);

/// Panics anywhere in the process (the connection's own tasks, queue actors), counted
/// by a hook, since not every task's panic reaches a handle the test awaits.
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info)
        }));
    });
}

/// A server with the default vhost's exchange and queue supervisors running, and a
/// listener whose connections the test accepts itself (to hold each `serve` task).
struct Harness {
    server: Arc<Server>,
    listener: TcpListener,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// `actors`: with the vhost's exchange and queue supervisors (registered by name,
    /// so one such harness per process).
    async fn start(actors: bool) -> Harness {
        use warren_access::AccessControl;
        use warren_actors::vhost::Placement;
        use warren_actors::vhosts::VHosts;
        use warren_supervisor::{Strategy, Supervisor, SupervisorSpec};

        let dir = tempfile::tempdir().expect("tempdir");
        let store = warren_storage::Store::open(dir.path().join("fuzz.redb")).expect("store");
        let placement = Placement::standalone(
            "fuzz",
            warren_resources::queue_memory::QueueMemory::new(64 << 20),
        );
        let vhosts = VHosts::load(store.clone(), placement)
            .await
            .expect("vhosts");
        let access = AccessControl::load(store).await.expect("users");
        let root = SupervisorSpec::new(Strategy::OneForOne).child(
            vhosts
                .default_vhost()
                .supervisor_spec(10, Duration::from_secs(10)),
        );
        if actors {
            Supervisor::start("fuzz-root", None, root, None)
                .await
                .expect("the vhost's supervisors start");
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("listener");
        Harness {
            server: Arc::new(Server {
                vhosts,
                alarms: Default::default(),
                access,
                product_version: "fuzz".into(),
                node_name: "fuzz".into(),
                connections: Default::default(),
                tasks: Default::default(),
            }),
            listener,
            _dir: dir,
        }
    }

    /// A client socket and the task serving it.
    async fn connect(&self) -> (TcpStream, JoinHandle<()>) {
        let addr = self.listener.local_addr().expect("address");
        let connected = tokio::time::timeout(PATIENCE, async {
            let client = TcpStream::connect(addr).await.expect("connect");
            let (socket, peer) = self.listener.accept().await.expect("accept");
            (client, socket, peer)
        });
        let (client, socket, peer) = connected.await.expect("a loopback connection in time");
        (
            client,
            tokio::spawn(serve(socket, peer, self.server.clone())),
        )
    }
}

/// The `serve` task ends, without a panic, in time.
async fn served(task: JoinHandle<()>) -> Result<(), TestCaseError> {
    match tokio::time::timeout(PATIENCE, task).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(TestCaseError::fail(format!(
            "the connection task failed: {e}"
        ))),
        Err(_) => Err(TestCaseError::fail(format!(
            "the connection task was still running {PATIENCE:?} after the client hung up"
        ))),
    }
}

/// What a server sent, decoded.
#[derive(Debug, Default)]
struct Answer {
    /// It answered with its protocol header only (the client's was refused).
    refused: bool,
    frames: Vec<AMQPFrame>,
    /// The reply code of its connection.close.
    close: Option<u16>,
    /// The socket ended with an error (a reset) rather than an orderly end.
    reset: bool,
}

/// Decodes and checks what the server sent: its protocol header alone, or valid
/// frames starting with connection.start, closes with codes named by their texts, and
/// nothing after a connection.close.
fn check_answer(out: &[u8], reset: bool) -> Result<Answer, TestCaseError> {
    let mut answer = Answer {
        reset,
        ..Answer::default()
    };
    if out.first() == Some(&b'A') {
        prop_assert_eq!(out, &PROTOCOL_HEADER[..], "a refusal is the header alone");
        answer.refused = true;
        return Ok(answer);
    }
    let reading = read_whole(out, FRAME_MAX);
    if let Some(e) = reading.error {
        return Err(TestCaseError::fail(format!(
            "the server sent a bad frame: {e}"
        )));
    }
    // A reset may cut the last frame; an orderly end may not.
    prop_assert!(
        reset || reading.rest == 0,
        "{} octets of a frame",
        reading.rest
    );
    if let Some(first) = reading.frames.first() {
        prop_assert!(
            matches!(
                first,
                AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Start(_)))
            ),
            "the server opens with connection.start, not {}",
            first
        );
    }
    for frame in &reading.frames {
        prop_assert!(answer.close.is_none(), "{} after connection.close", frame);
        let (code, text) = match frame {
            AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(c))) => {
                answer.close = Some(c.reply_code);
                prop_assert!(
                    matches!(c.reply_code, 402..=403 | 501..=506 | 530 | 540),
                    "connection.close {} {}",
                    c.reply_code,
                    c.reply_text
                );
                (c.reply_code, c.reply_text.as_str())
            }
            AMQPFrame::Method(_, AMQPClass::Channel(channel::AMQPMethod::Close(c))) => {
                prop_assert!(
                    matches!(c.reply_code, 403..=406 | 530 | 540),
                    "channel.close {} {}",
                    c.reply_code,
                    c.reply_text
                );
                (c.reply_code, c.reply_text.as_str())
            }
            _ => continue,
        };
        let name = code_name(code).unwrap_or("?");
        prop_assert!(text.starts_with(name), "code {} with text {:?}", code, text);
    }
    answer.frames = reading.frames;
    Ok(answer)
}

/// Reads what the server sends into `out` until `done` holds for it or the
/// connection ends; `Ok(true)` if it ended (`reset`: with an error).
async fn read_until(
    reader: &mut tokio::net::tcp::OwnedReadHalf,
    out: &mut Vec<u8>,
    reset: &mut bool,
    done: impl Fn(&Answer) -> bool,
) -> Result<bool, TestCaseError> {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let answer = check_answer(out, true)?;
        if done(&answer) {
            return Ok(false);
        }
        match tokio::time::timeout(PATIENCE, reader.read(&mut chunk)).await {
            Ok(Ok(0)) => return Ok(true),
            Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
            Ok(Err(_)) => {
                *reset = true;
                return Ok(true);
            }
            Err(_) => {
                return Err(TestCaseError::fail(format!(
                    "the server sent nothing for {PATIENCE:?}; it had sent {:?}",
                    answer.frames
                )))
            }
        }
    }
}

fn opened(answer: &Answer) -> bool {
    answer.close.is_some()
        || answer.frames.iter().any(|f| {
            matches!(
                f,
                AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)))
            )
        })
}

/// Sends the handshake, and the rest once the server has answered connection.open.
/// `Ok(false)` if the connection ended before the rest could go.
async fn send_parts(
    reader: &mut tokio::net::tcp::OwnedReadHalf,
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
    parts: &Parts,
    out: &mut Vec<u8>,
    reset: &mut bool,
) -> Result<bool, TestCaseError> {
    // Write errors are the server having closed: what it sent tells why.
    let _ = writer.write_all(&parts.handshake).await;
    if parts.rest.is_empty() {
        return Ok(true);
    }
    if read_until(reader, out, reset, opened).await? {
        return Ok(false);
    }
    let _ = writer.write_all(&parts.rest).await;
    Ok(true)
}

/// Sends a stream, hangs up (ends its half), and checks that the server ends the
/// connection cleanly: in time, well-formed, no panic anywhere.
async fn send_and_hang_up(h: &Harness, parts: Parts) -> Result<Answer, TestCaseError> {
    let panics = PANICS.load(Ordering::SeqCst);
    let (client, task) = h.connect().await;
    let (mut reader, mut writer) = client.into_split();
    let (mut out, mut reset) = (Vec::new(), false);
    if send_parts(&mut reader, &mut writer, &parts, &mut out, &mut reset).await? {
        let _ = writer.shutdown().await;
        read_until(&mut reader, &mut out, &mut reset, |_| false).await?;
    }
    served(task).await?;
    prop_assert_eq!(PANICS.load(Ordering::SeqCst), panics, "something panicked");
    check_answer(&out, reset)
}

/// Sends a valid stream and a fault, and, without hanging up, waits for the
/// connection.close the fault must get; then closes as a client does.
async fn send_fault(h: &Harness, faulty: &Faulty) -> Result<(), TestCaseError> {
    let Some(expected) = faulty.fault.code() else {
        // Nothing to close for: the connection waits, and ends when the client does.
        let answer = send_and_hang_up(h, faulty.parts()).await?;
        prop_assert_eq!(answer.close, None);
        prop_assert!(!answer.refused && !answer.reset);
        return Ok(());
    };
    let panics = PANICS.load(Ordering::SeqCst);
    let (client, task) = h.connect().await;
    let (mut reader, mut writer) = client.into_split();
    let (mut out, mut reset) = (Vec::new(), false);
    let sent = send_parts(
        &mut reader,
        &mut writer,
        &faulty.parts(),
        &mut out,
        &mut reset,
    )
    .await?;
    prop_assert!(sent, "the connection ended before connection.open-ok");
    let ended = read_until(&mut reader, &mut out, &mut reset, |a| a.close.is_some()).await?;
    let answer = check_answer(&out, reset)?;
    prop_assert!(
        !ended || answer.close.is_some(),
        "the connection ended without connection.close; it sent {:?}",
        answer.frames
    );
    prop_assert_eq!(answer.close, Some(expected), "{:?}", faulty.fault);
    // close-ok, then hang up, as a client does; the server sends nothing more.
    let _ = writer
        .write_all(&method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
        ))
        .await;
    let _ = writer.shutdown().await;
    let before = out.len();
    read_until(&mut reader, &mut out, &mut reset, |_| false).await?;
    prop_assert!(
        out.len() == before || reset,
        "{} octets after connection.close",
        out.len() - before
    );
    served(task).await?;
    prop_assert_eq!(PANICS.load(Ordering::SeqCst), panics, "something panicked");
    Ok(())
}

/// A client that behaves, for the checks that the server still serves.
struct Client {
    socket: TcpStream,
    buf: Vec<u8>,
    _task: JoinHandle<()>,
}

impl Client {
    async fn open(h: &Harness) -> Client {
        let (socket, task) = h.connect().await;
        let mut c = Client {
            socket,
            buf: Vec::new(),
            _task: task,
        };
        c.send(&handshake(0)).await;
        c.expect("connection.open-ok", |f| {
            matches!(
                f,
                AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)))
            )
        })
        .await;
        c.send(&op_frames(&Op::OpenChannel(1))).await;
        c.expect("channel.open-ok", |f| {
            matches!(
                f,
                AMQPFrame::Method(1, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)))
            )
        })
        .await;
        c
    }

    async fn send(&mut self, frames: &[Vec<u8>]) {
        self.socket
            .write_all(&frames.concat())
            .await
            .expect("write");
    }

    /// Skips frames until one matches (bounded by [`PATIENCE`]).
    async fn expect(&mut self, what: &str, wanted: impl Fn(&AMQPFrame) -> bool) -> AMQPFrame {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            while let Some((frame, used)) = read_frame(&self.buf, FRAME_MAX).expect("valid frames")
            {
                self.buf.drain(..used);
                assert!(
                    !matches!(
                        frame,
                        AMQPFrame::Method(
                            _,
                            AMQPClass::Connection(connection::AMQPMethod::Close(_))
                        ) | AMQPFrame::Method(_, AMQPClass::Channel(channel::AMQPMethod::Close(_)))
                    ),
                    "waiting for {what}: {frame}"
                );
                if wanted(&frame) {
                    return frame;
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.socket.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("no {what} within {PATIENCE:?}"))
                .expect("read");
            assert!(n > 0, "the connection closed while waiting for {what}");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Waits for a delivery (deliver or get-ok) and returns its body.
    async fn body(&mut self, what: &str) -> Vec<u8> {
        self.expect(what, |f| {
            matches!(
                f,
                AMQPFrame::Method(
                    1,
                    AMQPClass::Basic(basic::AMQPMethod::Deliver(_) | basic::AMQPMethod::GetOk(_))
                )
            )
        })
        .await;
        let AMQPFrame::Header(_, header) = self.expect("a content header", |_| true).await else {
            panic!("no content header after {what}");
        };
        let mut body = Vec::new();
        while (body.len() as u64) < header.body_size {
            let AMQPFrame::Body(_, piece) = self.expect("a body frame", |_| true).await else {
                panic!("a short body after {what}");
            };
            body.extend(piece);
        }
        body
    }
}

/// Runs one case, failing it (rather than the whole test hanging) if it takes longer
/// than every bounded step in it together could.
fn case<T>(
    rt: &tokio::runtime::Runtime,
    f: impl std::future::Future<Output = Result<T, TestCaseError>>,
) -> Result<T, TestCaseError> {
    rt.block_on(async {
        tokio::time::timeout(PATIENCE * 6, f)
            .await
            .unwrap_or_else(|_| Err(TestCaseError::fail("the case never finished")))
    })
}

fn runner(cases: u32) -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        // Each shrinking step is a connection; a failure shrinks in seconds.
        max_shrink_iters: 256,
        ..Config::default()
    })
}

/// The whole connection against random, mutated and faulty streams, one connection
/// per case; a connection opened before them still works after them, as does a new
/// one. (One test, so that one vhost's actors run per process.)
#[test]
fn connections_survive_bad_input_and_the_server_serves_on() {
    count_panics();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let h = rt.block_on(Harness::start(true));

    // A bystander: a consumer that stays connected through all of it.
    let mut bystander = rt.block_on(async {
        let mut c = Client::open(&h).await;
        c.send(&op_frames(&Op::DeclareQueue {
            ch: 1,
            queue: "fz.bystander",
            exclusive: true,
        }))
        .await;
        c.expect("queue.declare-ok", |f| {
            matches!(
                f,
                AMQPFrame::Method(1, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_)))
            )
        })
        .await;
        c.send(&op_frames(&Op::Consume {
            ch: 1,
            queue: "fz.bystander",
            no_ack: true,
        }))
        .await;
        c.expect("basic.consume-ok", |f| {
            matches!(
                f,
                AMQPFrame::Method(1, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_)))
            )
        })
        .await;
        c
    });

    let codes = std::cell::RefCell::new(std::collections::BTreeMap::<Option<u16>, u32>::new());
    let started = std::time::Instant::now();
    runner(128)
        .run(
            &(prop::collection::vec(any::<u8>(), 0..600), any::<bool>()),
            |(junk, header)| {
                let mut handshake = if header {
                    PROTOCOL_HEADER.to_vec()
                } else {
                    Vec::new()
                };
                handshake.extend(junk);
                let parts = Parts {
                    handshake,
                    rest: Vec::new(),
                };
                case(&rt, send_and_hang_up(&h, parts)).map(drop)
            },
        )
        .unwrap_or_else(|e| panic!("random bytes: {e}"));
    runner(384)
        .run(&mutated(), |(session, scope, mutations)| {
            let parts = mutate(&session, scope, &mutations);
            let answer = case(&rt, send_and_hang_up(&h, parts))?;
            *codes.borrow_mut().entry(answer.close).or_default() += 1;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("mutated streams: {e}"));
    runner(256)
        .run(&faulty(), |faulty| case(&rt, send_fault(&h, &faulty)))
        .unwrap_or_else(|e| panic!("single faults: {e}"));
    eprintln!(
        "connection fuzz: {:?}; connection.close codes of mutated streams: {:?}",
        started.elapsed(),
        codes.borrow()
    );

    rt.block_on(async {
        let mut client = Client::open(&h).await;
        let publish = |key: &'static str, body: &[u8]| Op::Publish {
            ch: 1,
            exchange: "",
            key,
            body: body.to_vec(),
            piece: 4096,
            mandatory: false,
            persistent: false,
        };
        client
            .send(&op_frames(&publish("fz.bystander", b"still here")))
            .await;
        assert_eq!(
            bystander.body("a delivery to the bystander").await,
            b"still here"
        );

        client
            .send(&op_frames(&Op::DeclareQueue {
                ch: 1,
                queue: "fz.after",
                exclusive: true,
            }))
            .await;
        client
            .send(&op_frames(&publish("fz.after", b"and new ones too")))
            .await;
        client
            .send(&op_frames(&Op::Get {
                ch: 1,
                queue: "fz.after",
            }))
            .await;
        assert_eq!(client.body("basic.get-ok").await, b"and new ones too");
    });
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "something panicked");
}

/// Bug in `connection/mod.rs`: the handshake reads the socket into `in_buf`, and the
/// frames that arrived in the same read as connection.open stay there, because
/// `Connection::run` only looks at `in_buf` after its next socket read. A client that
/// sends channel.open together with its handshake gets no channel.open-ok until it
/// sends something more; if it hangs up instead, the frames are dropped unprocessed
/// (`run` returns at end of stream without handling what is buffered).
#[test]
fn frames_sent_with_the_handshake_are_answered() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let h = Harness::start(false).await;
        let (mut client, _task) = h.connect().await;
        let mut bytes = handshake(0).concat();
        bytes.extend(op_frames(&Op::OpenChannel(1)).concat());
        client.write_all(&bytes).await.expect("write");
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        let answered = tokio::time::timeout(PATIENCE, async {
            loop {
                let n = client.read(&mut chunk).await.expect("read");
                assert!(n > 0, "the connection closed");
                out.extend_from_slice(&chunk[..n]);
                let answer = check_answer(&out, false).expect("valid frames");
                if answer.frames.iter().any(|f| {
                    matches!(
                        f,
                        AMQPFrame::Method(1, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)))
                    )
                }) {
                    return;
                }
            }
        })
        .await;
        assert!(
            answered.is_ok(),
            "no channel.open-ok within {PATIENCE:?} for a channel.open sent with the handshake"
        );
    });
}
