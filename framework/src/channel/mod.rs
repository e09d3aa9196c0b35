//! Channels: [`ChannelRoute`] mounts a WebSocket endpoint (and its HTTP fallback) on an
//! actix-web `App`;
//! [`Channel<S>`] is one open connection as its handlers see it.
//!
//! | module | holds |
//! |---|---|
//! | `config` | [`ChannelConfig`] and [`Origins`]: limits and settings |
//! | `route` | [`ChannelRoute`], the builder |
//! | `def` | a built channel: what its connections share (routes, hooks, config) |
//! | `router` | the route table and the one dispatch (connections, sessions, functions) |
//! | `upgrade` | the upgrade: origin check, cap, `on_connect`, [`ConnectRequest`] |
//! | `handle` | [`Channel<S>`], the per-connection handle |
//! | `connection` | the connection actor |
//! | `outbound` | the bounded outbound queue and the slow-consumer policy |
//! | `seam` | the transport seam: a connection's inbound source and outbound sink, WebSocket or HTTP |
//! | `transport` | the WebSocket glue to actix's HTTP server: upgrade, frames in, the outbound queue as the response body |
//! | `http_link` | the HTTP transport: the SSE body, the upstream batches in order, the writer |
//! | `http` | the HTTP transport's endpoints: `POST`, `DELETE`, CORS, the hand-over between nodes |
//! | `heartbeat` | pings and idle timeouts, one task per channel and worker |
//! | `beats` | the list of a worker's connections the heartbeat visits, swept as they end |
//! | `tokens` | tokens that expire: a connection's deadlines and its one timer |

mod beats;
mod config;
pub(crate) mod connection;
mod def;
mod handle;
mod heartbeat;
mod http;
pub(crate) mod http_link;
pub(crate) mod outbound;
mod route;
pub(crate) mod router;
mod seam;
mod tokens;
pub(crate) mod transport;
pub(crate) mod upgrade;

pub use config::{ChannelConfig, Origins};
pub use handle::Channel;
pub use outbound::SlowConsumerPolicy;
pub use route::ChannelRoute;
pub use upgrade::ConnectRequest;

/// The token frames as sent, for the schema's check of their fields.
#[cfg(all(test, feature = "schema"))]
pub(crate) use handle::{refresh_frame, unsubscribed_frame};
#[cfg(feature = "gateway")]
pub(crate) use upgrade::bearer;
