//! The routes of `/api` (RabbitMQ's paths) and what their handlers share: request
//! bodies read as JSON objects with typed fields, and the answers that carry no body.

mod access;
mod bindings;
pub(crate) mod connections;
mod definitions;
mod exchanges;
pub(crate) mod overview;
mod queues;
mod warren;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::json::kind_of;
use crate::State;

/// Every route of the API.
pub fn router(state: State) -> Router {
    Router::new()
        .route("/api/overview", get(overview::overview))
        .route("/api/cluster-name", get(overview::cluster_name))
        .route("/api/nodes", get(overview::nodes))
        .route("/api/nodes/{node}", get(overview::node))
        .route("/api/whoami", get(overview::whoami))
        .route("/api/extensions", get(overview::extensions))
        .route("/api/auth", get(overview::auth))
        .route("/api/aliveness-test/{vhost}", get(overview::aliveness))
        .route("/api/health/checks/alarms", get(overview::alarms))
        .route(
            "/api/health/checks/local-alarms",
            get(overview::local_alarms),
        )
        .route(
            "/api/health/checks/port-listener/{port}",
            get(overview::port_listener),
        )
        .route(
            "/api/health/checks/protocol-listener/{protocol}",
            get(overview::protocol_listener),
        )
        .route(
            "/api/health/checks/node-is-quorum-critical",
            get(overview::quorum_critical),
        )
        .route(
            "/api/health/checks/node-is-mirror-sync-critical",
            get(overview::quorum_critical),
        )
        .route(
            "/api/health/checks/virtual-hosts",
            get(overview::virtual_hosts),
        )
        .route("/api/connections", get(connections::list))
        .route(
            "/api/connections/{name}",
            get(connections::one).delete(connections::close),
        )
        .route(
            "/api/connections/{name}/channels",
            get(connections::channels_of),
        )
        .route("/api/vhosts/{vhost}/connections", get(connections::list_in))
        .route("/api/channels", get(connections::channels))
        .route("/api/channels/{name}", get(connections::channel))
        .route(
            "/api/vhosts/{vhost}/channels",
            get(connections::channels_in),
        )
        .route("/api/consumers", get(connections::consumers))
        .route("/api/consumers/{vhost}", get(connections::consumers_in))
        .route("/api/exchanges", get(exchanges::list))
        .route("/api/exchanges/{vhost}", get(exchanges::list_in))
        .route(
            "/api/exchanges/{vhost}/{name}",
            get(exchanges::one)
                .put(exchanges::declare)
                .delete(exchanges::remove),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/source",
            get(bindings::of_source),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/destination",
            get(bindings::of_exchange_destination),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/publish",
            post(exchanges::publish),
        )
        .route("/api/queues", get(queues::list))
        .route("/api/queues/{vhost}", get(queues::list_in))
        .route(
            "/api/queues/{vhost}/{name}",
            get(queues::one).put(queues::declare).delete(queues::remove),
        )
        .route(
            "/api/queues/{vhost}/{name}/bindings",
            get(bindings::of_queue),
        )
        .route("/api/queues/{vhost}/{name}/contents", delete(queues::purge))
        .route("/api/queues/{vhost}/{name}/get", post(queues::get_messages))
        .route("/api/bindings", get(bindings::list))
        .route("/api/bindings/{vhost}", get(bindings::list_in))
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}",
            get(bindings::between).post(bindings::create),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}/{props}",
            get(bindings::one).delete(bindings::remove),
        )
        .route("/api/vhosts", get(access::vhosts))
        .route(
            "/api/vhosts/{vhost}",
            get(access::vhost)
                .put(access::put_vhost)
                .delete(access::delete_vhost),
        )
        .route(
            "/api/vhosts/{vhost}/permissions",
            get(access::vhost_permissions),
        )
        .route("/api/users", get(access::users))
        .route(
            "/api/users/without-permissions",
            get(access::users_without_permissions),
        )
        .route("/api/users/bulk-delete", post(access::bulk_delete_users))
        .route(
            "/api/users/{user}",
            get(access::user)
                .put(access::put_user)
                .delete(access::delete_user),
        )
        .route(
            "/api/users/{user}/permissions",
            get(access::user_permissions),
        )
        .route("/api/permissions", get(access::permissions))
        .route(
            "/api/permissions/{vhost}/{user}",
            get(access::permission)
                .put(access::put_permission)
                .delete(access::delete_permission),
        )
        .route("/api/policies", get(access::no_policies))
        .route("/api/policies/{vhost}", get(access::no_policies))
        .route("/api/policies/{vhost}/{name}", put(access::refuse_policy))
        .route(
            "/api/definitions",
            get(definitions::export).post(definitions::import),
        )
        .route(
            "/api/definitions/{vhost}",
            get(definitions::export_vhost).post(definitions::import_vhost),
        )
        .route("/api/warren/tree", get(warren::tree))
        .route("/api/warren/cluster", get(warren::cluster))
        .route("/api/warren/streams", get(warren::streams))
        .route("/api/warren/rates", get(warren::rates))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Definitions of many queues are large; only an authenticated caller's body
        // is read (the caller is checked first).
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(require_json))
        .layer(axum::middleware::map_response(json_errors))
        .with_state(state)
}

/// The largest request body (a definitions import of 100 000 queues is ~20 MiB).
const MAX_BODY: usize = 64 << 20;

async fn not_found() -> ApiError {
    ApiError::not_found("no such API path (see the README's Management section)")
}

async fn method_not_allowed(method: axum::http::Method) -> Response {
    let body = serde_json::json!({
        "error": "Method Not Allowed",
        "reason": format!("{method} is not allowed on this path"),
    });
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}

/// A body must say it is JSON (415 otherwise, as RabbitMQ): a cross-site HTML form can
/// send a body that parses as JSON, but not with this type.
async fn require_json(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let headers = request.headers();
    let has_body = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > 0)
        || headers.contains_key(axum::http::header::TRANSFER_ENCODING);
    let json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if has_body && !json {
        let body = serde_json::json!({
            "error": "Unsupported Media Type",
            "reason": "a request body must be JSON, sent with Content-Type: application/json",
        });
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, axum::Json(body)).into_response();
    }
    next.run(request).await
}

/// Every refusal is JSON with a reason, also those axum makes itself before a handler
/// runs (a path that is not valid percent-encoding, a body over the limit).
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let word = status.canonical_reason().unwrap_or("error");
    let body = serde_json::json!({
        "error": word,
        "reason": if text.is_empty() { word.to_string() } else { text },
    });
    (status, axum::Json(body)).into_response()
}

/// 201 Created with no body (a PUT or POST that made something).
pub fn created() -> Response {
    StatusCode::CREATED.into_response()
}

/// 204 No Content (a change that needs no answer).
pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// A request body as a JSON object; an empty body is an empty object.
pub fn object(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(ApiError::bad_request(format!(
            "the body must be a JSON object, not {}",
            kind_of(&other)
        ))),
        Err(e) => Err(ApiError::bad_request(format!("the body is not JSON: {e}"))),
    }
}

/// Typed fields of a request body; a field of the wrong type is a 400 naming it.
pub trait Fields {
    /// A boolean field (RabbitMQ also takes `"true"`/`"false"`).
    fn flag(&self, name: &str) -> Result<Option<bool>, ApiError>;
    /// A string field.
    fn text(&self, name: &str) -> Result<Option<String>, ApiError>;
    /// A non-negative integer field.
    fn count(&self, name: &str) -> Result<Option<u64>, ApiError>;
}

impl Fields for Map<String, Value> {
    fn flag(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s == "true" => Ok(Some(true)),
            Some(Value::String(s)) if s == "false" => Ok(Some(false)),
            Some(other) => Err(ApiError::bad_request(format!(
                "'{name}' must be a boolean, not {}",
                kind_of(other)
            ))),
        }
    }

    fn text(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(ApiError::bad_request(format!(
                "'{name}' must be a string, not {}",
                kind_of(other)
            ))),
        }
    }

    fn count(&self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
            Some(Value::String(s)) if s.parse::<u64>().is_ok() => Ok(s.parse().ok()),
            Some(other) => Err(ApiError::bad_request(format!(
                "'{name}' must be a non-negative integer, not {}",
                kind_of(other)
            ))),
        }
    }
}

/// A channel of the API's own for one request: what it took and did not settle goes
/// back to its queues when the request ends, also when the client goes away in the
/// middle (the handler's future is dropped, and this with it).
pub struct ApiChannel(warren_actors::channel::ChannelState);

impl ApiChannel {
    /// A fresh channel in `vhost`.
    pub fn new(vhost: &warren_actors::vhost::VHost) -> ApiChannel {
        ApiChannel(warren_actors::channel::ChannelState::new(
            vhost.clone(),
            warren_actors::delivery::next_channel_id(),
        ))
    }
}

impl std::ops::Deref for ApiChannel {
    type Target = warren_actors::channel::ChannelState;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for ApiChannel {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for ApiChannel {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// `?if-unused=true&if-empty=true` of a delete (a queue takes both, an exchange the
/// first).
#[derive(Debug, Default, serde::Deserialize)]
pub struct DeleteConditions {
    #[serde(rename = "if-unused")]
    if_unused: Option<String>,
    #[serde(rename = "if-empty")]
    if_empty: Option<String>,
}

impl DeleteConditions {
    /// Delete only if unused.
    pub fn if_unused(&self) -> bool {
        self.if_unused.as_deref() == Some("true")
    }

    /// Delete only if empty.
    pub fn if_empty(&self) -> bool {
        self.if_empty.as_deref() == Some("true")
    }
}

/// The exchange a path names: RabbitMQ's `amq.default` is the default exchange.
pub fn exchange_name(name: &str) -> &str {
    if name == "amq.default" {
        ""
    } else {
        name
    }
}

/// The vhost named in a path, which must exist and be visible to the caller.
pub fn vhost_of(
    state: &State,
    caller: &crate::auth::Caller,
    vhost: &str,
) -> Result<warren_actors::vhost::VHost, ApiError> {
    caller.require_vhost(state, vhost)?;
    state
        .vhosts
        .get(vhost)
        .ok_or_else(|| ApiError::not_found(format!("no vhost '{vhost}'")))
}

/// The vhosts the caller sees, by name.
pub fn visible_vhosts(
    state: &State,
    caller: &crate::auth::Caller,
) -> Vec<warren_actors::vhost::VHost> {
    let mut vhosts: Vec<_> = state
        .vhosts
        .all()
        .into_iter()
        .filter(|v| caller.sees_vhost(state, v.name()))
        .collect();
    vhosts.sort_by(|a, b| a.name().cmp(b.name()));
    vhosts
}
