//! The interactive prompt: line editing and history (rustyline), tab completion of
//! commands and actor names, one clear line for every error, and a prompt that stays.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};

use super::command::COMMANDS;
use super::{execute, parse, render, Flow, ShellArgs};
use crate::client::{Client, ClientError};

/// What completion offers besides command names: actor and queue names, refreshed
/// after every command.
#[derive(Default)]
struct Names {
    actors: Vec<String>,
    queues: Vec<String>,
}

struct ShellHelper {
    names: Arc<Mutex<Names>>,
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before.rfind(char::is_whitespace).map_or(0, |i| i + 1);
        let word = &before[start..];
        let first_word = before[..start].trim().is_empty();
        let command = before.split_whitespace().next().unwrap_or("");
        let names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        let pool: Vec<&str> = if first_word {
            COMMANDS.iter().map(|(n, _, _)| *n).collect()
        } else if command == "trace" {
            names.queues.iter().map(String::as_str).collect()
        } else if command == "help" {
            COMMANDS.iter().map(|(n, _, _)| *n).collect()
        } else {
            names.actors.iter().map(String::as_str).collect()
        };
        let candidates = pool
            .into_iter()
            .filter(|c| c.starts_with(word))
            .map(|c| Pair {
                display: c.to_string(),
                replacement: format!("{c} "),
            })
            .collect();
        Ok((start, candidates))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(
        &'s self,
        prompt: &'p str,
        _default: bool,
    ) -> Cow<'b, str> {
        Cow::Borrowed(prompt)
    }
}

impl Validator for ShellHelper {}

impl Helper for ShellHelper {}

fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".warren_shell_history"))
}

/// Refreshes the names completion offers (best effort: a failure keeps the old ones).
async fn refresh(client: &Client, names: &Mutex<Names>) {
    let mut actors = Vec::new();
    if let Ok(tree) = client.tree(None).await {
        render::names(&tree, &mut actors);
    }
    let queues = client
        .queues()
        .await
        .map(|q| q.into_iter().map(|q| q.name).collect())
        .unwrap_or_default();
    let mut n = names.lock().unwrap_or_else(|p| p.into_inner());
    if !actors.is_empty() {
        n.actors = actors;
    }
    n.queues = queues;
}

pub async fn run(args: ShellArgs) -> Result<(), String> {
    let names = Arc::new(Mutex::new(Names::default()));
    let mut editor: Editor<ShellHelper, DefaultHistory> =
        Editor::new().map_err(|e| format!("cannot open the terminal: {e}"))?;
    editor.set_helper(Some(ShellHelper {
        names: names.clone(),
    }));
    let history = history_path();
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }

    let mut client: Option<Client> = match args.conn.connect().await {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("error: {e}");
            None
        }
    };
    if let Some(c) = &client {
        refresh(c, &names).await;
        println!(
            "attached to {}; type `help` for the commands, Tab completes, Ctrl-D leaves",
            args.conn.node
        );
    }
    let prompt = format!("warren@{}> ", args.conn.node);
    loop {
        let (ed, line) = tokio::task::spawn_blocking({
            let prompt = prompt.clone();
            move || {
                let line = editor.readline(&prompt);
                (editor, line)
            }
        })
        .await
        .map_err(|e| format!("the prompt failed: {e}"))?;
        editor = ed;
        let line = match line {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(format!("cannot read the terminal: {e}")),
        };
        if !line.trim().is_empty() {
            let _ = editor.add_history_entry(line.as_str());
        }
        let command = match parse(&line) {
            Ok(Some(c)) => c,
            Ok(None) => continue,
            Err(e) => {
                eprintln!("error: {e}");
                continue;
            }
        };
        if client.is_none() {
            match args.conn.connect().await {
                Ok(c) => client = Some(c),
                Err(e) => {
                    eprintln!("error: {e}");
                    continue;
                }
            }
        }
        let Some(c) = &client else { continue };
        let mut out = std::io::stdout();
        match execute(c, &args.conn, command, args.json, &mut out).await {
            Ok(Flow::Quit) => break,
            Ok(Flow::Continue) => refresh(c, &names).await,
            Err(e) => {
                eprintln!("error: {e}");
                // A session that is gone is dialled again before the next command.
                if matches!(
                    c.queues().await,
                    Err(ClientError::Disconnected(_) | ClientError::Timeout(_))
                ) {
                    client = None;
                }
            }
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    Ok(())
}
