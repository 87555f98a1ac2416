//! A client of AMQP 0-9-1 frames encoded by hand (independently of the node's codec),
//! on a blocking socket: for tests that need exact control of what the node reads.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::NodeProcess;

/// The protocol header a client opens with.
pub const HEADER: &[u8] = b"AMQP\x00\x00\x09\x01";

/// A socket to `node`'s AMQP listener (retried for a minute while it starts).
pub fn connect(node: &NodeProcess) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match TcpStream::connect(node.amqp_addr) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                return s;
            }
            Err(e) if Instant::now() > deadline => panic!("no AMQP listener: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Reads one frame: (type, channel, payload).
pub fn read_frame(s: &mut TcpStream) -> Option<(u8, u16, Vec<u8>)> {
    let mut head = [0u8; 7];
    s.read_exact(&mut head).ok()?;
    let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
    let mut payload = vec![0u8; size + 1];
    s.read_exact(&mut payload).ok()?;
    assert_eq!(payload.pop(), Some(0xCE), "frame end");
    Some((head[0], u16::from_be_bytes([head[1], head[2]]), payload))
}

/// (class, method) of a method frame's payload.
pub fn method_of(payload: &[u8]) -> (u16, u16) {
    (
        u16::from_be_bytes([payload[0], payload[1]]),
        u16::from_be_bytes([payload[2], payload[3]]),
    )
}

/// A method frame: class, method, then the arguments already encoded.
pub fn method_frame(channel: u16, class: u16, method: u16, args: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&class.to_be_bytes());
    payload.extend_from_slice(&method.to_be_bytes());
    payload.extend_from_slice(args);
    frame(1, channel, &payload)
}

/// A frame of `kind` on `channel` around `payload`.
pub fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(0xCE);
    f
}

/// A short string: its length, then its bytes.
pub fn short_str(s: &str) -> Vec<u8> {
    let mut v = vec![s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}

/// Reads frames until a method (class, method) arrives; returns its payload.
pub fn expect_method(s: &mut TcpStream, want: (u16, u16)) -> Vec<u8> {
    loop {
        let (kind, _, payload) = read_frame(s).expect("the node answers");
        if kind == 1 && method_of(&payload) == want {
            return payload;
        }
    }
}

/// A connection as guest to "/" with channel 1 open.
pub fn open_channel(node: &NodeProcess) -> TcpStream {
    open_channel_with_heartbeat(node, 0)
}

/// [`open_channel`], with `heartbeat` seconds settled in `connection.tune-ok` (0: none).
pub fn open_channel_with_heartbeat(node: &NodeProcess, heartbeat: u16) -> TcpStream {
    let mut s = connect(node);
    s.write_all(HEADER).unwrap();
    expect_method(&mut s, (10, 10));
    let mut start_ok = vec![0, 0, 0, 0]; // client properties: an empty table
    start_ok.extend(short_str("PLAIN"));
    let response = b"\0guest\0guest";
    start_ok.extend((response.len() as u32).to_be_bytes());
    start_ok.extend(response);
    start_ok.extend(short_str("en_US"));
    s.write_all(&method_frame(0, 10, 11, &start_ok)).unwrap();
    expect_method(&mut s, (10, 30));
    let mut tune_ok = 0u16.to_be_bytes().to_vec();
    tune_ok.extend(131_072u32.to_be_bytes());
    tune_ok.extend(heartbeat.to_be_bytes());
    s.write_all(&method_frame(0, 10, 31, &tune_ok)).unwrap();
    let mut open = short_str("/");
    open.extend(short_str(""));
    open.push(0);
    s.write_all(&method_frame(0, 10, 40, &open)).unwrap();
    expect_method(&mut s, (10, 41));
    s.write_all(&method_frame(1, 20, 10, &short_str("")))
        .unwrap();
    expect_method(&mut s, (20, 11));
    s
}

/// basic.publish of `body` to the default exchange with routing key `queue`: method,
/// header (no properties), body.
pub fn publish_frames(queue: &str, body: &[u8]) -> Vec<u8> {
    publish_frames_with(queue, body, false)
}

/// [`publish_frames`], `mandatory` or not.
pub fn publish_frames_with(queue: &str, body: &[u8], mandatory: bool) -> Vec<u8> {
    let mut publish = 0u16.to_be_bytes().to_vec();
    publish.extend(short_str(""));
    publish.extend(short_str(queue));
    publish.push(u8::from(mandatory));
    let mut header = 60u16.to_be_bytes().to_vec();
    header.extend(0u16.to_be_bytes());
    header.extend((body.len() as u64).to_be_bytes());
    header.extend(0u16.to_be_bytes());
    let mut out = method_frame(1, 60, 40, &publish);
    out.extend(frame(2, 1, &header));
    out.extend(frame(3, 1, body));
    out
}

/// queue.declare on channel 1 (`passive`: only ask about it), no arguments.
pub fn queue_declare(queue: &str, passive: bool) -> Vec<u8> {
    let mut args = 0u16.to_be_bytes().to_vec();
    args.extend(short_str(queue));
    args.push(u8::from(passive));
    args.extend(0u32.to_be_bytes());
    method_frame(1, 50, 10, &args)
}

/// basic.consume of `queue` on channel 1 as `tag`, with manual acks or `no_ack`, no
/// arguments.
pub fn consume_frame(queue: &str, tag: &str, no_ack: bool) -> Vec<u8> {
    let mut consume = 0u16.to_be_bytes().to_vec();
    consume.extend(short_str(queue));
    consume.extend(short_str(tag));
    consume.push(if no_ack { 0b10 } else { 0 });
    consume.extend(0u32.to_be_bytes());
    method_frame(1, 60, 20, &consume)
}

/// The ready messages of `queue`, from a passive queue.declare on channel 1.
pub fn message_count(s: &mut TcpStream, queue: &str) -> u32 {
    s.write_all(&queue_declare(queue, true)).unwrap();
    let ok = expect_method(s, (50, 11));
    let at = 4 + 1 + ok[4] as usize;
    u32::from_be_bytes([ok[at], ok[at + 1], ok[at + 2], ok[at + 3]])
}

/// A consumer through `consume_at` that reads nothing for a while (`no_ack`, or with
/// manual acks and no prefetch: nothing but its window holds either back), of a queue
/// declared and filled through `publish_at` (the same node, or another one of its
/// cluster) with 10 000 × 16 KiB: 160 MiB, far more than socket buffers (32 MiB at most
/// here), the writer's byte budget (4 MiB) and the consumer's window (1 000
/// deliveries) hold together.
///
/// Checks that the queue's ready count settles with at least half the messages still
/// in it, instead of the whole queue moving to the consumer's connection; then that,
/// once the consumer reads, every message arrives and none is left ready.
pub fn unread_consumer(
    publish_at: &NodeProcess,
    consume_at: &NodeProcess,
    queue: &str,
    no_ack: bool,
) {
    let mut publisher = open_channel(publish_at);
    publisher.write_all(&queue_declare(queue, false)).unwrap();
    expect_method(&mut publisher, (50, 11));
    let total = 10_000u32;
    let body = vec![b'u'; 16 * 1024];
    for _ in 0..total {
        publisher.write_all(&publish_frames(queue, &body)).unwrap();
    }
    super::eventually("every message in the queue", || {
        message_count(&mut publisher, queue) == total
    });

    // No heartbeats: the node waits 30 s for a client that reads nothing.
    let mut consumer = open_channel(consume_at);
    consumer
        .write_all(&consume_frame(queue, "unread-consumer", no_ack))
        .unwrap();
    expect_method(&mut consumer, (60, 21));

    // The count stops falling once the consumer's connection is full (two reads in a
    // row agree), with most of the messages still in the queue.
    let mut last = u32::MAX;
    super::eventually("the queue's count to settle", || {
        let now = message_count(&mut publisher, queue);
        let settled = now == last;
        last = now;
        if !settled {
            std::thread::sleep(Duration::from_millis(300));
        }
        settled
    });
    assert!(
        last >= total / 2,
        "{} of {total} messages left the queue for a consumer that reads nothing",
        total - last
    );

    // Now it reads: every message arrives (and, with acks, is held unacked).
    let mut delivered = 0u32;
    while delivered < total {
        let (kind, _, payload) = read_frame(&mut consumer).expect("the deliveries go on");
        if kind == 1 && method_of(&payload) == (60, 60) {
            delivered += 1;
        }
    }
    assert_eq!(message_count(&mut publisher, queue), 0);
}
