//! A channel as an [AsyncAPI 3.0](https://www.asyncapi.com/docs/reference/specification/v3.0.0)
//! document, seen from the server: it receives each route's request and replies (a success or
//! an error frame), and sends push events and topic events. Payload schemas are the same JSON
//! Schemas the TypeScript is made from, with the named types under `components/schemas`.

use actix_web::dev::{AppService, HttpServiceFactory};
use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde_json::{json, Map, Value};

use super::describe::{visit_refs, ChannelSchema, DEFINITIONS};
use super::error::SchemaError;

/// Where AsyncAPI documents keep named schemas.
const COMPONENT_SCHEMAS: &str = "#/components/schemas/";

/// What an AsyncAPI document says beside the channel: its title and version, a description,
/// the servers. Build the document with [`document`](Self::document), or write and check it
/// with [`write_asyncapi`](super::write_asyncapi) and [`check_asyncapi`](super::check_asyncapi).
///
/// ```
/// use switchboard::prelude::*;
/// use switchboard::schema::AsyncApi;
///
/// #[derive(serde::Deserialize, schemars::JsonSchema)]
/// struct Add { a: i64, b: i64 }
///
/// #[switchboard::message("add")]
/// async fn add(msg: Add) -> Result<i64, ChannelError> {
///     Ok(msg.a + msg.b)
/// }
///
/// let route = ChannelRoute::<()>::new("/ws/calc").message(add);
/// let doc = AsyncApi::new("Calculator", "1.0.0")
///     .server("local", "127.0.0.1:8080", "ws")
///     .document(&route)
///     .unwrap();
/// assert_eq!(doc["asyncapi"], "3.0.0");
/// assert_eq!(doc["channels"]["ws_calc"]["address"], "/ws/calc");
/// assert_eq!(doc["operations"]["add"]["action"], "receive");
/// ```
#[derive(Clone, Debug)]
pub struct AsyncApi {
    title: String,
    version: String,
    description: Option<String>,
    servers: Vec<(String, Value)>,
    channel_id: Option<String>,
}

impl AsyncApi {
    /// A document titled `title`, at version `version` (the API's, not AsyncAPI's).
    pub fn new(title: impl Into<String>, version: impl Into<String>) -> Self {
        AsyncApi {
            title: title.into(),
            version: version.into(),
            description: None,
            servers: Vec::new(),
            channel_id: None,
        }
    }

    /// The document's description (Markdown).
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// A server: its `host` (`chat.example.com`, `127.0.0.1:8080`) and `protocol` (`ws` or
    /// `wss`).
    pub fn server(
        mut self,
        name: impl Into<String>,
        host: impl Into<String>,
        protocol: impl Into<String>,
    ) -> Self {
        let server = json!({ "host": host.into(), "protocol": protocol.into() });
        self.servers.push((name.into(), server));
        self
    }

    /// The channel's key in the document (default: its path, `/ws/chat` as `ws_chat`).
    pub fn channel_id(mut self, id: impl Into<String>) -> Self {
        self.channel_id = Some(id.into());
        self
    }

    /// The document of `route`.
    pub fn document<S: 'static>(
        &self,
        route: &crate::ChannelRoute<S>,
    ) -> Result<Value, SchemaError> {
        self.document_of(&ChannelSchema::of(route)?)
    }

    /// The document of a channel already described.
    pub fn document_of(&self, schema: &ChannelSchema) -> Result<Value, SchemaError> {
        let channel_id = match &self.channel_id {
            Some(id) => id.clone(),
            None => key(schema.path.trim_matches('/')),
        };
        if channel_id.is_empty() || key(&channel_id) != channel_id {
            return Err(SchemaError::BadName(channel_id));
        }
        let channel_ref = format!("#/channels/{channel_id}");
        let mut messages = Map::new();
        let mut operations = Map::new();
        // Message keys are unique and of the characters AsyncAPI allows.
        let mut add_message = |wanted: String, message: Value| -> String {
            let mut id = key(&wanted);
            while messages.contains_key(&id) {
                id.push('_');
            }
            messages.insert(id.clone(), message);
            id
        };
        let message_ref = |id: &str| json!({ "$ref": format!("{channel_ref}/messages/{id}") });

        let codes: Vec<&String> = schema.errors.keys().collect();
        let error = add_message(
            "error".to_owned(),
            json!({
                "name": "error",
                "title": "Error reply",
                "summary": "The route refused the message, or the framework did (bad JSON, unknown route, bad payload, limits).",
                "payload": {
                    "type": "object",
                    "properties": {
                        "ref": reference(),
                        "ok": { "const": false },
                        "error": {
                            "type": "object",
                            "properties": {
                                "code": { "type": "string", "enum": codes },
                                "message": { "type": "string" },
                                "field": { "type": "string", "description": "where in `data` a `bad_payload` error is" }
                            },
                            "required": ["code", "message"]
                        }
                    },
                    "required": ["ok", "error"]
                }
            }),
        );

        for (route, r) in &schema.routes {
            let mut properties = Map::new();
            properties.insert("ref".to_owned(), reference());
            let mut required = Vec::new();
            if let Some(payload) = &r.payload {
                properties.insert("data".to_owned(), payload.clone());
                required.push("data");
            }
            let request_payload = nest_route_key(&schema.route_key, route, properties, required);
            let request = add_message(
                format!("{route}.request"),
                json!({
                    "name": route,
                    "title": format!("`{route}` request"),
                    "payload": request_payload,
                }),
            );
            let reply = add_message(
                format!("{route}.reply"),
                json!({
                    "name": format!("{route}.reply"),
                    "title": format!("`{route}` reply"),
                    "payload": {
                        "type": "object",
                        "properties": { "ref": reference(), "ok": { "const": true }, "data": r.reply },
                        "required": ["ok"]
                    }
                }),
            );
            let mut op = json!({
                "action": "receive",
                "channel": { "$ref": channel_ref },
                "summary": format!("The `{route}` route{}", if r.builtin { " (built in)" } else { "" }),
                "messages": [message_ref(&request)],
                "reply": {
                    "channel": { "$ref": channel_ref },
                    "messages": [message_ref(&reply), message_ref(&error)]
                }
            });
            insert_unique(&mut operations, key(route), op.take());
        }

        for (event, data) in &schema.pushes {
            let id = add_message(
                format!("{event}.push"),
                json!({
                    "name": event,
                    "title": format!("`{event}` push"),
                    "payload": {
                        "type": "object",
                        "properties": { "event": { "const": event }, "data": data },
                        "required": ["event"]
                    }
                }),
            );
            let op = json!({
                "action": "send",
                "channel": { "$ref": channel_ref },
                "summary": format!("Pushes `{event}` to one connection"),
                "messages": [message_ref(&id)]
            });
            insert_unique(&mut operations, key(&format!("push.{event}")), op);
        }

        for (field, value) in &schema.frames {
            let id = add_message(
                format!("{field}.frame"),
                json!({
                    "name": field,
                    "title": format!("`{field}` frame"),
                    "payload": {
                        "type": "object",
                        "properties": { field.as_str(): value },
                        "required": [field]
                    }
                }),
            );
            let summary = match field.as_str() {
                "refresh" => "Asks for a new token before the current one expires".to_owned(),
                "unsubscribed" => "Ends a subscription (its token expired)".to_owned(),
                _ => format!("Sends a `{field}` frame"),
            };
            let op = json!({
                "action": "send",
                "channel": { "$ref": channel_ref },
                "summary": summary,
                "messages": [message_ref(&id)]
            });
            insert_unique(&mut operations, key(&format!("frame.{field}")), op);
        }

        for topic in &schema.topics {
            // `room:*` as `room`, in message and operation keys.
            let prefix = match (topic.pattern.trim_end_matches('*'))
                .trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
            {
                "" => "all",
                p => p,
            };
            let topic_schema = match topic.pattern.strip_suffix('*') {
                Some(p) if !p.is_empty() => {
                    json!({ "type": "string", "pattern": format!("^{}", regex_escape(p)) })
                }
                Some(_) => json!({ "type": "string" }),
                None => json!({ "const": topic.pattern }),
            };
            let mut ids = Vec::new();
            for (event, data) in &topic.events {
                let id = add_message(
                    format!("{prefix}.{event}"),
                    json!({
                        "name": event,
                        "title": format!("`{event}` on `{}`", topic.pattern),
                        "payload": {
                            "type": "object",
                            "properties": {
                                "topic": topic_schema,
                                "event": { "const": event },
                                "data": data,
                                "epoch": { "type": "string", "description": "the topic history's epoch, on topics with history" },
                                "seq": { "type": "integer", "description": "the publication's sequence number, on topics with history" }
                            },
                            "required": ["topic", "event"]
                        }
                    }),
                );
                ids.push(message_ref(&id));
            }
            if ids.is_empty() {
                continue;
            }
            let op = json!({
                "action": "send",
                "channel": { "$ref": channel_ref },
                "summary": format!("Publications on `{}` to its subscribers", topic.pattern),
                "messages": ids
            });
            insert_unique(&mut operations, key(&format!("topic.{prefix}")), op);
        }

        let mut channel = json!({
            "address": schema.path,
            "title": format!("The channel at {}", schema.path),
            "messages": Value::Object(messages.keys().map(|id| (id.clone(), json!({ "$ref": format!("#/components/messages/{id}") }))).collect()),
        });
        if let Some(query) = &schema.connect_query {
            let query = resolve(query, schema);
            channel["bindings"] =
                json!({ "ws": { "method": "GET", "query": query, "bindingVersion": "0.1.0" } });
        }

        let mut info = json!({ "title": self.title, "version": self.version });
        if let Some(d) = &self.description {
            info["description"] = json!(d);
        }
        let mut doc = json!({
            "asyncapi": "3.0.0",
            "info": info,
            "defaultContentType": "application/json",
            "channels": { channel_id: channel },
            "operations": operations,
            "components": {
                "messages": messages,
                "schemas": schema.definitions,
            }
        });
        if !self.servers.is_empty() {
            doc["servers"] = Value::Object(self.servers.iter().cloned().collect());
        }
        visit_refs(&mut doc, &mut |r| {
            if let Some(name) = r.strip_prefix(DEFINITIONS) {
                *r = format!("{COMPONENT_SCHEMAS}{name}");
            }
        });
        Ok(doc)
    }
}

/// `ref`: what the client sent, echoed.
fn reference() -> Value {
    json!({ "type": ["string", "number"], "description": "the request's `ref`, echoed in its reply" })
}

/// The request frame: the route key (a field path) holding `route`, beside `ref` and `data`.
fn nest_route_key<'a>(
    path: &'a [String],
    route: &str,
    mut properties: Map<String, Value>,
    mut required: Vec<&'a str>,
) -> Value {
    let mut value = json!({ "const": route });
    for segment in path.iter().skip(1).rev() {
        value =
            json!({ "type": "object", "properties": { segment: value }, "required": [segment] });
    }
    let first = path.first().map_or("type", String::as_str);
    properties.insert(first.to_owned(), value);
    required.insert(0, first);
    json!({ "type": "object", "properties": properties, "required": required })
}

/// A `$ref` to a definition, replaced by the definition (bindings take a schema in place).
fn resolve(schema: &Value, channel: &ChannelSchema) -> Value {
    schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix(DEFINITIONS))
        .and_then(|name| channel.definitions.get(name))
        .cloned()
        .unwrap_or_else(|| schema.clone())
}

fn insert_unique(map: &mut Map<String, Value>, mut id: String, value: Value) {
    while map.contains_key(&id) {
        id.push('_');
    }
    map.insert(id, value);
}

/// A name in the characters AsyncAPI allows in component keys.
fn key(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn regex_escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// An actix-web service serving `document` (an AsyncAPI document, or any JSON) at `path` as
/// `application/json`.
///
/// ```
/// use actix_web::App;
/// use switchboard::prelude::*;
/// use switchboard::schema::{asyncapi_service, AsyncApi};
///
/// #[switchboard::message("ping")]
/// async fn ping() -> Result<(), ChannelError> {
///     Ok(())
/// }
///
/// let route = ChannelRoute::<()>::new("/ws").message(ping);
/// let doc = AsyncApi::new("Ping", "1").document(&route).unwrap();
/// let app = App::new()
///     .service(asyncapi_service("/asyncapi.json", doc))
///     .service(route);
/// ```
pub fn asyncapi_service(path: &str, document: Value) -> impl HttpServiceFactory {
    DocumentService {
        path: path.to_owned(),
        body: web::Bytes::from(serde_json::to_vec_pretty(&document).unwrap_or_default()),
    }
}

struct DocumentService {
    path: String,
    body: web::Bytes,
}

impl HttpServiceFactory for DocumentService {
    fn register(self, config: &mut AppService) {
        let body = self.body;
        let resource = web::resource(self.path).route(web::get().to(move || {
            let body = body.clone();
            async move {
                HttpResponse::Ok()
                    .insert_header((header::CONTENT_TYPE, "application/json"))
                    .body(body)
            }
        }));
        HttpServiceFactory::register(resource, config)
    }
}
