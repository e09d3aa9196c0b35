//! The load generator: N subscribers (raw WebSocket clients, one task each on one
//! current-thread runtime) on one topic, and the trigger that makes the server publish.
//!
//! A run: connect and subscribe everyone (memory of the idle subscribed server read before
//! and after), warm up, then the measured window: bursts of `burst` publications, `depth`
//! bursts in flight (a burst is triggered when one completes: all subscribers got all of
//! it), for `measure` seconds and until the last burst completes; deliveries/s and server
//! CPU per delivery come from it. Then a paced phase: single publications at `rate` per
//! second, for the publish-to-delivery latency of a publication that finds the server idle
//! (under saturation, latency only says how deep the queues were let grow).
//!
//! The `window` workload replaces the HTTP trigger with a publisher that is a WebSocket client
//! (as in a chat room): each publication is a `publish` request the server answers once it
//! has handed it to the fan-out; at most `window` are unanswered at a time (the next goes when
//! one is answered), and, so that a server that answers before fanning out cannot pile up an
//! unbounded backlog, at most `behind` are not yet delivered to every subscriber. The paced
//! phase then goes through the same publisher, one request at a time.
//!
//! Every subscriber checks every frame byte for byte and that sequence numbers arrive in
//! order; a gap is a dropped delivery (the framework's drop-newest slow-consumer policy), a
//! reordering or duplicate fails the run.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::client::{self, RawSse, RawWs, SubConn, Trigger};
use super::servers::{now_nanos, EVENT, TOPIC};
use crate::support::cpu::{Reading, Usage};
use crate::support::mem::settled as settled_memory;
pub use crate::support::mem::Mem;

/// How long the load generator waits for any progress before failing the run.
const STALL: Duration = Duration::from_secs(15);

/// How publications are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// The server's own publisher task, asked over HTTP for bursts, several in flight.
    Burst,
    /// A WebSocket client publishing, a shallow window of unanswered requests.
    Window,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Burst => "burst",
            Workload::Window => "window",
        }
    }
}

#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub workload: Workload,
    /// `window`: unanswered publications at most, and publications not yet delivered to
    /// everyone at most.
    pub window: u64,
    pub behind: u64,
    pub subs: usize,
    /// Publications per burst in the measured window.
    pub burst: u64,
    /// Bursts in flight.
    pub depth: u64,
    pub warmup: Duration,
    pub measure: Duration,
    /// Publications per second in the paced phase, and for how long.
    pub rate: f64,
    pub paced: Duration,
    /// Padding bytes in each payload (the servers are started with the same).
    pub pad: usize,
    /// Handshakes in flight while connecting.
    pub connect_concurrency: usize,
    /// Subscribers over the HTTP transport (SSE streams, subscribed with a `POST`) instead of
    /// WebSocket.
    pub http: bool,
    /// Read the server's memory before and after the subscribers connect.
    pub memory: bool,
    /// Stop after the memory reading (no publication), holding the idle connections this
    /// long first (for a profiler's snapshot).
    pub memory_only: Option<Duration>,
    /// Bytes of padding in each subscribe message (a top-level field the servers ignore).
    pub subscribe_pad: usize,
}

/// What one run produced.
pub struct RunResult {
    pub subs: usize,
    /// Deliveries in the measured window, and the window (first trigger to last delivery).
    pub deliveries: u64,
    pub elapsed: Duration,
    /// Publish → delivery latencies of the paced phase, all of them, ns, sorted.
    pub paced_latencies: Vec<u64>,
    /// Deliveries missing (sequence gaps) over the whole run.
    pub dropped: u64,
    /// CPU time over the window: the server's, the load generator's, and others'.
    pub cpu: Usage,
    /// Server memory with no connection (after one warm-up connection), and with `subs` idle
    /// subscribed connections.
    pub mem: Option<(Mem, Mem)>,
}

impl RunResult {
    /// Server memory per idle subscribed connection, bytes (RSS).
    pub fn bytes_per_conn(&self) -> f64 {
        self.mem.map_or(f64::NAN, |(zero, n)| {
            (n.rss_kib as f64 - zero.rss_kib as f64) * 1024.0 / self.subs as f64
        })
    }
}

/// State the subscriber tasks and the driver share (one thread).
struct Shared {
    subs: u32,
    /// Per sequence number: subscribers that got it, and that missed it (a gap).
    got: RefCell<Vec<u32>>,
    missed: RefCell<Vec<u32>>,
    /// The lowest sequence number not yet accounted for by every subscriber.
    cursor: Cell<u64>,
    /// Signalled whenever a sequence number is accounted for by every subscriber.
    progress: Notify,
    /// Sequence numbers from `paced` on are the paced phase's.
    paced: Cell<u64>,
    paced_latencies: RefCell<Vec<u64>>,
    /// The expected frame after the timestamp: `,"pad":"xx.."}}`.
    tail: Vec<u8>,
    prefix: Vec<u8>,
    failure: RefCell<Option<String>>,
    stopping: Cell<bool>,
}

impl Shared {
    fn fail(&self, msg: String) {
        self.failure.borrow_mut().get_or_insert(msg);
        self.progress.notify_one();
    }

    /// Makes room for sequence numbers below `end`.
    fn reserve(&self, end: u64) {
        let end = end as usize;
        let mut got = self.got.borrow_mut();
        if got.len() < end {
            got.resize(end, 0);
            self.missed.borrow_mut().resize(end, 0);
        }
    }

    /// Advances the cursor over fully accounted sequence numbers; returns it.
    fn advance(&self) -> u64 {
        let got = self.got.borrow();
        let missed = self.missed.borrow();
        let mut c = self.cursor.get() as usize;
        while c < got.len() && got[c] + missed[c] == self.subs {
            c += 1;
        }
        self.cursor.set(c as u64);
        c as u64
    }

    /// Parses `{"topic":"bench:fan","event":"m","data":{"seq":S,"t":T,"pad":"..."}}`.
    fn parse(&self, frame: &[u8]) -> Result<(u64, u64), String> {
        let bad = || format!("unexpected frame {}", String::from_utf8_lossy(frame));
        let rest = frame.strip_prefix(&self.prefix[..]).ok_or_else(bad)?;
        let (seq, rest) = number(rest).ok_or_else(bad)?;
        let rest = rest.strip_prefix(b",\"t\":").ok_or_else(bad)?;
        let (t, rest) = number(rest).ok_or_else(bad)?;
        if rest != &self.tail[..] {
            return Err(bad());
        }
        Ok((seq, t))
    }

    /// Accounts for one delivery to a subscriber that expects `*next`.
    fn delivered(&self, frame: &[u8], next: &mut u64) -> Result<(), String> {
        let (seq, t) = self.parse(frame)?;
        if seq < *next {
            return Err(format!(
                "sequence {seq} after {} (reordered or duplicated)",
                *next - 1
            ));
        }
        {
            let mut got = self.got.borrow_mut();
            let mut missed = self.missed.borrow_mut();
            if seq as usize >= got.len() {
                return Err(format!("sequence {seq} was never published"));
            }
            let mut complete = false;
            for s in *next..seq {
                missed[s as usize] += 1;
                complete |= got[s as usize] + missed[s as usize] == self.subs;
            }
            got[seq as usize] += 1;
            complete |= got[seq as usize] + missed[seq as usize] == self.subs;
            if complete {
                self.progress.notify_one();
            }
        }
        *next = seq + 1;
        if seq >= self.paced.get() {
            self.paced_latencies
                .borrow_mut()
                .push(now_nanos().saturating_sub(t));
        }
        Ok(())
    }
}

/// A decimal number at the start of `s`, and what follows it.
fn number(s: &[u8]) -> Option<(u64, &[u8])> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in &s[..digits] {
        n = n * 10 + u64::from(b - b'0');
    }
    Some((n, &s[digits..]))
}

/// One subscriber: reads frames until the server goes away.
async fn subscriber(mut ws: SubConn, shared: Rc<Shared>) {
    let mut next: u64 = 0;
    let mut pongs: Vec<Vec<u8>> = Vec::new();
    loop {
        loop {
            let frame = match ws.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return shared.fail(format!("subscriber: {e}")),
            };
            match frame.opcode {
                client::OP_TEXT => {
                    if let Err(e) = shared.delivered(ws.payload(&frame), &mut next) {
                        return shared.fail(format!("subscriber: {e}"));
                    }
                }
                client::OP_PING => pongs.push(ws.payload(&frame).to_vec()),
                client::OP_PONG => {}
                client::OP_CLOSE if shared.stopping.get() => return,
                op => {
                    return shared.fail(format!("subscriber: unexpected opcode {op}"));
                }
            }
        }
        for p in pongs.drain(..) {
            if ws.pong(&p).await.is_err() && !shared.stopping.get() {
                return shared.fail("subscriber: cannot answer a ping".into());
            }
        }
        match ws.fill().await {
            Ok(n) if n > 0 => {}
            _ if shared.stopping.get() => return,
            Ok(_) => return shared.fail("subscriber: the server closed the connection".into()),
            Err(e) => return shared.fail(format!("subscriber: read: {e}")),
        }
    }
}

/// Connects one subscriber and subscribes it to the topic.
async fn subscribe(port: u16, http: bool, pad: usize) -> Result<SubConn, String> {
    let msg = if pad == 0 {
        format!(r#"{{"type":"subscribe","ref":1,"data":{{"topic":"{TOPIC}"}}}}"#)
    } else {
        let pad = "x".repeat(pad);
        format!(r#"{{"type":"subscribe","ref":1,"data":{{"topic":"{TOPIC}"}},"pad":"{pad}"}}"#)
    };
    let mut conn = if http {
        let sse = RawSse::connect(port)
            .await
            .map_err(|e| format!("stream: {e}"))?;
        sse.post(&msg)
            .await
            .map_err(|e| format!("subscribe: {e}"))?;
        SubConn::Sse(sse)
    } else {
        let mut ws = RawWs::connect(port, "/ws")
            .await
            .map_err(|e| format!("connect: {e}"))?;
        ws.send_text(&msg)
            .await
            .map_err(|e| format!("subscribe: {e}"))?;
        SubConn::Ws(ws)
    };
    let reply = loop {
        match conn
            .next_frame()
            .map_err(|e| format!("subscribe reply: {e}"))?
        {
            Some(f) if f.opcode == client::OP_TEXT => {
                break String::from_utf8_lossy(conn.payload(&f)).into_owned()
            }
            Some(_) => continue,
            None => {
                conn.fill()
                    .await
                    .map_err(|e| format!("subscribe reply: {e}"))?;
            }
        }
    };
    if !reply.starts_with(r#"{"ref":1,"ok":true"#) {
        return Err(format!("subscribe refused: {reply}"));
    }
    Ok(conn)
}

/// Connects `n` subscribers, `concurrency` handshakes at a time, and starts their tasks.
async fn connect_all(
    port: u16,
    n: usize,
    concurrency: usize,
    http: bool,
    pad: usize,
    shared: &Rc<Shared>,
) -> Result<(), String> {
    let next = Rc::new(Cell::new(0usize));
    let workers: Vec<_> = (0..concurrency.clamp(1, n.max(1)))
        .map(|_| {
            let next = next.clone();
            let shared = shared.clone();
            tokio::task::spawn_local(async move {
                loop {
                    let i = next.get();
                    if i >= n {
                        return Ok::<(), String>(());
                    }
                    next.set(i + 1);
                    let ws = subscribe(port, http, pad)
                        .await
                        .map_err(|e| format!("subscriber #{i}: {e}"))?;
                    tokio::task::spawn_local(subscriber(ws, shared.clone()));
                }
            })
        })
        .collect();
    for w in workers {
        w.await.map_err(|e| format!("connect task: {e}"))??;
    }
    Ok(())
}

/// The `window` workload's publisher: a WebSocket client sending `publish` requests.
struct WsPublisher {
    ws: RawWs,
    pad: String,
    /// Sequence numbers sent and not yet answered, oldest first (answers come in order).
    unanswered: std::collections::VecDeque<u64>,
}

impl WsPublisher {
    async fn connect(port: u16, pad: usize) -> Result<WsPublisher, String> {
        let ws = RawWs::connect(port, "/ws")
            .await
            .map_err(|e| format!("publisher: connect: {e}"))?;
        Ok(WsPublisher {
            ws,
            pad: "x".repeat(pad),
            unanswered: std::collections::VecDeque::new(),
        })
    }

    /// Sends publication `seq`, stamped now; its `ref` is `seq`.
    async fn send(&mut self, seq: u64) -> Result<(), String> {
        let t = now_nanos();
        let msg = format!(
            r#"{{"type":"publish","ref":{seq},"data":{{"seq":{seq},"t":{t},"pad":"{}"}}}}"#,
            self.pad
        );
        self.ws
            .send_text(&msg)
            .await
            .map_err(|e| format!("publisher: send: {e}"))?;
        self.unanswered.push_back(seq);
        Ok(())
    }

    /// Waits for the oldest answer.
    async fn answered(&mut self) -> Result<(), String> {
        let Some(seq) = self.unanswered.pop_front() else {
            return Ok(());
        };
        let reply = tokio::time::timeout(STALL, self.ws.recv_text())
            .await
            .map_err(|_| format!("publisher: no answer to {seq} within {STALL:?}"))?
            .map_err(|e| format!("publisher: {e}"))?;
        if !reply.starts_with(&format!(r#"{{"ref":{seq},"ok":true"#)) {
            return Err(format!("publisher: answer to {seq}: {reply}"));
        }
        Ok(())
    }
}

struct Driver {
    shared: Rc<Shared>,
    trigger: Trigger,
    publisher: Option<WsPublisher>,
    next: u64,
}

impl Driver {
    fn check(&self) -> Result<(), String> {
        match self.shared.failure.borrow().as_ref() {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    async fn publish(&mut self, n: u64) -> Result<(), String> {
        self.shared.reserve(self.next + n);
        match self.publisher.as_mut() {
            Some(p) => {
                for seq in self.next..self.next + n {
                    p.send(seq).await?;
                }
            }
            None => self.trigger.publish(self.next, n).await?,
        }
        self.next += n;
        Ok(())
    }

    /// One paced publication: through the WebSocket publisher, answered before the next.
    async fn publish_one(&mut self) -> Result<(), String> {
        self.publish(1).await?;
        if let Some(p) = self.publisher.as_mut() {
            p.answered().await?;
        }
        Ok(())
    }

    /// The `window` workload until `until`: at most `window` unanswered, at most `behind` not
    /// delivered to everyone; then waits for the last.
    async fn windowed(&mut self, window: u64, behind: u64, until: Instant) -> Result<(), String> {
        while Instant::now() < until {
            self.check()?;
            let unanswered = self.publisher.as_ref().map_or(0, |p| p.unanswered.len()) as u64;
            let done = self.shared.advance();
            if unanswered < window && self.next - done < behind {
                self.publish(1).await?;
            } else if unanswered > 0 {
                if let Some(p) = self.publisher.as_mut() {
                    p.answered().await?;
                }
            } else {
                self.wait_progress().await?;
            }
        }
        if let Some(p) = self.publisher.as_mut() {
            while !p.unanswered.is_empty() {
                p.answered().await?;
            }
        }
        self.wait_all().await
    }

    /// The window's workload until `until`.
    async fn workload(&mut self, cfg: &LoadConfig, until: Instant) -> Result<(), String> {
        match cfg.workload {
            Workload::Burst => self.bursts(cfg.burst, cfg.depth, until).await,
            Workload::Window => self.windowed(cfg.window, cfg.behind, until).await,
        }
    }

    /// Waits for progress; fails the run after `STALL` without any.
    async fn wait_progress(&self) -> Result<(), String> {
        let waited = tokio::time::timeout(STALL, self.shared.progress.notified()).await;
        self.check()?;
        if waited.is_err() {
            let c = self.shared.advance();
            let got = self.shared.got.borrow().get(c as usize).copied();
            return Err(format!(
                "no progress for {STALL:?}: sequence {c} reached {got:?} of {} subscribers",
                self.shared.subs
            ));
        }
        Ok(())
    }

    async fn wait_all(&self) -> Result<(), String> {
        while self.shared.advance() < self.next {
            self.wait_progress().await?;
        }
        self.check()
    }

    /// Bursts of `burst`, `depth` in flight, until `until`; then waits for the last.
    async fn bursts(&mut self, burst: u64, depth: u64, until: Instant) -> Result<(), String> {
        while Instant::now() < until {
            let done = self.shared.advance();
            if (self.next - done).div_ceil(burst) < depth {
                self.publish(burst).await?;
            } else {
                self.wait_progress().await?;
            }
        }
        self.wait_all().await
    }
}

/// Connects, measures memory, warms up, measures the window and the paced phase against the
/// server at `port` (process `pid`). Must run inside a `LocalSet`.
pub async fn run(port: u16, pid: Option<u32>, cfg: &LoadConfig) -> Result<RunResult, String> {
    run_with(port, pid, cfg, &mut |_| Ok(())).await
}

/// [`run`], calling `hook(true)` right before the measured window opens and `hook(false)`
/// right after it closes (blocking the load generator meanwhile).
pub async fn run_with(
    port: u16,
    pid: Option<u32>,
    cfg: &LoadConfig,
    hook: &mut dyn FnMut(bool) -> Result<(), String>,
) -> Result<RunResult, String> {
    let pad = "x".repeat(cfg.pad);
    let shared = Rc::new(Shared {
        subs: cfg.subs as u32,
        got: RefCell::new(Vec::new()),
        missed: RefCell::new(Vec::new()),
        cursor: Cell::new(0),
        progress: Notify::new(),
        paced: Cell::new(u64::MAX),
        paced_latencies: RefCell::new(Vec::new()),
        tail: format!(r#","pad":"{pad}"}}}}"#).into_bytes(),
        prefix: format!(r#"{{"topic":"{TOPIC}","event":"{EVENT}","data":{{"seq":"#).into_bytes(),
        failure: RefCell::new(None),
        stopping: Cell::new(false),
    });
    let result = run_inner(port, pid, cfg, &shared, hook).await;
    // The caller kills the server next: connections ending is no failure from here on.
    shared.stopping.set(true);
    result
}

async fn run_inner(
    port: u16,
    pid: Option<u32>,
    cfg: &LoadConfig,
    shared: &Rc<Shared>,
    hook: &mut dyn FnMut(bool) -> Result<(), String>,
) -> Result<RunResult, String> {
    let mem_pid = pid.filter(|_| cfg.memory);
    let mem0 = match mem_pid {
        Some(pid) => {
            // One connection first, so that what is set up once (not per connection) is in
            // the baseline reading.
            let warm = subscribe(port, cfg.http, cfg.subscribe_pad).await?;
            drop(warm);
            tokio::time::sleep(Duration::from_millis(200)).await;
            Some(settled_memory(pid).await?)
        }
        None => None,
    };
    connect_all(
        port,
        cfg.subs,
        cfg.connect_concurrency,
        cfg.http,
        cfg.subscribe_pad,
        shared,
    )
    .await?;
    let mem = match (mem_pid, mem0) {
        (Some(pid), Some(m0)) => Some((m0, settled_memory(pid).await?)),
        _ => None,
    };
    if let Some(hold) = cfg.memory_only {
        tokio::time::sleep(hold).await;
        return Ok(RunResult {
            subs: cfg.subs,
            deliveries: 0,
            elapsed: Duration::ZERO,
            paced_latencies: Vec::new(),
            dropped: 0,
            cpu: Usage::default(),
            mem,
        });
    }

    let publisher = match cfg.workload {
        Workload::Window => Some(WsPublisher::connect(port, cfg.pad).await?),
        Workload::Burst => None,
    };
    let mut d = Driver {
        shared: shared.clone(),
        trigger: Trigger::new(port),
        publisher,
        next: 0,
    };
    d.workload(cfg, Instant::now() + cfg.warmup).await?;

    hook(true)?;
    let cpu0 = Reading::take(pid)?;
    let t0 = Instant::now();
    let w0 = d.next;
    d.workload(cfg, t0 + cfg.measure).await?;
    let elapsed = t0.elapsed();
    let cpu1 = Reading::take(pid)?;
    hook(false)?;
    let w1 = d.next;

    // Paced: one publication every 1/rate s.
    shared.paced.set(d.next);
    let count = (cfg.rate * cfg.paced.as_secs_f64()).round().max(1.0) as u64;
    let period = Duration::from_secs_f64(1.0 / cfg.rate.max(1e-3));
    let start = tokio::time::Instant::now();
    for k in 0..count {
        tokio::time::sleep_until(start + period * k as u32).await;
        d.check()?;
        d.publish_one().await?;
    }
    d.wait_all().await?;

    let deliveries = {
        let got = shared.got.borrow();
        got[w0 as usize..w1 as usize]
            .iter()
            .map(|&g| u64::from(g))
            .sum()
    };
    let dropped = shared.missed.borrow().iter().map(|&m| u64::from(m)).sum();
    let mut paced_latencies = shared.paced_latencies.take();
    paced_latencies.sort_unstable();
    Ok(RunResult {
        subs: cfg.subs,
        deliveries,
        elapsed,
        paced_latencies,
        dropped,
        cpu: Usage::between(&cpu0, &cpu1),
        mem,
    })
}
