//! `/api/definitions`: export and import of what the broker is made of (vhosts,
//! users, permissions, exchanges, queues, bindings) in RabbitMQ's JSON layout, for
//! the whole node or one vhost. An import is checked whole before anything changes:
//! a bad item (or something Warren does not have, such as policies) refuses it all.

use axum::body::Bytes;
use axum::extract::{Path, State as Ctx};
use axum::response::Response;
use axum::Json;
use serde_json::{json, Map, Value};
use warren_actors::exchange::{Binding, Destination};
use warren_actors::vhost::VHost;

use super::access::{add_vhost, put_user_from, set_permission, user_json};
use super::bindings::create_in;
use super::overview::RABBITMQ_API_VERSION;
use super::{no_content, object, vhost_of, Fields};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::json::{kind_of, table_from_json, table_to_json};
use crate::State;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The exchanges, queues and bindings of `v`; `with_vhost` adds each item's vhost
/// (a whole-node export) or leaves it out (a vhost's).
fn topology(v: &VHost, with_vhost: bool) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let tag = |mut item: Value| {
        if with_vhost {
            item["vhost"] = json!(v.name());
        }
        item
    };
    let exchanges = v
        .list_exchanges()
        .into_iter()
        .filter(|x| !x.name.is_empty() && !x.name.starts_with("amq."))
        .map(|x| {
            tag(json!({
                "name": x.name,
                "type": x.kind.as_str(),
                "durable": x.durable,
                "auto_delete": x.auto_delete,
                "internal": x.internal,
                "arguments": table_to_json(&x.arguments),
            }))
        })
        .collect();
    let queues = v
        .queue_defs()
        .into_iter()
        .filter(|q| q.owner.is_none())
        .map(|q| {
            tag(json!({
                "name": q.name,
                "durable": q.durable,
                "auto_delete": q.auto_delete,
                "arguments": table_to_json(&q.arguments),
            }))
        })
        .collect();
    let bindings = v
        .list_bindings()
        .into_iter()
        .filter(|b| !b.source.is_empty())
        .map(|b| {
            let (destination, kind) = match &b.destination {
                Destination::Queue(q) => (q.clone(), "queue"),
                Destination::Exchange(x) => (x.clone(), "exchange"),
            };
            tag(json!({
                "source": b.source,
                "destination": destination,
                "destination_type": kind,
                "routing_key": b.routing_key,
                "arguments": table_to_json(&b.arguments),
            }))
        })
        .collect();
    (exchanges, queues, bindings)
}

/// `GET /api/definitions` (administrators).
pub async fn export(Ctx(state): Ctx<State>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require_administrator()?;
    let mut vhosts = state.vhosts.list();
    vhosts.sort_by(|a, b| a.name.cmp(&b.name));
    let (mut exchanges, mut queues, mut bindings) = (Vec::new(), Vec::new(), Vec::new());
    for def in &vhosts {
        if let Some(v) = state.vhosts.get(&def.name) {
            let (x, q, b) = topology(&v, true);
            exchanges.extend(x);
            queues.extend(q);
            bindings.extend(b);
        }
    }
    Ok(Json(json!({
        "product_name": "Warren",
        "product_version": VERSION,
        "rabbit_version": RABBITMQ_API_VERSION,
        "rabbitmq_version": RABBITMQ_API_VERSION,
        "users": state.access.user_records().iter().map(user_json).collect::<Vec<_>>(),
        "vhosts": vhosts.iter().map(|v| json!({
            "name": v.name,
            "description": v.description,
            "tags": [],
            "metadata": { "description": v.description, "tags": [] },
        })).collect::<Vec<_>>(),
        "permissions": state.access.list_permissions().iter().map(|p| json!({
            "user": p.user, "vhost": p.vhost,
            "configure": p.configure, "write": p.write, "read": p.read,
        })).collect::<Vec<_>>(),
        "topic_permissions": [],
        "parameters": [],
        "global_parameters": [],
        "policies": [],
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    })))
}

/// `GET /api/definitions/{vhost}` (administrators).
pub async fn export_vhost(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_administrator()?;
    let v = vhost_of(&state, &caller, &vhost)?;
    let (exchanges, queues, bindings) = topology(&v, false);
    Ok(Json(json!({
        "rabbit_version": RABBITMQ_API_VERSION,
        "rabbitmq_version": RABBITMQ_API_VERSION,
        "parameters": [],
        "policies": [],
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    })))
}

/// A definitions document's list `key` (absent: empty).
fn list<'a>(
    doc: &'a Map<String, Value>,
    key: &str,
) -> Result<Vec<&'a Map<String, Value>>, ApiError> {
    match doc.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_object().ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "{key}[{i}] must be a JSON object, not {}",
                        kind_of(item)
                    ))
                })
            })
            .collect(),
        Some(other) => Err(ApiError::bad_request(format!(
            "'{key}' must be an array, not {}",
            kind_of(other)
        ))),
    }
}

/// A required string field of item `i` of list `key`.
fn required(
    item: &Map<String, Value>,
    field: &str,
    key: &str,
    i: usize,
) -> Result<String, ApiError> {
    item.text(field)?
        .ok_or_else(|| ApiError::bad_request(format!("{key}[{i}] has no '{field}'")))
}

/// What an import will do, checked before anything is done.
struct Plan<'a> {
    vhosts: Vec<(String, &'a Map<String, Value>)>,
    users: Vec<(String, &'a Map<String, Value>)>,
    permissions: Vec<(String, String, &'a Map<String, Value>)>,
    exchanges: Vec<(String, String, &'a Map<String, Value>)>,
    queues: Vec<(String, String, &'a Map<String, Value>)>,
    bindings: Vec<(String, Binding)>,
}

/// Checks a document; `only` is the vhost of a vhost import (items have no vhost).
fn check<'a>(doc: &'a Map<String, Value>, only: Option<&str>) -> Result<Plan<'a>, ApiError> {
    for unsupported in [
        "policies",
        "parameters",
        "global_parameters",
        "topic_permissions",
    ] {
        if !list(doc, unsupported)?.is_empty() {
            return Err(ApiError::bad_request(format!(
                "the definitions have {unsupported}, which Warren does not have: remove them (queues take their settings as arguments) and import again"
            )));
        }
    }
    let vhost_of = |item: &Map<String, Value>, key: &str, i: usize| -> Result<String, ApiError> {
        match only {
            Some(v) => Ok(v.to_string()),
            None => required(item, "vhost", key, i),
        }
    };
    let mut plan = Plan {
        vhosts: Vec::new(),
        users: Vec::new(),
        permissions: Vec::new(),
        exchanges: Vec::new(),
        queues: Vec::new(),
        bindings: Vec::new(),
    };
    if only.is_none() {
        for (i, item) in list(doc, "vhosts")?.into_iter().enumerate() {
            plan.vhosts
                .push((required(item, "name", "vhosts", i)?, item));
        }
        for (i, item) in list(doc, "users")?.into_iter().enumerate() {
            let name = required(item, "name", "users", i)?;
            // Their credentials are checked now, not halfway through the import.
            if item.text("password")?.is_none() {
                let hash = required(item, "password_hash", "users", i)?;
                let algorithm = item.text("hashing_algorithm")?;
                warren_access::User::from_password_hash(&name, &hash, algorithm.as_deref(), vec![])
                    .map_err(|e| ApiError::bad_request(format!("users[{i}] ('{name}'): {e}")))?;
            }
            plan.users.push((name, item));
        }
        for (i, item) in list(doc, "permissions")?.into_iter().enumerate() {
            for access in ["configure", "write", "read"] {
                let pattern = required(item, access, "permissions", i)?;
                regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
                    ApiError::bad_request(format!(
                        "permissions[{i}]: {access} '{pattern}' is not a regular expression: {e}"
                    ))
                })?;
            }
            plan.permissions.push((
                required(item, "vhost", "permissions", i)?,
                required(item, "user", "permissions", i)?,
                item,
            ));
        }
    }
    for (i, item) in list(doc, "exchanges")?.into_iter().enumerate() {
        let kind = required(item, "type", "exchanges", i)?;
        kind.parse::<warren_actors::exchange::ExchangeKind>()
            .map_err(|_| {
                ApiError::bad_request(format!("exchanges[{i}]: unknown exchange type '{kind}'"))
            })?;
        table_from_json(item.get("arguments"), "arguments")?;
        plan.exchanges.push((
            vhost_of(item, "exchanges", i)?,
            required(item, "name", "exchanges", i)?,
            item,
        ));
    }
    for (i, item) in list(doc, "queues")?.into_iter().enumerate() {
        table_from_json(item.get("arguments"), "arguments")?;
        plan.queues.push((
            vhost_of(item, "queues", i)?,
            required(item, "name", "queues", i)?,
            item,
        ));
    }
    for (i, item) in list(doc, "bindings")?.into_iter().enumerate() {
        let destination = required(item, "destination", "bindings", i)?;
        let destination = match required(item, "destination_type", "bindings", i)?.as_str() {
            "queue" => Destination::Queue(destination),
            "exchange" => Destination::Exchange(destination),
            other => {
                return Err(ApiError::bad_request(format!(
                    "bindings[{i}]: destination_type must be queue or exchange, not '{other}'"
                )))
            }
        };
        plan.bindings.push((
            vhost_of(item, "bindings", i)?,
            Binding {
                source: required(item, "source", "bindings", i)?,
                destination,
                routing_key: item.text("routing_key")?.unwrap_or_default(),
                arguments: table_from_json(item.get("arguments"), "arguments")?,
            },
        ));
    }
    Ok(plan)
}

fn in_vhost(state: &State, name: &str) -> Result<VHost, ApiError> {
    state.vhosts.get(name).ok_or_else(|| {
        ApiError::bad_request(format!(
            "the definitions use vhost '{name}', which neither exists nor is among them"
        ))
    })
}

/// Applies a checked import in RabbitMQ's order.
async fn apply(state: &State, plan: Plan<'_>) -> Result<(), ApiError> {
    for (name, item) in plan.vhosts {
        add_vhost(state, &name, item).await?;
    }
    for (name, item) in plan.users {
        put_user_from(state, &name, item).await?;
    }
    for (vhost, user, item) in plan.permissions {
        set_permission(state, &vhost, &user, item).await?;
    }
    for (vhost, name, item) in plan.exchanges {
        super::exchanges::declare_in(&in_vhost(state, &vhost)?, &name, item).await?;
    }
    for (vhost, name, item) in plan.queues {
        super::queues::declare_in(&in_vhost(state, &vhost)?, &name, item).await?;
    }
    for (vhost, binding) in plan.bindings {
        create_in(&in_vhost(state, &vhost)?, binding).await?;
    }
    Ok(())
}

/// `POST /api/definitions` (administrators).
pub async fn import(
    Ctx(state): Ctx<State>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_administrator()?;
    let doc = object(&body)?;
    let plan = check(&doc, None)?;
    apply(&state, plan).await?;
    Ok(no_content())
}

/// `POST /api/definitions/{vhost}` (administrators).
pub async fn import_vhost(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path(vhost): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_administrator()?;
    vhost_of(&state, &caller, &vhost)?;
    let doc = object(&body)?;
    let plan = check(&doc, Some(&vhost))?;
    apply(&state, plan).await?;
    Ok(no_content())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn an_import_is_checked_whole_first() {
        let good = doc(json!({
            "vhosts": [{"name": "v"}],
            "queues": [{"name": "q", "vhost": "v", "durable": true, "arguments": {}}],
            "bindings": [{"source": "x", "vhost": "v", "destination": "q",
                          "destination_type": "queue", "routing_key": "k", "arguments": {}}],
            "policies": [],
        }));
        let plan = check(&good, None).unwrap();
        assert_eq!(plan.queues.len(), 1);
        assert_eq!(
            plan.bindings[0].1.destination,
            Destination::Queue("q".into())
        );

        for (bad, says) in [
            (
                json!({"queues": [{"vhost": "v"}]}),
                "queues[0] has no 'name'",
            ),
            (json!({"queues": {}}), "'queues' must be an array"),
            (
                json!({"bindings": [{"source": "x", "vhost": "v", "destination": "q",
                                  "destination_type": "stream"}]}),
                "destination_type",
            ),
            (json!({"policies": [{"name": "p"}]}), "policies"),
            (
                json!({"users": [{"name": "u", "password_hash": "eA==", "tags": []}]}),
                "users[0]",
            ),
            (
                json!({"permissions": [{"user": "u", "vhost": "/", "configure": "(",
                                     "write": "", "read": ""}]}),
                "not a regular expression",
            ),
            (
                json!({"exchanges": [{"name": "x", "vhost": "v", "type": "nope", "arguments": {}}]}),
                "unknown exchange type",
            ),
            (
                json!({"exchanges": [{"name": "x", "vhost": "v", "type": "direct", "arguments": [1]}]}),
                "'arguments' must be a JSON object",
            ),
        ] {
            let e = check(&doc(bad), None).err().expect("refused");
            assert!(e.to_string().contains(says), "{e}");
        }
    }
}
