//! The HTTP transport's endpoints besides the stream (which `upgrade` opens): upstream
//! `POST`s, `DELETE`, CORS preflights, and the hand-over of upstream batches between nodes
//! through the engine (`$sb:conn:{id}`).
//!
//! The wire contract is `docs/http-transport.md`.

use std::rc::Rc;
use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::StreamExt;
use serde::de::{SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::Digest;

use super::config::Origins;
use super::def::ChannelDef;
use super::http_link::{self, constant_time_eq, Batch, HttpLink, Refused, SseBody};
use super::outbound::Outbound;
use super::transport::Incoming;
use crate::engine::{Delivered, DeliverySink, Publication, Publish, SubscribeRequest, Subscriber};
use crate::error::ChannelError;
use crate::hub::{conn_topic, Hub};
use crate::id::ConnectionId;
use crate::protocol::close_code;

/// The connection an upstream request is for.
pub(crate) const CONNECTION_HEADER: &str = "switchboard-connection";
/// Its secret, from the `open` event.
pub(crate) const SECRET_HEADER: &str = "switchboard-secret";
/// The batch's number.
pub(crate) const SEQ_HEADER: &str = "switchboard-seq";

/// The event of a batch handed over through the engine, and of a close.
const FORWARD_BATCH: &str = "b";
const FORWARD_CLOSE: &str = "c";

fn bad_body(message: impl Into<String>) -> ChannelError {
    ChannelError::new("bad_body", message)
}

fn unknown_connection() -> ChannelError {
    ChannelError::new("unknown_connection", "no such connection").with_status(StatusCode::NOT_FOUND)
}

fn too_large(message: impl Into<String>) -> ChannelError {
    ChannelError::new("payload_too_large", message).with_status(StatusCode::PAYLOAD_TOO_LARGE)
}

fn too_many_pending() -> ChannelError {
    ChannelError::new(
        "too_many_pending",
        "too many batches waiting for this connection",
    )
    .with_status(StatusCode::TOO_MANY_REQUESTS)
}

/// The stream's response around its body.
pub(crate) fn stream_response(body: SseBody) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache, no-transform"))
        .insert_header(("x-accel-buffering", "no"))
        // Keeps actix-web's `Compress` middleware (which would buffer) off the stream.
        .insert_header((header::CONTENT_ENCODING, "identity"))
        .body(body)
}

/// Whether a `GET` asks for the HTTP transport's stream rather than a WebSocket.
pub(crate) fn wants_stream(req: &HttpRequest) -> bool {
    !req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::ACCEPT)
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("text/event-stream"))
}

/// Lets a page of another allowed origin read the response (CORS); same-origin pages and
/// native clients need nothing.
pub(crate) fn with_cors(
    req: &HttpRequest,
    origins: &Origins,
    mut res: HttpResponse,
) -> HttpResponse {
    let Some(origin) = req.headers().get(header::ORIGIN).cloned() else {
        return res;
    };
    if !origins.allows(req) {
        return res;
    }
    let h = res.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    res
}

/// `OPTIONS`: the CORS preflight of the upstream requests (custom headers) and of a stream
/// opened with an `Authorization` header.
pub(crate) fn preflight<S>(def: &ChannelDef<S>, req: &HttpRequest) -> HttpResponse {
    if !def.config.origins.allows(req) {
        return ChannelError::forbidden("origin not allowed").error_response();
    }
    let res = HttpResponse::NoContent()
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, DELETE"))
        .insert_header((
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            "switchboard-connection, switchboard-secret, switchboard-seq, content-type, \
             authorization, last-event-id",
        ))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"))
        .finish();
    with_cors(req, &def.config.origins, res)
}

/// Who an upstream request says it is.
struct Identity {
    id: ConnectionId,
    secret: Vec<u8>,
}

fn header_str<'r>(req: &'r HttpRequest, name: &str) -> Option<&'r str> {
    req.headers().get(name)?.to_str().ok()
}

impl Identity {
    fn of(req: &HttpRequest) -> Result<Identity, ChannelError> {
        let id = header_str(req, CONNECTION_HEADER)
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| bad_body("missing or bad Switchboard-Connection header"))?;
        let secret = header_str(req, SECRET_HEADER)
            .and_then(http_link::parse_secret)
            .ok_or_else(|| bad_body("missing or bad Switchboard-Secret header"))?;
        Ok(Identity { id, secret })
    }
}

/// The link of connection `id` of this channel, if it is open on this node over HTTP.
fn local_link<S>(
    hub: &Hub,
    def: &ChannelDef<S>,
    id: ConnectionId,
) -> Option<Option<Arc<HttpLink>>> {
    let entry = hub.entry(id)?;
    // Open here: over HTTP on this channel and not closing, or nothing a request may reach.
    Some(
        (entry.channel() == &def.path && !entry.out.is_closing())
            .then(|| entry.link.get().cloned())
            .flatten(),
    )
}

/// `POST {channel path}`: one batch of upstream frames.
pub(crate) async fn post<S>(
    def: Rc<ChannelDef<S>>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let res = match post_batch(&def, &req, payload).await {
        Ok(()) => HttpResponse::NoContent().finish(),
        Err(e) => e.error_response(),
    };
    with_cors(&req, &def.config.origins, res)
}

async fn post_batch<S>(
    def: &ChannelDef<S>,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<(), ChannelError> {
    let cfg = &def.config;
    if !cfg.origins.allows(req) {
        return Err(ChannelError::forbidden("origin not allowed"));
    }
    let who = Identity::of(req)?;
    let seq: u64 = header_str(req, SEQ_HEADER)
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| bad_body("missing or bad Switchboard-Seq header"))?;
    let binary = header_str(req, header::CONTENT_TYPE.as_str())
        .is_some_and(|t| t.trim_start().starts_with("application/octet-stream"));
    let body = read_body(req, payload, cfg.http_max_body).await?;
    let (batch, is_array) = if binary {
        if body.len() > cfg.max_frame_size {
            return Err(too_large(format!(
                "a frame may have {} bytes at most",
                cfg.max_frame_size
            )));
        }
        (vec![Incoming::Binary(body.clone())], false)
    } else {
        parse_batch(&body, cfg.http_max_frames, cfg.max_frame_size)?
    };
    let hub = Hub::of(req);
    match local_link(&hub, def, who.id) {
        Some(Some(link)) => {
            if !link.secret_matches(&who.secret) {
                return Err(ChannelError::forbidden("wrong secret"));
            }
            match link.offer(seq, batch) {
                Ok(_) => Ok(()),
                Err(Refused::Full) => Err(too_many_pending()),
                Err(Refused::Closed) => Err(unknown_connection()),
            }
        }
        Some(None) => Err(unknown_connection()),
        None if hub.engine().is_distributed() => {
            // Built only here: a batch handled on this node is never copied.
            let data = if binary {
                format!(
                    "{{\"s\":{seq},\"b\":\"{}\"}}",
                    base64::engine::general_purpose::STANDARD.encode(&body)
                )
            } else {
                format!("{{\"s\":{seq},\"f\":{}}}", frames_array(&body, is_array))
            };
            forward(&hub, def, &who, FORWARD_BATCH, data).await
        }
        None => Err(unknown_connection()),
    }
}

/// `DELETE {channel path}`: the client closes its connection (1000).
pub(crate) async fn delete<S>(def: Rc<ChannelDef<S>>, req: HttpRequest) -> HttpResponse {
    let res = match close(&def, &req).await {
        Ok(()) => HttpResponse::NoContent().finish(),
        Err(e) => e.error_response(),
    };
    with_cors(&req, &def.config.origins, res)
}

async fn close<S>(def: &ChannelDef<S>, req: &HttpRequest) -> Result<(), ChannelError> {
    if !def.config.origins.allows(req) {
        return Err(ChannelError::forbidden("origin not allowed"));
    }
    let who = Identity::of(req)?;
    let hub = Hub::of(req);
    match local_link(&hub, def, who.id) {
        Some(Some(link)) => {
            if !link.secret_matches(&who.secret) {
                return Err(ChannelError::forbidden("wrong secret"));
            }
            link.request_close().map_err(|_| unknown_connection())
        }
        Some(None) => Err(unknown_connection()),
        None if hub.engine().is_distributed() => {
            forward(&hub, def, &who, FORWARD_CLOSE, "{}".to_owned()).await
        }
        None => Err(unknown_connection()),
    }
}

/// Reads a body of at most `max` bytes (413 beyond, before reading it when its length is
/// announced).
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    max: usize,
) -> Result<Bytes, ChannelError> {
    let announced =
        header_str(req, header::CONTENT_LENGTH.as_str()).and_then(|v| v.trim().parse::<u64>().ok());
    let too_big = || too_large(format!("a body may have {max} bytes at most"));
    if announced.is_some_and(|n| n > max as u64) {
        return Err(too_big());
    }
    let mut body = BytesMut::with_capacity(announced.map_or(0, |n| n as usize));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| bad_body(format!("reading the body: {e}")))?;
        if body.len() + chunk.len() > max {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// A text body `parse_batch` accepted, as the JSON array of its frames (one frame becomes an
/// array of one): what a forwarded batch carries.
fn frames_array(body: &[u8], is_array: bool) -> String {
    let text = String::from_utf8_lossy(body);
    if is_array {
        text.into_owned()
    } else {
        format!("[{text}]")
    }
}

/// A JSON body's frames: one object, or an array of objects. Each frame is a slice of the
/// body (nothing re-encoded). Also says whether it was an array (see `frames_array`).
fn parse_batch(
    body: &Bytes,
    max_frames: usize,
    max_frame: usize,
) -> Result<(Batch, bool), ChannelError> {
    let text = std::str::from_utf8(body).map_err(|_| bad_body("the body is not UTF-8"))?;
    let is_array = text.trim_start().starts_with('[');
    let raws: Vec<&RawValue> = if is_array {
        let mut de = serde_json::Deserializer::from_str(text);
        let raws = de
            .deserialize_seq_limited(max_frames)
            .map_err(|e| match e {
                Limited::TooMany => ChannelError::new(
                    "too_many_frames",
                    format!("a batch may have {max_frames} frames at most"),
                )
                .with_status(StatusCode::PAYLOAD_TOO_LARGE),
                Limited::Json(e) => bad_body(format!("not a JSON array of objects: {e}")),
            })?;
        de.end()
            .map_err(|e| bad_body(format!("not a JSON array of objects: {e}")))?;
        raws
    } else {
        let raw: &RawValue =
            serde_json::from_str(text).map_err(|e| bad_body(format!("not a JSON object: {e}")))?;
        vec![raw]
    };
    let mut batch = Vec::with_capacity(raws.len());
    for raw in &raws {
        let frame = raw.get();
        if !frame.starts_with('{') {
            return Err(bad_body("each frame must be a JSON object"));
        }
        if frame.len() > max_frame {
            return Err(too_large(format!(
                "a frame may have {max_frame} bytes at most"
            )));
        }
        let bytes = body.slice_ref(frame.as_bytes());
        let frame = ByteString::try_from(bytes).map_err(|_| bad_body("not UTF-8"))?;
        batch.push(Incoming::Text(frame));
    }
    Ok((batch, is_array))
}

enum Limited {
    TooMany,
    Json(serde_json::Error),
}

trait SeqLimited<'de> {
    fn deserialize_seq_limited(&mut self, max: usize) -> Result<Vec<&'de RawValue>, Limited>;
}

impl<'de> SeqLimited<'de> for serde_json::Deserializer<serde_json::de::StrRead<'de>> {
    /// The array's elements as raw JSON, stopping at `max + 1` (a huge batch is refused
    /// without collecting it).
    fn deserialize_seq_limited(&mut self, max: usize) -> Result<Vec<&'de RawValue>, Limited> {
        struct Elements {
            max: usize,
            too_many: std::rc::Rc<std::cell::Cell<bool>>,
        }
        impl<'de> Visitor<'de> for Elements {
            type Value = Vec<&'de RawValue>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of frames")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(raw) = seq.next_element::<&'de RawValue>()? {
                    if out.len() == self.max {
                        self.too_many.set(true);
                        return Err(serde::de::Error::custom("too many frames"));
                    }
                    out.push(raw);
                }
                Ok(out)
            }
        }
        let too_many = std::rc::Rc::new(std::cell::Cell::new(false));
        let visitor = Elements {
            max,
            too_many: too_many.clone(),
        };
        serde::Deserializer::deserialize_seq(&mut *self, visitor).map_err(|e| {
            if too_many.get() {
                Limited::TooMany
            } else {
                Limited::Json(e)
            }
        })
    }
}

// ---- between nodes ------------------------------------------------------------------------

/// The hash of a secret that presence carries (the secret itself never leaves the node).
fn secret_hash(secret: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(secret))
}

/// Listens for connection `id`'s upstream batches that reach other nodes: subscribes to its
/// internal topic with a presence entry carrying the secret's hash.
pub(crate) async fn listen(
    hub: &Hub,
    id: ConnectionId,
    channel: &Arc<str>,
    link: &Arc<HttpLink>,
    out: &Arc<Outbound>,
    secret: &[u8],
) -> Result<(), ChannelError> {
    let topic = conn_topic(id);
    let sink = Arc::new(ForwardedSink {
        link: link.clone(),
        out: out.clone(),
    });
    let mut request = SubscribeRequest::new(topic.clone(), Subscriber { id, sink });
    request.presence = Some((
        id.to_string(),
        serde_json::json!({ "h": secret_hash(secret), "channel": &**channel }),
    ));
    if let Err(e) = hub.engine().subscribe(request).await {
        hub.engine().unsubscribe(topic, id);
        return Err(e.into());
    }
    Ok(())
}

/// Hands a batch (or a close) that reached this node to the node holding the connection's
/// stream, once presence confirms the connection exists (404) and the secret (403).
async fn forward<S>(
    hub: &Hub,
    def: &ChannelDef<S>,
    who: &Identity,
    event: &str,
    data: String,
) -> Result<(), ChannelError> {
    let topic = conn_topic(who.id);
    let presence = hub.engine().presence(topic.clone()).await?;
    let key = who.id.to_string();
    let Some(entry) = presence.get(&key) else {
        return Err(unknown_connection());
    };
    let meta = entry.metas.first().ok_or_else(unknown_connection)?;
    if meta.get("channel").and_then(|c| c.as_str()) != Some(&*def.path) {
        return Err(unknown_connection());
    }
    let expected = meta.get("h").and_then(|h| h.as_str()).unwrap_or_default();
    if !constant_time_eq(expected.as_bytes(), secret_hash(&who.secret).as_bytes()) {
        return Err(ChannelError::forbidden("wrong secret"));
    }
    let data = RawValue::from_string(data).map_err(|e| bad_body(e.to_string()))?;
    hub.engine()
        .publish(Publish {
            topic,
            event: Arc::from(event),
            data: Arc::from(data),
            exclude: None,
        })
        .await?;
    Ok(())
}

/// A batch as another node hands it over.
#[derive(Deserialize)]
struct Forwarded<'a> {
    s: u64,
    #[serde(borrow, default)]
    f: Option<Vec<&'a RawValue>>,
    #[serde(default)]
    b: Option<String>,
}

/// Where the holding node receives batches and closes handed over by other nodes: into the
/// link, in `Switchboard-Seq` order like local ones.
struct ForwardedSink {
    link: Arc<HttpLink>,
    out: Arc<Outbound>,
}

impl DeliverySink for ForwardedSink {
    fn deliver(&self, p: &Publication) -> Delivered {
        if self.out.is_closing() {
            return Delivered::Gone;
        }
        let refused = match &*p.event {
            FORWARD_BATCH => {
                let Ok(fwd) = serde_json::from_str::<Forwarded<'_>>(p.data.get()) else {
                    return Delivered::Dropped;
                };
                let batch: Batch = match (fwd.f, fwd.b) {
                    (Some(frames), _) => frames
                        .iter()
                        .map(|raw| Incoming::Text(ByteString::from(raw.get())))
                        .collect(),
                    (None, Some(b64)) => {
                        match base64::engine::general_purpose::STANDARD.decode(b64) {
                            Ok(bytes) => vec![Incoming::Binary(Bytes::from(bytes))],
                            Err(_) => return Delivered::Dropped,
                        }
                    }
                    (None, None) => Vec::new(),
                };
                self.link.offer(fwd.s, batch).err()
            }
            FORWARD_CLOSE => self.link.request_close().err(),
            // The topic's own presence frames.
            _ => None,
        };
        match refused {
            None => Delivered::Queued,
            Some(Refused::Closed) => Delivered::Gone,
            Some(Refused::Full) => {
                // Nobody is left to answer 429 to: a client that does not wait for its
                // `POST`s (or a batch lost between nodes) ends the connection, and the client
                // reconnects with recovery.
                self.out
                    .close(close_code::POLICY, "too many pending batches");
                Delivered::Queued
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(batch: &Batch) -> Vec<&str> {
        batch
            .iter()
            .map(|i| match i {
                Incoming::Text(t) => &**t,
                _ => "?",
            })
            .collect()
    }

    #[test]
    fn batches_parse_into_frames_without_reencoding() {
        let body = Bytes::from_static(br#" [ {"type":"a", "ref":1} , {"type" : "b"} ] "#);
        let (batch, array) = parse_batch(&body, 10, 100).unwrap();
        assert_eq!(
            texts(&batch),
            [r#"{"type":"a", "ref":1}"#, r#"{"type" : "b"}"#]
        );
        assert_eq!(
            frames_array(&body, array),
            std::str::from_utf8(&body).unwrap()
        );
        let one = Bytes::from_static(br#"{"type":"a"}"#);
        let (batch, array) = parse_batch(&one, 10, 100).unwrap();
        assert_eq!(texts(&batch), [r#"{"type":"a"}"#]);
        assert_eq!(frames_array(&one, array), r#"[{"type":"a"}]"#);
        let (batch, _) = parse_batch(&Bytes::from_static(b"[]"), 10, 100).unwrap();
        assert!(batch.is_empty());
    }

    #[test]
    fn bad_batches_are_refused_with_their_code() {
        let code = |body: &'static [u8], max_frames, max_frame| {
            let e = parse_batch(&Bytes::from_static(body), max_frames, max_frame).unwrap_err();
            (e.code().to_owned(), e.status().as_u16())
        };
        assert_eq!(code(b"[1,2]", 10, 100), ("bad_body".into(), 400));
        assert_eq!(code(b"nope", 10, 100), ("bad_body".into(), 400));
        assert_eq!(code(b"[{}] x", 10, 100), ("bad_body".into(), 400));
        assert_eq!(code(b"[{},{},{}]", 2, 100), ("too_many_frames".into(), 413));
        assert_eq!(
            code(br#"[{"a":"0123456789"}]"#, 2, 10),
            ("payload_too_large".into(), 413)
        );
        assert_eq!(code(b"\xff", 2, 10), ("bad_body".into(), 400));
    }
}
