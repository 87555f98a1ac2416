//! Bad input on the AMQP port: the connection is closed with the right reply code, and
//! the node goes on serving everyone else.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{free_port, NodeProcess};

const HEADER: &[u8] = b"AMQP\x00\x00\x09\x01";

fn connect(node: &NodeProcess) -> TcpStream {
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
fn read_frame(s: &mut TcpStream) -> Option<(u8, u16, Vec<u8>)> {
    let mut head = [0u8; 7];
    s.read_exact(&mut head).ok()?;
    let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
    let mut payload = vec![0u8; size + 1];
    s.read_exact(&mut payload).ok()?;
    assert_eq!(payload.pop(), Some(0xCE), "frame end");
    Some((head[0], u16::from_be_bytes([head[1], head[2]]), payload))
}

/// (class, method) of a method frame's payload.
fn method_of(payload: &[u8]) -> (u16, u16) {
    (
        u16::from_be_bytes([payload[0], payload[1]]),
        u16::from_be_bytes([payload[2], payload[3]]),
    )
}

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
