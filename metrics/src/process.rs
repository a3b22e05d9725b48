//! Process figures from `/proc/self` (Linux; absent elsewhere), named as the Prometheus
//! client libraries name them: `process_resident_memory_bytes`,
//! `process_virtual_memory_bytes`, `process_cpu_seconds_total`, `process_threads`,
//! `process_open_fds` and `process_start_time_seconds`.
//!
//! CPU times in `/proc/self/stat` are in clock ticks; Linux reports them in USER_HZ, which
//! is 100 on every architecture it exposes to user space.

use crate::snapshot::Snapshot;

const USER_HZ: f64 = 100.0;

/// What `/proc/self` says about this process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    /// Resident set size, bytes (`VmRSS`).
    pub rss_bytes: u64,
    /// Virtual memory size, bytes (`VmSize`).
    pub virtual_bytes: u64,
    /// User plus system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Threads.
    pub threads: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// Start time, seconds since the Unix epoch (0 when unknown).
    pub start_time_seconds: f64,
}

fn kib_field(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// Fields of `/proc/<pid>/stat` after the command name, numbered as in proc(5) from 3.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().collect())
}

fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("btime "))?;
    line[6..].trim().parse().ok()
}

/// Reads the current figures; `None` where `/proc/self` is not available.
pub fn read() -> Option<ProcessStats> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let f = stat_fields(&stat)?;
    // proc(5): field 14 utime, 15 stime, 20 num_threads, 22 starttime; `f[0]` is field 3.
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let ticks = field(14).unwrap_or(0) + field(15).unwrap_or(0);
    let start_time_seconds = match (boot_time(), field(22)) {
        (Some(boot), Some(start)) => boot + start as f64 / USER_HZ,
        _ => 0.0,
    };
    let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    Some(ProcessStats {
        rss_bytes: kib_field(&status, "VmRSS:").unwrap_or(0),
        virtual_bytes: kib_field(&status, "VmSize:").unwrap_or(0),
        cpu_seconds: ticks as f64 / USER_HZ,
        threads: field(20).unwrap_or(0),
        open_fds,
        start_time_seconds,
    })
}

/// Adds the process families to `snap` (nothing when `/proc/self` is not available).
pub fn collect(snap: &mut Snapshot) {
    let Some(p) = read() else { return };
    snap.gauge(
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        vec![],
        p.rss_bytes as f64,
    );
    snap.gauge(
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        vec![],
        p.virtual_bytes as f64,
    );
    snap.counter(
        "process_cpu_seconds",
        "Total user and system CPU time spent in seconds.",
        vec![],
        p.cpu_seconds,
    );
    snap.gauge(
        "process_threads",
        "Number of OS threads.",
        vec![],
        p.threads as f64,
    );
    snap.gauge(
        "process_open_fds",
        "Number of open file descriptors.",
        vec![],
        p.open_fds as f64,
    );
    snap.gauge(
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch in seconds.",
        vec![],
        p.start_time_seconds,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let stat = "42 (a b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 7 0 1000 0 0";
        let f = stat_fields(stat).unwrap();
        assert_eq!(f[0], "S");
        assert_eq!(f[14 - 3], "250");
        assert_eq!(f[20 - 3], "7");
    }

    #[test]
    fn reads_this_process() {
        if let Some(p) = read() {
            assert!(p.rss_bytes > 0 && p.threads > 0 && p.open_fds > 0);
            assert!(p.start_time_seconds > 1.0e9);
        }
    }
}
