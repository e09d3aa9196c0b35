//! What a channel declares for its generated types beside its routes.

use schemars::JsonSchema;

use crate::handler::describe::TypeDesc;
use crate::ChannelRoute;

/// Declarations for the generated types (feature `schema`). A route's payload and reply come
/// from its handler; what handlers send by other ways is declared here.
impl<S: 'static> ChannelRoute<S> {
    /// Declares that the channel pushes `event` (`Channel::send`, `SessionCtx::send`) with a
    /// `T` as its data: `sb.on(event, (data: T) => ...)` in TypeScript.
    ///
    /// ```
    /// use switchboard::prelude::*;
    ///
    /// let route = ChannelRoute::<()>::new("/ws/game").push_event::<u32>("clock");
    /// let ts = switchboard::schema::typescript(&route).unwrap();
    /// assert!(ts.contains("clock: number;"));
    /// ```
    pub fn push_event<T: JsonSchema>(mut self, event: &str) -> Self {
        self.declared
            .pushes
            .push((event.to_owned(), TypeDesc::of::<T>()));
        self
    }

    /// Declares that publications on topics matching `pattern` (`room:*`, `game:winners`)
    /// include `event` with a `T` as its data: `(await sb.subscribe("room:lobby")).on(event,
    /// (data: T) => ...)` in TypeScript. Once a topic has declared events, those are the ones a
    /// subscription listens to by name.
    ///
    /// ```
    /// use switchboard::prelude::*;
    ///
    /// #[derive(serde::Serialize, schemars::JsonSchema)]
    /// struct Said { nick: String, text: String }
    ///
    /// let route = ChannelRoute::<()>::new("/ws/chat")
    ///     .allow_join("room:*")
    ///     .topic_event::<Said>("room:*", "said");
    /// let ts = switchboard::schema::typescript(&route).unwrap();
    /// assert!(ts.contains("[topic: `room:${string}`]: {\n      said: Said;\n    };"));
    /// ```
    pub fn topic_event<T: JsonSchema>(mut self, pattern: &str, event: &str) -> Self {
        self.declared
            .topics
            .push((pattern.to_owned(), event.to_owned(), TypeDesc::of::<T>()));
        self
    }

    /// Declares an error code the channel's handlers answer with (`ChannelError::new(code,
    /// ..)`), and what it means; the framework's own codes are always listed.
    pub fn error_code(mut self, code: &str, meaning: &str) -> Self {
        self.declared
            .errors
            .push((code.to_owned(), meaning.to_owned()));
        self
    }

    /// Declares the query parameters of the channel's URL, for a connect handler that reads
    /// them from `ConnectRequest` (one with a `web::Query<T>` argument says so itself).
    pub fn connect_query<T: JsonSchema>(mut self) -> Self {
        self.declared.connect = Some(TypeDesc::of::<T>());
        self
    }
}
