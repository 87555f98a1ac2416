//! What the debug shell asks of a node through the client handle: the supervision
//! tree, an actor's state, stopping and crashing actors, tracing a queue, the node's
//! log and its cluster members.

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use warren_actors::delivery::TracedMessage;
use warren_cluster::protocol::{ActorDetails, LogLine, NodeInfo, Permission, Request, Response};
use warren_supervisor::TreeSnapshot;

use super::{unexpected, Client, ClientError};

impl Client {
    /// The node's supervision tree, or the subtree of the actor `name`.
    pub async fn tree(&self, name: Option<&str>) -> Result<TreeSnapshot, ClientError> {
        let name = name.map(str::to_string);
        match self.call(Request::Tree { name }).await? {
            Response::Tree(t) => Ok(t),
            other => Err(unexpected(other)),
        }
    }

    /// An actor's place in the tree and, for a queue or exchange, its state.
    pub async fn inspect(&self, name: &str) -> Result<ActorDetails, ClientError> {
        let name = name.to_string();
        match self.call(Request::Inspect { name }).await? {
            Response::Inspected(d) => Ok(*d),
            other => Err(unexpected(other)),
        }
    }

    /// Stops an actor normally; its supervisor restarts it if it is permanent.
    pub async fn stop_actor(&self, name: &str) -> Result<(), ClientError> {
        let name = name.to_string();
        self.call(Request::StopActor { name }).await.map(drop)
    }

    /// Makes an actor fail, so that its supervisor restarts it.
    pub async fn crash_actor(&self, name: &str) -> Result<(), ClientError> {
        let name = name.to_string();
        self.call(Request::CrashActor { name }).await.map(drop)
    }

    /// The node's last `lines` log lines at `level` (error .. trace) or more severe.
    pub async fn log(&self, level: &str, lines: u32) -> Result<Vec<LogLine>, ClientError> {
        let level = level.to_string();
        match self.call(Request::Log { level, lines }).await? {
            Response::Log(l) => Ok(l),
            other => Err(unexpected(other)),
        }
    }

    /// The cluster's members as the node sees them.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, ClientError> {
        match self.call(Request::Nodes).await? {
            Response::Nodes(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    /// Removes a member that is down from the cluster (`warren cluster forget`).
    pub async fn forget_node(&self, name: &str) -> Result<(), ClientError> {
        let name = name.to_string();
        self.call(Request::ForgetNode { name }).await.map(drop)
    }

    /// The node this client is connected to leaves the cluster and stops.
    pub async fn leave_cluster(&self) -> Result<(), ClientError> {
        self.call(Request::LeaveCluster).await.map(drop)
    }

    /// Starts tracing the messages that enter `queue`. One trace per client at a time;
    /// it ends with [`Trace::stop`] or when the client closes.
    pub async fn trace(&self, queue: &str) -> Result<Trace, ClientError> {
        let (tx, rx) = unbounded_channel();
        self.inner.consumers.set_tracer(Some(tx));
        let queue = queue.to_string();
        let on = Request::Trace {
            queue: queue.clone(),
            on: true,
        };
        if let Err(e) = self.call(on).await {
            self.inner.consumers.set_tracer(None);
            return Err(e);
        }
        Ok(Trace {
            client: self.clone(),
            queue,
            rx,
        })
    }
}

/// A live tail of the messages entering a queue.
pub struct Trace {
    client: Client,
    queue: String,
    rx: UnboundedReceiver<Vec<TracedMessage>>,
}

impl Trace {
    /// The next batch of traced messages; `None` once the session has ended.
    pub async fn next(&mut self) -> Option<Vec<TracedMessage>> {
        self.rx.recv().await
    }

    pub async fn stop(self) -> Result<(), ClientError> {
        self.client.inner.consumers.set_tracer(None);
        let off = Request::Trace {
            queue: self.queue.clone(),
            on: false,
        };
        self.client.call(off).await.map(drop)
    }
}

impl Client {
    /// Adds a user (its password is stored salted and hashed).
    pub async fn add_user(
        &self,
        name: &str,
        password: &str,
        tags: Vec<String>,
    ) -> Result<(), ClientError> {
        let request = Request::AddUser {
            name: name.into(),
            password: password.into(),
            tags,
        };
        self.call(request).await.map(drop)
    }

    /// Deletes a user and its permissions.
    pub async fn delete_user(&self, name: &str) -> Result<(), ClientError> {
        let name = name.to_string();
        self.call(Request::DeleteUser { name }).await.map(drop)
    }

    /// Every user: (name, tags).
    pub async fn users(&self) -> Result<Vec<(String, Vec<String>)>, ClientError> {
        match self.call(Request::ListUsers).await? {
            Response::Users(u) => Ok(u),
            other => Err(unexpected(other)),
        }
    }

    /// Sets a user's configure / write / read patterns in a vhost.
    pub async fn set_permissions(&self, permission: Permission) -> Result<(), ClientError> {
        self.call(Request::SetPermissions(permission))
            .await
            .map(drop)
    }

    /// Adds a vhost.
    pub async fn add_vhost(&self, name: &str, description: &str) -> Result<(), ClientError> {
        let request = Request::AddVhost {
            name: name.into(),
            description: description.into(),
        };
        self.call(request).await.map(drop)
    }

    /// Deletes a vhost with its exchanges, queues, messages and permissions.
    pub async fn delete_vhost(&self, name: &str) -> Result<(), ClientError> {
        let name = name.to_string();
        self.call(Request::DeleteVhost { name }).await.map(drop)
    }

    /// Every vhost.
    pub async fn vhosts(&self) -> Result<Vec<warren_access::VHostDef>, ClientError> {
        match self.call(Request::ListVhosts).await? {
            Response::Vhosts(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    pub async fn clear_permissions(&self, user: &str, vhost: &str) -> Result<(), ClientError> {
        let request = Request::ClearPermissions {
            user: user.into(),
            vhost: vhost.into(),
        };
        self.call(request).await.map(drop)
    }

    pub async fn permissions(&self) -> Result<Vec<Permission>, ClientError> {
        match self.call(Request::ListPermissions).await? {
            Response::Permissions(p) => Ok(p),
            other => Err(unexpected(other)),
        }
    }

    /// Adds (or removes) a replica on `node` to replicated queue `queue`, or with
    /// `None` to every quorum queue of the vhost that lacks (has) one there.
    pub async fn change_members(
        &self,
        queue: Option<&str>,
        node: &str,
        add: bool,
    ) -> Result<Vec<warren_cluster::protocol::MembersChanged>, ClientError> {
        let request = Request::ChangeMembers {
            queue: queue.map(str::to_string),
            node: node.to_string(),
            add,
        };
        match self.call(request).await? {
            Response::MembersChanged(changes) => Ok(changes),
            other => Err(unexpected(other)),
        }
    }

    /// The node's memory and disk against their limits; `Some` values change the
    /// limits (until the node restarts).
    pub async fn limits(
        &self,
        memory: Option<warren_resources::alarm::MemoryLimit>,
        disk_free: Option<u64>,
    ) -> Result<warren_cluster::protocol::LimitsInfo, ClientError> {
        match self.call(Request::Limits { memory, disk_free }).await? {
            Response::Limits(l) => Ok(l),
            other => Err(unexpected(other)),
        }
    }
}
