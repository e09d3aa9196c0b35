//! A channel's settings: limits, origins, the route key.

use std::time::Duration;

use actix_web::http::header;
use actix_web::HttpRequest;

use crate::channel::outbound::SlowConsumerPolicy;
use crate::protocol::RouteKey;

/// Which `Origin` headers a channel accepts on the upgrade request (and on the HTTP
/// transport's requests).
///
/// Browsers send `Origin` on every WebSocket handshake; a channel that accepts any origin can
/// be driven by any page the user visits (cross-site WebSocket hijacking), with the user's
/// cookies. Requests without `Origin` (native clients) are always accepted: the check guards
/// browsers, which cannot omit it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Origins {
    /// The origin's host (and port) must equal the request's `Host`. The default.
    #[default]
    SameHost,
    /// Any origin. Only for channels that use no ambient credentials (cookies).
    Any,
    /// Exactly these origins (`https://app.example.com`), or the same host.
    List(Vec<String>),
}

impl Origins {
    pub(crate) fn allows(&self, req: &HttpRequest) -> bool {
        let Some(origin) = req.headers().get(header::ORIGIN) else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let same_host = || {
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default();
            let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
            !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
        };
        match self {
            Origins::Any => true,
            Origins::SameHost => same_host(),
            Origins::List(list) => {
                list.iter().any(|o| o.eq_ignore_ascii_case(origin)) || same_host()
            }
        }
    }
}

/// A channel's limits and behaviour. Every limit has a bounded default.
#[derive(Clone, Debug)]
pub struct ChannelConfig {
    /// Where the route key sits in client messages. Default: `type`.
    pub route_key: RouteKey,
    /// Largest accepted frame (or message assembled from continuations), in bytes; larger
    /// ones close the connection with 1009. Default: 64 KiB.
    pub max_frame_size: usize,
    /// Frames that may wait in a connection's outbound queue. Default: 1024.
    pub outbound_capacity: usize,
    /// What happens when the outbound queue is full. Default: drop the newest frame.
    pub slow_consumer: SlowConsumerPolicy,
    /// Messages of one connection waiting for their turn; more get `overloaded`. Default: 64.
    pub inbound_capacity: usize,
    /// Messages (text or binary frames) one connection may send per second, on average; a
    /// message over the rate gets `rate_limited` and is not handled. 0 turns the limit off.
    /// Default: 100 (a lively client, such as a game sending input at 60 Hz, stays well
    /// under it).
    pub message_rate: u32,
    /// How many messages a connection may send at once above the rate (the token bucket's
    /// size; a full bucket to start with). Default: 200, at least the default topic limit, so
    /// that a client that reconnects can resubscribe to all its topics at once.
    pub message_burst: u32,
    /// A connection that has more than this many messages refused with `rate_limited` within
    /// 10 seconds is closed with 1008 (`rate limited`). Default: 100.
    pub rate_limited_close_after: u32,
    /// Topics one connection may hold at once (subscriptions and presence; a topic held
    /// already does not count twice); more get `too_many_topics`. Default: 100.
    pub max_topics: usize,
    /// Longest topic name, in bytes; longer ones get `bad_topic`. Default: 256.
    pub max_topic_length: usize,
    /// Largest presence metadata (`track`, subscribe with presence), as JSON, in bytes; larger
    /// gets `presence_too_large`. Default: 4 KiB.
    pub max_presence_size: usize,
    /// Topics all connections of one user hold together on this node (channels that name
    /// users); a subscribe beyond it gets `too_many_user_topics`. Default: 1000.
    pub max_user_topics: usize,
    /// Open connections one user may have (channels that name users), counted on every node of
    /// the engine; one more is refused at the upgrade with HTTP 429
    /// (`too_many_user_connections`). Default: 100.
    pub max_connections_per_user: usize,
    /// How long before a token expires the server asks for a new one with a `refresh` frame
    /// (at most half the token's remaining lifetime). Default: 30 s.
    pub refresh_lead: Duration,
    /// The server pings this often. Default: 30 s.
    pub heartbeat_interval: Duration,
    /// A connection that sends nothing (not even a pong) for this long is closed with 1001.
    /// Default: 75 s.
    pub idle_timeout: Duration,
    /// How long to wait for the client's close frame after the server sent its own. Default:
    /// 5 s.
    pub close_timeout: Duration,
    /// Open connections allowed on this channel (across workers); more get HTTP 503.
    /// Default: 10 000.
    pub max_connections: usize,
    /// Accepted `Origin`s. Default: same host.
    pub origins: Origins,
    /// Refuse connections without a session (HTTP 401). Default: false.
    pub require_session: bool,
    /// Whether the channel is also reachable over HTTP (a Server-Sent Events stream and
    /// upstream `POST`s: `docs/http-transport.md`), for clients whose WebSocket upgrade a
    /// proxy breaks. Default: true.
    pub http_fallback: bool,
    /// Largest body of one upstream `POST` of the HTTP transport, in bytes; larger gets HTTP
    /// 413 (`payload_too_large`). Each frame in it is also held to `max_frame_size`.
    /// Default: 1 MiB.
    pub http_max_body: usize,
    /// Frames in one upstream `POST` (a JSON array); more gets HTTP 413 (`too_many_frames`).
    /// Default: 100.
    pub http_max_frames: usize,
    /// Upstream batches of one HTTP connection that arrived before the ones numbered before
    /// them, held for reordering; one more gets HTTP 429 (`too_many_pending`). Default: 16.
    pub max_pending_batches: usize,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            route_key: RouteKey::default(),
            max_frame_size: 64 * 1024,
            outbound_capacity: 1024,
            slow_consumer: SlowConsumerPolicy::DropNewest,
            inbound_capacity: 64,
            message_rate: 100,
            message_burst: 200,
            rate_limited_close_after: 100,
            max_topics: 100,
            max_topic_length: 256,
            max_presence_size: 4096,
            max_user_topics: 1000,
            max_connections_per_user: 100,
            refresh_lead: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            close_timeout: Duration::from_secs(5),
            max_connections: 10_000,
            origins: Origins::SameHost,
            require_session: false,
            http_fallback: true,
            http_max_body: 1024 * 1024,
            http_max_frames: 100,
            max_pending_batches: 16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn origin_rules() {
        let req = |origin: Option<&str>| {
            let mut r = TestRequest::default().insert_header(("host", "chat.example:8080"));
            if let Some(o) = origin {
                r = r.insert_header(("origin", o));
            }
            r.to_http_request()
        };
        assert!(Origins::SameHost.allows(&req(None)));
        assert!(Origins::SameHost.allows(&req(Some("http://chat.example:8080"))));
        assert!(!Origins::SameHost.allows(&req(Some("http://evil.example"))));
        assert!(Origins::Any.allows(&req(Some("http://evil.example"))));
        let list = Origins::List(vec!["https://app.example".into()]);
        assert!(list.allows(&req(Some("https://app.example"))));
        assert!(!list.allows(&req(Some("https://evil.example"))));
    }
}
