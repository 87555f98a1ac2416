//! The `warren` command: start a node, or talk to one.

use clap::Parser;
use tracing_subscriber::EnvFilter;
use warren::cli::{Cli, Command, NodeArgs};
use warren::node::config::{ConfigFile, NodeConfig};

/// mimalloc instead of glibc's malloc: the node allocates and frees message buffers on
/// several threads, where glibc's per-thread arenas kept hundreds of MiB after a
/// backlog had drained (docs/2026-11-24-memory-bound.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // (docs/2026-12-05-transparent-huge-pages.md)
    warren::process::without_transparent_huge_pages();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Node(_)) {
        quit_quietly_when_stdout_closes();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Node(args) => run_node(*args).await,
            Command::Shell(args) => warren::shell::run(args).await,
            other => warren::cli::run_client(other).await,
        }
    });
    if let Err(message) = result {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
    // Client commands leave actors (the transport) running: end the process now.
    std::process::exit(0);
}

/// A client command piped into `head` ends quietly, as other Unix tools do, instead of
/// failing on its next write. Not for the node: its sockets rely on SIGPIPE being
/// ignored.
fn quit_quietly_when_stdout_closes() {
    #[cfg(unix)]
    // SAFETY: runs first in main, before any other thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

async fn run_node(args: NodeArgs) -> Result<(), String> {
    let mut config = NodeConfig::default();
    if let Some(path) = &args.config {
        config
            .apply(ConfigFile::load(path).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    if let Some(v) = args.name {
        config.name = v;
    }
    if let Some(v) = args.data_dir {
        config.data_dir = v;
    }
    if let Some(v) = args.cluster_listen {
        config.cluster_listen = v;
    }
    if let Some(v) = args.link_listen {
        config.link_listen = Some(v);
    }
    if let Some(v) = &args.amqp_listen {
        config.amqp_listen =
            warren::node::config::parse_amqp_listen(v).map_err(|e| e.to_string())?;
    }
    if let Some(v) = &args.amqps_listen {
        config.amqps_listen =
            warren::node::config::parse_amqp_listen(v).map_err(|e| e.to_string())?;
    }
    if let Some(v) = &args.http_listen {
        config.http_listen =
            warren::node::config::parse_listen(v, "--http-listen").map_err(|e| e.to_string())?;
    }
    if let Some(v) = &args.prometheus_listen {
        config.prometheus_listen = warren::node::config::parse_listen(v, "--prometheus-listen")
            .map_err(|e| e.to_string())?;
    }
    config.set_tls(
        args.tls_cert.clone(),
        args.tls_key.clone(),
        args.tls_client_ca.clone(),
    );
    if args.cookie_file.is_some() {
        config.cookie_file = args.cookie_file;
    }
    if let Some(v) = args.log {
        config.log = v;
    }
    if let Some(v) = &args.seeds {
        config.seeds = warren::node::config::parse_seeds(v);
    }
    if let Some(v) = &args.memory_high_watermark {
        config.memory_high_watermark = warren_resources::alarm::MemoryLimit::parse(v)?;
    }
    if let Some(v) = &args.disk_free_limit {
        config.disk_free_limit =
            warren::node::config::parse_disk_free_limit(v).map_err(|e| e.to_string())?;
    }
    if let Some(v) = args.metadata_snapshot_every {
        config.metadata_snapshot_every = v;
    }
    if let Some(v) = args.queue_snapshot_every {
        config.queue_snapshot_every = v;
    }
    if let Some(v) = args.queue_hibernate_after {
        config.queue_hibernate_after = v;
    }
    if let Some(v) = &args.role {
        config.role = warren::node::config::parse_role(v).map_err(|e| e.to_string())?;
    }
    let filter = EnvFilter::try_new(&config.log)
        .map_err(|e| format!("--log '{}' is not a valid filter: {e}", config.log))?;
    {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        use tracing_subscriber::Layer;
        // What the node prints follows --log; the debug shell's `log` also sees
        // debug lines kept in memory.
        tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_target(false)
                    .with_filter(filter),
            )
            .with(
                warren::node::log_ring::LogRing::global()
                    .layer(tracing::Level::DEBUG)
                    .with_filter(
                        EnvFilter::try_new("warn,ractor_cluster=error,warren=debug,warren_actors=debug,warren_supervisor=debug,warren_cluster=debug,warren_storage=debug")
                            .map_err(|e| e.to_string())?,
                    ),
            )
            .init();
    }

    raise_file_limit();
    let node = warren::node::start(config)
        .await
        .map_err(|e| e.to_string())?;
    wait_for_stop_signal().await;
    node.shutdown().await;
    Ok(())
}

async fn wait_for_stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                    _ = warren::node::stop_requested() => {}
                }
            }
            Err(_) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = warren::node::stop_requested() => {}
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = warren::node::stop_requested() => {}
        }
    }
}

/// Every AMQP connection and cluster session holds a file descriptor: the soft limit
/// of open files goes up to the hard limit at start (often 1 024 -> 524 288), and the
/// log says what it is.
fn raise_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            limit.rlim_cur = before;
        }
    }
    if limit.rlim_cur > before {
        tracing::info!(
            "open file limit raised from {before} to {} (the hard limit): one per connection",
            limit.rlim_cur
        );
    } else {
        tracing::info!(
            "open file limit {} (one per connection; raise the hard limit, `ulimit -Hn`, for more)",
            limit.rlim_cur
        );
    }
}
