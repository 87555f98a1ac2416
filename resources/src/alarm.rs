//! Resource alarms: the node is low on memory or on disk, so publishers are held back
//! until it is not (RabbitMQ's memory and disk alarms).
//!
//! The node measures (its resident memory, the free space of its data directory's
//! file system) and raises or clears the alarms here; AMQP connections watch them:
//! a connection that publishes while an alarm is up stops being read and is told
//! `connection.blocked`, and `connection.unblocked` once every alarm cleared.
//! Consumers are not held back: they are what frees memory and disk.
//!
//! The limits and their evaluation are pure and tested here; the sampling of the
//! process and the file system is the node's.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// Which alarms are up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmState {
    /// The node's resident memory is at or above the high watermark.
    pub memory: bool,
    /// The data directory's file system has less free space than the limit.
    pub disk: bool,
}

impl AlarmState {
    /// Whether any alarm is up (publishers are held back).
    pub fn raised(&self) -> bool {
        self.memory || self.disk
    }

    /// The reason a blocked connection is given (RabbitMQ's words).
    pub fn reason(&self) -> &'static str {
        match (self.memory, self.disk) {
            (true, true) => "low on memory and disk",
            (true, false) => "low on memory",
            (false, true) => "low on disk",
            (false, false) => "",
        }
    }
}

/// The node's alarms, shared by whoever raises them and whoever watches (cheap to
/// clone).
#[derive(Clone)]
pub struct Alarms {
    state: Arc<watch::Sender<AlarmState>>,
}

impl Default for Alarms {
    fn default() -> Self {
        Alarms {
            state: Arc::new(watch::Sender::new(AlarmState::default())),
        }
    }
}

impl Alarms {
    /// Sets the alarms; watchers wake only if something changed.
    pub fn set(&self, state: AlarmState) {
        self.state.send_if_modified(|current| {
            let changed = *current != state;
            *current = state;
            changed
        });
    }

    /// The alarms up right now.
    pub fn current(&self) -> AlarmState {
        *self.state.borrow()
    }

    /// A receiver that wakes whenever the alarms change (a connection's publisher gate).
    pub fn watch(&self) -> watch::Receiver<AlarmState> {
        self.state.subscribe()
    }
}

/// The memory high watermark: a fraction of the machine's RAM, or an absolute size.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum MemoryLimit {
    /// A fraction of the machine's RAM (above 0, at most 1), so that one setting fits
    /// machines of every size.
    Fraction(f64),
    /// An absolute size in bytes.
    Bytes(u64),
}

impl MemoryLimit {
    /// RabbitMQ's default: 40 % of the machine's RAM.
    pub const DEFAULT: MemoryLimit = MemoryLimit::Fraction(0.4);

    /// The limit in bytes on a machine with `total_ram` bytes.
    pub fn bytes(&self, total_ram: u64) -> u64 {
        match *self {
            MemoryLimit::Fraction(f) => (total_ram as f64 * f) as u64,
            MemoryLimit::Bytes(b) => b,
        }
    }

    /// `0.4` (a fraction of RAM, above 0 and at most 1) or a size such as `512MiB`.
    pub fn parse(text: &str) -> Result<MemoryLimit, String> {
        let text = text.trim();
        if let Ok(f) = text.parse::<f64>() {
            if f > 0.0 && f <= 1.0 {
                return Ok(MemoryLimit::Fraction(f));
            }
            return Err(format!(
                "memory high watermark '{text}': a fraction of RAM must be above 0 and at most 1 (e.g. 0.4), or give a size such as 512MiB"
            ));
        }
        parse_size(text)
            .map(MemoryLimit::Bytes)
            .map_err(|e| format!("memory high watermark {e}"))
    }
}

impl std::fmt::Display for MemoryLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemoryLimit::Fraction(x) => write!(f, "{x} of RAM"),
            MemoryLimit::Bytes(b) => write!(f, "{}", show_size(*b)),
        }
    }
}

/// RabbitMQ's default disk free limit: 50 MB.
pub const DEFAULT_DISK_FREE_LIMIT: u64 = 50_000_000;

/// A size with a unit: `B`, `kB`/`MB`/`GB` (powers of 1000), `KiB`/`MiB`/`GiB`
/// (powers of 1024). A bare number is refused: say what it counts.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let unit_factor = match unit.trim() {
        "B" => 1,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "" => {
            return Err(format!(
                "'{text}' has no unit: write e.g. 512MiB, 2GB or 50MB"
            ))
        }
        other => {
            return Err(format!(
                "'{text}': unknown unit '{other}' (use B, kB, MB, GB, KiB, MiB or GiB)"
            ))
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' does not start with a whole number"))?;
    n.checked_mul(unit_factor)
        .ok_or_else(|| format!("'{text}' is too large"))
}

/// A size for people: `512.0 MiB`.
pub fn show_size(bytes: u64) -> String {
    let b = bytes as f64;
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", b / f64::from(1u32 << 30))
    } else if bytes >= 1 << 20 {
        format!("{:.1} MiB", b / f64::from(1u32 << 20))
    } else if bytes >= 1 << 10 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

/// Which alarms a measurement raises: memory at or above its limit, free disk
/// space below its limit.
pub fn evaluate(
    memory_used: u64,
    memory_limit: u64,
    disk_free: u64,
    disk_limit: u64,
) -> AlarmState {
    AlarmState {
        memory: memory_used >= memory_limit,
        disk: disk_free < disk_limit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_as_rabbitmq_writes_them() {
        assert_eq!(MemoryLimit::parse("0.4"), Ok(MemoryLimit::Fraction(0.4)));
        assert_eq!(MemoryLimit::parse("1"), Ok(MemoryLimit::Fraction(1.0)));
        assert_eq!(
            MemoryLimit::parse("512MiB"),
            Ok(MemoryLimit::Bytes(512 << 20))
        );
        assert_eq!(
            MemoryLimit::parse("2GB"),
            Ok(MemoryLimit::Bytes(2_000_000_000))
        );
        assert!(MemoryLimit::parse("0").unwrap_err().contains("above 0"));
        assert!(MemoryLimit::parse("1.5").unwrap_err().contains("at most 1"));
        assert!(MemoryLimit::parse("12 bananas")
            .unwrap_err()
            .contains("unknown unit"));
        assert_eq!(parse_size("50MB"), Ok(50_000_000));
        assert_eq!(parse_size("1 KiB"), Ok(1024));
        assert!(parse_size("100").unwrap_err().contains("no unit"));
        assert!(parse_size("MiB").unwrap_err().contains("whole number"));
        assert!(parse_size("99999999999999GiB")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn alarms_follow_the_measurements() {
        let ram = 8u64 << 30;
        let limit = MemoryLimit::DEFAULT.bytes(ram);
        assert_eq!(limit, (ram as f64 * 0.4) as u64);
        assert!(!evaluate(limit - 1, limit, 1 << 30, DEFAULT_DISK_FREE_LIMIT).raised());
        assert_eq!(
            evaluate(limit, limit, 1 << 30, DEFAULT_DISK_FREE_LIMIT),
            AlarmState {
                memory: true,
                disk: false
            }
        );
        let both = evaluate(limit, limit, 1, DEFAULT_DISK_FREE_LIMIT);
        assert_eq!(both.reason(), "low on memory and disk");
    }

    #[tokio::test]
    async fn watchers_wake_on_changes_only() {
        let alarms = Alarms::default();
        let mut w = alarms.watch();
        alarms.set(AlarmState::default());
        assert!(!w.has_changed().unwrap());
        alarms.set(AlarmState {
            memory: true,
            disk: false,
        });
        assert!(w.has_changed().unwrap());
        assert_eq!(w.borrow_and_update().reason(), "low on memory");
    }
}
