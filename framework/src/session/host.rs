//! [`SessionHost`]: a session channel's per-connection value, the handle to the session
//! task.

use std::cell::RefCell;
use std::rc::Rc;

use tokio::sync::{mpsc, oneshot};

use super::ctx::{CallFn, Event, SessionCtx};
use super::Session;
use crate::error::ChannelError;

/// A session channel's per-connection value: the handle to the session task.
pub struct SessionHost<T> {
    pub(super) inner: Rc<HostInner<T>>,
}

pub(super) struct HostInner<T> {
    /// The state between `create` and the socket opening.
    pub(super) pending: RefCell<Option<T>>,
    pub(super) events: RefCell<Option<mpsc::UnboundedSender<Event<T>>>>,
}

impl<T> Clone for SessionHost<T> {
    fn clone(&self) -> Self {
        SessionHost {
            inner: self.inner.clone(),
        }
    }
}

impl<T> SessionHost<T> {
    pub(super) fn events(&self) -> Option<mpsc::UnboundedSender<Event<T>>> {
        self.inner.events.borrow().clone()
    }
}

impl<T: Session> SessionHost<T> {
    /// Runs `f` with the session's state, in turn with the session's other events, and returns
    /// what it returns. This is how stateless handlers mounted on a session channel read and
    /// update the per-connection state.
    ///
    /// ```
    /// use switchboard::prelude::*;
    /// use switchboard::session::SessionHost;
    ///
    /// #[switchboard::session]
    /// #[derive(Default)]
    /// struct User { nick: Option<String> }
    ///
    /// #[switchboard::session_handlers]
    /// impl User {}
    ///
    /// /// A stateless handler on the session's channel.
    /// #[switchboard::message("whoami")]
    /// async fn whoami(ch: Channel<SessionHost<User>>) -> Result<Option<String>, ChannelError> {
    ///     let host = ch.session().ok_or(ChannelError::Closed)?;
    ///     host.call(|user, _ctx| user.nick.clone()).await
    /// }
    ///
    /// let route = ChannelRoute::session::<User>("/ws").message(whoami);
    /// ```
    pub async fn call<R, F>(&self, f: F) -> Result<R, ChannelError>
    where
        R: 'static,
        F: FnOnce(&mut T, &SessionCtx<T>) -> R + 'static,
    {
        let events = self.events().ok_or(ChannelError::Closed)?;
        let (tx, rx) = oneshot::channel();
        let call: CallFn<T> = Box::new(move |state, ctx| {
            let _ = tx.send(f(state, ctx));
        });
        events
            .send(Event::Call(call))
            .map_err(|_| ChannelError::Closed)?;
        rx.await.map_err(|_| ChannelError::Closed)
    }
}
