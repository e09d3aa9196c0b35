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
