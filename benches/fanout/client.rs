//! A minimal WebSocket client for the load generator: a proper opening handshake (the
//! server's `Sec-WebSocket-Accept` is checked), masked client frames, and a frame reader for
//! the server's unmasked frames straight out of one read buffer, so that 10 000 subscribers
//! on one core cost little more than their `read` calls. Also a keep-alive HTTP/1.1 client for
//! the `/publish` trigger. Non-blocking I/O on tokio's readiness (`readable` + `try_read`).

use std::io;
use std::ops::Range;

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Read buffer per connection; grows for a larger frame.
const READ_BUF: usize = 8 * 1024;

pub const OP_TEXT: u8 = 0x1;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

async fn read_some(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

async fn write_all(stream: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        stream.writable().await?;
        match stream.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads an HTTP response head into `buf[..*end]`; returns its length.
async fn read_head(stream: &TcpStream, buf: &mut Vec<u8>, end: &mut usize) -> io::Result<usize> {
    loop {
        if let Some(i) = find(&buf[..*end], b"\r\n\r\n") {
            return Ok(i + 4);
        }
        if *end == buf.len() {
            if buf.len() >= 64 * 1024 {
                return Err(io::Error::other("HTTP response head too long"));
            }
            buf.resize(buf.len() * 2, 0);
        }
        let n = read_some(stream, &mut buf[*end..]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed in the HTTP response head",
            ));
        }
        *end += n;
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// One frame found in the read buffer: its opcode and where its payload is.
pub struct Frame {
    pub opcode: u8,
    pub payload: Range<usize>,
}

/// A client WebSocket connection.
pub struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes the next frame needs in the buffer, when known.
    need: usize,
    mask: u32,
}

impl RawWs {
    /// Connects to `ws://127.0.0.1:{port}{path}` and performs the opening handshake.
    pub async fn connect(port: u16, path: &str) -> io::Result<RawWs> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        let key = generate_key();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        write_all(&stream, request.as_bytes()).await?;
        let mut buf = vec![0u8; READ_BUF];
        let mut end = 0;
        let head_len = read_head(&stream, &mut buf, &mut end).await?;
        let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
        let status = head.split(' ').nth(1).unwrap_or_default();
        if status != "101" {
            let first = head.lines().next().unwrap_or_default();
            return Err(io::Error::other(format!("handshake refused: {first}")));
        }
        let expected = derive_accept_key(key.as_bytes());
        if header(&head, "sec-websocket-accept") != Some(expected.as_str()) {
            return Err(io::Error::other("handshake: wrong Sec-WebSocket-Accept"));
        }
        // Whatever followed the head is the first frames' bytes.
        Ok(RawWs {
            stream,
            buf,
            start: head_len,
            end,
            need: 0,
            // Any value will do; it only has to change between frames.
            mask: 0x9e37_79b9 ^ port as u32,
        })
    }

    async fn send(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x80 | opcode);
        let len = payload.len();
        if len < 126 {
            frame.push(0x80 | len as u8);
        } else if len <= 0xffff {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
        self.mask = self
            .mask
            .wrapping_mul(1_664_525)
            .wrapping_add(1_013_904_223);
        let mask = self.mask.to_be_bytes();
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        write_all(&self.stream, &frame).await
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.send(OP_TEXT, text.as_bytes()).await
    }

    /// Answers a ping.
    pub async fn pong(&mut self, payload: &[u8]) -> io::Result<()> {
        self.send(OP_PONG, payload).await
    }

    /// Closes the connection the WebSocket way: a close frame (1000), then frames are read and
    /// dropped until the server's close frame or the end of the stream. (For the soak bench;
    /// the fanout bench drops its connections.)
    #[allow(dead_code)]
    pub async fn close(&mut self) -> io::Result<()> {
        self.send(OP_CLOSE, &1000u16.to_be_bytes()).await?;
        loop {
            while let Some(f) = self.next_frame()? {
                if f.opcode == OP_CLOSE {
                    return Ok(());
                }
            }
            if self.fill().await? == 0 {
                return Ok(());
            }
        }
    }

    /// The next complete frame already in the buffer, if any. Fragmented and masked server
    /// frames are errors (neither server sends them).
    pub fn next_frame(&mut self) -> io::Result<Option<Frame>> {
        let avail = &self.buf[self.start..self.end];
        if avail.len() < 2 {
            self.need = 2;
            return Ok(None);
        }
        let (b0, b1) = (avail[0], avail[1]);
        if b0 & 0x80 == 0 || b0 & 0x70 != 0 {
            return Err(io::Error::other(format!(
                "unexpected frame header {b0:#04x} (fragment or RSV bits)"
            )));
        }
        if b1 & 0x80 != 0 {
            return Err(io::Error::other("masked frame from the server"));
        }
        let (len, header) = match b1 & 0x7f {
            126 if avail.len() >= 4 => (u16::from_be_bytes([avail[2], avail[3]]) as usize, 4),
            127 if avail.len() >= 10 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&avail[2..10]);
                (u64::from_be_bytes(b) as usize, 10)
            }
            126 | 127 => {
                self.need = 10;
                return Ok(None);
            }
            n => (n as usize, 2),
        };
        if avail.len() < header + len {
            self.need = header + len;
            return Ok(None);
        }
        let payload = self.start + header..self.start + header + len;
        self.start += header + len;
        self.need = 0;
        Ok(Some(Frame {
            opcode: b0 & 0x0f,
            payload,
        }))
    }

    /// The bytes of a frame's payload (valid until the next [`fill`](Self::fill)).
    pub fn payload(&self, frame: &Frame) -> &[u8] {
        &self.buf[frame.payload.clone()]
    }

    /// Reads more bytes from the socket; `Ok(0)` when the server closed it.
    pub async fn fill(&mut self) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.need > self.buf.len() {
            self.buf.resize(self.need, 0);
        }
        let n = read_some(&self.stream, &mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }

    /// Waits for the next text frame, answering pings on the way. (For the soak bench; the
    /// fanout bench's subscribe reads its reply through `SubConn`.)
    #[allow(dead_code)]
    pub async fn recv_text(&mut self) -> io::Result<String> {
        loop {
            while let Some(f) = self.next_frame()? {
                match f.opcode {
                    OP_TEXT => return Ok(String::from_utf8_lossy(self.payload(&f)).into_owned()),
                    OP_PING => {
                        let p = self.payload(&f).to_vec();
                        self.pong(&p).await?;
                    }
                    OP_PONG => {}
                    op => return Err(io::Error::other(format!("unexpected opcode {op}"))),
                }
            }
            if self.fill().await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                ));
            }
        }
    }
}

/// A keep-alive HTTP/1.1 connection for `POST /publish`.
pub struct Trigger {
    port: u16,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Trigger {
    pub fn new(port: u16) -> Self {
        Trigger {
            port,
            stream: None,
            buf: vec![0u8; 4096],
        }
    }

    /// Asks the server to publish sequence numbers `from..from + n`. Reconnects once if the
    /// kept-alive connection was closed meanwhile.
    pub async fn publish(&mut self, from: u64, n: u64) -> Result<(), String> {
        match self.try_publish(from, n).await {
            Ok(()) => Ok(()),
            Err(_) => {
                self.stream = None;
                self.try_publish(from, n)
                    .await
                    .map_err(|e| format!("POST /publish: {e}"))
            }
        }
    }

    async fn try_publish(&mut self, from: u64, n: u64) -> io::Result<()> {
        if self.stream.is_none() {
            let s = TcpStream::connect(("127.0.0.1", self.port)).await?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
        }
        let Some(stream) = self.stream.as_ref() else {
            unreachable!("connected above")
        };
        let request = format!(
            "POST /publish?from={from}&n={n} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\
             Content-Length: 0\r\n\r\n",
            self.port
        );
        write_all(stream, request.as_bytes()).await?;
        let mut end = 0;
        let head_len = read_head(stream, &mut self.buf, &mut end).await?;
        let head = String::from_utf8_lossy(&self.buf[..head_len]).into_owned();
        let body: usize = header(&head, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut have = end - head_len;
        while have < body {
            let mut sink = [0u8; 512];
            let n = read_some(stream, &mut sink).await?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "body cut"));
            }
            have += n;
        }
        if head.split(' ').nth(1) != Some("200") {
            let first = head.lines().next().unwrap_or_default().to_owned();
            self.stream = None;
            return Err(io::Error::other(format!("server answered {first}")));
        }
        Ok(())
    }
}

/// A subscriber over the HTTP transport (`docs/http-transport.md`): the Server-Sent Events
/// stream of `/ws` read from a raw socket (chunked HTTP/1.1 decoded into one buffer), its
/// events handed out as the same [`Frame`]s a [`RawWs`] gives (a text frame per message event,
/// a ping per `ping` event), so that one subscriber loop serves both transports.
pub struct RawSse {
    port: u16,
    stream: TcpStream,
    /// Socket bytes not yet de-chunked: `raw[..raw_end]`.
    raw: Vec<u8>,
    raw_end: usize,
    /// De-chunked body bytes: `buf[start..end]` not yet parsed into events.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Chunk bytes still owed by the current chunk (its data, then its CRLF).
    chunk_left: usize,
    id: String,
    secret: String,
}

impl RawSse {
    /// Opens the stream of `/ws` and reads its `open` event.
    pub async fn connect(port: u16) -> io::Result<RawSse> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n"
        );
        write_all(&stream, request.as_bytes()).await?;
        let mut raw = vec![0u8; READ_BUF];
        let mut end = 0;
        let head_len = read_head(&stream, &mut raw, &mut end).await?;
        let head = String::from_utf8_lossy(&raw[..head_len]).into_owned();
        if head.split(' ').nth(1) != Some("200")
            || !header(&head, "transfer-encoding")
                .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            let first = head.lines().next().unwrap_or_default();
            return Err(io::Error::other(format!("stream refused: {first}")));
        }
        raw.copy_within(head_len..end, 0);
        let mut s = RawSse {
            port,
            stream,
            raw,
            raw_end: end - head_len,
            buf: vec![0u8; READ_BUF],
            start: 0,
            end: 0,
            chunk_left: 0,
            id: String::new(),
            secret: String::new(),
        };
        let open = loop {
            s.dechunk()?;
            if let Some((event, data)) = s.next_event() {
                if event == "open" {
                    break String::from_utf8_lossy(&s.buf[data]).into_owned();
                }
                return Err(io::Error::other(format!("first event {event:?}, not open")));
            }
            if s.fill_raw().await? == 0 {
                return Err(io::Error::other("the stream ended before its open event"));
            }
        };
        let v: serde_json::Value = serde_json::from_str(&open).map_err(io::Error::other)?;
        s.id = v["id"].as_str().unwrap_or_default().to_owned();
        s.secret = v["secret"].as_str().unwrap_or_default().to_owned();
        Ok(s)
    }

    /// Posts one frame upstream (on a connection of its own: only the subscribe does).
    pub async fn post(&self, frames: &str) -> io::Result<()> {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).await?;
        let request = format!(
            "POST /ws HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nSwitchboard-Connection: {}\r\n\
             Switchboard-Secret: {}\r\nSwitchboard-Seq: 0\r\nContent-Length: {}\r\n\r\n{frames}",
            self.port,
            self.id,
            self.secret,
            frames.len()
        );
        write_all(&stream, request.as_bytes()).await?;
        let mut buf = vec![0u8; 1024];
        let mut end = 0;
        let head_len = read_head(&stream, &mut buf, &mut end).await?;
        let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
        if head.split(' ').nth(1) != Some("204") {
            return Err(io::Error::other(format!("POST answered {}", head.trim())));
        }
        Ok(())
    }

    async fn fill_raw(&mut self) -> io::Result<usize> {
        if self.raw_end == self.raw.len() {
            self.raw.resize(self.raw.len() * 2, 0);
        }
        let n = read_some(&self.stream, &mut self.raw[self.raw_end..]).await?;
        self.raw_end += n;
        Ok(n)
    }

    /// Moves the chunks' data from `raw` to `buf` (compacting both as it goes).
    fn dechunk(&mut self) -> io::Result<()> {
        let mut at = 0;
        while at < self.raw_end {
            if self.chunk_left == 0 {
                let Some(eol) = find(&self.raw[at..self.raw_end], b"\r\n") else {
                    break;
                };
                let size = std::str::from_utf8(&self.raw[at..at + eol])
                    .ok()
                    .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                    .ok_or_else(|| io::Error::other("bad chunk size"))?;
                if size == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the stream ended",
                    ));
                }
                at += eol + 2;
                // The data, then its CRLF (not copied).
                self.chunk_left = size + 2;
            }
            let take = self.chunk_left.min(self.raw_end - at);
            let data = take.min(self.chunk_left.saturating_sub(2));
            if self.start > 0 && self.end + data > self.buf.len() {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end + data > self.buf.len() {
                self.buf
                    .resize((self.end + data).max(self.buf.len() * 2), 0);
            }
            self.buf[self.end..self.end + data].copy_from_slice(&self.raw[at..at + data]);
            self.end += data;
            self.chunk_left -= take;
            at += take;
        }
        self.raw.copy_within(at..self.raw_end, 0);
        self.raw_end -= at;
        Ok(())
    }

    /// The next complete event in `buf`: its type and where its (one) data line is.
    fn next_event(&mut self) -> Option<(String, Range<usize>)> {
        let avail = &self.buf[self.start..self.end];
        let len = find(avail, b"\n\n")?;
        let block = self.start..self.start + len;
        self.start += len + 2;
        let mut event = String::from("message");
        let mut data = block.end..block.end;
        let mut line_start = block.start;
        while line_start < block.end {
            let line_end =
                find(&self.buf[line_start..block.end], b"\n").map_or(block.end, |i| line_start + i);
            let line = &self.buf[line_start..line_end];
            if let Some(v) = line.strip_prefix(b"event: ") {
                event = String::from_utf8_lossy(v).into_owned();
            } else if line.starts_with(b"data: ") {
                data = line_start + 6..line_end;
            }
            line_start = line_end + 1;
        }
        Some((event, data))
    }

    /// The next complete event as a frame: messages as text, pings as pings; `close` and
    /// anything else as a close.
    pub fn next_frame(&mut self) -> io::Result<Option<Frame>> {
        self.dechunk()?;
        let Some((event, payload)) = self.next_event() else {
            return Ok(None);
        };
        let opcode = match event.as_str() {
            "message" => OP_TEXT,
            "ping" => OP_PING,
            _ => OP_CLOSE,
        };
        Ok(Some(Frame { opcode, payload }))
    }

    /// The bytes of a frame's payload (valid until the next [`fill`](Self::fill)).
    pub fn payload(&self, frame: &Frame) -> &[u8] {
        &self.buf[frame.payload.clone()]
    }

    /// Reads more bytes from the socket; `Ok(0)` when the server closed it.
    pub async fn fill(&mut self) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        self.fill_raw().await
    }

    /// A ping is answered by any `POST`; the bench's runs end long before the idle timeout,
    /// so it sends none.
    pub async fn pong(&mut self, _payload: &[u8]) -> io::Result<()> {
        Ok(())
    }
}

/// A subscriber's connection, over either transport.
pub enum SubConn {
    Ws(RawWs),
    Sse(RawSse),
}

impl SubConn {
    pub fn next_frame(&mut self) -> io::Result<Option<Frame>> {
        match self {
            SubConn::Ws(c) => c.next_frame(),
            SubConn::Sse(c) => c.next_frame(),
        }
    }

    pub fn payload(&self, frame: &Frame) -> &[u8] {
        match self {
            SubConn::Ws(c) => c.payload(frame),
            SubConn::Sse(c) => c.payload(frame),
        }
    }

    pub async fn pong(&mut self, payload: &[u8]) -> io::Result<()> {
        match self {
            SubConn::Ws(c) => c.pong(payload).await,
            SubConn::Sse(c) => c.pong(payload).await,
        }
    }

    pub async fn fill(&mut self) -> io::Result<usize> {
        match self {
            SubConn::Ws(c) => c.fill().await,
            SubConn::Sse(c) => c.fill().await,
        }
    }
}
