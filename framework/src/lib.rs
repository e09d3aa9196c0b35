#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "admin")]
#[cfg_attr(docsrs, doc(cfg(feature = "admin")))]
pub mod admin;
pub mod channel;
pub mod drain;
pub mod engine;
pub mod error;
pub mod handler;
pub mod hub;
mod id;
pub mod js;
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub mod jwt;
mod meter;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
pub mod protocol;
#[cfg(feature = "schema")]
#[cfg_attr(docsrs, doc(cfg(feature = "schema")))]
pub mod schema;
#[cfg(feature = "gateway")]
#[cfg_attr(docsrs, doc(cfg(feature = "gateway")))]
pub mod serverless;
pub mod session;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
pub mod topics;

pub use crate::channel::outbound::SlowConsumerPolicy;
pub use crate::channel::{Channel, ChannelConfig, ChannelRoute, ConnectRequest, Origins};
pub use crate::engine::{Engine, MemoryEngine, Position, Subscribed};
pub use crate::error::{ChannelError, Result};
pub use crate::handler::extract::{Binary, Route};
pub use crate::handler::{
    ConnectHandler, DisconnectHandler, IntoReply, MessageHandler, MessageRequest, Reply,
};
pub use crate::hub::Hub;
pub use crate::id::{ConnectionId, InvalidConnectionId};
pub use crate::topics::{SubscribeOptions, Topics};

/// Turns an `async fn` into a routed message handler: `#[switchboard::message("join")]`.
///
/// Arguments are extractors ([`Channel<S>`], `web::Data<T>`, [`Hub`], [`ConnectionId`],
/// [`Route`]); the last one may be the payload, any `serde::Deserialize` type read from the
/// message's `data`. The return value is the reply (see [`IntoReply`]).
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use switchboard::prelude::*;
///
/// #[derive(Deserialize)]
/// struct Add { a: i64, b: i64 }
///
/// #[switchboard::message("add")]
/// async fn add(msg: Add) -> Result<i64, ChannelError> {
///     msg.a.checked_add(msg.b).ok_or_else(|| ChannelError::new("overflow", "too large"))
/// }
///
/// let route = ChannelRoute::<()>::new("/ws/calc").message(add);
/// ```
pub use switchboard_macros::message;

/// Turns an `async fn` into the channel's fallback (`$default`) handler.
pub use switchboard_macros::fallback;

/// Turns an `async fn` into the channel's binary-frame handler.
pub use switchboard_macros::on_binary;

/// Turns an `async fn` into a connect handler. Arguments are actix-web extractors
/// (`ConnectRequest`, `web::Data<T>`, `web::Query<T>`, `HttpRequest`, ...); it returns
/// `Result<S, E>` (accept with session `S`) or `Result<Option<S>, E>` (a session is optional).
pub use switchboard_macros::on_connect;

/// Turns an `async fn` into a disconnect handler; it runs exactly once per connection.
pub use switchboard_macros::on_disconnect;

/// Marks a struct as the state of a stateful session (see [`session`](mod@crate::session)).
pub use switchboard_macros::session;

/// Turns a session struct's `impl` block into its routes and lifecycle (see
/// [`session`](mod@crate::session)).
pub use switchboard_macros::session_handlers;

/// The names most channel code needs.
pub mod prelude {
    pub use crate::{
        Binary, Channel, ChannelError, ChannelRoute, ConnectRequest, ConnectionId, Hub, Position,
        Route, SlowConsumerPolicy, SubscribeOptions, Topics,
    };
}

/// What macro output refers to. Not public API.
#[doc(hidden)]
pub mod __private;
