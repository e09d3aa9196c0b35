//! [`SessionCtx`]: a session's view of its connection, and its timers.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::channel::outbound::{Class, SlowConsumerPolicy};
use crate::channel::Channel;
use crate::engine::{Delivered, DeliverySink, Publication, Subscriber};
use crate::error::ChannelError;
use crate::hub::Hub;
use crate::id::ConnectionId;
use crate::topics::{local_topics, Local};

use super::*;

pub(super) type TimerFn<T> = Box<dyn FnMut(&mut T, &SessionCtx<T>)>;

pub(super) struct Timer<T> {
    pub(super) f: Option<TimerFn<T>>,
    pub(super) repeat: bool,
    pub(super) pending: Rc<Cell<bool>>,
    pub(super) task: actix_rt::task::JoinHandle<()>,
}

/// A timer started by [`SessionCtx::run_interval`] or [`SessionCtx::run_later`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerHandle(u64);

/// A session's view of its connection: identity, sending, topics and timers.
pub struct SessionCtx<T> {
    pub(super) inner: Rc<CtxInner<T>>,
}

pub(super) struct CtxInner<T> {
    pub(super) channel: Channel<SessionHost<T>>,
    pub(super) events: mpsc::UnboundedSender<Event<T>>,
    pub(super) sink: Arc<SessionSink>,
    pub(super) timers: RefCell<HashMap<u64, Timer<T>>>,
    pub(super) next_timer: Cell<u64>,
}

impl<T> Clone for SessionCtx<T> {
    fn clone(&self) -> Self {
        SessionCtx {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Session> SessionCtx<T> {
    /// The connection's id.
    pub fn id(&self) -> ConnectionId {
        self.inner.channel.id()
    }

    /// The connection as stateless handlers see it (headers, query, path parameters, peer
    /// address, app data).
    pub fn channel(&self) -> &Channel<SessionHost<T>> {
        &self.inner.channel
    }

    /// The hub.
    pub fn hub(&self) -> &Hub {
        self.inner.channel.hub()
    }

    /// Pushes `{"event":event,"data":data}` to the client.
    pub fn send<D: Serialize + ?Sized>(&self, event: &str, data: &D) -> Result<(), ChannelError> {
        self.inner.channel.send(event, data)
    }

    /// Hands a publication to the client as a topic frame.
    pub fn forward(&self, publication: &Publication) {
        let _ = self
            .inner
            .channel
            .outbound()
            .push_text(publication.frame.clone(), Class::Droppable);
    }

    /// Closes the connection normally.
    pub fn close(&self) {
        self.inner.channel.close();
    }

    /// Closes the connection with a code and reason.
    pub fn close_with(&self, code: u16, reason: &str) {
        self.inner.channel.close_with(code, reason);
    }

    /// The session as a topic subscriber: publications go to its topic handler (or to the
    /// client as topic frames when it has none).
    pub(super) fn local(&self) -> Result<Local<'_>, ChannelError> {
        Ok(self.inner.channel.local_as(Subscriber {
            id: self.id(),
            sink: self.inner.sink.clone(),
        }))
    }

    /// Publications dropped because the session's topic queue was full.
    pub fn dropped_publications(&self) -> u64 {
        self.inner
            .sink
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs `f` with the session state every `every`, between other events, until cancelled
    /// or the connection ends. Ticks that fall due while the session is busy collapse into one.
    pub fn run_interval<F>(&self, every: Duration, f: F) -> TimerHandle
    where
        F: FnMut(&mut T, &SessionCtx<T>) + 'static,
    {
        self.add_timer(every, true, Box::new(f))
    }

    /// Runs `f` with the session state once, after `delay`.
    pub fn run_later<F>(&self, delay: Duration, f: F) -> TimerHandle
    where
        F: FnOnce(&mut T, &SessionCtx<T>) + 'static,
    {
        let mut f = Some(f);
        self.add_timer(
            delay,
            false,
            Box::new(move |s, c| {
                if let Some(f) = f.take() {
                    f(s, c)
                }
            }),
        )
    }

    /// Stops a timer. Returns false if it had already finished.
    pub fn cancel(&self, timer: TimerHandle) -> bool {
        match self.inner.timers.borrow_mut().remove(&timer.0) {
            Some(t) => {
                t.task.abort();
                true
            }
            None => false,
        }
    }

    pub(super) fn add_timer(&self, period: Duration, repeat: bool, f: TimerFn<T>) -> TimerHandle {
        let id = self.inner.next_timer.get();
        self.inner.next_timer.set(id + 1);
        let pending = Rc::new(Cell::new(false));
        let events = self.inner.events.clone();
        let flag = pending.clone();
        let task = actix_rt::spawn(async move {
            let start = actix_rt::time::Instant::now() + period;
            let mut interval =
                actix_rt::time::interval_at(start, period.max(Duration::from_millis(1)));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                if !flag.replace(true) && events.send(Event::Tick(id)).is_err() {
                    return;
                }
                if !repeat {
                    return;
                }
            }
        });
        self.inner.timers.borrow_mut().insert(
            id,
            Timer {
                f: Some(f),
                repeat,
                pending,
                task,
            },
        );
        TimerHandle(id)
    }

    /// Runs a due timer's callback.
    pub(super) fn fire(&self, id: u64, state: &mut T) {
        // Taken out while it runs: the callback may start or cancel timers.
        let f = {
            let mut timers = self.inner.timers.borrow_mut();
            let Some(t) = timers.get_mut(&id) else { return };
            t.pending.set(false);
            t.f.take()
        };
        let Some(mut f) = f else { return };
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(state, self))).is_err() {
            tracing::error!("session {}: timer callback panicked", self.id());
        }
        let mut timers = self.inner.timers.borrow_mut();
        match timers.get_mut(&id) {
            Some(t) if t.repeat => t.f = Some(f),
            Some(_) => {
                timers.remove(&id);
            }
            None => {}
        }
    }

    pub(super) fn cancel_all(&self) {
        for (_, t) in self.inner.timers.borrow_mut().drain() {
            t.task.abort();
        }
    }
}

local_topics!(impl<T: Session> SessionCtx<T>);

pub(super) type CallFn<T> = Box<dyn FnOnce(&mut T, &SessionCtx<T>)>;

pub(super) enum Event<T> {
    Message(
        SessionRequest<T>,
        SessionMethod<T>,
        oneshot::Sender<Result<Reply, ChannelError>>,
    ),
    Call(CallFn<T>),
    Tick(u64),
    Stop(oneshot::Sender<()>),
}

/// Where a session's topic publications go: its own bounded queue, under the channel's
/// slow-consumer policy.
pub(super) struct SessionSink {
    pub(super) tx: mpsc::Sender<Publication>,
    pub(super) policy: SlowConsumerPolicy,
    pub(super) dropped: std::sync::atomic::AtomicU64,
}

impl DeliverySink for SessionSink {
    fn deliver(&self, p: &Publication) -> Delivered {
        match self.tx.try_send(p.clone()) {
            Ok(()) => Delivered::Queued,
            Err(mpsc::error::TrySendError::Closed(_)) => Delivered::Gone,
            Err(mpsc::error::TrySendError::Full(_)) => match self.policy {
                SlowConsumerPolicy::DropNewest => {
                    self.dropped
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Delivered::Dropped
                }
                // A session that cannot keep up with its topics is treated like a client that
                // cannot: the broker forgets it (the connection stays, its topics go quiet).
                SlowConsumerPolicy::Close { .. } => Delivered::Gone,
            },
        }
    }
}
