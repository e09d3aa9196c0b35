//! Prometheus metrics: what operators ask of a real-time server, in the OpenMetrics text format.
//!
//! Mount the endpoint with one line; collection starts when it is mounted (or when
//! [`enable`] is called), and until then each instrumented place costs one atomic load:
//!
//! ```
//! use actix_web::App;
//! use switchboard::prelude::*;
//!
//! let app = App::new()
//!     .service(ChannelRoute::<()>::new("/ws"))
//!     .service(switchboard::metrics::service("/metrics"));
//! ```
//!
//! Built on [`prometheus_client`], the Prometheus project's own Rust client: an explicit
//! registry (no global recorder to fight over with the app's other metrics), typed metrics,
//! and the text exposition. Apps add their own metrics to the same registry with
//! [`register`].
//!
//! Labels stay bounded: `channel` is a channel's path pattern, `route` a name from its route
//! table (`$default` for the fallback, `$unknown` for routes with no handler, `$invalid` for
//! frames that are not messages, `$refused` for messages refused before routing,
//! `$binary`), `outcome` is `ok` or an error code, `code` a close code the framework knows
//! (others count as `other`). Topics are never labels.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `switchboard_connections` | gauge | `channel` |
//! | `switchboard_connects_refused_total` | counter | `channel`, `reason` (`origin`, `bad_request`, `cap`, `auth`, `rejected`, `draining`) |
//! | `switchboard_disconnects_total` | counter | `channel`, `code` |
//! | `switchboard_messages_total` | counter | `channel`, `route`, `outcome` |
//! | `switchboard_handler_duration_seconds` | histogram | `channel`, `route` |
//! | `switchboard_pushes_total` | counter | `channel` (frames pushed to one connection: `Channel::push`, `Hub::send_to`) |
//! | `switchboard_outbound_dropped_total` | counter | `channel` (frames dropped for a slow consumer) |
//! | `switchboard_slow_consumer_closes_total` | counter | `channel` |
//! | `switchboard_publications_total` | counter | |
//! | `switchboard_deliveries_total` | counter | (a publication queued for one local subscriber) |
//! | `switchboard_fanout_duration_seconds` | histogram | (one publication to all local subscribers) |
//! | `switchboard_topics`, `switchboard_subscriptions`, `switchboard_histories` | gauge | (read from the engine at each scrape: topics with subscribers or presence, subscriptions, topics with history) |
//! | `switchboard_engine_up` | gauge | (1 while the engine works; read at each scrape) |
//! | `switchboard_engine_reconnects_total` | counter | |
//! | `switchboard_engine_errors_total` | counter | `op` |
//! | `switchboard_gateway_calls_total` | counter | `outcome` |
//! | `switchboard_gateway_call_duration_seconds` | histogram | |
//! | `switchboard_connections_api_requests_total` | counter | `method`, `status` |
//! | `switchboard_drain_in_progress` | gauge | |

use actix_web::dev::HttpServiceFactory;
use actix_web::{web, HttpRequest, HttpResponse};
use prometheus_client::registry::Registry;

use crate::hub::Hub;
use crate::meter::registry;

/// Starts collecting (idempotent). [`service`] calls it; call it yourself to collect without
/// serving (to read [`encode`] some other way).
pub fn enable() {
    registry::install();
}

/// Adds the app's own metrics to the registry the endpoint serves.
///
/// ```
/// use prometheus_client::metrics::counter::Counter;
///
/// let logins = Counter::<u64>::default();
/// switchboard::metrics::register(|r| r.register("myapp_logins", "Logins", logins.clone()));
/// logins.inc();
/// assert!(switchboard::metrics::encode().contains("myapp_logins_total 1"));
/// ```
pub fn register(f: impl FnOnce(&mut Registry)) {
    enable();
    f(&mut registry::lock_registry());
}

/// The current values in the OpenMetrics text format (without refreshing the engine gauges:
/// the endpoint does that from its app's hub).
pub fn encode() -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry::lock_registry());
    out
}

/// The scrape endpoint at `path`: `GET` answers the metrics (refreshing the topic, subscription,
/// history and engine-health gauges from the request's app's [`Hub`] first). Mounting it
/// starts collection. Protect it as the app protects its other internal routes (a guard, a
/// separate listener); it shows channel paths and route names, never topics or clients.
pub fn service(path: &str) -> impl HttpServiceFactory {
    enable();
    web::resource(path.to_owned()).route(web::get().to(scrape))
}

async fn scrape(req: HttpRequest) -> HttpResponse {
    let hub = Hub::of(&req);
    let m = registry::install();
    m.engine_up
        .set(i64::from(hub.health() == crate::engine::EngineHealth::Up));
    if let Ok(stats) = hub.stats().await {
        m.topics.set(stats.engine.topics as i64);
        m.subscriptions.set(stats.engine.subscriptions as i64);
        m.histories.set(stats.engine.histories as i64);
    }
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(encode())
}
