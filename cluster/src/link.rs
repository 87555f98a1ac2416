//! Queue links: the data plane between nodes.
//!
//! A node whose clients use queues of another node opens one TCP connection to that
//! node's link listener (a "queue link"), separate from ractor_cluster's session.
//! Everything about those queues travels on it, in both directions: publishes,
//! requests and settlements to the queue's node; answers, confirms and deliveries
//! back. One connection per (client node, queue node) keeps the order AMQP promises:
//! what a channel sends reaches the queue in the order it was sent, and a queue's
//! deliveries reach the channel in queue order.
//!
//! Why not ractor_cluster (docs/2026-12-06-queue-links.md has the numbers): each of
//! its messages is encoded twice (bincode in protobuf), copied four times, and passes
//! three actors on each side; its sessions carry one message per frame and end on a
//! frame over 16 MiB. A link's writer ([`spawn_writer`]) puts every item that is
//! waiting into one frame and flushes when nothing more waits (never on a timer that
//! a lone message would wait for), merging settlements and deliveries of one channel;
//! the reader ([`read_items`]) hands a frame's items over in order, deliveries' bodies
//! as slices of the frame.
//!
//! A link is opened with a challenge handshake on the cluster cookie, both sides
//! proving they know it ([`dial`], [`accept`]). An idle link carries a ping every
//! [`PING_EVERY`]; a link silent for [`SILENCE_LIMIT`] is dropped.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use rand::Rng;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::link_wire::{decode_frame, LinkItem, MAX_FRAME};

/// The link protocol's version; a node refuses a link of another version. 2:
/// consumers keep their write window across a link (`Consume`'s window, `Written`).
/// 3: a stream's records cross in runs (`Consume`'s `records`, `ToClient::Records`).
pub const LINK_VERSION: u32 = 3;
/// A writer stops adding waiting items to a frame once it holds this many bytes.
pub const FRAME_TARGET: usize = 256 * 1024;
/// An idle link carries a ping this often.
pub const PING_EVERY: Duration = Duration::from_secs(1);
/// A link that carried nothing for this long is dropped.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(10);
/// How long opening a link may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

const MAGIC: &[u8; 4] = b"WRNL";

fn proof(cookie: &str, role: &[u8], nonce: &[u8], node: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"warren queue link ");
    h.update(role);
    h.update((cookie.len() as u32).to_le_bytes());
    h.update(cookie.as_bytes());
    h.update(nonce);
    h.update(node.as_bytes());
    h.finalize().into()
}

fn refused(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, why.into())
}

async fn read_text(stream: &mut TcpStream) -> io::Result<String> {
    let len = stream.read_u16_le().await? as usize;
    let mut text = vec![0; len];
    stream.read_exact(&mut text).await?;
    Ok(String::from_utf8_lossy(&text).into_owned())
}

async fn write_text(stream: &mut TcpStream, text: &str) -> io::Result<()> {
    let text = &text.as_bytes()[..text.len().min(u16::MAX as usize)];
    stream.write_u16_le(text.len() as u16).await?;
    stream.write_all(text).await
}

/// Opens a link from node `node` to the link listener at `addr`.
pub async fn dial(addr: &str, node: &str, cookie: &str) -> io::Result<TcpStream> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut magic = [0; 4];
        stream.read_exact(&mut magic).await?;
        let version = stream.read_u32_le().await?;
        if &magic != MAGIC || version != LINK_VERSION {
            return Err(refused(format!(
                "{addr} is not a queue link listener of link version {LINK_VERSION} \
                 (it said version {version}): run the same Warren version on every node"
            )));
        }
        let mut their_nonce = [0; 32];
        stream.read_exact(&mut their_nonce).await?;
        let our_nonce: [u8; 32] = rand::rng().random();
        stream.write_u32_le(LINK_VERSION).await?;
        write_text(&mut stream, node).await?;
        stream.write_all(&our_nonce).await?;
        stream
            .write_all(&proof(cookie, b"dial", &their_nonce, node))
            .await?;
        match stream.read_u8().await? {
            0 => {
                let mut theirs = [0; 32];
                stream.read_exact(&mut theirs).await?;
                if theirs != proof(cookie, b"accept", &our_nonce, node) {
                    return Err(refused(format!(
                        "the queue link listener at {addr} does not know the cluster's cookie"
                    )));
                }
                Ok(stream)
            }
            _ => Err(refused(read_text(&mut stream).await?)),
        }
    })
    .await
    .unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("opening a queue link to {addr} took over {HANDSHAKE_TIMEOUT:?}"),
        ))
    })
}

/// Takes a link a node opened to this one: returns the dialling node's name once it
/// proved it knows the cookie; refuses (and says why to both sides) otherwise.
pub async fn accept(stream: &mut TcpStream, cookie: &str) -> io::Result<String> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        stream.set_nodelay(true)?;
        let our_nonce: [u8; 32] = rand::rng().random();
        stream.write_all(MAGIC).await?;
        stream.write_u32_le(LINK_VERSION).await?;
        stream.write_all(&our_nonce).await?;
        let version = stream.read_u32_le().await?;
        let node = read_text(stream).await?;
        let mut their_nonce = [0; 32];
        stream.read_exact(&mut their_nonce).await?;
        let mut theirs = [0; 32];
        stream.read_exact(&mut theirs).await?;
        let why = if version != LINK_VERSION {
            Some(format!(
                "link version {version} refused: this node speaks {LINK_VERSION}; \
                 run the same Warren version on every node"
            ))
        } else if theirs != proof(cookie, b"dial", &our_nonce, &node) {
            Some(format!(
                "node '{node}' does not know the cluster's cookie: copy the cookie file"
            ))
        } else {
            None
        };
        match why {
            None => {
                stream.write_u8(0).await?;
                stream
                    .write_all(&proof(cookie, b"accept", &their_nonce, &node))
                    .await?;
                Ok(node)
            }
            Some(why) => {
                stream.write_u8(1).await?;
                write_text(stream, &why).await?;
                Err(refused(why))
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("a queue link handshake took over {HANDSHAKE_TIMEOUT:?}"),
        ))
    })
}

/// Where a link's items go out: never blocks; fails once the link is gone.
pub type LinkOut<T> = mpsc::UnboundedSender<T>;

/// Starts the writer of a link: it sends what `items` gives, as many waiting items
/// per frame as fit in [`FRAME_TARGET`], a ping when idle for [`PING_EVERY`]. It ends
/// (shutting its half of the connection) when every sender is dropped or a write fails;
/// the link's owner aborts it when the link ends, so that nothing queued after that is
/// written and the connection closes.
pub fn spawn_writer<T: LinkItem>(
    mut write: OwnedWriteHalf,
    mut items: mpsc::UnboundedReceiver<T>,
    peer: SocketAddr,
) -> AbortHandle {
    tokio::spawn(async move {
        let mut frame = Vec::with_capacity(64 * 1024);
        loop {
            // (The ping's timer is armed only when nothing waits.)
            let first = match items.try_recv() {
                Ok(item) => item,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout(PING_EVERY, items.recv()).await {
                        Ok(Some(item)) => item,
                        Ok(None) => break,
                        Err(_) => T::ping(),
                    }
                }
            };
            frame.clear();
            frame.extend_from_slice(&[0; 4]);
            let (mut held, mut held_size) = (first, 0);
            held_size += held.size();
            // (A merged item counts too: deliveries to one channel would otherwise
            // merge into one frame of any size.)
            while frame.len() + held_size < FRAME_TARGET {
                match items.try_recv() {
                    Ok(next) => {
                        let next_size = next.size();
                        match held.merge(next) {
                            Ok(()) => held_size += next_size,
                            Err(next) => {
                                held.encode(&mut frame);
                                (held, held_size) = (next, next_size);
                            }
                        }
                    }
                    Err(_) => break,
                }
            }
            held.encode(&mut frame);
            if frame.len() - 4 > MAX_FRAME {
                // One item larger than any frame a reader takes (a publish batch of
                // huge messages): the link cannot carry it; what waits on it is
                // refused when it ends.
                tracing::error!(%peer, bytes = frame.len() - 4, "an item larger than a queue link frame; ending the link");
                break;
            }
            let len = (frame.len() - 4) as u32;
            frame[..4].copy_from_slice(&len.to_le_bytes());
            if let Err(e) = write.write_all(&frame).await {
                tracing::debug!(%peer, "queue link write failed: {e}");
                break;
            }
            if frame.capacity() > 4 * FRAME_TARGET {
                frame = Vec::with_capacity(64 * 1024);
            }
        }
        let _ = write.shutdown().await;
    })
    .abort_handle()
}

/// A new read buffer of at least `capacity` holding what `buf` holds (the start of a
/// frame). Never `reserve` on the old one: its allocation is shared with the frames
/// split off it, whose bodies are still on their way, and growing it would copy them
/// all (realloc) where only the few bytes of a partial frame need to move.
fn fresh(buf: &BytesMut, capacity: usize) -> BytesMut {
    let mut fresh = BytesMut::with_capacity(capacity.max(FRAME_TARGET));
    fresh.extend_from_slice(buf);
    fresh
}

/// Reads a link's frames and hands each frame's items to `on_items`, in order, until
/// the link ends; returns why it ended.
pub async fn read_items<T: LinkItem>(
    mut read: OwnedReadHalf,
    mut on_items: impl FnMut(Vec<T>),
) -> String {
    let mut buf = BytesMut::with_capacity(FRAME_TARGET);
    loop {
        while buf.len() >= 4 {
            let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if len > MAX_FRAME {
                return format!("a frame of {len} bytes (at most {MAX_FRAME})");
            }
            if buf.len() < 4 + len {
                if buf.capacity() < 4 + len {
                    buf = fresh(&buf, 4 + len);
                }
                break;
            }
            buf.advance(4);
            match decode_frame(buf.split_to(len).freeze()) {
                Ok(items) => on_items(items),
                Err(why) => return format!("an undecodable frame: {why}"),
            }
        }
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf = fresh(&buf, FRAME_TARGET);
        }
        match tokio::time::timeout(SILENCE_LIMIT, read.read_buf(&mut buf)).await {
            Err(_) => return format!("nothing came for {SILENCE_LIMIT:?}"),
            Ok(Ok(0)) => return "the far side closed it".into(),
            Ok(Err(e)) => return e.to_string(),
            Ok(Ok(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link_wire::ToQueue;
    use tokio::net::TcpListener;

    async fn pair(
        dial_cookie: &str,
        accept_cookie: &str,
    ) -> (io::Result<TcpStream>, io::Result<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accept_cookie = accept_cookie.to_string();
        let accepting = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            accept(&mut s, &accept_cookie).await
        });
        let dialled = dial(&addr, "n2", dial_cookie).await;
        (dialled, accepting.await.unwrap())
    }

    #[tokio::test]
    async fn a_link_opens_only_with_the_same_cookie() {
        let (dialled, accepted) = pair("secret", "secret").await;
        assert!(dialled.is_ok());
        assert_eq!(accepted.unwrap(), "n2");
        let (dialled, accepted) = pair("wrong", "secret").await;
        let why = dialled.unwrap_err().to_string();
        assert!(why.contains("does not know the cluster's cookie"), "{why}");
        assert!(accepted.is_err());
    }

    /// Sends `sent` through a real link (queued before its writer starts, then the
    /// senders dropped) and returns the frames the far side read, each as its items,
    /// and why its reading ended.
    async fn through_a_link<T: LinkItem>(sent: Vec<T>) -> (Vec<Vec<T>>, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reading = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            accept(&mut s, "c").await.unwrap();
            let (read, _write) = s.into_split();
            let mut frames = Vec::new();
            let why = read_items::<T>(read, |items| frames.push(items)).await;
            (frames, why)
        });
        let stream = dial(&addr.to_string(), "n2", "c").await.unwrap();
        let (_read, write) = stream.into_split();
        let (out, items) = mpsc::unbounded_channel();
        for item in sent {
            out.send(item).unwrap();
        }
        spawn_writer(write, items, addr);
        drop(out);
        reading.await.unwrap()
    }

    /// Deliveries to one channel merge into one item, but never past a frame's size:
    /// a consumer with a deep backlog and no prefetch must not make one huge frame.
    #[tokio::test]
    async fn merged_deliveries_keep_frames_bounded() {
        use crate::link_wire::ToClient;
        use bytes::Bytes;
        use std::sync::Arc;
        use warren_actors::delivery::QueueDelivery;
        use warren_actors::message::Message;

        let body = Bytes::from(vec![7u8; 1024]);
        let sent = (0..2_000)
            .map(|seq| ToClient::Deliver {
                vhost: "/".into(),
                queue: "q".into(),
                channel: 1,
                deliveries: vec![QueueDelivery {
                    queue: "q".into(),
                    consumer_tag: "c".into(),
                    seq,
                    message: Arc::new(Message::new("", "q", body.clone())),
                    redelivered: false,
                    no_ack: false,
                }],
            })
            .collect();
        let (frames, _) = through_a_link(sent).await;
        let seqs: Vec<u64> = frames
            .iter()
            .flatten()
            .flat_map(|item| match item {
                ToClient::Deliver { deliveries, .. } => deliveries.iter().map(|d| d.seq).collect(),
                _ => Vec::new(),
            })
            .collect();
        let sizes: Vec<usize> = frames
            .iter()
            .map(|items| items.iter().map(LinkItem::size).sum())
            .collect();
        assert_eq!(seqs, (0..2_000).collect::<Vec<u64>>());
        assert!(
            sizes.len() >= 8,
            "2 MiB of deliveries in {} frames",
            sizes.len()
        );
        assert!(
            sizes.iter().all(|&f| f <= FRAME_TARGET + 2 * 1024),
            "frames of {sizes:?} bytes"
        );
    }

    #[tokio::test]
    async fn items_arrive_in_order_in_few_frames_and_the_end_is_seen() {
        let sent = (0..10_000)
            .map(|id| ToQueue::Stats {
                id,
                vhost: "/".into(),
            })
            .collect();
        let (frames, why) = through_a_link(sent).await;
        let ids: Vec<u64> = frames
            .iter()
            .flatten()
            .filter_map(|i| match i {
                ToQueue::Stats { id, .. } => Some(*id),
                _ => None,
            })
            .collect();
        assert_eq!(ids, (0..10_000).collect::<Vec<u64>>());
        assert!(
            frames.len() < 10,
            "waiting items share frames: {} frames",
            frames.len()
        );
        assert!(why.contains("closed"), "{why}");
    }
}
