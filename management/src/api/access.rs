//! `/api/vhosts`, `/api/users`, `/api/permissions` (and `/api/policies`, which Warren
//! does not have). Changing any of them needs the `administrator` tag; users and
//! permissions go through the cluster's metadata log like `warren user ...`.

use axum::body::Bytes;
use axum::extract::{Path, Query, State as Ctx};
use axum::response::Response;
use axum::Json;
use serde_json::{json, Value};
use warren_access::{Permission, User};

use super::{created, no_content, object, visible_vhosts, Fields};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::listing::ListQuery;
use crate::State;

// ----- vhosts -------------------------------------------------------------------

fn vhost_json(name: &str, description: &str, node: &str) -> Value {
    json!({
        "name": name,
        "description": description,
        "tags": [],
        "default_queue_type": "classic",
        "metadata": { "description": description, "tags": [], "default_queue_type": "classic" },
        "tracing": false,
        "cluster_state": { node: "running" },
    })
}

/// `GET /api/vhosts`.
pub async fn vhosts(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let plan = query.plan()?;
    let node = state.node.name();
    let defs = state.vhosts.list();
    let items = visible_vhosts(&state, &caller)
        .iter()
        .map(|v| {
            let description = defs
                .iter()
                .find(|d| d.name == v.name())
                .map_or("", |d| d.description.as_str());
            vhost_json(v.name(), description, &node)
        })
        .collect();
    Ok(Json(plan.apply(items)))
}

/// `GET /api/vhosts/{vhost}`.
pub async fn vhost(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_vhost(&state, &vhost)?;
    let def = state
        .vhosts
        .list()
        .into_iter()
        .find(|d| d.name == vhost)
        .ok_or_else(|| ApiError::not_found(format!("no vhost '{vhost}'")))?;
    Ok(Json(vhost_json(
        &def.name,
        &def.description,
        &state.node.name(),
    )))
}

/// `PUT /api/vhosts/{vhost}`: adds it (201); an existing one is left as it is (204).
pub async fn put_vhost(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path(vhost): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_administrator()?;
    let body = object(&body)?;
    add_vhost(&state, &vhost, &body).await
}

/// Adds a vhost from a JSON object (also what a definitions import does).
pub async fn add_vhost(
    state: &State,
    vhost: &str,
    body: &serde_json::Map<String, Value>,
) -> Result<Response, ApiError> {
    let description = body.text("description")?.unwrap_or_default();
    if state.vhosts.get(vhost).is_some() {
        return Ok(no_content());
    }
    state.vhosts.add(vhost, &description).await?;
    Ok(created())
}

/// `DELETE /api/vhosts/{vhost}`.
pub async fn delete_vhost(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> Result<Response, ApiError> {
    caller.require_administrator()?;
    if state.vhosts.get(&vhost).is_none() {
        return Err(ApiError::not_found(format!("no vhost '{vhost}'")));
    }
    state.vhosts.delete(&vhost).await?;
    Ok(no_content())
}

/// `GET /api/vhosts/{vhost}/permissions`.
pub async fn vhost_permissions(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_administrator()?;
    if state.vhosts.get(&vhost).is_none() {
        return Err(ApiError::not_found(format!("no vhost '{vhost}'")));
    }
    Ok(Json(permissions_where(&state, |p| p.vhost == vhost)))
}

// ----- users --------------------------------------------------------------------

/// A user as RabbitMQ's API (and its definitions) show them.
pub fn user_json(u: &User) -> Value {
    json!({
        "name": u.name,
        "tags": u.tags,
        "password_hash": u.password_hash(),
        "hashing_algorithm": u.hashing_algorithm(),
        "limits": {},
    })
}

/// `GET /api/users`.
pub async fn users(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require_administrator()?;
    let plan = query.plan()?;
    let items = state.access.user_records().iter().map(user_json).collect();
    Ok(Json(plan.apply(items)))
}

/// `GET /api/users/without-permissions`.
pub async fn users_without_permissions(
    Ctx(state): Ctx<State>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_administrator()?;
    let permissions = state.access.list_permissions();
    Ok(Json(Value::Array(
        state
            .access
            .user_records()
            .iter()
            .filter(|u| !permissions.iter().any(|p| p.user == u.name))
            .map(user_json)
            .collect(),
    )))
}

fn find_user(state: &State, name: &str) -> Result<User, ApiError> {
    state
        .access
        .user_records()
        .into_iter()
        .find(|u| u.name == name)
        .ok_or_else(|| ApiError::not_found(format!("no user '{name}'")))
}

/// `GET /api/users/{user}`.
pub async fn user(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_administrator()?;
    Ok(Json(user_json(&find_user(&state, &name)?)))
}

/// Tags as RabbitMQ takes them: a comma-separated string or an array of strings.
fn tags_of(body: &serde_json::Map<String, Value>) -> Result<Vec<String>, ApiError> {
    match body.get("tags") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|t| {
                t.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::bad_request("'tags' must hold strings"))
            })
            .collect(),
        Some(_) => Err(ApiError::bad_request(
            "'tags' must be a comma-separated string or an array of strings",
        )),
    }
}

/// `PUT /api/users/{user}`: adds the user (201) or changes their password and tags
/// (204), from `password` or an exported `password_hash`.
pub async fn put_user(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_administrator()?;
    let body = object(&body)?;
    put_user_from(&state, &name, &body).await
}

/// Adds or changes a user from a JSON object (also what a definitions import does).
pub async fn put_user_from(
    state: &State,
    name: &str,
    body: &serde_json::Map<String, Value>,
) -> Result<Response, ApiError> {
    let tags = tags_of(body)?;
    let exists = state.access.list_users().iter().any(|(n, _)| n == name);
    let password = body.text("password")?;
    let hash = body.text("password_hash")?;
    let change = match (password, hash) {
        (Some(password), _) if exists => {
            state
                .access
                .prepare_update_user(name, Some(&password), tags)?
        }
        (Some(password), _) => state.access.prepare_add_user(name, &password, tags)?,
        (None, Some(hash)) => {
            let algorithm = body.text("hashing_algorithm")?;
            let user = User::from_password_hash(name, &hash, algorithm.as_deref(), tags)
                .map_err(|e| ApiError::bad_request(format!("user '{name}': {e}")))?;
            state.access.prepare_put_user(user)?
        }
        (None, None) if exists => state.access.prepare_update_user(name, None, tags)?,
        (None, None) => {
            return Err(ApiError::bad_request(format!(
                "user '{name}' needs a 'password' (or a 'password_hash' from a definitions export)"
            )))
        }
    };
    state.node.commit_access(change).await?;
    Ok(if exists { no_content() } else { created() })
}

/// `DELETE /api/users/{user}`.
pub async fn delete_user(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    caller.require_administrator()?;
    find_user(&state, &name)?;
    let change = state.access.prepare_delete_user(&name)?;
    state.node.commit_access(change).await?;
    Ok(no_content())
}

/// `POST /api/users/bulk-delete` with `{"users": [...]}`.
pub async fn bulk_delete_users(
    Ctx(state): Ctx<State>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_administrator()?;
    let body = object(&body)?;
    let Some(Value::Array(names)) = body.get("users") else {
        return Err(ApiError::bad_request(
            "'users' must be an array of user names",
        ));
    };
    for name in names {
        let name = name
            .as_str()
            .ok_or_else(|| ApiError::bad_request("'users' must hold strings"))?;
        if let Ok(change) = state.access.prepare_delete_user(name) {
            state.node.commit_access(change).await?;
        }
    }
    Ok(no_content())
}

/// `GET /api/users/{user}/permissions`.
pub async fn user_permissions(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_administrator()?;
    find_user(&state, &name)?;
    Ok(Json(permissions_where(&state, |p| p.user == name)))
}

// ----- permissions --------------------------------------------------------------

fn permission_json(p: &Permission) -> Value {
    json!({
        "user": p.user,
        "vhost": p.vhost,
        "configure": p.configure,
        "write": p.write,
        "read": p.read,
    })
}

fn permissions_where(state: &State, keep: impl Fn(&Permission) -> bool) -> Value {
    Value::Array(
        state
            .access
            .list_permissions()
            .iter()
            .filter(|p| keep(p))
            .map(permission_json)
            .collect(),
    )
}

/// `GET /api/permissions`.
pub async fn permissions(Ctx(state): Ctx<State>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require_administrator()?;
    Ok(Json(permissions_where(&state, |_| true)))
}

/// `GET /api/permissions/{vhost}/{user}`.
pub async fn permission(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    caller.require_administrator()?;
    state
        .access
        .list_permissions()
        .iter()
        .find(|p| p.vhost == vhost && p.user == user)
        .map(|p| Json(permission_json(p)))
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "user '{user}' has no permissions in vhost '{vhost}'"
            ))
        })
}

/// `PUT /api/permissions/{vhost}/{user}` with `configure`, `write` and `read`.
pub async fn put_permission(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_administrator()?;
    let body = object(&body)?;
    set_permission(&state, &vhost, &user, &body).await
}

/// Sets a user's permissions from a JSON object (also what a definitions import does).
pub async fn set_permission(
    state: &State,
    vhost: &str,
    user: &str,
    body: &serde_json::Map<String, Value>,
) -> Result<Response, ApiError> {
    if state.vhosts.get(vhost).is_none() {
        return Err(ApiError::not_found(format!("no vhost '{vhost}'")));
    }
    let pattern = |name: &str| -> Result<String, ApiError> {
        body.text(name)?.ok_or_else(|| {
            ApiError::bad_request(format!(
                "'{name}' is required (a regular expression, '' for nothing)"
            ))
        })
    };
    let p = Permission {
        user: user.to_string(),
        vhost: vhost.to_string(),
        configure: pattern("configure")?,
        write: pattern("write")?,
        read: pattern("read")?,
    };
    let existed = state.access.may_open(user, vhost);
    let change = state.access.prepare_set_permissions(p)?;
    state.node.commit_access(change).await?;
    Ok(if existed { no_content() } else { created() })
}

/// `DELETE /api/permissions/{vhost}/{user}`.
pub async fn delete_permission(
    Ctx(state): Ctx<State>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    caller.require_administrator()?;
    let change = state.access.prepare_clear_permissions(&user, &vhost)?;
    state.node.commit_access(change).await?;
    Ok(no_content())
}

// ----- policies -----------------------------------------------------------------

/// `GET /api/policies[/{vhost}]`: Warren has no policies (an empty list).
pub async fn no_policies(_caller: Caller) -> Json<Value> {
    Json(json!([]))
}

/// `PUT /api/policies/{vhost}/{name}`: refused, with what to do instead.
pub async fn refuse_policy(_caller: Caller) -> ApiError {
    ApiError::NotImplemented {
        reason: "Warren has no policies: give queues their arguments (x-max-length, x-message-ttl, x-dead-letter-exchange...) when they are declared".into(),
    }
}
