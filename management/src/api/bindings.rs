//! `/api/bindings`: list (all, per vhost, of an exchange, of a queue, between two
//! objects), create and delete. A binding is named in paths by its
//! `properties_key`: its routing key, and a digest of its arguments when it has some.

use axum::body::Bytes;
use axum::extract::{Path, Query, State as Ctx};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use warren_access::{Access, Resource};
use warren_actors::delivery::next_channel_id;
use warren_actors::exchange::{Binding, Destination};
use warren_actors::vhost::VHost;

use super::{exchange_name, no_content, object, vhost_of, visible_vhosts, Fields};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::json::{table_from_json, table_to_json};
use crate::listing::ListQuery;
use crate::State;

/// What names a binding among those between the same two objects: RabbitMQ's
/// `properties_key`: the routing key percent-encoded (so it holds no `~` and is a
/// valid header value), `~` for an empty one, `KEY~DIGEST` with arguments.
pub fn properties_key(b: &Binding) -> String {
    let key = if b.routing_key.is_empty() {
        "~".to_string()
    } else {
        b.routing_key
            .bytes()
            .map(|c| match c {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (c as char).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect()
    };
    if b.arguments.is_empty() {
        return key;
    }
    // FNV-1a of the arguments' JSON (a BTreeMap: keys in order, so stable).
    let text = table_to_json(&b.arguments).to_string();
    let digest = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{key}~{digest:016x}")
}

/// A binding as RabbitMQ's API shows it.
pub fn binding_json(vhost: &str, b: &Binding) -> Value {
    let (destination, kind) = match &b.destination {
        Destination::Queue(q) => (q, "queue"),
        Destination::Exchange(x) => (x, "exchange"),
    };
    json!({
        "source": b.source,
        "vhost": vhost,
        "destination": destination,
        "destination_type": kind,
        "routing_key": b.routing_key,
        "arguments": table_to_json(&b.arguments),
        "properties_key": properties_key(b),
    })
}

fn bindings_where(v: &VHost, keep: impl Fn(&Binding) -> bool) -> Vec<Value> {
    v.list_bindings()
        .into_iter()
        .filter(|b| keep(b))
        .map(|b| binding_json(v.name(), &b))
        .collect()
}

/// `GET /api/bindings`.
pub async fn list(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let plan = query.plan()?;
    let items = visible_vhosts(&state, &caller)
        .iter()
        .flat_map(|v| bindings_where(v, |_| true))
        .collect();
    Ok(Json(plan.apply(items)))
}

/// `GET /api/bindings/{vhost}`.
pub async fn list_in(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let plan = query.plan()?;
    let v = vhost_of(&state, &caller, &vhost)?;
    Ok(Json(plan.apply(bindings_where(&v, |_| true))))
}

/// `GET /api/exchanges/{vhost}/{name}/bindings/source`.
pub async fn of_source(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let v = vhost_of(&state, &caller, &vhost)?;
    let name = exchange_name(&name);
    Ok(Json(Value::Array(bindings_where(&v, |b| b.source == name))))
}

/// `GET /api/exchanges/{vhost}/{name}/bindings/destination`.
pub async fn of_exchange_destination(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let v = vhost_of(&state, &caller, &vhost)?;
    let wanted = Destination::Exchange(name);
    Ok(Json(Value::Array(bindings_where(&v, |b| {
        b.destination == wanted
    }))))
}

/// `GET /api/queues/{vhost}/{name}/bindings`.
pub async fn of_queue(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let v = vhost_of(&state, &caller, &vhost)?;
    if v.queue_def(&name).is_none() {
        return Err(ApiError::not_found(format!(
            "no queue '{name}' in vhost '{vhost}'"
        )));
    }
    let wanted = Destination::Queue(name);
    Ok(Json(Value::Array(bindings_where(&v, |b| {
        b.destination == wanted
    }))))
}

/// The destination a path names (`q` or `e`).
fn destination(kind: &str, name: String) -> Result<Destination, ApiError> {
    match kind {
        "q" => Ok(Destination::Queue(name)),
        "e" => Ok(Destination::Exchange(name)),
        other => Err(ApiError::not_found(format!(
            "'{other}' is not a destination type: use q (queue) or e (exchange)"
        ))),
    }
}

type Between = (String, String, String, String);

/// `GET /api/bindings/{vhost}/e/{source}/{q|e}/{destination}`.
pub async fn between(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path((vhost, source, kind, name)): Path<Between>,
) -> Result<Json<Value>, ApiError> {
    let v = vhost_of(&state, &caller, &vhost)?;
    let source = exchange_name(&source).to_string();
    let wanted = destination(&kind, name)?;
    Ok(Json(Value::Array(bindings_where(&v, |b| {
        b.source == source && b.destination == wanted
    }))))
}

/// The permissions a binding needs: write on its destination, read on its source.
fn check_bind(
    state: &State,
    caller: &Caller,
    vhost: &str,
    source: &str,
    to: &Destination,
) -> Result<(), ApiError> {
    match to {
        Destination::Queue(q) => caller.check(state, vhost, Access::Write, Resource::Queue(q))?,
        Destination::Exchange(x) => {
            caller.check(state, vhost, Access::Write, Resource::Exchange(x))?
        }
    }
    caller.check(state, vhost, Access::Read, Resource::Exchange(source))
}

/// `POST /api/bindings/{vhost}/e/{source}/{q|e}/{destination}` with `routing_key`
/// and `arguments`: 201, with the new binding's path in `Location`.
pub async fn create(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path((vhost, source, kind, name)): Path<Between>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let v = vhost_of(&state, &caller, &vhost)?;
    let body = object(&body)?;
    let binding = Binding {
        source: exchange_name(&source).to_string(),
        destination: destination(&kind, name.clone())?,
        routing_key: body.text("routing_key")?.unwrap_or_default(),
        arguments: table_from_json(body.get("arguments"), "arguments")?,
    };
    crate::json::short_string("routing_key", &binding.routing_key)?;
    check_bind(
        &state,
        &caller,
        &vhost,
        &binding.source,
        &binding.destination,
    )?;
    create_in(&v, binding.clone()).await?;
    let location = properties_key(&binding);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)]).into_response())
}

/// Adds a binding (also what a definitions import does for each binding).
pub async fn create_in(v: &VHost, binding: Binding) -> Result<(), ApiError> {
    Ok(v.bind(binding, next_channel_id()).await?)
}

/// The binding a path names by its properties key.
fn named(v: &VHost, source: &str, to: &Destination, props: &str) -> Result<Binding, ApiError> {
    let source = exchange_name(source);
    v.list_bindings()
        .into_iter()
        .find(|b| b.source == source && b.destination == *to && properties_key(b) == props)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no binding '{props}' from '{source}' to '{}'",
                to.name()
            ))
        })
}

/// `GET /api/bindings/{vhost}/e/{source}/{q|e}/{destination}/{props}`.
pub async fn one(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path((vhost, source, kind, name, props)): Path<(String, String, String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let v = vhost_of(&state, &caller, &vhost)?;
    let to = destination(&kind, name)?;
    Ok(Json(binding_json(
        &vhost,
        &named(&v, &source, &to, &props)?,
    )))
}

/// `DELETE /api/bindings/{vhost}/e/{source}/{q|e}/{destination}/{props}`.
pub async fn remove(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path((vhost, source, kind, name, props)): Path<(String, String, String, String, String)>,
) -> Result<Response, ApiError> {
    let v = vhost_of(&state, &caller, &vhost)?;
    let to = destination(&kind, name)?;
    let binding = named(&v, &source, &to, &props)?;
    check_bind(
        &state,
        &caller,
        &vhost,
        &binding.source,
        &binding.destination,
    )?;
    v.unbind(binding, next_channel_id()).await?;
    Ok(no_content())
}
