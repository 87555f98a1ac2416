//! The confirm class: confirm.select puts the channel in publisher-confirm mode (its
//! publishes are numbered as they complete; `connection/published.rs` acks them).

use amq_protocol::protocol::{confirm, AMQPClass};

use super::{AmqpChannel, Outcome};
use crate::error::AmqpError;

impl AmqpChannel {
    /// Whether confirm.select was sent: every publish is acked or nacked.
    pub fn confirm_mode(&self) -> bool {
        self.confirm
    }

    /// One method of the confirm class.
    pub(super) fn confirm(&mut self, m: confirm::AMQPMethod) -> Result<Outcome, AmqpError> {
        match m {
            confirm::AMQPMethod::Select(s) => self.confirm_select(s),
            other => Err(self.unexpected_here(AMQPClass::Confirm(other))),
        }
    }

    /// confirm.select (not allowed on a transactional channel).
    fn confirm_select(&mut self, s: confirm::Select) -> Result<Outcome, AmqpError> {
        if self.tx {
            return Err(AmqpError::CannotSwitchMode {
                from: "tx",
                to: "confirm",
            });
        }
        self.confirm = true;
        if let Some(entry) = self.entry() {
            entry
                .confirm
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(self.answer(
            s.nowait,
            AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
        ))
    }
}
