//! How the shell shows what a node answered: the tree drawn as a tree, an actor's
//! details, members, log lines and traced messages.

use warren_actors::delivery::TracedMessage;
use warren_cluster::protocol::{ActorDetails, LogLine, NodeInfo};
use warren_supervisor::{ChildStatus, TreeSnapshot};

use crate::listing::{bindings_text, human_bytes};

/// `12ms`, `4.2s`, `3m07s`, `2h05m`, `3d04h`.
pub fn uptime(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        _ if ms < 1000 => format!("{ms}ms"),
        0..=59 => format!("{:.1}s", ms as f64 / 1000.0),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn describe(t: &TreeSnapshot) -> String {
    let kind = match &t.strategy {
        Some(strategy) => format!("{} {strategy}", t.kind),
        None => t.kind.clone(),
    };
    let mailbox = t
        .mailbox_len
        .map_or_else(|| "-".to_string(), |n| n.to_string());
    let status = match t.status {
        ChildStatus::Starting => "starting",
        ChildStatus::Running => "running",
        ChildStatus::Restarting => "restarting",
        ChildStatus::Stopped => "stopped",
        ChildStatus::Failed => "failed",
        ChildStatus::Hibernated => "hibernated",
    };
    format!(
        "{}  [{kind}]  {status}  restarts={}  mailbox={mailbox}  up={}",
        t.name,
        t.restarts,
        uptime(t.uptime_ms)
    )
}

/// The tree with box-drawing branches, one actor per line.
pub fn tree(t: &TreeSnapshot) -> String {
    let mut out = describe(t) + "\n";
    draw_children(&t.children, "", &mut out);
    out
}

fn draw_children(children: &[TreeSnapshot], prefix: &str, out: &mut String) {
    for (i, child) in children.iter().enumerate() {
        let last = i + 1 == children.len();
        out.push_str(prefix);
        out.push_str(if last { "└── " } else { "├── " });
        out.push_str(&describe(child));
        out.push('\n');
        let deeper = format!("{prefix}{}", if last { "    " } else { "│   " });
        draw_children(&child.children, &deeper, out);
    }
}

/// Every actor name in a tree (for completion).
pub fn names(t: &TreeSnapshot, out: &mut Vec<String>) {
    out.push(t.name.clone());
    for c in &t.children {
        names(c, out);
    }
}

pub fn inspect(d: &ActorDetails) -> String {
    let node = &d.location.node;
    let mut out = format!("{}\n", describe(node));
    out += &format!("  path:        {}\n", d.location.path.join(" > "));
    out += &format!(
        "  supervisor:  {} ({})\n",
        d.location.supervisor.as_deref().unwrap_or("none (root)"),
        d.location.strategy.as_deref().unwrap_or("-")
    );
    if !node.children.is_empty() {
        out += &format!("  children:    {}\n", node.children.len());
    }
    if let Some(q) = &d.queue {
        let s = &q.stats;
        out += &format!(
            "  queue:       durable={} exclusive={} auto_delete={}\n",
            q.info.durable, q.info.exclusive, q.info.auto_delete
        );
        out += &format!(
            "  messages:    {} ready, {} unacked ({} ready, {} unacked)\n",
            s.ready,
            s.unacked,
            human_bytes(s.ready_bytes),
            human_bytes(s.unacked_bytes)
        );
        out += &format!(
            "  memory:      {} bodies, {}; on disk only: {} messages\n",
            s.messages_in_memory,
            human_bytes(s.bytes_in_memory),
            s.paged_out
        );
        out += &format!(
            "  storage:     {} being written, {} loading, {} confirms waiting\n",
            s.writing, s.loading, s.pending_confirms
        );
        if !q.info.arguments.is_empty() {
            out += &format!(
                "  arguments:   {}\n",
                crate::listing::table_to_json(&q.info.arguments)
            );
        }
        out += &format!("  consumers:   {}\n", q.consumers.len());
        for c in &q.consumers {
            let credit = if c.prefetch == 0 {
                "unlimited".to_string()
            } else {
                c.prefetch.saturating_sub(c.unacked).to_string()
            };
            out += &format!(
                "    {}  channel={} prefetch={} unacked={} credit={credit}{}{}{}\n",
                c.tag,
                c.channel,
                c.prefetch,
                c.unacked,
                if c.no_ack { " no_ack" } else { "" },
                if c.exclusive { " exclusive" } else { "" },
                if c.active { "" } else { " waiting" },
            );
        }
    }
    if let Some(x) = &d.exchange {
        out += &format!(
            "  exchange:    type={} durable={} internal={}\n",
            x.info.kind, x.info.durable, x.info.internal
        );
        out += &format!("  bindings:    {}\n", x.bindings.len());
        for line in bindings_text(&x.bindings).lines() {
            out += &format!("    {line}\n");
        }
    }
    out
}

pub fn nodes(nodes: &[NodeInfo]) -> String {
    let mut out = format!(
        "{:<24} {:<22} {:<5} {:<8} {:<7} {:>8}\n",
        "name", "address", "role", "state", "leader", "uptime"
    );
    for n in nodes {
        out += &format!(
            "{:<24} {:<22} {:<5} {:<8} {:<7} {:>8}{}\n",
            n.name,
            n.address,
            n.role,
            n.health,
            if n.leader { "leader" } else { "" },
            if n.health == "down" {
                "-".to_string()
            } else {
                uptime(n.uptime_ms)
            },
            if n.this_node { "  (this node)" } else { "" }
        );
    }
    if let Some(log) = nodes.iter().find_map(|n| n.metadata_log.as_ref()) {
        out += &format!(
            "metadata log here: applied {}, committed {}, entries {}..{}, snapshot at {}\n",
            log.applied,
            log.committed,
            log.first,
            log.last,
            if log.snapshot == 0 {
                "none yet".to_string()
            } else {
                log.snapshot.to_string()
            }
        );
    }
    out
}

pub fn log_lines(lines: &[LogLine]) -> String {
    lines
        .iter()
        .map(|l| format!("{} {:>5} {}\n", l.time, l.level, l.text))
        .collect()
}

pub fn traced(m: &TracedMessage) -> String {
    let preview: String = m
        .preview
        .chars()
        .map(|c| if c.is_control() { '.' } else { c })
        .collect();
    let exchange = if m.exchange.is_empty() {
        "(default)"
    } else {
        m.exchange.as_str()
    };
    format!(
        "{}  exchange={exchange} routing_key={} size={} body={preview:?}\n",
        m.queue, m.routing_key, m.size
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(name: &str, restarts: u32) -> TreeSnapshot {
        TreeSnapshot {
            name: name.into(),
            kind: "queue".into(),
            status: ChildStatus::Running,
            restarts,
            mailbox_len: None,
            uptime_ms: 1500,
            strategy: None,
            children: vec![],
        }
    }

    #[test]
    fn trees_are_drawn_with_branches() {
        let mut queues = leaf("queues:/", 0);
        queues.kind = "supervisor".into();
        queues.strategy = Some("one_for_one".into());
        queues.children = vec![leaf("queue:/a", 1), leaf("queue:/b", 0)];
        let mut root = leaf("node", 0);
        root.kind = "supervisor".into();
        root.strategy = Some("one_for_one".into());
        root.children = vec![queues, leaf("gateway", 0)];
        let text = tree(&root);
        let expected = "\
node  [supervisor one_for_one]  running  restarts=0  mailbox=-  up=1.5s
├── queues:/  [supervisor one_for_one]  running  restarts=0  mailbox=-  up=1.5s
│   ├── queue:/a  [queue]  running  restarts=1  mailbox=-  up=1.5s
│   └── queue:/b  [queue]  running  restarts=0  mailbox=-  up=1.5s
└── gateway  [queue]  running  restarts=0  mailbox=-  up=1.5s
";
        assert_eq!(text, expected);
        let mut all = Vec::new();
        names(&root, &mut all);
        assert_eq!(all.len(), 5);
    }

    #[test]
    fn uptimes_read_well() {
        assert_eq!(uptime(12), "12ms");
        assert_eq!(uptime(4_200), "4.2s");
        assert_eq!(uptime(187_000), "3m07s");
        assert_eq!(uptime(7_500_000), "2h05m");
        assert_eq!(uptime(3 * 86_400_000 + 4 * 3_600_000), "3d04h");
    }
}
