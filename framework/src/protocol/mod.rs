//! The wire protocol: JSON text frames in, JSON text frames out.
//!
//! ```text
//! client → server   {"type": "<route>", "ref": "r1" | 7, "data": <payload>}
//! reply (ref)       {"ref": "r1", "ok": true, "data": <value>}
//!                   {"ref": "r1", "ok": false, "error": {"code": "...", "message": "..."}}
//! reply (no ref)    {"type": "<route>", "data": <value>}         (nothing when the handler returns ())
//! error (no ref)    {"type": "<route>", "ok": false, "error": {...}}   ("type" when the route is known)
//! push              {"event": "<event>", "data": <value>}
//! ```
//!
//! The full text is `docs/protocol.md`. Decoding borrows from the frame: the route key, the
//! `ref` and the `data` are ranges of the original text, so a message is parsed once and its
//! payload is deserialized straight from the frame into the handler's type.

pub mod close_code;
mod encode;
mod envelope;
mod payload;

use std::fmt;

pub(crate) use encode::{encode_delivery, encode_error, encode_event, encode_ok};
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use envelope::fuzz as __fuzz;
pub(crate) use envelope::Envelope;
pub use payload::decode_payload;

/// Where the route key sits in a client message: a field path in the JSON body.
///
/// Accepts a plain field name (`"type"`, `"action"`), a dotted path (`"meta.action"`), or AWS
/// API Gateway's route selection expression (`"$request.body.action"`).
///
/// ```
/// use switchboard::protocol::RouteKey;
///
/// let key = RouteKey::parse("$request.body.action").unwrap();
/// assert_eq!(key.to_string(), "action");
/// assert!(RouteKey::parse("$request.header.x").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteKey {
    path: Vec<Box<str>>,
}

impl Default for RouteKey {
    fn default() -> Self {
        RouteKey {
            path: vec!["type".into()],
        }
    }
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path.join("."))
    }
}

/// An invalid route key expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid route key expression `{0}`: use a field name, a dotted path or `$request.body.<field>`")]
pub struct InvalidRouteKey(pub String);

impl RouteKey {
    /// Parses a field name, a dotted path, or `$request.body.<path>`.
    pub fn parse(expr: &str) -> Result<Self, InvalidRouteKey> {
        let path = if let Some(rest) = expr.strip_prefix("$request.body.") {
            rest
        } else if expr.starts_with('$') {
            return Err(InvalidRouteKey(expr.to_owned()));
        } else {
            expr
        };
        let segments: Vec<Box<str>> = path.split('.').map(Into::into).collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err(InvalidRouteKey(expr.to_owned()));
        }
        Ok(RouteKey { path: segments })
    }

    /// The name replies without a `ref` use for the route: the last segment of the path.
    pub fn reply_field(&self) -> &str {
        self.path.last().map_or("type", |s| s)
    }
}
