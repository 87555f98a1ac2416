//! The exchange class: exchange.declare, delete, bind and unbind.

use amq_protocol::protocol::{exchange, AMQPClass};
use warren_access::{Access, Resource};
use warren_actors::delivery::ChannelId;
use warren_actors::exchange::{Destination, DEFAULT_EXCHANGE, RESERVED_PREFIX};
use warren_actors::vhost::VHost;

use super::{unexpected_method, AmqpChannel, Outcome};
use crate::convert::table_from_wire;
use crate::error::AmqpError;

impl AmqpChannel {
    /// One method of the exchange class.
    pub(super) async fn exchange(
        &mut self,
        m: exchange::AMQPMethod,
        vhost: &VHost,
        conn: ChannelId,
    ) -> Result<Outcome, AmqpError> {
        match m {
            exchange::AMQPMethod::Declare(d) => {
                if !d.passive {
                    self.allow(Access::Configure, Resource::Exchange(d.exchange.as_str()))?;
                }
                vhost
                    .declare_exchange(
                        d.exchange.as_str(),
                        d.kind.as_str(),
                        d.durable,
                        d.auto_delete,
                        d.internal,
                        d.passive,
                        table_from_wire(&d.arguments),
                    )
                    .await?;
                Ok(self.answer(
                    d.nowait,
                    AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {})),
                ))
            }
            exchange::AMQPMethod::Delete(d) => {
                let name = d.exchange.as_str();
                // Configure access, as RabbitMQ, checked after its refusal of the
                // default and `amq.*` exchanges (which the vhost makes) and before
                // anything else: deleting a missing exchange is refused too.
                if name != DEFAULT_EXCHANGE && !name.starts_with(RESERVED_PREFIX) {
                    self.allow(Access::Configure, Resource::Exchange(name))?;
                }
                vhost.delete_exchange(name, d.if_unused).await?;
                Ok(self.answer(
                    d.nowait,
                    AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})),
                ))
            }
            exchange::AMQPMethod::Bind(b) => {
                let destination = Destination::Exchange(b.destination.as_str().to_string());
                let binding =
                    self.binding(b.source.as_str(), destination, &b.routing_key, &b.arguments)?;
                vhost.bind(binding, conn).await?;
                Ok(self.answer(
                    b.nowait,
                    AMQPClass::Exchange(exchange::AMQPMethod::BindOk(exchange::BindOk {})),
                ))
            }
            exchange::AMQPMethod::Unbind(b) => {
                let destination = Destination::Exchange(b.destination.as_str().to_string());
                let binding =
                    self.binding(b.source.as_str(), destination, &b.routing_key, &b.arguments)?;
                vhost.unbind(binding, conn).await?;
                Ok(self.answer(
                    b.nowait,
                    AMQPClass::Exchange(exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {})),
                ))
            }
            other => Err(unexpected_method(AMQPClass::Exchange(other))),
        }
    }
}
