//! The generator on channels described by hand (the macros' side is tested in
//! tests/schema.rs, where they can name `::switchboard`).

use schemars::JsonSchema;
use serde_json::Value;

use super::*;
use crate::handler::describe::Parts;
use crate::protocol::RouteKey;

#[derive(JsonSchema)]
#[allow(dead_code)]
struct Join {
    room: String,
    #[serde(default)]
    last: Option<u32>,
}

#[derive(JsonSchema)]
#[allow(dead_code)]
struct Said {
    /// Who said it.
    nick: String,
    text: String,
}

#[derive(JsonSchema)]
#[allow(dead_code)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Line {
    Text { text: String },
    Image { url: String, width: u32 },
}

/// A type whose schema says `not`: valid JSON Schema, no TypeScript equivalent.
#[allow(dead_code)]
struct NotAString;

impl JsonSchema for NotAString {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "NotAString".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "not": { "type": "string" } })
    }
}

fn types<P: JsonSchema, R: JsonSchema>() -> Option<RouteTypes> {
    Some(RouteTypes {
        payload: TypeDesc::of::<P>(),
        reply: TypeDesc::of::<R>(),
    })
}

fn parts<'a>(
    key: &'a RouteKey,
    routes: Vec<(String, Option<RouteTypes>)>,
    declared: &'a Declared,
) -> Parts<'a> {
    Parts {
        path: "/ws/test",
        route_key: key,
        routes,
        joins: vec!["room:*"],
        presence: true,
        tokens: false,
        connect: None,
        declared,
    }
}

#[test]
fn routes_events_and_errors_become_one_interface() {
    let key = RouteKey::default();
    let declared = Declared {
        pushes: vec![("tick".into(), TypeDesc::of::<u64>())],
        topics: vec![("room:*".into(), "said".into(), TypeDesc::of::<Said>())],
        errors: vec![("room_full".into(), "no seat left".into())],
        connect: None,
    };
    let schema = ChannelSchema::from_parts(parts(
        &key,
        vec![
            ("join".into(), types::<Join, Vec<Line>>()),
            (
                "ping".into(),
                Some(RouteTypes {
                    payload: TypeDesc::new("()", Shape::None),
                    reply: TypeDesc::of::<()>(),
                }),
            ),
        ],
        &declared,
    ))
    .unwrap();
    let ts = schema.typescript("TestChannel").unwrap();
    for expected in [
        "export interface Join {\n  last?: number | null;\n  room: string;\n}",
        "export interface Said {\n  /** Who said it. */\n  nick: string;\n  text: string;\n}",
        "join: { payload: Join; reply: Line[] };",
        "ping: { payload: void; reply: null };",
        "subscribe: { payload: Subscribe; reply: Subscribed };",
        "unsubscribe: { payload: Unsubscribe; reply: Unsubscribe };",
        "tick: number;",
        "[topic: `room:${string}`]: {\n      presence_diff: PresenceDiff;\n      presence_state: PresenceState;\n      said: Said;\n    };",
        "\"room_full\"",
        "\"bad_payload\"",
        "\"timeout\"",
        "export interface TestChannel {",
    ] {
        assert!(ts.contains(expected), "missing {expected:?} in\n{ts}");
    }
    // The tagged enum: a union of objects, each with its tag as a literal.
    assert!(ts.contains("export type Line = {"), "{ts}");
    assert!(ts.contains("kind: \"text\";"), "{ts}");
    assert!(!ts.contains(": any") && !ts.contains("<any>"), "{ts}");
}

#[test]
fn a_type_without_a_schema_names_the_route_and_the_type() {
    let key = RouteKey::default();
    let declared = Declared::default();
    let opaque = RouteTypes {
        payload: TypeDesc::new("Secret", Shape::Opaque),
        reply: TypeDesc::of::<()>(),
    };
    let err = ChannelSchema::from_parts(parts(
        &key,
        vec![("unlock".into(), Some(opaque))],
        &declared,
    ))
    .unwrap_err();
    assert!(matches!(err, SchemaError::Undescribed { .. }));
    assert_eq!(
        err.to_string(),
        "route `unlock`, payload: the type `Secret` cannot be described: it does not implement \
         `schemars::JsonSchema` (derive it: `#[derive(schemars::JsonSchema)]`)"
    );

    let reply = RouteTypes {
        payload: TypeDesc::new("()", Shape::None),
        reply: TypeDesc::new("Reply", Shape::Opaque),
    };
    let err = ChannelSchema::from_parts(parts(&key, vec![("raw".into(), Some(reply))], &declared))
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("route `raw`, reply: the type `Reply` cannot be described"),
        "{err}"
    );

    let err = ChannelSchema::from_parts(parts(&key, vec![("manual".into(), None)], &declared))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "route `manual`: its handler does not describe its types (implement \
         `MessageHandler::types`, or write it with `#[switchboard::message]`)"
    );
}

#[test]
fn a_schema_typescript_cannot_express_fails_with_its_place() {
    let key = RouteKey::default();
    let declared = Declared::default();
    let schema = ChannelSchema::from_parts(parts(
        &key,
        vec![("odd".into(), types::<NotAString, ()>())],
        &declared,
    ))
    .unwrap();
    let err = schema.typescript("Channel").unwrap_err();
    assert_eq!(
        err.to_string(),
        "the type `NotAString` cannot be described in TypeScript: the keyword `not`, which has \
         no TypeScript equivalent (at /)"
    );
}

#[test]
fn the_interface_name_cannot_clash_with_a_type() {
    let key = RouteKey::default();
    let declared = Declared::default();
    let schema = ChannelSchema::from_parts(parts(
        &key,
        vec![("join".into(), types::<Join, ()>())],
        &declared,
    ))
    .unwrap();
    let err = schema.typescript("Join").unwrap_err();
    assert!(matches!(err, SchemaError::NameClash { .. }), "{err}");
    assert!(matches!(
        schema.typescript("not a name").unwrap_err(),
        SchemaError::BadName(_)
    ));
}

#[test]
fn a_type_read_and_written_differently_gets_two_names() {
    #[derive(JsonSchema)]
    #[allow(dead_code)]
    struct Settings {
        #[serde(default)]
        volume: u8,
    }
    let key = RouteKey::default();
    let declared = Declared::default();
    let schema = ChannelSchema::from_parts(parts(
        &key,
        vec![("set".into(), types::<Settings, Settings>())],
        &declared,
    ))
    .unwrap();
    let ts = schema.typescript("Channel").unwrap();
    assert!(
        ts.contains("set: { payload: SettingsInput; reply: Settings };"),
        "{ts}"
    );
    assert!(
        ts.contains("export interface SettingsInput {\n  volume?: number;\n}"),
        "{ts}"
    );
    assert!(
        ts.contains("export interface Settings {\n  volume: number;\n}"),
        "{ts}"
    );
}

#[test]
fn asyncapi_document_shape() {
    let key = RouteKey::parse("meta.action").unwrap();
    let declared = Declared {
        pushes: vec![("tick".into(), TypeDesc::of::<u64>())],
        topics: vec![("room:*".into(), "said".into(), TypeDesc::of::<Said>())],
        errors: vec![],
        connect: Some(TypeDesc::of::<Join>()),
    };
    let schema = ChannelSchema::from_parts(parts(
        &key,
        vec![("join".into(), types::<Join, Said>())],
        &declared,
    ))
    .unwrap();
    let doc = AsyncApi::new("Test", "1.0.0")
        .server("local", "127.0.0.1:8080", "ws")
        .document_of(&schema)
        .unwrap();
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert_eq!(doc["servers"]["local"]["protocol"], "ws");
    let channel = &doc["channels"]["ws_test"];
    assert_eq!(channel["address"], "/ws/test");
    assert_eq!(channel["bindings"]["ws"]["query"]["type"], "object");
    let join = &doc["operations"]["join"];
    assert_eq!(join["action"], "receive");
    assert_eq!(
        join["messages"][0]["$ref"],
        "#/channels/ws_test/messages/join.request"
    );
    // The route key's path holds the route.
    let request = &doc["components"]["messages"]["join.request"]["payload"];
    assert_eq!(
        request["properties"]["meta"]["properties"]["action"]["const"],
        "join"
    );
    assert_eq!(
        request["properties"]["data"]["$ref"],
        "#/components/schemas/Join"
    );
    assert!(doc["components"]["schemas"]["Said"].is_object());
    assert_eq!(doc["operations"]["push.tick"]["action"], "send");
    assert_eq!(doc["operations"]["topic.room"]["action"], "send");
    // No reference is left pointing at draft-07 definitions.
    let text = doc.to_string();
    assert!(!text.contains("#/definitions/"), "{text}");
    let codes = &doc["components"]["messages"]["error"]["payload"]["properties"]["error"]
        ["properties"]["code"]["enum"];
    assert!(codes
        .as_array()
        .unwrap()
        .contains(&Value::String("bad_payload".into())));
}

/// Every error code `ChannelError` has is listed (a new variant fails to compile here until
/// it is added to the match and, with its code, to `FRAMEWORK_ERRORS`).
#[test]
fn the_framework_error_codes_are_all_listed() {
    use crate::error::ChannelError as E;
    let all = [
        E::BadJson(String::new()),
        E::MissingRoute(String::new()),
        E::BadRef,
        E::UnknownRoute(String::new()),
        E::BadPayload {
            field: None,
            reason: String::new(),
        },
        E::BinaryUnsupported,
        E::Overloaded,
        E::RateLimited,
        E::TooManyTopics { max: 1 },
        E::BadTopic { max: 1 },
        E::PresenceTooLarge { max: 1 },
        E::TooManyUserTopics { max: 1 },
        E::TooManyUserConnections { max: 1 },
        E::TokenExpired,
        E::RefreshUnsupported("".into()),
        E::Unauthorized("".into()),
        E::Forbidden("".into()),
        E::TooManyConnections,
        E::Draining,
        E::Closed,
        E::Internal(String::new()),
    ];
    for e in &all {
        match e {
            E::BadJson(_)
            | E::MissingRoute(_)
            | E::BadRef
            | E::UnknownRoute(_)
            | E::BadPayload { .. }
            | E::BinaryUnsupported
            | E::Overloaded
            | E::RateLimited
            | E::TooManyTopics { .. }
            | E::BadTopic { .. }
            | E::PresenceTooLarge { .. }
            | E::TooManyUserTopics { .. }
            | E::TooManyUserConnections { .. }
            | E::TokenExpired
            | E::RefreshUnsupported(_)
            | E::Unauthorized(_)
            | E::Forbidden(_)
            | E::TooManyConnections
            | E::Draining
            | E::Closed
            | E::Custom { .. }
            | E::Internal(_) => {}
        }
        assert!(
            FRAMEWORK_ERRORS.iter().any(|(code, _)| *code == e.code()),
            "`{}` is missing from FRAMEWORK_ERRORS",
            e.code()
        );
    }
}

/// A channel with expiring tokens describes its `refresh` route and the frames the server
/// sends on its own (`refresh`, `unsubscribed`); a channel without has none of them.
#[test]
fn expiring_tokens_bring_the_refresh_route_and_the_token_frames() {
    let key = RouteKey::default();
    let declared = Declared::default();
    let plain = ChannelSchema::from_parts(parts(&key, vec![], &declared)).unwrap();
    assert!(!plain.routes.contains_key("refresh"));
    assert!(plain.frames.is_empty());

    let with_tokens = ChannelSchema::from_parts(Parts {
        tokens: true,
        ..parts(&key, vec![], &declared)
    })
    .unwrap();
    let refresh = &with_tokens.routes["refresh"];
    assert!(refresh.builtin);
    let named = |schema: &Value| -> Value {
        let name = schema["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
        with_tokens.definitions[name].clone()
    };
    assert_eq!(
        named(refresh.payload.as_ref().unwrap())["required"],
        json_list(&["token"])
    );
    let frames: Vec<&str> = with_tokens.frames.keys().map(String::as_str).collect();
    assert_eq!(frames, ["refresh", "unsubscribed"]);
    assert_eq!(
        named(&with_tokens.frames["unsubscribed"])["required"],
        json_list(&["topic", "code", "message"])
    );

    let doc = AsyncApi::new("Test", "1.0.0")
        .server("local", "127.0.0.1:8080", "ws")
        .document_of(&with_tokens)
        .unwrap();
    for field in ["refresh", "unsubscribed"] {
        let op = &doc["operations"][format!("frame.{field}")];
        assert_eq!(op["action"], "send", "{field}");
        let message = &doc["components"]["messages"][format!("{field}.frame")];
        assert_eq!(message["payload"]["required"], json_list(&[field]));
    }
    let ts = with_tokens.typescript("Tokens").unwrap();
    assert!(ts.contains("refresh"), "{ts}");
}

fn json_list(items: &[&str]) -> Value {
    Value::from(items.iter().map(|s| Value::from(*s)).collect::<Vec<_>>())
}
