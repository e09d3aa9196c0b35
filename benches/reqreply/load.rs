//! The load generator: N WebSocket connections (tokio-tungstenite), or N connections over the
//! HTTP transport (`super::http`), each a closed loop keeping `depth` requests in flight, every
//! reply checked byte for byte against the expected text.

use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::cpu::{Reading, Usage};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WARMUP: u8 = 0;
pub const MEASURE: u8 = 1;
pub const STOP: u8 = 2;

/// The run's phase, shared by its connections.
pub type Phase = Rc<Cell<u8>>;

/// How long a reply may take before the run fails.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub conns: usize,
    pub depth: usize,
    pub warmup: Duration,
    pub measure: Duration,
    /// The server echoes each request verbatim (the floor): the expected reply is the request.
    pub echo: bool,
    /// Over the HTTP transport (SSE stream + `POST`s) instead of WebSocket.
    pub http: bool,
}

/// What one measured window produced.
pub struct Window {
    pub msgs: u64,
    pub elapsed: Duration,
    /// Request → reply latencies in the window, ns, sorted.
    pub latencies: Vec<u64>,
    /// CPU time over the window: the server's (unknown for an external server without its
    /// pid), the load generator's, and others'.
    pub cpu: Usage,
}

/// One request shape: the parts of the request and of the expected reply after the `id`.
pub struct Variant {
    pub request_tail: String,
    pub reply_tail: String,
}

/// A few payloads per connection, with the reply each must get, computed independently of
/// the servers.
pub fn variants(conn: usize) -> Vec<Variant> {
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

pub struct InFlight {
    pub sent: Instant,
    pub expected: String,
}

pub struct ConnStats {
    pub msgs: u64,
    pub latencies: Vec<u64>,
}

async fn conn_loop(
    mut ws: Ws,
    conn: usize,
    depth: usize,
    echo: bool,
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
            let expected = if echo {
                req.clone()
            } else {
                format!(
                    r#"{{"ref":{r},"ok":true,"data":{{"id":{r},{}"#,
                    v.reply_tail
                )
            };
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
    let phase = Rc::new(Cell::new(WARMUP));
    let mut tasks = Vec::with_capacity(cfg.conns);
    for i in 0..cfg.conns {
        let task = if cfg.http {
            let c = super::http::HttpConn::connect(port)
                .await
                .map_err(|e| format!("stream #{i} on port {port}: {e}"))?;
            tokio::task::spawn_local(super::http::conn_loop(c, i, cfg.depth, phase.clone()))
        } else {
            let (ws, _) = tokio_tungstenite::connect_async_with_config(url.as_str(), None, true)
                .await
                .map_err(|e| format!("connect #{i} to {url}: {e}"))?;
            tokio::task::spawn_local(conn_loop(ws, i, cfg.depth, cfg.echo, phase.clone()))
        };
        tasks.push(task);
    }

    tokio::time::sleep(cfg.warmup).await;
    hook(true)?;
    let cpu0 = Reading::take(pid)?;
    let t0 = Instant::now();
    phase.set(MEASURE);
    tokio::time::sleep(cfg.measure).await;
    phase.set(STOP);
    let elapsed = t0.elapsed();
    let cpu1 = Reading::take(pid)?;
    hook(false)?;

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
        cpu: Usage::between(&cpu0, &cpu1),
    })
}
