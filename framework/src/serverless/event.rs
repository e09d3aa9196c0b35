//! The contract between a gateway and a function, in one place: the event a gateway POSTs
//! (the shape of AWS API Gateway's WebSocket proxy integration event, so that a function
//! written for one reads the other's), how the gateway builds it, how a function reads it, how
//! AWS's own type of it converts (Lambda), and what a function answers.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::time;
use crate::id::ConnectionId;

/// The route key of `CONNECT` events.
pub(crate) const CONNECT_ROUTE: &str = "$connect";
/// The route key of `DISCONNECT` events.
pub(crate) const DISCONNECT_ROUTE: &str = "$disconnect";

/// The response header that marks a function's answer as a complete frame: the gateway relays
/// the body to the client as is (instead of wrapping it as the `data` of a reply).
pub const REPLY_HEADER: &str = "x-switchboard-reply";
/// [`REPLY_HEADER`]'s value.
pub(crate) const REPLY_FRAME: &str = "frame";

/// Whether a [`REPLY_HEADER`] value marks a complete frame.
pub(crate) fn is_frame_reply(value: &str) -> bool {
    value.eq_ignore_ascii_case(REPLY_FRAME)
}

/// The content type of a binary answer (a binary frame).
pub(crate) const BINARY_CONTENT_TYPE: &str = "application/octet-stream";

/// Whether a `Content-Type` value declares a binary answer.
pub(crate) fn is_binary_content(content_type: &str) -> bool {
    content_type.starts_with(BINARY_CONTENT_TYPE)
}

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
    #[cfg(feature = "lambda")]
    const ALL: [EventType; 3] = [
        EventType::Connect,
        EventType::Message,
        EventType::Disconnect,
    ];

    /// `CONNECT`, `MESSAGE`, `DISCONNECT`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Connect => "CONNECT",
            EventType::Message => "MESSAGE",
            EventType::Disconnect => "DISCONNECT",
        }
    }

    /// The type [`as_str`](Self::as_str) spells `name`.
    #[cfg(feature = "lambda")]
    pub(crate) fn parse(name: &str) -> Option<EventType> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
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

impl RequestContext {
    /// The context of an event of `event_type` (route `route_key`) happening `now` on
    /// connection `connection_id`, opened at `connected_at`; the rest left empty.
    pub(crate) fn new(
        route_key: &str,
        event_type: EventType,
        connection_id: String,
        connected_at: SystemTime,
        now: SystemTime,
    ) -> Self {
        RequestContext {
            route_key: route_key.to_owned(),
            event_type,
            connection_id,
            connected_at: time::epoch_millis(connected_at),
            request_time_epoch: time::epoch_millis(now),
            request_time: time::request_time(now),
            ..RequestContext::default()
        }
    }

    /// [`connection_id`](Self::connection_id), parsed; the error says what is wrong.
    pub(crate) fn connection(&self) -> Result<ConnectionId, &'static str> {
        self.connection_id
            .parse()
            .map_err(|_| "requestContext.connectionId is not a connection id")
    }

    /// [`connected_at`](Self::connected_at) as a time.
    pub(crate) fn connected_at_time(&self) -> SystemTime {
        UNIX_EPOCH
            .checked_add(Duration::from_millis(self.connected_at))
            .unwrap_or(UNIX_EPOCH)
    }

    /// The session a Switchboard function's `$connect` established, as the authorizer context
    /// carries it.
    pub(crate) fn session(&self) -> Option<&serde_json::Value> {
        session_in(self.authorizer.as_ref()?)
    }
}

/// Where a Switchboard function keeps its session in an authorizer context.
const SESSION: &str = "session";

/// The session in an authorizer context (`{"session": ...}`).
pub(crate) fn session_in(authorizer: &serde_json::Value) -> Option<&serde_json::Value> {
    authorizer.get(SESSION)
}

/// What a `MESSAGE` event carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Payload {
    /// A text frame's text (or text that is not a message, for `$default`).
    Text(String),
    /// A binary frame's bytes (base64 in the event).
    Binary(Bytes),
}

impl Event {
    /// A `CONNECT` event, with the upgrade request's headers and (decoded) query parameters.
    pub(crate) fn connect<'a>(
        request_context: RequestContext,
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
        query: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Event {
        let (headers, multi_value_headers) = single_and_multi(headers);
        let (query_string_parameters, multi_value_query_string_parameters) =
            single_and_multi(query);
        Event {
            request_context,
            headers,
            multi_value_headers,
            query_string_parameters,
            multi_value_query_string_parameters,
            ..Event::default()
        }
    }

    /// A `MESSAGE` event carrying `payload`.
    pub(crate) fn message(request_context: RequestContext, payload: Payload) -> Event {
        let (body, is_base64_encoded) = match payload {
            Payload::Text(text) => (text, false),
            Payload::Binary(bytes) => (
                base64::engine::general_purpose::STANDARD.encode(bytes),
                true,
            ),
        };
        Event {
            request_context,
            body: Some(body),
            is_base64_encoded,
            ..Event::default()
        }
    }

    /// A `DISCONNECT` event: the connection closed with `code` and `reason`.
    pub(crate) fn disconnect(
        mut request_context: RequestContext,
        code: u16,
        reason: String,
    ) -> Event {
        request_context.disconnect_status_code = Some(code);
        request_context.disconnect_reason = Some(reason);
        Event {
            request_context,
            ..Event::default()
        }
    }

    /// What a `MESSAGE` event carries (no body is empty text); an error when a base64 body is
    /// not base64.
    pub(crate) fn payload(&self) -> Result<Payload, base64::DecodeError> {
        let body = self.body.as_deref().unwrap_or_default();
        if self.is_base64_encoded {
            base64::engine::general_purpose::STANDARD
                .decode(body.as_bytes())
                .map(|bytes| Payload::Binary(bytes.into()))
        } else {
            Ok(Payload::Text(body.to_owned()))
        }
    }

    /// The upgrade request's headers (`CONNECT`): every value when the event has them all, else
    /// the last of each.
    pub(crate) fn header_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        pairs(&self.multi_value_headers, &self.headers)
    }

    /// The upgrade request's query parameters (`CONNECT`), decoded, as
    /// [`header_pairs`](Self::header_pairs).
    pub(crate) fn query_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        pairs(
            &self.multi_value_query_string_parameters,
            &self.query_string_parameters,
        )
    }

    /// The event as AWS's type of it describes it (what a Lambda function receives). Field by
    /// field rather than through JSON: `aws_lambda_events` writes single-valued maps
    /// (`queryStringParameters`) with every value.
    #[cfg(feature = "lambda")]
    pub(crate) fn from_aws(
        req: aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest,
    ) -> Result<Event, String> {
        let ctx = req.request_context;
        let event_type = ctx
            .event_type
            .as_deref()
            .and_then(EventType::parse)
            .ok_or_else(|| {
                format!(
                    "requestContext.eventType is {:?}, not CONNECT, MESSAGE or DISCONNECT",
                    ctx.event_type
                )
            })?;
        let headers = if req.multi_value_headers.is_empty() {
            &req.headers
        } else {
            &req.multi_value_headers
        };
        let headers = headers
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)));
        let query = if req.multi_value_query_string_parameters.is_empty() {
            &req.query_string_parameters
        } else {
            &req.multi_value_query_string_parameters
        };
        let fields = ctx.authorizer.fields;
        let (headers, multi_value_headers) = single_and_multi(headers);
        let (query_string_parameters, multi_value_query_string_parameters) =
            single_and_multi(query.iter());
        Ok(Event {
            request_context: RequestContext {
                route_key: ctx.route_key.unwrap_or_default(),
                event_type,
                connection_id: ctx.connection_id.unwrap_or_default(),
                connected_at: u64::try_from(ctx.connected_at).unwrap_or(0),
                request_time_epoch: u64::try_from(ctx.request_time_epoch).unwrap_or(0),
                request_time: ctx.request_time.unwrap_or_default(),
                message_id: ctx.message_id,
                message_direction: ctx.message_direction.unwrap_or_else(direction_in),
                request_id: ctx.request_id.unwrap_or_default(),
                extended_request_id: ctx.extended_request_id.unwrap_or_default(),
                domain_name: ctx.domain_name.unwrap_or_default(),
                stage: ctx.stage.unwrap_or_default(),
                api_id: ctx.apiid.unwrap_or_default(),
                identity: Identity {
                    source_ip: ctx.identity.source_ip.unwrap_or_default(),
                    user_agent: ctx.identity.user_agent,
                },
                authorizer: (!fields.is_empty())
                    .then(|| serde_json::Value::Object(fields.into_iter().collect())),
                disconnect_status_code: ctx
                    .disconnect_status_code
                    .and_then(|c| u16::try_from(c).ok()),
                disconnect_reason: ctx.disconnect_reason,
            },
            body: req.body,
            is_base64_encoded: req.is_base64_encoded,
            headers,
            multi_value_headers,
            query_string_parameters,
            multi_value_query_string_parameters,
        })
    }
}

/// Name-value pairs as both maps of an event hold them: the last value of each name, and every
/// value; none when there are no pairs.
#[allow(clippy::type_complexity)]
fn single_and_multi<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> (
    Option<BTreeMap<String, String>>,
    Option<BTreeMap<String, Vec<String>>>,
) {
    let mut multi: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in pairs {
        multi.entry(k.to_owned()).or_default().push(v.to_owned());
    }
    if multi.is_empty() {
        return (None, None);
    }
    let single = multi
        .iter()
        .filter_map(|(k, vs)| Some((k.clone(), vs.last()?.clone())))
        .collect();
    (Some(single), Some(multi))
}

/// The pairs of an event's maps: `multi`'s when present, else `single`'s.
fn pairs<'a>(
    multi: &'a Option<BTreeMap<String, Vec<String>>>,
    single: &'a Option<BTreeMap<String, String>>,
) -> impl Iterator<Item = (&'a str, &'a str)> {
    let every = multi
        .iter()
        .flatten()
        .flat_map(|(k, vs)| vs.iter().map(move |v| (k.as_str(), v.as_str())));
    let last = single
        .iter()
        .filter(|_| multi.is_none())
        .flatten()
        .map(|(k, v)| (k.as_str(), v.as_str()));
    every.chain(last)
}

/// A function's answer to `CONNECT` when it accepts: `{"authorizer": {"session": ...}}` with a
/// session, `{}` without. The gateway sends the authorizer context with every later event of
/// the connection.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct ConnectAnswer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) authorizer: Option<serde_json::Value>,
}

impl ConnectAnswer {
    /// The answer carrying `session`.
    pub(crate) fn with_session(session: serde_json::Value) -> Self {
        let mut authorizer = serde_json::Map::new();
        authorizer.insert(SESSION.to_owned(), session);
        ConnectAnswer {
            authorizer: Some(serde_json::Value::Object(authorizer)),
        }
    }
}

/// The body of a function's refusal (a non-2xx answer): `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ErrorAnswer {
    pub(crate) error: ErrorDetail,
}

/// [`ErrorAnswer`]'s `error`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ErrorDetail {
    pub(crate) code: String,
    #[serde(default)]
    pub(crate) message: String,
}

impl ErrorAnswer {
    pub(crate) fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorAnswer {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
            },
        }
    }
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
