// Switchboard vs hand-written actix-ws topic fan-out to 1k/10k subscribers: deliveries/s, p50/p99 publish-to-delivery, server CPU µs/delivery, memory per idle subscriber. Run: `cargo bench --bench fanout`.
//!
//! The bench re-executes itself: `fanout --serve framework|baseline [--port P] [--workers W]
//! [--pad B] [--nagle]` is one server in a child process pinned to CPU 0 with `taskset` (2
//! actix-web workers and TCP_NODELAY by default, for both servers; the framework's broker
//! shard threads and both servers' publisher run on that CPU too). This process, the load generator, pins itself to
//! CPU 1 and runs N subscribers (raw WebSocket clients, `fanout/client.rs`, one
//! current-thread runtime) on the topic `bench:fan`. The server publishes when the load
//! generator asks it over HTTP (`POST /publish?from=S&n=K`), from a task of its own, each
//! payload `{"seq":S,"t":<wall clock ns>,"pad":"x.."}`; subscribers check every frame and
//! the order of sequence numbers, and take the publish-to-delivery latency from `t`.
//!
//! Per run (see `fanout/load.rs`): server memory with no connection and with the N idle
//! subscribed connections (`B/conn` = RSS difference / N); the measured window, pipelined
//! bursts for `--secs`: `deliv/s` and server CPU µs per delivery (schedstat; `usr`/`sys`
//! tick-sampled); then a paced phase, single publications spaced out so that they rarely
//! meet: `p50`/`p99` publish-to-delivery latency over every delivery of them. `other%` is
//! CPU time the machine spent on anything else in the window: a run with more than
//! `--max-other` of it is discarded and repeated (at most twice, within `--budget` seconds),
//! and each run first waits (up to 30 s) for such load to pass. `cli util%` near 100 means
//! the load generator, not the server, set the pace (the summary says so). Sizes and servers
//! alternate: for each N, each round runs baseline then framework.
//!
//! Options (flags after `--`, or environment):
//! - `--subs 1000,10000` (FANOUT_SUBS), `--rounds R` (FANOUT_ROUNDS, 2),
//!   `--servers baseline,framework` (FANOUT_SERVERS)
//! - `--secs S` window (FANOUT_SECS, 3), `--warmup S` (FANOUT_WARMUP, 0.5)
//! - `--burst K` publications per burst (FANOUT_BURST, 10), `--depth D` bursts in flight
//!   (FANOUT_DEPTH, 3): each subscriber has at most K x D publications on their way to it,
//!   whatever N (the framework's outbound queue holds 1024)
//! - `--paced-load D` deliveries/s the paced phase offers, i.e. D / N publications/s
//!   (FANOUT_PACED_LOAD, 20 000), or `--rate R` publications/s (FANOUT_RATE); `--paced S`
//!   its length (FANOUT_PACED, 3)
//! - `--pad B` payload padding bytes (FANOUT_PAD, 64), `--workers W` (FANOUT_WORKERS, 2),
//!   `--nagle` (FANOUT_NAGLE=1): leave the servers' accepted sockets at the OS default
//!   instead of `TCP_NODELAY` (with Nagle, small frames wait for the client's ACKs and the
//!   server idles)
//! - `--server-cpu C`, `--client-cpu C` (FANOUT_SERVER_CPU 0, FANOUT_CLIENT_CPU 1),
//!   `--no-pin` (FANOUT_PIN=0), `--no-memory` (FANOUT_MEMORY=0)
//! - `--memory-only [--hold S]` (FANOUT_MEMORY_ONLY=1, FANOUT_HOLD): only the memory reading,
//!   holding the idle connections S seconds after it (for a heap profiler's snapshot)
//! - `--max-other PCT` (FANOUT_MAX_OTHER, 25), `--budget SECS` (FANOUT_BUDGET, 120)
//! - `--target PORT [--target-pid PID]`: load only, against a server started elsewhere, e.g.
//!   `target/release/deps/fanout-* --serve framework --port 9000` under a profiler
//!
//! Example: `cargo bench --bench fanout -- --subs 10000 --rounds 3 --pad 256`.

#[path = "fanout/client.rs"]
mod client;
#[path = "reqreply/cpu.rs"]
mod cpu;
#[path = "fanout/load.rs"]
mod load;
#[path = "fanout/servers.rs"]
mod servers;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use load::{LoadConfig, RunResult};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Baseline,
    Framework,
    /// A server started elsewhere (`--target PORT`).
    External,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Baseline => "baseline",
            Kind::Framework => "framework",
            Kind::External => "external",
        }
    }
}

struct Config {
    subs: Vec<usize>,
    burst: u64,
    depth: u64,
    warmup: Duration,
    measure: Duration,
    /// Paced publications per second, else `paced_load / subs`.
    rate: Option<f64>,
    paced_load: f64,
    paced: Duration,
    pad: usize,
    workers: usize,
    nagle: bool,
    memory: bool,
    memory_only: Option<Duration>,
    rounds: usize,
    servers: Vec<Kind>,
    pin: bool,
    server_cpu: String,
    client_cpu: String,
    target: Option<(u16, Option<u32>)>,
    max_other: f64,
    budget: f64,
}

/// `--name value` from the arguments, else `FANOUT_NAME` from the environment.
fn setting(args: &[String], flag: &str, env: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| std::env::var(env).ok())
}

fn parsed<T: std::str::FromStr>(args: &[String], flag: &str, env: &str, default: T) -> T {
    match setting(args, flag, env) {
        None => default,
        Some(v) => v.parse().unwrap_or_else(|_| {
            eprintln!("fanout: bad value `{v}` for {flag} / {env}");
            std::process::exit(2)
        }),
    }
}

fn off(args: &[String], flag: &str, env: &str) -> bool {
    args.iter().any(|a| a == flag) || std::env::var(env).is_ok_and(|v| v == "0")
}

impl Config {
    fn from(args: &[String]) -> Config {
        let secs = |flag, env, default| Duration::from_secs_f64(parsed(args, flag, env, default));
        let target = setting(args, "--target", "FANOUT_TARGET").map(|_| {
            (
                parsed(args, "--target", "FANOUT_TARGET", 0u16),
                setting(args, "--target-pid", "FANOUT_TARGET_PID")
                    .map(|_| parsed(args, "--target-pid", "FANOUT_TARGET_PID", 0u32)),
            )
        });
        let list = |flag, env, default: &str| -> Vec<String> {
            setting(args, flag, env)
                .unwrap_or_else(|| default.into())
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let servers = list("--servers", "FANOUT_SERVERS", "baseline,framework")
            .iter()
            .map(|s| match s.as_str() {
                "baseline" => Kind::Baseline,
                "framework" => Kind::Framework,
                other => {
                    eprintln!("fanout: unknown server `{other}` (baseline|framework)");
                    std::process::exit(2)
                }
            })
            .collect();
        let subs = list("--subs", "FANOUT_SUBS", "1000,10000")
            .iter()
            .map(|s| {
                s.parse::<usize>()
                    .ok()
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| {
                        eprintln!("fanout: bad subscriber count `{s}`");
                        std::process::exit(2)
                    })
            })
            .collect();
        Config {
            subs,
            burst: parsed(args, "--burst", "FANOUT_BURST", 10u64).max(1),
            depth: parsed(args, "--depth", "FANOUT_DEPTH", 3u64).max(1),
            warmup: secs("--warmup", "FANOUT_WARMUP", 0.5),
            measure: secs("--secs", "FANOUT_SECS", 3.0),
            rate: setting(args, "--rate", "FANOUT_RATE")
                .map(|_| parsed(args, "--rate", "FANOUT_RATE", 1.0f64).max(0.01)),
            paced_load: parsed(args, "--paced-load", "FANOUT_PACED_LOAD", 20_000.0f64).max(1.0),
            paced: secs("--paced", "FANOUT_PACED", 3.0),
            pad: parsed(args, "--pad", "FANOUT_PAD", 64usize),
            workers: parsed(args, "--workers", "FANOUT_WORKERS", 2usize).max(1),
            nagle: args.iter().any(|a| a == "--nagle")
                || std::env::var("FANOUT_NAGLE").is_ok_and(|v| v == "1"),
            memory: !off(args, "--no-memory", "FANOUT_MEMORY"),
            memory_only: (args.iter().any(|a| a == "--memory-only")
                || std::env::var("FANOUT_MEMORY_ONLY").is_ok_and(|v| v == "1"))
            .then(|| secs("--hold", "FANOUT_HOLD", 0.0)),
            rounds: parsed(args, "--rounds", "FANOUT_ROUNDS", 2usize).max(1),
            pin: !off(args, "--no-pin", "FANOUT_PIN"),
            server_cpu: parsed(args, "--server-cpu", "FANOUT_SERVER_CPU", "0".to_owned()),
            client_cpu: parsed(args, "--client-cpu", "FANOUT_CLIENT_CPU", "1".to_owned()),
            servers: if target.is_some() {
                vec![Kind::External]
            } else {
                servers
            },
            target,
            max_other: parsed(args, "--max-other", "FANOUT_MAX_OTHER", 25.0),
            budget: parsed(args, "--budget", "FANOUT_BUDGET", 120.0),
        }
    }

    fn rate(&self, subs: usize) -> f64 {
        self.rate
            .unwrap_or_else(|| (self.paced_load / subs as f64).clamp(0.5, 1000.0))
    }

    fn load(&self, subs: usize) -> LoadConfig {
        LoadConfig {
            subs,
            burst: self.burst,
            depth: self.depth,
            warmup: self.warmup,
            measure: self.measure,
            rate: self.rate(subs),
            paced: self.paced,
            pad: self.pad,
            connect_concurrency: 64,
            memory: self.memory || self.memory_only.is_some(),
            memory_only: self.memory_only,
        }
    }
}

/// Starts a server child and reads the port it listens on.
fn spawn_server(kind: Kind, cfg: &Config) -> Result<(Child, u16), String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut cmd = if cfg.pin {
        let mut c = Command::new("taskset");
        c.arg("-c").arg(&cfg.server_cpu).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    cmd.args(["--serve", kind.name()])
        .args(["--workers", &cfg.workers.to_string()])
        .args(["--pad", &cfg.pad.to_string()])
        .args(cfg.nagle.then_some("--nagle"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting the {} server: {e}", kind.name()))?;
    let mut line = String::new();
    let stdout = child.stdout.take().ok_or("no server stdout")?;
    let read = BufReader::new(stdout).read_line(&mut line);
    let port = match read {
        Ok(_) => line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse::<u16>().ok()),
        Err(_) => None,
    };
    match port {
        Some(p) if p != 0 => Ok((child, p)),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!(
                "the {} server did not announce its port (got {line:?})",
                kind.name()
            ))
        }
    }
}

fn run_once(
    rt: &tokio::runtime::Runtime,
    kind: Kind,
    cfg: &Config,
    load: &LoadConfig,
) -> Result<RunResult, String> {
    // A LocalSet per run: its subscriber tasks (and sockets) go when it is dropped, after the
    // server is gone, so the server's side closes first.
    let local = tokio::task::LocalSet::new();
    if let Some((port, pid)) = cfg.target {
        return local.block_on(rt, load::run(port, pid, load));
    }
    let (mut child, port) = spawn_server(kind, cfg)?;
    let result = local.block_on(rt, load::run(port, Some(child.id()), load));
    let _ = child.kill();
    let _ = child.wait();
    drop(local);
    result
}

/// Waits (at most `max`) until the machine's load from others is under `pct` % of one CPU
/// over half a second, so that a run does not start in the middle of someone's compile.
/// Returns how long it waited.
fn wait_quiet(pct: f64, max: Duration) -> Duration {
    let t = Instant::now();
    loop {
        let a = cpu::busy_ticks();
        std::thread::sleep(Duration::from_millis(500));
        let busy = cpu::busy_ticks().saturating_sub(a) as f64 / cpu::ticks_per_sec() as f64;
        if busy / 0.5 * 100.0 <= pct || t.elapsed() >= max {
            return t.elapsed();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn pin_self(cpu: &str) -> Result<(), String> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpu, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("taskset: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("taskset exited with {status}"))
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.retain(|x| !x.is_nan());
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// A column of the report: its header, width, decimals and how to read it from a run.
struct Column {
    name: &'static str,
    width: usize,
    decimals: usize,
    get: fn(&RunResult) -> f64,
}

const fn col(
    name: &'static str,
    width: usize,
    decimals: usize,
    get: fn(&RunResult) -> f64,
) -> Column {
    Column {
        name,
        width,
        decimals,
        get,
    }
}

const COLUMNS: &[Column] = &[
    col("deliv/s", 9, 0, RunResult::deliveries_per_sec),
    col("p50 µs", 7, 0, |r| r.paced_us(0.50)),
    col("p99 µs", 7, 0, |r| r.paced_us(0.99)),
    col("CPU µs/dl", 9, 3, RunResult::server_cpu_us_per_delivery),
    col("usr", 5, 3, RunResult::server_user_us),
    col("sys", 5, 3, RunResult::server_sys_us),
    col("srv util%", 9, 0, |r| r.server_util() * 100.0),
    col("cli util%", 9, 0, |r| r.client_util() * 100.0),
    col("other%", 6, 0, |r| r.other_load() * 100.0),
    col("drops", 5, 0, |r| r.dropped as f64),
    col("B/conn", 7, 0, RunResult::bytes_per_conn),
];

/// Indexes of columns the summary reads.
const DELIV: usize = 0;
const P50: usize = 1;
const P99: usize = 2;
const CPU: usize = 3;
const CLI: usize = 7;
const MEM: usize = 10;

fn header() -> String {
    let mut s = format!("{:>6} {:<9} {:<9}", "subs", "round", "server");
    for c in COLUMNS {
        s += &format!(" {:>w$}", c.name, w = c.width);
    }
    s
}

fn row(subs: usize, label: &str, kind: Kind, values: &[f64]) -> String {
    let mut s = format!("{subs:>6} {label:<9} {:<9}", kind.name());
    for (c, v) in COLUMNS.iter().zip(values) {
        s += &format!(" {v:>w$.d$}", w = c.width, d = c.decimals);
    }
    s
}

fn values(r: &RunResult) -> Vec<f64> {
    COLUMNS.iter().map(|c| (c.get)(r)).collect()
}

struct Outcome {
    subs: usize,
    kind: Kind,
    values: Vec<f64>,
    /// Kept although disturbed (out of repeats or budget).
    disturbed: bool,
}

/// Prints medians, ratios and the goals.
fn summary(results: &[Outcome], cfg: &Config) {
    println!(
        "\nsummary: median of each column over the rounds (runs marked (!) only where no \
         undisturbed run is left)"
    );
    println!("{}", header());
    // Disturbed runs count only where there is no undisturbed one.
    let runs_of = |subs: usize, kind: Kind| -> Vec<&Outcome> {
        let all: Vec<&Outcome> = results
            .iter()
            .filter(|o| o.subs == subs && o.kind == kind)
            .collect();
        if all.iter().any(|o| !o.disturbed) {
            all.into_iter().filter(|o| !o.disturbed).collect()
        } else {
            all
        }
    };
    let med = |subs: usize, kind: Kind| -> Option<Vec<f64>> {
        let runs: Vec<&Vec<f64>> = runs_of(subs, kind).iter().map(|o| &o.values).collect();
        (!runs.is_empty()).then(|| {
            (0..COLUMNS.len())
                .map(|i| median(runs.iter().map(|v| v[i]).collect()))
                .collect()
        })
    };
    for &subs in &cfg.subs {
        for &kind in &cfg.servers {
            if let Some(m) = med(subs, kind) {
                println!("{}", row(subs, "median", kind, &m));
            }
        }
    }
    println!();
    let mut saturated = false;
    for o in results {
        saturated |= o.values[CLI] >= 90.0;
    }
    for &subs in &cfg.subs {
        let (Some(b), Some(f)) = (med(subs, Kind::Baseline), med(subs, Kind::Framework)) else {
            continue;
        };
        let ratios: Vec<String> = (0..cfg.rounds)
            .filter_map(|r| {
                let nth = |kind| {
                    results
                        .iter()
                        .filter(|o| o.subs == subs && o.kind == kind)
                        .nth(r)
                        .filter(|o| !o.disturbed)
                        .map(|o| o.values[DELIV])
                };
                Some(format!(
                    "{:.2}",
                    nth(Kind::Framework)? / nth(Kind::Baseline)?
                ))
            })
            .collect();
        println!(
            "{subs} subscribers, framework / baseline (medians): deliveries/s {:.2}x \
             (per round {}), server CPU per delivery {:.2}x, paced p50 {:.2}x, p99 {:.2}x",
            f[DELIV] / b[DELIV],
            ratios.join(", "),
            f[CPU] / b[CPU],
            f[P50] / b[P50],
            f[P99] / b[P99],
        );
        if cfg.memory {
            println!(
                "{subs} subscribers, memory per idle subscribed connection: framework {:.0} B, \
                 baseline {:.0} B, difference {:+.0} B",
                f[MEM],
                b[MEM],
                f[MEM] - b[MEM]
            );
        }
    }
    let largest = cfg.subs.iter().copied().max().unwrap_or(0);
    if let (Some(b), Some(f)) = (med(largest, Kind::Baseline), med(largest, Kind::Framework)) {
        let ratio = f[DELIV] / b[DELIV];
        println!(
            "\ngoal: deliveries/s >= 3x the baseline's at {largest} subscribers: {:.2}x, {}",
            ratio,
            if ratio >= 3.0 { "met" } else { "NOT met" }
        );
        if cfg.memory {
            let diff = f[MEM] - b[MEM];
            println!(
                "goal: memory per idle subscribed connection <= baseline + 2048 B at {largest} \
                 subscribers: {diff:+.0} B, {}",
                if diff <= 2048.0 { "met" } else { "NOT met" }
            );
        }
    }
    if saturated {
        println!(
            "note: the load generator used >= 90% of its CPU in some runs (cli util%): there \
             it, not the server, may have set the pace"
        );
    }
}

/// `--memory-only`: connect, subscribe and read the server's memory, nothing else.
fn memory_only(rt: &tokio::runtime::Runtime, cfg: &Config) -> ExitCode {
    println!(
        "\nmemory only: server RSS with no connection (after one) and with N idle subscribed \
         connections"
    );
    println!(
        "{:>6} {:<9} {:>10} {:>10} {:>8}",
        "subs", "server", "RSS0 KiB", "RSSN KiB", "B/conn"
    );
    let mut per = Vec::new();
    for &subs in &cfg.subs {
        let load = cfg.load(subs);
        for _ in 0..cfg.rounds {
            for &kind in &cfg.servers {
                match run_once(rt, kind, cfg, &load) {
                    Ok(RunResult {
                        mem: Some((m0, mn)),
                        ..
                    }) => {
                        let b = (mn.rss_kib as f64 - m0.rss_kib as f64) * 1024.0 / subs as f64;
                        println!(
                            "{subs:>6} {:<9} {:>10} {:>10} {b:>8.0}",
                            kind.name(),
                            m0.rss_kib,
                            mn.rss_kib
                        );
                        per.push((subs, kind, b));
                    }
                    Ok(_) => {
                        eprintln!("fanout: no memory reading (an external server needs its pid)");
                        return ExitCode::FAILURE;
                    }
                    Err(e) => {
                        eprintln!("fanout: {} server, {subs}: FAILED: {e}", kind.name());
                        return ExitCode::FAILURE;
                    }
                }
            }
        }
    }
    for &subs in &cfg.subs {
        let m = |kind| {
            median(
                per.iter()
                    .filter(|(s, k, _)| *s == subs && *k == kind)
                    .map(|(_, _, b)| *b)
                    .collect(),
            )
        };
        let (f, b) = (m(Kind::Framework), m(Kind::Baseline));
        if !f.is_nan() && !b.is_nan() {
            println!(
                "{subs} subscribers: framework {f:.0} B, baseline {b:.0} B per connection, \
                 difference {:+.0} B (goal <= 2048)",
                f - b
            );
        }
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(kind) = setting(&args, "--serve", "FANOUT_SERVE_NEVER_SET") {
        let port = parsed(&args, "--port", "FANOUT_PORT_NEVER_SET", 0u16);
        let workers = parsed(&args, "--workers", "FANOUT_WORKERS", 2usize).max(1);
        let pad = parsed(&args, "--pad", "FANOUT_PAD", 64usize);
        let nodelay = !args.iter().any(|a| a == "--nagle");
        return match servers::serve(&kind, port, workers, nodelay, pad) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("fanout server: {e}");
                ExitCode::FAILURE
            }
        };
    }

    let cfg = Config::from(&args);
    let env: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("FANOUT_"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!("fanout: one topic to N subscribers, Switchboard hub vs hand-written actix-ws");
    println!(
        "command: {}{}",
        env.join(" ") + if env.is_empty() { "" } else { " " },
        args.join(" ")
    );
    let mut pinned = String::from("unpinned");
    if cfg.pin {
        match pin_self(&cfg.client_cpu) {
            Ok(()) => {
                pinned = format!(
                    "server on CPU {}, load generator on CPU {}",
                    cfg.server_cpu, cfg.client_cpu
                )
            }
            Err(e) => eprintln!("fanout: could not pin (running unpinned): {e}"),
        }
    }
    let per_size = |f: &dyn Fn(usize) -> String| -> String {
        let v: Vec<String> = cfg
            .subs
            .iter()
            .map(|&n| format!("{} at {n}", f(n)))
            .collect();
        v.join(", ")
    };
    println!(
        "settings: {} actix-web workers per server, TCP_NODELAY {}; payload pad {} B; window \
         {:.1} s after \
         {:.1} s warmup, bursts of {} publications, {} in flight; paced {} publications/s for \
         {:.1} s; {} round(s); {pinned}; CPU from {}",
        cfg.workers,
        if cfg.nagle { "off (OS default)" } else { "on" },
        cfg.pad,
        cfg.measure.as_secs_f64(),
        cfg.warmup.as_secs_f64(),
        cfg.burst,
        cfg.depth,
        per_size(&|n| format!("{:.1}", cfg.rate(n))),
        cfg.paced.as_secs_f64(),
        cfg.rounds,
        cpu::source(),
    );

    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fanout: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if cfg.memory_only.is_some() {
        return memory_only(&rt, &cfg);
    }
    println!(
        "columns: deliv/s in the window; p50/p99 µs publish-to-delivery of paced publications; \
         server CPU µs per delivery (usr/sys tick-sampled) in the window; drops = sequence \
         gaps; B/conn = server RSS per idle subscribed connection"
    );

    println!("\n{}", header());
    let mut results = Vec::new();
    let started = Instant::now();
    let mut repeated = 0;
    for &subs in &cfg.subs {
        let load = cfg.load(subs);
        for round in 1..=cfg.rounds {
            for &kind in &cfg.servers {
                let mut attempt = 0;
                let outcome = loop {
                    if cfg.target.is_none() {
                        let waited = wait_quiet(cfg.max_other, Duration::from_secs(30));
                        if waited > Duration::from_secs(2) {
                            println!(
                                "(waited {:.0} s for other load to pass)",
                                waited.as_secs_f64()
                            );
                        }
                    }
                    let r = match run_once(&rt, kind, &cfg, &load) {
                        Ok(r) => r,
                        Err(e) => break Err(e),
                    };
                    let v = values(&r);
                    let disturbed = r.other_load() * 100.0 > cfg.max_other;
                    let retry =
                        disturbed && attempt < 2 && started.elapsed().as_secs_f64() < cfg.budget;
                    let label = match (disturbed, retry) {
                        (false, _) => round.to_string(),
                        (true, true) => format!("{round} (x)"),
                        (true, false) => format!("{round} (!)"),
                    };
                    println!("{}", row(subs, &label, kind, &v));
                    if !retry {
                        break Ok((v, disturbed));
                    }
                    attempt += 1;
                    repeated += 1;
                };
                match outcome {
                    Ok((values, disturbed)) => results.push(Outcome {
                        subs,
                        kind,
                        values,
                        disturbed,
                    }),
                    Err(e) => {
                        eprintln!(
                            "fanout: {} server, {subs} subscribers, round {round}: FAILED: {e}",
                            kind.name()
                        );
                        return ExitCode::FAILURE;
                    }
                }
            }
        }
    }
    if repeated > 0 {
        println!(
            "(x): other load over {:.0}% of a CPU, run discarded and repeated ({repeated} in all); \
             (!): disturbed but kept (out of repeats or time budget)",
            cfg.max_other
        );
    }
    summary(&results, &cfg);
    println!("total time {:.0} s", started.elapsed().as_secs_f64());
    ExitCode::SUCCESS
}
