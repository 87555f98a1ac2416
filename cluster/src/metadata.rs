//! [`MetaCommand`]: what the metadata log replicates, and [`MetadataApplier`]: who
//! applies it on each node.
//!
//! A command is one change of the broker's replicated metadata: users, permissions,
//! vhosts, exchanges, queues (with their home node) and bindings. The registries say
//! their changes in their own words ([`AccessChange`] from warren-access,
//! [`BrokerChange`] from warren-actors); the log carries them as one command type,
//! and every node turns a committed command back into those words
//! ([`MetaChange`]) to apply it.
//!
//! The encoding is what the Raft logs on disk hold (bincode through
//! `warren_storage::codec`, variants by index): keep the variants in this order, with
//! these payload types, and add new ones at the end. The tests below pin the bytes.

use serde::{Deserialize, Serialize};
use warren_access::{AccessChange, LegacyUser, Permission, User, VHostDef};
use warren_actors::changes::{BrokerChange, VhostChange};
use warren_actors::error::BrokerError;
use warren_actors::exchange::{Binding, ExchangeDef};
use warren_actors::queue::QueueDef;
use warren_actors::BoxFuture;

/// One metadata change, as the log carries it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MetaCommand {
    /// Adds a user, as logs written before credentials had schemes hold it (read
    /// from old logs; new adds are [`MetaCommand::AddUserRecord`]).
    AddUser(LegacyUser),
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
    /// A new vhost (empty but for the default exchanges).
    AddVhost(VHostDef),
    /// Deletes a vhost with its exchanges, queues (and their messages), bindings and
    /// permissions.
    DeleteVhost {
        /// The vhost's name.
        name: String,
    },
    /// A new exchange in `vhost`.
    DeclareExchange {
        /// The vhost it happens in.
        vhost: String,
        /// The exchange's declaration.
        def: ExchangeDef,
    },
    /// Deletes an exchange (refused while it has bindings if `if_unused`).
    DeleteExchange {
        /// The vhost it happens in.
        vhost: String,
        /// The exchange's name.
        name: String,
        /// Refuse (406) while the exchange is the source of bindings.
        if_unused: bool,
    },
    /// A new queue; its home node runs its actor, the others route to it.
    DeclareQueue {
        /// The vhost it happens in.
        vhost: String,
        /// The queue's declaration, with its home node and storage id.
        def: QueueDef,
    },
    /// Deletes the queue `name` if it is still the one with storage id `id` on
    /// `node` (a queue declared again since is another queue).
    DeleteQueue {
        /// The vhost it happens in.
        vhost: String,
        /// The queue's name.
        name: String,
        /// Its home node.
        node: String,
        /// Its storage id on that node.
        id: u64,
    },
    /// Adds a binding.
    Bind {
        /// The vhost it happens in.
        vhost: String,
        /// The binding.
        binding: Binding,
    },
    /// Removes a binding.
    Unbind {
        /// The vhost it happens in.
        vhost: String,
        /// The binding.
        binding: Binding,
    },
    /// A new replicated queue (quorum / mirrored): [`MetaCommand::DeclareQueue`] and
    /// the nodes that hold its replicas, which a `QueueDef`'s serde form (the one
    /// every earlier log holds) does not carry.
    DeclareReplicatedQueue {
        /// The vhost it happens in.
        vhost: String,
        /// The queue's declaration.
        def: QueueDef,
        /// [`QueueDef::replicas`].
        replicas: Vec<String>,
    },
    /// New members for a replicated queue ([`VhostChange::SetReplicas`]).
    SetQueueReplicas {
        /// The vhost it happens in.
        vhost: String,
        /// The queue's name.
        name: String,
        /// Its storage id.
        id: u64,
        /// Its members the change was made from.
        from: Vec<String>,
        /// Its members from now on.
        replicas: Vec<String>,
    },
    /// Replaces an existing user's record (password and tags); their permissions
    /// stay. (Appended: the variants before it keep their numbers in stored logs.)
    UpdateUser(User),
    /// Adds a user. The record is complete (its password already salted and hashed
    /// by the node that took the request), so every node stores the same record.
    AddUserRecord(User),
}

/// A committed command in the words of the registry that applies it.
#[derive(Clone, Debug)]
pub enum MetaChange {
    /// Users and permissions (warren-access).
    Access(AccessChange),
    /// Vhosts and what is in them (warren-actors).
    Broker(BrokerChange),
}

impl From<AccessChange> for MetaCommand {
    fn from(change: AccessChange) -> Self {
        match change {
            // Older builds read the old layout: used whenever the credential fits it.
            AccessChange::AddUser(user) => match user.to_legacy() {
                Some(legacy) => MetaCommand::AddUser(legacy),
                None => MetaCommand::AddUserRecord(user),
            },
            AccessChange::UpdateUser(user) => MetaCommand::UpdateUser(user),
            AccessChange::DeleteUser { name } => MetaCommand::DeleteUser { name },
            AccessChange::SetPermissions(p) => MetaCommand::SetPermissions(p),
            AccessChange::ClearPermissions { user, vhost } => {
                MetaCommand::ClearPermissions { user, vhost }
            }
        }
    }
}

impl From<BrokerChange> for MetaCommand {
    fn from(change: BrokerChange) -> Self {
        let (vhost, change) = match change {
            BrokerChange::AddVhost(def) => return MetaCommand::AddVhost(def),
            BrokerChange::DeleteVhost { name } => return MetaCommand::DeleteVhost { name },
            BrokerChange::Vhost { vhost, change } => (vhost, change),
        };
        match change {
            VhostChange::DeclareExchange { def } => MetaCommand::DeclareExchange { vhost, def },
            VhostChange::DeleteExchange { name, if_unused } => MetaCommand::DeleteExchange {
                vhost,
                name,
                if_unused,
            },
            VhostChange::DeclareQueue { def } => MetaCommand::declare_queue(vhost, def),
            VhostChange::DeleteQueue { name, node, id } => MetaCommand::DeleteQueue {
                vhost,
                name,
                node,
                id,
            },
            VhostChange::Bind { binding } => MetaCommand::Bind { vhost, binding },
            VhostChange::Unbind { binding } => MetaCommand::Unbind { vhost, binding },
            VhostChange::SetReplicas {
                name,
                id,
                from,
                replicas,
            } => MetaCommand::SetQueueReplicas {
                vhost,
                name,
                id,
                from,
                replicas,
            },
        }
    }
}

impl From<MetaCommand> for MetaChange {
    fn from(command: MetaCommand) -> Self {
        let vhost_change =
            |vhost, change| MetaChange::Broker(BrokerChange::Vhost { vhost, change });
        match command {
            MetaCommand::AddUser(user) => MetaChange::Access(AccessChange::AddUser(user.into())),
            MetaCommand::AddUserRecord(user) => MetaChange::Access(AccessChange::AddUser(user)),
            MetaCommand::UpdateUser(user) => MetaChange::Access(AccessChange::UpdateUser(user)),
            MetaCommand::DeleteUser { name } => {
                MetaChange::Access(AccessChange::DeleteUser { name })
            }
            MetaCommand::SetPermissions(p) => MetaChange::Access(AccessChange::SetPermissions(p)),
            MetaCommand::ClearPermissions { user, vhost } => {
                MetaChange::Access(AccessChange::ClearPermissions { user, vhost })
            }
            MetaCommand::AddVhost(def) => MetaChange::Broker(BrokerChange::AddVhost(def)),
            MetaCommand::DeleteVhost { name } => {
                MetaChange::Broker(BrokerChange::DeleteVhost { name })
            }
            MetaCommand::DeclareExchange { vhost, def } => {
                vhost_change(vhost, VhostChange::DeclareExchange { def })
            }
            MetaCommand::DeleteExchange {
                vhost,
                name,
                if_unused,
            } => vhost_change(vhost, VhostChange::DeleteExchange { name, if_unused }),
            MetaCommand::DeclareQueue { vhost, def } => {
                vhost_change(vhost, VhostChange::DeclareQueue { def })
            }
            MetaCommand::DeclareReplicatedQueue {
                vhost,
                def,
                replicas,
            } => vhost_change(
                vhost,
                VhostChange::DeclareQueue {
                    def: QueueDef { replicas, ..def },
                },
            ),
            MetaCommand::DeleteQueue {
                vhost,
                name,
                node,
                id,
            } => vhost_change(vhost, VhostChange::DeleteQueue { name, node, id }),
            MetaCommand::Bind { vhost, binding } => {
                vhost_change(vhost, VhostChange::Bind { binding })
            }
            MetaCommand::Unbind { vhost, binding } => {
                vhost_change(vhost, VhostChange::Unbind { binding })
            }
            MetaCommand::SetQueueReplicas {
                vhost,
                name,
                id,
                from,
                replicas,
            } => vhost_change(
                vhost,
                VhostChange::SetReplicas {
                    name,
                    id,
                    from,
                    replicas,
                },
            ),
        }
    }
}

impl MetaCommand {
    /// The declaration of queue `def` in `vhost`: with its replicas for a replicated
    /// queue.
    pub fn declare_queue(vhost: String, def: QueueDef) -> MetaCommand {
        if def.replicas.is_empty() {
            MetaCommand::DeclareQueue { vhost, def }
        } else {
            let replicas = def.replicas.clone();
            MetaCommand::DeclareReplicatedQueue {
                vhost,
                def,
                replicas,
            }
        }
    }

    /// The commands that build queue `def` of `vhost` as it is now: its declaration,
    /// and for a replicated queue whose members changed since, its first members in
    /// the declaration and the current ones after it.
    pub fn build_queue(vhost: String, def: QueueDef) -> Vec<MetaCommand> {
        if def.founders.is_empty() {
            return vec![MetaCommand::declare_queue(vhost, def)];
        }
        let set = MetaCommand::SetQueueReplicas {
            vhost: vhost.clone(),
            name: def.name.clone(),
            id: def.id,
            from: def.founders.clone(),
            replicas: def.replicas.clone(),
        };
        let declared = QueueDef {
            replicas: def.founders.clone(),
            founders: Vec::new(),
            ..def
        };
        vec![MetaCommand::declare_queue(vhost, declared), set]
    }

    /// A short description for logs and errors.
    pub fn describe(&self) -> String {
        match self {
            MetaCommand::AddUser(u) => format!("add user '{}'", u.name),
            MetaCommand::AddUserRecord(u) => format!("add user '{}'", u.name),
            MetaCommand::UpdateUser(u) => format!("update user '{}'", u.name),
            MetaCommand::DeleteUser { name } => format!("delete user '{name}'"),
            MetaCommand::SetPermissions(p) => format!("set permissions of '{}'", p.user),
            MetaCommand::ClearPermissions { user, .. } => format!("clear permissions of '{user}'"),
            MetaCommand::AddVhost(def) => format!("add vhost '{}'", def.name),
            MetaCommand::DeleteVhost { name } => format!("delete vhost '{name}'"),
            MetaCommand::DeclareExchange { def, .. } => format!("declare exchange '{}'", def.name),
            MetaCommand::DeleteExchange { name, .. } => format!("delete exchange '{name}'"),
            MetaCommand::DeclareQueue { def, .. }
            | MetaCommand::DeclareReplicatedQueue { def, .. } => {
                format!("declare queue '{}'", def.name)
            }
            MetaCommand::DeleteQueue { name, .. } => format!("delete queue '{name}'"),
            MetaCommand::Bind { binding, .. } => format!("bind '{}'", binding.source),
            MetaCommand::Unbind { binding, .. } => format!("unbind '{}'", binding.source),
            MetaCommand::SetQueueReplicas { name, replicas, .. } => {
                format!(
                    "set the replicas of queue '{name}' to {}",
                    replicas.join(", ")
                )
            }
        }
    }
}

/// Applies committed commands to this node's broker state (the node assembly's, which
/// knows every registry).
pub trait MetadataApplier: Send + Sync + 'static {
    /// Applies one command; the result goes back to whoever proposed it on this node.
    fn apply(&self, command: MetaCommand) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// The whole replicated metadata as this node has applied it, as the commands
    /// that build it (see [`crate::image`]): what a snapshot of the log carries.
    fn image(&self) -> BoxFuture<'_, Vec<MetaCommand>>;
}

/// An applier that keeps no metadata: a replica that runs only groups of its own
/// (tests, and tools such as `examples/raft_groups.rs`).
pub struct NoMetadata;

impl MetadataApplier for NoMetadata {
    fn apply(&self, _: MetaCommand) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async { Ok(()) })
    }

    fn image(&self) -> BoxFuture<'_, Vec<MetaCommand>> {
        Box::pin(async { Vec::new() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_actors::exchange::{Destination, ExchangeKind};
    use warren_actors::message::{FieldTable, FieldValue};
    use warren_storage::codec::{decode, encode};

    /// `MetaCommand` as warren-actors defined it when the Raft logs on disk were
    /// written (before it moved here): the same variants, in the same order, with
    /// the same payload types. Never change it: it is what old logs hold.
    #[derive(Serialize)]
    enum Written {
        AddUser(LegacyUser),
        DeleteUser {
            name: String,
        },
        SetPermissions(Permission),
        ClearPermissions {
            user: String,
            vhost: String,
        },
        AddVhost(VHostDef),
        DeleteVhost {
            name: String,
        },
        DeclareExchange {
            vhost: String,
            def: ExchangeDef,
        },
        DeleteExchange {
            vhost: String,
            name: String,
            if_unused: bool,
        },
        DeclareQueue {
            vhost: String,
            def: QueueDef,
        },
        DeleteQueue {
            vhost: String,
            name: String,
            node: String,
            id: u64,
        },
        Bind {
            vhost: String,
            binding: Binding,
        },
        Unbind {
            vhost: String,
            binding: Binding,
        },
        DeclareReplicatedQueue {
            vhost: String,
            def: QueueDef,
            replicas: Vec<String>,
        },
        SetQueueReplicas {
            vhost: String,
            name: String,
            id: u64,
            from: Vec<String>,
            replicas: Vec<String>,
        },
    }

    /// The same command in the shape it was written in (by name: a variant moved in
    /// `MetaCommand` keeps its place here).
    fn written(c: MetaCommand) -> Written {
        match c {
            MetaCommand::AddUser(u) => Written::AddUser(u),
            MetaCommand::UpdateUser(_) | MetaCommand::AddUserRecord(_) => {
                unreachable!("appended after the move: no old log holds it")
            }
            MetaCommand::DeleteUser { name } => Written::DeleteUser { name },
            MetaCommand::SetPermissions(p) => Written::SetPermissions(p),
            MetaCommand::ClearPermissions { user, vhost } => {
                Written::ClearPermissions { user, vhost }
            }
            MetaCommand::AddVhost(d) => Written::AddVhost(d),
            MetaCommand::DeleteVhost { name } => Written::DeleteVhost { name },
            MetaCommand::DeclareExchange { vhost, def } => Written::DeclareExchange { vhost, def },
            MetaCommand::DeleteExchange {
                vhost,
                name,
                if_unused,
            } => Written::DeleteExchange {
                vhost,
                name,
                if_unused,
            },
            MetaCommand::DeclareQueue { vhost, def } => Written::DeclareQueue { vhost, def },
            MetaCommand::DeleteQueue {
                vhost,
                name,
                node,
                id,
            } => Written::DeleteQueue {
                vhost,
                name,
                node,
                id,
            },
            MetaCommand::Bind { vhost, binding } => Written::Bind { vhost, binding },
            MetaCommand::Unbind { vhost, binding } => Written::Unbind { vhost, binding },
            MetaCommand::DeclareReplicatedQueue {
                vhost,
                def,
                replicas,
            } => Written::DeclareReplicatedQueue {
                vhost,
                def,
                replicas,
            },
            MetaCommand::SetQueueReplicas {
                vhost,
                name,
                id,
                from,
                replicas,
            } => Written::SetQueueReplicas {
                vhost,
                name,
                id,
                from,
                replicas,
            },
        }
    }

    /// One command of each variant, in declaration order, with the bytes the build
    /// before the move encoded it to (captured from it: format version byte, then
    /// bincode's variant index and fields).
    fn samples() -> Vec<(MetaCommand, &'static str)> {
        // A user with a fixed salt and hash (User::new draws a random salt): decoded
        // from its fields in order, as bincode writes a struct.
        let user: LegacyUser = decode(
            &encode(&(
                "app".to_string(),
                [7u8; 16],
                [9u8; 32],
                vec!["administrator".to_string()],
            ))
            .unwrap(),
        )
        .unwrap();
        let mut args = FieldTable::new();
        args.insert("x-max-length".into(), FieldValue::I32(10));
        args.insert("x-queue-type".into(), FieldValue::string("classic"));
        let binding = Binding {
            source: "orders".into(),
            destination: Destination::Queue("q1".into()),
            routing_key: "eu.#".into(),
            arguments: args.clone(),
        };
        let prod = || "prod".to_string();
        vec![
            (
                MetaCommand::AddUser(user),
                "010003617070070707070707070707070707070707070909090909090909090909090909090909090909090909090909090909090909010d61646d696e6973747261746f72",
            ),
            (
                MetaCommand::DeleteUser { name: "app".into() },
                "010103617070",
            ),
            (
                MetaCommand::SetPermissions(Permission {
                    user: "app".into(),
                    vhost: "/".into(),
                    configure: "app-.*".into(),
                    write: ".*".into(),
                    read: "".into(),
                }),
                "010203617070012f066170702d2e2a022e2a00",
            ),
            (
                MetaCommand::ClearPermissions {
                    user: "app".into(),
                    vhost: prod(),
                },
                "0103036170700470726f64",
            ),
            (
                MetaCommand::AddVhost(VHostDef {
                    name: prod(),
                    description: "production".into(),
                }),
                "01040470726f640a70726f64756374696f6e",
            ),
            (
                MetaCommand::DeleteVhost { name: prod() },
                "01050470726f64",
            ),
            (
                MetaCommand::DeclareExchange {
                    vhost: prod(),
                    def: ExchangeDef {
                        name: "orders".into(),
                        kind: ExchangeKind::Topic,
                        durable: true,
                        auto_delete: false,
                        internal: true,
                        arguments: args.clone(),
                    },
                },
                "01060470726f64066f726465727302010001020c782d6d61782d6c656e67746805140c782d71756575652d747970650b07636c6173736963",
            ),
            (
                MetaCommand::DeleteExchange {
                    vhost: prod(),
                    name: "orders".into(),
                    if_unused: true,
                },
                "01070470726f64066f726465727301",
            ),
            (
                MetaCommand::DeclareQueue {
                    vhost: prod(),
                    def: QueueDef {
                        name: "q1".into(),
                        id: 300,
                        node: "n1".into(),
                        durable: true,
                        owner: Some(70_000),
                        auto_delete: false,
                        arguments: args,
                        replicas: Vec::new(),
                        founders: Vec::new(),
                    },
                },
                "01080470726f64027131fb2c01026e310101fc7011010000020c782d6d61782d6c656e67746805140c782d71756575652d747970650b07636c6173736963",
            ),
            (
                MetaCommand::DeleteQueue {
                    vhost: prod(),
                    name: "q1".into(),
                    node: "n1".into(),
                    id: 300,
                },
                "01090470726f64027131026e31fb2c01",
            ),
            (
                MetaCommand::Bind {
                    vhost: prod(),
                    binding: binding.clone(),
                },
                "010a0470726f64066f7264657273000271310465752e23020c782d6d61782d6c656e67746805140c782d71756575652d747970650b07636c6173736963",
            ),
            (
                MetaCommand::Unbind {
                    vhost: prod(),
                    binding,
                },
                "010b0470726f64066f7264657273000271310465752e23020c782d6d61782d6c656e67746805140c782d71756575652d747970650b07636c6173736963",
            ),
            (
                MetaCommand::DeclareReplicatedQueue {
                    vhost: prod(),
                    def: QueueDef {
                        name: "q2".into(),
                        id: 301,
                        node: "n1".into(),
                        durable: true,
                        owner: None,
                        auto_delete: false,
                        arguments: FieldTable::new(),
                        replicas: vec!["n1".into(), "n2".into()],
                        founders: Vec::new(),
                    },
                    replicas: vec!["n1".into(), "n2".into()],
                },
                "010c0470726f64027132fb2d01026e310100000002026e31026e32",
            ),
            (
                MetaCommand::SetQueueReplicas {
                    vhost: prod(),
                    name: "q2".into(),
                    id: 301,
                    from: vec!["n1".into(), "n2".into()],
                    replicas: vec!["n2".into(), "n3".into()],
                },
                "010d0470726f64027132fb2d0102026e31026e3202026e32026e33",
            ),
        ]
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn commands_encode_as_the_logs_on_disk_hold_them() {
        let samples = samples();
        for (index, (command, bytes)) in samples.into_iter().enumerate() {
            let what = command.describe();
            let encoded = encode(&command).unwrap();
            assert_eq!(
                hex(&encoded),
                bytes,
                "{what}: not the bytes written before the move"
            );
            // Byte 0 is the codec's version; the variant index follows (one byte below 251).
            assert_eq!(encoded[1] as usize, index, "{what}: variant {index}");
            assert_eq!(
                encoded,
                encode(&written(command)).unwrap(),
                "{what}: not the shape written before the move"
            );
        }
    }

    #[test]
    fn written_commands_replay() {
        for (command, bytes) in samples() {
            let bytes: Vec<u8> = (0..bytes.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&bytes[i..i + 2], 16).unwrap())
                .collect();
            let replayed: MetaCommand = decode(&bytes).unwrap();
            assert_eq!(replayed.describe(), command.describe());
            assert_eq!(encode(&replayed).unwrap(), bytes);
        }
    }

    #[test]
    fn each_change_comes_back_as_the_command_it_was() {
        for (command, _) in samples() {
            let before = encode(&command).unwrap();
            let what = command.describe();
            let again: MetaCommand = match MetaChange::from(command) {
                MetaChange::Access(c) => c.into(),
                MetaChange::Broker(c) => c.into(),
            };
            assert_eq!(encode(&again).unwrap(), before, "{what}");
        }
    }

    #[test]
    fn commands_appended_after_the_move_keep_their_places() {
        // A credential only the new layout holds (RabbitMQ's 4-byte salt).
        let hash = "AQIDBJsPGQAmNOBwcEzrqoDBa4HefPXET3JTmdZKm3Tj4CzZ";
        let user =
            User::from_password_hash("app", hash, None, vec!["administrator".into()]).unwrap();
        for (index, command) in [
            (14, MetaCommand::UpdateUser(user.clone())),
            (15, MetaCommand::AddUserRecord(user)),
        ] {
            let bytes = encode(&command).unwrap();
            assert_eq!(bytes[1], index, "{}", command.describe());
            let back: MetaCommand = decode(&bytes).unwrap();
            assert_eq!(encode(&back).unwrap(), bytes);
            let MetaChange::Access(change) = MetaChange::from(back) else {
                panic!("a change of users");
            };
            let again: MetaCommand = change.into();
            assert_eq!(encode(&again).unwrap(), bytes);
        }
    }
}
