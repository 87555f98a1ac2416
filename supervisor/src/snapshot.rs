//! The serialisable picture of a supervision tree, and lookups in it.

use serde::{Deserialize, Serialize};

/// Life-cycle state of a node in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildStatus {
    /// Spawned, `post_start` still running.
    Starting,
    /// Running.
    Running,
    /// Decided to restart, but the new instance is not running yet; seen
    /// when a start attempt failed and a retry is scheduled.
    Restarting,
    /// Exited normally and will not be restarted (or was stopped with its
    /// supervisor), or exited and the supervisor has not processed it yet.
    Stopped,
    /// Exited abnormally and will not be restarted (a temporary child).
    Failed,
    /// Not running, by design: the child stopped itself with
    /// [`HIBERNATE_REASON`](crate::HIBERNATE_REASON), or its
    /// [`ChildSpec::with_dormant`](crate::ChildSpec::with_dormant) test said
    /// it need not start. Its spec stays with the supervisor, which does not
    /// restart it; [`SupervisorHandle::wake_child`](crate::SupervisorHandle::wake_child)
    /// starts it again. Uptime 0, no instance.
    Hibernated,
}

/// One node of a supervision tree (a supervisor or a leaf child).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeSnapshot {
    /// Readable name, e.g. `"queue:/orders"`.
    pub name: String,
    /// Kind from the child spec, e.g. `"queue"` or `"supervisor"`.
    pub kind: String,
    /// Life-cycle state as seen by the node's supervisor.
    pub status: ChildStatus,
    /// How many times the node's supervisor started a replacement instance.
    /// Always 0 for the root of a snapshot (nobody above it counted).
    pub restarts: u32,
    /// Always `None`: ractor 0.16.5 keeps an actor's mailbox sender inside
    /// the crate-private `ActorProperties` and `ActorCell` exposes no queue
    /// length, so there is nothing to read. Kept so that the wire format
    /// does not change once ractor exposes it.
    pub mailbox_len: Option<u64>,
    /// Milliseconds since the current instance was started; 0 when none is
    /// running.
    pub uptime_ms: u64,
    /// `Some("one_for_one" | "one_for_all" | "rest_for_one")` for
    /// supervisors, `None` for leaves.
    pub strategy: Option<String>,
    /// Children in start order; empty for leaves and for a nested
    /// supervisor that did not answer in time.
    pub children: Vec<TreeSnapshot>,
}

/// Where a named node sits in a tree: what `inspect` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildLocation {
    /// Names from the root down to the node, both included.
    pub path: Vec<String>,
    /// The supervisor directly above the node (`None` for the root).
    pub supervisor: Option<String>,
    /// That supervisor's strategy.
    pub strategy: Option<String>,
    /// The node itself, with its subtree.
    pub node: TreeSnapshot,
}

impl TreeSnapshot {
    /// The first node named `name`, depth first in start order.
    pub fn find(&self, name: &str) -> Option<&TreeSnapshot> {
        if self.name == name {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(name))
    }

    /// Like [`TreeSnapshot::find`], plus the path to the node and its
    /// supervisor's name and strategy.
    pub fn locate(&self, name: &str) -> Option<ChildLocation> {
        let mut path = Vec::new();
        self.locate_in(name, None, &mut path)
    }

    fn locate_in<'a>(
        &'a self,
        name: &str,
        parent: Option<&'a TreeSnapshot>,
        path: &mut Vec<String>,
    ) -> Option<ChildLocation> {
        path.push(self.name.clone());
        if self.name == name {
            return Some(ChildLocation {
                path: path.clone(),
                supervisor: parent.map(|p| p.name.clone()),
                strategy: parent.and_then(|p| p.strategy.clone()),
                node: self.clone(),
            });
        }
        for child in &self.children {
            if let Some(found) = child.locate_in(name, Some(self), path) {
                return Some(found);
            }
        }
        path.pop();
        None
    }

    /// Number of nodes in the tree, this one included.
    pub fn len(&self) -> usize {
        1 + self.children.iter().map(TreeSnapshot::len).sum::<usize>()
    }

    /// Always false: a tree has at least its root. Present because
    /// [`TreeSnapshot::len`] is.
    pub fn is_empty(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, strategy: Option<&str>, children: Vec<TreeSnapshot>) -> TreeSnapshot {
        TreeSnapshot {
            name: name.into(),
            kind: if strategy.is_some() {
                "supervisor"
            } else {
                "queue"
            }
            .into(),
            status: ChildStatus::Running,
            restarts: 0,
            mailbox_len: None,
            uptime_ms: 0,
            strategy: strategy.map(str::to_string),
            children,
        }
    }

    fn tree() -> TreeSnapshot {
        node(
            "root",
            Some("one_for_one"),
            vec![
                node("a", None, vec![]),
                node(
                    "sub",
                    Some("rest_for_one"),
                    vec![node("b", None, vec![]), node("c", None, vec![])],
                ),
            ],
        )
    }

    #[test]
    fn find_and_locate() {
        let t = tree();
        assert_eq!(t.len(), 5);
        assert_eq!(t.find("c").map(|n| n.name.as_str()), Some("c"));
        assert!(t.find("nope").is_none());

        let loc = t.locate("c").expect("c is in the tree");
        assert_eq!(loc.path, vec!["root", "sub", "c"]);
        assert_eq!(loc.supervisor.as_deref(), Some("sub"));
        assert_eq!(loc.strategy.as_deref(), Some("rest_for_one"));

        let loc = t.locate("a").expect("a is in the tree");
        assert_eq!(loc.path, vec!["root", "a"]);
        assert_eq!(loc.strategy.as_deref(), Some("one_for_one"));

        let root = t.locate("root").expect("root is in the tree");
        assert_eq!(root.supervisor, None);
        assert_eq!(root.path, vec!["root"]);
        assert!(t.locate("nope").is_none());
    }
}
