//! Bad input on the AMQP port of a real node, many times over: a seeded run of random
//! and mutated byte streams, one connection each (truncated frames, wrong frame ends,
//! oversized frames, unknown frame types and class or method ids, bodies longer than
//! their header said, frames dropped, repeated or swapped, random bytes).
//!
//! Every connection must end in time once the client hangs up, with well-formed
//! frames, and a connection.close (if any) whose reply code is a connection error that
//! its text names; a stream with one known fault after valid frames must get exactly
//! that fault's code without hanging up. Afterwards a lapin consumer that was
//! connected all along still receives, a new lapin client declares, publishes and
//! consumes, and the node has logged no panic.
//!
//! The run is deterministic: one seed (`WARREN_FUZZ_SEED` picks another), no property
//! test machinery, so a failure names the stream number and its bytes. The same kinds
//! of streams are fuzzed in process, with shrinking, in `amqp/src/fuzz.rs`.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{free_port, NodeProcess};
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Streams sent, one connection each.
const STREAMS: usize = 1000;
/// How long anything may take before the test fails (generous: each stream takes
/// milliseconds).
const WAIT: Duration = Duration::from_secs(20);
const HEADER: &[u8] = b"AMQP\x00\x00\x09\x01";
const FRAME_END: u8 = 0xCE;
/// The frame_max the node offers (and the client takes by answering 0).
const FRAME_MAX: u32 = 131_072;

// ----- a seeded generator ------------------------------------------------------

/// xorshift64*: small, deterministic, good enough to pick bytes and cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }

    /// Random bytes, fewer than `max`.
    fn junk(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max);
        self.bytes(n)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

// ----- frames, encoded by hand (independently of the node's codec) ----------------

fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(FRAME_END);
    f
}

fn method(channel: u16, class: u16, method: u16, args: &[u8]) -> Vec<u8> {
    let mut payload = class.to_be_bytes().to_vec();
    payload.extend_from_slice(&method.to_be_bytes());
    payload.extend_from_slice(args);
    frame(1, channel, &payload)
}

fn short(s: &str) -> Vec<u8> {
    let mut v = vec![s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}

const EMPTY_TABLE: [u8; 4] = [0, 0, 0, 0];

/// Protocol header, start-ok (PLAIN guest), tune-ok, open: one entry each.
fn handshake() -> Vec<Vec<u8>> {
    let mut start_ok = EMPTY_TABLE.to_vec();
    start_ok.extend(short("PLAIN"));
    let response = b"\0guest\0guest";
    start_ok.extend((response.len() as u32).to_be_bytes());
    start_ok.extend(response);
    start_ok.extend(short("en_US"));
    let mut tune_ok = 0u16.to_be_bytes().to_vec();
    tune_ok.extend(0u32.to_be_bytes()); // frame_max: the node's
    tune_ok.extend(0u16.to_be_bytes()); // no heartbeats
    let mut open = short("/");
    open.extend(short(""));
    open.push(0);
    vec![
        HEADER.to_vec(),
        method(0, 10, 11, &start_ok),
        method(0, 10, 31, &tune_ok),
        method(0, 10, 40, &open),
    ]
}

fn channel_open(ch: u16) -> Vec<u8> {
    method(ch, 20, 10, &short(""))
}

fn channel_close(ch: u16) -> Vec<u8> {
    let mut args = 200u16.to_be_bytes().to_vec();
    args.extend(short("bye"));
    args.extend([0, 0, 0, 0]);
    method(ch, 20, 40, &args)
}

fn queue_declare(ch: u16, queue: &str, exclusive: bool) -> Vec<u8> {
    let mut args = vec![0, 0];
    args.extend(short(queue));
    args.push(if exclusive { 4 } else { 0 });
    args.extend(EMPTY_TABLE);
    method(ch, 50, 10, &args)
}

fn queue_bind(ch: u16, queue: &str, exchange: &str, key: &str) -> Vec<u8> {
    let mut args = vec![0, 0];
    args.extend(short(queue));
    args.extend(short(exchange));
    args.extend(short(key));
    args.push(0);
    args.extend(EMPTY_TABLE);
    method(ch, 50, 20, &args)
}

fn qos(ch: u16, prefetch: u16) -> Vec<u8> {
    let mut args = 0u32.to_be_bytes().to_vec();
    args.extend(prefetch.to_be_bytes());
    args.push(0);
    method(ch, 60, 10, &args)
}

fn consume(ch: u16, queue: &str, no_ack: bool) -> Vec<u8> {
    let mut args = vec![0, 0];
    args.extend(short(queue));
    args.extend(short(""));
    args.push(if no_ack { 2 } else { 0 });
    args.extend(EMPTY_TABLE);
    method(ch, 60, 20, &args)
}

fn get(ch: u16, queue: &str) -> Vec<u8> {
    let mut args = vec![0, 0];
    args.extend(short(queue));
    args.push(0);
    method(ch, 60, 70, &args)
}

fn ack(ch: u16, tag: u64) -> Vec<u8> {
    let mut args = tag.to_be_bytes().to_vec();
    args.push(0);
    method(ch, 60, 80, &args)
}

fn confirm_select(ch: u16) -> Vec<u8> {
    method(ch, 85, 10, &[0])
}

fn heartbeat() -> Vec<u8> {
    frame(8, 0, &[])
}

fn publish_method(ch: u16, exchange: &str, key: &str, mandatory: bool) -> Vec<u8> {
    let mut args = vec![0, 0];
    args.extend(short(exchange));
    args.extend(short(key));
    args.push(u8::from(mandatory));
    method(ch, 60, 40, &args)
}

/// A content header of class 60, with delivery-mode 2 when `persistent`.
fn content_header(ch: u16, body_size: u64, persistent: bool) -> Vec<u8> {
    let mut payload = 60u16.to_be_bytes().to_vec();
    payload.extend(0u16.to_be_bytes());
    payload.extend(body_size.to_be_bytes());
    if persistent {
        payload.extend(0x1000u16.to_be_bytes());
        payload.push(2);
    } else {
        payload.extend(0u16.to_be_bytes());
    }
    frame(2, ch, &payload)
}

/// basic.publish, its content header, its body in frames of `piece` octets at most.
fn publish(
    ch: u16,
    exchange: &str,
    key: &str,
    body: &[u8],
    piece: usize,
    persistent: bool,
) -> Vec<Vec<u8>> {
    let mut frames = vec![
        publish_method(ch, exchange, key, false),
        content_header(ch, body.len() as u64, persistent),
    ];
    frames.extend(body.chunks(piece.max(1)).map(|c| frame(3, ch, c)));
    frames
}

// ----- streams -----------------------------------------------------------------

const QUEUES: [&str; 3] = ["fz.a", "fz.b", ""];
const EXCHANGES: [&str; 3] = ["", "amq.direct", "amq.fanout"];

/// A valid session: the handshake, then steps a client may take, on channels 1 and 2
/// (each opened before its first use).
fn session(rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut frames = handshake();
    let mut open = [false; 3];
    for _ in 0..rng.below(10) {
        let ch = 1 + rng.below(2) as u16;
        let step = rng.below(10);
        if step == 0 {
            frames.push(heartbeat());
            continue;
        }
        if step == 1 {
            if open[ch as usize] {
                frames.push(channel_close(ch));
                open[ch as usize] = false;
            }
            continue;
        }
        if !open[ch as usize] {
            frames.push(channel_open(ch));
            open[ch as usize] = true;
        }
        let queue = rng.pick(&QUEUES);
        match step {
            2 => frames.push(queue_declare(ch, queue, rng.below(2) == 0)),
            3 => frames.push(queue_bind(ch, queue, rng.pick(&EXCHANGES), queue)),
            4 => frames.push(qos(ch, rng.below(10) as u16)),
            5 => frames.push(consume(ch, queue, rng.below(2) == 0)),
            6 => frames.push(get(ch, queue)),
            7 => frames.push(ack(ch, 1 + rng.below(3) as u64)),
            8 => frames.push(confirm_select(ch)),
            _ => {
                let body = rng.junk(200);
                let piece = 1 + rng.below(80);
                let persistent = rng.below(2) == 0;
                let exchange = rng.pick(&EXCHANGES);
                frames.extend(publish(ch, exchange, queue, &body, piece, persistent));
            }
        }
    }
    frames
}

/// One to three mutations of a session's frames past the first `protected` (the
/// protocol header, or the whole handshake), then of their bytes: the bytes of the
/// frames past `protected`.
fn mutate(rng: &mut Rng, mut frames: Vec<Vec<u8>>, protected: usize) -> Vec<u8> {
    let framed = |f: &Vec<u8>| f.len() >= 8;
    for _ in 0..1 + rng.below(3) {
        if frames.len() <= protected {
            break;
        }
        let k = protected + rng.below(frames.len() - protected);
        match rng.below(12) {
            // The frame-end octet.
            0 => {
                if let Some(end) = frames[k].last_mut() {
                    *end = rng.byte() | 1; // never 0xCE
                }
            }
            // The size: beyond frame_max, or just wrong.
            1 if framed(&frames[k]) => {
                let size = match rng.below(3) {
                    0 => FRAME_MAX - 7 + rng.below(16) as u32,
                    1 => rng.next() as u32,
                    _ => rng.below(64) as u32,
                };
                frames[k][3..7].copy_from_slice(&size.to_be_bytes());
            }
            // The frame type.
            2 => frames[k][0] = rng.byte(),
            // The channel.
            3 if framed(&frames[k]) => {
                let ch = if rng.below(2) == 0 {
                    rng.below(4) as u16
                } else {
                    rng.next() as u16
                };
                frames[k][1..3].copy_from_slice(&ch.to_be_bytes());
            }
            // Class and method ids of a method frame.
            4 if frames[k][0] == 1 && frames[k].len() >= 12 => {
                let any = rng.next() as u16;
                let class = rng.pick(&[10u16, 20, 50, 60, 85, any]);
                let id = rng.below(130) as u16;
                frames[k][7..9].copy_from_slice(&class.to_be_bytes());
                frames[k][9..11].copy_from_slice(&id.to_be_bytes());
            }
            // A body frame with extra octets (its size kept right): a body longer
            // than its header said.
            5 if frames[k][0] == 3 && framed(&frames[k]) => {
                let f = &mut frames[k];
                f.pop();
                let extra = 1 + rng.below(16);
                f.extend(std::iter::repeat_n(b'+', extra));
                f.push(FRAME_END);
                let size = (f.len() - 8) as u32;
                f[3..7].copy_from_slice(&size.to_be_bytes());
            }
            // A content header's body size.
            6 if frames[k][0] == 2 && frames[k].len() >= 19 => {
                let size = rng.below(300) as u64;
                frames[k][11..19].copy_from_slice(&size.to_be_bytes());
            }
            7 => {
                frames.remove(k);
            }
            8 => {
                let f = frames[k].clone();
                frames.insert(k, f);
            }
            9 => {
                let other = protected + rng.below(frames.len() - protected);
                frames.swap(k, other);
            }
            _ => {}
        }
    }
    let mut bytes = frames[protected.min(frames.len())..].concat();
    for _ in 0..rng.below(3) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.below(bytes.len());
        match rng.below(5) {
            0 => bytes[at] ^= 1 << rng.below(8),
            1 => bytes[at] = rng.byte(),
            2 => {
                let n = 1 + rng.below(16);
                let junk = rng.bytes(n);
                bytes.splice(at..at, junk);
            }
            3 => {
                let end = (at + 1 + rng.below(16)).min(bytes.len());
                bytes.drain(at..end);
            }
            _ => bytes.truncate(at),
        }
    }
    bytes
}

/// One fault after valid frames on channel 1, and the reply code it must get.
fn fault(rng: &mut Rng) -> (&'static str, Vec<u8>, u16) {
    let nowhere = || publish_method(1, "", "fz.nowhere", false);
    match rng.below(10) {
        0 => {
            let mut f = qos(1, 1);
            *f.last_mut().expect("a frame") = rng.byte() | 1;
            ("a wrong frame end", f, 501)
        }
        1 => {
            let size = FRAME_MAX - 7 + rng.below(1 << 20) as u32;
            let mut f = vec![rng.pick(&[1u8, 2, 3, 8])];
            f.extend(1u16.to_be_bytes());
            f.extend(size.to_be_bytes());
            ("an oversized frame (its header alone)", f, 501)
        }
        2 => {
            let kind = rng.pick(&[0u8, 4, 5, 6, 7, 9, 65, 0xCE, 0xFF]);
            ("an unknown frame type", frame(kind, 1, &rng.bytes(8)), 501)
        }
        3 => {
            let class = rng.pick(&[0u16, 11, 99, 1000, 0xFFFF]);
            let f = method(1, class, rng.next() as u16, &[0; 4]);
            ("an unknown class id", f, 503)
        }
        4 => {
            let class = rng.pick(&[10u16, 20, 50, 60, 85]);
            let f = method(1, class, 1000 + rng.below(60_000) as u16, &[0; 4]);
            ("an unknown method id", f, 503)
        }
        5 => {
            let announced = 1 + rng.below(64);
            let mut bytes = nowhere();
            bytes.extend(content_header(1, announced as u64, false));
            let first = rng.below(announced);
            if first > 0 {
                bytes.extend(frame(3, 1, &vec![b'a'; first]));
            }
            let rest = announced - first + 1 + rng.below(64);
            bytes.extend(frame(3, 1, &vec![b'b'; rest]));
            ("a body longer than its header said", bytes, 505)
        }
        6 => {
            let mut bytes = nowhere();
            bytes.extend(frame(2, 1, &rng.junk(12)));
            ("a content header that does not decode", bytes, 501)
        }
        7 => ("a body frame without a publish", frame(3, 1, b"stray"), 505),
        8 => ("a heartbeat on channel 1", frame(8, 1, &[]), 505),
        _ => {
            let ch = 2 + rng.below(3000) as u16;
            ("a method on a channel never opened", qos(ch, 1), 504)
        }
    }
}

// ----- talking to the node -----------------------------------------------------

/// A frame the node sent: type, channel, payload.
type Frame = (u8, u16, Vec<u8>);

/// What the node sent on one connection.
#[derive(Debug, Default)]
struct Answer {
    /// Only its protocol header: the client's header was refused.
    refused: bool,
    frames: Vec<Frame>,
    /// Reply code and text of its connection.close.
    close: Option<(u16, String)>,
}

/// RabbitMQ's names of the reply codes a close may carry.
fn code_name(code: u16) -> Option<&'static str> {
    Some(match code {
        402 => "INVALID_PATH",
        403 => "ACCESS_REFUSED",
        404 => "NOT_FOUND",
        405 => "RESOURCE_LOCKED",
        406 => "PRECONDITION_FAILED",
        501 => "FRAME_ERROR",
        502 => "SYNTAX_ERROR",
        503 => "COMMAND_INVALID",
        504 => "CHANNEL_ERROR",
        505 => "UNEXPECTED_FRAME",
        506 => "RESOURCE_ERROR",
        530 => "NOT_ALLOWED",
        540 => "NOT_IMPLEMENTED",
        _ => return None,
    })
}

/// The (class, method) of a method frame's payload, and a close's code and text.
fn close_of(payload: &[u8]) -> Option<(u16, u16, u16, String)> {
    if payload.len() < 7 {
        return None;
    }
    let class = u16::from_be_bytes([payload[0], payload[1]]);
    let id = u16::from_be_bytes([payload[2], payload[3]]);
    let code = u16::from_be_bytes([payload[4], payload[5]]);
    let len = payload[6] as usize;
    let text = String::from_utf8_lossy(payload.get(7..7 + len)?).into_owned();
    Some((class, id, code, text))
}

/// Decodes what the node sent so far and checks it: its protocol header alone, or
/// frames starting with connection.start, every close with a code its text names,
/// nothing after connection.close. An incomplete last frame is left for later.
fn decode(out: &[u8]) -> Result<Answer, String> {
    let mut answer = Answer::default();
    if out.first() == Some(&b'A') {
        if !HEADER.starts_with(out) {
            return Err(format!("a refusal other than the protocol header: {out:?}"));
        }
        answer.refused = true;
        return Ok(answer);
    }
    let mut rest = out;
    while rest.len() >= 8 {
        let size = u32::from_be_bytes([rest[3], rest[4], rest[5], rest[6]]) as usize;
        if rest.len() < size + 8 {
            break;
        }
        if rest[size + 7] != FRAME_END || !matches!(rest[0], 1..=3 | 8) {
            return Err(format!("a malformed frame from the node: {:?}", &rest[..8]));
        }
        let kind = rest[0];
        let channel = u16::from_be_bytes([rest[1], rest[2]]);
        let payload = rest[7..7 + size].to_vec();
        rest = &rest[size + 8..];
        if answer.close.is_some() {
            return Err("the node sent a frame after connection.close".into());
        }
        if answer.frames.is_empty()
            && (kind, &payload[..4.min(payload.len())]) != (1, &[0, 10, 0, 10][..])
        {
            return Err("the node did not open with connection.start".into());
        }
        if kind == 1 {
            if let Some((class, id, code, text)) = close_of(&payload) {
                let (connection, channel_close) =
                    ((class, id) == (10, 50), (class, id) == (20, 40));
                if connection || channel_close {
                    let allowed = if connection {
                        matches!(code, 402 | 403 | 501..=506 | 530 | 540)
                    } else {
                        matches!(code, 403..=406 | 530 | 540)
                    };
                    if !allowed {
                        return Err(format!("a close with reply code {code}: {text}"));
                    }
                    let name = code_name(code).unwrap_or("?");
                    if !text.starts_with(name) {
                        return Err(format!("reply code {code} with the text {text:?}"));
                    }
                    if connection {
                        answer.close = Some((code, text));
                    }
                }
            }
        }
        answer.frames.push((kind, channel, payload));
    }
    Ok(answer)
}

/// Reads into `out` until `done` holds or the node ends the connection (`Ok(true)`).
async fn read_until(
    reader: &mut OwnedReadHalf,
    out: &mut Vec<u8>,
    done: impl Fn(&Answer) -> bool,
) -> Result<bool, String> {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if done(&decode(out)?) {
            return Ok(false);
        }
        match tokio::time::timeout(WAIT, reader.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(true),
            Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
            Err(_) => return Err(format!("the node sent nothing for {WAIT:?}")),
        }
    }
}

fn opened(answer: &Answer) -> bool {
    answer.close.is_some()
        || answer
            .frames
            .iter()
            .any(|(kind, _, p)| *kind == 1 && p.starts_with(&[0, 10, 0, 41]))
}

async fn connect(node: &NodeProcess) -> (OwnedReadHalf, OwnedWriteHalf) {
    let socket = tokio::time::timeout(WAIT, TcpStream::connect(node.amqp_addr))
        .await
        .expect("connect in time")
        .expect("connect");
    socket.into_split()
}

/// Sends `handshake`, then `rest` once the node has answered connection.open, and
/// returns whether the rest went. (A client that sends both at once finds the rest
/// unread until it sends more: `frames_sent_with_the_handshake_are_answered` in
/// `amqp/src/fuzz.rs`.)
async fn send(
    reader: &mut OwnedReadHalf,
    writer: &mut OwnedWriteHalf,
    handshake: &[u8],
    rest: &[u8],
    out: &mut Vec<u8>,
) -> Result<bool, String> {
    // A write error is the node having closed: what it sent says why.
    let _ = writer.write_all(handshake).await;
    if rest.is_empty() {
        return Ok(true);
    }
    if read_until(reader, out, opened).await? {
        return Ok(false);
    }
    let _ = writer.write_all(rest).await;
    Ok(true)
}

/// Sends a stream and hangs up; the node must end the connection in time, cleanly.
async fn send_and_hang_up(
    node: &NodeProcess,
    handshake: &[u8],
    rest: &[u8],
) -> Result<Answer, String> {
    let (mut reader, mut writer) = connect(node).await;
    let mut out = Vec::new();
    if send(&mut reader, &mut writer, handshake, rest, &mut out).await? {
        let _ = writer.shutdown().await;
        read_until(&mut reader, &mut out, |_| false).await?;
    }
    decode(&out)
}

/// Sends a valid stream and a fault and, without hanging up, waits for the
/// connection.close it must get; then answers close-ok and hangs up.
async fn send_fault(
    node: &NodeProcess,
    handshake: &[u8],
    rest: &[u8],
    code: u16,
) -> Result<(), String> {
    let (mut reader, mut writer) = connect(node).await;
    let mut out = Vec::new();
    if !send(&mut reader, &mut writer, handshake, rest, &mut out).await? {
        return Err(format!(
            "the connection ended before open-ok: {:?}",
            decode(&out)?
        ));
    }
    read_until(&mut reader, &mut out, |a| a.close.is_some()).await?;
    let answer = decode(&out)?;
    match &answer.close {
        Some((got, _)) if *got == code => {}
        Some((got, text)) => return Err(format!("closed with {got} ({text}), not {code}")),
        None => {
            return Err(format!(
                "ended without connection.close: {:?}",
                answer.frames
            ))
        }
    }
    let _ = writer.write_all(&method(0, 10, 51, &[])).await;
    let _ = writer.shutdown().await;
    let before = out.len();
    read_until(&mut reader, &mut out, |_| false).await?;
    if out.len() != before {
        return Err(format!(
            "{} octets after connection.close",
            out.len() - before
        ));
    }
    Ok(())
}

// ----- the test ----------------------------------------------------------------

async fn lapin_channel(node: &NodeProcess) -> (Connection, Channel) {
    let uri = format!("amqp://guest:guest@{}/%2f", node.amqp_addr);
    let deadline = Instant::now() + Duration::from_secs(60);
    let connection = loop {
        match Connection::connect(&uri, ConnectionProperties::default()).await {
            Ok(c) => break c,
            Err(e) if Instant::now() > deadline => panic!("no AMQP listener at {uri}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let channel = within("channel.open", connection.create_channel()).await;
    (connection, channel)
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = lapin::Result<T>>) -> T {
    match tokio::time::timeout(WAIT, f).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("{what} failed: {e}"),
        Err(_) => panic!("{what}: no answer within {WAIT:?}"),
    }
}

async fn declare_and_consume(channel: &Channel, queue: &str) -> Consumer {
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    within(
        "queue.declare",
        channel.queue_declare(queue.into(), exclusive, FieldTable::default()),
    )
    .await;
    within(
        "basic.consume",
        channel.basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
}

async fn publish_confirmed(channel: &Channel, queue: &str, body: &[u8]) {
    let confirm = within(
        "basic.publish",
        channel.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default(),
        ),
    )
    .await;
    assert!(within("the confirm", confirm).await.is_ack());
}

async fn next_body(consumer: &mut Consumer, what: &str) -> Vec<u8> {
    match tokio::time::timeout(WAIT, consumer.next()).await {
        Ok(Some(Ok(delivery))) => delivery.data,
        Ok(other) => panic!("{what}: the consumer ended: {other:?}"),
        Err(_) => panic!("{what}: nothing within {WAIT:?}"),
    }
}

/// Publishes sent right in front of connection.close, in one write (so that the node
/// reads them together), all reach their queue: the node routes them before it ends
/// the connection (it used to drop the unrouted tail of the batch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_right_before_connection_close_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("data"), free_port());
    let (_conn, channel) = lapin_channel(&node).await;
    within(
        "queue.declare",
        channel.queue_declare(
            "closing".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    let mut rest = channel_open(1);
    for i in 0..10 {
        rest.extend(publish(1, "", "closing", format!("m{i}").as_bytes(), 4096, false).concat());
    }
    rest.extend(method(0, 10, 50, &[0, 200, 0, 0, 0, 0, 0]));
    let (mut reader, mut writer) = connect(&node).await;
    let mut out = Vec::new();
    let sent = send(
        &mut reader,
        &mut writer,
        &handshake().concat(),
        &rest,
        &mut out,
    )
    .await;
    assert_eq!(sent, Ok(true), "the handshake is answered");
    let closed_ok = |a: &Answer| {
        a.frames
            .iter()
            .any(|(kind, ch, p)| *kind == 1 && *ch == 0 && p.starts_with(&[0, 10, 0, 51]))
    };
    read_until(&mut reader, &mut out, closed_ok)
        .await
        .expect("an answer");
    assert!(closed_ok(&decode(&out).expect("frames")), "close-ok");
    let deadline = Instant::now() + WAIT;
    loop {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let count = within(
            "passive queue.declare",
            channel.queue_declare("closing".into(), passive, FieldTable::default()),
        )
        .await
        .message_count();
        if count == 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "closing holds {count} messages, not 10, after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_mutated_streams_close_cleanly_and_the_node_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("data"), free_port());
    let seed = std::env::var("WARREN_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_f00d_cafe_b0bau64);
    let mut rng = Rng(seed | 1);

    // Connected through all of it.
    let (_bystander_conn, bystander) = lapin_channel(&node).await;
    let mut bystander = declare_and_consume(&bystander, "fz.bystander").await;

    let started = Instant::now();
    let mut closes = BTreeMap::<String, u32>::new();
    for n in 0..STREAMS {
        let kind = rng.below(6);
        let (what, handshake, rest) = match kind {
            0 => ("random bytes", rng.junk(600), Vec::new()),
            1 => {
                let mut bytes = HEADER.to_vec();
                bytes.extend(rng.junk(600));
                ("the protocol header and random bytes", bytes, Vec::new())
            }
            2 => {
                let mut bytes = HEADER.to_vec();
                let frames = session(&mut rng);
                bytes.extend(mutate(&mut rng, frames, 1));
                ("a session mutated anywhere", bytes, Vec::new())
            }
            3 | 4 => {
                let frames = session(&mut rng);
                let handshake = frames[..4].concat();
                let rest = mutate(&mut rng, frames, 4);
                ("a session mutated after its handshake", handshake, rest)
            }
            _ => {
                let mut frames = handshake();
                frames.push(channel_open(1));
                if rng.below(2) == 0 {
                    frames.extend(publish(1, "", "fz.nowhere", &rng.bytes(50), 7, false));
                }
                let (what, bad, code) = fault(&mut rng);
                let mut rest = frames[4..].concat();
                rest.extend(bad);
                let result = send_fault(&node, &frames[..4].concat(), &rest, code).await;
                if let Err(e) = result {
                    panic!("stream {n} (seed {seed:#x}), {what}: {e}\nrest: {rest:?}");
                }
                *closes.entry(format!("{code} for {what}")).or_default() += 1;
                continue;
            }
        };
        match send_and_hang_up(&node, &handshake, &rest).await {
            Ok(answer) => {
                let key = match (&answer.close, answer.refused) {
                    (Some((code, _)), _) => format!("{code} for {what}"),
                    (None, true) => "a refused protocol header".to_string(),
                    (None, false) => format!("no close for {what}"),
                };
                *closes.entry(key).or_default() += 1;
            }
            Err(e) => panic!(
                "stream {n} (seed {seed:#x}), {what}: {e}\nhandshake: {handshake:?}\nrest: {rest:?}"
            ),
        }
    }
    eprintln!("{STREAMS} streams in {:?}: {closes:#?}", started.elapsed());

    // Everyone else is still served: the bystander receives what a new client
    // publishes, and the new client declares, publishes and consumes its own.
    let (_conn, channel) = lapin_channel(&node).await;
    within(
        "confirm.select",
        channel.confirm_select(ConfirmSelectOptions::default()),
    )
    .await;
    publish_confirmed(&channel, "fz.bystander", b"still here").await;
    assert_eq!(
        next_body(&mut bystander, "the bystander").await,
        b"still here"
    );
    let mut mine = declare_and_consume(&channel, "fz.after").await;
    publish_confirmed(&channel, "fz.after", b"and new ones too").await;
    assert_eq!(
        next_body(&mut mine, "the new client").await,
        b"and new ones too"
    );

    let log = node.log();
    assert!(!log.contains("panicked"), "the node panicked:\n{log}");
}
