//! `/api/connections`, `/api/channels` and `/api/consumers`: the cluster's AMQP
//! connections (list, one, close), their channels and their consumers, each node's
//! gathered through its management peer (`peer.rs`). A monitoring user sees all of
//! them; other users see their own.

use std::sync::atomic::Ordering;

use axum::extract::{Path, Query, State as Ctx};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use serde_json::{json, Value};
use warren_amqp::registry::{ChannelEntry, ConnectionEntry};

use super::{no_content, vhost_of};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::json::table_to_json;
use crate::listing::ListQuery;
use crate::peer::{answer, ask_others, gather, PeerAnswer, PeerRequest};
use crate::rates::message_stats;
use crate::State;

/// What RabbitMQ's management UI says when it closes a connection.
const DEFAULT_CLOSE_REASON: &str = "Closed via management plugin";

/// The cluster's items of `request` that the caller sees, in `vhost` if given: a
/// monitoring user sees all; another user their own connections and channels, and
/// the consumers of the vhosts they may use (as RabbitMQ).
async fn visible(
    state: &State,
    caller: &Caller,
    request: PeerRequest,
    vhost: Option<&str>,
) -> Vec<Value> {
    let consumers = matches!(request, PeerRequest::Consumers);
    let vhost_of = |item: &Value| -> String {
        let v = if consumers {
            &item["queue"]["vhost"]
        } else {
            &item["vhost"]
        };
        v.as_str().unwrap_or_default().to_string()
    };
    let sees = |item: &Value| {
        caller.is_monitoring()
            || if consumers {
                caller.sees_vhost(state, &vhost_of(item))
            } else {
                item["user"] == caller.name.as_str()
            }
    };
    gather(state, request)
        .await
        .into_iter()
        .filter(|item| sees(item))
        .filter(|item| vhost.is_none_or(|v| vhost_of(item) == v))
        .collect()
}

/// A list request's answer: the cluster's items of `request` the caller sees (in
/// `vhost`, which must be visible, if given), cut as `query` asks.
async fn listed(
    state: &State,
    caller: &Caller,
    request: PeerRequest,
    vhost: Option<&str>,
    query: &ListQuery,
) -> Result<Json<Value>, ApiError> {
    let plan = query.plan()?;
    if let Some(vhost) = vhost {
        vhost_of(state, caller, vhost)?;
    }
    Ok(Json(
        plan.apply(visible(state, caller, request, vhost).await),
    ))
}

/// This node's connections, as the API shows them.
pub fn local_connections(state: &State) -> Vec<Value> {
    let node = state.node.name();
    state
        .connections
        .list()
        .iter()
        .map(|c| connection_json(&node, c))
        .collect()
}

/// A connection as RabbitMQ's API shows it.
pub fn connection_json(node: &str, c: &ConnectionEntry) -> Value {
    let o = &c.opened;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let (host, port) = o
        .local
        .map_or((String::new(), 0), |l| (l.ip().to_string(), l.port()));
    let client_properties = table_to_json(&o.client_properties);
    let user_provided_name = client_properties.get("connection_name").cloned();
    let mut v = json!({
        "name": c.name,
        "node": node,
        "vhost": o.vhost,
        "user": o.user,
        "protocol": "AMQP 0-9-1",
        "type": "network",
        "auth_mechanism": "PLAIN",
        "ssl": o.tls,
        "state": if c.blocked.load(Ordering::Relaxed) { "blocked" } else { "running" },
        "channels": c.channels().len().min(u16::MAX as usize),
        "channel_max": o.channel_max,
        "frame_max": o.frame_max,
        "timeout": o.heartbeat,
        "connected_at": o.connected_at,
        "peer_host": o.peer.ip().to_string(),
        "peer_port": o.peer.port(),
        "host": host,
        "port": port,
        "client_properties": client_properties,
        "recv_oct": load(&c.bytes_in),
        "send_oct": load(&c.bytes_out),
        "send_cnt": load(&c.writes_out),
    });
    if let Some(name) = user_provided_name {
        v["user_provided_name"] = name;
    }
    v
}

/// `GET /api/connections`.
pub async fn list(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    listed(&state, &caller, PeerRequest::Connections, None, &query).await
}

/// `GET /api/vhosts/{vhost}/connections`.
pub async fn list_in(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    listed(
        &state,
        &caller,
        PeerRequest::Connections,
        Some(&vhost),
        &query,
    )
    .await
}

async fn find(state: &State, caller: &Caller, name: &str) -> Result<Value, ApiError> {
    visible(state, caller, PeerRequest::Connections, None)
        .await
        .into_iter()
        .find(|c| c["name"] == name)
        .ok_or_else(|| ApiError::not_found(format!("no connection '{name}' in the cluster")))
}

/// `GET /api/connections/{name}`.
pub async fn one(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(find(&state, &caller, &name).await?))
}

/// `DELETE /api/connections/{name}`: closes it (320 CONNECTION_FORCED with the
/// `X-Reason` header's text).
pub async fn close(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let c = find(&state, &caller, &name).await?;
    if c["user"] != caller.name.as_str() && !caller.is_administrator() {
        return Err(ApiError::refused(format!(
            "user '{}' may close only their own connections (or be an administrator)",
            caller.name
        )));
    }
    let reason = headers
        .get("x-reason")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(DEFAULT_CLOSE_REASON);
    let request = PeerRequest::Close {
        name: name.clone(),
        reason: reason.to_string(),
    };
    let closed = matches!(answer(&state, request.clone()), PeerAnswer::Closed(true))
        || ask_others(request)
            .await
            .iter()
            .any(|a| matches!(a, PeerAnswer::Closed(true)));
    if !closed {
        return Err(ApiError::not_found(format!(
            "connection '{name}' closed before it could be closed"
        )));
    }
    Ok(no_content())
}

/// A channel as RabbitMQ's API shows it.
fn channel_json(node: &str, c: &ConnectionEntry, ch: &ChannelEntry) -> Value {
    let o = &c.opened;
    let load32 = |a: &std::sync::atomic::AtomicU32| a.load(Ordering::Relaxed);
    let totals = ch.counts.snapshot();
    let consumers = ch.consumers();
    json!({
        "name": format!("{} ({})", c.name, ch.number),
        "number": ch.number,
        "node": node,
        "vhost": o.vhost,
        "user": o.user,
        "state": "running",
        "connection_details": {
            "name": c.name,
            "peer_host": o.peer.ip().to_string(),
            "peer_port": o.peer.port(),
        },
        "consumer_count": consumers.len(),
        "messages_unacknowledged": ch.unacked.load(Ordering::Relaxed),
        "messages_unconfirmed": 0,
        "messages_uncommitted": 0,
        "acks_uncommitted": 0,
        "prefetch_count": load32(&ch.prefetch),
        "global_prefetch_count": load32(&ch.global_prefetch),
        "confirm": ch.confirm.load(Ordering::Relaxed),
        "transactional": ch.transactional.load(Ordering::Relaxed),
        "message_stats": message_stats(totals, Default::default(), 1.0),
    })
}

/// This node's channels, as the API shows them.
pub fn local_channels(state: &State) -> Vec<Value> {
    let node = state.node.name();
    state
        .connections
        .list()
        .iter()
        .flat_map(|c| {
            c.channels()
                .iter()
                .map(|ch| channel_json(&node, c, ch))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `GET /api/channels`.
pub async fn channels(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    listed(&state, &caller, PeerRequest::Channels, None, &query).await
}

/// `GET /api/vhosts/{vhost}/channels`.
pub async fn channels_in(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    listed(&state, &caller, PeerRequest::Channels, Some(&vhost), &query).await
}

/// `GET /api/connections/{name}/channels`.
pub async fn channels_of(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    find(&state, &caller, &name).await?;
    let items = visible(&state, &caller, PeerRequest::Channels, None).await;
    Ok(Json(Value::Array(
        items
            .into_iter()
            .filter(|ch| ch["connection_details"]["name"] == name.as_str())
            .collect(),
    )))
}

/// `GET /api/channels/{name}` (`CONNECTION (NUMBER)`).
pub async fn channel(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    visible(&state, &caller, PeerRequest::Channels, None)
        .await
        .into_iter()
        .find(|c| c["name"] == name.as_str())
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no channel '{name}' on this node")))
}

/// This node's consumers, as the API shows them.
pub fn local_consumers(state: &State) -> Vec<Value> {
    let node = state.node.name();
    let mut out = Vec::new();
    for c in state.connections.list() {
        let o = &c.opened;
        for ch in c.channels() {
            for (tag, consumer) in ch.consumers() {
                out.push(json!({
                    "consumer_tag": tag,
                    "queue": { "name": consumer.queue, "vhost": o.vhost },
                    "channel_details": {
                        "name": format!("{} ({})", c.name, ch.number),
                        "number": ch.number,
                        "connection_name": c.name,
                        "node": node,
                        "peer_host": o.peer.ip().to_string(),
                        "peer_port": o.peer.port(),
                        "user": o.user,
                    },
                    "ack_required": consumer.ack_required,
                    "exclusive": consumer.exclusive,
                    "prefetch_count": consumer.prefetch,
                    "arguments": table_to_json(&consumer.arguments),
                    "active": true,
                    "activity_status": "up",
                    "consumer_timeout": 0,
                }));
            }
        }
    }
    out
}

/// `GET /api/consumers`.
pub async fn consumers(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    listed(&state, &caller, PeerRequest::Consumers, None, &query).await
}

/// `GET /api/consumers/{vhost}`.
pub async fn consumers_in(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    listed(
        &state,
        &caller,
        PeerRequest::Consumers,
        Some(&vhost),
        &query,
    )
    .await
}
