//! [`SchemaError`]: why generation, writing or checking failed.

/// The environment variable that makes the `check_*` functions write a stale file instead of
/// failing (never under CI).
pub const UPDATE_ENV: &str = "SWITCHBOARD_UPDATE_SCHEMA";

/// Why a channel's types could not be generated, written or checked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// A type the channel uses does not implement `JsonSchema`.
    #[error("{place}: the type `{ty}` cannot be described: it does not implement `schemars::JsonSchema` (derive it: `#[derive(schemars::JsonSchema)]`)")]
    Undescribed {
        /// Where the type is used: "route `join`, payload".
        place: String,
        /// The type as the handler spells it.
        ty: String,
    },
    /// A handler that does not describe its types (written by hand, without
    /// [`MessageHandler::types`](crate::MessageHandler::types)).
    #[error("route `{route}`: its handler does not describe its types (implement `MessageHandler::types`, or write it with `#[switchboard::message]`)")]
    NoTypes {
        /// The route.
        route: String,
    },
    /// A schema with a keyword TypeScript cannot express.
    #[error("{place} cannot be described in TypeScript: {what} (at {pointer})")]
    Unsupported {
        /// Where: "route `join`", "the type `Room`".
        place: String,
        /// The JSON pointer of the offending part of the schema.
        pointer: String,
        /// What is not supported.
        what: String,
    },
    /// Two generated names are the same.
    #[error("the generated name `{name}` is taken twice: by {first} and by {second}")]
    NameClash {
        /// The name.
        name: String,
        /// Its first owner.
        first: String,
        /// Its second owner.
        second: String,
    },
    /// A name given to the generator that cannot be used.
    #[error("`{0}` cannot be used as a name here")]
    BadName(String),
    /// A committed file differs from what generation gives.
    #[error("{path} is stale ({difference}): regenerate it with switchboard::schema::write_* or run the check with {}=1", UPDATE_ENV)]
    Stale {
        /// The file.
        path: String,
        /// The first difference.
        difference: String,
    },
    /// A file could not be read or written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}
