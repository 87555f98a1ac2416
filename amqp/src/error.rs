//! [`AmqpError`]: everything the front door refuses, in the broker's words. Each error
//! knows the AMQP reply code a client gets ([`AmqpError::reply_code`]), the text (its
//! `Display`, RabbitMQ's wording: the code's name first), and whether it closes the
//! whole connection (`connection.close`, a "hard" error) or only the channel it
//! happened on (`channel.close`, a "soft" error).

use std::borrow::Cow;

use warren_actors::error::BrokerError;

/// Reply codes of AMQP 0-9-1 (those the broker core raises, and those only the front
/// door does).
pub mod code {
    pub use warren_actors::error::code::*;
    /// A frame that breaks the framing rules: bad size, bad end octet, unknown type.
    pub const FRAME_ERROR: u16 = 501;
    /// A frame whose fields do not decode.
    pub const SYNTAX_ERROR: u16 = 502;
    /// A method on a channel that is not open, or a second `channel.open`.
    pub const CHANNEL_ERROR: u16 = 504;
    /// A frame of the wrong kind for where the peer is (content where a method
    /// belongs, and the reverse).
    pub const UNEXPECTED_FRAME: u16 = 505;
    /// A feature of the protocol the broker does not implement.
    pub const NOT_IMPLEMENTED: u16 = 540;
}

/// What went wrong, with the reply code and text a client gets.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AmqpError {
    // ----- frames ----------------------------------------------------------------
    /// A frame type 0-9-1 does not have.
    #[error("FRAME_ERROR - unknown frame type {kind}")]
    UnknownFrameType {
        /// The frame's type octet.
        kind: u8,
    },
    /// A frame larger than the connection's `frame_max`, refused from its header.
    #[error(
        "FRAME_ERROR - type {kind}, all octets = <<>>: {{frame_too_large,{size},{max_payload}}}"
    )]
    FrameTooLarge {
        /// The frame's type octet.
        kind: u8,
        /// The payload size its header announces.
        size: u32,
        /// The largest payload `frame_max` leaves room for.
        max_payload: u32,
    },
    /// A frame that does not end with the frame-end octet.
    #[error("FRAME_ERROR - frame end octet {octet:#04x} instead of 0xce")]
    BadFrameEnd {
        /// The octet found instead.
        octet: u8,
    },
    /// The arguments of a known method do not decode (RabbitMQ: 501).
    #[error("FRAME_ERROR - cannot decode the arguments of method {class_id}.{method_id}")]
    BadMethodArguments {
        /// The method's class.
        class_id: u16,
        /// The method.
        method_id: u16,
    },
    /// A method frame whose class and method ids are not AMQP 0-9-1's.
    #[error("COMMAND_INVALID - cannot decode method {class_id}.{method_id}")]
    UndecodableMethod {
        /// The class id the frame names.
        class_id: u16,
        /// The method id the frame names.
        method_id: u16,
    },
    /// A content header frame that does not decode.
    #[error("FRAME_ERROR - cannot decode the content header")]
    UndecodableHeader,
    /// A body or heartbeat frame that does not decode.
    #[error("FRAME_ERROR - cannot decode a frame of type {kind}")]
    UndecodableFrame {
        /// The frame's type octet.
        kind: u8,
    },
    /// A heartbeat frame on a channel other than 0.
    #[error("UNEXPECTED_FRAME - heartbeat on channel {channel}")]
    HeartbeatOnChannel {
        /// The channel it came on.
        channel: u16,
    },
    /// The protocol header again, inside an open connection.
    #[error("UNEXPECTED_FRAME - protocol header inside the connection")]
    ProtocolHeaderInside,

    // ----- the handshake ---------------------------------------------------------
    /// A frame other than the method the handshake waits for.
    #[error("UNEXPECTED_FRAME - expected {expected}, got {frame}")]
    HandshakeFrame {
        /// The method the handshake waits for.
        expected: &'static str,
        /// The frame that came instead.
        frame: String,
    },
    /// Another method than the one the handshake waits for.
    #[error("COMMAND_INVALID - expected {expected}{}", got_ids(.got))]
    HandshakeMethod {
        /// The method the handshake waits for.
        expected: &'static str,
        /// The class and method ids of what came instead (when the text names them).
        got: Option<(u16, u16)>,
    },
    /// An authentication mechanism other than PLAIN and AMQPLAIN.
    #[error(
        "ACCESS_REFUSED - unsupported authentication mechanism '{mechanism}': use PLAIN or AMQPLAIN"
    )]
    UnsupportedMechanism {
        /// The mechanism the client asked for.
        mechanism: String,
    },
    /// Unknown user, wrong password, a response that does not parse, or `guest`
    /// from another host than loopback.
    #[error("ACCESS_REFUSED - Login was refused using authentication mechanism {mechanism}. For details see the broker logfile.")]
    LoginRefused {
        /// The mechanism the client used.
        mechanism: String,
    },
    /// A `frame_max` in tune-ok below the protocol's minimum.
    #[error("NOT_ALLOWED - frame_max {frame_max} is below the minimum of {min}")]
    FrameMaxTooSmall {
        /// What the client asked for.
        frame_max: u32,
        /// The protocol's minimum.
        min: u32,
    },
    /// A `frame_max` in tune-ok above what the broker offered.
    #[error("NOT_ALLOWED - frame_max {frame_max} is above the maximum of {max}")]
    FrameMaxTooLarge {
        /// What the client asked for.
        frame_max: u32,
        /// What the broker offered in tune.
        max: u32,
    },
    /// connection.open names a vhost that does not exist.
    #[error("NOT_ALLOWED - vhost {vhost} not found")]
    VhostNotFound {
        /// The vhost asked for.
        vhost: String,
    },
    /// connection.open names a vhost the user has no permissions in.
    #[error("NOT_ALLOWED - access to vhost '{vhost}' refused for user '{user}'")]
    VhostAccessRefused {
        /// The vhost asked for.
        vhost: String,
        /// The authenticated user.
        user: String,
    },

    /// connection.update-secret with a secret the user's credentials refuse.
    #[error("NOT_ALLOWED - Secret update was refused for user '{user}': wrong password")]
    SecretUpdateRefused {
        /// The connection's user.
        user: String,
    },

    // ----- the connection's life -------------------------------------------------
    /// The connection's vhost was deleted.
    #[error("CONNECTION_FORCED - vhost '{vhost}' is deleted")]
    VhostDeleted {
        /// The deleted vhost.
        vhost: String,
    },
    /// The node shuts down (or the connection was stopped from the shell).
    #[error("CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'")]
    Shutdown,
    /// An operator closed the connection (management API).
    #[error("CONNECTION_FORCED - {reason}")]
    ClosedByOperator {
        /// The operator's reason.
        reason: String,
    },
    /// Reading or writing the socket failed.
    #[error("socket error: {reason}")]
    Socket {
        /// The I/O error, as text.
        reason: String,
    },
    /// The writer task is gone: the socket closed.
    #[error("the socket closed")]
    SocketClosed,
    /// The client read nothing of what the node wrote for this long (its heartbeat
    /// timeout): the connection is dropped without a close, which could not reach it.
    #[error("the client read nothing for {secs} s: closing the connection")]
    WriteStalled {
        /// How long nothing was read.
        secs: u64,
    },

    // ----- channels --------------------------------------------------------------
    /// channel.open on a channel that is open already.
    #[error("CHANNEL_ERROR - second 'channel.open' seen on channel {channel}")]
    SecondChannelOpen {
        /// The channel number.
        channel: u16,
    },
    /// channel.open above the `channel_max` the broker offered.
    #[error("NOT_ALLOWED - channel {channel} is above the negotiated channel_max {channel_max}")]
    ChannelAboveMax {
        /// The channel number.
        channel: u16,
        /// The `channel_max` the handshake settled on.
        channel_max: u16,
    },
    /// A frame on a channel that was not opened.
    #[error("CHANNEL_ERROR - expected 'channel.open' on channel {channel}")]
    ChannelNotOpen {
        /// The channel number.
        channel: u16,
    },
    /// A method that has no place on the channel it came on (a connection method on
    /// a channel, a channel's method on channel 0, an `-ok` no client sends).
    #[error("COMMAND_INVALID - unexpected method {class_id}.{method_id} on channel {channel}")]
    UnexpectedMethod {
        /// The method's class id.
        class_id: u16,
        /// The method's id.
        method_id: u16,
        /// The channel it came on.
        channel: u16,
    },
    /// A method of a class the channel handles that only a server sends.
    #[error("COMMAND_INVALID - method {class_id}.{method_id} is not one a client sends")]
    NotAClientMethod {
        /// The method's class id.
        class_id: u16,
        /// The method's id.
        method_id: u16,
    },

    // ----- basic.publish and its content ----------------------------------------
    /// A content frame on a channel with no publish waiting for one.
    #[error("UNEXPECTED_FRAME - expected method frame, got non method frame instead ({frame} on channel {channel})")]
    ContentWithoutPublish {
        /// "content header" or "content body".
        frame: &'static str,
        /// The channel it came on.
        channel: u16,
    },
    /// A content header of another class than basic.
    #[error("UNEXPECTED_FRAME - content header for class {class_id} on a basic.publish")]
    ContentClass {
        /// The header's class id.
        class_id: u16,
    },
    /// A content body before the publish's content header.
    #[error("UNEXPECTED_FRAME - expected content header, got content body")]
    BodyBeforeHeader,
    /// Content bodies longer than their header announced.
    #[error(
        "UNEXPECTED_FRAME - content body longer than the {announced} bytes its header announced"
    )]
    BodyTooLong {
        /// The body size the header announced.
        announced: u64,
    },
    /// A method on a channel whose publish still waits for its content.
    #[error("UNEXPECTED_FRAME - expected content header for class 60, got a method on channel {channel}")]
    MethodInsteadOfContent {
        /// The channel.
        channel: u16,
    },
    /// A message body larger than the broker accepts (closes the channel).
    #[error("PRECONDITION_FAILED - message size {size} is larger than configured max size {max}")]
    MessageTooLarge {
        /// The body size the header announced.
        size: u64,
        /// The largest body accepted.
        max: u64,
    },
    /// A `user_id` property that is not the authenticated user (closes the channel).
    #[error("PRECONDITION_FAILED - user_id property set to '{user_id}' but authenticated user was '{user}'")]
    UserIdMismatch {
        /// The property's value.
        user_id: String,
        /// The authenticated user.
        user: String,
    },
    /// An `expiration` property that is not a whole number of milliseconds (closes
    /// the channel).
    #[error("PRECONDITION_FAILED - invalid expiration '{expiration}'")]
    InvalidExpiration {
        /// The property's value.
        expiration: String,
    },
    /// A publish its exchange or queues refused (no such exchange, say): closes the
    /// channel, whatever the code.
    #[error("{}", broker_text(.0))]
    PublishFailed(BrokerError),

    // ----- the other methods -----------------------------------------------------
    /// A protocol feature Warren does not implement, as RabbitMQ does not either
    /// (`immediate=true`, `requeue=false` in recover, `channel.flow active=false`).
    #[error("NOT_IMPLEMENTED - {what}")]
    NotImplemented {
        /// The argument or feature, as the text names it.
        what: &'static str,
    },
    /// basic.consume with a tag the channel already uses.
    #[error("NOT_ALLOWED - attempt to reuse consumer tag '{tag}'")]
    ConsumerTagInUse {
        /// The consumer tag.
        tag: String,
    },
    /// An empty queue name on a channel that declared no queue yet (closes the
    /// channel).
    #[error("NOT_FOUND - no previously declared queue")]
    NoPreviousQueue,
    /// confirm.select on a transactional channel, or tx.select on one in confirm
    /// mode (closes the channel).
    #[error("PRECONDITION_FAILED - cannot switch from {from} to {to} mode")]
    CannotSwitchMode {
        /// The mode the channel is in ("tx" or "confirm").
        from: &'static str,
        /// The mode asked for.
        to: &'static str,
    },
    /// tx.commit or tx.rollback on a channel that is not transactional (closes the
    /// channel).
    #[error("PRECONDITION_FAILED - channel is not transactional ({method})")]
    NotTransactional {
        /// "commit" or "rollback".
        method: &'static str,
    },

    // ----- from the broker -------------------------------------------------------
    /// A broker operation's refusal: closes the channel, except for the codes AMQP
    /// makes connection errors (320, 402, 501-506, 530, 540, 541).
    #[error("{}", broker_text(.0))]
    Broker(BrokerError),

    /// An error in a method, with the method's ids (the close names them).
    #[error("{error}")]
    InMethod {
        /// The class id of the method that failed.
        class_id: u16,
        /// The id of the method that failed.
        method_id: u16,
        /// What went wrong.
        error: Box<AmqpError>,
    },
}

impl AmqpError {
    /// The AMQP reply code a client gets.
    pub fn reply_code(&self) -> u16 {
        use AmqpError::*;
        match self {
            UnknownFrameType { .. }
            | FrameTooLarge { .. }
            | BadFrameEnd { .. }
            | UndecodableHeader
            | UndecodableFrame { .. }
            | BadMethodArguments { .. } => code::FRAME_ERROR,
            UndecodableMethod { .. }
            | HandshakeMethod { .. }
            | UnexpectedMethod { .. }
            | NotAClientMethod { .. } => code::COMMAND_INVALID,
            HeartbeatOnChannel { .. }
            | ProtocolHeaderInside
            | HandshakeFrame { .. }
            | ContentWithoutPublish { .. }
            | ContentClass { .. }
            | BodyBeforeHeader
            | BodyTooLong { .. }
            | MethodInsteadOfContent { .. } => code::UNEXPECTED_FRAME,
            UnsupportedMechanism { .. } | LoginRefused { .. } => code::ACCESS_REFUSED,
            FrameMaxTooSmall { .. }
            | FrameMaxTooLarge { .. }
            | VhostNotFound { .. }
            | VhostAccessRefused { .. }
            | ChannelAboveMax { .. }
            | SecretUpdateRefused { .. }
            | ConsumerTagInUse { .. } => code::NOT_ALLOWED,
            VhostDeleted { .. }
            | Shutdown
            | ClosedByOperator { .. }
            | Socket { .. }
            | SocketClosed
            | WriteStalled { .. } => code::CONNECTION_FORCED,
            SecondChannelOpen { .. } | ChannelNotOpen { .. } => code::CHANNEL_ERROR,
            MessageTooLarge { .. }
            | UserIdMismatch { .. }
            | InvalidExpiration { .. }
            | CannotSwitchMode { .. }
            | NotTransactional { .. } => code::PRECONDITION_FAILED,
            NotImplemented { .. } => code::NOT_IMPLEMENTED,
            NoPreviousQueue => code::NOT_FOUND,
            PublishFailed(e) | Broker(e) => e.code(),
            InMethod { error, .. } => error.reply_code(),
        }
    }

    /// The reply text a client gets (RabbitMQ's form: `NOT_FOUND - no queue ...`).
    pub fn reply_text(&self) -> String {
        self.to_string()
    }

    /// Whether the error closes the whole connection; else only its channel.
    pub fn closes_connection(&self) -> bool {
        use AmqpError::*;
        match self {
            MessageTooLarge { .. }
            | UserIdMismatch { .. }
            | InvalidExpiration { .. }
            | PublishFailed(_)
            | NoPreviousQueue
            | CannotSwitchMode { .. }
            | NotTransactional { .. } => false,
            Broker(e) => matches!(e.code(), 320 | 402 | 501..=506 | 530 | 540 | 541),
            InMethod { error, .. } => error.closes_connection(),
            _ => true,
        }
    }

    /// The class and method ids of the method that failed, (0, 0) when none did.
    pub fn method(&self) -> (u16, u16) {
        match self {
            AmqpError::InMethod {
                class_id,
                method_id,
                ..
            } => (*class_id, *method_id),
            _ => (0, 0),
        }
    }

    /// Records the method that failed.
    pub fn at(self, class_id: u16, method_id: u16) -> Self {
        let error = match self {
            AmqpError::InMethod { error, .. } => error,
            other => Box::new(other),
        };
        AmqpError::InMethod {
            class_id,
            method_id,
            error,
        }
    }
}

/// A refusal of users or permissions, answered like any broker refusal.
impl From<warren_access::AccessError> for AmqpError {
    fn from(e: warren_access::AccessError) -> Self {
        AmqpError::from(BrokerError::from(e))
    }
}

impl From<BrokerError> for AmqpError {
    fn from(e: BrokerError) -> Self {
        AmqpError::Broker(e)
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

/// A broker error's text as RabbitMQ's texts go, starting with the reply code's name
/// (`NOT_FOUND - no queue 'x' ...`); a text that does not gets it.
fn broker_text(e: &BrokerError) -> Cow<'_, str> {
    let text = e.text();
    match code_name(e.code()) {
        Some(name) if !text.starts_with(name) => Cow::Owned(format!("{name} - {text}")),
        _ => text,
    }
}

/// ", got 10.31" when the handshake's text names what came instead.
fn got_ids(got: &Option<(u16, u16)>) -> String {
    got.map(|(class_id, method_id)| format!(", got {class_id}.{method_id}"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_errors_become_channel_or_connection_errors() {
        let e: AmqpError = BrokerError::not_found("NOT_FOUND - no queue 'q' in vhost '/'").into();
        assert_eq!(
            (e.reply_code(), e.closes_connection(), e.reply_text()),
            (
                404,
                false,
                "NOT_FOUND - no queue 'q' in vhost '/'".to_string()
            )
        );
        let e: AmqpError = BrokerError::new(530, "queue name 'amq.x' is reserved").into();
        assert_eq!(
            (e.reply_code(), e.closes_connection(), e.reply_text()),
            (
                530,
                true,
                "NOT_ALLOWED - queue name 'amq.x' is reserved".to_string()
            )
        );
    }

    #[test]
    fn a_failed_publish_closes_only_its_channel_whatever_the_code() {
        let e = AmqpError::PublishFailed(BrokerError::new(530, "no")).at(60, 40);
        assert_eq!(
            (e.reply_code(), e.closes_connection(), e.method()),
            (530, false, (60, 40))
        );
        assert_eq!(e.reply_text(), "NOT_ALLOWED - no");
    }

    #[test]
    fn the_failed_method_is_recorded_once_and_keeps_the_scope() {
        let e = AmqpError::NotImplemented {
            what: "immediate=true",
        };
        assert_eq!(e.method(), (0, 0));
        let e = e.at(60, 40).at(60, 40);
        assert_eq!(e.method(), (60, 40));
        assert!(e.closes_connection());
        assert_eq!(
            (e.reply_code(), e.reply_text().as_str()),
            (540, "NOT_IMPLEMENTED - immediate=true")
        );
        let e = AmqpError::NoPreviousQueue.at(50, 20);
        assert!(!e.closes_connection());
        assert_eq!(e.reply_code(), 404);
    }

    #[test]
    fn texts_start_with_the_name_of_their_code() {
        let all = [
            AmqpError::UnknownFrameType { kind: 9 },
            AmqpError::FrameTooLarge {
                kind: 1,
                size: 10,
                max_payload: 8,
            },
            AmqpError::BadFrameEnd { octet: 0 },
            AmqpError::UndecodableMethod {
                class_id: 1,
                method_id: 2,
            },
            AmqpError::UndecodableHeader,
            AmqpError::UndecodableFrame { kind: 3 },
            AmqpError::HeartbeatOnChannel { channel: 1 },
            AmqpError::ProtocolHeaderInside,
            AmqpError::HandshakeFrame {
                expected: "connection.open",
                frame: "AMQPFrame::Body".into(),
            },
            AmqpError::HandshakeMethod {
                expected: "connection.start-ok",
                got: Some((10, 31)),
            },
            AmqpError::UnsupportedMechanism {
                mechanism: "X".into(),
            },
            AmqpError::LoginRefused {
                mechanism: "PLAIN".into(),
            },
            AmqpError::FrameMaxTooSmall {
                frame_max: 1,
                min: 4096,
            },
            AmqpError::FrameMaxTooLarge {
                frame_max: 1 << 20,
                max: 131_072,
            },
            AmqpError::VhostNotFound { vhost: "v".into() },
            AmqpError::VhostAccessRefused {
                vhost: "v".into(),
                user: "u".into(),
            },
            AmqpError::VhostDeleted { vhost: "v".into() },
            AmqpError::Shutdown,
            AmqpError::SecondChannelOpen { channel: 1 },
            AmqpError::ChannelAboveMax {
                channel: 3000,
                channel_max: 2047,
            },
            AmqpError::ChannelNotOpen { channel: 1 },
            AmqpError::UnexpectedMethod {
                class_id: 10,
                method_id: 40,
                channel: 1,
            },
            AmqpError::NotAClientMethod {
                class_id: 60,
                method_id: 60,
            },
            AmqpError::ContentWithoutPublish {
                frame: "content body",
                channel: 1,
            },
            AmqpError::ContentClass { class_id: 50 },
            AmqpError::BodyBeforeHeader,
            AmqpError::BodyTooLong { announced: 3 },
            AmqpError::BadMethodArguments {
                class_id: 50,
                method_id: 10,
            },
            AmqpError::MethodInsteadOfContent { channel: 1 },
            AmqpError::MessageTooLarge { size: 2, max: 1 },
            AmqpError::UserIdMismatch {
                user_id: "a".into(),
                user: "b".into(),
            },
            AmqpError::InvalidExpiration {
                expiration: "x".into(),
            },
            AmqpError::PublishFailed(BrokerError::not_found("no exchange 'x'")),
            AmqpError::NotImplemented { what: "x" },
            AmqpError::ConsumerTagInUse { tag: "t".into() },
            AmqpError::NoPreviousQueue,
            AmqpError::CannotSwitchMode {
                from: "tx",
                to: "confirm",
            },
            AmqpError::NotTransactional { method: "commit" },
            AmqpError::Broker(BrokerError::access_refused("no")),
        ];
        for e in all {
            let name = code_name(e.reply_code()).expect("a known code");
            assert!(e.reply_text().starts_with(name), "{e:?}: {e}");
        }
    }
}
