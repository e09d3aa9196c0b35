//! A channel's types as TypeScript declarations: the named types, then one interface with the
//! routes (payload and reply), push events, topics with their events, error codes and connect
//! parameters, which the JavaScript client takes as its type parameter.
//!
//! JSON Schema to TypeScript is a small, strict converter for what `schemars` generates:
//! objects, arrays, tuples, maps, unions (`anyOf`, `oneOf`, several `type`s), intersections
//! (`allOf`), `enum` and `const` literals, `$ref`s to named types. A keyword with no TypeScript
//! equivalent (`not`, `if`, `patternProperties`, ...) fails generation with its place; nothing
//! becomes `any`. A schema that allows any JSON value is [`JsonValue`](JSON_VALUE).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::describe::{ChannelSchema, TopicSchema, DEFINITIONS};
use super::error::SchemaError;

/// The type of "any JSON value".
pub const JSON_VALUE: &str = "JsonValue";

/// Keywords that restrict values without changing their TypeScript type, and annotations.
const IGNORED: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "propertyNames",
    "additionalItems",
    "contentEncoding",
    "contentMediaType",
    "definitions",
    "$defs",
];

/// Keywords this converter reads.
const READ: &[&str] = &[
    "$ref",
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "anyOf",
    "oneOf",
    "allOf",
];

/// Converts schemas of one channel, whose named types are `names` (definition → identifier).
struct Converter<'a> {
    names: &'a BTreeMap<String, String>,
}

/// Where a schema sits, for errors.
#[derive(Clone)]
struct At<'a> {
    place: &'a str,
    pointer: String,
}

impl At<'_> {
    fn child(&self, segment: impl std::fmt::Display) -> Self {
        At {
            place: self.place,
            pointer: format!("{}/{segment}", self.pointer),
        }
    }

    fn unsupported(&self, what: impl Into<String>) -> SchemaError {
        SchemaError::Unsupported {
            place: self.place.to_owned(),
            pointer: if self.pointer.is_empty() {
                "/".to_owned()
            } else {
                self.pointer.clone()
            },
            what: what.into(),
        }
    }
}

impl Converter<'_> {
    /// The TypeScript type of `schema`, laid out for `indent` levels of two spaces.
    fn ty(&self, schema: &Value, at: &At<'_>, indent: usize) -> Result<String, SchemaError> {
        let map = match schema {
            Value::Bool(true) => return Ok(JSON_VALUE.to_owned()),
            Value::Bool(false) => return Ok("never".to_owned()),
            Value::Object(map) => map,
            _ => return Err(at.unsupported("a schema that is neither an object nor a boolean")),
        };
        for key in map.keys() {
            if !IGNORED.contains(&key.as_str()) && !READ.contains(&key.as_str()) {
                return Err(at.unsupported(format!(
                    "the keyword `{key}`, which has no TypeScript equivalent"
                )));
            }
        }
        if let Some(r) = map.get("$ref") {
            let r = r.as_str().unwrap_or_default();
            let name = r
                .strip_prefix(DEFINITIONS)
                .and_then(|n| self.names.get(n))
                .ok_or_else(|| at.unsupported(format!("the reference `{r}`")))?;
            return Ok(name.clone());
        }
        let mut parts = Vec::new();
        if let Some(c) = map.get("const") {
            parts.push(literal(c, at)?);
        } else if let Some(values) = map.get("enum") {
            let values = values
                .as_array()
                .ok_or_else(|| at.unsupported("an `enum` that is not a list"))?;
            let literals = (values.iter().enumerate())
                .map(|(i, v)| literal(v, &at.child(format!("enum/{i}"))))
                .collect::<Result<Vec<_>, _>>()?;
            parts.push(union(literals));
        } else if map.contains_key("type") || map.contains_key("properties") {
            parts.push(self.typed(map, at, indent)?);
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(alternatives) = map.get(key) {
                let list = alternatives
                    .as_array()
                    .ok_or_else(|| at.unsupported(format!("an `{key}` that is not a list")))?;
                let members = (list.iter().enumerate())
                    .map(|(i, s)| self.ty(s, &at.child(format!("{key}/{i}")), indent))
                    .collect::<Result<Vec<_>, _>>()?;
                parts.push(union(members));
            }
        }
        if let Some(all) = map.get("allOf") {
            let list = all
                .as_array()
                .ok_or_else(|| at.unsupported("an `allOf` that is not a list"))?;
            for (i, s) in list.iter().enumerate() {
                parts.push(self.ty(s, &at.child(format!("allOf/{i}")), indent)?);
            }
        }
        Ok(match parts.len() {
            0 => JSON_VALUE.to_owned(),
            1 => parts.remove(0),
            _ => parts
                .iter()
                .map(|p| parenthesized(p))
                .collect::<Vec<_>>()
                .join(" & "),
        })
    }

    /// The type from `type` (one or several), `properties` and `items`.
    fn typed(
        &self,
        map: &Map<String, Value>,
        at: &At<'_>,
        indent: usize,
    ) -> Result<String, SchemaError> {
        let types: Vec<&str> = match map.get("type") {
            None => vec!["object"],
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
            Some(_) => return Err(at.unsupported("a `type` that is not a name or a list")),
        };
        let mut members = Vec::new();
        for t in types {
            members.push(match t {
                "string" => "string".to_owned(),
                "number" | "integer" => "number".to_owned(),
                "boolean" => "boolean".to_owned(),
                "null" => "null".to_owned(),
                "array" => self.array(map, at, indent)?,
                "object" => self.object(map, at, indent)?,
                other => return Err(at.unsupported(format!("the type `{other}`"))),
            });
        }
        Ok(union(members))
    }

    fn array(
        &self,
        map: &Map<String, Value>,
        at: &At<'_>,
        indent: usize,
    ) -> Result<String, SchemaError> {
        match map.get("items") {
            None => Ok(format!("{JSON_VALUE}[]")),
            Some(Value::Array(tuple)) => {
                let items = (tuple.iter().enumerate())
                    .map(|(i, s)| self.ty(s, &at.child(format!("items/{i}")), indent))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(format!("[{}]", items.join(", ")))
            }
            Some(item) => {
                let item = self.ty(item, &at.child("items"), indent)?;
                Ok(format!("{}[]", parenthesized(&item)))
            }
        }
    }

    fn object(
        &self,
        map: &Map<String, Value>,
        at: &At<'_>,
        indent: usize,
    ) -> Result<String, SchemaError> {
        let properties = match map.get("properties") {
            None => None,
            Some(Value::Object(p)) => Some(p),
            Some(_) => return Err(at.unsupported("`properties` that is not an object")),
        };
        let required: BTreeSet<&str> = map
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let rest = match map.get("additionalProperties") {
            Some(Value::Bool(false)) => None,
            Some(schema) => Some(self.ty(schema, &at.child("additionalProperties"), indent + 1)?),
            None if properties.is_none() => Some(JSON_VALUE.to_owned()),
            None => None,
        };
        let mut out = Vec::new();
        if let Some(properties) = properties.filter(|p| !p.is_empty()) {
            let mut body = String::from("{\n");
            for (name, schema) in properties {
                let ty = self.ty(schema, &at.child(format!("properties/{name}")), indent + 1)?;
                doc(&mut body, schema, indent + 1);
                let optional = if required.contains(name.as_str()) {
                    ""
                } else {
                    "?"
                };
                let _ = writeln!(body, "{}{}{optional}: {ty};", pad(indent + 1), key(name));
            }
            let _ = write!(body, "{}}}", pad(indent));
            out.push(body);
        }
        match (rest, out.is_empty()) {
            (Some(rest), _) => out.push(format!("{{ [key: string]: {rest} }}")),
            (None, true) => out.push("{}".to_owned()),
            (None, false) => {}
        }
        Ok(out.join(" & "))
    }
}

/// A JSON value as a literal type.
fn literal(value: &Value, at: &At<'_>) -> Result<String, SchemaError> {
    match value {
        Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null => Ok(value.to_string()),
        _ => Err(at.unsupported("an `enum` or `const` value that is an object or an array")),
    }
}

fn union(mut members: Vec<String>) -> String {
    let mut seen = BTreeSet::new();
    members.retain(|m| seen.insert(m.clone()));
    match members.len() {
        0 => "never".to_owned(),
        1 => members.remove(0),
        _ => members
            .iter()
            .map(|m| parenthesized(m))
            .collect::<Vec<_>>()
            .join(" | "),
    }
}

/// `ty` in parentheses when it is a union or an intersection at its top level.
fn parenthesized(ty: &str) -> String {
    let mut depth = 0i32;
    let mut in_string = false;
    let mut prev = ' ';
    for c in ty.chars() {
        match c {
            '"' if prev != '\\' => in_string = !in_string,
            '{' | '[' | '(' | '<' if !in_string => depth += 1,
            '}' | ']' | ')' | '>' if !in_string => depth -= 1,
            '|' | '&' if !in_string && depth == 0 => return format!("({ty})"),
            _ => {}
        }
        prev = c;
    }
    ty.to_owned()
}

fn pad(indent: usize) -> String {
    "  ".repeat(indent)
}

/// A property name: bare when it is an identifier, else quoted.
fn key(name: &str) -> String {
    if is_identifier(name) {
        name.to_owned()
    } else {
        Value::String(name.to_owned()).to_string()
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

/// A definition's name as a TypeScript identifier.
fn identifier(name: &str) -> String {
    let mut id: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '$' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !id.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == '$') {
        id.insert(0, '_');
    }
    id
}

/// The schema's `description` as a doc comment at `indent`.
fn doc(out: &mut String, schema: &Value, indent: usize) {
    if let Some(text) = schema.get("description").and_then(Value::as_str) {
        comment(out, text, indent);
    }
}

fn comment(out: &mut String, text: &str, indent: usize) {
    let text = text.replace("*/", "*\\/");
    let lines: Vec<&str> = text.lines().collect();
    match lines.as_slice() {
        [] => {}
        [one] => {
            let _ = writeln!(out, "{}/** {one} */", pad(indent));
        }
        many => {
            let _ = writeln!(out, "{}/**", pad(indent));
            for line in many {
                let _ = writeln!(out, "{} * {line}", pad(indent)).map(|_| ());
            }
            let _ = writeln!(out, "{} */", pad(indent));
        }
    }
    // Trailing spaces of empty doc lines.
    while out.contains(" * \n") {
        *out = out.replace(" * \n", " *\n");
    }
}

/// A topic pattern as a property key or an index signature of the `topics` member.
fn topic_key(pattern: &str) -> String {
    match pattern.strip_suffix('*') {
        Some("") => "[topic: string]".to_owned(),
        Some(prefix) => {
            let escaped = prefix
                .replace('\\', "\\\\")
                .replace('`', "\\`")
                .replace("${", "\\${");
            format!("[topic: `{escaped}${{string}}`]")
        }
        None => Value::String(pattern.to_owned()).to_string(),
    }
}

impl ChannelSchema {
    /// The channel's TypeScript declarations, with `name` as the name of its interface (the
    /// type parameter of the JavaScript client: `new Switchboard<Name>(url)`).
    pub fn typescript(&self, name: &str) -> Result<String, SchemaError> {
        if !is_identifier(name) {
            return Err(SchemaError::BadName(name.to_owned()));
        }
        let mut names = BTreeMap::new();
        let mut taken: BTreeMap<String, String> = BTreeMap::new();
        taken.insert(JSON_VALUE.to_owned(), "the JSON value type".to_owned());
        taken.insert(name.to_owned(), "the channel's interface".to_owned());
        for def in self.definitions.keys() {
            let id = identifier(def);
            if let Some(other) = taken.insert(id.clone(), format!("the type `{def}`")) {
                return Err(SchemaError::NameClash {
                    name: id,
                    first: other,
                    second: format!("the type `{def}`"),
                });
            }
            names.insert(def.clone(), id);
        }
        let conv = Converter { names: &names };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "// The types of the Switchboard channel at `{}`, generated by switchboard::schema from\n\
             // its routes: do not edit. A test keeps it in step (docs/typescript.md).\n",
            self.path
        );
        out.push_str(
            "/** Any JSON value. */\nexport type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };\n",
        );
        for (def, schema) in &self.definitions {
            let place = format!("the type `{def}`");
            let at = At {
                place: &place,
                pointer: String::new(),
            };
            out.push('\n');
            doc(&mut out, schema, 0);
            let ty = conv.ty(schema, &at, 0)?;
            let id = &names[def];
            if ty.starts_with('{') && !ty.contains("} & {") && parenthesized(&ty) == ty {
                let _ = writeln!(out, "export interface {id} {ty}");
            } else {
                let _ = writeln!(out, "export type {id} = {ty};");
            }
        }

        out.push('\n');
        comment(
            &mut out,
            &format!(
                "The channel at `{}`: each route's payload and reply, the events it pushes, its topics\n\
                 and their events, the error codes a client may see{}.\n\n\
                 The JavaScript client's type parameter: `new Switchboard<{name}>(url)` in TypeScript,\n\
                 a JSDoc `@type {{Switchboard<{name}>}}` on the client in JavaScript.",
                self.path,
                if self.connect_query.is_some() { " and the connect parameters" } else { "" }
            ),
            0,
        );
        let _ = writeln!(out, "export interface {name} {{");
        out.push_str("  routes: {\n");
        for (route, r) in &self.routes {
            let place = format!("route `{route}`");
            let at = At {
                place: &place,
                pointer: String::new(),
            };
            let payload = match &r.payload {
                Some(p) => conv.ty(p, &at.child("payload"), 3)?,
                None => "void".to_owned(),
            };
            let reply = conv.ty(&r.reply, &at.child("reply"), 3)?;
            if r.builtin {
                comment(
                    &mut out,
                    &format!(
                        "Built in: `{}`.",
                        if route == "subscribe" {
                            "sb.subscribe(topic)"
                        } else {
                            "sub.unsubscribe()"
                        }
                    ),
                    2,
                );
            }
            let _ = writeln!(
                out,
                "    {}: {{ payload: {payload}; reply: {reply} }};",
                key(route)
            );
        }
        out.push_str("  };\n");
        out.push_str(if self.pushes.is_empty() {
            "  pushes: {"
        } else {
            "  pushes: {\n"
        });
        for (event, schema) in &self.pushes {
            let place = format!("push event `{event}`");
            let at = At {
                place: &place,
                pointer: String::new(),
            };
            let _ = writeln!(out, "    {}: {};", key(event), conv.ty(schema, &at, 2)?);
        }
        out.push_str(if self.pushes.is_empty() {
            "};\n"
        } else {
            "  };\n"
        });
        out.push_str(if self.topics.is_empty() {
            "  topics: {"
        } else {
            "  topics: {\n"
        });
        for topic in &self.topics {
            let events = topic_events(&self.topics, topic);
            if !topic.joinable {
                comment(
                    &mut out,
                    "Not joinable by clients: the server subscribes connections.",
                    2,
                );
            }
            if events.is_empty() {
                let _ = writeln!(
                    out,
                    "    {}: {{ [event: string]: {JSON_VALUE} }};",
                    topic_key(&topic.pattern)
                );
                continue;
            }
            let _ = writeln!(out, "    {}: {{", topic_key(&topic.pattern));
            for (event, schema) in events {
                let place = format!("topic event `{event}` on `{}`", topic.pattern);
                let at = At {
                    place: &place,
                    pointer: String::new(),
                };
                let _ = writeln!(out, "      {}: {};", key(event), conv.ty(schema, &at, 3)?);
            }
            out.push_str("    };\n");
        }
        out.push_str(if self.topics.is_empty() {
            "};\n"
        } else {
            "  };\n"
        });
        comment(
            &mut out,
            "Every error code a client may see: the framework's, the client's and the channel's.",
            1,
        );
        let codes: Vec<String> = self
            .errors
            .keys()
            .map(|c| Value::String(c.clone()).to_string())
            .collect();
        let _ = write!(out, "  errors:");
        for code in codes {
            let _ = write!(out, "\n    | {code}");
        }
        out.push_str(";\n");
        if let Some(query) = &self.connect_query {
            let at = At {
                place: "the connect query",
                pointer: String::new(),
            };
            comment(&mut out, "The query parameters of the channel's URL.", 1);
            let _ = writeln!(out, "  connect: {{ query: {} }};", conv.ty(query, &at, 1)?);
        }
        out.push_str("}\n");
        Ok(out)
    }
}

/// The events of `topic`: its own, and, for an exact topic, those of the patterns it matches
/// (so that its entry agrees with their index signatures).
fn topic_events<'a>(
    all: &'a [TopicSchema],
    topic: &'a TopicSchema,
) -> BTreeMap<&'a str, &'a Value> {
    let mut events: BTreeMap<&str, &Value> = BTreeMap::new();
    let exact = !topic.pattern.ends_with('*');
    for t in all {
        let matches = t.pattern == topic.pattern
            || (exact
                && t.pattern
                    .strip_suffix('*')
                    .is_some_and(|prefix| topic.pattern.starts_with(prefix)));
        if matches {
            for (event, schema) in &t.events {
                events.entry(event).or_insert(schema);
            }
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn convert(schema: Value) -> Result<String, SchemaError> {
        let names = BTreeMap::from([("Room".to_owned(), "Room".to_owned())]);
        let at = At {
            place: "test",
            pointer: String::new(),
        };
        Converter { names: &names }.ty(&schema, &at, 0)
    }

    #[test]
    fn primitives_unions_and_literals() {
        assert_eq!(convert(json!({"type": "string"})).unwrap(), "string");
        assert_eq!(
            convert(json!({"type": ["integer", "null"]})).unwrap(),
            "number | null"
        );
        assert_eq!(
            convert(json!({"enum": ["a", "b"]})).unwrap(),
            "\"a\" | \"b\""
        );
        assert_eq!(convert(json!({"const": 3})).unwrap(), "3");
        assert_eq!(convert(json!(true)).unwrap(), "JsonValue");
        assert_eq!(convert(json!({})).unwrap(), "JsonValue");
        assert_eq!(
            convert(json!({"anyOf": [{"$ref": "#/definitions/Room"}, {"type": "null"}]})).unwrap(),
            "Room | null"
        );
    }

    #[test]
    fn arrays_tuples_maps_and_objects() {
        assert_eq!(
            convert(json!({"type": "array", "items": {"type": ["string", "null"]}})).unwrap(),
            "(string | null)[]"
        );
        assert_eq!(
            convert(json!({"type": "array", "items": [{"type": "string"}, {"type": "number"}]}))
                .unwrap(),
            "[string, number]"
        );
        assert_eq!(
            convert(json!({"type": "object", "additionalProperties": {"type": "number"}})).unwrap(),
            "{ [key: string]: number }"
        );
        assert_eq!(
            convert(json!({
                "type": "object",
                "properties": {"a": {"type": "string", "description": "the a"}, "b-c": {"type": "boolean"}},
                "required": ["a"]
            }))
            .unwrap(),
            "{\n  /** the a */\n  a: string;\n  \"b-c\"?: boolean;\n}"
        );
    }

    #[test]
    fn a_keyword_without_equivalent_fails_with_its_place() {
        let err =
            convert(json!({"type": "object", "properties": {"x": {"not": {"type": "string"}}}}))
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "test cannot be described in TypeScript: the keyword `not`, which has no TypeScript equivalent (at /properties/x)"
        );
        let err = convert(json!({"$ref": "#/definitions/Missing"})).unwrap_err();
        assert!(
            err.to_string()
                .contains("the reference `#/definitions/Missing`"),
            "{err}"
        );
    }

    #[test]
    fn topic_keys() {
        assert_eq!(topic_key("room:*"), "[topic: `room:${string}`]");
        assert_eq!(topic_key("*"), "[topic: string]");
        assert_eq!(topic_key("game:winners"), "\"game:winners\"");
    }
}
