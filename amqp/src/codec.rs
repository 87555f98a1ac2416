//! Frames on the wire: reading them off a byte buffer with the checks RabbitMQ makes
//! (size against frame_max, the frame-end octet, decodable method and header), and
//! writing them. Parsing and generation of the frame contents are `amq-protocol`'s.

use amq_protocol::frame::{gen_frame, parse_frame, AMQPFrame};

use crate::error::AmqpError;

/// The protocol header a client opens with.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
/// The octet that ends every frame.
pub(crate) const FRAME_END: u8 = 0xCE;
/// type (1) + channel (2) + size (4).
pub(crate) const FRAME_HEADER: usize = 7;

/// Whether (`class_id`, `method_id`) is a method of AMQP 0-9-1 (with RabbitMQ's
/// extensions: confirm, update-secret, blocked).
fn known_method(class_id: u16, method_id: u16) -> bool {
    let methods: &[u16] = match class_id {
        10 => &[10, 11, 20, 21, 30, 31, 40, 41, 50, 51, 60, 61, 70, 71],
        20 => &[10, 11, 20, 21, 40, 41],
        // (exchange.unbind-ok is 51: RabbitMQ's extension.)
        40 => &[10, 11, 20, 21, 30, 31, 40, 51],
        50 => &[10, 11, 20, 21, 30, 31, 40, 41, 50, 51],
        60 => &[
            10, 11, 20, 21, 30, 31, 40, 50, 60, 70, 71, 72, 80, 90, 100, 110, 111, 120,
        ],
        85 => &[10, 11],
        90 => &[10, 11, 20, 21, 30, 31],
        _ => &[],
    };
    methods.contains(&method_id)
}

/// What the start of a connection holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Greeting {
    /// Not 8 bytes yet.
    Incomplete,
    /// The AMQP 0-9-1 header.
    Accepted,
    /// Anything else: answer with our header and close (as the spec says).
    Refused,
}

/// What the first bytes of a connection are.
pub fn greeting(buf: &[u8]) -> Greeting {
    if buf.len() < PROTOCOL_HEADER.len() {
        // A prefix that cannot become the header is refused at once.
        if !PROTOCOL_HEADER.starts_with(buf) {
            return Greeting::Refused;
        }
        return Greeting::Incomplete;
    }
    if &buf[..8] == PROTOCOL_HEADER {
        Greeting::Accepted
    } else {
        Greeting::Refused
    }
}

/// Takes one frame off the front of `buf`: `Ok(None)` while it is incomplete, and
/// the number of bytes it used.
pub fn read_frame(buf: &[u8], frame_max: u32) -> Result<Option<(AMQPFrame, usize)>, AmqpError> {
    if buf.len() < FRAME_HEADER {
        return Ok(None);
    }
    let kind = buf[0];
    // 0-9-1 has four frame types (4 to 7 were 0-8's out-of-band and trace frames,
    // which `amq-protocol` does not parse either).
    if !matches!(kind, 1..=3 | 8) {
        return Err(AmqpError::UnknownFrameType { kind });
    }
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]);
    // frame_max counts the whole frame (header and end octet included).
    if u64::from(size) + FRAME_HEADER as u64 + 1 > u64::from(frame_max) {
        return Err(AmqpError::FrameTooLarge {
            kind,
            size,
            max_payload: frame_max.saturating_sub(FRAME_HEADER as u32 + 1),
        });
    }
    let total = FRAME_HEADER + size as usize + 1;
    if buf.len() < total {
        return Ok(None);
    }
    if buf[total - 1] != FRAME_END {
        return Err(AmqpError::BadFrameEnd {
            octet: buf[total - 1],
        });
    }
    if kind == 3 {
        // A body frame is bytes: one copy of them, not `amq-protocol`'s parse of the
        // payload byte by byte (the busiest frame of a publisher).
        let channel = u16::from_be_bytes([buf[1], buf[2]]);
        let body = buf[FRAME_HEADER..total - 1].to_vec();
        return Ok(Some((AMQPFrame::Body(channel, body), total)));
    }
    match parse_frame(&buf[..total]) {
        // basic.qos with a prefetch_size (which the parser drops): RabbitMQ refuses
        // it with 540, as Warren does.
        Ok(_)
            if kind == 1 && buf.get(7..11) == Some(&[0, 60, 0, 10]) && {
                buf.get(11..15).is_some_and(|size| size != [0, 0, 0, 0])
            } =>
        {
            Err(AmqpError::NotImplemented {
                what: "prefetch_size!=0",
            }
            .at(60, 10))
        }
        Ok((_, frame)) => Ok(Some((frame, total))),
        Err(_) => {
            // The reply code must be the one the text names (clients show both).
            Err(match kind {
                // Too short to name its class and method.
                1 if total < FRAME_HEADER + 4 + 1 => AmqpError::UndecodableFrame { kind },
                1 => {
                    let class_id = u16::from_be_bytes([
                        buf.get(7).copied().unwrap_or(0),
                        buf.get(8).copied().unwrap_or(0),
                    ]);
                    let method_id = u16::from_be_bytes([
                        buf.get(9).copied().unwrap_or(0),
                        buf.get(10).copied().unwrap_or(0),
                    ]);
                    // A method AMQP has, whose arguments are wrong: a frame error (as
                    // RabbitMQ); ids AMQP does not have: an invalid command.
                    if known_method(class_id, method_id) {
                        AmqpError::BadMethodArguments {
                            class_id,
                            method_id,
                        }
                    } else {
                        AmqpError::UndecodableMethod {
                            class_id,
                            method_id,
                        }
                    }
                }
                2 => AmqpError::UndecodableHeader,
                _ => AmqpError::UndecodableFrame { kind },
            })
        }
    }
}

/// Appends a frame's bytes to `out`.
pub fn write_frame(frame: &AMQPFrame, out: &mut Vec<u8>) {
    let buf = std::mem::take(out);
    match cookie_factory::gen_simple(gen_frame(frame), buf) {
        Ok(buf) => *out = buf,
        Err(e) => {
            // Generation only fails on values outside the protocol's ranges, which the
            // broker never produces; losing the frame beats a panic.
            tracing::error!("cannot encode {frame}: {e:?}");
        }
    }
}

/// Appends the body frames of a message (none for an empty body), `frame_max` bytes
/// each at most, copying the body once, straight into `out`.
pub fn write_body(channel: u16, body: &[u8], frame_max: u32, out: &mut Vec<u8>) {
    let piece = (frame_max as usize).saturating_sub(FRAME_HEADER + 1).max(1);
    for chunk in body.chunks(piece) {
        out.reserve(FRAME_HEADER + chunk.len() + 1);
        out.push(3);
        out.extend_from_slice(&channel.to_be_bytes());
        out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        out.extend_from_slice(chunk);
        out.push(FRAME_END);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::{channel, AMQPClass};
    use proptest::prelude::*;

    fn open_frame() -> Vec<u8> {
        let mut out = Vec::new();
        write_frame(
            &AMQPFrame::Method(
                1,
                AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
            ),
            &mut out,
        );
        out
    }

    #[test]
    fn frames_round_trip_and_wait_for_the_rest() {
        let bytes = open_frame();
        for cut in 0..bytes.len() {
            assert_eq!(read_frame(&bytes[..cut], 131_072).unwrap(), None);
        }
        let (frame, used) = read_frame(&bytes, 131_072).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(frame.channel_id(), 1);
    }

    #[test]
    fn bad_frames_are_connection_errors_with_rabbitmq_codes() {
        let mut bytes = open_frame();
        let last = bytes.len() - 1;
        bytes[last] = 0x00;
        let e = read_frame(&bytes, 131_072).unwrap_err();
        assert_eq!(e.reply_code(), 501);

        let huge = [1u8, 0, 1, 0x7f, 0xff, 0xff, 0xff];
        assert_eq!(read_frame(&huge, 131_072).unwrap_err().reply_code(), 501);
        assert_eq!(
            read_frame(&[9, 0, 0, 0, 0, 0, 0], 4096)
                .unwrap_err()
                .reply_code(),
            501
        );
        // Type 4 is not a 0-9-1 frame type either (0-8's out-of-band method).
        assert_eq!(
            read_frame(&[4, 0, 1, 0, 0, 0, 0, FRAME_END], 4096)
                .unwrap_err()
                .reply_code(),
            501
        );
        // A content header that does not decode: 501, as its text says.
        let e = read_frame(&[2, 0, 1, 0, 0, 0, 2, 0, 60, FRAME_END], 4096).unwrap_err();
        assert_eq!(e.reply_code(), 501, "{e}");

        // Unknown class and method ids.
        let bogus = [1u8, 0, 1, 0, 0, 0, 4, 0x12, 0x34, 0x56, 0x78, FRAME_END];
        let e = read_frame(&bogus, 4096).unwrap_err();
        assert_eq!(e.reply_code(), 503, "{e}");
    }

    #[test]
    fn bodies_are_split_at_frame_max_and_read_back() {
        let body: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let mut out = Vec::new();
        write_body(7, &body, 4096, &mut out);
        let mut rest: &[u8] = &out;
        let mut back = Vec::new();
        while let Some((frame, used)) = read_frame(rest, 4096).unwrap() {
            let AMQPFrame::Body(7, data) = frame else {
                panic!("not a body frame on channel 7: {frame}")
            };
            assert!(used <= 4096);
            back.extend(data);
            rest = &rest[used..];
        }
        assert!(rest.is_empty());
        assert_eq!(back, body);
        let mut none = Vec::new();
        write_body(1, &[], 4096, &mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn greetings() {
        assert_eq!(greeting(b"AMQ"), Greeting::Incomplete);
        assert_eq!(greeting(PROTOCOL_HEADER), Greeting::Accepted);
        assert_eq!(greeting(b"AMQP\x00\x00\x08\x00"), Greeting::Refused);
        assert_eq!(greeting(b"GET / HTTP/1.1"), Greeting::Refused);
    }

    proptest! {
        /// Random bytes never panic the reader: a frame, a wait, or an error.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut rest: &[u8] = &bytes;
            while let Ok(Some((_, used))) = read_frame(rest, 4096) {
                rest = &rest[used..];
            }
        }

        /// A body frame reads as `amq-protocol` parses it, whatever its channel and bytes.
        #[test]
        fn body_frames_read_as_amq_protocol_parses_them(
            channel in any::<u16>(),
            body in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut bytes = vec![3u8];
            bytes.extend_from_slice(&channel.to_be_bytes());
            bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
            bytes.extend_from_slice(&body);
            bytes.push(FRAME_END);
            let (ours, used) = read_frame(&bytes, 4096).unwrap().unwrap();
            let (_, theirs) = parse_frame(&bytes[..]).unwrap();
            prop_assert_eq!(used, bytes.len());
            prop_assert_eq!(format!("{ours:?}"), format!("{theirs:?}"));
        }

        /// Valid frames with random garbage after them still decode first.
        #[test]
        fn a_frame_then_garbage(tail in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut bytes = open_frame();
            let len = bytes.len();
            bytes.extend(tail);
            let (_, used) = read_frame(&bytes, 4096).unwrap().unwrap();
            prop_assert_eq!(used, len);
        }
    }
}
