//! Client-driven subscriptions: the built-in `subscribe` / `unsubscribe` routes and the join
//! guards that decide who may subscribe to what.
//!
//! A channel exposes the built-in routes as soon as it has a join rule (`join` or
//! `allow_join`). A topic that matches no rule cannot be joined by clients; handler code can
//! still subscribe a connection to anything with [`Channel::subscribe`].

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::channel::Channel;
use crate::engine::{Position, Subscribed, TopicPattern};
use crate::error::ChannelError;
use crate::handler::{BoxFuture, MessageHandler, MessageRequest, Reply};
use crate::protocol::decode_payload;
use crate::topics::{SubscribeOptions, Topics};

/// Decides whether a connection may join a topic. Any
/// `Fn(Channel<S>, String) -> impl Future<Output = Result<(), ChannelError>>` is one.
///
/// ```
/// use switchboard::prelude::*;
///
/// #[derive(Clone)]
/// struct User { admin: bool }
///
/// let route = ChannelRoute::<User>::new("/ws")
///     .allow_join("room:*")
///     .join("admin:*", |ch: Channel<User>, _topic: String| async move {
///         match ch.session() {
///             Some(u) if u.admin => Ok(()),
///             _ => Err(ChannelError::forbidden("admins only")),
///         }
///     });
/// ```
pub trait JoinGuard<S>: Send + Sync + 'static {
    /// `Ok` lets the connection join `topic`; an error is the reply the client gets.
    fn check(&self, channel: Channel<S>, topic: String) -> BoxFuture<Result<(), ChannelError>>;
}

impl<S, F, Fut> JoinGuard<S> for F
where
    F: Fn(Channel<S>, String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), ChannelError>> + 'static,
{
    fn check(&self, channel: Channel<S>, topic: String) -> BoxFuture<Result<(), ChannelError>> {
        Box::pin(self(channel, topic))
    }
}

/// A join guard for topics that need a token of their own, and say when it expires. Any
/// `Fn(Channel<S>, String, String) -> impl Future<Output = Result<Option<SystemTime>, ChannelError>>`
/// is one: it gets the topic and the token the client sent with its subscribe (`"token"` in
/// the subscribe's data), and returns when the token expires (`None`: never).
///
/// Before the expiry the server asks the client for a new token (a `refresh` frame naming the
/// topic); the client answers on the built-in `refresh` route with the topic and the token,
/// which this same guard checks. Without a valid one by the expiry, the subscription ends with
/// an `unsubscribed` frame (code `token_expired`).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use switchboard::prelude::*;
///
/// let route = ChannelRoute::<()>::new("/ws").join_with_token(
///     "private:*",
///     |_ch: Channel, topic: String, token: String| async move {
///         if token != format!("let-me-into-{topic}") {
///             return Err(ChannelError::forbidden("bad topic token"));
///         }
///         Ok(Some(SystemTime::now() + Duration::from_secs(600)))
///     },
/// );
/// ```
pub trait TokenGuard<S>: Send + Sync + 'static {
    /// `Ok` lets the connection join (or stay on) `topic` until the time it returns; an error
    /// is the reply the client gets.
    fn check(
        &self,
        channel: Channel<S>,
        topic: String,
        token: String,
    ) -> BoxFuture<Result<Option<SystemTime>, ChannelError>>;
}

impl<S, F, Fut> TokenGuard<S> for F
where
    F: Fn(Channel<S>, String, String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<SystemTime>, ChannelError>> + 'static,
{
    fn check(
        &self,
        channel: Channel<S>,
        topic: String,
        token: String,
    ) -> BoxFuture<Result<Option<SystemTime>, ChannelError>> {
        Box::pin(self(channel, topic, token))
    }
}

/// A join rule's guard: a plain one, or one that checks a topic token.
pub(crate) enum Guard<S> {
    Plain(Arc<dyn JoinGuard<S>>),
    Token(Arc<dyn TokenGuard<S>>),
}

impl<S> Clone for Guard<S> {
    fn clone(&self) -> Self {
        match self {
            Guard::Plain(g) => Guard::Plain(g.clone()),
            Guard::Token(g) => Guard::Token(g.clone()),
        }
    }
}

/// Says under which key and with which metadata a connection appears in a topic's presence
/// when it joins through the built-in route; `None` keeps it out. Any
/// `Fn(Channel<S>, String) -> impl Future<Output = Option<(String, serde_json::Value)>>` is one.
pub trait PresenceRule<S>: Send + Sync + 'static {
    /// The presence key and metadata for `channel` on `topic`.
    fn presence(
        &self,
        channel: Channel<S>,
        topic: String,
    ) -> BoxFuture<Option<(String, serde_json::Value)>>;
}

impl<S, F, Fut> PresenceRule<S> for F
where
    F: Fn(Channel<S>, String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<(String, serde_json::Value)>> + 'static,
{
    fn presence(
        &self,
        channel: Channel<S>,
        topic: String,
    ) -> BoxFuture<Option<(String, serde_json::Value)>> {
        Box::pin(self(channel, topic))
    }
}

pub(crate) struct Joins<S> {
    pub(crate) guards: Vec<(TopicPattern, Guard<S>)>,
    pub(crate) presence: Option<Arc<dyn PresenceRule<S>>>,
}

impl<S> Clone for Joins<S> {
    fn clone(&self) -> Self {
        Joins {
            guards: self.guards.clone(),
            presence: self.presence.clone(),
        }
    }
}

impl<S> Default for Joins<S> {
    fn default() -> Self {
        Joins {
            guards: Vec::new(),
            presence: None,
        }
    }
}

impl<S> Joins<S> {
    pub(crate) fn guard(&self, topic: &str) -> Option<&Guard<S>> {
        self.guards
            .iter()
            .find(|(p, _)| p.matches(topic))
            .map(|(_, g)| g)
    }
}

/// The built-in `subscribe` route's payload.
#[derive(Debug, Deserialize)]
struct SubscribeData {
    topic: String,
    /// Where the client's view of the topic ended: missed publications are replayed.
    #[serde(default)]
    recover: Option<Position>,
    /// Without `recover`: replay the latest publications the topic still holds, at most this
    /// many.
    #[serde(default)]
    last: Option<usize>,
    /// The topic's own token, for topics joined with a token guard.
    #[serde(default)]
    token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TopicData {
    topic: String,
}

#[derive(Serialize)]
struct SubscribeReply {
    topic: String,
    #[serde(flatten)]
    subscribed: Subscribed,
}

pub(crate) struct SubscribeRoute<S>(pub(crate) Arc<Joins<S>>);
pub(crate) struct UnsubscribeRoute;

pub(crate) const SUBSCRIBE: &str = "subscribe";
pub(crate) const UNSUBSCRIBE: &str = "unsubscribe";

impl<S: 'static> MessageHandler<S> for SubscribeRoute<S> {
    fn route(&self) -> &str {
        SUBSCRIBE
    }

    fn call(&self, req: MessageRequest<S>) -> BoxFuture<Result<Reply, ChannelError>> {
        let joins = self.0.clone();
        Box::pin(async move {
            let data: SubscribeData = decode_payload(req.data().unwrap_or("null"))?;
            let ch = req.channel().clone();
            // Before any guard runs: an over-long name is `bad_topic`, whoever may join it.
            ch.entry().limits.check_name(&data.topic)?;
            let cannot_join = || {
                ChannelError::forbidden(format!(
                    "topic `{}` cannot be joined",
                    ChannelError::clip(&data.topic)
                ))
            };
            // The framework's own topics (a user's) are never for clients to join.
            if crate::engine::is_internal(&data.topic) {
                return Err(cannot_join());
            }
            let guard = joins.guard(&data.topic).ok_or_else(cannot_join)?;
            let expiry = match guard {
                Guard::Plain(g) => {
                    g.check(ch.clone(), data.topic.clone()).await?;
                    None
                }
                Guard::Token(g) => {
                    let token = data.token.clone().ok_or_else(|| {
                        ChannelError::unauthorized(format!(
                            "topic `{}` needs a token",
                            ChannelError::clip(&data.topic)
                        ))
                    })?;
                    g.check(ch.clone(), data.topic.clone(), token).await?
                }
            };
            if expiry.is_some_and(|at| at <= SystemTime::now()) {
                return Err(ChannelError::TokenExpired);
            }
            let presence = match &joins.presence {
                Some(rule) => rule.presence(ch.clone(), data.topic.clone()).await,
                // A channel that names users: presence keyed by user.
                None => ch
                    .user()
                    .map(|u| (u.to_owned(), serde_json::Value::Object(Default::default()))),
            };
            let options = SubscribeOptions {
                recover: data.recover,
                last: data.last,
                presence,
            };
            let subscribed = ch.subscribe_with(&data.topic, options).await?;
            // Set (or, subscribed again without a token, cleared) after the subscription is
            // held: the deadline list only keeps topics the connection holds.
            ch.set_topic_expiry(&data.topic, expiry);
            req.reply_json(&SubscribeReply {
                topic: data.topic,
                subscribed,
            })
        })
    }
}

impl<S: 'static> MessageHandler<S> for UnsubscribeRoute {
    fn route(&self) -> &str {
        UNSUBSCRIBE
    }

    fn call(&self, req: MessageRequest<S>) -> BoxFuture<Result<Reply, ChannelError>> {
        Box::pin(async move {
            let data: TopicData = decode_payload(req.data().unwrap_or("null"))?;
            req.channel().unsubscribe(&data.topic).await?;
            req.channel().set_topic_expiry(&data.topic, None);
            req.reply_json(&serde_json::json!({ "topic": data.topic }))
        })
    }
}
