//! The tx class: tx.select, commit and rollback. A transactional channel keeps its
//! publishes and settlements until commit.

use amq_protocol::protocol::{tx, AMQPClass};
use warren_actors::channel::PublishOutcome;

use super::{unexpected_method, AmqpChannel, Outcome};
use crate::error::AmqpError;

impl AmqpChannel {
    /// One method of the tx class.
    pub(super) async fn tx(&mut self, m: tx::AMQPMethod) -> Result<Outcome, AmqpError> {
        match m {
            tx::AMQPMethod::Select(_) => {
                if self.confirm {
                    return Err(AmqpError::CannotSwitchMode {
                        from: "confirm",
                        to: "tx",
                    });
                }
                self.tx = true;
                if let Some(entry) = self.entry() {
                    entry
                        .transactional
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(self.reply(AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {}))))
            }
            tx::AMQPMethod::Commit(_) => {
                self.no_tx("commit")?;
                let settles = std::mem::take(&mut self.tx_settles);
                self.core.settle(&settles)?;
                self.note_unacked();
                self.ready.append(&mut self.tx_publishes);
                // Commit-ok only once every queue holds the transaction's publishes as
                // safely as it promises (a persistent message in a durable queue: on
                // disk), after the basic.return of each mandatory one that no queue
                // took, as in RabbitMQ. The outcomes are wanted even for plain routed
                // publishes, which outside confirm mode nothing would wait for.
                let mut out = Vec::new();
                if let Some(Some((routed, answers))) = self.route(true).await {
                    let outcomes = routed.await;
                    if let Some(PublishOutcome::Failed(e)) = outcomes
                        .iter()
                        .find(|o| matches!(o, PublishOutcome::Failed(_)))
                    {
                        return Err(e.clone().into());
                    }
                    for ((_, message), outcome) in answers.into_iter().zip(outcomes) {
                        if let (PublishOutcome::Unroutable, Some(m)) = (outcome, message) {
                            self.write_return(&m, &mut out);
                        }
                    }
                }
                let ok = AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {}));
                self.write_reply_and_release(Some(ok), &mut out);
                Ok(Outcome::Send(out))
            }
            tx::AMQPMethod::Rollback(_) => {
                self.no_tx("rollback")?;
                self.tx_settles.clear();
                self.tx_publishes.clear();
                Ok(self.reply(AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {}))))
            }
            other => Err(unexpected_method(AMQPClass::Tx(other))),
        }
    }

    /// 406 unless tx.select was sent: `method` is what the text names.
    fn no_tx(&self, method: &'static str) -> Result<(), AmqpError> {
        if self.tx {
            Ok(())
        } else {
            Err(AmqpError::NotTransactional { method })
        }
    }
}
