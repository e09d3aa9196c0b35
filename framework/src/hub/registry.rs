//! The registry of open connections: what the hub holds of each one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::HttpRequest;
use serde::Serialize;

use crate::channel::http_link::HttpLink;
use crate::channel::outbound::{Class, Frame, Outbound, Refused};
use crate::engine::{Delivered, DeliverySink, Publication, Subscriber};
use crate::error::ChannelError;
use crate::id::ConnectionId;
use crate::protocol::close_code;

/// What the hub knows of an open connection (the connections API's `GET`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConnectionInfo {
    /// The connection.
    pub id: ConnectionId,
    /// The channel's path pattern.
    pub channel: String,
    /// When it opened.
    pub connected_at: SystemTime,
    /// When it last sent something.
    pub last_active_at: SystemTime,
    /// The client's address.
    pub source_ip: Option<IpAddr>,
    /// The client's `User-Agent`.
    pub user_agent: Option<String>,
    /// Frames waiting in its outbound queue.
    pub queued: usize,
    /// Frames dropped for it under the drop-newest slow-consumer policy.
    pub dropped: u64,
    /// Its user key, on a channel that names users ([`ChannelRoute::user`](crate::ChannelRoute::user)).
    pub user: Option<String>,
}

/// What one connection may hold of topics and presence (from its channel's `ChannelConfig`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TopicLimits {
    /// Topics (subscriptions and presence) at once.
    pub(crate) max_topics: usize,
    /// Bytes of one topic name.
    pub(crate) max_topic_len: usize,
    /// Bytes of one presence entry's metadata, as JSON.
    pub(crate) max_presence_bytes: usize,
    /// Topics all connections of one user on this node hold together.
    pub(crate) max_user_topics: usize,
}

impl Default for TopicLimits {
    fn default() -> Self {
        TopicLimits {
            max_topics: 100,
            max_topic_len: 256,
            max_presence_bytes: 4096,
            max_user_topics: 1000,
        }
    }
}

impl TopicLimits {
    /// `bad_topic` for a name longer than the limit.
    pub(crate) fn check_name(&self, topic: &str) -> Result<(), ChannelError> {
        if topic.len() > self.max_topic_len {
            return Err(ChannelError::BadTopic {
                max: self.max_topic_len,
            });
        }
        Ok(())
    }

    /// `presence_too_large` for metadata whose JSON is longer than the limit. Counts the
    /// bytes without keeping them.
    pub(crate) fn check_presence<M: Serialize + ?Sized>(
        &self,
        meta: &M,
    ) -> Result<(), ChannelError> {
        struct Count(usize);
        impl std::io::Write for Count {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0 += buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut count = Count(0);
        serde_json::to_writer(&mut count, meta)?;
        if count.0 > self.max_presence_bytes {
            return Err(ChannelError::PresenceTooLarge {
                max: self.max_presence_bytes,
            });
        }
        Ok(())
    }
}

/// What the connections of one user on this node share: their topic count (for
/// `max_user_topics`). In the registry's user table while the user has connections here.
pub(crate) struct UserSlot {
    topics: AtomicUsize,
    /// Connections holding the slot; changed with the user table locked.
    conns: AtomicUsize,
}

/// A connection's user: its key and the slot its user's connections here share.
pub(crate) struct UserRef {
    pub(crate) key: Arc<str>,
    slot: Arc<UserSlot>,
    /// The slot was given back (once).
    released: AtomicBool,
}

/// The internal topic a user's connections listen on (see [`crate::engine::INTERNAL_PREFIX`]).
pub(crate) fn user_topic(user: &str) -> Arc<str> {
    Arc::from(format!("{}user:{user}", crate::engine::INTERNAL_PREFIX))
}

/// The internal topic an HTTP transport's stream listens on (see
/// [`crate::engine::INTERNAL_PREFIX`]): upstream batches that reached another node arrive
/// there, and its presence (one entry, keyed by the id) holds the hash of the secret.
pub(crate) fn conn_topic(id: ConnectionId) -> Arc<str> {
    Arc::from(format!("{}conn:{id}", crate::engine::INTERNAL_PREFIX))
}

/// Events on a user topic: `p:<event>` pushes `{"event":event,"data":data}` to each of the
/// user's connections, `c` closes them (data `{"code":..,"reason":..}`). Presence frames of the
/// topic (its entries count the user's connections) are not for clients.
pub(crate) const USER_PUSH: &str = "p:";
pub(crate) const USER_CLOSE: &str = "c";

/// Where a user topic's publications go: turned into pushes and closes on the connection.
pub(crate) struct UserSink(pub(crate) Arc<Outbound>);

/// The data of a user topic's close event.
#[derive(Serialize, serde::Deserialize)]
pub(crate) struct UserClose {
    pub(crate) code: u16,
    pub(crate) reason: String,
}

impl DeliverySink for UserSink {
    fn deliver(&self, d: &Publication) -> Delivered {
        if self.0.is_closing() {
            return Delivered::Gone;
        }
        if let Some(event) = d.event.strip_prefix(USER_PUSH) {
            let Ok(frame) = crate::protocol::encode_event(event, &*d.data) else {
                return Delivered::Dropped;
            };
            return self.0.deliver_text(frame);
        }
        if &*d.event == USER_CLOSE {
            let close: UserClose = match serde_json::from_str(d.data.get()) {
                Ok(c) => c,
                Err(_) => UserClose {
                    code: close_code::NORMAL,
                    reason: String::new(),
                },
            };
            self.0.close(close.code, &close.reason);
        }
        Delivered::Queued
    }
}

/// A connection as the hub holds it: its outbound queue, its topics and what the connections
/// API reports.
pub(crate) struct ConnEntry {
    pub(crate) out: Arc<Outbound>,
    /// Its user, on a channel that names users.
    pub(crate) user: Option<UserRef>,
    topics: Mutex<Vec<Arc<str>>>,
    pub(crate) limits: TopicLimits,
    /// The HTTP transport of a connection that uses it (set once, when it opens).
    pub(crate) link: OnceLock<Arc<HttpLink>>,
    /// Deregistered: its topics were taken for cleanup, and one recorded now is never cleaned.
    /// Written with `topics` locked.
    gone: AtomicBool,
    channel: Arc<str>,
    connected_at: SystemTime,
    last_active_ms: AtomicU64,
    source_ip: Option<IpAddr>,
    user_agent: Option<Box<str>>,
}

impl ConnEntry {
    pub(crate) fn new(
        out: Arc<Outbound>,
        channel: Arc<str>,
        req: &HttpRequest,
        limits: TopicLimits,
        user: Option<UserRef>,
    ) -> Self {
        let now = SystemTime::now();
        ConnEntry {
            out,
            user,
            topics: Mutex::new(Vec::new()),
            limits,
            link: OnceLock::new(),
            gone: AtomicBool::new(false),
            channel,
            connected_at: now,
            last_active_ms: AtomicU64::new(millis(now)),
            source_ip: req.peer_addr().map(|a| a.ip()),
            user_agent: req
                .headers()
                .get(actix_web::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(Into::into),
        }
    }

    fn lock_topics(&self) -> MutexGuard<'_, Vec<Arc<str>>> {
        self.topics.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn subscriber(&self, id: ConnectionId) -> Subscriber {
        Subscriber {
            id,
            sink: self.out.clone(),
        }
    }

    /// This connection's subscriber for its user topic: publications there become pushes
    /// and closes.
    pub(crate) fn user_subscriber(&self, id: ConnectionId) -> Subscriber {
        Subscriber {
            id,
            sink: Arc::new(UserSink(self.out.clone())),
        }
    }

    /// Records a topic; false when it was there already. `bad_topic` for a name over the
    /// limit, `too_many_topics` for a new topic beyond the connection's limit,
    /// `too_many_user_topics` beyond its user's.
    pub(crate) fn add_topic(&self, topic: Arc<str>) -> Result<bool, ChannelError> {
        self.limits.check_name(&topic)?;
        let mut t = self.lock_topics();
        if t.contains(&topic) {
            return Ok(false);
        }
        if t.len() >= self.limits.max_topics {
            return Err(ChannelError::TooManyTopics {
                max: self.limits.max_topics,
            });
        }
        if let Some(user) = &self.user {
            let max = self.limits.max_user_topics;
            let taken = user
                .slot
                .topics
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max).then_some(n + 1)
                });
            if taken.is_err() {
                return Err(ChannelError::TooManyUserTopics { max });
            }
        }
        if t.capacity() == 0 {
            // Most connections hold one topic: room for one, not the four a first push makes.
            t.reserve_exact(1);
        }
        t.push(topic);
        Ok(true)
    }

    /// Gives `n` topics back to the user's count.
    fn release_topics(&self, n: usize) {
        if let (Some(user), true) = (&self.user, n > 0) {
            let _ = user
                .slot
                .topics
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                    Some(t.saturating_sub(n))
                });
        }
    }

    /// Whether `topic` is recorded and will be cleaned up with the connection.
    pub(crate) fn has_topic(&self, topic: &Arc<str>) -> bool {
        let t = self.lock_topics();
        !self.gone.load(Ordering::Relaxed) && t.contains(topic)
    }

    pub(crate) fn remove_topic(&self, topic: &Arc<str>) -> bool {
        let mut t = self.lock_topics();
        let before = t.len();
        t.retain(|x| x != topic);
        if t.is_empty() {
            // Nothing held: nothing kept (a connection that joins and leaves again and again).
            *t = Vec::new();
        }
        self.release_topics(before - t.len());
        t.len() != before
    }

    pub(crate) fn topics(&self) -> Vec<Arc<str>> {
        self.lock_topics().clone()
    }

    pub(crate) fn take_topics(&self) -> Vec<Arc<str>> {
        let mut t = self.lock_topics();
        self.gone.store(true, Ordering::Relaxed);
        self.release_topics(t.len());
        std::mem::take(&mut *t)
    }

    /// The channel's path pattern.
    pub(crate) fn channel(&self) -> &Arc<str> {
        &self.channel
    }

    /// The client's address.
    pub(crate) fn source_ip(&self) -> Option<IpAddr> {
        self.source_ip
    }

    pub(crate) fn touch(&self) {
        self.last_active_ms
            .store(millis(SystemTime::now()), Ordering::Relaxed);
    }

    /// One heartbeat: pings, or starts closing a connection idle for longer than `idle`.
    /// Returns false once the connection is closing (the heartbeat forgets it).
    pub(crate) fn beat(&self, idle: Duration) -> bool {
        if self.out.is_closing() {
            return false;
        }
        if self.idle_for() > idle {
            self.out.close(close_code::GOING_AWAY, "idle timeout");
            return false;
        }
        let _ = self
            .out
            .push(Frame::Ping(bytes::Bytes::new()), Class::Essential);
        self.out.shrink_idle();
        true
    }

    /// How long since the client last sent anything.
    pub(crate) fn idle_for(&self) -> Duration {
        let last = self.last_active_ms.load(Ordering::Relaxed);
        Duration::from_millis(millis(SystemTime::now()).saturating_sub(last))
    }

    pub(crate) fn info(&self, id: ConnectionId) -> ConnectionInfo {
        ConnectionInfo {
            id,
            channel: self.channel.to_string(),
            connected_at: self.connected_at,
            last_active_at: UNIX_EPOCH
                + Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed)),
            source_ip: self.source_ip,
            user_agent: self.user_agent.as_deref().map(str::to_owned),
            queued: self.out.len(),
            dropped: self.out.dropped(),
            user: self.user.as_ref().map(|u| u.key.to_string()),
        }
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl Outbound {
    fn deliver_text(&self, frame: bytestring::ByteString) -> Delivered {
        match self.push_text(frame, Class::Droppable) {
            Ok(()) => Delivered::Queued,
            Err(Refused::Dropped) => Delivered::Dropped,
            Err(Refused::Closed) => Delivered::Gone,
        }
    }
}

impl DeliverySink for Outbound {
    fn deliver(&self, d: &Publication) -> Delivered {
        self.deliver_text(d.frame.clone())
    }
}

/// Open connections by id, in shards so that connects and disconnects on different workers
/// rarely meet on one lock.
pub(crate) struct Registry {
    shards: Box<[Mutex<RegistryShard>]>,
    /// Users with connections here, and what those share.
    users: Mutex<HashMap<Arc<str>, Arc<UserSlot>>>,
}

type RegistryShard = HashMap<ConnectionId, Arc<ConnEntry>>;

const REGISTRY_SHARDS: usize = 32;

impl Registry {
    pub(crate) fn new() -> Self {
        Registry {
            shards: (0..REGISTRY_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            users: Mutex::new(HashMap::new()),
        }
    }

    fn lock_users(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<UserSlot>>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new connection of `user` here: its share of the user's slot.
    pub(crate) fn user_ref(&self, user: Arc<str>) -> UserRef {
        let mut users = self.lock_users();
        let slot = users
            .entry(user.clone())
            .or_insert_with(|| {
                Arc::new(UserSlot {
                    topics: AtomicUsize::new(0),
                    conns: AtomicUsize::new(0),
                })
            })
            .clone();
        slot.conns.fetch_add(1, Ordering::AcqRel);
        UserRef {
            key: user,
            slot,
            released: AtomicBool::new(false),
        }
    }

    /// Gives a connection's share of its user's slot back (once); the user leaves the table
    /// with its last connection here.
    pub(crate) fn release_user(&self, user: &UserRef) {
        if user.released.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut users = self.lock_users();
        if user.slot.conns.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(slot) = users.get(&user.key) {
                if Arc::ptr_eq(slot, &user.slot) {
                    users.remove(&user.key);
                }
            }
        }
    }

    /// Users with connections here.
    #[cfg(test)]
    pub(crate) fn user_count(&self) -> usize {
        self.lock_users().len()
    }

    pub(crate) fn shard(&self, id: ConnectionId) -> MutexGuard<'_, RegistryShard> {
        // The last bytes of an id are a counter: consecutive connections spread evenly.
        let b = id.as_bytes();
        let i = b[10] as usize % REGISTRY_SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn insert(&self, id: ConnectionId, e: Arc<ConnEntry>) {
        self.shard(id).insert(id, e);
    }

    pub(crate) fn get(&self, id: ConnectionId) -> Option<Arc<ConnEntry>> {
        self.shard(id).get(&id).cloned()
    }

    pub(crate) fn remove(&self, id: ConnectionId) -> Option<Arc<ConnEntry>> {
        self.shard(id).remove(&id)
    }

    /// Visits open connections, one shard locked at a time, until `f` says stop. Entries are
    /// cloned out of a shard before `f` sees them, so `f` may touch the registry.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&ConnEntry) -> bool) {
        self.for_each_with_id(|_, e| f(e));
    }

    /// [`Registry::for_each`], with each connection's id.
    pub(crate) fn for_each_with_id(
        &self,
        mut f: impl FnMut(ConnectionId, &Arc<ConnEntry>) -> bool,
    ) {
        for shard in self.shards.iter() {
            let entries: Vec<(ConnectionId, Arc<ConnEntry>)> = shard
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(id, e)| (*id, e.clone()))
                .collect();
            for (id, e) in entries {
                if !f(id, &e) {
                    return;
                }
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::outbound::SlowConsumerPolicy;

    fn entry(reg: &Registry, user: &str, limits: TopicLimits) -> ConnEntry {
        let out = Arc::new(Outbound::new(16, SlowConsumerPolicy::DropNewest));
        let req = actix_web::test::TestRequest::default().to_http_request();
        let user = reg.user_ref(Arc::from(user));
        ConnEntry::new(out, Arc::from("/ws"), &req, limits, Some(user))
    }

    #[test]
    fn a_users_topics_are_shared_and_its_slot_goes_with_its_last_connection() {
        let reg = Registry::new();
        let limits = TopicLimits {
            max_user_topics: 2,
            ..TopicLimits::default()
        };
        let (a, b) = (entry(&reg, "ann", limits), entry(&reg, "ann", limits));
        let other = entry(&reg, "bob", limits);
        assert_eq!(reg.user_count(), 2);
        assert!(a.add_topic("x".into()).unwrap());
        assert!(
            !a.add_topic("x".into()).unwrap(),
            "held already: not counted again"
        );
        assert!(b.add_topic("y".into()).unwrap());
        assert!(matches!(
            b.add_topic("z".into()),
            Err(ChannelError::TooManyUserTopics { max: 2 })
        ));
        assert!(
            other.add_topic("z".into()).unwrap(),
            "bob has his own count"
        );
        assert!(a.remove_topic(&Arc::from("x")));
        assert!(b.add_topic("z".into()).unwrap());
        // b's topics come back when it goes.
        assert_eq!(b.take_topics().len(), 2);
        assert!(a.add_topic("p".into()).unwrap());
        assert!(a.add_topic("q".into()).unwrap());
        for e in [&a, &b] {
            let user = e.user.as_ref().unwrap();
            reg.release_user(user);
            reg.release_user(user); // once only
        }
        assert_eq!(
            reg.user_count(),
            1,
            "ann's slot went with her last connection"
        );
        reg.release_user(other.user.as_ref().unwrap());
        assert_eq!(reg.user_count(), 0);
    }
}
