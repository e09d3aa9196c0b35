//! The load generator's HTTP-transport connection (`docs/http-transport.md`): the reply stream
//! (Server-Sent Events over chunked HTTP/1.1, read from a raw socket) and upstream `POST`s on
//! a second, keep-alive socket, the way a browser's `fetch` reuses one. Each `POST` carries
//! every request the closed loop owes at that moment (a batch), one `POST` at a time.

use std::collections::VecDeque;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::load::{variants, ConnStats, InFlight, Phase, MEASURE, REPLY_TIMEOUT, STOP};

pub struct HttpConn {
    port: u16,
    stream: TcpStream,
    post: TcpStream,
    id: String,
    secret: String,
    seq: u64,
    /// Stream bytes not yet decoded (chunked framing), and decoded ones not yet parsed.
    raw: Vec<u8>,
    body: Vec<u8>,
    /// Bytes of a `POST` response read ahead.
    post_buf: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    let mut chunk = [0u8; 16 * 1024];
    let n = tokio::time::timeout(REPLY_TIMEOUT, s.read(&mut chunk))
        .await
        .map_err(|_| format!("nothing within {REPLY_TIMEOUT:?}"))?
        .map_err(|e| format!("read: {e}"))?;
    if n == 0 {
        return Err("the server closed the connection".into());
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

impl HttpConn {
    /// Opens the stream of `/ws` and reads its `open` event.
    pub async fn connect(port: u16) -> Result<HttpConn, String> {
        let addr = ("127.0.0.1", port);
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).ok();
        let head = format!(
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n"
        );
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut raw = Vec::new();
        let end = loop {
            if let Some(i) = find(&raw, b"\r\n\r\n") {
                break i;
            }
            read_more(&mut stream, &mut raw).await?;
        };
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        if !head.starts_with("HTTP/1.1 200") || !head.to_ascii_lowercase().contains("chunked") {
            return Err(format!("stream refused: {head}"));
        }
        raw.drain(..end + 4);
        let post = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        post.set_nodelay(true).ok();
        let mut c = HttpConn {
            port,
            stream,
            post,
            id: String::new(),
            secret: String::new(),
            seq: 0,
            raw,
            body: Vec::new(),
            post_buf: Vec::new(),
        };
        let (event, data) = c.next_event().await?;
        if event != "open" {
            return Err(format!("first event {event:?}, not open"));
        }
        let open: serde_json::Value =
            serde_json::from_slice(&data).map_err(|e| format!("open event: {e}"))?;
        c.id = open["id"].as_str().unwrap_or_default().to_owned();
        c.secret = open["secret"].as_str().unwrap_or_default().to_owned();
        Ok(c)
    }

    /// Moves complete chunks from `raw` into `body`.
    fn decode(&mut self) -> Result<(), String> {
        loop {
            let Some(eol) = find(&self.raw, b"\r\n") else {
                return Ok(());
            };
            let size = std::str::from_utf8(&self.raw[..eol])
                .ok()
                .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                .ok_or("bad chunk size")?;
            if size == 0 {
                return Err("the stream ended".into());
            }
            if self.raw.len() < eol + 2 + size + 2 {
                return Ok(());
            }
            self.body
                .extend_from_slice(&self.raw[eol + 2..eol + 2 + size]);
            self.raw.drain(..eol + 2 + size + 2);
        }
    }

    /// The next event: its type (`message` when none) and its one data line.
    async fn next_event(&mut self) -> Result<(String, Vec<u8>), String> {
        loop {
            self.decode()?;
            if let Some(end) = find(&self.body, b"\n\n") {
                let block: Vec<u8> = self.body.drain(..end + 2).collect();
                let mut event = String::from("message");
                let mut data = Vec::new();
                for line in block[..end].split(|b| *b == b'\n') {
                    if let Some(v) = line.strip_prefix(b"event: ") {
                        event = String::from_utf8_lossy(v).into_owned();
                    } else if let Some(v) = line.strip_prefix(b"data: ") {
                        data = v.to_vec();
                    }
                }
                return Ok((event, data));
            }
            read_more(&mut self.stream, &mut self.raw).await?;
        }
    }

    /// Posts `frames` (a JSON array's text) as the next batch and waits for its 204.
    async fn post(&mut self, frames: &str) -> Result<(), String> {
        let req = format!(
            "POST /ws HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
             Switchboard-Connection: {}\r\nSwitchboard-Secret: {}\r\nSwitchboard-Seq: {}\r\n\
             Content-Length: {}\r\n\r\n{frames}",
            self.port,
            self.id,
            self.secret,
            self.seq,
            frames.len()
        );
        self.seq += 1;
        self.post
            .write_all(req.as_bytes())
            .await
            .map_err(|e| format!("POST: {e}"))?;
        let end = loop {
            if let Some(i) = find(&self.post_buf, b"\r\n\r\n") {
                break i;
            }
            read_more(&mut self.post, &mut self.post_buf).await?;
        };
        let ok = self.post_buf.starts_with(b"HTTP/1.1 204");
        let head = String::from_utf8_lossy(&self.post_buf[..end]).into_owned();
        self.post_buf.drain(..end + 4);
        if !ok {
            return Err(format!("POST answered {head}"));
        }
        Ok(())
    }
}

/// One connection's closed loop over HTTP: like the WebSocket one, every reply checked byte
/// for byte; the requests owed are sent in one `POST`.
pub async fn conn_loop(
    mut c: HttpConn,
    conn: usize,
    depth: usize,
    phase: Phase,
) -> Result<ConnStats, String> {
    let variants = variants(conn);
    let mut next_ref: u64 = 1;
    let mut inflight: VecDeque<InFlight> = VecDeque::with_capacity(depth);
    let mut stats = ConnStats {
        msgs: 0,
        latencies: Vec::with_capacity(1 << 14),
    };
    let fail = |what: String| format!("connection {conn}: {what}");
    let mut batch = String::new();
    loop {
        if phase.get() == STOP {
            break;
        }
        if inflight.len() < depth {
            batch.clear();
            batch.push('[');
            let sent = Instant::now();
            while inflight.len() < depth {
                let r = next_ref;
                next_ref += 1;
                let v = &variants[(r % variants.len() as u64) as usize];
                if batch.len() > 1 {
                    batch.push(',');
                }
                batch.push_str(&format!(
                    r#"{{"type":"echo","ref":{r},"data":{{"id":{r},{}"#,
                    v.request_tail
                ));
                let expected = format!(
                    r#"{{"ref":{r},"ok":true,"data":{{"id":{r},{}"#,
                    v.reply_tail
                );
                inflight.push_back(InFlight { sent, expected });
            }
            batch.push(']');
            c.post(&batch).await.map_err(fail)?;
        }
        let (event, data) = c.next_event().await.map_err(fail)?;
        match event.as_str() {
            "message" => {}
            "ping" => continue,
            other => return Err(fail(format!("unexpected event {other}"))),
        }
        let now = Instant::now();
        let Some(head) = inflight.pop_front() else {
            return Err(fail(format!(
                "unsolicited event {}",
                String::from_utf8_lossy(&data)
            )));
        };
        if data != head.expected.as_bytes() {
            return Err(fail(format!(
                "wrong reply\n  expected {}\n  got      {}",
                head.expected,
                String::from_utf8_lossy(&data)
            )));
        }
        if phase.get() == MEASURE {
            stats.msgs += 1;
            stats.latencies.push((now - head.sent).as_nanos() as u64);
        }
    }
    Ok(stats)
}
