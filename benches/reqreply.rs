// Switchboard vs hand-written actix-ws request/reply: msgs/s, p50/p99, server CPU µs/msg. Run: `cargo bench --bench reqreply`.
//!
//! The bench re-executes itself: `reqreply --serve framework|baseline [--port P]` is one server
//! (one actix-web worker) in a child process pinned to CPU 0 with `taskset`; this process, the
//! load generator, pins itself to CPU 1 and drives N WebSocket connections (tokio-tungstenite,
//! one current-thread runtime) in closed loop, `depth` requests in flight on each, checking
//! every reply byte for byte. Servers alternate (baseline, framework, baseline, ...); each run
//! warms up, then measures a window: replies/s, latency quantiles, and the server process's CPU
//! time over the window divided by the replies in it (`CPU µs/msg`, from schedstat; `usr` and
//! `sys` split it, tick-sampled). `other load%` is CPU time the machine spent on anything else
//! in the window (other processes, interrupts, steal): a run with more than `--max-other` of it
//! is discarded and repeated (at most twice, and only within `--budget` seconds).
//!
//! Options (flags after `--`, or environment; `-- --help` lists them):
//! - `--conns N` (REQREPLY_CONNS, 64), `--depth D` in flight per connection (REQREPLY_DEPTH, 1)
//! - `--secs S` measured window (REQREPLY_SECS, 4), `--warmup S` (REQREPLY_WARMUP, 1)
//! - `--rounds R` (REQREPLY_ROUNDS, 4), `--servers floor,baseline,framework`
//!   (REQREPLY_SERVERS): `floor` is a verbatim echo on fastwebsockets (no framework, no JSON),
//!   the least a message costs, and the summary gives each server's CPU per message against
//!   it; `http` is the framework's server driven over its HTTP transport (an SSE stream per
//!   connection, requests in `POST` batches on a keep-alive socket), e.g.
//!   `--servers baseline,framework,http`
//! - `--server-cpu C`, `--client-cpu C` (REQREPLY_SERVER_CPU 0, REQREPLY_CLIENT_CPU 1),
//!   `--no-pin` (REQREPLY_PIN=0)
//! - `--max-other PCT` (REQREPLY_MAX_OTHER, 25), `--budget SECS` (REQREPLY_BUDGET, 60)
//! - `--callgrind` (REQREPLY_CALLGRIND=1): each server once under valgrind's callgrind,
//!   counting user-space instructions per message in the window only (noise-free), and
//!   leaving the profiles for `callgrind_annotate`
//! - `--target PORT [--target-pid PID]`: load only, against a server started elsewhere, e.g.
//!   `target/release/deps/reqreply-* --serve framework --port 9000` under a profiler
//!
//! Example: `cargo bench --bench reqreply -- --conns 128 --depth 4 --rounds 5`.

mod support;

// The bench's own parts, in `benches/reqreply/`. Declared in an inline module because this
// crate's root is `benches/reqreply.rs`, whose plain `mod x;` looks for `benches/x.rs`: nested
// in `mod reqreply`, they are found in `benches/reqreply/`, and the plain `mod support;` above
// finds the support shared by every bench in `benches/support/`, with no `#[path]`.
mod reqreply {
    pub mod callgrind;
    pub mod http;
    pub mod load;
    pub mod servers;
}

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use reqreply::load::{self, LoadConfig, Window};
use reqreply::{callgrind, servers};
use support::flags::{self, Bench, Server};
use support::pin::Pinning;
use support::spawn::{self, Proc};
use support::stats::{Rank, Repeats};
use support::table::{Column, Table};
use support::{cpu, stats};

const BENCH: Bench = Bench {
    name: "reqreply",
    env: "REQREPLY_",
};

/// Switchboard vs hand-written actix-ws request/reply: msgs/s, p50/p99, server CPU µs/msg
#[derive(Parser)]
struct Flags {
    /// WebSocket connections
    #[arg(long, env, default_value_t = 64)]
    conns: usize,
    /// Requests in flight per connection (closed loop)
    #[arg(long, env, default_value_t = 1)]
    depth: usize,
    #[command(flatten)]
    rounds: flags::Rounds,
    #[command(flatten)]
    versus: flags::Versus,
    #[command(flatten)]
    pin: flags::Pin,
    #[command(flatten)]
    cpus: flags::Cpus,
    /// Each server once under valgrind's callgrind: user-space instructions per message
    #[arg(long, env, value_parser = flags::switch())]
    callgrind: bool,
    /// Server mode: be this server (framework|baseline) until killed
    #[arg(long)]
    serve: Option<String>,
    /// Server mode: the port to listen on (0: any free one)
    #[arg(long, env, default_value_t = 0)]
    port: u16,
}

const DEFAULTS: &[(&str, &str)] = &[
    ("servers", "floor,baseline,framework"),
    ("rounds", "4"),
    ("secs", "4"),
    ("warmup", "1"),
    ("budget", "60"),
];

/// What every run needs.
struct Setup {
    load: LoadConfig,
    pinning: Pinning,
    target: Option<(u16, Option<u32>)>,
}

/// Starts a server child and reads the port it listens on.
fn spawn_server(kind: Server, cpu: Option<&str>) -> Result<(Proc, u16), String> {
    // The HTTP transport is the framework's server as it is: only the load differs.
    let mut cmd = spawn::this_bench(cpu)?;
    cmd.args(["--serve", kind.name()]);
    spawn::server(cmd, &format!("{} server", kind.name()))
}

/// The load for `kind`: the floor echoes, the others answer; `http` goes over the HTTP
/// transport.
fn load_for(kind: Server, s: &Setup) -> LoadConfig {
    LoadConfig {
        echo: kind == Server::Floor,
        http: kind == Server::Http,
        ..s.load.clone()
    }
}

fn run_once(rt: &tokio::runtime::Runtime, kind: Server, s: &Setup) -> Result<Window, String> {
    let cfg = load_for(kind, s);
    spawn::against(
        rt,
        s.target,
        || spawn_server(kind, s.pinning.server()),
        |port, pid| load::run(port, pid, &cfg),
    )
}

/// `--callgrind`: instructions per message of each server, under valgrind.
fn callgrind_mode(
    rt: &tokio::runtime::Runtime,
    servers: &[Server],
    s: &Setup,
) -> Result<(), String> {
    let dir = std::env::temp_dir().join("reqreply-callgrind");
    println!(
        "callgrind: user-space instructions the server executes per message, counted only \
         in the window (kernel time not included); profiles in {}",
        dir.display()
    );
    let mut irs = Vec::new();
    for &kind in servers {
        let (w, ir, path) = callgrind::measure(
            rt,
            kind.name(),
            &load_for(kind, s),
            s.pinning.server(),
            &dir,
        )
        .map_err(|e| format!("{} under callgrind: FAILED: {e}", kind.name()))?;
        let per = ir as f64 / w.msgs as f64;
        println!(
            "{:<9} {:>8} msgs in window  {:>14} Ir  {:>10.0} Ir/msg  profile: {}",
            kind.name(),
            w.msgs,
            ir,
            per,
            path.display()
        );
        irs.push((kind, per));
    }
    let of = |kind| irs.iter().find(|(k, _)| *k == kind).map(|(_, v)| *v);
    if let (Some(f), Some(m)) = (of(Server::Framework), of(Server::Metrics)) {
        println!(
            "metrics / framework: instructions per message {:.3} ({:+.1}%)",
            m / f,
            (m / f - 1.0) * 100.0
        );
    }
    if let (Some(f), Some(h)) = (of(Server::Framework), of(Server::Http)) {
        println!(
            "http / framework: instructions per message {:.3} ({:+.1}%)",
            h / f,
            (h / f - 1.0) * 100.0
        );
    }
    if let (Some(b), Some(f)) = (of(Server::Baseline), of(Server::Framework)) {
        println!(
            "framework / baseline: instructions per message {:.3} ({:+.1}%); \
             see where with `callgrind_annotate --inclusive=yes <profile>`",
            f / b,
            (f / b - 1.0) * 100.0
        );
    }
    if let Some(floor) = of(Server::Floor) {
        for kind in [Server::Baseline, Server::Framework] {
            if let Some(v) = of(kind) {
                println!(
                    "{} / floor: instructions per message {:.3} ({:+.1}%)",
                    kind.name(),
                    v / floor,
                    (v / floor - 1.0) * 100.0
                );
            }
        }
        if let Some(f) = of(Server::Framework) {
            println!(
                "goal (framework <= 1.10 x floor, instructions): {}",
                if f / floor <= 1.10 { "met" } else { "NOT met" }
            );
        }
    }
    Ok(())
}

fn latency_us(w: &Window, q: f64) -> f64 {
    stats::quantile_us(&w.latencies, q, Rank::Nearest)
}

const TABLE: Table<Window> = Table(&[
    Column::new("msgs/s", 9, 0, |w| w.msgs as f64 / w.elapsed.as_secs_f64()),
    Column::new("p50 µs", 8, 1, |w| latency_us(w, 0.50)),
    Column::new("p99 µs", 8, 1, |w| latency_us(w, 0.99)),
    Column::new("CPU µs/msg", 10, 2, |w| w.cpu.server_us_per(w.msgs)),
    Column::new("usr", 5, 2, |w| w.cpu.server_user_us_per(w.msgs)),
    Column::new("sys", 5, 2, |w| w.cpu.server_sys_us_per(w.msgs)),
    Column::new("srv util%", 9, 0, |w| w.cpu.server_util(w.elapsed) * 100.0),
    Column::new("cli util%", 9, 0, |w| w.cpu.client_util(w.elapsed) * 100.0),
    Column::new("other load%", 11, 0, |w| {
        w.cpu.other_load(w.elapsed) * 100.0
    }),
]);

/// Indexes of the CPU-per-message columns: total, user, system.
const CPU: usize = 3;
const USR: usize = 4;
const SYS: usize = 5;

fn header() -> String {
    TABLE.header(format!("{:<9} {:<9}", "round", "server"))
}

fn row(label: &str, kind: Server, values: &[f64]) -> String {
    TABLE.row(format!("{label:<9} {:<9}", kind.name()), values)
}

/// Prints the summary rows and ratios; `results` holds (round, server, column values).
fn summary(results: &[(usize, Server, Vec<f64>)], servers: &[Server], rounds: usize) {
    println!(
        "\nsummary: median of each column over rounds; `best` is the round with the least CPU/msg"
    );
    println!("{}", header());
    let mut medians = Vec::new();
    let mut bests = Vec::new();
    for &kind in servers {
        let runs: Vec<&Vec<f64>> = results
            .iter()
            .filter(|(_, k, _)| *k == kind)
            .map(|(_, _, v)| v)
            .collect();
        let m = TABLE.medians(runs.iter().copied());
        println!("{}", row("median", kind, &m));
        if let Some(best) = runs.iter().min_by(|a, b| a[CPU].total_cmp(&b[CPU])) {
            println!("{}", row("best", kind, best));
            bests.push((kind, best[CPU]));
        }
        medians.push((kind, m));
    }
    let med = |kind| medians.iter().find(|(k, _)| *k == kind).map(|(_, m)| m);
    let cpu_of = |r: usize, kind| {
        results
            .iter()
            .find(|(rr, k, _)| *rr == r && *k == kind)
            .map(|(_, _, v)| v[CPU])
    };
    if let (Some(f), Some(h)) = (med(Server::Framework), med(Server::Http)) {
        let pairs: Vec<String> = (1..=rounds)
            .filter_map(|r| Some(cpu_of(r, Server::Http)? / cpu_of(r, Server::Framework)?))
            .map(|r| format!("{r:.3}"))
            .collect();
        println!(
            "http / framework (medians): server CPU per message {:.3} ({:+.1}%), throughput \
         {:.3}, p50 {:.3}; per round {}",
            h[CPU] / f[CPU],
            (h[CPU] / f[CPU] - 1.0) * 100.0,
            h[0] / f[0],
            h[1] / f[1],
            pairs.join(", ")
        );
    }
    let (Some(b), Some(f)) = (med(Server::Baseline), med(Server::Framework)) else {
        return;
    };

    let pairs: Vec<String> = (1..=rounds)
        .filter_map(|r| Some(cpu_of(r, Server::Framework)? / cpu_of(r, Server::Baseline)?))
        .map(|r| format!("{r:.3}"))
        .collect();
    let best = |kind| bests.iter().find(|(k, _)| *k == kind).map(|(_, v)| *v);
    let ratio = f[CPU] / b[CPU];
    println!(
        "\nframework / baseline (medians): server CPU per message {ratio:.3} ({:+.1}%), \
         throughput {:.3}, p50 {:.3}, p99 {:.3}",
        (ratio - 1.0) * 100.0,
        f[0] / b[0],
        f[1] / b[1],
        f[2] / b[2],
    );
    println!(
        "  of which user space {:.2} vs {:.2} µs/msg ({:+.1}%), kernel {:.2} vs {:.2} µs/msg \
         ({:+.1}%)",
        f[USR],
        b[USR],
        (f[USR] / b[USR] - 1.0) * 100.0,
        f[SYS],
        b[SYS],
        (f[SYS] / b[SYS] - 1.0) * 100.0,
    );
    if let (Some(bb), Some(fb)) = (best(Server::Baseline), best(Server::Framework)) {
        println!(
            "framework / baseline (best rounds): server CPU per message {:.3} ({:+.1}%)",
            fb / bb,
            (fb / bb - 1.0) * 100.0
        );
    }
    println!("per-round CPU/msg ratios: {}", pairs.join(", "));
    if let Some(m) = med(Server::Metrics) {
        let pairs: Vec<String> = (1..=rounds)
            .filter_map(|r| Some(cpu_of(r, Server::Metrics)? / cpu_of(r, Server::Framework)?))
            .map(|r| format!("{r:.3}"))
            .collect();
        let ratio = m[CPU] / f[CPU];
        println!(
            "metrics / framework (medians): server CPU per message {ratio:.3} ({:+.1}%), \
             throughput {:.3}; per round {}; goal (<= 1.03): {}",
            (ratio - 1.0) * 100.0,
            m[0] / f[0],
            pairs.join(", "),
            if ratio <= 1.03 { "met" } else { "NOT met" }
        );
    }
    println!(
        "goal (framework CPU/msg <= 1.10 x baseline, medians): {}",
        if ratio <= 1.10 { "met" } else { "NOT met" }
    );
    if let Some(floor) = med(Server::Floor) {
        for (kind, m) in [(Server::Baseline, b), (Server::Framework, f)] {
            let pairs: Vec<String> = (1..=rounds)
                .filter_map(|r| Some(cpu_of(r, kind)? / cpu_of(r, Server::Floor)?))
                .map(|r| format!("{r:.3}"))
                .collect();
            println!(
                "{} / floor (medians): server CPU per message {:.3} ({:+.1}%); per round {}",
                kind.name(),
                m[CPU] / floor[CPU],
                (m[CPU] / floor[CPU] - 1.0) * 100.0,
                pairs.join(", ")
            );
        }
        println!(
            "goal (framework CPU/msg <= 1.10 x floor, medians): {}",
            if f[CPU] / floor[CPU] <= 1.10 {
                "met"
            } else {
                "NOT met"
            }
        );
    }
}

fn main() -> ExitCode {
    let flags: Flags = flags::parse(&BENCH, DEFAULTS);
    if let Some(kind) = &flags.serve {
        return support::exit("reqreply server", servers::serve(kind, flags.port));
    }
    support::exit(BENCH.name, run(&flags))
}

fn run(flags: &Flags) -> Result<(), String> {
    println!(
        "reqreply: request/reply over WebSocket, Switchboard channel vs hand-written actix-ws"
    );
    println!("{}", flags::command_line(&BENCH));
    let (server_cpu, client_cpu) = (&flags.cpus.server_cpu, &flags.cpus.client_cpu);
    let s = Setup {
        load: LoadConfig {
            conns: flags.conns.max(1),
            depth: flags.depth.max(1),
            warmup: Duration::from_secs_f64(flags.rounds.warmup()),
            measure: Duration::from_secs_f64(flags.rounds.secs()),
            echo: false,
            http: false,
        },
        pinning: Pinning::apply(BENCH.name, flags.pin.pin, server_cpu, client_cpu),
        target: flags.versus.target(),
    };
    let rounds = flags.rounds.rounds();
    let l = &s.load;
    println!(
        "settings: {} connections, {} in flight per connection (closed loop), warmup {:.1} s, \
         window {:.1} s, {} round(s); 1 actix-web worker; {}; CPU from {}",
        l.conns,
        l.depth,
        l.warmup.as_secs_f64(),
        l.measure.as_secs_f64(),
        rounds,
        s.pinning.describe("server"),
        cpu::source(),
    );

    let rt = support::runtime()?;
    let servers = flags.versus.servers();
    if flags.callgrind {
        return callgrind_mode(&rt, &servers, &s);
    }

    println!("\n{}", header());
    let mut results: Vec<(usize, Server, Vec<f64>)> = Vec::new();
    let mut repeats = Repeats::new(flags.versus.max_other, flags.versus.budget);
    for round in 1..=rounds {
        for &kind in &servers {
            let (w, _) = repeats
                .run(
                    round,
                    || run_once(&rt, kind, &s),
                    |w| w.cpu.other_load(w.elapsed),
                    |label, w| println!("{}", row(label, kind, &TABLE.values(w))),
                )
                .map_err(|e| format!("{} server, round {round}: FAILED: {e}", kind.name()))?;
            results.push((round, kind, TABLE.values(&w)));
        }
    }
    repeats.footnote();
    summary(&results, &servers, rounds);
    Ok(())
}
