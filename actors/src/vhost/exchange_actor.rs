//! The exchange actor: one per exchange, under the vhost's `exchanges:<vhost>`
//! supervisor.
//!
//! Binding changes of an exchange made through this node pass through its actor, which
//! checks them one at a time against the routing snapshot and answers at once with the
//! change to propose; the caller proposes it to the metadata log, which orders them (the
//! wait for the log is the caller's, so the actor neither blocks nor spawns a task per
//! bind). Its routing state lives in the vhost's snapshot (and in storage), which every
//! node builds by applying the log, so a restarted exchange actor has nothing to lose.

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;

use super::VHost;
use crate::changes::VhostChange;
use crate::error::BrokerError;
use crate::exchange::Binding;

/// The answer to a binding change: what to propose, or nothing to do.
pub type BindingCheck = oneshot::Sender<Result<Option<VhostChange>, BrokerError>>;

/// Messages to an exchange actor: changes of the bindings it is the source of.
pub enum ExchangeMsg {
    /// Check a new binding from this exchange; answers the change to propose, or
    /// `None` when it is already bound.
    Bind(Binding, BindingCheck),
    /// Check the removal of a binding from this exchange; answers the change to
    /// propose, or `None` when it is not bound.
    Unbind(Binding, BindingCheck),
    /// Fail on purpose (debug shell, tests).
    Crash,
}

impl ractor::Message for ExchangeMsg {}

/// The actor of one exchange (see the module documentation).
pub struct ExchangeActor;

/// What an exchange actor starts with, and keeps as its state.
pub struct ExchangeArgs {
    /// The vhost whose routing snapshot it checks binding changes against.
    pub vhost: VHost,
    /// The exchange's name (`""` for the default exchange).
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
            ExchangeMsg::Bind(b, reply) => {
                let _ = reply.send(state.vhost.check_binding(b, true));
            }
            ExchangeMsg::Unbind(b, reply) => {
                let _ = reply.send(state.vhost.check_binding(b, false));
            }
            ExchangeMsg::Crash => {
                return Err(format!("exchange {} crashed on request", state.name).into());
            }
        }
        Ok(())
    }
}
