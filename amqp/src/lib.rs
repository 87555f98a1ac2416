//! warren-amqp: the AMQP 0-9-1 front door, so that any RabbitMQ client library works
//! against a Warren node.
//!
//! | file | concern |
//! | --- | --- |
//! | `codec.rs` | frames on the wire: size and frame-end checks, `amq-protocol` parsing |
//! | `convert.rs` | field tables and properties between the wire and the broker |
//! | `error.rs` | [`AmqpError`](error::AmqpError): what the front door refuses, with RabbitMQ's reply codes and texts |
//! | `auth.rs` | PLAIN and AMQPLAIN; the default `guest` user (loopback only) |
//! | `coalesce.rs` | reading a busy connection in larger pieces (adaptive `SO_RCVLOWAT`) |
//! | `connection/mod.rs` | one connection: its state, the frame loop, heartbeats, the writer task |
//! | `connection/handshake.rs` | the connection class's opening: protocol header, start, tune, open |
//! | `connection/channels.rs` | channel.open and close-ok; frames handed to their channel |
//! | `connection/published.rs` | publish outcomes: basic.return, confirm acks and nacks |
//! | `connection/flow.rs` | when the socket is read: credit flow, `connection.blocked` |
//! | `connection/close.rs` | `connection.close` either way, channels closed for an error |
//! | `channel/mod.rs` | one channel: its state, the dispatch of its methods, the channel class (flow, close) |
//! | `channel/access.rs` | the permission checks of a channel's methods |
//! | `channel/exchange.rs` | the exchange class: declare, delete, bind, unbind |
//! | `channel/queue.rs` | the queue class: declare, bind, unbind, purge, delete; the last declared queue |
//! | `channel/basic.rs` | the basic class: publish and content assembly, qos, consume, cancel, get, settlements, recover, deliveries |
//! | `channel/confirm.rs` | the confirm class: publisher-confirm mode |
//! | `channel/tx.rs` | the tx class: select, commit, rollback |
//! | `prefetch.rs` | `basic.qos global=true`: the channel-wide prefetch and what it holds |
//! | `listener.rs` | the listener and connections as supervised actors |
//!
//! Messages from AMQP and from the client handle meet in the same queues: a channel
//! is a [`warren_actors::channel::ChannelState`], as a client-handle session is.

mod auth;
mod channel;
mod coalesce;
mod codec;
mod connection;
mod convert;
pub mod error;
mod listener;
mod prefetch;

pub use connection::{Server, CHANNEL_MAX, FRAME_MAX, HEARTBEAT_SECS};
pub use listener::{Listener, SUPERVISOR};
