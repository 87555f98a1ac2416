//! `amqp://user:password@host:port/vhost` URIs, read as RabbitMQ (and lapin) read
//! them; both AMQP clients of the bench connect with what they say.

/// The parts of an `amqp://user:password@host:port/vhost` URI the bench uses.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// The host name or address.
    pub host: String,
    /// The port (5672 when the URI has none).
    pub port: u16,
    /// The user to log in as (guest without one).
    pub user: String,
    /// The user's password.
    pub password: String,
    /// The vhost, percent-decoded (`/` without a path).
    pub vhost: String,
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

/// Parses an AMQP URI as RabbitMQ (and lapin) read it: user and password default to
/// guest/guest, the port to 5672, the vhost to `/` without a path (`%2f` is `/`,
/// a bare trailing `/` is the empty vhost name).
pub fn parse(uri: &str) -> Result<Target, String> {
    let rest = match uri.split_once("://") {
        Some(("amqp", rest)) => rest,
        Some(("amqps", _)) => return Err("amqps:// (TLS) is not supported by the bench".into()),
        _ => return Err(format!("{uri:?} is not an amqp:// URI")),
    };
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        None => ("guest".to_string(), "guest".to_string()),
        Some(u) => match u.split_once(':') {
            Some((user, password)) => (percent_decode(user)?, percent_decode(password)?),
            None => (percent_decode(u)?, String::new()),
        },
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{uri:?}: unclosed [ in the host"))?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port = match port {
        None | Some("") => 5672,
        Some(p) => p.parse().map_err(|_| format!("{uri:?}: bad port {p:?}"))?,
    };
    let host = if host.is_empty() { "localhost" } else { host };
    let vhost = match path {
        None => "/".to_string(),
        Some(p) => percent_decode(p)?,
    };
    Ok(Target {
        host: host.to_string(),
        port,
        user,
        password,
        vhost,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_read_as_rabbitmq_reads_them() {
        let t = |user: &str, password: &str, host: &str, port, vhost: &str| Target {
            host: host.into(),
            port,
            user: user.into(),
            password: password.into(),
            vhost: vhost.into(),
        };
        assert_eq!(
            parse("amqp://guest:guest@127.0.0.1:5697/%2f"),
            Ok(t("guest", "guest", "127.0.0.1", 5697, "/"))
        );
        assert_eq!(
            parse("amqp://localhost"),
            Ok(t("guest", "guest", "localhost", 5672, "/"))
        );
        assert_eq!(
            parse("amqp://u%40x:p%3Aw@h/"),
            Ok(t("u@x", "p:w", "h", 5672, ""))
        );
        assert_eq!(
            parse("amqp://a:b@[::1]:5700/shop%2Feu?heartbeat=10"),
            Ok(t("a", "b", "::1", 5700, "shop/eu"))
        );
        assert!(parse("amqps://h").is_err());
        assert!(parse("http://h").is_err());
        assert!(parse("h:5672").is_err());
        assert!(parse("amqp://h:port").is_err());
        assert!(parse("amqp://h/%zz").is_err());
        assert!(parse("amqp://h/%f").is_err());
    }
}
