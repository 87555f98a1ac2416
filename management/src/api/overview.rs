//! The node as a whole: `/api/overview`, `/api/nodes`, `/api/cluster-name`,
//! `/api/whoami`, the UI's `/api/extensions` and `/api/auth`, the aliveness test and
//! the health checks (`/api/health/checks/...`, 200 when healthy, 503 with the
//! reason when not).

use axum::extract::{Path, State as Ctx};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use warren_access::{Access, Resource};
use warren_actors::channel::{Settle, SettleKind};
use warren_actors::exchange::ExchangeKind;
use warren_actors::message::Message;
use warren_actors::queue::QueueKind;
use warren_cluster::protocol::NodeInfo;

use super::{vhost_of, visible_vhosts, ApiChannel};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::peer::{gather, PeerRequest};
use crate::rates::message_stats;
use crate::State;

/// The RabbitMQ version whose management API Warren follows (tools read this).
pub const RABBITMQ_API_VERSION: &str = "3.10.0";
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn listeners_json(state: &State) -> Value {
    let node = state.node.name();
    Value::Array(
        state
            .node
            .listeners()
            .iter()
            .map(|l| {
                json!({
                    "node": node,
                    "protocol": l.protocol,
                    "ip_address": l.addr.ip().to_string(),
                    "port": l.addr.port(),
                })
            })
            .collect(),
    )
}

/// `GET /api/overview`.
/// This node's own figures for the overview (every member answers with its own and
/// the answering node adds them up): message counters with their rates, churn,
/// connections and channels.
pub fn node_figures(state: &State) -> Value {
    let (per, churn, seconds) = state.rates.rates();
    let totals = state.connections.totals();
    let connections = state.connections.list();
    let channels: usize = connections.iter().map(|c| c.channels().len()).sum();
    let all_churn = state.connections.churn();
    let rate = |n: u64| json!({ "rate": (n as f64 / seconds * 10.0).round() / 10.0 });
    json!({
        "message_stats": message_stats(totals, per, seconds),
        "churn_rates": {
            "connection_created": all_churn.connections_opened,
            "connection_created_details": rate(churn.connections_opened),
            "connection_closed": all_churn.connections_closed,
            "connection_closed_details": rate(churn.connections_closed),
            "channel_created": all_churn.channels_opened,
            "channel_created_details": rate(churn.channels_opened),
            "channel_closed": all_churn.channels_closed,
            "channel_closed_details": rate(churn.channels_closed),
        },
        "connections": connections.len(),
        "channels": channels,
    })
}

/// `a + b` for JSON figures: numbers added, objects added key by key.
fn add(a: &mut Value, b: &Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(mine) => add(mine, v),
                    None => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (a @ Value::Number(_), Value::Number(b)) => {
            let x = a.as_number().expect("a number");
            *a = match (x.as_u64(), b.as_u64()) {
                (Some(x), Some(y)) => json!(x.saturating_add(y)),
                _ => {
                    let sum = x.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0);
                    json!((sum * 10.0).round() / 10.0)
                }
            };
        }
        _ => {}
    }
}

/// `GET /api/overview`: the cluster's figures, each member's added up.
pub async fn overview(Ctx(state): Ctx<State>, caller: Caller) -> Json<Value> {
    // A user who is not monitoring sees their own connections and the queues of the
    // vhosts they may use, not the cluster's counters.
    let monitoring = caller.is_monitoring();
    let (connections, channels, figures) = if monitoring {
        let mut sum = json!({});
        for figures in gather(&state, PeerRequest::NodeFigures).await {
            add(&mut sum, &figures);
        }
        let count = |k: &str| sum[k].as_u64().unwrap_or(0);
        (count("connections"), count("channels"), sum)
    } else {
        let mine = |items: Vec<Value>| {
            items
                .iter()
                .filter(|i| i["user"] == caller.name.as_str())
                .count() as u64
        };
        (
            mine(gather(&state, PeerRequest::Connections).await),
            mine(gather(&state, PeerRequest::Channels).await),
            json!({}),
        )
    };
    let vhosts = visible_vhosts(&state, &caller);
    let exchanges: usize = vhosts.iter().map(|v| v.topology().exchanges().len()).sum();
    let queues: usize = vhosts.iter().map(|v| v.queue_count()).sum();
    let snapshot = state.queues.get(&state.vhosts).await;
    let q = if monitoring {
        snapshot.totals
    } else {
        let mut t = crate::rates::QueueTotals::default();
        for (vhost, queue) in &snapshot.queues {
            if vhosts.iter().any(|v| v.name() == vhost) {
                t.ready += queue.stats.ready;
                t.unacked += queue.stats.unacked;
                t.consumers += queue.stats.consumers;
            }
        }
        t.messages = t.ready + t.unacked;
        t
    };
    // rabbitmqadmin reads the churn counts as 32-bit numbers.
    let mut churn = figures["churn_rates"].clone();
    if let Some(c) = churn.as_object_mut() {
        for v in c.values_mut() {
            if let Some(n) = v.as_u64() {
                *v = json!(n.min(u64::from(u32::MAX)));
            }
        }
    }
    let mut overview = json!({
        "management_version": VERSION,
        "rates_mode": "basic",
        "product_name": "Warren",
        "product_version": VERSION,
        "rabbitmq_version": RABBITMQ_API_VERSION,
        "cluster_name": state.node.name(),
        "node": state.node.name(),
        "exchange_types": ExchangeKind::ALL.iter().map(|k| json!({
            "name": k.as_str(), "description": "", "enabled": true,
        })).collect::<Vec<_>>(),
        "message_stats": figures["message_stats"].clone(),
        "churn_rates": churn,
        "queue_totals": {
            "messages": q.messages,
            "messages_ready": q.ready,
            "messages_unacknowledged": q.unacked,
        },
        "object_totals": {
            "connections": connections,
            "channels": channels,
            "exchanges": exchanges,
            "queues": queues,
            "consumers": q.consumers,
        },
        "statistics_db_event_queue": 0,
        "listeners": listeners_json(&state),
        "contexts": state.node.listeners().iter().filter(|l| l.protocol == "http").map(|l| json!({
            "node": state.node.name(), "description": "Warren Management",
            "path": "/", "port": l.addr.port().to_string(),
        })).collect::<Vec<_>>(),
    });
    if !monitoring {
        // Node-wide counters, rates and listeners are for monitoring users.
        if let Some(o) = overview.as_object_mut() {
            for key in [
                "message_stats",
                "churn_rates",
                "listeners",
                "contexts",
                "node",
            ] {
                o.remove(key);
            }
        }
    }
    Json(overview)
}

/// `GET /api/cluster-name`.
pub async fn cluster_name(Ctx(state): Ctx<State>, _caller: Caller) -> Json<Value> {
    Json(json!({ "name": state.node.name() }))
}

fn node_json(state: &State, n: &NodeInfo) -> Value {
    let mut v = json!({
        "name": n.name,
        "type": if n.role == "ram" { "ram" } else { "disc" },
        "running": n.health == "up",
        "being_drained": false,
        "uptime": n.uptime_ms.min(u64::from(u32::MAX)),
        "rates_mode": "basic",
        "applications": [],
        "enabled_plugins": [],
        "partitions": [],
        "warren": {
            "address": n.address,
            "health": n.health,
            "leader": n.leader,
            "term": n.term,
            "this_node": n.this_node,
        },
    });
    if n.this_node {
        let l = state.node.limits();
        v["mem_used"] = l.memory_used.into();
        v["mem_limit"] = l.memory_limit.into();
        v["mem_alarm"] = l.memory_alarm.into();
        v["disk_free"] = l.disk_free.into();
        v["disk_free_limit"] = l.disk_free_limit.into();
        v["disk_free_alarm"] = l.disk_alarm.into();
        v["os_pid"] = std::process::id().into();
        v["processors"] = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .into();
        if let Some(log) = &n.metadata_log {
            v["warren"]["metadata_log"] = json!({
                "applied": log.applied, "committed": log.committed,
            });
        }
    }
    v
}

/// `GET /api/nodes` (monitoring users and administrators).
pub async fn nodes(Ctx(state): Ctx<State>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require_monitoring()?;
    let nodes = state.node.nodes().await?;
    Ok(Json(Value::Array(
        nodes.iter().map(|n| node_json(&state, n)).collect(),
    )))
}

/// `GET /api/nodes/{node}`.
pub async fn node(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_monitoring()?;
    let nodes = state.node.nodes().await?;
    nodes
        .iter()
        .find(|n| n.name == name)
        .map(|n| Json(node_json(&state, n)))
        .ok_or_else(|| ApiError::not_found(format!("no node '{name}' in the cluster")))
}

/// `GET /api/whoami`.
pub async fn whoami(caller: Caller) -> Json<Value> {
    Json(json!({ "name": caller.name, "tags": caller.tags }))
}

/// `GET /api/extensions`: UI extensions (none).
pub async fn extensions(_caller: Caller) -> Json<Value> {
    Json(json!([]))
}

/// `GET /api/auth`: how the UI logs in (basic auth, no OAuth).
pub async fn auth() -> Json<Value> {
    Json(json!({ "oauth_enabled": false }))
}

fn ok() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

fn failed(body: Value) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// The queue the aliveness test uses, as RabbitMQ's.
const ALIVENESS_QUEUE: &str = "aliveness-test";

/// `GET /api/aliveness-test/{vhost}`: declares `aliveness-test`, publishes a message
/// to it and gets it back.
pub async fn aliveness(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> Result<Response, ApiError> {
    let v = vhost_of(&state, &caller, &vhost)?;
    let queue = Resource::Queue(ALIVENESS_QUEUE);
    caller.check(&state, &vhost, Access::Configure, queue)?;
    caller.check(&state, &vhost, Access::Write, Resource::Exchange(""))?;
    caller.check(&state, &vhost, Access::Read, queue)?;
    // Its message goes back to the queue if the request ends before it is acked.
    let mut channel = ApiChannel::new(&v);
    let id = channel.id();
    // Transient, as RabbitMQ's.
    let none = Default::default();
    v.declare_queue(ALIVENESS_QUEUE, false, None, false, false, none, id)
        .await?;
    let message = Message {
        exchange: String::new(),
        routing_key: ALIVENESS_QUEUE.to_string(),
        properties: Default::default(),
        body: bytes::Bytes::from_static(b"test_message"),
    };
    if let Some(outcomes) = channel
        .publish_in_order(vec![(message, true)], true, None)
        .await
    {
        outcomes.await;
    }
    let queue = v.find_queue(ALIVENESS_QUEUE, id).await?;
    let got = queue.get(id, false).await?;
    let alive = match got {
        Some((d, _)) => {
            let tag = channel.track(&d, false);
            channel.settle(&[Settle {
                delivery_tag: tag,
                multiple: false,
                kind: SettleKind::Ack,
            }])?;
            d.message.body.as_ref() == b"test_message"
        }
        None => false,
    };
    Ok(if alive {
        ok()
    } else {
        failed(json!({ "status": "failed", "reason": "the test message did not come back" }))
    })
}

/// This node's resource alarms that are up, as RabbitMQ lists them.
pub fn node_alarms(state: &State) -> Vec<Value> {
    let l = state.node.limits();
    let node = state.node.name();
    let mut alarms = Vec::new();
    if l.memory_alarm {
        alarms.push(json!({ "node": node, "resource": "memory" }));
    }
    if l.disk_alarm {
        alarms.push(json!({ "node": node, "resource": "disk" }));
    }
    alarms
}

fn alarm_answer(alarms: Vec<Value>, reason: &str) -> Response {
    if alarms.is_empty() {
        return ok();
    }
    failed(json!({ "status": "failed", "reason": reason, "alarms": alarms }))
}

/// `GET /api/health/checks/alarms`: 503 while a memory or disk alarm is up on any
/// member (each is asked).
pub async fn alarms(Ctx(state): Ctx<State>, _caller: Caller) -> Response {
    let alarms = gather(&state, PeerRequest::Alarms).await;
    alarm_answer(alarms, "resource alarm(s) in effect in the cluster")
}

/// `GET /api/health/checks/local-alarms`: 503 while one is up on this node.
pub async fn local_alarms(Ctx(state): Ctx<State>, _caller: Caller) -> Response {
    alarm_answer(
        node_alarms(&state),
        "resource alarm(s) in effect on this node",
    )
}

/// `GET /api/health/checks/port-listener/{port}`.
pub async fn port_listener(
    Ctx(state): Ctx<State>,
    _caller: Caller,
    Path(port): Path<String>,
) -> Result<Response, ApiError> {
    let port: u16 = port
        .parse()
        .map_err(|_| ApiError::bad_request(format!("'{port}' is not a port number")))?;
    if state.node.listeners().iter().any(|l| l.addr.port() == port) {
        return Ok(ok());
    }
    Ok(failed(json!({
        "status": "failed",
        "reason": format!("No active listener on port {port}"),
        "missing": port,
    })))
}

/// `GET /api/health/checks/protocol-listener/{protocol}`.
pub async fn protocol_listener(
    Ctx(state): Ctx<State>,
    _caller: Caller,
    Path(protocol): Path<String>,
) -> Response {
    let wanted = match protocol.as_str() {
        "amqp091" | "amqp0-9-1" | "amqp0.9.1" | "amqp" => "amqp",
        "amqps" | "amqp/ssl" => "amqp/ssl",
        "prometheus" | "http/prometheus" => "http/prometheus",
        other => other,
    };
    let listeners = state.node.listeners();
    if listeners.iter().any(|l| l.protocol == wanted) {
        return ok();
    }
    failed(json!({
        "status": "failed",
        "reason": format!("No active listener for protocol {protocol}"),
        "protocols": listeners.iter().map(|l| l.protocol).collect::<Vec<_>>(),
        "missing": protocol,
    }))
}

/// `GET /api/health/checks/node-is-quorum-critical`: 503 when stopping this node
/// would leave a replicated queue without a majority of members in sync.
pub async fn quorum_critical(Ctx(state): Ctx<State>, _caller: Caller) -> Response {
    let me = state.node.name();
    let mut critical = Vec::new();
    let snapshot = state.queues.get(&state.vhosts).await;
    for (vhost, q) in &snapshot.queues {
        {
            // A queue of one member has no quorum to lose: it is down with its node
            // whatever the order of shutdowns (RabbitMQ's check passes on one node).
            if QueueKind::of(&q.arguments).ok() != Some(QueueKind::Quorum)
                || !q.members.contains(&me)
                || q.members.len() < 2
            {
                continue;
            }
            let in_sync_elsewhere = q.replication.as_ref().map_or(0, |r| {
                q.members
                    .iter()
                    .filter(|m| **m != me && r.in_sync(m))
                    .count()
            });
            if in_sync_elsewhere < q.members.len() / 2 + 1 {
                critical.push(json!({
                    "name": q.name,
                    "readable_name": format!("queue '{}' in vhost '{vhost}'", q.name),
                    "virtual_host": vhost,
                    "type": "quorum",
                }));
            }
        }
    }
    if critical.is_empty() {
        return ok();
    }
    failed(json!({
        "status": "failed",
        "reason": "There are quorum queues that would lose their quorum if the target node is shut down",
        "queues": critical,
    }))
}

/// `GET /api/health/checks/virtual-hosts`: every vhost's supervisor is running.
pub async fn virtual_hosts(Ctx(state): Ctx<State>, _caller: Caller) -> Response {
    let down: Vec<String> = state
        .vhosts
        .all()
        .iter()
        .filter(|v| ractor::registry::where_is(v.supervisor_name()).is_none())
        .map(|v| v.name().to_string())
        .collect();
    if down.is_empty() {
        return ok();
    }
    failed(json!({
        "status": "failed",
        "reason": format!("vhosts not running: {}", down.join(", ")),
        "virtual-hosts": down,
    }))
}
