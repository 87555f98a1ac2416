//! Connections, channels and consumers live on the node a client connected to; the
//! API shows the whole cluster's, as RabbitMQ's does. Each node runs a
//! `management@NODE` actor in the [`PEERS_GROUP`] process group that answers for its
//! own; a node serving a request asks every other member's at once and merges the
//! answers (a member that does not answer in time is left out, and logged).

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use warren_cluster::wire::Wire;
use warren_supervisor::{ChildSpec, Restart};

use crate::State;

/// The process group of every node's management peer.
pub const PEERS_GROUP: &str = "warren.management";
/// How long a member may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// What one node asks another's peer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Its AMQP connections, as the API shows them.
    Connections,
    /// Their channels.
    Channels,
    /// Their consumers.
    Consumers,
    /// The node's overview figures (counters, rates, connections).
    NodeFigures,
    /// The node's resource alarms that are up.
    Alarms,
    /// Close the connection called `name`, if it is this node's.
    Close {
        /// The connection's name.
        name: String,
        /// What its client is told.
        reason: String,
    },
}

/// A peer's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum PeerAnswer {
    /// A JSON array of objects (JSON text: the wire codec has no dynamic values).
    Items(String),
    /// Whether the connection to close was this node's.
    Closed(bool),
}

/// Messages to a node's management peer.
#[derive(RactorClusterMessage)]
pub enum PeerMsg {
    /// Another node's request, answered.
    #[rpc]
    Ask(Wire<PeerRequest>, RpcReplyPort<Wire<PeerAnswer>>),
}

/// Answers `request` from this node's own state.
pub fn answer(state: &State, request: PeerRequest) -> PeerAnswer {
    use crate::api::connections::{local_channels, local_connections, local_consumers};
    let items = match request {
        PeerRequest::Connections => local_connections(state),
        PeerRequest::Channels => local_channels(state),
        PeerRequest::Consumers => local_consumers(state),
        PeerRequest::NodeFigures => vec![crate::api::overview::node_figures(state)],
        PeerRequest::Alarms => crate::api::overview::node_alarms(state),
        PeerRequest::Close { name, reason } => {
            return PeerAnswer::Closed(match state.connections.find(&name) {
                Some(c) => {
                    c.close(&reason);
                    true
                }
                None => false,
            })
        }
    };
    PeerAnswer::Items(Value::Array(items).to_string())
}

/// The answers of every other member's peer to `request` (in no particular order).
pub async fn ask_others(request: PeerRequest) -> Vec<PeerAnswer> {
    let peers: Vec<ActorRef<PeerMsg>> = ractor::pg::get_members(&PEERS_GROUP.to_string())
        .into_iter()
        .filter(|c| !c.get_id().is_local())
        .map(ActorRef::from)
        .collect();
    let mut asked = tokio::task::JoinSet::new();
    for peer in peers {
        let request = request.clone();
        asked.spawn(async move {
            let answer = ractor::call_t!(
                peer,
                PeerMsg::Ask,
                ASK_TIMEOUT.as_millis() as u64,
                request.into()
            );
            match answer.map(Wire::into_result) {
                Ok(Ok(answer)) => Some(answer),
                Ok(Err(e)) => {
                    tracing::warn!("a management peer's answer did not decode: {e}");
                    None
                }
                Err(e) => {
                    tracing::warn!("a management peer did not answer: {e}");
                    None
                }
            }
        });
    }
    let mut answers = Vec::new();
    while let Some(done) = asked.join_next().await {
        if let Ok(Some(answer)) = done {
            answers.push(answer);
        }
    }
    answers
}

/// This node's items of `request` and every other member's, merged.
pub async fn gather(state: &State, request: PeerRequest) -> Vec<Value> {
    let mut items = match answer(state, request.clone()) {
        PeerAnswer::Items(text) => parse(&text),
        PeerAnswer::Closed(_) => Vec::new(),
    };
    for answer in ask_others(request).await {
        if let PeerAnswer::Items(text) = answer {
            items.extend(parse(&text));
        }
    }
    items
}

fn parse(text: &str) -> Vec<Value> {
    match serde_json::from_str(text) {
        Ok(Value::Array(items)) => items,
        _ => Vec::new(),
    }
}

/// The registry name of a node's management peer.
pub fn peer_name(node: &str) -> String {
    format!("management@{node}")
}

struct Peer;

impl Actor for Peer {
    type Msg = PeerMsg;
    type State = State;
    type Arguments = State;

    async fn pre_start(
        &self,
        myself: ActorRef<PeerMsg>,
        state: State,
    ) -> Result<State, ActorProcessingErr> {
        ractor::pg::join(PEERS_GROUP.to_string(), vec![myself.get_cell()]);
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<PeerMsg>,
        message: PeerMsg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        let PeerMsg::Ask(request, reply) = message;
        let answer = match request.into_result() {
            Ok(request) => answer(state, request),
            Err(e) => {
                tracing::warn!("an undecodable management request: {e}");
                PeerAnswer::Items("[]".into())
            }
        };
        let _ = reply.send(answer.into());
        Ok(())
    }
}

/// The node's management peer, for its supervisor.
pub fn child_spec(state: State) -> ChildSpec {
    let name = peer_name(&state.node.name());
    ChildSpec::for_actor(name, "management peer", Restart::Permanent, move || {
        (Peer, state.clone())
    })
}
