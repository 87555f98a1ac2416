//! Users, passwords and permissions: who may connect, and what each user may
//! configure, write and read in a vhost (RabbitMQ's model).
//!
//! Passwords are stored as a random 16-byte salt and SHA-256(salt ‖ password), never
//! in clear. Permissions are three regular expressions per (user, vhost), matched
//! against the whole resource name: `configure` for declaring and deleting queues and
//! exchanges, `write` for publishing to an exchange and binding to a queue, `read` for
//! consuming, getting, purging and binding from an exchange. A node that has no users
//! creates RabbitMQ's default `guest` / `guest` with full permissions on `/`; front
//! doors let `guest` in from loopback only.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use regex::Regex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use warren_storage::{Batch, MetaTable, Op, Store};

use crate::error::BrokerError;
use crate::metadata::{MetaCommand, MetadataLog};

/// The user a fresh node creates.
pub const DEFAULT_USER: &str = "guest";

/// A stored user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    salt: [u8; 16],
    hash: [u8; 32],
    /// RabbitMQ's user tags (`administrator`, ...), shown by `warren user list`.
    pub tags: Vec<String>,
}

/// One user's permissions in one vhost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub user: String,
    pub vhost: String,
    pub configure: String,
    pub write: String,
    pub read: String,
}

/// The three kinds of access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Configure,
    Write,
    Read,
}

impl Access {
    fn as_str(self) -> &'static str {
        match self {
            Access::Configure => "configure",
            Access::Write => "write",
            Access::Read => "read",
        }
    }
}

/// A resource an access is checked against.
#[derive(Clone, Copy, Debug)]
pub enum Resource<'a> {
    Queue(&'a str),
    Exchange(&'a str),
}

fn hash(salt: &[u8; 16], password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password.as_bytes());
    h.finalize().into()
}

impl User {
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

/// Compiled permissions of one (user, vhost).
struct Compiled {
    source: Permission,
    configure: Regex,
    write: Regex,
    read: Regex,
}

fn compile(pattern: &str) -> Result<Regex, BrokerError> {
    // Anchored: RabbitMQ matches the whole name.
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
        BrokerError::precondition_failed(format!(
            "'{pattern}' is not a valid regular expression: {e}"
        ))
    })
}

impl Compiled {
    fn new(p: Permission) -> Result<Compiled, BrokerError> {
        Ok(Compiled {
            configure: compile(&p.configure)?,
            write: compile(&p.write)?,
            read: compile(&p.read)?,
            source: p,
        })
    }
}

#[derive(Default)]
struct State {
    users: BTreeMap<String, User>,
    /// (user, vhost) -> permissions.
    permissions: BTreeMap<(String, String), Compiled>,
}

/// The node's users and permissions (cheap to clone).
///
/// In a cluster, changes go through the metadata log (see [`crate::metadata`]): the
/// `add_user`, ... methods check the request and propose it; every node then applies
/// it with the `apply_*` methods.
#[derive(Clone)]
pub struct AccessControl {
    store: Store,
    state: Arc<RwLock<State>>,
    log: Arc<OnceLock<Arc<dyn MetadataLog>>>,
    /// A RAM node keeps its users in memory only.
    in_memory: Arc<AtomicBool>,
    /// Bumped whenever the state may change, so that a channel can cache a check.
    generation: Arc<AtomicU64>,
}

fn storage_error(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::internal(format!("storage failed: {e}"))
}

fn user_exists(name: &str) -> BrokerError {
    BrokerError::precondition_failed(format!(
        "user '{name}' already exists (delete it first to change its password)"
    ))
}

fn no_user(name: &str) -> BrokerError {
    BrokerError::not_found(format!("no user '{name}'"))
}

fn no_permissions(user: &str, vhost: &str) -> BrokerError {
    BrokerError::not_found(format!(
        "user '{user}' has no permissions in vhost '{vhost}'"
    ))
}

fn permission_key(user: &str, vhost: &str) -> String {
    format!("{user}\u{0}{vhost}")
}

/// Deletes the stored permissions of a (user, vhost).
fn delete_permission((user, vhost): &(String, String)) -> Op {
    Op::DeleteMeta {
        table: MetaTable::Permissions,
        key: permission_key(user, vhost),
    }
}

impl AccessControl {
    /// Loads users and permissions; a node without users gets `guest`.
    pub async fn load(store: Store) -> Result<AccessControl, BrokerError> {
        let mut state = State::default();
        for (_, value) in store.read_meta(MetaTable::Users).map_err(storage_error)? {
            match warren_storage::codec::decode::<User>(&value) {
                Ok(u) => {
                    state.users.insert(u.name.clone(), u);
                }
                Err(e) => tracing::error!("a stored user did not decode and is skipped: {e}"),
            }
        }
        for (_, value) in store
            .read_meta(MetaTable::Permissions)
            .map_err(storage_error)?
        {
            match warren_storage::codec::decode::<Permission>(&value) {
                Ok(p) => {
                    let key = (p.user.clone(), p.vhost.clone());
                    match Compiled::new(p) {
                        Ok(c) => {
                            state.permissions.insert(key, c);
                        }
                        Err(e) => tracing::error!("stored permissions skipped: {}", e.text),
                    }
                }
                Err(e) => tracing::error!("stored permissions did not decode: {e}"),
            }
        }
        let access = AccessControl {
            store,
            state: Arc::new(RwLock::new(state)),
            log: Arc::new(OnceLock::new()),
            in_memory: Arc::new(AtomicBool::new(false)),
            generation: Arc::new(AtomicU64::new(0)),
        };
        if access.read().users.is_empty() {
            access
                .add_user(DEFAULT_USER, DEFAULT_USER, vec!["administrator".into()])
                .await?;
            access
                .set_permissions(Permission {
                    user: DEFAULT_USER.into(),
                    vhost: "/".into(),
                    configure: ".*".into(),
                    write: ".*".into(),
                    read: ".*".into(),
                })
                .await?;
        }
        Ok(access)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        let guard = self.state.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        guard
    }

    /// Changes whenever users or permissions may have changed: a check that passed
    /// under one generation passes again while it lasts.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// From now on, changes go through `log` (the cluster's metadata log).
    pub fn set_metadata_log(&self, log: Arc<dyn MetadataLog>) {
        let _ = self.log.set(log);
    }

    /// From now on, changes are kept in memory only (a RAM node).
    pub fn keep_in_memory(&self) {
        self.in_memory.store(true, Ordering::Relaxed);
    }

    /// Applies the change here, or proposes it to the cluster.
    async fn change(&self, command: MetaCommand) -> Result<(), BrokerError> {
        match self.log.get() {
            Some(log) => log.commit(command).await,
            None => self.apply(command).await,
        }
    }

    /// Applies a committed change of users or permissions.
    pub async fn apply(&self, command: MetaCommand) -> Result<(), BrokerError> {
        match command {
            MetaCommand::AddUser(user) => self.apply_add_user(user).await,
            MetaCommand::DeleteUser { name } => self.apply_delete_user(&name).await,
            MetaCommand::SetPermissions(p) => self.apply_set_permissions(p).await,
            MetaCommand::ClearPermissions { user, vhost } => {
                self.apply_clear_permissions(&user, &vhost).await
            }
            other => Err(BrokerError::internal(format!(
                "{} is not a change of users or permissions",
                other.describe()
            ))),
        }
    }

    async fn persist(&self, ops: Vec<Op>) -> Result<(), BrokerError> {
        if self.in_memory.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.store
            .submit(Batch::durable(ops))
            .await
            .map_err(storage_error)
    }

    /// Whether `user` exists and `password` is theirs.
    pub fn authenticate(&self, user: &str, password: &str) -> bool {
        self.read()
            .users
            .get(user)
            .is_some_and(|u| u.verify(password))
    }

    /// Whether `user` may use `vhost` at all (has permissions there).
    pub fn may_open(&self, user: &str, vhost: &str) -> bool {
        self.read()
            .permissions
            .contains_key(&(user.to_string(), vhost.to_string()))
    }

    /// RabbitMQ's 403 when `user` lacks `access` to `resource` in `vhost`.
    pub fn check(
        &self,
        user: &str,
        vhost: &str,
        access: Access,
        resource: Resource<'_>,
    ) -> Result<(), BrokerError> {
        let state = self.read();
        let allowed = state
            .permissions
            .get(&(user.to_string(), vhost.to_string()))
            .is_some_and(|c| {
                let name = match resource {
                    Resource::Queue(n) | Resource::Exchange(n) => n,
                };
                let re = match access {
                    Access::Configure => &c.configure,
                    Access::Write => &c.write,
                    Access::Read => &c.read,
                };
                re.is_match(name)
            });
        if allowed {
            return Ok(());
        }
        let (kind, name) = match resource {
            Resource::Queue(n) => ("queue", n),
            Resource::Exchange(n) => ("exchange", n),
        };
        Err(BrokerError::access_refused(format!(
            "ACCESS_REFUSED - {} access to {kind} '{name}' in vhost '{vhost}' refused for user '{user}'",
            access.as_str()
        )))
    }

    pub async fn add_user(
        &self,
        name: &str,
        password: &str,
        tags: Vec<String>,
    ) -> Result<(), BrokerError> {
        if name.is_empty() || name.len() > 255 || name.contains('\u{0}') {
            return Err(BrokerError::precondition_failed(format!(
                "user name '{name}' is not valid: 1 to 255 bytes, no NUL"
            )));
        }
        if self.read().users.contains_key(name) {
            return Err(user_exists(name));
        }
        self.change(MetaCommand::AddUser(User::new(name, password, tags)))
            .await
    }

    async fn apply_add_user(&self, user: User) -> Result<(), BrokerError> {
        let name = user.name.clone();
        if self.read().users.contains_key(&name) {
            return Err(user_exists(&name));
        }
        let value = warren_storage::codec::encode(&user).map_err(storage_error)?;
        self.persist(vec![Op::PutMeta {
            table: MetaTable::Users,
            key: name.clone(),
            value,
        }])
        .await?;
        self.write_state().users.insert(name, user);
        Ok(())
    }

    /// Deletes a user and all their permissions.
    pub async fn delete_user(&self, name: &str) -> Result<(), BrokerError> {
        if !self.read().users.contains_key(name) {
            return Err(no_user(name));
        }
        self.change(MetaCommand::DeleteUser {
            name: name.to_string(),
        })
        .await
    }

    async fn apply_delete_user(&self, name: &str) -> Result<(), BrokerError> {
        if !self.read().users.contains_key(name) {
            return Err(no_user(name));
        }
        let keys = self.permissions_where(|user, _| user == name);
        let mut ops = vec![Op::DeleteMeta {
            table: MetaTable::Users,
            key: name.to_string(),
        }];
        ops.extend(keys.iter().map(delete_permission));
        self.persist(ops).await?;
        let mut state = self.write_state();
        state.users.remove(name);
        for key in keys {
            state.permissions.remove(&key);
        }
        Ok(())
    }

    pub fn list_users(&self) -> Vec<(String, Vec<String>)> {
        self.read()
            .users
            .values()
            .map(|u| (u.name.clone(), u.tags.clone()))
            .collect()
    }

    /// Sets (replaces) a user's permissions in a vhost.
    pub async fn set_permissions(&self, p: Permission) -> Result<(), BrokerError> {
        if !self.read().users.contains_key(&p.user) {
            return Err(no_user(&p.user));
        }
        Compiled::new(p.clone())?;
        self.change(MetaCommand::SetPermissions(p)).await
    }

    async fn apply_set_permissions(&self, p: Permission) -> Result<(), BrokerError> {
        if !self.read().users.contains_key(&p.user) {
            return Err(no_user(&p.user));
        }
        let compiled = Compiled::new(p.clone())?;
        let value = warren_storage::codec::encode(&p).map_err(storage_error)?;
        self.persist(vec![Op::PutMeta {
            table: MetaTable::Permissions,
            key: permission_key(&p.user, &p.vhost),
            value,
        }])
        .await?;
        self.write_state()
            .permissions
            .insert((p.user.clone(), p.vhost.clone()), compiled);
        Ok(())
    }

    pub async fn clear_permissions(&self, user: &str, vhost: &str) -> Result<(), BrokerError> {
        let key = (user.to_string(), vhost.to_string());
        if !self.read().permissions.contains_key(&key) {
            return Err(no_permissions(user, vhost));
        }
        self.change(MetaCommand::ClearPermissions {
            user: user.to_string(),
            vhost: vhost.to_string(),
        })
        .await
    }

    async fn apply_clear_permissions(&self, user: &str, vhost: &str) -> Result<(), BrokerError> {
        let key = (user.to_string(), vhost.to_string());
        if !self.read().permissions.contains_key(&key) {
            return Err(no_permissions(user, vhost));
        }
        self.persist(vec![delete_permission(&key)]).await?;
        self.write_state().permissions.remove(&key);
        Ok(())
    }

    /// Drops every user's permissions in `vhost` (its vhost was deleted; applied on
    /// each node as part of the same committed change).
    pub async fn forget_vhost(&self, vhost: &str) -> Result<(), BrokerError> {
        let keys = self.permissions_where(|_, v| v == vhost);
        if !keys.is_empty() {
            self.persist(keys.iter().map(delete_permission).collect())
                .await?;
        }
        let mut state = self.write_state();
        for key in keys {
            state.permissions.remove(&key);
        }
        Ok(())
    }

    /// The (user, vhost) keys of the permissions `pick` selects.
    fn permissions_where(&self, pick: impl Fn(&str, &str) -> bool) -> Vec<(String, String)> {
        self.read()
            .permissions
            .keys()
            .filter(|(u, v)| pick(u, v))
            .cloned()
            .collect()
    }

    pub fn list_permissions(&self) -> Vec<Permission> {
        self.read()
            .permissions
            .values()
            .map(|c| c.source.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn fresh() -> (tempfile::TempDir, AccessControl) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("w.redb")).unwrap();
        (dir, AccessControl::load(store).await.unwrap())
    }

    #[tokio::test]
    async fn a_fresh_node_has_guest_with_full_rights_on_the_default_vhost() {
        let (_dir, a) = fresh().await;
        assert!(a.authenticate("guest", "guest"));
        assert!(!a.authenticate("guest", "wrong"));
        assert!(a.may_open("guest", "/"));
        assert!(!a.may_open("guest", "other"));
        assert!(a
            .check("guest", "/", Access::Configure, Resource::Queue("q"))
            .is_ok());
    }

    #[tokio::test]
    async fn permissions_are_whole_name_regexes_and_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.redb");
        {
            let a = AccessControl::load(Store::open(&path).unwrap())
                .await
                .unwrap();
            a.add_user("app", "s3cret", vec![]).await.unwrap();
            a.set_permissions(Permission {
                user: "app".into(),
                vhost: "/".into(),
                configure: "app-.*".into(),
                write: "amq\\.topic|app-.*".into(),
                read: "".into(),
            })
            .await
            .unwrap();
            assert!(a.add_user("app", "x", vec![]).await.is_err());
            assert!(a
                .set_permissions(Permission {
                    user: "app".into(),
                    vhost: "/".into(),
                    configure: "(".into(),
                    write: "".into(),
                    read: "".into(),
                })
                .await
                .is_err());
            a.store.close();
        }
        let a = AccessControl::load(Store::open(&path).unwrap())
            .await
            .unwrap();
        assert!(a.authenticate("app", "s3cret"));
        let ok = |access, r| a.check("app", "/", access, r).is_ok();
        assert!(ok(Access::Configure, Resource::Queue("app-orders")));
        assert!(
            !ok(Access::Configure, Resource::Queue("orders-app-x")),
            "anchored"
        );
        assert!(ok(Access::Write, Resource::Exchange("amq.topic")));
        assert!(!ok(Access::Write, Resource::Exchange("amq.topicx")));
        assert!(
            !ok(Access::Read, Resource::Queue("app-orders")),
            "empty = nothing"
        );
        let e = a
            .check("app", "/", Access::Read, Resource::Queue("app-orders"))
            .unwrap_err();
        assert_eq!(e.code, 403);
        assert!(
            e.text
                .contains("read access to queue 'app-orders' in vhost '/' refused for user 'app'"),
            "{}",
            e.text
        );
        a.delete_user("app").await.unwrap();
        assert!(!a.authenticate("app", "s3cret"));
        assert!(a.list_permissions().iter().all(|p| p.user != "app"));
    }

    #[test]
    fn passwords_are_salted() {
        let a = User::new("u", "pw", vec![]);
        let b = User::new("u", "pw", vec![]);
        assert_ne!(a.hash, b.hash, "two salts, two hashes");
        assert!(a.verify("pw") && b.verify("pw") && !a.verify("pW"));
    }
}
