//! A partitioned stream from Rust: declare three partitions, publish keyed clicks
//! (each key lands on the partition Kafka would pick), and read them as a member of a
//! consumer group whose offsets the node keeps.
//!
//! Start a node first (`cargo run --release -- node`), then `cargo run --example clicks`.

use warren::client::{
    Client, ConnectOptions, PublishOptions, PublishResult, StreamConsumeOptions, StreamOptions,
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

    // Read every partition as a member of the consumer group "dashboard": the node
    // keeps the group's offsets, so running this again reads only what is new.
    let mut member = client
        .consume_stream(
            "clicks",
            None,
            StreamConsumeOptions {
                offset: FieldValue::string("first"),
                group: Some("dashboard".into()),
                ..Default::default()
            },
        )
        .await?;
    while let Ok(Some(read)) =
        tokio::time::timeout(std::time::Duration::from_millis(500), member.next()).await
    {
        let read = read?;
        println!(
            "partition {} offset {} key {:?}: {}",
            read.partition,
            read.offset,
            read.key,
            String::from_utf8_lossy(&read.delivery.body)
        );
        read.delivery.ack()?; // commits the group's offset
    }
    Ok(())
}
