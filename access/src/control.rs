//! [`AccessControl`]: the node's users and permissions, and the changes it applies.
//!
//! A node that has no users creates RabbitMQ's default `guest` / `guest` with full
//! permissions on `/`; front doors let `guest` in from loopback only. A change is
//! prepared (`prepare_*`: checked against this node's view, the record made complete)
//! and then applied ([`AccessControl::apply`]); in a cluster, the node assembly
//! commits the prepared change to the metadata log in between and every node applies
//! it. Applying checks again, against what earlier changes left, so every node
//! reaches the same answer; applying a change twice (a node that crashed between
//! applying and recording it) leaves the same state.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use regex::Regex;
use warren_storage::{Batch, MetaTable, Op, Store};

use crate::error::AccessError;
use crate::permission::{Access, Permission, Resource};
use crate::user::{LegacyUser, User, DEFAULT_USER};
use crate::vhost::DEFAULT_VHOST;

/// A change of users or permissions, prepared by one node and applied by every node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessChange {
    /// Adds a user. The record is complete (its password already salted and hashed by
    /// the node that took the request), so every node stores the same record.
    AddUser(User),
    /// Replaces an existing user's password and tags; their permissions stay.
    UpdateUser(User),
    /// Deletes a user with all their permissions.
    DeleteUser {
        /// The user's name.
        name: String,
    },
    /// Sets (replaces) a user's permissions in a vhost.
    SetPermissions(Permission),
    /// Removes a user's permissions in a vhost.
    ClearPermissions {
        /// The user's name.
        user: String,
        /// The vhost.
        vhost: String,
    },
}

/// Compiled permissions of one (user, vhost).
struct Compiled {
    /// What was given, for listings and storage.
    source: Permission,
    configure: Regex,
    write: Regex,
    read: Regex,
}

fn compile(pattern: &str) -> Result<Regex, AccessError> {
    // Anchored: RabbitMQ matches the whole name.
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| AccessError::InvalidPattern {
        pattern: pattern.to_string(),
        reason: e.to_string(),
    })
}

impl Compiled {
    /// Compiles the three patterns; the first that is not a regular expression is
    /// refused.
    fn new(p: Permission) -> Result<Compiled, AccessError> {
        Ok(Compiled {
            configure: compile(&p.configure)?,
            write: compile(&p.write)?,
            read: compile(&p.read)?,
            source: p,
        })
    }

    /// Whether `access` to a resource called `name` is allowed.
    fn allows(&self, access: Access, name: &str) -> bool {
        let re = match access {
            Access::Configure => &self.configure,
            Access::Write => &self.write,
            Access::Read => &self.read,
        };
        re.is_match(name)
    }
}

#[derive(Default)]
struct State {
    users: BTreeMap<String, User>,
    /// (user, vhost) -> permissions.
    permissions: BTreeMap<(String, String), Compiled>,
}

/// The node's users and permissions (cheap to clone).
#[derive(Clone)]
pub struct AccessControl {
    store: Store,
    state: Arc<RwLock<State>>,
    /// A RAM node keeps its users in memory only.
    in_memory: Arc<AtomicBool>,
    /// Bumped whenever the state may change, so that a channel can cache a check.
    generation: Arc<AtomicU64>,
}

fn permission_key(user: &str, vhost: &str) -> String {
    format!("{user}\u{0}{vhost}")
}

/// Stores a user's record (and drops a record of the old layout of that name).
fn put_user(user: &User) -> Result<Vec<Op>, AccessError> {
    let value = warren_storage::codec::encode(user).map_err(AccessError::storage)?;
    let mut ops = delete_user(&user.name);
    ops.push(Op::PutMeta {
        table: MetaTable::UserRecords,
        key: user.name.clone(),
        value,
    });
    Ok(ops)
}

/// Deletes a user's stored records, in either layout.
fn delete_user(name: &str) -> Vec<Op> {
    [MetaTable::Users, MetaTable::UserRecords]
        .into_iter()
        .map(|table| Op::DeleteMeta {
            table,
            key: name.to_string(),
        })
        .collect()
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
    pub async fn load(store: Store) -> Result<AccessControl, AccessError> {
        let mut state = State::default();
        for (_, value) in store
            .read_meta(MetaTable::Users)
            .map_err(AccessError::storage)?
        {
            match warren_storage::codec::decode::<LegacyUser>(&value) {
                Ok(u) => {
                    state.users.insert(u.name.clone(), u.into());
                }
                Err(e) => tracing::error!("a stored user did not decode and is skipped: {e}"),
            }
        }
        // Records written since credentials have schemes win over the old layout.
        for (_, value) in store
            .read_meta(MetaTable::UserRecords)
            .map_err(AccessError::storage)?
        {
            match warren_storage::codec::decode::<User>(&value) {
                Ok(u) => {
                    state.users.insert(u.name.clone(), u);
                }
                Err(e) => tracing::error!("a stored user did not decode and is skipped: {e}"),
            }
        }
        for (_, value) in store
            .read_meta(MetaTable::Permissions)
            .map_err(AccessError::storage)?
        {
            match warren_storage::codec::decode::<Permission>(&value) {
                Ok(p) => {
                    let key = (p.user.clone(), p.vhost.clone());
                    match Compiled::new(p) {
                        Ok(c) => {
                            state.permissions.insert(key, c);
                        }
                        Err(e) => tracing::error!("stored permissions skipped: {e}"),
                    }
                }
                Err(e) => tracing::error!("stored permissions did not decode: {e}"),
            }
        }
        let access = AccessControl {
            store,
            state: Arc::new(RwLock::new(state)),
            in_memory: Arc::new(AtomicBool::new(false)),
            generation: Arc::new(AtomicU64::new(0)),
        };
        if access.read().users.is_empty() {
            let guest = access.prepare_add_user(
                DEFAULT_USER,
                DEFAULT_USER,
                vec!["administrator".into()],
            )?;
            access.apply(guest).await?;
            let everything = access.prepare_set_permissions(Permission {
                user: DEFAULT_USER.into(),
                vhost: DEFAULT_VHOST.into(),
                configure: ".*".into(),
                write: ".*".into(),
                read: ".*".into(),
            })?;
            access.apply(everything).await?;
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

    /// From now on, changes are kept in memory only (a RAM node).
    pub fn keep_in_memory(&self) {
        self.in_memory.store(true, Ordering::Relaxed);
    }

    async fn persist(&self, ops: Vec<Op>) -> Result<(), AccessError> {
        if self.in_memory.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.store
            .submit(Batch::durable(ops))
            .await
            .map_err(AccessError::storage)
    }

    // ----- reads ----------------------------------------------------------------

    /// Whether `user` exists and `password` is theirs.
    pub fn authenticate(&self, user: &str, password: &str) -> bool {
        // As RabbitMQ: a blank password never logs in.
        if password.is_empty() {
            return false;
        }
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
    ) -> Result<(), AccessError> {
        // The default exchange is "amq.default" to permissions, as in RabbitMQ (an
        // empty name would match a "no access" pattern such as "" or "^$").
        let resource = match resource {
            Resource::Exchange("") => Resource::Exchange("amq.default"),
            other => other,
        };
        let allowed = self
            .read()
            .permissions
            .get(&(user.to_string(), vhost.to_string()))
            .is_some_and(|c| c.allows(access, resource.name()));
        if allowed {
            return Ok(());
        }
        Err(AccessError::Refused {
            user: user.to_string(),
            vhost: vhost.to_string(),
            access,
            kind: resource.kind(),
            resource: resource.name().to_string(),
        })
    }

    /// Every user's name and tags, by name.
    pub fn list_users(&self) -> Vec<(String, Vec<String>)> {
        self.read()
            .users
            .values()
            .map(|u| (u.name.clone(), u.tags.clone()))
            .collect()
    }

    /// Every user's complete record (credentials included), by name: what a
    /// snapshot of the metadata carries.
    pub fn user_records(&self) -> Vec<User> {
        self.read().users.values().cloned().collect()
    }

    /// Every user's permissions, by user and vhost.
    pub fn list_permissions(&self) -> Vec<Permission> {
        self.read()
            .permissions
            .values()
            .map(|c| c.source.clone())
            .collect()
    }

    // ----- preparing changes ----------------------------------------------------

    /// Adding a user: the name must be valid and free. The change carries the
    /// complete record (salted and hashed here).
    pub fn prepare_add_user(
        &self,
        name: &str,
        password: &str,
        tags: Vec<String>,
    ) -> Result<AccessChange, AccessError> {
        if name.is_empty() || name.len() > 255 || name.contains('\u{0}') {
            return Err(AccessError::InvalidUserName {
                name: name.to_string(),
            });
        }
        self.check_no_user(name)?;
        Ok(AccessChange::AddUser(User::new(name, password, tags)))
    }

    /// Changing an existing user: a new password (salted and hashed here) or, with
    /// `None`, the password they have; new tags.
    pub fn prepare_update_user(
        &self,
        name: &str,
        password: Option<&str>,
        tags: Vec<String>,
    ) -> Result<AccessChange, AccessError> {
        let current =
            self.read()
                .users
                .get(name)
                .cloned()
                .ok_or_else(|| AccessError::NoSuchUser {
                    name: name.to_string(),
                })?;
        let user = match password {
            Some(password) => User::new(name, password, tags),
            None => current.with_tags(tags),
        };
        Ok(AccessChange::UpdateUser(user))
    }

    /// Adding or replacing a user whose record is complete (a credential from a
    /// definitions export): an add if the name is free, else an update.
    pub fn prepare_put_user(&self, user: User) -> Result<AccessChange, AccessError> {
        if user.name.is_empty() || user.name.len() > 255 || user.name.contains('\u{0}') {
            return Err(AccessError::InvalidUserName { name: user.name });
        }
        if self.read().users.contains_key(&user.name) {
            Ok(AccessChange::UpdateUser(user))
        } else {
            Ok(AccessChange::AddUser(user))
        }
    }

    /// Deleting a user (and all their permissions): the user must exist.
    pub fn prepare_delete_user(&self, name: &str) -> Result<AccessChange, AccessError> {
        self.check_user(name)?;
        Ok(AccessChange::DeleteUser {
            name: name.to_string(),
        })
    }

    /// Setting (replacing) a user's permissions in a vhost: the user must exist and
    /// the three patterns be regular expressions. Whether the vhost exists is the
    /// caller's to check (the vhosts live elsewhere).
    pub fn prepare_set_permissions(&self, p: Permission) -> Result<AccessChange, AccessError> {
        self.check_user(&p.user)?;
        Compiled::new(p.clone())?;
        Ok(AccessChange::SetPermissions(p))
    }

    /// Clearing a user's permissions in a vhost: they must have some there.
    pub fn prepare_clear_permissions(
        &self,
        user: &str,
        vhost: &str,
    ) -> Result<AccessChange, AccessError> {
        self.check_permissions(user, vhost)?;
        Ok(AccessChange::ClearPermissions {
            user: user.to_string(),
            vhost: vhost.to_string(),
        })
    }

    fn check_user(&self, name: &str) -> Result<(), AccessError> {
        if !self.read().users.contains_key(name) {
            return Err(AccessError::NoSuchUser {
                name: name.to_string(),
            });
        }
        Ok(())
    }

    fn check_no_user(&self, name: &str) -> Result<(), AccessError> {
        if self.read().users.contains_key(name) {
            return Err(AccessError::UserExists {
                name: name.to_string(),
            });
        }
        Ok(())
    }

    fn check_permissions(&self, user: &str, vhost: &str) -> Result<(), AccessError> {
        let key = (user.to_string(), vhost.to_string());
        if !self.read().permissions.contains_key(&key) {
            return Err(AccessError::NoPermissions {
                user: user.to_string(),
                vhost: vhost.to_string(),
            });
        }
        Ok(())
    }

    // ----- applying changes -----------------------------------------------------

    /// Applies a change of users or permissions (committed, or at once without a
    /// log), checking it again against this node's state.
    pub async fn apply(&self, change: AccessChange) -> Result<(), AccessError> {
        match change {
            AccessChange::AddUser(user) => self.apply_add_user(user).await,
            AccessChange::UpdateUser(user) => self.apply_update_user(user).await,
            AccessChange::DeleteUser { name } => self.apply_delete_user(&name).await,
            AccessChange::SetPermissions(p) => self.apply_set_permissions(p).await,
            AccessChange::ClearPermissions { user, vhost } => {
                self.apply_clear_permissions(&user, &vhost).await
            }
        }
    }

    async fn apply_add_user(&self, user: User) -> Result<(), AccessError> {
        let name = user.name.clone();
        self.check_no_user(&name)?;
        self.persist(put_user(&user)?).await?;
        self.write_state().users.insert(name, user);
        Ok(())
    }

    async fn apply_update_user(&self, user: User) -> Result<(), AccessError> {
        let name = user.name.clone();
        self.check_user(&name)?;
        self.persist(put_user(&user)?).await?;
        self.write_state().users.insert(name, user);
        Ok(())
    }

    async fn apply_delete_user(&self, name: &str) -> Result<(), AccessError> {
        self.check_user(name)?;
        let keys = self.permissions_where(|user, _| user == name);
        let mut ops = delete_user(name);
        ops.extend(keys.iter().map(delete_permission));
        self.persist(ops).await?;
        let mut state = self.write_state();
        state.users.remove(name);
        for key in keys {
            state.permissions.remove(&key);
        }
        Ok(())
    }

    async fn apply_set_permissions(&self, p: Permission) -> Result<(), AccessError> {
        self.check_user(&p.user)?;
        let compiled = Compiled::new(p.clone())?;
        let value = warren_storage::codec::encode(&p).map_err(AccessError::storage)?;
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

    async fn apply_clear_permissions(&self, user: &str, vhost: &str) -> Result<(), AccessError> {
        self.check_permissions(user, vhost)?;
        let key = (user.to_string(), vhost.to_string());
        self.persist(vec![delete_permission(&key)]).await?;
        self.write_state().permissions.remove(&key);
        Ok(())
    }

    /// Drops every user's permissions in `vhost` (its vhost was deleted; applied on
    /// each node as part of the same committed change).
    pub async fn forget_vhost(&self, vhost: &str) -> Result<(), AccessError> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn fresh() -> (tempfile::TempDir, AccessControl) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("w.redb")).unwrap();
        (dir, AccessControl::load(store).await.unwrap())
    }

    /// Prepares and applies at once, as a node without a log does.
    async fn add_user(
        a: &AccessControl,
        name: &str,
        password: &str,
        tags: Vec<String>,
    ) -> Result<(), AccessError> {
        a.apply(a.prepare_add_user(name, password, tags)?).await
    }

    async fn set_permissions(a: &AccessControl, p: Permission) -> Result<(), AccessError> {
        a.apply(a.prepare_set_permissions(p)?).await
    }

    async fn delete_user(a: &AccessControl, name: &str) -> Result<(), AccessError> {
        a.apply(a.prepare_delete_user(name)?).await
    }

    #[tokio::test]
    async fn users_stored_in_the_old_layout_log_in_and_move_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.redb");
        {
            let store = Store::open(&path).unwrap();
            let old = LegacyUser::new("old", "pw", vec!["management".into()]);
            let value = warren_storage::codec::encode(&old).unwrap();
            store
                .submit(Batch::durable(vec![Op::PutMeta {
                    table: MetaTable::Users,
                    key: "old".into(),
                    value,
                }]))
                .await
                .unwrap();
            store.close();
        }
        let store = Store::open(&path).unwrap();
        let a = AccessControl::load(store.clone()).await.unwrap();
        assert!(a.authenticate("old", "pw") && !a.authenticate("old", "pW"));
        // No guest: the node had a user already.
        assert!(!a.authenticate("guest", "guest"));
        let change = a
            .prepare_update_user("old", Some("new"), vec!["monitoring".into()])
            .unwrap();
        a.apply(change).await.unwrap();
        assert!(
            store.read_meta(MetaTable::Users).unwrap().is_empty(),
            "moved"
        );
        assert_eq!(store.read_meta(MetaTable::UserRecords).unwrap().len(), 1);
        store.close();
        let a = AccessControl::load(Store::open(&path).unwrap())
            .await
            .unwrap();
        assert!(a.authenticate("old", "new") && !a.authenticate("old", "pw"));
        assert_eq!(
            a.list_users(),
            vec![("old".to_string(), vec!["monitoring".to_string()])]
        );
    }

    #[tokio::test]
    async fn the_default_exchange_is_amq_default_and_blank_passwords_never_log_in() {
        let (_dir, a) = fresh().await;
        add_user(&a, "reader", "pw", vec![]).await.unwrap();
        set_permissions(
            &a,
            Permission {
                user: "reader".into(),
                vhost: "/".into(),
                configure: "".into(),
                write: "".into(),
                read: ".*".into(),
            },
        )
        .await
        .unwrap();
        // "" would match the name "" itself: the check is on "amq.default".
        assert!(a
            .check("reader", "/", Access::Write, Resource::Exchange(""))
            .is_err());
        assert!(a
            .check("guest", "/", Access::Write, Resource::Exchange(""))
            .is_ok());
        add_user(&a, "blank", "", vec![]).await.unwrap();
        assert!(!a.authenticate("blank", ""));
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
            add_user(&a, "app", "s3cret", vec![]).await.unwrap();
            set_permissions(
                &a,
                Permission {
                    user: "app".into(),
                    vhost: "/".into(),
                    configure: "app-.*".into(),
                    write: "amq\\.topic|app-.*".into(),
                    read: "".into(),
                },
            )
            .await
            .unwrap();
            assert!(add_user(&a, "app", "x", vec![]).await.is_err());
            assert!(set_permissions(
                &a,
                Permission {
                    user: "app".into(),
                    vhost: "/".into(),
                    configure: "(".into(),
                    write: "".into(),
                    read: "".into(),
                }
            )
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
        assert_eq!(e.reply_code(), 403);
        assert!(
            e.to_string()
                .contains("read access to queue 'app-orders' in vhost '/' refused for user 'app'"),
            "{e}"
        );
        delete_user(&a, "app").await.unwrap();
        assert!(!a.authenticate("app", "s3cret"));
        assert!(a.list_permissions().iter().all(|p| p.user != "app"));
    }

    #[tokio::test]
    async fn a_change_prepared_here_is_checked_again_when_applied() {
        let (_dir, a) = fresh().await;
        // Two nodes prepared the same user; the first applied wins everywhere.
        let first = a.prepare_add_user("app", "one", vec![]).unwrap();
        let second = a.prepare_add_user("app", "two", vec![]).unwrap();
        a.apply(first).await.unwrap();
        assert_eq!(
            a.apply(second).await.unwrap_err(),
            AccessError::UserExists { name: "app".into() }
        );
        assert!(a.authenticate("app", "one") && !a.authenticate("app", "two"));
        // Deleted meanwhile: clearing its permissions is refused when applied.
        let clear = a.prepare_clear_permissions("guest", "/").unwrap();
        a.apply(a.prepare_delete_user("guest").unwrap())
            .await
            .unwrap();
        assert_eq!(a.apply(clear).await.unwrap_err().reply_code(), 404);
        assert_eq!(
            a.prepare_add_user("", "x", vec![])
                .unwrap_err()
                .reply_code(),
            406
        );
        assert_eq!(
            a.prepare_clear_permissions("app", "/").unwrap_err(),
            AccessError::NoPermissions {
                user: "app".into(),
                vhost: "/".into()
            }
        );
    }

    #[tokio::test]
    async fn a_deleted_vhost_takes_its_permissions_with_it() {
        let (_dir, a) = fresh().await;
        let generation = a.generation();
        a.forget_vhost("/").await.unwrap();
        assert!(!a.may_open("guest", "/"));
        assert!(a.generation() > generation, "cached checks are dropped");
    }
}
