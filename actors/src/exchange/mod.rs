//! Exchanges: routing logic and the exchange actor.
