//! The connections API: reach a hub's connections over HTTP, compatible with the AWS API
//! Gateway Management API, so that the AWS SDKs' `ApiGatewayManagementApi` client (with a
//! custom endpoint) works against it unchanged.
//!
//! | request | what | answer |
//! |---|---|---|
//! | `POST /@connections/{id}` | sends the body to the connection as one frame (text when UTF-8, else binary) | 200 |
//! | `GET /@connections/{id}` | `{"connectedAt","lastActiveAt","identity":{"sourceIp","userAgent"}}` | 200 |
//! | `DELETE /@connections/{id}` | closes the connection (`?code=4000&reason=..` optional; the reason at most 123 bytes) | 204 |
//! | `PUT /@connections/{id}/topics/{topic}` | subscribes the connection (body `{"recover":{"epoch","seq"}}` optional) | 200, the position |
//! | `DELETE /@connections/{id}/topics/{topic}` | unsubscribes it | 204 |
//! | `GET /@connections/{id}/topics` | `{"topics":[...]}` | 200 |
//! | `POST /@topics/{topic}?event=E` | publishes the JSON body (`&exclude={id}`: all but one connection) | 204 |
//! | `GET /@topics`, `GET /@topics/{topic}`, `GET /@topics/{topic}/presence`, `GET /@stats` | topics, subscriber count, presence, totals | 200 |
//!
//! Ids and topics are percent-encoded path segments. Errors are shaped the way AWS sends them
//! (status, `x-amzn-ErrorType` header, `{"message": ...}` body), so the SDKs raise their typed
//! exceptions: 410 `GoneException` (no such connection), 413 `PayloadTooLargeException`, 403
//! `ForbiddenException` (bad or missing signature or token), 400 `BadRequestException`.
//!
//! **Security.** Requests are accepted when signed with AWS Signature Version 4 (service
//! `execute-api`) by one of the configured access keys, with a timestamp at most 5 minutes off,
//! or when they carry the configured bearer token. Signed requests must percent-encode `+` in
//! the query (`%2B`; a space is `%20`), as the AWS SDKs do: a raw `+` is a 400.
//!
//! An API with neither configured is for local use only: it refuses to start on a non-loopback
//! address, and answers 403 `ForbiddenException` to every request whose peer is not a loopback
//! address (a unix socket has none) or that carries a proxy's header (`Forwarded`, `Via`, any
//! `X-Forwarded-*`, `X-Real-IP`, `True-Client-IP` and the others listed in `serverless::auth`):
//! it came through a proxy.
//!
//! ```
//! use actix_web::App;
//! use switchboard::serverless::connections_api::ConnectionsApi;
//! use switchboard::Hub;
//!
//! let hub = Hub::new();
//! let api = ConnectionsApi::new()
//!     .hub(hub.clone())
//!     .credentials([("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")])
//!     .bearer_token("s3cret")
//!     .region("us-east-1");
//! let app = App::new().app_data(hub).service(api);
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix_web::dev::{AppService, HttpServiceFactory};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use bytestring::ByteString;
use percent_encoding::percent_decode_str;
use serde::Deserialize;
use serde_json::value::RawValue;

pub use super::client::{
    ConnectionDetails, ConnectionsClient, RemoteConnection, RemoteEngine, FRAME_HEADER,
};

use super::http::{self, ReadError};
use super::{auth, sigv4, time};
use crate::channel::outbound::MAX_CLOSE_REASON;
use crate::engine::Position;
use crate::error::ChannelError;
use crate::hub::Hub;
use crate::id::ConnectionId;
use crate::protocol::close_code;
use crate::topics::{SubscribeOptions, Topics};

/// The connections API, an actix-web service mounted at the app root (or under
/// [`prefix`](Self::prefix)). See the [module docs](self).
#[derive(Clone)]
pub struct ConnectionsApi {
    hub: Option<Hub>,
    credentials: HashMap<String, String>,
    bearer: Option<String>,
    region: Option<String>,
    max_payload: usize,
    max_skew: Duration,
    prefix: String,
}

impl std::fmt::Debug for ConnectionsApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionsApi")
            .field("access_keys", &self.credentials.keys().collect::<Vec<_>>())
            .field("bearer_token", &self.bearer.is_some())
            .field("region", &self.region)
            .field("max_payload", &self.max_payload)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Default for ConnectionsApi {
    fn default() -> Self {
        ConnectionsApi::new()
    }
}

impl ConnectionsApi {
    /// The API over the app's hub (the `Hub` registered as app data, else the process-wide
    /// one), with no credentials yet, a 128 KiB payload limit (AWS's) and 5 minutes of allowed
    /// clock skew.
    pub fn new() -> Self {
        ConnectionsApi {
            hub: None,
            credentials: HashMap::new(),
            bearer: None,
            region: None,
            max_payload: 128 * 1024,
            max_skew: Duration::from_secs(300),
            prefix: String::new(),
        }
    }

    /// Serves this hub's connections rather than the app's.
    pub fn hub(mut self, hub: Hub) -> Self {
        self.hub = Some(hub);
        self
    }

    /// Access keys (id, secret) whose SigV4 signatures are accepted.
    pub fn credentials<I, K, V>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.credentials
            .extend(keys.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Also accepts `Authorization: Bearer <token>` (for plain HTTP clients).
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer = Some(token.into());
        self
    }

    /// The region signatures must be scoped to (any, until set).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Largest accepted body, in bytes; larger ones get 413 `PayloadTooLargeException`.
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// How far a signature's `X-Amz-Date` may be from the server's clock (default 5 min).
    pub fn max_clock_skew(mut self, d: Duration) -> Self {
        self.max_skew = d;
        self
    }

    /// Serves under a path prefix: `prefix("/prod")` for SDKs configured with the endpoint
    /// `https://host/prod` (API Gateway's stage).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        let p = prefix.into();
        self.prefix = if p.is_empty() || p == "/" {
            String::new()
        } else {
            format!("/{}", p.trim_matches('/'))
        };
        self
    }

    fn secured(&self) -> bool {
        !self.credentials.is_empty() || self.bearer.is_some()
    }
}

impl HttpServiceFactory for ConnectionsApi {
    fn register(self, config: &mut AppService) {
        auth::refuse_unsecured(
            self.secured(),
            config.config().local_addr(),
            "the connections API",
            "credentials",
            "ConnectionsApi::credentials (AWS access keys) or ::bearer_token",
        );
        let api = Arc::new(self);
        let p = api.prefix.clone();
        let route = |op: Op| {
            let api = api.clone();
            move |req: HttpRequest, payload: web::Payload| {
                let api = api.clone();
                async move { Ok::<_, actix_web::Error>(api.handle(op, req, payload).await) }
            }
        };
        let resources = [
            web::resource(format!("{p}/@connections/{{id}}"))
                .route(web::post().to(route(Op::Post)))
                .route(web::get().to(route(Op::Get)))
                .route(web::delete().to(route(Op::Delete))),
            web::resource(format!("{p}/@connections/{{id}}/topics"))
                .route(web::get().to(route(Op::Subscriptions))),
            web::resource(format!("{p}/@connections/{{id}}/topics/{{topic}}"))
                .route(web::put().to(route(Op::Subscribe)))
                .route(web::delete().to(route(Op::Unsubscribe))),
            web::resource(format!("{p}/@topics")).route(web::get().to(route(Op::Topics))),
            web::resource(format!("{p}/@topics/{{topic}}"))
                .route(web::post().to(route(Op::Publish)))
                .route(web::get().to(route(Op::Count))),
            web::resource(format!("{p}/@topics/{{topic}}/presence"))
                .route(web::get().to(route(Op::Presence))),
            web::resource(format!("{p}/@stats")).route(web::get().to(route(Op::Stats))),
        ];
        for r in resources {
            HttpServiceFactory::register(r, config);
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Post,
    Get,
    Delete,
    Subscriptions,
    Subscribe,
    Unsubscribe,
    Topics,
    Publish,
    Count,
    Presence,
    Stats,
}

/// An error answer, shaped the way AWS sends them: the status, `x-amzn-ErrorType` (which the
/// SDKs turn into their typed exceptions) and `{"message": ...}`.
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    /// The client-facing error code of a refusal by the connection's limits (`too_many_topics`,
    /// `bad_topic`), so that the remote client reports the same error a local handle would.
    code: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            code: None,
        }
    }

    fn response(&self) -> HttpResponse {
        let body = match &self.code {
            Some(code) => serde_json::json!({ "message": self.message, "code": code }),
            None => serde_json::json!({ "message": self.message }),
        };
        HttpResponse::build(self.status)
            .insert_header(("x-amzn-ErrorType", self.kind))
            .insert_header(("x-amzn-RequestId", time::request_id()))
            .json(body)
    }
}

/// A topic operation's error: gone, refused by the connection's topic limits (400 with the
/// client-facing code), or internal.
fn topic_error(raw: &str, e: &ChannelError) -> ApiError {
    match e {
        ChannelError::Closed => gone(raw),
        ChannelError::TooManyTopics { .. }
        | ChannelError::BadTopic { .. }
        | ChannelError::PresenceTooLarge { .. } => ApiError {
            code: Some(e.code().to_owned()),
            ..bad_request(e.message())
        },
        _ => internal(e),
    }
}

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "ForbiddenException", message)
}

fn gone(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::GONE,
        "GoneException",
        format!("the connection {id} no longer exists"),
    )
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "BadRequestException", message)
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PayloadTooLargeException",
        format!("the data is larger than the maximum of {limit} bytes"),
    )
}

fn internal(e: &ChannelError) -> ApiError {
    tracing::error!("connections API: {e:?}");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalServerErrorException",
        "internal error",
    )
}

/// Authentication before the body: which check the body still needs.
enum Pending<'a> {
    Done,
    Signature {
        auth: sigv4::Authorization<'a>,
        amz_date: &'a str,
        secret: &'a str,
    },
}

/// The raw (percent-encoded) path segment after `marker` (`/@connections/`), decoded.
fn segment_after(path: &str, marker: &str, nth: usize) -> Option<String> {
    let rest = &path[path.find(marker)? + marker.len()..];
    let raw = rest.split('/').nth(nth)?;
    percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

impl ConnectionsApi {
    fn hub_for(&self, req: &HttpRequest) -> Hub {
        self.hub.clone().unwrap_or_else(|| Hub::of(req))
    }

    fn precheck<'a>(&'a self, req: &'a HttpRequest) -> Result<Pending<'a>, ApiError> {
        if !self.secured() {
            return if auth::local_and_direct(req) {
                Ok(Pending::Done)
            } else {
                Err(forbidden(
                    "this API has no credentials configured and serves only direct loopback clients",
                ))
            };
        }
        let Some(authorization) = http::header(req.headers(), header::AUTHORIZATION) else {
            return Err(forbidden("Missing Authentication Token"));
        };
        if let Some(token) = auth::bearer_token(req.headers()) {
            return match &self.bearer {
                Some(t) if auth::constant_time_eq(t.as_bytes(), token.as_bytes()) => {
                    Ok(Pending::Done)
                }
                _ => Err(forbidden("invalid bearer token")),
            };
        }
        if self.credentials.is_empty() {
            return Err(forbidden("this API accepts bearer tokens only"));
        }
        // The signature covers the query as SigV4 canonicalizes it, where `+` is a literal
        // plus; the query parser below reads `+` as a space. Signed queries must therefore
        // spell both out (`%2B`, `%20`, as the AWS SDKs do), or a replayed request could
        // change `event`, `reason` or `exclude` without breaking the signature.
        if req.query_string().contains('+') {
            return Err(bad_request(
                "signed requests must percent-encode `+` and spaces in the query (%2B, %20)",
            ));
        }
        let amz_date = http::header(req.headers(), "x-amz-date");
        let (auth, secret) = sigv4::precheck(
            authorization,
            amz_date,
            self.region.as_deref(),
            SystemTime::now(),
            self.max_skew,
            |key| self.credentials.get(key).map(String::as_str),
        )
        .map_err(|r| forbidden(r.message()))?;
        Ok(Pending::Signature {
            auth,
            amz_date: amz_date.unwrap_or_default(),
            secret,
        })
    }

    fn verify(&self, req: &HttpRequest, pending: Pending<'_>, body: &[u8]) -> Result<(), ApiError> {
        let Pending::Signature {
            auth,
            amz_date,
            secret,
        } = pending
        else {
            return Ok(());
        };
        let hash = sigv4::sha256_hex(body);
        if let Some(claimed) = http::header(req.headers(), "x-amz-content-sha256") {
            if !claimed.eq_ignore_ascii_case(&hash) {
                return Err(forbidden(
                    "x-amz-content-sha256 does not match the payload (unsigned payloads are not accepted)",
                ));
            }
        }
        let headers = req
            .headers()
            .iter()
            .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
            .collect();
        let signable = sigv4::Signable {
            method: req.method().as_str(),
            path: req.uri().path(),
            query: req.query_string(),
            headers,
            payload_hash: &hash,
        };
        sigv4::verify(&signable, &auth, amz_date, secret).map_err(|r| forbidden(r.message()))
    }

    async fn handle(&self, op: Op, req: HttpRequest, payload: web::Payload) -> HttpResponse {
        let method = match *req.method() {
            actix_web::http::Method::GET => "GET",
            actix_web::http::Method::POST => "POST",
            actix_web::http::Method::PUT => "PUT",
            actix_web::http::Method::DELETE => "DELETE",
            _ => "other",
        };
        let resp = match self.authenticated(op, &req, payload).await {
            Ok(resp) => resp,
            Err(e) => e.response(),
        };
        crate::meter::connections_api(method, resp.status().as_u16());
        resp
    }

    async fn authenticated(
        &self,
        op: Op,
        req: &HttpRequest,
        payload: web::Payload,
    ) -> Result<HttpResponse, ApiError> {
        let pending = self.precheck(req)?;
        let declared = http::header(req.headers(), header::CONTENT_LENGTH)
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > self.max_payload) {
            return Err(too_large(self.max_payload));
        }
        let body = http::read_body(payload, self.max_payload)
            .await
            .map_err(|e| match e {
                ReadError::TooLarge => too_large(self.max_payload),
                ReadError::Broken(_) => bad_request("could not read the request body"),
            })?;
        self.verify(req, pending, &body)?;
        self.run(op, req, body).await
    }

    async fn run(&self, op: Op, req: &HttpRequest, body: Bytes) -> Result<HttpResponse, ApiError> {
        let hub = self.hub_for(req);
        let path = req.uri().path();
        let conn = || -> Result<(String, ConnectionId), ApiError> {
            let raw = segment_after(path, "/@connections/", 0)
                .ok_or_else(|| bad_request("bad connection id"))?;
            let id = raw
                .parse()
                .map_err(|_| bad_request(format!("Invalid connectionId: {raw}")))?;
            Ok((raw, id))
        };
        let topic = |marker: &str, nth: usize| -> Result<String, ApiError> {
            segment_after(path, marker, nth)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| bad_request("bad topic"))
        };
        Ok(match op {
            Op::Post => {
                let (raw, id) = conn()?;
                let binary =
                    http::header(req.headers(), FRAME_HEADER).is_some_and(|v| v == "binary");
                let sent = match (binary, ByteString::try_from(body.clone())) {
                    (false, Ok(text)) => hub.send_text(id, text),
                    _ => hub.send_binary(id, body),
                };
                match sent {
                    Ok(()) => HttpResponse::Ok().finish(),
                    Err(ChannelError::Closed) => return Err(gone(&raw)),
                    Err(e) => return Err(internal(&e)),
                }
            }
            Op::Get => {
                let (raw, id) = conn()?;
                let info = hub.connection(id).ok_or_else(|| gone(&raw))?;
                HttpResponse::Ok().json(serde_json::json!({
                    "connectedAt": time::iso8601(info.connected_at),
                    "lastActiveAt": time::iso8601(info.last_active_at),
                    "identity": {
                        "sourceIp": info.source_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                        "userAgent": info.user_agent.unwrap_or_default(),
                    },
                    "channel": info.channel,
                }))
            }
            Op::Delete => {
                let (raw, id) = conn()?;
                let q = web::Query::<CloseQuery>::from_query(req.query_string())
                    .map_err(|e| bad_request(e.to_string()))?;
                if let Some(code) = q.code {
                    if !(code == close_code::NORMAL || (3000..5000).contains(&code)) {
                        return Err(bad_request("code must be 1000 or 3000-4999"));
                    }
                }
                if q.reason
                    .as_ref()
                    .is_some_and(|r| r.len() > MAX_CLOSE_REASON)
                {
                    return Err(bad_request(format!(
                        "reason must be at most {MAX_CLOSE_REASON} bytes (it goes in the close frame)"
                    )));
                }
                hub.disconnect(id, q.code, q.reason.as_deref().unwrap_or(""))
                    .map_err(|_| gone(&raw))?;
                HttpResponse::NoContent().finish()
            }
            Op::Subscriptions => {
                let (raw, id) = conn()?;
                hub.connection(id).ok_or_else(|| gone(&raw))?;
                let topics = hub.to(id).subscriptions().await.map_err(|_| gone(&raw))?;
                HttpResponse::Ok().json(serde_json::json!({ "topics": topics }))
            }
            Op::Subscribe => {
                let (raw, id) = conn()?;
                let topic = topic("/@connections/", 2)?;
                let recover = if body.is_empty() {
                    None
                } else {
                    serde_json::from_slice::<SubscribeBody>(&body)
                        .map_err(|e| bad_request(format!("bad subscribe body: {e}")))?
                        .recover
                };
                let options = SubscribeOptions::new().recover(recover);
                match hub.to(id).subscribe_with(&topic, options).await {
                    Ok(s) => HttpResponse::Ok().json(s),
                    Err(e) => return Err(topic_error(&raw, &e)),
                }
            }
            Op::Unsubscribe => {
                let (raw, id) = conn()?;
                let topic = topic("/@connections/", 2)?;
                hub.to(id)
                    .unsubscribe(&topic)
                    .await
                    .map_err(|e| topic_error(&raw, &e))?;
                HttpResponse::NoContent().finish()
            }
            Op::Publish => {
                let topic = topic("/@topics/", 0)?;
                let q = web::Query::<PublishQuery>::from_query(req.query_string())
                    .map_err(|e| bad_request(e.to_string()))?;
                let text = if body.is_empty() {
                    "null"
                } else {
                    std::str::from_utf8(&body).map_err(|_| bad_request("the body must be JSON"))?
                };
                let data: Box<RawValue> = serde_json::from_str(text)
                    .map_err(|e| bad_request(format!("the body must be JSON: {e}")))?;
                let exclude = match q.exclude.as_deref() {
                    Some(id) => Some(
                        id.parse::<ConnectionId>()
                            .map_err(|_| bad_request("bad exclude id"))?,
                    ),
                    None => None,
                };
                let event = q.event.as_deref().unwrap_or("message");
                hub.publish_raw(&topic, event, Arc::from(data), exclude)
                    .await
                    .map_err(|e| internal(&e))?;
                HttpResponse::NoContent().finish()
            }
            Op::Topics => {
                let topics = hub.topics().await.map_err(|e| internal(&e))?;
                HttpResponse::Ok().json(serde_json::json!({ "topics": topics }))
            }
            Op::Count => {
                let topic = topic("/@topics/", 0)?;
                let n = hub
                    .subscriber_count(&topic)
                    .await
                    .map_err(|e| internal(&e))?;
                HttpResponse::Ok().json(serde_json::json!({ "topic": topic, "subscribers": n }))
            }
            Op::Presence => {
                let topic = topic("/@topics/", 0)?;
                HttpResponse::Ok().json(hub.presence(&topic).await.map_err(|e| internal(&e))?)
            }
            Op::Stats => HttpResponse::Ok().json(hub.stats().await.map_err(|e| internal(&e))?),
        })
    }
}

#[derive(Deserialize)]
struct CloseQuery {
    code: Option<u16>,
    reason: Option<String>,
}

#[derive(Deserialize)]
struct PublishQuery {
    event: Option<String>,
    exclude: Option<String>,
}

#[derive(Deserialize)]
struct SubscribeBody {
    recover: Option<Position>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_decoded() {
        assert_eq!(
            segment_after("/@connections/L0SM9cOFvHcCIhw%3D", "/@connections/", 0).as_deref(),
            Some("L0SM9cOFvHcCIhw=")
        );
        assert_eq!(
            segment_after(
                "/prod/@connections/a%2Bb%2Fc/topics/room%3Alobby",
                "/@connections/",
                2
            )
            .as_deref(),
            Some("room:lobby")
        );
        assert_eq!(
            segment_after("/@connections/a%2Bb%2Fc/topics/x", "/@connections/", 0).as_deref(),
            Some("a+b/c")
        );
    }
}
