//! Where the framework records its metrics ([`crate::metrics`]). Every function here is empty
//! without the `metrics` feature, and costs one atomic load with it until collection starts,
//! so call sites need no `cfg`.

use std::sync::Arc;
use std::time::Instant;

use crate::error::ChannelError;

#[cfg(feature = "metrics")]
pub(crate) mod registry;
#[cfg(feature = "metrics")]
use registry::{get, Label};

/// A route as metrics name it: a name from the route table, or one of the special cases.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) enum RouteLabel<'a> {
    Named(&'a Arc<str>),
    /// The fallback handler answered a route with no handler of its own.
    Default,
    /// No handler for the route.
    Unknown,
    /// Not a message (bad JSON, no route key, a bad `ref`).
    Invalid,
    /// Refused before routing (rate limit, full inbound queue).
    Refused,
    Binary,
}

#[cfg(feature = "metrics")]
impl RouteLabel<'_> {
    fn label(self) -> Label {
        match self {
            RouteLabel::Named(r) => Label::Shared(r.clone()),
            RouteLabel::Default => Label::Static("$default"),
            RouteLabel::Unknown => Label::Static("$unknown"),
            RouteLabel::Invalid => Label::Static("$invalid"),
            RouteLabel::Refused => Label::Static("$refused"),
            RouteLabel::Binary => Label::Static("$binary"),
        }
    }
}

/// When a timed operation started; `None` while metrics are off (no clock read).
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) struct Started(Option<Instant>);

impl Started {
    /// Untimed.
    pub(crate) fn none() -> Self {
        Started(None)
    }

    /// Whether metrics were being collected when it started.
    pub(crate) fn is_timed(self) -> bool {
        self.0.is_some()
    }
}

#[inline]
pub(crate) fn start() -> Started {
    #[cfg(feature = "metrics")]
    if get().is_some() {
        return Started(Some(Instant::now()));
    }
    Started(None)
}

#[cfg(feature = "metrics")]
fn ch(channel: &Arc<str>) -> (&'static str, Label) {
    ("channel", Label::Shared(channel.clone()))
}

#[cfg(feature = "metrics")]
fn outcome(result: Result<(), &ChannelError>) -> Label {
    match result {
        Ok(()) => Label::Static("ok"),
        Err(e) => match e.code() {
            // The framework's own codes without an allocation; an app's codes are its own
            // (bounded by its code, not by clients).
            "bad_json" => Label::Static("bad_json"),
            "missing_route" => Label::Static("missing_route"),
            "bad_ref" => Label::Static("bad_ref"),
            "unknown_route" => Label::Static("unknown_route"),
            "bad_payload" => Label::Static("bad_payload"),
            "rate_limited" => Label::Static("rate_limited"),
            "overloaded" => Label::Static("overloaded"),
            "internal" => Label::Static("internal"),
            other => Label::Shared(Arc::from(other)),
        },
    }
}

#[cfg(feature = "metrics")]
fn close_code(code: u16) -> &'static str {
    match code {
        1000 => "1000",
        1001 => "1001",
        1002 => "1002",
        1006 => "1006",
        1007 => "1007",
        1008 => "1008",
        1009 => "1009",
        1011 => "1011",
        1012 => "1012",
        1013 => "1013",
        3000..=3999 => "3xxx",
        4000..=4999 => "4xxx",
        _ => "other",
    }
}

/// A connection opened on `channel`.
#[inline]
pub(crate) fn opened(_channel: &Arc<str>) {
    #[cfg(feature = "metrics")]
    if let Some(m) = get() {
        m.connections.get_or_create(&[ch(_channel)]).inc();
    }
}

/// A connection on `channel` ended with `code` (1006 without a close frame).
#[inline]
pub(crate) fn closed(_channel: &Arc<str>, _code: u16) {
    #[cfg(feature = "metrics")]
    if let Some(m) = get() {
        m.connections.get_or_create(&[ch(_channel)]).dec();
        m.disconnects
            .get_or_create(&[ch(_channel), ("code", Label::Static(close_code(_code)))])
            .inc();
    }
}

/// An upgrade to `channel` refused.
#[inline]
pub(crate) fn refused(_channel: &Arc<str>, _reason: &'static str) {
    #[cfg(feature = "metrics")]
    if let Some(m) = get() {
        m.connects_refused
            .get_or_create(&[ch(_channel), ("reason", Label::Static(_reason))])
            .inc();
    }
}

/// One channel's route series on one worker: a message answered `ok` finds its counter and
/// histogram here by the route name's pointer (no hashing, no lock), instead of looking the
/// labels up in the shared families.
#[derive(Default)]
pub(crate) struct RouteMeters {
    #[cfg(feature = "metrics")]
    cache: std::cell::RefCell<Vec<(RouteKey, RouteSeries)>>,
}

#[cfg(feature = "metrics")]
#[derive(PartialEq, Eq)]
enum RouteKey {
    /// The route table's name, by address.
    Named(*const u8),
    Special(&'static str),
}

#[cfg(feature = "metrics")]
struct RouteSeries {
    ok: prometheus_client::metrics::counter::Counter,
    seconds: prometheus_client::metrics::histogram::Histogram,
}

impl RouteMeters {
    /// A message answered (or handled without a reply).
    #[inline]
    pub(crate) fn message(
        &self,
        channel: &Arc<str>,
        route: RouteLabel<'_>,
        result: Result<(), &ChannelError>,
        started: Started,
    ) {
        #[cfg(feature = "metrics")]
        if result.is_ok() && get().is_some() {
            let key = match route {
                RouteLabel::Named(name) => RouteKey::Named(name.as_ptr()),
                other => match other.label() {
                    Label::Static(s) => RouteKey::Special(s),
                    Label::Shared(_) => unreachable!("only names are shared"),
                },
            };
            let mut cache = self.cache.borrow_mut();
            let i = match cache.iter().position(|(k, _)| *k == key) {
                Some(i) => i,
                None => {
                    let Some(m) = get() else { return };
                    let route = ("route", route.label());
                    let series = RouteSeries {
                        ok: m
                            .messages
                            .get_or_create(&[
                                ch(channel),
                                route.clone(),
                                ("outcome", Label::Static("ok")),
                            ])
                            .clone(),
                        seconds: m
                            .handler_seconds
                            .get_or_create(&[ch(channel), route])
                            .clone(),
                    };
                    cache.push((key, series));
                    cache.len() - 1
                }
            };
            let series = &cache[i].1;
            series.ok.inc();
            if let Started(Some(t)) = started {
                series.seconds.observe(t.elapsed().as_secs_f64());
            }
            return;
        }
        message(channel, route, result, started);
    }
}

/// A message answered (or handled without a reply).
#[inline]
pub(crate) fn message(
    _channel: &Arc<str>,
    _route: RouteLabel<'_>,
    _result: Result<(), &ChannelError>,
    _started: Started,
) {
    #[cfg(feature = "metrics")]
    if let Some(m) = get() {
        let route = ("route", _route.label());
        if let Started(Some(t)) = _started {
            m.handler_seconds
                .get_or_create(&[ch(_channel), route.clone()])
                .observe(t.elapsed().as_secs_f64());
        }
        m.messages
            .get_or_create(&[ch(_channel), route, ("outcome", outcome(_result))])
            .inc();
    }
}

/// A frame pushed to one connection.
#[cfg(feature = "metrics")]
#[inline]
pub(crate) fn pushed(_channel: &Arc<str>) {
    #[cfg(feature = "metrics")]
    if let Some(m) = get() {
        m.pushes.get_or_create(&[ch(_channel)]).inc();
    }
}

/// A frame dropped for a slow consumer.
#[cfg(feature = "metrics")]
#[inline]
pub(crate) fn dropped(_channel: &Arc<str>) {
    #[cfg(feature = "metrics")]
    if let Some(m) = get() {
        m.outbound_dropped.get_or_create(&[ch(_channel)]).inc();
    }
}

/// A connection closed for not reading.
#[cfg(feature = "metrics")]
#[inline]
pub(crate) fn slow_consumer_closed(_channel: &Arc<str>) {
    #[cfg(feature = "metrics")]
    if let Some(m) = get() {
        m.slow_consumer_closes.get_or_create(&[ch(_channel)]).inc();
    }
}

/// One publication queued for `_delivered` local subscribers.
#[inline]
pub(crate) fn fanned_out(_delivered: usize, _started: Started) {
    #[cfg(feature = "metrics")]
    if let Some(m) = get() {
        m.publications.inc();
        m.deliveries.inc_by(_delivered as u64);
        if let Started(Some(t)) = _started {
            m.fanout_seconds.observe(t.elapsed().as_secs_f64());
        }
    }
}

/// The engine's connection came back.
#[inline]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn engine_reconnected() {
    #[cfg(feature = "metrics")]
    if let Some(m) = get() {
        m.engine_reconnects.inc();
    }
}

/// An engine operation failed.
#[inline]
pub(crate) fn engine_error(_op: &'static str) {
    #[cfg(feature = "metrics")]
    if let Some(m) = get() {
        m.engine_errors
            .get_or_create(&[("op", Label::Static(_op))])
            .inc();
    }
}

/// The gateway called a function.
#[inline]
#[cfg_attr(not(feature = "gateway"), allow(dead_code))]
pub(crate) fn gateway_call(_outcome: &'static str, _started: Started) {
    #[cfg(feature = "metrics")]
    if let Some(m) = get() {
        m.gateway_calls
            .get_or_create(&[("outcome", Label::Static(_outcome))])
            .inc();
        if let Started(Some(t)) = _started {
            m.gateway_seconds.observe(t.elapsed().as_secs_f64());
        }
    }
}

/// The connections API answered.
#[inline]
#[cfg_attr(not(feature = "gateway"), allow(dead_code))]
pub(crate) fn connections_api(_method: &'static str, _status: u16) {
    #[cfg(feature = "metrics")]
    if let Some(m) = get() {
        let status = match _status {
            200 => "200",
            204 => "204",
            400 => "400",
            403 => "403",
            404 => "404",
            405 => "405",
            410 => "410",
            413 => "413",
            429 => "429",
            500 => "500",
            503 => "503",
            _ => "other",
        };
        m.connections_api
            .get_or_create(&[
                ("method", Label::Static(_method)),
                ("status", Label::Static(status)),
            ])
            .inc();
    }
}

/// A drain started (`true`) or ended.
#[inline]
pub(crate) fn draining(_on: bool) {
    #[cfg(feature = "metrics")]
    if let Some(m) = get() {
        m.draining.set(i64::from(_on));
    }
}
