//! The registry of open connections: what the hub holds of each one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::HttpRequest;
use serde::Serialize;

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
}

impl Default for TopicLimits {
    fn default() -> Self {
        TopicLimits {
            max_topics: 100,
            max_topic_len: 256,
            max_presence_bytes: 4096,
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

/// A connection as the hub holds it: its outbound queue, its topics and what the connections
/// API reports.
pub(crate) struct ConnEntry {
    pub(crate) out: Arc<Outbound>,
    topics: Mutex<Vec<Arc<str>>>,
    pub(crate) limits: TopicLimits,
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
    ) -> Self {
        let now = SystemTime::now();
        ConnEntry {
            out,
            topics: Mutex::new(Vec::new()),
            limits,
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

    /// Records a topic; false when it was there already. `bad_topic` for a name over the
    /// limit, `too_many_topics` for a new topic beyond the connection's limit.
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
        t.push(topic);
        Ok(true)
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
        t.len() != before
    }

    pub(crate) fn topics(&self) -> Vec<Arc<str>> {
        self.lock_topics().clone()
    }

    pub(crate) fn take_topics(&self) -> Vec<Arc<str>> {
        let mut t = self.lock_topics();
        self.gone.store(true, Ordering::Relaxed);
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
        }
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl DeliverySink for Outbound {
    fn deliver(&self, d: &Publication) -> Delivered {
        match self.push_text(d.frame.clone(), Class::Droppable) {
            Ok(()) => Delivered::Queued,
            Err(Refused::Dropped) => Delivered::Dropped,
            Err(Refused::Closed) => Delivered::Gone,
        }
    }
}

/// Open connections by id, in shards so that connects and disconnects on different workers
/// rarely meet on one lock.
pub(crate) struct Registry {
    shards: Box<[Mutex<RegistryShard>]>,
}

type RegistryShard = HashMap<ConnectionId, Arc<ConnEntry>>;

const REGISTRY_SHARDS: usize = 32;

impl Registry {
    pub(crate) fn new() -> Self {
        Registry {
            shards: (0..REGISTRY_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
        }
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
