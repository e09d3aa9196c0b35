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
//! ignored): `--conns N` (GATEWAY_BENCH_CONNS, 16), `--secs S` measured per round
//! (GATEWAY_BENCH_SECS, 3), `--warmup S` (GATEWAY_BENCH_WARMUP, 0.5), `--rounds R`
//! (GATEWAY_BENCH_ROUNDS, 3), `--no-pin` (GATEWAY_BENCH_PIN=0). Run: `cargo bench --bench gateway`.

// The CPU readings of the request/reply bench (only some of its helpers are used here).
#[allow(dead_code)]
#[path = "reqreply/cpu.rs"]
mod cpu;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actix_web::App;
use serde::{Deserialize, Serialize};
use serde_json::json;
use switchboard::serverless::function::FunctionService;
use switchboard::serverless::gateway::Gateway;
use switchboard::prelude::*;
use switchboard::testing::{TestClient, TestServer};

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

fn setting<T: std::str::FromStr>(args: &[String], flag: &str, env: &str, default: T) -> T {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| std::env::var(env).ok())
        .map(|v| {
            v.parse().unwrap_or_else(|_| {
                eprintln!("gateway bench: bad value `{v}` for {flag} / {env}");
                std::process::exit(2)
            })
        })
        .unwrap_or(default)
}

struct Window {
    replies: u64,
    secs: f64,
    latencies: Vec<Duration>,
}

impl Window {
    fn rate(&self) -> f64 {
        self.replies as f64 / self.secs
    }

    fn quantile(&mut self, q: f64) -> Duration {
        self.latencies.sort_unstable();
        let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies.get(i).copied().unwrap_or_default()
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
    let cpu_start = cpu::process_cpu(server_pid).unwrap_or_default();
    tokio::time::sleep_until(end.into()).await;
    let cpu_used = cpu::process_cpu(server_pid)
        .unwrap_or_default()
        .saturating_sub(cpu_start);
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("load task"));
    }
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
    let in_process =
        TestServer::start(|| App::new().service(ChannelRoute::<()>::new("/ws").message(echo)));
    let function = TestServer::start(|| {
        App::new().service(FunctionService::<()>::new("/fn").token("t").message(echo))
    });
    let function_url = function.url("/fn");
    let gateway = TestServer::start(move || {
        App::new().service(
            Gateway::new(function_url.clone())
                .function_token("t")
                .channel("/ws"),
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
    child: Child,
    in_process: String,
    gateway: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_server(pin: bool) -> Server {
    let exe = std::env::current_exe().expect("the bench's own path");
    let mut cmd = if pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    let mut child = cmd
        .arg("--serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting the server process");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("the server's stdout");
    let _ = BufReader::new(stdout).read_line(&mut line);
    let mut urls = line.trim().strip_prefix("urls ").unwrap_or("").split(' ');
    match (urls.next(), urls.next()) {
        (Some(a), Some(b)) if !a.is_empty() => Server {
            in_process: a.to_owned(),
            gateway: b.to_owned(),
            child,
        },
        _ => {
            let _ = child.kill();
            panic!("the server process did not start (got {line:?})");
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--serve") {
        serve();
        return;
    }
    let conns: usize = setting(&args, "--conns", "GATEWAY_BENCH_CONNS", 16usize).max(1);
    let secs = Duration::from_secs_f64(setting(&args, "--secs", "GATEWAY_BENCH_SECS", 3.0));
    let warmup = Duration::from_secs_f64(setting(&args, "--warmup", "GATEWAY_BENCH_WARMUP", 0.5));
    let rounds: usize = setting(&args, "--rounds", "GATEWAY_BENCH_ROUNDS", 3usize).max(1);
    let mut pin = !args.iter().any(|a| a == "--no-pin")
        && std::env::var("GATEWAY_BENCH_PIN").map_or(true, |v| v != "0");
    if pin {
        pin = Command::new("taskset")
            .args(["-a", "-p", "-c", "1", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !pin {
            eprintln!("gateway bench: taskset failed, running unpinned");
        }
    }
    let server = spawn_server(pin);
    let server_pid = server.child.id();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    println!(
        "gateway bench: {conns} connections, 1 request in flight each, {rounds} rounds of {:?} (+{:?} warm-up); {}; CPU from {}",
        secs,
        warmup,
        if pin {
            "server process (in-process server, gateway, function) on CPU 0, load generator on CPU 1"
        } else {
            "unpinned"
        },
        cpu::source()
    );
    println!(
        "{:<11} {:>5} {:>12} {:>10} {:>10} {:>14}",
        "mode", "round", "replies/s", "p50 µs", "p99 µs", "CPU µs/reply"
    );
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
            let (p50, p99) = (w.quantile(0.5), w.quantile(0.99));
            let cpu_per = cpu_used.as_secs_f64() * 1e6 / w.replies.max(1) as f64;
            println!(
                "{name:<11} {round:>5} {:>12.0} {:>10.0} {:>10.0} {:>14.1}",
                w.rate(),
                p50.as_secs_f64() * 1e6,
                p99.as_secs_f64() * 1e6,
                cpu_per
            );
            rates[i].push(w.rate());
            cpus[i].push(cpu_per);
            lats[i].append(&mut w.latencies);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let mut summary = |i: usize| {
        let mut w = Window {
            replies: 0,
            secs: 1.0,
            latencies: std::mem::take(&mut lats[i]),
        };
        (
            median(&mut rates[i]),
            median(&mut cpus[i]),
            w.quantile(0.5),
            w.quantile(0.99),
        )
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
}
