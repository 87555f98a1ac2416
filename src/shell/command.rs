//! The shell's commands: parsing a line into a [`ShellCommand`], and the help texts.

/// One line the operator typed, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShellCommand {
    Tree {
        name: Option<String>,
        node: Option<String>,
    },
    Nodes,
    Queues,
    Exchanges,
    Bindings,
    Inspect {
        name: String,
    },
    Raft {
        queue: String,
    },
    Stop {
        name: String,
    },
    Crash {
        name: String,
    },
    Trace {
        queue: String,
        count: Option<u64>,
    },
    Log {
        level: String,
        lines: u32,
    },
    Help {
        command: Option<String>,
    },
    Quit,
}

/// Every command: name, usage, what it does.
pub const COMMANDS: &[(&str, &str, &str)] = &[
    (
        "tree",
        "tree [NAME] [--node NODE]",
        "the supervision tree: each actor's name, kind, status, restart count, mailbox \
         length and uptime; a subtree by NAME; another member's tree with --node",
    ),
    (
        "nodes",
        "nodes",
        "the cluster's members, their roles, up or down, and which one leads the metadata",
    ),
    (
        "queues",
        "queues",
        "queues with their counts: messages, ready, unacked, consumers, memory",
    ),
    (
        "exchanges",
        "exchanges",
        "exchanges with their type and durability",
    ),
    (
        "bindings",
        "bindings",
        "bindings: source, destination, routing key",
    ),
    (
        "inspect",
        "inspect NAME",
        "an actor's state: for a queue its counts, consumers and their credit, bytes in \
         memory and on disk; its supervisor and strategy",
    ),
    (
        "raft",
        "raft QUEUE",
        "a quorum queue's Raft group: the node serving it, its Raft leader, term and \
         commit index, and each member's role, match index and whether it is in sync",
    ),
    (
        "stop",
        "stop NAME",
        "stop an actor normally; its supervisor restarts it if it is permanent",
    ),
    (
        "crash",
        "crash NAME",
        "make an actor fail, to watch its supervisor restart it (`tree` shows the count)",
    ),
    (
        "trace",
        "trace QUEUE [--count N]",
        "a live tail of the messages entering a queue (routing key, size, body preview), \
         until Ctrl-C or N messages",
    ),
    (
        "log",
        "log [--level L] [--lines N]",
        "the node's recent log lines at level L (error, warn, info, debug, trace; \
         default info) or more severe, the last N (default 50)",
    ),
    (
        "help",
        "help [COMMAND]",
        "the commands, or one command's usage",
    ),
    ("quit", "quit", "leave the shell (also `exit` or Ctrl-D)"),
];

/// The help text: every command, or one.
pub fn help(command: Option<&str>) -> Result<String, String> {
    match command {
        None => {
            let mut out = String::from("commands:\n");
            for (_, usage, what) in COMMANDS {
                out += &format!("  {usage:<30} {}\n", first_clause(what));
            }
            out +=
                "actor names look like queue:/orders, exchange:/amq.topic, vhost:/ (see `tree`)\n";
            Ok(out)
        }
        Some(name) => COMMANDS
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, usage, what)| format!("{usage}\n  {what}\n"))
            .ok_or_else(|| unknown(name)),
    }
}

fn first_clause(text: &str) -> &str {
    text.split(':').next().unwrap_or(text)
}

fn unknown(name: &str) -> String {
    format!("unknown command '{name}': type `help` for the list")
}

/// Splits a line into words; single or double quotes group words.
pub fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => current.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            (None, c) => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("unclosed {q} quote"));
    }
    if in_word {
        out.push(current);
    }
    Ok(out)
}

/// Parses a line; `Ok(None)` for an empty one.
pub fn parse(line: &str) -> Result<Option<ShellCommand>, String> {
    let words = words(line)?;
    let Some((name, rest)) = words.split_first() else {
        return Ok(None);
    };
    let mut args = Args::new(name, rest);
    let command = match name.as_str() {
        "tree" => ShellCommand::Tree {
            node: args.option("--node")?,
            name: args.optional_positional()?,
        },
        "nodes" => ShellCommand::Nodes,
        "queues" => ShellCommand::Queues,
        "exchanges" => ShellCommand::Exchanges,
        "bindings" => ShellCommand::Bindings,
        "inspect" => ShellCommand::Inspect {
            name: args.positional("NAME")?,
        },
        "raft" => ShellCommand::Raft {
            queue: args.positional("QUEUE")?,
        },
        "stop" => ShellCommand::Stop {
            name: args.positional("NAME")?,
        },
        "crash" => ShellCommand::Crash {
            name: args.positional("NAME")?,
        },
        "trace" => ShellCommand::Trace {
            count: args.number("--count")?,
            queue: args.positional("QUEUE")?,
        },
        "log" => ShellCommand::Log {
            level: args.option("--level")?.unwrap_or_else(|| "info".into()),
            lines: args
                .number("--lines")?
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
                .unwrap_or(50),
        },
        "help" => ShellCommand::Help {
            command: args.optional_positional()?,
        },
        "quit" | "exit" => ShellCommand::Quit,
        other => return Err(unknown(other)),
    };
    args.finish()?;
    Ok(Some(command))
}

/// The words after a command, consumed by the parser.
struct Args<'a> {
    command: &'a str,
    rest: Vec<String>,
}

impl<'a> Args<'a> {
    fn new(command: &'a str, rest: &[String]) -> Self {
        Args {
            command,
            rest: rest.to_vec(),
        }
    }

    fn usage(&self) -> String {
        COMMANDS
            .iter()
            .find(|(n, _, _)| *n == self.command)
            .map(|(_, u, _)| format!("usage: {u}"))
            .unwrap_or_default()
    }

    fn option(&mut self, flag: &str) -> Result<Option<String>, String> {
        let Some(i) = self.rest.iter().position(|w| w == flag) else {
            return Ok(None);
        };
        if i + 1 >= self.rest.len() {
            return Err(format!("{flag} needs a value; {}", self.usage()));
        }
        let value = self.rest.remove(i + 1);
        self.rest.remove(i);
        Ok(Some(value))
    }

    fn number(&mut self, flag: &str) -> Result<Option<u64>, String> {
        match self.option(flag)? {
            None => Ok(None),
            Some(v) => v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| format!("{flag} takes a whole number, not '{v}'")),
        }
    }

    fn optional_positional(&mut self) -> Result<Option<String>, String> {
        match self.rest.first() {
            Some(w) if w.starts_with("--") => {
                Err(format!("unknown option '{w}'; {}", self.usage()))
            }
            Some(_) => Ok(Some(self.rest.remove(0))),
            None => Ok(None),
        }
    }

    fn positional(&mut self, what: &str) -> Result<String, String> {
        self.optional_positional()?
            .ok_or_else(|| format!("{} needs {what}; {}", self.command, self.usage()))
    }

    fn finish(self) -> Result<(), String> {
        match self.rest.first() {
            None => Ok(()),
            Some(w) if w.starts_with("--") => {
                Err(format!("unknown option '{w}'; {}", self.usage()))
            }
            Some(w) => Err(format!("unexpected '{w}'; {}", self.usage())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_into_commands() {
        assert_eq!(parse("   ").unwrap(), None);
        assert_eq!(
            parse("tree queue:/orders --node n2").unwrap(),
            Some(ShellCommand::Tree {
                name: Some("queue:/orders".into()),
                node: Some("n2".into())
            })
        );
        assert_eq!(
            parse("trace 'my queue' --count 3").unwrap(),
            Some(ShellCommand::Trace {
                queue: "my queue".into(),
                count: Some(3)
            })
        );
        assert_eq!(
            parse("log").unwrap(),
            Some(ShellCommand::Log {
                level: "info".into(),
                lines: 50
            })
        );
        assert_eq!(parse("exit").unwrap(), Some(ShellCommand::Quit));
    }

    #[test]
    fn mistakes_get_one_clear_line() {
        assert_eq!(
            parse("frobnicate").unwrap_err(),
            "unknown command 'frobnicate': type `help` for the list"
        );
        assert_eq!(
            parse("inspect").unwrap_err(),
            "inspect needs NAME; usage: inspect NAME"
        );
        assert!(parse("trace q --count many")
            .unwrap_err()
            .contains("--count takes a whole number"));
        assert!(parse("tree --nod x")
            .unwrap_err()
            .contains("unknown option '--nod'"));
        assert!(parse("crash a b").unwrap_err().contains("unexpected 'b'"));
        assert!(parse("stop 'open").unwrap_err().contains("unclosed"));
        assert!(help(Some("nope")).is_err());
        assert!(help(Some("trace")).unwrap().starts_with("trace QUEUE"));
        assert!(help(None).unwrap().contains("crash NAME"));
    }
}
