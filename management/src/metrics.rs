//! Prometheus metrics on their own port: `/metrics` aggregated over the node,
//! `/metrics/per-object` per queue, connection and actor, with RabbitMQ's metric
//! names (so its Grafana dashboards work) and Warren's own (`warren_...`: actor
//! restarts, group commits, the metadata group's term and commit lag, replicated
//! queues' Raft state). Built with `prometheus-client` on each scrape from the
//! live counters; a scrape asks each queue for its counts once.

use std::sync::atomic::Ordering;

use axum::extract::State as Ctx;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use warren_supervisor::TreeSnapshot;

use crate::State;

/// Labels of a per-object series.
type Labels = Vec<(&'static str, String)>;

/// The metrics port's routes.
pub fn router(state: State) -> Router {
    Router::new()
        .route("/metrics", get(aggregated))
        .route("/metrics/per-object", get(per_object))
        .with_state(state)
}

/// `GET /metrics`.
async fn aggregated(Ctx(state): Ctx<State>) -> Response {
    cached(&state, false).await
}

/// `GET /metrics/per-object`.
async fn per_object(Ctx(state): Ctx<State>) -> Response {
    cached(&state, true).await
}

/// The last text of each endpoint (aggregated, per object) and when it was made.
#[derive(Default)]
pub struct Cache {
    texts: tokio::sync::Mutex<[Option<(std::time::Instant, bytes::Bytes)>; 2]>,
}

/// The endpoint's text, made again once older than the queue snapshot's
/// [`crate::snapshot::MAX_AGE`]: scrapes in between (several Prometheus servers, a
/// fast scrape interval) cost nothing; one at a time makes it.
async fn cached(state: &State, per_object: bool) -> Response {
    let mut texts = state.metrics.texts.lock().await;
    let slot = &mut texts[usize::from(per_object)];
    let text = match slot {
        Some((at, text)) if at.elapsed() < crate::snapshot::MAX_AGE => text.clone(),
        _ => match render(state, per_object).await {
            Ok(text) => {
                let text = bytes::Bytes::from(text);
                *slot = Some((std::time::Instant::now(), text.clone()));
                text
            }
            Err(e) => {
                return (
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot encode the metrics: {e}"),
                )
                    .into_response()
            }
        },
    };
    drop(texts);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    registry.register(name, help, ConstGauge::new(value as i64));
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    registry.register(name, help, ConstCounter::new(value));
}

/// Sums restarts over a supervision tree, and lists each actor's.
fn restarts(tree: &TreeSnapshot, out: &mut Vec<(String, u32)>) -> u64 {
    out.push((tree.name.clone(), tree.restarts));
    u64::from(tree.restarts) + tree.children.iter().map(|c| restarts(c, out)).sum::<u64>()
}

async fn render(state: &State, per_object: bool) -> Result<String, std::fmt::Error> {
    let snapshot = state.queues.get(&state.vhosts).await;
    let mut root = Registry::default();
    let node = state.node.name();
    let identity = Family::<Labels, Gauge>::default();
    identity
        .get_or_create(&vec![
            ("rabbitmq_node", node.clone()),
            ("rabbitmq_cluster", node.clone()),
        ])
        .set(1);
    root.register(
        "rabbitmq_identity_info",
        "Node and cluster the metrics come from",
        identity,
    );
    {
        let r = root.sub_registry_with_prefix("rabbitmq");
        let connections = state.connections.list();
        let channels: usize = connections.iter().map(|c| c.channels().len()).sum();
        let mut ready_total = 0;
        let mut unacked_total = 0;
        let mut consumers_total = 0;
        let mut queues_total = 0;
        let ready = Family::<Labels, Gauge>::default();
        let unacked = Family::<Labels, Gauge>::default();
        let messages = Family::<Labels, Gauge>::default();
        let consumers = Family::<Labels, Gauge>::default();
        let bytes = Family::<Labels, Gauge>::default();
        for (vhost, q) in &snapshot.queues {
            {
                queues_total += 1;
                ready_total += q.stats.ready;
                unacked_total += q.stats.unacked;
                consumers_total += q.stats.consumers;
                if per_object {
                    let labels = vec![("vhost", vhost.clone()), ("queue", q.name.clone())];
                    ready.get_or_create(&labels).set(q.stats.ready as i64);
                    unacked.get_or_create(&labels).set(q.stats.unacked as i64);
                    messages
                        .get_or_create(&labels)
                        .set((q.stats.ready + q.stats.unacked) as i64);
                    consumers
                        .get_or_create(&labels)
                        .set(q.stats.consumers as i64);
                    bytes.get_or_create(&labels).set(q.stats.bytes_total as i64);
                }
            }
        }
        if per_object {
            r.register(
                "queue_messages_ready",
                "Messages ready to be delivered to consumers",
                ready,
            );
            r.register(
                "queue_messages_unacked",
                "Messages delivered to consumers but not yet acknowledged",
                unacked,
            );
            r.register(
                "queue_messages",
                "Sum of ready and unacknowledged messages",
                messages,
            );
            r.register("queue_consumers", "Consumers on a queue", consumers);
            r.register(
                "queue_messages_bytes",
                "Size in bytes of ready and unacknowledged messages",
                bytes,
            );
        } else {
            gauge(
                r,
                "queue_messages_ready",
                "Messages ready to be delivered to consumers",
                ready_total,
            );
            gauge(
                r,
                "queue_messages_unacked",
                "Messages delivered to consumers but not yet acknowledged",
                unacked_total,
            );
            gauge(
                r,
                "queue_messages",
                "Sum of ready and unacknowledged messages",
                ready_total + unacked_total,
            );
        }
        gauge(r, "queues", "Queues available", queues_total);
        gauge(r, "consumers", "Consumers", consumers_total);
        gauge(
            r,
            "connections",
            "Connections currently open",
            connections.len() as u64,
        );
        gauge(r, "channels", "Channels currently open", channels as u64);
        let churn = state.connections.churn();
        counter(
            r,
            "connections_opened",
            "Total number of connections opened",
            churn.connections_opened,
        );
        counter(
            r,
            "connections_closed",
            "Total number of connections closed or terminated",
            churn.connections_closed,
        );
        counter(
            r,
            "channels_opened",
            "Total number of channels opened",
            churn.channels_opened,
        );
        counter(
            r,
            "channels_closed",
            "Total number of channels closed",
            churn.channels_closed,
        );
        let t = state.connections.totals();
        counter(
            r,
            "channel_messages_published",
            "Total number of messages published into an exchange on a channel",
            t.publish,
        );
        counter(
            r,
            "channel_messages_confirmed",
            "Total number of messages published into an exchange and confirmed on the channel",
            t.confirm,
        );
        counter(r, "channel_messages_unroutable_returned", "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable", t.return_unroutable);
        counter(
            r,
            "channel_messages_delivered_ack",
            "Total number of messages delivered to consumers in manual acknowledgement mode",
            t.deliver,
        );
        counter(
            r,
            "channel_messages_delivered",
            "Total number of messages delivered to consumers in automatic acknowledgement mode",
            t.deliver_no_ack,
        );
        counter(
            r,
            "channel_get_ack",
            "Total number of messages fetched with basic.get in manual acknowledgement mode",
            t.get,
        );
        counter(
            r,
            "channel_get",
            "Total number of messages fetched with basic.get in automatic acknowledgement mode",
            t.get_no_ack,
        );
        counter(
            r,
            "channel_messages_redelivered",
            "Total number of messages redelivered to consumers",
            t.redeliver,
        );
        counter(
            r,
            "channel_messages_acked",
            "Total number of messages acknowledged by consumers",
            t.ack,
        );
        let (bytes_in, bytes_out) = connections.iter().fold((0, 0), |(i, o), c| {
            (
                i + c.bytes_in.load(Ordering::Relaxed),
                o + c.bytes_out.load(Ordering::Relaxed),
            )
        });
        if per_object {
            let incoming = Family::<Labels, Counter>::default();
            let outgoing = Family::<Labels, Counter>::default();
            for c in &connections {
                let labels = vec![("channel", c.name.clone())];
                incoming
                    .get_or_create(&labels)
                    .inc_by(c.bytes_in.load(Ordering::Relaxed));
                outgoing
                    .get_or_create(&labels)
                    .inc_by(c.bytes_out.load(Ordering::Relaxed));
            }
            r.register(
                "connection_incoming_bytes",
                "Total number of bytes received on a connection",
                incoming,
            );
            r.register(
                "connection_outgoing_bytes",
                "Total number of bytes sent on a connection",
                outgoing,
            );
        } else {
            counter(
                r,
                "connection_incoming_bytes",
                "Total number of bytes received on a connection",
                bytes_in,
            );
            counter(
                r,
                "connection_outgoing_bytes",
                "Total number of bytes sent on a connection",
                bytes_out,
            );
        }
        let l = state.node.limits();
        gauge(
            r,
            "process_resident_memory_bytes",
            "Memory used in bytes",
            l.memory_used,
        );
        gauge(
            r,
            "resident_memory_limit_bytes",
            "Memory high watermark in bytes",
            l.memory_limit,
        );
        gauge(
            r,
            "disk_space_available_bytes",
            "Disk space available in bytes",
            l.disk_free,
        );
        gauge(
            r,
            "disk_space_available_limit_bytes",
            "Free disk space low watermark in bytes",
            l.disk_free_limit,
        );
        gauge(
            r,
            "alarms_memory_used_watermark",
            "Is 1 if VM memory watermark alarm is in effect",
            u64::from(l.memory_alarm),
        );
        gauge(
            r,
            "alarms_free_disk_space_watermark",
            "Is 1 if free disk space watermark alarm is in effect",
            u64::from(l.disk_alarm),
        );
    }
    {
        let w = root.sub_registry_with_prefix("warren");
        let mut actors = Vec::new();
        let total = match state.node.tree(None).await {
            Ok(tree) => restarts(&tree, &mut actors),
            Err(_) => 0,
        };
        if per_object {
            let family = Family::<Labels, Counter>::default();
            for (actor, n) in &actors {
                family
                    .get_or_create(&vec![("actor", actor.clone())])
                    .inc_by(u64::from(*n));
            }
            w.register(
                "actor_restarts",
                "Restarts of an actor by its supervisor",
                family,
            );
        } else {
            counter(
                w,
                "actor_restarts",
                "Restarts of actors by their supervisors",
                total,
            );
        }
        gauge(
            w,
            "actors",
            "Actors in this node's supervision tree",
            actors.len() as u64,
        );
        let s = state.node.store_stats();
        counter(
            w,
            "store_commits",
            "Write transactions committed by the group-commit writer",
            s.commits,
        );
        counter(
            w,
            "store_fsyncs",
            "Durable commits (each ends with an fsync)",
            s.fsyncs,
        );
        counter(
            w,
            "store_batches",
            "Batches written (batches per commit is the group size)",
            s.batches,
        );
        counter(
            w,
            "store_written_bytes",
            "Bytes of keys and values committed",
            s.bytes,
        );
        gauge(
            w,
            "store_largest_group",
            "The most batches that shared one commit",
            s.largest_group,
        );
        if let Ok(nodes) = state.node.nodes().await {
            let members = Family::<Labels, Gauge>::default();
            for n in &nodes {
                members
                    .get_or_create(&vec![
                        ("node", n.name.clone()),
                        ("health", n.health.clone()),
                    ])
                    .set(1);
            }
            w.register("cluster_members", "Cluster members by health", members);
            if let Some(me) = nodes.iter().find(|n| n.this_node) {
                gauge(
                    w,
                    "metadata_term",
                    "The metadata group's Raft term",
                    me.term,
                );
                if let Some(log) = &me.metadata_log {
                    gauge(
                        w,
                        "metadata_commit_lag",
                        "Metadata entries committed but not yet applied on this node",
                        log.committed.saturating_sub(log.applied),
                    );
                }
            }
        }
        if per_object {
            let term = Family::<Labels, Gauge>::default();
            let lag = Family::<Labels, Gauge>::default();
            for (vhost, q) in &snapshot.queues {
                {
                    let Some(r) = &q.replication else { continue };
                    let labels = vec![("vhost", vhost.clone()), ("queue", q.name.clone())];
                    term.get_or_create(&labels).set(r.term as i64);
                    for m in &r.members {
                        let mut labels = labels.clone();
                        labels.push(("member", m.node.clone()));
                        lag.get_or_create(&labels)
                            .set(r.committed.saturating_sub(m.matched) as i64);
                    }
                }
            }
            w.register("queue_raft_term", "A replicated queue's Raft term", term);
            w.register(
                "queue_raft_commit_lag",
                "Entries a replicated queue's member is behind its leader's commit",
                lag,
            );
        }
    }
    let mut text = String::with_capacity(64 << 10);
    encode(&mut text, &root)?;
    Ok(text)
}
