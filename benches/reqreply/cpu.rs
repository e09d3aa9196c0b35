//! CPU time of a process, from /proc: the sum of its threads' `schedstat` run time (ns), or,
//! where the kernel has no schedstat, `stat`'s utime + stime (clock ticks).

use std::fs;
use std::io;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// CPU time (user + system) the process `pid` has used so far.
pub fn process_cpu(pid: u32) -> io::Result<Duration> {
    match schedstat(pid) {
        Ok(d) => Ok(d),
        Err(_) => stat(pid),
    }
}

/// Busy time (everything but idle and iowait) of all CPUs together so far, from
/// `/proc/stat`, in clock ticks.
pub fn busy_ticks() -> u64 {
    let Ok(stat) = fs::read_to_string("/proc/stat") else {
        return 0;
    };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    at(0) + at(1) + at(2) + at(5) + at(6) + at(7)
}

/// Clock ticks per second (`getconf CLK_TCK`, else 100).
pub fn ticks_per_sec() -> u64 {
    clock_ticks()
}

/// Which source [`process_cpu`] reads, for the report.
pub fn source() -> &'static str {
    if schedstat(std::process::id()).is_ok() {
        "/proc/<pid>/task/*/schedstat (ns)"
    } else {
        "/proc/<pid>/stat utime+stime (clock ticks)"
    }
}

fn schedstat(pid: u32) -> io::Result<Duration> {
    let mut ns: u64 = 0;
    let mut found = false;
    for entry in fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = entry?.path().join("schedstat");
        // A thread may exit between listing and reading.
        let Ok(text) = fs::read_to_string(path) else {
            continue;
        };
        let first = text.split_whitespace().next().unwrap_or_default();
        ns += first
            .parse::<u64>()
            .map_err(|e| io::Error::other(format!("schedstat: {e}")))?;
        found = true;
    }
    if found {
        Ok(Duration::from_nanos(ns))
    } else {
        Err(io::Error::other("no schedstat"))
    }
}

fn stat(pid: u32) -> io::Result<Duration> {
    let (user, sys) = user_sys(pid)?;
    Ok(user + sys)
}

/// User and system CPU time of `pid` (all threads) from `/proc/<pid>/stat`: sampled at clock
/// ticks, so coarser than [`process_cpu`], but split.
pub fn user_sys(pid: u32) -> io::Result<(Duration, Duration)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = text
        .rsplit_once(") ")
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("malformed /proc stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the state.
    let ticks = |i: usize| -> io::Result<Duration> {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .map(|t| Duration::from_nanos(t * 1_000_000_000 / clock_ticks()))
            .ok_or_else(|| io::Error::other("malformed /proc stat"))
    };
    Ok((ticks(11)?, ticks(12)?))
}

fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}
