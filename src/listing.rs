//! Queues, exchanges and bindings as text tables and as JSON: what `warren queues`
//! (and `exchanges`, `bindings`) and the debug shell print.

use serde_json::{json, Value};
use warren_actors::message::{FieldTable, FieldValue};
use warren_actors::queue::Replication;
use warren_cluster::protocol::{BindTarget, BindingInfo, ExchangeInfo, QueueInfo};

/// A field value as JSON.
pub fn field_to_json(v: &FieldValue) -> Value {
    match v {
        FieldValue::Bool(b) => Value::Bool(*b),
        FieldValue::F32(f) => json!(f),
        FieldValue::F64(f) => json!(f),
        FieldValue::Decimal(scale, value) => {
            json!(*value as f64 / 10f64.powi(i32::from(*scale)))
        }
        FieldValue::LongString(b) | FieldValue::Bytes(b) => {
            Value::String(String::from_utf8_lossy(b).into_owned())
        }
        FieldValue::Array(a) => Value::Array(a.iter().map(field_to_json).collect()),
        FieldValue::Table(t) => table_to_json(t),
        FieldValue::Void => Value::Null,
        other => other.as_i64().map(|i| json!(i)).unwrap_or(Value::Null),
    }
}

pub fn table_to_json(t: &FieldTable) -> Value {
    Value::Object(
        t.iter()
            .map(|(k, v)| (k.clone(), field_to_json(v)))
            .collect(),
    )
}

/// Bytes for people: `512 B`, `3.2 KiB`, `8.0 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

pub fn queues_json(queues: &[QueueInfo]) -> Value {
    Value::Array(queues.iter().map(queue_json).collect())
}

/// One row of [`queues_json`].
pub fn queue_json(q: &QueueInfo) -> Value {
    json!({
        "name": q.name, "durable": q.durable, "exclusive": q.exclusive,
        "auto_delete": q.auto_delete, "messages": q.messages,
        "ready": q.ready, "unacked": q.unacked, "consumers": q.consumers,
        "bytes_in_memory": q.bytes_in_memory,
        "arguments": table_to_json(&q.arguments), "node": q.node,
        "members": q.members,
        "replication": q.replication.as_ref().map(replication_json),
    })
}

/// Queue `name` of a listing, or what to do about its absence.
pub fn queue_named<'a>(queues: &'a [QueueInfo], name: &str) -> Result<&'a QueueInfo, String> {
    queues
        .iter()
        .find(|q| q.name == name)
        .ok_or_else(|| format!("no queue '{name}' in the vhost (see `warren queues`)"))
}

pub fn queues_text(queues: &[QueueInfo]) -> String {
    let mut out = format!(
        "{:<32} {:>8} {:>10} {:>8} {:>8} {:>9} {:>10}  {:<12} {}\n",
        "name", "durable", "messages", "ready", "unacked", "consumers", "memory", "node", "members"
    );
    for q in queues {
        out += &format!(
            "{:<32} {:>8} {:>10} {:>8} {:>8} {:>9} {:>10}  {:<12} {}\n",
            q.name,
            q.durable,
            q.messages,
            q.ready,
            q.unacked,
            q.consumers,
            human_bytes(q.bytes_in_memory),
            q.node,
            members_text(q)
        );
    }
    out
}

/// A replicated queue's members in one line: `*` marks the Raft leader; a member
/// that does not hold everything committed is `(behind)`, one not in the group yet
/// `(joining)`, one the group still has but the queue no longer `(leaving)`. Without
/// the leader's report (no node that answered leads the group), the names alone.
pub fn members_text(q: &QueueInfo) -> String {
    let Some(r) = &q.replication else {
        return q.members.join(",");
    };
    let mut parts: Vec<String> = q
        .members
        .iter()
        .map(|m| {
            let lead = if *m == r.leader { "*" } else { "" };
            let state = match r.members.iter().find(|p| p.node == *m) {
                Some(p) if p.voter && p.matched >= r.committed => "",
                Some(p) if p.voter => "(behind)",
                _ => "(joining)",
            };
            format!("{m}{lead}{state}")
        })
        .collect();
    for p in r.members.iter().filter(|p| !q.members.contains(&p.node)) {
        parts.push(format!("{}(leaving)", p.node));
    }
    parts.join(",")
}

fn replication_json(r: &Replication) -> Value {
    json!({
        "leader": r.leader, "term": r.term, "commit_index": r.committed,
        "log": json!({"first": r.log_first, "last": r.log_last, "snapshot": r.snapshot}),
        "members": r.members.iter().map(|m| json!({
            "node": m.node, "match_index": m.matched, "voter": m.voter,
            "in_sync": r.in_sync(&m.node),
        })).collect::<Vec<_>>(),
    })
}

/// `warren queue status`: a replicated queue's Raft group, member by member.
pub fn replication_text(q: &QueueInfo) -> String {
    let Some(r) = &q.replication else {
        return format!(
            "queue '{}': members {}; no node that answered leads its Raft group now \
             (an election, or no majority of its members is up)\n",
            q.name,
            q.members.join(", ")
        );
    };
    let log = if r.log_first <= r.log_last {
        format!("entries {} to {}", r.log_first, r.log_last)
    } else {
        "no entry after its snapshot".to_string()
    };
    let mut out = format!(
        "queue '{}': served on {}, Raft leader {}, term {}, commit index {}\n\
         leader's log: {log}, snapshot at {}\n",
        q.name, q.node, r.leader, r.term, r.committed, r.snapshot
    );
    out += &format!(
        "{:<16} {:<10} {:>12}  {}\n",
        "member", "role", "match index", "in sync"
    );
    for m in &r.members {
        let role = match (m.node == r.leader, m.voter) {
            (true, _) => "leader",
            (false, true) => "follower",
            (false, false) => "learner",
        };
        let in_sync = if r.in_sync(&m.node) { "yes" } else { "no" };
        let leaving = if q.members.contains(&m.node) {
            ""
        } else {
            " (leaving)"
        };
        out += &format!(
            "{:<16} {:<10} {:>12}  {in_sync}{leaving}\n",
            m.node, role, m.matched
        );
    }
    for m in q
        .members
        .iter()
        .filter(|m| !r.members.iter().any(|p| p.node == **m))
    {
        out += &format!("{m:<16} {:<10} {:>12}  no (joining)\n", "-", "-");
    }
    out
}

pub fn exchanges_json(exchanges: &[ExchangeInfo]) -> Value {
    Value::Array(
        exchanges
            .iter()
            .map(|x| {
                json!({
                    "name": x.name, "type": x.kind, "durable": x.durable,
                    "auto_delete": x.auto_delete, "internal": x.internal,
                    "arguments": table_to_json(&x.arguments),
                })
            })
            .collect(),
    )
}

pub fn exchanges_text(exchanges: &[ExchangeInfo]) -> String {
    let mut out = format!("{:<32} {:<8} {:>8}\n", "name", "type", "durable");
    for x in exchanges {
        let name = if x.name.is_empty() {
            "(default)"
        } else {
            x.name.as_str()
        };
        out += &format!("{:<32} {:<8} {:>8}\n", name, x.kind, x.durable);
    }
    out
}

fn destination(b: &BindingInfo) -> (&'static str, &str) {
    match &b.target {
        BindTarget::Queue(q) => ("queue", q.as_str()),
        BindTarget::Exchange(x) => ("exchange", x.as_str()),
    }
}

pub fn bindings_json(bindings: &[BindingInfo]) -> Value {
    Value::Array(
        bindings
            .iter()
            .map(|b| {
                let (kind, dest) = destination(b);
                json!({"source": b.source, "destination_type": kind, "destination": dest,
                    "routing_key": b.routing_key, "arguments": table_to_json(&b.arguments)})
            })
            .collect(),
    )
}

pub fn bindings_text(bindings: &[BindingInfo]) -> String {
    let mut out = format!(
        "{:<24} {:<10} {:<24} routing_key\n",
        "source", "type", "destination"
    );
    for b in bindings {
        let (kind, dest) = destination(b);
        out += &format!(
            "{:<24} {:<10} {:<24} {}\n",
            b.source, kind, dest, b.routing_key
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_well() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(8 * 1024 * 1024), "8.0 MiB");
    }
}
