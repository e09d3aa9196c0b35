//! The client side of the connections API: [`ConnectionsClient`] (what a function uses to reach
//! the gateway's connections) and [`RemoteEngine`] (an [`Engine`] whose topics live in the
//! gateway, so that `ch.subscribe` / `ch.publish` work unchanged inside a function).
//!
//! HTTP goes through one background thread running an actix system with an `awc` client
//! (`awc` is not `Send`; engines and clients are used from any thread): callers hand it a
//! request and await the answer.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use actix_web::http::{Method, StatusCode};
use bytes::Bytes;
use bytestring::ByteString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot, watch};

use super::http::{self, Failure, Pool};
use super::{auth, sigv4, time, StartError};
use crate::engine::{
    Engine, EngineError, EngineStats, Position, Presence, Publish, SendFuture, SubscribeRequest,
    Subscribed, TopicInfo,
};
use crate::error::ChannelError;
use crate::hub::Hub;
use crate::id::ConnectionId;
use crate::protocol;
use crate::topics::{SubscribeOptions, Topics};

/// Request header that forces a binary frame on `POST /@connections/{id}` (a Switchboard
/// extension; without it, a UTF-8 body is sent as a text frame, anything else as binary).
pub const FRAME_HEADER: &str = "x-switchboard-frame";

#[derive(Clone)]
enum Auth {
    None,
    Bearer(String),
    SigV4 {
        access_key: String,
        secret: String,
        region: String,
        /// Temporary credentials' token (`x-amz-security-token`), as Lambda's role gives them.
        session_token: Option<String>,
    },
}

#[derive(Clone)]
enum Backend {
    /// No connections API configured: every call fails with a clear error.
    Unconfigured,
    Remote {
        /// `http://host:port[/stage]`, without a trailing slash.
        endpoint: String,
        auth: Auth,
        timeout: Duration,
    },
    Local(Hub),
}

/// A client of the connections API: sends to, inspects and disconnects gateway connections, and
/// publishes and subscribes them to topics. Cheap to clone.
///
/// Inside a function ([`FunctionService`](crate::serverless::function::FunctionService)) handlers get the
/// function's as `web::Data<ConnectionsClient>`. [`ConnectionsClient::local`] answers the same
/// calls from a hub in this process, so that a handler written against it also runs in-process
/// (`App::app_data(web::Data::new(ConnectionsClient::local(hub)))`).
///
/// ```
/// use std::time::Duration;
/// use switchboard::serverless::connections_api::ConnectionsClient;
///
/// let api = ConnectionsClient::new("http://127.0.0.1:8080")
///     .bearer_token("s3cret")
///     .timeout(Duration::from_secs(5));
/// // Or signed like the AWS SDKs do it:
/// let signed = ConnectionsClient::new("http://127.0.0.1:8080")
///     .sigv4("AKIDEXAMPLE", "secret-key", "us-east-1");
/// ```
#[derive(Clone)]
pub struct ConnectionsClient {
    backend: Backend,
}

impl std::fmt::Debug for ConnectionsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match &self.backend {
            Backend::Unconfigured => "unconfigured".to_owned(),
            Backend::Remote { endpoint, .. } => endpoint.clone(),
            Backend::Local(_) => "local".to_owned(),
        };
        f.debug_struct("ConnectionsClient")
            .field("backend", &backend)
            .finish()
    }
}

/// What the connections API knows of a connection (`GET /@connections/{id}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionDetails {
    /// When it opened.
    pub connected_at: SystemTime,
    /// When the client last sent something.
    pub last_active_at: SystemTime,
    /// The client's address.
    pub source_ip: Option<String>,
    /// The client's `User-Agent`.
    pub user_agent: Option<String>,
}

impl ConnectionsClient {
    /// A client of the connections API at `endpoint` (`http://gateway:8080`, or with the stage
    /// prefix the API is mounted under: `http://gateway:8080/prod`). Unauthenticated until
    /// [`bearer_token`](Self::bearer_token) or [`sigv4`](Self::sigv4).
    ///
    /// `https://` needs the cargo feature `tls` (roots: webpki's, plus `SSL_CERT_FILE`);
    /// without it, plain HTTP only: reach the gateway over a private network or a local
    /// TLS-terminating proxy.
    pub fn new(endpoint: impl Into<String>) -> Self {
        let endpoint = endpoint.into().trim_end_matches('/').to_owned();
        ConnectionsClient {
            backend: Backend::Remote {
                endpoint,
                auth: Auth::None,
                timeout: Duration::from_secs(10),
            },
        }
    }

    /// A client answered by `hub` in this process: the same calls, no HTTP. Lets a handler that
    /// takes a `web::Data<ConnectionsClient>` run in-process (register it as app data).
    pub fn local(hub: Hub) -> Self {
        ConnectionsClient {
            backend: Backend::Local(hub),
        }
    }

    /// A client that refuses every call ("no connections API configured").
    pub fn unconfigured() -> Self {
        ConnectionsClient {
            backend: Backend::Unconfigured,
        }
    }

    /// Sends `Authorization: Bearer <token>`.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        if let Backend::Remote { auth, .. } = &mut self.backend {
            *auth = Auth::Bearer(token.into());
        }
        self
    }

    /// Signs every request with AWS Signature Version 4 (service `execute-api`), as the AWS
    /// SDKs do.
    pub fn sigv4(
        mut self,
        access_key: impl Into<String>,
        secret: impl Into<String>,
        region: impl Into<String>,
    ) -> Self {
        if let Backend::Remote { auth, .. } = &mut self.backend {
            *auth = Auth::SigV4 {
                access_key: access_key.into(),
                secret: secret.into(),
                region: region.into(),
                session_token: None,
            };
        }
        self
    }

    /// With [`sigv4`](Self::sigv4): temporary credentials' session token, sent (and signed) as
    /// `x-amz-security-token`.
    pub fn session_token(mut self, token: impl Into<String>) -> Self {
        if let Backend::Remote {
            auth: Auth::SigV4 { session_token, .. },
            ..
        } = &mut self.backend
        {
            *session_token = Some(token.into());
        }
        self
    }

    /// A client signing with the credentials the AWS environment variables hold
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` if set, and
    /// `AWS_REGION` or `AWS_DEFAULT_REGION`): what a Lambda function's role gives it, to call
    /// an API Gateway Management API endpoint (`https://{api-id}.execute-api.{region}.amazonaws.com/{stage}`;
    /// HTTPS needs the `tls` feature).
    ///
    /// ```
    /// use switchboard::serverless::connections_api::ConnectionsClient;
    ///
    /// // Outside AWS, without credentials in the environment, this says what is missing.
    /// if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
    ///     let err = ConnectionsClient::from_aws_env("https://example.invalid/prod").unwrap_err();
    ///     assert!(err.to_string().contains("AWS_ACCESS_KEY_ID"));
    /// }
    /// ```
    pub fn from_aws_env(endpoint: impl Into<String>) -> Result<Self, StartError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let missing = |name: &str| {
            StartError::Environment(format!(
                "{name} is not set: no AWS credentials in the environment"
            ))
        };
        let key = var("AWS_ACCESS_KEY_ID").ok_or_else(|| missing("AWS_ACCESS_KEY_ID"))?;
        let secret =
            var("AWS_SECRET_ACCESS_KEY").ok_or_else(|| missing("AWS_SECRET_ACCESS_KEY"))?;
        let region = var("AWS_REGION")
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .ok_or_else(|| missing("AWS_REGION"))?;
        let client = ConnectionsClient::new(endpoint).sigv4(key, secret, region);
        Ok(match var("AWS_SESSION_TOKEN") {
            Some(token) => client.session_token(token),
            None => client,
        })
    }

    /// How long one call may take (default 10 s).
    pub fn timeout(mut self, d: Duration) -> Self {
        if let Backend::Remote { timeout, .. } = &mut self.backend {
            *timeout = d;
        }
        self
    }

    /// Sends `data` to a connection as one frame: text when it is UTF-8, else binary
    /// (`PostToConnection`). `Err(Closed)` when the connection is gone.
    pub async fn post_to_connection(
        &self,
        id: ConnectionId,
        data: impl Into<Bytes>,
    ) -> Result<(), ChannelError> {
        self.post_frame(id, data.into(), false).await
    }

    /// Sends a binary frame to a connection, even if the bytes happen to be UTF-8.
    pub async fn post_binary(
        &self,
        id: ConnectionId,
        data: impl Into<Bytes>,
    ) -> Result<(), ChannelError> {
        self.post_frame(id, data.into(), true).await
    }

    /// Pushes `{"event": event, "data": data}` to a connection, like [`Hub::send_to`].
    pub async fn send_to<T: Serialize + ?Sized>(
        &self,
        id: ConnectionId,
        event: &str,
        data: &T,
    ) -> Result<(), ChannelError> {
        let frame = protocol::encode_event(event, data)?;
        self.post_frame(id, frame.into_bytes(), false).await
    }

    pub(crate) async fn post_frame(
        &self,
        id: ConnectionId,
        data: Bytes,
        binary: bool,
    ) -> Result<(), ChannelError> {
        match &self.backend {
            Backend::Local(hub) => match (binary, ByteString::try_from(data.clone())) {
                (false, Ok(text)) => hub.send_text(id, text),
                _ => hub.send_binary(id, data),
            },
            _ => {
                let mut call = Call::new(Method::POST, connection_path(id), data);
                if binary {
                    call.headers.push((FRAME_HEADER, "binary".into()));
                }
                self.call(call).await.and_then(Answer::empty)
            }
        }
    }

    /// What the gateway knows of a connection (`GetConnection`).
    pub async fn get_connection(
        &self,
        id: ConnectionId,
    ) -> Result<ConnectionDetails, ChannelError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire {
            connected_at: String,
            last_active_at: String,
            #[serde(default)]
            identity: WireIdentity,
        }
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "camelCase")]
        struct WireIdentity {
            source_ip: Option<String>,
            user_agent: Option<String>,
        }
        match &self.backend {
            Backend::Local(hub) => {
                let c = hub.connection(id).ok_or(ChannelError::Closed)?;
                Ok(ConnectionDetails {
                    connected_at: c.connected_at,
                    last_active_at: c.last_active_at,
                    source_ip: c.source_ip.map(|ip| ip.to_string()),
                    user_agent: c.user_agent,
                })
            }
            _ => {
                let wire: Wire = self
                    .call(Call::new(Method::GET, connection_path(id), Bytes::new()))
                    .await?
                    .json()?;
                let time = |s: &str| {
                    time::parse_iso8601(s)
                        .ok_or_else(|| ChannelError::internal(format_args!("bad timestamp {s:?}")))
                };
                Ok(ConnectionDetails {
                    connected_at: time(&wire.connected_at)?,
                    last_active_at: time(&wire.last_active_at)?,
                    source_ip: wire.identity.source_ip,
                    user_agent: wire.identity.user_agent,
                })
            }
        }
    }

    /// Closes a connection (`DeleteConnection`): 1000, or `code` and `reason`.
    pub async fn delete_connection(&self, id: ConnectionId) -> Result<(), ChannelError> {
        self.close_connection(id, None, "").await
    }

    /// Closes a connection with a close code (1000, or 3000–4999) and reason. A reason longer
    /// than a close frame holds (123 bytes) is cut, as by [`Channel::close_with`].
    ///
    /// [`Channel::close_with`]: crate::Channel::close_with
    pub async fn close_connection(
        &self,
        id: ConnectionId,
        code: Option<u16>,
        reason: &str,
    ) -> Result<(), ChannelError> {
        match &self.backend {
            Backend::Local(hub) => hub.disconnect(id, code, reason),
            _ => {
                let mut path = connection_path(id);
                let mut sep = '?';
                if let Some(code) = code {
                    path.push_str(&format!("{sep}code={code}"));
                    sep = '&';
                }
                if !reason.is_empty() {
                    let reason = crate::channel::outbound::close_reason(reason);
                    path.push_str(&format!("{sep}reason={}", http::encode(reason)));
                }
                self.call(Call::new(Method::DELETE, path, Bytes::new()))
                    .await
                    .and_then(Answer::empty)
            }
        }
    }

    /// Publishes `{"topic","event","data"}` to every subscriber of `topic` in the gateway.
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        event: &str,
        data: &T,
    ) -> Result<(), ChannelError> {
        let data = crate::hub::to_raw(data)?;
        self.publish_raw(topic, event, data, None).await
    }

    /// Publishes a payload that is already JSON, optionally skipping one connection.
    pub async fn publish_raw(
        &self,
        topic: &str,
        event: &str,
        data: Arc<RawValue>,
        exclude: Option<ConnectionId>,
    ) -> Result<(), ChannelError> {
        match &self.backend {
            Backend::Local(hub) => hub.publish_raw(topic, event, data, exclude).await,
            _ => {
                let mut path = format!("{}?event={}", topic_path(topic), http::encode(event));
                if let Some(id) = exclude {
                    path.push_str(&format!("&exclude={}", http::encode(&id.to_string())));
                }
                let body = Bytes::copy_from_slice(data.get().as_bytes());
                let mut call = Call::new(Method::POST, path, body);
                call.headers
                    .push(("content-type", "application/json".into()));
                self.call(call).await.and_then(Answer::empty)
            }
        }
    }

    /// Topic operations for the gateway connection `id` (see [`Topics`]): one connections API
    /// call each. Presence (`track`, `subscribe_with` presence) and replaying the last
    /// publications are not available through the API.
    pub fn to(&self, id: ConnectionId) -> RemoteConnection {
        RemoteConnection {
            client: self.clone(),
            id,
        }
    }

    /// Subscribes a gateway connection to `topic` (replaying from `recover` on topics with
    /// history).
    pub(crate) async fn subscribe(
        &self,
        id: ConnectionId,
        topic: &str,
        recover: Option<Position>,
    ) -> Result<Subscribed, ChannelError> {
        #[derive(Deserialize)]
        struct Wire {
            epoch: Option<String>,
            seq: Option<u64>,
            recovered: Option<bool>,
        }
        match &self.backend {
            Backend::Local(hub) => {
                let options = SubscribeOptions::new().recover(recover);
                hub.to(id).subscribe_with(topic, options).await
            }
            _ => {
                let body = serde_json::to_vec(&serde_json::json!({ "recover": recover }))?;
                let mut call = Call::new(Method::PUT, subscription_path(id, topic), body.into());
                call.headers
                    .push(("content-type", "application/json".into()));
                let wire: Wire = self.call(call).await?.json()?;
                Ok(Subscribed {
                    position: match (wire.epoch, wire.seq) {
                        (Some(epoch), Some(seq)) => Some(Position { epoch, seq }),
                        _ => None,
                    },
                    recovered: wire.recovered,
                })
            }
        }
    }

    /// Unsubscribes a gateway connection from `topic`.
    pub(crate) async fn unsubscribe(
        &self,
        id: ConnectionId,
        topic: &str,
    ) -> Result<(), ChannelError> {
        match &self.backend {
            Backend::Local(hub) => hub.to(id).unsubscribe(topic).await,
            _ => self
                .call(Call::new(
                    Method::DELETE,
                    subscription_path(id, topic),
                    Bytes::new(),
                ))
                .await
                .and_then(Answer::empty),
        }
    }

    /// Topics a gateway connection is subscribed to.
    pub(crate) async fn subscriptions(
        &self,
        id: ConnectionId,
    ) -> Result<Vec<String>, ChannelError> {
        #[derive(Deserialize)]
        struct Wire {
            topics: Vec<String>,
        }
        match &self.backend {
            Backend::Local(hub) => hub.to(id).subscriptions().await,
            _ => {
                let path = format!("{}/topics", connection_path(id));
                let wire: Wire = self
                    .call(Call::new(Method::GET, path, Bytes::new()))
                    .await?
                    .json()?;
                Ok(wire.topics)
            }
        }
    }

    async fn get_json<T: DeserializeOwned>(&self, path: String) -> Result<T, ChannelError> {
        self.call(Call::new(Method::GET, path, Bytes::new()))
            .await?
            .json()
    }

    async fn call(&self, call: Call) -> Result<Answer, ChannelError> {
        let Backend::Remote {
            endpoint,
            auth,
            timeout,
        } = &self.backend
        else {
            return Err(ChannelError::internal(
                "no connections API configured for this function: see FunctionService::connections",
            ));
        };
        let url = format!("{endpoint}{}", call.path);
        let uri: actix_web::http::Uri = url.parse().map_err(|e| {
            ChannelError::internal(format_args!("bad connections API URL {url}: {e}"))
        })?;
        let host = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        let mut headers: Vec<(&'static str, String)> = call.headers;
        headers.push(("host", host));
        match auth {
            Auth::None => {}
            Auth::Bearer(token) => headers.push(("authorization", auth::bearer_header(token))),
            Auth::SigV4 {
                access_key,
                secret,
                region,
                session_token,
            } => {
                let amz_date = time::amz_date(SystemTime::now());
                headers.push(("x-amz-date", amz_date.clone()));
                if let Some(token) = session_token {
                    headers.push(("x-amz-security-token", token.clone()));
                }
                let hash = sigv4::sha256_hex(&call.body);
                let signable = sigv4::Signable {
                    method: call.method.as_str(),
                    path: uri.path(),
                    query: uri.query().unwrap_or(""),
                    headers: headers.iter().map(|(n, v)| (*n, v.as_str())).collect(),
                    payload_hash: &hash,
                };
                let authorization = sigv4::sign(&signable, &amz_date, access_key, secret, region);
                headers.push(("authorization", authorization));
            }
        }
        let req = http::Request {
            method: call.method,
            url,
            headers,
            body: call.body,
            timeout: *timeout,
            limit: MAX_ANSWER,
        };
        let answer = perform(req).await?;
        answer.check()
    }
}

/// What the gateway's answer becomes: the crate's errors, with `Closed` for a gone connection.
struct Answer {
    status: StatusCode,
    error_type: Option<String>,
    body: Bytes,
}

impl Answer {
    fn check(self) -> Result<Answer, ChannelError> {
        if self.status.is_success() {
            return Ok(self);
        }
        #[derive(Deserialize, Default)]
        struct Message {
            #[serde(default, alias = "Message")]
            message: String,
            /// A refusal by the connection's limits: the code a local handle would give.
            #[serde(default)]
            code: Option<String>,
        }
        let Message { message, code } =
            serde_json::from_slice::<Message>(&self.body).unwrap_or_default();
        let kind = self.error_type.unwrap_or_default();
        Err(match self.status {
            StatusCode::GONE => ChannelError::Closed,
            StatusCode::BAD_REQUEST if code.is_some() => {
                ChannelError::new(code.unwrap_or_default(), message)
            }
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => ChannelError::forbidden(format!(
                "connections API refused the call ({kind}): {message}"
            )),
            StatusCode::PAYLOAD_TOO_LARGE => ChannelError::new("payload_too_large", message),
            status => ChannelError::internal(format_args!(
                "connections API answered {status} {kind}: {message}"
            )),
        })
    }

    fn empty(self) -> Result<(), ChannelError> {
        Ok(())
    }

    fn json<T: DeserializeOwned>(self) -> Result<T, ChannelError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            ChannelError::internal(format_args!("unexpected connections API answer: {e}"))
        })
    }
}

struct Call {
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
}

impl Call {
    fn new(method: Method, path: String, body: Bytes) -> Self {
        Call {
            method,
            path,
            headers: Vec::new(),
            body,
        }
    }
}

fn connection_path(id: ConnectionId) -> String {
    format!("/@connections/{}", http::encode(&id.to_string()))
}

fn subscription_path(id: ConnectionId, topic: &str) -> String {
    format!("{}/topics/{}", connection_path(id), http::encode(topic))
}

fn topic_path(topic: &str) -> String {
    format!("/@topics/{}", http::encode(topic))
}

// ---------------------------------------------------------------------------------------------
// The HTTP client thread.

type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

fn client_thread() -> &'static mpsc::UnboundedSender<Job> {
    static THREAD: OnceLock<mpsc::UnboundedSender<Job>> = OnceLock::new();
    THREAD.get_or_init(|| {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        std::thread::Builder::new()
            .name("switchboard-http-client".into())
            .spawn(move || {
                actix_rt::System::new().block_on(async move {
                    while let Some(job) = rx.recv().await {
                        actix_rt::spawn(job());
                    }
                });
            })
            .expect("spawn the connections API client thread");
        tx
    })
}

/// Runs `f` on the client thread and returns its output.
fn on_client_thread<T, F, Fut>(f: F) -> impl Future<Output = Result<T, ChannelError>> + Send
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let (tx, rx) = oneshot::channel();
    let job: Job = Box::new(move || {
        Box::pin(async move {
            let _ = tx.send(f().await);
        })
    });
    let sent = client_thread().send(job).is_ok();
    async move {
        if !sent {
            return Err(ChannelError::internal("the HTTP client thread is gone"));
        }
        rx.await
            .map_err(|_| ChannelError::internal("the HTTP client thread dropped a call"))
    }
}

/// The response size the client reads at most.
const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// Performs `req` on the client thread.
fn perform(req: http::Request) -> impl Future<Output = Result<Answer, ChannelError>> + Send {
    let timeout = req.timeout;
    let fut = on_client_thread(move || async move {
        let resp = http::send(Pool::ConnectionsApi, req)
            .await
            .map_err(|e| match e {
                Failure::TimedOut => ChannelError::internal(format_args!(
                    "connections API call timed out after {timeout:?}"
                )),
                Failure::Unreachable(e) => {
                    ChannelError::internal(format_args!("connections API unreachable: {e}"))
                }
                Failure::TooLarge => ChannelError::internal(format_args!(
                    "connections API answer: over {MAX_ANSWER} bytes"
                )),
                Failure::Broken(e) => {
                    ChannelError::internal(format_args!("connections API answer: {e}"))
                }
            })?;
        let error_type = http::header(&resp.headers, "x-amzn-errortype")
            .map(|s| s.split(':').next().unwrap_or(s).to_owned());
        Ok(Answer {
            status: resp.status,
            error_type,
            body: resp.body,
        })
    });
    async move { fut.await? }
}

// ---------------------------------------------------------------------------------------------
// The remote engine.

/// An [`Engine`] whose topics live in a gateway, reached through its connections API.
///
/// A function's hub runs on it: `ch.subscribe(topic)` subscribes the caller's gateway
/// connection (`PUT /@connections/{id}/topics/{topic}`), `ch.publish` publishes in the gateway
/// (`POST /@topics/{topic}`); subscriptions live in the gateway's brokers, never in the
/// function. Operations of one caller happen in the order it made them: `unsubscribe` (which
/// does not wait) is done before any later call goes out, and a function waits for it before
/// answering.
///
/// ```
/// use switchboard::serverless::connections_api::{ConnectionsClient, RemoteEngine};
/// use switchboard::Hub;
///
/// // A process that publishes into a gateway's topics through the same API as in-process code.
/// let hub = Hub::with_engine(RemoteEngine::new(
///     ConnectionsClient::new("http://127.0.0.1:8080").bearer_token("s3cret"),
/// ));
/// ```
#[derive(Clone)]
pub struct RemoteEngine {
    inner: Arc<RemoteInner>,
}

struct RemoteInner {
    client: ConnectionsClient,
    /// How long a wait for deferred operations may take: the client's call timeout (one
    /// operation's worth; they go out one at a time, and a stuck one must not hold every
    /// invocation forever).
    wait: Duration,
    deferred: Mutex<DeferredState>,
    /// The sequence number of the last deferred operation done. Operations are numbered and
    /// queued under one lock and done one at a time in queue order, so it only grows.
    done: watch::Sender<u64>,
}

struct DeferredState {
    /// The sequence number of the last operation handed out.
    issued: u64,
    /// The last operation handed out per connection, for connections with some not done yet:
    /// what an invocation for that connection waits for.
    pending: HashMap<ConnectionId, u64>,
    queue: mpsc::UnboundedSender<(u64, Deferred)>,
    /// Taken by the task that works the queue, started with the first deferred operation.
    receiver: Option<mpsc::UnboundedReceiver<(u64, Deferred)>>,
}

enum Deferred {
    Unsubscribe(Arc<str>, ConnectionId),
}

impl Deferred {
    fn connection(&self) -> ConnectionId {
        match self {
            Deferred::Unsubscribe(_, id) => *id,
        }
    }
}

impl RemoteEngine {
    /// An engine over `client`.
    pub fn new(client: ConnectionsClient) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        let wait = match &client.backend {
            Backend::Remote { timeout, .. } => *timeout,
            _ => Duration::from_secs(10),
        };
        RemoteEngine {
            inner: Arc::new(RemoteInner {
                client,
                wait,
                deferred: Mutex::new(DeferredState {
                    issued: 0,
                    pending: HashMap::new(),
                    queue,
                    receiver: Some(receiver),
                }),
                done: watch::channel(0).0,
            }),
        }
    }

    /// The client it calls.
    pub fn client(&self) -> &ConnectionsClient {
        &self.inner.client
    }

    fn state(&self) -> std::sync::MutexGuard<'_, DeferredState> {
        // Every critical section leaves the state consistent (a counter, a map entry, a
        // channel send), so a poisoned lock is still usable.
        self.inner
            .deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves once every operation that did not wait (`unsubscribe`) and was made before
    /// this call has been done, or after the client's timeout.
    pub fn flush(&self) -> impl Future<Output = ()> + Send + 'static {
        let target = self.state().issued;
        self.wait_for(target, None)
    }

    /// Resolves once the operations that did not wait (`unsubscribe`) made for connection `id`
    /// so far have been done, or after the client's timeout. What a function invocation waits
    /// for before it answers: its own operations, not those of concurrent invocations.
    pub fn flush_connection(&self, id: ConnectionId) -> impl Future<Output = ()> + Send + 'static {
        let target = self.state().pending.get(&id).copied().unwrap_or(0);
        self.wait_for(target, Some(id))
    }

    fn wait_for(
        &self,
        target: u64,
        id: Option<ConnectionId>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let mut done = self.inner.done.subscribe();
        let wait = self.inner.wait;
        async move {
            if target == 0 {
                return;
            }
            let reached = tokio::time::timeout(wait, done.wait_for(|d| *d >= target)).await;
            // A closed channel means the engine is gone: nothing is left to wait for.
            if reached.is_err() {
                tracing::warn!(
                    "deferred connections API operations{} not done after {wait:?}; going on",
                    id.map(|id| format!(" of {id}")).unwrap_or_default()
                );
            }
        }
    }

    fn defer(&self, op: Deferred) {
        let mut st = self.state();
        if let Some(rx) = st.receiver.take() {
            self.start_worker(rx);
        }
        st.issued += 1;
        let seq = st.issued;
        st.pending.insert(op.connection(), seq);
        // Sent while holding the lock: the queue's order is the numbering's, so `done` only
        // grows and a wait for N ends exactly when the operations up to N are done.
        if st.queue.send((seq, op)).is_err() {
            // The worker is gone (its runtime shut down): nothing will do it; do not wait.
            drop(st);
            complete(&self.inner, seq, None, Order::Any);
        }
    }

    fn start_worker(&self, mut rx: mpsc::UnboundedReceiver<(u64, Deferred)>) {
        // The worker holds the engine weakly: it ends (the queue closes) when the last
        // engine handle is dropped.
        let inner = Arc::downgrade(&self.inner);
        let client = self.inner.client.clone();
        // Runs on the client thread for as long as the engine lives.
        drop(on_client_thread(move || async move {
            while let Some((seq, op)) = rx.recv().await {
                let id = op.connection();
                match op {
                    Deferred::Unsubscribe(topic, id) => {
                        if let Err(e) = client.unsubscribe(id, &topic).await {
                            if !matches!(e, ChannelError::Closed) {
                                tracing::warn!("unsubscribe {id} from {topic}: {e:?}");
                            }
                        }
                    }
                }
                match inner.upgrade() {
                    Some(inner) => complete(&inner, seq, Some(id), Order::Queue),
                    None => return,
                }
            }
        }));
    }

    /// Waits for the deferred operations of `id` (or, without one, all so far), then runs `f`.
    fn after_deferred<T: Send + 'static>(
        &self,
        id: Option<ConnectionId>,
        f: impl Future<Output = Result<T, ChannelError>> + Send + 'static,
    ) -> SendFuture<Result<T, ChannelError>> {
        let flushed: SendFuture<()> = match id {
            Some(id) => Box::pin(self.flush_connection(id)),
            None => Box::pin(self.flush()),
        };
        Box::pin(async move {
            flushed.await;
            f.await
        })
    }
}

/// In what order operations are recorded as done.
enum Order {
    /// The worker's: the queue's, which is the numbering's.
    Queue,
    /// Any (operations that never reached the worker).
    Any,
}

/// Records operation `seq` (of connection `id`) as done.
fn complete(inner: &RemoteInner, seq: u64, id: Option<ConnectionId>, order: Order) {
    // `done` and the connection's entry change under the one lock, so that whoever sees the
    // one change (a flush finding no entry, or a wait seeing `done` reach its target and then
    // reading the state) sees the other too.
    let mut st = inner.deferred.lock().unwrap_or_else(|p| p.into_inner());
    match order {
        // Set as is, not raised to the maximum: were the queue ever out of order, `done`
        // would show it (and the ordering test fail) instead of ending waits early.
        Order::Queue => {
            inner.done.send_replace(seq);
        }
        Order::Any => inner.done.send_modify(|d| *d = (*d).max(seq)),
    }
    // The connection's entry goes once its last operation is done.
    if let Some(id) = id {
        if st.pending.get(&id) == Some(&seq) {
            st.pending.remove(&id);
        }
    }
}

impl std::fmt::Debug for RemoteEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteEngine")
            .field("client", &self.inner.client)
            .finish()
    }
}

fn unsupported<T>(what: &str) -> Result<T, ChannelError> {
    Err(ChannelError::internal(format_args!(
        "{what} is not available through the connections API"
    )))
}

/// The connections API's errors are its server's answers, meant for the client as they are.
fn relayed<T: 'static>(
    f: SendFuture<Result<T, ChannelError>>,
) -> SendFuture<Result<T, EngineError>> {
    Box::pin(async move { f.await.map_err(EngineError::Rejected) })
}

impl Engine for RemoteEngine {
    fn subscribe(&self, request: SubscribeRequest) -> SendFuture<Result<Subscribed, EngineError>> {
        let client = self.inner.client.clone();
        // This connection's own unsubscribes first (subscribe after unsubscribe must win).
        relayed(
            self.after_deferred(Some(request.subscriber.id), async move {
                if request.presence.is_some() {
                    return unsupported("presence");
                }
                if request.last.is_some() {
                    return unsupported("replaying the last publications on subscribe");
                }
                client
                    .subscribe(request.subscriber.id, &request.topic, request.recover)
                    .await
            }),
        )
    }

    fn unsubscribe(&self, topic: Arc<str>, id: ConnectionId) {
        self.defer(Deferred::Unsubscribe(topic, id));
    }

    fn publish(&self, p: Publish) -> SendFuture<Result<(), EngineError>> {
        let client = self.inner.client.clone();
        // A publication does not say who publishes: wait for every operation so far, so that
        // a handler that unsubscribed does not get its own publication.
        relayed(self.after_deferred(None, async move {
            client
                .publish_raw(&p.topic, &p.event, p.data, p.exclude)
                .await
        }))
    }

    fn track(
        &self,
        _topic: Arc<str>,
        _subscriber: crate::engine::Subscriber,
        _key: String,
        _meta: serde_json::Value,
    ) -> SendFuture<Result<(), EngineError>> {
        Box::pin(async { unsupported("presence tracking").map_err(EngineError::Rejected) })
    }

    fn untrack(&self, _topic: Arc<str>, _id: ConnectionId) {}

    fn presence(&self, topic: Arc<str>) -> SendFuture<Result<Presence, EngineError>> {
        let client = self.inner.client.clone();
        relayed(self.after_deferred(None, async move {
            match &client.backend {
                Backend::Local(hub) => hub.presence(&topic).await,
                _ => {
                    client
                        .get_json(format!("{}/presence", topic_path(&topic)))
                        .await
                }
            }
        }))
    }

    fn subscriber_count(&self, topic: Arc<str>) -> SendFuture<Result<usize, EngineError>> {
        #[derive(Deserialize)]
        struct Wire {
            subscribers: usize,
        }
        let client = self.inner.client.clone();
        relayed(self.after_deferred(None, async move {
            match &client.backend {
                Backend::Local(hub) => hub.subscriber_count(&topic).await,
                _ => Ok(client
                    .get_json::<Wire>(topic_path(&topic))
                    .await?
                    .subscribers),
            }
        }))
    }

    fn topics(&self) -> SendFuture<Result<Vec<TopicInfo>, EngineError>> {
        #[derive(Deserialize)]
        struct Wire {
            topics: Vec<WireTopic>,
        }
        #[derive(Deserialize)]
        struct WireTopic {
            topic: String,
            subscribers: usize,
        }
        let client = self.inner.client.clone();
        relayed(self.after_deferred(None, async move {
            match &client.backend {
                Backend::Local(hub) => hub.topics().await,
                _ => Ok(client
                    .get_json::<Wire>("/@topics".to_owned())
                    .await?
                    .topics
                    .into_iter()
                    .map(|t| TopicInfo {
                        topic: t.topic,
                        subscribers: t.subscribers,
                    })
                    .collect()),
            }
        }))
    }

    fn stats(&self) -> SendFuture<Result<EngineStats, EngineError>> {
        #[derive(Deserialize)]
        struct Wire {
            topics: usize,
            subscriptions: usize,
            histories: usize,
        }
        let client = self.inner.client.clone();
        relayed(self.after_deferred(None, async move {
            match &client.backend {
                Backend::Local(hub) => Ok(hub.stats().await?.engine),
                _ => {
                    let w: Wire = client.get_json("/@stats".to_owned()).await?;
                    Ok(EngineStats {
                        topics: w.topics,
                        subscriptions: w.subscriptions,
                        histories: w.histories,
                    })
                }
            }
        }))
    }
}

/// A gateway connection's topic operations through the connections API (from
/// [`ConnectionsClient::to`]).
#[derive(Clone, Debug)]
pub struct RemoteConnection {
    client: ConnectionsClient,
    id: ConnectionId,
}

impl RemoteConnection {
    /// The connection's id.
    pub fn id(&self) -> ConnectionId {
        self.id
    }
}

fn remote_unsupported<T>(what: &str) -> Result<T, ChannelError> {
    Err(ChannelError::new(
        "unsupported",
        format!("{what} is not available through the connections API"),
    ))
}

impl Topics for RemoteConnection {
    async fn subscribe_with(
        &self,
        topic: &str,
        options: SubscribeOptions,
    ) -> Result<Subscribed, ChannelError> {
        if options.presence.is_some() {
            return remote_unsupported("presence");
        }
        if options.last.is_some() {
            return remote_unsupported("replaying the last publications on subscribe");
        }
        self.client.subscribe(self.id, topic, options.recover).await
    }

    async fn unsubscribe(&self, topic: &str) -> Result<(), ChannelError> {
        self.client.unsubscribe(self.id, topic).await
    }

    async fn subscriptions(&self) -> Result<Vec<String>, ChannelError> {
        self.client.subscriptions(self.id).await
    }

    async fn publish<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        event: &str,
        data: &T,
    ) -> Result<(), ChannelError> {
        self.client.publish(topic, event, data).await
    }

    async fn broadcast_from<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        event: &str,
        data: &T,
    ) -> Result<(), ChannelError> {
        let data = crate::hub::to_raw(data)?;
        self.client
            .publish_raw(topic, event, data, Some(self.id))
            .await
    }

    async fn track<M: Serialize + ?Sized>(
        &self,
        _topic: &str,
        _key: &str,
        _meta: &M,
    ) -> Result<(), ChannelError> {
        remote_unsupported("presence")
    }

    async fn untrack(&self, _topic: &str) -> Result<(), ChannelError> {
        remote_unsupported("presence")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Concurrent invocations (threads) defer operations at the same moment, round after
    /// round: the queue's order must be the numbering's, so that after each round `done` is
    /// the last number handed out. (Numbers were once taken before queueing, outside the lock:
    /// 6 could be queued before 5, leave `done` at 5, and stall every later flush.)
    #[test]
    fn concurrent_deferrals_complete_in_order() {
        const THREADS: usize = 8;
        const ROUNDS: usize = 100;
        let mut engine = RemoteEngine::new(ConnectionsClient::local(Hub::new()));
        // A stall shows as a wait that ends with `done` behind (5 s, not the default 10 s; long
        // enough that a loaded machine's slow round is not mistaken for one).
        Arc::get_mut(&mut engine.inner)
            .expect("a fresh engine")
            .wait = Duration::from_secs(5);
        let start = Arc::new(std::sync::Barrier::new(THREADS + 1));
        let deferred = Arc::new(std::sync::Barrier::new(THREADS + 1));
        let ids: Vec<ConnectionId> = (0..THREADS).map(|_| ConnectionId::next()).collect();
        let threads: Vec<_> = ids
            .iter()
            .map(|&id| {
                let (engine, start, deferred) = (engine.clone(), start.clone(), deferred.clone());
                std::thread::spawn(move || {
                    for _ in 0..ROUNDS {
                        start.wait();
                        engine.unsubscribe(Arc::from("t"), id);
                        deferred.wait();
                    }
                })
            })
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        for round in 1..=ROUNDS {
            start.wait();
            deferred.wait();
            rt.block_on(async {
                for &id in &ids {
                    engine.flush_connection(id).await;
                }
            });
            let issued = engine.state().issued;
            assert_eq!(issued, (round * THREADS) as u64);
            assert_eq!(*engine.inner.done.borrow(), issued, "round {round}");
            assert!(engine.state().pending.is_empty(), "round {round}");
        }
        for t in threads {
            t.join().expect("a deferring thread");
        }
        // Nothing pending: a flush ends at once.
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), engine.flush())
                .await
                .expect("an immediate flush");
        });
    }
}
