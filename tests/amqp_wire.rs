//! Bad input on the AMQP port: the connection is closed with the right reply code, and
//! the node goes on serving everyone else.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::raw_amqp::{
    connect, consume_frame, expect_method, frame, message_count, method_frame, method_of,
    open_channel, open_channel_with_heartbeat, publish_frames, queue_declare, read_frame,
    short_str, HEADER,
};
use common::{free_port, NodeProcess};

/// Opens the connection as far as connection.start, then sends `bytes` and returns
/// the reply code of the connection.close the node answers with.
fn close_code_after(node: &NodeProcess, bytes: &[u8]) -> u16 {
    let mut s = connect(node);
    s.write_all(HEADER).unwrap();
    let (kind, channel, payload) = read_frame(&mut s).expect("connection.start");
    assert_eq!((kind, channel, method_of(&payload)), (1, 0, (10, 10)));
    s.write_all(bytes).unwrap();
    loop {
        let Some((kind, _, payload)) = read_frame(&mut s) else {
            panic!("the node closed the socket without connection.close");
        };
        if kind == 1 && method_of(&payload) == (10, 50) {
            return u16::from_be_bytes([payload[4], payload[5]]);
        }
    }
}

fn serves(node: &NodeProcess) {
    let mut s = connect(node);
    s.write_all(HEADER).unwrap();
    let (_, _, payload) = read_frame(&mut s).expect("connection.start");
    assert_eq!(
        method_of(&payload),
        (10, 10),
        "the node still greets new clients"
    );
}

#[test]
fn bad_bytes_close_the_connection_with_the_right_code() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("data"), free_port());

    // Not AMQP 0-9-1: the node answers with the header it speaks and closes.
    let mut s = connect(&node);
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    assert_eq!(answer, HEADER);

    // A frame larger than frame_max: 501 FRAME_ERROR.
    assert_eq!(
        close_code_after(&node, &[1, 0, 0, 0x7f, 0xff, 0xff, 0xff]),
        501
    );
    // A wrong frame-end octet: 501.
    assert_eq!(close_code_after(&node, &[8, 0, 0, 0, 0, 0, 0, 0x00]), 501);
    // An unknown frame type: 501.
    assert_eq!(close_code_after(&node, &[9, 0, 0, 0, 0, 0, 0, 0xCE]), 501);
    // Unknown class and method ids: 503 COMMAND_INVALID.
    assert_eq!(
        close_code_after(&node, &[1, 0, 0, 0, 0, 0, 4, 0x12, 0x34, 0x56, 0x78, 0xCE]),
        503
    );
    // A method other than start-ok during the handshake: 503; on a channel other
    // than 0: 505 UNEXPECTED_FRAME.
    let open_on_0 = [1u8, 0, 0, 0, 0, 0, 5, 0, 20, 0, 10, 0, 0xCE];
    assert_eq!(close_code_after(&node, &open_on_0), 503);
    let open_on_1 = [1u8, 0, 1, 0, 0, 0, 5, 0, 20, 0, 10, 0, 0xCE];
    assert_eq!(close_code_after(&node, &open_on_1), 505);

    // Random bytes: the connection ends one way or another, and the node serves on.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..20 {
        let mut s = connect(&node);
        s.write_all(HEADER).unwrap();
        let _ = read_frame(&mut s);
        let junk: Vec<u8> = (0..512)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let _ = s.write_all(&junk);
        // End of input: a node waiting for the rest of a frame sees it at once.
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    serves(&node);
}

/// A content header announcing more than the largest message closes the channel with
/// 406 before any body is buffered.
#[test]
fn an_oversized_message_is_refused_from_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("data"), free_port());
    let mut s = open_channel(&node);

    let mut publish = 0u16.to_be_bytes().to_vec();
    publish.extend(short_str(""));
    publish.extend(short_str("q"));
    publish.push(0);
    s.write_all(&method_frame(1, 60, 40, &publish)).unwrap();
    let mut header = 60u16.to_be_bytes().to_vec();
    header.extend(0u16.to_be_bytes());
    header.extend((1u64 << 40).to_be_bytes());
    header.extend(0u16.to_be_bytes());
    s.write_all(&frame(2, 1, &header)).unwrap();
    let close = expect_method(&mut s, (20, 40));
    assert_eq!(u16::from_be_bytes([close[4], close[5]]), 406);
    let text = String::from_utf8_lossy(&close[7..7 + close[6] as usize]).into_owned();
    assert!(text.contains("larger than configured max size"), "{text}");
    serves(&node);
}

/// Publisher confirms of a burst: every publish is confirmed exactly once, and the
/// burst's confirms are coalesced into `multiple` acks (as RabbitMQ does) rather than
/// one ack per message.
#[test]
fn a_burst_of_publishes_is_confirmed_once_each_with_multiple_acks() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("data"), free_port());
    let mut s = open_channel(&node);
    s.write_all(&method_frame(1, 85, 10, &[0])).unwrap(); // confirm.select
    expect_method(&mut s, (85, 11));
    s.write_all(&queue_declare("burst", false)).unwrap();
    expect_method(&mut s, (50, 11));

    const N: u64 = 100;
    let burst: Vec<u8> = (0..N)
        .flat_map(|i| publish_frames("burst", format!("m{i}").as_bytes()))
        .collect();
    s.write_all(&burst).unwrap(); // one write: the node reads it as one run
    let mut confirmed = vec![false; N as usize + 1];
    let mut ack_frames = 0;
    while confirmed[1..].iter().any(|c| !c) {
        let (kind, _, payload) = read_frame(&mut s).expect("confirms");
        assert_eq!((kind, method_of(&payload)), (1, (60, 80)), "only acks");
        ack_frames += 1;
        let tag = u64::from_be_bytes(payload[4..12].try_into().unwrap());
        let multiple = payload[12] & 1 == 1;
        assert!((1..=N).contains(&tag), "ack of unknown tag {tag}");
        assert!(!confirmed[tag as usize], "tag {tag} confirmed twice");
        if multiple {
            confirmed[1..=tag as usize]
                .iter_mut()
                .for_each(|c| *c = true);
        } else {
            confirmed[tag as usize] = true;
        }
    }
    assert!(ack_frames < N, "{ack_frames} ack frames for {N} publishes");
    serves(&node);
}

/// Publishes read together with a frame that ends the connection (here an unknown
/// frame type) still reach their queue: the valid input before the error counts.
#[test]
fn publishes_before_a_connection_error_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("data"), free_port());
    let mut s = open_channel(&node);
    s.write_all(&queue_declare("kept", false)).unwrap();
    expect_method(&mut s, (50, 11));
    let mut input: Vec<u8> = (0..3)
        .flat_map(|i| publish_frames("kept", format!("m{i}").as_bytes()))
        .collect();
    input.extend(frame(9, 0, b"junk"));
    s.write_all(&input).unwrap();
    let close = expect_method(&mut s, (10, 50));
    assert_eq!(u16::from_be_bytes([close[4], close[5]]), 501);

    let mut other = open_channel(&node);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        other.write_all(&queue_declare("kept", true)).unwrap();
        let ok = expect_method(&mut other, (50, 11));
        // declare-ok: class, method, queue name, message count, consumer count.
        let at = 4 + 1 + ok[4] as usize;
        let count = u32::from_be_bytes(ok[at..at + 4].try_into().unwrap());
        if count == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "kept holds {count} messages, not 3"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// After `connection.close` from the client the node answers `close-ok`, half-closes
/// and keeps reading until the client closes its socket (as RabbitMQ does): a client
/// whose frames were still on their way (a burst of publishes right before the close)
/// must not have its writes fail with a reset (EPIPE), or its close never completes.
#[test]
fn a_client_close_is_graceful_frames_still_on_their_way_meet_an_open_socket() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("data"), free_port());
    let mut s = open_channel(&node);
    // connection.close 200, then (as a client with buffered frames would) more frames.
    let mut close = 200u16.to_be_bytes().to_vec();
    close.extend(short_str("bye"));
    close.extend([0, 0, 0, 0]);
    s.write_all(&method_frame(0, 10, 50, &close)).unwrap();
    expect_method(&mut s, (10, 51));
    let heartbeat = frame(8, 0, &[]);
    let publishes = publish_frames("nowhere", b"late");
    // For a second, a write every 10 ms: every one finds the socket open. Without the
    // grace the node's close turns the first ones into a reset and a later write fails.
    let until = Instant::now() + Duration::from_secs(1);
    let mut writes = 0;
    while Instant::now() < until {
        s.write_all(&heartbeat)
            .and_then(|()| s.write_all(&publishes))
            .unwrap_or_else(|e| panic!("write {writes} after close-ok failed: {e}"));
        writes += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    // The node sent everything it had: the next read is the end of its stream.
    let mut rest = Vec::new();
    let read = s.read_to_end(&mut rest);
    assert!(matches!(read, Ok(0)), "after close-ok: {read:?} {rest:?}");
    drop(s);
    serves(&node);
}

/// As RabbitMQ: body frames longer than their content header announced close the
/// connection with 505 UNEXPECTED_FRAME; a known method whose arguments do not decode
/// with 501 FRAME_ERROR (unknown method ids stay 503 COMMAND_INVALID).
#[test]
fn a_long_body_is_an_unexpected_frame_and_bad_arguments_a_frame_error() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("data"), free_port());
    let close_code = |s: &mut std::net::TcpStream| {
        let close = expect_method(s, (10, 50));
        u16::from_be_bytes([close[4], close[5]])
    };

    let mut s = open_channel(&node);
    let mut publish = 0u16.to_be_bytes().to_vec();
    publish.extend(short_str(""));
    publish.extend(short_str("q"));
    publish.push(0);
    s.write_all(&method_frame(1, 60, 40, &publish)).unwrap();
    let mut header = 60u16.to_be_bytes().to_vec();
    header.extend(0u16.to_be_bytes());
    header.extend(3u64.to_be_bytes());
    header.extend(0u16.to_be_bytes());
    s.write_all(&frame(2, 1, &header)).unwrap();
    s.write_all(&frame(3, 1, b"12345")).unwrap();
    assert_eq!(close_code(&mut s), 505);

    // queue.declare cut after its first argument byte.
    let mut s = open_channel(&node);
    s.write_all(&method_frame(1, 50, 10, &[0])).unwrap();
    assert_eq!(close_code(&mut s), 501);

    let mut s = open_channel(&node);
    s.write_all(&method_frame(1, 50, 99, &[0, 0, 0, 0]))
        .unwrap();
    assert_eq!(close_code(&mut s), 503);
    serves(&node);
}

/// A heartbeat frame.
const HEARTBEAT: [u8; 8] = [8, 0, 0, 0, 0, 0, 0, 0xCE];

/// Waits (bounded) until the node's log has `line`.
fn logged(node: &NodeProcess, line: &str) {
    common::eventually_within(line, Duration::from_secs(90), || node.log().contains(line));
}

/// Reads the socket to its end (the node closed it): fails if it stays open.
fn closed_by_node(s: &mut std::net::TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut sink = vec![0u8; 1 << 16];
    loop {
        match s.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("the node did not close the connection: {e}"),
        }
    }
}

/// A consumer that reads nothing (though it sends its heartbeats) while its queue has
/// 25 MiB to deliver: the node stops writing to it once the socket is full, and drops
/// it after its heartbeat timeout, instead of holding its deliveries for ever; the
/// node serves on.
#[test]
fn a_client_that_reads_nothing_is_dropped_after_its_heartbeat_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("data"), free_port());
    let mut publisher = open_channel(&node);
    publisher
        .write_all(&queue_declare("stalled", false))
        .unwrap();
    expect_method(&mut publisher, (50, 11));
    let body = vec![b's'; 64 * 1024];
    for _ in 0..400 {
        publisher
            .write_all(&publish_frames("stalled", &body))
            .unwrap();
    }
    // Every publish is in: a passive declare counts them.
    common::eventually("400 messages in the queue", || {
        message_count(&mut publisher, "stalled") == 400
    });

    let mut consumer = open_channel_with_heartbeat(&node, 1);
    consumer
        .write_all(&consume_frame("stalled", "stalled-consumer", true))
        .unwrap();
    expect_method(&mut consumer, (60, 21));
    // From here on it only sends heartbeats, and reads nothing.
    let mut beats = consumer.try_clone().unwrap();
    let beating = std::thread::spawn(move || {
        while beats.write_all(&HEARTBEAT).is_ok() {
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    logged(&node, "the client read nothing for 2 s");
    closed_by_node(&mut consumer);
    beating.join().unwrap();
    serves(&node);
}

/// A no-ack consumer, and one with manual acks and no prefetch, that read nothing for
/// a while: their queue keeps what the consumer's connection has not written (see
/// `common::raw_amqp::unread_consumer`).
#[test]
fn consumers_held_by_nothing_but_their_window_leave_their_messages_in_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("data"), free_port());
    common::raw_amqp::unread_consumer(&node, &node, "unread-no-ack", true);
    common::raw_amqp::unread_consumer(&node, &node, "unread-no-prefetch", false);
    serves(&node);
}

/// A client that sends a frame a byte at a time, each byte well within the heartbeat
/// interval but no whole frame within the timeout, is dropped (as one that sends
/// nothing would be).
#[test]
fn a_frame_sent_a_byte_at_a_time_is_cut_off_after_the_heartbeat_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("data"), free_port());
    let mut s = open_channel_with_heartbeat(&node, 1);
    let frames = publish_frames("anywhere", b"slow");
    let mut dribble = s.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        for byte in frames {
            if dribble.write_all(&[byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(400));
        }
    });
    logged(&node, "missed heartbeats from the client: closing");
    closed_by_node(&mut s);
    sender.join().unwrap();
    serves(&node);
}
