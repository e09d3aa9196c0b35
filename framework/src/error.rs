//! The crate's one error type, and its wire form.
//!
//! Every error knows how it reaches a client: as an error frame (`code` + `message`) on an open
//! connection, as an HTTP status when it rejects an upgrade, or as a close code.

use std::borrow::Cow;
use std::fmt;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

/// The error handlers return and the framework reports.
///
/// Build your own with [`ChannelError::new`] (a code and a message the client sees), or use one of the
/// named constructors. Each error has a stable machine-readable [`code`](ChannelError::code):
///
/// | code | when |
/// |---|---|
/// | `bad_json` | a text frame is not a JSON object |
/// | `missing_route` | the route key field is absent or not a string |
/// | `bad_ref` | `ref` is neither a string nor a number |
/// | `unknown_route` | no handler for the route and no fallback |
/// | `bad_payload` | `data` does not match the handler's type |
/// | `binary_unsupported` | a binary frame on a channel without `on_binary` |
/// | `unauthorized` / `forbidden` | auth failures (HTTP 401 / 403 on connect) |
/// | `overloaded` | the connection's inbound queue is full |
/// | `rate_limited` | the connection sends faster than its message rate allows |
/// | `too_many_topics` | a subscribe beyond the connection's topic limit |
/// | `bad_topic` | a topic name longer than the channel allows |
/// | `presence_too_large` | presence metadata larger than the channel allows |
/// | `too_many_user_topics` | a subscribe beyond the topics one user may hold across its connections |
/// | `too_many_user_connections` | a connection beyond the user's limit; HTTP 429 on connect |
/// | `token_expired` | a connection's or a subscription's token expired (`unsubscribed` frames) |
/// | `refresh_unsupported` | a `refresh` for which the channel has no handler, or for a topic without a token |
/// | `internal` | a handler panicked or failed unexpectedly (details are logged, not sent) |
/// | `engine_unavailable` | the engine is down (the Redis engine lost Redis); HTTP 503 |
/// | `function_timeout` / `function_unavailable` / `function_error` | gateway mode: the function was too slow, unreachable, or failed |
///
/// ```
/// use switchboard::ChannelError;
///
/// let err = ChannelError::new("nickname_taken", "that nickname is in use");
/// assert_eq!(err.code(), "nickname_taken");
/// assert_eq!(err.to_string(), "that nickname is in use");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// A text frame that is not a JSON object.
    #[error("invalid JSON: {0}")]
    BadJson(String),
    /// The route key field is missing or not a string.
    #[error("message has no string `{0}` route key")]
    MissingRoute(String),
    /// `ref` is present but neither a string nor a number.
    #[error("`ref` must be a string or a number")]
    BadRef,
    /// No handler for the route, and the channel has no fallback. The route as the message
    /// names it, cut by [`clip`](ChannelError::clip) (build it with
    /// [`ChannelError::unknown_route`]).
    #[error("no handler for route `{0}`")]
    UnknownRoute(String),
    /// `data` does not deserialize into the handler's type.
    #[error("{}", payload_message(.field, .reason))]
    BadPayload {
        /// The path of the offending field inside `data` (`room`, `items[2].id`), when known.
        field: Option<String>,
        /// serde's reason.
        reason: String,
    },
    /// A binary frame arrived and the channel has no binary handler.
    #[error("binary frames are not accepted on this channel")]
    BinaryUnsupported,
    /// The connection's inbound queue is full; the message was not handled.
    #[error("too many messages in flight on this connection")]
    Overloaded,
    /// The connection sends faster than the channel's message rate; the message was not
    /// handled.
    #[error("too many messages: slow down")]
    RateLimited,
    /// A subscribe (or track) would take the connection beyond its topic limit.
    #[error("a connection may hold at most {max} topics")]
    TooManyTopics {
        /// The limit.
        max: usize,
    },
    /// A topic name longer than the channel allows (the name is not echoed).
    #[error("topic names are limited to {max} bytes")]
    BadTopic {
        /// The limit, in bytes.
        max: usize,
    },
    /// Presence metadata whose JSON is larger than the channel allows.
    #[error("presence metadata is limited to {max} bytes of JSON")]
    PresenceTooLarge {
        /// The limit, in bytes.
        max: usize,
    },
    /// A subscribe (or track) would take the connection's user beyond the topics its
    /// connections on this node may hold together.
    #[error("a user may hold at most {max} topics across its connections")]
    TooManyUserTopics {
        /// The limit.
        max: usize,
    },
    /// The user has as many connections as the channel allows (HTTP 429 on connect).
    #[error("a user may have at most {max} connections open")]
    TooManyUserConnections {
        /// The limit.
        max: usize,
    },
    /// A token (the connection's, or a subscription's) expired without a valid refresh.
    #[error("the token expired")]
    TokenExpired,
    /// A `refresh` the channel cannot take: no refresh handler, or a topic that has no token.
    #[error("{0}")]
    RefreshUnsupported(Cow<'static, str>),
    /// Authentication is required or failed (HTTP 401 on connect).
    #[error("{0}")]
    Unauthorized(Cow<'static, str>),
    /// Authenticated but not allowed (HTTP 403 on connect).
    #[error("{0}")]
    Forbidden(Cow<'static, str>),
    /// The channel is at its connection cap (HTTP 503 on connect).
    #[error("too many connections on this channel")]
    TooManyConnections,
    /// The server is draining before it stops (HTTP 503 on connect): connect to another node.
    #[error("the server is shutting down: connect again (another node will answer)")]
    Draining,
    /// The connection is closed or closing; nothing more can be sent to it.
    #[error("connection closed")]
    Closed,
    /// An application error with its own code.
    #[error("{message}")]
    Custom {
        /// Machine-readable code sent in the error frame.
        code: Cow<'static, str>,
        /// Human-readable message sent in the error frame.
        message: String,
        /// HTTP status when this error rejects a connection (default 400).
        status: StatusCode,
    },
    /// Something failed on the server side. The detail is logged, the client sees only
    /// `internal`.
    #[error("internal error")]
    Internal(String),
}

/// The message a panic was raised with (`panic!("...")`), for logs.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

/// The most bytes of client text (a route, a topic, a field path) an error echoes.
pub const MAX_ECHO: usize = 128;

/// The most bytes of a decoder's reason (which may quote the client's input) an error echoes.
const MAX_REASON_ECHO: usize = 256;

/// `text` cut to at most `max` bytes at a char boundary, with `…` appended when cut.
pub(crate) fn clip_to(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &text[..end]))
}

fn payload_message(field: &Option<String>, reason: &str) -> String {
    match field {
        Some(field) => format!("invalid payload at `{field}`: {reason}"),
        None => format!("invalid payload: {reason}"),
    }
}

/// `Result` with this crate's [`ChannelError`].
pub type Result<T, E = ChannelError> = std::result::Result<T, E>;

impl ChannelError {
    /// An application error: `code` is machine-readable, `message` is for people.
    pub fn new(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        ChannelError::Custom {
            code: code.into(),
            message: message.into(),
            status: StatusCode::BAD_REQUEST,
        }
    }

    /// `unknown_route` for `route`, echoing at most [`MAX_ECHO`] bytes of it.
    pub fn unknown_route(route: &str) -> Self {
        ChannelError::UnknownRoute(Self::clip(route).into_owned())
    }

    /// Client text as an error message may echo it: at most [`MAX_ECHO`] bytes, cut at a char
    /// boundary and marked with `…` when cut. Use it for topic names, routes and other client
    /// input in your own error messages.
    pub fn clip(text: &str) -> Cow<'_, str> {
        clip_to(text, MAX_ECHO)
    }

    /// Rejects with `unauthorized` (HTTP 401 when returned by a connect handler).
    pub fn unauthorized(message: impl Into<Cow<'static, str>>) -> Self {
        ChannelError::Unauthorized(message.into())
    }

    /// Rejects with `forbidden` (HTTP 403 when returned by a connect handler).
    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        ChannelError::Forbidden(message.into())
    }

    /// An internal error: logged with `detail`, reported to the client as `internal`.
    pub fn internal(detail: impl fmt::Display) -> Self {
        ChannelError::Internal(detail.to_string())
    }

    /// What a caught panic becomes: `internal`, with the panic's message in the logged detail.
    pub(crate) fn from_panic(what: &str, panic: &(dyn std::any::Any + Send)) -> Self {
        ChannelError::Internal(format!("{what} panicked: {}", panic_message(panic)))
    }

    /// Sets the HTTP status used when this error rejects a connection.
    ///
    /// Only application errors carry a status of their own; other errors keep theirs.
    pub fn with_status(mut self, new_status: StatusCode) -> Self {
        if let ChannelError::Custom { status, .. } = &mut self {
            *status = new_status;
        }
        self
    }

    /// The machine-readable code sent in the error frame.
    pub fn code(&self) -> &str {
        match self {
            ChannelError::BadJson(_) => "bad_json",
            ChannelError::MissingRoute(_) => "missing_route",
            ChannelError::BadRef => "bad_ref",
            ChannelError::UnknownRoute(_) => "unknown_route",
            ChannelError::BadPayload { .. } => "bad_payload",
            ChannelError::BinaryUnsupported => "binary_unsupported",
            ChannelError::Overloaded => "overloaded",
            ChannelError::RateLimited => "rate_limited",
            ChannelError::TooManyTopics { .. } => "too_many_topics",
            ChannelError::BadTopic { .. } => "bad_topic",
            ChannelError::PresenceTooLarge { .. } => "presence_too_large",
            ChannelError::TooManyUserTopics { .. } => "too_many_user_topics",
            ChannelError::TooManyUserConnections { .. } => "too_many_user_connections",
            ChannelError::TokenExpired => "token_expired",
            ChannelError::RefreshUnsupported(_) => "refresh_unsupported",
            ChannelError::Unauthorized(_) => "unauthorized",
            ChannelError::Forbidden(_) => "forbidden",
            ChannelError::TooManyConnections => "too_many_connections",
            ChannelError::Draining => "draining",
            ChannelError::Closed => "closed",
            ChannelError::Custom { code, .. } => code,
            ChannelError::Internal(_) => "internal",
        }
    }

    /// The message sent in the error frame. Internal details are never sent.
    pub fn message(&self) -> String {
        self.to_string()
    }

    /// The field path for `bad_payload` errors.
    pub fn field(&self) -> Option<&str> {
        match self {
            ChannelError::BadPayload { field, .. } => field.as_deref(),
            _ => None,
        }
    }

    /// The HTTP status when this error rejects a WebSocket upgrade.
    pub fn status(&self) -> StatusCode {
        match self {
            ChannelError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ChannelError::Forbidden(_) => StatusCode::FORBIDDEN,
            ChannelError::TooManyConnections
            | ChannelError::Overloaded
            | ChannelError::Draining => StatusCode::SERVICE_UNAVAILABLE,
            ChannelError::RateLimited | ChannelError::TooManyUserConnections { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ChannelError::TokenExpired => StatusCode::UNAUTHORIZED,
            ChannelError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ChannelError::Custom { status, .. } => *status,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    pub(crate) fn from_payload(err: serde_path_to_error::Error<serde_json::Error>) -> Self {
        let path = err.path().to_string();
        let field = (path != ".").then_some(path);
        let inner = err.into_inner();
        // serde_json appends "at line L column C": positions inside `data` mean little to a
        // client that built the payload as an object, the field path says more.
        let mut reason = inner.to_string();
        if let Some(idx) = reason.rfind(" at line ") {
            reason.truncate(idx);
        }
        // Both may quote the client's input (map keys, unknown variants, strings).
        let field = field.map(|f| clip_to(&f, MAX_ECHO).into_owned());
        let reason = clip_to(&reason, MAX_REASON_ECHO).into_owned();
        ChannelError::BadPayload { field, reason }
    }
}

impl From<serde_json::Error> for ChannelError {
    fn from(err: serde_json::Error) -> Self {
        ChannelError::internal(format_args!("serialization failed: {err}"))
    }
}

impl ResponseError for ChannelError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status()).json(serde_json::json!({
            "error": { "code": self.code(), "message": self.message() }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses() {
        assert_eq!(
            ChannelError::unauthorized("no token").status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(ChannelError::forbidden("no").code(), "forbidden");
        assert_eq!(
            ChannelError::new("teapot", "short and stout")
                .with_status(StatusCode::IM_A_TEAPOT)
                .status(),
            StatusCode::IM_A_TEAPOT
        );
        assert_eq!(
            ChannelError::internal("db down").message(),
            "internal error"
        );
    }

    #[test]
    fn echoed_client_text_is_clipped_at_a_char_boundary() {
        assert_eq!(ChannelError::clip("short"), "short");
        let long = "é".repeat(100); // 200 bytes
        let clipped = ChannelError::clip(&long);
        assert!(clipped.ends_with('…'), "{clipped}");
        assert!(
            clipped.len() <= MAX_ECHO + '…'.len_utf8(),
            "{}",
            clipped.len()
        );
        let err = ChannelError::unknown_route(&"x".repeat(60_000));
        assert!(err.message().len() < 200, "{}", err.message().len());
        assert_eq!(err.code(), "unknown_route");
    }

    #[test]
    fn payload_errors_clip_what_they_quote() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        enum Kind {
            A,
        }
        let json = format!(r#"{{"{}": "{}"}}"#, "k".repeat(1000), "v".repeat(10_000));
        let de = &mut serde_json::Deserializer::from_str(&json);
        let err =
            serde_path_to_error::deserialize::<_, std::collections::HashMap<String, Kind>>(de)
                .unwrap_err();
        let err = ChannelError::from_payload(err);
        assert_eq!(err.code(), "bad_payload");
        assert!(err.message().len() < 600, "{}", err.message().len());
        assert!(err.field().is_some_and(|f| f.len() <= MAX_ECHO + 3));
    }

    #[test]
    fn payload_errors_name_the_field() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Join {
            room: String,
        }
        let de = &mut serde_json::Deserializer::from_str(r#"{"room": 5}"#);
        let err = serde_path_to_error::deserialize::<_, Join>(de).unwrap_err();
        let err = ChannelError::from_payload(err);
        assert_eq!(err.code(), "bad_payload");
        assert_eq!(err.field(), Some("room"));
        assert!(err.message().contains("invalid type"), "{}", err.message());
        assert!(!err.message().contains("line"), "{}", err.message());
    }
}
