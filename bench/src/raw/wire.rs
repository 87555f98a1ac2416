//! The bench's AMQP 0-9-1 frames, by hand: the few client methods it sends, the
//! server methods it reads, a pre-encoded basic.publish, and the reading side (frames
//! off a byte buffer, deliveries assembled from deliver + header + body frames,
//! publisher confirms as methods). Pure: no I/O, every bad input is an `Err` with a text.

use bytes::{Buf, BytesMut};

use crate::message::HEADER;

pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;
/// type (1) + channel (2) + size (4) before a frame's payload.
const FRAME_START: usize = 7;
/// What a frame adds to its payload: the start and the end octet.
pub const FRAME_OVERHEAD: usize = FRAME_START + 1;
/// The one channel the bench opens on each connection.
pub const CHANNEL: u16 = 1;
const CLASS_BASIC: u16 = 60;
/// delivery-mode is the fourth property (bit 12 of the property flags).
const DELIVERY_MODE_FLAG: u16 = 1 << 12;

/// A server method the bench understands (anything else is `Other`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Start {
        mechanisms: String,
    },
    Secure,
    Tune {
        channel_max: u16,
        frame_max: u32,
    },
    OpenOk,
    Close {
        code: u16,
        text: String,
    },
    CloseOk,
    Blocked,
    Unblocked,
    ChannelOpenOk,
    ChannelClose {
        code: u16,
        text: String,
    },
    DeclareOk,
    PurgeOk,
    QosOk,
    ConsumeOk,
    Cancel,
    Deliver {
        tag: u64,
    },
    /// basic.ack (`nack` false) or basic.nack from the broker: a publisher confirm.
    Confirm {
        tag: u64,
        multiple: bool,
        nack: bool,
    },
    SelectOk,
    Other {
        class: u16,
        method: u16,
    },
}

/// One frame off the wire: its payload borrowed from the buffer, `len` its whole size.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: u8,
    pub channel: u16,
    pub payload: &'a [u8],
    pub len: usize,
}

/// The frame at the front of `buf`, `Ok(None)` while it is incomplete.
pub fn parse_frame(buf: &[u8], frame_max: u32) -> Result<Option<Frame<'_>>, String> {
    if buf.len() < FRAME_START {
        return Ok(None);
    }
    let kind = buf[0];
    if !matches!(
        kind,
        FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
    ) {
        return Err(format!("the broker sent a frame of unknown type {kind}"));
    }
    let channel = u16::from_be_bytes([buf[1], buf[2]]);
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]);
    if frame_max > 0 && u64::from(size) + FRAME_OVERHEAD as u64 > u64::from(frame_max) {
        return Err(format!(
            "the broker sent a frame of {} bytes, above frame_max {frame_max}",
            u64::from(size) + FRAME_OVERHEAD as u64
        ));
    }
    let len = FRAME_START + size as usize + 1;
    if buf.len() < len {
        return Ok(None);
    }
    if buf[len - 1] != FRAME_END {
        return Err(format!(
            "the broker sent a frame ending in {:#04x} instead of 0xce",
            buf[len - 1]
        ));
    }
    Ok(Some(Frame {
        kind,
        channel,
        payload: &buf[FRAME_START..len - 1],
        len,
    }))
}

/// Reads a method frame's arguments front to back.
struct Args<'a> {
    buf: &'a [u8],
    what: (u16, u16),
}

impl<'a> Args<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err(format!(
                "the broker sent a truncated method {}.{}",
                self.what.0, self.what.1
            ));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let mut word = [0u8; 8];
        word.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(word))
    }
    fn shortstr(&mut self) -> Result<&'a [u8], String> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    fn longstr(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()?;
        self.take(n as usize)
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Decodes a method frame's payload.
pub fn decode_method(payload: &[u8]) -> Result<Method, String> {
    if payload.len() < 4 {
        return Err("the broker sent a method frame without class and method".into());
    }
    let class = u16::from_be_bytes([payload[0], payload[1]]);
    let method = u16::from_be_bytes([payload[2], payload[3]]);
    let mut a = Args {
        buf: &payload[4..],
        what: (class, method),
    };
    Ok(match (class, method) {
        (10, 10) => {
            a.u8()?;
            a.u8()?;
            a.longstr()?; // server-properties (a table: its size, then its bytes)
            Method::Start {
                mechanisms: text(a.longstr()?),
            }
        }
        (10, 20) => Method::Secure,
        (10, 30) => Method::Tune {
            channel_max: a.u16()?,
            frame_max: a.u32()?,
        },
        (10, 41) => Method::OpenOk,
        (10, 50) => Method::Close {
            code: a.u16()?,
            text: text(a.shortstr()?),
        },
        (10, 51) => Method::CloseOk,
        (10, 60) => Method::Blocked,
        (10, 61) => Method::Unblocked,
        (20, 11) => Method::ChannelOpenOk,
        (20, 40) => Method::ChannelClose {
            code: a.u16()?,
            text: text(a.shortstr()?),
        },
        (50, 11) => Method::DeclareOk,
        (50, 31) => Method::PurgeOk,
        (60, 11) => Method::QosOk,
        (60, 21) => Method::ConsumeOk,
        (60, 30) => Method::Cancel,
        (60, 60) => {
            a.shortstr()?; // consumer-tag
            Method::Deliver { tag: a.u64()? }
        }
        (60, m @ (80 | 120)) => Method::Confirm {
            tag: a.u64()?,
            multiple: a.u8()? & 1 != 0,
            nack: m == 120,
        },
        (85, 11) => Method::SelectOk,
        (class, method) => Method::Other { class, method },
    })
}

/// Appends a frame's first 7 bytes: type, channel, payload size.
fn put_frame_start(out: &mut Vec<u8>, kind: u8, channel: u16, size: usize) {
    out.push(kind);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(size as u32).to_be_bytes());
}

/// A method frame with the arguments `args`.
fn method(channel: u16, class: u16, id: u16, args: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    method_frame(&mut out, channel, class, id, args);
    out
}

/// Appends a method frame with the arguments `args`.
fn method_frame(out: &mut Vec<u8>, channel: u16, class: u16, method: u16, args: &[u8]) {
    put_frame_start(out, FRAME_METHOD, channel, 4 + args.len());
    out.extend_from_slice(&class.to_be_bytes());
    out.extend_from_slice(&method.to_be_bytes());
    out.extend_from_slice(args);
    out.push(FRAME_END);
}

fn shortstr(out: &mut Vec<u8>, s: &str, what: &str) -> Result<(), String> {
    let n = u8::try_from(s.len()).map_err(|_| format!("{what} is longer than 255 bytes"))?;
    out.push(n);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn longstr(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A field table of (name, already encoded type and value) entries.
fn table(out: &mut Vec<u8>, entries: &[(&str, &[u8])]) {
    let mut body = Vec::new();
    for (name, value) in entries {
        body.push(name.len() as u8);
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(value);
    }
    longstr(out, &body);
}

/// connection.start-ok: PLAIN, and the capabilities that make the broker tell us
/// why it refuses a login and when it blocks publishers.
pub fn start_ok(user: &str, password: &str) -> Vec<u8> {
    let mut capabilities = vec![b'F'];
    let yes: &[u8] = b"t\x01";
    table(
        &mut capabilities,
        &[
            ("publisher_confirms", yes),
            ("basic.nack", yes),
            ("consumer_cancel_notify", yes),
            ("connection.blocked", yes),
            ("authentication_failure_close", yes),
        ],
    );
    let mut product = vec![b'S'];
    longstr(&mut product, b"warren-bench");
    let mut args = Vec::new();
    table(
        &mut args,
        &[("product", &product), ("capabilities", &capabilities)],
    );
    args.extend_from_slice(b"\x05PLAIN");
    let mut response = vec![0u8];
    response.extend_from_slice(user.as_bytes());
    response.push(0);
    response.extend_from_slice(password.as_bytes());
    longstr(&mut args, &response);
    args.extend_from_slice(b"\x05en_US");
    method(0, 10, 11, &args)
}

/// connection.tune-ok without heartbeats.
pub fn tune_ok(channel_max: u16, frame_max: u32) -> Vec<u8> {
    let mut args = Vec::new();
    args.extend_from_slice(&channel_max.to_be_bytes());
    args.extend_from_slice(&frame_max.to_be_bytes());
    args.extend_from_slice(&0u16.to_be_bytes());
    method(0, 10, 31, &args)
}

pub fn connection_open(vhost: &str) -> Result<Vec<u8>, String> {
    let mut args = Vec::new();
    shortstr(&mut args, vhost, "the vhost")?;
    args.extend_from_slice(&[0, 0]); // capabilities (reserved), insist (reserved)
    Ok(method(0, 10, 40, &args))
}

pub fn connection_close() -> Vec<u8> {
    method(0, 10, 50, b"\x00\xc8\x00\x00\x00\x00\x00")
}

pub fn connection_close_ok() -> Vec<u8> {
    method(0, 10, 51, &[])
}

pub fn channel_open() -> Vec<u8> {
    method(CHANNEL, 20, 10, &[0])
}

pub fn channel_close_ok() -> Vec<u8> {
    method(CHANNEL, 20, 41, &[])
}

pub fn confirm_select() -> Vec<u8> {
    method(CHANNEL, 85, 10, &[0])
}

pub fn basic_qos(prefetch: u16) -> Vec<u8> {
    let mut args = vec![0, 0, 0, 0]; // prefetch-size
    args.extend_from_slice(&prefetch.to_be_bytes());
    args.push(0); // global
    method(CHANNEL, CLASS_BASIC, 10, &args)
}

/// basic.consume with manual acks and a tag the broker chooses.
pub fn basic_consume(queue: &str) -> Result<Vec<u8>, String> {
    let mut args = vec![0, 0];
    shortstr(&mut args, queue, "the queue name")?;
    args.push(0); // consumer-tag: the broker's choice
    args.push(0); // no-local, no-ack, exclusive, nowait
    table(&mut args, &[]);
    Ok(method(CHANNEL, CLASS_BASIC, 20, &args))
}

/// Appends basic.ack (the hot path of a consumer: no allocation).
pub fn put_basic_ack(out: &mut Vec<u8>, tag: u64, multiple: bool) {
    let mut args = [0u8; 9];
    args[..8].copy_from_slice(&tag.to_be_bytes());
    args[8] = u8::from(multiple);
    method_frame(out, CHANNEL, CLASS_BASIC, 80, &args);
}

pub fn queue_declare(queue: &str, durable: bool) -> Result<Vec<u8>, String> {
    let mut args = vec![0, 0];
    shortstr(&mut args, queue, "the queue name")?;
    args.push(u8::from(durable) << 1); // passive, durable, exclusive, auto-delete, nowait
    table(&mut args, &[]);
    Ok(method(CHANNEL, 50, 10, &args))
}

pub fn queue_purge(queue: &str) -> Result<Vec<u8>, String> {
    let mut args = vec![0, 0];
    shortstr(&mut args, queue, "the queue name")?;
    args.push(0); // nowait
    Ok(method(CHANNEL, 50, 30, &args))
}

/// One bench message as frames, encoded once: basic.publish to the default exchange
/// with the queue as routing key, the content header, and the body frames, whose
/// only varying bytes are the bench's 24-byte header at the start of the body.
pub struct Publication {
    /// The method and header frames and the first body frame's start.
    prefix: Vec<u8>,
    /// The rest of the first body frame (padding, end octet) and the other body frames.
    tail: Vec<u8>,
}

impl Publication {
    pub fn new(queue: &str, size: usize, persistent: bool, frame_max: u32) -> Result<Self, String> {
        if size < HEADER {
            return Err(format!("a bench body has at least {HEADER} bytes"));
        }
        let piece = if frame_max == 0 {
            size
        } else {
            (frame_max as usize).saturating_sub(FRAME_OVERHEAD)
        };
        if piece < HEADER {
            return Err(format!("frame_max {frame_max} is too small for the bench"));
        }
        let mut prefix = Vec::new();
        let mut args = vec![0, 0, 0]; // reserved, exchange ""
        shortstr(&mut args, queue, "the queue name")?;
        args.push(0); // mandatory, immediate
        method_frame(&mut prefix, CHANNEL, CLASS_BASIC, 40, &args);

        let mut header = Vec::new();
        header.extend_from_slice(&CLASS_BASIC.to_be_bytes());
        header.extend_from_slice(&0u16.to_be_bytes()); // weight
        header.extend_from_slice(&(size as u64).to_be_bytes());
        if persistent {
            header.extend_from_slice(&DELIVERY_MODE_FLAG.to_be_bytes());
            header.push(2);
        } else {
            header.extend_from_slice(&0u16.to_be_bytes());
        }
        put_frame_start(&mut prefix, FRAME_HEADER, CHANNEL, header.len());
        prefix.extend_from_slice(&header);
        prefix.push(FRAME_END);

        let first = size.min(piece);
        put_frame_start(&mut prefix, FRAME_BODY, CHANNEL, first);
        let mut tail = vec![b'w'; first - HEADER];
        tail.push(FRAME_END);
        let mut left = size - first;
        while left > 0 {
            let n = left.min(piece);
            put_frame_start(&mut tail, FRAME_BODY, CHANNEL, n);
            tail.resize(tail.len() + n, b'w');
            tail.push(FRAME_END);
            left -= n;
        }
        Ok(Publication { prefix, tail })
    }

    /// Bytes per message on the wire.
    pub fn len(&self) -> usize {
        self.prefix.len() + HEADER + self.tail.len()
    }

    /// Appends one message: its body starts with publisher, seq and send time (as
    /// `crate::message::body` lays them out), then padding.
    pub fn put(&self, out: &mut Vec<u8>, publisher: u32, seq: u64, now_nanos: u64) {
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(&crate::message::header(publisher, seq, now_nanos));
        out.extend_from_slice(&self.tail);
    }
}

/// What the reader hands on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A whole delivery: its tag and the first bytes of its body (at most `HEADER`).
    Delivery {
        tag: u64,
        head: [u8; HEADER],
        head_len: usize,
    },
    /// Any other method (heartbeats are skipped).
    Method(Method),
}

impl Incoming {
    #[cfg(test)]
    pub fn head(&self) -> &[u8] {
        match self {
            Incoming::Delivery { head, head_len, .. } => &head[..*head_len],
            Incoming::Method(_) => &[],
        }
    }
}

#[derive(Debug, Default)]
enum Content {
    #[default]
    Idle,
    Header {
        tag: u64,
    },
    Body {
        tag: u64,
        remaining: u64,
        head: [u8; HEADER],
        head_len: usize,
    },
}

/// Frames in, methods and whole deliveries out: the bytes read from the socket go
/// into `buf`, `next` takes them off.
pub struct Reader {
    pub buf: BytesMut,
    pub frame_max: u32,
    content: Content,
}

impl Reader {
    pub fn new(capacity: usize, frame_max: u32) -> Self {
        Reader {
            buf: BytesMut::with_capacity(capacity),
            frame_max,
            content: Content::Idle,
        }
    }

    /// The next method or whole delivery in `buf`, `Ok(None)` until more is read.
    pub fn next(&mut self) -> Result<Option<Incoming>, String> {
        loop {
            if self.buf.starts_with(b"AMQP") {
                return Err(format!(
                    "the broker answered with protocol header {:?}: it does not speak AMQP 0-9-1",
                    String::from_utf8_lossy(&self.buf[..self.buf.len().min(8)])
                ));
            }
            let Some(frame) = parse_frame(&self.buf, self.frame_max)? else {
                return Ok(None);
            };
            let len = frame.len;
            let incoming = self.content.on_frame(&frame);
            self.buf.advance(len);
            if let Some(incoming) = incoming? {
                return Ok(Some(incoming));
            }
        }
    }
}

impl Content {
    /// Takes one frame: a method, a finished delivery, or nothing yet.
    fn on_frame(&mut self, frame: &Frame<'_>) -> Result<Option<Incoming>, String> {
        let content_channel = || {
            if frame.channel == CHANNEL {
                Ok(())
            } else {
                Err(format!(
                    "the broker sent content on channel {}, not {CHANNEL}",
                    frame.channel
                ))
            }
        };
        match (frame.kind, &mut *self) {
            (FRAME_HEARTBEAT, _) => Ok(None),
            (FRAME_METHOD, Content::Idle) => match decode_method(frame.payload)? {
                Method::Deliver { tag } => {
                    content_channel()?;
                    *self = Content::Header { tag };
                    Ok(None)
                }
                m => Ok(Some(Incoming::Method(m))),
            },
            (FRAME_METHOD, _) => {
                Err("the broker sent a method in the middle of a delivery's content".into())
            }
            (FRAME_HEADER, Content::Header { tag }) => {
                content_channel()?;
                let p = frame.payload;
                if p.len() < 14 {
                    return Err("the broker sent a truncated content header".into());
                }
                let mut size = [0u8; 8];
                size.copy_from_slice(&p[4..12]);
                let size = u64::from_be_bytes(size);
                let tag = *tag;
                if size == 0 {
                    *self = Content::Idle;
                    return Ok(Some(Incoming::Delivery {
                        tag,
                        head: [0; HEADER],
                        head_len: 0,
                    }));
                }
                *self = Content::Body {
                    tag,
                    remaining: size,
                    head: [0; HEADER],
                    head_len: 0,
                };
                Ok(None)
            }
            (
                FRAME_BODY,
                Content::Body {
                    tag,
                    remaining,
                    head,
                    head_len,
                },
            ) => {
                content_channel()?;
                let p = frame.payload;
                if p.len() as u64 > *remaining {
                    return Err("the broker sent more body than its content header said".into());
                }
                let n = (HEADER - *head_len).min(p.len());
                head[*head_len..*head_len + n].copy_from_slice(&p[..n]);
                *head_len += n;
                *remaining -= p.len() as u64;
                if *remaining > 0 {
                    return Ok(None);
                }
                let delivery = Incoming::Delivery {
                    tag: *tag,
                    head: *head,
                    head_len: *head_len,
                };
                *self = Content::Idle;
                Ok(Some(delivery))
            }
            (FRAME_HEADER, _) => Err("the broker sent a content header out of place".into()),
            _ => Err("the broker sent a body frame out of place".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::frame::{parse_frame as reference, AMQPFrame};
    use amq_protocol::protocol::{basic, connection, queue, AMQPClass};

    fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        out.extend_from_slice(&channel.to_be_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out.push(FRAME_END);
        out
    }

    fn deliver(tag: u64) -> Vec<u8> {
        let mut p = vec![0, 60, 0, 60];
        p.extend_from_slice(b"\x0bamq.ctag-42");
        p.extend_from_slice(&tag.to_be_bytes());
        p.extend_from_slice(b"\x00\x00\x05queue"); // redelivered, exchange "", routing key
        frame(1, CHANNEL, &p)
    }

    fn content_header(size: u64) -> Vec<u8> {
        let mut p = vec![0, 60, 0, 0];
        p.extend_from_slice(&size.to_be_bytes());
        p.extend_from_slice(&[0x10, 0x00, 2]); // delivery-mode 2
        frame(2, CHANNEL, &p)
    }

    fn message_head(publisher: u64, seq: u64) -> Vec<u8> {
        let mut b = publisher.to_be_bytes().to_vec();
        b.extend_from_slice(&seq.to_be_bytes());
        b.extend_from_slice(&123u64.to_be_bytes());
        b
    }

    /// Two deliveries (one in three body frames, one empty), a heartbeat and an ack.
    fn stream() -> Vec<u8> {
        let mut body = message_head(3, 7);
        body.resize(100, b'w');
        let mut s = deliver(1);
        s.extend(content_header(100));
        s.extend(frame(3, CHANNEL, &body[..10]));
        s.extend(frame(8, 0, &[]));
        s.extend(frame(3, CHANNEL, &body[10..60]));
        s.extend(frame(3, CHANNEL, &body[60..]));
        s.extend(deliver(2));
        s.extend(content_header(0));
        s.extend(frame(
            1,
            CHANNEL,
            &[0, 60, 0, 80, 0, 0, 0, 0, 0, 0, 0, 9, 1],
        ));
        s
    }

    fn read_all(reader: &mut Reader, out: &mut Vec<Incoming>) {
        while let Some(i) = reader.next().unwrap() {
            out.push(i);
        }
    }

    #[test]
    fn deliveries_read_the_same_however_the_bytes_are_split() {
        let bytes = stream();
        let mut whole = Vec::new();
        let mut reader = Reader::new(64, 4096);
        reader.buf.extend_from_slice(&bytes);
        read_all(&mut reader, &mut whole);
        assert_eq!(whole.len(), 3);
        let Incoming::Delivery {
            tag: 1,
            head_len: HEADER,
            ..
        } = whole[0]
        else {
            panic!("{:?}", whole[0]);
        };
        assert_eq!(whole[0].head(), &message_head(3, 7)[..]);
        assert_eq!(
            whole[1],
            Incoming::Delivery {
                tag: 2,
                head: [0; HEADER],
                head_len: 0
            }
        );
        assert_eq!(
            whole[2],
            Incoming::Method(Method::Confirm {
                tag: 9,
                multiple: true,
                nack: false
            })
        );
        for cut in 0..=bytes.len() {
            let mut reader = Reader::new(64, 4096);
            let mut got = Vec::new();
            reader.buf.extend_from_slice(&bytes[..cut]);
            read_all(&mut reader, &mut got);
            reader.buf.extend_from_slice(&bytes[cut..]);
            read_all(&mut reader, &mut got);
            assert_eq!(got, whole, "split at {cut}");
            assert!(reader.buf.is_empty());
        }
        // One byte at a time.
        let mut reader = Reader::new(64, 4096);
        let mut got = Vec::new();
        for b in &bytes {
            reader.buf.extend_from_slice(&[*b]);
            read_all(&mut reader, &mut got);
        }
        assert_eq!(got, whole);
    }

    #[test]
    fn acks_nacks_and_closes_decode() {
        let ack = |multiple: u8| {
            let mut p = vec![0, 60, 0, 80];
            p.extend_from_slice(&77u64.to_be_bytes());
            p.push(multiple);
            p
        };
        assert_eq!(
            decode_method(&ack(1)),
            Ok(Method::Confirm {
                tag: 77,
                multiple: true,
                nack: false
            })
        );
        assert_eq!(
            decode_method(&ack(0)),
            Ok(Method::Confirm {
                tag: 77,
                multiple: false,
                nack: false
            })
        );
        let mut nack = vec![0, 60, 0, 120];
        nack.extend_from_slice(&5u64.to_be_bytes());
        nack.push(0b11); // multiple, requeue
        assert_eq!(
            decode_method(&nack),
            Ok(Method::Confirm {
                tag: 5,
                multiple: true,
                nack: true
            })
        );
        let mut close = vec![0, 10, 0, 50, 0x01, 0x93, 14];
        close.extend_from_slice(b"ACCESS_REFUSED\x00\x00\x00\x00");
        assert_eq!(
            decode_method(&close),
            Ok(Method::Close {
                code: 403,
                text: "ACCESS_REFUSED".into()
            })
        );
        // The ack of a consumer, as the broker would read it.
        let mut out = Vec::new();
        put_basic_ack(&mut out, 250, true);
        let (_, f) = reference(&out[..]).unwrap();
        assert_eq!(
            f,
            AMQPFrame::Method(
                CHANNEL,
                AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                    delivery_tag: 250,
                    multiple: true
                }))
            )
        );
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut bad_end = deliver(1);
        let last = bad_end.len() - 1;
        bad_end[last] = 0;
        for bytes in [
            bad_end,
            vec![9, 0, 0, 0, 0, 0, 0, FRAME_END],
            vec![1, 0, 1, 0x7f, 0xff, 0xff, 0xff],
            frame(1, CHANNEL, &[0, 60]),
            frame(1, CHANNEL, &[0, 60, 0, 80, 1, 2]),
            frame(2, CHANNEL, &[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0]),
            frame(3, CHANNEL, b"body"),
            [deliver(1), frame(1, CHANNEL, &[0, 20, 0, 11])].concat(),
            [deliver(1), content_header(2), frame(3, CHANNEL, b"abc")].concat(),
            [deliver(1), content_header(2), frame(3, 2, b"ab")].concat(),
            b"AMQP\x00\x00\x09\x01".to_vec(),
        ] {
            let mut reader = Reader::new(64, 4096);
            reader.buf.extend_from_slice(&bytes);
            let mut result = Ok(None);
            for _ in 0..4 {
                result = reader.next();
                if result.is_err() {
                    break;
                }
            }
            assert!(result.is_err(), "{bytes:?} gave {result:?}");
        }
        // Random bytes behind a valid start: errors or waits, never panics.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut bytes = stream();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x % bytes.len() as u64) as usize;
                bytes[i] = (x >> 32) as u8;
            }
            let mut reader = Reader::new(64, 4096);
            reader.buf.extend_from_slice(&bytes);
            while let Ok(Some(_)) = reader.next() {}
        }
    }

    #[test]
    fn a_publication_is_what_the_broker_reads_as_the_bench_body() {
        for (size, frame_max, persistent) in [(1024, 131_072, false), (10_000, 4096, true)] {
            let p = Publication::new("bench-q", size, persistent, frame_max).unwrap();
            let mut out = Vec::new();
            p.put(&mut out, 3, 7, 123);
            assert_eq!(out.len(), p.len());
            let mut rest = &out[..];
            let (r, f) = reference(rest).unwrap();
            rest = r;
            let AMQPFrame::Method(CHANNEL, AMQPClass::Basic(basic::AMQPMethod::Publish(m))) = f
            else {
                panic!("{f:?}");
            };
            assert_eq!(m.exchange.as_str(), "");
            assert_eq!(m.routing_key.as_str(), "bench-q");
            assert!(!m.mandatory && !m.immediate);
            let (r, f) = reference(rest).unwrap();
            rest = r;
            let AMQPFrame::Header(CHANNEL, h) = f else {
                panic!("{f:?}");
            };
            assert_eq!(h.body_size, size as u64);
            let mode = h.properties.delivery_mode().as_ref().copied();
            assert_eq!(mode, persistent.then_some(2));
            let mut body = Vec::new();
            while !rest.is_empty() {
                let (r, f) = reference(rest).unwrap();
                rest = r;
                let AMQPFrame::Body(CHANNEL, b) = f else {
                    panic!("{f:?}");
                };
                assert!(b.len() + FRAME_OVERHEAD <= frame_max as usize);
                body.extend(b);
            }
            let expected = crate::message::body(3, 7, &vec![b'w'; size - HEADER]);
            assert_eq!(body.len(), size);
            assert_eq!(body[..16], expected[..16]);
            assert_eq!(body[16..24], 123u64.to_be_bytes());
            assert_eq!(body[24..], expected[24..]);
        }
        assert!(Publication::new("q", 10, false, 4096).is_err());
        assert!(Publication::new(&"q".repeat(256), 100, false, 4096).is_err());
    }

    #[test]
    fn client_methods_are_what_the_broker_reads() {
        let one = |bytes: Vec<u8>| {
            let (rest, f) = reference(&bytes[..]).unwrap();
            assert!(rest.is_empty());
            f
        };
        let AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::StartOk(s))) =
            one(start_ok("guest", "pw"))
        else {
            panic!("start-ok");
        };
        assert_eq!(s.mechanism.as_str(), "PLAIN");
        assert_eq!(s.response.as_bytes(), b"\0guest\0pw");
        assert!(s.client_properties.inner().len() == 2);
        let AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::TuneOk(t))) =
            one(tune_ok(2047, 131_072))
        else {
            panic!("tune-ok");
        };
        assert_eq!(
            (t.channel_max, t.frame_max, t.heartbeat),
            (2047, 131_072, 0)
        );
        let AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Open(o))) =
            one(connection_open("/").unwrap())
        else {
            panic!("open");
        };
        assert_eq!(o.virtual_host.as_str(), "/");
        let AMQPFrame::Method(CHANNEL, AMQPClass::Queue(queue::AMQPMethod::Declare(d))) =
            one(queue_declare("q1", true).unwrap())
        else {
            panic!("declare");
        };
        assert!(d.durable && !d.passive && !d.exclusive && !d.auto_delete && !d.nowait);
        assert_eq!(d.queue.as_str(), "q1");
        let AMQPFrame::Method(CHANNEL, AMQPClass::Basic(basic::AMQPMethod::Consume(c))) =
            one(basic_consume("q1").unwrap())
        else {
            panic!("consume");
        };
        assert!(!c.no_ack && !c.exclusive && c.consumer_tag.as_str().is_empty());
        let AMQPFrame::Method(CHANNEL, AMQPClass::Basic(basic::AMQPMethod::Qos(q))) =
            one(basic_qos(100))
        else {
            panic!("qos");
        };
        assert_eq!(q.prefetch_count, 100);
        for bytes in [
            connection_close(),
            connection_close_ok(),
            channel_open(),
            channel_close_ok(),
            confirm_select(),
            queue_purge("q1").unwrap(),
        ] {
            one(bytes);
        }
        assert!(connection_open(&"v".repeat(300)).is_err());
    }
}
