//! Test your channels against a real server with a real WebSocket client.
//!
//! [`TestServer`] runs your `App` on `127.0.0.1:0` in a thread of its own (its own actix
//! system), so tests can use any async runtime; [`TestClient`] speaks the channel protocol and
//! waits for replies, pushes and closes with a timeout, the way `Phoenix.ChannelTest` does for
//! Phoenix channels.
//!
//! ```
//! use actix_web::App;
//! use serde_json::json;
//! use switchboard::prelude::*;
//! use switchboard::testing::TestServer;
//!
//! #[switchboard::message("echo")]
//! async fn echo(data: serde_json::Value) -> Result<serde_json::Value, ChannelError> {
//!     Ok(data)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let server = TestServer::start(|| App::new().service(ChannelRoute::<()>::new("/ws").message(echo)));
//! let mut client = server.connect("/ws").await.unwrap();
//! let reply = client.request("echo", json!({"hello": "world"})).await.unwrap();
//! assert_eq!(reply, json!({"hello": "world"}));
//! # }
//! ```

pub mod conformance;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use actix_http::Request;
use actix_service::IntoServiceFactory;
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, Response, ServerHandle, ServiceFactory};
use actix_web::HttpServer;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// What went wrong in a test client call.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    /// The server refused the upgrade with this HTTP status.
    #[error("upgrade rejected with HTTP {status}: {body}")]
    Rejected {
        /// HTTP status code.
        status: u16,
        /// Response body, if any.
        body: String,
    },
    /// Nothing arrived within the timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The connection is closed.
    #[error("connection closed")]
    Closed,
    /// The server answered a request with an error frame.
    #[error("error reply {code}: {message}")]
    Reply {
        /// The error code.
        code: String,
        /// The error message.
        message: String,
        /// The whole frame.
        frame: Value,
    },
    /// A frame that is not what the call expected.
    #[error("unexpected frame: {0:?}")]
    Unexpected(Box<Frame>),
    /// A WebSocket or I/O error.
    #[error("websocket: {0}")]
    Ws(String),
}

/// A frame the client received.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A JSON text frame.
    Json(Value),
    /// A text frame that is not JSON.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
    /// A ping from the server (the client answers it by itself).
    Ping,
    /// The server's close frame: code and reason.
    Close(Option<(u16, String)>),
}

/// Builds a [`TestServer`] with non-default settings.
pub struct TestServerBuilder<F> {
    factory: F,
    workers: usize,
    shutdown_timeout: u64,
}

impl<F> TestServerBuilder<F> {
    /// Worker threads (default 1).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Seconds a graceful stop waits for open connections (default 1).
    pub fn shutdown_timeout(mut self, secs: u64) -> Self {
        self.shutdown_timeout = secs;
        self
    }

    /// Binds `127.0.0.1:0` and starts serving.
    ///
    /// # Panics
    /// If the server cannot bind or start: a test cannot go on without it.
    pub fn start<I, S, B>(self) -> TestServer
    where
        F: Fn() -> I + Send + Clone + 'static,
        I: IntoServiceFactory<S, Request>,
        S: ServiceFactory<Request, Config = AppConfig> + 'static,
        S::Error: Into<actix_web::Error> + 'static,
        S::InitError: std::fmt::Debug,
        S::Response: Into<Response<B>> + 'static,
        <S::Service as actix_web::dev::Service<Request>>::Future: 'static,
        S::Service: 'static,
        B: MessageBody + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        let tx_err = tx.clone();
        let TestServerBuilder {
            factory,
            workers,
            shutdown_timeout,
        } = self;
        let thread = std::thread::Builder::new()
            .name("switchboard-test-server".into())
            .spawn(move || {
                let sys = actix_rt::System::new();
                let res = sys.block_on(async move {
                    let server = HttpServer::new(factory)
                        .workers(workers)
                        .shutdown_timeout(shutdown_timeout)
                        .disable_signals()
                        .bind(("127.0.0.1", 0))?;
                    let addr = server.addrs()[0];
                    let server = server.run();
                    let _ = tx.send(Ok((addr, server.handle())));
                    server.await
                });
                if let Err(e) = res {
                    let _ = tx_err.send(Err(e));
                }
            })
            .expect("spawn the test server thread");
        let (addr, handle) = match rx.recv() {
            Ok(Ok(started)) => started,
            Ok(Err(e)) => panic!("test server failed to start: {e}"),
            Err(_) => panic!("test server thread died while starting"),
        };
        TestServer {
            addr,
            handle,
            thread: Some(thread),
        }
    }
}

/// A real HTTP server on a free loopback port, stopped when dropped.
pub struct TestServer {
    addr: SocketAddr,
    handle: ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// Starts `factory`'s `App` with one worker.
    pub fn start<F, I, S, B>(factory: F) -> TestServer
    where
        F: Fn() -> I + Send + Clone + 'static,
        I: IntoServiceFactory<S, Request>,
        S: ServiceFactory<Request, Config = AppConfig> + 'static,
        S::Error: Into<actix_web::Error> + 'static,
        S::InitError: std::fmt::Debug,
        S::Response: Into<Response<B>> + 'static,
        <S::Service as actix_web::dev::Service<Request>>::Future: 'static,
        S::Service: 'static,
        B: MessageBody + 'static,
    {
        Self::build(factory).start()
    }

    /// A builder, for more workers or another shutdown timeout.
    pub fn build<F>(factory: F) -> TestServerBuilder<F> {
        TestServerBuilder {
            factory,
            workers: 1,
            shutdown_timeout: 1,
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `ws://127.0.0.1:PORT{path}`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// The server's handle, to stop it some other way (a drain: `Drain::stop(&handle)`).
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Opens a WebSocket to `path`.
    pub async fn connect(&self, path: &str) -> Result<TestClient, TestError> {
        self.connect_with(path, &[]).await
    }

    /// Opens a WebSocket to `path` with extra request headers (`Origin`, `Authorization`,
    /// `Cookie`, ...).
    pub async fn connect_with(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<TestClient, TestError> {
        TestClient::connect_with(&self.ws_url(path), headers).await
    }

    /// Stops the server: gracefully waits up to the shutdown timeout for open connections.
    pub async fn stop(mut self, graceful: bool) {
        self.handle.stop(graceful).await;
        if let Some(t) = self.thread.take() {
            // The server thread ends right after its system does.
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // The command is sent eagerly; the future only waits for completion.
        drop(self.handle.stop(false));
    }
}

impl std::fmt::Debug for TestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestClient")
            .field("buffered", &self.buffered.len())
            .field("closed", &self.closed)
            .finish()
    }
}

/// A WebSocket client that speaks the channel protocol.
pub struct TestClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_ref: u64,
    buffered: VecDeque<Frame>,
    timeout: Duration,
    closed: bool,
}

impl TestClient {
    /// Connects to a `ws://` URL.
    pub async fn connect(url: &str) -> Result<TestClient, TestError> {
        Self::connect_with(url, &[]).await
    }

    /// Connects to a `ws://` URL with extra request headers.
    pub async fn connect_with(
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<TestClient, TestError> {
        let mut req = url
            .into_client_request()
            .map_err(|e| TestError::Ws(e.to_string()))?;
        for (k, v) in headers {
            let name = http::HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| TestError::Ws(e.to_string()))?;
            let value = http::HeaderValue::from_str(v).map_err(|e| TestError::Ws(e.to_string()))?;
            req.headers_mut().append(name, value);
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => Ok(TestClient {
                ws,
                next_ref: 1,
                buffered: VecDeque::new(),
                timeout: Duration::from_secs(5),
                closed: false,
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(TestError::Rejected {
                status: resp.status().as_u16(),
                body: resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            }),
            Err(e) => Err(TestError::Ws(e.to_string())),
        }
    }

    /// How long receiving calls wait (default 5 s).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends a JSON value as a text frame.
    pub async fn send_json(&mut self, value: &Value) -> Result<(), TestError> {
        self.send_text(&value.to_string()).await
    }

    /// Sends a text frame as is.
    pub async fn send_text(&mut self, text: &str) -> Result<(), TestError> {
        self.ws
            .send(Message::text(text))
            .await
            .map_err(|e| TestError::Ws(e.to_string()))
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, data: &[u8]) -> Result<(), TestError> {
        self.ws
            .send(Message::binary(data.to_vec()))
            .await
            .map_err(|e| TestError::Ws(e.to_string()))
    }

    /// Sends `{"type": route, "data": data}` without a `ref`.
    pub async fn push(&mut self, route: &str, data: Value) -> Result<(), TestError> {
        self.send_json(&serde_json::json!({ "type": route, "data": data }))
            .await
    }

    /// Sends `{"type": route, "ref": n, "data": data}` and waits for the reply with that
    /// `ref`: `Ok(data)`, or [`TestError::Reply`] for an error reply. Other frames that arrive
    /// meanwhile stay queued for [`recv`](Self::recv).
    pub async fn request(&mut self, route: &str, data: Value) -> Result<Value, TestError> {
        let reference = self.next_ref;
        self.next_ref += 1;
        self.send_json(&serde_json::json!({ "type": route, "ref": reference, "data": data }))
            .await?;
        let frame = self.reply_to(&Value::from(reference)).await?;
        reply_result(frame)
    }

    /// Waits for the reply whose `ref` equals `reference`, keeping other frames queued.
    pub async fn reply_to(&mut self, reference: &Value) -> Result<Value, TestError> {
        let pos = self
            .buffered
            .iter()
            .position(|f| matches!(f, Frame::Json(v) if v.get("ref") == Some(reference)));
        if let Some(pos) = pos {
            if let Some(Frame::Json(v)) = self.buffered.remove(pos) {
                return Ok(v);
            }
        }
        loop {
            let frame = self.read().await?;
            match frame {
                Frame::Json(v) if v.get("ref") == Some(reference) => return Ok(v),
                Frame::Close(_) => {
                    self.buffered.push_back(frame);
                    return Err(TestError::Closed);
                }
                other => self.buffered.push_back(other),
            }
        }
    }

    /// The next frame (pings included), within the timeout.
    pub async fn recv(&mut self) -> Result<Frame, TestError> {
        match self.buffered.pop_front() {
            Some(f) => Ok(f),
            None => self.read().await,
        }
    }

    /// The next JSON frame, skipping pings.
    pub async fn recv_json(&mut self) -> Result<Value, TestError> {
        loop {
            match self.recv().await? {
                Frame::Json(v) => return Ok(v),
                Frame::Ping => continue,
                other => return Err(TestError::Unexpected(Box::new(other))),
            }
        }
    }

    /// Waits for a push `{"event": event, ...}` and returns its `data`, keeping other frames
    /// queued.
    pub async fn recv_event(&mut self, event: &str) -> Result<Value, TestError> {
        let is_it = |f: &Frame| matches!(f, Frame::Json(v) if v.get("event").and_then(Value::as_str) == Some(event));
        if let Some(pos) = self.buffered.iter().position(is_it) {
            if let Some(Frame::Json(mut v)) = self.buffered.remove(pos) {
                return Ok(v["data"].take());
            }
        }
        loop {
            let frame = self.read().await?;
            if is_it(&frame) {
                if let Frame::Json(mut v) = frame {
                    return Ok(v["data"].take());
                }
            }
            if matches!(frame, Frame::Close(_)) {
                self.buffered.push_back(frame);
                return Err(TestError::Closed);
            }
            self.buffered.push_back(frame);
        }
    }

    /// Waits for a JSON frame for which `matches` is true and returns it, keeping other
    /// frames queued (a `refresh` request, an `unsubscribed` notice, ...).
    ///
    /// ```
    /// use actix_web::App;
    /// use serde_json::json;
    /// use switchboard::prelude::*;
    /// use switchboard::testing::TestServer;
    ///
    /// #[switchboard::message("hello")]
    /// async fn hello(ch: Channel) -> Result<(), ChannelError> {
    ///     ch.send("first", &1)?;
    ///     ch.send("second", &2)
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let server = TestServer::start(|| App::new().service(ChannelRoute::<()>::new("/ws").message(hello)));
    /// let mut client = server.connect("/ws").await.unwrap();
    /// client.push("hello", json!(null)).await.unwrap();
    /// let second = client.recv_matching(|f| f["event"] == "second").await.unwrap();
    /// assert_eq!(second["data"], 2);
    /// assert_eq!(client.recv_event("first").await.unwrap(), 1, "kept queued");
    /// # }
    /// ```
    pub async fn recv_matching(
        &mut self,
        mut matches: impl FnMut(&Value) -> bool,
    ) -> Result<Value, TestError> {
        let mut is_it = |f: &Frame| matches!(f, Frame::Json(v) if matches(v));
        if let Some(pos) = self.buffered.iter().position(&mut is_it) {
            if let Some(Frame::Json(v)) = self.buffered.remove(pos) {
                return Ok(v);
            }
        }
        loop {
            let frame = self.read().await?;
            if is_it(&frame) {
                if let Frame::Json(v) = frame {
                    return Ok(v);
                }
            }
            let closed = matches!(frame, Frame::Close(_));
            self.buffered.push_back(frame);
            if closed {
                return Err(TestError::Closed);
            }
        }
    }

    /// Waits for the server's close frame (skipping anything before it) and returns its code
    /// and reason.
    pub async fn recv_close(&mut self) -> Result<(u16, String), TestError> {
        loop {
            match self.recv().await {
                Ok(Frame::Close(Some(c))) => return Ok(c),
                Ok(Frame::Close(None)) => return Ok((1005, String::new())),
                Ok(_) => continue,
                Err(TestError::Closed) => return Err(TestError::Closed),
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether the server ended the connection (close frame or TCP close) within the timeout.
    pub async fn wait_closed(&mut self) -> Result<(), TestError> {
        loop {
            match self.recv().await {
                Ok(Frame::Close(_)) | Err(TestError::Closed) => return Ok(()),
                Ok(_) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Closes cleanly: sends a close frame and waits for the server's.
    pub async fn close(mut self) -> Result<(), TestError> {
        self.ws
            .close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await
            .map_err(|e| TestError::Ws(e.to_string()))?;
        self.wait_closed().await
    }

    /// Drops the TCP connection without a close frame, as a crashed client or a lost network
    /// would.
    pub fn drop_abruptly(self) {
        drop(self);
    }

    async fn read(&mut self) -> Result<Frame, TestError> {
        if self.closed {
            return Err(TestError::Closed);
        }
        let next = match tokio::time::timeout(self.timeout, self.ws.next()).await {
            Err(_) => return Err(TestError::Timeout(self.timeout)),
            Ok(next) => next,
        };
        let frame = match next {
            None => {
                self.closed = true;
                return Err(TestError::Closed);
            }
            Some(Err(e)) => {
                self.closed = true;
                return match e {
                    tokio_tungstenite::tungstenite::Error::ConnectionClosed
                    | tokio_tungstenite::tungstenite::Error::AlreadyClosed => {
                        Err(TestError::Closed)
                    }
                    tokio_tungstenite::tungstenite::Error::Io(_)
                    | tokio_tungstenite::tungstenite::Error::Protocol(_) => Err(TestError::Closed),
                    e => Err(TestError::Ws(e.to_string())),
                };
            }
            Some(Ok(msg)) => msg,
        };
        Ok(match frame {
            Message::Text(t) => match serde_json::from_str(t.as_str()) {
                Ok(v) => Frame::Json(v),
                Err(_) => Frame::Text(t.as_str().to_owned()),
            },
            Message::Binary(b) => Frame::Binary(b.to_vec()),
            Message::Ping(_) => Frame::Ping,
            Message::Pong(_) => return Box::pin(self.read()).await,
            Message::Close(c) => {
                Frame::Close(c.map(|c| (u16::from(c.code), c.reason.as_str().to_owned())))
            }
            Message::Frame(_) => return Box::pin(self.read()).await,
        })
    }
}

/// Splits a reply frame into its `data` or its error.
pub fn reply_result(frame: Value) -> Result<Value, TestError> {
    if frame.get("ok") == Some(&Value::Bool(false)) {
        let code = frame["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let message = frame["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        return Err(TestError::Reply {
            code,
            message,
            frame,
        });
    }
    let mut frame = frame;
    Ok(frame["data"].take())
}
