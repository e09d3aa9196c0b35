//! The hub: the engine plus the registry of open connections, usable from anywhere (HTTP
//! handlers, background tasks, other threads).

mod registry;

pub use registry::ConnectionInfo;
pub(crate) use registry::{ConnEntry, Registry, TopicLimits, UserRef};

pub(crate) use registry::conn_topic;
use registry::{user_topic, UserClose, USER_CLOSE, USER_PUSH};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use actix_web::{FromRequest, HttpRequest};
use bytestring::ByteString;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::channel::outbound::{Class, Frame, Refused};
use crate::engine::{
    Engine, EngineError, EngineHealth, EngineStats, MemoryEngine, Presence, Publish,
    SubscribeRequest, TopicInfo,
};
use crate::error::ChannelError;
use crate::id::ConnectionId;
use crate::protocol::{self, close_code};

/// Publishes to topics and reaches connections from anywhere.
///
/// A `Hub` is cheap to clone. Register one as app data so that every channel of the app (and
/// your HTTP handlers) share it; channels of an app without one use a process-wide default.
///
/// ```
/// use actix_web::{web, App, HttpResponse};
/// use switchboard::{Hub, ChannelError};
///
/// async fn announce(hub: Hub, text: String) -> Result<HttpResponse, ChannelError> {
///     hub.publish("room:lobby", "announcement", &text).await?;
///     Ok(HttpResponse::NoContent().finish())
/// }
///
/// let hub = Hub::new();
/// let app = App::new()
///     .app_data(hub.clone())
///     .route("/announce", web::post().to(announce));
/// ```
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    engine: Arc<dyn Engine>,
    registry: Registry,
    /// Set once a drain starts: upgrades are refused, connections that register anyway are
    /// closed with `drain_close`.
    draining: AtomicBool,
    drain_close: Mutex<Option<(u16, Arc<str>)>>,
    /// Woken when a connection leaves while draining.
    left: tokio::sync::Notify,
    /// Error frames sent, kept once an admin view has asked for them.
    errors: ErrorLog,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("connections", &self.connection_count())
            .finish()
    }
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

impl Hub {
    /// A hub on a new in-memory engine.
    pub fn new() -> Self {
        Self::with_engine(MemoryEngine::new())
    }

    /// A hub on the given engine.
    pub fn with_engine(engine: impl Engine) -> Self {
        Hub {
            inner: Arc::new(HubInner {
                engine: Arc::new(engine),
                registry: Registry::new(),
                draining: AtomicBool::new(false),
                drain_close: Mutex::new(None),
                left: tokio::sync::Notify::new(),
                errors: ErrorLog::default(),
            }),
        }
    }

    /// The process-wide hub used by channels of apps that register none.
    pub fn global() -> Hub {
        static GLOBAL: OnceLock<Hub> = OnceLock::new();
        GLOBAL.get_or_init(Hub::new).clone()
    }

    /// The request's app's hub, or the process-wide one.
    pub fn of(req: &HttpRequest) -> Hub {
        req.app_data::<Hub>()
            .cloned()
            .or_else(|| {
                req.app_data::<actix_web::web::Data<Hub>>()
                    .map(|d| Hub::clone(d))
            })
            .unwrap_or_else(Hub::global)
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.inner.engine
    }

    /// Publishes `{"topic":topic,"event":event,"data":data}` to every subscriber of `topic`.
    /// `data` is serialized once, here.
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        event: &str,
        data: &T,
    ) -> Result<(), ChannelError> {
        self.publish_raw(topic, event, to_raw(data)?, None).await
    }

    /// Publishes a payload that is already JSON, optionally skipping one connection.
    pub async fn publish_raw(
        &self,
        topic: &str,
        event: &str,
        data: Arc<RawValue>,
        exclude: Option<ConnectionId>,
    ) -> Result<(), ChannelError> {
        self.inner
            .engine
            .publish(Publish {
                topic: Arc::from(topic),
                event: Arc::from(event),
                data,
                exclude,
            })
            .await
            .inspect_err(|e| engine_failed("publish", e))?;
        Ok(())
    }

    /// Topics with subscribers, and how many each has (the framework's own, such as the
    /// users' topics, left out).
    pub async fn topics(&self) -> Result<Vec<TopicInfo>, ChannelError> {
        let mut all = self.inner.engine.topics().await?;
        all.retain(|t| !crate::engine::is_internal(&t.topic));
        Ok(all)
    }

    /// Subscribers of `topic`.
    pub async fn subscriber_count(&self, topic: &str) -> Result<usize, ChannelError> {
        Ok(self.inner.engine.subscriber_count(Arc::from(topic)).await?)
    }

    /// Who is on `topic`.
    pub async fn presence(&self, topic: &str) -> Result<Presence, ChannelError> {
        Ok(self.inner.engine.presence(Arc::from(topic)).await?)
    }

    /// Engine totals, plus open connections.
    pub async fn stats(&self) -> Result<HubStats, ChannelError> {
        let engine = self.inner.engine.stats().await?;
        Ok(HubStats {
            connections: self.connection_count(),
            engine,
        })
    }

    /// Whether the engine works.
    pub fn health(&self) -> EngineHealth {
        self.inner.engine.health()
    }

    /// Open connections registered with this hub.
    pub fn connection_count(&self) -> usize {
        self.inner.registry.len()
    }

    /// What is known of an open connection.
    pub fn connection(&self, id: ConnectionId) -> Option<ConnectionInfo> {
        self.inner.registry.get(id).map(|e| e.info(id))
    }

    /// Pushes `{"event":event,"data":data}` to one connection. `Err(Closed)` when it is not
    /// open (here).
    pub fn send_to<T: Serialize + ?Sized>(
        &self,
        id: ConnectionId,
        event: &str,
        data: &T,
    ) -> Result<(), ChannelError> {
        self.send_text(id, protocol::encode_event(event, data)?)
    }

    /// Sends a text frame as is to one connection.
    pub fn send_text(
        &self,
        id: ConnectionId,
        text: impl Into<ByteString>,
    ) -> Result<(), ChannelError> {
        let entry = self.inner.registry.get(id).ok_or(ChannelError::Closed)?;
        entry.out.note_push();
        match entry.out.push_text(text.into(), Class::Droppable) {
            Ok(()) | Err(Refused::Dropped) => Ok(()),
            Err(Refused::Closed) => Err(ChannelError::Closed),
        }
    }

    /// Sends a binary frame to one connection.
    pub fn send_binary(&self, id: ConnectionId, data: bytes::Bytes) -> Result<(), ChannelError> {
        let entry = self.inner.registry.get(id).ok_or(ChannelError::Closed)?;
        entry.out.note_push();
        match entry.out.push(Frame::Binary(data), Class::Droppable) {
            Ok(()) | Err(Refused::Dropped) => Ok(()),
            Err(Refused::Closed) => Err(ChannelError::Closed),
        }
    }

    /// Closes one connection (1000, or the given code and reason).
    pub fn disconnect(
        &self,
        id: ConnectionId,
        code: Option<u16>,
        reason: &str,
    ) -> Result<(), ChannelError> {
        let entry = self.inner.registry.get(id).ok_or(ChannelError::Closed)?;
        entry.out.close(code.unwrap_or(close_code::NORMAL), reason);
        Ok(())
    }

    /// Pushes `{"event":event,"data":data}` to every open connection of `user` (on every
    /// node of the engine), on channels that name users
    /// ([`ChannelRoute::user`](crate::ChannelRoute::user)). `data` is serialized once. A user
    /// without connections is not an error: nobody gets it.
    ///
    /// ```
    /// use actix_web::{web, HttpResponse};
    /// use switchboard::{ChannelError, Hub};
    ///
    /// /// POST /notify/{user}: a notification to every tab and device of the user.
    /// async fn notify(hub: Hub, user: web::Path<String>, text: String) -> Result<HttpResponse, ChannelError> {
    ///     hub.send_to_user(&user, "notification", &text).await?;
    ///     Ok(HttpResponse::NoContent().finish())
    /// }
    /// ```
    pub async fn send_to_user<T: Serialize + ?Sized>(
        &self,
        user: &str,
        event: &str,
        data: &T,
    ) -> Result<(), ChannelError> {
        let event = format!("{USER_PUSH}{event}");
        self.publish_raw(&user_topic(user), &event, to_raw(data)?, None)
            .await
    }

    /// Closes every open connection of `user` (on every node) with `code` and `reason`, the
    /// way [`disconnect`](Hub::disconnect) closes one (after frames already queued). Use a
    /// code of 4000–4099 to tell the JavaScript client not to come back (a ban, a logout).
    ///
    /// ```
    /// use switchboard::{ChannelError, Hub};
    ///
    /// async fn ban(hub: &Hub, user: &str) -> Result<(), ChannelError> {
    ///     hub.disconnect_user(user, 4001, "banned").await
    /// }
    /// ```
    pub async fn disconnect_user(
        &self,
        user: &str,
        code: u16,
        reason: &str,
    ) -> Result<(), ChannelError> {
        let close = UserClose {
            code,
            reason: reason.to_owned(),
        };
        self.publish_raw(&user_topic(user), USER_CLOSE, to_raw(&close)?, None)
            .await
    }

    /// The open connections of `user`, on every node of the engine, in no particular order.
    ///
    /// ```
    /// use switchboard::{ChannelError, Hub};
    ///
    /// async fn online(hub: &Hub, user: &str) -> Result<bool, ChannelError> {
    ///     Ok(!hub.user_connections(user).await?.is_empty())
    /// }
    /// ```
    pub async fn user_connections(&self, user: &str) -> Result<Vec<ConnectionId>, ChannelError> {
        let presence = self.inner.engine.presence(user_topic(user)).await?;
        Ok(presence
            .get(user)
            .map(|e| {
                e.metas
                    .iter()
                    .filter_map(|m| m.get("id")?.as_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The registry entry of an open connection.
    pub(crate) fn entry(&self, id: ConnectionId) -> Option<Arc<ConnEntry>> {
        self.inner.registry.get(id)
    }

    pub(crate) fn register(&self, id: ConnectionId, entry: Arc<ConnEntry>) {
        self.inner.registry.insert(id, entry.clone());
        // A drain that began while this connection was being accepted may have listed the
        // registry before the insert: close it here instead (the flag is set before listing).
        if self.inner.draining.load(Ordering::SeqCst) {
            let close = self.drain_close();
            entry.out.close(close.0, &close.1);
        }
    }

    /// A new connection's share of its user's slot on this node.
    pub(crate) fn user_ref(&self, user: Arc<str>) -> UserRef {
        self.inner.registry.user_ref(user)
    }

    /// Admits connection `id` of `entry`'s user: refused with `too_many_user_connections`
    /// when the user has `max` connections already (on every node), then subscribed to the
    /// user's topic. On an error nothing is left behind but the slot, which
    /// [`abandon`](Hub::abandon) gives back.
    pub(crate) async fn admit_user(
        &self,
        id: ConnectionId,
        entry: &ConnEntry,
        max: usize,
    ) -> Result<(), ChannelError> {
        let Some(user) = &entry.user else {
            return Ok(());
        };
        let engine = &self.inner.engine;
        let topic = user_topic(&user.key);
        let sub = entry.user_subscriber(id);
        let meta = serde_json::json!({ "id": id.to_string(), "channel": &**entry.channel() });
        let admitted = engine
            .track_at_most(topic.clone(), sub.clone(), user.key.to_string(), meta, max)
            .await;
        match admitted {
            Ok(true) => {}
            Ok(false) => return Err(ChannelError::TooManyUserConnections { max }),
            Err(e) => {
                engine.untrack(topic, id);
                return Err(e.into());
            }
        }
        if let Err(e) = engine
            .subscribe(SubscribeRequest::new(topic.clone(), sub))
            .await
        {
            engine.unsubscribe(topic, id);
            return Err(e.into());
        }
        Ok(())
    }

    /// Forgets a connection that never opened (its upgrade failed after `admit_user`).
    pub(crate) fn abandon(&self, id: ConnectionId, entry: &ConnEntry) {
        self.forget_user(id, entry);
    }

    fn forget_user(&self, id: ConnectionId, entry: &ConnEntry) {
        if let Some(user) = &entry.user {
            self.inner.engine.unsubscribe(user_topic(&user.key), id);
            self.inner.registry.release_user(user);
        }
    }

    /// Forgets a connection: its subscriptions and presence everywhere.
    pub(crate) fn deregister(&self, id: ConnectionId) {
        if let Some(entry) = self.inner.registry.remove(id) {
            for topic in entry.take_topics() {
                self.inner.engine.unsubscribe(topic, id);
            }
            if entry.link.get().is_some() && self.inner.engine.is_distributed() {
                self.inner.engine.unsubscribe(conn_topic(id), id);
            }
            self.forget_user(id, &entry);
        }
        if self.inner.draining.load(Ordering::Relaxed) {
            self.inner.left.notify_waiters();
        }
    }

    /// Whether a drain has begun ([`crate::drain::Drain`]): new connections are refused with
    /// 503 and open ones are being closed. An app's health check can report it, so that a
    /// load balancer stops sending clients here.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }

    /// Starts draining: from now on upgrades are refused, and a connection that registers
    /// anyway is closed with `code`.
    pub(crate) fn begin_drain(&self, code: u16, reason: Arc<str>) {
        *self
            .inner
            .drain_close
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some((code, reason));
        self.inner.draining.store(true, Ordering::SeqCst);
    }

    fn drain_close(&self) -> (u16, Arc<str>) {
        self.inner
            .drain_close
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| (close_code::SERVICE_RESTART, Arc::from("service restart")))
    }

    /// Closes up to `max` open connections that are not closing yet, with `code`; returns how
    /// many it closed.
    pub(crate) fn close_some(&self, max: usize, code: u16, reason: &str) -> usize {
        let mut closed = 0;
        self.inner.registry.for_each(|entry| {
            if closed >= max {
                return false;
            }
            if entry.out.close(code, reason) {
                closed += 1;
            }
            true
        });
        closed
    }

    /// Open connections per channel, and the `top` connections with the most frames waiting
    /// in their outbound queues (the slowest consumers), in one pass over the registry.
    ///
    /// ```
    /// let hub = switchboard::Hub::new();
    /// let o = hub.overview(10);
    /// assert_eq!(o.connections, 0);
    /// assert!(o.channels.is_empty() && o.slowest.is_empty());
    /// assert!(!hub.is_draining());
    /// hub.track_errors();
    /// assert!(hub.recent_errors().by_code.is_empty());
    /// ```
    pub fn overview(&self, top: usize) -> Overview {
        let mut channels: std::collections::HashMap<Arc<str>, usize> = Default::default();
        // (queued, id, entry), the `top` largest.
        let mut slow: Vec<(usize, ConnectionId, Arc<ConnEntry>)> = Vec::new();
        self.inner.registry.for_each_with_id(|id, entry| {
            *channels.entry(entry.channel().clone()).or_default() += 1;
            let queued = entry.out.len();
            if top > 0 && queued > 0 && (slow.len() < top || queued > slow[slow.len() - 1].0) {
                slow.push((queued, id, entry.clone()));
                slow.sort_by_key(|s| std::cmp::Reverse(s.0));
                slow.truncate(top);
            }
            true
        });
        let mut channels: Vec<(String, usize)> = channels
            .into_iter()
            .map(|(c, n)| (c.to_string(), n))
            .collect();
        channels.sort();
        Overview {
            connections: channels.iter().map(|(_, n)| n).sum(),
            channels,
            slowest: slow.into_iter().map(|(_, id, e)| e.info(id)).collect(),
        }
    }

    /// Error frames sent to this hub's connections since [`Hub::track_errors`] was called:
    /// counts by code, and the latest ones.
    pub fn recent_errors(&self) -> ErrorSummary {
        self.inner.errors.summary()
    }

    /// Starts keeping counts of the error frames sent (an admin view calls it; until then an
    /// error costs nothing more).
    pub fn track_errors(&self) {
        self.inner.errors.enabled.store(true, Ordering::Relaxed);
    }

    /// Records an error frame sent on `channel`.
    pub(crate) fn note_error(&self, channel: &Arc<str>, code: &str) {
        if self.inner.errors.enabled.load(Ordering::Relaxed) {
            self.inner.errors.note(channel, code);
        }
    }

    /// Resolves when a connection leaves (while draining), or spuriously: callers re-check.
    pub(crate) fn left(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.left.notified()
    }
}

/// Runs `op`, a subscribe or track of connection `id` on `topic`, with the topic recorded on
/// the connection first: a disconnect while `op` is under way (which forgets the connection's
/// topics) then takes it out of the topic too, instead of leaving a subscriber (or presence)
/// that nothing removes. The topic goes again when `op` fails; and when it is gone by the time
/// `op` succeeds (the connection closed, or unsubscribed, meanwhile), so does the subscription
/// `op` made, which the engine may have set up after that unsubscribe.
///
/// The connection's topic limits are checked when the topic is recorded, before `op` is even
/// made: a refused topic never reaches the engine.
pub(crate) async fn with_topic<T, Op>(
    engine: &Arc<dyn Engine>,
    entry: &ConnEntry,
    id: ConnectionId,
    topic: Arc<str>,
    op: impl FnOnce() -> Op,
) -> Result<T, ChannelError>
where
    Op: std::future::Future<Output = Result<T, EngineError>>,
{
    let added = entry.add_topic(topic.clone())?;
    match op().await {
        Ok(out) => {
            if !entry.has_topic(&topic) {
                engine.unsubscribe(topic, id);
            }
            Ok(out)
        }
        Err(e) => {
            if added {
                entry.remove_topic(&topic);
            }
            engine_failed("subscribe", &e);
            Err(e.into())
        }
    }
}

/// Counts an engine operation that failed (not one a guard refused).
fn engine_failed(op: &'static str, e: &EngineError) {
    if !matches!(e, EngineError::Rejected(_)) {
        crate::meter::engine_error(op);
    }
}

pub(crate) fn to_raw<T: Serialize + ?Sized>(data: &T) -> Result<Arc<RawValue>, ChannelError> {
    Ok(Arc::from(serde_json::value::to_raw_value(data)?))
}

impl FromRequest for Hub {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(Ok(Hub::of(req)))
    }
}

/// What [`Hub::overview`] found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Overview {
    /// Open connections.
    pub connections: usize,
    /// Open connections per channel (path pattern), sorted by path.
    pub channels: Vec<(String, usize)>,
    /// The connections with the most frames waiting to be sent, most first (only those with
    /// frames waiting).
    pub slowest: Vec<ConnectionInfo>,
}

/// Error frames counted by [`Hub::recent_errors`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ErrorSummary {
    /// Error frames by code, most first.
    pub by_code: Vec<(String, u64)>,
    /// The latest ones, newest first: (unix ms, channel, code).
    pub latest: Vec<(u64, String, String)>,
}

/// Error codes kept apart; more distinct codes count as `other` (codes are the app's and the
/// framework's, but a bug could make them up from input).
const ERROR_CODES: usize = 64;
/// Latest errors kept.
const ERROR_LATEST: usize = 50;

#[derive(Default)]
struct ErrorLog {
    enabled: AtomicBool,
    state: Mutex<ErrorState>,
}

#[derive(Default)]
struct ErrorState {
    by_code: std::collections::HashMap<Box<str>, u64>,
    latest: std::collections::VecDeque<(u64, Arc<str>, Box<str>)>,
}

impl ErrorLog {
    fn note(&self, channel: &Arc<str>, code: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let key: &str = if st.by_code.contains_key(code) || st.by_code.len() < ERROR_CODES {
            code
        } else {
            "other"
        };
        *st.by_code.entry(Box::from(key)).or_default() += 1;
        if st.latest.len() == ERROR_LATEST {
            st.latest.pop_back();
        }
        st.latest.push_front((now, channel.clone(), Box::from(key)));
    }

    fn summary(&self) -> ErrorSummary {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut by_code: Vec<(String, u64)> = st
            .by_code
            .iter()
            .map(|(c, n)| (c.to_string(), *n))
            .collect();
        by_code.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ErrorSummary {
            by_code,
            latest: st
                .latest
                .iter()
                .map(|(t, ch, c)| (*t, ch.to_string(), c.to_string()))
                .collect(),
        }
    }
}

/// Totals of a hub.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HubStats {
    /// Open connections registered with the hub.
    pub connections: usize,
    /// The engine's totals.
    #[serde(flatten)]
    pub engine: EngineStats,
}
