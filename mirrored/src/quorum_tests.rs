//! What a mirrored queue does as RabbitMQ's quorum queues do, beyond the conformance
//! suite: `x-delivery-count` on messages returned before, a delivery limit of 20 by
//! default (`x-delivery-limit: -1` for none), `x-dead-letter-strategy` checked.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc::unbounded_channel;
use warren_actors::delivery::{next_channel_id, QueueEvent};
use warren_actors::message::{FieldTable, FieldValue, Message};
use warren_actors::queue::{
    ConsumeRequest, DeadLetter, DeadLetterRouter, DeadLettered, Enqueue, EnqueueOutcome, Qos,
    QueueDef, QueueType, Settlement,
};
use warren_actors::BoxFuture;
use warren_supervisor::{Strategy, Supervisor, SupervisorHandle, SupervisorSpec};

use crate::conformance_tests::Node;
use crate::{Mirrored, DEFAULT_DELIVERY_LIMIT};

/// No dead-letter exchange is declared: nothing comes here.
struct Nowhere;

impl DeadLetterRouter for Nowhere {
    fn route(&self, _queue: &str, batch: Vec<DeadLetter>) -> BoxFuture<'static, DeadLettered> {
        let done = batch.iter().filter_map(|d| d.seq).collect();
        Box::pin(async move {
            DeadLettered {
                done,
                refused: Vec::new(),
                held_by: Vec::new(),
            }
        })
    }
}

fn def(node: &str, name: &str, arguments: FieldTable) -> QueueDef {
    QueueDef {
        name: name.to_string(),
        id: 7,
        node: node.to_string(),
        durable: true,
        owner: None,
        auto_delete: false,
        arguments,
        replicas: Vec::new(),
        founders: Vec::new(),
    }
}

fn args(pairs: &[(&str, FieldValue)]) -> FieldTable {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

const WAIT: Duration = Duration::from_secs(20);

/// A message returned N times comes with `x-delivery-count: N`; returned once more
/// than the default limit, it is dropped (no dead-letter exchange).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returns_are_counted_on_the_message_and_bounded_by_default() {
    let node = Node::start("quorum-args").await;
    let mirrored = Mirrored::new(&node.name);
    let def = def(&node.name, "counted", FieldTable::new());
    mirrored.validate(&def, "/").unwrap();
    let hosted = mirrored
        .host(&def, &node.env("/", Arc::new(Nowhere)))
        .unwrap();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .with_intensity(10, Duration::from_secs(10))
        .child(hosted.child);
    let (supervisor, _) = Supervisor::start("sup-counted".to_string(), None, spec, None)
        .await
        .unwrap();
    let supervisor = SupervisorHandle::new(supervisor);
    let queue = hosted.queue;

    let message = Arc::new(Message::new("", "counted", Bytes::from_static(b"again")));
    let (batch, confirmed) = Enqueue::confirmed(vec![message]);
    queue.enqueue(batch);
    let outcomes = tokio::time::timeout(WAIT, confirmed)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcomes, vec![EnqueueOutcome::Confirmed]);

    let (tx, mut events) = unbounded_channel();
    let channel = next_channel_id();
    queue
        .consume(ConsumeRequest {
            tag: "c".into(),
            channel,
            sink: Arc::new(move |e| {
                let _ = tx.send(e);
            }),
            prefetch: 1,
            no_ack: false,
            exclusive: false,
            priority: 0,
            origin: None,
            arguments: Default::default(),
            qos: Qos::consumer(1),
            window: 0,
            records: false,
        })
        .await
        .unwrap();
    for returned in 0..=DEFAULT_DELIVERY_LIMIT {
        let delivery = loop {
            match tokio::time::timeout(WAIT, events.recv()).await.unwrap() {
                Some(QueueEvent::Deliver(mut ds)) => break ds.remove(0),
                Some(_) => continue,
                None => panic!("the sink closed"),
            }
        };
        let count = delivery.message.properties.header("x-delivery-count");
        if returned == 0 {
            assert_eq!(count, None, "a first delivery carries no count");
            assert!(!delivery.redelivered);
        } else {
            assert_eq!(count, Some(&FieldValue::I64(returned as i64)));
            assert!(delivery.redelivered);
        }
        queue.settle(channel, Settlement::Requeue, vec![delivery.seq]);
    }
    // Returned a 21st time: over the limit, dropped.
    tokio::time::timeout(WAIT, async {
        loop {
            let stats = queue.status().await.unwrap().stats;
            if stats.ready == 0 && stats.unacked == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the message dropped after the limit");
    supervisor.cell().stop(None);
    node.stop();
}

#[test]
fn quorum_arguments_are_checked_and_defaulted() {
    let mirrored = Mirrored::new("nowhere");
    let config = |arguments| Mirrored::config(&def("nowhere", "q", arguments), "/");
    assert_eq!(
        config(FieldTable::new()).unwrap().delivery_limit,
        Some(DEFAULT_DELIVERY_LIMIT)
    );
    assert_eq!(
        config(args(&[("x-delivery-limit", FieldValue::I64(-1))]))
            .unwrap()
            .delivery_limit,
        None
    );
    assert_eq!(
        config(args(&[("x-delivery-limit", FieldValue::I64(3))]))
            .unwrap()
            .delivery_limit,
        Some(3)
    );
    let bad = config(args(&[("x-delivery-limit", FieldValue::I64(-2))])).unwrap_err();
    assert_eq!(bad.code(), 406, "{bad}");
    for strategy in ["at-least-once", "at-most-once"] {
        config(args(&[(
            "x-dead-letter-strategy",
            FieldValue::string(strategy),
        )]))
        .unwrap();
    }
    let bad = config(args(&[(
        "x-dead-letter-strategy",
        FieldValue::string("sometimes"),
    )]))
    .unwrap_err();
    assert_eq!(bad.code(), 406);
    assert!(bad.text().contains("x-dead-letter-strategy"), "{bad}");
    let transient = QueueDef {
        durable: false,
        ..def("nowhere", "q", FieldTable::new())
    };
    let refused = mirrored.validate(&transient, "/").unwrap_err();
    assert!(refused.text().contains("non-durable"), "{refused}");
}
