//! Vhosts added and deleted while the node runs: their supervisors
//! ([`VHost::supervisor_spec`]) are started under the node's root then, and stopped
//! when the vhost is deleted. The vhosts loaded at start are children of the root
//! from the beginning.

use std::time::Duration;

use warren_actors::error::BrokerError;
use warren_actors::vhost::VHost;
use warren_actors::vhosts::VHostSupervision;
use warren_actors::BoxFuture;
use warren_supervisor::SupervisorHandle;

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
                .start_child(vhost.supervisor_spec(self.max_restarts, self.window))
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
            if let Err(e) = self.root.terminate_child(&vhost.supervisor_name()).await {
                tracing::warn!(vhost = %vhost.name(), "the actors of a deleted vhost did not stop: {e}");
            }
        })
    }
}
