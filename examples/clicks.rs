//! A partitioned stream from Rust: declare three partitions, publish keyed clicks
//! (each key lands on the partition Kafka would pick), and replay one partition from
//! its first offset.
//!
//! Start a node first (`cargo run --release -- node`), then `cargo run --example clicks`.

use warren::client::{
    Client, ConnectOptions, ConsumeOptions, PublishOptions, PublishResult, StreamOptions,
};
use warren_actors::message::{FieldTable, FieldValue};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::connect(ConnectOptions::local()?).await?;
    let partitions = client
        .declare_stream(
            "clicks",
            StreamOptions {
                partitions: 3,
                arguments: FieldTable::from([("x-max-age".into(), FieldValue::string("7D"))]),
            },
        )
        .await?;
    println!(
        "partitions: {:?}",
        partitions.iter().map(|p| &p.queue).collect::<Vec<_>>()
    );

    let producer = client.stream_producer("clicks").await?;
    for user in ["ada", "grace", "alan", "ada"] {
        let (partition, confirm) = producer
            .send(
                Some(user),
                format!("{user} clicked"),
                PublishOptions::default(),
            )
            .await?;
        assert_eq!(confirm.await?, PublishResult::Confirmed);
        println!("{user} -> partition {partition}");
    }

    // Replay the partition "ada" goes to, from its first offset.
    let queue = &producer.partitions()[producer.partition_for(b"ada")].queue;
    let mut consumer = client
        .consume(
            queue,
            ConsumeOptions {
                prefetch: 100,
                arguments: FieldTable::from([(
                    "x-stream-offset".into(),
                    FieldValue::string("first"),
                )]),
                ..Default::default()
            },
        )
        .await?;
    while let Ok(Some(delivery)) =
        tokio::time::timeout(std::time::Duration::from_millis(500), consumer.next()).await
    {
        let delivery = delivery?;
        let offset = delivery
            .properties
            .headers
            .as_ref()
            .and_then(|h| h.get("x-stream-offset"))
            .and_then(FieldValue::as_i64);
        println!(
            "{queue} offset {offset:?}: {}",
            String::from_utf8_lossy(&delivery.body)
        );
        delivery.ack()?;
    }
    Ok(())
}
