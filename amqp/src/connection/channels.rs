//! The channels of a connection: channel.open (a new [`AmqpChannel`]) and close-ok,
//! a channel's methods and content frames handed to it, and the publishes it
//! completed routed before a method that must follow them.

use std::sync::Arc;

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{basic, channel, AMQPClass};
use tokio::sync::mpsc::UnboundedSender;
use warren_actors::delivery::{ChannelId, ChannelSink, QueueEvent};

use super::{Connection, Event};
use crate::channel::{AmqpChannel, ConnectionPart, Outcome};
use crate::error::AmqpError;

/// Most publishes of one channel routed together (one read can hold hundreds).
const ROUTE_BATCH: usize = 32;

impl Connection {
    /// Channel `n`, which must be open (504 otherwise).
    pub(super) fn open_channel(&mut self, n: u16) -> Result<&mut AmqpChannel, AmqpError> {
        self.channels
            .get_mut(&n)
            .ok_or(AmqpError::ChannelNotOpen { channel: n })
    }

    /// A method on channel `n`: channel.open and close-ok here, the others by the
    /// channel. A channel error closes the channel; other errors are returned.
    pub(super) async fn channel_method(
        &mut self,
        n: u16,
        m: AMQPClass,
        events: &UnboundedSender<Event>,
    ) -> Result<(), AmqpError> {
        if let AMQPClass::Channel(channel::AMQPMethod::Open(_)) = &m {
            if self.channels.contains_key(&n) {
                return Err(AmqpError::SecondChannelOpen { channel: n });
            }
            if n > self.channel_max {
                return Err(AmqpError::ChannelAboveMax {
                    channel: n,
                    channel_max: self.channel_max,
                });
            }
            let tx = events.clone();
            let sink_for = move |id: ChannelId| -> ChannelSink {
                Arc::new(move |event: QueueEvent| {
                    let _ = tx.send(Event::Queue(n, id, event));
                })
            };
            let part = ConnectionPart {
                vhost: self.vhost.clone(),
                connection: self.id,
                frame_max: self.frame_max,
                user: self.user.as_str().into(),
                access: self.server.access.clone(),
                in_flight: self.in_flight.clone(),
            };
            let mut ch = AmqpChannel::new(n, part, sink_for);
            ch.stats = self
                .registration
                .as_ref()
                .map(|r| r.open_channel(n, ch.id()));
            self.channels.insert(n, ch);
            self.send(&AMQPFrame::Method(
                n,
                AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
            ));
            return Ok(());
        }
        if let AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) = &m {
            // We closed it: now it is gone.
            self.forget_channel(n);
            return Ok(());
        }
        let ch = self.open_channel(n)?;
        if ch.expects_content() {
            return Err(AmqpError::MethodInsteadOfContent { channel: n });
        }
        // Publishes completed before this method go out first (order on a channel). A
        // run of publishes is routed as one batch (one mailbox message per queue, one
        // outcome task), capped so the first of a long read is not held up by the rest.
        let publish = matches!(&m, AMQPClass::Basic(basic::AMQPMethod::Publish(_)));
        if !publish || ch.ready_len() >= ROUTE_BATCH {
            self.route_ready(events).await;
        }
        let Some(ch) = self.channels.get_mut(&n) else {
            return Ok(());
        };
        match ch.method(m).await {
            Ok(Outcome::Send(bytes)) => self.out.extend_from_slice(&bytes),
            Ok(Outcome::Closed) => {
                self.forget_channel(n);
                self.send_channel_close_ok(n);
            }
            Err(e) if !e.closes_connection() => self.channel_error(n, &e),
            Err(e) => return Err(e),
        }
        Ok(())
    }
}
