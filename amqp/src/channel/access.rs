//! What this channel's user may do: RabbitMQ's permission checks before a method
//! acts (configure, write, read on exchanges and queues in the channel's vhost).

use amq_protocol::types::{FieldTable as WireTable, ShortString};
use warren_access::{Access, Resource};
use warren_actors::exchange::{Binding, Destination};

use super::AmqpChannel;
use crate::convert::table_from_wire;
use crate::error::AmqpError;

impl AmqpChannel {
    /// 403 unless this channel's user has `access` to `resource` in its vhost.
    pub(super) fn allow(&self, access: Access, resource: Resource<'_>) -> Result<(), AmqpError> {
        let vhost = self.core.vhost().name().to_string();
        // (The default exchange is checked as "amq.default", as in RabbitMQ.)
        self.access
            .check(&self.user, &vhost, access, resource)
            .map_err(AmqpError::from)
    }

    /// Write access to the exchange of a publish, checked once per exchange for as
    /// long as no user or permission changes (a publish is checked against the
    /// permissions in force when it arrives, as in RabbitMQ, which caches too).
    pub(super) fn allow_publish(&mut self, exchange: &str) -> Result<(), AmqpError> {
        let generation = self.access.generation();
        if let Some((cached, at)) = &self.publish_allowed {
            if *at == generation && cached == exchange {
                return Ok(());
            }
        }
        self.allow(Access::Write, Resource::Exchange(exchange))?;
        self.publish_allowed = Some((exchange.to_string(), generation));
        Ok(())
    }

    /// The binding of a bind or unbind, after RabbitMQ's checks: write access to the
    /// destination, read access to the source exchange.
    pub(super) fn binding(
        &self,
        source: &str,
        destination: Destination,
        routing_key: &ShortString,
        arguments: &WireTable,
    ) -> Result<Binding, AmqpError> {
        let target = match &destination {
            Destination::Queue(q) => Resource::Queue(q),
            Destination::Exchange(x) => Resource::Exchange(x),
        };
        self.allow(Access::Write, target)?;
        self.allow(Access::Read, Resource::Exchange(source))?;
        Ok(Binding {
            source: source.to_string(),
            destination,
            routing_key: routing_key.as_str().to_string(),
            arguments: table_from_wire(arguments),
        })
    }
}
