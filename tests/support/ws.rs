//! Clients for the tests: what a request's failure says, a named client of the function
//! example, a topic's next delivery, and a raw WebSocket peer for what a client library would
//! hide (a peer that never answers pings, reserved opcodes). The client itself is the public
//! `switchboard::testing::TestClient`.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use switchboard::testing::{Frame, TestClient, TestError, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The error reply of a request: `(code, message, whole frame)`; panics on anything else.
pub fn error_reply(result: Result<Value, TestError>) -> (String, String, Value) {
    match result {
        Err(TestError::Reply {
            code,
            message,
            frame,
        }) => (code, message, frame),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

/// The HTTP status of a refused upgrade; panics on anything else.
/// (`TestClient` is not `Debug`, so `unwrap_err` cannot be used on a connect result.)
pub fn rejected_status(result: Result<TestClient, TestError>) -> u16 {
    match result {
        Err(TestError::Rejected { status, .. }) => status,
        Err(other) => panic!("expected the upgrade to be rejected, got {other:?}"),
        Ok(_) => panic!("expected the upgrade to be rejected, but it connected"),
    }
}

/// The next topic delivery of `event` (a frame with a `topic`), skipping presence traffic and
/// pings.
pub async fn delivery(c: &mut TestClient, event: &str) -> Value {
    loop {
        match c.recv().await {
            Ok(Frame::Json(v)) if v["event"] == event && v.get("topic").is_some() => return v,
            Ok(Frame::Json(v))
                if v["event"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("presence")) => {}
            Ok(Frame::Ping) => {}
            other => panic!("expected a `{event}` delivery, got {other:?}"),
        }
    }
}

/// A WebSocket peer on a bare TCP stream: it reads frames but never answers anything (no
/// pongs, no close reply), like a client whose process is stuck.
pub struct RawWs {
    stream: TcpStream,
}

impl RawWs {
    /// Performs the opening handshake; panics unless the server answers 101.
    pub async fn connect(addr: SocketAddr, path: &str) -> RawWs {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        // Byte by byte, so that nothing after the head is consumed.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let b = tokio::time::timeout(Duration::from_secs(5), stream.read_u8())
                .await
                .expect("handshake response within 5 s")
                .expect("read");
            head.push(b);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "handshake failed: {head}");
        RawWs { stream }
    }

    /// Sends one frame (masked, as a client must) with the FIN bit as given.
    pub async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= usize::from(u16::MAX) => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let key = [0x12, 0x34, 0x56, 0x78];
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        self.stream.write_all(&frame).await.expect("write a frame");
    }

    /// Sends bytes as they are (a frame's header alone, say).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write bytes");
    }

    /// The next frame's opcode and payload (server frames are unmasked), within `timeout`.
    /// `None` when the server closed the TCP connection.
    pub async fn read_frame(&mut self, timeout: Duration) -> Option<(u8, Vec<u8>)> {
        tokio::time::timeout(timeout, self.read_frame_inner())
            .await
            .expect("a frame within the timeout")
    }

    /// The code of the next close frame (pings skipped); panics on anything else.
    pub async fn close_code(&mut self) -> u16 {
        loop {
            match self.read_frame(Duration::from_secs(3)).await {
                Some((opcode::PING, _)) => continue,
                Some((opcode::CLOSE, close)) if close.len() >= 2 => {
                    return u16::from_be_bytes([close[0], close[1]]);
                }
                other => panic!("expected a close frame with a code, got {other:?}"),
            }
        }
    }

    async fn read_frame_inner(&mut self) -> Option<(u8, Vec<u8>)> {
        let b0 = self.stream.read_u8().await.ok()?;
        let b1 = self.stream.read_u8().await.ok()?;
        let len = match b1 & 0x7f {
            126 => u64::from(self.stream.read_u16().await.ok()?),
            127 => self.stream.read_u64().await.ok()?,
            n => u64::from(n),
        };
        let mut payload = vec![0; usize::try_from(len).ok()?];
        self.stream.read_exact(&mut payload).await.ok()?;
        Some((b0 & 0x0f, payload))
    }
}

/// Opcodes of the frames a [`RawWs`] reads.
pub mod opcode {
    /// A continuation frame.
    pub const CONTINUATION: u8 = 0x0;
    /// A text frame.
    pub const TEXT: u8 = 0x1;
    /// A close frame.
    pub const CLOSE: u8 = 0x8;
    /// A ping.
    pub const PING: u8 = 0x9;
}

/// The function example's `ping_me`: asks for `n` pushes and checks they arrive, in order,
/// before the reply (a function's pushes go through the connections API, its reply does not).
pub async fn pushes_before_reply(c: &mut TestClient, n: u32) {
    c.send_json(&serde_json::json!({"type": "ping_me", "ref": "p", "data": n}))
        .await
        .unwrap();
    for i in 0..n {
        assert_eq!(
            c.recv_json().await.unwrap(),
            serde_json::json!({"event": "pinged", "data": i})
        );
    }
    assert_eq!(
        c.recv_json().await.unwrap(),
        serde_json::json!({"ref": "p", "ok": true, "data": "done"})
    );
}

/// A client of `/ws?name=NAME` on `server` (the function example's `$connect` wants a name).
pub async fn connect_named(server: &TestServer, name: &str) -> TestClient {
    server
        .connect(&format!("/ws?name={name}"))
        .await
        .unwrap_or_else(|e| panic!("{name} could not connect: {e}"))
}
