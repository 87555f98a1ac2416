//! A connection's channels and events, driven in this process without a socket: the
//! test feeds frames to [`Connection::frame`] and events to [`Connection::event`] in
//! the order it chooses, so what a race on a real connection makes rare (an event
//! arriving after its channel closed and the client reopened the number) happens
//! every run.

use std::sync::Arc;
use std::time::Duration;

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame};
use amq_protocol::protocol::{basic, channel, confirm, AMQPClass};
use bytes::Bytes;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use warren_actors::delivery::{ChannelSink, QueueDelivery, QueueEvent};
use warren_actors::message::Message;

use super::{Connection, Event, Server, FRAME_MAX};
use crate::codec::read_frame;

/// A server on a fresh store: the default vhost and the `guest` user, no queue actors
/// (nothing here reaches a queue).
async fn server(dir: &tempfile::TempDir) -> Arc<Server> {
    use warren_access::AccessControl;
    use warren_actors::vhost::Placement;
    use warren_actors::vhosts::VHosts;

    let store = warren_storage::Store::open(dir.path().join("test.redb")).expect("store");
    let placement = Placement::standalone(
        "test",
        warren_resources::queue_memory::QueueMemory::new(64 << 20),
    );
    let vhosts = VHosts::load(store.clone(), placement)
        .await
        .expect("vhosts");
    let access = AccessControl::load(store).await.expect("users");
    Arc::new(Server {
        vhosts,
        alarms: Default::default(),
        access,
        product_version: "test".into(),
        node_name: "test".into(),
        connections: Default::default(),
        tasks: Default::default(),
    })
}

/// A connection past its handshake, logged in as guest.
async fn connection(dir: &tempfile::TempDir) -> Connection {
    let mut conn = Connection::new(([127, 0, 0, 1], 5672).into(), server(dir).await);
    conn.user = "guest".into();
    conn.register(None, false);
    conn
}

/// Hands `frames` to the connection as if read off its socket (without the routing
/// that follows a read: the test routes when it wants).
async fn feed(conn: &mut Connection, events: &UnboundedSender<Event>, frames: Vec<AMQPFrame>) {
    for frame in frames {
        let end = conn
            .frame(frame, events)
            .await
            .expect("no connection error");
        assert!(end.is_none(), "the connection ended");
    }
}

fn open(n: u16) -> Vec<AMQPFrame> {
    vec![AMQPFrame::Method(
        n,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    )]
}

fn close(n: u16) -> Vec<AMQPFrame> {
    vec![AMQPFrame::Method(
        n,
        AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        })),
    )]
}

fn confirm_select(n: u16) -> Vec<AMQPFrame> {
    vec![AMQPFrame::Method(
        n,
        AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
            nowait: false,
        })),
    )]
}

/// A publish to amq.direct with a key nothing is bound to: its outcome comes at once.
fn publish(n: u16, body: &[u8]) -> Vec<AMQPFrame> {
    vec![
        AMQPFrame::Method(
            n,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: "amq.direct".into(),
                routing_key: "nowhere".into(),
                mandatory: false,
                immediate: false,
            })),
        ),
        AMQPFrame::Header(
            n,
            AMQPContentHeader {
                class_id: 60,
                body_size: body.len() as u64,
                properties: basic::AMQPProperties::default(),
            },
        ),
        AMQPFrame::Body(n, body.to_vec()),
    ]
}

/// A delivery of `body` to consumer `tag`, as a queue sends it.
fn delivery(tag: &str, body: &'static [u8]) -> QueueEvent {
    QueueEvent::Deliver(vec![QueueDelivery {
        queue: "q".into(),
        consumer_tag: tag.into(),
        seq: 1,
        message: Arc::new(Message::new("", "q", Bytes::from_static(body))),
        redelivered: false,
        no_ack: true,
    }])
}

/// The next event the connection's queues or publish outcomes sent (bounded).
async fn next_event(events: &mut UnboundedReceiver<Event>) -> Event {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("an event within 10 s")
        .expect("the sender is alive")
}

/// The frames the connection queued for the client since the last call.
fn sent(conn: &mut Connection) -> Vec<AMQPFrame> {
    let out = std::mem::take(&mut conn.out);
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some((frame, used)) = read_frame(&out[at..], FRAME_MAX).expect("valid frames") {
        frames.push(frame);
        at += used;
    }
    assert_eq!(at, out.len(), "whole frames only");
    frames
}

/// Channel 1 closes with a publish's confirm outstanding and a queue's delivery on
/// its way, and the client opens channel 1 again (pika takes the lowest free number),
/// selects confirms, publishes its seq 1 and consumes with a tag the old channel used.
/// The old channel's late outcome must not ack the new seq 1 (its message is not even
/// routed yet), nor its queue's late delivery or consumer cancel reach the new
/// channel; the new channel's own events still do.
#[tokio::test]
async fn events_of_a_closed_channel_do_not_reach_its_number_reopened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conn = connection(&dir).await;
    let (tx, mut rx) = unbounded_channel();

    // The first channel 1: confirm mode, one publish routed, its outcome on its way.
    feed(&mut conn, &tx, open(1)).await;
    feed(&mut conn, &tx, confirm_select(1)).await;
    feed(&mut conn, &tx, publish(1, b"old")).await;
    conn.route_ready(&tx).await;
    let old_sink: ChannelSink = conn.channels[&1].sink();
    let old_outcome = next_event(&mut rx).await;
    feed(&mut conn, &tx, close(1)).await;

    // The second channel 1: confirm mode, seq 1 published and not routed yet, and a
    // consumer with the tag a consumer of the first one had.
    feed(&mut conn, &tx, open(1)).await;
    feed(&mut conn, &tx, confirm_select(1)).await;
    feed(&mut conn, &tx, publish(1, b"new")).await;
    conn.channels
        .get_mut(&1)
        .expect("open")
        .add_consumer("ctag", "q");
    sent(&mut conn);

    // The old channel's events arrive now: its outcome, and from its queue a delivery
    // and the end of its consumer.
    conn.event(old_outcome);
    old_sink(delivery("ctag", b"old delivery"));
    conn.event(next_event(&mut rx).await);
    old_sink(QueueEvent::ConsumerCancelled {
        tag: "ctag".into(),
        reason: "queue deleted".into(),
        resumable: false,
    });
    conn.event(next_event(&mut rx).await);
    let leaked = sent(&mut conn);
    assert!(
        leaked.is_empty(),
        "events of the closed channel 1 reached the reopened one: {leaked:?}"
    );
    assert_eq!(
        conn.channels[&1].outstanding.len(),
        0,
        "nothing of the new channel is routed yet"
    );

    // The new channel's own events do reach it.
    conn.route_ready(&tx).await;
    let new_outcome = next_event(&mut rx).await;
    conn.event(new_outcome);
    conn.channels[&1].sink()(delivery("ctag", b"new delivery"));
    let new_delivery = next_event(&mut rx).await;
    conn.event(new_delivery);
    let frames = sent(&mut conn);
    let acks: Vec<(u64, bool)> = frames
        .iter()
        .filter_map(|f| match f {
            AMQPFrame::Method(1, AMQPClass::Basic(basic::AMQPMethod::Ack(a))) => {
                Some((a.delivery_tag, a.multiple))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        acks,
        vec![(1, false)],
        "one ack of the new seq 1: {frames:?}"
    );
    let delivered = frames.iter().any(|f| {
        matches!(
            f,
            AMQPFrame::Method(1, AMQPClass::Basic(basic::AMQPMethod::Deliver(d)))
                if d.consumer_tag.as_str() == "ctag"
        )
    });
    assert!(delivered, "the new channel's delivery: {frames:?}");
    assert!(
        frames.iter().any(|f| matches!(
            f,
            AMQPFrame::Body(1, b) if b.as_slice() == b"new delivery"
        )),
        "with its body: {frames:?}"
    );
    conn.channels[&1].sink()(QueueEvent::ConsumerCancelled {
        tag: "ctag".into(),
        reason: "queue deleted".into(),
        resumable: false,
    });
    conn.event(next_event(&mut rx).await);
    let frames = sent(&mut conn);
    assert!(
        matches!(
            frames.as_slice(),
            [AMQPFrame::Method(1, AMQPClass::Basic(basic::AMQPMethod::Cancel(c)))]
                if c.consumer_tag.as_str() == "ctag"
        ),
        "the new channel's consumer cancelled: {frames:?}"
    );
}

/// Outcomes of three publish batches come back in the order 3, 1, 2 (their queues
/// answer at different speeds): the client gets the confirms in tag order, never a tag
/// lower than one it already got, and a `multiple` ack only over tags all confirmed.
#[tokio::test]
async fn confirms_go_out_in_tag_order_whatever_order_outcomes_come_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conn = connection(&dir).await;
    let (tx, mut rx) = unbounded_channel();
    feed(&mut conn, &tx, open(1)).await;
    feed(&mut conn, &tx, confirm_select(1)).await;
    let mut outcomes = Vec::new();
    for body in [&b"one"[..], b"two", b"three"] {
        feed(&mut conn, &tx, publish(1, body)).await;
        conn.route_ready(&tx).await;
        outcomes.push(next_event(&mut rx).await);
    }
    sent(&mut conn);
    let acks = |conn: &mut Connection| -> Vec<(u64, bool)> {
        sent(conn)
            .iter()
            .filter_map(|f| match f {
                AMQPFrame::Method(1, AMQPClass::Basic(basic::AMQPMethod::Ack(a))) => {
                    Some((a.delivery_tag, a.multiple))
                }
                _ => None,
            })
            .collect()
    };
    let third = outcomes.pop().expect("three");
    let second = outcomes.pop().expect("two");
    let first = outcomes.pop().expect("one");
    conn.event(third);
    assert_eq!(acks(&mut conn), vec![], "3 waits for 1 and 2");
    conn.event(first);
    assert_eq!(acks(&mut conn), vec![(1, false)]);
    conn.event(second);
    assert_eq!(acks(&mut conn), vec![(3, true)], "2 and 3 at once");
}

/// A connection's future lives as long as the connection: an array held across an
/// await inside it (a 64 KiB read chunk in the handshake did) costs every idle
/// connection that much. 66 872 bytes before, 6 480 after.
#[tokio::test]
async fn a_connection_future_stays_small() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = tokio::spawn(async move { tokio::net::TcpStream::connect(addr).await });
    let (socket, peer) = listener.accept().await.unwrap();
    let (_close, closed) = tokio::sync::watch::channel(false);
    let future = super::serve_until(socket, peer, server.clone(), closed.clone());
    let size = std::mem::size_of_val(&future);
    assert!(size <= 16 << 10, "a connection's future is {size} bytes");
    drop(future);
    // And the task a listener spawns for it, which can also serve TLS: no larger
    // than the plain connection's own future (20 696 bytes against 6 640 in a
    // release build while the TLS side was held inline).
    let client2 = tokio::spawn(async move { tokio::net::TcpStream::connect(addr).await });
    let (socket, peer) = listener.accept().await.unwrap();
    let door = crate::listener::Door::plain();
    let task = crate::listener::serve_door(door, socket, peer, server, closed);
    let task_size = std::mem::size_of_val(&task);
    assert!(
        task_size <= size + 64,
        "a connection's task future is {task_size} bytes, its connection's {size}"
    );
    drop(task);
    drop(client);
    drop(client2);
}
