//! Dead-lettering a message: the `x-death` history and `x-first-death-*` /
//! `x-last-death-*` headers in RabbitMQ's format, and the cycle check.
//!
//! `x-death` is an array of tables, most recent first, one per (queue, reason):
//! `count` (long), `reason`, `queue`, `time` (timestamp, seconds), `exchange`,
//! `routing-keys` (array) and, when the message had one, `original-expiration`.
//! Dying again in the same queue for the same reason increments that entry's count
//! and moves it to the front, keeping its other fields (RabbitMQ 3.x behaviour). The
//! dead-lettered message loses its `expiration` (so it does not expire again in the
//! dead-letter queue by its old TTL) and is re-addressed to the dead-letter exchange
//! and routing key, as consumers of the dead-letter queue see it.

use std::sync::Arc;

use crate::message::{FieldTable, FieldValue, Message, SharedMessage};

use super::effects::DeadLetterReason;

const X_DEATH: &str = "x-death";

/// The message as it is republished to the dead-letter exchange.
pub fn dead_lettered(
    message: &Message,
    reason: DeadLetterReason,
    queue: &str,
    now_ms: u64,
    exchange: &str,
    routing_key: &str,
) -> SharedMessage {
    let mut out = message.clone();
    let mut headers = out.properties.headers.take().unwrap_or_default();

    let mut routing_keys = vec![FieldValue::string(message.routing_key.clone())];
    if let Some(FieldValue::Array(cc)) = headers.get("CC") {
        routing_keys.extend(cc.iter().filter(|v| v.as_str().is_some()).cloned());
    }
    let mut death = FieldTable::new();
    death.insert("count".into(), FieldValue::I64(1));
    death.insert("reason".into(), FieldValue::string(reason.as_str()));
    death.insert("queue".into(), FieldValue::string(queue));
    death.insert("time".into(), FieldValue::Timestamp(now_ms / 1000));
    death.insert(
        "exchange".into(),
        FieldValue::string(message.exchange.clone()),
    );
    death.insert("routing-keys".into(), FieldValue::Array(routing_keys));
    if let Some(expiration) = &message.properties.expiration {
        death.insert(
            "original-expiration".into(),
            FieldValue::string(expiration.clone()),
        );
    }

    let mut deaths = match headers.remove(X_DEATH) {
        Some(FieldValue::Array(deaths)) => deaths,
        _ => Vec::new(),
    };
    let earlier = deaths
        .iter()
        .position(|d| is_death_of(d, queue, reason.as_str()));
    let entry = match earlier {
        Some(i) => {
            let mut table = match deaths.remove(i) {
                FieldValue::Table(t) => t,
                _ => death,
            };
            let count = table.get("count").and_then(FieldValue::as_i64).unwrap_or(0);
            table.insert("count".into(), FieldValue::I64(count.saturating_add(1)));
            table
        }
        None => death,
    };
    deaths.insert(0, FieldValue::Table(entry));
    headers.insert(X_DEATH.into(), FieldValue::Array(deaths));

    if !headers.contains_key("x-first-death-reason") {
        headers.insert(
            "x-first-death-reason".into(),
            FieldValue::string(reason.as_str()),
        );
        headers.insert("x-first-death-queue".into(), FieldValue::string(queue));
        headers.insert(
            "x-first-death-exchange".into(),
            FieldValue::string(message.exchange.clone()),
        );
    }
    headers.insert(
        "x-last-death-reason".into(),
        FieldValue::string(reason.as_str()),
    );
    headers.insert("x-last-death-queue".into(), FieldValue::string(queue));
    headers.insert(
        "x-last-death-exchange".into(),
        FieldValue::string(message.exchange.clone()),
    );

    out.properties.headers = Some(headers);
    out.properties.expiration = None;
    out.exchange = exchange.to_owned();
    out.routing_key = routing_key.to_owned();
    Arc::new(out)
}

fn is_death_of(death: &FieldValue, queue: &str, reason: &str) -> bool {
    let FieldValue::Table(t) = death else {
        return false;
    };
    t.get("queue").and_then(FieldValue::as_str) == Some(queue)
        && t.get("reason").and_then(FieldValue::as_str) == Some(reason)
}

/// Whether routing a dead-lettered message to `target_queue` closes a cycle that no
/// consumer took part in, in which case RabbitMQ drops it for that queue: the queue
/// is in the message's `x-death` history and no death since (and including) it was a
/// rejection. For the router, which applies it per target queue.
pub fn is_dead_letter_cycle(message: &Message, target_queue: &str) -> bool {
    let Some(FieldValue::Array(deaths)) = message.properties.header(X_DEATH) else {
        return false;
    };
    let Some(i) = deaths.iter().position(|d| match d {
        FieldValue::Table(t) => t.get("queue").and_then(FieldValue::as_str) == Some(target_queue),
        _ => false,
    }) else {
        return false;
    };
    deaths[..=i].iter().all(|d| match d {
        FieldValue::Table(t) => t.get("reason").and_then(FieldValue::as_str) != Some("rejected"),
        _ => true,
    })
}
