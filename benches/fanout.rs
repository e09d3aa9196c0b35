// Switchboard vs hand-written actix-ws and actix actor broker topic fan-out to 1k/10k subscribers: deliveries/s, p50/p99 publish-to-delivery, server CPU µs/delivery, memory per idle subscriber. Run: `cargo bench --bench fanout`.
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
//! Options (flags after `--`, or environment; `-- --help` lists them):
//! - `--subs 1000,10000` (FANOUT_SUBS), `--rounds R` (FANOUT_ROUNDS, 2),
//!   `--servers baseline,actors,framework` (FANOUT_SERVERS; `actors` is the hand-written actix
//!   actor broker on actix-web-actors, `metrics` the framework with metrics on, `http` the
//!   framework's server with its subscribers on the HTTP transport (SSE streams,
//!   `fanout/client.rs`' `RawSse`), e.g. `--servers framework,http`)
//! - `--workloads burst,window` (FANOUT_WORKLOADS): `burst` is the server's own publisher
//!   task asked over HTTP (below); `window` is a publisher that is a WebSocket client, each
//!   publication a `publish` request the server answers once handed to the fan-out, at most
//!   `--window` (FANOUT_WINDOW, 4) unanswered and at most `--behind` (FANOUT_BEHIND, 32) not
//!   yet delivered to every subscriber; its paced phase publishes through the same client
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
//! - `--callgrind` (FANOUT_CALLGRIND=1): each server once per workload and size under
//!   valgrind's callgrind, user-space instructions per delivery counted only in the window
//!   (all threads), profiles left for `callgrind_annotate` (use `--subs 1000`: valgrind is
//!   some 50 times slower)
//! - `--memory-only [--hold S]` (FANOUT_MEMORY_ONLY=1, FANOUT_HOLD): only the memory reading,
//!   holding the idle connections S seconds after it (for a heap profiler's snapshot)
//! - `--subscribe-pad B` (FANOUT_SUBSCRIBE_PAD, 0): each subscribe message carries B bytes of
//!   padding in a field the servers ignore: what a connection keeps after one large message
//!   (`--memory-only --subscribe-pad 60000`)
//! - `--max-other PCT` (FANOUT_MAX_OTHER, 25), `--budget SECS` (FANOUT_BUDGET, 120)
//! - `--target PORT [--target-pid PID]`: load only, against a server started elsewhere, e.g.
//!   `target/release/deps/fanout-* --serve framework --port 9000` under a profiler
//!
//! Example: `cargo bench --bench fanout -- --subs 10000 --rounds 3 --pad 256`.

mod support;

// The bench's own parts, in `benches/fanout/`. Declared in an inline module because this
// crate's root is `benches/fanout.rs`, whose plain `mod x;` looks for `benches/x.rs`: nested in
// `mod fanout`, they are found in `benches/fanout/`, and the plain `mod support;` above finds
// the support shared by every bench in `benches/support/`, with no `#[path]`.
mod fanout {
    pub mod client;
    pub mod load;
    pub mod servers;
}

use std::process::ExitCode;
use std::time::Duration;

use clap::builder::RangedU64ValueParser;
use clap::{ArgAction, Parser};

use fanout::load::{self, LoadConfig, RunResult, Workload};
use fanout::servers;
use support::cpu;
use support::flags::{self, Bench, Server};
use support::pin::Pinning;
use support::spawn::{self, Proc};
use support::stats::{self, Rank, Repeats};
use support::table::{Column, Table};

const BENCH: Bench = Bench {
    name: "fanout",
    env: "FANOUT_",
};

/// Switchboard vs hand-written actix-ws topic fan-out: deliveries/s, publish-to-delivery
/// latency, server CPU µs/delivery, memory per idle subscriber
#[derive(Parser)]
struct Flags {
    /// Subscriber counts, each measured in turn
    #[arg(
        long,
        env,
        value_delimiter = ',',
        default_value = "1000,10000",
        value_parser = RangedU64ValueParser::<usize>::new().range(1..),
    )]
    subs: Vec<usize>,
    /// Workloads, each measured in turn: `burst` (the server's own publisher, asked over HTTP
    /// for bursts), `window` (a WebSocket client publishing, a shallow window)
    #[arg(long, env, value_delimiter = ',', default_value = "burst,window")]
    workloads: Vec<Workload>,
    /// `window`: unanswered publications at most
    #[arg(long, env, default_value_t = 4)]
    window: u64,
    /// `window`: publications not yet delivered to every subscriber at most
    #[arg(long, env, default_value_t = 32)]
    behind: u64,
    #[command(flatten)]
    rounds: flags::Rounds,
    /// Publications per burst in the window
    #[arg(long, env, default_value_t = 10)]
    burst: u64,
    /// Bursts in flight
    #[arg(long, env, default_value_t = 3)]
    depth: u64,
    /// Deliveries/s the paced phase offers, i.e. this / subscribers publications/s
    #[arg(long, env, default_value_t = 20_000.0)]
    paced_load: f64,
    /// Publications/s of the paced phase, instead of --paced-load
    #[arg(long, env)]
    rate: Option<f64>,
    /// Length of the paced phase, seconds
    #[arg(long, env, default_value_t = 3.0)]
    paced: f64,
    /// Payload padding, bytes
    #[arg(long, env, default_value_t = 64)]
    pad: usize,
    /// actix-web workers per server
    #[arg(long, env, default_value_t = 2)]
    workers: usize,
    /// Leave the servers' accepted sockets at the OS default instead of TCP_NODELAY
    #[arg(long, env, value_parser = flags::switch())]
    nagle: bool,
    /// No memory reading (or the variable below at 0)
    #[arg(
        long = "no-memory",
        env = "MEMORY",
        action = ArgAction::SetFalse,
        value_parser = flags::switch(),
    )]
    memory: bool,
    /// Only the memory reading, holding the idle connections --hold seconds after it
    #[arg(long, env, value_parser = flags::switch())]
    memory_only: bool,
    /// With --memory-only: seconds to hold the idle connections (for a heap profiler)
    #[arg(long, env, default_value_t = 0.0)]
    hold: f64,
    /// Pads each subscriber's subscribe message with this many bytes (a top-level field the
    /// servers ignore): what a connection keeps after one large message
    #[arg(long, env, default_value_t = 0)]
    subscribe_pad: usize,
    /// Each server once per workload and size under valgrind's callgrind: user-space
    /// instructions per delivery in the window
    #[arg(long, env, value_parser = flags::switch())]
    callgrind: bool,
    #[command(flatten)]
    versus: flags::Versus,
    #[command(flatten)]
    pin: flags::Pin,
    #[command(flatten)]
    cpus: flags::Cpus,
    /// Server mode: be this server (framework|baseline) until killed
    #[arg(long)]
    serve: Option<String>,
    /// Server mode: the port to listen on (0: any free one)
    #[arg(long, default_value_t = 0)]
    port: u16,
}

const DEFAULTS: &[(&str, &str)] = &[
    ("servers", "baseline,actors,framework"),
    ("rounds", "2"),
    ("secs", "3"),
    ("warmup", "0.5"),
    ("budget", "120"),
];

struct Config {
    workloads: Vec<Workload>,
    window: u64,
    behind: u64,
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
    subscribe_pad: usize,
    callgrind: bool,
    rounds: usize,
    servers: Vec<Server>,
    pinning: Pinning,
    target: Option<(u16, Option<u32>)>,
    max_other: f64,
    budget: f64,
}

impl Config {
    fn from(flags: &Flags) -> Config {
        let (server_cpu, client_cpu) = (&flags.cpus.server_cpu, &flags.cpus.client_cpu);
        Config {
            workloads: flags.workloads.clone(),
            window: flags.window.max(1),
            behind: flags.behind.max(1),
            subs: flags.subs.clone(),
            burst: flags.burst.max(1),
            depth: flags.depth.max(1),
            warmup: Duration::from_secs_f64(flags.rounds.warmup()),
            measure: Duration::from_secs_f64(flags.rounds.secs()),
            rate: flags.rate.map(|r| r.max(0.01)),
            paced_load: flags.paced_load.max(1.0),
            paced: Duration::from_secs_f64(flags.paced),
            pad: flags.pad,
            workers: flags.workers.max(1),
            nagle: flags.nagle,
            memory: flags.memory,
            memory_only: flags
                .memory_only
                .then(|| Duration::from_secs_f64(flags.hold)),
            subscribe_pad: flags.subscribe_pad,
            callgrind: flags.callgrind,
            rounds: flags.rounds.rounds(),
            servers: flags.versus.servers(),
            pinning: Pinning::apply(BENCH.name, flags.pin.pin, server_cpu, client_cpu),
            target: flags.versus.target(),
            max_other: flags.versus.max_other,
            budget: flags.versus.budget,
        }
    }

    fn rate(&self, subs: usize) -> f64 {
        self.rate
            .unwrap_or_else(|| (self.paced_load / subs as f64).clamp(0.5, 1000.0))
    }

    fn load(&self, workload: Workload, subs: usize) -> LoadConfig {
        LoadConfig {
            workload,
            window: self.window,
            behind: self.behind,
            subs,
            burst: self.burst,
            depth: self.depth,
            warmup: self.warmup,
            measure: self.measure,
            rate: self.rate(subs),
            paced: self.paced,
            pad: self.pad,
            connect_concurrency: 64,
            http: false,
            memory: self.memory || self.memory_only.is_some(),
            memory_only: self.memory_only,
            subscribe_pad: self.subscribe_pad,
        }
    }
}

/// The server child's arguments.
fn server_args(kind: Server, cfg: &Config) -> Vec<String> {
    let mut args: Vec<String> = ["--serve", kind.name(), "--workers"]
        .map(str::to_owned)
        .into();
    args.push(cfg.workers.to_string());
    args.push("--pad".into());
    args.push(cfg.pad.to_string());
    if cfg.nagle {
        args.push("--nagle".into());
    }
    args
}

/// Starts a server child and reads the port it listens on.
fn spawn_server(kind: Server, cfg: &Config) -> Result<(Proc, u16), String> {
    let mut cmd = spawn::this_bench(cfg.pinning.server())?;
    cmd.args(server_args(kind, cfg));
    spawn::server(cmd, &format!("{} server", kind.name()))
}

/// `--callgrind`: each server under callgrind, instructions per delivery in the window.
fn callgrind_mode(rt: &tokio::runtime::Runtime, cfg: &Config) -> Result<(), String> {
    let dir = std::env::temp_dir().join("fanout-callgrind");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    println!(
        "callgrind: user-space instructions the server executes per delivery, counted only in \
         the window (kernel time not included; every thread: workers, broker, publisher); \
         profiles in {}",
        dir.display()
    );
    let mut irs = Vec::new();
    for &w in &cfg.workloads {
        for &subs in &cfg.subs {
            for &kind in &cfg.servers {
                let load = LoadConfig {
                    memory: false,
                    http: kind == Server::Http,
                    ..cfg.load(w, subs)
                };
                let name = format!("{}.{}.{subs}", kind.name(), w.name());
                let base = dir.join(format!("callgrind.{name}"));
                let dump = std::path::PathBuf::from(format!("{}.1", base.display()));
                let _ = std::fs::remove_file(&dump);
                let cmd = support::callgrind::command(
                    cfg.pinning.server(),
                    &base,
                    &exe,
                    &server_args(kind, cfg),
                );
                let (server, port) = spawn::server(cmd, &format!("{} server", kind.name()))?;
                let pid = server.id();
                let mut hook = support::callgrind::window_hook(pid);
                let local = tokio::task::LocalSet::new();
                let result = local.block_on(rt, load::run_with(port, Some(pid), &load, &mut hook));
                drop(server);
                drop(local);
                let r = result.map_err(|e| format!("{name} under callgrind: FAILED: {e}"))?;
                let ir = support::callgrind::total_ir(&dump)?;
                let per = ir as f64 / r.deliveries.max(1) as f64;
                println!(
                    "{:<6} {subs:>6} {:<9} {:>10} deliveries {:>14} Ir {:>8.0} Ir/delivery \
                     drops {}  profile: {}",
                    w.name(),
                    kind.name(),
                    r.deliveries,
                    ir,
                    per,
                    r.dropped,
                    dump.display()
                );
                irs.push((w, subs, kind, per));
            }
        }
    }
    for &(w, subs, kind, per) in &irs {
        if kind == Server::Framework {
            for &(w2, s2, k2, other) in &irs {
                if w2 == w && s2 == subs && k2 != kind {
                    println!(
                        "{} {subs}: framework / {}: instructions per delivery {:.3}",
                        w.name(),
                        k2.name(),
                        per / other
                    );
                }
            }
        }
    }
    Ok(())
}

fn run_once(
    rt: &tokio::runtime::Runtime,
    kind: Server,
    cfg: &Config,
    load: &LoadConfig,
) -> Result<RunResult, String> {
    let load = LoadConfig {
        http: kind == Server::Http,
        ..load.clone()
    };
    spawn::against(
        rt,
        cfg.target,
        || spawn_server(kind, cfg),
        |port, pid| load::run(port, pid, &load),
    )
}

fn paced_us(r: &RunResult, q: f64) -> f64 {
    stats::quantile_us(&r.paced_latencies, q, Rank::Nearest)
}

const TABLE: Table<RunResult> = Table(&[
    Column::new("deliv/s", 9, 0, |r| {
        r.deliveries as f64 / r.elapsed.as_secs_f64()
    }),
    Column::new("p50 µs", 7, 0, |r| paced_us(r, 0.50)),
    Column::new("p99 µs", 7, 0, |r| paced_us(r, 0.99)),
    Column::new("CPU µs/dl", 9, 3, |r| r.cpu.server_us_per(r.deliveries)),
    Column::new("usr", 5, 3, |r| r.cpu.server_user_us_per(r.deliveries)),
    Column::new("sys", 5, 3, |r| r.cpu.server_sys_us_per(r.deliveries)),
    Column::new("srv util%", 9, 0, |r| r.cpu.server_util(r.elapsed) * 100.0),
    Column::new("cli util%", 9, 0, |r| r.cpu.client_util(r.elapsed) * 100.0),
    Column::new("other%", 6, 0, |r| r.cpu.other_load(r.elapsed) * 100.0),
    Column::new("drops", 5, 0, |r| r.dropped as f64),
    Column::new("B/conn", 7, 0, RunResult::bytes_per_conn),
]);

/// Indexes of columns the summary reads.
const DELIV: usize = 0;
const P50: usize = 1;
const P99: usize = 2;
const CPU: usize = 3;
const CLI: usize = 7;
const MEM: usize = 10;

fn header() -> String {
    TABLE.header(format!(
        "{:<6} {:>6} {:<9} {:<9}",
        "load", "subs", "round", "server"
    ))
}

fn row(w: Workload, subs: usize, label: &str, kind: Server, values: &[f64]) -> String {
    TABLE.row(
        format!("{:<6} {subs:>6} {label:<9} {:<9}", w.name(), kind.name()),
        values,
    )
}

struct Outcome {
    workload: Workload,
    subs: usize,
    kind: Server,
    values: Vec<f64>,
    /// Kept although disturbed (out of repeats or budget).
    disturbed: bool,
}

/// Prints medians, ratios and the goals, workload by workload.
fn summary(results: &[Outcome], cfg: &Config) {
    println!(
        "\nsummary: median of each column over the rounds (runs marked (!) only where no \
         undisturbed run is left)"
    );
    println!("{}", header());
    // Disturbed runs count only where there is no undisturbed one.
    let runs_of = |w: Workload, subs: usize, kind: Server| -> Vec<&Outcome> {
        let all: Vec<&Outcome> = results
            .iter()
            .filter(|o| o.workload == w && o.subs == subs && o.kind == kind)
            .collect();
        if all.iter().any(|o| !o.disturbed) {
            all.into_iter().filter(|o| !o.disturbed).collect()
        } else {
            all
        }
    };
    let med = |w: Workload, subs: usize, kind: Server| -> Option<Vec<f64>> {
        let runs = runs_of(w, subs, kind);
        (!runs.is_empty()).then(|| TABLE.medians(runs.iter().map(|o| &o.values)))
    };
    for &w in &cfg.workloads {
        for &subs in &cfg.subs {
            for &kind in &cfg.servers {
                if let Some(m) = med(w, subs, kind) {
                    println!("{}", row(w, subs, "median", kind, &m));
                }
            }
        }
    }
    let saturated = results.iter().any(|o| o.values[CLI] >= 90.0);
    for &w in &cfg.workloads {
        println!("\nworkload {}:", w.name());
        for &subs in &cfg.subs {
            let Some(f) = med(w, subs, Server::Framework) else {
                continue;
            };
            for other in [Server::Baseline, Server::Actors] {
                let Some(b) = med(w, subs, other) else {
                    continue;
                };
                let ratios: Vec<String> = (0..cfg.rounds)
                    .filter_map(|r| {
                        let nth = |kind| {
                            results
                                .iter()
                                .filter(|o| o.workload == w && o.subs == subs && o.kind == kind)
                                .nth(r)
                                .filter(|o| !o.disturbed)
                                .map(|o| o.values[DELIV])
                        };
                        Some(format!("{:.2}", nth(Server::Framework)? / nth(other)?))
                    })
                    .collect();
                println!(
                    "{subs} subscribers, framework / {} (medians): deliveries/s {:.2}x \
                     (per round {}), server CPU per delivery {:.2}x, paced p50 {:.2}x, p99 \
                     {:.2}x",
                    other.name(),
                    f[DELIV] / b[DELIV],
                    ratios.join(", "),
                    f[CPU] / b[CPU],
                    f[P50] / b[P50],
                    f[P99] / b[P99],
                );
                if cfg.memory {
                    println!(
                        "{subs} subscribers, memory per idle subscribed connection: framework \
                         {:.0} B, {} {:.0} B, difference {:+.0} B",
                        f[MEM],
                        other.name(),
                        b[MEM],
                        f[MEM] - b[MEM]
                    );
                }
            }
            if let Some(h) = med(w, subs, Server::Http) {
                println!(
                    "{subs} subscribers, http / framework (medians): deliveries/s {:.3}x, server \
                     CPU per delivery {:.3}x, p50 {:.3}x, memory per idle subscriber {:+.0} B",
                    h[DELIV] / f[DELIV],
                    h[CPU] / f[CPU],
                    h[P50] / f[P50],
                    h[MEM] - f[MEM],
                );
            }
            if let Some(m) = med(w, subs, Server::Metrics) {
                println!(
                    "{subs} subscribers, metrics / framework (medians): deliveries/s {:.3}x, \
                     server CPU per delivery {:.3}x; goal (CPU within 3%): {}",
                    m[DELIV] / f[DELIV],
                    m[CPU] / f[CPU],
                    if m[CPU] / f[CPU] <= 1.03 {
                        "met"
                    } else {
                        "NOT met"
                    }
                );
            }
        }
        let largest = cfg.subs.iter().copied().max().unwrap_or(0);
        let smallest = cfg.subs.iter().copied().min().unwrap_or(0);
        let f_large = med(w, largest, Server::Framework);
        if let (Some(a), Some(f)) = (med(w, largest, Server::Actors), &f_large) {
            let ratio = f[DELIV] / a[DELIV];
            println!(
                "goal: deliveries/s >= 1.3x the actor broker's at {largest} subscribers: \
                 {ratio:.2}x, {}",
                if ratio >= 1.3 { "met" } else { "NOT met" }
            );
        }
        if let (Some(b), Some(f)) = (med(w, largest, Server::Baseline), &f_large) {
            let ratio = f[DELIV] / b[DELIV];
            println!(
                "goal: deliveries/s >= 3x the actix-ws baseline's at {largest} subscribers: \
                 {ratio:.2}x, {}",
                if ratio >= 3.0 { "met" } else { "NOT met" }
            );
        }
        if let Some(f) = med(w, smallest, Server::Framework) {
            println!(
                "goal: server CPU per delivery <= 2.0 µs at {smallest} subscribers: {:.3} µs, {}",
                f[CPU],
                if f[CPU] <= 2.0 { "met" } else { "NOT met" }
            );
        }
        if cfg.memory {
            if let Some(f) = &f_large {
                println!(
                    "goal: memory per idle subscribed connection <= 12 KiB (12288 B) at \
                     {largest} subscribers: {:.0} B, {}",
                    f[MEM],
                    if f[MEM] <= 12288.0 { "met" } else { "NOT met" }
                );
            }
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
fn memory_only(rt: &tokio::runtime::Runtime, cfg: &Config) -> Result<(), String> {
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
        let load = cfg.load(Workload::Burst, subs);
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
                        return Err("no memory reading (an external server needs its pid)".into())
                    }
                    Err(e) => return Err(format!("{} server, {subs}: FAILED: {e}", kind.name())),
                }
            }
        }
    }
    for &subs in &cfg.subs {
        let m = |kind| {
            stats::median(
                per.iter()
                    .filter(|(s, k, _)| *s == subs && *k == kind)
                    .map(|(_, _, b)| *b)
                    .collect(),
            )
        };
        let f = m(Server::Framework);
        for other in [Server::Baseline, Server::Actors] {
            let b = m(other);
            if !f.is_nan() && !b.is_nan() {
                println!(
                    "{subs} subscribers: framework {f:.0} B, {} {b:.0} B per connection, \
                     difference {:+.0} B",
                    other.name(),
                    f - b
                );
            }
        }
        if !f.is_nan() {
            println!(
                "{subs} subscribers: goal framework <= 12288 B per idle subscribed connection: {}",
                if f <= 12288.0 { "met" } else { "NOT met" }
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let flags: Flags = flags::parse(&BENCH, DEFAULTS);
    if let Some(kind) = &flags.serve {
        let (workers, nodelay) = (flags.workers.max(1), !flags.nagle);
        let served = servers::serve(kind, flags.port, workers, nodelay, flags.pad);
        return support::exit("fanout server", served);
    }
    support::exit(BENCH.name, run(&flags))
}

fn run(flags: &Flags) -> Result<(), String> {
    println!(
        "fanout: one topic to N subscribers, Switchboard hub vs hand-written actix-ws and actix \
         actor broker"
    );
    println!("{}", flags::command_line(&BENCH));
    let cfg = Config::from(flags);
    let per_size = |f: &dyn Fn(usize) -> String| -> String {
        let v: Vec<String> = cfg
            .subs
            .iter()
            .map(|&n| format!("{} at {n}", f(n)))
            .collect();
        v.join(", ")
    };
    println!(
        "settings: workloads {}; window workload: {} unanswered, {} undelivered at most; \
         {} actix-web workers per server, TCP_NODELAY {}; payload pad {} B; window \
         {:.1} s after \
         {:.1} s warmup, bursts of {} publications, {} in flight; paced {} publications/s for \
         {:.1} s; {} round(s); {}; CPU from {}",
        cfg.workloads
            .iter()
            .map(|w| w.name())
            .collect::<Vec<_>>()
            .join(","),
        cfg.window,
        cfg.behind,
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
        cfg.pinning.describe("server"),
        cpu::source(),
    );

    let rt = support::runtime()?;
    if cfg.memory_only.is_some() {
        return memory_only(&rt, &cfg);
    }
    if cfg.callgrind {
        return callgrind_mode(&rt, &cfg);
    }
    println!(
        "columns: deliv/s in the window; p50/p99 µs publish-to-delivery of paced publications; \
         server CPU µs per delivery (usr/sys tick-sampled) in the window; drops = sequence \
         gaps; B/conn = server RSS per idle subscribed connection"
    );

    println!("\n{}", header());
    let mut results = Vec::new();
    let mut repeats = Repeats::new(cfg.max_other, cfg.budget);
    for (w, subs) in cfg
        .workloads
        .iter()
        .flat_map(|&w| cfg.subs.iter().map(move |&n| (w, n)))
    {
        let load = cfg.load(w, subs);
        for round in 1..=cfg.rounds {
            for &kind in &cfg.servers {
                let once = || {
                    if cfg.target.is_none() {
                        let waited = cpu::wait_quiet(cfg.max_other, Duration::from_secs(30));
                        if waited > Duration::from_secs(2) {
                            println!(
                                "(waited {:.0} s for other load to pass)",
                                waited.as_secs_f64()
                            );
                        }
                    }
                    run_once(&rt, kind, &cfg, &load)
                };
                let (r, disturbed) = repeats
                    .run(
                        round,
                        once,
                        |r| r.cpu.other_load(r.elapsed),
                        |label, r| println!("{}", row(w, subs, label, kind, &TABLE.values(r))),
                    )
                    .map_err(|e| {
                        format!(
                            "{} server, {} workload, {subs} subscribers, round {round}: \
                             FAILED: {e}",
                            kind.name(),
                            w.name()
                        )
                    })?;
                results.push(Outcome {
                    workload: w,
                    subs,
                    kind,
                    values: TABLE.values(&r),
                    disturbed,
                });
            }
        }
    }
    repeats.footnote();
    summary(&results, &cfg);
    println!(
        "total time {:.0} s",
        repeats.started().elapsed().as_secs_f64()
    );
    Ok(())
}
