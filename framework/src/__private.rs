//! What macro output refers to. Not public API: nothing here is stable.
//!
//! A proc macro sees how a type is spelled, not what it is, so the handler macros never decide
//! anything by a type's name. They ask the compiler instead: `arg_kind!` classifies an
//! argument type by the traits it implements, and the generated code dispatches on that kind
//! (`Arg` for stateless handlers, `Slot` for eager checks and session methods). A handler
//! therefore works the same whether it names `Channel` through `use switchboard::Channel as
//! Conn;`, a full path or a type alias.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;

pub use crate::handler::extract::{FromMessage, FromMessageParts};
pub use crate::handler::{BoxFuture, IntoReply, IntoSession};
pub use actix_web;

use crate::channel::Channel;
use crate::engine::Publication;
use crate::error::ChannelError;
use crate::handler::extract::marker::ViaPayload;
use crate::handler::{MessageRequest, Reply};
use crate::session::{SessionCtx, SessionHost, SessionRequest};

/// The kinds of handler arguments, as `arg_kind!` finds them. The impls below match on the
/// values themselves (`Slot<A, 4>`), which is how diagnostics print them.
pub mod kind {
    /// `&SessionCtx<T>`: a session method's context.
    pub const CONTEXT: u8 = 0;
    /// `Channel<S>`: an extractor that names the channel's session type.
    pub const CHANNEL: u8 = 1;
    /// An extractor for channels of every session type (`ConnectionId`, `Hub`, `Route`,
    /// `web::Data<T>`, ...), even when it is also `Deserialize`.
    pub const EXTRACTOR: u8 = 2;
    /// The last argument, `Deserialize` and no extractor: the typed payload.
    pub const PAYLOAD: u8 = 3;
    /// Any other argument before the last: it must be an extractor, for some session types.
    pub const PARTS: u8 = 4;
    /// Any other last argument: an extractor for some session types, or no argument at all.
    pub const LAST: u8 = 5;
}

/// A session type no code names: an extractor for it is an extractor for every session type.
pub enum AnySession {}

/// Asks the compiler what `T` is. Each associated constant is `true` through an inherent impl
/// whose bounds `T` meets, and `false` through [`Otherwise`] when it does not (inherent items
/// are found before trait items).
pub struct Probe<T: ?Sized>(PhantomData<T>);

impl<T> Probe<&SessionCtx<T>> {
    /// See [`kind::CONTEXT`].
    pub const CONTEXT: bool = true;
}

impl<S> Probe<Channel<S>> {
    /// See [`kind::CHANNEL`].
    pub const CHANNEL: bool = true;
}

impl<T: FromMessageParts<AnySession>> Probe<T> {
    /// See [`kind::EXTRACTOR`].
    pub const EXTRACTOR: bool = true;
}

impl<T: DeserializeOwned> Probe<T> {
    /// See [`kind::PAYLOAD`].
    pub const PAYLOAD: bool = true;
}

/// The `false` answers of [`Probe`].
pub trait Otherwise {
    /// See [`kind::CONTEXT`].
    const CONTEXT: bool = false;
    /// See [`kind::CHANNEL`].
    const CHANNEL: bool = false;
    /// See [`kind::EXTRACTOR`].
    const EXTRACTOR: bool = false;
    /// See [`kind::PAYLOAD`].
    const PAYLOAD: bool = false;
}

impl<T: ?Sized> Otherwise for Probe<T> {}

/// The [`kind`] of an argument from [`Probe`]'s answers and its position, in order of
/// precedence: an extractor that is also `Deserialize` is an extractor.
pub const fn kind_of(
    context: bool,
    channel: bool,
    extractor: bool,
    payload: bool,
    last: bool,
) -> u8 {
    match (context, channel, extractor, payload && last, last) {
        (true, ..) => kind::CONTEXT,
        (_, true, ..) => kind::CHANNEL,
        (_, _, true, ..) => kind::EXTRACTOR,
        (_, _, _, true, _) => kind::PAYLOAD,
        (.., false) => kind::PARTS,
        (.., true) => kind::LAST,
    }
}

/// The [`kind`] of an argument of type `$t`, last or not, as a constant expression (`$t` must
/// not name generic parameters).
#[doc(hidden)]
#[macro_export]
macro_rules! __switchboard_arg_kind {
    ($t:ty, $last:literal) => {{
        use $crate::__private::Otherwise as _;
        $crate::__private::kind_of(
            $crate::__private::Probe::<$t>::CONTEXT,
            $crate::__private::Probe::<$t>::CHANNEL,
            $crate::__private::Probe::<$t>::EXTRACTOR,
            $crate::__private::Probe::<$t>::PAYLOAD,
            $last,
        )
    }};
}

pub use crate::__switchboard_arg_kind as arg_kind;

// The impls of `Arg` and `Slot` name the kinds by value.
const _: () = assert!(
    kind::CONTEXT == 0
        && kind::CHANNEL == 1
        && kind::EXTRACTOR == 2
        && kind::PAYLOAD == 3
        && kind::PARTS == 4
        && kind::LAST == 5
);

/// An argument of a stateless handler on channels of session type `S`, extracted as its kind
/// `K` says. The generated `MessageHandler<S>` impl is generic over `S` and bounds every
/// argument by this trait, so the compiler infers the session type from the arguments: a
/// `Channel<User>` argument makes it a handler for `User` channels only, a handler without one
/// fits every channel.
#[diagnostic::on_unimplemented(
    message = "the handler's `{Self}` argument does not fit a channel of session type `{S}`",
    label = "a handler for another session type",
    note = "a handler's `Channel<S>` argument must use the session type of the channel it is mounted on; a handler without one fits every channel"
)]
pub trait Arg<S, const K: u8>: Sized {
    /// Extracts the argument, or fails with an error frame.
    fn extract(req: &MessageRequest<S>) -> Result<Self, ChannelError>;
}

impl<S> Arg<S, 1> for Channel<S> {
    fn extract(req: &MessageRequest<S>) -> Result<Self, ChannelError> {
        Self::from_parts(req)
    }
}

impl<S, T: FromMessageParts<S>> Arg<S, 2> for T {
    fn extract(req: &MessageRequest<S>) -> Result<Self, ChannelError> {
        T::from_parts(req)
    }
}

impl<S, T: DeserializeOwned> Arg<S, 3> for T {
    fn extract(req: &MessageRequest<S>) -> Result<Self, ChannelError> {
        <T as FromMessage<S, ViaPayload>>::from_message(req)
    }
}

impl<S, T: FromMessageParts<S>> Arg<S, 4> for T {
    fn extract(req: &MessageRequest<S>) -> Result<Self, ChannelError> {
        T::from_parts(req)
    }
}

/// Last, an extractor for some session types (the check rules out the rest).
impl<S, T: FromMessageParts<S>> Arg<S, 5> for T {
    fn extract(req: &MessageRequest<S>) -> Result<Self, ChannelError> {
        T::from_parts(req)
    }
}

/// An argument of type `A` and kind `K`.
///
/// `Slot::<A, K>::check()` is the eager check of a stateless handler's argument, written where
/// no session type is known: for the kinds whose [`Arg`] bound could fail it asks whether `A`
/// is an extractor for some session type (or, last, the payload), so that a wrong argument is
/// an error at the handler even when no channel mounts it.
///
/// `Slot::<A, K>::session(ctx, req)` gives a session method its argument.
pub struct Slot<A: ?Sized, const K: u8>(PhantomData<A>);

impl<'c, T> Slot<&'c SessionCtx<T>, 0> {
    /// The context is not an argument of stateless handlers.
    pub fn check<S>()
    where
        &'c SessionCtx<T>: FromMessageParts<S>,
    {
    }

    /// The session's context.
    pub fn session(
        ctx: &'c SessionCtx<T>,
        _req: &SessionRequest<T>,
    ) -> Result<&'c SessionCtx<T>, ChannelError> {
        Ok(ctx)
    }
}

impl<S> Slot<Channel<S>, 1> {
    /// Any `Channel<S>` fits some channel.
    pub fn check() {}

    /// The session's connection.
    pub fn session<T>(
        _ctx: &SessionCtx<T>,
        req: &SessionRequest<T>,
    ) -> Result<Channel<S>, ChannelError>
    where
        Channel<S>: FromMessageParts<SessionHost<T>>,
    {
        Channel::from_parts(req)
    }
}

impl<A> Slot<A, 2> {
    /// An extractor for every session type fits every channel.
    pub fn check() {}

    /// The extractor.
    pub fn session<T>(_ctx: &SessionCtx<T>, req: &SessionRequest<T>) -> Result<A, ChannelError>
    where
        A: FromMessageParts<SessionHost<T>>,
    {
        A::from_parts(req)
    }
}

impl<A> Slot<A, 3> {
    /// The payload is `Deserialize`.
    pub fn check() {}

    /// The payload.
    pub fn session<T>(_ctx: &SessionCtx<T>, req: &SessionRequest<T>) -> Result<A, ChannelError>
    where
        A: DeserializeOwned,
    {
        <A as FromMessage<SessionHost<T>, ViaPayload>>::from_message(req)
    }
}

impl<A> Slot<A, 4> {
    /// An argument before the last must be an extractor for some session type.
    pub fn check<S>()
    where
        A: FromMessageParts<S>,
    {
    }

    /// The extractor.
    pub fn session<T>(_ctx: &SessionCtx<T>, req: &SessionRequest<T>) -> Result<A, ChannelError>
    where
        A: FromMessageParts<SessionHost<T>>,
    {
        A::from_parts(req)
    }
}

impl<A> Slot<A, 5> {
    /// The last argument must be an extractor for some session type, or the payload.
    pub fn check<S, M>()
    where
        A: FromMessage<S, M>,
    {
    }

    /// The extractor.
    pub fn session<T, M>(_ctx: &SessionCtx<T>, req: &SessionRequest<T>) -> Result<A, ChannelError>
    where
        A: FromMessage<SessionHost<T>, M>,
    {
        A::from_message(req)
    }
}

/// An argument of a session's `#[topic_message]` method.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an argument of a `#[topic_message]` method",
    label = "not the session context or the publication",
    note = "a topic method takes `&mut self`, the session context (`&SessionCtx<Self>`) and the `Publication`"
)]
pub trait TopicArg<'a, T>: Sized {
    /// Picks the argument.
    fn pick(ctx: &'a SessionCtx<T>, publication: &Publication) -> Self;
}

impl<'a, T> TopicArg<'a, T> for &'a SessionCtx<T> {
    fn pick(ctx: &'a SessionCtx<T>, _: &Publication) -> Self {
        ctx
    }
}

impl<T> TopicArg<'_, T> for Publication {
    fn pick(_: &SessionCtx<T>, publication: &Publication) -> Self {
        publication.clone()
    }
}

/// `T: Is<S>` holds for `S = T` only: the bound of a handler written with `session = T`.
#[diagnostic::on_unimplemented(
    message = "the handler is for sessions of type `{Self}`, not `{S}`",
    label = "a handler for another session type",
    note = "the handler was written with `session = {Self}`"
)]
pub trait Is<S> {}

impl<T> Is<T> for T {}

/// Encodes what the handler returned.
#[inline]
pub fn reply<R: IntoReply, S>(req: &MessageRequest<S>, r: R) -> Result<Reply, ChannelError> {
    r.into_reply(req)
}

/// A connect handler's argument, through actix-web's extractors.
pub async fn connect_arg<T: actix_web::FromRequest>(
    req: &actix_web::HttpRequest,
) -> Result<T, ChannelError> {
    let mut payload = actix_web::dev::Payload::None;
    T::from_request(req, &mut payload).await.map_err(|e| {
        let e: actix_web::Error = e.into();
        let status = e.as_response_error().status_code();
        ChannelError::new("bad_request", e.to_string()).with_status(status)
    })
}

/// A connect handler's result.
#[inline]
pub fn into_session<S, R: IntoSession<S>>(r: R) -> Result<Option<S>, ChannelError> {
    r.into_session()
}

/// Makes the disconnect handler's return type check point at the user's code.
#[inline]
pub fn unit(_: ()) {}

/// A session's `create` result.
#[inline]
pub fn created<T, R: IntoSession<T>>(r: R) -> Result<T, ChannelError> {
    r.into_session()?
        .ok_or_else(|| ChannelError::unauthorized("no session"))
}

/// `Result<(), E>` of a session's `on_connect`.
#[inline]
pub fn unit_result<E: Into<ChannelError>>(r: Result<(), E>) -> Result<(), ChannelError> {
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
pub fn log_disconnect_error(e: &ChannelError) {
    tracing::error!("disconnect handler not run: {e}");
}

/// Emits its tokens only when the `schema` feature is on: the macros wrap the items that
/// describe a handler's types in it, so that without the feature nothing is generated and no
/// type needs a schema.
#[cfg(feature = "schema")]
#[doc(hidden)]
#[macro_export]
macro_rules! __switchboard_if_schema {
    ($($item:tt)*) => { $($item)* };
}

/// Emits its tokens only when the `schema` feature is on (it is off).
#[cfg(not(feature = "schema"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __switchboard_if_schema {
    ($($item:tt)*) => {};
}

pub use crate::__switchboard_if_schema as if_schema;

#[cfg(feature = "schema")]
pub use schema::*;

/// How the macros describe a handler's types: each answer is an associated constant found
/// through an inherent impl when the type can be described, and through a trait's default when
/// it cannot (as [`Probe`] does), so that a type without a schema is reported when the
/// TypeScript is generated, never at compile time.
#[cfg(feature = "schema")]
mod schema {
    use std::marker::PhantomData;

    use schemars::JsonSchema;

    use crate::handler::describe::{schema_of, Shape};

    /// A payload type: [`Shape::Schema`] when it implements `JsonSchema`.
    pub struct TypeOf<T: ?Sized>(PhantomData<T>);

    impl<T: JsonSchema + ?Sized> TypeOf<T> {
        /// Described.
        pub const SHAPE: Shape = Shape::Schema(schema_of::<T>);
    }

    /// The `false` answer of [`TypeOf`].
    pub trait NoSchema {
        /// Not described.
        const SHAPE: Shape = Shape::Opaque;
    }

    impl<T: ?Sized> NoSchema for TypeOf<T> {}

    /// What a handler returns: the `Ok` type of a `Result`, or `()`.
    pub struct ReplyOf<R: ?Sized>(PhantomData<R>);

    impl<T: JsonSchema, E> ReplyOf<Result<T, E>> {
        /// The `Ok` type, described.
        pub const SHAPE: Shape = Shape::Schema(schema_of::<T>);
    }

    impl ReplyOf<()> {
        /// `null`.
        pub const SHAPE: Shape = Shape::Schema(schema_of::<()>);
    }

    /// The `false` answer of [`ReplyOf`] (a `Reply`, a `Binary`, an `Ok` type without a
    /// schema).
    pub trait NoReplySchema {
        /// Not described.
        const SHAPE: Shape = Shape::Opaque;
    }

    impl<R: ?Sized> NoReplySchema for ReplyOf<R> {}

    /// A connect handler's argument: `web::Query<T>` with a described `T` is the query.
    pub struct QueryOf<A: ?Sized>(PhantomData<A>);

    impl<T: JsonSchema> QueryOf<actix_web::web::Query<T>> {
        /// The query parameters.
        pub const SHAPE: Shape = Shape::Schema(schema_of::<T>);
    }

    /// The `false` answer of [`QueryOf`]: not the query, or not described.
    pub trait NotQuery {
        /// No query.
        const SHAPE: Shape = Shape::None;
    }

    impl<A: ?Sized> NotQuery for QueryOf<A> {}
}

/// The [`schema::Shape`](crate::schema::Shape) of a handler's last argument `$t`: its schema
/// when it is the payload, nothing when it is an extractor.
#[cfg(feature = "schema")]
#[doc(hidden)]
#[macro_export]
macro_rules! __switchboard_payload_shape {
    ($t:ty) => {{
        use $crate::__private::NoSchema as _;
        if $crate::__private::arg_kind!($t, true) == $crate::__private::kind::PAYLOAD {
            $crate::__private::TypeOf::<$t>::SHAPE
        } else {
            $crate::schema::Shape::None
        }
    }};
}

#[cfg(feature = "schema")]
pub use crate::__switchboard_payload_shape as payload_shape;

/// The [`schema::Shape`](crate::schema::Shape) of what a handler returns, `$t`.
#[cfg(feature = "schema")]
#[doc(hidden)]
#[macro_export]
macro_rules! __switchboard_reply_shape {
    ($t:ty) => {{
        use $crate::__private::NoReplySchema as _;
        $crate::__private::ReplyOf::<$t>::SHAPE
    }};
}

#[cfg(feature = "schema")]
pub use crate::__switchboard_reply_shape as reply_shape;

/// The [`schema::Shape`](crate::schema::Shape) of a connect handler's argument `$t` as the
/// query.
#[cfg(feature = "schema")]
#[doc(hidden)]
#[macro_export]
macro_rules! __switchboard_query_shape {
    ($t:ty) => {{
        use $crate::__private::NotQuery as _;
        $crate::__private::QueryOf::<$t>::SHAPE
    }};
}

#[cfg(feature = "schema")]
pub use crate::__switchboard_query_shape as query_shape;
