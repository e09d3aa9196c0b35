#![doc = include_str!("../../README.md")]
#![warn(missing_docs)]

mod broker;
mod channel;
mod connection;
#[cfg(feature = "gateway")]
pub mod connections_api;
pub mod engine;
pub mod error;
pub mod extract;
#[cfg(feature = "gateway")]
pub mod function;
#[cfg(feature = "gateway")]
pub mod gateway;
pub mod handler;
#[cfg(feature = "gateway")]
mod http_client;
pub mod hub;
mod id;
pub mod join;
pub mod js;
mod outbound;
pub mod protocol;
#[cfg(feature = "redis")]
pub mod redis;
pub mod session;
#[cfg(feature = "testing")]
pub mod testing;
mod transport;

pub use crate::channel::{Channel, ChannelConfig, ChannelRoute, ConnectRequest, Origins};
pub use crate::engine::{Engine, MemoryEngine, Position, Subscribed};
pub use crate::error::{ChannelError, Error, Result};
pub use crate::extract::{Binary, Route};
pub use crate::handler::{
    ConnectHandler, DisconnectHandler, IntoReply, MessageHandler, MessageRequest, Reply,
};
pub use crate::hub::Hub;
pub use crate::id::{ConnectionId, InvalidConnectionId};
pub use crate::outbound::SlowConsumerPolicy;

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

/// Marks a struct as the state of a stateful session (see [`session`](crate::session)).
pub use switchboard_macros::session;

/// Turns a session struct's `impl` block into its routes and lifecycle (see
/// [`session`](crate::session)).
pub use switchboard_macros::session_handlers;

/// The names most channel code needs.
pub mod prelude {
    pub use crate::{
        Binary, Channel, ChannelError, ChannelRoute, ConnectRequest, ConnectionId, Hub, Position,
        Route, SlowConsumerPolicy,
    };
}

/// What macro output refers to. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::extract::{FromMessage, FromMessageParts};
    pub use crate::handler::{BoxFuture, IntoReply, IntoSession};
    pub use actix_web;

    use crate::error::Error;
    use crate::handler::{MessageRequest, Reply};

    /// A non-final argument.
    #[inline]
    pub fn parts<T: FromMessageParts<S>, S>(req: &MessageRequest<S>) -> Result<T, Error> {
        T::from_parts(req)
    }

    /// The final argument: an extractor or the payload.
    #[inline]
    pub fn last<T: FromMessage<S, M>, S, M>(req: &MessageRequest<S>) -> Result<T, Error> {
        T::from_message(req)
    }

    /// Encodes what the handler returned.
    #[inline]
    pub fn reply<R: IntoReply, S>(req: &MessageRequest<S>, r: R) -> Result<Reply, Error> {
        r.into_reply(req)
    }

    /// A connect handler's argument, through actix-web's extractors.
    pub async fn connect_arg<T: actix_web::FromRequest>(
        req: &actix_web::HttpRequest,
    ) -> Result<T, Error> {
        let mut payload = actix_web::dev::Payload::None;
        T::from_request(req, &mut payload).await.map_err(|e| {
            let e: actix_web::Error = e.into();
            let status = e.as_response_error().status_code();
            Error::new("bad_request", e.to_string()).with_status(status)
        })
    }

    /// A connect handler's result.
    #[inline]
    pub fn into_session<S, R: IntoSession<S>>(r: R) -> Result<Option<S>, Error> {
        r.into_session()
    }

    /// Makes the disconnect handler's return type check point at the user's code.
    #[inline]
    pub fn unit(_: ()) {}

    /// A session's `create` result.
    #[inline]
    pub fn created<T, R: IntoSession<T>>(r: R) -> Result<T, Error> {
        r.into_session()?
            .ok_or_else(|| Error::unauthorized("no session"))
    }

    /// `Result<(), E>` of a session's `on_connect`.
    #[inline]
    pub fn unit_result<E: Into<Error>>(r: Result<(), E>) -> Result<(), Error> {
        r.map_err(Into::into)
    }

    /// A session type without `create`: built with `Default`.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` has no `create` and is not `Default`",
        note = "add `async fn create(req: ConnectRequest) -> Result<Self, ChannelError>` to its `#[switchboard::session_handlers]` block, or derive `Default`"
    )]
    pub trait DefaultSession: Sized {
        /// The session's initial state.
        fn default_session() -> Self;
    }

    impl<T: Default> DefaultSession for T {
        fn default_session() -> Self {
            T::default()
        }
    }

    /// See [`DefaultSession`].
    #[inline]
    pub fn default_session<T: DefaultSession>() -> T {
        T::default_session()
    }

    /// A disconnect handler whose arguments could not be extracted does not run.
    pub fn log_disconnect_error(e: &Error) {
        log::error!("disconnect handler not run: {e}");
    }
}
