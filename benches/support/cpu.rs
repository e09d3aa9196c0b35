//! CPU accounting from /proc. A process's CPU time: the sum of its threads' `schedstat` run
//! time (ns), or, where the kernel has no schedstat, `stat`'s utime + stime (clock ticks); the
//! machine's busy time from `/proc/stat`. On top of them: the readings at both ends of a
//! measured window ([`Reading`], [`Usage`]), server processes' CPU summed ([`each`],
//! [`used_since`]), and waiting for other load to pass ([`wait_quiet`]).

use std::fs;
use std::io;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// CPU time (user + system) the process `pid` has used so far.
fn process_cpu(pid: u32) -> io::Result<Duration> {
    match schedstat(pid) {
        Ok(d) => Ok(d),
        Err(_) => stat(pid),
    }
}

/// Busy time (everything but idle and iowait) of all CPUs together so far, from
/// `/proc/stat`, in clock ticks.
fn busy_ticks() -> u64 {
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

/// Which source [`process_cpu`] reads, for the report.
pub fn source() -> &'static str {
    if schedstat(std::process::id()).is_ok() {
        "/proc/<pid>/task/*/schedstat (ns)"
    } else {
        "/proc/<pid>/stat utime+stime (clock ticks)"
    }
}

/// CPU readings at one end of a measured window, in this order at both ends: the server
/// process (total, and user/system split) when its pid is known, this process (the load
/// generator), and the whole machine's busy ticks.
pub struct Reading {
    server: Option<(Duration, (Duration, Duration))>,
    client: Duration,
    busy: u64,
}

impl Reading {
    pub fn take(server_pid: Option<u32>) -> Result<Reading, String> {
        let read = |p| -> io::Result<_> { Ok((process_cpu(p)?, user_sys(p)?)) };
        let server = server_pid
            .map(|p| read(p).map_err(|e| format!("server CPU (pid {p}): {e}")))
            .transpose()?;
        let client = process_cpu(std::process::id()).map_err(|e| format!("own CPU: {e}"))?;
        Ok(Reading {
            server,
            client,
            busy: busy_ticks(),
        })
    }
}

/// CPU time used between two [`Reading`]s.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// None when the server's process is unknown (an external server without its pid).
    pub server: Option<Duration>,
    /// The server's user and system time (clock-tick sampled), when known.
    pub server_user_sys: Option<(Duration, Duration)>,
    pub client: Duration,
    /// CPU time of the machine (all CPUs) that neither process used: other processes,
    /// interrupts, steal. Tick resolution.
    pub other: Duration,
}

impl Usage {
    pub fn between(start: &Reading, end: &Reading) -> Usage {
        let busy = Duration::from_secs_f64(
            end.busy.saturating_sub(start.busy) as f64 / clock_ticks() as f64,
        );
        let both = end.server.zip(start.server);
        let server = both.map(|(b, a)| b.0.saturating_sub(a.0));
        let server_user_sys =
            both.map(|(b, a)| (b.1 .0.saturating_sub(a.1 .0), b.1 .1.saturating_sub(a.1 .1)));
        let client = end.client.saturating_sub(start.client);
        Usage {
            server,
            server_user_sys,
            client,
            other: busy.saturating_sub(server.unwrap_or_default() + client),
        }
    }

    /// Server CPU per unit of work (`n` messages, deliveries...), µs.
    pub fn server_us_per(&self, n: u64) -> f64 {
        self.server
            .map_or(f64::NAN, |c| c.as_secs_f64() * 1e6 / n as f64)
    }

    /// Server user-space CPU per unit of work, µs (tick-sampled).
    pub fn server_user_us_per(&self, n: u64) -> f64 {
        self.server_user_sys
            .map_or(f64::NAN, |(u, _)| u.as_secs_f64() * 1e6 / n as f64)
    }

    /// Server kernel CPU per unit of work, µs (tick-sampled).
    pub fn server_sys_us_per(&self, n: u64) -> f64 {
        self.server_user_sys
            .map_or(f64::NAN, |(_, s)| s.as_secs_f64() * 1e6 / n as f64)
    }

    /// The server's CPU time over `elapsed`, in CPUs (1.0: one CPU busy all along).
    pub fn server_util(&self, elapsed: Duration) -> f64 {
        self.server
            .map_or(f64::NAN, |c| c.as_secs_f64() / elapsed.as_secs_f64())
    }

    /// The load generator's CPU time over `elapsed`, in CPUs.
    pub fn client_util(&self, elapsed: Duration) -> f64 {
        self.client.as_secs_f64() / elapsed.as_secs_f64()
    }

    /// Other load on the machine over `elapsed`, in CPUs (see `other`).
    pub fn other_load(&self, elapsed: Duration) -> f64 {
        self.other.as_secs_f64() / elapsed.as_secs_f64()
    }
}

/// CPU time of each of `pids` so far (zero for one that cannot be read), for [`used_since`].
pub fn each(pids: &[u32]) -> Vec<Duration> {
    pids.iter()
        .map(|&p| process_cpu(p).unwrap_or_default())
        .collect()
}

/// CPU time `pids` used since `before` (their [`each`] then), all together.
pub fn used_since(pids: &[u32], before: &[Duration]) -> Duration {
    pids.iter()
        .zip(before)
        .map(|(&p, before)| process_cpu(p).unwrap_or_default().saturating_sub(*before))
        .sum()
}

/// Waits (at most `max`) until the machine's load from others is under `pct` % of one CPU
/// over half a second, so that a run does not start in the middle of someone's compile.
/// Returns how long it waited.
pub fn wait_quiet(pct: f64, max: Duration) -> Duration {
    let t = Instant::now();
    loop {
        let a = busy_ticks();
        std::thread::sleep(Duration::from_millis(500));
        let busy = busy_ticks().saturating_sub(a) as f64 / clock_ticks() as f64;
        if busy / 0.5 * 100.0 <= pct || t.elapsed() >= max {
            return t.elapsed();
        }
        std::thread::sleep(Duration::from_millis(500));
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
fn user_sys(pid: u32) -> io::Result<(Duration, Duration)> {
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

/// Clock ticks per second (`getconf CLK_TCK`, else 100).
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
