//! Watches the node's memory and disk and raises or clears the resource alarms
//! ([`warren_resources::alarm`]) once a second.
//!
//! Memory is the process's resident set (what the kernel would reclaim the machine
//! for), against the high watermark: a fraction of the machine's RAM (default 0.4, as
//! RabbitMQ) or an absolute size. Disk is the free space of the file system holding
//! the data directory, against the free-space limit (default 50 MB). Both limits can
//! be changed while the node runs (`warren limits`).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use warren_cluster::protocol::LimitsInfo;
use warren_resources::alarm::{evaluate, AlarmState, Alarms, MemoryLimit};
use warren_resources::queue_memory::QueueMemory;

/// How often memory and disk are measured.
const EVERY: Duration = Duration::from_secs(1);

/// The limits in force.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub memory: MemoryLimit,
    pub disk_free: u64,
}

/// The node's resource monitor (shared with the admin requests).
pub struct Resources {
    alarms: Alarms,
    /// Sized from the memory high watermark at each check.
    queue_memory: Arc<QueueMemory>,
    limits: RwLock<Limits>,
    data_dir: PathBuf,
    total_ram: u64,
}

impl Resources {
    pub fn new(
        alarms: Alarms,
        limits: Limits,
        data_dir: PathBuf,
        queue_memory: Arc<QueueMemory>,
    ) -> Arc<Resources> {
        Arc::new(Resources {
            alarms,
            queue_memory,
            limits: RwLock::new(limits),
            data_dir,
            total_ram: total_ram().unwrap_or(u64::MAX),
        })
    }

    fn limits(&self) -> Limits {
        *self.limits.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Measures now, sets the alarms, and says what it saw.
    pub fn check(&self) -> LimitsInfo {
        let limits = self.limits();
        let memory_used = resident_memory().unwrap_or(0);
        let memory_limit = limits.memory.bytes(self.total_ram);
        self.queue_memory
            .set_limit(QueueMemory::limit_for_watermark(memory_limit));
        let disk_free = disk_free(&self.data_dir).unwrap_or(u64::MAX);
        let state = evaluate(memory_used, memory_limit, disk_free, limits.disk_free);
        let before = self.alarms.current();
        if state != before {
            log_change(
                before,
                state,
                memory_used,
                memory_limit,
                disk_free,
                limits.disk_free,
            );
        }
        self.alarms.set(state);
        LimitsInfo {
            memory_used,
            memory_limit,
            memory_limit_setting: limits.memory.to_string(),
            disk_free,
            disk_free_limit: limits.disk_free,
            memory_alarm: state.memory,
            disk_alarm: state.disk,
            queue_memory_used: self.queue_memory.used(),
            queue_memory_limit: self.queue_memory.limit(),
        }
    }

    /// Changes the limits (until the node restarts) and re-checks at once.
    pub fn set(&self, memory: Option<MemoryLimit>, disk_free: Option<u64>) -> LimitsInfo {
        {
            let mut limits = self.limits.write().unwrap_or_else(|p| p.into_inner());
            if let Some(m) = memory {
                limits.memory = m;
            }
            if let Some(d) = disk_free {
                limits.disk_free = d;
            }
        }
        self.check()
    }

    /// Runs for the node's life.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(EVERY);
        loop {
            tick.tick().await;
            self.check();
        }
    }
}

fn log_change(
    before: AlarmState,
    now: AlarmState,
    memory_used: u64,
    memory_limit: u64,
    disk_free: u64,
    disk_limit: u64,
) {
    use warren_resources::alarm::show_size;
    if now.memory != before.memory {
        if now.memory {
            tracing::warn!(
                "memory alarm: {} resident, high watermark {}; publishers are blocked",
                show_size(memory_used),
                show_size(memory_limit)
            );
        } else {
            tracing::info!("memory alarm cleared: {} resident", show_size(memory_used));
        }
    }
    if now.disk != before.disk {
        if now.disk {
            tracing::warn!(
                "disk alarm: {} free, limit {}; publishers are blocked",
                show_size(disk_free),
                show_size(disk_limit)
            );
        } else {
            tracing::info!("disk alarm cleared: {} free", show_size(disk_free));
        }
    }
}

/// The process's resident set size, from `/proc/self/statm`.
fn resident_memory() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// The machine's RAM, from `/proc/meminfo`.
fn total_ram() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Bytes available to the node on the file system of `path`.
fn disk_free(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: c_path is a valid NUL-terminated string and stat points to writable
    // memory of the right type; statvfs initialises it when it returns 0.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    #[allow(clippy::useless_conversion)] // the field types differ between targets
    Some(u64::from(stat.f_bavail).saturating_mul(u64::from(stat.f_frsize)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_can_be_measured() {
        let rss = resident_memory().expect("statm");
        assert!(rss > 0);
        assert!(total_ram().expect("meminfo") > rss);
        assert!(disk_free(std::path::Path::new(".")).is_some());
    }

    #[test]
    fn a_lowered_watermark_raises_the_memory_alarm_and_raising_it_clears() {
        let alarms = Alarms::default();
        let queue_memory = QueueMemory::new(0);
        let resources = Resources::new(
            alarms.clone(),
            Limits {
                memory: MemoryLimit::DEFAULT,
                disk_free: 1,
            },
            PathBuf::from("."),
            queue_memory.clone(),
        );
        assert!(!resources.check().memory_alarm);
        let info = resources.set(Some(MemoryLimit::Bytes(1)), None);
        assert!(info.memory_alarm && alarms.current().memory);
        assert_eq!(
            queue_memory.limit(),
            0,
            "the queue memory follows the watermark"
        );
        assert_eq!(alarms.current().reason(), "low on memory");
        assert!(
            !resources
                .set(Some(MemoryLimit::Bytes(4 << 30)), None)
                .memory_alarm
        );
        assert_eq!(queue_memory.limit(), 2 << 30);
        assert!(!alarms.current().raised());
        assert!(resources.set(None, Some(u64::MAX)).disk_alarm);
    }
}
