//! Gateway-mode request/reply overhead beside in-process: the same `#[switchboard::message]`
//! handler answers WebSocket requests once on an in-process channel, once hosted by a function
//! server behind a gateway channel (client → gateway → HTTP POST of the event → function →
//! reply relayed). Same run, alternating rounds: replies/s, latency p50/p99, server CPU per
//! reply, and the ratios.
//!
//! The bench re-executes itself: `gateway --serve` is the server side, in a child process
//! pinned to CPU 0 with `taskset` (the in-process server, the gateway and the function server,
//! one actix-web worker each); this process, the load generator, is pinned to CPU 1. The load
//! generator drives `--conns` WebSocket connections in closed loop, one request in flight on
//! each, checking every reply. Server CPU per reply is the server process's CPU time (from
//! /proc) over the measured window divided by the replies: in gateway mode it includes the
//! function server's work.
//!
//! Options (flags after `--`, or environment; unknown arguments such as `--bench` are
//! ignored; `-- --help` lists them): `--conns N` (GATEWAY_BENCH_CONNS, 16), `--secs S` measured per round
//! (GATEWAY_BENCH_SECS, 3), `--warmup S` (GATEWAY_BENCH_WARMUP, 0.5), `--rounds R`
//! (GATEWAY_BENCH_ROUNDS, 3), `--no-pin` (GATEWAY_BENCH_PIN=0). Run: `cargo bench --bench gateway`.

mod support;

use std::io::Read;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use actix_web::App;
use clap::Parser;
use serde::{Deserialize, Serialize};
use serde_json::json;
use switchboard::prelude::*;
use switchboard::serverless::function::FunctionService;
use switchboard::serverless::gateway::Gateway;
use switchboard::testing::{TestClient, TestServer};

use support::cpu;
use support::flags::{self, Bench};
use support::pin::Pinning;
use support::spawn::{self, Proc};
use support::stats::{self, Rank};
use support::table::{Column, Table};

const BENCH: Bench = Bench {
    name: "gateway",
    env: "GATEWAY_BENCH_",
};

/// Gateway-mode request/reply beside in-process: replies/s, latency, server CPU per reply
#[derive(Parser)]
struct Flags {
    /// WebSocket connections, one request in flight on each
    #[arg(long, env, default_value_t = 16)]
    conns: usize,
    #[command(flatten)]
    rounds: flags::Rounds,
    #[command(flatten)]
    pin: flags::Pin,
    /// Server mode: be the server side (in-process server, gateway, function) until stdin
    /// closes
    #[arg(long)]
    serve: bool,
}

const DEFAULTS: &[(&str, &str)] = &[("rounds", "3"), ("secs", "3"), ("warmup", "0.5")];

#[derive(Deserialize)]
struct Req {
    id: u64,
    text: String,
}

#[derive(Serialize)]
struct Resp {
    id: u64,
    len: usize,
}

/// The handler under test, mounted both ways unchanged.
#[switchboard::message("echo")]
async fn echo(msg: Req) -> Result<Resp, ChannelError> {
    Ok(Resp {
        id: msg.id,
        len: msg.text.len(),
    })
}

/// The measured window of one run: its latencies, sorted.
struct Window {
    replies: u64,
    secs: f64,
    latencies: Vec<Duration>,
}

impl Window {
    fn rate(&self) -> f64 {
        self.replies as f64 / self.secs
    }

    fn quantile(&self, q: f64) -> Duration {
        stats::quantile(&self.latencies, q, Rank::Rounded).unwrap_or_default()
    }
}

/// Drives `conns` connections to `url` for `warmup + secs`; measures the last `secs`.
async fn load(
    url: &str,
    conns: usize,
    warmup: Duration,
    secs: Duration,
    server_pid: u32,
) -> (Window, Duration) {
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + secs;
    let mut tasks = Vec::new();
    for c in 0..conns {
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut client = TestClient::connect(&url).await.expect("connect");
            let mut latencies = Vec::new();
            let mut n = 0u64;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let id = (c as u64) << 32 | n;
                let reply = client
                    .request("echo", json!({"id": id, "text": "hello, gateway"}))
                    .await
                    .expect("a reply");
                assert_eq!(reply, json!({"id": id, "len": 14}), "wrong reply");
                n += 1;
                if sent >= measure_from {
                    latencies.push(sent.elapsed());
                }
            }
            let _ = client.close().await;
            latencies
        }));
    }
    // The server's CPU over the measured window: read at its start and its end.
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_start = cpu::each(&[server_pid]);
    tokio::time::sleep_until(end.into()).await;
    let cpu_used = cpu::used_since(&[server_pid], &cpu_start);
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("load task"));
    }
    latencies.sort_unstable();
    (
        Window {
            replies: latencies.len() as u64,
            secs: secs.as_secs_f64(),
            latencies,
        },
        cpu_used,
    )
}

/// The server side: the three servers, their ports on one stdout line, then serve until stdin
/// closes (the load generator exits or drops the pipe).
fn serve() {
    let in_process = TestServer::start(|| {
        // A bench drives each connection as fast as it can: no message rate limit.
        App::new().service(
            ChannelRoute::<()>::new("/ws")
                .rate_limit(0, 1)
                .message(echo),
        )
    });
    let function = TestServer::start(|| {
        App::new().service(FunctionService::<()>::new("/fn").token("t").message(echo))
    });
    let function_url = function.url("/fn");
    let gateway = TestServer::start(move || {
        App::new().service(
            Gateway::new(function_url.clone())
                .function_token("t")
                .channel("/ws")
                .rate_limit(0, 1),
        )
    });
    println!(
        "urls {} {}",
        in_process.ws_url("/ws"),
        gateway.ws_url("/ws")
    );
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

/// The server process, killed when dropped.
struct Server {
    proc: Proc,
    in_process: String,
    gateway: String,
}

fn spawn_server(cpu: Option<&str>) -> Result<Server, String> {
    let mut cmd = spawn::this_bench(cpu)?;
    cmd.arg("--serve");
    let (proc, line) = spawn::announced(cmd, "server process")?;
    let mut urls = line.trim().strip_prefix("urls ").unwrap_or("").split(' ');
    match (urls.next(), urls.next()) {
        (Some(a), Some(b)) if !a.is_empty() => Ok(Server {
            proc,
            in_process: a.to_owned(),
            gateway: b.to_owned(),
        }),
        _ => Err(format!("the server process did not start (got {line:?})")),
    }
}

/// One round of one mode, as printed.
struct Run {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us: f64,
}

const TABLE: Table<Run> = Table(&[
    Column::new("replies/s", 12, 0, |r| r.rate),
    Column::new("p50 µs", 10, 0, |r| r.p50_us),
    Column::new("p99 µs", 10, 0, |r| r.p99_us),
    Column::new("CPU µs/reply", 14, 1, |r| r.cpu_us),
]);

fn main() -> ExitCode {
    let flags: Flags = flags::parse(&BENCH, DEFAULTS);
    if flags.serve {
        serve();
        return ExitCode::SUCCESS;
    }
    support::exit(BENCH.name, run(&flags))
}

fn run(flags: &Flags) -> Result<(), String> {
    let conns = flags.conns.max(1);
    let secs = Duration::from_secs_f64(flags.rounds.secs());
    let warmup = Duration::from_secs_f64(flags.rounds.warmup());
    let rounds = flags.rounds.rounds();
    let pinning = Pinning::apply(BENCH.name, flags.pin.pin, "0", "1");
    let server = spawn_server(pinning.server())?;
    let server_pid = server.proc.id();

    let rt = support::runtime()?;
    println!(
        "gateway bench: {conns} connections, 1 request in flight each, {rounds} rounds of {:?} (+{:?} warm-up); {}; CPU from {}",
        secs,
        warmup,
        pinning.describe("server process (in-process server, gateway, function)"),
        cpu::source()
    );
    println!("{}", TABLE.header(format!("{:<11} {:>5}", "mode", "round")));
    // Per mode: replies/s, CPU µs per reply, of each round; all latencies.
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut cpus: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut lats: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for round in 1..=rounds {
        for (i, (name, url)) in [
            ("in-process", &server.in_process),
            ("gateway", &server.gateway),
        ]
        .into_iter()
        .enumerate()
        {
            let (mut w, cpu_used) = rt.block_on(load(url, conns, warmup, secs, server_pid));
            let run = Run {
                rate: w.rate(),
                p50_us: w.quantile(0.5).as_secs_f64() * 1e6,
                p99_us: w.quantile(0.99).as_secs_f64() * 1e6,
                cpu_us: cpu_used.as_secs_f64() * 1e6 / w.replies.max(1) as f64,
            };
            let lead = format!("{name:<11} {round:>5}");
            println!("{}", TABLE.row(lead, &TABLE.values(&run)));
            rates[i].push(run.rate);
            cpus[i].push(run.cpu_us);
            lats[i].append(&mut w.latencies);
        }
    }
    // The median of rounds as the rounded-rank quantile: the upper middle of an even count.
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        stats::quantile(v, 0.5, Rank::Rounded).unwrap_or(f64::NAN)
    };
    let mut summary = |i: usize| {
        lats[i].sort_unstable();
        let q = |q| stats::quantile(&lats[i], q, Rank::Rounded).unwrap_or_default();
        (median(&mut rates[i]), median(&mut cpus[i]), q(0.5), q(0.99))
    };
    let (r_in, c_in, p50_in, p99_in) = summary(0);
    let (r_gw, c_gw, p50_gw, p99_gw) = summary(1);
    println!(
        "medians: in-process {r_in:.0} replies/s, p50 {:.0} µs, p99 {:.0} µs, {c_in:.1} CPU µs/reply; \
         gateway {r_gw:.0} replies/s, p50 {:.0} µs, p99 {:.0} µs, {c_gw:.1} CPU µs/reply",
        p50_in.as_secs_f64() * 1e6,
        p99_in.as_secs_f64() * 1e6,
        p50_gw.as_secs_f64() * 1e6,
        p99_gw.as_secs_f64() * 1e6,
    );
    println!(
        "gateway / in-process: throughput ×{:.2}, p50 ×{:.1} (+{:.0} µs), p99 ×{:.1}, server CPU per reply ×{:.2} (+{:.1} µs)",
        r_gw / r_in,
        p50_gw.as_secs_f64() / p50_in.as_secs_f64().max(1e-9),
        (p50_gw.as_secs_f64() - p50_in.as_secs_f64()) * 1e6,
        p99_gw.as_secs_f64() / p99_in.as_secs_f64().max(1e-9),
        c_gw / c_in.max(1e-9),
        c_gw - c_in,
    );
    Ok(())
}
