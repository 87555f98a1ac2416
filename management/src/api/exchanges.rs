//! `/api/exchanges`: list, one exchange, declare, delete, and publish a message.

use axum::body::Bytes;
use axum::extract::{Path, Query, State as Ctx};
use axum::response::Response;
use axum::Json;
use base64::Engine;
use serde_json::{json, Value};
use warren_access::{Access, Resource};
use warren_actors::channel::{ChannelState, PublishOutcome};
use warren_actors::delivery::next_channel_id;
use warren_actors::exchange::{ExchangeDef, ExchangeKind};
use warren_actors::message::Message;
use warren_actors::vhost::VHost;

use super::{
    created, exchange_name, no_content, object, vhost_of, visible_vhosts, DeleteConditions, Fields,
};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::json::{properties_from_json, table_from_json, table_to_json};
use crate::listing::ListQuery;
use crate::State;

/// An exchange as RabbitMQ's API shows it.
pub fn exchange_json(vhost: &str, x: &ExchangeDef) -> Value {
    json!({
        "name": x.name,
        "vhost": vhost,
        "type": x.kind.as_str(),
        "durable": x.durable,
        "auto_delete": x.auto_delete,
        "internal": x.internal,
        "arguments": table_to_json(&x.arguments),
        "user_who_performed_action": "",
    })
}

fn exchanges_of(vhosts: &[VHost]) -> Vec<Value> {
    vhosts
        .iter()
        .flat_map(|v| {
            v.list_exchanges()
                .into_iter()
                .map(|x| exchange_json(v.name(), &x))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `GET /api/exchanges`.
pub async fn list(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let plan = query.plan()?;
    Ok(Json(
        plan.apply(exchanges_of(&visible_vhosts(&state, &caller))),
    ))
}

/// `GET /api/exchanges/{vhost}`.
pub async fn list_in(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let plan = query.plan()?;
    let v = vhost_of(&state, &caller, &vhost)?;
    Ok(Json(plan.apply(exchanges_of(&[v]))))
}

/// The exchange called `name` (one declared through another node a moment ago too).
async fn find(v: &VHost, name: &str) -> Result<ExchangeDef, ApiError> {
    let name = exchange_name(name);
    v.find_exchange(name)
        .await
        .ok_or_else(|| ApiError::not_found(format!("no exchange '{name}' in vhost '{}'", v.name())))
}

/// `GET /api/exchanges/{vhost}/{name}`.
pub async fn one(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let v = vhost_of(&state, &caller, &vhost)?;
    let def = find(&v, &name).await?;
    let mut json = exchange_json(&vhost, &def);
    if def.kind == ExchangeKind::DelayedMessage {
        // What this node holds (as the plugin's count is its node's).
        let held = v.delayed_count(&def.name).await.map_err(ApiError::from)?;
        json["messages_delayed"] = held.into();
    }
    Ok(Json(json))
}

/// `PUT /api/exchanges/{vhost}/{name}`: declares it (201) or checks the one there is
/// equivalent (204).
pub async fn declare(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let v = vhost_of(&state, &caller, &vhost)?;
    let body = object(&body)?;
    caller.check(&state, &vhost, Access::Configure, Resource::Exchange(&name))?;
    declare_in(&v, exchange_name(&name), &body).await
}

/// Declares exchange `name` in `v` from a JSON object (also what a definitions import
/// does for each exchange).
pub async fn declare_in(
    v: &VHost,
    name: &str,
    body: &serde_json::Map<String, Value>,
) -> Result<Response, ApiError> {
    crate::json::short_string("the exchange name", name)?;
    let kind = body.text("type")?.ok_or_else(|| {
        ApiError::bad_request("'type' is required (direct, fanout, topic, headers...)")
    })?;
    let existed = v.topology().exchange(name).is_some();
    v.declare_exchange(
        name,
        &kind,
        body.flag("durable")?.unwrap_or(true),
        body.flag("auto_delete")?.unwrap_or(false),
        body.flag("internal")?.unwrap_or(false),
        false,
        table_from_json(body.get("arguments"), "arguments")?,
    )
    .await?;
    Ok(if existed { no_content() } else { created() })
}

/// `DELETE /api/exchanges/{vhost}/{name}`.
pub async fn remove(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(conditions): Query<DeleteConditions>,
) -> Result<Response, ApiError> {
    let v = vhost_of(&state, &caller, &vhost)?;
    caller.check(&state, &vhost, Access::Configure, Resource::Exchange(&name))?;
    let def = find(&v, &name).await?;
    v.delete_exchange(&def.name, conditions.if_unused()).await?;
    Ok(no_content())
}

/// `POST /api/exchanges/{vhost}/{name}/publish`: publishes one message and says
/// whether a queue took it (`{"routed": true}`).
pub async fn publish(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let v = vhost_of(&state, &caller, &vhost)?;
    let body = object(&body)?;
    let exchange = exchange_name(&name).to_string();
    caller.check(&state, &vhost, Access::Write, Resource::Exchange(&exchange))?;
    let routing_key = body
        .text("routing_key")?
        .ok_or_else(|| ApiError::bad_request("'routing_key' is required"))?;
    let payload = body
        .text("payload")?
        .ok_or_else(|| ApiError::bad_request("'payload' is required"))?;
    let payload = match body.text("payload_encoding")?.as_deref() {
        None | Some("string") => payload.into_bytes(),
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(payload.trim())
            .map_err(|e| ApiError::bad_request(format!("the payload is not base64: {e}")))?,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "payload_encoding must be string or base64, not '{other}'"
            )))
        }
    };
    crate::json::short_string("routing_key", &routing_key)?;
    let properties = properties_from_json(body.get("properties"))?;
    if let Some(user_id) = &properties.user_id {
        if *user_id != caller.name {
            return Err(ApiError::bad_request(format!(
                "user_id property set to '{user_id}' but authenticated user was '{}'",
                caller.name
            )));
        }
    }
    let message = Message {
        exchange,
        routing_key,
        properties,
        body: payload.into(),
    };
    // Mandatory, so that the outcome says whether a queue took it.
    let channel = ChannelState::new(v.clone(), next_channel_id());
    let outcomes = channel
        .publish_in_order(vec![(message, true)], true, None)
        .await;
    let outcome = match outcomes {
        Some(outcomes) => outcomes.await.pop(),
        None => Some(PublishOutcome::Confirmed),
    };
    match outcome {
        Some(PublishOutcome::Confirmed) | None => Ok(Json(json!({ "routed": true }))),
        Some(PublishOutcome::Unroutable) => Ok(Json(json!({ "routed": false }))),
        Some(PublishOutcome::Rejected(why)) => Ok(Json(json!({ "routed": false, "reason": why }))),
        Some(PublishOutcome::Failed(e)) => Err(e.into()),
    }
}
