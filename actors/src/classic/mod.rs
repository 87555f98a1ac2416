//! The classic queue: a queue on one node, RabbitMQ's classic queue. The first
//! implementation of the queue-type seam ([`crate::queue`]).
//!
//! | file | concern |
//! | --- | --- |
//! | `machine/` | the pure, versioned state machine (`apply(command) -> (reply, effects)`) |
//! | `actor.rs` | the thin actor shell that performs the machine's effects |
//! | `handle.rs` | [`ClassicQueue`]: the [`Queue`](crate::queue::Queue) callers hold |
//! | `replication.rs` | [`QueueLog`]: the shell as a replicated queue's leader, its messages in a log |
//!
//! [`Classic`] is the queue type: it validates declarations with the machine's
//! [`QueueConfig`] and hosts a queue as one supervised actor, `queue:VHOST/NAME`.

mod actor;
mod handle;
pub mod machine;
mod replication;

use std::sync::Arc;

use warren_supervisor::{ChildSpec, Restart};

pub use handle::ClassicQueue;
pub use machine::{QueueConfig, WindowLimits};
pub use replication::QueueLog;

use crate::error::BrokerError;
use crate::queue::{HostEnv, Hosted, QueueDef, QueueKind, QueueType};

use actor::{QueueActor, QueueArgs};
use handle::ClassicShared;

/// The classic queue type.
#[derive(Clone, Copy, Debug, Default)]
pub struct Classic;

impl Classic {
    /// The machine's configuration of a declaration (406 on a bad argument).
    pub fn config(def: &QueueDef, vhost: &str) -> Result<QueueConfig, BrokerError> {
        QueueConfig::from_declare(
            &def.name,
            vhost,
            def.durable,
            def.owner.is_some(),
            def.auto_delete,
            &def.arguments,
        )
        .map_err(BrokerError::from)
    }
}

impl QueueType for Classic {
    fn kind(&self) -> QueueKind {
        QueueKind::Classic
    }

    fn validate(&self, def: &QueueDef, vhost: &str) -> Result<(), BrokerError> {
        Classic::config(def, vhost).map(drop)
    }

    fn check_equivalent(
        &self,
        current: &QueueDef,
        requested: &QueueDef,
        vhost: &str,
    ) -> Result<(), BrokerError> {
        Classic::config(current, vhost)?
            .check_equivalent(&Classic::config(requested, vhost)?)
            .map_err(BrokerError::from)
    }

    fn host(&self, def: &QueueDef, env: &HostEnv) -> Result<Hosted, BrokerError> {
        let config = Classic::config(def, &env.vhost)?;
        Ok(Classic::host_with(def, config, env, None))
    }
}

impl Classic {
    /// Runs queue `def` of `config` here as a supervised actor (`queue:VHOST/NAME`):
    /// from the node's queue tables, or, with `log`, as a replicated queue's leader
    /// whose state and messages are in that log.
    pub fn host_with(
        def: &QueueDef,
        config: QueueConfig,
        env: &HostEnv,
        log: Option<Arc<dyn QueueLog>>,
    ) -> Hosted {
        // A queue hibernates when the node lets queues hibernate, unless its actor is
        // needed while it is idle: a replicated queue's leads its group, an `x-expires`
        // queue's times its expiry, and an exclusive queue is one connection's own.
        let hibernates = log.is_none() && config.expires.is_none() && def.owner.is_none();
        let hibernation = env.hibernation.clone().filter(|_| hibernates);
        let shared = ClassicShared::new(def.clone(), config, hibernation);
        let args = QueueArgs {
            shared: shared.clone(),
            env: env.clone(),
            log,
        };
        // Exclusive queues die with their connection: a restart would outlive it.
        let restart = if def.owner.is_some() {
            Restart::Transient
        } else {
            Restart::Permanent
        };
        let mut child =
            ChildSpec::for_actor(shared.actor_name.clone(), "queue", restart, move || {
                (QueueActor, args.clone())
            });
        if shared.hibernation.is_some() {
            let sleeper = shared.clone();
            child = child.with_dormant(move || sleeper.asleep().is_some());
        }
        Hosted {
            queue: Arc::new(ClassicQueue { shared }),
            child,
        }
    }
}

#[cfg(test)]
mod conformance_tests {
    use std::sync::Arc;

    use warren_storage::Store;

    use super::Classic;
    use crate::queue::conformance::{run_all, Subject};
    use std::time::Duration;

    use crate::error::BrokerError;
    use crate::queue::{DeadLetterRouter, Hibernation, HostEnv, QueueType};
    use crate::queue_memory::QueueMemory;

    struct ClassicQueues {
        store: Store,
        _dir: tempfile::TempDir,
    }

    impl Subject for ClassicQueues {
        fn queue_type(&self) -> Arc<dyn QueueType> {
            Arc::new(Classic)
        }

        fn env(&self, vhost: &str, dead_letters: Arc<dyn DeadLetterRouter>) -> HostEnv {
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

        fn node(&self) -> &str {
            "conformance"
        }
    }

    /// The classic queue passes the queue-type conformance suite.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_classic_queue_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store.redb")).unwrap();
        let subject = ClassicQueues { store, _dir: dir };
        run_all(&subject).await;
        subject.store.close();
    }

    /// Classic queues that hibernate after a millisecond idle: the suite's queues
    /// start asleep and stop and start again between its steps all the time.
    struct HibernatingQueues(ClassicQueues);

    impl Subject for HibernatingQueues {
        fn queue_type(&self) -> Arc<dyn QueueType> {
            self.0.queue_type()
        }

        fn env(&self, vhost: &str, dead_letters: Arc<dyn DeadLetterRouter>) -> HostEnv {
            // The suite runs each queue under a supervisor named `sup-NAME`.
            let wake: Arc<
                dyn Fn(String) -> crate::BoxFuture<'static, Result<(), BrokerError>> + Send + Sync,
            > = Arc::new(|child: String| {
                Box::pin(async move {
                    let name = child.strip_prefix("queue:/").unwrap_or(&child);
                    warren_supervisor::SupervisorHandle::lookup(&format!("sup-{name}"))
                        .map_err(|e| BrokerError::internal(e.to_string()))?
                        .wake_child(&child)
                        .await
                        .map(drop)
                        .map_err(|e| BrokerError::internal(e.to_string()))
                })
            });
            HostEnv {
                hibernation: Some(Hibernation {
                    after: Duration::from_millis(1),
                    wake,
                }),
                ..self.0.env(vhost, dead_letters)
            }
        }

        fn node(&self) -> &str {
            "conformance"
        }
    }

    /// Hibernating classic queues pass it too: nothing is lost or reordered across
    /// a hibernation, and what a sleeping queue answers without its actor is right.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hibernating_classic_queue_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store.redb")).unwrap();
        let subject = HibernatingQueues(ClassicQueues { store, _dir: dir });
        run_all(&subject).await;
        subject.0.store.close();
    }
}
