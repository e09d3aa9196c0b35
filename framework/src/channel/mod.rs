//! Channels: [`ChannelRoute`] mounts a WebSocket endpoint on an actix-web `App`;
//! [`Channel<S>`] is one open connection as its handlers see it.

pub(crate) mod connection;
pub(crate) mod outbound;
pub(crate) mod transport;

use std::cell::RefCell;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::Actor;
use actix_web::dev::{AppService, HttpServiceFactory};
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::channel::connection::Connection;
use crate::engine::TopicPattern;
use crate::engine::{Position, SubscribeRequest, Subscribed, Subscriber};
use crate::error::Error;
use crate::handler::{ConnectHandler, DisconnectHandler, MessageHandler};
use crate::hub::{ConnEntry, Hub};
use crate::id::ConnectionId;
use crate::handler::subscribe::{
    JoinGuard, Joins, PresenceRule, SubscribeRoute, UnsubscribeRoute, SUBSCRIBE, UNSUBSCRIBE,
};
use crate::channel::outbound::{Class, Outbound, Refused, SlowConsumerPolicy};
use crate::protocol::{self, close_code, RouteKey};


/// Which `Origin` headers a channel accepts on the upgrade request.
///
/// Browsers send `Origin` on every WebSocket handshake; a channel that accepts any origin can
/// be driven by any page the user visits (cross-site WebSocket hijacking), with the user's
/// cookies. Requests without `Origin` (native clients) are always accepted: the check guards
/// browsers, which cannot omit it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Origins {
    /// The origin's host (and port) must equal the request's `Host`. The default.
    #[default]
    SameHost,
    /// Any origin. Only for channels that use no ambient credentials (cookies).
    Any,
    /// Exactly these origins (`https://app.example.com`), or the same host.
    List(Vec<String>),
}

impl Origins {
    fn allows(&self, req: &HttpRequest) -> bool {
        let Some(origin) = req.headers().get(header::ORIGIN) else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let same_host = || {
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default();
            let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
            !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
        };
        match self {
            Origins::Any => true,
            Origins::SameHost => same_host(),
            Origins::List(list) => {
                list.iter().any(|o| o.eq_ignore_ascii_case(origin)) || same_host()
            }
        }
    }
}

/// A channel's limits and behaviour. Every limit has a bounded default.
#[derive(Clone, Debug)]
pub struct ChannelConfig {
    /// Where the route key sits in client messages. Default: `type`.
    pub route_key: RouteKey,
    /// Largest accepted frame (or message assembled from continuations), in bytes; larger
    /// ones close the connection with 1009. Default: 64 KiB.
    pub max_frame_size: usize,
    /// Frames that may wait in a connection's outbound queue. Default: 1024.
    pub outbound_capacity: usize,
    /// What happens when the outbound queue is full. Default: drop the newest frame.
    pub slow_consumer: SlowConsumerPolicy,
    /// Messages of one connection waiting for their turn; more get `overloaded`. Default: 64.
    pub inbound_capacity: usize,
    /// The server pings this often. Default: 30 s.
    pub heartbeat_interval: Duration,
    /// A connection that sends nothing (not even a pong) for this long is closed with 1001.
    /// Default: 75 s.
    pub idle_timeout: Duration,
    /// How long to wait for the client's close frame after the server sent its own. Default:
    /// 5 s.
    pub close_timeout: Duration,
    /// Open connections allowed on this channel (across workers); more get HTTP 503.
    /// Default: 10 000.
    pub max_connections: usize,
    /// Accepted `Origin`s. Default: same host.
    pub origins: Origins,
    /// Refuse connections without a session (HTTP 401). Default: false.
    pub require_session: bool,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            route_key: RouteKey::default(),
            max_frame_size: 64 * 1024,
            outbound_capacity: 1024,
            slow_consumer: SlowConsumerPolicy::DropNewest,
            inbound_capacity: 64,
            heartbeat_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            close_timeout: Duration::from_secs(5),
            max_connections: 10_000,
            origins: Origins::SameHost,
            require_session: false,
        }
    }
}

pub(crate) type Handler<S> = Arc<dyn MessageHandler<S>>;

/// Everything a channel's connections share: handlers, config, the open-connection count.
pub(crate) struct ChannelDef<S> {
    pub(crate) path: Arc<str>,
    /// The reply field name, shared by all connections.
    pub(crate) route_field: Rc<str>,
    /// One request that reached this channel on this worker, kept for its app data: every
    /// request to the same resource in the same worker sees the same app data, so connections
    /// need not keep their own request (and its header table) alive.
    pub(crate) app: RefCell<Option<HttpRequest>>,
    /// This worker's connections, for the heartbeat.
    pub(crate) beats: Rc<RefCell<Vec<std::sync::Weak<ConnEntry>>>>,
    pub(crate) beating: std::cell::Cell<bool>,
    pub(crate) config: ChannelConfig,
    pub(crate) routes: Routes<S>,
    pub(crate) fallback: Option<Handler<S>>,
    pub(crate) binary: Option<Handler<S>>,
    pub(crate) on_connect: Option<Arc<dyn ConnectHandler<S>>>,
    pub(crate) on_disconnect: Option<Arc<dyn DisconnectHandler<S>>>,
    pub(crate) on_open: Option<OpenHook<S>>,
    pub(crate) open: Arc<AtomicUsize>,
}

/// Runs in the connection actor once the socket is open.
pub(crate) type OpenHook<S> = Arc<dyn Fn(&Channel<S>) + Send + Sync>;

impl<S> ChannelDef<S> {
    pub(crate) fn handler(&self, route: &str) -> Option<&Handler<S>> {
        self.routes.get(route).or(self.fallback.as_ref())
    }
}

/// Route table: a handful of routes are found faster by comparing strings than by hashing.
pub(crate) enum Routes<S> {
    Few(Vec<(Box<str>, Handler<S>)>),
    Many(HashMap<Box<str>, Handler<S>>),
}

impl<S> Routes<S> {
    const FEW: usize = 8;

    fn new(map: HashMap<Box<str>, Handler<S>>) -> Self {
        if map.len() <= Self::FEW {
            Routes::Few(map.into_iter().collect())
        } else {
            Routes::Many(map)
        }
    }

    fn get(&self, route: &str) -> Option<&Handler<S>> {
        match self {
            Routes::Few(v) => v.iter().find(|(r, _)| &**r == route).map(|(_, h)| h),
            Routes::Many(m) => m.get(route),
        }
    }
}

/// A WebSocket endpoint with its routes, mounted on an `App` like any other service.
///
/// ```
/// use actix_web::{web, App, HttpResponse};
/// use serde::{Deserialize, Serialize};
/// use switchboard::prelude::*;
///
/// #[derive(Deserialize)]
/// struct Join { room: String }
/// #[derive(Serialize)]
/// struct Joined { room: String }
///
/// #[switchboard::message("join")]
/// async fn join(ch: Channel, msg: Join) -> Result<Joined, ChannelError> {
///     Ok(Joined { room: msg.room })
/// }
///
/// let chat = ChannelRoute::new("/ws/chat").message(join);
/// let app = App::new()
///     .service(chat.clone())
///     .route("/health", web::get().to(HttpResponse::Ok));
/// ```
pub struct ChannelRoute<S = ()> {
    path: String,
    def: ChannelDefBuilder<S>,
    _session: PhantomData<fn() -> S>,
}

struct ChannelDefBuilder<S> {
    joins: Joins<S>,
    config: ChannelConfig,
    routes: Vec<Handler<S>>,
    fallback: Option<Handler<S>>,
    binary: Option<Handler<S>>,
    on_connect: Option<Arc<dyn ConnectHandler<S>>>,
    on_disconnect: Option<Arc<dyn DisconnectHandler<S>>>,
    on_open: Option<OpenHook<S>>,
    open: Arc<AtomicUsize>,
}

impl<S> Clone for ChannelRoute<S> {
    fn clone(&self) -> Self {
        ChannelRoute {
            path: self.path.clone(),
            def: ChannelDefBuilder {
                joins: self.def.joins.clone(),
                config: self.def.config.clone(),
                routes: self.def.routes.clone(),
                fallback: self.def.fallback.clone(),
                binary: self.def.binary.clone(),
                on_connect: self.def.on_connect.clone(),
                on_disconnect: self.def.on_disconnect.clone(),
                on_open: self.def.on_open.clone(),
                open: self.def.open.clone(),
            },
            _session: PhantomData,
        }
    }
}

impl<S: 'static> ChannelRoute<S> {
    /// A channel at `path` (an actix-web resource path: `/ws/{room}` binds `room`).
    pub fn new(path: impl Into<String>) -> Self {
        ChannelRoute {
            path: path.into(),
            def: ChannelDefBuilder {
                joins: Joins::default(),
                config: ChannelConfig::default(),
                routes: Vec::new(),
                fallback: None,
                binary: None,
                on_connect: None,
                on_disconnect: None,
                on_open: None,
                open: Arc::new(AtomicUsize::new(0)),
            },
            _session: PhantomData,
        }
    }

    /// Adds a routed handler (from `#[switchboard::message("route")]`). A later handler for
    /// the same route replaces an earlier one.
    pub fn message(mut self, handler: impl MessageHandler<S>) -> Self {
        self.def.routes.push(Arc::new(handler));
        self
    }

    /// The handler for messages whose route has no handler (`$default`). Without one they get
    /// `unknown_route`.
    pub fn fallback(mut self, handler: impl MessageHandler<S>) -> Self {
        self.def.fallback = Some(Arc::new(handler));
        self
    }

    /// The handler for binary frames (from `#[switchboard::on_binary]`). Without one they get
    /// `binary_unsupported`.
    pub fn on_binary(mut self, handler: impl MessageHandler<S>) -> Self {
        self.def.binary = Some(Arc::new(handler));
        self
    }

    /// Runs on every upgrade request: rejects it, or accepts it with the session value.
    pub fn on_connect(mut self, handler: impl ConnectHandler<S>) -> Self {
        self.def.on_connect = Some(Arc::new(handler));
        self
    }

    /// Runs exactly once when a connection ends, whatever ended it.
    pub fn on_disconnect(mut self, handler: impl DisconnectHandler<S>) -> Self {
        self.def.on_disconnect = Some(Arc::new(handler));
        self
    }

    /// Lets clients join topics matching `pattern` (`room:*`) through the built-in
    /// `subscribe` route when `guard` agrees. Rules are tried in order; the first match
    /// decides.
    pub fn join(mut self, pattern: &str, guard: impl JoinGuard<S>) -> Self {
        self.def
            .joins
            .guards
            .push((TopicPattern::new(pattern), Arc::new(guard)));
        self
    }

    /// Lets any client of this channel join topics matching `pattern`.
    pub fn allow_join(self, pattern: &str) -> Self {
        self.join(pattern, |_: Channel<S>, _: String| async { Ok(()) })
    }

    /// Puts connections that join a topic through the built-in route into its presence, under
    /// the key and metadata the rule gives (`None`: not tracked).
    ///
    /// ```
    /// use switchboard::prelude::*;
    ///
    /// #[derive(Clone)]
    /// struct User { name: String }
    ///
    /// let route = ChannelRoute::<User>::new("/ws")
    ///     .allow_join("room:*")
    ///     .presence(|ch: Channel<User>, _topic: String| async move {
    ///         let user = ch.session()?;
    ///         Some((user.name, serde_json::json!({ "id": ch.id() })))
    ///     });
    /// ```
    pub fn presence(mut self, rule: impl PresenceRule<S>) -> Self {
        self.def.joins.presence = Some(Arc::new(rule));
        self
    }

    pub(crate) fn on_open(mut self, hook: impl Fn(&Channel<S>) + Send + Sync + 'static) -> Self {
        self.def.on_open = Some(Arc::new(hook));
        self
    }

    /// Refuse connections that `on_connect` accepted without a session (HTTP 401).
    pub fn auth(mut self, required: bool) -> Self {
        self.def.config.require_session = required;
        self
    }

    /// Where the route key sits: a field name, a dotted path, or `$request.body.<field>`.
    ///
    /// # Panics
    /// When the expression is not one of those (a configuration mistake, found at startup).
    pub fn route_key(mut self, expr: &str) -> Self {
        match RouteKey::parse(expr) {
            Ok(key) => self.def.config.route_key = key,
            Err(e) => panic!("{e}"),
        }
        self
    }

    /// Accepts WebSocket connections from these origins (plus the same host).
    pub fn allowed_origins<I, O>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = O>,
        O: Into<String>,
    {
        self.def.config.origins = Origins::List(origins.into_iter().map(Into::into).collect());
        self
    }

    /// Accepts connections from any origin.
    pub fn allow_any_origin(mut self) -> Self {
        self.def.config.origins = Origins::Any;
        self
    }

    /// Caps open connections on this channel.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.def.config.max_connections = n;
        self
    }

    /// Largest accepted frame in bytes.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.def.config.max_frame_size = bytes;
        self
    }

    /// Ping interval and idle timeout.
    pub fn heartbeat(mut self, interval: Duration, idle_timeout: Duration) -> Self {
        self.def.config.heartbeat_interval = interval;
        self.def.config.idle_timeout = idle_timeout;
        self
    }

    /// Outbound queue length and what happens when it is full.
    pub fn outbound_queue(mut self, capacity: usize, policy: SlowConsumerPolicy) -> Self {
        self.def.config.outbound_capacity = capacity;
        self.def.config.slow_consumer = policy;
        self
    }

    /// Messages of one connection that may wait while a handler runs; more get `overloaded`.
    pub fn inbound_queue(mut self, capacity: usize) -> Self {
        self.def.config.inbound_capacity = capacity.max(1);
        self
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: ChannelConfig) -> Self {
        self.def.config = config;
        self
    }

    /// The configuration as it stands.
    pub fn config_ref(&self) -> &ChannelConfig {
        &self.def.config
    }

    /// Connections open right now on this channel.
    pub fn open_connections(&self) -> usize {
        self.def.open.load(Ordering::Relaxed)
    }

    fn build(self) -> (String, ChannelDef<S>) {
        let b = self.def;
        let mut routes = HashMap::with_capacity(b.routes.len() + 2);
        if !b.joins.guards.is_empty() {
            // Built-ins first: a handler of the user's for the same route replaces them.
            let joins = Arc::new(b.joins);
            routes.insert(
                Box::<str>::from(SUBSCRIBE),
                Arc::new(SubscribeRoute(joins)) as Handler<S>,
            );
            routes.insert(
                Box::<str>::from(UNSUBSCRIBE),
                Arc::new(UnsubscribeRoute) as Handler<S>,
            );
        }
        for h in b.routes {
            routes.insert(Box::<str>::from(h.route()), h);
        }
        (
            self.path.clone(),
            ChannelDef {
                path: Arc::from(self.path.as_str()),
                route_field: Rc::from(b.config.route_key.reply_field()),
                app: RefCell::new(None),
                beats: Rc::new(RefCell::new(Vec::new())),
                beating: std::cell::Cell::new(false),
                config: b.config,
                routes: Routes::new(routes),
                fallback: b.fallback,
                binary: b.binary,
                on_connect: b.on_connect,
                on_disconnect: b.on_disconnect,
                on_open: b.on_open,
                open: b.open,
            },
        )
    }
}

impl<S: 'static> HttpServiceFactory for ChannelRoute<S> {
    fn register(self, config: &mut AppService) {
        let (path, def) = self.build();
        let def = Rc::new(def);
        let resource = web::resource(path).route(web::get().to(
            move |req: HttpRequest, payload: web::Payload| {
                let def = def.clone();
                async move { Ok::<_, actix_web::Error>(accept(def, req, payload).await) }
            },
        ));
        HttpServiceFactory::register(resource, config)
    }
}

/// Counts a connection against its channel's cap for as long as it lives.
pub(crate) struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    fn acquire(open: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        let prev = open.fetch_add(1, Ordering::AcqRel);
        if prev >= max {
            open.fetch_sub(1, Ordering::AcqRel);
            None
        } else {
            Some(OpenGuard(open.clone()))
        }
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn accept<S: 'static>(
    def: Rc<ChannelDef<S>>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let cfg = &def.config;
    if !cfg.origins.allows(&req) {
        return Error::forbidden("origin not allowed").error_response();
    }
    if let Err(e) = actix_http::ws::verify_handshake(req.head()) {
        return e.error_response();
    }
    let Some(guard) = OpenGuard::acquire(&def.open, cfg.max_connections) else {
        return Error::TooManyConnections.error_response();
    };
    // Known before `on_connect`, which can extract it (a gateway tells its `$connect` function).
    let id = ConnectionId::next();
    req.extensions_mut().insert(id);
    let session = match &def.on_connect {
        Some(h) => match h.call(req.clone()).await {
            Ok(s) => s,
            Err(e) => return e.error_response(),
        },
        None => None,
    };
    if cfg.require_session && session.is_none() {
        return Error::unauthorized("a session is required").error_response();
    }
    let (response, ws, incoming) = match transport::upgrade(&req, payload, cfg.max_frame_size) {
        Ok(parts) => parts,
        Err(e) => return e.error_response(),
    };
    let out = Arc::new(Outbound::new(cfg.outbound_capacity, cfg.slow_consumer));
    let hub = Hub::of(&req);
    let entry = Arc::new(ConnEntry::new(out.clone(), def.path.clone(), &req));
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
            route_field: def.route_field.clone(),
            connected_at: SystemTime::now(),
            hub,
            entry,
        }),
    };
    drop(req);
    Connection::new(def, channel, ws, incoming, guard).start();
    response
}

/// One open connection, as its handlers see it: identity, the opening request, the session
/// value, and a way to send to the client.
///
/// Cheap to clone; all clones are the same connection. It lives on the connection's thread
/// (handlers run there); reach a connection from elsewhere by its [`id`](Channel::id).
pub struct Channel<S = ()> {
    inner: Rc<ConnInner<S>>,
}

pub(crate) struct ConnInner<S> {
    id: ConnectionId,
    opening: Opening,
    /// The channel's app-data request (see `ChannelDef::app`): a reference count.
    app: HttpRequest,
    session: RefCell<Option<S>>,
    out: Arc<Outbound>,
    route_field: Rc<str>,
    connected_at: SystemTime,
    hub: Hub,
    entry: Arc<ConnEntry>,
}

/// What a connection keeps of its opening request: a compact copy, so that the request goes
/// back to actix's pool and an idle connection stays small.
pub(crate) struct Opening {
    /// `name\tvalue\n` per header with a UTF-8 value (names are lowercase).
    headers: Box<str>,
    params: Box<[(Box<str>, Box<str>)]>,
    query: Box<str>,
    peer: Option<SocketAddr>,
}

impl Opening {
    fn of(req: &HttpRequest) -> Self {
        let mut headers = String::new();
        for (name, value) in req.headers() {
            if let Ok(v) = value.to_str() {
                headers.push_str(name.as_str());
                headers.push('\t');
                headers.push_str(v);
                headers.push('\n');
            }
        }
        Opening {
            headers: headers.into_boxed_str(),
            params: req
                .match_info()
                .iter()
                .map(|(k, v)| (Box::from(k), Box::from(v)))
                .collect(),
            query: Box::from(req.query_string()),
            peer: req.peer_addr(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|line| {
            let (k, v) = line.split_once('\t')?;
            k.eq_ignore_ascii_case(name).then_some(v)
        })
    }

    fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers
            .lines()
            .filter_map(|line| line.split_once('\t'))
    }
}

impl<S> Clone for Channel<S> {
    fn clone(&self) -> Self {
        Channel {
            inner: self.inner.clone(),
        }
    }
}

impl<S> std::fmt::Debug for Channel<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("id", &self.inner.id)
            .finish()
    }
}

impl<S> Channel<S> {
    /// This connection's id, unique across the deployment.
    pub fn id(&self) -> ConnectionId {
        self.inner.id
    }

    /// A header of the opening request, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.inner.opening.header(name)
    }

    /// The opening request's headers with UTF-8 values, names in lowercase.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.inner.opening.headers()
    }

    /// The opening request's query string (without `?`).
    pub fn query_string(&self) -> &str {
        &self.inner.opening.query
    }

    /// The opening request's query string, deserialized.
    pub fn query<T: DeserializeOwned>(&self) -> Result<T, Error> {
        web::Query::<T>::from_query(self.query_string())
            .map(web::Query::into_inner)
            .map_err(|e| Error::new("bad_query", e.to_string()))
    }

    /// A path parameter of the channel's route (`/ws/{room}`).
    pub fn path_param(&self, name: &str) -> Option<&str> {
        self.inner
            .opening
            .params
            .iter()
            .find(|(k, _)| &**k == name)
            .map(|(_, v)| &**v)
    }

    /// The client's address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.inner.opening.peer
    }

    /// When the connection opened.
    pub fn connected_at(&self) -> SystemTime {
        self.inner.connected_at
    }

    /// App data registered on the `App` (`App::app_data`).
    pub fn app_data<T: 'static>(&self) -> Option<&T> {
        self.inner.app.app_data::<T>()
    }

    /// A copy of the session value, if there is one.
    pub fn session(&self) -> Option<S>
    where
        S: Clone,
    {
        self.inner.session.borrow().clone()
    }

    /// Runs `f` with the session value (no clone).
    pub fn with_session<R>(&self, f: impl FnOnce(Option<&S>) -> R) -> R {
        f(self.inner.session.borrow().as_ref())
    }

    /// Replaces the session value (login over the socket); returns the old one.
    pub fn set_session(&self, session: S) -> Option<S> {
        self.inner.session.replace(Some(session))
    }

    /// Removes the session value (logout); returns it.
    pub fn clear_session(&self) -> Option<S> {
        self.inner.session.take()
    }

    /// Pushes `{"event": event, "data": data}` to the client.
    ///
    /// Never waits: when the outbound queue is full the channel's slow-consumer policy applies
    /// and this returns `Err(Closed)` if the connection is (now) closing.
    pub fn send<T: Serialize + ?Sized>(&self, event: &str, data: &T) -> Result<(), Error> {
        let frame = protocol::encode_event(event, data)?;
        match self.inner.out.push_text(frame, Class::Droppable) {
            Ok(()) | Err(Refused::Dropped) => Ok(()),
            Err(Refused::Closed) => Err(Error::Closed),
        }
    }

    /// Closes the connection normally (1000).
    pub fn close(&self) {
        self.close_with(close_code::NORMAL, "");
    }

    /// Closes the connection with a code and a reason (at most 123 bytes are sent).
    /// Frames already queued go out first.
    pub fn close_with(&self, code: u16, reason: &str) {
        self.inner.out.close(code, reason);
    }

    /// Whether the connection is closing or closed.
    pub fn is_closed(&self) -> bool {
        self.inner.out.is_closing()
    }

    /// Frames dropped for this client under the drop-newest slow-consumer policy.
    pub fn dropped(&self) -> u64 {
        self.inner.out.dropped()
    }

    /// Frames waiting in this connection's outbound queue.
    pub fn queued(&self) -> usize {
        self.inner.out.len()
    }

    /// The hub this connection is registered with.
    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    /// Subscribes this connection to `topic`: publications reach the client as
    /// `{"topic":T,"event":E,"data":D}` frames. Resolves once the broker has it.
    pub async fn subscribe(&self, topic: &str) -> Result<Subscribed, Error> {
        self.subscribe_from(topic, None).await
    }

    /// Subscribes, first replaying what the client missed since `position` (on topics with
    /// history). `recovered` in the answer says whether that worked.
    pub async fn subscribe_from(
        &self,
        topic: &str,
        position: Option<Position>,
    ) -> Result<Subscribed, Error> {
        self.subscribe_with(topic, position, None).await
    }

    /// Subscribes, optionally recovering from `position`, and optionally entering the topic's
    /// presence under `presence = (key, meta)` in the same step (one `presence_state` for the
    /// client, including itself).
    pub async fn subscribe_with(
        &self,
        topic: &str,
        position: Option<Position>,
        presence: Option<(String, serde_json::Value)>,
    ) -> Result<Subscribed, Error> {
        let topic: Arc<str> = Arc::from(topic);
        let sub = self.inner.entry.subscriber(self.id());
        self.subscribe_request(SubscribeRequest {
            recover: position,
            presence,
            ..SubscribeRequest::new(topic, sub)
        })
        .await
    }

    /// Subscribes this connection with every option of a [`SubscribeRequest`] (recovery, the
    /// last N publications, presence). Its `topic` and `subscriber` are this connection's:
    /// build it with `SubscribeRequest::new(topic, channel.subscriber())`.
    pub async fn subscribe_request(&self, req: SubscribeRequest) -> Result<Subscribed, Error> {
        let topic = req.topic.clone();
        let engine = self.inner.hub.engine();
        let sub = engine.subscribe(req);
        crate::hub::with_topic(engine, &self.inner.entry, self.id(), topic, sub).await
    }

    /// This connection as a topic subscriber: its deliveries go to the client.
    pub fn subscriber(&self) -> Subscriber {
        self.inner.entry.subscriber(self.id())
    }

    /// Unsubscribes this connection from `topic` (and drops its presence there).
    pub fn unsubscribe(&self, topic: &str) {
        let topic: Arc<str> = Arc::from(topic);
        self.inner.entry.remove_topic(&topic);
        self.inner.hub.engine().unsubscribe(topic, self.id());
    }

    /// Topics this connection is subscribed to.
    pub fn subscriptions(&self) -> Vec<String> {
        self.inner
            .entry
            .topics()
            .iter()
            .map(|t| t.to_string())
            .collect()
    }

    /// Publishes to every subscriber of `topic`, this connection included if subscribed.
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        event: &str,
        data: &T,
    ) -> Result<(), Error> {
        self.inner.hub.publish(topic, event, data).await
    }

    /// Publishes to every subscriber of `topic` but this connection.
    pub async fn broadcast_from<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        event: &str,
        data: &T,
    ) -> Result<(), Error> {
        let data = crate::hub::to_raw(data)?;
        self.inner
            .hub
            .publish_raw(topic, event, data, Some(self.id()))
            .await
    }

    /// Announces this connection on `topic`'s presence under `key` (a user id: several
    /// connections of one key show as one entry) with `meta`. The connection receives the
    /// topic's `presence_state`; subscribers get a `presence_diff` when the key appears, and
    /// again when its last connection leaves.
    pub async fn track<M: Serialize + ?Sized>(
        &self,
        topic: &str,
        key: &str,
        meta: &M,
    ) -> Result<(), Error> {
        self.track_as(self.subscriber(), topic, key, meta).await
    }

    /// `track` for this connection with another sink (a session's).
    pub(crate) async fn track_as<M: Serialize + ?Sized>(
        &self,
        subscriber: Subscriber,
        topic: &str,
        key: &str,
        meta: &M,
    ) -> Result<(), Error> {
        let meta = serde_json::to_value(meta)?;
        let topic: Arc<str> = Arc::from(topic);
        let engine = self.inner.hub.engine();
        let track = engine.track(topic.clone(), subscriber, key.to_owned(), meta);
        // Presence goes when the connection does: the topic is recorded for cleanup.
        crate::hub::with_topic(engine, &self.inner.entry, self.id(), topic, track).await
    }

    /// Removes this connection from `topic`'s presence.
    pub fn untrack(&self, topic: &str) {
        self.inner.hub.engine().untrack(Arc::from(topic), self.id());
    }

    /// A channel bound to a connection that lives elsewhere: a serverless function's view of
    /// a gateway connection during one invocation (`switchboard::serverless::function`). There is no
    /// socket: `send` and `close` queue into `out`, which the caller drains and forwards;
    /// topics go through `hub`'s engine. `request` stands for the opening request (headers,
    /// query, peer address) and carries the app data.
    #[cfg_attr(not(feature = "gateway"), allow(dead_code))]
    pub(crate) fn detached(
        id: ConnectionId,
        request: HttpRequest,
        session: Option<S>,
        route_field: &str,
        connected_at: SystemTime,
        hub: Hub,
        out: Arc<Outbound>,
    ) -> Channel<S> {
        let entry = Arc::new(ConnEntry::new(
            out.clone(),
            Arc::from(request.path()),
            &request,
        ));
        Channel {
            inner: Rc::new(ConnInner {
                id,
                opening: Opening::of(&request),
                app: request,
                session: RefCell::new(session),
                out,
                route_field: Rc::from(route_field),
                connected_at,
                hub,
                entry,
            }),
        }
    }

    pub(crate) fn entry(&self) -> &Arc<ConnEntry> {
        &self.inner.entry
    }

    pub(crate) fn route_field(&self) -> &str {
        &self.inner.route_field
    }

    pub(crate) fn outbound(&self) -> &Arc<Outbound> {
        &self.inner.out
    }
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
        let value = self.header("authorization")?;
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
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
    pub fn query_as<T: DeserializeOwned>(&self) -> Result<T, Error> {
        web::Query::<T>::from_query(self.0.query_string())
            .map(web::Query::into_inner)
            .map_err(|e| Error::new("bad_query", e.to_string()))
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
}

impl FromRequest for ConnectRequest {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(Ok(ConnectRequest(req.clone())))
    }
}

/// One task per channel and worker pings its connections and closes idle ones (a task per
/// connection would cost memory on every idle connection).
mod heartbeat {
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::sync::{Arc, Weak};
    use std::time::Duration;

    use super::ChannelDef;
    use crate::hub::ConnEntry;

    pub(super) fn watch<S>(def: &Rc<ChannelDef<S>>, entry: &Arc<ConnEntry>) {
        def.beats.borrow_mut().push(Arc::downgrade(entry));
        if !def.beating.replace(true) {
            let (interval, idle) = (def.config.heartbeat_interval, def.config.idle_timeout);
            actix_rt::spawn(run(def.beats.clone(), interval, idle));
        }
    }

    /// Lives as long as the worker's runtime.
    async fn run(beats: Rc<RefCell<Vec<Weak<ConnEntry>>>>, interval: Duration, idle: Duration) {
        let period = interval.max(Duration::from_millis(1));
        let mut ticks =
            actix_rt::time::interval_at(actix_rt::time::Instant::now() + period, period);
        loop {
            ticks.tick().await;
            beats
                .borrow_mut()
                .retain(|w| w.upgrade().is_some_and(|entry| entry.beat(idle)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn origin_rules() {
        let req = |origin: Option<&str>| {
            let mut r = TestRequest::default().insert_header(("host", "chat.example:8080"));
            if let Some(o) = origin {
                r = r.insert_header(("origin", o));
            }
            r.to_http_request()
        };
        assert!(Origins::SameHost.allows(&req(None)));
        assert!(Origins::SameHost.allows(&req(Some("http://chat.example:8080"))));
        assert!(!Origins::SameHost.allows(&req(Some("http://evil.example"))));
        assert!(Origins::Any.allows(&req(Some("http://evil.example"))));
        let list = Origins::List(vec!["https://app.example".into()]);
        assert!(list.allows(&req(Some("https://app.example"))));
        assert!(!list.allows(&req(Some("https://evil.example"))));
    }

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
