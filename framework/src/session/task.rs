//! The session task: it owns the user's struct and takes one event at a time (a message, a
//! timer tick, a call, a publication, the stop); and the channel handlers that feed it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::HttpRequest;
use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};

use crate::channel::{Channel, ChannelRoute};
use crate::engine::Publication;
use crate::error::ChannelError;
use crate::handler::{
    BoxFuture, ConnectHandler, DisconnectHandler, MessageHandler, MessageRequest, Reply,
};

use super::ctx::*;
use super::host::{HostInner, SessionHost};
use super::*;

pub(super) struct CreateSession<T>(pub(super) std::marker::PhantomData<fn() -> T>);

impl<T: Session> ConnectHandler<SessionHost<T>> for CreateSession<T> {
    fn call(&self, req: HttpRequest) -> BoxFuture<Result<Option<SessionHost<T>>, ChannelError>> {
        Box::pin(async move {
            let state = T::create(req).await?;
            Ok(Some(SessionHost {
                inner: Rc::new(HostInner {
                    pending: RefCell::new(Some(state)),
                    events: RefCell::new(None),
                }),
            }))
        })
    }

    #[cfg(feature = "schema")]
    fn connect_query(&self) -> Option<crate::handler::describe::TypeDesc> {
        T::connect_query()
    }
}

/// One session route in the channel's table: hands the message and its method to the session
/// task and waits for the answer; the connection takes the next message only then, so
/// messages stay in order.
pub(super) struct Forward<T>(pub(super) SessionRoute<T>);

impl<T: Session> MessageHandler<SessionHost<T>> for Forward<T> {
    fn route(&self) -> &str {
        self.0.route
    }

    fn call(&self, req: SessionRequest<T>) -> BoxFuture<Result<Reply, ChannelError>> {
        let method = self.0.method;
        Box::pin(async move {
            let host = req
                .channel()
                .with_session(|h| h.cloned())
                .ok_or(ChannelError::Closed)?;
            let events = host.events().ok_or(ChannelError::Closed)?;
            let (tx, rx) = oneshot::channel();
            events
                .send(Event::Message(req, method, tx))
                .map_err(|_| ChannelError::Closed)?;
            rx.await.map_err(|_| ChannelError::Closed)?
        })
    }

    #[cfg(feature = "schema")]
    fn types(&self) -> Option<crate::handler::describe::RouteTypes> {
        T::route_types()
            .into_iter()
            .find(|(route, _)| *route == self.0.route)
            .map(|(_, types)| types)
    }
}

pub(super) struct EndSession;

impl<T: Session> DisconnectHandler<SessionHost<T>> for EndSession {
    fn call(&self, req: MessageRequest<SessionHost<T>>) -> BoxFuture<()> {
        Box::pin(async move {
            let Some(host) = req.channel().with_session(|h| h.cloned()) else {
                return;
            };
            let Some(events) = host.inner.events.borrow_mut().take() else {
                return;
            };
            let (tx, rx) = oneshot::channel();
            if events.send(Event::Stop(tx)).is_ok() {
                let _ = rx.await;
            }
        })
    }
}

/// Starts the session task once the socket is open.
pub(super) fn start<T: Session>(ch: &Channel<SessionHost<T>>) {
    let Some(host) = ch.with_session(|h| h.cloned()) else {
        return;
    };
    let Some(state) = host.inner.pending.borrow_mut().take() else {
        return;
    };
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let capacity = ch.outbound().capacity();
    let (pubs_tx, pubs_rx) = mpsc::channel(capacity);
    *host.inner.events.borrow_mut() = Some(events_tx.clone());
    let ctx = SessionCtx {
        inner: Rc::new(CtxInner {
            channel: ch.clone(),
            events: events_tx,
            sink: Arc::new(SessionSink {
                tx: pubs_tx,
                policy: ch.outbound().policy(),
                dropped: Default::default(),
            }),
            timers: RefCell::new(HashMap::new()),
            next_timer: Cell::new(1),
        }),
    };
    let driver = Driver {
        state: Some(state),
        ctx,
        disconnected: false,
    };
    actix_rt::spawn(driver.run(events_rx, pubs_rx));
}

/// Owns the session state. Its `Drop` makes sure `on_disconnect` runs even when the runtime
/// tears the task down (server shutdown).
pub(super) struct Driver<T: Session> {
    pub(super) state: Option<T>,
    pub(super) ctx: SessionCtx<T>,
    pub(super) disconnected: bool,
}

impl<T: Session> Driver<T> {
    pub(super) async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<Event<T>>,
        mut pubs: mpsc::Receiver<Publication>,
    ) {
        let ctx = self.ctx.clone();
        if let Some(state) = self.state.as_mut() {
            let res = std::panic::AssertUnwindSafe(state.on_connect(&ctx))
                .catch_unwind()
                .await;
            let err = match res {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.message()),
                Err(_) => Some("internal error".to_owned()),
            };
            if let Some(reason) = err {
                tracing::debug!("session {}: on_connect failed: {reason}", ctx.id());
                ctx.close_with(crate::protocol::close_code::POLICY, &reason);
            }
        }
        loop {
            // Client messages, ticks and the stop come first; publications fill the gaps.
            let next = std::future::poll_fn(|cx| {
                if let Poll::Ready(ev) = events.poll_recv(cx) {
                    return Poll::Ready(ev.map(Next::Event));
                }
                match pubs.poll_recv(cx) {
                    Poll::Ready(Some(p)) => Poll::Ready(Some(Next::Publication(p))),
                    Poll::Ready(None) | Poll::Pending => Poll::Pending,
                }
            })
            .await;
            let Some(state) = self.state.as_mut() else {
                return;
            };
            match next {
                None => break,
                Some(Next::Event(Event::Message(req, method, reply))) => {
                    let fut = std::panic::AssertUnwindSafe(method(state, &ctx, &req));
                    let out = match fut.catch_unwind().await {
                        Ok(r) => r,
                        Err(panic) => Err(ChannelError::from_panic("session handler", &*panic)),
                    };
                    let _ = reply.send(out);
                }
                Some(Next::Event(Event::Tick(id))) => ctx.fire(id, state),
                Some(Next::Event(Event::Call(f))) => {
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(state, &ctx)))
                        .is_err()
                    {
                        tracing::error!("session {}: call panicked", ctx.id());
                    }
                }
                Some(Next::Publication(p)) => {
                    let fut = state.on_publish(&ctx, p);
                    if std::panic::AssertUnwindSafe(fut)
                        .catch_unwind()
                        .await
                        .is_err()
                    {
                        tracing::error!("session {}: topic handler panicked", ctx.id());
                    }
                }
                Some(Next::Event(Event::Stop(done))) => {
                    self.disconnect().await;
                    let _ = done.send(());
                    return;
                }
            }
        }
        self.disconnect().await;
    }

    pub(super) async fn disconnect(&mut self) {
        if std::mem::replace(&mut self.disconnected, true) {
            return;
        }
        self.ctx.cancel_all();
        let ctx = self.ctx.clone();
        if let Some(state) = self.state.as_mut() {
            let fut = std::panic::AssertUnwindSafe(state.on_disconnect(&ctx)).catch_unwind();
            if fut.await.is_err() {
                tracing::error!("session {}: on_disconnect panicked", ctx.id());
            }
        }
    }
}

pub(super) enum Next<T> {
    Event(Event<T>),
    Publication(Publication),
}

impl<T: Session> Drop for Driver<T> {
    fn drop(&mut self) {
        if self.disconnected {
            return;
        }
        self.disconnected = true;
        self.ctx.cancel_all();
        let ctx = self.ctx.clone();
        let Some(state) = self.state.as_mut() else {
            return;
        };
        // The runtime is going away: whatever on_disconnect does without waiting happens now.
        let mut fut = std::panic::AssertUnwindSafe(state.on_disconnect(&ctx)).catch_unwind();
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        if !matches!(Pin::new(&mut fut).poll(&mut cx), Poll::Ready(Ok(()))) {
            tracing::warn!("session {}: on_disconnect cut short by shutdown", ctx.id());
        }
    }
}

impl ChannelRoute<()> {
    /// A channel whose connections each run a `U` session.
    pub fn session<U: Session>(path: impl Into<String>) -> ChannelRoute<SessionHost<U>> {
        let route = ChannelRoute::<SessionHost<U>>::new(path)
            .on_connect(CreateSession::<U>(std::marker::PhantomData))
            .on_disconnect(EndSession)
            .on_open(|ch: &Channel<SessionHost<U>>| start::<U>(ch));
        U::routes().into_iter().fold(route, |route, r| {
            if r.route == BINARY_ROUTE {
                route.on_binary(Forward(r))
            } else {
                route.message(Forward(r))
            }
        })
    }
}
