//! The supervisors of one vhost in the node's tree: `vhost:NAME` (one_for_all) over
//! `exchanges:NAME` and `queues:NAME` (one_for_one). The default vhost's start with
//! the node; a vhost added later is started under the root then, and stopped when it
//! is deleted.

use std::time::Duration;

use warren_actors::error::BrokerError;
use warren_actors::metadata::BoxFuture;
use warren_actors::vhost::VHost;
use warren_actors::vhosts::VHostSupervision;
use warren_supervisor::{
    ChildSpec, Restart, Strategy, Supervisor, SupervisorHandle, SupervisorSpec,
};

/// The name of a vhost's supervisor in the tree.
pub fn supervisor_name(vhost: &VHost) -> String {
    format!("vhost:{}", vhost.name())
}

/// The child spec of a vhost's supervisor. Its exchange and queue supervisors build
/// their children from the vhost's registry each time they start, so a restart of
/// `vhost:NAME` brings every queue back, and each queue actor rebuilds its messages
/// from storage.
pub fn vhost_child(vhost: &VHost, max_restarts: u32, window: Duration) -> ChildSpec {
    let group = |name: String, children: fn(&VHost) -> Vec<ChildSpec>| {
        let vhost = vhost.clone();
        ChildSpec::new(
            name.clone(),
            warren_supervisor::SUPERVISOR_KIND,
            Restart::Permanent,
            move |parent| {
                let (vhost, name) = (vhost.clone(), name.clone());
                async move {
                    let spec = children(&vhost).into_iter().fold(
                        SupervisorSpec::new(Strategy::OneForOne)
                            .with_intensity(max_restarts * 10, window),
                        SupervisorSpec::child,
                    );
                    Supervisor::start(name, None, spec, Some(parent))
                        .await
                        .map(|(r, _)| r.get_cell())
                        .map_err(|e| e.into_spawn_err())
                }
            },
        )
        .as_supervisor()
    };
    let spec = SupervisorSpec::new(Strategy::OneForAll)
        .with_intensity(max_restarts, window)
        .child(group(
            vhost.exchanges_supervisor_name(),
            VHost::exchange_children,
        ))
        .child(group(vhost.queues_supervisor_name(), VHost::queue_children));
    ChildSpec::supervisor(supervisor_name(vhost), Restart::Permanent, spec)
}

/// Starts and stops vhosts added and deleted while the node runs, under its root.
pub struct VHostTree {
    pub root: SupervisorHandle,
    pub max_restarts: u32,
    pub window: Duration,
}

impl VHostSupervision for VHostTree {
    fn start<'a>(&'a self, vhost: &'a VHost) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            self.root
                .start_child(vhost_child(vhost, self.max_restarts, self.window))
                .await
                .map(drop)
                .map_err(|e| {
                    BrokerError::internal(format!(
                        "the actors of vhost '{}' did not start: {e}",
                        vhost.name()
                    ))
                })
        })
    }

    fn stop<'a>(&'a self, vhost: &'a VHost) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Err(e) = self.root.terminate_child(&supervisor_name(vhost)).await {
                tracing::warn!(vhost = %vhost.name(), "the actors of a deleted vhost did not stop: {e}");
            }
        })
    }
}
