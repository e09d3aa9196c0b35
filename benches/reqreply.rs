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
//! Options (flags after `--`, or environment):
//! - `--conns N` (REQREPLY_CONNS, 64), `--depth D` in flight per connection (REQREPLY_DEPTH, 1)
//! - `--secs S` measured window (REQREPLY_SECS, 4), `--warmup S` (REQREPLY_WARMUP, 1)
//! - `--rounds R` (REQREPLY_ROUNDS, 4), `--servers baseline,framework` (REQREPLY_SERVERS)
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

#[path = "reqreply/callgrind.rs"]
mod callgrind;
#[path = "reqreply/cpu.rs"]
mod cpu;
#[path = "reqreply/load.rs"]
mod load;
#[path = "reqreply/servers.rs"]
mod servers;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use load::{LoadConfig, Window};

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
    load: LoadConfig,
    rounds: usize,
    servers: Vec<Kind>,
    pin: bool,
    server_cpu: String,
    client_cpu: String,
    /// An already running server: port, and pid for its CPU time.
    target: Option<(u16, Option<u32>)>,
    /// A run with more other load than this (% of one CPU) is run again, within the budget.
    max_other: f64,
    /// Seconds after which disturbed runs are no longer repeated.
    budget: f64,
}

/// `--name value` from the arguments, else `REQREPLY_NAME` from the environment.
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
            eprintln!("reqreply: bad value `{v}` for {flag} / {env}");
            std::process::exit(2)
        }),
    }
}

impl Config {
    fn from(args: &[String]) -> Config {
        let secs = |flag, env, default| Duration::from_secs_f64(parsed(args, flag, env, default));
        let target = setting(args, "--target", "REQREPLY_TARGET").map(|_| {
            (
                parsed(args, "--target", "REQREPLY_TARGET", 0u16),
                setting(args, "--target-pid", "REQREPLY_TARGET_PID")
                    .map(|_| parsed(args, "--target-pid", "REQREPLY_TARGET_PID", 0u32)),
            )
        });
        let servers = setting(args, "--servers", "REQREPLY_SERVERS")
            .unwrap_or_else(|| "baseline,framework".into())
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| match s {
                "baseline" => Kind::Baseline,
                "framework" => Kind::Framework,
                other => {
                    eprintln!("reqreply: unknown server `{other}` (baseline|framework)");
                    std::process::exit(2)
                }
            })
            .collect();
        Config {
            load: LoadConfig {
                conns: parsed(args, "--conns", "REQREPLY_CONNS", 64usize).max(1),
                depth: parsed(args, "--depth", "REQREPLY_DEPTH", 1usize).max(1),
                warmup: secs("--warmup", "REQREPLY_WARMUP", 1.0),
                measure: secs("--secs", "REQREPLY_SECS", 4.0),
            },
            rounds: parsed(args, "--rounds", "REQREPLY_ROUNDS", 4usize).max(1),
            pin: !args.iter().any(|a| a == "--no-pin")
                && std::env::var("REQREPLY_PIN").map_or(true, |v| v != "0"),
            server_cpu: parsed(args, "--server-cpu", "REQREPLY_SERVER_CPU", "0".to_owned()),
            client_cpu: parsed(args, "--client-cpu", "REQREPLY_CLIENT_CPU", "1".to_owned()),
            servers: if target.is_some() {
                vec![Kind::External]
            } else {
                servers
            },
            target,
            max_other: parsed(args, "--max-other", "REQREPLY_MAX_OTHER", 25.0),
            budget: parsed(args, "--budget", "REQREPLY_BUDGET", 60.0),
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
    cmd.args(["--serve", kind.name()]);
    read_port(cmd, kind.name())
}

/// Spawns a server command and reads the `port N` line it prints once it listens.
fn read_port(mut cmd: Command, name: &str) -> Result<(Child, u16), String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting the {name} server: {e}"))?;
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
                "the {name} server did not announce its port (got {line:?})"
            ))
        }
    }
}

/// `--callgrind`: instructions per message of each server, under valgrind.
fn callgrind_mode(rt: &tokio::runtime::Runtime, cfg: &Config) -> ExitCode {
    let dir = std::env::temp_dir().join("reqreply-callgrind");
    let pin = cfg.pin.then_some(cfg.server_cpu.as_str());
    println!(
        "callgrind: user-space instructions the server executes per message, counted only \
         in the window (kernel time not included); profiles in {}",
        dir.display()
    );
    let mut irs = Vec::new();
    for &kind in &cfg.servers {
        match callgrind::measure(rt, kind.name(), &cfg.load, pin, &dir) {
            Ok((w, ir, path)) => {
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
            Err(e) => {
                eprintln!("reqreply: {} under callgrind: FAILED: {e}", kind.name());
                return ExitCode::FAILURE;
            }
        }
    }
    let of = |kind| irs.iter().find(|(k, _)| *k == kind).map(|(_, v)| *v);
    if let (Some(b), Some(f)) = (of(Kind::Baseline), of(Kind::Framework)) {
        println!(
            "framework / baseline: instructions per message {:.3} ({:+.1}%); \
             see where with `callgrind_annotate --inclusive=yes <profile>`",
            f / b,
            (f / b - 1.0) * 100.0
        );
    }
    ExitCode::SUCCESS
}

fn run_once(rt: &tokio::runtime::Runtime, kind: Kind, cfg: &Config) -> Result<Window, String> {
    let local = tokio::task::LocalSet::new();
    if let Some((port, pid)) = cfg.target {
        return local.block_on(rt, load::run(port, pid, &cfg.load));
    }
    let (mut child, port) = spawn_server(kind, cfg)?;
    let result = local.block_on(rt, load::run(port, Some(child.id()), &cfg.load));
    let _ = child.kill();
    let _ = child.wait();
    result
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

/// A column of the report: its header, width, decimals and how to read it from a window.
struct Column {
    name: &'static str,
    width: usize,
    decimals: usize,
    get: fn(&Window) -> f64,
}

const fn col(name: &'static str, width: usize, decimals: usize, get: fn(&Window) -> f64) -> Column {
    Column {
        name,
        width,
        decimals,
        get,
    }
}

const COLUMNS: &[Column] = &[
    col("msgs/s", 9, 0, Window::msgs_per_sec),
    col("p50 µs", 8, 1, |w| w.quantile_us(0.50)),
    col("p99 µs", 8, 1, |w| w.quantile_us(0.99)),
    col("CPU µs/msg", 10, 2, Window::server_cpu_us_per_msg),
    col("usr", 5, 2, Window::server_user_us_per_msg),
    col("sys", 5, 2, Window::server_sys_us_per_msg),
    col("srv util%", 9, 0, |w| w.server_util() * 100.0),
    col("cli util%", 9, 0, |w| w.client_util() * 100.0),
    col("other load%", 11, 0, |w| w.other_load() * 100.0),
];

/// Indexes of the CPU-per-message columns: total, user, system.
const CPU: usize = 3;
const USR: usize = 4;
const SYS: usize = 5;

fn header() -> String {
    let mut s = format!("{:<9} {:<9}", "round", "server");
    for c in COLUMNS {
        s += &format!(" {:>w$}", c.name, w = c.width);
    }
    s
}

fn row(label: &str, kind: Kind, values: &[f64]) -> String {
    let mut s = format!("{label:<9} {:<9}", kind.name());
    for (c, v) in COLUMNS.iter().zip(values) {
        s += &format!(" {v:>w$.d$}", w = c.width, d = c.decimals);
    }
    s
}

fn values(w: &Window) -> Vec<f64> {
    COLUMNS.iter().map(|c| (c.get)(w)).collect()
}

/// Prints the summary rows and ratios; `results` holds (round, server, column values).
fn summary(results: &[(usize, Kind, Vec<f64>)], servers: &[Kind], rounds: usize) {
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
        let m: Vec<f64> = (0..COLUMNS.len())
            .map(|i| median(runs.iter().map(|v| v[i]).collect()))
            .collect();
        println!("{}", row("median", kind, &m));
        if let Some(best) = runs.iter().min_by(|a, b| a[CPU].total_cmp(&b[CPU])) {
            println!("{}", row("best", kind, best));
            bests.push((kind, best[CPU]));
        }
        medians.push((kind, m));
    }
    let med = |kind| medians.iter().find(|(k, _)| *k == kind).map(|(_, m)| m);
    let (Some(b), Some(f)) = (med(Kind::Baseline), med(Kind::Framework)) else {
        return;
    };
    let cpu_of = |r: usize, kind| {
        results
            .iter()
            .find(|(rr, k, _)| *rr == r && *k == kind)
            .map(|(_, _, v)| v[CPU])
    };
    let pairs: Vec<String> = (1..=rounds)
        .filter_map(|r| Some(cpu_of(r, Kind::Framework)? / cpu_of(r, Kind::Baseline)?))
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
    if let (Some(bb), Some(fb)) = (best(Kind::Baseline), best(Kind::Framework)) {
        println!(
            "framework / baseline (best rounds): server CPU per message {:.3} ({:+.1}%)",
            fb / bb,
            (fb / bb - 1.0) * 100.0
        );
    }
    println!("per-round CPU/msg ratios: {}", pairs.join(", "));
    println!(
        "goal (framework CPU/msg <= 1.10 x baseline, medians): {}",
        if ratio <= 1.10 { "met" } else { "NOT met" }
    );
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(kind) = setting(&args, "--serve", "REQREPLY_SERVE_NEVER_SET") {
        let port = parsed(&args, "--port", "REQREPLY_PORT", 0u16);
        return match servers::serve(&kind, port) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("reqreply server: {e}");
                ExitCode::FAILURE
            }
        };
    }

    let cfg = Config::from(&args);
    let env: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("REQREPLY_"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!(
        "reqreply: request/reply over WebSocket, Switchboard channel vs hand-written actix-ws"
    );
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
            Err(e) => eprintln!("reqreply: could not pin (running unpinned): {e}"),
        }
    }
    let l = &cfg.load;
    println!(
        "settings: {} connections, {} in flight per connection (closed loop), warmup {:.1} s, \
         window {:.1} s, {} round(s); 1 actix-web worker; {pinned}; CPU from {}",
        l.conns,
        l.depth,
        l.warmup.as_secs_f64(),
        l.measure.as_secs_f64(),
        cfg.rounds,
        cpu::source(),
    );

    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("reqreply: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };

    if args.iter().any(|a| a == "--callgrind") || std::env::var_os("REQREPLY_CALLGRIND").is_some() {
        return callgrind_mode(&rt, &cfg);
    }

    println!("\n{}", header());
    let mut results: Vec<(usize, Kind, Vec<f64>)> = Vec::new();
    let started = Instant::now();
    let mut repeated = 0;
    for round in 1..=cfg.rounds {
        for &kind in &cfg.servers {
            let mut attempt = 0;
            let outcome = loop {
                let w = match run_once(&rt, kind, &cfg) {
                    Ok(w) => w,
                    Err(e) => break Err(e),
                };
                let v = values(&w);
                let disturbed = w.other_load() * 100.0 > cfg.max_other;
                let retry =
                    disturbed && attempt < 2 && started.elapsed().as_secs_f64() < cfg.budget;
                let label = match (disturbed, retry) {
                    (false, _) => round.to_string(),
                    (true, true) => format!("{round} (x)"),
                    (true, false) => format!("{round} (!)"),
                };
                println!("{}", row(&label, kind, &v));
                if !retry {
                    break Ok(v);
                }
                attempt += 1;
                repeated += 1;
            };
            match outcome {
                Ok(v) => results.push((round, kind, v)),
                Err(e) => {
                    eprintln!(
                        "reqreply: {} server, round {round}: FAILED: {e}",
                        kind.name()
                    );
                    return ExitCode::FAILURE;
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
    summary(&results, &cfg.servers, cfg.rounds);
    ExitCode::SUCCESS
}
