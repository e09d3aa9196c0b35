//! A channel's description resolved into JSON Schemas ([`ChannelSchema`]), which the
//! TypeScript and the AsyncAPI output both read.

use std::collections::BTreeMap;

use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::Value;

use super::builtin;
use super::error::SchemaError;
use crate::handler::describe::{Parts, RouteTypes, Shape, TypeDesc};

/// The error codes the framework itself sends (a channel adds its own with
/// `ChannelRoute::error_code`), with what each means.
pub const FRAMEWORK_ERRORS: &[(&str, &str)] = &[
    ("bad_json", "a text frame that is not a JSON object"),
    ("missing_route", "the message has no string route key"),
    ("bad_ref", "`ref` is neither a string nor a number"),
    ("unknown_route", "no handler for the route"),
    (
        "bad_payload",
        "`data` does not fit the route's payload type (`field` says where)",
    ),
    ("binary_unsupported", "the channel takes no binary frames"),
    (
        "overloaded",
        "too many messages in flight on this connection",
    ),
    (
        "rate_limited",
        "the connection sends faster than the channel's message rate",
    ),
    (
        "too_many_topics",
        "the connection holds as many topics as the channel allows",
    ),
    ("bad_topic", "a topic name longer than the channel allows"),
    (
        "presence_too_large",
        "presence metadata larger than the channel allows",
    ),
    (
        "too_many_user_topics",
        "the user's connections hold as many topics as the channel allows",
    ),
    (
        "too_many_user_connections",
        "the user has as many connections open as the channel allows",
    ),
    (
        "token_expired",
        "a token (the connection's or a subscription's) expired",
    ),
    (
        "refresh_unsupported",
        "a refresh the channel cannot take (no refresh handler, or a topic without a token)",
    ),
    ("unauthorized", "authentication is required or failed"),
    (
        "forbidden",
        "not allowed (a topic no join rule lets this connection join)",
    ),
    (
        "too_many_connections",
        "the channel is at its connection cap",
    ),
    (
        "draining",
        "the server is shutting down: connect again (another node will answer)",
    ),
    ("closed", "the connection is closed"),
    ("internal", "the server failed (details are in its logs)"),
    (
        "engine_unavailable",
        "the engine (Redis) cannot be reached right now",
    ),
];

/// The error codes of the JavaScript client itself.
pub const CLIENT_ERRORS: &[(&str, &str)] = &[
    ("timeout", "no reply in time (the client's own)"),
    ("get_token", "the client's getToken callback failed"),
];

/// A route, resolved.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RouteSchema {
    /// The payload's schema; `None` when the handler takes no payload.
    pub payload: Option<Value>,
    /// The reply's schema.
    pub reply: Value,
    /// A built-in route (`subscribe`, `unsubscribe`, `refresh`).
    pub builtin: bool,
}

/// A topic pattern and the events published on it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct TopicSchema {
    /// `room:*` (a prefix), `game:winners` (exactly) or `*`.
    pub pattern: String,
    /// Whether clients may join it through the built-in `subscribe` route.
    pub joinable: bool,
    /// Each declared event's schema (presence events included when the channel tracks
    /// presence); empty when none is declared.
    pub events: BTreeMap<String, Value>,
}

/// A channel's types as JSON Schemas (draft 07): what the TypeScript and the AsyncAPI
/// document are made from. Schemas refer to [`definitions`](Self::definitions) as
/// `#/definitions/<name>`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ChannelSchema {
    /// The channel's path.
    pub path: String,
    /// The route key as a field path (`type`, `meta.action`).
    pub route_key: Vec<String>,
    /// Each route by name.
    pub routes: BTreeMap<String, RouteSchema>,
    /// Each push event (`Channel::send`) by name.
    pub pushes: BTreeMap<String, Value>,
    /// Topic patterns, in the order the channel gave them.
    pub topics: Vec<TopicSchema>,
    /// Each error code a client may see, with what it means: the framework's, the client's
    /// and the channel's own.
    pub errors: BTreeMap<String, String>,
    /// The query parameters of the upgrade request, where known.
    pub connect_query: Option<Value>,
    /// Frames the server sends on its own besides replies, pushes and deliveries, by the
    /// field that names them, with that field's value: `refresh` and `unsubscribed` on a
    /// channel with expiring tokens.
    pub frames: BTreeMap<String, Value>,
    /// The named types.
    pub definitions: BTreeMap<String, Value>,
}

/// One place a type is used, for error messages: "route `join`, payload".
struct Place(String);

/// The generators of one channel: payloads are read by the server (serde's deserialize
/// contract), replies and events are written by it (serialize contract); a type may differ
/// between the two (`#[serde(default)]`, `skip_serializing_if`).
struct Generators {
    input: SchemaGenerator,
    output: SchemaGenerator,
}

impl Generators {
    fn new() -> Self {
        Generators {
            input: SchemaSettings::draft07().for_deserialize().into_generator(),
            output: SchemaSettings::draft07().for_serialize().into_generator(),
        }
    }

    fn describe(
        &mut self,
        place: &Place,
        ty: &TypeDesc,
        input: bool,
    ) -> Result<Option<Value>, SchemaError> {
        let generator = if input {
            &mut self.input
        } else {
            &mut self.output
        };
        match ty.shape {
            Shape::None => Ok(None),
            Shape::Opaque => Err(SchemaError::Undescribed {
                place: place.0.clone(),
                ty: ty.written.to_owned(),
            }),
            Shape::Schema(f) => {
                let mut schema = f(generator);
                // What `root_schema_for` would do: the draft-07 rewrites.
                for t in generator.transforms_mut() {
                    t.transform(&mut schema);
                }
                Ok(Some(schema.to_value()))
            }
        }
    }
}

impl ChannelSchema {
    /// Describes `route`: every route's payload and reply, its declared events and error
    /// codes, its connect parameters. Fails on the first type that cannot be described,
    /// naming the route (or event) and the type.
    pub fn of<S: 'static>(route: &crate::ChannelRoute<S>) -> Result<Self, SchemaError> {
        Self::from_parts(route.schema_parts())
    }

    pub(crate) fn from_parts(parts: Parts<'_>) -> Result<Self, SchemaError> {
        let mut g = Generators::new();
        let mut routes = BTreeMap::new();
        // Built-ins first: a handler of the channel's own for the same route replaces them.
        for (name, types) in builtin::routes(!parts.joins.is_empty(), parts.tokens) {
            let place = Place(format!("built-in route `{name}`"));
            routes.insert(name.to_owned(), resolve(&mut g, &place, &types, true)?);
        }
        for (name, types) in &parts.routes {
            let place = Place(format!("route `{name}`"));
            let types = types.ok_or_else(|| SchemaError::NoTypes {
                route: name.clone(),
            })?;
            routes.insert(name.clone(), resolve(&mut g, &place, &types, false)?);
        }

        let mut pushes = BTreeMap::new();
        for (event, ty) in &parts.declared.pushes {
            let place = Place(format!("push event `{event}`"));
            let schema = g.describe(&place, ty, false)?.unwrap_or(Value::Null);
            pushes.insert(event.clone(), schema);
        }

        let mut topics: Vec<TopicSchema> = Vec::new();
        let mut topic = |pattern: &str| -> usize {
            match topics.iter().position(|t| t.pattern == pattern) {
                Some(i) => i,
                None => {
                    topics.push(TopicSchema {
                        pattern: pattern.to_owned(),
                        joinable: false,
                        events: BTreeMap::new(),
                    });
                    topics.len() - 1
                }
            }
        };
        let mut joinable = Vec::new();
        for pattern in &parts.joins {
            joinable.push(topic(pattern));
        }
        let mut declared_events = Vec::new();
        for (pattern, event, ty) in &parts.declared.topics {
            let place = Place(format!("topic event `{event}` on `{pattern}`"));
            let schema = g.describe(&place, ty, false)?.unwrap_or(Value::Null);
            declared_events.push((topic(pattern), event.clone(), schema));
        }
        for i in joinable {
            topics[i].joinable = true;
        }
        for (i, event, schema) in declared_events {
            topics[i].events.insert(event, schema);
        }
        if parts.presence {
            for (event, ty) in builtin::presence_events() {
                let place = Place(format!("presence event `{event}`"));
                let schema = g.describe(&place, &ty, false)?.unwrap_or(Value::Null);
                for t in topics.iter_mut().filter(|t| t.joinable) {
                    t.events.insert(event.to_owned(), schema.clone());
                }
            }
        }

        let mut frames = BTreeMap::new();
        if parts.tokens {
            for (field, ty) in builtin::token_frames() {
                let place = Place(format!("the `{field}` frame"));
                let schema = g.describe(&place, &ty, false)?.unwrap_or(Value::Null);
                frames.insert(field.to_owned(), schema);
            }
        }

        let mut errors: BTreeMap<String, String> = FRAMEWORK_ERRORS
            .iter()
            .chain(CLIENT_ERRORS)
            .map(|(code, what)| ((*code).to_owned(), (*what).to_owned()))
            .collect();
        for (code, what) in &parts.declared.errors {
            errors.insert(code.clone(), what.clone());
        }

        let connect = parts.declared.connect.or(parts.connect);
        let connect_query = match connect {
            Some(ty) => g.describe(&Place("the connect query".to_owned()), &ty, true)?,
            None => None,
        };

        let mut schema = ChannelSchema {
            path: parts.path.to_owned(),
            route_key: parts
                .route_key
                .to_string()
                .split('.')
                .map(str::to_owned)
                .collect(),
            routes,
            pushes,
            topics,
            errors,
            connect_query,
            frames,
            definitions: BTreeMap::new(),
        };
        schema.merge_definitions(g)?;
        Ok(schema)
    }

    /// One set of definitions from both generators. A type whose input and output schemas
    /// differ keeps its name for the output and becomes `<Name>Input` where it is read.
    fn merge_definitions(&mut self, mut g: Generators) -> Result<(), SchemaError> {
        let output = g.output.take_definitions(true);
        let input = g.input.take_definitions(true);
        let mut renamed = BTreeMap::new();
        for (name, schema) in &input {
            if output.get(name).is_some_and(|o| o != schema) {
                let mut new = format!("{name}Input");
                while output.contains_key(&new) || input.contains_key(&new) {
                    new.push('_');
                }
                renamed.insert(name.clone(), new);
            }
        }
        let mut definitions: BTreeMap<String, Value> = output.into_iter().collect();
        for (name, mut schema) in input {
            rename_refs(&mut schema, &renamed);
            match renamed.get(&name) {
                Some(new) => {
                    definitions.insert(new.clone(), schema);
                }
                None => {
                    definitions.entry(name).or_insert(schema);
                }
            }
        }
        for route in self.routes.values_mut() {
            if let Some(p) = &mut route.payload {
                rename_refs(p, &renamed);
            }
        }
        if let Some(q) = &mut self.connect_query {
            rename_refs(q, &renamed);
        }
        self.definitions = definitions;
        Ok(())
    }
}

fn resolve(
    g: &mut Generators,
    place: &Place,
    types: &RouteTypes,
    builtin: bool,
) -> Result<RouteSchema, SchemaError> {
    let payload = g.describe(
        &Place(format!("{}, payload", place.0)),
        &types.payload,
        true,
    )?;
    let reply = g
        .describe(&Place(format!("{}, reply", place.0)), &types.reply, false)?
        .unwrap_or(Value::Null);
    Ok(RouteSchema {
        payload,
        reply,
        builtin,
    })
}

/// The prefix of references to definitions.
pub(crate) const DEFINITIONS: &str = "#/definitions/";

/// Rewrites `$ref`s to the definitions in `renamed`.
fn rename_refs(schema: &mut Value, renamed: &BTreeMap<String, String>) {
    if renamed.is_empty() {
        return;
    }
    visit_refs(schema, &mut |r| {
        if let Some(name) = r.strip_prefix(DEFINITIONS) {
            if let Some(new) = renamed.get(name) {
                *r = format!("{DEFINITIONS}{new}");
            }
        }
    });
}

/// Calls `f` on every `$ref` string in `schema`.
pub(crate) fn visit_refs(schema: &mut Value, f: &mut impl FnMut(&mut String)) {
    match schema {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                match value {
                    Value::String(r) if key == "$ref" => f(r),
                    _ => visit_refs(value, f),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| visit_refs(v, f)),
        _ => {}
    }
}
