//! Publish outcomes: routing the publishes each channel completed (their bytes count
//! against the connection's credit until their queues answer, see `InFlight`), then
//! what the client
//! is told of them: basic.return for an unroutable mandatory message, confirm acks
//! and nacks, and the channel's close for a publish that failed.

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{basic, AMQPClass};
use tokio::sync::mpsc::UnboundedSender;
use warren_actors::channel::PublishOutcome;
use warren_actors::delivery::ChannelId;
use warren_actors::message::Message;

use super::{channel_of, Connection, Event};
use crate::codec::write_frame;
use crate::error::AmqpError;

impl Connection {
    /// Routes what each channel completed; outcomes come back as events.
    pub(super) async fn route_ready(&mut self, events: &UnboundedSender<Event>) {
        for (&n, ch) in self.channels.iter_mut() {
            let Some(routed) = ch.route_ready().await else {
                continue;
            };
            self.published = true;
            // Nobody needs the outcomes: nothing waits for the queues (their credit
            // comes back by itself).
            let Some((routed, meta)) = routed else {
                continue;
            };
            let confirming = ch.confirm_mode();
            let id = ch.id();
            let tx = events.clone();
            tokio::spawn(async move {
                let outcomes = routed.await;
                // Without confirms and returns there is nothing to tell the client,
                // except a failed publish (it closes the channel).
                let needed = confirming
                    || outcomes.iter().any(|o| {
                        !matches!(o, PublishOutcome::Confirmed | PublishOutcome::Rejected(_))
                    });
                if needed {
                    let results = meta
                        .into_iter()
                        .zip(outcomes)
                        .map(|((seq, message), outcome)| (seq, message, outcome))
                        .collect();
                    let _ = tx.send(Event::Published(n, id, results));
                }
            });
        }
    }

    /// Returns unroutable mandatory messages, then acks or nacks confirms, on channel
    /// `n` if it is still the channel `id` that published them.
    pub(super) fn published(
        &mut self,
        n: u16,
        id: ChannelId,
        results: Vec<(Option<u64>, Option<Message>, PublishOutcome)>,
    ) {
        let Some(ch) = channel_of(&mut self.channels, n, id) else {
            return;
        };
        let out = &mut self.out;
        let mut failed = None;
        for (seq, message, outcome) in results {
            match &outcome {
                PublishOutcome::Unroutable => {
                    if let Some(m) = &message {
                        ch.write_return(m, out);
                    }
                }
                PublishOutcome::Failed(e) => {
                    failed.get_or_insert_with(|| e.clone());
                }
                _ => {}
            }
            if let Some(seq) = seq {
                ch.outstanding.remove(&seq);
                // A publish that failed (no such exchange) gets neither ack nor nack:
                // the channel closes, which fails it at the client, as in RabbitMQ.
                if matches!(outcome, PublishOutcome::Failed(_)) {
                    continue;
                }
                let ack = !matches!(outcome, PublishOutcome::Rejected(_));
                if ack {
                    ch.count_confirmed();
                }
                ch.settled.insert(seq, ack);
            }
        }
        // Confirms go out in tag order, as RabbitMQ's: those below the lowest tag
        // still unconfirmed, a run of acks as one `multiple` ack (everything lower is
        // settled and sent by then), a nack alone. Outcomes of different batches may
        // come back in any order; the client never sees a tag go backwards.
        let low = ch.outstanding.first().copied().unwrap_or(u64::MAX);
        let mut run: Option<(u64, u64)> = None; // (first, last) of a run of acks
        let ack_run = |run: (u64, u64), out: &mut Vec<u8>| {
            let ack = basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: run.1,
                multiple: run.1 > run.0,
            });
            write_frame(&AMQPFrame::Method(n, AMQPClass::Basic(ack)), out);
        };
        while let Some(entry) = ch.settled.first_entry() {
            if *entry.key() >= low {
                break;
            }
            let (seq, ack) = entry.remove_entry();
            if ack {
                // A run is contiguous: a gap (a publish that failed, which gets no
                // confirm) ends it, so a multiple ack never covers it.
                if let Some(r) = run.filter(|r| r.1 + 1 != seq) {
                    ack_run(r, out);
                    run = None;
                }
                run = Some(run.map_or((seq, seq), |(first, _)| (first, seq)));
                continue;
            }
            if let Some(r) = run.take() {
                ack_run(r, out);
            }
            let nack = basic::AMQPMethod::Nack(basic::Nack {
                delivery_tag: seq,
                multiple: false,
                requeue: false,
            });
            write_frame(&AMQPFrame::Method(n, AMQPClass::Basic(nack)), out);
        }
        if let Some(r) = run {
            ack_run(r, out);
        }
        if let Some(e) = failed {
            // As RabbitMQ: publishing to a missing exchange closes the channel (404).
            self.channel_error(n, &AmqpError::PublishFailed(e).at(60, 40));
        }
    }
}
