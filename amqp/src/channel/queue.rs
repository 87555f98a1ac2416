//! The queue class: queue.declare, bind, unbind, purge and delete, and the queue an
//! empty name means (the one last declared on the channel).

use amq_protocol::protocol::{queue, AMQPClass};
use warren_access::{Access, Resource};
use warren_actors::delivery::ChannelId;
use warren_actors::exchange::Destination;
use warren_actors::vhost::VHost;

use super::{unexpected_method, AmqpChannel, Outcome};
use crate::convert::{short, table_from_wire};
use crate::error::AmqpError;

impl AmqpChannel {
    /// One method of the queue class.
    pub(super) async fn queue(
        &mut self,
        m: queue::AMQPMethod,
        vhost: &VHost,
        conn: ChannelId,
    ) -> Result<Outcome, AmqpError> {
        match m {
            queue::AMQPMethod::Declare(d) => {
                // A server-named queue is checked as "amq.gen-" (its name is made up
                // after the check): a pattern like `amq\.gen-.*` allows them.
                if !d.passive {
                    let name = match d.queue.as_str() {
                        "" => "amq.gen-",
                        named => named,
                    };
                    self.allow(Access::Configure, Resource::Queue(name))?;
                }
                let declared = vhost
                    .declare_queue(
                        d.queue.as_str(),
                        d.durable,
                        d.exclusive.then_some(conn),
                        d.auto_delete,
                        d.passive,
                        table_from_wire(&d.arguments),
                        conn,
                    )
                    .await?;
                self.last_queue = Some(declared.name.clone());
                Ok(self.answer(
                    d.nowait,
                    AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                        queue: short(&declared.name),
                        message_count: u32::try_from(declared.messages).unwrap_or(u32::MAX),
                        consumer_count: declared.consumers,
                    })),
                ))
            }
            queue::AMQPMethod::Bind(b) => {
                let queue = self.queue_name(b.queue.as_str())?;
                // Both empty: the last declared queue, and its name as the key.
                let routing_key =
                    if b.queue.as_str().is_empty() && b.routing_key.as_str().is_empty() {
                        short(&queue)
                    } else {
                        b.routing_key
                    };
                let destination = Destination::Queue(queue);
                let binding =
                    self.binding(b.exchange.as_str(), destination, &routing_key, &b.arguments)?;
                vhost.bind(binding, conn).await?;
                Ok(self.answer(
                    b.nowait,
                    AMQPClass::Queue(queue::AMQPMethod::BindOk(queue::BindOk {})),
                ))
            }
            queue::AMQPMethod::Unbind(b) => {
                let destination = Destination::Queue(self.queue_name(b.queue.as_str())?);
                let binding = self.binding(
                    b.exchange.as_str(),
                    destination,
                    &b.routing_key,
                    &b.arguments,
                )?;
                vhost.unbind(binding, conn).await?;
                Ok(self.reply(AMQPClass::Queue(queue::AMQPMethod::UnbindOk(
                    queue::UnbindOk {},
                ))))
            }
            queue::AMQPMethod::Purge(p) => {
                let queue = self.queue_name(p.queue.as_str())?;
                self.allow(Access::Read, Resource::Queue(&queue))?;
                let n = vhost.purge_queue(&queue, conn).await?;
                Ok(self.answer(
                    p.nowait,
                    AMQPClass::Queue(queue::AMQPMethod::PurgeOk(queue::PurgeOk {
                        message_count: u32::try_from(n).unwrap_or(u32::MAX),
                    })),
                ))
            }
            queue::AMQPMethod::Delete(d) => {
                let queue = self.queue_name(d.queue.as_str())?;
                self.allow(Access::Configure, Resource::Queue(&queue))?;
                let n = vhost
                    .delete_queue(&queue, d.if_unused, d.if_empty, conn)
                    .await?;
                Ok(self.answer(
                    d.nowait,
                    AMQPClass::Queue(queue::AMQPMethod::DeleteOk(queue::DeleteOk {
                        message_count: u32::try_from(n).unwrap_or(u32::MAX),
                    })),
                ))
            }
            other => Err(unexpected_method(AMQPClass::Queue(other))),
        }
    }
    /// A queue name from a method: empty means the queue last declared on this channel.
    pub(super) fn queue_name(&self, name: &str) -> Result<String, AmqpError> {
        if !name.is_empty() {
            return Ok(name.to_string());
        }
        self.last_queue.clone().ok_or(AmqpError::NoPreviousQueue)
    }
}
