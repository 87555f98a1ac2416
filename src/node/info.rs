//! Listings of the broker as the client protocol carries them.

use warren_actors::exchange::{Binding, Destination, ExchangeDef};
use warren_actors::vhost::QueueSummary;
use warren_cluster::protocol::{BindTarget, BindingInfo, ExchangeInfo, QueueInfo};

pub(crate) fn queue_info(q: QueueSummary) -> QueueInfo {
    QueueInfo {
        name: q.name,
        durable: q.durable,
        exclusive: q.exclusive,
        auto_delete: q.auto_delete,
        messages: q.stats.ready + q.stats.unacked,
        ready: q.stats.ready,
        unacked: q.stats.unacked,
        consumers: q.stats.consumers as u32,
        bytes_in_memory: q.stats.bytes_in_memory,
        arguments: q.arguments,
        node: q.node,
        members: q.members,
        replication: q.replication,
    }
}

pub(crate) fn exchange_info(x: ExchangeDef) -> ExchangeInfo {
    ExchangeInfo {
        name: x.name,
        kind: x.kind.as_str().to_string(),
        durable: x.durable,
        auto_delete: x.auto_delete,
        internal: x.internal,
        arguments: x.arguments,
    }
}

pub(crate) fn binding_info(b: Binding) -> BindingInfo {
    BindingInfo {
        source: b.source,
        target: match b.destination {
            Destination::Queue(q) => BindTarget::Queue(q),
            Destination::Exchange(x) => BindTarget::Exchange(x),
        },
        routing_key: b.routing_key,
        arguments: b.arguments,
    }
}
