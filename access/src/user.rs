//! A user record: name, salted password hash, tags.
//!
//! Passwords are stored as a random 16-byte salt and SHA-256(salt ‖ password), never
//! in clear.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The user a fresh node creates (RabbitMQ's `guest` / `guest`, from loopback only).
pub const DEFAULT_USER: &str = "guest";

/// A stored user. The record is complete once made (salt and hash included), so that
/// every node of a cluster stores the same one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The login name: 1 to 255 bytes, no NUL.
    pub name: String,
    /// Random per user, so that two users with one password have two hashes.
    salt: [u8; 16],
    /// SHA-256(salt ‖ password).
    hash: [u8; 32],
    /// RabbitMQ's user tags (`administrator`, ...), shown by `warren user list`.
    pub tags: Vec<String>,
}

fn hash(salt: &[u8; 16], password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password.as_bytes());
    h.finalize().into()
}

impl User {
    /// A user with `password` salted and hashed (a fresh salt each time).
    pub fn new(name: &str, password: &str, tags: Vec<String>) -> User {
        let salt: [u8; 16] = rand::random();
        User {
            name: name.to_string(),
            hash: hash(&salt, password),
            salt,
            tags,
        }
    }

    /// Whether `password` is this user's (compared in constant time).
    pub fn verify(&self, password: &str) -> bool {
        let candidate = hash(&self.salt, password);
        candidate
            .iter()
            .zip(self.hash.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_salted() {
        let a = User::new("u", "pw", vec![]);
        let b = User::new("u", "pw", vec![]);
        assert_ne!(a.hash, b.hash, "two salts, two hashes");
        assert!(a.verify("pw") && b.verify("pw") && !a.verify("pW"));
    }
}
