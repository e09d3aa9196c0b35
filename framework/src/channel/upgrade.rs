//! Opening a connection: origin check, connection cap, `on_connect`, then the WebSocket
//! handshake or the HTTP transport's stream (one set of checks for both).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::SystemTime;

use actix_web::{web, FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use serde::de::DeserializeOwned;

use super::def::{ChannelDef, OpenGuard};
use super::handle::*;
use super::heartbeat;
use super::http;
use super::http_link::{self, HttpLink, HttpSource, HttpWriter, SseBody};
use super::seam::{Sink, Source};
use super::transport;
use crate::channel::connection::Connection;
use crate::channel::outbound::Outbound;
use crate::error::ChannelError;
use crate::hub::{ConnEntry, Hub, TopicLimits};
use crate::id::ConnectionId;

/// A connection that passed every check of the upgrade, whatever its transport: what opening
/// it needs.
struct Admitted<S> {
    id: ConnectionId,
    session: Option<S>,
    expiry: Option<SystemTime>,
    out: Arc<Outbound>,
    entry: Arc<ConnEntry>,
    guard: OpenGuard,
    hub: Hub,
}

/// Which transport asks: the WebSocket handshake is checked right after the origin, as
/// before any other work.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    WebSocket,
    Http,
}

fn refuse<S>(def: &ChannelDef<S>, reason: &'static str, response: HttpResponse) -> HttpResponse {
    crate::meter::refused(&def.path, reason);
    tracing::debug!(
        channel = &*def.path,
        reason,
        status = response.status().as_u16(),
        "upgrade refused"
    );
    response
}

/// Every check of a new connection, in order: origin, handshake (WebSocket), draining, the
/// channel's cap, `on_connect`, a required session, the token's expiry, the user's limit.
async fn admit<S: 'static>(
    def: &Rc<ChannelDef<S>>,
    req: &HttpRequest,
    via: Via,
) -> Result<Admitted<S>, HttpResponse> {
    let cfg = &def.config;
    if !cfg.origins.allows(req) {
        return Err(refuse(
            def,
            "origin",
            ChannelError::forbidden("origin not allowed").error_response(),
        ));
    }
    if via == Via::WebSocket {
        if let Err(e) = actix_http::ws::verify_handshake(req.head()) {
            return Err(refuse(def, "bad_request", e.error_response()));
        }
    }
    let hub = Hub::of(req);
    if hub.is_draining() {
        return Err(refuse(
            def,
            "draining",
            ChannelError::Draining.error_response(),
        ));
    }
    let Some(guard) = OpenGuard::acquire(&def.open, cfg.max_connections) else {
        return Err(refuse(
            def,
            "cap",
            ChannelError::TooManyConnections.error_response(),
        ));
    };
    // Known before `on_connect`, which can extract it (a gateway tells its `$connect` function).
    let id = ConnectionId::next();
    req.extensions_mut().insert(id);
    let session = match &def.on_connect {
        Some(h) => match h.call(req.clone()).await {
            Ok(s) => s,
            Err(e) => {
                let reason = match e.status().as_u16() {
                    401 | 403 => "auth",
                    _ => "rejected",
                };
                return Err(refuse(def, reason, e.error_response()));
            }
        },
        None => None,
    };
    if cfg.require_session && session.is_none() {
        return Err(refuse(
            def,
            "auth",
            ChannelError::unauthorized("a session is required").error_response(),
        ));
    }
    let expiry = req.extensions().get::<TokenExpiry>().map(|e| e.0);
    if expiry.is_some_and(|at| at <= SystemTime::now()) {
        return Err(refuse(
            def,
            "auth",
            ChannelError::TokenExpired.error_response(),
        ));
    }
    let out =
        Arc::new(Outbound::new(cfg.outbound_capacity, cfg.slow_consumer).for_channel(&def.path));
    let limits = TopicLimits {
        max_topics: cfg.max_topics,
        max_topic_len: cfg.max_topic_length,
        max_presence_bytes: cfg.max_presence_size,
        max_user_topics: cfg.max_user_topics,
    };
    let user = match (&def.user_key, &session) {
        (Some(key), Some(s)) => Some(hub.user_ref(Arc::from(key(s)))),
        _ => None,
    };
    let entry = Arc::new(ConnEntry::new(
        out.clone(),
        def.path.clone(),
        req,
        limits,
        user,
    ));
    // The user's connection limit, counted on every node, before the connection opens.
    if let Err(e) = hub
        .admit_user(id, &entry, cfg.max_connections_per_user)
        .await
    {
        hub.abandon(id, &entry);
        let reason = match &e {
            ChannelError::TooManyUserConnections { .. } => "user_cap",
            _ => "engine",
        };
        return Err(refuse(def, reason, e.error_response()));
    }
    Ok(Admitted {
        id,
        session,
        expiry,
        out,
        entry,
        guard,
        hub,
    })
}

/// The WebSocket upgrade.
pub(crate) async fn accept<S: 'static>(
    def: Rc<ChannelDef<S>>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let a = match admit(&def, &req, Via::WebSocket).await {
        Ok(a) => a,
        Err(refused) => return refused,
    };
    let max_frame_size = def.config.max_frame_size;
    let upgraded = transport::upgrade(&req, payload, max_frame_size, &a.out);
    let (response, ended, incoming) = match upgraded {
        Ok(parts) => parts,
        Err(e) => {
            a.hub.abandon(a.id, &a.entry);
            return refuse(&def, "bad_request", e.error_response());
        }
    };
    let sink = Sink::WebSocket(ended);
    open(def, a, req, Source::WebSocket(incoming), sink);
    response
}

/// The HTTP transport's stream (`GET` with `Accept: text/event-stream`): the same checks,
/// then a Server-Sent Events response whose first event, `open`, tells the connection's id
/// and secret.
pub(crate) async fn accept_stream<S: 'static>(
    def: Rc<ChannelDef<S>>,
    req: HttpRequest,
) -> HttpResponse {
    let response = match open_stream(def.clone(), &req).await {
        Ok(response) | Err(response) => response,
    };
    http::with_cors(&req, &def.config.origins, response)
}

async fn open_stream<S: 'static>(
    def: Rc<ChannelDef<S>>,
    req: &HttpRequest,
) -> Result<HttpResponse, HttpResponse> {
    let a = admit(&def, req, Via::Http).await?;
    let cfg = &def.config;
    let secret = match http_link::new_secret() {
        Ok(s) => s,
        Err(e) => {
            a.hub.abandon(a.id, &a.entry);
            let e = ChannelError::internal(format_args!("no random secret: {e}"));
            return Err(refuse(&def, "internal", e.error_response()));
        }
    };
    let open_event = format!(
        "event: open\ndata: {{\"id\":\"{}\",\"secret\":\"{}\",\"ping\":{}}}\n\n",
        a.id,
        http_link::secret_text(&secret),
        cfg.heartbeat_interval.as_millis()
    );
    let link = Arc::new(HttpLink::new(
        secret,
        cfg.max_pending_batches,
        cfg.http_max_frames.max(cfg.inbound_capacity) * 2,
        open_event.as_bytes(),
    ));
    let _ = a.entry.link.set(link.clone());
    // On an engine shared by several nodes, `POST`s that reach another node come through the
    // engine: listen before the client learns the id.
    if a.hub.engine().is_distributed() {
        if let Err(e) = http::listen(&a.hub, a.id, &def.path, &link, &a.out, &secret).await {
            a.hub.abandon(a.id, &a.entry);
            return Err(refuse(&def, "engine", e.error_response()));
        }
    }
    let sink = Sink::Http(Box::new(HttpWriter::new(
        a.out.clone(),
        link.clone(),
        cfg.close_timeout,
    )));
    open(
        def.clone(),
        a,
        req.clone(),
        Source::Http(HttpSource::new(link.clone())),
        sink,
    );
    Ok(http::stream_response(SseBody::new(link)))
}

/// Registers an admitted connection and starts its actor.
fn open<S: 'static>(
    def: Rc<ChannelDef<S>>,
    a: Admitted<S>,
    req: HttpRequest,
    source: Source,
    sink: Sink,
) {
    let Admitted {
        id,
        session,
        expiry,
        out,
        entry,
        guard,
        hub,
    } = a;
    hub.register(id, entry.clone());
    heartbeat::watch(&def, &entry);
    let app = def
        .app
        .borrow_mut()
        .get_or_insert_with(|| req.clone())
        .clone();
    let channel = Channel {
        inner: Rc::new(ConnInner {
            id,
            opening: Opening::of(&req),
            app,
            session: RefCell::new(session),
            out,
            route_field: def.router.route_field().clone(),
            connected_at: SystemTime::now(),
            hub,
            entry,
            tokens: RefCell::new(None),
            refresh_lead: def.config.refresh_lead,
        }),
    };
    drop(req);
    if expiry.is_some() {
        channel.set_token_expiry(expiry);
    }
    Connection::start(def, channel, source, sink, guard);
}

/// The upgrade request, as a connect handler's argument: headers, query, cookies, path
/// parameters, peer address.
///
/// ```
/// use switchboard::prelude::*;
///
/// #[derive(Clone)]
/// struct User { name: String }
///
/// #[switchboard::on_connect]
/// async fn connect(req: ConnectRequest) -> Result<User, ChannelError> {
///     match req.query("token") {
///         Some("secret") => Ok(User { name: "ada".into() }),
///         _ => Err(ChannelError::unauthorized("bad token")),
///     }
/// }
/// ```
#[derive(Clone, Debug)]
pub struct ConnectRequest(HttpRequest);

impl ConnectRequest {
    /// The underlying request.
    pub fn request(&self) -> &HttpRequest {
        &self.0
    }

    /// A header, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.0.headers().get(name)?.to_str().ok()
    }

    /// The token of an `Authorization: Bearer <token>` header.
    pub fn bearer_token(&self) -> Option<&str> {
        bearer(self.header("authorization")?)
    }

    /// A query parameter's raw (still percent-encoded) value.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.0
            .query_string()
            .split('&')
            .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// The whole query string, deserialized.
    pub fn query_as<T: DeserializeOwned>(&self) -> Result<T, ChannelError> {
        web::Query::<T>::from_query(self.0.query_string())
            .map(web::Query::into_inner)
            .map_err(|e| ChannelError::new("bad_query", e.to_string()))
    }

    /// A cookie's value.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.0.cookie(name).map(|c| c.value().to_owned())
    }

    /// A path parameter of the channel's route.
    pub fn path_param(&self, name: &str) -> Option<&str> {
        self.0.match_info().get(name)
    }

    /// The client's address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.0.peer_addr()
    }

    /// App data registered on the `App`.
    pub fn app_data<T: 'static>(&self) -> Option<&T> {
        self.0.app_data::<T>()
    }

    /// Gives the connection's token an expiry (from a connect handler). Before it, the server
    /// asks the client for a new token with a `refresh` frame, which the channel's
    /// [`on_refresh`](crate::ChannelRoute::on_refresh) handler checks; without a valid one by
    /// then the connection closes with 4401 (`token expired`). A time already past refuses
    /// the upgrade (HTTP 401 `token_expired`). The `jwt` feature's verifier sets it from the
    /// token's `exp`.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use switchboard::prelude::*;
    ///
    /// #[switchboard::on_connect]
    /// async fn connect(req: ConnectRequest) -> Result<(), ChannelError> {
    ///     match req.query("token") {
    ///         Some("good") => {
    ///             req.set_expiry(SystemTime::now() + Duration::from_secs(900));
    ///             Ok(())
    ///         }
    ///         _ => Err(ChannelError::unauthorized("bad token")),
    ///     }
    /// }
    /// ```
    pub fn set_expiry(&self, at: SystemTime) {
        self.0.extensions_mut().insert(TokenExpiry(at));
    }
}

/// When a connection's token expires, as a connect handler set it (request extensions).
#[derive(Clone, Copy, Debug)]
struct TokenExpiry(SystemTime);

/// The token of an `Authorization` header value `Bearer <token>` (the scheme in any case).
pub(crate) fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequest for ConnectRequest {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(Ok(ConnectRequest(req.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn connect_request_accessors() {
        let req = TestRequest::default()
            .uri("/ws?token=abc&flag")
            .insert_header(("authorization", "Bearer t0k"))
            .to_http_request();
        let c = ConnectRequest(req);
        assert_eq!(c.query("token"), Some("abc"));
        assert_eq!(c.query("flag"), Some(""));
        assert_eq!(c.query("nope"), None);
        assert_eq!(c.bearer_token(), Some("t0k"));
    }

    #[test]
    fn connection_cap() {
        let open = Arc::new(AtomicUsize::new(0));
        let a = OpenGuard::acquire(&open, 1);
        assert!(a.is_some());
        assert!(OpenGuard::acquire(&open, 1).is_none());
        drop(a);
        assert!(OpenGuard::acquire(&open, 1).is_some());
        assert_eq!(open.load(Ordering::Relaxed), 0);
    }
}
