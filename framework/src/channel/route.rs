//! [`ChannelRoute`]: a channel's routes, hooks and settings, mounted on an `App`.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{AppService, HttpServiceFactory};
use actix_web::{web, HttpRequest};

use super::config::*;
use super::def::{ChannelDef, OpenHook, UserKey};
use super::handle::*;
use super::router::{Fallback, Handler, RouteTable, Router};
use super::upgrade::*;
use crate::channel::outbound::SlowConsumerPolicy;
use crate::engine::TopicPattern;
use crate::handler::refresh::{RefreshHandler, RefreshRoute, REFRESH};
use crate::handler::subscribe::{
    Guard, JoinGuard, Joins, PresenceRule, SubscribeRoute, TokenGuard, UnsubscribeRoute, SUBSCRIBE,
    UNSUBSCRIBE,
};
use crate::handler::{ConnectHandler, DisconnectHandler, MessageHandler};
use crate::protocol::RouteKey;

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
    /// Push events, topic events, error codes and connect parameters the channel declares
    /// for its generated types ([`schema`](crate::schema)).
    #[cfg(feature = "schema")]
    pub(crate) declared: crate::handler::describe::Declared,
    _session: PhantomData<fn() -> S>,
}

struct ChannelDefBuilder<S> {
    joins: Joins<S>,
    config: ChannelConfig,
    routes: Vec<Handler<S>>,
    fallback: Fallback<S>,
    binary: Option<Handler<S>>,
    on_connect: Option<Arc<dyn ConnectHandler<S>>>,
    on_disconnect: Option<Arc<dyn DisconnectHandler<S>>>,
    on_open: Option<OpenHook<S>>,
    open: Arc<AtomicUsize>,
    user_key: Option<UserKey<S>>,
    on_refresh: Option<Arc<dyn RefreshHandler<S>>>,
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
                user_key: self.def.user_key.clone(),
                on_refresh: self.def.on_refresh.clone(),
            },
            #[cfg(feature = "schema")]
            declared: self.declared.clone(),
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
                fallback: Fallback::None,
                binary: None,
                on_connect: None,
                on_disconnect: None,
                on_open: None,
                open: Arc::new(AtomicUsize::new(0)),
                user_key: None,
                on_refresh: None,
            },
            #[cfg(feature = "schema")]
            declared: Default::default(),
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
        self.def.fallback = Fallback::Messages(Arc::new(handler));
        self
    }

    /// A fallback that also takes the text frames that are not messages (not JSON, no route
    /// key, a bad `ref`) as raw text, the way API Gateway's `$default` does: the gateway's
    /// forwarder. Replacing it with [`fallback`](Self::fallback) turns that off.
    #[cfg_attr(not(feature = "gateway"), allow(dead_code))]
    pub(crate) fn raw_fallback(mut self, handler: impl MessageHandler<S>) -> Self {
        self.def.fallback = Fallback::Raw(Arc::new(handler));
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
            .push((TopicPattern::new(pattern), Guard::Plain(Arc::new(guard))));
        self
    }

    /// Lets clients join topics matching `pattern` with a token of the topic's own (`"token"`
    /// in the subscribe's data), which `guard` checks and which may expire. Before it does,
    /// the client is asked for a new one (`{"refresh":{"topic":..}}`), checked by the same
    /// guard; without one the subscription ends with an `unsubscribed` frame. See
    /// [`TokenGuard`](crate::handler::subscribe::TokenGuard) for an example.
    pub fn join_with_token(mut self, pattern: &str, guard: impl TokenGuard<S>) -> Self {
        self.def
            .joins
            .guards
            .push((TopicPattern::new(pattern), Guard::Token(Arc::new(guard))));
        self
    }

    /// Names each connection's user from its session (connections without a session have
    /// none). Then [`Hub::send_to_user`](crate::Hub::send_to_user),
    /// [`Hub::disconnect_user`](crate::Hub::disconnect_user) and
    /// [`Hub::user_connections`](crate::Hub::user_connections) reach all of a user's
    /// connections (on every node of the engine), a user may have at most
    /// [`max_connections_per_user`](Self::max_connections_per_user) connections and
    /// [`max_user_topics`](Self::max_user_topics) topics, and the built-in `subscribe` enters
    /// presence keyed by user unless a [`presence`](Self::presence) rule says otherwise. The
    /// key is read once, when the connection opens.
    ///
    /// ```
    /// use switchboard::prelude::*;
    ///
    /// #[derive(Clone)]
    /// struct User { id: String }
    ///
    /// let route = ChannelRoute::<User>::new("/ws")
    ///     .user(|u: &User| u.id.clone())
    ///     .max_connections_per_user(5);
    /// ```
    pub fn user(mut self, key: impl Fn(&S) -> String + Send + Sync + 'static) -> Self {
        self.def.user_key = Some(Arc::new(key));
        self
    }

    /// Open connections one user may have (on every node of the engine); one more is refused
    /// at the upgrade with HTTP 429 `too_many_user_connections`. Default: 100.
    pub fn max_connections_per_user(mut self, n: usize) -> Self {
        self.def.config.max_connections_per_user = n;
        self
    }

    /// Topics all connections of one user may hold together on this node; a subscribe beyond
    /// it gets `too_many_user_topics`. Default: 1000.
    pub fn max_user_topics(mut self, n: usize) -> Self {
        self.def.config.max_user_topics = n;
        self
    }

    /// Checks new connection tokens sent on the built-in `refresh` route (see
    /// [`RefreshHandler`](crate::handler::refresh::RefreshHandler) for an example). Give a
    /// connection an expiry in `on_connect` with
    /// [`ConnectRequest::set_expiry`](crate::ConnectRequest::set_expiry).
    pub fn on_refresh(mut self, handler: impl RefreshHandler<S>) -> Self {
        self.def.on_refresh = Some(Arc::new(handler));
        self
    }

    /// How long before a token expires the client is asked for a new one (at most half of
    /// the token's remaining lifetime). Default: 30 s.
    pub fn refresh_lead(mut self, lead: Duration) -> Self {
        self.def.config.refresh_lead = lead;
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

    /// Messages (text or binary) one connection may send: `per_second` on average, up to
    /// `burst` at once. A message over the rate gets `rate_limited` (answering its `ref`) and
    /// its handler does not run. Default: 100 per second, bursts of 200. `per_second` 0 turns
    /// the limit off.
    pub fn rate_limit(mut self, per_second: u32, burst: u32) -> Self {
        self.def.config.message_rate = per_second;
        self.def.config.message_burst = burst.max(1);
        self
    }

    /// A connection with more than `refused` messages refused as `rate_limited` within 10
    /// seconds is closed with 1008 (`rate limited`). Default: 100.
    pub fn rate_limited_close_after(mut self, refused: u32) -> Self {
        self.def.config.rate_limited_close_after = refused;
        self
    }

    /// Topics one connection may hold at once (subscriptions and presence, from the built-in
    /// `subscribe` route or any [`Topics`](crate::Topics) handle); one more gets
    /// `too_many_topics`. Default: 100.
    pub fn max_topics(mut self, n: usize) -> Self {
        self.def.config.max_topics = n;
        self
    }

    /// Longest topic name, in bytes; longer ones get `bad_topic`. Default: 256.
    pub fn max_topic_length(mut self, bytes: usize) -> Self {
        self.def.config.max_topic_length = bytes;
        self
    }

    /// Largest presence metadata as JSON, in bytes (`track`, subscribe with presence); larger
    /// gets `presence_too_large`. Default: 4 KiB.
    pub fn max_presence_size(mut self, bytes: usize) -> Self {
        self.def.config.max_presence_size = bytes;
        self
    }

    /// Whether the channel is also reachable over HTTP (a Server-Sent Events stream for what
    /// the server sends, `POST`s for what the client sends), for clients behind proxies that
    /// break WebSocket upgrades; see `docs/http-transport.md`. Default: on.
    ///
    /// ```
    /// use switchboard::prelude::*;
    ///
    /// let route = ChannelRoute::<()>::new("/ws").http_fallback(false);
    /// assert!(!route.config_ref().http_fallback);
    /// ```
    pub fn http_fallback(mut self, on: bool) -> Self {
        self.def.config.http_fallback = on;
        self
    }

    /// Largest body of one upstream `POST` of the HTTP transport, in bytes (HTTP 413
    /// beyond). Default: 1 MiB.
    ///
    /// ```
    /// use switchboard::prelude::*;
    ///
    /// let route = ChannelRoute::<()>::new("/ws").http_max_body(256 * 1024).http_max_frames(20);
    /// assert_eq!(route.config_ref().http_max_body, 256 * 1024);
    /// ```
    pub fn http_max_body(mut self, bytes: usize) -> Self {
        self.def.config.http_max_body = bytes;
        self
    }

    /// Frames in one upstream `POST` of the HTTP transport (HTTP 413 beyond). Default: 100.
    pub fn http_max_frames(mut self, n: usize) -> Self {
        self.def.config.http_max_frames = n.max(1);
        self
    }

    /// Upstream batches of one HTTP connection held for reordering while an earlier one is
    /// missing (HTTP 429 beyond). Default: 16.
    ///
    /// ```
    /// use switchboard::prelude::*;
    ///
    /// let route = ChannelRoute::<()>::new("/ws").max_pending_batches(4);
    /// assert_eq!(route.config_ref().max_pending_batches, 4);
    /// ```
    pub fn max_pending_batches(mut self, n: usize) -> Self {
        self.def.config.max_pending_batches = n.max(1);
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
        let mut routes: Vec<(Box<str>, Handler<S>)> = Vec::with_capacity(b.routes.len() + 3);
        let tokens = b
            .joins
            .guards
            .iter()
            .any(|(_, g)| matches!(g, Guard::Token(_)));
        let joins = Arc::new(b.joins);
        // Built-ins first: a handler of the user's for the same route replaces them.
        if !joins.guards.is_empty() {
            routes.push((SUBSCRIBE.into(), Arc::new(SubscribeRoute(joins.clone()))));
            routes.push((UNSUBSCRIBE.into(), Arc::new(UnsubscribeRoute)));
        }
        if tokens || b.on_refresh.is_some() {
            let refresh = RefreshRoute {
                handler: b.on_refresh,
                joins,
            };
            routes.push((REFRESH.into(), Arc::new(refresh)));
        }
        routes.extend(b.routes.into_iter().map(|h| (Box::from(h.route()), h)));
        let router = Router::new(
            RouteTable::new(routes),
            b.fallback,
            b.binary,
            b.config.route_key.clone(),
        );
        (
            self.path.clone(),
            ChannelDef {
                path: Arc::from(self.path.as_str()),
                app: RefCell::new(None),
                beats: Rc::default(),
                beating: std::cell::Cell::new(false),
                config: b.config,
                router,
                on_connect: b.on_connect,
                on_disconnect: b.on_disconnect,
                on_open: b.on_open,
                open: b.open,
                user_key: b.user_key,
                meters: Default::default(),
            },
        )
    }
}

#[cfg(feature = "schema")]
impl<S: 'static> ChannelRoute<S> {
    /// What [`schema`](crate::schema) describes: the routes with their types, the join
    /// patterns, presence, the connect parameters and the declarations.
    pub(crate) fn schema_parts(&self) -> crate::handler::describe::Parts<'_> {
        crate::handler::describe::Parts {
            path: &self.path,
            route_key: &self.def.config.route_key,
            routes: (self.def.routes.iter())
                .map(|h| (h.route().to_owned(), h.types()))
                .collect(),
            joins: (self.def.joins.guards.iter())
                .map(|(pattern, _)| pattern.as_str())
                .collect(),
            presence: self.def.joins.presence.is_some(),
            tokens: self.def.on_refresh.is_some()
                || (self.def.joins.guards.iter()).any(|(_, g)| matches!(g, Guard::Token(_))),
            connect: self.def.on_connect.as_ref().and_then(|c| c.connect_query()),
            declared: &self.declared,
        }
    }
}

impl<S: 'static> HttpServiceFactory for ChannelRoute<S> {
    fn register(self, config: &mut AppService) {
        let (path, def) = self.build();
        let def = Rc::new(def);
        let http = def.config.http_fallback;
        let get = def.clone();
        let mut resource = web::resource(path).route(web::get().to(
            move |req: HttpRequest, payload: web::Payload| {
                let def = get.clone();
                async move {
                    Ok::<_, actix_web::Error>(if http && super::http::wants_stream(&req) {
                        accept_stream(def, req).await
                    } else {
                        accept(def, req, payload).await
                    })
                }
            },
        ));
        if http {
            let (post, delete, options) = (def.clone(), def.clone(), def);
            resource = resource
                .route(
                    web::post().to(move |req: HttpRequest, payload: web::Payload| {
                        let def = post.clone();
                        async move {
                            Ok::<_, actix_web::Error>(super::http::post(def, req, payload).await)
                        }
                    }),
                )
                .route(web::delete().to(move |req: HttpRequest| {
                    let def = delete.clone();
                    async move { Ok::<_, actix_web::Error>(super::http::delete(def, req).await) }
                }))
                .route(web::method(actix_web::http::Method::OPTIONS).to(
                    move |req: HttpRequest| {
                        let res = super::http::preflight(&options, &req);
                        async move { Ok::<_, actix_web::Error>(res) }
                    },
                ));
        }
        HttpServiceFactory::register(resource, config)
    }
}
