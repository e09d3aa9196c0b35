//! The same function on AWS Lambda (cargo feature `lambda`): [`run`] serves a
//! [`FunctionService`]'s handlers through the Lambda runtime API (`lambda_runtime`), taking
//! API Gateway WebSocket events ([`ApiGatewayWebsocketProxyRequest`]) and answering Lambda
//! proxy responses ([`ApiGatewayProxyResponse`]), the integration API Gateway WebSocket APIs
//! (and a [`Gateway`](crate::serverless::gateway::Gateway) with
//! [`lambda_proxy_responses`](crate::serverless::gateway::Gateway::lambda_proxy_responses)) expect.
//!
//! Nothing about the handlers changes: each event goes through the same
//! [`FunctionService`] an HTTP function server mounts, inside an actix-web `App` that lives in
//! the Lambda process without a socket, so extractors and app data work as they do there.
//!
//! ```no_run
//! use switchboard::serverless::connections_api::ConnectionsClient;
//! use switchboard::serverless::function::{lambda, FunctionService};
//! use switchboard::prelude::*;
//!
//! #[switchboard::message("echo")]
//! async fn echo(data: serde_json::Value) -> Result<serde_json::Value, ChannelError> {
//!     Ok(data)
//! }
//!
//! #[actix_web::main]
//! async fn main() -> Result<(), switchboard::serverless::StartError> {
//!     let function = FunctionService::<()>::new("/fn")
//!         .connections(ConnectionsClient::new("http://gateway.internal:8080").bearer_token("t"))
//!         .message(echo);
//!     // Reads AWS_LAMBDA_RUNTIME_API (and the function's name, memory and version) from the
//!     // environment Lambda sets, then takes events until the process is stopped.
//!     lambda::run(function).await
//! }
//! ```
//!
//! **What each event gets back.** `$connect`: `statusCode` 200 accepts, any other rejects the
//! client with that status. A message: `statusCode` 200 and the reply frame as `body` (base64
//! with `isBase64Encoded` for a binary reply; no `body` when the handler has no reply), with the
//! header `x-switchboard-reply: frame`. An event that is not one (a malformed body, an unknown
//! event type) is answered 400, as the HTTP function server does.
//!
//! **Sessions.** API Gateway does not carry a `$connect` integration's answer into later
//! events; what it carries is a Lambda authorizer's context. A function's `Channel::session`
//! reads `requestContext.authorizer.session`, as an object or as a string holding JSON (API
//! Gateway only passes strings, numbers and booleans in an authorizer's context).

use std::rc::Rc;

use actix_http::{Payload, Request};
use actix_service::{IntoServiceFactory, Service, ServiceFactory};
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, ServiceResponse};
use actix_web::http::header;
use actix_web::{web, App};
pub use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderName, HeaderValue};
use bytes::Bytes;

pub use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
pub use lambda_runtime::LambdaEvent;

use super::FunctionService;
use crate::serverless::auth;
use crate::serverless::event::{is_binary_content, ErrorAnswer, Event};
use crate::serverless::StartError;

type AppService = actix_service::boxed::BoxService<Request, ServiceResponse, actix_web::Error>;

/// The environment the Lambda runtime reads at start; `lambda_runtime` panics without it, so
/// [`LambdaFunction::run`] checks first.
const RUNTIME_ENV: [&str; 4] = [
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
];

/// Serves `function` on AWS Lambda until the runtime API goes away: the usual `main` of a
/// function deployed to Lambda. See the [module docs](self).
pub async fn run<S: 'static>(function: FunctionService<S>) -> Result<(), StartError> {
    LambdaFunction::new(function).await?.run().await
}

/// A [`FunctionService`] ready to answer Lambda events: [`handle`](Self::handle) one event
/// (to test it, or to run it under a `lambda_runtime` set up by hand), or
/// [`run`](Self::run) the runtime loop.
///
/// ```
/// use switchboard::serverless::function::lambda::{ApiGatewayWebsocketProxyRequest, LambdaFunction};
/// use switchboard::serverless::function::FunctionService;
/// use switchboard::prelude::*;
///
/// #[switchboard::message("echo")]
/// async fn echo(data: serde_json::Value) -> Result<serde_json::Value, ChannelError> {
///     Ok(data)
/// }
///
/// # actix_web::rt::System::new().block_on(async {
/// let f = LambdaFunction::new(FunctionService::<()>::new("/fn").message(echo)).await?;
/// let event: ApiGatewayWebsocketProxyRequest = serde_json::from_value(serde_json::json!({
///     "requestContext": {
///         "routeKey": "echo", "eventType": "MESSAGE", "connectionId": "L0SM9cOFvHcCIhw=",
///         "connectedAt": 1707498319000u64, "requestTimeEpoch": 1707498319361u64
///     },
///     "body": r#"{"type":"echo","ref":1,"data":"hi"}"#,
///     "isBase64Encoded": false
/// }))
/// .unwrap();
/// let answer = f.handle(event).await;
/// assert_eq!(answer.status_code, 200);
/// let body = serde_json::to_value(&answer.body).unwrap();
/// assert_eq!(body, r#"{"ref":1,"ok":true,"data":"hi"}"#);
/// # Ok::<(), switchboard::serverless::StartError>(())
/// # }).unwrap();
/// ```
pub struct LambdaFunction {
    app: Rc<AppService>,
    path: String,
    token: Option<String>,
}

impl std::fmt::Debug for LambdaFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LambdaFunction")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl LambdaFunction {
    /// Builds the function's `App` (in this process, without a socket).
    pub async fn new<S: 'static>(function: FunctionService<S>) -> Result<Self, StartError> {
        Self::with_config(function, |_| {}).await
    }

    /// As [`new`](Self::new), with `configure` adding what the handlers extract (app data,
    /// as on an HTTP function server's `App`).
    pub async fn with_config<S: 'static>(
        function: FunctionService<S>,
        configure: impl FnOnce(&mut web::ServiceConfig),
    ) -> Result<Self, StartError> {
        let path = function.path.clone();
        let token = function.settings.token.clone();
        let factory = App::new()
            .configure(configure)
            .service(function)
            .into_factory();
        // The default config's address is loopback: a function without a token is allowed,
        // as it should be here, where events come from the Lambda service alone.
        let app = factory
            .new_service(AppConfig::default())
            .await
            .map_err(|()| StartError::App("a service factory failed".into()))?;
        Ok(LambdaFunction {
            app: Rc::new(actix_service::boxed::service(app)),
            path,
            token,
        })
    }

    /// Answers one event.
    pub async fn handle(&self, event: ApiGatewayWebsocketProxyRequest) -> ApiGatewayProxyResponse {
        let event = match Event::from_aws(event) {
            Ok(event) => event,
            Err(message) => {
                let mut r = text_response(400, String::new());
                r.body = serde_json::to_string(&ErrorAnswer::new("bad_event", message))
                    .ok()
                    .map(Body::Text);
                return r;
            }
        };
        match serde_json::to_vec(&event) {
            Ok(body) => self.handle_json(Bytes::from(body)).await,
            Err(e) => text_response(500, format!("the event does not serialize: {e}")),
        }
    }

    /// Answers one event, as the JSON a gateway POSTs to a function server.
    async fn handle_json(&self, body: Bytes) -> ApiGatewayProxyResponse {
        let mut req = Request::with_payload(Payload::from(body.clone()));
        let head = req.head_mut();
        head.method = actix_web::http::Method::POST;
        head.uri = match self.path.parse() {
            Ok(uri) => uri,
            Err(_) => return text_response(500, format!("bad function path {}", self.path)),
        };
        // The event comes from inside this process.
        head.peer_addr = Some(([127, 0, 0, 1], 0).into());
        head.headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        head.headers.insert(
            header::CONTENT_LENGTH,
            header::HeaderValue::from(body.len()),
        );
        if let Some(token) = &self.token {
            if let Ok(v) = header::HeaderValue::from_str(&auth::bearer_header(token)) {
                head.headers.insert(header::AUTHORIZATION, v);
            }
        }
        match self.app.call(req).await {
            Ok(resp) => proxy_response(resp).await,
            Err(e) => text_response(500, e.to_string()),
        }
    }

    /// Takes events from the Lambda runtime API (`AWS_LAMBDA_RUNTIME_API`) one at a time, as
    /// Lambda runs a function instance, until the runtime API goes away.
    pub async fn run(self) -> Result<(), StartError> {
        if let Some(missing) = RUNTIME_ENV.iter().find(|v| std::env::var_os(v).is_none()) {
            return Err(StartError::Environment(format!(
                "{missing} is not set: run this function under AWS Lambda (or its runtime \
                 interface emulator)"
            )));
        }
        let memory = std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").unwrap_or_default();
        if memory.parse::<i32>().is_err() {
            return Err(StartError::Environment(format!(
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE is {memory:?}, not a number of megabytes"
            )));
        }
        let this = Rc::new(self);
        let handler = lambda_runtime::service_fn(
            move |event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| {
                let this = this.clone();
                async move { Ok::<_, lambda_runtime::Error>(this.handle(event.payload).await) }
            },
        );
        lambda_runtime::run(handler)
            .await
            .map_err(|e| StartError::Runtime(e.to_string()))
    }
}

fn text_response(status: i64, text: String) -> ApiGatewayProxyResponse {
    let mut r = ApiGatewayProxyResponse::default();
    r.status_code = status;
    r.headers.insert(
        HeaderName::from_static("content-type"),
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.body = Some(Body::Text(text));
    r
}

/// The function server's HTTP answer as a Lambda proxy response.
async fn proxy_response(resp: ServiceResponse) -> ApiGatewayProxyResponse {
    let mut r = ApiGatewayProxyResponse::default();
    r.status_code = i64::from(resp.status().as_u16());
    for (name, value) in resp.headers() {
        // Framing is Lambda's business.
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            r.headers.append(n, v);
        }
    }
    let binary = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_binary_content);
    let body = match resp.into_body().try_into_bytes() {
        Ok(bytes) => bytes,
        Err(body) => match actix_web::body::to_bytes(body).await {
            Ok(bytes) => bytes,
            Err(e) => return text_response(500, format!("the answer broke off: {e}")),
        },
    };
    if body.is_empty() {
        return r;
    }
    r.body = Some(if binary {
        r.is_base64_encoded = true;
        Body::Binary(body.to_vec())
    } else {
        match String::from_utf8(body.to_vec()) {
            Ok(text) => Body::Text(text),
            Err(e) => {
                r.is_base64_encoded = true;
                Body::Binary(e.into_bytes())
            }
        }
    });
    r
}
