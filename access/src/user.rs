//! A user record: name, credential, tags.
//!
//! Passwords are never stored in clear: a credential is a salt and the hash of salt ‖
//! password. Warren makes SHA-256 with a random 16-byte salt; a user imported from
//! RabbitMQ's definitions keeps RabbitMQ's scheme (a 4-byte salt, SHA-256 or SHA-512),
//! so their password still works.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

/// The user a fresh node creates (RabbitMQ's `guest` / `guest`, from loopback only).
pub const DEFAULT_USER: &str = "guest";

/// The hashing scheme of Warren's own credentials, as a definitions export names it.
pub const WARREN_SHA256: &str = "warren_password_hashing_sha256";
/// RabbitMQ's default scheme (`rabbit_password_hashing_sha256`).
pub const RABBIT_SHA256: &str = "rabbit_password_hashing_sha256";
/// RabbitMQ's SHA-512 scheme (`rabbit_password_hashing_sha512`).
pub const RABBIT_SHA512: &str = "rabbit_password_hashing_sha512";

/// How a password is checked: hash(salt ‖ password) compared with the stored hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Credential {
    /// SHA-256 (Warren's with a 16-byte salt; RabbitMQ's with a 4-byte one).
    Sha256 { salt: Vec<u8>, hash: Vec<u8> },
    /// SHA-512 (RabbitMQ's `rabbit_password_hashing_sha512`).
    Sha512 { salt: Vec<u8>, hash: Vec<u8> },
}

/// A stored user. The record is complete once made (salt and hash included), so that
/// every node of a cluster stores the same one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The login name: 1 to 255 bytes, no NUL.
    pub name: String,
    credential: Credential,
    /// RabbitMQ's user tags (`administrator`, ...), shown by `warren user list`.
    pub tags: Vec<String>,
}

/// A user as stored (and as the metadata log carried them) before credentials had a
/// scheme: always SHA-256 with a 16-byte salt. Read, never written any more.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyUser {
    /// The login name.
    pub name: String,
    salt: [u8; 16],
    hash: [u8; 32],
    /// The user's tags.
    pub tags: Vec<String>,
}

impl From<LegacyUser> for User {
    fn from(u: LegacyUser) -> User {
        User {
            name: u.name,
            credential: Credential::Sha256 {
                salt: u.salt.to_vec(),
                hash: u.hash.to_vec(),
            },
            tags: u.tags,
        }
    }
}

#[cfg(test)]
impl LegacyUser {
    /// A record in the old layout (tests of reading old files and logs).
    pub fn new(name: &str, password: &str, tags: Vec<String>) -> LegacyUser {
        let salt: [u8; 16] = rand::random();
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&sha256(&salt, password));
        LegacyUser {
            name: name.to_string(),
            salt,
            hash,
            tags,
        }
    }
}

fn sha256(salt: &[u8], password: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password.as_bytes());
    h.finalize().to_vec()
}

fn sha512(salt: &[u8], password: &str) -> Vec<u8> {
    let mut h = Sha512::new();
    h.update(salt);
    h.update(password.as_bytes());
    h.finalize().to_vec()
}

/// Why an exported credential cannot be imported.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HashError {
    /// Not base64.
    #[error("password_hash is not base64")]
    NotBase64,
    /// A scheme Warren does not check (RabbitMQ's MD5, say).
    #[error("hashing_algorithm '{0}' is not supported: use {RABBIT_SHA256}, {RABBIT_SHA512} or {WARREN_SHA256}, or give a password")]
    Scheme(String),
    /// The decoded bytes are not salt ‖ hash of the scheme.
    #[error("password_hash has {0} bytes, which is no salt and hash of a known scheme (36 or 48 for SHA-256, 68 for SHA-512)")]
    Length(usize),
}

impl User {
    /// A user with `password` salted and hashed (a fresh 16-byte salt each time).
    pub fn new(name: &str, password: &str, tags: Vec<String>) -> User {
        let salt: [u8; 16] = rand::random();
        User {
            name: name.to_string(),
            credential: Credential::Sha256 {
                hash: sha256(&salt, password),
                salt: salt.to_vec(),
            },
            tags,
        }
    }

    /// The record in the layout older Warren builds read (a SHA-256 credential with a
    /// 16-byte salt), so that a cluster whose nodes are not all upgraded yet still
    /// replicates it; `None` for a credential only this build reads.
    pub fn to_legacy(&self) -> Option<LegacyUser> {
        let Credential::Sha256 { salt, hash } = &self.credential else {
            return None;
        };
        Some(LegacyUser {
            name: self.name.clone(),
            salt: salt.as_slice().try_into().ok()?,
            hash: hash.as_slice().try_into().ok()?,
            tags: self.tags.clone(),
        })
    }

    /// The same user (same password) with other tags.
    pub fn with_tags(self, tags: Vec<String>) -> User {
        User { tags, ..self }
    }

    /// The credential for a definitions export: base64 of salt ‖ hash.
    pub fn password_hash(&self) -> String {
        use base64::Engine;
        let (Credential::Sha256 { salt, hash } | Credential::Sha512 { salt, hash }) =
            &self.credential;
        let mut raw = salt.clone();
        raw.extend_from_slice(hash);
        base64::engine::general_purpose::STANDARD.encode(raw)
    }

    /// The scheme of [`Self::password_hash`], as RabbitMQ names schemes.
    pub fn hashing_algorithm(&self) -> &'static str {
        match &self.credential {
            Credential::Sha256 { salt, .. } if salt.len() == 4 => RABBIT_SHA256,
            Credential::Sha256 { .. } => WARREN_SHA256,
            Credential::Sha512 { .. } => RABBIT_SHA512,
        }
    }

    /// A user whose credential comes from a definitions export (Warren's or
    /// RabbitMQ's): `password_hash` is base64 of salt ‖ hash; `algorithm` its scheme
    /// (when absent, told by the length, as `rabbitmqadmin declare user` sends none).
    pub fn from_password_hash(
        name: &str,
        password_hash: &str,
        algorithm: Option<&str>,
        tags: Vec<String>,
    ) -> Result<User, HashError> {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(password_hash.trim())
            .map_err(|_| HashError::NotBase64)?;
        let split = |hash_len: usize| -> Result<(Vec<u8>, Vec<u8>), HashError> {
            if raw.len() <= hash_len {
                return Err(HashError::Length(raw.len()));
            }
            let (salt, hash) = raw.split_at(raw.len() - hash_len);
            Ok((salt.to_vec(), hash.to_vec()))
        };
        let sha512_scheme = match algorithm {
            Some(RABBIT_SHA512) => true,
            Some(RABBIT_SHA256 | WARREN_SHA256) => false,
            Some(other) => return Err(HashError::Scheme(other.to_string())),
            None => match raw.len() {
                36 | 48 => false,
                68 => true,
                n => return Err(HashError::Length(n)),
            },
        };
        let credential = if sha512_scheme {
            let (salt, hash) = split(64)?;
            Credential::Sha512 { salt, hash }
        } else {
            let (salt, hash) = split(32)?;
            Credential::Sha256 { salt, hash }
        };
        Ok(User {
            name: name.to_string(),
            credential,
            tags,
        })
    }

    /// Whether `password` is this user's (compared in constant time).
    pub fn verify(&self, password: &str) -> bool {
        let (candidate, hash) = match &self.credential {
            Credential::Sha256 { salt, hash } => (sha256(salt, password), hash),
            Credential::Sha512 { salt, hash } => (sha512(salt, password), hash),
        };
        candidate.len() == hash.len()
            && candidate
                .iter()
                .zip(hash.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn passwords_are_salted() {
        let a = User::new("u", "pw", vec![]);
        let b = User::new("u", "pw", vec![]);
        assert_ne!(a.credential, b.credential, "two salts, two hashes");
        assert!(a.verify("pw") && b.verify("pw") && !a.verify("pW"));
    }

    #[test]
    fn an_exported_credential_imports_as_the_same_password() {
        let a = User::new("u", "secret", vec!["administrator".into()]);
        let hash = a.password_hash();
        assert_eq!(a.hashing_algorithm(), WARREN_SHA256);
        let b = User::from_password_hash("u", &hash, Some(WARREN_SHA256), a.tags.clone()).unwrap();
        assert_eq!(a, b);
        let c = User::from_password_hash("u", &hash, None, a.tags.clone()).unwrap();
        assert!(c.verify("secret") && !c.verify("other"));
    }

    /// RabbitMQ's scheme: base64(salt[4] ‖ SHA-256(salt ‖ password)), as its
    /// `rabbit_password_hashing_sha256` and `rabbitmqadmin declare user` make it.
    fn rabbit(salt: [u8; 4], password: &str, sha512_scheme: bool) -> String {
        let mut raw = salt.to_vec();
        raw.extend(if sha512_scheme {
            sha512(&salt, password)
        } else {
            sha256(&salt, password)
        });
        base64::engine::general_purpose::STANDARD.encode(raw)
    }

    #[test]
    fn rabbitmq_credentials_keep_working() {
        let h = rabbit([1, 2, 3, 4], "guest", false);
        let u = User::from_password_hash("r", &h, None, vec![]).unwrap();
        assert!(u.verify("guest") && !u.verify("guesT"));
        assert_eq!(u.hashing_algorithm(), RABBIT_SHA256);
        assert_eq!(u.password_hash(), h, "exported as it came");
        let h = rabbit([9, 9, 9, 9], "s3", true);
        let u = User::from_password_hash("r", &h, Some(RABBIT_SHA512), vec![]).unwrap();
        assert!(u.verify("s3") && !u.verify("s4"));
        assert_eq!(u.hashing_algorithm(), RABBIT_SHA512);
        assert_eq!(
            User::from_password_hash("r", &h, Some("rabbit_password_hashing_md5"), vec![]),
            Err(HashError::Scheme("rabbit_password_hashing_md5".into()))
        );
        assert_eq!(
            User::from_password_hash("r", "bm90IGEgaGFzaA==", None, vec![]),
            Err(HashError::Length(10))
        );
        assert_eq!(
            User::from_password_hash("r", "not base64!", None, vec![]),
            Err(HashError::NotBase64)
        );
    }

    #[test]
    fn a_legacy_record_reads_as_the_same_user() {
        let old = LegacyUser::new("o", "pw", vec!["management".into()]);
        let bytes = warren_storage::codec::encode(&old).unwrap();
        let back: LegacyUser = warren_storage::codec::decode(&bytes).unwrap();
        let user = User::from(back.clone());
        assert!(user.verify("pw") && user.tags == ["management"]);
        assert_eq!(user.hashing_algorithm(), WARREN_SHA256);
        assert_eq!(
            user.to_legacy(),
            Some(back),
            "written back as older builds read it"
        );
        let rabbit = User::from_password_hash("r", &rabbit([1, 2, 3, 4], "x", false), None, vec![]);
        assert_eq!(rabbit.unwrap().to_legacy(), None);
    }
}
