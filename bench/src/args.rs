//! The flags of `warren-bench`: the scenario (publishers, consumers, count, size,
//! persistence, confirms, prefetch, rate, queues) and which client drives the broker.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use warren::client::{Client, ClientError, ConnectOptions};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "warren-bench",
    version,
    about = "Measure a broker's throughput and latency: a Warren node through the client \
             handle, or any AMQP 0-9-1 broker (Warren or RabbitMQ) with --amqp URI",
    long_about = "Measure a broker's throughput and latency, and check that every message \
                  arrived exactly once.\n\n\
                  Clients:\n  \
                  (default)            Warren's Rust client handle, over the cluster transport\n  \
                  --amqp URI           AMQP 0-9-1 through amqprs, a maintained client \
                  library: what an application's client costs the broker\n  \
                  --amqp URI --raw-frames\n                       the bench's own raw-frame \
                  AMQP client (pre-encoded publishes, hand-parsed deliveries): what the broker \
                  costs with a minimal client"
)]
pub struct BenchArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// Publishing tasks (each with its own connection).
    #[arg(long, default_value_t = 1)]
    pub publishers: u32,
    /// Consuming tasks (each with its own connection); 0: fill the queue only.
    #[arg(long, default_value_t = 1)]
    pub consumers: u32,
    /// Messages per publisher.
    #[arg(long, default_value_t = 200_000)]
    pub count: u64,
    /// Body size in bytes (at least 24: the bench's own header).
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Persistent messages on a durable queue.
    #[arg(long)]
    pub persistent: bool,
    /// The queues' type, declared as `x-queue-type` (`quorum`: a durable queue
    /// replicated by a Raft group; needs --persistent). AMQP (--amqp) only.
    #[arg(long, value_name = "TYPE")]
    pub queue_type: Option<String>,
    /// Wait for confirms (at most --window unconfirmed per publisher).
    #[arg(long)]
    pub confirm: bool,
    /// With --confirm: how many messages a publisher may have unconfirmed.
    #[arg(long, default_value_t = 2000)]
    pub window: usize,
    /// How many unacked deliveries a consumer may hold (basic.qos).
    #[arg(long, default_value_t = 1000)]
    pub prefetch: u32,
    /// Consumers take deliveries without acks (`no-ack`); --prefetch then does not
    /// apply. AMQP through amqprs only.
    #[arg(long)]
    pub no_ack: bool,
    /// Publish at this many msg/s per publisher (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// The queue to use (declared, purged first unless --drain-only).
    #[arg(long, default_value = "warren-bench")]
    pub queue: String,
    /// Only consume what is in the queue (--count messages per consumer in total).
    #[arg(long)]
    pub drain_only: bool,
    /// Spread publishers and consumers over this many queues (QUEUE-0, QUEUE-1, ...);
    /// publisher i and consumer i use queue i mod N.
    #[arg(long, default_value_t = 1)]
    pub queues: u32,
    /// Each publisher sends its messages round every queue of --queues (message i to
    /// queue i mod N) instead of to one: many partitions fed by few publishers.
    /// AMQP (--amqp) only; use with --consumers 0.
    #[arg(long)]
    pub spread: bool,
    /// Consumers connect to this node instead of --node (the cross-node benchmark:
    /// publisher on one node, consumer on another, queue declared on a third).
    #[arg(long, value_name = "ADDR")]
    pub consume_node: Option<SocketAddr>,
    /// Measure metadata instead: declare this many transient queues through the
    /// nodes of --nodes at once, report the time, delete them.
    #[arg(long, value_name = "N")]
    pub declarations: Option<u64>,
    /// The nodes --declarations goes through (comma-separated; default: --node).
    #[arg(long, value_name = "ADDR,ADDR", value_delimiter = ',')]
    pub nodes: Vec<SocketAddr>,
    /// Drive an AMQP 0-9-1 broker instead of the client handle, e.g.
    /// amqp://guest:guest@127.0.0.1:5672/%2f (Warren's AMQP port, or RabbitMQ's),
    /// through the amqprs client library.
    #[arg(long, value_name = "URI")]
    pub amqp: Option<String>,
    /// With --amqp: the bench's own raw-frame AMQP client instead of amqprs (about a
    /// seventh of amqprs's CPU per message; not what an application's client sends).
    #[arg(long, requires = "amqp")]
    pub raw_frames: bool,
    /// With --amqp: consumers connect here instead (another node of the same cluster:
    /// publisher through one node, consumer through another).
    #[arg(long, value_name = "URI", requires = "amqp")]
    pub consume_amqp: Option<String>,
    /// With --amqp: delayed messages instead (an `x-delayed-message` exchange): one
    /// publisher sends --count messages with confirms, each delayed --delay-base-ms plus
    /// a share of this spread (ms), and one consumer reports how late each arrived.
    #[arg(long, value_name = "SPREAD_MS", requires = "amqp")]
    pub delayed: Option<u64>,
    /// With --delayed: the shortest delay, in ms (long enough for every message to be
    /// held at once when the last is published).
    #[arg(long, default_value_t = 30_000)]
    pub delay_base_ms: u64,
    /// With --amqp: connection churn instead: N connections (--publishers at a time),
    /// each connecting, logging in, opening a channel, declaring --queue and closing.
    #[arg(long, value_name = "N", requires = "amqp")]
    pub churn: Option<u64>,
    /// With --amqp: many durable queues instead: --publishers clients declare N
    /// queues QUEUE-0 …, the node idles, then --count persistent messages go to
    /// random queues with confirms (see `many_queues.rs`).
    #[arg(long, value_name = "N", requires = "amqp")]
    pub many_queues: Option<u64>,
    /// With --many-queues: seconds without a request before the idle measurement.
    #[arg(long, default_value_t = 15)]
    pub idle_secs: u64,
    /// With --many-queues: only wait until the broker answers a passive declare of
    /// QUEUE-0, and say how long that took (a restart's time to serving).
    #[arg(long)]
    pub until_serving: bool,
    /// A partitioned stream of N partitions (named --queue) through the client handle
    /// instead: one producer appends --count records without keys (a batch's worth to
    /// a partition, then the next; --round-robin: one record each in turn) (at most
    /// --window unconfirmed), then, unless --consumers 0, one stream consumer reads them
    /// back from `first` (see `stream.rs`).
    #[arg(long, value_name = "N", conflicts_with = "amqp")]
    pub stream_partitions: Option<u32>,
    /// With --stream-partitions: the producer's linger (ms), how long a record may
    /// wait for its partition's batch to fill.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// With --stream-partitions: the producer's batch size per partition, in bytes.
    #[arg(long, default_value_t = 16 * 1024)]
    pub batch_bytes: usize,
    /// With --stream-partitions: send record i to partition i mod N, as records with
    /// keys spread (instead of the producer's sticky choice for records without keys).
    #[arg(long)]
    pub round_robin: bool,
    /// The broker's process id: --delayed and --churn report its CPU (and --delayed
    /// its RSS) from /proc.
    #[arg(long, value_name = "PID")]
    pub broker_pid: Option<u32>,
}

impl BenchArgs {
    /// The queue publisher or consumer `i` uses.
    pub fn queue_of(&self, i: u32) -> String {
        if self.queues <= 1 {
            self.queue.clone()
        } else {
            format!("{}-{}", self.queue, i % self.queues)
        }
    }

    /// Every queue of the run.
    pub fn queue_names(&self) -> Vec<String> {
        (0..self.queues.max(1)).map(|i| self.queue_of(i)).collect()
    }
}

/// How the client handle reaches a node (the same flags and variables as `warren`'s
/// client commands).
#[derive(clap::Args, Debug, Clone)]
pub struct Conn {
    /// The node's cluster address.
    #[arg(long, env = "WARREN_NODE", default_value = warren::client::DEFAULT_NODE_ADDR)]
    pub node: SocketAddr,
    /// The node's cookie file.
    #[arg(long, env = "WARREN_COOKIE_FILE", default_value = warren::client::DEFAULT_COOKIE_FILE)]
    pub cookie_file: PathBuf,
    /// The vhost the bench works in (client handle only; with --amqp, the URI's).
    #[arg(long, env = "WARREN_VHOST", default_value = "/")]
    pub vhost: String,
    /// What the client handle keeps unconfirmed before a publish waits, in MiB (its
    /// `ConnectOptions::buffer_bytes`; client handle only).
    #[arg(long, default_value_t = 32)]
    pub buffer_mib: usize,
}

impl Conn {
    /// A client handle to `node` (or to --node).
    pub async fn connect_to(&self, node: Option<SocketAddr>) -> Result<Client, ClientError> {
        let mut options = ConnectOptions::new(node.unwrap_or(self.node), &self.cookie_file)?;
        options.client_name = "warren-bench".into();
        options.vhost = self.vhost.clone();
        options.buffer_bytes = self.buffer_mib.saturating_mul(1 << 20);
        Client::connect(options).await
    }
}
