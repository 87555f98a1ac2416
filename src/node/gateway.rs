//! The gateway: where client handles open sessions on this node.
//!
//! One per node, in the [`warren_cluster::GATEWAY_GROUP`] process group so that a
//! client that dialled the node finds it. It starts a [`Session`] per client and stops
//! the sessions of a client process whose transport went away.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use warren_actors::vhosts::VHosts;
use warren_cluster::protocol::{
    ErrorReply, GatewayMsg, InboxMsg, OpenSession, SessionMsg, SessionOpened, PROTOCOL_VERSION,
};
use warren_cluster::GATEWAY_GROUP;

use super::admin::Admin;
use super::session::{Session, SessionArgs};

pub struct Gateway;

pub struct GatewayArgs {
    pub node_name: String,
    pub vhosts: VHosts,
    pub admin: Arc<Admin>,
}

pub struct GatewayState {
    node_name: String,
    vhosts: VHosts,
    admin: Arc<Admin>,
    /// Live sessions: id -> (actor, the ractor_cluster node id of the client process).
    sessions: HashMap<ractor::ActorId, (ActorRef<SessionMsg>, u64)>,
}

/// How long a new session waits for the client's inbox group to sync.
const INBOX_WAIT: Duration = Duration::from_secs(5);

impl Actor for Gateway {
    type Msg = GatewayMsg;
    type State = GatewayState;
    type Arguments = GatewayArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: GatewayArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(GATEWAY_GROUP.to_string(), vec![myself.get_cell()]);
        ractor::pg::join(
            warren_cluster::gateway_group(&args.node_name),
            vec![myself.get_cell()],
        );
        Ok(GatewayState {
            node_name: args.node_name,
            vhosts: args.vhosts,
            admin: args.admin,
            sessions: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            GatewayMsg::Open(open, reply) => {
                let answer = match open.into_result() {
                    Ok(open) => state.open(&myself, open).await,
                    Err(why) => SessionOpened::Refused(ErrorReply {
                        code: 505,
                        text: format!("undecodable session request: {why}"),
                    }),
                };
                let _ = reply.send(answer.into());
            }
            GatewayMsg::Tree(_, reply) => {
                // Answered from a task: a snapshot waits for every supervisor.
                let admin = state.admin.clone();
                tokio::spawn(async move {
                    let tree = admin.tree(None).await.map_err(ErrorReply::from);
                    let _ = reply.send(tree.into());
                });
            }
            GatewayMsg::ClientGone(node) => {
                if let Some(node_id) = node.take() {
                    for (session, client_node) in state.sessions.values() {
                        if *client_node == node_id {
                            session.stop(Some("client transport closed".into()));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Sessions are temporary: a session that ends (or fails) is not restarted;
        // its client sees the closed session and reconnects.
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.sessions.remove(&cell.get_id());
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                tracing::warn!("session {} failed: {err}", cell.get_id());
                state.sessions.remove(&cell.get_id());
            }
            _ => {}
        }
        Ok(())
    }
}

impl GatewayState {
    async fn open(&mut self, myself: &ActorRef<GatewayMsg>, open: OpenSession) -> SessionOpened {
        if open.protocol_version != PROTOCOL_VERSION {
            return SessionOpened::Refused(ErrorReply {
                code: 505,
                text: format!(
                    "client speaks protocol {}, this node speaks {}; use a matching Warren version",
                    open.protocol_version, PROTOCOL_VERSION
                ),
            });
        }
        let Some(vhost) = self.vhosts.get(&open.vhost) else {
            return SessionOpened::Refused(ErrorReply {
                code: 530,
                text: format!("NOT_ALLOWED - vhost '{}' not found", open.vhost),
            });
        };
        let Some(inbox) = find_inbox(&open.inbox_group).await else {
            return SessionOpened::Refused(ErrorReply {
                code: 541,
                text: "the client's inbox did not appear on this node".into(),
            });
        };
        let client_node = inbox.get_id().node();
        let id = warren_actors::delivery::next_channel_id();
        let group = format!("warren.session.{}.{id}", self.node_name);
        let args = SessionArgs {
            vhost,
            inbox: ActorRef::<InboxMsg>::from(inbox),
            channel: id,
            group: group.clone(),
            client_name: open.client_name,
            admin: self.admin.clone(),
        };
        match Actor::spawn_linked(None, Session, args, myself.get_cell()).await {
            Ok((session, _)) => {
                self.sessions
                    .insert(session.get_id(), (session, client_node));
                SessionOpened::Opened {
                    session_group: group,
                }
            }
            Err(e) => SessionOpened::Refused(ErrorReply {
                code: 541,
                text: format!("cannot start a session: {e}"),
            }),
        }
    }
}

async fn find_inbox(group: &str) -> Option<ractor::ActorCell> {
    let deadline = tokio::time::Instant::now() + INBOX_WAIT;
    loop {
        if let Some(cell) = ractor::pg::get_members(&group.to_string())
            .into_iter()
            .find(|c| !c.get_id().is_local())
        {
            return Some(cell);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
