//! The replicated metadata as a whole: an image is the list of commands that build
//! it from an empty broker (what a Raft snapshot of the metadata carries), and
//! [`deletions`] and [`additions`] turn the state a node has into the state an
//! image describes (a node that installs a snapshot from the leader).
//!
//! An image lists vhosts, users, permissions, exchanges, queues and bindings, in
//! that order (each needs the ones before). The built-in exchanges (`""`, `amq.*`)
//! and the default exchange's implicit bindings come with every vhost and are not
//! listed.

use std::collections::BTreeMap;

use crate::metadata::MetaCommand;

/// What an image entry is, in build order (deletions go the other way).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Vhost,
    User,
    Permission,
    Exchange,
    Queue,
    QueueMembers,
    Binding,
}

/// An image entry's identity: its kind and the names that make it unique.
type Key = (Kind, String);

/// The identity of a command that adds something, `None` for any other command.
fn key(command: &MetaCommand) -> Option<Key> {
    let join = |parts: &[&str]| parts.join("\u{0}");
    Some(match command {
        MetaCommand::AddVhost(def) => (Kind::Vhost, def.name.clone()),
        MetaCommand::AddUser(user) => (Kind::User, user.name.clone()),
        MetaCommand::AddUserRecord(user) => (Kind::User, user.name.clone()),
        MetaCommand::SetPermissions(p) => (Kind::Permission, join(&[&p.user, &p.vhost])),
        MetaCommand::DeclareExchange { vhost, def } => (Kind::Exchange, join(&[vhost, &def.name])),
        MetaCommand::DeclareQueue { vhost, def }
        | MetaCommand::DeclareReplicatedQueue { vhost, def, .. } => {
            (Kind::Queue, join(&[vhost, &def.name]))
        }
        // After its queue's declaration (a later kind); undone with it.
        MetaCommand::SetQueueReplicas { vhost, name, .. } => {
            (Kind::QueueMembers, join(&[vhost, name]))
        }
        MetaCommand::Bind { vhost, binding } => {
            // A binding is its whole content (arguments included).
            let bytes = warren_storage::codec::encode(binding).unwrap_or_default();
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            (Kind::Binding, join(&[vhost, &hex]))
        }
        _ => return None,
    })
}

/// The command that removes what `command` added.
fn undo(command: &MetaCommand) -> Option<MetaCommand> {
    Some(match command {
        MetaCommand::AddVhost(def) => MetaCommand::DeleteVhost {
            name: def.name.clone(),
        },
        MetaCommand::AddUser(user) => MetaCommand::DeleteUser {
            name: user.name.clone(),
        },
        MetaCommand::AddUserRecord(user) => MetaCommand::DeleteUser {
            name: user.name.clone(),
        },
        MetaCommand::SetPermissions(p) => MetaCommand::ClearPermissions {
            user: p.user.clone(),
            vhost: p.vhost.clone(),
        },
        MetaCommand::DeclareExchange { vhost, def } => MetaCommand::DeleteExchange {
            vhost: vhost.clone(),
            name: def.name.clone(),
            if_unused: false,
        },
        MetaCommand::DeclareQueue { vhost, def }
        | MetaCommand::DeclareReplicatedQueue { vhost, def, .. } => MetaCommand::DeleteQueue {
            vhost: vhost.clone(),
            name: def.name.clone(),
            node: def.node.clone(),
            id: def.id,
        },
        MetaCommand::Bind { vhost, binding } => MetaCommand::Unbind {
            vhost: vhost.clone(),
            binding: binding.clone(),
        },
        _ => return None,
    })
}

/// Each entry of `image` by identity, with its encoding (two entries with one
/// identity and different encodings differ: a queue declared again, a user whose
/// password changed).
fn index(image: &[MetaCommand]) -> BTreeMap<Key, (Vec<u8>, &MetaCommand)> {
    image
        .iter()
        .filter_map(|c| {
            let bytes = warren_storage::codec::encode(c).unwrap_or_default();
            key(c).map(|k| (k, (bytes, c)))
        })
        .collect()
}

/// What to remove from the state `current` describes to reach `target`: everything
/// `target` does not hold as it is, bindings first and vhosts last.
pub fn deletions(current: &[MetaCommand], target: &[MetaCommand]) -> Vec<MetaCommand> {
    let wanted = index(target);
    let mut out: Vec<(Key, MetaCommand)> = index(current)
        .into_iter()
        // A user who is still there with another record is updated in place (see
        // [`additions`]): deleting them would take their permissions with them.
        .filter(|(k, _)| !(k.0 == Kind::User && wanted.contains_key(k)))
        .filter(|(k, (bytes, _))| wanted.get(k).is_none_or(|(b, _)| b != bytes))
        .filter_map(|(k, (_, c))| undo(c).map(|u| (k, u)))
        .collect();
    out.sort_by_key(|(k, _)| std::cmp::Reverse(k.0));
    out.into_iter().map(|(_, c)| c).collect()
}

/// What to add to the state `current` describes to reach `target` (once the
/// [`deletions`] are applied): every entry of `target` that `current` lacks, in build
/// order.
pub fn additions(current: &[MetaCommand], target: &[MetaCommand]) -> Vec<MetaCommand> {
    let have = index(current);
    let mut out: Vec<(Key, MetaCommand)> = index(target)
        .into_iter()
        .filter(|(k, (bytes, _))| have.get(k).is_none_or(|(b, _)| b != bytes))
        .map(|(k, (_, c))| {
            let changed_user = k.0 == Kind::User && have.contains_key(&k);
            let command = match c {
                MetaCommand::AddUserRecord(user) if changed_user => {
                    MetaCommand::UpdateUser(user.clone())
                }
                MetaCommand::AddUser(user) if changed_user => {
                    MetaCommand::UpdateUser(user.clone().into())
                }
                other => other.clone(),
            };
            (k, command)
        })
        .collect();
    out.sort_by_key(|(k, _)| k.0);
    out.into_iter().map(|(_, c)| c).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_access::{Permission, VHostDef};
    use warren_actors::exchange::{Binding, Destination, ExchangeDef, ExchangeKind};
    use warren_actors::queue::QueueDef;

    fn vhost(name: &str) -> MetaCommand {
        MetaCommand::AddVhost(VHostDef {
            name: name.into(),
            description: String::new(),
        })
    }

    fn exchange(name: &str) -> MetaCommand {
        MetaCommand::DeclareExchange {
            vhost: "/".into(),
            def: ExchangeDef::new(name, ExchangeKind::Topic),
        }
    }

    fn queue(name: &str, id: u64) -> MetaCommand {
        MetaCommand::DeclareQueue {
            vhost: "/".into(),
            def: QueueDef {
                name: name.into(),
                id,
                node: "n1".into(),
                durable: true,
                owner: None,
                auto_delete: false,
                arguments: Default::default(),
                replicas: Vec::new(),
                founders: Vec::new(),
            },
        }
    }

    fn bind(source: &str, queue: &str, key: &str) -> MetaCommand {
        MetaCommand::Bind {
            vhost: "/".into(),
            binding: Binding {
                source: source.into(),
                destination: Destination::Queue(queue.into()),
                routing_key: key.into(),
                arguments: Default::default(),
            },
        }
    }

    fn permission(user: &str, read: &str) -> MetaCommand {
        MetaCommand::SetPermissions(Permission {
            user: user.into(),
            vhost: "/".into(),
            configure: ".*".into(),
            write: ".*".into(),
            read: read.into(),
        })
    }

    fn described(commands: &[MetaCommand]) -> Vec<String> {
        commands.iter().map(|c| format!("{c:?}")).collect()
    }

    /// Applies `commands` to a model state: a removing command removes the entry
    /// it undoes, an adding one replaces the entry with its identity.
    fn model_apply(state: &mut Vec<MetaCommand>, commands: &[MetaCommand]) {
        let enc = |c: &MetaCommand| warren_storage::codec::encode(c).unwrap();
        for c in commands {
            if let MetaCommand::UpdateUser(user) = c {
                let k = (Kind::User, user.name.clone());
                state.retain(|s| key(s).as_ref() != Some(&k));
                state.push(MetaCommand::AddUserRecord(user.clone()));
                continue;
            }
            match key(c) {
                Some(k) => {
                    state.retain(|s| key(s).as_ref() != Some(&k));
                    state.push(c.clone());
                }
                None => state.retain(|s| undo(s).map(|u| enc(&u)) != Some(enc(c))),
            }
        }
    }

    #[test]
    fn a_user_whose_password_changed_is_updated_and_keeps_permissions() {
        let old = warren_access::User::new("app", "one", vec![]);
        let new = warren_access::User::new("app", "two", vec!["monitoring".into()]);
        let current = vec![
            vhost("/"),
            MetaCommand::AddUserRecord(old),
            permission("app", ".*"),
        ];
        let target = vec![
            vhost("/"),
            MetaCommand::AddUserRecord(new.clone()),
            permission("app", ".*"),
        ];
        assert!(
            deletions(&current, &target).is_empty(),
            "no delete: it would drop permissions"
        );
        let added = additions(&current, &target);
        assert!(
            matches!(added.as_slice(), [MetaCommand::UpdateUser(u)] if *u == new),
            "{:?}",
            described(&added)
        );
        let mut state = current.clone();
        model_apply(&mut state, &added);
        assert!(additions(&state, &target).is_empty());
        assert!(deletions(&state, &target).is_empty());
    }

    #[test]
    fn equal_states_need_nothing() {
        let image = vec![
            vhost("v"),
            exchange("x"),
            queue("q", 1),
            bind("x", "q", "k"),
        ];
        assert!(deletions(&image, &image).is_empty());
        assert!(additions(&image, &image).is_empty());
    }

    #[test]
    fn a_node_behind_deletes_what_went_and_adds_what_came_in_order() {
        let current = vec![
            vhost("old"),
            exchange("x"),
            queue("gone", 1),
            queue("again", 2),
            bind("x", "gone", "k"),
            permission("u", ".*"),
        ];
        let target = vec![
            vhost("new"),
            exchange("x"),
            queue("again", 3),
            queue("fresh", 4),
            bind("x", "fresh", "k"),
            permission("u", "^amq"),
        ];
        let delete = described(&deletions(&current, &target));
        // Bindings first, vhosts last; a queue declared again is deleted by its old id.
        assert!(delete[0].starts_with("Unbind"), "{delete:?}");
        assert!(
            delete.last().unwrap().starts_with("DeleteVhost"),
            "{delete:?}"
        );
        assert!(delete
            .iter()
            .any(|d| d.contains("\"again\"") && d.contains("id: 2")));
        assert!(delete.iter().any(|d| d.contains("\"gone\"")));
        assert!(!delete.iter().any(|d| d.contains("DeleteExchange")));
        let mut state = current.clone();
        model_apply(&mut state, &deletions(&current, &target));
        let add = additions(&state, &target);
        let added = described(&add);
        assert!(added[0].starts_with("AddVhost"), "{added:?}");
        assert!(added.last().unwrap().starts_with("Bind"), "{added:?}");
        model_apply(&mut state, &add);
        assert!(deletions(&state, &target).is_empty());
        assert!(additions(&state, &target).is_empty());
    }

    #[test]
    fn an_empty_node_adds_everything_in_build_order() {
        let target = vec![
            bind("x", "q", "k"),
            queue("q", 1),
            exchange("x"),
            vhost("v"),
        ];
        let kinds: Vec<Kind> = additions(&[], &target)
            .iter()
            .map(|c| key(c).unwrap().0)
            .collect();
        assert_eq!(
            kinds,
            [Kind::Vhost, Kind::Exchange, Kind::Queue, Kind::Binding]
        );
        assert!(deletions(&[], &target).is_empty());
    }
}
