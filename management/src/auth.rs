//! Who is calling, as RabbitMQ's management API decides it: HTTP basic auth against
//! Warren's users; a user needs one of the tags `management`, `policymaker`,
//! `monitoring` or `administrator`; `guest` logs in from loopback only. Then what the
//! caller may see and do: [`Caller`].

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;
use warren_access::{Access, Resource};

use crate::error::ApiError;
use crate::State;

/// The tags that let a user use the API at all.
const MANAGEMENT_TAGS: [&str; 4] = ["management", "policymaker", "monitoring", "administrator"];

/// The authenticated user of a request.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The user's name.
    pub name: String,
    /// Their tags.
    pub tags: Vec<String>,
}

impl Caller {
    fn has(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    /// Manages users, vhosts, permissions and definitions.
    pub fn is_administrator(&self) -> bool {
        self.has("administrator")
    }

    /// Sees every vhost, connection and channel, and the nodes.
    pub fn is_monitoring(&self) -> bool {
        self.is_administrator() || self.has("monitoring")
    }

    /// Refused unless an administrator.
    pub fn require_administrator(&self) -> Result<(), ApiError> {
        if self.is_administrator() {
            Ok(())
        } else {
            Err(ApiError::refused(format!(
                "user '{}' is not an administrator (this needs the 'administrator' tag)",
                self.name
            )))
        }
    }

    /// Refused unless monitoring or an administrator.
    pub fn require_monitoring(&self) -> Result<(), ApiError> {
        if self.is_monitoring() {
            Ok(())
        } else {
            Err(ApiError::refused(format!(
                "user '{}' may not see this (it needs the 'monitoring' or 'administrator' tag)",
                self.name
            )))
        }
    }

    /// Whether the caller sees `vhost` (monitoring users see all; others those they
    /// have permissions in).
    pub fn sees_vhost(&self, state: &State, vhost: &str) -> bool {
        self.is_monitoring() || state.access.may_open(&self.name, vhost)
    }

    /// Refused (404 if the vhost does not exist, 401 if not visible).
    pub fn require_vhost(&self, state: &State, vhost: &str) -> Result<(), ApiError> {
        if state.vhosts.get(vhost).is_none() {
            return Err(ApiError::not_found(format!("no vhost '{vhost}'")));
        }
        if self.sees_vhost(state, vhost) {
            return Ok(());
        }
        Err(ApiError::refused(format!(
            "user '{}' has no permissions in vhost '{vhost}'",
            self.name
        )))
    }

    /// RabbitMQ's permission check of `access` to `resource` in `vhost`.
    pub fn check(
        &self,
        state: &State,
        vhost: &str,
        access: Access,
        resource: Resource<'_>,
    ) -> Result<(), ApiError> {
        state
            .access
            .check(&self.name, vhost, access, resource)
            .map_err(|e| ApiError::refused(e.to_string()))
    }
}

/// A 401; `parts` tells whether to ask for basic auth (not the UI's requests, sent
/// with `X-Requested-With`).
fn not_authorised(parts: &Parts, reason: &str) -> ApiError {
    ApiError::NotAuthorised {
        reason: reason.to_string(),
        challenge: !parts.headers.contains_key("x-requested-with"),
    }
}

/// `user:password` from an `Authorization: Basic ...` header.
fn basic_credentials(parts: &Parts) -> Option<(String, String)> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

impl FromRequestParts<State> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Caller, ApiError> {
        let Some((user, password)) = basic_credentials(parts) else {
            return Err(not_authorised(
                parts,
                "this needs HTTP basic authentication with a Warren user",
            ));
        };
        if !state.access.authenticate(&user, &password) {
            return Err(not_authorised(parts, "Login failed"));
        }
        if user == warren_access::DEFAULT_USER {
            let loopback = parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .is_some_and(|ConnectInfo(peer)| peer.ip().is_loopback());
            if !loopback {
                const GUEST: &str = "User can only log in via localhost (the 'guest' user; add another user for remote access)";
                return Err(not_authorised(parts, GUEST));
            }
        }
        let tags = state
            .access
            .list_users()
            .into_iter()
            .find(|(name, _)| *name == user)
            .map(|(_, tags)| tags)
            .unwrap_or_default();
        let caller = Caller { name: user, tags };
        if !MANAGEMENT_TAGS.iter().any(|t| caller.has(t)) {
            let reason = format!(
                "Not management user: '{}' needs one of the tags management, policymaker, monitoring, administrator",
                caller.name
            );
            return Err(not_authorised(parts, &reason));
        }
        Ok(caller)
    }
}
