//! What a handler says of its types (feature `schema`): its payload and reply as JSON Schema
//! makers, which the macros fill in and [`schema`](crate::schema) turns into TypeScript and
//! AsyncAPI; and what a channel declares beside its routes.

use schemars::generate::SchemaGenerator;
use schemars::{JsonSchema, Schema};

use crate::protocol::RouteKey;

/// Describes a type into a generator: its schema, or a `$ref` to its definition there.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// `T`'s schema in `generator` (a `$ref` for types with a definition of their own).
pub fn schema_of<T: JsonSchema + ?Sized>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// What is known of a type a route takes or gives.
#[derive(Clone, Copy, Debug)]
pub enum Shape {
    /// There is none: the handler takes no payload.
    None,
    /// A type with a JSON Schema.
    Schema(SchemaFn),
    /// A type that cannot be described: it does not implement `schemars::JsonSchema` (or the
    /// handler returns a raw `Reply` or `Binary`). Generation fails on it.
    Opaque,
}

/// A type as the handler's signature spells it, and what is known of it.
#[derive(Clone, Copy, Debug)]
pub struct TypeDesc {
    /// The type as written in the handler's signature, for messages.
    pub written: &'static str,
    /// What is known of it.
    pub shape: Shape,
}

impl TypeDesc {
    /// A type described by `shape`.
    pub const fn new(written: &'static str, shape: Shape) -> Self {
        TypeDesc { written, shape }
    }

    /// `T`, described by its `JsonSchema` impl.
    pub fn of<T: JsonSchema + ?Sized>() -> Self {
        TypeDesc::new(std::any::type_name::<T>(), Shape::Schema(schema_of::<T>))
    }
}

/// A route's payload and reply types, as its handler describes them
/// ([`MessageHandler::types`](crate::MessageHandler::types)).
#[derive(Clone, Copy, Debug)]
pub struct RouteTypes {
    /// What the message's `data` holds; [`Shape::None`] when the handler takes no payload.
    pub payload: TypeDesc,
    /// What the reply's `data` holds.
    pub reply: TypeDesc,
}

/// What a channel declares beside its routes (`ChannelRoute::push_event`, `topic_event`,
/// `error_code`, `connect_query`).
#[derive(Clone, Debug, Default)]
pub struct Declared {
    pub(crate) pushes: Vec<(String, TypeDesc)>,
    pub(crate) topics: Vec<(String, String, TypeDesc)>,
    pub(crate) errors: Vec<(String, String)>,
    pub(crate) connect: Option<TypeDesc>,
}

/// A channel as [`ChannelRoute`](crate::ChannelRoute) shows it to this module.
pub(crate) struct Parts<'a> {
    pub path: &'a str,
    pub route_key: &'a RouteKey,
    pub routes: Vec<(String, Option<RouteTypes>)>,
    pub joins: Vec<&'a str>,
    pub presence: bool,
    /// Expiring tokens (`on_refresh`, a `join_with_token` rule): the `refresh` route and the
    /// token frames.
    pub tokens: bool,
    pub connect: Option<TypeDesc>,
    pub declared: &'a Declared,
}
