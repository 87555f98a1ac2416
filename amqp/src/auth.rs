//! Authentication in `connection.start-ok`: the PLAIN and AMQPLAIN mechanisms against
//! the node's users ([`AccessControl`]); RabbitMQ's default `guest` is allowed from
//! loopback only.

use std::net::SocketAddr;

use amq_protocol::types::AMQPValue;
use warren_access::{AccessControl, DEFAULT_USER};

use crate::error::AmqpError;

/// A user name and password from the client.
#[derive(Debug, PartialEq, Eq)]
pub struct Credentials {
    /// `PLAIN` or `AMQPLAIN`: a refusal names it.
    pub mechanism: String,
    /// The user name.
    pub user: String,
    /// The password, checked against the node's users.
    pub password: String,
}

fn refused(mechanism: &str) -> AmqpError {
    AmqpError::LoginRefused {
        mechanism: mechanism.to_string(),
    }
}

impl Credentials {
    /// Parses the response of `mechanism`.
    pub fn parse(mechanism: &str, response: &[u8]) -> Result<Credentials, AmqpError> {
        match mechanism {
            "PLAIN" => {
                // authzid NUL authcid NUL password
                let mut parts = response.split(|b| *b == 0);
                let (_, user, password) =
                    match (parts.next(), parts.next(), parts.next(), parts.next()) {
                        (Some(a), Some(u), Some(p), None) => (a, u, p),
                        _ => return Err(refused(mechanism)),
                    };
                Ok(Credentials {
                    mechanism: mechanism.into(),
                    user: String::from_utf8_lossy(user).into_owned(),
                    password: String::from_utf8_lossy(password).into_owned(),
                })
            }
            "AMQPLAIN" => {
                // A field table without its length prefix: LOGIN and PASSWORD.
                let mut framed = (response.len() as u32).to_be_bytes().to_vec();
                framed.extend_from_slice(response);
                let table = amq_protocol::types::parsing::parse_field_table(framed.as_slice())
                    .map(|(_, t)| t)
                    .map_err(|_| refused(mechanism))?;
                let text = |key: &str| match table.inner().get(key) {
                    Some(AMQPValue::LongString(s)) => {
                        Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                    }
                    Some(AMQPValue::ShortString(s)) => Some(s.as_str().to_string()),
                    _ => None,
                };
                match (text("LOGIN"), text("PASSWORD")) {
                    (Some(user), Some(password)) => Ok(Credentials {
                        mechanism: mechanism.into(),
                        user,
                        password,
                    }),
                    _ => Err(refused(mechanism)),
                }
            }
            other => Err(AmqpError::UnsupportedMechanism {
                mechanism: other.to_string(),
            }),
        }
    }
}

/// Checks the credentials of a client connecting from `peer`.
pub fn check(c: &Credentials, peer: SocketAddr, access: &AccessControl) -> Result<(), AmqpError> {
    if !access.authenticate(&c.user, &c.password) {
        tracing::warn!(peer = %peer, user = %c.user, "refused login: unknown user or wrong password");
        return Err(refused(&c.mechanism));
    }
    if c.user == DEFAULT_USER && !peer.ip().is_loopback() {
        tracing::warn!(peer = %peer, "refused user 'guest': it may only connect from loopback");
        return Err(refused(&c.mechanism));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_amqplain_parse() {
        let c = Credentials::parse("PLAIN", b"\0guest\0guest").unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("guest", "guest"));
        assert_eq!(
            Credentials::parse("PLAIN", b"guest")
                .unwrap_err()
                .reply_code(),
            403
        );
        assert_eq!(
            Credentials::parse("EXTERNAL", b"")
                .unwrap_err()
                .reply_code(),
            403
        );

        let mut table = amq_protocol::types::FieldTable::default();
        table.insert("LOGIN".into(), AMQPValue::LongString("guest".into()));
        table.insert("PASSWORD".into(), AMQPValue::LongString("guest".into()));
        let bytes = cookie_factory::gen_simple(
            amq_protocol::types::generation::gen_field_table(&table),
            Vec::new(),
        )
        .unwrap();
        let c = Credentials::parse("AMQPLAIN", &bytes[4..]).unwrap();
        assert_eq!(c.user, "guest");
    }

    #[tokio::test]
    async fn guest_only_from_loopback() {
        let dir = tempfile::tempdir().unwrap();
        let store = warren_storage::Store::open(dir.path().join("w.redb")).unwrap();
        let access = AccessControl::load(store).await.unwrap();
        let guest = Credentials::parse("PLAIN", b"\0guest\0guest").unwrap();
        assert!(check(&guest, "127.0.0.1:5000".parse().unwrap(), &access).is_ok());
        let far = check(&guest, "10.1.2.3:5000".parse().unwrap(), &access);
        assert_eq!(far.unwrap_err().reply_code(), 403);
        let wrong = Credentials::parse("PLAIN", b"\0guest\0nope").unwrap();
        assert!(check(&wrong, "127.0.0.1:5000".parse().unwrap(), &access).is_err());
    }
}
