//! `warren-bench --declarations N`: how fast the cluster takes metadata changes.
//!
//! N transient queues are declared through the given nodes at once (one client per
//! node, each declaring its share one after another, as N/nodes applications would),
//! every declaration a committed entry of the metadata log. Reports the time to the
//! last answer, then deletes the queues again.

use std::net::SocketAddr;
use std::time::Instant;

use warren::client::{Client, ClientError, ConnectOptions, QueueOptions};

/// Declares `count` queues named PREFIX-0, PREFIX-1, ... through `nodes`, reports the
/// time, and deletes them.
pub async fn run(
    nodes: &[SocketAddr],
    cookie_file: &std::path::Path,
    count: u64,
    prefix: &str,
) -> Result<(), String> {
    let e = |e: ClientError| e.to_string();
    let mut clients = Vec::new();
    for node in nodes {
        let mut options = ConnectOptions::new(*node, cookie_file).map_err(e)?;
        options.client_name = "warren-bench".into();
        clients.push(Client::connect(options).await.map_err(e)?);
    }
    let names = |i: usize| -> Vec<String> {
        (i as u64..count)
            .step_by(clients.len())
            .map(|q| format!("{prefix}-{q}"))
            .collect()
    };
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        let (client, names) = (client.clone(), names(i));
        tasks.push(tokio::spawn(async move {
            for name in names {
                client
                    .declare_queue(&name, QueueOptions::default())
                    .await
                    .map_err(|err| format!("declaring {name}: {err}"))?;
            }
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|err| err.to_string())??;
    }
    let took = start.elapsed();
    println!(
        "declared {count} queues through {} nodes in {:.2} s ({:.0} declarations/s)",
        nodes.len(),
        took.as_secs_f64(),
        count as f64 / took.as_secs_f64().max(1e-9)
    );
    for (i, client) in clients.iter().enumerate() {
        for name in names(i) {
            client.delete_queue(&name, false, false).await.map_err(e)?;
        }
    }
    Ok(())
}
