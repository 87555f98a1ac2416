//! AMQP errors: a channel error closes the channel (`channel.close`), a connection
//! error the connection (`connection.close`), each with RabbitMQ's reply code and a
//! text that names the object.

use warren_actors::error::BrokerError;

/// Reply codes of AMQP 0-9-1 that only the front door raises.
pub mod code {
    pub use warren_actors::error::code::*;
    pub const FRAME_ERROR: u16 = 501;
    pub const SYNTAX_ERROR: u16 = 502;
    pub const CHANNEL_ERROR: u16 = 504;
    pub const UNEXPECTED_FRAME: u16 = 505;
    pub const NOT_IMPLEMENTED: u16 = 540;
}

/// An error that closes one channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelError {
    pub code: u16,
    pub text: String,
    /// The method that failed (0, 0 when none).
    pub class_id: u16,
    pub method_id: u16,
}

/// An error that closes the whole connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionError {
    pub code: u16,
    pub text: String,
    pub class_id: u16,
    pub method_id: u16,
}

impl ConnectionError {
    pub fn new(code: u16, text: impl Into<String>) -> Self {
        ConnectionError {
            code,
            text: text.into(),
            class_id: 0,
            method_id: 0,
        }
    }

    pub fn frame(text: impl Into<String>) -> Self {
        Self::new(code::FRAME_ERROR, text)
    }

    pub fn syntax(text: impl Into<String>) -> Self {
        Self::new(code::COMMAND_INVALID, text)
    }

    pub fn unexpected(text: impl Into<String>) -> Self {
        Self::new(code::UNEXPECTED_FRAME, text)
    }
}

impl ChannelError {
    pub fn new(code: u16, text: impl Into<String>) -> Self {
        ChannelError {
            code,
            text: text.into(),
            class_id: 0,
            method_id: 0,
        }
    }
}

/// Either kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AmqpError {
    Channel(ChannelError),
    Connection(ConnectionError),
}

impl AmqpError {
    pub fn code(&self) -> u16 {
        match self {
            AmqpError::Channel(e) => e.code,
            AmqpError::Connection(e) => e.code,
        }
    }

    /// Records the method that failed.
    pub fn at(mut self, class_id: u16, method_id: u16) -> Self {
        match &mut self {
            AmqpError::Channel(e) => (e.class_id, e.method_id) = (class_id, method_id),
            AmqpError::Connection(e) => (e.class_id, e.method_id) = (class_id, method_id),
        }
        self
    }

    pub fn channel(code: u16, text: impl Into<String>) -> Self {
        AmqpError::Channel(ChannelError::new(code, text))
    }

    pub fn connection(code: u16, text: impl Into<String>) -> Self {
        AmqpError::Connection(ConnectionError::new(code, text))
    }
}

impl std::fmt::Display for AmqpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AmqpError::Channel(e) => write!(f, "channel error {}: {}", e.code, e.text),
            AmqpError::Connection(e) => write!(f, "connection error {}: {}", e.code, e.text),
        }
    }
}

impl From<ConnectionError> for AmqpError {
    fn from(e: ConnectionError) -> Self {
        AmqpError::Connection(e)
    }
}

impl From<ChannelError> for AmqpError {
    fn from(e: ChannelError) -> Self {
        AmqpError::Channel(e)
    }
}

/// A refusal of users or permissions, answered like any broker refusal.
impl From<warren_access::AccessError> for AmqpError {
    fn from(e: warren_access::AccessError) -> Self {
        AmqpError::from(BrokerError::from(e))
    }
}

/// A broker error closes the channel, except the codes AMQP makes connection errors
/// (320, 402, 501-506, 530, 540, 541).
impl From<BrokerError> for AmqpError {
    fn from(e: BrokerError) -> Self {
        let text = with_constant(e.code, e.text);
        match e.code {
            320 | 402 | 501..=506 | 530 | 540 | 541 => AmqpError::connection(e.code, text),
            _ => AmqpError::channel(e.code, text),
        }
    }
}

/// RabbitMQ's name for a reply code, which its error texts start with.
pub(crate) fn code_name(code: u16) -> Option<&'static str> {
    Some(match code {
        320 => "CONNECTION_FORCED",
        402 => "INVALID_PATH",
        403 => "ACCESS_REFUSED",
        404 => "NOT_FOUND",
        405 => "RESOURCE_LOCKED",
        406 => "PRECONDITION_FAILED",
        501 => "FRAME_ERROR",
        502 => "SYNTAX_ERROR",
        503 => "COMMAND_INVALID",
        504 => "CHANNEL_ERROR",
        505 => "UNEXPECTED_FRAME",
        506 => "RESOURCE_ERROR",
        530 => "NOT_ALLOWED",
        540 => "NOT_IMPLEMENTED",
        541 => "INTERNAL_ERROR",
        _ => return None,
    })
}

/// RabbitMQ's texts start with the reply code's name (`NOT_FOUND - no queue 'x' ...`);
/// a text that does not gets it.
fn with_constant(code: u16, text: String) -> String {
    match code_name(code) {
        Some(name) if !text.starts_with(name) => format!("{name} - {text}"),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_errors_become_channel_or_connection_errors() {
        let e: AmqpError = BrokerError::not_found("NOT_FOUND - no queue 'q' in vhost '/'").into();
        assert_eq!(
            e,
            AmqpError::channel(404, "NOT_FOUND - no queue 'q' in vhost '/'")
        );
        let e: AmqpError = BrokerError::new(530, "queue name 'amq.x' is reserved").into();
        assert_eq!(
            e,
            AmqpError::connection(530, "NOT_ALLOWED - queue name 'amq.x' is reserved")
        );
    }
}
