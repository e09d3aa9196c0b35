//! Gateway mode: a channel whose messages are handled by a function over HTTP instead of
//! in-process handlers, the way AWS API Gateway's WebSocket APIs hand them to Lambda.
//!
//! For every client event the gateway POSTs an API Gateway WebSocket proxy event
//! ([`Event`]) to the function's URL:
//!
//! | client | event | function's answer |
//! |---|---|---|
//! | opens the socket | `CONNECT`, route `$connect`, with the upgrade request's headers and query | 2xx accepts (the body may carry `{"authorizer": {...}}`, sent with every later event); any other status rejects the upgrade with that status |
//! | sends a message | `MESSAGE`, route: the message's route when listed in [`routes`](Gateway::routes), else `$default`; `body`: the frame's text | the reply (below) |
//! | sends text that is not a message (not JSON, no route key, a bad `ref`) | `MESSAGE`, route `$default`, `body`: the text, as API Gateway does | the reply |
//! | sends a binary frame | `MESSAGE`, route `$default`, `body` in base64, `isBase64Encoded: true` | the reply |
//! | leaves | `DISCONNECT`, route `$disconnect`, with `disconnectStatusCode` / `disconnectReason` (1006 when the socket went away without a close frame) | ignored |
//!
//! **The reply.** A 2xx answer with the header `x-switchboard-reply: frame` (what a
//! [`FunctionService`](crate::serverless::function::FunctionService) sends) is relayed to the client as is.
//! Other 2xx answers are relayed as API Gateway does (the body, verbatim) when the message had
//! no `ref`; when it had one, the body becomes the reply's `data`
//! (`{"ref":R,"ok":true,"data":<the body as JSON, or as a string>}`), so the client's request is
//! always answered. An empty body sends nothing (or `data: null` for a `ref`). With
//! [`lambda_proxy_responses`](Gateway::lambda_proxy_responses), a 2xx answer shaped like a
//! Lambda proxy response (`{"statusCode": 401, "body": "..."}`) stands for the status and body
//! it holds.
//!
//! **Failures never hang a client.** They become error frames answering the message:
//! `function_timeout` (no answer within the [`timeout`](Gateway::timeout)),
//! `function_unavailable` (connection refused, DNS), `function_error` (a non-2xx answer, or an
//! answer over the size limit). On `$connect` they reject the upgrade with 504 / 502.
//!
//! The function pushes to clients, disconnects them and subscribes them to topics through the
//! [connections API](crate::serverless::connections_api), mounted on the same app.
//!
//! The same handler, in-process and behind a gateway:
//!
//! ```
//! use actix_web::App;
//! use serde_json::json;
//! use switchboard::serverless::function::FunctionService;
//! use switchboard::serverless::gateway::Gateway;
//! use switchboard::prelude::*;
//! use switchboard::testing::TestServer;
//!
//! #[switchboard::message("greet")]
//! async fn greet(name: String) -> Result<String, ChannelError> {
//!     Ok(format!("hello, {name}"))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let in_process =
//!     TestServer::start(|| App::new().service(ChannelRoute::<()>::new("/ws").message(greet)));
//!
//! let function =
//!     TestServer::start(|| App::new().service(FunctionService::<()>::new("/fn").message(greet)));
//! let url = function.url("/fn");
//! let gateway = TestServer::start(move || App::new().service(Gateway::new(url.clone()).channel("/ws")));
//!
//! for server in [&in_process, &gateway] {
//!     let mut client = server.connect("/ws").await.unwrap();
//!     assert_eq!(client.request("greet", json!("ada")).await.unwrap(), "hello, ada");
//! }
//! # }
//! ```
//!
//! A deployment: the function behind a token, the connections API for its pushes.
//!
//! ```
//! use std::time::Duration;
//! use actix_web::App;
//! use switchboard::serverless::connections_api::ConnectionsApi;
//! use switchboard::serverless::gateway::Gateway;
//! use switchboard::Hub;
//!
//! let hub = Hub::new();
//! let chat = Gateway::new("http://127.0.0.1:9000/fn")
//!     .function_token("gateway-to-function-secret")
//!     .timeout(Duration::from_secs(5))
//!     .routes(["join", "say"])
//!     .channel("/ws/chat")
//!     // Topics are joined through the function (ch.subscribe) or, in-process, like this:
//!     .allow_join("room:*");
//! let app = App::new()
//!     .app_data(hub.clone())
//!     .service(chat)
//!     .service(ConnectionsApi::new().bearer_token("api-token"));
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpMessage, HttpRequest};
use base64::Engine as _;
use bytes::Bytes;
use bytestring::ByteString;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::channel::outbound::Frame;
use crate::channel::{Channel, ChannelRoute};
use crate::error::ChannelError;
use crate::handler::{
    Body, BoxFuture, ConnectHandler, DisconnectHandler, MessageHandler, MessageRequest, Reply,
    DEFAULT_ROUTE,
};
use crate::id::ConnectionId;
use crate::protocol;
use crate::serverless::event::{
    self, is_binary_content, is_frame_reply, ConnectAnswer, ErrorAnswer, Event, EventType,
    Identity, Payload, RequestContext, CONNECT_ROUTE, DISCONNECT_ROUTE, REPLY_HEADER,
};
use crate::serverless::http::{self, Failure, Pool};
use crate::serverless::{auth, time};

/// The close code RFC 6455 reserves for reporting a connection that ended without a close
/// frame.
const ABNORMAL_CLOSURE: u16 = 1006;

/// A gateway channel's session: what the function's `$connect` answer established (its
/// `authorizer` object), sent back to the function with every event of the connection.
#[derive(Clone, Debug, Default)]
pub struct GatewaySession {
    authorizer: Option<Arc<serde_json::Value>>,
    /// When the `$connect` event was sent: the `connectedAt` of every event of the
    /// connection, so that they all agree with the `$connect` one.
    connected_at: Option<SystemTime>,
}

impl GatewaySession {
    /// The authorizer context the function's `$connect` answered with.
    pub fn authorizer(&self) -> Option<&serde_json::Value> {
        self.authorizer.as_deref()
    }

    /// The session a Switchboard function's `on_connect` returned
    /// (`authorizer.session`), deserialized.
    pub fn session<T: DeserializeOwned>(&self) -> Option<T> {
        let v = event::session_in(self.authorizer.as_deref()?)?;
        T::deserialize(v).ok()
    }
}

/// Builds gateway channels: channels that forward their clients' events to a function URL.
/// See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Gateway {
    cfg: GatewayConfig,
}

#[derive(Clone, Debug)]
struct GatewayConfig {
    url: String,
    timeout: Duration,
    routes: HashSet<String>,
    token: Option<String>,
    api_id: String,
    stage: String,
    max_response: usize,
    connect: bool,
    disconnect: bool,
    lambda_proxy: bool,
}

impl Gateway {
    /// Forwards to the function at `function_url` (`http://host:port/path`). Defaults: a 10 s
    /// timeout, every message routed as `$default`, answers up to 128 KiB, `$connect` and
    /// `$disconnect` forwarded.
    ///
    /// `https://` needs the cargo feature `tls` (roots: webpki's, plus `SSL_CERT_FILE`);
    /// without it, plain HTTP only.
    pub fn new(function_url: impl Into<String>) -> Self {
        Gateway {
            cfg: GatewayConfig {
                url: function_url.into(),
                timeout: Duration::from_secs(10),
                routes: HashSet::new(),
                token: None,
                api_id: "switchboard".into(),
                stage: "$default".into(),
                max_response: 128 * 1024,
                connect: true,
                disconnect: true,
                lambda_proxy: false,
            },
        }
    }

    /// How long the function may take to answer one event; then the client gets a
    /// `function_timeout` error frame (or a 504 on connect).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.cfg.timeout = timeout;
        self
    }

    /// Route keys the function has routes for: their messages go with `routeKey` set to the
    /// route; all others as `$default`.
    pub fn routes<I, R>(mut self, routes: I) -> Self
    where
        I: IntoIterator<Item = R>,
        R: Into<String>,
    {
        self.cfg.routes.extend(routes.into_iter().map(Into::into));
        self
    }

    /// Sends `Authorization: Bearer <token>` with every event (the function's
    /// [`token`](crate::serverless::function::FunctionService::token)).
    pub fn function_token(mut self, token: impl Into<String>) -> Self {
        self.cfg.token = Some(token.into());
        self
    }

    /// The `requestContext.apiId` of events (default `switchboard`).
    pub fn api_id(mut self, id: impl Into<String>) -> Self {
        self.cfg.api_id = id.into();
        self
    }

    /// The `requestContext.stage` of events (default `$default`).
    pub fn stage(mut self, stage: impl Into<String>) -> Self {
        self.cfg.stage = stage.into();
        self
    }

    /// Largest function answer relayed, in bytes (default 128 KiB); larger ones are a
    /// `function_error`.
    pub fn max_response_size(mut self, bytes: usize) -> Self {
        self.cfg.max_response = bytes;
        self
    }

    /// Whether `CONNECT` events are sent (default true). Without them every connection is
    /// accepted (with no authorizer context).
    pub fn connect_events(mut self, on: bool) -> Self {
        self.cfg.connect = on;
        self
    }

    /// Whether `DISCONNECT` events are sent (default true).
    pub fn disconnect_events(mut self, on: bool) -> Self {
        self.cfg.disconnect = on;
        self
    }

    /// Reads 2xx answers shaped like a Lambda proxy integration's response —
    /// `{"statusCode": 401, "body": "...", "isBase64Encoded": false, "headers": {...}}` with an
    /// integer `statusCode` — as the answer they describe: that status, that body (base64
    /// decoded when `isBase64Encoded`, and then a binary frame), and its `headers`'
    /// `x-switchboard-reply` and `content-type`. For a function written for API Gateway's Lambda
    /// integration (behind an HTTP adapter that answers 200 with the handler's return value).
    /// Other answers are taken as they are. Off by default: a function that replies with such
    /// an object as data would see it taken apart.
    pub fn lambda_proxy_responses(mut self) -> Self {
        self.cfg.lambda_proxy = true;
        self
    }

    /// A channel at `path` whose events go to the function. Add in-process handlers to it as
    /// to any channel: routes they answer stay in-process, the rest go to the function.
    pub fn channel(&self, path: impl Into<String>) -> ChannelRoute<GatewaySession> {
        self.install(ChannelRoute::new(path))
    }

    /// Makes an existing channel forward to the function: sets its `on_connect`,
    /// `on_disconnect`, fallback and binary handlers.
    pub fn install(&self, route: ChannelRoute<GatewaySession>) -> ChannelRoute<GatewaySession> {
        let cfg = Arc::new(self.cfg.clone());
        let mut route = route
            .raw_fallback(Forward {
                cfg: cfg.clone(),
                raw_text: true,
            })
            .on_binary(Forward {
                cfg: cfg.clone(),
                raw_text: false,
            });
        if cfg.connect {
            route = route.on_connect(ConnectForward(cfg.clone()));
        }
        if cfg.disconnect {
            route = route.on_disconnect(DisconnectForward(cfg));
        }
        route
    }
}

/// What an event says about the client.
struct Client<'a> {
    host: Option<&'a str>,
    user_agent: Option<&'a str>,
    peer: Option<SocketAddr>,
}

/// A function's answer.
struct Answer {
    status: StatusCode,
    frame: bool,
    binary: bool,
    body: Bytes,
}

fn timed_out(t: Duration) -> ChannelError {
    ChannelError::new(
        "function_timeout",
        format!("the function did not answer within {t:?}"),
    )
    .with_status(StatusCode::GATEWAY_TIMEOUT)
}

fn unavailable(detail: impl std::fmt::Display) -> ChannelError {
    tracing::warn!("gateway: function unreachable: {detail}");
    ChannelError::new("function_unavailable", "the function could not be reached")
        .with_status(StatusCode::BAD_GATEWAY)
}

fn failed(message: String) -> ChannelError {
    ChannelError::new("function_error", message).with_status(StatusCode::BAD_GATEWAY)
}

impl GatewayConfig {
    /// Calls the function, counting the call by outcome.
    async fn post(&self, event: &Event) -> Result<Answer, ChannelError> {
        let started = crate::meter::start();
        let answer = self.call_function(event).await;
        let outcome = match &answer {
            Ok(a) if a.status.is_success() => "ok",
            Ok(_) => "error_status",
            Err(e) => match e.code() {
                "function_timeout" => "timeout",
                "function_unavailable" => "unreachable",
                _ => "failed",
            },
        };
        crate::meter::gateway_call(outcome, started);
        answer
    }

    async fn call_function(&self, event: &Event) -> Result<Answer, ChannelError> {
        let mut headers = vec![("content-type", "application/json".to_owned())];
        if let Some(t) = &self.token {
            headers.push(("authorization", auth::bearer_header(t)));
        }
        let request = http::Request {
            method: Method::POST,
            url: self.url.clone(),
            headers,
            body: serde_json::to_vec(event)?.into(),
            timeout: self.timeout,
            limit: self.max_response,
        };
        // Handlers run on the connection's thread: its client (and connection pool).
        let resp = http::send(Pool::Functions, request)
            .await
            .map_err(|e| match e {
                Failure::TimedOut => timed_out(self.timeout),
                Failure::Unreachable(e) => unavailable(e),
                Failure::TooLarge => failed(format!(
                    "the function's answer is over {} bytes",
                    self.max_response
                )),
                Failure::Broken(e) => failed(format!("the function's answer broke off: {e}")),
            })?;
        let answer = Answer {
            status: resp.status,
            frame: is_frame_reply(resp.header(REPLY_HEADER)),
            binary: is_binary_content(resp.header("content-type")),
            body: resp.body,
        };
        if self.lambda_proxy && answer.status.is_success() {
            return lambda_proxy(answer);
        }
        Ok(answer)
    }

    fn context(
        &self,
        route_key: &str,
        event_type: EventType,
        id: ConnectionId,
        connected_at: SystemTime,
        client: Client<'_>,
    ) -> RequestContext {
        let request_id = time::event_id();
        RequestContext {
            message_id: (event_type == EventType::Message).then(time::event_id),
            extended_request_id: request_id.clone(),
            request_id,
            domain_name: client.host.unwrap_or_default().to_owned(),
            stage: self.stage.clone(),
            api_id: self.api_id.clone(),
            identity: Identity {
                source_ip: client.peer.map(|a| a.ip().to_string()).unwrap_or_default(),
                user_agent: client.user_agent.map(str::to_owned),
            },
            ..RequestContext::new(
                route_key,
                event_type,
                id.to_string(),
                connected_at,
                SystemTime::now(),
            )
        }
    }

    fn channel_context(
        &self,
        route_key: &str,
        event_type: EventType,
        ch: &Channel<GatewaySession>,
    ) -> RequestContext {
        // The `$connect` event's time when there was one (the channel's own is taken once the
        // function accepted), so that every event of the connection has the same.
        let connected_at = ch
            .with_session(|s| s.and_then(|s| s.connected_at))
            .unwrap_or_else(|| ch.connected_at());
        let mut ctx = self.context(
            route_key,
            event_type,
            ch.id(),
            connected_at,
            Client {
                host: ch.header("host"),
                user_agent: ch.header("user-agent"),
                peer: ch.peer_addr(),
            },
        );
        ctx.authorizer = ch.with_session(|s| s.and_then(|s| s.authorizer.as_deref().cloned()));
        ctx
    }

    async fn connect(&self, req: HttpRequest) -> Result<Option<GatewaySession>, ChannelError> {
        let connected_at = SystemTime::now();
        let id = req
            .extensions()
            .get::<ConnectionId>()
            .copied()
            .ok_or_else(|| ChannelError::internal("no connection id on the upgrade request"))?;
        let query = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
            .map(web::Query::into_inner)
            .unwrap_or_default();
        let event = Event::connect(
            self.context(
                CONNECT_ROUTE,
                EventType::Connect,
                id,
                connected_at,
                Client {
                    host: http::header(req.headers(), "host"),
                    user_agent: http::header(req.headers(), "user-agent"),
                    peer: req.peer_addr(),
                },
            ),
            req.headers()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))),
            query.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let answer = self.post(&event).await?;
        if !answer.status.is_success() {
            return Err(rejection(&answer));
        }
        let authorizer = serde_json::from_slice::<ConnectAnswer>(&answer.body)
            .ok()
            .and_then(|a| a.authorizer)
            .filter(|a| !a.is_null());
        Ok(Some(GatewaySession {
            authorizer: authorizer.map(Arc::new),
            connected_at: Some(connected_at),
        }))
    }

    async fn message(
        &self,
        req: MessageRequest<GatewaySession>,
        raw_text: bool,
    ) -> Result<Reply, ChannelError> {
        let (route_key, payload) = match &req.body {
            Body::Text(env) => {
                let route = env.route();
                let key = if self.routes.contains(route) {
                    route
                } else {
                    DEFAULT_ROUTE
                };
                (key, Payload::Text(env.text().to_owned()))
            }
            // A text frame that is not a message, from the connection's raw fallback hook: API
            // Gateway sends it to `$default` as it is.
            Body::Binary(b) if raw_text => match std::str::from_utf8(b) {
                Ok(text) => (DEFAULT_ROUTE, Payload::Text(text.to_owned())),
                Err(_) => (DEFAULT_ROUTE, Payload::Binary(b.clone())),
            },
            Body::Binary(b) => (DEFAULT_ROUTE, Payload::Binary(b.clone())),
            Body::None => return Ok(Reply::none()),
        };
        let event = Event::message(
            self.channel_context(route_key, EventType::Message, req.channel()),
            payload,
        );
        let answer = self.post(&event).await?;
        if !answer.status.is_success() {
            return Err(failed(format!(
                "the function answered HTTP {}",
                answer.status.as_u16()
            )));
        }
        if answer.frame {
            return Ok(verbatim(answer));
        }
        let Some(reference) = req.reference() else {
            return Ok(verbatim(answer));
        };
        // Answer the client's `ref` with the body as the reply's data.
        let data = if answer.body.is_empty() {
            None
        } else if serde_json::from_slice::<&RawValue>(&answer.body).is_ok() {
            std::str::from_utf8(&answer.body)
                .ok()
                .and_then(|s| RawValue::from_string(s.to_owned()).ok())
        } else {
            let text = String::from_utf8_lossy(&answer.body);
            serde_json::value::to_raw_value(&text).ok()
        };
        let frame = protocol::encode_ok(
            Some(reference),
            req.channel().route_field(),
            req.route(),
            &data,
        )?;
        Ok(Reply(Some(Frame::Text(frame))))
    }

    async fn disconnect(&self, event: Event, id: ConnectionId) {
        match self.post(&event).await {
            Ok(a) if a.status.is_success() => {}
            Ok(a) => tracing::warn!(
                "gateway: $disconnect of {id}: the function answered HTTP {}",
                a.status.as_u16()
            ),
            Err(e) => tracing::warn!("gateway: $disconnect of {id}: {}", e.message()),
        }
    }
}

/// The function's body as one frame: text when UTF-8 (and not declared binary), else binary.
fn verbatim(answer: Answer) -> Reply {
    if answer.body.is_empty() {
        return Reply::none();
    }
    if answer.binary {
        return Reply(Some(Frame::Binary(answer.body)));
    }
    match ByteString::try_from(answer.body.clone()) {
        Ok(text) => Reply(Some(Frame::Text(text))),
        Err(_) => Reply(Some(Frame::Binary(answer.body))),
    }
}

/// A Lambda proxy integration's response, as [`Gateway::lambda_proxy_responses`] reads it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProxyResponse {
    /// Required, and an integer: what tells such a response from any other JSON answer.
    status_code: u64,
    #[serde(default)]
    body: Option<Box<RawValue>>,
    #[serde(default)]
    is_base64_encoded: bool,
    #[serde(default)]
    headers: std::collections::HashMap<String, serde_json::Value>,
}

/// The answer a Lambda proxy response describes; the answer as it is when it is not one.
fn lambda_proxy(answer: Answer) -> Result<Answer, ChannelError> {
    if answer.frame || answer.body.trim_ascii_start().first() != Some(&b'{') {
        return Ok(answer);
    }
    let Ok(proxy) = serde_json::from_slice::<ProxyResponse>(&answer.body) else {
        return Ok(answer);
    };
    let status = u16::try_from(proxy.status_code)
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| {
            failed(format!(
                "the function's proxy response has statusCode {}",
                proxy.status_code
            ))
        })?;
    let header = |name: &str| {
        proxy
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let frame = is_frame_reply(header(REPLY_HEADER));
    let content_binary = is_binary_content(header("content-type"));
    // `body` is a string; anything else JSON is taken as its text.
    let text: Option<String> = match proxy.body.as_deref() {
        None => None,
        Some(raw) if raw.get() == "null" => None,
        Some(raw) => {
            Some(serde_json::from_str::<String>(raw.get()).unwrap_or_else(|_| raw.get().to_owned()))
        }
    };
    let body = match text {
        None => Bytes::new(),
        Some(t) if proxy.is_base64_encoded => base64::engine::general_purpose::STANDARD
            .decode(t.as_bytes())
            .map(Bytes::from)
            .map_err(|_| failed("the function's proxy response body is not base64".into()))?,
        Some(t) => Bytes::from(t),
    };
    Ok(Answer {
        status,
        frame,
        binary: proxy.is_base64_encoded || content_binary,
        body,
    })
}

/// A `$connect` refusal: the function's status, and its `{"error": {"code", "message"}}` when
/// it sent one.
fn rejection(answer: &Answer) -> ChannelError {
    let status = if answer.status.is_client_error() || answer.status.is_server_error() {
        answer.status
    } else {
        StatusCode::BAD_GATEWAY
    };
    match serde_json::from_slice::<ErrorAnswer>(&answer.body) {
        Ok(b) => ChannelError::new(b.error.code, b.error.message),
        Err(_) => ChannelError::new(
            "connect_rejected",
            format!(
                "the $connect function answered HTTP {}",
                answer.status.as_u16()
            ),
        ),
    }
    .with_status(status)
}

struct ConnectForward(Arc<GatewayConfig>);

impl ConnectHandler<GatewaySession> for ConnectForward {
    fn call(&self, req: HttpRequest) -> BoxFuture<Result<Option<GatewaySession>, ChannelError>> {
        let cfg = self.0.clone();
        Box::pin(async move { cfg.connect(req).await })
    }
}

/// The fallback (`$default`) and binary handler: forwards the message.
struct Forward {
    cfg: Arc<GatewayConfig>,
    /// As the fallback (installed with `raw_fallback`): also takes text frames that are not
    /// messages, which then come as `Body::Binary` holding the text.
    raw_text: bool,
}

impl MessageHandler<GatewaySession> for Forward {
    fn route(&self) -> &str {
        DEFAULT_ROUTE
    }

    fn call(&self, req: MessageRequest<GatewaySession>) -> BoxFuture<Result<Reply, ChannelError>> {
        let cfg = self.cfg.clone();
        let raw_text = self.raw_text;
        Box::pin(async move { cfg.message(req, raw_text).await })
    }
}

struct DisconnectForward(Arc<GatewayConfig>);

impl DisconnectHandler<GatewaySession> for DisconnectForward {
    fn call(&self, req: MessageRequest<GatewaySession>) -> BoxFuture<()> {
        let cfg = self.0.clone();
        let ch = req.channel();
        let request_context = cfg.channel_context(DISCONNECT_ROUTE, EventType::Disconnect, ch);
        // The close frame the connection ended with (the client's code echoed, or the
        // server's code and reason); none means the socket went away without one: 1006, as
        // RFC 6455 reports an abnormal closure.
        let (code, reason) = ch
            .outbound()
            .closed_with()
            .unwrap_or((ABNORMAL_CLOSURE, String::new()));
        let event = Event::disconnect(request_context, code, reason);
        let id = ch.id();
        Box::pin(async move { cfg.disconnect(event, id).await })
    }
}
