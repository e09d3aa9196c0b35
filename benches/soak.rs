// Memory soak of a Switchboard server: connect/subscribe/drop churn for a fixed time, server RSS before, at peak and 10 s after, per global allocator. Run: `cargo bench --bench soak`.
//!
//! The bench re-executes itself: `soak --serve [--port P] [--workers W] [--presence]` is the
//! server (`soak/server.rs`: a channel like the chat example's rooms, built-in `subscribe`
//! to `room:*`, a memory engine with room history), in a child process pinned to CPU 0 with
//! `taskset`, its global allocator chosen by `SOAK_ALLOCATOR` (`soak/alloc.rs`). This process,
//! the load generator, pins itself to CPU 1 and, for `--secs`, runs waves: `--wave`
//! connections opened (`--concurrency` handshakes at a time), each subscribed to one of
//! `--rooms` rooms (its reply awaited), then all dropped: abruptly (the socket closed without
//! a close frame) or closed (close frame, the server's close awaited), by `--close`
//! (`alternate` by default: drop, close, drop...). Then it waits `--after` seconds, idle.
//!
//! Per allocator, server memory: RSS (`/proc/<pid>/smaps_rollup`) before the churn (after a
//! warm-up wave of 64 connections each way, settled), its peak (sampled every 50 ms), and `--after` seconds after the
//! churn ended; `after/before` against the goal (within 20% of before: <= 1.20); the anonymous
//! part of RSS (without the pages of the binary and libraries, which grow as code runs for the
//! first time) before and after; the upgrades
//! done; the heap the program holds (`live`, counted by the server's allocator wrapper, from
//! `GET /heap`) before and after: what is still allocated, against what the allocator keeps.
//!
//! Options (flags after `--`, or environment; `-- --help` lists them):
//! - `--allocators glibc,glibc-trim,mimalloc[,jemalloc,jemalloc-bg]` (SOAK_ALLOCATORS): one run
//!   each, in this order; `glibc-trim` is glibc with `malloc_trim(0)` every 5 s in the server;
//!   `jemalloc-bg` is jemalloc purging from a background thread 1 s after memory is freed;
//!   both jemalloc with `cargo bench --bench soak --features jemalloc` (its C build takes
//!   minutes)
//! - `--secs S` churn (SOAK_SECS, 60), `--after S` wait before the last reading (SOAK_AFTER, 10)
//! - `--wave N` (SOAK_WAVE, 2000), `--rooms R` (SOAK_ROOMS, 4), `--concurrency C`
//!   (SOAK_CONCURRENCY, 64), `--close drop|close|alternate` (SOAK_CLOSE)
//! - `--presence` (SOAK_PRESENCE=1): presence on the rooms; `--workers W` (SOAK_WORKERS, 2)
//! - `--server-cpu C`, `--client-cpu C` (SOAK_SERVER_CPU 0, SOAK_CLIENT_CPU 1), `--no-pin`
//!   (SOAK_PIN=0)
//!
//! Example (a smoke run): `cargo bench --bench soak -- --secs 5 --after 2 --allocators glibc`.
//! Under a heap profiler: `SOAK_ALLOCATOR=glibc heaptrack target/release/deps/soak-* --serve
//! --port 9000`, then `--target 9000` here.

mod support;

// The bench's own parts, in `benches/soak/` (see `benches/fanout.rs` for why an inline
// module), and the fanout bench's WebSocket client, of which the soak uses the connection,
// not the publish trigger.
mod soak {
    pub mod alloc;
    pub mod server;
}
#[path = "fanout/client.rs"]
#[allow(dead_code)]
mod client;

use std::cell::{Cell, RefCell};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::builder::RangedU64ValueParser;
use clap::{Parser, ValueEnum};

use client::RawWs;
use soak::alloc::{self, Kind};
use support::flags::{self, Bench};
use support::mem;
use support::pin::Pinning;
use support::spawn;
use support::table::{Column, Table};

#[global_allocator]
static GLOBAL: alloc::Switch = alloc::Switch;

const BENCH: Bench = Bench {
    name: "soak",
    env: "SOAK_",
};

/// How a wave's connections end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Ending {
    /// The socket closed without a close frame.
    Drop,
    /// A close frame, and the server's awaited.
    Close,
    /// Drop and close, a wave each.
    Alternate,
}

/// Memory soak: connect/subscribe/drop churn, server RSS before, at peak and after
#[derive(Parser)]
struct Flags {
    /// Global allocators of the server, a run each
    #[arg(
        long,
        env,
        value_delimiter = ',',
        default_value = if cfg!(feature = "jemalloc") {
            "glibc,glibc-trim,mimalloc,jemalloc,jemalloc-bg"
        } else {
            "glibc,glibc-trim,mimalloc"
        }
    )]
    allocators: Vec<Kind>,
    /// Length of the churn, seconds
    #[arg(long, env, default_value_t = 60.0)]
    secs: f64,
    /// Seconds after the churn before the last reading
    #[arg(long, env, default_value_t = 10.0)]
    after: f64,
    /// Connections per wave
    #[arg(long, env, default_value_t = 2000, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    wave: usize,
    /// Rooms the connections subscribe to (one each)
    #[arg(long, env, default_value_t = 4, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    rooms: usize,
    /// Handshakes (and closes) in flight
    #[arg(long, env, default_value_t = 64, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    concurrency: usize,
    /// How each wave's connections end
    #[arg(long, env, value_enum, default_value = "alternate")]
    close: Ending,
    /// Presence on the rooms
    #[arg(long, env, value_parser = flags::switch())]
    presence: bool,
    /// actix-web workers of the server
    #[arg(long, env, default_value_t = 2)]
    workers: usize,
    /// Load only, against a server started elsewhere on this port (its pid: --target-pid)
    #[arg(long, env)]
    target: Option<u16>,
    /// The --target server's pid, for its memory
    #[arg(long, env)]
    target_pid: Option<u32>,
    #[command(flatten)]
    pin: flags::Pin,
    #[command(flatten)]
    cpus: flags::Cpus,
    /// Server mode: be the server (allocator from SOAK_ALLOCATOR) until killed
    #[arg(long)]
    serve: bool,
    /// Server mode: the port to listen on (0: any free one)
    #[arg(long, default_value_t = 0)]
    port: u16,
}

/// What one soak run measured.
struct Soak {
    kind: Option<Kind>,
    before: mem::Mem,
    peak: mem::Mem,
    after: mem::Mem,
    live_before: f64,
    live_after: f64,
    upgrades: u64,
    waves: u64,
    churn: Duration,
}

impl Soak {
    fn ratio(&self) -> f64 {
        self.after.rss_kib as f64 / self.before.rss_kib as f64
    }
}

const MIB: f64 = 1024.0;

const TABLE: Table<Soak> = Table(&[
    Column::new("RSS before MiB", 14, 1, |s| s.before.rss_kib as f64 / MIB),
    Column::new("peak MiB", 9, 1, |s| s.peak.rss_kib as f64 / MIB),
    Column::new("after MiB", 9, 1, |s| s.after.rss_kib as f64 / MIB),
    Column::new("after/before", 12, 2, Soak::ratio),
    Column::new("anon before", 11, 1, |s| s.before.anon_kib as f64 / MIB),
    Column::new("anon after", 10, 1, |s| s.after.anon_kib as f64 / MIB),
    Column::new("heap before MiB", 15, 1, |s| s.live_before / MIB / MIB),
    Column::new("heap after MiB", 14, 1, |s| s.live_after / MIB / MIB),
    Column::new("upgrades", 9, 0, |s| s.upgrades as f64),
    Column::new("upgrades/s", 10, 0, |s| {
        s.upgrades as f64 / s.churn.as_secs_f64()
    }),
]);

fn main() -> ExitCode {
    let flags: Flags = flags::parse(&BENCH, &[]);
    if flags.serve {
        let kind = std::env::var(Kind::ENV)
            .ok()
            .and_then(|v| Kind::from_str(&v, true).ok())
            .unwrap_or(Kind::Glibc);
        let served = soak::server::serve(kind, flags.port, flags.workers.max(1), flags.presence);
        return support::exit("soak server", served);
    }
    support::exit(BENCH.name, run(&flags))
}

fn run(flags: &Flags) -> Result<(), String> {
    println!("soak: connect/subscribe/drop churn, server memory before, at peak and after");
    println!("{}", flags::command_line(&BENCH));
    let pinning = Pinning::apply(
        BENCH.name,
        flags.pin.pin,
        &flags.cpus.server_cpu,
        &flags.cpus.client_cpu,
    );
    println!(
        "settings: churn {:.0} s of waves of {} connections ({} handshakes in flight), one \
         of {} rooms each{}, ended by {:?}; last reading {:.0} s after; {} actix-web workers; {}",
        flags.secs,
        flags.wave,
        flags.concurrency,
        flags.rooms,
        if flags.presence { " with presence" } else { "" },
        flags.close,
        flags.after,
        flags.workers,
        pinning.describe("server"),
    );
    println!(
        "columns: server RSS before the churn (after a warm-up wave each way), at its peak, and \
         {:.0} s after, MiB; anon = its anonymous part (RSS less the pages of the binary and \
         libraries); heap = bytes the server's program holds (allocator-independent); goal: \
         after/before <= 1.20",
        flags.after
    );
    let rt = support::runtime()?;
    let lead = |name: &str| format!("{name:<11}");
    println!("\n{}", TABLE.header(lead("allocator")));
    let runs: Vec<Option<Kind>> = match flags.target {
        Some(_) => vec![None],
        None => flags.allocators.iter().copied().map(Some).collect(),
    };
    if let Some(missing) = runs.iter().flatten().find(|k| !k.built()) {
        return Err(format!(
            "{} is not in this build: `cargo bench --bench soak --features jemalloc`",
            missing.name()
        ));
    }
    let mut results = Vec::new();
    for kind in runs {
        let target = flags.target.map(|port| (port, flags.target_pid));
        let start = || {
            let kind = kind.unwrap_or(Kind::Glibc);
            let mut cmd = spawn::this_bench(pinning.server())?;
            cmd.env(Kind::ENV, kind.name());
            if kind == Kind::JemallocBg {
                cmd.env("_RJEM_MALLOC_CONF", alloc::JEMALLOC_BACKGROUND);
            }
            cmd.arg("--serve")
                .args(["--workers", &flags.workers.to_string()])
                .args(flags.presence.then_some("--presence"));
            spawn::server(cmd, &format!("{} server", kind.name()))
        };
        let soak = spawn::against(&rt, target, start, |port, pid| async move {
            let pid = pid.ok_or("no memory reading: an external server needs --target-pid")?;
            churn(port, pid, flags, kind).await
        })
        .map_err(|e| {
            let name = kind.map_or("external", Kind::name);
            format!("{name}: FAILED: {e}")
        })?;
        let name = soak.kind.map_or("external", Kind::name);
        println!("{}", TABLE.row(lead(name), &TABLE.values(&soak)));
        results.push(soak);
    }
    println!();
    for s in &results {
        println!(
            "{}: {} upgrades in {} waves over {:.0} s; RSS {:.1} -> peak {:.1} -> {:.1} MiB {:.0} s \
             after; goal (after within 20% of before): {:.2}, {}",
            s.kind.map_or("external", Kind::name),
            s.upgrades,
            s.waves,
            s.churn.as_secs_f64(),
            s.before.rss_kib as f64 / MIB,
            s.peak.rss_kib as f64 / MIB,
            s.after.rss_kib as f64 / MIB,
            flags.after,
            s.ratio(),
            if s.ratio() <= 1.20 { "met" } else { "NOT met" }
        );
    }
    Ok(())
}

/// One soak against the server on `port` (process `pid`).
async fn churn(port: u16, pid: u32, flags: &Flags, kind: Option<Kind>) -> Result<Soak, String> {
    // A small wave each way first, so that "before" counts what the first connections set up
    // for good (and the binary's code they bring into memory).
    let warm = flags.wave.min(64);
    drop(wave(port, warm, flags).await?);
    close_all(wave(port, warm, flags).await?, flags.concurrency).await?;
    let before = mem::settled(pid).await?;
    let live_before = heap(port).await?;

    let peak = Rc::new(Cell::new(before));
    let sampling = Rc::new(Cell::new(true));
    let sampler = tokio::task::spawn_local({
        let (peak, sampling) = (peak.clone(), sampling.clone());
        async move {
            while sampling.get() {
                if let Ok(m) = mem::read(pid) {
                    if m.rss_kib > peak.get().rss_kib {
                        peak.set(m);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });

    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(flags.secs);
    let (mut upgrades, mut waves) = (0u64, 0u64);
    while Instant::now() < deadline {
        let conns = wave(port, flags.wave, flags).await?;
        upgrades += conns.len() as u64;
        let close = match flags.close {
            Ending::Drop => false,
            Ending::Close => true,
            Ending::Alternate => waves % 2 == 1,
        };
        waves += 1;
        if close {
            close_all(conns, flags.concurrency).await?;
        } else {
            drop(conns);
        }
    }
    let churn = t0.elapsed();
    tokio::time::sleep(Duration::from_secs_f64(flags.after)).await;
    sampling.set(false);
    let _ = sampler.await;
    let after = mem::read(pid)?;
    let live_after = heap(port).await?;
    Ok(Soak {
        kind,
        before,
        peak: peak.get(),
        after,
        live_before,
        live_after,
        upgrades,
        waves,
        churn,
    })
}

/// Connects and subscribes to `topic`, the reply awaited.
async fn connect(port: u16, topic: &str) -> Result<RawWs, String> {
    let mut ws = RawWs::connect(port, "/ws")
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let msg = format!(r#"{{"type":"subscribe","ref":1,"data":{{"topic":"{topic}"}}}}"#);
    ws.send_text(&msg)
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    let reply = ws
        .recv_text()
        .await
        .map_err(|e| format!("subscribe reply: {e}"))?;
    if !reply.starts_with(r#"{"ref":1,"ok":true"#) {
        return Err(format!("subscribe refused: {reply}"));
    }
    Ok(ws)
}

/// Opens a wave of `n` subscribed connections, `--concurrency` at a time.
async fn wave(port: u16, n: usize, flags: &Flags) -> Result<Vec<RawWs>, String> {
    let next = Rc::new(Cell::new(0usize));
    let conns = Rc::new(RefCell::new(Vec::with_capacity(n)));
    let rooms = flags.rooms;
    let tasks: Vec<_> = (0..flags.concurrency.min(n))
        .map(|_| {
            let (next, conns) = (next.clone(), conns.clone());
            tokio::task::spawn_local(async move {
                loop {
                    let i = next.get();
                    if i >= n {
                        return Ok::<(), String>(());
                    }
                    next.set(i + 1);
                    let ws = connect(port, &format!("room:{}", i % rooms)).await?;
                    conns.borrow_mut().push(ws);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(|e| format!("connect task: {e}"))??;
    }
    Ok(conns.take())
}

/// Closes every connection the WebSocket way, `concurrency` at a time.
async fn close_all(conns: Vec<RawWs>, concurrency: usize) -> Result<(), String> {
    let conns = Rc::new(RefCell::new(conns));
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let conns = conns.clone();
            tokio::task::spawn_local(async move {
                loop {
                    let Some(mut ws) = conns.borrow_mut().pop() else {
                        return Ok::<(), String>(());
                    };
                    ws.close().await.map_err(|e| format!("close: {e}"))?;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(|e| format!("close task: {e}"))??;
    }
    Ok(())
}

/// The heap the server's program holds, bytes (`GET /heap`'s `live`).
async fn heap(port: u16) -> Result<f64, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("GET /heap: {e}"))?;
    s.write_all(b"GET /heap HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("GET /heap: {e}"))?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .await
        .map_err(|e| format!("GET /heap: {e}"))?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    body.split_whitespace()
        .skip_while(|w| *w != "live")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("GET /heap: unexpected answer {body:?}"))
}
