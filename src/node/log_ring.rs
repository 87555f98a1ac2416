//! The node's recent log lines, kept in memory for the debug shell's `log` command.
//!
//! A [`tracing_subscriber::Layer`] that formats each event (message and fields) into a
//! [`LogLine`] and keeps the last [`CAPACITY`] of them, whatever the node's `--log`
//! filter prints: the shell can ask for `debug` lines on a node that prints `info`.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;
use warren_cluster::protocol::LogLine;

/// Lines kept.
pub const CAPACITY: usize = 2000;

/// The ring of recent lines; one per process.
#[derive(Default)]
pub struct LogRing {
    lines: Mutex<VecDeque<(Level, LogLine)>>,
}

impl LogRing {
    /// The process's ring.
    pub fn global() -> Arc<LogRing> {
        static RING: OnceLock<Arc<LogRing>> = OnceLock::new();
        RING.get_or_init(Default::default).clone()
    }

    /// A layer that records into this ring (events at `max` or more severe).
    pub fn layer(self: &Arc<Self>, max: Level) -> RingLayer {
        RingLayer {
            ring: self.clone(),
            max,
        }
    }

    pub fn push(&self, level: Level, line: LogLine) {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() == CAPACITY {
            lines.pop_front();
        }
        lines.push_back((level, line));
    }

    /// The last `count` lines at `level` or more severe, oldest first.
    pub fn recent(&self, level: Level, count: usize) -> Vec<LogLine> {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<LogLine> = lines
            .iter()
            .rev()
            .filter(|(l, _)| *l <= level)
            .take(count)
            .map(|(_, line)| line.clone())
            .collect();
        out.reverse();
        out
    }
}

/// Parses a level name as the shell's `log --level` takes it.
pub fn parse_level(name: &str) -> Result<Level, String> {
    name.parse::<Level>()
        .map_err(|_| format!("unknown log level '{name}': use error, warn, info, debug or trace"))
}

pub struct RingLayer {
    ring: Arc<LogRing>,
    max: Level,
}

impl<S: Subscriber> Layer<S> for RingLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > self.max {
            return;
        }
        let mut text = TextVisitor::default();
        event.record(&mut text);
        self.ring.push(
            level,
            LogLine {
                time: rfc3339(SystemTime::now()),
                level: level.to_string(),
                text: text.0,
            },
        );
    }
}

/// "message key=value key=value".
#[derive(Default)]
struct TextVisitor(String);

impl Visit for TextVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let sep = if self.0.is_empty() { "" } else { " " };
        if field.name() == "message" {
            let _ = write!(self.0, "{sep}{value:?}");
        } else {
            let _ = write!(self.0, "{sep}{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let sep = if self.0.is_empty() { "" } else { " " };
        if field.name() == "message" {
            let _ = write!(self.0, "{sep}{value}");
        } else {
            let _ = write!(self.0, "{sep}{}={value}", field.name());
        }
    }
}

/// `2026-11-24T17:03:51.361Z`.
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, dd) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's
/// algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // `date -u -d @1795367031` says 2026-11-22T17:03:51.
        let t = UNIX_EPOCH + Duration::from_millis(1_795_367_031_361);
        assert_eq!(rfc3339(t), "2026-11-22T17:03:51.361Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn the_ring_keeps_the_last_lines_and_filters_by_level() {
        let ring = LogRing::default();
        for i in 0..CAPACITY + 5 {
            let level = if i % 2 == 0 {
                Level::INFO
            } else {
                Level::DEBUG
            };
            ring.push(
                level,
                LogLine {
                    time: String::new(),
                    level: level.to_string(),
                    text: i.to_string(),
                },
            );
        }
        let all = ring.recent(Level::TRACE, usize::MAX);
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all.last().map(|l| l.text.as_str()), Some("2004"));
        let info = ring.recent(Level::INFO, 2);
        let texts: Vec<_> = info.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, vec!["2002", "2004"]);
        assert!(parse_level("verbose")
            .unwrap_err()
            .contains("unknown log level"));
        assert_eq!(parse_level("warn"), Ok(Level::WARN));
    }
}
