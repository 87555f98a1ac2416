//! The README's client example: declare, bind, publish with confirms, consume and ack.
//!
//! Start a node first (`cargo run --release -- node`), then `cargo run --example orders`.

use warren::client::{
    Client, ConnectOptions, ConsumeOptions, ExchangeOptions, PublishOptions, PublishResult,
    QueueOptions,
};
use warren_actors::message::FieldTable;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The default node address (127.0.0.1:4370) and cookie file (warren-data/cookie).
    let client = Client::connect(ConnectOptions::local()?).await?;

    client
        .declare_exchange(
            "shop",
            "topic",
            ExchangeOptions {
                durable: true,
                ..Default::default()
            },
        )
        .await?;
    client
        .declare_queue(
            "orders",
            QueueOptions {
                durable: true,
                ..Default::default()
            },
        )
        .await?;
    client
        .bind_queue("orders", "shop", "order.*", FieldTable::new())
        .await?;

    // publish() queues the message; the Confirm resolves once it is fsynced.
    let persistent = PublishOptions {
        persistent: true,
        ..Default::default()
    };
    let mut confirms = Vec::new();
    for i in 0..10 {
        confirms.push(
            client
                .publish(
                    "shop",
                    "order.created",
                    format!("order {i}"),
                    persistent.clone(),
                )
                .await?,
        );
    }
    for confirm in confirms {
        assert_eq!(confirm.await?, PublishResult::Confirmed);
    }

    let mut consumer = client
        .consume(
            "orders",
            ConsumeOptions {
                prefetch: 50,
                ..Default::default()
            },
        )
        .await?;
    for _ in 0..10 {
        let delivery = consumer.next().await.ok_or("consumer closed")??;
        println!(
            "{} (redelivered: {})",
            String::from_utf8_lossy(&delivery.body),
            delivery.redelivered
        );
        delivery.ack()?;
    }
    consumer.cancel().await?;
    client.flush_settles().await;
    Ok(())
}
