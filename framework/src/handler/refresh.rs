//! Tokens refreshed in band: the built-in `refresh` route and the channel's refresh handler.
//!
//! A connection whose `on_connect` gave it an expiry
//! ([`ConnectRequest::set_expiry`](crate::ConnectRequest::set_expiry)) is asked for a new
//! token before it: the server pushes `{"refresh":{"expires_in":ms}}`. The client answers
//! `{"type":"refresh","ref":R,"data":{"token":"..."}}`; the channel's
//! [`on_refresh`](crate::ChannelRoute::on_refresh) handler checks the token (and may change the
//! session) and says when the new one expires. Without a valid refresh by the expiry the
//! connection closes with 4401 (`token expired`). A subscription whose join guard gave it an
//! expiry ([`TokenGuard`](crate::handler::subscribe::TokenGuard)) works the same way, with
//! `"topic"` in both frames; it ends with an `unsubscribed` frame instead of a close.

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::channel::Channel;
use crate::error::ChannelError;
use crate::handler::subscribe::{Guard, Joins};
use crate::handler::{BoxFuture, MessageHandler, MessageRequest, Reply};
use crate::protocol::decode_payload;

/// Checks a new connection token sent on the built-in `refresh` route and says when it expires
/// (`None`: never). It may change the session ([`Channel::set_session`]); an error is the reply
/// the client gets, and the old token's expiry stands. Any
/// `Fn(Channel<S>, String) -> impl Future<Output = Result<Option<SystemTime>, ChannelError>>`
/// is one.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use switchboard::prelude::*;
///
/// #[derive(Clone)]
/// struct User { name: String, token: String }
///
/// let route = ChannelRoute::<User>::new("/ws").on_refresh(|ch: Channel<User>, token: String| async move {
///     let name = token.strip_prefix("valid:").ok_or(ChannelError::unauthorized("bad token"))?;
///     ch.set_session(User { name: name.to_owned(), token: token.clone() });
///     Ok(Some(SystemTime::now() + Duration::from_secs(3600)))
/// });
/// ```
pub trait RefreshHandler<S>: Send + Sync + 'static {
    /// Checks `token` for `channel`.
    fn refresh(
        &self,
        channel: Channel<S>,
        token: String,
    ) -> BoxFuture<Result<Option<SystemTime>, ChannelError>>;
}

impl<S, F, Fut> RefreshHandler<S> for F
where
    F: Fn(Channel<S>, String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<SystemTime>, ChannelError>> + 'static,
{
    fn refresh(
        &self,
        channel: Channel<S>,
        token: String,
    ) -> BoxFuture<Result<Option<SystemTime>, ChannelError>> {
        Box::pin(self(channel, token))
    }
}

/// The built-in route's name.
pub(crate) const REFRESH: &str = "refresh";

#[derive(Debug, Deserialize)]
struct RefreshData {
    token: String,
    #[serde(default)]
    topic: Option<String>,
}

#[derive(Serialize)]
struct Refreshed {
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<String>,
    /// Milliseconds until the new token expires; `null`: it does not.
    expires_in: Option<u64>,
}

/// The built-in `refresh` route.
pub(crate) struct RefreshRoute<S> {
    pub(crate) handler: Option<Arc<dyn RefreshHandler<S>>>,
    pub(crate) joins: Arc<Joins<S>>,
}

impl<S: 'static> MessageHandler<S> for RefreshRoute<S> {
    fn route(&self) -> &str {
        REFRESH
    }

    fn call(&self, req: MessageRequest<S>) -> BoxFuture<Result<Reply, ChannelError>> {
        let handler = self.handler.clone();
        let joins = self.joins.clone();
        Box::pin(async move {
            let data: RefreshData = decode_payload(req.data().unwrap_or("null"))?;
            let ch = req.channel().clone();
            let expiry = match &data.topic {
                None => {
                    let h = handler.ok_or_else(|| {
                        ChannelError::RefreshUnsupported("this channel takes no refresh".into())
                    })?;
                    let at = h.refresh(ch.clone(), data.token).await?;
                    check_not_past(at)?;
                    ch.set_token_expiry(at);
                    at
                }
                Some(topic) => {
                    ch.entry().limits.check_name(topic)?;
                    let guard = match joins.guard(topic) {
                        Some(Guard::Token(g)) if ch.topic_has_token(topic) => g.clone(),
                        _ => {
                            return Err(ChannelError::RefreshUnsupported(
                                format!(
                                    "the subscription to `{}` has no token",
                                    ChannelError::clip(topic)
                                )
                                .into(),
                            ))
                        }
                    };
                    let at = guard.check(ch.clone(), topic.clone(), data.token).await?;
                    check_not_past(at)?;
                    // The subscription may have ended while the guard ran.
                    if !ch.topic_has_token(topic) {
                        return Err(ChannelError::TokenExpired);
                    }
                    ch.set_topic_expiry(topic, at);
                    at
                }
            };
            let expires_in = expiry.map(|_| {
                ch.token_left(data.topic.as_deref())
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            });
            req.reply_json(&Refreshed {
                topic: data.topic,
                expires_in,
            })
        })
    }
}

fn check_not_past(at: Option<SystemTime>) -> Result<(), ChannelError> {
    match at {
        Some(at) if at <= SystemTime::now() => Err(ChannelError::TokenExpired),
        _ => Ok(()),
    }
}
