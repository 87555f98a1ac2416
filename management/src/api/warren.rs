//! Warren's own additions under `/api/warren/`: this node's supervision tree, the
//! cluster's members with their roles and the metadata leader, stream partitions
//! with their consumer groups' lag, and the history of the node's message rates (for
//! the UI's charts).

use axum::extract::{Query, State as Ctx};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use warren_actors::delivery::next_channel_id;
use warren_actors::queue::QueueKind;

use super::visible_vhosts;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::State;

/// `?node=NAME` of a tree request.
#[derive(Debug, Default, Deserialize)]
pub struct WhichNode {
    node: Option<String>,
}

/// `GET /api/warren/tree[?node=NAME]`: a node's supervision tree (monitoring users);
/// this node's by default, another member's asked over the cluster.
pub async fn tree(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Query(which): Query<WhichNode>,
) -> Result<Json<Value>, ApiError> {
    caller.require_monitoring()?;
    let node = which.node.unwrap_or_else(|| state.node.name());
    let tree = state.node.tree(Some(&node)).await?;
    Ok(Json(json!({
        "node": node,
        "tree": serde_json::to_value(tree).map_err(|e| ApiError::bad_request(e.to_string()))?,
    })))
}

/// `GET /api/warren/cluster`: the members as this node sees them.
pub async fn cluster(Ctx(state): Ctx<State>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require_monitoring()?;
    let nodes = state.node.nodes().await?;
    let leader = nodes.iter().find(|n| n.leader).map(|n| n.name.clone());
    Ok(Json(json!({
        "this_node": state.node.name(),
        "leader": leader,
        "term": nodes.first().map_or(0, |n| n.term),
        "members": nodes.iter().map(|n| json!({
            "name": n.name,
            "address": n.address,
            "role": n.role,
            "health": n.health,
            "leader": n.leader,
            "uptime_ms": n.uptime_ms,
        })).collect::<Vec<_>>(),
    })))
}

/// `GET /api/warren/streams`: every stream queue the caller sees, with its offsets,
/// size and consumer groups (their committed offset and lag).
pub async fn streams(Ctx(state): Ctx<State>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let mut out = Vec::new();
    for v in visible_vhosts(&state, &caller) {
        let mut defs = v.queue_defs();
        defs.sort_by(|a, b| a.name.cmp(&b.name));
        for def in defs {
            if QueueKind::of(&def.arguments).ok() != Some(QueueKind::Stream) {
                continue;
            }
            let Ok(queue) = v.find_queue(&def.name, next_channel_id()).await else {
                continue;
            };
            let Ok(info) = queue.stream_info().await else {
                continue;
            };
            out.push(json!({
                "name": def.name,
                "vhost": v.name(),
                "node": queue.serving_node().unwrap_or_else(|| def.node.clone()),
                "first_offset": info.first,
                "end_offset": info.end,
                "messages": info.end.saturating_sub(info.first),
                "bytes": info.bytes,
                "groups": info.groups.iter().map(|g| json!({
                    "group": g.group,
                    "member": g.member,
                    "committed": g.committed,
                    "lag": g.end.saturating_sub(g.committed),
                    "members": g.members,
                    "active": g.active,
                })).collect::<Vec<_>>(),
            }));
        }
    }
    Ok(Json(Value::Array(out)))
}

/// `?age=SECONDS&incr=SECONDS` of the rates history.
#[derive(Debug, Default, Deserialize)]
pub struct History {
    age: Option<u64>,
    incr: Option<u64>,
}

/// `GET /api/warren/rates`: the node's counters and queue totals, newest first, over
/// the last `age` seconds (default 60) every `incr` seconds (default 1).
pub async fn rates(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Query(q): Query<History>,
) -> Result<Json<Value>, ApiError> {
    caller.require_monitoring()?;
    let samples = state
        .rates
        .history(q.age.unwrap_or(60).min(600), q.incr.unwrap_or(1));
    Ok(Json(Value::Array(
        samples
            .iter()
            .map(|s| {
                json!({
                    "timestamp": s.at_ms,
                    "publish": s.counts.publish,
                    "deliver_get": s.counts.deliver_get(),
                    "ack": s.counts.ack,
                    "confirm": s.counts.confirm,
                    "redeliver": s.counts.redeliver,
                    "messages": s.queues.messages,
                    "messages_ready": s.queues.ready,
                    "messages_unacknowledged": s.queues.unacked,
                })
            })
            .collect(),
    )))
}
