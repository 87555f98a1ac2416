//! [`Stream`]: the stream queue type (`x-queue-type: stream`).

use std::sync::Arc;

use warren_actors::error::{code, BrokerError};
use warren_actors::message::FieldValue;
use warren_actors::queue::{HostEnv, Hosted, QueueDef, QueueKind, QueueType, Settlement};
use warren_actors::BoxFuture;
use warren_storage::{Batch, Op, Store};
use warren_supervisor::{ChildSpec, Restart};

use crate::args::{StreamConfig, LEADER_LOCATOR_ARG};
use crate::handle::{StreamQueue, StreamShared};
use crate::keys::key_hash;
use crate::shell::{StreamActor, StreamArgs};

/// The stream queue type: a stream lives on its home node, as one supervised
/// partition actor (`stream:VHOST/NAME`) over its log in the node's store.
#[derive(Clone)]
pub struct Stream {
    store: Store,
    /// This node's name and where new streams may go (for `balanced` placement).
    placement: Option<(String, NodesUp)>,
}

/// The nodes a new stream may be placed on (the cluster's members not down).
pub type NodesUp = Arc<dyn Fn() -> BoxFuture<'static, Vec<String>> + Send + Sync>;

impl Stream {
    /// The type on a node whose store is `store` (where deleted streams' logs go).
    /// Every stream lives on the node that declares it.
    pub fn new(store: Store) -> Stream {
        Stream {
            store,
            placement: None,
        }
    }

    /// Streams declared with `x-queue-leader-locator: balanced` on node `node` are
    /// spread over `nodes_up`: a partitioned stream's partitions go round them.
    pub fn with_placement(mut self, node: &str, nodes_up: NodesUp) -> Stream {
        self.placement = Some((node.to_string(), nodes_up));
        self
    }

    /// The configuration of a declaration (406 with RabbitMQ's texts).
    pub fn config(def: &QueueDef, vhost: &str) -> Result<StreamConfig, BrokerError> {
        StreamConfig::from_declare(
            &def.name,
            vhost,
            def.durable,
            def.owner.is_some(),
            def.auto_delete,
            &def.arguments,
        )
        .map_err(|e| BrokerError::precondition_failed(e.to_string()))
    }
}

impl QueueType for Stream {
    fn kind(&self) -> QueueKind {
        QueueKind::Stream
    }

    fn validate(&self, def: &QueueDef, vhost: &str) -> Result<(), BrokerError> {
        if def.name.is_empty() {
            return Err(BrokerError::precondition_failed(
                "Cannot declare a server-named queue for type rabbit_stream_queue",
            ));
        }
        Stream::config(def, vhost).map(drop)
    }

    fn check_equivalent(
        &self,
        current: &QueueDef,
        requested: &QueueDef,
        vhost: &str,
    ) -> Result<(), BrokerError> {
        let fail = |arg: &str, received: String, now: String| {
            BrokerError::precondition_failed(format!(
                "inequivalent arg '{arg}' for queue '{}' in vhost '{vhost}': received {received} but current is {now}",
                current.name
            ))
        };
        let flag = |v: bool| format!("'{v}'");
        if current.durable != requested.durable {
            return Err(fail(
                "durable",
                flag(requested.durable),
                flag(current.durable),
            ));
        }
        if current.auto_delete != requested.auto_delete {
            return Err(fail(
                "auto_delete",
                flag(requested.auto_delete),
                flag(current.auto_delete),
            ));
        }
        let shown = |v: Option<&FieldValue>| match v {
            None => "none".to_string(),
            Some(v) => {
                let text = match (v.as_str(), v.as_i64()) {
                    (Some(s), _) => s.to_string(),
                    (None, Some(n)) => n.to_string(),
                    _ => format!("{v:?}"),
                };
                format!("the value '{text}' of type '{}'", v.type_name())
            }
        };
        // Integers compare by value, whatever their width.
        let same = |a: Option<&FieldValue>, b: Option<&FieldValue>| match (a, b) {
            (Some(a), Some(b)) => match (a.as_i64(), b.as_i64()) {
                (Some(x), Some(y)) => x == y,
                _ => a == b,
            },
            (a, b) => a == b,
        };
        for arg in StreamConfig::compared_arguments() {
            let (now, asked) = (current.arguments.get(*arg), requested.arguments.get(*arg));
            if !same(now, asked) {
                return Err(fail(arg, shown(asked), shown(now)));
            }
        }
        Ok(())
    }

    fn host(&self, def: &QueueDef, env: &HostEnv) -> Result<Hosted, BrokerError> {
        let config = Stream::config(def, &env.vhost)?;
        let shared = StreamShared::new(def.clone(), &env.vhost, env.store.clone());
        let args = StreamArgs {
            shared: shared.clone(),
            store: env.store.clone(),
            config,
        };
        let child = ChildSpec::for_actor(
            shared.actor_name.clone(),
            "stream",
            Restart::Permanent,
            move || (StreamActor, args.clone()),
        );
        Ok(Hosted {
            queue: Arc::new(StreamQueue { shared }),
            child,
        })
    }

    fn place<'a>(&'a self, def: &'a mut QueueDef) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let balanced = def
                .arguments
                .get(LEADER_LOCATOR_ARG)
                .and_then(|v| v.as_str())
                .is_some_and(|l| l != "client-local");
            let Some((me, nodes_up)) = self.placement.as_ref().filter(|_| balanced) else {
                return Ok(());
            };
            let mut nodes = nodes_up().await;
            nodes.sort();
            if nodes.is_empty() {
                return Ok(());
            }
            // A partitioned stream's partitions (NAME-0, NAME-1, …) go round the
            // nodes from a place that depends on the stream's name.
            let (base, number) = match def.name.rsplit_once('-') {
                Some((base, n)) => match n.parse::<u64>() {
                    Ok(n) => (base, n),
                    Err(_) => (def.name.as_str(), 0),
                },
                None => (def.name.as_str(), 0),
            };
            let at = (key_hash(base.as_bytes()).wrapping_add(number) % nodes.len() as u64) as usize;
            let chosen = nodes[at].clone();
            if chosen != *me {
                // Its storage id is used in the chosen node's store: one that no id
                // of that node's own counter can be (the top bit set), unique by the
                // declaring node's counter.
                let local = self.store.allocate_id();
                def.id = key_hash(format!("{}@{me}#{local}", def.name).as_bytes()) | (1 << 63);
                def.node = chosen;
            }
            Ok(())
        })
    }

    fn check_settlement(
        &self,
        def: &QueueDef,
        vhost: &str,
        settlement: Settlement,
    ) -> Result<(), BrokerError> {
        match settlement {
            Settlement::Ack => Ok(()),
            Settlement::Requeue | Settlement::DeadLetter => Err(BrokerError::new(
                code::NOT_IMPLEMENTED,
                format!(
                    "basic.nack and basic.reject not supported by stream queues queue '{}' in vhost '{vhost}'",
                    def.name
                ),
            )),
        }
    }

    fn removed(&self, def: &QueueDef, _vhost: &str) -> BoxFuture<'static, ()> {
        // The stream was deleted and its actor stopped: its log goes. (A node that
        // stops before this removes it at its next start: see `VHosts::load`.)
        let partition = def.id;
        let name = def.name.clone();
        let store = self.store.clone();
        Box::pin(async move {
            if let Err(e) = store
                .submit(Batch::durable(vec![Op::DropPartition { partition }]))
                .await
            {
                tracing::error!(stream = %name, "the deleted stream's log was not removed: {e}");
            }
        })
    }
}
