//! Broker actors: the in-memory engine.
//!
//! Topics are spread over shards by a hash of their name; each shard is one broker actor on a
//! thread (an actix system) of its own, so publishing never takes a lock shared by all topics
//! and brokers use all cores. A broker owns its topics' subscriber lists, presence and
//! history. It hands every subscriber the same encoded frame and never waits for one: sinks
//! queue or drop.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use actix::{Actor, Addr, Handler, Message};
use serde_json::Value;

use crate::engine::EngineError;
use crate::engine::{
    Engine, EngineStats, HistoryConfig, Presence, Publish, SendFuture, SubscribeRequest,
    Subscribed, Subscriber, TopicInfo, TopicPattern,
};
use crate::id::ConnectionId;

mod broker;
mod history;

use broker::*;

/// The in-memory engine: broker actors on this machine. The default.
///
/// ```
/// use std::time::Duration;
/// use switchboard::engine::{HistoryConfig, MemoryEngine};
///
/// let engine = MemoryEngine::builder()
///     .shards(2)
///     .history("room:*", HistoryConfig::last(100).for_at_most(Duration::from_secs(300)))
///     .build();
/// ```
pub struct MemoryEngine {
    shards: Vec<Addr<Broker>>,
    systems: Vec<actix_rt::System>,
}

/// Configures a [`MemoryEngine`].
#[derive(Clone, Debug, Default)]
pub struct MemoryEngineBuilder {
    shards: Option<usize>,
    history: Vec<(TopicPattern, HistoryConfig)>,
}

impl MemoryEngineBuilder {
    /// Broker shards (threads). Default: the number of cores.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = Some(n.max(1));
        self
    }

    /// Keeps history for recovery on topics matching `pattern`. The first matching rule wins.
    pub fn history(mut self, pattern: &str, config: HistoryConfig) -> Self {
        self.history.push((TopicPattern::new(pattern), config));
        self
    }

    /// Starts the broker threads.
    pub fn build(self) -> MemoryEngine {
        let n = self.shards.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        let rules = Arc::new(self.history);
        let mut shards = Vec::with_capacity(n);
        let mut systems = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = std::sync::mpsc::channel();
            let rules = rules.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("switchboard-broker-{i}"))
                .spawn(move || {
                    let sys = actix_rt::System::new();
                    let addr = sys.block_on(async move { Broker::new(rules).start() });
                    let _ = tx.send((addr, actix_rt::System::current()));
                    if let Err(e) = sys.run() {
                        tracing::error!("broker shard {i} stopped: {e}");
                    }
                });
            if let Err(e) = spawned {
                tracing::error!("cannot start broker shard {i}: {e}");
                continue;
            }
            if let Ok((addr, sys)) = rx.recv() {
                shards.push(addr);
                systems.push(sys);
            }
        }
        assert!(!shards.is_empty(), "no broker shard could start");
        MemoryEngine { shards, systems }
    }
}

impl Default for MemoryEngine {
    fn default() -> Self {
        MemoryEngine::builder().build()
    }
}

impl MemoryEngine {
    /// An engine with default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Configures an engine.
    pub fn builder() -> MemoryEngineBuilder {
        MemoryEngineBuilder::default()
    }

    fn shard(&self, topic: &str) -> &Addr<Broker> {
        // std's DefaultHasher::new() has fixed keys: the same topic always lands on the same
        // shard, which keeps each publisher's order per topic.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        topic.hash(&mut h);
        &self.shards[(h.finish() % self.shards.len() as u64) as usize]
    }

    async fn ask<M>(addr: Addr<Broker>, msg: M) -> Result<M::Result, EngineError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        Broker: Handler<M>,
    {
        addr.send(msg)
            .await
            .map_err(|e| EngineError::failed(format_args!("broker unavailable: {e}")))
    }

    async fn ask_all<M>(shards: Vec<Addr<Broker>>, msg: M) -> Result<Vec<M::Result>, EngineError>
    where
        M: Message + Clone + Send + 'static,
        M::Result: Send,
        Broker: Handler<M>,
    {
        let mut out = Vec::with_capacity(shards.len());
        for s in shards {
            out.push(Self::ask(s, msg.clone()).await?);
        }
        Ok(out)
    }
}

impl Drop for MemoryEngine {
    fn drop(&mut self) {
        for sys in &self.systems {
            sys.stop();
        }
    }
}

impl Engine for MemoryEngine {
    fn subscribe(&self, request: SubscribeRequest) -> SendFuture<Result<Subscribed, EngineError>> {
        let addr = self.shard(&request.topic).clone();
        Box::pin(async move { Self::ask(addr, Subscribe(request)).await? })
    }

    fn unsubscribe(&self, topic: Arc<str>, id: ConnectionId) {
        self.shard(&topic).do_send(Unsubscribe { topic, id });
    }

    fn publish(&self, publication: Publish) -> SendFuture<Result<(), EngineError>> {
        self.shard(&publication.topic).do_send(publication);
        Box::pin(async { Ok(()) })
    }

    fn track(
        &self,
        topic: Arc<str>,
        subscriber: Subscriber,
        key: String,
        meta: Value,
    ) -> SendFuture<Result<(), EngineError>> {
        let addr = self.shard(&topic).clone();
        Box::pin(async move {
            Self::ask(
                addr,
                Track {
                    topic,
                    subscriber,
                    key,
                    meta,
                    max: None,
                },
            )
            .await
            .map(|_| ())
        })
    }

    fn track_at_most(
        &self,
        topic: Arc<str>,
        subscriber: Subscriber,
        key: String,
        meta: Value,
        max: usize,
    ) -> SendFuture<Result<bool, EngineError>> {
        let addr = self.shard(&topic).clone();
        Box::pin(async move {
            Self::ask(
                addr,
                Track {
                    topic,
                    subscriber,
                    key,
                    meta,
                    max: Some(max),
                },
            )
            .await
        })
    }

    fn untrack(&self, topic: Arc<str>, id: ConnectionId) {
        self.shard(&topic).do_send(Untrack { topic, id });
    }

    fn presence(&self, topic: Arc<str>) -> SendFuture<Result<Presence, EngineError>> {
        let addr = self.shard(&topic).clone();
        Box::pin(async move { Self::ask(addr, GetPresence(topic)).await })
    }

    fn subscriber_count(&self, topic: Arc<str>) -> SendFuture<Result<usize, EngineError>> {
        let addr = self.shard(&topic).clone();
        Box::pin(async move { Self::ask(addr, Count(topic)).await })
    }

    fn topics(&self) -> SendFuture<Result<Vec<TopicInfo>, EngineError>> {
        let shards = self.shards.clone();
        Box::pin(async move {
            let mut all: Vec<TopicInfo> = Self::ask_all(shards, ListTopics)
                .await?
                .into_iter()
                .flatten()
                .collect();
            all.sort_by(|a, b| a.topic.cmp(&b.topic));
            Ok(all)
        })
    }

    fn stats(&self) -> SendFuture<Result<EngineStats, EngineError>> {
        let shards = self.shards.clone();
        Box::pin(async move {
            let mut total = EngineStats::default();
            for s in Self::ask_all(shards, Stats).await? {
                total.topics += s.topics;
                total.subscriptions += s.subscriptions;
                total.histories += s.histories;
            }
            Ok(total)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Delivered, Position, Publication};
    use serde_json::value::RawValue;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Collect(Mutex<Vec<String>>);

    impl crate::engine::DeliverySink for Collect {
        fn deliver(&self, d: &Publication) -> Delivered {
            self.0.lock().unwrap().push(d.frame.to_string());
            Delivered::Queued
        }
    }

    fn raw(s: &str) -> Arc<RawValue> {
        Arc::from(RawValue::from_string(s.to_owned()).unwrap())
    }

    async fn publish(e: &MemoryEngine, topic: &str, n: u32) {
        e.publish(Publish {
            topic: topic.into(),
            event: "m".into(),
            data: raw(&n.to_string()),
            exclude: None,
        })
        .await
        .unwrap();
    }

    fn recovering(sub: &Subscriber, epoch: &str, seq: u64) -> SubscribeRequest {
        SubscribeRequest {
            recover: Some(Position {
                epoch: epoch.to_owned(),
                seq,
            }),
            ..SubscribeRequest::new("h:a".into(), sub.clone())
        }
    }

    #[actix_rt::test]
    async fn history_recovery_and_gaps() {
        let e = MemoryEngine::builder()
            .shards(1)
            .history("h:*", HistoryConfig::last(3))
            .build();
        let sink = Arc::new(Collect::default());
        let sub = Subscriber {
            id: ConnectionId::next(),
            sink: sink.clone(),
        };
        let first = e
            .subscribe(SubscribeRequest::new("h:a".into(), sub.clone()))
            .await
            .unwrap();
        let pos = first.position.unwrap();
        assert_eq!(pos.seq, 0);
        for n in 1..=2 {
            publish(&e, "h:a", n).await;
        }
        // Seen up to 1: 2 is still held.
        let again = e.subscribe(recovering(&sub, &pos.epoch, 1)).await.unwrap();
        assert_eq!(again.recovered, Some(true));
        assert_eq!(again.position.as_ref().unwrap().seq, 2);
        for n in 3..=6 {
            publish(&e, "h:a", n).await;
        }
        // Seen up to 1: 2 was pushed out of the last 3.
        let gap = e.subscribe(recovering(&sub, &pos.epoch, 1)).await.unwrap();
        assert_eq!(gap.recovered, Some(false));
        let wrong_epoch = e.subscribe(recovering(&sub, "other", 6)).await.unwrap();
        assert_eq!(wrong_epoch.recovered, Some(false));
        let frames = sink.0.lock().unwrap().clone();
        // 1,2 live; 2 replayed; 3..6 live.
        let seqs: Vec<u64> = frames
            .iter()
            .map(|f| {
                serde_json::from_str::<Value>(f).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(seqs, vec![1, 2, 2, 3, 4, 5, 6]);
    }

    #[actix_rt::test]
    async fn presence_collapses_connections_of_one_key() {
        let e = MemoryEngine::builder().shards(1).build();
        let watcher = Arc::new(Collect::default());
        let w = Subscriber {
            id: ConnectionId::next(),
            sink: watcher.clone(),
        };
        e.subscribe(SubscribeRequest::new("p".into(), w))
            .await
            .unwrap();
        let a1 = Subscriber {
            id: ConnectionId::next(),
            sink: Arc::new(Collect::default()),
        };
        let a2 = Subscriber {
            id: ConnectionId::next(),
            sink: Arc::new(Collect::default()),
        };
        e.track(
            "p".into(),
            a1.clone(),
            "alice".into(),
            serde_json::json!({"d": 1}),
        )
        .await
        .unwrap();
        e.track(
            "p".into(),
            a2.clone(),
            "alice".into(),
            serde_json::json!({"d": 2}),
        )
        .await
        .unwrap();
        let p = e.presence("p".into()).await.unwrap();
        assert_eq!(p["alice"].metas.len(), 2);
        e.untrack("p".into(), a1.id);
        e.untrack("p".into(), a2.id);
        let p = e.presence("p".into()).await.unwrap();
        assert!(p.is_empty());
        let diffs: Vec<Value> = watcher
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|f| serde_json::from_str::<Value>(f).unwrap())
            .filter(|v| v["event"] == "presence_diff")
            .collect();
        assert_eq!(diffs.len(), 2, "one join, one leave: {diffs:?}");
        assert!(diffs[0]["data"]["joins"]["alice"].is_object());
        assert!(diffs[1]["data"]["leaves"]["alice"].is_object());
        let stats = e.stats().await.unwrap();
        assert_eq!(stats.subscriptions, 1);
    }

    #[actix_rt::test]
    async fn last_n_are_replayed_on_subscribe() {
        let e = MemoryEngine::builder()
            .shards(1)
            .history("h:*", HistoryConfig::last(10))
            .build();
        for n in 1..=5 {
            publish(&e, "h:a", n).await;
        }
        let sink = Arc::new(Collect::default());
        let sub = Subscriber {
            id: ConnectionId::next(),
            sink: sink.clone(),
        };
        let got = e
            .subscribe(SubscribeRequest {
                last: Some(3),
                ..SubscribeRequest::new("h:a".into(), sub)
            })
            .await
            .unwrap();
        assert_eq!(got.position.unwrap().seq, 5);
        let data: Vec<String> = sink
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|f| serde_json::from_str::<Value>(f).unwrap()["data"].to_string())
            .collect();
        assert_eq!(data, vec!["3", "4", "5"]);
    }
}
