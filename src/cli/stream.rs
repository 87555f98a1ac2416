//! `warren stream ...`: partitioned streams (RabbitMQ's super streams, Kafka's topics)
//! through the client handle: declare, add partitions, list them, publish by key,
//! consume from one partition or all.

use std::io::Write;

use clap::Subcommand;
use warren_actors::message::{FieldTable, FieldValue};

use super::{bodies, parse_arg, table};
use crate::client::Partition;
use crate::client::{
    ClientError, PublishOptions, PublishResult, StreamConsumeOptions, StreamOptions,
};
use crate::conn::Conn;
use warren_actors::queue::StreamInfo;

#[derive(Subcommand, Debug)]
pub enum StreamCmd {
    /// Declare a stream of N partitions: an exchange NAME and stream queues NAME-0 …
    /// NAME-(N-1), laid out as RabbitMQ's super streams.
    Declare {
        /// The stream's name.
        name: String,
        /// How many partitions.
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// A stream argument for every partition, e.g. `x-max-age=7D`.
        #[arg(long = "arg", value_name = "K=V", value_parser = parse_arg)]
        arguments: Vec<(String, FieldValue)>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Add partitions to a stream (keys hashed to partitions move, as in Kafka).
    AddPartitions {
        /// The stream's name.
        name: String,
        /// How many partitions to add.
        #[arg(long, default_value_t = 1)]
        count: u32,
        #[command(flatten)]
        conn: Conn,
    },
    /// A stream's partitions (number, queue, node, first and next offset, messages,
    /// bytes) and its consumer groups' lag.
    #[command(alias = "partitions")]
    Info {
        /// The stream's name.
        name: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Publish to a stream: by key (Kafka's partitioner), to a partition, or without
    /// either a batch's worth (16 KiB) to a partition, then the next; with confirms.
    Publish {
        /// The stream's name.
        name: String,
        /// The messages' key: it picks the partition.
        #[arg(long, conflicts_with = "partition")]
        key: Option<String>,
        /// The partition's number.
        #[arg(long)]
        partition: Option<u64>,
        /// The messages' tag (`x-stream-filter-value`), which consumers filter on.
        #[arg(long)]
        tag: Option<String>,
        /// Bodies of this text. Without --body or --size, each line of stdin is one message.
        #[arg(long)]
        body: Option<String>,
        /// Bodies of this many bytes.
        #[arg(long)]
        size: Option<usize>,
        /// How many messages (with --body or --size); default 1.
        #[arg(long)]
        count: Option<u64>,
        #[command(flatten)]
        conn: Conn,
    },
    /// A stream's consumer groups: per partition, the committed offset, the lag, the
    /// members and the active one.
    Groups {
        /// The stream's name.
        name: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Find the messages published with a key (the partitions' key indexes) and
    /// print `partition offset body` for each.
    Lookup {
        /// The stream's name.
        name: String,
        /// The key.
        #[arg(long)]
        key: String,
        /// At most this many per partition.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        conn: Conn,
    },
    /// Consume a stream (every partition, or one) and print one body per line.
    Consume {
        /// The stream's name.
        name: String,
        /// Only this partition.
        #[arg(long)]
        partition: Option<u64>,
        /// Where to start in each partition: first, last, next, an offset or an
        /// interval such as 1h.
        #[arg(
            long,
            visible_alias = "from",
            value_name = "first|last|next|N|1h",
            default_value = "next"
        )]
        offset: String,
        /// Stop after this many messages (default: run until Ctrl-C).
        #[arg(long)]
        count: Option<u64>,
        /// Print `partition offset key body` (tab-separated) instead of the body.
        #[arg(long)]
        verbose: bool,
        /// Consume as a member of this consumer group: one member per partition at a
        /// time, the group's offset kept by the node (it wins over --offset).
        #[arg(long)]
        group: Option<String>,
        /// With --group: every member gets every message (RocketMQ's broadcast
        /// mode), each with its own offset, kept under --member.
        #[arg(long, requires = "member")]
        broadcast: bool,
        /// With --group: this member's name.
        #[arg(long, requires = "group")]
        member: Option<String>,
        /// Only messages with these tags: `tagA || tagB` (RocketMQ's expression).
        #[arg(long)]
        filter: Option<String>,
        #[arg(long, default_value_t = 100)]
        prefetch: u32,
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn stream(cmd: StreamCmd) -> Result<(), String> {
    let e = |e: ClientError| e.to_string();
    match cmd {
        StreamCmd::Declare {
            name,
            partitions,
            arguments,
            conn,
        } => {
            let client = conn.connect().await.map_err(e)?;
            let options = StreamOptions {
                partitions,
                arguments: table(arguments),
            };
            let declared = client.declare_stream(&name, options).await.map_err(e)?;
            println!("stream {name} declared ({} partitions)", declared.len());
        }
        StreamCmd::Groups { name, json, conn } => {
            let client = conn.connect().await.map_err(e)?;
            let infos = client.stream_info(&name).await.map_err(e)?;
            print_groups(&infos, json);
        }
        StreamCmd::Info { name, json, conn } => {
            let client = conn.connect().await.map_err(e)?;
            let infos = client.stream_info(&name).await.map_err(e)?;
            let queues = client.queues().await.map_err(e)?;
            let node = |queue: &str| {
                queues
                    .iter()
                    .find(|q| q.name == queue)
                    .map_or("-".to_string(), |q| q.node.clone())
            };
            if json {
                let partitions: Vec<serde_json::Value> = infos
                    .iter()
                    .map(|(p, i)| {
                        serde_json::json!({
                            "partition": p.number,
                            "queue": p.queue,
                            "node": node(&p.queue),
                            "first": i.first,
                            "end": i.end,
                            "messages": i.end - i.first,
                            "bytes": i.bytes,
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({ "partitions": partitions, "groups": group_rows(&infos) })
                );
                return Ok(());
            }
            println!(
                "{:>9}  {:<32} {:<12} {:>10} {:>10} {:>10} {:>12}",
                "partition", "queue", "node", "first", "end", "messages", "bytes"
            );
            for (p, i) in &infos {
                println!(
                    "{:>9}  {:<32} {:<12} {:>10} {:>10} {:>10} {:>12}",
                    p.number,
                    p.queue,
                    node(&p.queue),
                    i.first,
                    i.end,
                    i.end - i.first,
                    i.bytes
                );
            }
            if infos.iter().any(|(_, i)| !i.groups.is_empty()) {
                println!();
                print_groups(&infos, false);
            }
        }
        StreamCmd::Lookup {
            name,
            key,
            limit,
            conn,
        } => {
            let client = conn.connect().await.map_err(e)?;
            let found = client.lookup(&name, &key, limit).await.map_err(e)?;
            if found.is_empty() {
                eprintln!("no message of '{name}' has the key '{key}'");
            }
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            for f in found {
                write!(out, "{}\t{}\t", f.partition, f.offset).map_err(|err| err.to_string())?;
                out.write_all(&f.message.body)
                    .map_err(|err| err.to_string())?;
                out.write_all(b"\n").map_err(|err| err.to_string())?;
            }
        }
        StreamCmd::AddPartitions { name, count, conn } => {
            let client = conn.connect().await.map_err(e)?;
            let now = client.add_partitions(&name, count).await.map_err(e)?;
            println!("stream {name} has {} partitions", now.len());
        }
        StreamCmd::Publish {
            name,
            key,
            partition,
            tag,
            body,
            size,
            count,
            conn,
        } => {
            let bodies = bodies(&body, size, count)?;
            let client = conn.connect().await.map_err(e)?;
            let producer = client.stream_producer(&name).await.map_err(e)?;
            let index = match partition {
                Some(n) => Some(
                    producer
                        .partitions()
                        .iter()
                        .position(|p| p.number == n)
                        .ok_or_else(|| format!("stream '{name}' has no partition {n}"))?,
                ),
                None => None,
            };
            let mut options = PublishOptions {
                persistent: true,
                mandatory: true,
                ..Default::default()
            };
            if let Some(tag) = tag {
                options.properties.headers = Some(FieldTable::from([(
                    "x-stream-filter-value".to_string(),
                    FieldValue::string(tag),
                )]));
            }
            let mut confirms = Vec::new();
            for body in bodies {
                let sent = match index {
                    Some(i) => {
                        producer
                            .send_to(i, key.as_deref(), body, options.clone())
                            .await
                    }
                    None => producer.send(key.as_deref(), body, options.clone()).await,
                };
                confirms.push(sent.map_err(e)?);
            }
            let total = confirms.len();
            let mut used = std::collections::BTreeSet::new();
            for (number, confirm) in confirms {
                match confirm.await.map_err(e)? {
                    PublishResult::Confirmed => {
                        used.insert(number);
                    }
                    other => {
                        return Err(format!(
                        "a message to partition {number} of '{name}' was not confirmed: {other:?}"
                    ))
                    }
                }
            }
            let used: Vec<String> = used.iter().map(u64::to_string).collect();
            println!(
                "published {total} messages, {total} confirmed (partitions {})",
                used.join(", ")
            );
        }
        StreamCmd::Consume {
            name,
            partition,
            offset,
            count,
            verbose,
            group,
            broadcast,
            member,
            filter,
            prefetch,
            conn,
        } => {
            let client = conn.connect().await.map_err(e)?;
            let options = StreamConsumeOptions {
                offset: parse_arg(&format!("x-stream-offset={offset}"))?.1,
                prefetch,
                group,
                member,
                broadcast,
                filter,
                ..Default::default()
            };
            let mut consumer = client
                .consume_stream(&name, partition, options)
                .await
                .map_err(e)?;
            let mut seen = 0u64;
            let stdout = std::io::stdout();
            while count.is_none_or(|n| seen < n) {
                let next = tokio::select! {
                    d = consumer.next() => d,
                    _ = tokio::signal::ctrl_c() => None,
                };
                let Some(read) = next else { break };
                let read = read.map_err(e)?;
                {
                    let mut out = stdout.lock();
                    if verbose {
                        write!(
                            out,
                            "{}\t{}\t{}\t",
                            read.partition,
                            read.offset,
                            read.key.as_deref().unwrap_or("")
                        )
                        .map_err(|err| err.to_string())?;
                    }
                    out.write_all(&read.delivery.body)
                        .map_err(|err| err.to_string())?;
                    out.write_all(b"\n").map_err(|err| err.to_string())?;
                }
                read.delivery.ack().map_err(e)?;
                seen += 1;
            }
            // Let the last acks leave before the process ends.
            client.flush_settles().await;
        }
    }
    Ok(())
}

/// The groups of every partition, as JSON rows.
fn group_rows(infos: &[(Partition, StreamInfo)]) -> Vec<serde_json::Value> {
    infos
        .iter()
        .flat_map(|(p, i)| i.groups.iter().map(move |g| (p.number, g)))
        .map(|(p, g)| {
            serde_json::json!({
                "partition": p,
                "group": g.group,
                "member": g.member,
                "committed": g.committed,
                "end": g.end,
                "lag": g.lag(),
                "members": g.members,
                "active": g.active,
            })
        })
        .collect()
}

/// The groups of every partition: as a table, or JSON rows.
fn print_groups(infos: &[(Partition, StreamInfo)], json: bool) {
    if json {
        println!("{}", serde_json::Value::Array(group_rows(infos)));
        return;
    }
    println!(
        "{:>9}  {:<20} {:<12} {:>10} {:>10} {:>8} {:>7}  active",
        "partition", "group", "member", "committed", "end", "lag", "members"
    );
    for (p, i) in infos {
        for g in &i.groups {
            println!(
                "{:>9}  {:<20} {:<12} {:>10} {:>10} {:>8} {:>7}  {}",
                p.number,
                g.group,
                g.member.as_deref().unwrap_or("-"),
                g.committed,
                g.end,
                g.lag(),
                g.members,
                g.active.as_deref().unwrap_or("-"),
            );
        }
    }
}
