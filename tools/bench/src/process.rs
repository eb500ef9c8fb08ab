//! What this process has used, from `/proc/self` (Linux): its peak resident
//! set (`VmHWM`) and its CPU time (user + system, all threads).

/// Peak RSS in MiB (0 where `/proc` is not there).
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU seconds used so far: `utime + stime` of `/proc/self/stat`, in clock
/// ticks of 1/100 s (Linux's USER_HZ on every architecture Lambda runs).
pub fn cpu_seconds() -> f64 {
    const TICKS_PER_SECOND: f64 = 100.0;
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses and may
            // hold spaces: state is field 3, utime 14 and stime 15.
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime = fields.get(11)?.parse::<f64>().ok()?;
            let stime = fields.get(12)?.parse::<f64>().ok()?;
            Some((utime + stime) / TICKS_PER_SECOND)
        })
        .unwrap_or(0.0)
}

/// CPU milliseconds per charge since `cpu_before` (seconds).
pub fn cpu_ms_per(cpu_before: f64, charged: u64) -> f64 {
    (cpu_seconds() - cpu_before) * 1000.0 / charged.max(1) as f64
}
