//! warren-amqp: the AMQP 0-9-1 front door, so that any RabbitMQ client library works
//! against a Warren node.
//!
//! | file | concern |
//! | --- | --- |
//! | `listener.rs` | the listener and its acceptor in the supervision tree |
//! | `tasks.rs` | the connections as tasks, by their names in the tree ([`ConnectionTasks`]) |
//! | `connection/mod.rs` | one connection: [`Server`], the limits, its state, the frame loop, heartbeats, the writer task |
//! | `connection/handshake.rs` | the connection class's opening: protocol header, start / start-ok, tune, open |
//! | `connection/channels.rs` | channel.open and close-ok; a channel's methods and content frames handed to it |
//! | `connection/published.rs` | routing completed publishes; their outcomes: basic.return, confirm acks and nacks |
//! | `connection/flow.rs` | when the socket is read: credit flow, resource alarms (`connection.blocked`) |
//! | `connection/close.rs` | `connection.close` either way, a channel closed for an error, the end of a connection |
//! | `channel/mod.rs` | one channel: its state, the dispatch of its methods, the channel class (flow, close) |
//! | `channel/access.rs` | the permission checks of a channel's methods |
//! | `channel/exchange.rs` | the exchange class: declare, delete, bind, unbind |
//! | `channel/queue.rs` | the queue class: declare, bind, unbind, purge, delete; the last declared queue |
//! | `channel/basic.rs` | the basic class: publish and its content, qos, consume, cancel, get, ack / nack / reject, recover, deliveries |
//! | `channel/confirm.rs` | the confirm class: publisher-confirm mode |
//! | `channel/tx.rs` | the tx class: select, commit, rollback |
//! | `prefetch.rs` | `basic.qos global=true`: the channel-wide prefetch and what it holds |
//! | `registry.rs` | [`Connections`](registry::Connections): the open connections, channels and consumers with their counters (for the management API and metrics) |
//! | `auth.rs` | PLAIN and AMQPLAIN; the default `guest` user (loopback only) |
//! | `coalesce.rs` | reading a busy connection in larger pieces (adaptive `SO_RCVLOWAT`) |
//! | `codec.rs` | frames on the wire: size and frame-end checks, `amq-protocol` parsing |
//! | `convert.rs` | field tables and properties between the wire and the broker |
//! | `error.rs` | [`AmqpError`](error::AmqpError): what the front door refuses, with RabbitMQ's reply codes and texts |
//! | `fuzz.rs` | (tests) bad input against the frame reader and against whole connections |
//!
//! Dependencies point down the table: `listener` uses `connection`, which uses
//! `channel`, `auth` and `coalesce`; `channel` uses `prefetch`; `codec`, `convert` and
//! `error` are used by those above and use none of them (`codec` and `auth` only
//! `error`). Inside `connection/` and `channel/`, `mod.rs` holds the state and
//! dispatches to the other files, which are `impl` blocks of that state and call each
//! other one way only: `connection/channels.rs` calls `published.rs` and `close.rs`,
//! `published.rs` calls `close.rs`; `channel/basic.rs` calls `queue.rs` and
//! `access.rs`, `exchange.rs` and `queue.rs` call `access.rs`, `tx.rs` calls `basic.rs`.
//!
//! Messages from AMQP and from the client handle meet in the same queues: a channel
//! is a [`warren_actors::channel::ChannelState`], as a client-handle session is.

#![deny(missing_docs)]

mod auth;
mod channel;
mod coalesce;
mod codec;
mod connection;
mod convert;
pub mod error;
mod listener;
mod prefetch;
pub mod registry;
mod socket;
mod tasks;
mod tls;

#[cfg(test)]
mod fuzz;

pub use connection::{Server, CHANNEL_MAX, FRAME_MAX, HEARTBEAT_SECS};
pub use listener::{Listener, CLOSE_GRACE, SUPERVISOR, TLS_SUPERVISOR};
pub use tasks::ConnectionTasks;
pub use tls::TlsSettings;
