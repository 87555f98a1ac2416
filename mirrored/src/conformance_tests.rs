//! The mirrored queue passes the queue-type conformance suite: on a group of one
//! replica, and on a group of three replicas in this process (three replicas of the
//! multi-group Raft layer, each with a store of its own; the queue served by the first).

use std::sync::Arc;

use crate::Mirrored;
use ractor::{Actor, ActorRef};
use warren_actors::queue::conformance::{run_all, Subject};
use warren_actors::queue::{DeadLetterRouter, HostEnv, QueueDef, QueueType};
use warren_actors::BoxFuture;
use warren_cluster::members::Role;
use warren_cluster::metadata::NoMetadata;
use warren_cluster::replica::{replica_name, Replica, ReplicaArgs, ReplicaMsg, SNAPSHOT_EVERY};
use warren_resources::queue_memory::QueueMemory;
use warren_storage::Store;

/// A node of the test: its store and its replica.
pub(crate) struct Node {
    pub(crate) name: String,
    store: Store,
    replica: ActorRef<ReplicaMsg>,
    _dir: tempfile::TempDir,
}

impl Node {
    pub(crate) async fn start(name: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store.redb")).unwrap();
        let args = ReplicaArgs {
            name: name.to_string(),
            role: Role::Disk,
            store: store.clone(),
            applier: Arc::new(NoMetadata),
            has_seeds: false,
            snapshot_every: SNAPSHOT_EVERY,
        };
        let (replica, _) = Actor::spawn(Some(replica_name(name)), Replica, args)
            .await
            .expect("the replica starts");
        Node {
            name: name.to_string(),
            store,
            replica,
            _dir: dir,
        }
    }

    pub(crate) fn env(&self, vhost: &str, dead_letters: Arc<dyn DeadLetterRouter>) -> HostEnv {
        HostEnv {
            vhost: vhost.to_string(),
            store: self.store.clone(),
            memory: QueueMemory::new(64 << 20),
            dead_letters,
            remote: None,
            delete_self: Arc::new(|_| {}),
            hibernation: None,
        }
    }

    pub(crate) fn stop(self) {
        self.replica.stop(None);
        self.store.close();
    }
}

/// Mirrored queues served by the first node, with replicas on all of them.
struct MirroredQueues {
    nodes: Vec<Node>,
}

impl Subject for MirroredQueues {
    fn queue_type(&self) -> Arc<dyn QueueType> {
        Arc::new(Mirrored::new(&self.nodes[0].name))
    }

    fn env(&self, vhost: &str, dead_letters: Arc<dyn DeadLetterRouter>) -> HostEnv {
        self.nodes[0].env(vhost, dead_letters)
    }

    fn node(&self) -> &str {
        &self.nodes[0].name
    }

    fn keeps_everything(&self) -> bool {
        true
    }

    /// Replicas on every node, served by the first. The others' groups are opened
    /// here (in a cluster each node's vhost hosts its replica; in one process the
    /// actors' names would clash).
    fn place<'a>(&'a self, def: &'a mut QueueDef) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            def.replicas = self.nodes.iter().map(|n| n.name.clone()).collect();
            for node in &self.nodes[1..] {
                Mirrored::new(&node.name)
                    .group(def, "/")
                    .map_err(|e| format!("the group on {}: {e}", node.name))?
                    .open()
                    .await
                    .map_err(|e| format!("opening the group on {}: {e}", node.name))?;
            }
            Ok(())
        })
    }
}

async fn conforms(prefix: &str, replicas: usize) {
    let mut nodes = Vec::new();
    for i in 0..replicas {
        nodes.push(Node::start(&format!("{prefix}{i}")).await);
    }
    let subject = MirroredQueues { nodes };
    run_all(&subject).await;
    for node in subject.nodes {
        node.stop();
    }
}

/// A mirrored queue of one replica passes the queue-type conformance suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirrored_queue_of_one_replica_conforms() {
    conforms("solo", 1).await;
}

/// A mirrored queue of three replicas passes the queue-type conformance suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirrored_queue_of_three_replicas_conforms() {
    conforms("trio", 3).await;
}
