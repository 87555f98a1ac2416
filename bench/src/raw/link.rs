//! One AMQP 0-9-1 connection with one channel, for the bench: the URI, the handshake,
//! and the socket (large writes, large reads, the broker's closes turned into errors).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::wire::{self, Incoming, Method, Reader};
use crate::account::SILENCE;

/// Bytes read at once (and the reader's starting capacity).
const READ_CHUNK: usize = 256 * 1024;
/// What a frame may be before connection.tune says (generous: the spec's minimum is 4096).
const HANDSHAKE_FRAME_MAX: u32 = 1 << 20;
/// frame_max when the broker proposes 0 (no limit).
const DEFAULT_FRAME_MAX: u32 = 131_072;

/// One connection with its channel 1 open. Bytes to send gather in `out`.
pub struct Link {
    stream: TcpStream,
    reader: Reader,
    pub out: Vec<u8>,
}

impl Link {
    /// Connects and opens channel 1 (PLAIN login, the broker's frame_max, no heartbeats).
    pub async fn open(uri: &str) -> Result<Link, String> {
        let target = crate::uri::parse(uri)?;
        let address = format!("{}:{}", target.host, target.port);
        let stream = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| format!("cannot connect to {address}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let mut link = Link {
            stream,
            reader: Reader::new(READ_CHUNK, HANDSHAKE_FRAME_MAX),
            out: Vec::with_capacity(128 * 1024),
        };
        link.handshake(&target)
            .await
            .map_err(|e| format!("AMQP handshake with {address}: {e}"))?;
        Ok(link)
    }

    async fn handshake(&mut self, target: &crate::uri::Target) -> Result<(), String> {
        self.out.extend_from_slice(wire::PROTOCOL_HEADER);
        self.flush().await?;
        let start = self
            .reply("connection.start", |m| matches!(m, Method::Start { .. }))
            .await?;
        if let Method::Start { mechanisms } = start {
            if !mechanisms.split(' ').any(|m| m == "PLAIN") {
                return Err(format!(
                    "the broker offers no PLAIN login (mechanisms: {mechanisms})"
                ));
            }
        }
        let tune = self
            .call(
                "connection.start-ok",
                wire::start_ok(&target.user, &target.password),
                |m| matches!(m, Method::Tune { .. } | Method::Secure),
            )
            .await?;
        let Method::Tune {
            channel_max,
            frame_max,
        } = tune
        else {
            return Err(
                "the broker asked for a SASL challenge; the bench logs in with PLAIN".into(),
            );
        };
        let frame_max = if frame_max == 0 {
            DEFAULT_FRAME_MAX
        } else {
            frame_max
        };
        if frame_max < 4096 {
            return Err(format!("the broker's frame_max {frame_max} is below 4096"));
        }
        self.out
            .extend_from_slice(&wire::tune_ok(channel_max, frame_max));
        self.reader.frame_max = frame_max;
        self.call(
            "connection.open",
            wire::connection_open(&target.vhost)?,
            |m| *m == Method::OpenOk,
        )
        .await?;
        self.call("channel.open", wire::channel_open(), |m| {
            *m == Method::ChannelOpenOk
        })
        .await?;
        Ok(())
    }

    /// The frame_max both sides agreed on.
    pub fn frame_max(&self) -> u32 {
        self.reader.frame_max
    }

    /// Writes everything in `out`.
    pub async fn flush(&mut self) -> Result<(), String> {
        if self.out.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.stream.write_all(&self.out).await {
            // The broker may have said why before it hung up.
            let _ = self.try_fill();
            while self.next()?.is_some() {}
            return Err(format!("cannot write to the broker: {e}"));
        }
        self.out.clear();
        Ok(())
    }

    fn make_room(&mut self) {
        let buf = &mut self.reader.buf;
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
    }

    /// Waits for more bytes from the broker: how many (0 when it closed the TCP
    /// connection). A broker silent for `SILENCE` is an error, not a hang (a refused
    /// or lost message leaves a consumer short of its quota for ever).
    async fn read_some(&mut self) -> Result<usize, String> {
        self.make_room();
        match tokio::time::timeout(SILENCE, self.stream.read_buf(&mut self.reader.buf)).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(format!("cannot read from the broker: {e}")),
            Err(_) => Err(format!(
                "the broker sent nothing for {} s",
                SILENCE.as_secs()
            )),
        }
    }

    /// Waits for more bytes from the broker.
    pub async fn fill(&mut self) -> Result<(), String> {
        match self.read_some().await? {
            0 => Err("the broker closed the TCP connection".into()),
            _ => Ok(()),
        }
    }

    /// Takes whatever bytes the broker has sent, without waiting.
    pub fn try_fill(&mut self) -> Result<(), String> {
        self.make_room();
        match self.stream.try_read_buf(&mut self.reader.buf) {
            Ok(0) => Err("the broker closed the TCP connection".into()),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(format!("cannot read from the broker: {e}")),
        }
    }

    /// The next delivery or method read so far. The broker's connection.close and
    /// channel.close are errors with its reply code and text (answered with close-ok);
    /// connection.blocked and unblocked pass (a blocked broker just stops reading).
    pub fn next(&mut self) -> Result<Option<Incoming>, String> {
        loop {
            match self.reader.next()? {
                Some(Incoming::Method(Method::Close { code, text })) => {
                    let _ = self.stream.try_write(&wire::connection_close_ok());
                    return Err(format!("the broker closed the connection: {code} {text}"));
                }
                Some(Incoming::Method(Method::ChannelClose { code, text })) => {
                    let _ = self.stream.try_write(&wire::channel_close_ok());
                    return Err(format!("the broker closed the channel: {code} {text}"));
                }
                Some(Incoming::Method(Method::Blocked | Method::Unblocked)) => continue,
                other => return Ok(other),
            }
        }
    }

    /// Waits for the method `expected` accepts (anything else first is an error).
    async fn reply(
        &mut self,
        what: &str,
        expected: impl Fn(&Method) -> bool,
    ) -> Result<Method, String> {
        let fail = |e: String| format!("{what}: {e}");
        loop {
            match self.next().map_err(fail)? {
                Some(Incoming::Method(m)) if expected(&m) => return Ok(m),
                Some(other) => return Err(fail(format!("unexpected {}", describe(&other)))),
                None => self.fill().await.map_err(fail)?,
            }
        }
    }

    /// Sends a method (after whatever `out` holds) and waits for its reply.
    pub async fn call(
        &mut self,
        what: &str,
        method: Vec<u8>,
        expected: impl Fn(&Method) -> bool,
    ) -> Result<Method, String> {
        self.out.extend_from_slice(&method);
        self.flush().await.map_err(|e| format!("{what}: {e}"))?;
        self.reply(what, expected).await
    }

    /// Closes the connection and waits for the broker's close-ok: every frame sent
    /// before (publishes, acks) has been handled by then, and what the broker had
    /// delivered beyond our acks goes back to the queue.
    pub async fn close(mut self) -> Result<(), String> {
        self.out.extend_from_slice(&wire::connection_close());
        self.flush().await?;
        loop {
            match self.next().map_err(|e| format!("connection.close: {e}"))? {
                Some(Incoming::Method(Method::CloseOk)) => return Ok(()),
                Some(_) => continue,
                None => {
                    let read = self.read_some().await;
                    // Closed without close-ok: gone all the same.
                    if read.map_err(|e| format!("connection.close: {e}"))? == 0 {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// A frame's name for error texts.
pub fn describe(incoming: &Incoming) -> String {
    match incoming {
        Incoming::Delivery { tag, .. } => format!("delivery (tag {tag})"),
        Incoming::Method(Method::Other { class, method }) => format!("method {class}.{method}"),
        Incoming::Method(m) => format!("{m:?}"),
    }
}
