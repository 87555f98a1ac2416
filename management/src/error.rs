//! [`ApiError`]: what the API refuses, as RabbitMQ's management API answers it: an
//! HTTP status and a JSON body `{"error": ..., "reason": ...}`.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use warren_actors::error::{code, BrokerError};

/// Why a request failed. Each carries the reason the client is shown.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// No credentials, wrong ones, or a user the API is not for (401).
    #[error("{reason}")]
    NotAuthorised {
        /// What to fix.
        reason: String,
        /// Ask for basic auth (`WWW-Authenticate`): not for the web UI's requests,
        /// which log in with their own form (a browser would pop up its dialog).
        challenge: bool,
    },
    /// The user may not do this (401, as RabbitMQ answers a refused permission).
    #[error("{reason}")]
    AccessRefused {
        /// What was refused.
        reason: String,
    },
    /// The object does not exist (404).
    #[error("{reason}")]
    NotFound {
        /// What is missing.
        reason: String,
    },
    /// The request is malformed: bad JSON, a field of the wrong type, a bad value
    /// (400).
    #[error("{reason}")]
    BadRequest {
        /// What is wrong.
        reason: String,
    },
    /// The broker refused the operation (its AMQP reply code picks the status).
    #[error("{0}")]
    Broker(BrokerError),
    /// Something the API does not do (501).
    #[error("{reason}")]
    NotImplemented {
        /// What is missing and what to use instead.
        reason: String,
    },
    /// A health check failed (503).
    #[error("{reason}")]
    Unhealthy {
        /// Why.
        reason: String,
    },
}

impl ApiError {
    /// A 400 with `reason`.
    pub fn bad_request(reason: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            reason: reason.into(),
        }
    }

    /// A 404 with `reason`.
    pub fn not_found(reason: impl Into<String>) -> ApiError {
        ApiError::NotFound {
            reason: reason.into(),
        }
    }

    /// A 401 for a refused permission.
    pub fn refused(reason: impl Into<String>) -> ApiError {
        ApiError::AccessRefused {
            reason: reason.into(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotAuthorised { .. } | ApiError::AccessRefused { .. } => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotImplemented { .. } => StatusCode::NOT_IMPLEMENTED,
            ApiError::Unhealthy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Broker(e) => match e.code() {
                code::NOT_FOUND => StatusCode::NOT_FOUND,
                code::ACCESS_REFUSED => StatusCode::UNAUTHORIZED,
                code::NOT_IMPLEMENTED => StatusCode::NOT_IMPLEMENTED,
                code::INTERNAL_ERROR => StatusCode::INTERNAL_SERVER_ERROR,
                code::RESOURCE_LOCKED => StatusCode::CONFLICT,
                // 406 PRECONDITION_FAILED, 530 NOT_ALLOWED, 403...: the request
                // cannot be done as asked.
                _ => StatusCode::BAD_REQUEST,
            },
        }
    }

    /// RabbitMQ's `error` word for the status.
    fn word(&self) -> &'static str {
        match self.status() {
            StatusCode::UNAUTHORIZED => "not_authorised",
            StatusCode::NOT_FOUND => "Object Not Found",
            StatusCode::SERVICE_UNAVAILABLE => "failed",
            StatusCode::NOT_IMPLEMENTED => "not_implemented",
            StatusCode::INTERNAL_SERVER_ERROR => "internal_server_error",
            _ => "bad_request",
        }
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        ApiError::Broker(e)
    }
}

impl From<warren_access::AccessError> for ApiError {
    fn from(e: warren_access::AccessError) -> Self {
        ApiError::Broker(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::json!({ "error": self.word(), "reason": self.to_string() });
        let mut response = (status, axum::Json(body)).into_response();
        if matches!(
            self,
            ApiError::NotAuthorised {
                challenge: true,
                ..
            }
        ) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"Warren Management\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_errors_keep_their_meaning_over_http() {
        let missing = ApiError::from(BrokerError::new(code::NOT_FOUND, "no queue 'q'"));
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        let inequivalent = ApiError::from(BrokerError::precondition_failed(
            "inequivalent arg 'durable'",
        ));
        assert_eq!(inequivalent.status(), StatusCode::BAD_REQUEST);
        assert_eq!(inequivalent.word(), "bad_request");
        assert_eq!(
            ApiError::refused("access refused").status(),
            StatusCode::UNAUTHORIZED
        );
    }
}
