//! The types of what the framework itself sends and takes: the built-in `subscribe`,
//! `unsubscribe` and `refresh` routes (`handler::subscribe`, `handler::refresh`), the presence
//! events (`engine`) and the token frames (`channel::handle`), as their wire form is documented
//! in docs/protocol.md.

use std::collections::BTreeMap;

use schemars::JsonSchema;

use crate::handler::describe::{RouteTypes, TypeDesc};

/// A position in a topic's history.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct Position {
    /// Changes whenever the topic's history is started anew.
    epoch: String,
    /// The last sequence number seen.
    seq: u64,
}

/// The built-in `subscribe` route's payload.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct Subscribe {
    /// The topic to join (it must match one of the channel's join rules).
    topic: String,
    /// Where the client's view of the topic ended: missed publications are replayed.
    #[serde(default)]
    recover: Option<Position>,
    /// Without `recover`: replay the latest publications the topic still holds, at most this
    /// many.
    #[serde(default)]
    last: Option<u32>,
}

/// The built-in `subscribe` route's reply.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct Subscribed {
    /// The topic.
    topic: String,
    /// The topic history's epoch, on topics with history.
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<String>,
    /// The topic's last sequence number, on topics with history.
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    /// Whether the missed publications were replayed, when `recover` was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    recovered: Option<bool>,
}

/// The built-in `unsubscribe` route's payload and reply.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct Unsubscribe {
    /// The topic.
    topic: String,
}

/// The built-in `refresh` route's payload: a new token, of the connection or of a topic's
/// subscription.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct Refresh {
    /// The new token.
    token: String,
    /// The topic whose subscription the token is for; without it, the connection's.
    #[serde(default)]
    topic: Option<String>,
}

/// The built-in `refresh` route's reply.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct Refreshed {
    /// The topic, for a subscription's token.
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<String>,
    /// Milliseconds until the new token expires; `null`: it does not.
    expires_in: Option<u64>,
}

/// The server asks for a new token before the current one expires (`{"refresh": ...}`).
#[derive(JsonSchema)]
#[allow(dead_code)]
struct RefreshAsked {
    /// The topic whose subscription's token expires; without it, the connection's.
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<String>,
    /// Milliseconds left on the current token.
    expires_in: u64,
}

/// The server ended a subscription (`{"unsubscribed": ...}`): its token expired.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct Unsubscribed {
    /// The topic.
    topic: String,
    /// Why, as an error code (`token_expired`).
    code: String,
    /// Why, for people.
    message: String,
}

/// One presence key's connections.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct PresenceEntry {
    /// Each connection's metadata.
    metas: Vec<serde_json::Value>,
}

/// Who is on a topic: one entry per presence key (`presence_state`).
#[derive(JsonSchema)]
#[allow(dead_code)]
#[schemars(transparent)]
struct PresenceState(BTreeMap<String, PresenceEntry>);

/// Who came and who went (`presence_diff`).
#[derive(JsonSchema)]
#[allow(dead_code)]
struct PresenceDiff {
    /// Keys that appeared (their first connection).
    joins: BTreeMap<String, PresenceEntry>,
    /// Keys that went (their last connection).
    leaves: BTreeMap<String, PresenceEntry>,
}

/// The built-in routes of a channel: `subscribe` and `unsubscribe` with join rules, `refresh`
/// with expiring tokens (`on_refresh`, `join_with_token`).
pub(crate) fn routes(joins: bool, tokens: bool) -> Vec<(&'static str, RouteTypes)> {
    let mut routes = Vec::new();
    if joins {
        routes.push((
            crate::handler::subscribe::SUBSCRIBE,
            RouteTypes {
                payload: TypeDesc::of::<Subscribe>(),
                reply: TypeDesc::of::<Subscribed>(),
            },
        ));
        routes.push((
            crate::handler::subscribe::UNSUBSCRIBE,
            RouteTypes {
                payload: TypeDesc::of::<Unsubscribe>(),
                reply: TypeDesc::of::<Unsubscribe>(),
            },
        ));
    }
    if tokens {
        routes.push((
            crate::handler::refresh::REFRESH,
            RouteTypes {
                payload: TypeDesc::of::<Refresh>(),
                reply: TypeDesc::of::<Refreshed>(),
            },
        ));
    }
    routes
}

/// The frames a channel with expiring tokens sends on its own, by the field that names them.
pub(crate) fn token_frames() -> [(&'static str, TypeDesc); 2] {
    [
        ("refresh", TypeDesc::of::<RefreshAsked>()),
        ("unsubscribed", TypeDesc::of::<Unsubscribed>()),
    ]
}

/// The events of topics with presence.
pub(crate) fn presence_events() -> [(&'static str, TypeDesc); 2] {
    [
        ("presence_state", TypeDesc::of::<PresenceState>()),
        ("presence_diff", TypeDesc::of::<PresenceDiff>()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Position as EnginePosition, Subscribed as EngineSubscribed};

    fn properties<T: JsonSchema>() -> Vec<String> {
        let schema = schemars::SchemaGenerator::default().into_root_schema_for::<T>();
        let mut names: Vec<String> = schema
            .get("properties")
            .and_then(|p| p.as_object())
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    fn keys(value: serde_json::Value) -> Vec<String> {
        let mut names: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        names.sort();
        names
    }

    /// The token frames' schemas have the fields the server sends, and nothing else.
    #[test]
    fn token_frame_fields_match_what_is_sent() {
        let left = std::time::Duration::from_secs(5);
        let refresh: serde_json::Value =
            serde_json::from_str(&crate::channel::refresh_frame(Some("t"), left)).unwrap();
        assert_eq!(
            properties::<RefreshAsked>(),
            keys(refresh["refresh"].clone())
        );
        let err = crate::ChannelError::TokenExpired;
        let gone: serde_json::Value =
            serde_json::from_str(&crate::channel::unsubscribed_frame("t", &err)).unwrap();
        assert_eq!(
            properties::<Unsubscribed>(),
            keys(gone["unsubscribed"].clone())
        );
    }

    /// The subscribe reply's schema has the fields the route sends: `topic` and the engine's
    /// `Subscribed`, flattened.
    #[test]
    fn subscribe_reply_fields_match_the_engine() {
        let full = EngineSubscribed {
            position: Some(EnginePosition {
                epoch: "e".into(),
                seq: 3,
            }),
            recovered: Some(true),
        };
        let mut sent = keys(serde_json::to_value(&full).unwrap());
        sent.push("topic".to_owned());
        sent.sort();
        assert_eq!(properties::<Subscribed>(), sent);
        let position = EnginePosition {
            epoch: "e".into(),
            seq: 1,
        };
        assert_eq!(
            properties::<Position>(),
            keys(serde_json::to_value(&position).unwrap())
        );
    }
}
