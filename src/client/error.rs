//! The errors a client handle returns.

use warren_cluster::connect::ConnectError;
use warren_cluster::protocol::ErrorReply;

/// What went wrong with a client operation. Broker refusals carry the AMQP reply code.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// 404: the exchange or queue does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// 405: the queue is exclusive to another connection.
    #[error("resource locked: {0}")]
    ResourceLocked(String),
    /// 406: the request conflicts with what exists (inequivalent arguments, in use, ...).
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    /// 403: the name or operation is reserved or forbidden.
    #[error("access refused: {0}")]
    AccessRefused(String),
    /// Any other broker refusal, with its AMQP reply code.
    #[error("broker refused ({code}): {text}")]
    Broker { code: u16, text: String },
    /// The message is larger than a client handle can send in one frame.
    #[error("message of {size} bytes is larger than the limit of {limit} bytes")]
    MessageTooLarge { size: usize, limit: usize },
    /// The session with the node ended (the node stopped or the connection broke).
    #[error("the connection to the node is closed: {0}")]
    Disconnected(String),
    #[error("the node did not answer within {0} s")]
    Timeout(u64),
    /// An option given to the client is out of its range; the text says which and what
    /// to give.
    #[error("invalid option: {0}")]
    InvalidOptions(String),
    /// A frame that did not decode: a version mismatch or a bug.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The AMQP reply code of a broker refusal, if this is one.
    pub fn code(&self) -> Option<u16> {
        match self {
            ClientError::NotFound(_) => Some(404),
            ClientError::ResourceLocked(_) => Some(405),
            ClientError::PreconditionFailed(_) => Some(406),
            ClientError::AccessRefused(_) => Some(403),
            ClientError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<ErrorReply> for ClientError {
    fn from(e: ErrorReply) -> Self {
        match e.code {
            404 => ClientError::NotFound(e.text),
            405 => ClientError::ResourceLocked(e.text),
            406 => ClientError::PreconditionFailed(e.text),
            403 => ClientError::AccessRefused(e.text),
            code => ClientError::Broker { code, text: e.text },
        }
    }
}
