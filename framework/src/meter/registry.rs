//! The registry behind `switchboard::metrics`: the metric families the framework records into.
//! A leaf module: the places that record (the connection actor, the outbound queue, the
//! engines) reach it through [`super`] without importing what the endpoint needs (the hub).

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

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
    pub(crate) topics: Gauge,
    pub(crate) subscriptions: Gauge,
    pub(crate) histories: Gauge,
    pub(crate) engine_up: Gauge,
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

/// The metrics, created on first use (collection starts).
pub(crate) fn install() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

/// The registry, for encoding and for the app's own metrics.
pub(crate) fn lock_registry() -> MutexGuard<'static, Registry> {
    install().registry.lock().unwrap_or_else(|p| p.into_inner())
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
