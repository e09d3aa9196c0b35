//! What goes wrong in an engine: its own error type, turned into the client's error frame at
//! the boundary (the hub, a channel's topic operations).

use std::fmt;

use actix_web::http::StatusCode;

use crate::error::ChannelError;

/// An engine's failure: starting it, or an operation on it.
///
/// Clients never see this type: where an engine call answers a client, it becomes a
/// [`ChannelError`] (`Unavailable` as `engine_unavailable` with HTTP 503, `Rejected` as the
/// error it carries, the rest as `internal`, with the detail logged).
///
/// ```
/// use switchboard::engine::EngineError;
/// use switchboard::ChannelError;
///
/// let down = EngineError::Unavailable("connection refused".into());
/// let for_client: ChannelError = down.into();
/// assert_eq!(for_client.code(), "engine_unavailable");
/// assert_eq!(for_client.status().as_u16(), 503);
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The engine cannot be reached now (Redis is down or being reconnected to, its queue is
    /// full). Worth retrying later.
    #[error("the engine is unavailable ({0}); try again later")]
    Unavailable(String),
    /// The engine's configuration is invalid (a malformed URL): found when it starts.
    #[error("invalid engine configuration: {0}")]
    Config(String),
    /// The engine refused the operation with an error meant for the client (a remote engine
    /// relays its server's answer: the connection is gone, the payload is too large, ...).
    #[error("{0}")]
    Rejected(ChannelError),
    /// Anything else: an unexpected answer, a thread that could not start.
    #[error("engine failure: {0}")]
    Failed(String),
}

impl EngineError {
    /// A [`Failed`](EngineError::Failed) error with `detail`.
    pub fn failed(detail: impl fmt::Display) -> Self {
        EngineError::Failed(detail.to_string())
    }
}

impl From<EngineError> for ChannelError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::Unavailable(_) => ChannelError::new("engine_unavailable", err.to_string())
                .with_status(StatusCode::SERVICE_UNAVAILABLE),
            EngineError::Rejected(e) => e,
            EngineError::Config(_) | EngineError::Failed(_) => ChannelError::internal(err),
        }
    }
}
