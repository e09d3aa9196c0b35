//! The function side of gateway mode: [`FunctionService`] hosts the same
//! `#[switchboard::message]` handlers as a channel, behind an HTTP endpoint that accepts the
//! API Gateway WebSocket events a [`Gateway`](crate::serverless::gateway::Gateway) channel POSTs.
//!
//! A handler does not change when it moves from a channel to a function:
//!
//! - its arguments are extracted the same way (`data` into the typed payload, `ref` answered);
//! - `Channel<S>` is the gateway connection: [`id`](crate::Channel::id) is the event's
//!   `connectionId`, [`session`](crate::Channel::session) is what the function's `on_connect`
//!   returned (the gateway carries it in every event), [`send`](crate::Channel::send) and
//!   [`close`](crate::Channel::close) go through the gateway's connections API, and so do
//!   [`subscribe`](crate::Topics::subscribe) and [`publish`](crate::Topics::publish): topics
//!   live in the gateway's brokers, never in the function;
//! - its return value is the reply frame, exactly as the channel would send it (the function
//!   answers the event with it and the gateway relays it verbatim).
//!
//! ```
//! use actix_web::App;
//! use serde::Deserialize;
//! use switchboard::serverless::connections_api::ConnectionsClient;
//! use switchboard::serverless::function::FunctionService;
//! use switchboard::prelude::*;
//!
//! #[derive(Deserialize)]
//! struct Join { room: String }
//!
//! /// The same handler a channel would mount.
//! #[switchboard::message("join")]
//! async fn join(ch: Channel, msg: Join) -> Result<String, ChannelError> {
//!     ch.subscribe(&format!("room:{}", msg.room)).await?;
//!     Ok(msg.room)
//! }
//!
//! let function = FunctionService::<()>::new("/fn")
//!     .token("gateway-to-function-secret")
//!     .connections(ConnectionsClient::new("http://127.0.0.1:8080").bearer_token("api-token"))
//!     .message(join);
//! let app = App::new().service(function);
//! ```
//!
//! **What a function answers.** `CONNECT`: 200 accepts (the body `{"authorizer": {"session":
//! ...}}` carries the session to later events); any other status rejects the client's upgrade
//! with that status and the body `{"error": {"code", "message"}}`. `MESSAGE`: 200 with the
//! reply frame (or an empty body for no reply) and the header `x-switchboard-reply: frame`;
//! handler errors are error frames, as on a channel. `DISCONNECT`: 200.
//!
//! **Limits.** A function has no socket and keeps nothing between events: the opening
//! request's headers and query are only known in `$connect` (keep what later messages need in
//! the session), a session changed with `set_session` lasts for one event, `ch.subscriptions()`
//! lists what this event subscribed, and presence (`track`) is not available.

#[cfg(feature = "lambda")]
#[cfg_attr(docsrs, doc(cfg(feature = "lambda")))]
pub mod lambda;

use std::collections::VecDeque;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use actix_web::dev::{
    fn_service, AppService, HttpServiceFactory, RequestHead, ServiceRequest, ServiceResponse,
};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode, Uri};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use bytestring::ByteString;
use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;

pub use super::event::{Event, EventType, Identity, RequestContext, REPLY_HEADER};

use crate::channel::outbound::{Frame, Outbound};
use crate::channel::router::{Answering, Dispatch, Fallback, Handler, Inbound, RouteTable, Router};
use crate::channel::Channel;
use crate::error::ChannelError;
use crate::handler::{
    Body, BoxFuture, ConnectHandler, DisconnectHandler, MessageHandler, MessageRequest, Reply,
    DEFAULT_ROUTE,
};
use crate::hub::Hub;
use crate::id::ConnectionId;
use crate::protocol::{close_code, RouteKey};
use crate::serverless::auth;
use crate::serverless::connections_api::{ConnectionsClient, RemoteEngine};
use crate::serverless::event::{
    ConnectAnswer, ErrorAnswer, Payload, BINARY_CONTENT_TYPE, REPLY_FRAME,
};
use crate::serverless::http::{self, ReadError};
use crate::SlowConsumerPolicy;

/// How a session travels between events: serialized into the `$connect` answer, read back from
/// each event's `requestContext.authorizer.session`.
struct SessionCodec<S> {
    encode: fn(&S) -> Result<serde_json::Value, serde_json::Error>,
    decode: fn(serde_json::Value) -> Result<S, serde_json::Error>,
}

impl<S> Clone for SessionCodec<S> {
    fn clone(&self) -> Self {
        SessionCodec {
            encode: self.encode,
            decode: self.decode,
        }
    }
}

fn encode_session<S: Serialize>(s: &S) -> Result<serde_json::Value, serde_json::Error> {
    serde_json::to_value(s)
}

fn decode_session<S: DeserializeOwned>(v: serde_json::Value) -> Result<S, serde_json::Error> {
    serde_json::from_value(v)
}

/// A function server: an actix-web service at `path` that accepts a gateway's events and runs
/// the same handlers a [`ChannelRoute`](crate::ChannelRoute) would. See the
/// [module docs](self).
pub struct FunctionService<S = ()> {
    path: String,
    routes: Vec<Handler<S>>,
    fallback: Option<Handler<S>>,
    binary: Option<Handler<S>>,
    settings: Settings<S>,
}

/// What a function holds besides its routes: the same in the builder and in each worker's
/// [`FunctionDef`].
struct Settings<S> {
    on_connect: Option<Arc<dyn ConnectHandler<S>>>,
    on_disconnect: Option<Arc<dyn DisconnectHandler<S>>>,
    codec: Option<SessionCodec<S>>,
    route_key: RouteKey,
    token: Option<String>,
    client: ConnectionsClient,
    engine: RemoteEngine,
    hub: Hub,
    max_event: usize,
    outbound_capacity: usize,
}

impl<S> Clone for Settings<S> {
    fn clone(&self) -> Self {
        Settings {
            on_connect: self.on_connect.clone(),
            on_disconnect: self.on_disconnect.clone(),
            codec: self.codec.clone(),
            route_key: self.route_key.clone(),
            token: self.token.clone(),
            client: self.client.clone(),
            engine: self.engine.clone(),
            hub: self.hub.clone(),
            max_event: self.max_event,
            outbound_capacity: self.outbound_capacity,
        }
    }
}

impl<S> Clone for FunctionService<S> {
    fn clone(&self) -> Self {
        FunctionService {
            path: self.path.clone(),
            routes: self.routes.clone(),
            fallback: self.fallback.clone(),
            binary: self.binary.clone(),
            settings: self.settings.clone(),
        }
    }
}

impl<S: 'static> std::fmt::Debug for FunctionService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionService")
            .field("path", &self.path)
            .field(
                "routes",
                &self.routes.iter().map(|h| h.route()).collect::<Vec<_>>(),
            )
            .field("connections", &self.settings.client)
            .finish()
    }
}

impl<S: 'static> FunctionService<S> {
    /// A function at `path` (it answers `POST` only). Without
    /// [`connections`](Self::connections), handlers cannot reach the gateway (`send`,
    /// `subscribe`, `publish` fail).
    pub fn new(path: impl Into<String>) -> Self {
        let client = ConnectionsClient::unconfigured();
        let engine = RemoteEngine::new(client.clone());
        FunctionService {
            path: path.into(),
            routes: Vec::new(),
            fallback: None,
            binary: None,
            settings: Settings {
                on_connect: None,
                on_disconnect: None,
                codec: None,
                route_key: RouteKey::default(),
                token: None,
                hub: Hub::with_engine(engine.clone()),
                client,
                engine,
                max_event: 1024 * 1024,
                outbound_capacity: 1024,
            },
        }
    }

    /// Adds a routed handler (from `#[switchboard::message("route")]`).
    pub fn message(mut self, handler: impl MessageHandler<S>) -> Self {
        self.routes.push(Arc::new(handler));
        self
    }

    /// The handler for messages no other handler answers (`$default`).
    pub fn fallback(mut self, handler: impl MessageHandler<S>) -> Self {
        self.fallback = Some(Arc::new(handler));
        self
    }

    /// The handler for binary frames (events with `isBase64Encoded`).
    pub fn on_binary(mut self, handler: impl MessageHandler<S>) -> Self {
        self.binary = Some(Arc::new(handler));
        self
    }

    /// Runs on `CONNECT`: an error rejects the client's upgrade (its HTTP status), a session
    /// goes back to the gateway, which carries it in every later event of the connection.
    ///
    /// Its `HttpRequest` (and [`ConnectRequest`](crate::ConnectRequest)) shows the client's
    /// upgrade request as the event describes it: headers, query, peer address; app data and
    /// [`ConnectionId`] work too.
    pub fn on_connect(mut self, handler: impl ConnectHandler<S>) -> Self
    where
        S: Serialize + DeserializeOwned,
    {
        self.settings.on_connect = Some(Arc::new(handler));
        self.sessions()
    }

    /// Runs on `DISCONNECT`.
    pub fn on_disconnect(mut self, handler: impl DisconnectHandler<S>) -> Self {
        self.settings.on_disconnect = Some(Arc::new(handler));
        self
    }

    /// Reads the session from events (`requestContext.authorizer.session`) without an
    /// `on_connect` here: for a function that handles messages of connections another function
    /// accepted. [`on_connect`](Self::on_connect) implies it.
    pub fn sessions(mut self) -> Self
    where
        S: Serialize + DeserializeOwned,
    {
        self.settings.codec = Some(SessionCodec {
            encode: encode_session::<S>,
            decode: decode_session::<S>,
        });
        self
    }

    /// Where the route key sits in messages (as [`ChannelRoute::route_key`]: the gateway
    /// channel's must match).
    ///
    /// # Panics
    /// When the expression is invalid.
    ///
    /// [`ChannelRoute::route_key`]: crate::ChannelRoute::route_key
    pub fn route_key(mut self, expr: &str) -> Self {
        match RouteKey::parse(expr) {
            Ok(k) => self.settings.route_key = k,
            Err(e) => panic!("{e}"),
        }
        self
    }

    /// Accepts only events that carry `Authorization: Bearer <token>` (the gateway's
    /// [`function_token`](crate::serverless::gateway::Gateway::function_token)). Without a token anyone
    /// who reaches the function could post events with any connection id and session, so it
    /// is for local use only: it refuses to start on a non-loopback address, and answers 403
    /// to events whose peer is not a loopback address (a unix socket has none) or that carry a
    /// proxy's header (`Forwarded`, `Via`, any `X-Forwarded-*`, `X-Real-IP`, ...: they came
    /// through a proxy).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.settings.token = Some(token.into());
        self
    }

    /// The gateway's connections API, used for `send`, `close`, `subscribe`, `publish`;
    /// handlers also get it as a `web::Data<ConnectionsClient>` argument.
    pub fn connections(mut self, client: ConnectionsClient) -> Self {
        let settings = &mut self.settings;
        settings.engine = RemoteEngine::new(client.clone());
        settings.hub = Hub::with_engine(settings.engine.clone());
        settings.client = client;
        self
    }

    /// Largest event accepted, in bytes (default 1 MiB).
    pub fn max_event_size(mut self, bytes: usize) -> Self {
        self.settings.max_event = bytes;
        self
    }

    /// The hub handlers see: topics in the gateway, through its connections API.
    pub fn hub(&self) -> &Hub {
        &self.settings.hub
    }
}

impl<S: 'static> HttpServiceFactory for FunctionService<S> {
    fn register(self, config: &mut AppService) {
        auth::refuse_unsecured(
            self.settings.token.is_some(),
            config.config().local_addr(),
            format_args!("the function at {}", self.path),
            "a token",
            "FunctionService::token (and Gateway::function_token)",
        );
        let client = self.settings.client.clone();
        let path = self.path.clone();
        let def = std::rc::Rc::new(FunctionDef::from(self));
        let resource = web::resource(path)
            .app_data(web::Data::new(client))
            .default_service(fn_service(move |req: ServiceRequest| {
                let def = def.clone();
                async move { Ok::<_, actix_web::Error>(def.invoke(req).await) }
            }));
        HttpServiceFactory::register(resource, config);
    }
}

/// A function's handlers and settings, per worker.
struct FunctionDef<S> {
    router: Router<S>,
    settings: Settings<S>,
}

impl<S: 'static> From<FunctionService<S>> for FunctionDef<S> {
    fn from(f: FunctionService<S>) -> Self {
        let routes = f.routes.into_iter().map(|h| (Box::from(h.route()), h));
        let fallback = match f.fallback {
            Some(h) => Fallback::Messages(h),
            None => Fallback::None,
        };
        FunctionDef {
            router: Router::new(
                RouteTable::new(routes),
                fallback,
                f.binary,
                f.settings.route_key.clone(),
            ),
            settings: f.settings,
        }
    }
}

fn http_error(status: StatusCode, code: &str, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(ErrorAnswer::new(code, message))
}

/// A frame for the gateway to relay as is.
fn frame_response(frame: Option<Frame>) -> HttpResponse {
    let mut b = HttpResponse::Ok();
    b.insert_header((REPLY_HEADER, REPLY_FRAME));
    match frame {
        Some(Frame::Text(t)) => b.content_type("application/json").body(t.into_bytes()),
        Some(Frame::Binary(bytes)) => b.content_type(BINARY_CONTENT_TYPE).body(bytes),
        _ => b.finish(),
    }
}

/// Makes the request look like the client's upgrade request, as far as the event tells.
fn rewrite_head(head: &mut RequestHead, event: &Event) {
    let ctx = &event.request_context;
    let mut headers = HeaderMap::new();
    let mut add = |name: &str, value: &str| {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(n, v);
        }
    };
    for (name, value) in event.header_pairs() {
        add(name, value);
    }
    if !headers.contains_key(header::USER_AGENT) {
        if let Some(ua) = &ctx.identity.user_agent {
            if let Ok(v) = HeaderValue::from_str(ua) {
                headers.insert(header::USER_AGENT, v);
            }
        }
    }
    if !headers.contains_key(header::HOST) && !ctx.domain_name.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&ctx.domain_name) {
            headers.insert(header::HOST, v);
        }
    }
    let mut query = String::new();
    let mut push = |k: &str, v: &str| {
        if !query.is_empty() {
            query.push('&');
        }
        query.extend(http::encode(k));
        query.push('=');
        query.extend(http::encode(v));
    };
    for (k, v) in event.query_pairs() {
        push(k, v);
    }
    let uri = if query.is_empty() {
        "/".to_owned()
    } else {
        format!("/?{query}")
    };
    head.method = Method::GET;
    head.uri = uri.parse::<Uri>().unwrap_or_default();
    head.headers = headers;
    head.peer_addr = ctx
        .identity
        .source_ip
        .parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, 0));
}

/// Runs a handler: `start` makes its future, and a panic in either is caught.
async fn catch_panics<T>(start: impl FnOnce() -> BoxFuture<T>) -> std::thread::Result<T> {
    match std::panic::catch_unwind(AssertUnwindSafe(start)) {
        Ok(fut) => AssertUnwindSafe(fut).catch_unwind().await,
        Err(panic) => Err(panic),
    }
}

impl<S: 'static> FunctionDef<S> {
    async fn invoke(&self, mut req: ServiceRequest) -> ServiceResponse {
        let resp = self.answer(&mut req).await;
        req.into_response(resp)
    }

    async fn answer(&self, sreq: &mut ServiceRequest) -> HttpResponse {
        if sreq.method() != Method::POST {
            return HttpResponse::MethodNotAllowed()
                .insert_header((header::ALLOW, "POST"))
                .finish();
        }
        let settings = &self.settings;
        if settings.token.is_none() && !auth::local_and_direct(sreq.request()) {
            return http_error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this function has no token configured and takes events only from direct loopback clients",
            );
        }
        if let Some(token) = &settings.token {
            match auth::bearer_token(sreq.headers()) {
                Some(t) if auth::constant_time_eq(t.as_bytes(), token.as_bytes()) => {}
                Some(_) => return http_error(StatusCode::FORBIDDEN, "forbidden", "invalid token"),
                None => {
                    return http_error(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "a bearer token is required",
                    )
                }
            }
        }
        let body = match http::read_body(sreq.take_payload(), settings.max_event).await {
            Ok(body) => body,
            Err(ReadError::TooLarge) => {
                return http_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "bad_event",
                    format!("events are limited to {} bytes", settings.max_event),
                )
            }
            Err(ReadError::Broken(e)) => {
                return http_error(
                    StatusCode::BAD_REQUEST,
                    "bad_event",
                    format!("the event could not be read: {e}"),
                )
            }
        };
        let event: Event = match serde_json::from_slice(&body) {
            Ok(e) => e,
            Err(e) => {
                return http_error(
                    StatusCode::BAD_REQUEST,
                    "bad_event",
                    format!("not an API Gateway WebSocket event: {e}"),
                )
            }
        };
        let id = match event.request_context.connection() {
            Ok(id) => id,
            Err(message) => return http_error(StatusCode::BAD_REQUEST, "bad_event", message),
        };
        // Make the request the client's, as the event describes it, before handlers get
        // clones of it. `head_mut` needs the request to be this service's alone: actix-web's
        // own router needs that too (it records the matched resource the same way on every
        // request, and would have panicked already), so it holds unless something between the
        // router and this service keeps a clone. Should that ever happen, the event gets a
        // 500 rather than a panic taking the worker down.
        let rewritten =
            std::panic::catch_unwind(AssertUnwindSafe(|| rewrite_head(sreq.head_mut(), &event)));
        if rewritten.is_err() {
            tracing::error!("function: the request is shared (a middleware kept a clone of it)");
            return ChannelError::internal("the event's request is shared").error_response();
        }
        sreq.extensions_mut().insert(id);
        let req = sreq.request().clone();
        match event.request_context.event_type {
            EventType::Connect => self.connect(req).await,
            EventType::Message => self.message(req, id, event).await,
            EventType::Disconnect => self.disconnect(req, id, event).await,
        }
    }

    fn session(&self, ctx: &RequestContext) -> Option<S> {
        let codec = self.settings.codec.as_ref()?;
        let value = ctx.session()?.clone();
        // API Gateway's authorizer contexts hold only strings, numbers and booleans: there a
        // session arrives as a string of JSON.
        let text = value.as_str().map(str::to_owned);
        match (codec.decode)(value) {
            Ok(s) => Some(s),
            Err(e) => {
                let inner = text.and_then(|t| serde_json::from_str(&t).ok());
                if let Some(s) = inner.and_then(|v| (codec.decode)(v).ok()) {
                    return Some(s);
                }
                tracing::warn!(
                    "connection {}: the event's session does not deserialize: {e}",
                    ctx.connection_id
                );
                None
            }
        }
    }

    fn channel(
        &self,
        req: HttpRequest,
        id: ConnectionId,
        ctx: &RequestContext,
    ) -> (Channel<S>, Arc<Outbound>) {
        let settings = &self.settings;
        let out = Arc::new(Outbound::new(
            settings.outbound_capacity,
            SlowConsumerPolicy::DropNewest,
        ));
        // A channel bound to the gateway's connection: `send` / `close` queue into `out`, which
        // `run_forwarding` drains into the connections API.
        let channel = Channel::detached(
            id,
            req,
            self.session(ctx),
            settings.route_key.reply_field(),
            ctx.connected_at_time(),
            settings.hub.clone(),
            out.clone(),
        );
        (channel, out)
    }

    async fn connect(&self, req: HttpRequest) -> HttpResponse {
        let accepted = || HttpResponse::Ok().json(ConnectAnswer::default());
        let Some(handler) = &self.settings.on_connect else {
            return accepted();
        };
        match catch_panics(|| handler.call(req)).await {
            Ok(Ok(Some(session))) => match &self.settings.codec {
                Some(codec) => match (codec.encode)(&session) {
                    Ok(v) => HttpResponse::Ok().json(ConnectAnswer::with_session(v)),
                    Err(e) => {
                        ChannelError::internal(format_args!("the session does not serialize: {e}"))
                            .error_response()
                    }
                },
                None => accepted(),
            },
            Ok(Ok(None)) => accepted(),
            Ok(Err(e)) => {
                if let ChannelError::Internal(detail) = &e {
                    tracing::error!("on_connect: {detail}");
                }
                e.error_response()
            }
            Err(panic) => {
                tracing::error!(
                    "on_connect panicked: {}",
                    crate::error::panic_message(&*panic)
                );
                ChannelError::internal("on_connect panicked").error_response()
            }
        }
    }

    async fn message(&self, req: HttpRequest, id: ConnectionId, event: Event) -> HttpResponse {
        let ctx = &event.request_context;
        let route_key = &self.settings.route_key;
        let error_frame = |answering: &Answering, err: &ChannelError| {
            frame_response(Some(Frame::Text(answering.error_frame(
                id,
                route_key.reply_field(),
                err,
            ))))
        };
        let Ok(payload) = event.payload() else {
            return http_error(StatusCode::BAD_REQUEST, "bad_event", "body is not base64");
        };
        let inbound = match payload {
            Payload::Binary(bytes) => Inbound::Binary(bytes),
            Payload::Text(text) => Inbound::Text(ByteString::from(text)),
        };
        // The event's route key first (a gateway may route by its own rules), then the
        // message's (a gateway that sends everything as `$default`), then the fallback.
        let hint = (ctx.route_key != DEFAULT_ROUTE).then_some(ctx.route_key.as_str());
        let (handler, body, answering) = match self.router.dispatch_hinted(inbound, hint) {
            Dispatch::Call {
                handler,
                body,
                answering,
                ..
            } => (handler.clone(), body, answering),
            Dispatch::Reject {
                answering, error, ..
            } => return error_frame(&answering, &error),
        };
        let (channel, out) = self.channel(req, id, ctx);
        let request = MessageRequest::new(channel, body);
        let outcome = self
            .run_forwarding(id, &out, move || handler.call(request))
            .await;
        match outcome {
            Ok(Ok(Reply(frame))) => frame_response(frame),
            Ok(Err(err)) => error_frame(&answering, &err),
            Err(panic) => error_frame(&answering, &ChannelError::from_panic("handler", &*panic)),
        }
    }

    async fn disconnect(&self, req: HttpRequest, id: ConnectionId, event: Event) -> HttpResponse {
        if let Some(handler) = self.settings.on_disconnect.clone() {
            let (channel, out) = self.channel(req, id, &event.request_context);
            let request = MessageRequest::new(channel, Body::None);
            if let Err(panic) = self
                .run_forwarding(id, &out, move || handler.call(request))
                .await
            {
                tracing::error!(
                    "connection {id}: disconnect handler panicked: {}",
                    crate::error::panic_message(&*panic)
                );
            }
        }
        HttpResponse::Ok().finish()
    }

    /// Runs a handler while forwarding what it queues for the client (`send`, `close`) to the
    /// connections API in order; resolves once all of it went out and deferred topic operations
    /// are done, so that the reply reaches the client after the handler's pushes.
    async fn run_forwarding<T>(
        &self,
        id: ConnectionId,
        out: &Arc<Outbound>,
        start: impl FnOnce() -> BoxFuture<T>,
    ) -> std::thread::Result<T> {
        let (finished, handler_done) = oneshot::channel();
        let run = async {
            let outcome = catch_panics(start).await;
            // Everything the handler queued is in `out` now: the forwarding ends once it went
            // out. (No one listens when a close already ended it.)
            let _ = finished.send(());
            outcome
        };
        let client = self.settings.client.clone();
        let (outcome, ()) =
            futures_util::future::join(run, forward(client, id, out.clone(), handler_done)).await;
        // This connection's deferred operations only: concurrent invocations for other
        // connections do not hold this answer up.
        self.settings.engine.flush_connection(id).await;
        outcome
    }
}

/// Drains a detached channel's queue into the connections API until `handler_done` fired and
/// the queue is empty, or a close.
async fn forward(
    client: ConnectionsClient,
    id: ConnectionId,
    out: Arc<Outbound>,
    mut handler_done: oneshot::Receiver<()>,
) {
    let mut batch = VecDeque::new();
    let mut gone = false;
    let mut done = false;
    loop {
        std::future::poll_fn(|cx| {
            // The signal first, then the queue: what the handler queued before it finished is
            // in this drain.
            if !done {
                done = Pin::new(&mut handler_done).poll(cx).is_ready();
            }
            out.take_all(&mut batch, cx.waker());
            if batch.is_empty() && !done {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        if batch.is_empty() {
            return;
        }
        while let Some(frame) = batch.pop_front() {
            let sent = match frame {
                Frame::Text(t) if !gone => client.post_frame(id, t.into_bytes(), false).await,
                Frame::Binary(b) if !gone => client.post_frame(id, b, true).await,
                Frame::Close(code, reason) => {
                    if !gone {
                        let code = (code == close_code::NORMAL || (3000..5000).contains(&code))
                            .then_some(code);
                        if let Err(e) = client.close_connection(id, code, &reason).await {
                            if !matches!(e, ChannelError::Closed) {
                                tracing::warn!(
                                    "connection {id}: close through the connections API: {e:?}"
                                );
                            }
                        }
                    }
                    return;
                }
                _ => Ok(()),
            };
            match sent {
                Ok(()) => {}
                Err(ChannelError::Closed) => gone = true,
                Err(e) => {
                    tracing::warn!("connection {id}: push through the connections API: {e:?}")
                }
            }
        }
    }
}
