//! What macro output refers to. Not public API: nothing here is stable.

pub use crate::handler::extract::{FromMessage, FromMessageParts};
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
