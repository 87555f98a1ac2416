//! The exchange actor: one per exchange, under the vhost's `exchanges:<vhost>`
//! supervisor.
//!
//! Binding changes of an exchange made through this node pass through its actor: it
//! checks them and proposes them to the metadata log, which orders them. Its routing state
//! lives in the vhost's snapshot (and in storage), which every node builds by applying
//! the log, so a restarted exchange actor has nothing to lose.

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;

use super::VHost;
use crate::error::BrokerError;
use crate::exchange::Binding;

/// Messages to an exchange actor: changes of the bindings it is the source of.
pub enum ExchangeMsg {
    Bind(Binding, oneshot::Sender<Result<(), BrokerError>>),
    Unbind(Binding, oneshot::Sender<Result<(), BrokerError>>),
    /// Fail on purpose (debug shell, tests).
    Crash,
}

impl ractor::Message for ExchangeMsg {}

pub struct ExchangeActor;

pub struct ExchangeArgs {
    pub vhost: VHost,
    pub name: String,
}

impl Actor for ExchangeActor {
    type Msg = ExchangeMsg;
    type State = ExchangeArgs;
    type Arguments = ExchangeArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: ExchangeArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            // The wait for the log runs beside the mailbox: deleting this exchange
            // (applied from the log) stops this actor, and must not wait for it.
            ExchangeMsg::Bind(b, reply) => {
                let vhost = state.vhost.clone();
                tokio::spawn(async move {
                    let _ = reply.send(vhost.propose_binding(b, true).await);
                });
            }
            ExchangeMsg::Unbind(b, reply) => {
                let vhost = state.vhost.clone();
                tokio::spawn(async move {
                    let _ = reply.send(vhost.propose_binding(b, false).await);
                });
            }
            ExchangeMsg::Crash => {
                return Err(format!("exchange {} crashed on request", state.name).into());
            }
        }
        Ok(())
    }
}
