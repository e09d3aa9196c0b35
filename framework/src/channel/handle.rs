//! [`Channel<S>`]: one open connection, as its handlers see it.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use actix_web::{web, HttpRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::channel::outbound::{Class, Outbound, Refused};
use crate::channel::tokens::{Deadline, Due, Tokens};
use crate::engine::Subscriber;
use crate::error::ChannelError;
use crate::hub::{ConnEntry, Hub, TopicLimits};
use crate::id::ConnectionId;
use crate::protocol::{self, close_code};
use crate::topics::{local_topics, Local};

/// One open connection, as its handlers see it: identity, the opening request, the session
/// value, and a way to send to the client.
///
/// Cheap to clone; all clones are the same connection. It lives on the connection's thread
/// (handlers run there); reach a connection from elsewhere by its [`id`](Channel::id).
pub struct Channel<S = ()> {
    pub(crate) inner: Rc<ConnInner<S>>,
}

pub(crate) struct ConnInner<S> {
    pub(crate) id: ConnectionId,
    pub(crate) opening: Opening,
    /// The channel's app-data request (see `ChannelDef::app`): a reference count.
    pub(crate) app: HttpRequest,
    pub(crate) session: RefCell<Option<S>>,
    pub(crate) out: Arc<Outbound>,
    pub(crate) route_field: Arc<str>,
    pub(crate) connected_at: SystemTime,
    pub(crate) hub: Hub,
    pub(crate) entry: Arc<ConnEntry>,
    /// Its tokens' deadlines (`channel::tokens`), made when the first is set: most
    /// connections never have one.
    pub(crate) tokens: RefCell<Option<Box<Tokens>>>,
    /// How long before an expiry the client is asked for a new token.
    pub(crate) refresh_lead: std::time::Duration,
}

/// What a connection keeps of its opening request: a compact copy, so that the request goes
/// back to actix's pool and an idle connection stays small.
pub(crate) struct Opening {
    /// `name\tvalue\n` per header with a UTF-8 value (names are lowercase).
    pub(crate) headers: Box<str>,
    pub(crate) params: Box<[(Box<str>, Box<str>)]>,
    pub(crate) query: Box<str>,
    pub(crate) peer: Option<SocketAddr>,
}

/// Headers of the handshake itself (hop-by-hop `connection` and `upgrade`, the WebSocket
/// handshake's own), which only the handshake reads: not kept (a browser's add up to about
/// 150 bytes per connection).
const HANDSHAKE_ONLY: [&str; 5] = [
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
];

impl Opening {
    pub(crate) fn of(req: &HttpRequest) -> Self {
        let mut headers = String::new();
        for (name, value) in req.headers() {
            if HANDSHAKE_ONLY.contains(&name.as_str()) {
                continue;
            }
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

    /// A header of the opening request, if present and valid UTF-8. The handshake's own
    /// (`connection` and `upgrade`, which are hop-by-hop, and `sec-websocket-key`, `-version`
    /// and `-extensions`) are not kept: only the handshake reads them; `on_connect` sees them
    /// on its [`ConnectRequest`](crate::channel::ConnectRequest).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.inner.opening.header(name)
    }

    /// The opening request's headers with UTF-8 values, names in lowercase (without the
    /// WebSocket handshake's own, see [`header`](Self::header)).
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.inner.opening.headers()
    }

    /// The opening request's query string (without `?`).
    pub fn query_string(&self) -> &str {
        &self.inner.opening.query
    }

    /// The opening request's query string, deserialized.
    pub fn query<T: DeserializeOwned>(&self) -> Result<T, ChannelError> {
        web::Query::<T>::from_query(self.query_string())
            .map(web::Query::into_inner)
            .map_err(|e| ChannelError::new("bad_query", e.to_string()))
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
    pub fn send<T: Serialize + ?Sized>(&self, event: &str, data: &T) -> Result<(), ChannelError> {
        let frame = protocol::encode_event(event, data)?;
        self.inner.out.note_push();
        match self.inner.out.push_text(frame, Class::Droppable) {
            Ok(()) | Err(Refused::Dropped) => Ok(()),
            Err(Refused::Closed) => Err(ChannelError::Closed),
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

    /// The connection's user key, on a channel that names users
    /// ([`ChannelRoute::user`](crate::ChannelRoute::user)): what
    /// [`Hub::send_to_user`](crate::Hub::send_to_user) and the per-user limits go by.
    ///
    /// ```
    /// use switchboard::prelude::*;
    ///
    /// #[switchboard::message("whoami")]
    /// async fn whoami(ch: Channel) -> Result<Option<String>, ChannelError> {
    ///     Ok(ch.user().map(str::to_owned))
    /// }
    /// ```
    pub fn user(&self) -> Option<&str> {
        self.inner.entry.user.as_ref().map(|u| &*u.key)
    }

    /// How long until the connection's token expires (see
    /// [`ConnectRequest::set_expiry`](crate::ConnectRequest::set_expiry)); `None` when it has
    /// no expiry.
    ///
    /// ```
    /// use switchboard::prelude::*;
    ///
    /// #[switchboard::message("ttl")]
    /// async fn ttl(ch: Channel) -> Result<Option<u128>, ChannelError> {
    ///     Ok(ch.token_expires_in().map(|d| d.as_millis()))
    /// }
    /// ```
    pub fn token_expires_in(&self) -> Option<std::time::Duration> {
        let tokens = self.inner.tokens.borrow();
        let conn = tokens.as_deref()?.conn?;
        Some(conn.left(Instant::now()))
    }

    /// The hub this connection is registered with.
    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    /// This connection as a topic subscriber: its deliveries go to the client.
    pub fn subscriber(&self) -> Subscriber {
        self.inner.entry.subscriber(self.id())
    }

    /// Topic operations with deliveries going to `subscriber` (the client's queue, or a
    /// session's).
    pub(crate) fn local_as(&self, subscriber: Subscriber) -> Local<'_> {
        Local {
            hub: &self.inner.hub,
            entry: self.inner.entry.clone(),
            subscriber,
        }
    }

    fn local(&self) -> Result<Local<'_>, ChannelError> {
        Ok(self.local_as(self.subscriber()))
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
            TopicLimits::default(),
            None,
        ));
        Channel {
            inner: Rc::new(ConnInner {
                id,
                opening: Opening::of(&request),
                app: request,
                session: RefCell::new(session),
                out,
                route_field: Arc::from(route_field),
                connected_at,
                hub,
                entry,
                tokens: RefCell::new(None),
                refresh_lead: std::time::Duration::ZERO,
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

local_topics!(impl<S> Channel<S>);

/// `{"refresh":{["topic":T,]"expires_in":ms}}`: the server asks for a new token.
pub(crate) fn refresh_frame(topic: Option<&str>, left: std::time::Duration) -> String {
    let ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
    let body = match topic {
        Some(t) => serde_json::json!({ "refresh": { "topic": t, "expires_in": ms } }),
        None => serde_json::json!({ "refresh": { "expires_in": ms } }),
    };
    body.to_string()
}

/// `{"unsubscribed":{"topic":T,"code":C,"message":M}}`: the server ended a subscription.
pub(crate) fn unsubscribed_frame(topic: &str, err: &ChannelError) -> String {
    serde_json::json!({
        "unsubscribed": { "topic": topic, "code": err.code(), "message": err.message() }
    })
    .to_string()
}

/// Token deadlines: one timer per connection, for the next moment of all (see
/// `channel::tokens`).
impl<S: 'static> Channel<S> {
    /// Sets (or clears) the connection's own token expiry, and reschedules.
    pub(crate) fn set_token_expiry(&self, at: Option<SystemTime>) {
        let d = at.map(|at| Deadline::new(at, self.inner.refresh_lead, Instant::now()));
        let Some(mut tokens) = self.tokens_mut(d.is_some()) else {
            return;
        };
        tokens.conn = d;
        drop(tokens);
        self.schedule_tokens();
    }

    /// The connection's deadlines; made when `make` (a deadline is being set), else `None`
    /// when there are none (there is nothing to clear).
    fn tokens_mut(&self, make: bool) -> Option<std::cell::RefMut<'_, Tokens>> {
        let tokens = self.inner.tokens.borrow_mut();
        if tokens.is_none() && !make {
            return None;
        }
        Some(std::cell::RefMut::map(tokens, |t| {
            &mut **t.get_or_insert_with(Box::default)
        }))
    }

    /// Sets (or clears) the expiry of this connection's subscription to `topic`.
    pub(crate) fn set_topic_expiry(&self, topic: &str, at: Option<SystemTime>) {
        let topic: Arc<str> = Arc::from(topic);
        let d = at.map(|at| Deadline::new(at, self.inner.refresh_lead, Instant::now()));
        let entry = &self.inner.entry;
        let Some(mut tokens) = self.tokens_mut(d.is_some()) else {
            return;
        };
        tokens.set_topic(&topic, d, |t| entry.has_topic(t));
        drop(tokens);
        self.schedule_tokens();
    }

    /// Whether this connection's subscription to `topic` carries a token.
    pub(crate) fn topic_has_token(&self, topic: &str) -> bool {
        let tokens = self.inner.tokens.borrow();
        tokens.as_ref().is_some_and(|t| t.topic(topic).is_some())
    }

    /// The time left on a token: the connection's (`None`) or a topic's.
    pub(crate) fn token_left(&self, topic: Option<&str>) -> Option<std::time::Duration> {
        let tokens = self.inner.tokens.borrow();
        let tokens = tokens.as_deref()?;
        let d = match topic {
            Some(t) => tokens.topic(t).copied(),
            None => tokens.conn,
        };
        d.map(|d| d.left(Instant::now()))
    }

    fn schedule_tokens(&self) {
        let Some(mut tokens) = self.tokens_mut(false) else {
            return;
        };
        tokens.stop();
        if self.is_closed() {
            return;
        }
        let Some(next) = tokens.next() else {
            return;
        };
        let weak = Rc::downgrade(&self.inner);
        tokens.timer = Some(actix_rt::spawn(async move {
            actix_rt::time::sleep_until(next.into()).await;
            if let Some(inner) = weak.upgrade() {
                Channel { inner }.fire_tokens();
            }
        }));
    }

    /// The timer fired: asks for refreshes, ends what expired.
    fn fire_tokens(&self) {
        let due = {
            let Some(mut tokens) = self.tokens_mut(false) else {
                return;
            };
            // This task is the timer: let it finish rather than abort it.
            tokens.timer = None;
            tokens.take_due(Instant::now())
        };
        for (topic, due) in due {
            match (topic, due) {
                (None, Due::Ask(left)) => {
                    let _ = self
                        .inner
                        .out
                        .push_text(refresh_frame(None, left).into(), Class::Essential);
                }
                (None, Due::Expired) => {
                    tracing::debug!(connection = %self.id(), "token expired");
                    self.close_with(close_code::TOKEN_EXPIRED, "token expired");
                }
                (Some(topic), due) => {
                    if !self.inner.entry.has_topic(&topic) {
                        continue;
                    }
                    let frame = match due {
                        Due::Ask(left) => refresh_frame(Some(&topic), left),
                        Due::Expired => {
                            let _ = self.local().map(|l| l.unsubscribe(&topic));
                            unsubscribed_frame(&topic, &ChannelError::TokenExpired)
                        }
                    };
                    let _ = self.inner.out.push_text(frame.into(), Class::Essential);
                }
            }
        }
        self.schedule_tokens();
    }

    /// Stops the token timer: the connection ends.
    pub(crate) fn stop_tokens(&self) {
        if let Some(mut tokens) = self.tokens_mut(false) {
            tokens.stop();
        }
    }
}
