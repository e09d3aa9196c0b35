//! Graceful drain: close every connection with a close frame before the process stops, in
//! batches, so that a deploy drops nobody and clients do not all reconnect at once.
//!
//! Without a drain, stopping an actix-web server leaves WebSockets open until its shutdown
//! timeout ends, then cuts them without a close frame (the client sees 1006). With one, on
//! `SIGTERM` (or `SIGINT`), or when [`Drain::run`] is called:
//!
//! 1. the hub starts refusing upgrades (HTTP 503, code `draining`), so that a load balancer's
//!    next attempt lands on another node, and [`Hub::is_draining`] turns true for health
//!    checks;
//! 2. open connections get a close frame, 1012 (service restart) by default, `batch_size` of
//!    them every `batch_interval` (Phoenix's drainer: 10,000 every 2 s), so that they
//!    reconnect spread out. Frames already queued go out first; nothing is written after the
//!    close frame. Disconnect handlers run once per connection, as on any close;
//! 3. the drain ends when the last connection has closed, or when the window ends (whatever
//!    is left is then closed at once); then the server stops gracefully.
//!
//! The shipped JS client reconnects after 1012 and 1001 with a random delay and resumes its
//! subscriptions with recovery: on topics with history a rolling deploy loses no message.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::hub::Hub;
use crate::protocol::close_code;

/// How to drain one or more hubs' connections. See the [module docs](self).
///
/// ```no_run
/// use actix_web::{App, HttpServer};
/// use switchboard::drain::Drain;
/// use switchboard::prelude::*;
///
/// #[actix_web::main]
/// async fn main() -> std::io::Result<()> {
///     let hub = Hub::new();
///     let channel = ChannelRoute::<()>::new("/ws");
///     let app_hub = hub.clone();
///     let server = HttpServer::new(move || {
///         App::new().app_data(app_hub.clone()).service(channel.clone())
///     })
///     // The drain handles the signals, and stops the server once connections are closed.
///     .disable_signals()
///     .bind("127.0.0.1:8080")?
///     .run();
///     Drain::new(hub).serve(server).await
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Drain {
    hubs: Vec<Hub>,
    code: u16,
    reason: Cow<'static, str>,
    batch_size: usize,
    batch_interval: Duration,
    window: Duration,
}

/// What a drain did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrainReport {
    /// Connections sent a close frame by the drain.
    pub closed: usize,
    /// Connections still open when the drain ended (the window ran out).
    pub remaining: usize,
    /// How long it took.
    pub elapsed: Duration,
}

impl Drain {
    /// A drain of `hub`'s connections with the defaults: close code 1012 (`service restart`),
    /// batches of 10,000 every 2 seconds, a 30-second window.
    pub fn new(hub: Hub) -> Self {
        Drain {
            hubs: vec![hub],
            code: close_code::SERVICE_RESTART,
            reason: Cow::Borrowed("service restart"),
            batch_size: 10_000,
            batch_interval: Duration::from_secs(2),
            window: Duration::from_secs(30),
        }
    }

    /// Drains this hub's connections too (an app with several hubs).
    pub fn hub(mut self, hub: Hub) -> Self {
        self.hubs.push(hub);
        self
    }

    /// The close code and reason. Default: 1012, `service restart`. Use 1001 (going away)
    /// for a node that is leaving for good; a code the client treats as final (1000, 1008,
    /// 4000-4099 for the shipped JS client) keeps clients from reconnecting.
    pub fn code(mut self, code: u16, reason: impl Into<Cow<'static, str>>) -> Self {
        self.code = code;
        self.reason = reason.into();
        self
    }

    /// Connections closed per batch, at least 1. Default: 10,000.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// Time between batches. Default: 2 s.
    pub fn batch_interval(mut self, every: Duration) -> Self {
        self.batch_interval = every;
        self
    }

    /// The longest a drain takes: at its end, connections not yet closed get their close frame
    /// at once, and the drain returns without waiting for them. Default: 30 s. Set the
    /// server's own `shutdown_timeout` a little longer, so that it does not cut connections
    /// first.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Drains now: refuses new connections, closes the open ones in batches, and resolves when
    /// they are gone or the window has ended. The hubs stay draining afterwards (a drained
    /// node is meant to stop).
    pub async fn run(&self) -> DrainReport {
        let start = Instant::now();
        let deadline = start + self.window;
        let reason: Arc<str> = Arc::from(&*self.reason);
        for hub in &self.hubs {
            hub.begin_drain(self.code, reason.clone());
        }
        crate::meter::draining(true);
        let open = || self.hubs.iter().map(Hub::connection_count).sum::<usize>();
        tracing::info!(
            connections = open(),
            "draining: closing connections with {} in batches of {} every {:?}",
            self.code,
            self.batch_size,
            self.batch_interval
        );
        let mut closed = 0;
        loop {
            // Batches continue until a pass finds nobody left to close.
            let mut batch = 0;
            for hub in &self.hubs {
                batch += hub.close_some(self.batch_size - batch, self.code, &reason);
                if batch == self.batch_size {
                    break;
                }
            }
            closed += batch;
            if batch < self.batch_size {
                break;
            }
            let next = Instant::now() + self.batch_interval;
            if next >= deadline {
                // Out of time for batches: the rest now.
                for hub in &self.hubs {
                    closed += hub.close_some(usize::MAX, self.code, &reason);
                }
                break;
            }
            actix_rt::time::sleep_until(next.into()).await;
        }
        // Wait for the closing handshakes (each bounded by the channel's close timeout).
        for hub in &self.hubs {
            loop {
                let left = hub.left();
                if hub.connection_count() == 0 {
                    break;
                }
                if tokio::time::timeout_at(deadline.into(), left)
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
        crate::meter::draining(false);
        let report = DrainReport {
            closed,
            remaining: open(),
            elapsed: start.elapsed(),
        };
        tracing::info!(
            closed = report.closed,
            remaining = report.remaining,
            "drained in {:?}",
            report.elapsed
        );
        report
    }

    /// Drains, then stops the server gracefully: what to call instead of
    /// `ServerHandle::stop(true)` when the app decides itself when to stop (a `preStop` hook,
    /// an admin command). Stopping the server directly would cut its WebSockets without a
    /// close frame once its shutdown timeout ends.
    pub async fn stop(&self, server: &actix_web::dev::ServerHandle) -> DrainReport {
        let report = self.run().await;
        server.stop(true).await;
        report
    }

    /// Runs `server` until it stops; on `SIGTERM` or `SIGINT` (Ctrl-C), drains first, then
    /// stops it gracefully. Build the server with `.disable_signals()`: actix-web's own
    /// handling would otherwise stop accepting requests at once and, on `SIGINT`, cut every
    /// connection before the drain.
    pub async fn serve(self, server: actix_web::dev::Server) -> std::io::Result<()> {
        let handle = server.handle();
        let mut server = std::pin::pin!(server);
        let signal = std::pin::pin!(shutdown_signal());
        match futures_util::future::select(server.as_mut(), signal).await {
            futures_util::future::Either::Left((done, _)) => return done,
            futures_util::future::Either::Right(((), _)) => {}
        }
        let drained = std::pin::pin!(self.run());
        // The server keeps serving (health checks, other routes) while connections drain.
        match futures_util::future::select(server.as_mut(), drained).await {
            futures_util::future::Either::Left((done, _)) => return done,
            futures_util::future::Either::Right((_, _)) => {}
        }
        let stopping = handle.stop(true);
        let (done, ()) = futures_util::future::join(server, stopping).await;
        done
    }
}

/// Resolves on the first `SIGTERM` or `SIGINT`.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use actix_rt::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                let term = std::pin::pin!(term.recv());
                let int = std::pin::pin!(actix_rt::signal::ctrl_c());
                futures_util::future::select(term, int).await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM ({e}); draining on Ctrl-C only");
                let _ = actix_rt::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = actix_rt::signal::ctrl_c().await;
    }
}
