//! A built channel: what its connections share.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix_web::HttpRequest;

use super::config::ChannelConfig;
use super::handle::Channel;
use super::router::Router;
use crate::handler::{ConnectHandler, DisconnectHandler};
use crate::hub::ConnEntry;

/// Everything a channel's connections share: routes, hooks, config, the open-connection count.
pub(crate) struct ChannelDef<S> {
    pub(crate) path: Arc<str>,
    /// One request that reached this channel on this worker, kept for its app data: every
    /// request to the same resource in the same worker sees the same app data, so connections
    /// need not keep their own request (and its header table) alive.
    pub(crate) app: RefCell<Option<HttpRequest>>,
    /// This worker's connections, for the heartbeat.
    pub(crate) beats: Rc<RefCell<super::beats::Beats<ConnEntry>>>,
    pub(crate) beating: std::cell::Cell<bool>,
    pub(crate) config: ChannelConfig,
    pub(crate) router: Router<S>,
    pub(crate) on_connect: Option<Arc<dyn ConnectHandler<S>>>,
    pub(crate) on_disconnect: Option<Arc<dyn DisconnectHandler<S>>>,
    pub(crate) on_open: Option<OpenHook<S>>,
    pub(crate) open: Arc<AtomicUsize>,
    /// Names a connection's user from its session.
    pub(crate) user_key: Option<UserKey<S>>,
    /// This worker's metric series of the channel's routes, found once.
    pub(crate) meters: crate::meter::RouteMeters,
}

/// A channel's user key: the user of a session.
pub(crate) type UserKey<S> = Arc<dyn Fn(&S) -> String + Send + Sync>;

/// Runs in the connection actor once the socket is open.
pub(crate) type OpenHook<S> = Arc<dyn Fn(&Channel<S>) + Send + Sync>;

/// Counts a connection against its channel's cap for as long as it lives.
pub(crate) struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    pub(crate) fn acquire(open: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        let prev = open.fetch_add(1, Ordering::AcqRel);
        if prev >= max {
            open.fetch_sub(1, Ordering::AcqRel);
            None
        } else {
            Some(OpenGuard(open.clone()))
        }
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
