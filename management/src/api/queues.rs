//! `/api/queues`: list (paged: only the page's queues are asked for their counts
//! when the list is cut by name), one queue, declare, delete, purge, get messages.

use axum::body::Bytes;
use axum::extract::{Path, Query, State as Ctx};
use axum::response::Response;
use axum::Json;
use base64::Engine;
use serde_json::{json, Value};
use warren_access::{Access, Resource};
use warren_actors::channel::{Settle, SettleKind};
use warren_actors::delivery::next_channel_id;
use warren_actors::queue::QueueKind;
use warren_actors::vhost::{QueueSummary, VHost};

use super::{
    created, no_content, object, vhost_of, visible_vhosts, ApiChannel, DeleteConditions, Fields,
};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::json::{properties_to_json, table_from_json, table_to_json};
use crate::listing::ListQuery;
use crate::State;

/// A queue as RabbitMQ's API shows it.
pub fn queue_json(vhost: &str, q: &QueueSummary) -> Value {
    let kind = QueueKind::of(&q.arguments).map_or("classic", |k| k.as_str());
    let s = &q.stats;
    let mut v = json!({
        "name": q.name,
        "vhost": vhost,
        "durable": q.durable,
        "auto_delete": q.auto_delete,
        "exclusive": q.exclusive,
        "arguments": table_to_json(&q.arguments),
        "node": q.node,
        "type": kind,
        "state": "running",
        "policy": null,
        "exclusive_consumer_tag": null,
        "messages": s.ready + s.unacked,
        "messages_ready": s.ready,
        "messages_unacknowledged": s.unacked,
        "consumers": s.consumers,
        "message_bytes": s.bytes_total,
        "message_bytes_ready": s.ready_bytes,
        "message_bytes_unacknowledged": s.unacked_bytes,
        "message_bytes_ram": s.bytes_in_memory,
        "messages_ram": s.messages_in_memory,
        "messages_paged_out": s.paged_out,
        "memory": s.bytes_in_memory,
        "restarts": q.restarts,
    });
    if !q.members.is_empty() || q.replication.is_some() {
        let r = q.replication.as_ref();
        v["members"] = json!(q.members);
        v["leader"] = json!(r.map_or(q.node.as_str(), |r| r.leader.as_str()));
        v["online"] = json!(r.map_or_else(Vec::new, |r| r
            .members
            .iter()
            .map(|m| m.node.clone())
            .collect::<Vec<_>>()));
        if let Some(r) = r {
            v["raft"] = json!({
                "term": r.term,
                "committed": r.committed,
                "log_first": r.log_first,
                "log_last": r.log_last,
                "snapshot": r.snapshot,
                "members": r.members.iter().map(|m| json!({
                    "node": m.node, "matched": m.matched, "voter": m.voter,
                    "in_sync": r.in_sync(&m.node),
                })).collect::<Vec<_>>(),
            });
        }
    }
    v
}

/// The queues of `vhosts`, cut as `query` asks: when only names decide, the page is
/// picked by name first and only its queues are asked for their counts.
async fn listing(vhosts: Vec<VHost>, query: &ListQuery) -> Result<Value, ApiError> {
    let plan = query.plan()?;
    if plan.by_name_only() {
        let mut names: Vec<(String, String)> = Vec::new();
        let mut total = 0;
        for vhost in &vhosts {
            for def in vhost.queue_defs() {
                total += 1;
                if plan.keeps(&def.name) {
                    names.push((def.name, vhost.name().to_string()));
                }
            }
        }
        names.sort();
        let (range, reverse) = plan.page_range(names.len());
        let filtered = names.len();
        if reverse {
            names.reverse();
        }
        let page = &names[range];
        let mut items = Vec::with_capacity(page.len());
        for vhost in &vhosts {
            let wanted: Vec<&str> = page
                .iter()
                .filter(|(_, v)| v == vhost.name())
                .map(|(n, _)| n.as_str())
                .collect();
            if wanted.is_empty() {
                continue;
            }
            for q in vhost.list_queues_named(&wanted).await {
                items.push(queue_json(vhost.name(), &q));
            }
        }
        let key = |v: &Value| {
            (
                v["name"].as_str().map(str::to_string),
                v["vhost"].as_str().map(str::to_string),
            )
        };
        items.sort_by_key(key);
        if reverse {
            items.reverse();
        }
        return Ok(plan.wrap_page(items, filtered, total));
    }
    let mut items = Vec::new();
    for vhost in &vhosts {
        for q in vhost.list_queues().await {
            items.push(queue_json(vhost.name(), &q));
        }
    }
    Ok(plan.apply(items))
}

/// `GET /api/queues`.
pub async fn list(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        listing(visible_vhosts(&state, &caller), &query).await?,
    ))
}

/// `GET /api/queues/{vhost}`.
pub async fn list_in(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let vhost = vhost_of(&state, &caller, &vhost)?;
    Ok(Json(listing(vec![vhost], &query).await?))
}

fn no_queue(vhost: &str, name: &str) -> ApiError {
    ApiError::not_found(format!("no queue '{name}' in vhost '{vhost}'"))
}

/// `GET /api/queues/{vhost}/{name}`.
pub async fn one(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let v = vhost_of(&state, &caller, &vhost)?;
    // Declared through another node a moment ago: known here once caught up.
    v.find_queue_any(&name)
        .await
        .ok_or_else(|| no_queue(&vhost, &name))?;
    let q = v
        .list_queues_named(&[name.as_str()])
        .await
        .pop()
        .ok_or_else(|| no_queue(&vhost, &name))?;
    Ok(Json(queue_json(&vhost, &q)))
}

/// `PUT /api/queues/{vhost}/{name}`: declares the queue (201), or checks that the one
/// there is equivalent (204).
pub async fn declare(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let v = vhost_of(&state, &caller, &vhost)?;
    let body = object(&body)?;
    caller.check(&state, &vhost, Access::Configure, Resource::Queue(&name))?;
    declare_in(&v, &name, &body).await
}

/// Declares queue `name` in `v` from a JSON object (also what a definitions import
/// does for each queue).
pub async fn declare_in(
    v: &VHost,
    name: &str,
    body: &serde_json::Map<String, Value>,
) -> Result<Response, ApiError> {
    if name.is_empty() {
        return Err(ApiError::bad_request("a queue declared here needs a name"));
    }
    crate::json::short_string("the queue name", name)?;
    if body.flag("exclusive")?.unwrap_or(false) {
        return Err(ApiError::bad_request(
            "an exclusive queue belongs to a connection and cannot be declared through the API",
        ));
    }
    let durable = body.flag("durable")?.unwrap_or(true);
    let auto_delete = body.flag("auto_delete")?.unwrap_or(false);
    let mut arguments = table_from_json(body.get("arguments"), "arguments")?;
    if let Some(kind) = body.text("type")? {
        arguments
            .entry("x-queue-type".into())
            .or_insert_with(|| warren_actors::message::FieldValue::string(kind));
    }
    let existed = v.queue_def(name).is_some();
    v.declare_queue(
        name,
        durable,
        None,
        auto_delete,
        false,
        arguments,
        next_channel_id(),
    )
    .await?;
    Ok(if existed { no_content() } else { created() })
}

/// `DELETE /api/queues/{vhost}/{name}`.
pub async fn remove(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(conditions): Query<DeleteConditions>,
) -> Result<Response, ApiError> {
    let v = vhost_of(&state, &caller, &vhost)?;
    caller.check(&state, &vhost, Access::Configure, Resource::Queue(&name))?;
    if v.find_queue_any(&name).await.is_none() {
        return Err(no_queue(&vhost, &name));
    }
    v.delete_queue(
        &name,
        conditions.if_unused(),
        conditions.if_empty(),
        next_channel_id(),
    )
    .await?;
    Ok(no_content())
}

/// `DELETE /api/queues/{vhost}/{name}/contents`: purges the queue.
pub async fn purge(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let v = vhost_of(&state, &caller, &vhost)?;
    caller.check(&state, &vhost, Access::Read, Resource::Queue(&name))?;
    if v.find_queue_any(&name).await.is_none() {
        return Err(no_queue(&vhost, &name));
    }
    v.purge_queue(&name, next_channel_id()).await?;
    Ok(no_content())
}

/// RabbitMQ's `ackmode` of a get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AckMode {
    AckRequeueTrue,
    AckRequeueFalse,
    RejectRequeueTrue,
    RejectRequeueFalse,
}

impl AckMode {
    fn parse(text: &str) -> Result<AckMode, ApiError> {
        Ok(match text {
            "ack_requeue_true" => AckMode::AckRequeueTrue,
            "ack_requeue_false" => AckMode::AckRequeueFalse,
            "reject_requeue_true" => AckMode::RejectRequeueTrue,
            "reject_requeue_false" => AckMode::RejectRequeueFalse,
            other => {
                return Err(ApiError::bad_request(format!(
                    "ackmode must be ack_requeue_true, ack_requeue_false, reject_requeue_true or reject_requeue_false, not '{other}'"
                )))
            }
        })
    }

    /// How the got messages are settled at the end.
    fn settlement(self) -> SettleKind {
        match self {
            AckMode::AckRequeueFalse => SettleKind::Ack,
            AckMode::AckRequeueTrue | AckMode::RejectRequeueTrue => {
                SettleKind::Reject { requeue: true }
            }
            AckMode::RejectRequeueFalse => SettleKind::Reject { requeue: false },
        }
    }
}

/// The most messages one get may take (RabbitMQ has no limit; a browser does).
const MAX_GET: u64 = 10_000;
/// A get stops taking messages once their bodies add up to this (the answer is JSON,
/// base64 makes it a third larger): what it did not take stays in the queue.
const MAX_GET_BYTES: usize = 64 << 20;

/// `POST /api/queues/{vhost}/{name}/get`: takes up to `count` messages, then acks or
/// rejects (requeueing or not) all of them as `ackmode` says.
pub async fn get_messages(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let v = vhost_of(&state, &caller, &vhost)?;
    let body = object(&body)?;
    caller.check(&state, &vhost, Access::Read, Resource::Queue(&name))?;
    let count = body.count("count")?.unwrap_or(1);
    if count == 0 || count > MAX_GET {
        return Err(ApiError::bad_request(format!(
            "count must be from 1 to {MAX_GET}, not {count}"
        )));
    }
    let mode =
        AckMode::parse(body.text("ackmode")?.as_deref().ok_or_else(|| {
            ApiError::bad_request("'ackmode' is required (e.g. ack_requeue_true)")
        })?)?;
    let encoding = body.text("encoding")?.unwrap_or_else(|| "auto".into());
    if encoding != "auto" && encoding != "base64" {
        return Err(ApiError::bad_request(format!(
            "encoding must be auto or base64, not '{encoding}'"
        )));
    }
    let truncate = body.count("truncate")?.map(|t| t as usize);
    // Whatever is taken and not settled below (an error, the client gone) goes back
    // to the queue when `channel` drops.
    let mut channel = ApiChannel::new(&v);
    let id = channel.id();
    let queue = v.find_queue(&name, id).await?;
    channel.touch(queue.name().clone());
    let (mut got, mut last_tag, mut bytes) = (Vec::new(), 0, 0);
    for _ in 0..count {
        let Some((d, remaining)) = queue.get(id, false).await? else {
            break;
        };
        last_tag = channel.track(&d, false);
        bytes += d.message.body.len();
        got.push(message_json(
            &d.message,
            d.redelivered,
            remaining,
            &encoding,
            truncate,
        ));
        if bytes >= MAX_GET_BYTES {
            break;
        }
    }
    if last_tag > 0 {
        channel.settle(&[Settle {
            delivery_tag: last_tag,
            multiple: true,
            kind: mode.settlement(),
        }])?;
    }
    Ok(Json(Value::Array(got)))
}

fn message_json(
    m: &warren_actors::message::Message,
    redelivered: bool,
    remaining: u64,
    encoding: &str,
    truncate: Option<usize>,
) -> Value {
    let body = &m.body[..truncate.unwrap_or(m.body.len()).min(m.body.len())];
    let (payload, payload_encoding) = match std::str::from_utf8(body) {
        Ok(text) if encoding == "auto" => (text.to_string(), "string"),
        _ => (
            base64::engine::general_purpose::STANDARD.encode(body),
            "base64",
        ),
    };
    json!({
        "payload_bytes": m.body.len(),
        "redelivered": redelivered,
        "exchange": m.exchange,
        "routing_key": m.routing_key,
        "message_count": remaining,
        "properties": properties_to_json(&m.properties),
        "payload": payload,
        "payload_encoding": payload_encoding,
    })
}
