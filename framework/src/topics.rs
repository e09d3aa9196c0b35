//! Topic operations, one surface for every handle that acts for a connection.
//!
//! [`Topics`] is implemented by [`Channel<S>`](crate::Channel) (a stateless handler's
//! connection), [`SessionCtx<T>`](crate::session::SessionCtx) (a stateful session: publications
//! reach its topic handler), [`ConnectionRef`] (any open connection,
//! from [`Hub::to`](crate::Hub::to): HTTP handlers, tasks, the connections API) and, with the
//! `gateway` feature, the connections API client's remote handle. The names, arguments and
//! results are the same on all of them, so code written against one reads the same against
//! the others, and generic code can take any `impl Topics`.
//!
//! ```
//! use switchboard::prelude::*;
//!
//! /// Works with a channel, a session context or a hub's connection handle alike.
//! async fn move_to(conn: &impl Topics, from: &str, to: &str) -> Result<(), ChannelError> {
//!     conn.unsubscribe(from).await?;
//!     conn.subscribe(to).await?;
//!     conn.broadcast_from(to, "joined", &()).await
//! }
//!
//! #[switchboard::message("move")]
//! async fn handle_move(ch: Channel, rooms: (String, String)) -> Result<(), ChannelError> {
//!     move_to(&ch, &rooms.0, &rooms.1).await
//! }
//! ```

use std::sync::Arc;

use serde::Serialize;

use crate::engine::{Position, SubscribeRequest, Subscribed, Subscriber};
use crate::error::ChannelError;
use crate::hub::{to_raw, with_topic, ConnEntry, Hub};

/// How to subscribe: what to replay first and whether to enter presence in the same step.
///
/// ```
/// use switchboard::topics::SubscribeOptions;
///
/// let opts = SubscribeOptions::new().last(20).presence("ada", serde_json::json!({"tab": 1}));
/// ```
#[derive(Clone, Debug, Default)]
pub struct SubscribeOptions {
    pub(crate) recover: Option<Position>,
    pub(crate) last: Option<usize>,
    pub(crate) presence: Option<(String, serde_json::Value)>,
}

impl SubscribeOptions {
    /// A plain subscription.
    pub fn new() -> Self {
        Self::default()
    }

    /// First replay what was missed since `position` (topics with history); `recovered` in the
    /// answer says whether that worked. `None` leaves it unset.
    pub fn recover(mut self, position: impl Into<Option<Position>>) -> Self {
        self.recover = position.into();
        self
    }

    /// Without `recover`: first replay up to `n` of the latest publications the topic still
    /// holds (a chat room's recent messages on join).
    pub fn last(mut self, n: usize) -> Self {
        self.last = Some(n);
        self
    }

    /// Also enter the topic's presence under `key` with `meta` in the same step: one
    /// `presence_state` that includes this connection, and no diff falls in between.
    pub fn presence(mut self, key: impl Into<String>, meta: serde_json::Value) -> Self {
        self.presence = Some((key.into(), meta));
        self
    }
}

/// Topic operations for one connection. See the [module docs](self).
///
/// The futures of the local implementations finish without waiting on any subscriber; the
/// remote one (the connections API client) makes one HTTP request per call.
#[allow(async_fn_in_trait)] // Implementations are concrete types; callers know their futures.
pub trait Topics {
    /// Subscribes to `topic`: publications reach this connection (the client as
    /// `{"topic":T,"event":E,"data":D}` frames, or a session's topic handler). Resolves once
    /// the engine has it.
    async fn subscribe(&self, topic: &str) -> Result<Subscribed, ChannelError> {
        self.subscribe_with(topic, SubscribeOptions::new()).await
    }

    /// Subscribes with [`SubscribeOptions`]: recovery, the last N publications, presence.
    async fn subscribe_with(
        &self,
        topic: &str,
        options: SubscribeOptions,
    ) -> Result<Subscribed, ChannelError>;

    /// Unsubscribes from `topic` and leaves its presence. Unsubscribing from a topic this
    /// connection is not on is not an error; a connection that is gone is (`Closed`).
    async fn unsubscribe(&self, topic: &str) -> Result<(), ChannelError>;

    /// The topics this connection is subscribed to.
    async fn subscriptions(&self) -> Result<Vec<String>, ChannelError>;

    /// Publishes `{"topic":topic,"event":event,"data":data}` to every subscriber of `topic`,
    /// this connection included if subscribed. `data` is serialized once.
    async fn publish<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        event: &str,
        data: &T,
    ) -> Result<(), ChannelError>;

    /// Publishes to every subscriber of `topic` but this connection.
    async fn broadcast_from<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        event: &str,
        data: &T,
    ) -> Result<(), ChannelError>;

    /// Announces this connection on `topic`'s presence under `key` (a user id: several
    /// connections of one key show as one entry) with `meta`. It receives the topic's
    /// `presence_state`; subscribers get a `presence_diff` when the key appears, and again when
    /// its last connection leaves. Presence goes when the connection does.
    async fn track<M: Serialize + ?Sized>(
        &self,
        topic: &str,
        key: &str,
        meta: &M,
    ) -> Result<(), ChannelError>;

    /// Leaves `topic`'s presence (the subscription stays).
    async fn untrack(&self, topic: &str) -> Result<(), ChannelError>;
}

/// The local implementation, shared by every in-process handle: a connection registered with
/// `hub`, and the sink its deliveries go to (the socket's queue, or a session's).
pub(crate) struct Local<'a> {
    pub(crate) hub: &'a Hub,
    pub(crate) entry: Arc<ConnEntry>,
    pub(crate) subscriber: Subscriber,
}

impl Local<'_> {
    pub(crate) async fn subscribe_with(
        &self,
        topic: &str,
        options: SubscribeOptions,
    ) -> Result<Subscribed, ChannelError> {
        let limits = self.entry.limits;
        limits.check_name(topic)?;
        if let Some((_, meta)) = &options.presence {
            limits.check_presence(meta)?;
        }
        let topic: Arc<str> = Arc::from(topic);
        let engine = self.hub.engine();
        let id = self.subscriber.id;
        let sub = || {
            engine.subscribe(SubscribeRequest {
                recover: options.recover,
                last: options.last,
                presence: options.presence,
                ..SubscribeRequest::new(topic.clone(), self.subscriber.clone())
            })
        };
        with_topic(engine, &self.entry, id, topic.clone(), sub).await
    }

    pub(crate) fn unsubscribe(&self, topic: &str) -> Result<(), ChannelError> {
        self.entry.limits.check_name(topic)?;
        let topic: Arc<str> = Arc::from(topic);
        self.entry.remove_topic(&topic);
        self.hub.engine().unsubscribe(topic, self.subscriber.id);
        Ok(())
    }

    pub(crate) fn subscriptions(&self) -> Vec<String> {
        self.entry.topics().iter().map(|t| t.to_string()).collect()
    }

    pub(crate) async fn publish<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        event: &str,
        data: &T,
        exclude_self: bool,
    ) -> Result<(), ChannelError> {
        let exclude = exclude_self.then_some(self.subscriber.id);
        self.hub
            .publish_raw(topic, event, to_raw(data)?, exclude)
            .await
    }

    pub(crate) async fn track<M: Serialize + ?Sized>(
        &self,
        topic: &str,
        key: &str,
        meta: &M,
    ) -> Result<(), ChannelError> {
        let limits = self.entry.limits;
        limits.check_name(topic)?;
        limits.check_presence(meta)?;
        let meta = serde_json::to_value(meta)?;
        let topic: Arc<str> = Arc::from(topic);
        let engine = self.hub.engine();
        let id = self.subscriber.id;
        let track = || engine.track(topic.clone(), self.subscriber.clone(), key.to_owned(), meta);
        // Presence goes when the connection does: the topic is recorded for cleanup.
        with_topic(engine, &self.entry, id, topic.clone(), track).await
    }

    pub(crate) fn untrack(&self, topic: &str) -> Result<(), ChannelError> {
        self.entry.limits.check_name(topic)?;
        self.hub
            .engine()
            .untrack(Arc::from(topic), self.subscriber.id);
        Ok(())
    }
}

/// Implements [`Topics`] for a type with a `fn local(&self) -> Result<Local<'_>, ChannelError>`.
macro_rules! local_topics {
    (impl<$($g:ident $(: $b:path)?),*> $ty:ty) => {
        impl<$($g $(: $b)?),*> $crate::topics::Topics for $ty {
            async fn subscribe_with(
                &self,
                topic: &str,
                options: $crate::topics::SubscribeOptions,
            ) -> Result<$crate::engine::Subscribed, $crate::error::ChannelError> {
                self.local()?.subscribe_with(topic, options).await
            }

            async fn unsubscribe(&self, topic: &str) -> Result<(), $crate::error::ChannelError> {
                self.local()?.unsubscribe(topic)
            }

            async fn subscriptions(&self) -> Result<Vec<String>, $crate::error::ChannelError> {
                Ok(self.local()?.subscriptions())
            }

            async fn publish<Data: serde::Serialize + ?Sized>(
                &self,
                topic: &str,
                event: &str,
                data: &Data,
            ) -> Result<(), $crate::error::ChannelError> {
                self.local()?.publish(topic, event, data, false).await
            }

            async fn broadcast_from<Data: serde::Serialize + ?Sized>(
                &self,
                topic: &str,
                event: &str,
                data: &Data,
            ) -> Result<(), $crate::error::ChannelError> {
                self.local()?.publish(topic, event, data, true).await
            }

            async fn track<Meta: serde::Serialize + ?Sized>(
                &self,
                topic: &str,
                key: &str,
                meta: &Meta,
            ) -> Result<(), $crate::error::ChannelError> {
                self.local()?.track(topic, key, meta).await
            }

            async fn untrack(&self, topic: &str) -> Result<(), $crate::error::ChannelError> {
                self.local()?.untrack(topic)
            }
        }
    };
    ($ty:ty) => {
        $crate::topics::local_topics!(impl<> $ty);
    };
}
pub(crate) use local_topics;

/// Any open connection of a hub, reached by id (from [`Hub::to`]): for HTTP handlers, tasks
/// and the connections API. Each call finds the connection anew; one that has closed answers
/// `Closed`.
///
/// ```
/// use switchboard::prelude::*;
///
/// async fn follow(hub: Hub, id: ConnectionId) -> Result<(), ChannelError> {
///     hub.to(id).subscribe("news").await?;
///     Ok(())
/// }
/// ```
#[derive(Clone, Debug)]
pub struct ConnectionRef {
    hub: Hub,
    id: crate::id::ConnectionId,
}

impl ConnectionRef {
    /// The connection's id.
    pub fn id(&self) -> crate::id::ConnectionId {
        self.id
    }

    fn local(&self) -> Result<Local<'_>, ChannelError> {
        let entry = self.hub.entry(self.id).ok_or(ChannelError::Closed)?;
        Ok(Local {
            hub: &self.hub,
            subscriber: entry.subscriber(self.id),
            entry,
        })
    }
}

local_topics!(ConnectionRef);

impl Hub {
    /// Topic operations for the open connection `id` (see [`Topics`]).
    pub fn to(&self, id: crate::id::ConnectionId) -> ConnectionRef {
        ConnectionRef {
            hub: self.clone(),
            id,
        }
    }
}
