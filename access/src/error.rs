//! [`AccessError`]: why a check or a change of users, permissions or vhost records
//! was refused.
//!
//! Each variant names what went wrong and carries the AMQP reply code RabbitMQ uses
//! for it ([`AccessError::reply_code`]); its text is what clients are told.

use std::fmt;

use crate::permission::{Access, ResourceKind};

/// A refusal of warren-access, with the AMQP reply code it is answered with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// A user name that is empty, longer than 255 bytes or holds a NUL.
    #[error("user name '{name}' is not valid: 1 to 255 bytes, no NUL")]
    InvalidUserName {
        /// The name asked for.
        name: String,
    },
    /// Adding a user that exists (a password is changed by deleting the user first).
    #[error("user '{name}' already exists (delete it first to change its password)")]
    UserExists {
        /// The user's name.
        name: String,
    },
    /// A change of a user that does not exist.
    #[error("no user '{name}'")]
    NoSuchUser {
        /// The name asked for.
        name: String,
    },
    /// Clearing permissions a user does not have in a vhost.
    #[error("user '{user}' has no permissions in vhost '{vhost}'")]
    NoPermissions {
        /// The user.
        user: String,
        /// The vhost.
        vhost: String,
    },
    /// A permission pattern that is not a regular expression.
    #[error("'{pattern}' is not a valid regular expression: {reason}")]
    InvalidPattern {
        /// The pattern as given.
        pattern: String,
        /// What the regular expression parser said.
        reason: String,
    },
    /// The user's permissions in the vhost do not allow the access.
    #[error("ACCESS_REFUSED - {access} access to {kind} '{resource}' in vhost '{vhost}' refused for user '{user}'")]
    Refused {
        /// The user refused.
        user: String,
        /// The vhost of the resource.
        vhost: String,
        /// What the user asked to do.
        access: Access,
        /// Queue or exchange.
        kind: ResourceKind,
        /// The resource's name.
        resource: String,
    },
    /// A name a new vhost cannot have.
    #[error("PRECONDITION_FAILED - invalid vhost name '{name}': {problem}")]
    InvalidVhostName {
        /// The name asked for.
        name: String,
        /// What is wrong with it.
        problem: VhostNameProblem,
    },
    /// The node's store failed to read or write a record.
    #[error("storage failed: {0}")]
    Storage(String),
}

impl AccessError {
    /// The AMQP reply code: 403 ACCESS_REFUSED, 404 NOT_FOUND, 406
    /// PRECONDITION_FAILED, 541 INTERNAL_ERROR.
    pub fn reply_code(&self) -> u16 {
        match self {
            AccessError::Refused { .. } => 403,
            AccessError::NoSuchUser { .. } | AccessError::NoPermissions { .. } => 404,
            AccessError::InvalidUserName { .. }
            | AccessError::UserExists { .. }
            | AccessError::InvalidPattern { .. }
            | AccessError::InvalidVhostName { .. } => 406,
            AccessError::Storage(_) => 541,
        }
    }

    /// A failure of the store, its text kept.
    pub(crate) fn storage(e: impl std::fmt::Display) -> AccessError {
        AccessError::Storage(e.to_string())
    }
}

/// What is wrong with a vhost name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VhostNameProblem {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_VHOST_NAME`](crate::MAX_VHOST_NAME) bytes.
    TooLong,
    /// The name contains control characters (they do not survive listings and URLs).
    ControlCharacters,
}

impl fmt::Display for VhostNameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VhostNameProblem::Empty => "it is empty",
            VhostNameProblem::TooLong => "it is longer than 255 bytes",
            VhostNameProblem::ControlCharacters => "it contains control characters",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts clients see (the process tests match on parts of them).
    #[test]
    fn each_refusal_names_what_went_wrong_with_its_reply_code() {
        let cases = [
            (
                AccessError::InvalidUserName { name: "".into() },
                406,
                "user name '' is not valid: 1 to 255 bytes, no NUL",
            ),
            (
                AccessError::UserExists { name: "app".into() },
                406,
                "user 'app' already exists (delete it first to change its password)",
            ),
            (
                AccessError::NoSuchUser { name: "app".into() },
                404,
                "no user 'app'",
            ),
            (
                AccessError::NoPermissions {
                    user: "app".into(),
                    vhost: "prod".into(),
                },
                404,
                "user 'app' has no permissions in vhost 'prod'",
            ),
            (
                AccessError::Refused {
                    user: "app".into(),
                    vhost: "/".into(),
                    access: Access::Read,
                    kind: ResourceKind::Queue,
                    resource: "q".into(),
                },
                403,
                "ACCESS_REFUSED - read access to queue 'q' in vhost '/' refused for user 'app'",
            ),
            (
                AccessError::InvalidVhostName {
                    name: "".into(),
                    problem: VhostNameProblem::Empty,
                },
                406,
                "PRECONDITION_FAILED - invalid vhost name '': it is empty",
            ),
            (
                AccessError::Storage("disk full".into()),
                541,
                "storage failed: disk full",
            ),
        ];
        for (error, code, text) in cases {
            assert_eq!(
                (error.reply_code(), error.to_string().as_str()),
                (code, text)
            );
        }
    }
}
