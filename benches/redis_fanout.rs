//! Topic fan-out across two nodes through Redis beside one node in memory, in the same run:
//! deliveries/s, p50/p99 publish-to-delivery latency, server CPU µs per delivery.
//!
//! The bench re-executes itself: `redis_fanout --serve memory|redis [--redis URL]` is one
//! server node (one actix-web worker, the hub on the in-memory or the Redis engine) in a child
//! process; every server-side process (the nodes and `redis-server`, started here on a free
//! loopback port without persistence) is pinned to CPU 0 with `taskset`, this process, the
//! load generator, to CPU 1. It opens N subscribers (tokio-tungstenite, one current-thread
//! runtime) on the topic `bench:fan`: all on the one node for `memory`, half on each of two
//! nodes for `redis`. The publisher is node A: `POST /publish?from=S&n=K` makes it publish
//! `S..S+K` back to back (pipelined), each payload stamped with the wall clock just before its
//! publish; subscribers check the order of sequence numbers and take the publish-to-delivery
//! latency from the stamp.
//!
//! Each run: a throughput window of `--secs` (bursts of K publications, D bursts in flight,
//! each burst counted once every subscriber has it): `deliv/s` and the server-side CPU per
//! delivery (all server processes together, from /proc); then a paced phase (single
//! publications, `--rate` per second, for `--paced` seconds): `p50`/`p99` over every delivery.
//! Runs alternate memory, redis, memory, redis... Unknown arguments (`--bench`) are ignored.
//!
//! Scenario `redis-cluster` (not run by default): the same two nodes on a Redis Cluster of
//! three primaries and three replicas (`tests/support/redis_cluster.rs`, every process pinned
//! with the other server-side ones); the one topic lives on one shard, so it shows what the
//! cluster costs a topic (sharded pub/sub, replication), not how many topics scale.
//!
//! Options (flags after `--`, or environment; `-- --help` lists them):
//! - `--subs N` (RFAN_SUBS, 1000), `--rounds R` (RFAN_ROUNDS, 2), `--secs S` (RFAN_SECS, 3),
//!   `--warmup S` (RFAN_WARMUP, 0.5), `--burst K` (RFAN_BURST, 20), `--depth D` (RFAN_DEPTH, 2),
//!   `--rate R` (RFAN_RATE, 50), `--paced S` (RFAN_PACED, 2), `--pad B` (RFAN_PAD, 64)
//! - `--scenarios memory,redis[,redis-cluster]` (RFAN_SCENARIOS), `--no-pin` (RFAN_PIN=0)
//!
//! Without `redis-server` (Debian package `redis-server`) only the memory figure is measured.
//!
//! Example: `cargo bench --bench redis_fanout -- --subs 2000 --rounds 3`.

mod support;

use std::cell::{Cell, RefCell};
use std::process::{ExitCode, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use support::cpu;
use support::flags::{self, Bench};
use support::pin::{self, Pinning};
use support::spawn::{self, Proc};
use support::stats::{self, Rank};
use support::table::{Column, Table};

const TOPIC: &str = "bench:fan";

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

const BENCH: Bench = Bench {
    name: "redis_fanout",
    env: "RFAN_",
};

/// Topic fan-out, one node in memory vs two nodes through Redis: deliveries/s, publish-to-
/// delivery latency, server CPU µs/delivery
#[derive(Parser)]
struct Flags {
    /// Subscribers (at least 2: with redis, half on each node)
    #[arg(long, env, default_value_t = 1000)]
    subs: usize,
    #[command(flatten)]
    rounds: flags::Rounds,
    /// Publications per burst in the window
    #[arg(long, env, default_value_t = 20)]
    burst: u64,
    /// Bursts in flight
    #[arg(long, env, default_value_t = 2)]
    depth: u64,
    /// Publications/s of the paced phase
    #[arg(long, env, default_value_t = 50.0)]
    rate: f64,
    /// Length of the paced phase, seconds
    #[arg(long, env, default_value_t = 2.0)]
    paced: f64,
    /// Payload padding, bytes
    #[arg(long, env, default_value_t = 64)]
    pad: usize,
    /// Scenarios to run, in this order in each round (memory|redis|redis-cluster)
    #[arg(long, env, value_delimiter = ',', default_value = "memory,redis")]
    scenarios: Vec<String>,
    #[command(flatten)]
    pin: flags::Pin,
    /// Node mode: be a node on this engine (memory|redis) until killed
    #[arg(long)]
    serve: Option<String>,
    /// Node mode: the Redis server's URL, for the redis engine (comma-separated seeds for
    /// redis-cluster)
    #[arg(long)]
    redis: Option<String>,
}

const DEFAULTS: &[(&str, &str)] = &[("rounds", "2"), ("secs", "3"), ("warmup", "0.5")];

// ---- the server node ---------------------------------------------------------------------

mod server {
    use std::sync::Arc;

    use actix_web::{web, App, HttpResponse, HttpServer};
    use serde::Deserialize;
    use serde_json::value::RawValue;
    use switchboard::engine::redis::RedisEngine;
    use switchboard::engine::MemoryEngine;
    use switchboard::prelude::*;

    #[derive(Deserialize)]
    struct Publish {
        from: u64,
        n: u64,
    }

    struct Pad(String);

    /// Publishes `from..from + n`, pipelined: all are queued in order, then awaited.
    async fn publish(hub: Hub, pad: web::Data<Pad>, q: web::Query<Publish>) -> HttpResponse {
        let mut pending = Vec::with_capacity(q.n as usize);
        for seq in q.from..q.from + q.n {
            let text = format!(
                r#"{{"seq":{seq},"t":{},"pad":"{}"}}"#,
                super::now_nanos(),
                pad.0
            );
            let data: Arc<RawValue> = match RawValue::from_string(text) {
                Ok(raw) => Arc::from(raw),
                Err(e) => return HttpResponse::InternalServerError().body(e.to_string()),
            };
            let hub = hub.clone();
            pending.push(async move { hub.publish_raw(super::TOPIC, "m", data, None).await });
        }
        for r in futures_util::future::join_all(pending).await {
            if let Err(e) = r {
                return HttpResponse::ServiceUnavailable().body(e.to_string());
            }
        }
        HttpResponse::NoContent().finish()
    }

    pub fn serve(kind: &str, redis: Option<String>, pad: usize) -> std::io::Result<()> {
        actix_web::rt::System::new().block_on(async move {
            let hub = match (kind, redis) {
                ("memory", _) => Hub::with_engine(MemoryEngine::new()),
                ("redis", Some(url)) => Hub::with_engine(
                    RedisEngine::connect(url)
                        .await
                        .map_err(std::io::Error::other)?,
                ),
                ("redis-cluster", Some(urls)) => Hub::with_engine(
                    RedisEngine::cluster(urls.split(','))
                        .connect()
                        .await
                        .map_err(std::io::Error::other)?,
                ),
                _ => {
                    return Err(std::io::Error::other(
                        "--serve memory|redis|redis-cluster [--redis URL[,URL...]]",
                    ))
                }
            };
            let route = ChannelRoute::<()>::new("/ws")
                .allow_join("bench:*")
                .max_connections(100_000);
            let pad = web::Data::new(Pad("x".repeat(pad)));
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(hub.clone())
                    .app_data(pad.clone())
                    .service(route.clone())
                    .route("/publish", web::post().to(publish))
            })
            .workers(1)
            .backlog(4096)
            .disable_signals()
            .bind(("127.0.0.1", 0))?;
            crate::support::spawn::announce_port(&server.addrs())?;
            server.run().await
        })
    }
}

// ---- processes ---------------------------------------------------------------------------

fn spawn_node(kind: &str, redis: Option<&str>, cfg: &Config) -> Result<(Proc, u16), String> {
    let mut cmd = spawn::this_bench(cfg.pinning.server())?;
    cmd.args(["--serve", kind, "--pad", &cfg.pad.to_string()]);
    if let Some(url) = redis {
        cmd.args(["--redis", url]);
    }
    spawn::server(cmd, &format!("{kind} node"))
}

fn spawn_redis(cfg: &Config) -> Result<(Proc, u16), String> {
    let port = spawn::free_port()?;
    let dir = std::env::temp_dir().join(format!("redis-fanout-{port}"));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut cmd = pin::command(cfg.pinning.server(), "redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let redis = spawn::listening(cmd, port, "redis-server", Duration::from_secs(10))?;
    Ok((redis, port))
}

// ---- the load generator ------------------------------------------------------------------

struct Config {
    subs: usize,
    rounds: usize,
    secs: f64,
    warmup: f64,
    burst: u64,
    depth: u64,
    rate: f64,
    paced: f64,
    pad: usize,
    scenarios: Vec<String>,
    pinning: Pinning,
}

impl Config {
    fn from(flags: &Flags, scenarios: Vec<String>, pinning: Pinning) -> Config {
        Config {
            subs: flags.subs.max(2),
            rounds: flags.rounds.rounds(),
            secs: flags.rounds.secs(),
            warmup: flags.rounds.warmup(),
            burst: flags.burst.max(1),
            depth: flags.depth.max(1),
            rate: flags.rate.max(1.0),
            paced: flags.paced,
            pad: flags.pad,
            scenarios,
            pinning,
        }
    }
}

/// What the subscribers share (one thread: `Rc`, `Cell`).
#[derive(Default)]
struct Shared {
    delivered: Cell<u64>,
    order_errors: Cell<u64>,
    /// Latencies in ns, while `recording`.
    latencies: RefCell<Vec<u64>>,
    recording: Cell<bool>,
    progress: tokio::sync::Notify,
}

async fn subscriber(port: u16, shared: Rc<Shared>) -> Result<(), String> {
    let url = format!("ws://127.0.0.1:{port}/ws");
    let (mut ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let join = format!(r#"{{"type":"subscribe","ref":1,"data":{{"topic":"{TOPIC}"}}}}"#);
    ws.send(Message::text(join))
        .await
        .map_err(|e| e.to_string())?;
    match ws.next().await {
        Some(Ok(Message::Text(t))) if t.contains(r#""ok":true"#) => {}
        other => return Err(format!("subscribe: {other:?}")),
    }
    tokio::task::spawn_local(async move {
        let mut last: Option<u64> = None;
        while let Some(Ok(msg)) = ws.next().await {
            let Message::Text(text) = msg else { continue };
            let (Some(seq), Some(t)) = (
                number_after(&text, "\"seq\":"),
                number_after(&text, "\"t\":"),
            ) else {
                continue;
            };
            if last.is_some_and(|l| seq != l + 1) {
                shared.order_errors.set(shared.order_errors.get() + 1);
            }
            last = Some(seq);
            if shared.recording.get() {
                shared
                    .latencies
                    .borrow_mut()
                    .push(now_nanos().saturating_sub(t));
            }
            shared.delivered.set(shared.delivered.get() + 1);
            shared.progress.notify_waiters();
        }
    });
    Ok(())
}

fn number_after(text: &str, key: &str) -> Option<u64> {
    let start = text.find(key)? + key.len();
    let digits = text[start..].bytes().take_while(u8::is_ascii_digit).count();
    text[start..start + digits].parse().ok()
}

/// A keep-alive HTTP/1.1 connection to the publishing node.
struct Trigger {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Trigger {
    async fn connect(port: u16) -> Result<Trigger, String> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(Trigger {
            stream,
            buf: vec![0; 4096],
        })
    }

    /// Asks for publications `from..from + n` and waits for the answer (they are queued).
    async fn publish(&mut self, from: u64, n: u64) -> Result<(), String> {
        let req = format!(
            "POST /publish?from={from}&n={n} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        );
        self.stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut got = 0;
        loop {
            let k = self
                .stream
                .read(&mut self.buf[got..])
                .await
                .map_err(|e| e.to_string())?;
            if k == 0 {
                return Err("the node closed the trigger connection".into());
            }
            got += k;
            if let Some(end) = self.buf[..got].windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                if !head.starts_with("HTTP/1.1 204") {
                    return Err(format!("publish refused: {head}"));
                }
                return Ok(());
            }
            if got == self.buf.len() {
                return Err("oversized response".into());
            }
        }
    }
}

/// Waits until `delivered >= target`, failing after 10 s without progress.
async fn wait_for(shared: &Shared, target: u64) -> Result<(), String> {
    let mut last = shared.delivered.get();
    let mut since = Instant::now();
    while shared.delivered.get() < target {
        let notified = shared.progress.notified();
        if shared.delivered.get() >= target {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        let now = shared.delivered.get();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() > Duration::from_secs(10) {
            return Err(format!("stalled at {now} of {target} deliveries"));
        }
    }
    Ok(())
}

/// The throughput phase: bursts of publications, `depth` of them in flight.
struct Bursts {
    seq: u64,
    /// Deliveries expected once every burst sent so far has arrived everywhere.
    target: u64,
    per_burst: u64,
}

impl Bursts {
    async fn run(
        &mut self,
        cfg: &Config,
        shared: &Shared,
        trigger: &mut Trigger,
        secs: f64,
    ) -> Result<(), String> {
        let until = Instant::now() + Duration::from_secs_f64(secs);
        let mut in_flight = 0;
        while Instant::now() < until || in_flight > 0 {
            if Instant::now() < until {
                trigger.publish(self.seq, cfg.burst).await?;
                self.seq += cfg.burst;
                self.target += self.per_burst;
                in_flight += 1;
            }
            if in_flight >= cfg.depth || Instant::now() >= until {
                wait_for(shared, self.target - (in_flight - 1) * self.per_burst).await?;
                in_flight -= 1;
            }
        }
        Ok(())
    }
}

struct Outcome {
    deliveries_per_sec: f64,
    cpu_us_per_delivery: f64,
    p50_us: f64,
    p99_us: f64,
    order_errors: u64,
}

async fn measure(cfg: &Config, nodes: &[u16], pids: &[u32]) -> Result<Outcome, String> {
    let shared = Rc::new(Shared::default());
    for i in 0..cfg.subs {
        subscriber(nodes[i % nodes.len()], shared.clone()).await?;
    }
    let n = cfg.subs as u64;
    let mut trigger = Trigger::connect(nodes[0]).await?;
    let mut state = Bursts {
        seq: 0,
        target: 0,
        per_burst: cfg.burst * n,
    };
    state.run(cfg, &shared, &mut trigger, cfg.warmup).await?;
    let cpu_before = cpu::each(pids);
    let delivered_before = shared.delivered.get();
    let started = Instant::now();
    state.run(cfg, &shared, &mut trigger, cfg.secs).await?;
    let (mut seq, mut target) = (state.seq, state.target);
    let elapsed = started.elapsed().as_secs_f64();
    let deliveries = shared.delivered.get() - delivered_before;
    let cpu = cpu::used_since(pids, &cpu_before);
    // Latency: single publications, paced.
    shared.recording.set(true);
    let gap = Duration::from_secs_f64(1.0 / cfg.rate);
    let count = (cfg.paced * cfg.rate).ceil() as u64;
    let mut next = Instant::now();
    for _ in 0..count {
        tokio::time::sleep_until(next.into()).await;
        trigger.publish(seq, 1).await?;
        seq += 1;
        target += n;
        next += gap;
    }
    wait_for(&shared, target).await?;
    let mut lat = std::mem::take(&mut *shared.latencies.borrow_mut());
    lat.sort_unstable();
    Ok(Outcome {
        deliveries_per_sec: deliveries as f64 / elapsed,
        cpu_us_per_delivery: cpu.as_secs_f64() * 1e6 / deliveries.max(1) as f64,
        p50_us: stats::quantile_us(&lat, 0.50, Rank::Rounded),
        p99_us: stats::quantile_us(&lat, 0.99, Rank::Rounded),
        order_errors: shared.order_errors.get(),
    })
}

fn run_scenario(
    rt: &tokio::runtime::Runtime,
    scenario: &str,
    cfg: &Config,
) -> Result<Outcome, String> {
    let mut procs = Vec::new();
    let mut nodes = Vec::new();
    let mut cluster = None;
    match scenario {
        "memory" => {
            let (node, port) = spawn_node("memory", None, cfg)?;
            nodes.push(port);
            procs.push(node);
        }
        "redis" => {
            let (redis, port) = spawn_redis(cfg)?;
            let url = format!("redis://127.0.0.1:{port}/");
            procs.push(redis);
            for _ in 0..2 {
                let (node, port) = spawn_node("redis", Some(&url), cfg)?;
                nodes.push(port);
                procs.push(node);
            }
        }
        "redis-cluster" => {
            let c = switchboard_suite::RedisCluster::start("redis_fanout")
                .ok_or("redis-server or redis-cli is not installed")?;
            if let Some(cpu) = cfg.pinning.server() {
                for pid in c.pids() {
                    let pinned = std::process::Command::new("taskset")
                        .args(["-p", "-c", cpu, &pid.to_string()])
                        .stdout(Stdio::null())
                        .status()
                        .map_err(|e| format!("taskset: {e}"))?;
                    if !pinned.success() {
                        return Err(format!("taskset -p -c {cpu} {pid} failed"));
                    }
                }
            }
            let seeds = c.urls().join(",");
            for _ in 0..2 {
                let (node, port) = spawn_node("redis-cluster", Some(&seeds), cfg)?;
                nodes.push(port);
                procs.push(node);
            }
            cluster = Some(c);
        }
        other => {
            return Err(format!(
                "unknown scenario `{other}` (memory|redis|redis-cluster)"
            ))
        }
    }
    let mut pids: Vec<u32> = procs.iter().map(Proc::id).collect();
    pids.extend(cluster.iter().flat_map(|c| c.pids()));
    let local = tokio::task::LocalSet::new();
    let out = local.block_on(rt, measure(cfg, &nodes, &pids));
    drop(local);
    drop(procs);
    drop(cluster);
    out
}

const TABLE: Table<Outcome> = Table(&[
    Column::new("deliv/s", 12, 0, |o| o.deliveries_per_sec),
    Column::new("p50 µs", 9, 1, |o| o.p50_us),
    Column::new("p99 µs", 9, 1, |o| o.p99_us),
    Column::new("CPU µs/deliv", 14, 3, |o| o.cpu_us_per_delivery),
    Column::new("order err", 10, 0, |o| o.order_errors as f64),
]);

/// The order errors' column: summed over rounds, not a median.
const ORDER_ERR: usize = 4;

fn main() -> ExitCode {
    let flags: Flags = flags::parse(&BENCH, DEFAULTS);
    if let Some(kind) = &flags.serve {
        let served = server::serve(kind, flags.redis.clone(), flags.pad);
        return support::exit("redis_fanout node", served);
    }
    support::exit(BENCH.name, run(&flags))
}

fn run(flags: &Flags) -> Result<(), String> {
    println!("redis_fanout: one topic fanned out, one node in memory vs two nodes through Redis");
    let mut scenarios = flags.scenarios.clone();
    scenarios.retain(|s| !s.is_empty());
    if scenarios.iter().any(|s| s.starts_with("redis")) && !switchboard_suite::redis::installed() {
        println!("redis-server is not installed (apt-get install redis-server): memory only");
        scenarios.retain(|s| !s.starts_with("redis"));
    }
    if scenarios.iter().any(|s| s == "redis-cluster")
        && !switchboard_suite::redis_cluster::installed()
    {
        println!("redis-cli is not installed (apt-get install redis-tools): no redis-cluster");
        scenarios.retain(|s| s != "redis-cluster");
    }
    let pinning = Pinning::apply(BENCH.name, flags.pin.pin, "0", "1");
    let cfg = Config::from(flags, scenarios, pinning);
    println!(
        "settings: {} subscribers (redis: half on each node, publisher on node A), bursts of {} \
         x {} in flight for {:.1} s after {:.1} s warmup, then {} paced publications/s for \
         {:.1} s; {} B pad; {}; CPU: every server-side process (nodes, redis-server) from {}",
        cfg.subs,
        cfg.burst,
        cfg.depth,
        cfg.secs,
        cfg.warmup,
        cfg.rate,
        cfg.paced,
        cfg.pad,
        cfg.pinning.describe("server side"),
        cpu::source()
    );
    let rt = support::runtime()?;
    let header = TABLE.header(format!("{:<6} {:<22}", "round", "scenario"));
    println!("\n{header}");
    let mut results: Vec<(String, Outcome)> = Vec::new();
    for round in 1..=cfg.rounds {
        for scenario in &cfg.scenarios {
            let label = match scenario.as_str() {
                "redis" => "redis, 2 nodes",
                "redis-cluster" => "redis cluster, 2 nodes",
                _ => "memory, 1 node",
            };
            let o = run_scenario(&rt, scenario, &cfg)
                .map_err(|e| format!("{label}, round {round}: FAILED: {e}"))?;
            let lead = format!("{round:<6} {label:<22}");
            println!("{}", TABLE.row(lead, &TABLE.values(&o)));
            results.push((label.to_owned(), o));
        }
    }
    println!("\nmedians over rounds:");
    println!("{header}");
    let mut labels: Vec<&String> = results.iter().map(|(l, _)| l).collect();
    labels.sort();
    labels.dedup();
    for label in labels {
        let runs: Vec<Vec<f64>> = results
            .iter()
            .filter(|(l, _)| l == label)
            .map(|(_, o)| TABLE.values(o))
            .collect();
        let mut m = TABLE.medians(&runs);
        m[ORDER_ERR] = runs.iter().map(|v| v[ORDER_ERR]).sum();
        println!("{}", TABLE.row(format!("{:<6} {label:<22}", "median"), &m));
    }
    if results.iter().any(|(_, o)| o.order_errors > 0) {
        return Err("deliveries out of order".into());
    }
    Ok(())
}
