//! Topic fan-out across two nodes through each distributed engine (Redis, Redis Cluster, NATS)
//! beside one node in memory, in the same run: deliveries/s, p50/p99 publish-to-delivery
//! latency, server CPU µs per delivery (the nodes and the engine's processes together), and the
//! CPU per delivery of the busiest engine process (the one that caps the engine when every
//! process has a core of its own: with many topics on Redis Cluster it falls with the shards).
//!
//! The bench re-executes itself: `engines --serve memory|redis|redis-cluster|nats
//! [--engine-url URL[,URL...]]` is one
//! server node (one actix-web worker, the hub on that engine) in a child process; every
//! server-side process (the nodes and `redis-server` / `nats-server`, started here on free
//! loopback ports without persistence; for `redis-cluster`, six `redis-server`s, three
//! primaries and three replicas, as `tests/support/redis_cluster.rs` starts them) is pinned to CPU 0 with `taskset`, this process, the
//! load generator, to CPU 1. For each subscriber count it opens N subscribers
//! (tokio-tungstenite, one current-thread runtime) spread round-robin over `--topics` topics
//! `bench:fan:{i}`: all on the one node for `memory`, half on each of two nodes for the
//! distributed engines. The publisher is node A: `POST /publish?from=S&n=K` makes it publish
//! `S..S+K` back to back (pipelined; publication `s` goes to topic `s % topics`), each payload
//! stamped with the wall clock just before its publish; subscribers check the order of
//! sequence numbers and take the publish-to-delivery latency from the stamp.
//!
//! Each run: a throughput window of `--secs` (bursts of K publications, D bursts in flight,
//! each burst counted once every subscriber has it): `deliv/s` and the server-side CPU per
//! delivery (all server processes together, from /proc). The window measures capacity, so it
//! keeps 160 publications in flight by default (40 x 4): with fewer (20 x 2, the default up to
//! this release) the closed loop waited on a publication's trip through three processes taking
//! turns on one core, and the distributed engines' deliveries/s measured that latency more than
//! their capacity (0.5x to 1.0x of memory from round to round, against 0.9x to 1.0x with 160);
//! latency is what the paced phase measures. Then a paced phase (single
//! publications, `--rate` per second, for `--paced` seconds): `p50`/`p99` over every delivery.
//! Runs alternate scenarios within each round. Unknown arguments (`--bench`) are ignored.
//!
//! Options (flags after `--`, or environment; `-- --help` lists them):
//! - `--subs N[,N...]` (ENG_SUBS, 1000,10000), `--topics T` (ENG_TOPICS, 1), `--rounds R`
//!   (ENG_ROUNDS, 2), `--secs S` (ENG_SECS, 3), `--warmup S` (ENG_WARMUP, 0.5), `--burst K`
//!   (ENG_BURST, 40), `--depth D` (ENG_DEPTH, 4), `--rate R` (ENG_RATE, 50), `--paced S`
//!   (ENG_PACED, 2), `--pad B` (ENG_PAD, 64)
//! - `--scenarios memory,redis,redis-cluster,nats` (ENG_SCENARIOS), `--no-pin` (ENG_PIN=0)
//!
//! A scenario whose server program is not installed (Debian packages `redis-server`,
//! `redis-tools`, `nats-server`) is left out with a note.
//!
//! Examples: `cargo bench --bench engines -- --subs 1000,10000 --rounds 3`; many topics over
//! the cluster's shards: `cargo bench --bench engines -- --subs 4800 --topics 48 --burst 480`.

mod support;

use std::cell::{Cell, RefCell};
use std::process::{ExitCode, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use support::cpu;
use support::flags::{self, Bench};
use support::pin::{self, Pinning};
use support::spawn::{self, Proc};
use support::stats::{self, Rank};
use support::table::{Column, Table};

/// The topic of publication or subscriber `i`.
fn topic(i: u64, topics: u64) -> String {
    format!("bench:fan:{}", i % topics)
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

const BENCH: Bench = Bench {
    name: "engines",
    env: "ENG_",
};

/// Topic fan-out, one node in memory vs two nodes through each distributed engine:
/// deliveries/s, publish-to-delivery latency, server CPU µs/delivery
#[derive(Parser)]
struct Flags {
    /// Subscriber counts, one set of runs each (at least 2: half on each node)
    #[arg(long, env, value_delimiter = ',', default_value = "1000,10000")]
    subs: Vec<usize>,
    /// Topics the subscribers spread over (round-robin), and the publications
    #[arg(long, env, default_value_t = 1)]
    topics: u64,
    #[command(flatten)]
    rounds: flags::Rounds,
    /// Publications per burst in the window
    #[arg(long, env, default_value_t = 40)]
    burst: u64,
    /// Bursts in flight
    #[arg(long, env, default_value_t = 4)]
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
    /// Scenarios to run, in this order in each round (memory|redis|redis-cluster|nats)
    #[arg(
        long,
        env,
        value_delimiter = ',',
        default_value = "memory,redis,redis-cluster,nats"
    )]
    scenarios: Vec<String>,
    #[command(flatten)]
    pin: flags::Pin,
    /// Node mode: be a node on this engine (memory|redis|redis-cluster|nats) until killed
    #[arg(long)]
    serve: Option<String>,
    /// Node mode: the engine's URL (Redis or NATS; comma-separated seeds for redis-cluster)
    #[arg(long)]
    engine_url: Option<String>,
}

const DEFAULTS: &[(&str, &str)] = &[("rounds", "2"), ("secs", "3"), ("warmup", "0.5")];

// ---- the server node ---------------------------------------------------------------------

mod server {
    use std::sync::Arc;

    use actix_web::{web, App, HttpResponse, HttpServer};
    use serde::Deserialize;
    use serde_json::value::RawValue;
    use switchboard::engine::nats::NatsEngine;
    use switchboard::engine::redis::RedisEngine;
    use switchboard::engine::MemoryEngine;
    use switchboard::prelude::*;

    #[derive(Deserialize)]
    struct Publish {
        from: u64,
        n: u64,
    }

    struct Pad(String);

    /// How many topics the publications spread over.
    struct Topics(u64);

    /// Publishes `from..from + n`, pipelined: all are queued in order, then awaited.
    async fn publish(
        hub: Hub,
        pad: web::Data<Pad>,
        topics: web::Data<Topics>,
        q: web::Query<Publish>,
    ) -> HttpResponse {
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
            let topic = super::topic(seq, topics.0);
            pending.push(async move { hub.publish_raw(&topic, "m", data, None).await });
        }
        for r in futures_util::future::join_all(pending).await {
            if let Err(e) = r {
                return HttpResponse::ServiceUnavailable().body(e.to_string());
            }
        }
        HttpResponse::NoContent().finish()
    }

    pub fn serve(kind: &str, url: Option<String>, pad: usize, topics: u64) -> std::io::Result<()> {
        actix_web::rt::System::new().block_on(async move {
            let hub = match (kind, url) {
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
                ("nats", Some(url)) => Hub::with_engine(
                    NatsEngine::connect(url)
                        .await
                        .map_err(std::io::Error::other)?,
                ),
                _ => {
                    return Err(std::io::Error::other(
                        "--serve memory|redis|redis-cluster|nats [--engine-url URL[,URL...]]",
                    ))
                }
            };
            let route = ChannelRoute::<()>::new("/ws")
                .allow_join("bench:*")
                .max_connections(100_000);
            let pad = web::Data::new(Pad("x".repeat(pad)));
            let topics = web::Data::new(Topics(topics.max(1)));
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(hub.clone())
                    .app_data(pad.clone())
                    .app_data(topics.clone())
                    .service(route.clone())
                    .route("/publish", web::post().to(publish))
            })
            .workers(1)
            .backlog(4096)
            // As a fan-out server is run: a frame goes out when written, not after the
            // client's ACK of the previous one (Nagle's algorithm against delayed ACKs).
            .tcp_nodelay(true)
            .disable_signals()
            .bind(("127.0.0.1", 0))?;
            crate::support::spawn::announce_port(&server.addrs())?;
            server.run().await
        })
    }
}

// ---- processes ---------------------------------------------------------------------------

fn spawn_node(kind: &str, url: Option<&str>, cfg: &Config) -> Result<(Proc, u16), String> {
    let mut cmd = spawn::this_bench(cfg.pinning.server())?;
    cmd.args(["--serve", kind, "--pad", &cfg.pad.to_string()]);
    cmd.args(["--topics", &cfg.topics.to_string()]);
    if let Some(url) = url {
        cmd.args(["--engine-url", url]);
    }
    spawn::server(cmd, &format!("{kind} node"))
}

fn spawn_redis(cfg: &Config) -> Result<(Proc, u16), String> {
    let port = spawn::free_port()?;
    let dir = std::env::temp_dir().join(format!("engines-bench-redis-{port}"));
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

fn spawn_nats(cfg: &Config) -> Result<(Proc, u16), String> {
    let port = spawn::free_port()?;
    let dir = std::env::temp_dir().join(format!("engines-bench-nats-{port}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut cmd = pin::command(cfg.pinning.server(), "nats-server");
    cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let nats = spawn::listening(cmd, port, "nats-server", Duration::from_secs(10))?;
    Ok((nats, port))
}

// ---- the load generator ------------------------------------------------------------------

struct Config {
    subs: Vec<usize>,
    topics: u64,
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
            subs: flags.subs.iter().map(|&n| n.max(2)).collect(),
            topics: flags.topics.max(1),
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

/// Subscriber `i`: on topic `i % topics`, where consecutive publications are `topics` apart.
async fn subscriber(port: u16, i: u64, topics: u64, shared: Rc<Shared>) -> Result<(), String> {
    let url = format!("ws://127.0.0.1:{port}/ws");
    // A small read buffer: tungstenite zeroes its whole read buffer (128 KiB by default) before
    // each read, which made the load generator, not the servers, the bottleneck once each read
    // brings one small frame (many topics).
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(&url, Some(config), true)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let join = format!(
        r#"{{"type":"subscribe","ref":1,"data":{{"topic":"{}"}}}}"#,
        topic(i, topics)
    );
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
            if last.is_some_and(|l| seq != l + topics) {
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

/// Deliveries publications `from..from + n` make: publication `s` reaches the subscribers of
/// topic `s % topics`, and subscriber `i` is on topic `i % topics`.
fn deliveries(subs: u64, topics: u64, from: u64, n: u64) -> u64 {
    (from..from + n)
        .map(|s| subs / topics + u64::from(s % topics < subs % topics))
        .sum()
}

/// The throughput phase: bursts of publications, `depth` of them in flight.
struct Bursts {
    seq: u64,
    /// Deliveries expected once every burst sent so far has arrived everywhere.
    target: u64,
    subs: u64,
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
        // The delivery count at which each burst in flight is complete, oldest first.
        let mut in_flight = std::collections::VecDeque::new();
        while Instant::now() < until || !in_flight.is_empty() {
            if Instant::now() < until {
                trigger.publish(self.seq, cfg.burst).await?;
                self.target += deliveries(self.subs, cfg.topics, self.seq, cfg.burst);
                self.seq += cfg.burst;
                in_flight.push_back(self.target);
            }
            if in_flight.len() as u64 >= cfg.depth || Instant::now() >= until {
                if let Some(done_at) = in_flight.pop_front() {
                    wait_for(shared, done_at).await?;
                }
            }
        }
        Ok(())
    }
}

struct Outcome {
    deliveries_per_sec: f64,
    cpu_us_per_delivery: f64,
    /// The busiest engine process's CPU per delivery (0 without one).
    engine_max_us_per_delivery: f64,
    p50_us: f64,
    p99_us: f64,
    order_errors: u64,
}

/// The server side of a run: the nodes' HTTP ports, and every server-side process (the
/// engine's first, `engines` of them).
struct Servers<'a> {
    nodes: &'a [u16],
    pids: &'a [u32],
    engines: usize,
}

async fn measure(cfg: &Config, subs: usize, servers: Servers<'_>) -> Result<Outcome, String> {
    let Servers {
        nodes,
        pids,
        engines,
    } = servers;
    let shared = Rc::new(Shared::default());
    let topics = cfg.topics;
    for i in 0..subs as u64 {
        // Each topic's subscribers alternate between the nodes.
        let node = nodes[((i / topics) % nodes.len() as u64) as usize];
        subscriber(node, i, topics, shared.clone()).await?;
    }
    let n = subs as u64;
    let mut trigger = Trigger::connect(nodes[0]).await?;
    let mut state = Bursts {
        seq: 0,
        target: 0,
        subs: n,
    };
    state.run(cfg, &shared, &mut trigger, cfg.warmup).await?;
    let cpu_before = cpu::each(pids);
    let delivered_before = shared.delivered.get();
    let started = Instant::now();
    state.run(cfg, &shared, &mut trigger, cfg.secs).await?;
    let (mut seq, mut target) = (state.seq, state.target);
    let elapsed = started.elapsed().as_secs_f64();
    let delivered = shared.delivered.get() - delivered_before;
    let cpu = cpu::used_since(pids, &cpu_before);
    let engine_max = pids[..engines]
        .iter()
        .zip(&cpu_before)
        .map(|(&p, before)| cpu::used_since(&[p], std::slice::from_ref(before)))
        .max()
        .unwrap_or_default();
    // Latency: single publications, paced.
    shared.recording.set(true);
    let gap = Duration::from_secs_f64(1.0 / cfg.rate);
    let count = (cfg.paced * cfg.rate).ceil() as u64;
    let mut next = Instant::now();
    for _ in 0..count {
        tokio::time::sleep_until(next.into()).await;
        trigger.publish(seq, 1).await?;
        target += deliveries(n, topics, seq, 1);
        seq += 1;
        next += gap;
    }
    wait_for(&shared, target).await?;
    let mut lat = std::mem::take(&mut *shared.latencies.borrow_mut());
    lat.sort_unstable();
    Ok(Outcome {
        deliveries_per_sec: delivered as f64 / elapsed,
        cpu_us_per_delivery: cpu.as_secs_f64() * 1e6 / delivered.max(1) as f64,
        engine_max_us_per_delivery: engine_max.as_secs_f64() * 1e6 / delivered.max(1) as f64,
        p50_us: stats::quantile_us(&lat, 0.50, Rank::Rounded),
        p99_us: stats::quantile_us(&lat, 0.99, Rank::Rounded),
        order_errors: shared.order_errors.get(),
    })
}

fn run_scenario(
    rt: &tokio::runtime::Runtime,
    scenario: &str,
    subs: usize,
    cfg: &Config,
) -> Result<Outcome, String> {
    let mut procs = Vec::new();
    let mut nodes = Vec::new();
    let mut cluster = None;
    let url = match scenario {
        "memory" => None,
        "redis" => {
            let (redis, port) = spawn_redis(cfg)?;
            procs.push(redis);
            Some(format!("redis://127.0.0.1:{port}/"))
        }
        "redis-cluster" => {
            let c = switchboard_suite::RedisCluster::start("engines_bench")
                .ok_or("redis-server or redis-cli is not installed")?;
            if let Some(cpu) = cfg.pinning.server() {
                for pid in c.pids() {
                    pin::pid(cpu, pid)?;
                }
            }
            let seeds = c.urls().join(",");
            cluster = Some(c);
            Some(seeds)
        }
        "nats" => {
            let (nats, port) = spawn_nats(cfg)?;
            procs.push(nats);
            Some(format!("nats://127.0.0.1:{port}"))
        }
        other => {
            return Err(format!(
                "unknown scenario `{other}` (memory|redis|redis-cluster|nats)"
            ))
        }
    };
    // One node in memory; two nodes sharing the engine otherwise.
    let count = if url.is_some() { 2 } else { 1 };
    for _ in 0..count {
        let (node, port) = spawn_node(scenario, url.as_deref(), cfg)?;
        nodes.push(port);
        procs.push(node);
    }
    // The engine's processes first: the cluster's six, or the one server (started first).
    let mut pids: Vec<u32> = cluster.iter().flat_map(|c| c.pids()).collect();
    let engines = if cluster.is_some() {
        pids.len()
    } else {
        usize::from(url.is_some())
    };
    pids.extend(procs.iter().map(Proc::id));
    let servers = Servers {
        nodes: &nodes,
        pids: &pids,
        engines,
    };
    let local = tokio::task::LocalSet::new();
    let out = local.block_on(rt, measure(cfg, subs, servers));
    drop(local);
    drop(procs);
    drop(cluster);
    out
}

/// How a scenario reads in the table.
fn label(scenario: &str) -> &'static str {
    match scenario {
        "redis" => "redis, 2 nodes",
        "redis-cluster" => "cluster, 2 nodes",
        "nats" => "nats, 2 nodes",
        _ => "memory, 1 node",
    }
}

const TABLE: Table<Outcome> = Table(&[
    Column::new("deliv/s", 12, 0, |o| o.deliveries_per_sec),
    Column::new("p50 µs", 9, 1, |o| o.p50_us),
    Column::new("p99 µs", 9, 1, |o| o.p99_us),
    Column::new("CPU µs/deliv", 14, 3, |o| o.cpu_us_per_delivery),
    Column::new("engine max µs", 14, 3, |o| o.engine_max_us_per_delivery),
    Column::new("order err", 10, 0, |o| o.order_errors as f64),
]);

/// The order errors' column: summed over rounds, not a median.
const ORDER_ERR: usize = 5;

fn main() -> ExitCode {
    let flags: Flags = flags::parse(&BENCH, DEFAULTS);
    if let Some(kind) = &flags.serve {
        let served = server::serve(kind, flags.engine_url.clone(), flags.pad, flags.topics);
        return support::exit("engines node", served);
    }
    support::exit(BENCH.name, run(&flags))
}

fn run(flags: &Flags) -> Result<(), String> {
    println!("engines: topic fan-out, one node in memory vs two nodes through each engine");
    let mut scenarios = flags.scenarios.clone();
    scenarios.retain(|s| !s.is_empty());
    for (scenario, installed, package) in [
        (
            "redis",
            switchboard_suite::redis::installed(),
            "redis-server",
        ),
        (
            "redis-cluster",
            switchboard_suite::redis_cluster::installed(),
            "redis-tools",
        ),
        ("nats", switchboard_suite::nats::installed(), "nats-server"),
    ] {
        if scenarios.iter().any(|s| s == scenario) && !installed {
            println!("{package} is not installed (apt-get install {package}): no {scenario} runs");
            scenarios.retain(|s| s != scenario);
        }
    }
    let pinning = Pinning::apply(BENCH.name, flags.pin.pin, "0", "1");
    let cfg = Config::from(flags, scenarios, pinning);
    println!(
        "settings: {:?} subscribers over {} topic(s) (distributed engines: half on each node, \
         publisher on node A), bursts of {} x {} in flight for {:.1} s after {:.1} s warmup, \
         then {} paced publications/s for {:.1} s; {} B pad; {}; CPU: every server-side \
         process (nodes, redis-server, nats-server) from {}",
        cfg.subs,
        cfg.topics,
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
    let header = TABLE.header(format!("{:<6} {:<7} {:<16}", "round", "subs", "scenario"));
    let mut failed_order = false;
    for &subs in &cfg.subs {
        println!("\n{header}");
        let mut results: Vec<(&str, Outcome)> = Vec::new();
        for round in 1..=cfg.rounds {
            for scenario in &cfg.scenarios {
                let label = label(scenario);
                let o = run_scenario(&rt, scenario, subs, &cfg)
                    .map_err(|e| format!("{label}, {subs} subs, round {round}: FAILED: {e}"))?;
                let lead = format!("{round:<6} {subs:<7} {label:<16}");
                println!("{}", TABLE.row(lead, &TABLE.values(&o)));
                results.push((label, o));
            }
        }
        println!("\nmedians over rounds, {subs} subscribers (ratio: deliveries/s against memory):");
        println!("{header} {:>7}", "ratio");
        let mut memory = None;
        for scenario in &cfg.scenarios {
            let label = label(scenario);
            let runs: Vec<Vec<f64>> = results
                .iter()
                .filter(|(l, _)| *l == label)
                .map(|(_, o)| TABLE.values(o))
                .collect();
            let mut m = TABLE.medians(&runs);
            m[ORDER_ERR] = runs.iter().map(|v| v[ORDER_ERR]).sum();
            if scenario == "memory" {
                memory = Some(m[0]);
            }
            let ratio = memory.map_or(String::from("-"), |base| format!("{:.2}x", m[0] / base));
            let lead = format!("{:<6} {subs:<7} {label:<16}", "median");
            println!("{} {ratio:>7}", TABLE.row(lead, &m));
        }
        failed_order |= results.iter().any(|(_, o)| o.order_errors > 0);
    }
    if failed_order {
        return Err("deliveries out of order".into());
    }
    Ok(())
}
