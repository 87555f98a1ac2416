//! Adaptive input coalescing: a busy connection is read in larger pieces.
//!
//! Measured on this machine (docs/benchmarks.md): about 9 of the 15 µs of broker CPU
//! an AMQP message cost were kernel work done once per socket read, write and epoll
//! wake-up, because a connection was woken for every message or two. When a client
//! sends fast, the socket's receive low-water mark (`SO_RCVLOWAT`) is raised to what
//! arrives in about 200 µs (at most 16 KiB), so the connection wakes once per batch;
//! below about 30 MB/s it stays at one byte (every byte wakes it: no added latency
//! for clients that do not saturate the node). A fallback read 1 ms after the last one takes whatever is left
//! below the mark and turns coalescing off until the rate is measured again, so a
//! client that goes quiet is never left waiting longer than that.

use std::os::fd::RawFd;
use std::time::Duration;

use tokio::time::Instant;

/// The rate is measured over windows this long.
const WINDOW: Duration = Duration::from_millis(50);
/// A raised mark holds about this much input.
const LINGER: Duration = Duration::from_micros(200);
/// The highest mark.
const MAX_MARK: u64 = 16 * 1024;
/// Below this input rate (bytes per second) there is no mark. Measured: at 20 MB/s
/// (20 k msg/s of 1 KiB, sent in 1 ms bursts) a mark put the tail of each burst
/// behind the 1 ms fallback (p99 1.4 ms instead of 0.2 ms); above ~30 MB/s the wake-
/// ups are what limits the node.
const MIN_RATE: u64 = 30_000_000;
/// A raised mark is given up when nothing was read for this long.
pub const FALLBACK: Duration = Duration::from_millis(1);

/// The receive low-water mark of one connection's socket and the input rate it
/// follows.
pub struct Coalescing {
    fd: RawFd,
    mark: u64,
    window_start: Instant,
    window_bytes: u64,
}

/// The mark for an input rate: 1 (off) when slow, else ~200 µs of input.
fn mark_for(bytes_per_sec: u64) -> u64 {
    if bytes_per_sec < MIN_RATE {
        1
    } else {
        (bytes_per_sec * LINGER.as_micros() as u64 / 1_000_000).clamp(1, MAX_MARK)
    }
}

impl Coalescing {
    /// Starts with the mark at one byte (off) for the socket `fd`.
    pub fn new(fd: RawFd) -> Self {
        Coalescing {
            fd,
            mark: 1,
            window_start: Instant::now(),
            window_bytes: 0,
        }
    }

    /// Whether a mark is raised (and the fallback read must be armed).
    pub fn active(&self) -> bool {
        self.mark > 1
    }

    /// After a read of `n` bytes: at the end of a window, sets the mark for the rate.
    pub fn on_read(&mut self, n: usize, now: Instant) {
        self.window_bytes += n as u64;
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= WINDOW {
            let rate = self.window_bytes * 1_000_000 / (elapsed.as_micros().max(1) as u64);
            self.set(mark_for(rate));
            self.window_start = now;
            self.window_bytes = 0;
        }
    }

    /// The input slowed down: every byte wakes the connection again.
    pub fn off(&mut self, now: Instant) {
        self.set(1);
        self.window_start = now;
        self.window_bytes = 0;
    }

    fn set(&mut self, mark: u64) {
        if mark == self.mark {
            return;
        }
        let value = mark as libc::c_int;
        // SAFETY: fd is the connection's open socket; value lives across the call.
        let rc = unsafe {
            libc::setsockopt(
                self.fd,
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            self.mark = mark;
        }
    }

    /// Reads what the socket holds without waiting for readiness (epoll does not
    /// report bytes below the mark), appending to `buf` up to its spare capacity.
    /// `Ok(0)` is the end of the stream.
    pub fn read_now(&self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        let spare = buf.spare_capacity_mut();
        // SAFETY: `spare` is valid for writes of spare.len() bytes; recv initialises
        // the first n of them, and only those are added to the length.
        let n = unsafe {
            libc::recv(
                self.fd,
                spare.as_mut_ptr().cast(),
                spare.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = n as usize;
        // SAFETY: see above; n <= spare.len().
        unsafe { buf.set_len(buf.len() + n) };
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_follows_the_rate() {
        assert_eq!(mark_for(0), 1);
        assert_eq!(mark_for(20_000_000), 1); // 20 k msg/s of 1 KiB: every byte wakes it
        assert_eq!(mark_for(50_000_000), 10_000); // 50 k msg/s: ~10 messages
        assert_eq!(mark_for(1_000_000_000), MAX_MARK);
    }
}
