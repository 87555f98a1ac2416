//! Unit tests of the queue state machine, one feature at a time. Every step checks the
//! invariants.

use std::sync::Arc;

use bytes::Bytes;

use crate::message::{FieldTable, FieldValue, Message, SharedMessage, PERSISTENT};

use super::*;
use crate::queue::QueueStats;

const T0: u64 = 1_700_000_000_000;

struct Q {
    s: QueueState,
    now: u64,
    fx: Vec<Effect>,
    /// Answer dead letters as held by their targets (the common case); off for the
    /// tests of what happens before they answer.
    auto_dead_letter: bool,
}

impl Q {
    fn new(config: QueueConfig) -> Self {
        Q {
            s: QueueState::new(config, T0),
            now: T0,
            fx: Vec::new(),
            auto_dead_letter: true,
        }
    }

    fn with_args(args: &[(&str, FieldValue)]) -> Self {
        Q::new(config(args))
    }

    fn try_run(&mut self, c: Command) -> Result<Reply, QueueError> {
        let before = self.fx.len();
        let r = self.s.apply(c, self.now, &mut self.fx);
        if r.is_err() {
            assert_eq!(self.fx.len(), before, "a refused command pushed effects");
        }
        self.s.check_invariants().unwrap();
        if self.auto_dead_letter {
            self.targets_hold(before);
        }
        r
    }

    /// The shell's dead-letter router with targets that take everything: each message
    /// dead-lettered since effect `from` is held by its targets at once.
    fn targets_hold(&mut self, mut from: usize) {
        loop {
            let done: Vec<Seq> = self.fx[from..]
                .iter()
                .filter_map(|e| match e {
                    Effect::DeadLetter { seq: Some(seq), .. } => Some(*seq),
                    _ => None,
                })
                .collect();
            if done.is_empty() {
                return;
            }
            from = self.fx.len();
            let command = Command::DeadLettered {
                done,
                refused: Vec::new(),
            };
            self.s.apply(command, self.now, &mut self.fx).unwrap();
            self.s.check_invariants().unwrap();
        }
    }

    fn run(&mut self, c: Command) -> Reply {
        self.try_run(c).unwrap()
    }

    fn drain(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.fx)
    }

    fn publish(&mut self, m: Message) -> Seq {
        match self.run(Command::Enqueue {
            message: Arc::new(m),
            confirm: None,
        }) {
            Reply::Enqueued { seq } => seq,
            other => panic!("not enqueued: {other:?}"),
        }
    }

    fn consume(&mut self, channel: ChannelId, tag: &str, prefetch: u32) {
        self.run(consume(channel, tag, prefetch));
    }

    fn advance(&mut self, ms: u64) {
        self.now += ms;
        self.run(Command::Tick);
    }
}

fn config(args: &[(&str, FieldValue)]) -> QueueConfig {
    let table: FieldTable = args
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    QueueConfig::from_declare("q", "/", true, false, false, &table).unwrap()
}

fn consume(channel: ChannelId, tag: &str, prefetch: u32) -> Command {
    Command::Consume {
        tag: tag.into(),
        channel,
        prefetch,
        no_ack: false,
        exclusive: false,
        priority: 0,
    }
}

fn msg(body: &str) -> Message {
    Message::new("ex", "rk", Bytes::from(body.to_owned()))
}

fn persistent(body: &str) -> Message {
    let mut m = msg(body);
    m.properties.delivery_mode = Some(PERSISTENT);
    m
}

fn with_ttl(body: &str, ttl: u64) -> Message {
    let mut m = msg(body);
    m.properties.expiration = Some(ttl.to_string());
    m
}

fn with_priority(body: &str, p: u8) -> Message {
    let mut m = msg(body);
    m.properties.priority = Some(p);
    m
}

fn body(m: &SharedMessage) -> String {
    String::from_utf8(m.body.to_vec()).unwrap()
}

fn long(v: i64) -> FieldValue {
    FieldValue::I64(v)
}

/// (channel, tag, seq, body, redelivered) of each delivery.
fn deliveries(fx: &[Effect]) -> Vec<(ChannelId, String, Seq, String, bool)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Deliver {
                channel,
                tag,
                seq,
                message,
                redelivered,
                ..
            } => Some((*channel, tag.to_string(), *seq, body(message), *redelivered)),
            _ => None,
        })
        .collect()
}

fn delivered_bodies(fx: &[Effect]) -> Vec<String> {
    deliveries(fx).into_iter().map(|d| d.3).collect()
}

fn dead_letters(fx: &[Effect]) -> Vec<(SharedMessage, DeadLetterReason, String, String)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::DeadLetter {
                message,
                reason,
                exchange,
                routing_key,
                ..
            } => Some((
                message.clone(),
                *reason,
                exchange.clone(),
                routing_key.clone(),
            )),
            _ => None,
        })
        .collect()
}

fn x_death(m: &Message) -> Vec<FieldTable> {
    match m.properties.header("x-death") {
        Some(FieldValue::Array(a)) => a
            .iter()
            .map(|v| match v {
                FieldValue::Table(t) => t.clone(),
                other => panic!("x-death entry {other:?}"),
            })
            .collect(),
        other => panic!("x-death {other:?}"),
    }
}

fn text(t: &FieldTable, k: &str) -> String {
    t.get(k).and_then(FieldValue::as_str).unwrap().to_owned()
}

// ----- configuration -----

#[test]
fn declare_arguments_are_parsed() {
    let c = config(&[
        ("x-message-ttl", FieldValue::I32(1000)),
        ("x-expires", long(60_000)),
        ("x-max-length", FieldValue::I16(10)),
        ("x-max-length-bytes", long(1 << 20)),
        ("x-overflow", FieldValue::string("reject-publish-dlx")),
        ("x-dead-letter-exchange", FieldValue::string("dlx")),
        ("x-dead-letter-routing-key", FieldValue::string("dead")),
        ("x-max-priority", FieldValue::U8(10)),
        ("x-single-active-consumer", FieldValue::Bool(true)),
        ("x-delivery-limit", long(3)),
        ("x-queue-type", FieldValue::string("classic")),
        ("x-queue-mode", FieldValue::string("lazy")),
        ("x-something-else", FieldValue::F64(1.5)),
    ]);
    assert_eq!(c.message_ttl, Some(1000));
    assert_eq!(c.expires, Some(60_000));
    assert_eq!(c.max_length, Some(10));
    assert_eq!(c.max_length_bytes, Some(1 << 20));
    assert_eq!(c.overflow(), Overflow::RejectPublishDlx);
    assert_eq!(c.dead_letter_exchange.as_deref(), Some("dlx"));
    assert_eq!(c.dead_letter_routing_key.as_deref(), Some("dead"));
    assert_eq!(c.max_priority, Some(10));
    assert!(c.is_single_active_consumer());
    assert_eq!(c.delivery_limit, Some(3));
    assert!(c.durable);
    let plain = config(&[]);
    assert_eq!(plain.overflow(), Overflow::DropHead);
    assert_eq!(plain.top_priority(), 0);
}

#[test]
fn invalid_arguments_are_refused_with_rabbitmq_texts() {
    let err = |args: &[(&str, FieldValue)]| {
        let table: FieldTable = args
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let e = QueueConfig::from_declare("q", "/", false, false, false, &table).unwrap_err();
        assert_eq!(e.reply_code(), 406);
        e.to_string()
    };
    assert_eq!(
        err(&[("x-max-length", long(-1))]),
        "invalid arg 'x-max-length' for queue 'q' in vhost '/': {value_negative,-1}"
    );
    assert_eq!(
        err(&[("x-message-ttl", FieldValue::string("10"))]),
        "invalid arg 'x-message-ttl' for queue 'q' in vhost '/': {unacceptable_type,longstr}"
    );
    assert!(err(&[("x-expires", long(0))]).ends_with("{value_zero,0}"));
    assert!(err(&[("x-expires", long(-5))]).ends_with("{value_negative,-5}"));
    assert!(err(&[("x-max-length-bytes", long(-2))]).contains("'x-max-length-bytes'"));
    assert!(err(&[("x-overflow", FieldValue::string("drop-tail"))]).contains("drop-tail"));
    assert!(
        err(&[("x-dead-letter-routing-key", FieldValue::string("k"))])
            .ends_with("routing_key_but_no_dlx_defined")
    );
    assert!(err(&[("x-max-priority", long(256))]).contains("'x-max-priority'"));
    assert!(err(&[("x-max-priority", long(-1))]).contains("value_negative"));
    assert!(err(&[("x-single-active-consumer", long(1))]).contains("{unacceptable_type,long}"));
    assert!(err(&[("x-delivery-limit", long(-1))]).contains("'x-delivery-limit'"));
    // The type is picked by the queue-type seam (`QueueKind`), which refuses unknown
    // ones; the configuration of the type picked takes the argument as it is.
    for t in ["quorum", "stream", "classic"] {
        assert!(config(&[("x-queue-type", FieldValue::string(t))])
            .max_length
            .is_none());
    }
    assert!(err(&[("x-dead-letter-exchange", long(1))]).contains("unacceptable_type"));
    // 255 is the cap, and is fine.
    assert_eq!(
        config(&[("x-max-priority", long(255))]).max_priority,
        Some(255)
    );
}

#[test]
fn redeclaration_must_be_equivalent() {
    let current = config(&[("x-max-length", long(10))]);
    assert!(current
        .check_equivalent(&config(&[("x-max-length", FieldValue::I32(10))]))
        .is_ok());
    let e = current
        .check_equivalent(&config(&[("x-max-length", long(20))]))
        .unwrap_err();
    assert_eq!(e.reply_code(), 406);
    assert_eq!(
        e.to_string(),
        "inequivalent arg 'x-max-length' for queue 'q' in vhost '/': received '20' but current is '10'"
    );
    let e = current.check_equivalent(&config(&[])).unwrap_err();
    assert!(e.to_string().contains("received none but current is '10'"));
    let mut transient = current.clone();
    transient.durable = false;
    let e = current.check_equivalent(&transient).unwrap_err();
    assert!(e.to_string().contains("inequivalent arg 'durable'"));
    // The window is node configuration, not an argument.
    let other_window = current.clone().with_window(WindowLimits {
        messages: 1,
        bytes: 1,
    });
    assert!(current.check_equivalent(&other_window).is_ok());
    // Declared drop-head differs from absent, as in RabbitMQ.
    let e =
        config(&[]).check_equivalent(&config(&[("x-overflow", FieldValue::string("drop-head"))]));
    assert!(e.unwrap_err().to_string().contains("'x-overflow'"));
}

// ----- delivery, credit, acks -----

#[test]
fn fifo_round_robin_and_prefetch() {
    let mut q = Q::with_args(&[]);
    q.consume(1, "a", 2);
    q.consume(2, "b", 1);
    for i in 0..5 {
        q.publish(msg(&format!("m{i}")));
    }
    let d = deliveries(&q.drain());
    let order: Vec<_> = d.iter().map(|d| (d.0, d.3.as_str())).collect();
    assert_eq!(order, vec![(1, "m0"), (2, "m1"), (1, "m2")]);
    let s = q.s.stats();
    assert_eq!((s.ready, s.unacked, s.consumers), (2, 3, 2));
    assert_eq!(s.bytes_total, 10);
    // An ack frees credit: the next message goes to that consumer.
    q.run(Command::Ack {
        channel: 2,
        seqs: vec![d[1].2],
    });
    assert_eq!(
        deliveries(&q.drain())
            .iter()
            .map(|d| (d.0, d.3.clone()))
            .collect::<Vec<_>>(),
        vec![(2, "m3".into())]
    );
    // Unlimited prefetch takes the rest.
    q.consume(3, "c", 0);
    assert_eq!(delivered_bodies(&q.drain()), vec!["m4"]);
    assert_eq!(q.s.message_count(), 0);
}

#[test]
fn no_ack_consumers_settle_at_delivery() {
    let mut q = Q::with_args(&[]);
    q.run(Command::Consume {
        tag: "t".into(),
        channel: 1,
        prefetch: 1,
        no_ack: true,
        exclusive: false,
        priority: 0,
    });
    for i in 0..3 {
        q.publish(persistent(&format!("m{i}")));
    }
    let fx = q.drain();
    assert_eq!(delivered_bodies(&fx), vec!["m0", "m1", "m2"]);
    // Settled at once: nothing to store, nothing unacked.
    assert!(!fx.iter().any(|e| matches!(e, Effect::Store { .. })));
    assert_eq!(q.s.stats().unacked, 0);
}

/// A write window of `limit` for the next consumer `tag` of channel 1.
fn window_on_1(tag: &str, limit: u32) -> Command {
    Command::Window {
        channel: 1,
        tag: tag.into(),
        limit,
    }
}

/// A no-ack consumer `tag` on channel 1, without prefetch or priority.
fn no_ack_on_1(tag: &str) -> Command {
    Command::Consume {
        tag: tag.into(),
        channel: 1,
        prefetch: 0,
        no_ack: true,
        exclusive: false,
        priority: 0,
    }
}

/// Channel 1 wrote `count` deliveries of its consumer `tag`.
fn written_on_1(tag: &str, count: u32) -> Command {
    Command::Written {
        channel: 1,
        tag: tag.into(),
        count,
    }
}

#[test]
fn a_windowed_no_ack_consumer_is_sent_no_more_than_its_channel_has_not_written() {
    let mut q = Q::with_args(&[]);
    for i in 0..10 {
        q.publish(msg(&format!("m{i}")));
    }
    // The window comes before the consumer, so what it is sent at once counts.
    q.run(window_on_1("t", 3));
    let no_ack = no_ack_on_1;
    q.run(no_ack("t"));
    assert_eq!(delivered_bodies(&q.drain()), vec!["m0", "m1", "m2"]);
    // Its channel wrote two: two more, in order.
    let written = |count| written_on_1("t", count);
    q.run(written(2));
    assert_eq!(delivered_bodies(&q.drain()), vec!["m3", "m4"]);
    // A consumer without a window on the same queue takes the rest meanwhile.
    q.run(no_ack("other"));
    assert_eq!(
        delivered_bodies(&q.drain()),
        vec!["m5", "m6", "m7", "m8", "m9"]
    );
    q.run(written(3));
    q.publish(msg("m10"));
    let fx = q.drain();
    assert_eq!(delivered_bodies(&fx), vec!["m10"]);
    // A higher-priority consumer with a window of 1 takes one, then lets the others
    // have the rest.
    q.run(Command::Window {
        channel: 2,
        tag: "x".into(),
        limit: 1,
    });
    q.run(Command::Consume {
        tag: "x".into(),
        channel: 2,
        prefetch: 0,
        no_ack: true,
        exclusive: false,
        priority: 10,
    });
    q.publish(msg("m11"));
    q.publish(msg("m12"));
    let to_x: Vec<_> = deliveries(&q.drain())
        .into_iter()
        .filter(|d| d.1 == "x")
        .map(|d| d.3)
        .collect();
    assert_eq!(to_x, vec!["m11"], "x has priority and a window of 1");

    // A window is for the next consumer of its tag only: one that is refused (its
    // tag in use) leaves none behind for a later consumer of that tag.
    let mut q = Q::with_args(&[]);
    q.run(no_ack("t"));
    q.run(window_on_1("t", 1));
    assert!(q.try_run(no_ack("t")).is_err());
    q.run(Command::Cancel {
        channel: 1,
        tag: "t".into(),
    });
    q.run(no_ack("t"));
    for i in 0..3 {
        q.publish(msg(&format!("n{i}")));
    }
    assert_eq!(delivered_bodies(&q.drain()), vec!["n0", "n1", "n2"]);
}

#[test]
fn a_write_window_closes_on_bytes_before_count_and_always_lets_one_through() {
    let mut q = Q::with_args(&[]);
    let mib = 1024 * 1024;
    let big = |i: usize| msg(&format!("{i}").repeat(3 * mib));
    for i in 0..5 {
        q.publish(big(i));
    }
    q.run(window_on_1("t", 1000));
    q.run(no_ack_on_1("t"));
    // 3 MiB each: the third takes the window to 9 MiB, past its 8 MiB.
    assert_eq!(deliveries(&q.drain()).len(), 3);
    let written = |count| written_on_1("t", count);
    // One written: 6 MiB in flight, room for one more.
    q.run(written(1));
    assert_eq!(deliveries(&q.drain()).len(), 1);
    q.run(written(3));
    assert_eq!(deliveries(&q.drain()).len(), 1, "the last of the five");
    // A message larger than the whole window still goes when nothing is in flight,
    // and holds the window shut until it is written.
    q.run(written(1));
    q.publish(msg(&"h".repeat(20 * mib)));
    assert_eq!(deliveries(&q.drain()).len(), 1, "20 MiB, alone");
    q.publish(big(5));
    assert!(deliveries(&q.drain()).is_empty(), "20 MiB in flight");
    q.run(written(1));
    assert_eq!(deliveries(&q.drain()).len(), 1);
}

#[test]
fn consumer_priorities_serve_higher_first() {
    let mut q = Q::with_args(&[]);
    q.run(Command::Consume {
        tag: "low".into(),
        channel: 1,
        prefetch: 0,
        no_ack: false,
        exclusive: false,
        priority: 0,
    });
    q.run(Command::Consume {
        tag: "high".into(),
        channel: 2,
        prefetch: 2,
        no_ack: false,
        exclusive: false,
        priority: 5,
    });
    for i in 0..4 {
        q.publish(msg(&format!("m{i}")));
    }
    let tags: Vec<String> = deliveries(&q.drain()).into_iter().map(|d| d.1).collect();
    assert_eq!(tags, vec!["high", "high", "low", "low"]);
}

#[test]
fn unknown_delivery_tag_is_refused_atomically() {
    let mut q = Q::with_args(&[]);
    q.consume(1, "a", 0);
    let s1 = q.publish(msg("a"));
    let s2 = q.publish(msg("b"));
    q.drain();
    // s2 is unacked on channel 1, not 2; 99 does not exist.
    let e = q
        .try_run(Command::Ack {
            channel: 2,
            seqs: vec![s1],
        })
        .unwrap_err();
    assert_eq!(e.reply_code(), 406);
    assert!(e.to_string().contains("unknown delivery tag"));
    assert_eq!(
        q.try_run(Command::Ack {
            channel: 1,
            seqs: vec![s1, 99]
        }),
        Err(QueueError::UnknownDeliveryTag { seq: 99 })
    );
    assert_eq!(q.s.stats().unacked, 2, "nothing was acked");
    q.run(Command::Ack {
        channel: 1,
        seqs: vec![s1, s2],
    });
    assert_eq!(q.s.stats().unacked, 0);
    assert!(q
        .try_run(Command::Ack {
            channel: 1,
            seqs: vec![s1]
        })
        .is_err());
}

// ----- publisher confirms and storage -----

#[test]
fn confirms_wait_for_the_durable_write_of_persistent_messages() {
    let mut q = Q::with_args(&[]);
    let r = q.run(Command::Enqueue {
        message: Arc::new(persistent("p")),
        confirm: Some(7),
    });
    let Reply::Enqueued { seq } = r else { panic!() };
    let fx = q.drain();
    assert!(
        matches!(fx.as_slice(), [Effect::Store { seq: s, durable: true, record, .. }] if *s == seq && record.persistent)
    );
    assert_eq!(q.s.stats().pending_confirms, 1);
    q.run(Command::Stored(vec![seq]));
    assert_eq!(q.drain(), vec![Effect::Confirm { publish: 7 }]);
    // Transient: confirmed at once, never written while it fits in memory.
    q.run(Command::Enqueue {
        message: Arc::new(msg("t")),
        confirm: Some(8),
    });
    assert_eq!(q.drain(), vec![Effect::Confirm { publish: 8 }]);
    // Persistent on a non-durable queue: in memory is as safe as promised.
    let mut c = config(&[]);
    c.durable = false;
    let mut q = Q::new(c);
    q.run(Command::Enqueue {
        message: Arc::new(persistent("p")),
        confirm: Some(9),
    });
    assert_eq!(q.drain(), vec![Effect::Confirm { publish: 9 }]);
}

#[test]
fn a_message_acked_before_its_write_completes_is_confirmed_and_removed() {
    let mut q = Q::with_args(&[]);
    q.consume(1, "a", 0);
    let Reply::Enqueued { seq } = q.run(Command::Enqueue {
        message: Arc::new(persistent("p")),
        confirm: Some(1),
    }) else {
        panic!()
    };
    let fx = q.drain();
    assert_eq!(deliveries(&fx).len(), 1);
    assert!(fx
        .iter()
        .any(|e| matches!(e, Effect::Store { durable: true, .. })));
    q.run(Command::Ack {
        channel: 1,
        seqs: vec![seq],
    });
    assert_eq!(
        q.drain(),
        vec![Effect::Remove { seq }, Effect::Confirm { publish: 1 }]
    );
    // The late Stored changes nothing.
    q.run(Command::Stored(vec![seq]));
    assert!(q.drain().is_empty());
}

// ----- TTL -----

#[test]
fn messages_expire_and_are_dead_lettered() {
    let mut q = Q::with_args(&[
        ("x-message-ttl", long(1000)),
        ("x-dead-letter-exchange", FieldValue::string("dlx")),
    ]);
    q.publish(msg("a"));
    q.now += 200;
    q.publish(with_ttl("b", 100)); // min(100, 1000): expires at +300
    q.publish(with_ttl("c", 5000)); // min(5000, 1000): expires at +1200
    assert_eq!(q.s.next_deadline(), Some(T0 + 300));
    q.advance(99);
    assert!(q.drain().is_empty());
    q.advance(1);
    let dl = dead_letters(&q.drain());
    assert_eq!(dl.len(), 1);
    let (m, reason, exchange, rk) = &dl[0];
    assert_eq!(
        (body(m), *reason, exchange.as_str(), rk.as_str()),
        ("b".into(), DeadLetterReason::Expired, "dlx", "rk")
    );
    assert_eq!(m.properties.expiration, None);
    let death = &x_death(m)[0];
    assert_eq!(text(death, "original-expiration"), "100");
    assert_eq!(text(death, "reason"), "expired");
    assert_eq!(q.s.next_deadline(), Some(T0 + 1000));
    q.now = T0 + 1200;
    q.run(Command::Tick);
    let bodies: Vec<String> = dead_letters(&q.drain())
        .iter()
        .map(|d| body(&d.0))
        .collect();
    assert_eq!(bodies, vec!["a", "c"]);
    assert_eq!(q.s.message_count(), 0);
    assert_eq!(q.s.next_deadline(), None);
}

#[test]
fn ttl_zero_is_delivered_only_to_a_consumer_that_can_take_it_now() {
    let mut q = Q::with_args(&[("x-message-ttl", long(0))]);
    q.publish(msg("nobody"));
    assert_eq!(q.s.message_count(), 0, "expired at once");
    q.consume(1, "a", 1);
    q.publish(msg("taken"));
    assert_eq!(delivered_bodies(&q.drain()), vec!["taken"]);
    q.publish(msg("no credit"));
    assert!(delivered_bodies(&q.drain()).is_empty());
    assert_eq!(q.s.message_count(), 0);
    // Unacked messages do not expire.
    assert_eq!(q.s.stats().unacked, 1);
}

#[test]
fn an_expired_message_is_never_delivered() {
    let mut q = Q::with_args(&[]);
    q.publish(with_ttl("old", 10));
    q.now += 50; // no tick: the next command expires it
    q.consume(1, "a", 0);
    assert!(delivered_bodies(&q.drain()).is_empty());
    assert_eq!(q.s.message_count(), 0);
}

// ----- max length -----

#[test]
fn max_length_drop_head_dead_letters_the_oldest() {
    let mut q = Q::with_args(&[
        ("x-max-length", long(2)),
        ("x-dead-letter-exchange", FieldValue::string("")),
    ]);
    for b in ["a", "b", "c", "d"] {
        q.publish(msg(b));
    }
    let dl = dead_letters(&q.drain());
    let dropped: Vec<_> = dl.iter().map(|d| (body(&d.0), d.1, d.2.clone())).collect();
    assert_eq!(
        dropped,
        vec![
            ("a".into(), DeadLetterReason::Maxlen, String::new()),
            ("b".into(), DeadLetterReason::Maxlen, String::new())
        ]
    );
    q.consume(1, "x", 0);
    assert_eq!(delivered_bodies(&q.drain()), vec!["c", "d"]);
    // Only ready messages count: with 2 unacked, 2 more fit.
    q.publish(msg("e"));
    q.publish(msg("f"));
    assert!(dead_letters(&q.drain()).is_empty());
}

#[test]
fn max_length_bytes_drop_head_without_dlx_discards() {
    let mut q = Q::with_args(&[("x-max-length-bytes", long(10))]);
    q.publish(msg("aaaa"));
    q.publish(msg("bbbb"));
    q.publish(msg("cccc"));
    assert!(q.drain().is_empty());
    let s = q.s.stats();
    assert_eq!((s.ready, s.ready_bytes), (2, 8));
    q.consume(1, "x", 0);
    assert_eq!(delivered_bodies(&q.drain()), vec!["bbbb", "cccc"]);
}

#[test]
fn max_length_zero_still_delivers_to_a_waiting_consumer() {
    let mut q = Q::with_args(&[("x-max-length", long(0))]);
    q.publish(msg("dropped"));
    assert_eq!(q.s.message_count(), 0);
    q.consume(1, "x", 0);
    q.publish(msg("delivered"));
    assert_eq!(delivered_bodies(&q.drain()), vec!["delivered"]);
}

#[test]
fn reject_publish_refuses_when_full() {
    let mut q = Q::with_args(&[
        ("x-max-length", long(1)),
        ("x-overflow", FieldValue::string("reject-publish")),
    ]);
    assert!(matches!(
        q.run(Command::Enqueue {
            message: Arc::new(msg("a")),
            confirm: Some(1)
        }),
        Reply::Enqueued { .. }
    ));
    assert_eq!(
        q.run(Command::Enqueue {
            message: Arc::new(msg("b")),
            confirm: Some(2)
        }),
        Reply::PublishRejected
    );
    assert_eq!(
        q.drain(),
        vec![
            Effect::Confirm { publish: 1 },
            Effect::Reject { publish: 2 }
        ]
    );
    assert_eq!(q.s.message_count(), 1);
    q.consume(1, "x", 0);
    q.drain();
    assert!(matches!(
        q.run(Command::Enqueue {
            message: Arc::new(msg("c")),
            confirm: Some(3)
        }),
        Reply::Enqueued { .. }
    ));
}

#[test]
fn reject_publish_dlx_dead_letters_the_refused_message() {
    let mut q = Q::with_args(&[
        ("x-max-length-bytes", long(3)),
        ("x-overflow", FieldValue::string("reject-publish-dlx")),
        ("x-dead-letter-exchange", FieldValue::string("dlx")),
    ]);
    q.publish(msg("abc"));
    q.drain();
    assert_eq!(
        q.run(Command::Enqueue {
            message: Arc::new(msg("d")),
            confirm: Some(5)
        }),
        Reply::PublishRejected
    );
    let fx = q.drain();
    assert_eq!(fx[0], Effect::Reject { publish: 5 });
    assert!(
        matches!(&fx[1], Effect::DeadLetter { seq: None, reason: DeadLetterReason::Maxlen, message, .. } if body(message) == "d")
    );
}

// ----- dead-lettering -----

#[test]
fn x_death_counts_repeated_deaths_most_recent_first() {
    let mut q = Q::with_args(&[
        ("x-dead-letter-exchange", FieldValue::string("dlx")),
        ("x-dead-letter-routing-key", FieldValue::string("dead")),
    ]);
    q.consume(1, "a", 0);
    let mut m = with_ttl("m", 60_000);
    m.properties.headers = Some(
        [(
            "CC".to_string(),
            FieldValue::Array(vec![FieldValue::string("cc1")]),
        )]
        .into(),
    );
    let seq = q.publish(m);
    q.drain();
    q.run(Command::Reject {
        channel: 1,
        seqs: vec![seq],
        requeue: false,
    });
    let dl = dead_letters(&q.drain());
    let (first, reason, exchange, rk) = dl[0].clone();
    assert_eq!(
        (reason, exchange.as_str(), rk.as_str()),
        (DeadLetterReason::Rejected, "dlx", "dead")
    );
    assert_eq!(
        (first.exchange.as_str(), first.routing_key.as_str()),
        ("dlx", "dead")
    );
    let deaths = x_death(&first);
    assert_eq!(deaths.len(), 1);
    let d = &deaths[0];
    assert_eq!(d.get("count"), Some(&long(1)));
    assert_eq!(text(d, "reason"), "rejected");
    assert_eq!(text(d, "queue"), "q");
    assert_eq!(text(d, "exchange"), "ex");
    assert_eq!(d.get("time"), Some(&FieldValue::Timestamp(T0 / 1000)));
    assert_eq!(
        d.get("routing-keys"),
        Some(&FieldValue::Array(vec![
            FieldValue::string("rk"),
            FieldValue::string("cc1")
        ]))
    );
    assert_eq!(text(d, "original-expiration"), "60000");
    let h = |m: &Message, k: &str| {
        m.properties
            .header(k)
            .and_then(FieldValue::as_str)
            .unwrap()
            .to_owned()
    };
    assert_eq!(h(&first, "x-first-death-reason"), "rejected");
    assert_eq!(h(&first, "x-first-death-queue"), "q");
    assert_eq!(h(&first, "x-first-death-exchange"), "ex");

    // It comes back (the DLX routes to this queue) and expires: a second entry, first.
    let mut again = (*first).clone();
    again.properties.expiration = Some("10".into());
    q.run(Command::Cancel {
        channel: 1,
        tag: "a".into(),
    });
    q.publish(again);
    q.advance(10);
    let second = dead_letters(&q.drain())[0].0.clone();
    let deaths = x_death(&second);
    assert_eq!(deaths.len(), 2);
    assert_eq!(
        (text(&deaths[0], "reason"), deaths[0].get("count")),
        ("expired".into(), Some(&long(1)))
    );
    assert_eq!(
        text(&deaths[0], "exchange"),
        "dlx",
        "it was published to the dlx this time"
    );
    assert_eq!(text(&deaths[1], "reason"), "rejected");
    assert_eq!(
        h(&second, "x-first-death-reason"),
        "rejected",
        "first death is kept"
    );
    assert_eq!(h(&second, "x-last-death-reason"), "expired");

    // A third death for a reason already seen increments that entry and moves it first.
    q.consume(1, "b", 0);
    let seq = q.publish((*second).clone());
    q.drain();
    q.run(Command::Reject {
        channel: 1,
        seqs: vec![seq],
        requeue: false,
    });
    let third = dead_letters(&q.drain())[0].0.clone();
    let deaths = x_death(&third);
    assert_eq!(deaths.len(), 2);
    assert_eq!(
        (text(&deaths[0], "reason"), deaths[0].get("count")),
        ("rejected".into(), Some(&long(2)))
    );
    assert_eq!(
        text(&deaths[0], "exchange"),
        "ex",
        "the first occurrence's fields are kept"
    );
    assert_eq!(deaths[1].get("count"), Some(&long(1)));
}

#[test]
fn dead_letter_cycles_without_rejection_are_detected() {
    let m = msg("m");
    let once = dead_lettered(&m, DeadLetterReason::Expired, "q1", T0, "dlx", "rk");
    assert!(is_dead_letter_cycle(&once, "q1"));
    assert!(!is_dead_letter_cycle(&once, "q2"));
    let twice = dead_lettered(&once, DeadLetterReason::Rejected, "q2", T0, "dlx", "rk");
    assert!(
        !is_dead_letter_cycle(&twice, "q1"),
        "a consumer rejected it on the way"
    );
    assert!(!is_dead_letter_cycle(&m, "q1"));
}

// ----- priorities -----

#[test]
fn priorities_deliver_higher_first_and_cap_at_max() {
    let mut q = Q::with_args(&[("x-max-priority", long(5))]);
    q.publish(with_priority("p1", 1));
    q.publish(msg("none"));
    q.publish(with_priority("p9", 9)); // treated as 5
    q.publish(with_priority("p5", 5));
    q.publish(with_priority("p1b", 1));
    q.consume(1, "a", 0);
    assert_eq!(
        delivered_bodies(&q.drain()),
        vec!["p9", "p5", "p1", "p1b", "none"]
    );
}

#[test]
fn without_max_priority_priority_is_ignored() {
    let mut q = Q::with_args(&[]);
    q.publish(with_priority("a", 1));
    q.publish(with_priority("b", 9));
    q.consume(1, "a", 0);
    assert_eq!(delivered_bodies(&q.drain()), vec!["a", "b"]);
}

// ----- consumers -----

#[test]
fn single_active_consumer_hands_over_on_cancel() {
    let mut q = Q::with_args(&[("x-single-active-consumer", FieldValue::Bool(true))]);
    q.consume(1, "first", 1);
    assert_eq!(
        q.drain(),
        vec![Effect::ConsumerActive {
            channel: 1,
            tag: "first".into()
        }]
    );
    q.consume(2, "second", 0);
    assert!(q.drain().is_empty());
    for b in ["a", "b", "c"] {
        q.publish(msg(b));
    }
    let d = deliveries(&q.drain());
    assert_eq!(
        d.iter()
            .map(|d| (d.1.as_str(), d.3.as_str()))
            .collect::<Vec<_>>(),
        vec![("first", "a")]
    );
    assert_eq!(
        q.run(Command::Cancel {
            channel: 1,
            tag: "first".into()
        }),
        Reply::Cancelled { existed: true }
    );
    let fx = q.drain();
    assert_eq!(
        fx[0],
        Effect::ConsumerActive {
            channel: 2,
            tag: "second".into()
        }
    );
    assert_eq!(delivered_bodies(&fx), vec!["b", "c"]);
    // The cancelled consumer's message stays unacked until its channel acks it.
    assert_eq!(q.s.stats().unacked, 3);
    q.run(Command::Ack {
        channel: 1,
        seqs: vec![d[0].2],
    });
    assert_eq!(q.s.stats().unacked, 2);
    assert_eq!(
        q.run(Command::Cancel {
            channel: 1,
            tag: "first".into()
        }),
        Reply::Cancelled { existed: false }
    );
}

#[test]
fn exclusive_consumers_and_duplicate_tags_are_refused() {
    let mut q = Q::with_args(&[]);
    q.consume(1, "a", 0);
    let e = q.try_run(Command::Consume {
        tag: "x".into(),
        channel: 2,
        prefetch: 0,
        no_ack: false,
        exclusive: true,
        priority: 0,
    });
    let e = e.unwrap_err();
    assert_eq!(
        (e.reply_code(), e.to_string().as_str()),
        (403, "queue 'q' in vhost '/' in exclusive use")
    );
    let e = q.try_run(consume(1, "a", 0)).unwrap_err();
    assert_eq!(
        (e.reply_code(), e.to_string().as_str()),
        (530, "attempt to reuse consumer tag 'a'")
    );
    q.consume(2, "a", 0); // the same tag on another channel is fine
    q.run(Command::ChannelDown { channel: 1 });
    q.run(Command::ChannelDown { channel: 2 });
    q.run(Command::Consume {
        tag: "x".into(),
        channel: 3,
        prefetch: 0,
        no_ack: false,
        exclusive: true,
        priority: 0,
    });
    assert_eq!(q.try_run(consume(4, "y", 0)).unwrap_err().reply_code(), 403);
}

// ----- returns -----

#[test]
fn requeue_keeps_the_original_position() {
    let mut q = Q::with_args(&[]);
    q.consume(1, "a", 3);
    let seqs: Vec<Seq> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|b| q.publish(msg(b)))
        .collect();
    q.drain();
    // b is returned: it goes back before d and e.
    q.run(Command::Reject {
        channel: 1,
        seqs: vec![seqs[1]],
        requeue: true,
    });
    let d = deliveries(&q.drain());
    assert_eq!(
        d.iter().map(|d| (d.3.as_str(), d.4)).collect::<Vec<_>>(),
        vec![("b", true)]
    );
    let fx = q.drain();
    assert!(fx.is_empty());
    // Return a and c (nack multiple, expanded by the channel): they precede d.
    q.run(Command::Reject {
        channel: 1,
        seqs: vec![seqs[0], seqs[2]],
        requeue: true,
    });
    let d = deliveries(&q.drain());
    assert_eq!(
        d.iter().map(|d| (d.3.as_str(), d.4)).collect::<Vec<_>>(),
        vec![("a", true), ("c", true)]
    );
    q.run(Command::Ack {
        channel: 1,
        seqs: vec![seqs[0], seqs[1], seqs[2]],
    });
    assert_eq!(delivered_bodies(&q.drain()), vec!["d", "e"]);
}

#[test]
fn channel_down_returns_unacked_messages_redelivered() {
    let mut q = Q::with_args(&[]);
    q.consume(1, "a", 0);
    for b in ["a", "b"] {
        q.publish(msg(b));
    }
    q.publish(msg("c"));
    q.drain();
    q.run(Command::ChannelDown { channel: 1 });
    let s = q.s.stats();
    assert_eq!((s.ready, s.unacked, s.consumers), (3, 0, 0));
    q.consume(2, "b", 0);
    let fx = q.drain();
    let d: Vec<_> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Deliver {
                message,
                redelivered,
                delivery_count,
                ..
            } => Some((body(message), *redelivered, *delivery_count)),
            _ => None,
        })
        .collect();
    assert_eq!(
        d,
        vec![
            ("a".into(), true, 1),
            ("b".into(), true, 1),
            ("c".into(), true, 1)
        ]
    );
}

#[test]
fn delivery_limit_dead_letters_after_too_many_returns() {
    let mut q = Q::with_args(&[
        ("x-delivery-limit", long(1)),
        ("x-dead-letter-exchange", FieldValue::string("dlx")),
    ]);
    q.consume(1, "a", 0);
    let seq = q.publish(persistent("m"));
    q.drain();
    q.run(Command::Stored(vec![seq]));
    q.run(Command::Reject {
        channel: 1,
        seqs: vec![seq],
        requeue: true,
    });
    let fx = q.drain();
    // The return is recorded for recovery, and the body reloads for redelivery.
    assert!(fx
        .iter()
        .any(|e| matches!(e, Effect::UpdateIndex { record, .. } if record.delivery_count == 1)));
    assert!(fx
        .iter()
        .any(|e| matches!(e, Effect::LoadBodies { seqs } if seqs == &vec![seq])));
    q.run(Command::BodiesLoaded(vec![(
        seq,
        Arc::new(persistent("m")),
    )]));
    assert_eq!(delivered_bodies(&q.drain()), vec!["m"]);
    q.run(Command::ChannelDown { channel: 1 }); // second return: over the limit
    let fx = q.drain();
    assert!(
        fx.iter().any(|e| matches!(e, Effect::LoadBodies { .. })),
        "needs its body to dead-letter"
    );
    assert_eq!(q.s.stats().dead_lettering, 1);
    q.run(Command::BodiesLoaded(vec![(
        seq,
        Arc::new(persistent("m")),
    )]));
    let fx = q.drain();
    let dl = dead_letters(&fx);
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].1, DeadLetterReason::DeliveryLimit);
    assert!(fx.contains(&Effect::Remove { seq }));
    assert_eq!(
        q.s.stats(),
        QueueStats {
            ..Default::default()
        }
    );
}

// ----- basic.get -----

#[test]
fn get_returns_the_head_or_empty() {
    let mut q = Q::with_args(&[]);
    q.run(Command::Get {
        channel: 1,
        no_ack: false,
    });
    assert_eq!(q.drain(), vec![Effect::GetEmpty { channel: 1 }]);
    let a = q.publish(msg("a"));
    q.publish(msg("b"));
    q.run(Command::Get {
        channel: 1,
        no_ack: false,
    });
    let fx = q.drain();
    assert!(
        matches!(&fx[..], [Effect::GetOk { seq, message_count: 1, no_ack: false, redelivered: false, .. }] if *seq == a)
    );
    assert_eq!(q.s.stats().unacked, 1);
    q.run(Command::Get {
        channel: 2,
        no_ack: true,
    });
    assert!(matches!(
        &q.drain()[..],
        [Effect::GetOk {
            message_count: 0,
            no_ack: true,
            ..
        }]
    ));
    q.run(Command::Reject {
        channel: 1,
        seqs: vec![a],
        requeue: true,
    });
    q.run(Command::Get {
        channel: 2,
        no_ack: true,
    });
    assert!(
        matches!(&q.drain()[..], [Effect::GetOk { seq, redelivered: true, delivery_count: 1, .. }] if *seq == a)
    );
    assert_eq!(q.s.stats(), QueueStats::default());
}

// ----- purge and delete -----

#[test]
fn purge_removes_ready_messages_only() {
    let mut q = Q::with_args(&[]);
    q.consume(1, "a", 1);
    let first = q.publish(persistent("a"));
    let second = q.publish(persistent("b"));
    q.publish(msg("c"));
    q.run(Command::Stored(vec![first, second]));
    q.drain();
    assert_eq!(q.run(Command::Purge), Reply::Purged { count: 2 });
    assert_eq!(q.drain(), vec![Effect::Remove { seq: second }]);
    let s = q.s.stats();
    assert_eq!((s.ready, s.unacked), (0, 1));
}

#[test]
fn delete_checks_if_unused_and_if_empty() {
    let mut q = Q::with_args(&[]);
    q.publish(msg("a"));
    let e = q
        .try_run(Command::Delete {
            if_unused: false,
            if_empty: true,
        })
        .unwrap_err();
    assert_eq!(
        (e.reply_code(), e.to_string().as_str()),
        (406, "queue 'q' in vhost '/' not empty")
    );
    q.consume(1, "a", 1);
    let e = q.s.can_delete(true, false).unwrap_err();
    assert_eq!(e.to_string(), "queue 'q' in vhost '/' in use");
    assert!(
        q.s.can_delete(false, true).is_ok(),
        "the message is unacked, not ready"
    );
    q.publish(persistent("p"));
    q.run(Command::Enqueue {
        message: Arc::new(persistent("p2")),
        confirm: Some(4),
    });
    q.drain();
    assert_eq!(
        q.run(Command::Delete {
            if_unused: false,
            if_empty: false
        }),
        Reply::Deleted { message_count: 2 }
    );
    assert_eq!(q.drain(), vec![Effect::Confirm { publish: 4 }]);
    assert!(q.s.is_deleted());
    let e = q.try_run(Command::Purge).unwrap_err();
    assert_eq!(
        (e.reply_code(), e.to_string().as_str()),
        (404, "no queue 'q' in vhost '/'")
    );
    assert_eq!(q.run(Command::Stored(vec![1])), Reply::Ok);
}

// ----- queue expiry and auto-delete -----

#[test]
fn unused_queue_expires() {
    let mut q = Q::with_args(&[("x-expires", long(1000))]);
    assert_eq!(q.s.next_deadline(), Some(T0 + 1000));
    q.advance(600);
    q.run(Command::Get {
        channel: 1,
        no_ack: true,
    }); // a get is a use
    q.drain();
    assert_eq!(q.s.next_deadline(), Some(T0 + 1600));
    q.consume(1, "a", 0);
    assert_eq!(q.s.next_deadline(), None, "consumers keep it alive");
    q.advance(5000);
    q.run(Command::Cancel {
        channel: 1,
        tag: "a".into(),
    });
    assert_eq!(q.s.next_deadline(), Some(q.now + 1000));
    q.advance(999);
    q.run(Command::Touch);
    q.advance(999);
    assert!(q.drain().is_empty());
    q.advance(1);
    assert_eq!(
        q.drain(),
        vec![Effect::DeleteQueue {
            reason: DeleteReason::Expired
        }]
    );
    assert!(q.s.is_deleted());
    assert_eq!(q.s.next_deadline(), None);
}

#[test]
fn a_publish_after_the_expiry_deadline_finds_the_queue_gone() {
    let mut q = Q::with_args(&[("x-expires", long(1000))]);
    // The deadline passed; its tick is still on the way.
    q.now += 1000;
    let reply = q.run(Command::Enqueue {
        message: Arc::new(persistent("late")),
        confirm: Some(7),
    });
    assert_eq!(reply, Reply::Gone);
    assert_eq!(
        q.drain(),
        vec![Effect::DeleteQueue {
            reason: DeleteReason::Expired
        }],
        "deleted, and nothing written or held for a confirm"
    );
    assert!(q.s.is_deleted());
    assert_eq!(q.s.stats().pending_confirms, 0);
}

#[test]
fn auto_delete_queue_goes_with_its_last_consumer() {
    let mut c = config(&[]);
    c.auto_delete = true;
    let mut q = Q::new(c);
    q.publish(msg("a"));
    q.run(Command::Tick);
    assert!(!q.s.is_deleted(), "never had a consumer");
    q.consume(1, "a", 0);
    q.consume(2, "b", 0);
    q.run(Command::Cancel {
        channel: 1,
        tag: "a".into(),
    });
    assert!(!q.s.is_deleted());
    q.drain();
    q.run(Command::ChannelDown { channel: 2 });
    assert_eq!(
        q.drain(),
        vec![Effect::DeleteQueue {
            reason: DeleteReason::AutoDelete
        }]
    );
}

// ----- the memory window -----

fn small_window(args: &[(&str, FieldValue)], messages: u64) -> Q {
    Q::new(config(args).with_window(WindowLimits {
        messages,
        bytes: 1 << 20,
    }))
}

#[test]
fn bodies_beyond_the_window_are_paged_out_and_loaded_back() {
    let mut q = small_window(&[], 4);
    let seqs: Vec<Seq> = (0..10).map(|i| q.publish(msg(&format!("m{i}")))).collect();
    let fx = q.drain();
    let written: Vec<Seq> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Store {
                seq,
                durable: false,
                ..
            } => Some(*seq),
            _ => None,
        })
        .collect();
    assert_eq!(
        written,
        seqs[4..].to_vec(),
        "only what leaves memory is written"
    );
    assert_eq!(
        q.s.stats().messages_in_memory,
        10,
        "bodies stay until written"
    );
    q.run(Command::Stored(written.clone()));
    let s = q.s.stats();
    assert_eq!(
        (s.messages_in_memory, s.paged_out, s.bytes_in_memory),
        (4, 6, 8)
    );
    assert!(q.drain().is_empty());

    q.consume(1, "a", 3);
    let fx = q.drain();
    assert_eq!(delivered_bodies(&fx), vec!["m0", "m1", "m2"]);
    // The window drained to half: the next bodies are asked for, at most the free room.
    let loads: Vec<Vec<Seq>> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::LoadBodies { seqs } => Some(seqs.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(loads, vec![seqs[4..7].to_vec()]);
    q.run(Command::Ack {
        channel: 1,
        seqs: seqs[0..3].to_vec(),
    });
    assert_eq!(
        delivered_bodies(&q.drain()),
        vec!["m3"],
        "m4 is not in memory yet"
    );
    q.run(Command::BodiesLoaded(
        seqs[4..7]
            .iter()
            .map(|&s| (s, Arc::new(msg(&format!("m{}", s - 1)))))
            .collect(),
    ));
    assert_eq!(delivered_bodies(&q.drain()), vec!["m4", "m5"]);
    // New messages keep going to storage while older ones are still there.
    let late = q.publish(msg("late"));
    assert!(q
        .drain()
        .iter()
        .any(|e| matches!(e, Effect::Store { seq, .. } if *seq == late)));
}

fn written(fx: &[Effect]) -> Vec<Seq> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Store { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect()
}

#[test]
fn a_queue_with_consumers_keeps_bodies_beyond_the_window_within_its_allowance() {
    // A window of 4 bodies or 2 000 bytes; each 2-byte body counts 258 with its
    // overhead, so the window's bytes hold 7 and an allowance of 600 three more.
    let window = WindowLimits {
        messages: 4,
        bytes: 2000,
    };
    let mut q = Q::new(config(&[]).with_window(window));
    q.s.set_memory_allowance(Some(600));
    q.consume(1, "slow", 1);
    let seqs: Vec<Seq> = (0..12)
        .map(|i| q.publish(msg(&format!("m{i:x}"))))
        .collect();
    let fx = q.drain();
    assert_eq!(delivered_bodies(&fx), vec!["m0"]);
    assert_eq!(
        written(&fx),
        vec![seqs[11]],
        "the eleventh ready body exceeds the allowance"
    );
    assert_eq!(q.s.memory_beyond_window(), 11 * 258 - 2000, "until written");
    q.run(Command::Stored(vec![seqs[11]]));
    assert_eq!(q.s.memory_beyond_window(), 10 * 258 - 2000);
    // Once paging, later bodies follow, allowance or not, so memory stays a prefix.
    q.s.set_memory_allowance(Some(u64::MAX));
    let late = q.publish(msg("mm"));
    assert_eq!(written(&q.drain()), vec![late]);

    // Without consumers the allowance is not used: beyond the window means paged out.
    let mut idle = Q::new(config(&[]).with_window(window));
    idle.s.set_memory_allowance(Some(u64::MAX));
    let seqs: Vec<Seq> = (0..6)
        .map(|i| idle.publish(msg(&format!("m{i}"))))
        .collect();
    assert_eq!(written(&idle.drain()), seqs[4..].to_vec());
    assert_eq!(idle.s.memory_beyond_window(), 0);
}

#[test]
fn a_transient_message_paged_out_is_confirmed_when_written() {
    let mut q = small_window(&[], 1);
    let enqueue = |q: &mut Q, body: &str, publish: u64| {
        let Reply::Enqueued { seq } = q.run(Command::Enqueue {
            message: Arc::new(msg(body)),
            confirm: Some(publish),
        }) else {
            panic!("not enqueued")
        };
        seq
    };
    enqueue(&mut q, "in memory", 1);
    assert_eq!(q.drain(), vec![Effect::Confirm { publish: 1 }]);
    // Beyond the window: its confirm waits for the write that takes it out of memory,
    // so a publisher faster than storage is held back by its confirm window.
    let seq = enqueue(&mut q, "paged", 2);
    let fx = q.drain();
    assert!(
        matches!(fx.as_slice(), [Effect::Store { seq: s, durable: false, .. }] if *s == seq),
        "{fx:?}"
    );
    assert_eq!(q.s.stats().pending_confirms, 1);
    q.run(Command::Stored(vec![seq]));
    assert_eq!(q.drain(), vec![Effect::Confirm { publish: 2 }]);
    assert_eq!(q.s.stats().pending_confirms, 0);
}

#[test]
fn a_paged_head_blocks_delivery_until_loaded() {
    let mut q = small_window(&[], 0); // everything pages out
    let a = q.publish(msg("a"));
    q.run(Command::Stored(vec![a]));
    q.drain();
    q.run(Command::Get {
        channel: 9,
        no_ack: true,
    });
    assert_eq!(q.drain(), vec![Effect::LoadBodies { seqs: vec![a] }]);
    q.consume(1, "c", 0);
    assert!(q.drain().is_empty(), "already loading");
    q.run(Command::BodiesLoaded(vec![(a, Arc::new(msg("a")))]));
    let fx = q.drain();
    assert!(
        matches!(
            &fx[..],
            [Effect::GetOk { channel: 9, .. }, Effect::Remove { .. }]
        ),
        "{fx:?}"
    );
}

#[test]
fn a_paged_message_is_loaded_to_be_dead_lettered() {
    let mut q = small_window(&[("x-dead-letter-exchange", FieldValue::string("dlx"))], 1);
    q.publish(msg("in memory"));
    let b = q.publish(with_ttl("paged", 10));
    q.run(Command::Stored(vec![b]));
    q.drain();
    q.advance(10);
    assert_eq!(q.drain(), vec![Effect::LoadBodies { seqs: vec![b] }]);
    assert_eq!(q.s.stats().dead_lettering, 1);
    q.run(Command::BodiesLoaded(vec![(
        b,
        Arc::new(with_ttl("paged", 10)),
    )]));
    let fx = q.drain();
    assert_eq!(dead_letters(&fx).len(), 1);
    assert!(fx.contains(&Effect::Remove { seq: b }));
    assert_eq!(q.s.message_count(), 1);
}

#[test]
fn missing_bodies_are_dropped_and_counted() {
    let mut q = small_window(&[], 0);
    let a = q.publish(msg("a"));
    let b = q.publish(msg("b"));
    q.run(Command::Stored(vec![a, b]));
    q.consume(1, "c", 0);
    q.drain();
    q.run(Command::BodiesMissing(vec![a]));
    let fx = q.drain();
    assert_eq!(
        fx,
        vec![
            Effect::Remove { seq: a },
            Effect::LoadBodies { seqs: vec![b] }
        ]
    );
    assert_eq!(q.s.stats().lost, 1);
}

#[test]
fn a_stored_unacked_body_leaves_memory() {
    let mut q = Q::with_args(&[]);
    q.consume(1, "a", 0);
    let seq = q.publish(persistent("p"));
    assert_eq!(q.s.stats().messages_in_memory, 1);
    q.run(Command::Stored(vec![seq]));
    let s = q.s.stats();
    assert_eq!((s.messages_in_memory, s.unacked, s.paged_out), (0, 1, 1));
}

// ----- recovery -----

#[test]
fn recovery_brings_back_persistent_messages_as_redelivered() {
    let record = |size, persistent, priority| IndexRecord {
        size,
        priority,
        expires_at: None,
        delivery_count: 2,
        redelivered: false,
        persistent,
    };
    let mut fx = Vec::new();
    let c = config(&[("x-max-priority", long(3))]);
    let records = vec![
        (5, record(1, true, 0)),
        (6, record(1, false, 0)),
        (9, record(2, true, 7)),
    ];
    let s = QueueState::recover(c, records, T0, &mut fx);
    assert_eq!(
        fx,
        vec![Effect::Remove { seq: 6 }],
        "transient messages do not survive"
    );
    s.check_invariants().unwrap();
    let stats = s.stats();
    assert_eq!(
        (
            stats.ready,
            stats.ready_bytes,
            stats.paged_out,
            stats.messages_in_memory
        ),
        (2, 3, 2, 0)
    );
    let mut q = Q {
        s,
        now: T0,
        fx,
        auto_dead_letter: true,
    };
    q.drain();
    q.consume(1, "a", 0);
    assert_eq!(
        q.drain(),
        vec![Effect::LoadBodies { seqs: vec![9, 5] }],
        "priority order"
    );
    q.run(Command::BodiesLoaded(vec![
        (9, Arc::new(msg("hi"))),
        (5, Arc::new(msg("x"))),
    ]));
    let fx = q.drain();
    let d: Vec<_> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Deliver {
                seq,
                redelivered,
                delivery_count,
                ..
            } => Some((*seq, *redelivered, *delivery_count)),
            _ => None,
        })
        .collect();
    assert_eq!(d, vec![(9, true, 2), (5, true, 2)]);
    // New messages continue after the highest recovered seq.
    assert_eq!(q.publish(msg("new")), 10);
}

#[test]
fn a_requeued_delivery_waiting_for_its_body_goes_out_once() {
    let record = IndexRecord {
        size: 1,
        priority: 0,
        expires_at: None,
        delivery_count: 0,
        redelivered: false,
        persistent: true,
    };
    let mut fx = Vec::new();
    let s = QueueState::recover(config(&[]), [(5, record)], T0, &mut fx);
    let mut q = Q {
        s,
        now: T0,
        fx,
        auto_dead_letter: true,
    };
    q.consume(1, "a", 0);
    assert_eq!(q.drain(), vec![Effect::LoadBodies { seqs: vec![5] }]);
    // Settled with a delivery tag from before the restart, which named seq 5 too:
    // back to ready, and out to the consumer again, still waiting for its body.
    q.run(Command::Reject {
        channel: 1,
        seqs: vec![5],
        requeue: true,
    });
    q.run(Command::BodiesLoaded(vec![(5, Arc::new(persistent("x")))]));
    let delivered = q
        .drain()
        .iter()
        .filter(|e| matches!(e, Effect::Deliver { seq: 5, .. }))
        .count();
    assert_eq!(delivered, 1);
    assert_eq!(q.s.stats().unacked, 1);
}

#[test]
fn seqs_are_never_reused_even_at_the_end_of_the_range() {
    let record = IndexRecord {
        size: 1,
        priority: 0,
        expires_at: None,
        delivery_count: 0,
        redelivered: false,
        persistent: true,
    };
    let mut fx = Vec::new();
    let s = QueueState::recover(config(&[]), [(Seq::MAX - 2, record)], T0, &mut fx);
    let mut q = Q {
        s,
        now: T0,
        fx,
        auto_dead_letter: true,
    };
    assert_eq!(q.publish(msg("last")), Seq::MAX - 1);
    q.drain();
    let r = q.run(Command::Enqueue {
        message: Arc::new(msg("one too many")),
        confirm: Some(3),
    });
    assert_eq!(r, Reply::PublishRejected);
    assert_eq!(q.drain(), vec![Effect::Reject { publish: 3 }]);
    assert_eq!(q.s.message_count(), 2);
}

#[test]
fn a_seq_listed_twice_is_settled_once() {
    let mut q = Q::with_args(&[]);
    q.consume(1, "a", 1);
    let seq = q.publish(msg("a"));
    q.drain();
    q.run(Command::Reject {
        channel: 1,
        seqs: vec![seq, seq],
        requeue: true,
    });
    let fx = q.drain();
    assert!(
        matches!(
            &fx[..],
            [Effect::Deliver {
                delivery_count: 1,
                ..
            }]
        ),
        "{fx:?}"
    );
    q.run(Command::Ack {
        channel: 1,
        seqs: vec![seq, seq],
    });
    assert_eq!(
        q.s.stats(),
        QueueStats {
            consumers: 1,
            ..Default::default()
        }
    );
}

#[test]
fn a_get_whose_body_is_missing_answers_with_the_next_or_empty() {
    let mut q = small_window(&[], 0);
    let a = q.publish(msg("a"));
    q.run(Command::Stored(vec![a]));
    q.drain();
    q.run(Command::Get {
        channel: 1,
        no_ack: true,
    });
    assert_eq!(q.drain(), vec![Effect::LoadBodies { seqs: vec![a] }]);
    q.run(Command::BodiesMissing(vec![a]));
    let fx = q.drain();
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::GetEmpty { channel: 1 })),
        "the get is answered: {fx:?}"
    );
}

// ----- hibernation -----

#[test]
fn only_fresh_stored_persistent_messages_rest_in_the_store() {
    // Durable queue: persistent messages rest once stored, not before.
    let mut q = Q::new(config(&[]));
    assert!(q.s.rests_in_store(), "an empty queue rests");
    let a = q.publish(persistent("a"));
    assert!(!q.s.rests_in_store(), "not stored yet");
    q.run(Command::Stored(vec![a]));
    assert!(q.s.rests_in_store());
    // A transient message would not come back.
    let t = q.publish(msg("t"));
    q.run(Command::Stored(vec![t]));
    assert!(
        !q.s.rests_in_store(),
        "a transient message is not recovered"
    );
    // A message delivered once carries a redelivered flag its record does not.
    let mut q = Q::new(config(&[]));
    let a = q.publish(persistent("a"));
    q.run(Command::Stored(vec![a]));
    q.consume(1, "c", 0);
    q.drain();
    q.run(Command::ChannelDown { channel: 1 });
    assert!(!q.s.rests_in_store(), "a requeued message does not rest");
    // A non-durable queue's messages never rest.
    let mut c = config(&[]);
    c.durable = false;
    let mut q = Q::new(c);
    let a = q.publish(persistent("a"));
    let _ = q.try_run(Command::Stored(vec![a]));
    assert!(!q.s.rests_in_store());
}

#[test]
fn a_rested_recovery_keeps_messages_as_they_were() {
    let record = IndexRecord {
        size: 1,
        priority: 0,
        expires_at: None,
        delivery_count: 0,
        redelivered: false,
        persistent: true,
    };
    for (rested, redelivered) in [(true, false), (false, true)] {
        let mut fx = Vec::new();
        let recover = if rested {
            QueueState::recover_rested
        } else {
            QueueState::recover
        };
        let s = recover(config(&[]), vec![(5, record)], T0, &mut fx);
        s.check_invariants().unwrap();
        let mut q = Q {
            s,
            now: T0,
            fx,
            auto_dead_letter: true,
        };
        q.drain();
        q.consume(1, "a", 0);
        q.drain();
        q.run(Command::BodiesLoaded(vec![(5, Arc::new(msg("x")))]));
        let d: Vec<bool> = deliveries(&q.drain()).into_iter().map(|d| d.4).collect();
        assert_eq!(d, vec![redelivered], "rested: {rested}");
    }
}
