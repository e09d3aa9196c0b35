//! Types from the handler to the browser: TypeScript declarations and an AsyncAPI 3.0
//! document generated from a [`ChannelRoute`](crate::ChannelRoute) (feature `schema`).
//!
//! A route is known at compile time: its name, its payload type and its reply type. The
//! handler macros record them (nothing else to write); with this feature each type describes
//! itself as JSON Schema through [`schemars`]' `JsonSchema` derive, and the schemas become:
//!
//! - **TypeScript** ([`typescript`], [`write_typescript`]): the named types, and one interface
//!   with each route's payload and reply, the push events and topic events the channel
//!   declares ([`ChannelRoute::push_event`](crate::ChannelRoute::push_event),
//!   [`topic_event`](crate::ChannelRoute::topic_event)), the error codes and the connect
//!   parameters. The JavaScript client takes it as its type parameter, so
//!   `sb.request("join", { room: "lobby" })` checks the route, the payload and the reply.
//! - **AsyncAPI 3.0** ([`AsyncApi`], [`asyncapi_service`], [`write_asyncapi`]): the same
//!   channel for documentation and tooling, served at a path the app chooses.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use schemars::JsonSchema;
//! use switchboard::prelude::*;
//!
//! #[derive(Deserialize, JsonSchema)]
//! struct Join { room: String }
//!
//! #[derive(Serialize, JsonSchema)]
//! struct Joined { room: String, members: u32 }
//!
//! #[switchboard::message("join")]
//! async fn join(msg: Join) -> Result<Joined, ChannelError> {
//!     Ok(Joined { room: msg.room, members: 1 })
//! }
//!
//! let route = ChannelRoute::<()>::new("/ws/chat").message(join);
//! let ts = switchboard::schema::typescript(&route).unwrap();
//! assert!(ts.contains("join: { payload: Join; reply: Joined };"));
//! // In a test: fails when the committed file is stale.
//! # let dir = std::env::temp_dir().join(format!("sb-schema-doc-{}", std::process::id()));
//! # let path = dir.join("chat.d.ts");
//! switchboard::schema::write_typescript(&route, &path).unwrap();
//! switchboard::schema::check_typescript(&route, &path).unwrap();
//! # std::fs::remove_dir_all(dir).unwrap();
//! ```
//!
//! A type that cannot be described fails generation with the route and the type, never with
//! `any`:
//!
//! ```
//! use switchboard::prelude::*;
//!
//! #[derive(serde::Deserialize)] // no JsonSchema
//! struct Secret { key: String }
//!
//! #[switchboard::message("unlock")]
//! async fn unlock(s: Secret) -> Result<(), ChannelError> {
//!     Ok(())
//! }
//!
//! let route = ChannelRoute::<()>::new("/ws").message(unlock);
//! let err = switchboard::schema::typescript(&route).unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "route `unlock`, payload: the type `Secret` cannot be described: it does not implement \
//!      `schemars::JsonSchema` (derive it: `#[derive(schemars::JsonSchema)]`)"
//! );
//! ```
//!
//! Without the feature the macros generate nothing of this, and no type needs `JsonSchema`.
//! The guide is docs/typescript.md.

mod asyncapi;
mod builtin;
mod declare;
mod describe;
mod error;
mod files;
mod typescript;

pub use crate::handler::describe::{schema_of, Declared, RouteTypes, SchemaFn, Shape, TypeDesc};
pub use asyncapi::{asyncapi_service, AsyncApi};
pub use describe::{ChannelSchema, RouteSchema, TopicSchema, CLIENT_ERRORS, FRAMEWORK_ERRORS};
pub use error::{SchemaError, UPDATE_ENV};
pub use files::{
    check_asyncapi, check_file, check_typescript, typescript, write_asyncapi, write_file,
    write_typescript, INTERFACE,
};
pub use typescript::JSON_VALUE;

pub use schemars;
pub use schemars::JsonSchema;

#[cfg(test)]
mod tests;
