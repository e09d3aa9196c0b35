//! Serverless: the same handlers behind an HTTP boundary.
//!
//! - [`gateway`]: a channel whose messages are POSTed to a function as API Gateway WebSocket
//!   events (`$connect`, routes, `$default`, `$disconnect`).
//! - [`function`]: hosts `#[switchboard::message]` handlers behind those events (in a process of
//!   its own, or on AWS Lambda with the `lambda` feature).
//! - [`connections_api`]: the AWS-compatible connections API (`/@connections/{id}`) a function
//!   uses to reach its gateway's connections and topics, and its client.

pub mod connections_api;
pub mod function;
pub mod gateway;

mod auth;
mod client;
mod event;
mod http;
mod sigv4;
mod time;

/// Why a function, the Lambda adapter or a connections client could not start. Startup
/// errors are the operator's business: no client ever sees one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The environment lacks something it must give (AWS credentials, the Lambda runtime's
    /// variables), or gives it malformed.
    #[error("{0}")]
    Environment(String),
    /// The function's `App` did not start.
    #[error("the function's App did not start: {0}")]
    App(String),
    /// The Lambda runtime stopped with an error.
    #[error("the Lambda runtime stopped: {0}")]
    Runtime(String),
}
