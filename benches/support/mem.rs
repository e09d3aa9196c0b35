//! A server process's memory from /proc: its resident set ([`read`]), and the same once it
//! has stopped moving ([`settled`]).

use std::time::{Duration, Instant};

/// Resident memory of the server process, KiB, from `/proc/<pid>/smaps_rollup` (or
/// `status`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Mem {
    pub rss_kib: u64,
    /// The anonymous part of it (the heap, stacks...: not the binary's and libraries' pages
    /// read from their files).
    pub anon_kib: u64,
}

/// Server memory, KiB: smaps_rollup's Rss and Anonymous, or status's VmRSS and RssAnon.
pub fn read(pid: u32) -> Result<Mem, String> {
    let field = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
        if let Some(rss) = field(&text, "Rss:") {
            let anon_kib = field(&text, "Anonymous:").unwrap_or_default();
            return Ok(Mem {
                rss_kib: rss,
                anon_kib,
            });
        }
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    let rss = field(&text, "VmRSS:").ok_or("no VmRSS")?;
    let anon_kib = field(&text, "RssAnon:").unwrap_or_default();
    Ok(Mem {
        rss_kib: rss,
        anon_kib,
    })
}

/// Memory once it has stopped moving (three reads 100 ms apart within 16 KiB), at most 5 s.
pub async fn settled(pid: u32) -> Result<Mem, String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = read(pid)?;
    let mut steady = 0;
    while steady < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let m = read(pid)?;
        steady = if m.rss_kib.abs_diff(last.rss_kib) <= 16 {
            steady + 1
        } else {
            0
        };
        last = m;
    }
    Ok(last)
}
