//! Gateway-mode request/reply overhead beside in-process: the same `#[switchboard::message]`
//! handler answers WebSocket requests once on an in-process channel, once hosted by a function
//! server behind a gateway channel (client → gateway → HTTP POST of the event → function →
//! reply relayed). Same run, alternating rounds: replies/s, latency p50/p99, and the ratios.
//!
//! Each server is one actix-web worker on its own thread; the load generator drives `--conns`
//! WebSocket connections in closed loop, one request in flight on each, checking every reply.
//!
//! Options (flags after `--`, or environment; unknown arguments such as `--bench` are
//! ignored): `--conns N` (GATEWAY_BENCH_CONNS, 16), `--secs S` measured per round
//! (GATEWAY_BENCH_SECS, 3), `--warmup S` (GATEWAY_BENCH_WARMUP, 0.5), `--rounds R`
//! (GATEWAY_BENCH_ROUNDS, 2). Run: `cargo bench --bench gateway`.

use std::time::{Duration, Instant};

use actix_web::App;
use serde::{Deserialize, Serialize};
use serde_json::json;
use switchboard::function::FunctionService;
use switchboard::gateway::Gateway;
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
async fn load(url: &str, conns: usize, warmup: Duration, secs: Duration) -> Window {
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
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("load task"));
    }
    Window {
        replies: latencies.len() as u64,
        secs: secs.as_secs_f64(),
        latencies,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let conns: usize = setting(&args, "--conns", "GATEWAY_BENCH_CONNS", 16usize).max(1);
    let secs = Duration::from_secs_f64(setting(&args, "--secs", "GATEWAY_BENCH_SECS", 3.0));
    let warmup = Duration::from_secs_f64(setting(&args, "--warmup", "GATEWAY_BENCH_WARMUP", 0.5));
    let rounds: usize = setting(&args, "--rounds", "GATEWAY_BENCH_ROUNDS", 2usize).max(1);

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

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    println!(
        "gateway bench: {conns} connections, 1 request in flight each, {rounds} rounds of {:?} (+{:?} warm-up)",
        secs, warmup
    );
    println!(
        "{:<11} {:>5} {:>12} {:>10} {:>10}",
        "mode", "round", "replies/s", "p50 µs", "p99 µs"
    );
    let mut totals = [(0.0f64, Vec::new()), (0.0f64, Vec::new())];
    for round in 1..=rounds {
        for (i, (name, server)) in [("in-process", &in_process), ("gateway", &gateway)]
            .into_iter()
            .enumerate()
        {
            let mut w = rt.block_on(load(&server.ws_url("/ws"), conns, warmup, secs));
            let (p50, p99) = (w.quantile(0.5), w.quantile(0.99));
            println!(
                "{name:<11} {round:>5} {:>12.0} {:>10.0} {:>10.0}",
                w.rate(),
                p50.as_secs_f64() * 1e6,
                p99.as_secs_f64() * 1e6
            );
            totals[i].0 += w.rate() / rounds as f64;
            totals[i].1.append(&mut w.latencies);
        }
    }
    let mut summary = |i: usize| {
        let mut w = Window {
            replies: 0,
            secs: 1.0,
            latencies: std::mem::take(&mut totals[i].1),
        };
        (totals[i].0, w.quantile(0.5), w.quantile(0.99))
    };
    let (r_in, p50_in, p99_in) = summary(0);
    let (r_gw, p50_gw, p99_gw) = summary(1);
    println!(
        "gateway / in-process: throughput ×{:.2} ({:.0} vs {:.0} replies/s), p50 ×{:.1} (+{:.0} µs), p99 ×{:.1}",
        r_gw / r_in,
        r_gw,
        r_in,
        p50_gw.as_secs_f64() / p50_in.as_secs_f64().max(1e-9),
        (p50_gw.as_secs_f64() - p50_in.as_secs_f64()) * 1e6,
        p99_gw.as_secs_f64() / p99_in.as_secs_f64().max(1e-9),
    );
}
