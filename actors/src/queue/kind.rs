//! [`QueueKind`]: which type of queue a declaration asks for. `x-queue-type` is
//! parsed here and nowhere else.

use crate::message::FieldTable;

/// The declare argument that names a queue's type.
pub const QUEUE_TYPE_ARG: &str = "x-queue-type";

/// A type of queue, as `x-queue-type` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueueKind {
    /// A queue on one node (RabbitMQ's classic queue); the default.
    Classic,
    /// A queue replicated by a Raft group of its own (RabbitMQ's quorum queue);
    /// `mirrored` is Warren's name for it.
    Quorum,
    /// An append-only log read from any offset (RabbitMQ's stream).
    Stream,
}

/// Every name `x-queue-type` accepts, as error texts list them.
pub const KNOWN_QUEUE_TYPES: &str = "classic, quorum (or mirrored), stream";

/// Why `x-queue-type` was refused. The caller names the queue (see
/// [`KindError::text`]) and answers 406 PRECONDITION_FAILED.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KindError {
    /// The argument is not a string.
    #[error("{{unacceptable_type,{0}}}: the queue type must be a string")]
    NotAString(&'static str),
    /// No queue type has this name.
    #[error("unknown queue type '{0}'; known types: {KNOWN_QUEUE_TYPES}")]
    Unknown(String),
    /// A known type this node does not run yet.
    #[error(
        "queue type '{0}' is not supported yet (not available in this version of Warren); \
         declare a 'classic' queue (no x-queue-type) instead"
    )]
    NotAvailable(&'static str),
}

impl KindError {
    /// The whole 406 text for queue `queue` in `vhost`, as RabbitMQ words a bad
    /// argument (the AMQP front door puts `PRECONDITION_FAILED - ` before it).
    pub fn text(&self, queue: &str, vhost: &str) -> String {
        format!("invalid arg '{QUEUE_TYPE_ARG}' for queue '{queue}' in vhost '{vhost}': {self}")
    }
}

impl QueueKind {
    /// The type a declaration's arguments ask for (classic when `x-queue-type` is absent).
    pub fn of(arguments: &FieldTable) -> Result<QueueKind, KindError> {
        match arguments.get(QUEUE_TYPE_ARG) {
            None => Ok(QueueKind::Classic),
            Some(value) => match value.as_str() {
                Some(name) => name.parse(),
                None => Err(KindError::NotAString(value.type_name())),
            },
        }
    }

    /// The name `x-queue-type` gives it (`quorum` for Warren's mirrored queues too).
    pub fn as_str(self) -> &'static str {
        match self {
            QueueKind::Classic => "classic",
            QueueKind::Quorum => "quorum",
            QueueKind::Stream => "stream",
        }
    }
}

impl std::str::FromStr for QueueKind {
    type Err = KindError;

    fn from_str(name: &str) -> Result<Self, KindError> {
        match name {
            "classic" => Ok(QueueKind::Classic),
            "quorum" | "mirrored" => Ok(QueueKind::Quorum),
            "stream" => Ok(QueueKind::Stream),
            other => Err(KindError::Unknown(other.to_string())),
        }
    }
}

impl std::fmt::Display for QueueKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::FieldValue;

    fn args(value: FieldValue) -> FieldTable {
        FieldTable::from([(QUEUE_TYPE_ARG.to_string(), value)])
    }

    #[test]
    fn the_known_names_parse_and_classic_is_the_default() {
        assert_eq!(QueueKind::of(&FieldTable::new()), Ok(QueueKind::Classic));
        for (name, kind) in [
            ("classic", QueueKind::Classic),
            ("quorum", QueueKind::Quorum),
            ("mirrored", QueueKind::Quorum),
            ("stream", QueueKind::Stream),
        ] {
            assert_eq!(QueueKind::of(&args(FieldValue::string(name))), Ok(kind));
        }
    }

    #[test]
    fn unknown_and_mistyped_names_are_refused_with_the_known_ones() {
        let e = QueueKind::of(&args(FieldValue::string("lazy"))).unwrap_err();
        assert_eq!(
            e.text("q", "/"),
            "invalid arg 'x-queue-type' for queue 'q' in vhost '/': \
             unknown queue type 'lazy'; known types: classic, quorum (or mirrored), stream"
        );
        assert_eq!(
            QueueKind::of(&args(FieldValue::I32(1))),
            Err(KindError::NotAString("signedint"))
        );
    }
}
