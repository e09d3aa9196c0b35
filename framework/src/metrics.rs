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

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use actix_web::dev::HttpServiceFactory;
use actix_web::{web, HttpRequest, HttpResponse};
use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::hub::Hub;

/// A label value shared without copying: channel paths and route names are `Arc<str>`s
/// already, so looking a series up allocates nothing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Label {
    Static(&'static str),
    Shared(Arc<str>),
}

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(match self {
            Label::Static(s) => s,
            Label::Shared(s) => s,
        })
    }
}

pub(crate) type L1 = [(&'static str, Label); 1];
pub(crate) type L2 = [(&'static str, Label); 2];
pub(crate) type L3 = [(&'static str, Label); 3];

fn histogram_family() -> Family<L2, Histogram, fn() -> Histogram> {
    Family::new_with_constructor(latency)
}

/// 50 µs to about 13 s, doubling.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
}

/// Every metric the framework records.
pub(crate) struct Metrics {
    registry: Mutex<Registry>,
    pub(crate) connections: Family<L1, Gauge>,
    pub(crate) connects_refused: Family<L2, Counter>,
    pub(crate) disconnects: Family<L2, Counter>,
    pub(crate) messages: Family<L3, Counter>,
    pub(crate) handler_seconds: Family<L2, Histogram, fn() -> Histogram>,
    pub(crate) pushes: Family<L1, Counter>,
    pub(crate) outbound_dropped: Family<L1, Counter>,
    pub(crate) slow_consumer_closes: Family<L1, Counter>,
    pub(crate) publications: Counter,
    pub(crate) deliveries: Counter,
    pub(crate) fanout_seconds: Histogram,
    topics: Gauge,
    subscriptions: Gauge,
    histories: Gauge,
    engine_up: Gauge,
    pub(crate) engine_reconnects: Counter,
    pub(crate) engine_errors: Family<L1, Counter>,
    pub(crate) gateway_calls: Family<L1, Counter>,
    pub(crate) gateway_seconds: Histogram,
    pub(crate) connections_api: Family<L2, Counter>,
    pub(crate) draining: Gauge,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The metrics, once collection has started.
#[inline]
pub(crate) fn get() -> Option<&'static Metrics> {
    METRICS.get()
}

/// Starts collecting (idempotent). [`service`] calls it; call it yourself to collect without
/// serving (to read [`encode`] some other way).
pub fn enable() {
    METRICS.get_or_init(Metrics::new);
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
    f(&mut lock_registry());
}

fn lock_registry() -> MutexGuard<'static, Registry> {
    METRICS
        .get_or_init(Metrics::new)
        .registry
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The current values in the OpenMetrics text format (without refreshing the engine gauges:
/// the endpoint does that from its app's hub).
pub fn encode() -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &lock_registry());
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
    let m = METRICS.get_or_init(Metrics::new);
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

impl Metrics {
    fn new() -> Self {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("switchboard")),
            connections: Family::default(),
            connects_refused: Family::default(),
            disconnects: Family::default(),
            messages: Family::default(),
            handler_seconds: histogram_family(),
            pushes: Family::default(),
            outbound_dropped: Family::default(),
            slow_consumer_closes: Family::default(),
            publications: Counter::default(),
            deliveries: Counter::default(),
            fanout_seconds: latency(),
            topics: Gauge::default(),
            subscriptions: Gauge::default(),
            histories: Gauge::default(),
            engine_up: Gauge::default(),
            engine_reconnects: Counter::default(),
            engine_errors: Family::default(),
            gateway_calls: Family::default(),
            gateway_seconds: latency(),
            connections_api: Family::default(),
            draining: Gauge::default(),
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(|p| p.into_inner());
            let r = &mut *r;
            r.register("connections", "Open connections", m.connections.clone());
            r.register(
                "connects_refused",
                "Upgrades refused, by reason",
                m.connects_refused.clone(),
            );
            r.register(
                "disconnects",
                "Connections ended, by close code (1006: without a close frame)",
                m.disconnects.clone(),
            );
            r.register(
                "messages",
                "Client messages, by route and outcome (ok or the error code)",
                m.messages.clone(),
            );
            r.register(
                "handler_duration_seconds",
                "Time from a message's dispatch to its handler's result",
                m.handler_seconds.clone(),
            );
            r.register(
                "pushes",
                "Frames pushed to one connection",
                m.pushes.clone(),
            );
            r.register(
                "outbound_dropped",
                "Frames dropped for slow consumers",
                m.outbound_dropped.clone(),
            );
            r.register(
                "slow_consumer_closes",
                "Connections closed for not reading",
                m.slow_consumer_closes.clone(),
            );
            r.register(
                "publications",
                "Publications delivered by this node's engine",
                m.publications.clone(),
            );
            r.register(
                "deliveries",
                "Publications queued for a local subscriber",
                m.deliveries.clone(),
            );
            r.register(
                "fanout_duration_seconds",
                "Time to queue one publication for all its local subscribers",
                m.fanout_seconds.clone(),
            );
            r.register("topics", "Topics with subscribers", m.topics.clone());
            r.register(
                "subscriptions",
                "Subscriptions (one per connection per topic)",
                m.subscriptions.clone(),
            );
            r.register(
                "histories",
                "Topics whose history is kept",
                m.histories.clone(),
            );
            r.register("engine_up", "1 while the engine works", m.engine_up.clone());
            r.register(
                "engine_reconnects",
                "Engine connections re-established",
                m.engine_reconnects.clone(),
            );
            r.register(
                "engine_errors",
                "Engine operations that failed, by operation",
                m.engine_errors.clone(),
            );
            r.register(
                "gateway_calls",
                "Function calls by the gateway, by outcome",
                m.gateway_calls.clone(),
            );
            r.register(
                "gateway_call_duration_seconds",
                "Function call latency",
                m.gateway_seconds.clone(),
            );
            r.register(
                "connections_api_requests",
                "Connections API requests, by method and status",
                m.connections_api.clone(),
            );
            r.register(
                "drain_in_progress",
                "1 while a drain is closing this node's connections",
                m.draining.clone(),
            );
        }
        m
    }
}
