//! What the integration tests share (the root package's library, `switchboard_suite`), one
//! module a concept; the most used names are re-exported at the top. Helpers for channels
//! themselves (a test server, a WebSocket client) are the public `switchboard::testing`.
//!
//! - [`wait`]: bounded waits for a condition ([`until`], [`eventually`], [`Wait`]).
//! - [`process`]: programs the tests start (example binaries), and skipping when one is missing.
//! - [`redis`]: a `redis-server` of a test's own.
//! - [`redis_cluster`]: a Redis Cluster (3 primaries, 3 replicas) of a test's own.
//! - [`nats`]: a `nats-server` of a test's own, with JetStream.
//! - [`http`]: raw HTTP/1.1 requests.
//! - [`sse`]: a client of the HTTP transport (the stream and upstream `POST`s), raw.
//! - [`ws`]: what a request's failure says, topic deliveries, a raw WebSocket peer.
//! - [`browser`]: headless Chromium through chromedriver, for the end-to-end pages.
//! - [`proxy`]: a loopback proxy that refuses WebSocket upgrades (the HTTP transport's tests).
//! - [`handlers`]: channel handlers several test apps mount.
//! - [`typescript`]: the TypeScript compiler for the type-checking tests.
//! - [`rooms`]: the topic app of the topic tests, on the memory engine and on Redis.

pub mod browser;
pub mod handlers;
pub mod http;
pub mod nats;
pub mod process;
pub mod proxy;
pub mod redis;
pub mod redis_cluster;
pub mod rooms;
pub mod sse;
pub mod typescript;
pub mod wait;
pub mod ws;

pub use http::{header, http, percent, raw_http, raw_http_with, request};
pub use nats::NatsServer;
pub use process::{chat, example_binary, free_port, skip, spawn_listening, under_ci, Proc};
pub use redis::RedisServer;
pub use redis_cluster::RedisCluster;
pub use sse::SseClient;
pub use wait::{eventually, until, Wait};
pub use ws::{
    connect_named, delivery, error_reply, opcode, pushes_before_reply, rejected_status, RawWs,
};
