//! The exchange actor: one per exchange, under the vhost's `exchanges:<vhost>`
//! supervisor.
//!
//! Binding changes of an exchange made through this node pass through its actor, which
//! checks them one at a time against the routing snapshot and answers at once with the
//! change to propose; the caller proposes it to the metadata log, which orders them (the
//! wait for the log is the caller's, so the actor neither blocks nor spawns a task per
//! bind). Its routing state lives in the vhost's snapshot (and in storage), which every
//! node builds by applying the log, so a restarted exchange actor has nothing to lose.
//!
//! The actor of an `x-delayed-message` exchange also holds the delayed messages
//! published through this node ([`super::delayed`]); they are in the store, so a
//! restarted actor reads them back.

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;

use super::delayed::{Delay, Held, Stored};
use super::VHost;
use crate::changes::VhostChange;
use crate::error::BrokerError;
use crate::exchange::delay_schedule::Key;
use crate::exchange::Binding;
use crate::exchange::ExchangeKind;

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
    /// Hold delayed messages (a delayed exchange; refused by any other).
    Delay(Delay),
    /// Delayed messages reached the store.
    Stored(Vec<Stored>),
    /// Delayed messages did not reach the store.
    NotStored(Vec<Key>),
    /// Time to route the delayed messages that are due.
    Wake,
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

/// `Some(durable)` when the actor's exchange is a delayed one (in the current
/// routing snapshot).
fn delayed(args: &ExchangeArgs) -> Option<bool> {
    args.vhost
        .topology()
        .exchange(&args.name)
        .filter(|def| def.kind == ExchangeKind::DelayedMessage)
        .map(|def| def.durable)
}

/// An exchange actor's state: what it started with, and for a delayed exchange the
/// messages it holds.
pub struct ExchangeState {
    args: ExchangeArgs,
    held: Option<Held>,
}

impl Actor for ExchangeActor {
    type Msg = ExchangeMsg;
    type State = ExchangeState;
    type Arguments = ExchangeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ExchangeArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // A new exchange's actor starts before the exchange is routable: it takes up
        // its delayed messages when the first come (see `Delay` below).
        let held = match delayed(&args) {
            Some(durable) => Some(Held::load(&args.vhost, &args.name, durable).await),
            None => None,
        };
        let mut state = ExchangeState { args, held };
        if let Some(held) = &mut state.held {
            held.act(&myself);
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(held) = &mut state.held {
            held.stop();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let vhost = &state.args.vhost;
        match message {
            ExchangeMsg::Bind(b, reply) => {
                let _ = reply.send(vhost.check_binding(b, true));
            }
            ExchangeMsg::Unbind(b, reply) => {
                let _ = reply.send(vhost.check_binding(b, false));
            }
            ExchangeMsg::Delay(delay) => match &mut state.held {
                Some(held) => held.hold(&myself, delay),
                None if delayed(&state.args).is_some() => {
                    let durable = delayed(&state.args).unwrap_or_default();
                    let mut held = Held::load(vhost, &state.args.name, durable).await;
                    held.hold(&myself, delay);
                    held.act(&myself);
                    state.held = Some(held);
                }
                None => {
                    if let Some(reply) = delay.reply {
                        let why =
                            format!("exchange '{}' holds no delayed messages", state.args.name);
                        let _ = reply.send(vec![
                            crate::queue::EnqueueOutcome::Rejected(why);
                            delay.messages.len()
                        ]);
                    }
                }
            },
            ExchangeMsg::Stored(stored) => {
                if let Some(held) = &mut state.held {
                    held.stored(&myself, stored);
                }
            }
            ExchangeMsg::NotStored(keys) => {
                if let Some(held) = &mut state.held {
                    held.not_stored(&myself, keys);
                }
            }
            ExchangeMsg::Wake => {
                if let Some(held) = &mut state.held {
                    held.wake(&myself);
                }
            }
            ExchangeMsg::Crash => {
                return Err(format!("exchange {} crashed on request", state.args.name).into());
            }
        }
        Ok(())
    }
}
