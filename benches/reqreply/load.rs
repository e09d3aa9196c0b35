//! The load generator: N WebSocket connections (tokio-tungstenite), each a closed loop keeping
//! `depth` requests in flight, every reply checked byte for byte against the expected text.

use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::cpu;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// How long a reply may take before the run fails.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub conns: usize,
    pub depth: usize,
    pub warmup: Duration,
    pub measure: Duration,
}

/// What one measured window produced.
pub struct Window {
    pub msgs: u64,
    pub elapsed: Duration,
    /// Request → reply latencies in the window, ns, sorted.
    pub latencies: Vec<u64>,
    /// None when the server's process is unknown (an external server without its pid).
    pub server_cpu: Option<Duration>,
    /// The server's user and system time (clock-tick sampled), when known.
    pub server_user_sys: Option<(Duration, Duration)>,
    pub client_cpu: Duration,
    /// CPU time of the machine (all CPUs) in the window that neither process used: other
    /// processes, interrupts, steal. Tick resolution.
    pub other_cpu: Duration,
}

impl Window {
    pub fn msgs_per_sec(&self) -> f64 {
        self.msgs as f64 / self.elapsed.as_secs_f64()
    }

    /// Latency quantile in µs.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let idx =
            ((self.latencies.len() as f64 * q).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[idx - 1] as f64 / 1000.0
    }

    pub fn server_cpu_us_per_msg(&self) -> f64 {
        self.server_cpu
            .map_or(f64::NAN, |c| c.as_secs_f64() * 1e6 / self.msgs as f64)
    }

    /// Server user-space CPU per message, µs (tick-sampled).
    pub fn server_user_us_per_msg(&self) -> f64 {
        self.server_user_sys
            .map_or(f64::NAN, |(u, _)| u.as_secs_f64() * 1e6 / self.msgs as f64)
    }

    /// Server kernel CPU per message, µs (tick-sampled).
    pub fn server_sys_us_per_msg(&self) -> f64 {
        self.server_user_sys
            .map_or(f64::NAN, |(_, s)| s.as_secs_f64() * 1e6 / self.msgs as f64)
    }

    pub fn server_util(&self) -> f64 {
        self.server_cpu
            .map_or(f64::NAN, |c| c.as_secs_f64() / self.elapsed.as_secs_f64())
    }

    /// Other load on the machine during the window, in % of one CPU (see `other_cpu`).
    pub fn other_load(&self) -> f64 {
        self.other_cpu.as_secs_f64() / self.elapsed.as_secs_f64()
    }

    pub fn client_util(&self) -> f64 {
        self.client_cpu.as_secs_f64() / self.elapsed.as_secs_f64()
    }
}

/// One request shape: the parts of the request and of the expected reply after the `id`.
struct Variant {
    request_tail: String,
    reply_tail: String,
}

/// A few payloads per connection, with the reply each must get, computed independently of
/// the servers.
fn variants(conn: usize) -> Vec<Variant> {
    (0..8usize)
        .map(|k| {
            let text = format!("connection {conn} says hello, variant {k}");
            let values: Vec<u32> = (0..8u32)
                .map(|i| (conn as u32).wrapping_mul(2_654_435_761) ^ (i * 7919 + k as u32 * 31))
                .map(|v| v % 1_000_000)
                .collect();
            let sum: u64 = values.iter().map(|&v| u64::from(v)).sum();
            let max = values.iter().copied().max().unwrap_or(0);
            let mut list = String::from("[");
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    list.push(',');
                }
                let _ = write!(list, "{v}");
            }
            list.push(']');
            Variant {
                request_tail: format!(r#""text":"{text}","values":{list}}}}}"#),
                reply_tail: format!(
                    r#""len":{},"sum":{sum},"max":{max},"text":"{text}"}}}}"#,
                    text.chars().count()
                ),
            }
        })
        .collect()
}

struct InFlight {
    sent: Instant,
    expected: String,
}

struct ConnStats {
    msgs: u64,
    latencies: Vec<u64>,
}

async fn conn_loop(
    mut ws: Ws,
    conn: usize,
    depth: usize,
    phase: Rc<Cell<u8>>,
) -> Result<ConnStats, String> {
    let variants = variants(conn);
    let mut next_ref: u64 = 1;
    let mut inflight: VecDeque<InFlight> = VecDeque::with_capacity(depth);
    let mut stats = ConnStats {
        msgs: 0,
        latencies: Vec::with_capacity(1 << 14),
    };
    let fail = |what: String| format!("connection {conn}: {what}");
    loop {
        if phase.get() == STOP {
            break;
        }
        while inflight.len() < depth {
            let r = next_ref;
            next_ref += 1;
            let v = &variants[(r % variants.len() as u64) as usize];
            let req = format!(
                r#"{{"type":"echo","ref":{r},"data":{{"id":{r},{}"#,
                v.request_tail
            );
            let expected = format!(
                r#"{{"ref":{r},"ok":true,"data":{{"id":{r},{}"#,
                v.reply_tail
            );
            let sent = Instant::now();
            ws.feed(Message::text(req))
                .await
                .map_err(|e| fail(format!("send: {e}")))?;
            inflight.push_back(InFlight { sent, expected });
        }
        ws.flush().await.map_err(|e| fail(format!("flush: {e}")))?;
        let msg = match tokio::time::timeout(REPLY_TIMEOUT, ws.next()).await {
            Err(_) => return Err(fail(format!("no reply within {REPLY_TIMEOUT:?}"))),
            Ok(None) => return Err(fail("server closed the connection".into())),
            Ok(Some(Err(e))) => return Err(fail(format!("receive: {e}"))),
            Ok(Some(Ok(msg))) => msg,
        };
        let text = match msg {
            Message::Text(t) => t,
            Message::Ping(_) | Message::Pong(_) => continue,
            other => return Err(fail(format!("unexpected frame {other:?}"))),
        };
        let now = Instant::now();
        let Some(head) = inflight.pop_front() else {
            return Err(fail(format!("unsolicited frame {}", text.as_str())));
        };
        if text.as_str() != head.expected {
            return Err(fail(format!(
                "wrong reply\n  expected {}\n  got      {}",
                head.expected,
                text.as_str()
            )));
        }
        if phase.get() == MEASURE {
            stats.msgs += 1;
            stats.latencies.push((now - head.sent).as_nanos() as u64);
        }
    }
    // Leave without waiting for the close handshake: the server is killed next.
    let _ = tokio::time::timeout(Duration::from_millis(200), ws.close(None)).await;
    Ok(stats)
}

type ServerCpu = Option<(Duration, (Duration, Duration))>;

fn server_cpu(pid: Option<u32>) -> Result<ServerCpu, String> {
    let read = |p| -> std::io::Result<_> { Ok((cpu::process_cpu(p)?, cpu::user_sys(p)?)) };
    pid.map(|p| read(p).map_err(|e| format!("server CPU (pid {p}): {e}")))
        .transpose()
}

/// Connects, warms up, measures one window against the server at `port` (process `pid`).
/// Must run inside a `LocalSet`.
pub async fn run(port: u16, pid: Option<u32>, cfg: &LoadConfig) -> Result<Window, String> {
    run_with(port, pid, cfg, &mut |_| Ok(())).await
}

/// [`run`], calling `hook(true)` right before the window opens and `hook(false)` right after
/// it closes (blocking the load generator meanwhile).
pub async fn run_with(
    port: u16,
    pid: Option<u32>,
    cfg: &LoadConfig,
    hook: &mut dyn FnMut(bool) -> Result<(), String>,
) -> Result<Window, String> {
    let url = format!("ws://127.0.0.1:{port}/ws");
    let mut conns = Vec::with_capacity(cfg.conns);
    for i in 0..cfg.conns {
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url.as_str(), None, true)
            .await
            .map_err(|e| format!("connect #{i} to {url}: {e}"))?;
        conns.push(ws);
    }
    let phase = Rc::new(Cell::new(WARMUP));
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, ws)| tokio::task::spawn_local(conn_loop(ws, i, cfg.depth, phase.clone())))
        .collect();

    tokio::time::sleep(cfg.warmup).await;
    hook(true)?;
    // Server first, then the load generator: the two reads at each end are in the same order.
    let srv0 = server_cpu(pid)?;
    let cli0 = cpu::process_cpu(std::process::id()).map_err(|e| format!("own CPU: {e}"))?;
    let busy0 = cpu::busy_ticks();
    let t0 = Instant::now();
    phase.set(MEASURE);
    tokio::time::sleep(cfg.measure).await;
    phase.set(STOP);
    let elapsed = t0.elapsed();
    let srv1 = server_cpu(pid)?;
    let cli1 = cpu::process_cpu(std::process::id()).map_err(|e| format!("own CPU: {e}"))?;
    let busy1 = cpu::busy_ticks();
    hook(false)?;
    let busy =
        Duration::from_secs_f64(busy1.saturating_sub(busy0) as f64 / cpu::ticks_per_sec() as f64);
    let server_cpu = srv1.zip(srv0).map(|(b, a)| b.0.saturating_sub(a.0));
    let server_user_sys = srv1
        .zip(srv0)
        .map(|(b, a)| (b.1 .0.saturating_sub(a.1 .0), b.1 .1.saturating_sub(a.1 .1)));
    let client_cpu = cli1.saturating_sub(cli0);

    let mut msgs = 0;
    let mut latencies = Vec::new();
    let mut first_err = None;
    for t in tasks {
        match t.await {
            Ok(Ok(s)) => {
                msgs += s.msgs;
                latencies.extend_from_slice(&s.latencies);
            }
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(format!("task: {e}"));
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    if msgs == 0 {
        return Err("no reply in the measured window".into());
    }
    latencies.sort_unstable();
    Ok(Window {
        msgs,
        elapsed,
        latencies,
        server_cpu,
        server_user_sys,
        client_cpu,
        other_cpu: busy.saturating_sub(server_cpu.unwrap_or_default() + client_cpu),
    })
}
