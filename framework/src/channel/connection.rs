//! The connection actor: one per open connection, over a WebSocket or over HTTP.
//!
//! Its context polls the transport's inbound source and the sink that drains its outbound
//! queue (see `seam`: one enum each, WebSocket or HTTP). Messages of one connection are
//! handled one at a time, in arrival order: they wait in a bounded inbound queue while a
//! handler runs, and the handler runs as a future spawned on the actor's context (not
//! `ctx.wait`), so pings, pongs, pushes and deliveries keep flowing meanwhile.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, StreamHandler, WrapFuture};
use bytestring::ByteString;
use futures_util::FutureExt;
use tracing::Instrument;

use super::def::{ChannelDef, OpenGuard};
use super::handle::Channel;
use super::outbound::{Class, Frame};
use super::router::{Answering, Dispatch, Handler, Inbound};
use super::seam::{Sink, Source};
use super::transport::Incoming;
use crate::error::ChannelError;
use crate::handler::{Body, BoxFuture, MessageRequest, Reply, BINARY_ROUTE};
use crate::meter::{self, RouteLabel, Started};
use crate::protocol::close_code;

type Outcome = std::thread::Result<Result<Reply, ChannelError>>;

/// A message on its way through its handler: what its result answers, when it started (while
/// metrics are on), and its span (boxed, only while traces want one), so that the common path
/// moves and drops little more than the answer's identity.
struct InFlight {
    answering: Answering,
    started: Started,
    span: Option<Box<tracing::Span>>,
}

/// Whether a message span can be recorded by anyone: a tracing subscriber (which the span
/// macro then asks), or, without one, a `log` logger at debug level (tracing's `log`
/// fallback). Otherwise the macro would still evaluate the span's fields for that fallback, on
/// every message, to throw them away.
fn spans_wanted() -> bool {
    tracing::dispatcher::has_been_set()
        || tracing::log::max_level() >= tracing::log::LevelFilter::Debug
}

/// How long refusals are counted before a connection that keeps going over the rate is closed.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// A connection's message rate: a token bucket (`message_rate` per second, `message_burst` at
/// most), and the refusals of the current window. Plain numbers and `Instant` math: no lock,
/// no allocation.
struct RateLimit {
    tokens: f64,
    last: Instant,
    refused: u32,
    window_start: Instant,
}

/// What the rate limit says of one message.
#[derive(Debug, PartialEq, Eq)]
enum Admit {
    Yes,
    Refuse,
    /// Refused, and the connection has been refused too often: close it.
    Close,
}

impl RateLimit {
    fn new(burst: u32, now: Instant) -> Self {
        RateLimit {
            tokens: f64::from(burst),
            last: now,
            refused: 0,
            window_start: now,
        }
    }

    fn admit(&mut self, rate: u32, burst: u32, close_after: u32, now: Instant) -> Admit {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Admit::Yes;
        }
        if now.saturating_duration_since(self.window_start) > RATE_WINDOW {
            self.window_start = now;
            self.refused = 0;
        }
        self.refused = self.refused.saturating_add(1);
        if self.refused > close_after {
            Admit::Close
        } else {
            Admit::Refuse
        }
    }
}

pub(crate) struct Connection<S: 'static> {
    def: Rc<ChannelDef<S>>,
    channel: Channel<S>,
    inbound: VecDeque<Inbound>,
    busy: bool,
    incoming_done: bool,
    disconnected: bool,
    rate: RateLimit,
    /// The connection's span (channel, id, peer): the parent of its messages' spans.
    span: tracing::Span,
    _open: OpenGuard,
}

impl<S: 'static> Connection<S> {
    /// Starts the connection's actor. The source and the sink go straight to its context (a
    /// stream and a future it polls), not through fields: those would keep their size in
    /// every idle connection after the start.
    pub(crate) fn start(
        def: Rc<ChannelDef<S>>,
        channel: Channel<S>,
        source: Source,
        sink: Sink,
        open: OpenGuard,
    ) {
        Connection::create(move |ctx| {
            ctx.add_stream(source);
            ctx.spawn(
                actix::fut::wrap_future::<_, Self>(sink).map(|(), act, ctx| {
                    if act.channel.outbound().close_sent() && !act.incoming_done {
                        // Wait for the client's close frame (the stream then ends), within bounds.
                        act.stop_after_close_timeout(ctx);
                    } else {
                        ctx.stop();
                    }
                }),
            );
            Connection::new(def, channel, open)
        });
    }

    fn new(def: Rc<ChannelDef<S>>, channel: Channel<S>, open: OpenGuard) -> Self {
        let rate = RateLimit::new(def.config.message_burst, Instant::now());
        let span = tracing::debug_span!(
            "connection",
            channel = &*def.path,
            id = %channel.id(),
            peer = tracing::field::Empty,
        );
        if !span.is_disabled() {
            if let Some(ip) = channel.entry().source_ip() {
                span.record("peer", tracing::field::display(ip));
            }
        }
        Connection {
            def,
            channel,
            inbound: VecDeque::new(),
            busy: false,
            incoming_done: false,
            disconnected: false,
            rate,
            span,
            _open: open,
        }
    }

    fn push(&self, frame: ByteString) {
        // Replies are essential: the client waits for them. A client that never reads ends up
        // closed by the outbound queue's policy; nothing to do here when that happens.
        let _ = self.channel.outbound().push_text(frame, Class::Essential);
    }

    fn push_error(&self, answering: &Answering, err: &ChannelError) {
        self.channel.hub().note_error(&self.def.path, err.code());
        self.push(answering.error_frame(self.channel.id(), self.channel.route_field(), err));
    }

    /// Starts the next queued messages until one has to wait.
    fn pump(&mut self, ctx: &mut actix::Context<Self>) {
        while !self.busy {
            let Some(item) = self.inbound.pop_front() else {
                // Waiting messages are rare: an idle connection keeps no queue memory.
                if self.inbound.capacity() > 0 {
                    self.inbound = VecDeque::new();
                }
                return;
            };
            self.run(item, ctx);
        }
    }

    /// Handles one message; marks the connection busy if its handler has to wait.
    fn run(&mut self, item: Inbound, ctx: &mut actix::Context<Self>) {
        let started = meter::start();
        let Some((flight, fut)) = self.dispatch(item, started) else {
            return;
        };
        // Entering a span costs something even when nobody records it (its `log` fallback
        // checks on every poll): only a span someone records wraps the handler.
        let fut = match flight.span.as_deref() {
            Some(span) if !span.is_disabled() => Box::pin(fut.instrument(span.clone())),
            _ => fut,
        };
        let mut fut = AssertUnwindSafe(fut).catch_unwind();
        // Most handlers finish without waiting: poll once here and skip the spawn. A future
        // that is not ready re-registers the real waker when the context polls it.
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        match Pin::new(&mut fut).poll(&mut cx) {
            Poll::Ready(outcome) => self.finish(&flight, outcome),
            Poll::Pending => {
                self.busy = true;
                ctx.spawn(fut.into_actor(self).map(move |outcome, act, ctx| {
                    act.busy = false;
                    act.finish(&flight, outcome);
                    act.pump(ctx);
                }));
            }
        }
    }

    /// Decodes and routes one message. `None` when it was answered on the spot (an error
    /// frame); otherwise the handler's future.
    fn dispatch(
        &self,
        item: Inbound,
        started: Started,
    ) -> Option<(InFlight, BoxFuture<Result<Reply, ChannelError>>)> {
        match self.def.router.dispatch(item) {
            Dispatch::Call {
                handler,
                body,
                answering,
                route,
            } => {
                let span = spans_wanted().then(|| {
                    let route = match route {
                        RouteLabel::Named(name) => Some(&**name),
                        RouteLabel::Binary => Some(BINARY_ROUTE),
                        _ => answering.route(),
                    };
                    Box::new(tracing::debug_span!(
                        parent: &self.span,
                        "message",
                        route = route.unwrap_or("$default"),
                        r#ref = answering.reference(),
                        outcome = tracing::field::Empty,
                    ))
                });
                let flight = InFlight {
                    answering,
                    started,
                    span,
                };
                self.call(handler, body, flight)
            }
            Dispatch::Reject {
                answering,
                error,
                route,
            } => {
                self.def
                    .meters
                    .message(&self.def.path, route, Err(&error), started);
                tracing::debug!(parent: &self.span, code = error.code(), "message refused");
                self.push_error(&answering, &error);
                None
            }
        }
    }

    fn call(
        &self,
        handler: &Handler<S>,
        body: Body,
        flight: InFlight,
    ) -> Option<(InFlight, BoxFuture<Result<Reply, ChannelError>>)> {
        let req = MessageRequest::new(self.channel.clone(), body);
        // Creating the future runs no user code for generated handlers, but a hand-written
        // `call` might panic right away.
        let called = {
            let _in = flight
                .span
                .as_deref()
                .filter(|span| !span.is_disabled())
                .map(|span| span.enter());
            std::panic::catch_unwind(AssertUnwindSafe(|| handler.call(req)))
        };
        match called {
            Ok(fut) => Some((flight, fut)),
            Err(panic) => {
                self.finish(&flight, Err(panic));
                None
            }
        }
    }

    fn finish(&self, flight: &InFlight, outcome: Outcome) {
        let answering = &flight.answering;
        let error = match outcome {
            Ok(Ok(Reply(Some(Frame::Text(t))))) => {
                self.push(t);
                None
            }
            Ok(Ok(Reply(Some(frame)))) => {
                let _ = self.channel.outbound().push(frame, Class::Essential);
                None
            }
            Ok(Ok(Reply(None))) => None,
            Ok(Err(err)) => Some(err),
            Err(panic) => Some(ChannelError::from_panic("handler", &*panic)),
        };
        // A message that started before metrics did is not counted.
        if flight.started.is_timed() {
            self.def.meters.message(
                &self.def.path,
                self.def.router.label_of(answering),
                error.as_ref().map_or(Ok(()), Err),
                flight.started,
            );
        }
        if let Some(span) = flight.span.as_deref().filter(|s| !s.is_disabled()) {
            span.record("outcome", error.as_ref().map_or("ok", |e| e.code()));
        }
        if let Some(err) = error {
            self.push_error(answering, &err);
        }
    }

    fn begin_close(&self, ctx: &mut actix::Context<Self>, code: u16, reason: &str) {
        if self.channel.outbound().close(code, reason) {
            self.stop_after_close_timeout(ctx);
        }
    }

    fn stop_after_close_timeout(&self, ctx: &mut actix::Context<Self>) {
        ctx.run_later(self.def.config.close_timeout, |_, ctx| ctx.stop());
    }

    /// Runs the disconnect handler, once.
    fn disconnect(&mut self) {
        if std::mem::replace(&mut self.disconnected, true) {
            return;
        }
        let code = self
            .channel
            .outbound()
            .closed_with()
            .map_or(close_code::ABNORMAL, |(code, _)| code);
        meter::closed(&self.def.path, code);
        tracing::debug!(parent: &self.span, code, "disconnected");
        self.channel.outbound().shut();
        self.channel.stop_tokens();
        super::heartbeat::ended(&self.def);
        let hub = self.channel.hub().clone();
        let id = self.channel.id();
        let Some(h) = self.def.on_disconnect.clone() else {
            hub.deregister(id);
            return;
        };
        let req = MessageRequest::new(self.channel.clone(), Body::None);
        let called = std::panic::catch_unwind(AssertUnwindSafe(|| h.call(req)));
        // The connection leaves its topics and the registry now; the handler can still publish
        // a farewell to them (publishing needs no subscription).
        hub.deregister(id);
        let Ok(fut) = called else {
            tracing::error!("connection {id}: disconnect handler panicked");
            return;
        };
        let mut fut = AssertUnwindSafe(fut).catch_unwind();
        // Poll once right here: on server shutdown the arbiter is tearing down and a spawned
        // task would never run, so whatever the handler does without waiting happens now.
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        match Pin::new(&mut fut).poll(&mut cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) => tracing::error!("connection {id}: disconnect handler panicked"),
            Poll::Pending if std::thread::panicking() => {
                tracing::warn!("connection {id}: disconnect handler cut short by a panic");
            }
            Poll::Pending => {
                let spawn = AssertUnwindSafe(move || {
                    actix_rt::spawn(async move {
                        if fut.await.is_err() {
                            tracing::error!("connection {id}: disconnect handler panicked");
                        }
                    })
                });
                if std::panic::catch_unwind(spawn).is_err() {
                    tracing::warn!(
                        "connection {id}: runtime shut down before the disconnect handler finished"
                    );
                }
            }
        }
    }
}

impl<S: 'static> Actor for Connection<S> {
    type Context = actix::Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        meter::opened(&self.def.path);
        tracing::debug!(parent: &self.span, "connected");
        if let Some(hook) = self.def.on_open.clone() {
            hook(&self.channel);
        }
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.disconnect();
    }
}

impl<S: 'static> Drop for Connection<S> {
    fn drop(&mut self) {
        // An actor dropped without being stopped (its arbiter went away) still disconnects.
        self.disconnect();
    }
}

impl<S: 'static> StreamHandler<Incoming> for Connection<S> {
    fn handle(&mut self, item: Incoming, ctx: &mut Self::Context) {
        self.channel.entry().touch();
        let closing = self.channel.outbound().is_closing();
        match item {
            Incoming::Text(_) | Incoming::Binary(_) if closing => {}
            Incoming::Text(t) => self.enqueue(Inbound::Text(t), ctx),
            Incoming::Binary(b) => self.enqueue(Inbound::Binary(b), ctx),
            Incoming::Ping(payload) => {
                let _ = self
                    .channel
                    .outbound()
                    .push(Frame::Pong(payload), Class::Essential);
            }
            Incoming::Pong => {}
            Incoming::Close(reason) => {
                // Answer with the same code (RFC 6455 §5.5.1); the stream ends after it.
                let code = reason.map_or(close_code::NORMAL, |(code, _)| code);
                let code = if code == 1005 || code == 1006 {
                    close_code::NORMAL
                } else {
                    code
                };
                self.begin_close(ctx, code, "");
            }
            Incoming::TooBig => {
                tracing::debug!("connection {}: frame too big", self.channel.id());
                self.begin_close(ctx, close_code::TOO_BIG, "message too big");
            }
            // The stream ends right after this item: `finished` stops the actor, and the
            // close is recorded as abnormal (1006), as no close frame was exchanged.
            Incoming::Gone(e) => {
                tracing::debug!("connection {}: socket gone: {e}", self.channel.id());
            }
            Incoming::Broken(e) => {
                tracing::debug!("connection {}: protocol error: {e}", self.channel.id());
                self.begin_close(ctx, e.code, e.reason);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        self.incoming_done = true;
        // A close frame still on its way out (after a protocol error, say) is let go first;
        // the writer stops the actor once it is handed to the socket.
        let out = self.channel.outbound();
        if !out.is_closing() || out.close_sent() {
            ctx.stop();
        }
    }
}

impl<S: 'static> Connection<S> {
    /// Counts a message refused before routing.
    fn refused(&self, err: &ChannelError) {
        self.def.meters.message(
            &self.def.path,
            RouteLabel::Refused,
            Err(err),
            Started::none(),
        );
    }

    /// Every message, text or binary, enters here: the rate limit comes first.
    fn enqueue(&mut self, item: Inbound, ctx: &mut actix::Context<Self>) {
        let cfg = &self.def.config;
        if cfg.message_rate > 0 {
            let (rate, burst, close_after) = (
                cfg.message_rate,
                cfg.message_burst,
                cfg.rate_limited_close_after,
            );
            match self.rate.admit(rate, burst, close_after, Instant::now()) {
                Admit::Yes => {}
                Admit::Refuse => {
                    self.refused(&ChannelError::RateLimited);
                    self.push_error(
                        &self.def.router.answering(&item),
                        &ChannelError::RateLimited,
                    );
                    return;
                }
                Admit::Close => {
                    tracing::debug!(parent: &self.span, "rate limited: closing");
                    self.refused(&ChannelError::RateLimited);
                    self.push_error(
                        &self.def.router.answering(&item),
                        &ChannelError::RateLimited,
                    );
                    self.begin_close(ctx, close_code::POLICY, "rate limited");
                    return;
                }
            }
        }
        if self.inbound.len() >= self.def.config.inbound_capacity {
            // Refused, but still answered: a client waiting on its `ref` must hear about it.
            self.refused(&ChannelError::Overloaded);
            self.push_error(&self.def.router.answering(&item), &ChannelError::Overloaded);
            return;
        }
        if self.busy {
            self.inbound.push_back(item);
        } else {
            self.run(item, ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_refuses_over_the_rate_and_closes_a_client_that_keeps_going() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(3, t0);
        // The burst passes at once, the next is refused.
        for _ in 0..3 {
            assert_eq!(r.admit(10, 3, 2, t0), Admit::Yes);
        }
        assert_eq!(r.admit(10, 3, 2, t0), Admit::Refuse);
        // A tenth of a second later one token is back (10 per second).
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(r.admit(10, 3, 2, t1), Admit::Yes);
        assert_eq!(r.admit(10, 3, 2, t1), Admit::Refuse);
        // Third refusal in the window: more than 2.
        assert_eq!(r.admit(10, 3, 2, t1), Admit::Close);
        // After the window, refusals count afresh; a long pause refills only up to the burst.
        let t2 = t1 + RATE_WINDOW + Duration::from_secs(1);
        for _ in 0..3 {
            assert_eq!(r.admit(10, 3, 2, t2), Admit::Yes);
        }
        assert_eq!(r.admit(10, 3, 2, t2), Admit::Refuse);
    }
}
