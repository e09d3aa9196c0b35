//! A client of the HTTP transport (`docs/http-transport.md`) written from the wire contract:
//! the stream read from a raw TCP socket (HTTP/1.1, chunked, Server-Sent Events) and upstream
//! `POST`s as raw requests, so that tests see exactly what the server sends.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http::{try_request, Response};

/// How long a read waits for the next event before the test fails.
pub const EVENT_WITHIN: Duration = Duration::from_secs(10);

/// One Server-Sent Event: its type (`message` when none was given) and its data lines joined
/// with `\n`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub event: String,
    pub data: String,
}

impl Event {
    /// The data as JSON (panics when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event {:?} is not JSON: {e}", self))
    }
}

/// One HTTP stream of a channel, and its identity for upstream requests.
pub struct SseClient {
    addr: SocketAddr,
    /// Where upstream requests go (the stream's server unless [`via`](Self::via) says).
    upstream: SocketAddr,
    path: String,
    stream: TcpStream,
    /// Bytes read and not yet decoded (chunked framing).
    raw: Vec<u8>,
    /// Decoded body bytes not yet parsed into events.
    body: Vec<u8>,
    chunked: bool,
    ended: bool,
    /// Events read while waiting for something else.
    pending: VecDeque<Event>,
    /// The connection id, secret and ping interval (ms) from the `open` event.
    pub id: String,
    pub secret: String,
    pub ping_ms: u64,
    /// The next batch's number.
    pub seq: u64,
    next_ref: u64,
    timeout: Duration,
    /// The response's header fields (lower-case names).
    pub headers: Vec<(String, String)>,
}

impl SseClient {
    /// Opens the stream of the channel at `path` (with its query) and reads the `open` event.
    /// `Err` is the refusal, as the server sent it.
    pub async fn open(addr: SocketAddr, path: &str) -> Result<SseClient, Response> {
        Self::open_with(addr, path, &[]).await
    }

    /// [`open`](Self::open) with extra request headers (`Origin`, `Authorization`, ...).
    pub async fn open_with(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<SseClient, Response> {
        let c = Self::connect(addr, path, headers).await?;
        c.read_open().await
    }

    /// [`open`](Self::open) on a socket whose receive buffer is `bytes` (the kernel's
    /// autotuning off): a client that stops reading holds the server up sooner.
    pub async fn open_small(
        addr: SocketAddr,
        path: &str,
        bytes: u32,
    ) -> Result<SseClient, Response> {
        let c = Self::connect_socket(addr, path, &[], Some(bytes)).await?;
        c.read_open().await
    }

    async fn read_open(self) -> Result<SseClient, Response> {
        let mut c = self;
        let open = c
            .next()
            .await
            .expect("the stream ended before its open event");
        assert_eq!(open.event, "open", "the first event is open: {open:?}");
        let o = open.json();
        c.id = o["id"].as_str().expect("open.id").to_owned();
        c.secret = o["secret"].as_str().expect("open.secret").to_owned();
        c.ping_ms = o["ping"].as_u64().expect("open.ping");
        Ok(c)
    }

    /// Opens the stream and reads only the response head (a test that never reads the body).
    pub async fn connect(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<SseClient, Response> {
        Self::connect_socket(addr, path, headers, None).await
    }

    async fn connect_socket(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        rcvbuf: Option<u32>,
    ) -> Result<SseClient, Response> {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        if let Some(bytes) = rcvbuf {
            socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        }
        let mut stream = socket.connect(addr).await.expect("connect");
        let mut head = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\
             Cache-Control: no-cache\r\n"
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.expect("send");
        let mut raw = Vec::new();
        let end = loop {
            if let Some(i) = find(&raw, b"\r\n\r\n") {
                break i;
            }
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(EVENT_WITHIN, stream.read(&mut buf))
                .await
                .expect("response head within the timeout")
                .expect("read");
            assert!(n > 0, "connection closed before a response head: {raw:?}");
            raw.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let rest = raw[end + 4..].to_vec();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let chunked = crate::http::header(&headers, "transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        let mut c = SseClient {
            addr,
            upstream: addr,
            path: path.split('?').next().unwrap_or(path).to_owned(),
            stream,
            raw: rest,
            body: Vec::new(),
            chunked,
            ended: false,
            pending: VecDeque::new(),
            id: String::new(),
            secret: String::new(),
            ping_ms: 0,
            seq: 0,
            next_ref: 1,
            timeout: EVENT_WITHIN,
            headers,
        };
        if status != 200 {
            // The refusal's body: whatever comes until the server closes or its length is read.
            let len = crate::http::header(&c.headers, "content-length")
                .and_then(|v| v.parse::<usize>().ok());
            while len.is_none_or(|n| c.raw.len() < n) {
                let mut buf = [0u8; 4096];
                match tokio::time::timeout(EVENT_WITHIN, c.stream.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => c.raw.extend_from_slice(&buf[..n]),
                    _ => break,
                }
            }
            let body = c.raw.clone();
            return Err(Response {
                status,
                text: format!("{head}\r\n\r\n{}", String::from_utf8_lossy(&body)),
                headers: c.headers,
                body,
            });
        }
        Ok(c)
    }

    /// The server the stream is on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends upstream requests to `addr` from now on (another node of the same engine).
    pub fn via(&mut self, addr: SocketAddr) {
        self.upstream = addr;
    }

    /// How long reads wait (default [`EVENT_WITHIN`]).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// A header of the stream's response.
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::http::header(&self.headers, name)
    }

    /// Moves complete chunks from `raw` into `body`.
    fn decode(&mut self) {
        if !self.chunked {
            self.body.append(&mut self.raw);
            return;
        }
        loop {
            let Some(eol) = find(&self.raw, b"\r\n") else {
                return;
            };
            let size_text = String::from_utf8_lossy(&self.raw[..eol]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {size_text:?}"));
            if size == 0 {
                self.ended = true;
                self.raw.clear();
                return;
            }
            if self.raw.len() < eol + 2 + size + 2 {
                return;
            }
            self.body
                .extend_from_slice(&self.raw[eol + 2..eol + 2 + size]);
            self.raw.drain(..eol + 2 + size + 2);
        }
    }

    /// The next complete event in `body`, if any.
    fn parse(&mut self) -> Option<Event> {
        loop {
            let end = find(&self.body, b"\n\n")?;
            let block: Vec<u8> = self.body.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&block[..end]).into_owned();
            let mut event = String::from("message");
            let mut data: Vec<String> = Vec::new();
            for line in text.split('\n') {
                if line.starts_with(':') {
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => event = value.to_owned(),
                    "data" => data.push(value.to_owned()),
                    _ => {}
                }
            }
            if data.is_empty() && event == "message" {
                // Comments only: keep-alive padding.
                continue;
            }
            return Some(Event {
                event,
                data: data.join("\n"),
            });
        }
    }

    /// The next event, in order (`None`: the stream ended). Panics when none comes within
    /// the timeout.
    pub async fn next(&mut self) -> Option<Event> {
        if let Some(e) = self.pending.pop_front() {
            return Some(e);
        }
        loop {
            self.decode();
            if let Some(e) = self.parse() {
                return Some(e);
            }
            if self.ended {
                return None;
            }
            let mut buf = vec![0u8; 64 * 1024];
            let n = match tokio::time::timeout(self.timeout, self.stream.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                Ok(Err(_)) => 0,
                Err(_) => panic!(
                    "no event within {:?} on stream {} ({} bytes undecoded)",
                    self.timeout,
                    self.id,
                    self.raw.len()
                ),
            };
            if n == 0 {
                self.ended = true;
                self.decode();
                continue;
            }
            self.raw.extend_from_slice(&buf[..n]);
            self.decode();
        }
    }

    /// The next event that is not a `ping`.
    pub async fn recv(&mut self) -> Option<Event> {
        loop {
            match self.next().await {
                Some(e) if e.event == "ping" => continue,
                other => return other,
            }
        }
    }

    /// The next message (a text frame) as JSON; panics on anything else but pings.
    pub async fn recv_json(&mut self) -> Value {
        match self.recv().await {
            Some(e) if e.event == "message" => e.json(),
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// The next delivery of `event`, skipping other messages.
    pub async fn recv_event(&mut self, event: &str) -> Value {
        loop {
            let v = self.recv_json().await;
            if v["event"] == event {
                return v;
            }
        }
    }

    /// Reads up to the `close` event and the end of the stream: its code and reason.
    pub async fn recv_close(&mut self) -> (u16, String) {
        loop {
            match self.next().await {
                Some(e) if e.event == "close" => {
                    let c = e.json();
                    let after = self.next().await;
                    assert_eq!(after, None, "nothing after the close event");
                    return (
                        c["code"].as_u64().expect("close code") as u16,
                        c["reason"].as_str().unwrap_or_default().to_owned(),
                    );
                }
                Some(_) => continue,
                None => panic!("the stream ended without a close event"),
            }
        }
    }

    /// Upstream `POST` with the given batch number, content type, body and secret.
    pub async fn post_raw(
        &self,
        seq: Option<u64>,
        content_type: &str,
        body: &[u8],
        secret: Option<&str>,
    ) -> Response {
        let seq = seq.map(|s| s.to_string());
        let mut headers = vec![
            ("Switchboard-Connection", self.id.as_str()),
            ("Content-Type", content_type),
        ];
        if let Some(secret) = secret {
            headers.push(("Switchboard-Secret", secret));
        }
        if let Some(seq) = &seq {
            headers.push(("Switchboard-Seq", seq.as_str()));
        }
        try_request(self.upstream, "POST", &self.path, &headers, body)
            .await
            .expect("POST")
    }

    /// Posts `frames` (a JSON array) as the next batch; the status.
    pub async fn send(&mut self, frames: &[Value]) -> Response {
        let body = serde_json::to_vec(frames).expect("JSON frames");
        let seq = self.seq;
        self.seq += 1;
        let secret = self.secret.clone();
        self.post_raw(Some(seq), "application/json", &body, Some(&secret))
            .await
    }

    /// Posts `bytes` as one binary frame (`application/octet-stream`), the next batch; the
    /// status.
    pub async fn send_binary(&mut self, bytes: &[u8]) -> Response {
        let seq = self.seq;
        self.seq += 1;
        let secret = self.secret.clone();
        self.post_raw(Some(seq), "application/octet-stream", bytes, Some(&secret))
            .await
    }

    /// Posts one frame `{"type":route,"ref":N,"data":data}` and reads up to its reply; other
    /// events read meanwhile wait for the next reads. The reply frame, whole.
    pub async fn request(&mut self, route: &str, data: Value) -> Value {
        let r = self.next_ref;
        self.next_ref += 1;
        let sent = self
            .send(&[json!({"type": route, "ref": r, "data": data})])
            .await;
        assert_eq!(sent.status, 204, "POST accepted: {}", sent.text);
        self.reply_to(r).await
    }

    /// Reads up to the reply to `reference`, keeping other events for later reads.
    pub async fn reply_to(&mut self, reference: u64) -> Value {
        let mut kept = VecDeque::new();
        let reply = loop {
            let Some(e) = self.next().await else {
                panic!("the stream ended before the reply to {reference}");
            };
            if e.event == "message" {
                let v = e.json();
                if v.get("ref") == Some(&json!(reference)) && v.get("ok").is_some() {
                    break v;
                }
            }
            kept.push_back(e);
        };
        kept.append(&mut self.pending);
        self.pending = kept;
        reply
    }

    /// `DELETE`: closes the connection.
    pub async fn delete(&self) -> Response {
        try_request(
            self.upstream,
            "DELETE",
            &self.path,
            &[
                ("Switchboard-Connection", self.id.as_str()),
                ("Switchboard-Secret", self.secret.as_str()),
            ],
            b"",
        )
        .await
        .expect("DELETE")
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
