//! `warren shell`: attach to a running node and look at (and poke) its supervision
//! tree, the way an Erlang operator uses the shell and observer.
//!
//! | file | concern |
//! | --- | --- |
//! | `command.rs` | parsing a line into a [`ShellCommand`]; help texts |
//! | `render.rs` | drawing trees, actor details, members, log lines, traces |
//! | `repl.rs` | the interactive prompt: line editing, history, completion |
//!
//! `--eval CMD` runs one command and exits (non-zero on error); `--json` prints
//! machine-readable results.

mod command;
pub(crate) mod render;
mod repl;

use std::io::Write;

use clap::Args;
use serde_json::json;

pub use command::{parse, ShellCommand, COMMANDS};

use crate::client::{Client, ClientError};
use crate::conn::Conn;
use crate::listing;

#[derive(Args, Debug, Clone)]
pub struct ShellArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// Run one command and exit (non-zero on error), e.g. --eval "tree".
    #[arg(long, value_name = "CMD")]
    pub eval: Option<String>,
    /// Print results as JSON.
    #[arg(long)]
    pub json: bool,
}

/// After a command: go on, or leave the shell.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Quit,
}

pub async fn run(args: ShellArgs) -> Result<(), String> {
    match &args.eval {
        Some(line) => {
            let client = args.conn.connect().await.map_err(|e| e.to_string())?;
            let Some(command) = parse(line)? else {
                return Err("--eval needs a command, e.g. --eval \"tree\"".into());
            };
            let mut out = std::io::stdout();
            execute(&client, &args.conn, command, args.json, &mut out).await?;
            Ok(())
        }
        None => repl::run(args).await,
    }
}

/// A connection to the member `node` (the attached node itself, or another member,
/// dialled at the address the attached node knows it by, with the same cookie).
async fn other_member(client: &Client, conn: &Conn, node: &str) -> Result<Client, String> {
    let members = client.nodes().await.map_err(client_error)?;
    let Some(member) = members.iter().find(|m| m.name == node) else {
        let names: Vec<_> = members.iter().map(|m| m.name.as_str()).collect();
        return Err(format!(
            "no member '{node}' in this cluster (members: {})",
            names.join(", ")
        ));
    };
    if member.this_node {
        return Ok(client.clone());
    }
    if member.health == "down" {
        return Err(format!("member '{node}' is down (see `nodes`)"));
    }
    let address = member
        .address
        .parse()
        .map_err(|_| format!("member '{node}' has no usable address: {}", member.address))?;
    let other = Conn {
        node: address,
        cookie_file: conn.cookie_file.clone(),
        vhost: conn.vhost.clone(),
    };
    other
        .connect()
        .await
        .map_err(|err| format!("cannot attach to member '{node}' at {address}: {err}"))
}

fn client_error(e: ClientError) -> String {
    e.to_string()
}

fn emit(out: &mut dyn Write, text: &str) -> Result<(), String> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write the output: {e}"))
}

fn emit_json(out: &mut dyn Write, value: &serde_json::Value) -> Result<(), String> {
    emit(out, &format!("{value}\n"))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, String> {
    serde_json::to_value(value).map_err(|e| format!("cannot show the answer as JSON: {e}"))
}

/// Runs one command against the node (`client`, reached through `conn`) and writes
/// what it shows.
pub async fn execute(
    client: &Client,
    conn: &Conn,
    command: ShellCommand,
    json: bool,
    out: &mut dyn Write,
) -> Result<Flow, String> {
    let e = client_error;
    match command {
        ShellCommand::Tree { name, node } => {
            let tree = match node {
                Some(node) => other_member(client, conn, &node)
                    .await?
                    .tree(name.as_deref())
                    .await
                    .map_err(|err| format!("member '{node}': {err}"))?,
                None => client.tree(name.as_deref()).await.map_err(e)?,
            };
            if json {
                emit_json(out, &to_json(&tree)?)?;
            } else {
                emit(out, &render::tree(&tree))?;
            }
        }
        ShellCommand::Nodes => {
            let nodes = client.nodes().await.map_err(e)?;
            if json {
                emit_json(out, &to_json(&nodes)?)?;
            } else {
                emit(out, &render::nodes(&nodes))?;
            }
        }
        ShellCommand::Queues => {
            let mut queues = client.queues().await.map_err(e)?;
            queues.sort_by(|a, b| a.name.cmp(&b.name));
            if json {
                emit_json(out, &listing::queues_json(&queues))?;
            } else {
                emit(out, &listing::queues_text(&queues))?;
            }
        }
        ShellCommand::Exchanges => {
            let mut exchanges = client.exchanges().await.map_err(e)?;
            exchanges.sort_by(|a, b| a.name.cmp(&b.name));
            if json {
                emit_json(out, &listing::exchanges_json(&exchanges))?;
            } else {
                emit(out, &listing::exchanges_text(&exchanges))?;
            }
        }
        ShellCommand::Bindings => {
            let bindings = client.bindings().await.map_err(e)?;
            if json {
                emit_json(out, &listing::bindings_json(&bindings))?;
            } else {
                emit(out, &listing::bindings_text(&bindings))?;
            }
        }
        ShellCommand::Inspect { name } => {
            let details = client.inspect(&name).await.map_err(e)?;
            if json {
                emit_json(out, &to_json(&details)?)?;
            } else {
                emit(out, &render::inspect(&details))?;
            }
        }
        ShellCommand::Raft { queue } => {
            let queues = client.queues().await.map_err(e)?;
            let q = listing::queue_named(&queues, &queue)?;
            if json {
                emit_json(out, &listing::queue_json(q))?;
            } else {
                emit(out, &listing::replication_text(q))?;
            }
        }
        ShellCommand::Stop { name } => {
            client.stop_actor(&name).await.map_err(e)?;
            emit(out, &format!("stopped {name}\n"))?;
        }
        ShellCommand::Crash { name } => {
            client.crash_actor(&name).await.map_err(e)?;
            emit(out, &format!("crashed {name}\n"))?;
        }
        ShellCommand::Trace { queue, count } => trace(client, &queue, count, json, out).await?,
        ShellCommand::Log { level, lines } => {
            let lines = client.log(&level, lines).await.map_err(e)?;
            if json {
                emit_json(out, &to_json(&lines)?)?;
            } else {
                emit(out, &render::log_lines(&lines))?;
            }
        }
        ShellCommand::Help { command } => emit(out, &command::help(command.as_deref())?)?,
        ShellCommand::Quit => return Ok(Flow::Quit),
    }
    Ok(Flow::Continue)
}

/// Tails a queue until `count` messages were shown or Ctrl-C.
async fn trace(
    client: &Client,
    queue: &str,
    count: Option<u64>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), String> {
    let mut trace = client.trace(queue).await.map_err(client_error)?;
    if !json {
        let until = match count {
            Some(n) => format!("{n} messages or Ctrl-C"),
            None => "Ctrl-C".into(),
        };
        emit(out, &format!("tracing {queue} until {until}\n"))?;
    }
    let mut shown = 0u64;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    'tail: while count.is_none_or(|n| shown < n) {
        let batch = tokio::select! {
            batch = trace.next() => batch,
            _ = &mut interrupted => break 'tail,
        };
        let Some(batch) = batch else {
            return Err("the node closed the session while tracing".into());
        };
        for m in batch {
            if json {
                emit_json(out, &json!(m))?;
            } else {
                emit(out, &render::traced(&m))?;
            }
            shown += 1;
            if count.is_some_and(|n| shown >= n) {
                break 'tail;
            }
        }
    }
    trace.stop().await.map_err(client_error)
}
