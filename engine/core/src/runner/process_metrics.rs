//! The process's own figures in /metrics, read from `/proc/self` at scrape time (Linux; on
//! other systems the gauges stay 0): resident and virtual memory, CPU time, threads, open and
//! allowed file descriptors, and the start time. Named `huizhen_process_*` (the registry's
//! prefix), with the meanings of the Prometheus client libraries' `process_*` series.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type F64Gauge = Gauge<f64, AtomicU64>;

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on every Linux architecture
/// the engine runs on).
const TICKS_PER_SECOND: f64 = 100.0;

pub(crate) struct ProcessMetrics {
    resident: Gauge,
    virtual_bytes: Gauge,
    cpu: F64Gauge,
    threads: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
    start: F64Gauge,
}

/// What `/proc/self` says, parsed (pure, for tests).
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Sample {
    pub resident_bytes: Option<i64>,
    pub virtual_bytes: Option<i64>,
    pub threads: Option<i64>,
    pub cpu_seconds: Option<f64>,
    /// Seconds after boot.
    pub start_after_boot: Option<f64>,
    pub max_fds: Option<i64>,
}

impl ProcessMetrics {
    pub(crate) fn register(registry: &mut Registry) -> ProcessMetrics {
        let m = ProcessMetrics {
            resident: Gauge::default(),
            virtual_bytes: Gauge::default(),
            cpu: F64Gauge::default(),
            threads: Gauge::default(),
            open_fds: Gauge::default(),
            max_fds: Gauge::default(),
            start: F64Gauge::default(),
        };
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory (RSS) of the engine process, bytes",
            m.resident.clone(),
        );
        registry.register(
            "process_virtual_memory_bytes",
            "Virtual memory of the engine process, bytes",
            m.virtual_bytes.clone(),
        );
        registry.register(
            "process_cpu_seconds",
            "CPU time (user and system) the engine process has used, seconds",
            m.cpu.clone(),
        );
        registry.register(
            "process_threads",
            "Threads of the engine process",
            m.threads.clone(),
        );
        registry.register(
            "process_open_fds",
            "Open file descriptors (sockets, files) of the engine process",
            m.open_fds.clone(),
        );
        registry.register(
            "process_max_fds",
            "The engine process's limit of open file descriptors (soft RLIMIT_NOFILE)",
            m.max_fds.clone(),
        );
        registry.register(
            "process_start_time_seconds",
            "When the engine process started, Unix seconds",
            m.start.clone(),
        );
        m.sample();
        m
    }

    /// Reads `/proc/self` into the gauges; what cannot be read is left as it was.
    pub(crate) fn sample(&self) {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        let s = parse(
            read("/proc/self/status").as_deref(),
            read("/proc/self/stat").as_deref(),
            read("/proc/self/limits").as_deref(),
        );
        if let Some(v) = s.resident_bytes {
            self.resident.set(v);
        }
        if let Some(v) = s.virtual_bytes {
            self.virtual_bytes.set(v);
        }
        if let Some(v) = s.threads {
            self.threads.set(v);
        }
        if let Some(v) = s.cpu_seconds {
            self.cpu.set(v);
        }
        if let Some(v) = s.max_fds {
            self.max_fds.set(v);
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // The directory handle itself is one of them.
            self.open_fds.set((dir.count() as i64 - 1).max(0));
        }
        if let (Some(after_boot), Some(boot)) = (
            s.start_after_boot,
            read("/proc/stat").as_deref().and_then(boot_time),
        ) {
            self.start.set(boot + after_boot);
        }
    }
}

/// Parses `/proc/self/status` (VmRSS, VmSize, Threads), `/proc/self/stat` (utime, stime,
/// starttime) and `/proc/self/limits` (Max open files).
pub(crate) fn parse(status: Option<&str>, stat: Option<&str>, limits: Option<&str>) -> Sample {
    let mut s = Sample::default();
    if let Some(status) = status {
        for line in status.lines() {
            let (key, rest) = line.split_once(':').unwrap_or((line, ""));
            let first = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<i64>().ok());
            match key {
                "VmRSS" => s.resident_bytes = first.map(|kb| kb * 1024),
                "VmSize" => s.virtual_bytes = first.map(|kb| kb * 1024),
                "Threads" => s.threads = first,
                _ => {}
            }
        }
    }
    if let Some(stat) = stat
        && let Some((_, after)) = stat.rsplit_once(')')
    {
        // After the command name: field 3 (state) is the first; utime is 14, stime 15,
        // starttime 22.
        let fields: Vec<&str> = after.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        if let (Some(u), Some(k)) = (field(14), field(15)) {
            s.cpu_seconds = Some((u + k) / TICKS_PER_SECOND);
        }
        s.start_after_boot = field(22).map(|t| t / TICKS_PER_SECOND);
    }
    if let Some(limits) = limits {
        s.max_fds = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse().ok());
    }
    s
}

/// `btime` of `/proc/stat`: when the system booted, Unix seconds.
fn boot_time(stat: &str) -> Option<f64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read() {
        let status = "Name:\thuizhen\nVmSize:\t  200000 kB\nVmRSS:\t   51200 kB\nThreads:\t9\n";
        let stat = "4242 (huizhen (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 123456 204800000 12800 18446744073709551615";
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \nMax cpu time              unlimited            unlimited            seconds   \nMax open files            1024                 524288               files     \n";
        let s = parse(Some(status), Some(stat), Some(limits));
        assert_eq!(s.resident_bytes, Some(51200 * 1024));
        assert_eq!(s.virtual_bytes, Some(200000 * 1024));
        assert_eq!(s.threads, Some(9));
        assert_eq!(s.cpu_seconds, Some(3.0));
        assert_eq!(s.start_after_boot, Some(1234.56));
        assert_eq!(s.max_fds, Some(1024));
        assert_eq!(
            boot_time("cpu  1 2 3\nbtime 1700000000\n"),
            Some(1_700_000_000.0)
        );
        assert_eq!(parse(None, Some("garbage"), None), Sample::default());
    }
}
