//! The event a gateway POSTs to a function: the shape of AWS API Gateway's WebSocket proxy
//! integration event, so that a function written for one reads the other's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What happened on the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventType {
    /// A client asks to connect (`$connect`): a non-2xx answer rejects it.
    Connect,
    /// A message from the client.
    Message,
    /// The connection ended (`$disconnect`).
    Disconnect,
}

impl EventType {
    /// `CONNECT`, `MESSAGE`, `DISCONNECT`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Connect => "CONNECT",
            EventType::Message => "MESSAGE",
            EventType::Disconnect => "DISCONNECT",
        }
    }
}

/// An API Gateway WebSocket event, as a gateway channel sends it and a function receives it.
///
/// ```json
/// {
///   "requestContext": {
///     "routeKey": "join", "eventType": "MESSAGE", "connectionId": "L0SM9cOFvHcCIhw=",
///     "messageId": "...", "messageDirection": "IN", "connectedAt": 1707498319000,
///     "requestTimeEpoch": 1707498319361, "requestTime": "09/Feb/2024:17:05:19 +0000",
///     "requestId": "...", "extendedRequestId": "...", "domainName": "chat.example:8080",
///     "stage": "$default", "apiId": "switchboard",
///     "identity": {"sourceIp": "203.0.113.7", "userAgent": "..."},
///     "authorizer": {"session": {...}}
///   },
///   "body": "{\"type\":\"join\",\"ref\":1,\"data\":{\"room\":\"lobby\"}}",
///   "isBase64Encoded": false
/// }
/// ```
///
/// `CONNECT` events carry the upgrade request's `headers`, `multiValueHeaders`,
/// `queryStringParameters` and `multiValueQueryStringParameters` instead of a body.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Where, when and for whom.
    pub request_context: RequestContext,
    /// The frame's text (`MESSAGE`), base64 when `is_base64_encoded` (a binary frame).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Whether `body` is base64 (a binary frame).
    #[serde(default)]
    pub is_base64_encoded: bool,
    /// The upgrade request's headers, the last value of each (`CONNECT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// The upgrade request's headers, every value (`CONNECT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_value_headers: Option<BTreeMap<String, Vec<String>>>,
    /// The upgrade request's query parameters, decoded, the last value of each (`CONNECT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_string_parameters: Option<BTreeMap<String, String>>,
    /// The upgrade request's query parameters, every value (`CONNECT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_value_query_string_parameters: Option<BTreeMap<String, Vec<String>>>,
}

/// The event's `requestContext`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestContext {
    /// `$connect`, `$disconnect`, `$default` or the message's route.
    pub route_key: String,
    /// What happened.
    pub event_type: EventType,
    /// The connection (reach it through the connections API).
    pub connection_id: String,
    /// When the connection opened, in milliseconds since the epoch.
    #[serde(default)]
    pub connected_at: u64,
    /// When this event happened, in milliseconds since the epoch.
    #[serde(default)]
    pub request_time_epoch: u64,
    /// The same, as `09/Feb/2024:17:05:19 +0000`.
    #[serde(default)]
    pub request_time: String,
    /// Unique per message (`MESSAGE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// `IN`.
    #[serde(default = "direction_in")]
    pub message_direction: String,
    /// Unique per event.
    #[serde(default)]
    pub request_id: String,
    /// Unique per event.
    #[serde(default)]
    pub extended_request_id: String,
    /// The gateway's host, as the client addressed it.
    #[serde(default)]
    pub domain_name: String,
    /// The gateway's stage name.
    #[serde(default)]
    pub stage: String,
    /// The gateway's API id.
    #[serde(default)]
    pub api_id: String,
    /// The client.
    #[serde(default)]
    pub identity: Identity,
    /// What `$connect` established (a Switchboard function's session: `{"session": ...}`),
    /// carried in every later event of the connection, like API Gateway's authorizer context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorizer: Option<serde_json::Value>,
    /// The close code (`DISCONNECT`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnect_status_code: Option<u16>,
    /// The close reason (`DISCONNECT`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnect_reason: Option<String>,
}

fn direction_in() -> String {
    "IN".to_owned()
}

impl Default for RequestContext {
    fn default() -> Self {
        RequestContext {
            route_key: String::new(),
            event_type: EventType::Message,
            connection_id: String::new(),
            connected_at: 0,
            request_time_epoch: 0,
            request_time: String::new(),
            message_id: None,
            message_direction: direction_in(),
            request_id: String::new(),
            extended_request_id: String::new(),
            domain_name: String::new(),
            stage: String::new(),
            api_id: String::new(),
            identity: Identity::default(),
            authorizer: None,
            disconnect_status_code: None,
            disconnect_reason: None,
        }
    }
}

/// The client, as the gateway saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    /// The client's address.
    #[serde(default)]
    pub source_ip: String,
    /// The client's `User-Agent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}
