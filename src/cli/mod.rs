//! The `warren` command line: flags and what each client command does.
//!
//! Every client command connects with the client handle, so the CLI is also a worked
//! example of the Rust API. Errors print one line that says what to fix.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

mod access;
mod cluster;
mod limits;
mod queue;
mod stream;

use crate::listing;
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use warren_actors::message::{FieldTable, FieldValue};

use crate::client::{
    ClientError, ConsumeOptions, ExchangeOptions, PublishOptions, PublishResult, QueueOptions,
};
pub use crate::conn::Conn;

#[derive(Parser, Debug)]
#[command(
    name = "warren",
    version,
    about = "Warren: a distributed message broker on supervised actors"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start a node (embedded defaults: ./warren-data, 127.0.0.1:4370).
    Node(Box<NodeArgs>),
    /// Declare a queue or an exchange.
    #[command(subcommand)]
    Declare(Declare),
    /// Delete a queue or an exchange.
    #[command(subcommand)]
    Delete(Delete),
    /// Bind a queue (or an exchange) to an exchange.
    Bind(BindArgs),
    /// Remove a binding.
    Unbind(BindArgs),
    /// Publish messages.
    Publish(PublishArgs),
    /// Consume messages and print one body per line.
    Consume(ConsumeArgs),
    /// Remove every ready message of a queue.
    Purge {
        queue: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// List queues with their message and consumer counts.
    Queues {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// List exchanges.
    Exchanges {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// List bindings.
    Bindings {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Attach a debug shell to a running node: its supervision tree, actors, log.
    Shell(crate::shell::ShellArgs),
    /// Manage the users AMQP clients log in as.
    #[command(subcommand)]
    User(access::UserCmd),
    /// Manage users' per-vhost permissions.
    #[command(subcommand)]
    Permissions(access::PermissionsCmd),
    /// Manage virtual hosts.
    #[command(subcommand)]
    Vhost(access::VhostCmd),
    /// Show the node's memory and disk against their limits and its alarms; with
    /// flags, change the limits until the node restarts.
    Limits(limits::LimitsArgs),
    /// See and manage the cluster's members.
    #[command(subcommand)]
    Cluster(cluster::ClusterCmd),
    /// See and manage the members (replicas) of quorum queues.
    #[command(subcommand)]
    Queue(queue::QueueCmd),
    /// Partitioned streams: declare, add partitions, publish by key, consume.
    #[command(subcommand)]
    Stream(stream::StreamCmd),
}

#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// The node's name (its identity in the cluster).
    #[arg(long, env = "WARREN_NAME")]
    pub name: Option<String>,
    /// Where the node keeps its data and cookie.
    #[arg(long, env = "WARREN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address for cluster sessions (other nodes, client handles, the CLI).
    #[arg(long, env = "WARREN_CLUSTER_LISTEN")]
    pub cluster_listen: Option<SocketAddr>,
    /// Address where other nodes open queue links, the data plane between nodes
    /// (default: --cluster-listen's address, a port the system picks).
    #[arg(long, env = "WARREN_LINK_LISTEN")]
    pub link_listen: Option<SocketAddr>,
    /// Address for AMQP 0-9-1 clients (default 127.0.0.1:5672), or `off`.
    #[arg(long, env = "WARREN_AMQP_LISTEN", value_name = "ADDR|off")]
    pub amqp_listen: Option<String>,
    /// Address for AMQP 0-9-1 over TLS (AMQPS, e.g. 127.0.0.1:5671); off by default.
    /// Needs --tls-cert and --tls-key.
    #[arg(long, env = "WARREN_AMQPS_LISTEN", value_name = "ADDR|off")]
    pub amqps_listen: Option<String>,
    /// Address for the management HTTP API and web UI (default 127.0.0.1:15672), or
    /// `off`.
    #[arg(long, env = "WARREN_HTTP_LISTEN", value_name = "ADDR|off")]
    pub http_listen: Option<String>,
    /// Address for Prometheus metrics (default 127.0.0.1:15692), or `off`.
    #[arg(long, env = "WARREN_PROMETHEUS_LISTEN", value_name = "ADDR|off")]
    pub prometheus_listen: Option<String>,
    /// The AMQPS certificate chain (PEM, leaf first).
    #[arg(long, env = "WARREN_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The AMQPS private key (PEM).
    #[arg(long, env = "WARREN_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM): AMQPS clients must present a certificate signed by one.
    #[arg(long, env = "WARREN_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// The cookie file (created on first start); default DATA_DIR/cookie.
    #[arg(long, env = "WARREN_COOKIE_FILE")]
    pub cookie_file: Option<PathBuf>,
    /// Cluster addresses of nodes to join, comma-separated (HOST:PORT,...).
    #[arg(long, env = "WARREN_SEEDS", value_name = "ADDR,ADDR,...")]
    pub seeds: Option<String>,
    /// `disk` (keeps the cluster's metadata on disk) or `ram` (in memory only).
    #[arg(long, env = "WARREN_ROLE", value_name = "disk|ram")]
    pub role: Option<String>,
    /// Resident memory at which publishers are blocked: a fraction of RAM (default
    /// 0.4) or a size (2GiB).
    #[arg(
        long,
        env = "WARREN_MEMORY_HIGH_WATERMARK",
        value_name = "FRACTION|SIZE"
    )]
    pub memory_high_watermark: Option<String>,
    /// Free disk space below which publishers are blocked (default 50MB).
    #[arg(long, env = "WARREN_DISK_FREE_LIMIT", value_name = "SIZE")]
    pub disk_free_limit: Option<String>,
    /// Metadata log entries applied between two snapshots; the log is compacted
    /// behind each (default 8192).
    #[arg(long, env = "WARREN_METADATA_SNAPSHOT_EVERY", value_name = "ENTRIES")]
    pub metadata_snapshot_every: Option<u64>,
    /// A quorum queue's log entries applied between two snapshots, at least (a
    /// queue holding many messages takes them further apart; default 8192).
    #[arg(long, env = "WARREN_QUEUE_SNAPSHOT_EVERY", value_name = "ENTRIES")]
    pub queue_snapshot_every: Option<u64>,
    /// Milliseconds an idle queue (no message, no consumer) keeps its actor before
    /// it hibernates until the next publish or consumer; 0 keeps every queue's actor
    /// running (default 10000).
    #[arg(long, env = "WARREN_QUEUE_HIBERNATE_AFTER", value_name = "MS")]
    pub queue_hibernate_after: Option<u64>,
    /// A TOML config file; flags override it.
    #[arg(long, env = "WARREN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log filter, e.g. `info` or `warren=debug`.
    #[arg(long, env = "WARREN_LOG")]
    pub log: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Declare {
    /// Declare a queue.
    Queue {
        name: String,
        #[arg(long)]
        durable: bool,
        #[arg(long)]
        exclusive: bool,
        #[arg(long)]
        auto_delete: bool,
        /// A queue argument, e.g. `x-max-length=1000` (values are JSON or plain text).
        #[arg(long = "arg", value_name = "K=V", value_parser = parse_arg)]
        args: Vec<(String, FieldValue)>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Declare an exchange.
    Exchange {
        name: String,
        /// direct, fanout, topic, headers, x-partition-hash, or x-delayed-message (with
        /// `--arg x-delayed-type=TYPE`).
        #[arg(long = "type")]
        kind: String,
        #[arg(long)]
        durable: bool,
        #[arg(long)]
        auto_delete: bool,
        #[arg(long)]
        internal: bool,
        /// An exchange argument, e.g. `alternate-exchange=unrouted`.
        #[arg(long = "arg", value_name = "K=V", value_parser = parse_arg)]
        args: Vec<(String, FieldValue)>,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand, Debug)]
pub enum Delete {
    /// Delete a queue.
    Queue {
        name: String,
        #[arg(long)]
        if_unused: bool,
        #[arg(long)]
        if_empty: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete an exchange.
    Exchange {
        name: String,
        #[arg(long)]
        if_unused: bool,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Args, Debug)]
pub struct BindArgs {
    /// The source exchange.
    #[arg(long)]
    pub exchange: String,
    /// The queue to bind.
    #[arg(
        long,
        conflicts_with = "destination_exchange",
        required_unless_present = "destination_exchange"
    )]
    pub queue: Option<String>,
    /// The exchange to bind (exchange-to-exchange).
    #[arg(long)]
    pub destination_exchange: Option<String>,
    #[arg(long, default_value = "")]
    pub routing_key: String,
    /// A binding argument, e.g. `x-match=any` for headers exchanges.
    #[arg(long = "arg", value_name = "K=V", value_parser = parse_arg)]
    pub args: Vec<(String, FieldValue)>,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Args, Debug)]
pub struct PublishArgs {
    /// The exchange ("" is the default exchange: routing key = queue name).
    #[arg(long, default_value = "")]
    pub exchange: String,
    #[arg(long, default_value = "")]
    pub routing_key: String,
    /// Written to disk on durable queues.
    #[arg(long)]
    pub persistent: bool,
    /// Wait for every confirm; exit non-zero unless all were confirmed.
    #[arg(long)]
    pub confirm: bool,
    /// Fail when a message reaches no queue (without it, the count is a warning).
    #[arg(long)]
    pub mandatory: bool,
    /// How many messages (with --body or --size); default 1.
    #[arg(long)]
    pub count: Option<u64>,
    /// Bodies of this many bytes.
    #[arg(long, conflicts_with = "body")]
    pub size: Option<usize>,
    /// The body text. Without --body or --size, each line of stdin is one message.
    #[arg(long)]
    pub body: Option<String>,
    /// A header, e.g. `format=pdf`.
    #[arg(long = "header", value_name = "K=V", value_parser = parse_arg)]
    pub headers: Vec<(String, FieldValue)>,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    pub queue: String,
    /// Stop after this many messages (default: run until Ctrl-C).
    #[arg(long)]
    pub count: Option<u64>,
    /// Messages count as acked when sent.
    #[arg(long)]
    pub no_ack: bool,
    #[arg(long, default_value_t = 100)]
    pub prefetch: u32,
    /// Where a stream consumer starts (`x-stream-offset`): first, last, next, an
    /// offset, or an interval such as 1h.
    #[arg(long, value_name = "first|last|next|N|1h")]
    pub offset: Option<String>,
    #[command(flatten)]
    pub conn: Conn,
}

/// Parses `K=V`: V as JSON when it is JSON (numbers, booleans, quoted strings), else text.
pub fn parse_arg(s: &str) -> Result<(String, FieldValue), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not K=V (e.g. x-max-length=1000)"))?;
    if k.is_empty() {
        return Err(format!("'{s}' has an empty key"));
    }
    let value = match serde_json::from_str::<serde_json::Value>(v) {
        Ok(json) => json_to_field(&json)?,
        Err(_) => FieldValue::string(v),
    };
    Ok((k.to_string(), value))
}

fn json_to_field(v: &serde_json::Value) -> Result<FieldValue, String> {
    use serde_json::Value;
    Ok(match v {
        Value::Null => FieldValue::Void,
        Value::Bool(b) => FieldValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => FieldValue::I64(i),
            None => FieldValue::F64(n.as_f64().ok_or("number out of range")?),
        },
        Value::String(s) => FieldValue::string(s.clone()),
        Value::Array(a) => {
            FieldValue::Array(a.iter().map(json_to_field).collect::<Result<_, _>>()?)
        }
        Value::Object(o) => FieldValue::Table(
            o.iter()
                .map(|(k, v)| Ok((k.clone(), json_to_field(v)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

pub(crate) fn table(args: Vec<(String, FieldValue)>) -> FieldTable {
    args.into_iter().collect()
}

/// Runs a client command; the error is the one line to print.
pub async fn run_client(command: Command) -> Result<(), String> {
    let e = |e: ClientError| e.to_string();
    match command {
        Command::Node(_) | Command::Shell(_) => {
            unreachable!("handled by main")
        }
        Command::Declare(Declare::Queue {
            name,
            durable,
            exclusive,
            auto_delete,
            args,
            conn,
        }) => {
            let client = conn.connect().await.map_err(e)?;
            let ok = client
                .declare_queue(
                    &name,
                    QueueOptions {
                        durable,
                        exclusive,
                        auto_delete,
                        passive: false,
                        arguments: table(args),
                    },
                )
                .await
                .map_err(e)?;
            println!(
                "queue {} declared ({} messages, {} consumers)",
                ok.name, ok.messages, ok.consumers
            );
        }
        Command::Declare(Declare::Exchange {
            name,
            kind,
            durable,
            auto_delete,
            internal,
            args,
            conn,
        }) => {
            let client = conn.connect().await.map_err(e)?;
            client
                .declare_exchange(
                    &name,
                    &kind,
                    ExchangeOptions {
                        durable,
                        auto_delete,
                        internal,
                        passive: false,
                        arguments: table(args),
                    },
                )
                .await
                .map_err(e)?;
            println!("exchange {name} declared");
        }
        Command::Delete(Delete::Queue {
            name,
            if_unused,
            if_empty,
            conn,
        }) => {
            let client = conn.connect().await.map_err(e)?;
            let n = client
                .delete_queue(&name, if_unused, if_empty)
                .await
                .map_err(e)?;
            println!("queue {name} deleted ({n} messages)");
        }
        Command::Delete(Delete::Exchange {
            name,
            if_unused,
            conn,
        }) => {
            let client = conn.connect().await.map_err(e)?;
            client.delete_exchange(&name, if_unused).await.map_err(e)?;
            println!("exchange {name} deleted");
        }
        Command::Bind(b) => bind(b, true).await?,
        Command::Unbind(b) => bind(b, false).await?,
        Command::Publish(p) => publish(p).await?,
        Command::Consume(c) => consume(c).await?,
        Command::User(cmd) => access::user(cmd).await?,
        Command::Permissions(cmd) => access::permissions(cmd).await?,
        Command::Vhost(cmd) => access::vhost(cmd).await?,
        Command::Limits(args) => limits::limits(args).await?,
        Command::Cluster(cmd) => cluster::cluster(cmd).await?,
        Command::Queue(cmd) => queue::queue(cmd).await?,
        Command::Stream(cmd) => stream::stream(cmd).await?,
        Command::Purge { queue, conn } => {
            let client = conn.connect().await.map_err(e)?;
            let n = client.purge(&queue).await.map_err(e)?;
            println!("queue {queue} purged ({n} messages)");
        }
        Command::Queues { json, conn } => {
            let client = conn.connect().await.map_err(e)?;
            let mut queues = client.queues().await.map_err(e)?;
            queues.sort_by(|a, b| a.name.cmp(&b.name));
            if json {
                println!("{}", listing::queues_json(&queues));
            } else {
                print!("{}", listing::queues_text(&queues));
            }
        }
        Command::Exchanges { json, conn } => {
            let client = conn.connect().await.map_err(e)?;
            let mut exchanges = client.exchanges().await.map_err(e)?;
            exchanges.sort_by(|a, b| a.name.cmp(&b.name));
            if json {
                println!("{}", listing::exchanges_json(&exchanges));
            } else {
                print!("{}", listing::exchanges_text(&exchanges));
            }
        }
        Command::Bindings { json, conn } => {
            let client = conn.connect().await.map_err(e)?;
            let bindings = client.bindings().await.map_err(e)?;
            if json {
                println!("{}", listing::bindings_json(&bindings));
            } else {
                print!("{}", listing::bindings_text(&bindings));
            }
        }
    }
    Ok(())
}

async fn bind(b: BindArgs, add: bool) -> Result<(), String> {
    let e = |e: ClientError| e.to_string();
    let client = b.conn.connect().await.map_err(e)?;
    let args = table(b.args);
    match (&b.queue, &b.destination_exchange) {
        (Some(q), _) if add => {
            client
                .bind_queue(q, &b.exchange, &b.routing_key, args)
                .await
        }
        (Some(q), _) => {
            client
                .unbind_queue(q, &b.exchange, &b.routing_key, args)
                .await
        }
        (None, Some(x)) if add => {
            client
                .bind_exchange(x, &b.exchange, &b.routing_key, args)
                .await
        }
        (None, Some(x)) => {
            client
                .unbind_exchange(x, &b.exchange, &b.routing_key, args)
                .await
        }
        (None, None) => return Err("give --queue Q or --destination-exchange X".into()),
    }
    .map_err(e)?;
    println!("{}", if add { "bound" } else { "unbound" });
    Ok(())
}

/// The bodies a publish command sends: `--body` or `--size` bytes `--count` times,
/// else each line of stdin.
pub(crate) fn bodies(
    body: &Option<String>,
    size: Option<usize>,
    count: Option<u64>,
) -> Result<Box<dyn Iterator<Item = Bytes>>, String> {
    Ok(match (body, size) {
        (Some(body), _) => {
            let body = Bytes::from(body.clone().into_bytes());
            Box::new(std::iter::repeat_n(body, count.unwrap_or(1) as usize))
        }
        (None, Some(size)) => {
            let body = Bytes::from(vec![b'x'; size]);
            Box::new(std::iter::repeat_n(body, count.unwrap_or(1) as usize))
        }
        (None, None) => {
            let lines: Vec<Bytes> = std::io::stdin()
                .lock()
                .lines()
                .map(|l| l.map(|l| Bytes::from(l.into_bytes())))
                .collect::<Result<_, _>>()
                .map_err(|err| format!("cannot read stdin: {err}"))?;
            Box::new(lines.into_iter())
        }
    })
}

async fn publish(p: PublishArgs) -> Result<(), String> {
    let e = |e: ClientError| e.to_string();
    let bodies = bodies(&p.body, p.size, p.count)?;
    let client = p.conn.connect().await.map_err(e)?;
    let mut properties = warren_actors::message::Properties::default();
    if !p.headers.is_empty() {
        properties.headers = Some(table(p.headers));
    }
    // Always mandatory at the node, so that the CLI can say how many reached no queue;
    // `--mandatory` makes that a failure.
    let options = PublishOptions {
        persistent: p.persistent,
        mandatory: true,
        properties,
    };
    let mut confirms = Vec::new();
    for body in bodies {
        confirms.push(
            client
                .publish(&p.exchange, &p.routing_key, body, options.clone())
                .await
                .map_err(e)?,
        );
    }
    let total = confirms.len();
    let (mut confirmed, mut unroutable, mut refused) = (0usize, 0usize, Vec::new());
    for c in confirms {
        match c.await {
            Ok(PublishResult::Confirmed) => confirmed += 1,
            Ok(PublishResult::Unroutable) => unroutable += 1,
            Ok(PublishResult::Rejected(why)) => refused.push(why),
            Ok(PublishResult::Failed(reply)) => refused.push(reply.to_string()),
            Err(err) => refused.push(err.to_string()),
        }
    }
    if let Some(first) = refused.first() {
        let msg = format!(
            "{} of {total} messages were not confirmed: {first}",
            refused.len()
        );
        if p.confirm {
            return Err(msg);
        }
        eprintln!("warning: {msg}");
    }
    if unroutable > 0 {
        let msg = format!("{unroutable} of {total} messages reached no queue");
        if p.mandatory {
            return Err(format!("{msg} (returned: --mandatory)"));
        }
        eprintln!("warning: {msg} (dropped; --mandatory makes that an error)");
    }
    if p.confirm {
        println!("published {total} messages, {confirmed} confirmed");
    } else {
        println!("published {total} messages");
    }
    Ok(())
}

async fn consume(c: ConsumeArgs) -> Result<(), String> {
    let e = |e: ClientError| e.to_string();
    let client = c.conn.connect().await.map_err(e)?;
    let mut consumer = client
        .consume(
            &c.queue,
            ConsumeOptions {
                prefetch: c.prefetch,
                no_ack: c.no_ack,
                arguments: match &c.offset {
                    Some(offset) => {
                        FieldTable::from([parse_arg(&format!("x-stream-offset={offset}"))?])
                    }
                    None => FieldTable::new(),
                },
                ..Default::default()
            },
        )
        .await
        .map_err(e)?;
    let mut seen = 0u64;
    let stdout = std::io::stdout();
    while c.count.is_none_or(|n| seen < n) {
        let next = tokio::select! {
            d = consumer.next() => d,
            _ = tokio::signal::ctrl_c() => None,
        };
        let Some(delivery) = next else { break };
        let delivery = delivery.map_err(e)?;
        {
            let mut out = stdout.lock();
            out.write_all(&delivery.body)
                .map_err(|err| err.to_string())?;
            out.write_all(b"\n").map_err(|err| err.to_string())?;
        }
        if !c.no_ack {
            delivery.ack().map_err(e)?;
        }
        seen += 1;
    }
    let _ = consumer.cancel().await;
    // Let the last acks leave before the process ends.
    client.flush_settles().await;
    Ok(())
}
