//! Handler arguments.
//!
//! Every argument but the last is a [`FromMessageParts`] extractor: [`Channel<S>`],
//! `web::Data<T>`, [`Hub`](crate::Hub), [`ConnectionId`], [`Route`], [`Binary`]. The last argument
//! may also be the typed payload: any `DeserializeOwned` type, deserialized from the message's
//! `data` (a missing `data` reads as `null`, so `Option<T>` and `()` accept it).
//!
//! Write your own extractor by implementing [`FromMessageParts`]:
//!
//! ```
//! use switchboard::handler::extract::FromMessageParts;
//! use switchboard::{ChannelError, MessageRequest};
//!
//! /// The `Authorization` bearer token the connection opened with.
//! struct Token(String);
//!
//! impl<S> FromMessageParts<S> for Token {
//!     fn from_parts(req: &MessageRequest<S>) -> Result<Self, ChannelError> {
//!         req.channel()
//!             .header("authorization")
//!             .and_then(|h| h.strip_prefix("Bearer "))
//!             .map(|t| Token(t.to_owned()))
//!             .ok_or_else(|| ChannelError::unauthorized("no bearer token"))
//!     }
//! }
//! ```

use actix_web::web;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::channel::Channel;
use crate::error::ChannelError;
use crate::handler::{IntoReply, MessageRequest, Reply};
use crate::id::ConnectionId;

/// An argument extracted from the message and its connection, without consuming the payload.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a channel handler argument",
    label = "not an extractor",
    note = "arguments are `Channel<S>`, `web::Data<T>`, `Hub`, `ConnectionId`, `Route`, `Binary` or types implementing `FromMessageParts`; the typed payload (a `Deserialize` type) must be the last argument; the opening request's headers, query and path parameters are on `Channel`"
)]
pub trait FromMessageParts<S>: Sized {
    /// Extracts the argument, or fails with an error frame.
    fn from_parts(req: &MessageRequest<S>) -> Result<Self, ChannelError>;
}

/// The last argument of a handler: an extractor, or the payload.
///
/// `M` tells the two kinds apart so that both can have blanket implementations.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the last argument of a channel handler",
    label = "neither an extractor nor a payload type",
    note = "the payload type must implement `serde::Deserialize` (e.g. `#[derive(Deserialize)]`)"
)]
pub trait FromMessage<S, M>: Sized {
    /// Extracts the argument, or fails with an error frame.
    fn from_message(req: &MessageRequest<S>) -> Result<Self, ChannelError>;
}

#[doc(hidden)]
pub mod marker {
    /// The last argument is an extractor.
    pub enum ViaParts {}
    /// The last argument is the payload.
    pub enum ViaPayload {}
}

impl<S, T: FromMessageParts<S>> FromMessage<S, marker::ViaParts> for T {
    fn from_message(req: &MessageRequest<S>) -> Result<Self, ChannelError> {
        T::from_parts(req)
    }
}

impl<S, T: DeserializeOwned> FromMessage<S, marker::ViaPayload> for T {
    fn from_message(req: &MessageRequest<S>) -> Result<Self, ChannelError> {
        crate::protocol::decode_payload(req.data().unwrap_or("null"))
    }
}

impl<S> FromMessageParts<S> for Channel<S> {
    fn from_parts(req: &MessageRequest<S>) -> Result<Self, ChannelError> {
        Ok(req.channel.clone())
    }
}

impl<S, T: ?Sized + 'static> FromMessageParts<S> for web::Data<T> {
    fn from_parts(req: &MessageRequest<S>) -> Result<Self, ChannelError> {
        req.channel
            .app_data::<web::Data<T>>()
            .cloned()
            .ok_or_else(|| {
                ChannelError::internal(format_args!(
                    "app data `web::Data<{}>` is not registered on the App",
                    std::any::type_name::<T>()
                ))
            })
    }
}

impl<S> FromMessageParts<S> for ConnectionId {
    fn from_parts(req: &MessageRequest<S>) -> Result<Self, ChannelError> {
        Ok(req.channel.id())
    }
}

impl<S> FromMessageParts<S> for crate::hub::Hub {
    fn from_parts(req: &MessageRequest<S>) -> Result<Self, ChannelError> {
        Ok(req.channel.hub().clone())
    }
}

/// The route key of the message being handled: useful in a fallback handler.
///
/// ```
/// use switchboard::prelude::*;
///
/// #[switchboard::fallback]
/// async fn unrouted(route: Route) -> Result<(), ChannelError> {
///     Err(ChannelError::new("unknown_route", format!("nothing answers `{}`", route.0)))
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route(pub String);

impl<S> FromMessageParts<S> for Route {
    fn from_parts(req: &MessageRequest<S>) -> Result<Self, ChannelError> {
        Ok(Route(req.route().to_owned()))
    }
}

/// The payload of a binary frame, in an `on_binary` handler; as a return value, a binary
/// reply.
///
/// ```
/// use switchboard::prelude::*;
///
/// /// Echoes binary frames back, reversed.
/// #[switchboard::on_binary]
/// async fn reverse(data: Binary) -> Binary {
///     let mut bytes = data.0.to_vec();
///     bytes.reverse();
///     Binary(bytes.into())
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binary(pub Bytes);

impl<S> FromMessageParts<S> for Binary {
    fn from_parts(req: &MessageRequest<S>) -> Result<Self, ChannelError> {
        req.binary()
            .cloned()
            .map(Binary)
            .ok_or_else(|| ChannelError::new("bad_payload", "this handler expects a binary frame"))
    }
}

/// Lets handlers answer with a binary frame.
impl IntoReply for Binary {
    fn into_reply<S>(self, _req: &MessageRequest<S>) -> Result<Reply, ChannelError> {
        Ok(Reply(Some(crate::channel::outbound::Frame::Binary(self.0))))
    }
}
