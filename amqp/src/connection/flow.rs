//! When a connection reads its socket: not while its routed publishes hold too many
//! bytes unanswered (credit flow), nor while it published under a resource alarm
//! (connection.blocked / unblocked).

use amq_protocol::protocol::{connection, AMQPClass};

use super::{method0, Connection};
use crate::convert::short;

/// Most body bytes a connection has routed whose queues have not answered yet; above
/// it the connection stops reading its socket until they do (credit flow: a publisher
/// that outruns the queues, or their storage, is held back by TCP).
const MAX_IN_FLIGHT_BYTES: u64 = 16 * 1024 * 1024;

impl Connection {
    /// Whether the connection reads its socket (its routed publishes are answered
    /// enough).
    pub(super) fn may_read(&self) -> bool {
        !self.blocked && self.in_flight.bytes() < MAX_IN_FLIGHT_BYTES
    }

    /// RabbitMQ's resource alarm handling: a connection that publishes while an
    /// alarm is up stops being read and is told `connection.blocked` (if it said it
    /// understands it); once every alarm cleared it is read again and told
    /// `connection.unblocked`. A connection that does not publish (a consumer) is
    /// not held back: consuming is what frees memory and disk.
    pub(super) fn on_alarm(&mut self, state: warren_resources::alarm::AlarmState) {
        if let Some(entry) = self.entry() {
            let blocked = state.raised() && (self.published || self.blocked);
            entry
                .blocked
                .store(blocked, std::sync::atomic::Ordering::Relaxed);
        }
        if !state.raised() {
            self.blocked = false;
            if self.told_blocked {
                self.told_blocked = false;
                self.send(&method0(AMQPClass::Connection(
                    connection::AMQPMethod::Unblocked(connection::Unblocked {}),
                )));
            }
            return;
        }
        if !self.published && !self.blocked {
            return;
        }
        self.blocked = true;
        if self.hears_blocked && !self.told_blocked {
            self.told_blocked = true;
            tracing::info!(peer = %self.peer, "publisher blocked: {}", state.reason());
            self.send(&method0(AMQPClass::Connection(
                connection::AMQPMethod::Blocked(connection::Blocked {
                    reason: short(state.reason()),
                }),
            )));
        }
    }
}
