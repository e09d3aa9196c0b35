//! An admin page, served by the app itself and updated live over a Switchboard channel of its
//! own: channels with their open connections, topics with subscribers and presence, the
//! slowest consumers, recent errors by code, engine health, and forms to publish to a topic or
//! disconnect a connection. The page uses the shipped JS client and needs no build step.
//!
//! ```
//! use actix_web::App;
//! use switchboard::admin::Admin;
//!
//! // GET /admin?token=… opens the page (a cookie then keeps the token for the page's socket,
//! // /admin/ws); without the token, 401.
//! let app = App::new().service(Admin::with_token("/admin", "a long random secret"));
//! ```
//!
//! Protect it with a token ([`Admin::with_token`]: `Authorization: Bearer`, a `token` query
//! parameter, or the cookie the page sets) or with a check of the app's choosing
//! ([`Admin::with_guard`], e.g. its own session cookie). Anyone who passes can publish to any
//! topic and disconnect anyone: give it a secret of its own, and serve it over TLS.

use std::sync::Arc;
use std::time::Duration;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::{AppService, HttpServiceFactory};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::channel::{Channel, ChannelRoute};
use crate::error::ChannelError;
use crate::handler::{BoxFuture, ConnectHandler, MessageHandler, MessageRequest, Reply};
use crate::hub::Hub;
use crate::id::ConnectionId;
use crate::protocol::decode_payload;

/// The page.
const PAGE: &str = include_str!("page.html");
/// The cookie holding the token for the page's socket.
const COOKIE: &str = "switchboard_admin";
/// Topics shown (those with the most subscribers).
const TOPICS: usize = 100;
/// Slowest consumers shown.
const SLOWEST: usize = 10;

type Guard = Arc<dyn Fn(&HttpRequest) -> bool + Send + Sync>;

/// The admin page and its channel, mounted under one path. See the [module docs](self).
#[derive(Clone)]
pub struct Admin {
    path: String,
    auth: Auth,
    interval: Duration,
}

#[derive(Clone)]
enum Auth {
    Token(Arc<str>),
    Guard(Guard),
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("path", &self.path)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// The admin at `path`, for requests that show `token`. An empty token lets nobody in.
    pub fn with_token(path: &str, token: impl Into<String>) -> Self {
        Admin {
            path: normalize(path),
            auth: Auth::Token(Arc::from(token.into())),
            interval: Duration::from_secs(1),
        }
    }

    /// The admin at `path`, for requests that `guard` lets through (the page, its script and
    /// its socket's upgrade all ask it).
    ///
    /// ```
    /// use switchboard::admin::Admin;
    ///
    /// // Only from the machine itself (behind no proxy).
    /// let admin = Admin::with_guard("/admin", |req| {
    ///     req.peer_addr().is_some_and(|a| a.ip().is_loopback())
    /// });
    /// ```
    pub fn with_guard(
        path: &str,
        guard: impl Fn(&HttpRequest) -> bool + Send + Sync + 'static,
    ) -> Self {
        Admin {
            path: normalize(path),
            auth: Auth::Guard(Arc::new(guard)),
            interval: Duration::from_secs(1),
        }
    }

    /// How often the page gets fresh figures. Default: 1 s.
    pub fn interval(mut self, every: Duration) -> Self {
        self.interval = every.max(Duration::from_millis(50));
        self
    }
}

fn normalize(path: &str) -> String {
    let p = path.trim_end_matches('/');
    if p.starts_with('/') {
        p.to_owned()
    } else {
        format!("/{p}")
    }
}

impl Auth {
    /// Whether `req` may see the admin.
    fn allows(&self, req: &HttpRequest) -> bool {
        match self {
            Auth::Guard(g) => g(req),
            Auth::Token(t) => {
                token_of(req).is_some_and(|given| same(given.as_bytes(), t.as_bytes()))
            }
        }
    }
}

/// The token a request shows: bearer header, `token` query parameter, or the page's cookie.
fn token_of(req: &HttpRequest) -> Option<String> {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Some(t) = authorization.and_then(crate::channel::upgrade::bearer) {
        return Some(t.to_owned());
    }
    let query = web::Query::<TokenQuery>::from_query(req.query_string()).ok();
    if let Some(t) = query.and_then(|q| q.into_inner().token) {
        return Some(t);
    }
    req.cookie(COOKIE).map(|c| c.value().to_owned())
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// Compares without stopping at the first difference (the time taken does not tell how much
/// of a guess was right). An empty secret matches nothing.
fn same(given: &[u8], secret: &[u8]) -> bool {
    if secret.is_empty() || given.len() != secret.len() {
        return false;
    }
    given
        .iter()
        .zip(secret)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

fn refused() -> HttpResponse {
    HttpResponse::Unauthorized()
        .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({
            "error": {"code": "unauthorized", "message": "the admin needs its token"}
        }))
}

impl HttpServiceFactory for Admin {
    fn register(self, config: &mut AppService) {
        let auth = self.auth.clone();
        let base = self.path.clone();
        let page =
            web::resource(self.path.clone()).route(web::get().to(move |req: HttpRequest| {
                let auth = auth.clone();
                let base = base.clone();
                async move {
                    if !auth.allows(&req) {
                        return refused();
                    }
                    let mut resp = HttpResponse::Ok();
                    resp.insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
                        .insert_header((header::CACHE_CONTROL, "no-store"))
                        .insert_header(("x-frame-options", "DENY"));
                    if let Auth::Token(_) = &auth {
                        // The page's socket shows the token through this cookie: only to this
                        // path, never to scripts, never from other sites.
                        if let Some(t) = token_of(&req) {
                            resp.cookie(
                                Cookie::build(COOKIE, t)
                                    .path(base.clone())
                                    .http_only(true)
                                    .same_site(SameSite::Strict)
                                    .secure(req.connection_info().scheme() == "https")
                                    .finish(),
                            );
                        }
                    }
                    resp.body(PAGE.replace("__ADMIN_BASE__", &base))
                }
            }));
        HttpServiceFactory::register(page, config);
        HttpServiceFactory::register(
            crate::js::service(&format!("{}/switchboard.js", self.path)),
            config,
        );
        HttpServiceFactory::register(self.channel(), config);
    }
}

/// The page's connection: whether it is being sent figures already.
#[derive(Clone, Copy, Default)]
struct Watching(bool);

impl Admin {
    fn channel(&self) -> ChannelRoute<Watching> {
        let shared = Arc::new(Shared {
            interval: self.interval,
        });
        ChannelRoute::new(format!("{}/ws", self.path))
            .on_connect(Connect(self.auth.clone()))
            .auth(true)
            .message(Route::new("watch", Op::Watch, &shared))
            .message(Route::new("snapshot", Op::Snapshot, &shared))
            .message(Route::new("publish", Op::Publish, &shared))
            .message(Route::new("disconnect", Op::Disconnect, &shared))
            .rate_limit(50, 100)
    }
}

struct Connect(Auth);

impl ConnectHandler<Watching> for Connect {
    fn call(&self, req: HttpRequest) -> BoxFuture<Result<Option<Watching>, ChannelError>> {
        let ok = self.0.allows(&req);
        Box::pin(async move {
            if ok {
                Ok(Some(Watching(false)))
            } else {
                Err(ChannelError::unauthorized("the admin needs its token"))
            }
        })
    }
}

struct Shared {
    interval: Duration,
}

#[derive(Clone, Copy)]
enum Op {
    Watch,
    Snapshot,
    Publish,
    Disconnect,
}

struct Route {
    name: &'static str,
    op: Op,
    shared: Arc<Shared>,
}

impl Route {
    fn new(name: &'static str, op: Op, shared: &Arc<Shared>) -> Self {
        Route {
            name,
            op,
            shared: shared.clone(),
        }
    }
}

#[derive(Deserialize)]
struct PublishTo {
    topic: String,
    event: String,
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct Disconnect {
    id: ConnectionId,
    #[serde(default)]
    code: Option<u16>,
    #[serde(default)]
    reason: Option<String>,
}

impl MessageHandler<Watching> for Route {
    fn route(&self) -> &str {
        self.name
    }

    fn call(&self, req: MessageRequest<Watching>) -> BoxFuture<Result<Reply, ChannelError>> {
        let op = self.op;
        let every = self.shared.interval;
        Box::pin(async move {
            let ch = req.channel();
            let hub = ch.hub().clone();
            match op {
                Op::Snapshot => req.reply_json(&snapshot(&hub).await),
                Op::Watch => {
                    if !ch.session().is_some_and(|w| w.0) {
                        ch.set_session(Watching(true));
                        actix_rt::spawn(watch(ch.clone(), every));
                    }
                    req.reply_json(&snapshot(&hub).await)
                }
                Op::Publish => {
                    let p: PublishTo = decode_payload(req.data().unwrap_or("null"))?;
                    let data: Arc<RawValue> = match p.data {
                        Some(d) => Arc::from(d),
                        None => Arc::from(RawValue::from_string("null".to_owned())?),
                    };
                    hub.publish_raw(&p.topic, &p.event, data, None).await?;
                    req.reply_json(&())
                }
                Op::Disconnect => {
                    let d: Disconnect = decode_payload(req.data().unwrap_or("null"))?;
                    let code = d.code.unwrap_or(crate::protocol::close_code::NORMAL);
                    if !(1000..=4999).contains(&code) || matches!(code, 1004..=1006 | 1015) {
                        return Err(ChannelError::new(
                            "bad_payload",
                            "`code`: not a close code a server may send",
                        ));
                    }
                    let reason = d.reason.as_deref().unwrap_or("disconnected by an admin");
                    hub.disconnect(d.id, Some(code), reason)?;
                    req.reply_json(&())
                }
            }
        })
    }
}

/// Pushes a `snapshot` every `every` until the page's connection closes.
async fn watch(ch: Channel<Watching>, every: Duration) {
    loop {
        actix_rt::time::sleep(every).await;
        if ch.is_closed() {
            return;
        }
        let s = snapshot(ch.hub()).await;
        if ch.send("snapshot", &s).is_err() {
            return;
        }
    }
}

/// What the page shows.
#[derive(Serialize)]
struct Snapshot {
    at: u64,
    draining: bool,
    engine: crate::engine::EngineHealth,
    stats: Option<crate::hub::HubStats>,
    overview: crate::hub::Overview,
    topics: Vec<TopicRow>,
    errors: crate::hub::ErrorSummary,
}

#[derive(Serialize)]
struct TopicRow {
    topic: String,
    subscribers: usize,
    presence: Option<usize>,
}

async fn snapshot(hub: &Hub) -> Snapshot {
    hub.track_errors();
    let mut topics = hub.topics().await.unwrap_or_default();
    topics.sort_by(|a, b| {
        b.subscribers
            .cmp(&a.subscribers)
            .then_with(|| a.topic.cmp(&b.topic))
    });
    topics.truncate(TOPICS);
    let mut rows = Vec::with_capacity(topics.len());
    for t in topics {
        let presence = hub.presence(&t.topic).await.ok().map(|p| p.len());
        rows.push(TopicRow {
            topic: t.topic,
            subscribers: t.subscribers,
            presence,
        });
    }
    Snapshot {
        at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        draining: hub.is_draining(),
        engine: hub.health(),
        stats: hub.stats().await.ok(),
        overview: hub.overview(SLOWEST),
        topics: rows,
        errors: hub.recent_errors(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole_and_an_empty_secret_matches_nothing() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secreT", b"secret"));
        assert!(!same(b"secret!", b"secret"));
        assert!(!same(b"", b""));
    }

    #[test]
    fn paths_are_normalized() {
        assert_eq!(normalize("admin/"), "/admin");
        assert_eq!(normalize("/ops/admin"), "/ops/admin");
    }
}
