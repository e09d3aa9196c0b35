//! The Redis engine against a real `redis-server`, started by each test on a loopback port of
//! its own (a restart takes the same port back): two nodes (two servers, each with its own hub and engine) on one Redis, real
//! clients on each. Delivery across nodes, channels joined only while needed, presence across
//! nodes (and a crashed node's ageing out), recovery across nodes, counts, and Redis going away
//! and coming back.
//!
//! Without `redis-server` (Debian package `redis-server`) the tests skip with a message; under
//! `CI=true` they fail instead.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse};
use futures_util::FutureExt;
use serde_json::{json, Value};
use switchboard::engine::redis::RedisEngine;
use switchboard::engine::{
    Delivered, DeliverySink, Engine, EngineHealth, HistoryConfig, Publication, Publish,
    SubscribeRequest, Subscriber,
};
use switchboard::prelude::*;
use switchboard::testing::{Frame, TestClient, TestError, TestServer};
use switchboard_suite::rooms::{self, User};
use switchboard_suite::RedisServer as Redis;
use switchboard_suite::{delivery, raw_http, until, Wait};

// ---- the app on each node ----------------------------------------------------------------

/// The rooms app, and `plain:*` topics (without presence).
fn route() -> ChannelRoute<User> {
    rooms::route().allow_join("plain:*")
}

/// A channel that names users (by `?name=`), two connections each at most, cluster-wide.
fn users_route() -> ChannelRoute<User> {
    ChannelRoute::new("/users")
        .on_connect(rooms::connect)
        .user(|u: &User| u.name.clone())
        .max_connections_per_user(2)
        .message(switchboard_suite::handlers::whoami)
}

async fn health(hub: Hub) -> HttpResponse {
    match hub.health() {
        EngineHealth::Up => HttpResponse::Ok().json(json!({"status": "up"})),
        down => HttpResponse::ServiceUnavailable().json(down),
    }
}

struct Node {
    hub: Hub,
    engine: RedisEngine,
    srv: TestServer,
}

fn builder(redis: &Redis) -> switchboard::engine::redis::RedisEngineBuilder {
    RedisEngine::builder(redis.url())
        // Longer than any cut-off in the catch-up test lasts, however loaded the machine: what
        // the history no longer holds cannot be caught up.
        .history("room:hc", HistoryConfig::last(1_000_000))
        .history("room:h*", HistoryConfig::last(50))
        .node_timeout(Duration::from_secs(3))
        .command_timeout(Duration::from_secs(1))
        .connect_timeout(Duration::from_secs(1))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(300))
}

async fn node(redis: &Redis) -> Node {
    node_with(builder(redis)).await
}

async fn node_with(builder: switchboard::engine::redis::RedisEngineBuilder) -> Node {
    let _ = env_logger::builder().is_test(true).try_init();
    let engine = builder.connect().await.expect("connect to redis");
    let hub = Hub::with_engine(engine.clone());
    let h = hub.clone();
    let srv = TestServer::build(move || {
        App::new()
            .app_data(h.clone())
            .service(route())
            .service(users_route())
            .route("/health", web::get().to(health))
    })
    .workers(2)
    .start();
    Node { hub, engine, srv }
}

impl Node {
    async fn client(&self, name: &str) -> TestClient {
        self.srv
            .connect(&format!("/ws?name={name}"))
            .await
            .expect("connect")
    }
}

async fn join(c: &mut TestClient, topic: &str) -> Value {
    c.request("subscribe", json!({ "topic": topic }))
        .await
        .unwrap_or_else(|e| panic!("joining {topic}: {e}"))
}

/// Nothing but presence traffic and pings is on its way to `clients` on `topic` (a duplicate
/// delivery would be): a sentinel published now must be the next delivery of each, since a
/// topic's deliveries keep the order Redis published them in. `clients` must be all the
/// subscribers of `topic` the test still reads from (each gets the sentinel).
async fn nothing_more(hub: &Hub, topic: &str, clients: &mut [&mut TestClient]) {
    static SENTINELS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let token = SENTINELS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    hub.publish(topic, "sentinel", &token).await.unwrap();
    for c in clients.iter_mut() {
        loop {
            match c.recv().await {
                Ok(Frame::Json(v))
                    if v["event"]
                        .as_str()
                        .is_some_and(|e| e.starts_with("presence")) => {}
                Ok(Frame::Ping) => {}
                Ok(Frame::Json(v)) if v["event"] == "sentinel" && v["data"] == token => break,
                other => panic!("expected nothing more before the sentinel, got {other:?}"),
            }
        }
    }
}

fn numsub(redis: &Redis, channel: &str) -> i64 {
    let v = redis
        .cmd(&["PUBSUB", "NUMSUB", channel])
        .expect("PUBSUB NUMSUB");
    v[1].as_i64().unwrap_or(-1)
}

// ---- the tests ---------------------------------------------------------------------------

#[tokio::test]
async fn a_publish_on_one_node_reaches_subscribers_on_both_once() {
    let Some(redis) = Redis::start("deliver") else {
        return;
    };
    let (n1, n2) = (node(&redis).await, node(&redis).await);
    let mut a = n1.client("ann").await;
    let mut b = n2.client("bob").await;
    join(&mut a, "plain:1").await;
    join(&mut b, "plain:1").await;
    b.request("say", json!({"topic": "plain:1", "text": "hi"}))
        .await
        .unwrap();
    for c in [&mut a, &mut b] {
        let d = delivery(c, "said").await;
        assert_eq!(
            d,
            json!({"topic": "plain:1", "event": "said", "data": {"from": "bob", "text": "hi"}})
        );
    }
    // Once each: what follows on both is the next publication.
    nothing_more(&n1.hub, "plain:1", &mut [&mut a, &mut b]).await;

    // broadcast_from skips the sender, on its node; the other node's client gets it.
    a.request("shout", json!({"topic": "plain:1", "text": "one"}))
        .await
        .unwrap();
    assert_eq!(delivery(&mut b, "shouted").await["data"]["text"], "one");
    a.request("say", json!({"topic": "plain:1", "text": "two"}))
        .await
        .unwrap();
    assert_eq!(delivery(&mut a, "said").await["data"]["text"], "two");
    assert_eq!(delivery(&mut b, "said").await["data"]["text"], "two");

    // From HTTP code through the hub of either node.
    n2.hub
        .publish("plain:1", "announcement", "noon")
        .await
        .unwrap();
    assert_eq!(delivery(&mut a, "announcement").await["data"], "noon");

    // Counts are cluster-wide.
    for hub in [&n1.hub, &n2.hub] {
        assert_eq!(hub.subscriber_count("plain:1").await.unwrap(), 2);
        let topics = hub.topics().await.unwrap();
        assert_eq!(topics.len(), 1, "{topics:?}");
        assert_eq!(topics[0].subscribers, 2);
        let stats = hub.stats().await.unwrap();
        assert_eq!((stats.engine.topics, stats.engine.subscriptions), (1, 2));
    }
    assert_ne!(n1.engine.node_id(), n2.engine.node_id());
}

#[tokio::test]
async fn many_publications_keep_their_order_across_nodes() {
    let Some(redis) = Redis::start("order") else {
        return;
    };
    let (n1, n2) = (node(&redis).await, node(&redis).await);
    let mut subs = Vec::new();
    for i in 0..6 {
        let n = if i % 2 == 0 { &n1 } else { &n2 };
        let mut c = n.client(&format!("u{i}")).await;
        join(&mut c, "plain:order").await;
        subs.push(c);
    }
    let mut p = n1.client("pub").await;
    let count = 300;
    p.request("burst", json!({"topic": "plain:order", "n": count}))
        .await
        .unwrap();
    for c in &mut subs {
        for i in 0..count {
            assert_eq!(delivery(c, "n").await["data"]["i"], i, "out of order");
        }
    }
}

#[tokio::test]
async fn a_node_is_on_a_topic_channel_only_while_it_has_subscribers() {
    let Some(redis) = Redis::start("channels") else {
        return;
    };
    let (n1, n2) = (node(&redis).await, node(&redis).await);
    let channel = "switchboard:t:plain:c";
    assert_eq!(numsub(&redis, channel), 0);
    let mut a = n1.client("ann").await;
    let mut a2 = n1.client("ann2").await;
    let b = {
        let mut b = n2.client("bob").await;
        join(&mut a, "plain:c").await;
        assert_eq!(
            numsub(&redis, channel),
            1,
            "subscribed before the join reply"
        );
        join(&mut a2, "plain:c").await;
        assert_eq!(numsub(&redis, channel), 1, "one subscription per node");
        join(&mut b, "plain:c").await;
        assert_eq!(numsub(&redis, channel), 2);
        b
    };
    a.request("unsubscribe", json!({"topic": "plain:c"}))
        .await
        .unwrap();
    a2.close().await.unwrap();
    until("node 1 to leave the channel", || async {
        numsub(&redis, channel) == 1
    })
    .await;
    b.drop_abruptly();
    until("node 2 to leave the channel", || async {
        numsub(&redis, channel) == 0
    })
    .await;
    until("the counts to drop to zero", || async {
        n1.hub.subscriber_count("plain:c").await.unwrap() == 0
    })
    .await;
    // And it comes back for a new subscriber.
    join(&mut a, "plain:c").await;
    assert_eq!(numsub(&redis, channel), 1);
}

#[tokio::test]
async fn connect_join_leave_cycles_leave_nothing_behind() {
    let Some(redis) = Redis::start("churn") else {
        return;
    };
    let (n1, n2) = (node(&redis).await, node(&redis).await);
    let urls = [n1.srv.ws_url("/ws?name=cy"), n2.srv.ws_url("/ws?name=cy")];
    let mut tasks = Vec::new();
    for t in 0..6usize {
        let url = urls[t % 2].clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..40usize {
                let mut c = TestClient::connect(&url).await.unwrap();
                // Presence on `room:` topics, plain subscriptions on `plain:` ones.
                let kind = if i % 2 == 0 { "room" } else { "plain" };
                let topic = format!("{kind}:{}", (t * 40 + i) % 7);
                c.request("subscribe", json!({ "topic": topic }))
                    .await
                    .unwrap();
                if i % 3 == 0 {
                    c.close().await.unwrap();
                } else {
                    c.drop_abruptly();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    until(
        "every subscription and presence entry to be gone",
        || async {
            let s = n1.hub.stats().await.unwrap();
            s.engine.subscriptions == 0 && s.engine.topics == 0
        },
    )
    .await;
    until("both nodes to leave every channel", || async {
        redis
            .cmd(&["PUBSUB", "CHANNELS", "*"])
            .unwrap()
            .as_array()
            .is_some_and(|a| a.is_empty())
    })
    .await;
    for i in 0..7 {
        assert!(n2
            .hub
            .presence(&format!("room:{i}"))
            .await
            .unwrap()
            .is_empty());
    }
    assert!(n2.hub.topics().await.unwrap().is_empty());
    // In Redis: the nodes' heartbeats, and the presence versions (kept a day after the last
    // diff, so that diffs keep their numbering); no entries, counts or topic sets.
    until("Redis to hold only the expected keys", || async {
        leftover_keys(&redis).is_empty()
    })
    .await;
}

/// Keys under `switchboard:` other than the heartbeats and presence versions.
fn leftover_keys(redis: &Redis) -> Vec<String> {
    let keys = redis.cmd(&["KEYS", "switchboard:*"]).unwrap();
    keys.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|k| *k != "switchboard:nodes" && !k.starts_with("switchboard:pv:"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn presence_spans_the_nodes() {
    let Some(redis) = Redis::start("presence") else {
        return;
    };
    let (n1, n2) = (node(&redis).await, node(&redis).await);
    let mut wendy = n1.client("wendy").await;
    join(&mut wendy, "room:p").await;
    let state = wendy.recv_event("presence_state").await.unwrap();
    assert_eq!(state.as_object().unwrap().len(), 1, "{state}");
    let own = wendy.recv_event("presence_diff").await.unwrap();
    assert!(own["joins"]["wendy"].is_object(), "{own}");

    let mut alice = n2.client("alice").await;
    join(&mut alice, "room:p").await;
    let diff = wendy.recv_event("presence_diff").await.unwrap();
    assert!(diff["joins"]["alice"]["metas"].is_array(), "{diff}");
    let state = alice.recv_event("presence_state").await.unwrap();
    assert!(
        state.get("wendy").is_some() && state.get("alice").is_some(),
        "{state}"
    );

    // A second connection of the same user, on the other node: one entry, no new join.
    let mut alice2 = n1.client("alice").await;
    join(&mut alice2, "room:p").await;
    for hub in [&n1.hub, &n2.hub] {
        let p = hub.presence("room:p").await.unwrap();
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p["alice"].metas.len(), 2);
    }
    alice.close().await.unwrap();
    until("alice's first connection to leave", || async {
        n1.hub.presence("room:p").await.unwrap()["alice"]
            .metas
            .len()
            == 1
    })
    .await;
    alice2.drop_abruptly();
    let diff = wendy.recv_event("presence_diff").await.unwrap();
    assert!(diff["leaves"]["alice"].is_object(), "{diff}");
    assert_eq!(diff["joins"], json!({}));
    let p = n2.hub.presence("room:p").await.unwrap();
    assert_eq!(p.keys().collect::<Vec<_>>(), vec!["wendy"]);
}

#[derive(Default)]
struct Collect(Mutex<Vec<Value>>);

impl DeliverySink for Collect {
    fn deliver(&self, d: &Publication) -> Delivered {
        self.0
            .lock()
            .unwrap()
            .push(serde_json::from_str(&d.frame).unwrap());
        Delivered::Queued
    }
}

#[tokio::test]
async fn a_crashed_nodes_presence_ages_out() {
    let Some(redis) = Redis::start("crash") else {
        return;
    };
    let n1 = node(&redis).await;
    let mut wendy = n1.client("wendy").await;
    join(&mut wendy, "room:c").await;
    let _ = wendy.recv_event("presence_state").await.unwrap();
    let _ = wendy.recv_event("presence_diff").await.unwrap();

    // A third node enters a connection into the presence, then dies without cleaning up.
    let ghost_node = builder(&redis).connect().await.unwrap();
    let sink = Arc::new(Collect::default());
    let ghost = Subscriber {
        id: ConnectionId::next(),
        sink: sink.clone(),
    };
    ghost_node
        .track(
            "room:c".into(),
            ghost,
            "ghost".into(),
            json!({"from": "elsewhere"}),
        )
        .await
        .unwrap();
    let state = sink.0.lock().unwrap()[0].clone();
    assert_eq!(state["event"], "presence_state");
    assert!(state["data"].get("ghost").is_some(), "{state}");
    let diff = wendy.recv_event("presence_diff").await.unwrap();
    assert!(diff["joins"]["ghost"].is_object(), "{diff}");
    assert_eq!(n1.hub.presence("room:c").await.unwrap().len(), 2);
    let started = Instant::now();
    drop(ghost_node);
    wendy.set_timeout(Duration::from_secs(15));

    // The live node notices the silence and removes the entry, with a leave for everyone.
    let diff = wendy.recv_event("presence_diff").await.unwrap();
    assert!(diff["leaves"]["ghost"].is_object(), "{diff}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "not before the node timeout"
    );
    let p = n1.hub.presence("room:c").await.unwrap();
    assert_eq!(p.keys().collect::<Vec<_>>(), vec!["wendy"]);

    // A node that shuts down cleanly takes its members out at once, and stays out.
    let leaving = builder(&redis).connect().await.unwrap();
    let guest = Subscriber {
        id: ConnectionId::next(),
        sink: Arc::new(Collect::default()),
    };
    leaving
        .track("room:c".into(), guest, "guest".into(), json!({}))
        .await
        .unwrap();
    let diff = wendy.recv_event("presence_diff").await.unwrap();
    assert!(diff["joins"]["guest"].is_object(), "{diff}");
    leaving.shutdown().await.unwrap();
    let diff = wendy.recv_event("presence_diff").await.unwrap();
    assert!(diff["leaves"]["guest"].is_object(), "{diff}");
    assert!(matches!(leaving.health(), EngineHealth::Down { .. }));
    // The engine's own error, as a client would get it.
    let err = ChannelError::from(leaving.presence("room:c".into()).await.unwrap_err());
    assert_eq!(err.code(), "engine_unavailable");
    assert_eq!(n1.hub.presence("room:c").await.unwrap().len(), 1);
    // No heartbeat brings it back.
    assert_eq!(n1.hub.presence("room:c").await.unwrap().len(), 1);
    nothing_more(&n1.hub, "room:c", &mut [&mut wendy]).await;
}

#[tokio::test]
async fn a_client_recovers_on_another_node() {
    let Some(redis) = Redis::start("recover") else {
        return;
    };
    let (n1, n2) = (node(&redis).await, node(&redis).await);
    let mut a = n1.client("ann").await;
    let mut p = n2.client("pub").await;
    let joined = join(&mut a, "room:h1").await;
    let epoch = joined["epoch"].as_str().unwrap().to_owned();
    assert_eq!(joined["seq"], 0);
    p.request("burst", json!({"topic": "room:h1", "n": 3}))
        .await
        .unwrap();
    for i in 0..3 {
        let d = delivery(&mut a, "n").await;
        assert_eq!(d["data"]["i"], i);
        assert_eq!(d["epoch"], epoch.as_str());
        assert_eq!(d["seq"], i + 1);
    }
    a.drop_abruptly();
    p.request("burst", json!({"topic": "room:h1", "n": 5}))
        .await
        .unwrap();
    // Back, on the other node.
    let mut a = n2.client("ann").await;
    let reply = a
        .request(
            "subscribe",
            json!({"topic": "room:h1", "recover": {"epoch": epoch, "seq": 3}}),
        )
        .await
        .unwrap();
    assert_eq!(reply["recovered"], true);
    assert_eq!(reply["seq"], 8);
    for i in 0..5 {
        let d = delivery(&mut a, "n").await;
        assert_eq!(d["data"]["i"], i, "missed publications replayed in order");
        assert_eq!(d["seq"], 4 + i);
    }
    p.request("burst", json!({"topic": "room:h1", "n": 1}))
        .await
        .unwrap();
    assert_eq!(delivery(&mut a, "n").await["seq"], 9);

    // A stale epoch, or a position too old, is not recovered.
    let mut c = n1.client("cy").await;
    let reply = c
        .request(
            "subscribe",
            json!({"topic": "room:h1", "recover": {"epoch": "stale", "seq": 9}}),
        )
        .await
        .unwrap();
    assert_eq!(reply["recovered"], false);
    assert_eq!(reply["seq"], 9);

    // A joiner on node 1 asks for the latest three: replayed before live ones.
    let mut d = n1.client("dee").await;
    let reply = d
        .request("subscribe", json!({"topic": "room:h1", "last": 3}))
        .await
        .unwrap();
    assert_eq!(reply["seq"], 9);
    let seqs: Vec<Value> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(delivery(&mut d, "n").await["seq"].clone());
        }
        v
    };
    assert_eq!(seqs, vec![json!(7), json!(8), json!(9)]);
    p.request("burst", json!({"topic": "room:h1", "n": 1}))
        .await
        .unwrap();
    assert_eq!(delivery(&mut d, "n").await["seq"], 10);
    assert_eq!(delivery(&mut a, "n").await["seq"], 10);
    nothing_more(&n1.hub, "room:h1", &mut [&mut a, &mut d]).await;
}

#[tokio::test]
async fn joining_mid_stream_replays_then_goes_live_without_gap_or_repeat() {
    let Some(redis) = Redis::start("midstream") else {
        return;
    };
    let (n1, n2) = (node(&redis).await, node(&redis).await);
    let topic = "room:hm";
    let size = 200u64;
    let mut observer = n1.client("obs").await;
    join(&mut observer, topic).await;
    let mut p = n2.client("pub").await;
    p.set_timeout(Duration::from_secs(30));
    // Joiners on both nodes, each while a burst is under way: the latest ones replayed, then
    // live ones, each sequence number exactly once, in order.
    let mut joiners = Vec::new();
    let mut mid_burst = 0;
    for i in 0..6u64 {
        let (start, end) = (i * size, (i + 1) * size);
        let reference = json!(1000 + i);
        p.send_json(
            &json!({"type": "burst", "ref": reference, "data": {"topic": topic, "n": size}}),
        )
        .await
        .unwrap();
        // The burst has begun (the observer has its first publication) when the joiner asks.
        assert_eq!(delivery(&mut observer, "n").await["seq"], start + 1);
        let n = if i % 2 == 0 { &n1 } else { &n2 };
        let mut c = n.client(&format!("j{i}")).await;
        let reply = c
            .request("subscribe", json!({"topic": topic, "last": 10}))
            .await
            .unwrap();
        let at = reply["seq"].as_u64().unwrap();
        assert!(
            at > start,
            "joined at {at}, after the burst from {start} began"
        );
        if at < end {
            mid_burst += 1;
        }
        p.reply_to(&reference).await.unwrap();
        for seq in start + 2..=end {
            assert_eq!(delivery(&mut observer, "n").await["seq"], seq);
        }
        joiners.push((c, at));
    }
    // Bursts of 200 publications, one round trip each, against a subscribe of two: the
    // subscribes land inside them, where live publications meet the snapshot.
    assert!(mid_burst > 0, "no join landed strictly inside a burst");
    let total = 6 * size;
    for (c, at) in &mut joiners {
        let mut expect = at.saturating_sub(9).max(1);
        while expect <= total {
            let d = delivery(c, "n").await;
            assert_eq!(d["seq"], expect, "joined at {at}");
            expect += 1;
        }
    }
    let mut all: Vec<&mut TestClient> = joiners.iter_mut().map(|(c, _)| c).collect();
    all.push(&mut observer);
    nothing_more(&n1.hub, topic, &mut all).await;
}

#[tokio::test]
async fn a_redis_outage_is_survived() {
    let Some(mut redis) = Redis::start("outage") else {
        return;
    };
    let (n1, n2) = (node(&redis).await, node(&redis).await);
    let mut a = n1.client("ann").await;
    let mut b = n2.client("bob").await;
    join(&mut a, "room:o").await;
    join(&mut b, "room:o").await;
    join(&mut a, "room:h-o").await;
    join(&mut b, "room:h-o").await;
    b.request("say", json!({"topic": "room:o", "text": "before"}))
        .await
        .unwrap();
    assert_eq!(delivery(&mut a, "said").await["data"]["text"], "before");
    assert_eq!(delivery(&mut b, "said").await["data"]["text"], "before");

    redis.kill();
    until("both nodes to report the engine down", || async {
        matches!(n1.hub.health(), EngineHealth::Down { .. })
            && matches!(n2.hub.health(), EngineHealth::Down { .. })
    })
    .await;
    // Publishing fails clearly instead of vanishing; the connections stay and answer.
    match a
        .request("say", json!({"topic": "room:o", "text": "lost"}))
        .await
    {
        Err(TestError::Reply { code, message, .. }) => {
            assert_eq!(code, "engine_unavailable");
            assert!(message.contains("Redis"), "{message}");
        }
        other => panic!("expected engine_unavailable, got {other:?}"),
    }
    let err = n2.hub.publish("room:o", "x", &1).await.unwrap_err();
    assert_eq!(err.code(), "engine_unavailable");
    a.request("whoami", Value::Null).await.unwrap();
    b.request("whoami", Value::Null).await.unwrap();
    match a.request("subscribe", json!({"topic": "room:other"})).await {
        Err(TestError::Reply { code, .. }) => assert_eq!(code, "engine_unavailable"),
        other => panic!("expected engine_unavailable, got {other:?}"),
    }
    let (_, status) = raw_http(n1.srv.addr(), "GET", "/health").await;
    assert!(status.starts_with("HTTP/1.1 503"), "{status}");
    assert!(status.contains("\"status\":\"down\""), "{status}");

    // Redis comes back (empty): the nodes reconnect, resubscribe, write their presence again.
    redis.restart();
    assert!(n1.engine.wait_until_up(Duration::from_secs(15)).await);
    assert!(n2.engine.wait_until_up(Duration::from_secs(15)).await);
    assert_eq!(numsub(&redis, "switchboard:t:room:o"), 2);
    a.request("say", json!({"topic": "room:o", "text": "after"}))
        .await
        .unwrap();
    assert_eq!(delivery(&mut a, "said").await["data"]["text"], "after");
    assert_eq!(delivery(&mut b, "said").await["data"]["text"], "after");
    // History starts over in a new epoch, delivered on both nodes.
    b.request("say", json!({"topic": "room:h-o", "text": "new"}))
        .await
        .unwrap();
    for c in [&mut a, &mut b] {
        let d = delivery(c, "said").await;
        assert_eq!(
            (d["data"]["text"].clone(), d["seq"].clone()),
            (json!("new"), json!(1))
        );
    }
    let p = n2.hub.presence("room:o").await.unwrap();
    assert_eq!(p.keys().collect::<Vec<_>>(), vec!["ann", "bob"]);
    assert_eq!(n1.hub.subscriber_count("room:o").await.unwrap(), 2);
    let (_, status) = raw_http(n1.srv.addr(), "GET", "/health").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
}

/// Ids of the Redis clients subscribed to at least one channel.
fn subscribed_clients(redis: &Redis) -> Vec<String> {
    let list = redis.cmd(&["CLIENT", "LIST"]).unwrap();
    list.as_str()
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split(' ').any(|f| f.starts_with("sub=") && f != "sub=0"))
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(str::to_owned)
        .collect()
}

/// Node 2's subscription to `channel` and the topic's last sequence number, at one instant.
fn channel_and_seq(redis: &Redis, channel: &str, history: &str) -> (i64, u64) {
    let v = redis
        .multi(&[&["PUBSUB", "NUMSUB", channel], &["HGET", history, "s"]])
        .expect("MULTI");
    let seq = v[1].as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
    (v[0][1].as_i64().unwrap_or(-1), seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_redis_catches_up_topics_with_history() {
    let Some(redis) = Redis::start("catchup") else {
        return;
    };
    // Node 1 only publishes (no subscribers: no channel), node 2 has the subscriber.
    let (n1, n2) = (node(&redis).await, node(&redis).await);
    let (channel, history) = ("switchboard:t:room:hc", "switchboard:h:room:hc");
    let mut b = n2.client("bob").await;
    let joined = join(&mut b, "room:hc").await;
    assert_eq!(joined["seq"], 0);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let (hub, stop) = (n1.hub.clone(), stop.clone());
        tokio::spawn(async move {
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                hub.publish("room:hc", "n", &json!({ "i": sent }))
                    .await
                    .unwrap();
                sent += 1;
            }
            sent
        })
    };
    until("some publications to arrive", || async {
        n1.hub.subscriber_count("room:hc").await.unwrap() == 1
    })
    .await;
    assert_eq!(delivery(&mut b, "n").await["seq"], 1);
    // Cut node 2's subscription connection while node 1 goes on publishing, until two looks
    // at Redis while node 2 is off the channel show the sequence number moved: publications
    // made in between can reach node 2 only through its catch-up.
    let mut proven = None;
    for _ in 0..50 {
        let before = subscribed_clients(&redis);
        assert_eq!(before.len(), 1, "only node 2 is on a channel");
        redis.cmd(&["CLIENT", "KILL", "ID", &before[0]]).unwrap();
        // Looks as often as it can while node 2 is off the channel: done once node 2 is
        // back, or once the sequence number moved in between (the proof).
        let mut first = None;
        let moved = Wait::up_to(Duration::from_secs(15))
            .every(Duration::ZERO)
            .eventually("node 2 to come back", || {
                let (subscribed, seq) = channel_and_seq(&redis, channel, history);
                let seen = match first {
                    _ if subscribed != 0 => Ok(None),
                    None => {
                        first = Some(seq);
                        Err(seq)
                    }
                    Some(a) if seq > a => Ok(Some((a, seq))),
                    Some(_) => Err(seq),
                };
                async move { seen }
            })
            .await;
        if moved.is_some() {
            proven = moved;
        }
        until("node 2 to be back on the channel", || async {
            let now = subscribed_clients(&redis);
            now.len() == 1 && now != before && n2.hub.health() == EngineHealth::Up
        })
        .await;
        if proven.is_some() {
            break;
        }
    }
    let (cut_from, cut_to) = proven.expect("publications made while node 2 was cut off");
    n2.hub
        .publish("room:hc", "n", &json!({"i": "mark"}))
        .await
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = publisher.await.unwrap();
    // Every publication, once, in order: those made while node 2 was away came from history.
    let mut expect = 2;
    loop {
        let d = delivery(&mut b, "n").await;
        assert_eq!(d["seq"], expect, "after {} publications", sent + 1);
        if d["data"]["i"] == "mark" {
            break;
        }
        expect += 1;
    }
    assert!(
        expect > cut_to,
        "seq {cut_from}..{cut_to} made while cut off"
    );
}

#[tokio::test]
async fn a_history_that_went_back_starts_a_new_epoch() {
    let Some(redis) = Redis::start("history_back") else {
        return;
    };
    let (n1, n2) = (node(&redis).await, node(&redis).await);
    let mut b = n2.client("bob").await;
    let epoch = join(&mut b, "room:h2").await["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 0..5 {
        n1.hub
            .publish("room:h2", "n", &json!({ "i": i }))
            .await
            .unwrap();
    }
    for seq in 1..=5 {
        assert_eq!(delivery(&mut b, "n").await["seq"], seq);
    }
    // What a failover to a replica that missed the last two publications leaves: the counter
    // and the stream back at 3, same epoch. Node 2 (which delivered 4 and 5) reconnects.
    redis
        .multi(&[
            &["HSET", "switchboard:h:room:h2", "s", "3"],
            &["XTRIM", "switchboard:x:room:h2", "MAXLEN", "3"],
        ])
        .unwrap();
    let before = subscribed_clients(&redis);
    assert_eq!(before.len(), 1, "only node 2 is on a channel");
    redis.cmd(&["CLIENT", "KILL", "ID", &before[0]]).unwrap();
    until("node 2 to be back on the channel", || async {
        let now = subscribed_clients(&redis);
        now.len() == 1 && now != before && n2.hub.health() == EngineHealth::Up
    })
    .await;
    // Its catch-up started a new epoch: the next publication is not taken for a repeat of 4.
    n1.hub
        .publish("room:h2", "n", &json!({"i": "after"}))
        .await
        .unwrap();
    let d = delivery(&mut b, "n").await;
    assert_eq!(d["data"]["i"], "after");
    assert_eq!(d["seq"], 1);
    assert_ne!(d["epoch"], epoch.as_str());
    // A client recovering from the old epoch is told it was not recovered.
    let mut c = n1.client("cy").await;
    let reply = c
        .request(
            "subscribe",
            json!({"topic": "room:h2", "recover": {"epoch": epoch, "seq": 5}}),
        )
        .await
        .unwrap();
    assert_eq!(reply["recovered"], false);
}

/// Whether a script of the engine waits in Redis, held by `CLIENT PAUSE ... WRITE`.
fn a_script_is_held(redis: &Redis) -> bool {
    let list = redis.cmd(&["CLIENT", "LIST"]).unwrap();
    list.as_str().unwrap_or_default().lines().any(|l| {
        let fields: Vec<&str> = l.split(' ').collect();
        fields.contains(&"cmd=evalsha")
            && fields
                .iter()
                .any(|f| f.strip_prefix("flags=").is_some_and(|f| f.contains('b')))
    })
}

/// Nothing of `topic` left: no subscription to its channel, no subscriber, no presence.
async fn topic_is_clean(redis: &Redis, hub: &Hub, topic: &str) {
    let channel = format!("switchboard:t:{topic}");
    until("the node to leave the channel", || async {
        numsub(redis, &channel) == 0
    })
    .await;
    until("the counts and the presence to be empty", || async {
        hub.subscriber_count(topic).await.unwrap() == 0
            && hub.presence(topic).await.unwrap().is_empty()
    })
    .await;
    until("Redis to hold only the expected keys", || async {
        leftover_keys(redis).is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_subscribe_or_track_given_up_midway_leaves_nothing_behind() {
    let Some(redis) = Redis::start("cancel") else {
        return;
    };
    // Long timeouts: Redis is paused below for longer than the usual test settings allow.
    let n1 = node_with(
        builder(&redis)
            .node_timeout(Duration::from_secs(12))
            .command_timeout(Duration::from_secs(4)),
    )
    .await;
    let channel = "switchboard:t:room:x";
    let sink = Arc::new(Collect::default());

    // Paused for writes, Redis holds the engine's scripts but not its SUBSCRIBE: a subscribe
    // gets the node on the channel, its subscriber is pending, and its script waits. Then its
    // caller stops waiting.
    redis.cmd(&["CLIENT", "PAUSE", "3000", "WRITE"]).unwrap();
    let req = SubscribeRequest {
        presence: Some(("dropped".into(), json!({}))),
        ..SubscribeRequest::new(
            "room:x".into(),
            Subscriber {
                id: ConnectionId::next(),
                sink: sink.clone(),
            },
        )
    };
    let task = tokio::spawn(n1.engine.subscribe(req));
    until("the subscribe script to wait in Redis", || async {
        a_script_is_held(&redis)
    })
    .await;
    assert_eq!(numsub(&redis, channel), 1);
    task.abort();
    assert!(task.await.is_err_and(|e| e.is_cancelled()));
    redis.cmd(&["CLIENT", "UNPAUSE"]).unwrap();
    topic_is_clean(&redis, &n1.hub, "room:x").await;

    // The same through a connection that closes while its subscribe is under way.
    redis.cmd(&["CLIENT", "PAUSE", "3000", "WRITE"]).unwrap();
    let mut c = n1.client("gone").await;
    c.send_json(&json!({"type": "subscribe", "ref": 1, "data": {"topic": "room:x"}}))
        .await
        .unwrap();
    until("the subscribe script to wait in Redis", || async {
        a_script_is_held(&redis)
    })
    .await;
    c.drop_abruptly();
    redis.cmd(&["CLIENT", "UNPAUSE"]).unwrap();
    topic_is_clean(&redis, &n1.hub, "room:x").await;

    // A track of a connection that is no subscriber, given up once its script is queued (its
    // first poll queues it).
    let mut track = n1.engine.track(
        "room:x".into(),
        Subscriber {
            id: ConnectionId::next(),
            sink: sink.clone(),
        },
        "untracked".into(),
        json!({}),
    );
    assert!((&mut track).now_or_never().is_none());
    drop(track);
    topic_is_clean(&redis, &n1.hub, "room:x").await;
    assert!(sink.0.lock().unwrap().is_empty(), "nothing was delivered");
}

#[tokio::test]
async fn malformed_values_in_redis_do_not_break_the_scripts() {
    let Some(redis) = Redis::start("malformed") else {
        return;
    };
    let n1 = node(&redis).await;
    let node = n1.engine.node_id().to_owned();
    // What a bug or a hand edit could leave: an entry without its newlines, counts that are
    // not numbers, a presence version that is neither.
    let bad: [&[&str]; 6] = [
        &["HSET", "switchboard:p:room:m", "broken", "no newlines"],
        &["HSET", "switchboard:pc:room:m", "\"mal\"", "many"],
        &["HSET", &format!("switchboard:ns:{node}"), "room:m", "x"],
        &["HSET", "switchboard:ns:elsewhere", "room:m", "y"],
        &["ZADD", "switchboard:nodes", "99999999999999", "elsewhere"],
        &["HSET", "switchboard:pv:room:m", "e", "?", "v", "z"],
    ];
    for cmd in bad {
        redis.cmd(cmd).unwrap();
    }
    let mut c = n1.client("mal").await;
    join(&mut c, "room:m").await;
    let state = c.recv_event("presence_state").await.unwrap();
    assert!(state.get("mal").is_some(), "{state}");
    let diff = c.recv_event("presence_diff").await.unwrap();
    assert!(diff["joins"]["mal"].is_object(), "{diff}");
    assert_eq!(n1.hub.subscriber_count("room:m").await.unwrap(), 1);
    let topics = n1.hub.topics().await.unwrap();
    assert_eq!((topics.len(), topics[0].subscribers), (1, 1), "{topics:?}");
    assert_eq!(n1.hub.stats().await.unwrap().engine.subscriptions, 1);
    let p = n1.hub.presence("room:m").await.unwrap();
    assert_eq!(p.keys().collect::<Vec<_>>(), vec!["mal"]);
    // The broken entry is gone once a script met it.
    redis.cmd(&["DEL", "switchboard:nodes"]).unwrap();
    until("the node to write itself back", || async {
        n1.hub.subscriber_count("room:m").await.unwrap() == 1
            && redis
                .cmd(&["HEXISTS", "switchboard:p:room:m", "broken"])
                .unwrap()
                == json!(0)
    })
    .await;
    c.request("unsubscribe", json!({"topic": "room:m"}))
        .await
        .unwrap();
    assert_eq!(n1.hub.subscriber_count("room:m").await.unwrap(), 0);
    assert!(n1.hub.presence("room:m").await.unwrap().is_empty());
}

#[tokio::test]
async fn scripts_flushed_from_redis_are_loaded_again_in_order() {
    let Some(redis) = Redis::start("noscript") else {
        return;
    };
    let n1 = node(&redis).await;
    let mut a = n1.client("ann").await;
    join(&mut a, "room:hf").await;
    redis.cmd(&["SCRIPT", "FLUSH"]).unwrap();
    // Queued in call order (`Engine::publish` queues before returning) without waiting: they
    // go to Redis in few pipelines, all fail with NOSCRIPT, and run again in that order.
    let publishes: Vec<_> = (0..50)
        .map(|i| {
            n1.engine.publish(Publish {
                topic: "room:hf".into(),
                event: "n".into(),
                data: serde_json::value::to_raw_value(&json!({ "i": i }))
                    .unwrap()
                    .into(),
                exclude: None,
            })
        })
        .collect();
    for r in futures_util::future::join_all(publishes).await {
        r.unwrap();
    }
    for i in 0..50 {
        let d = delivery(&mut a, "n").await;
        assert_eq!(
            (d["seq"].clone(), d["data"]["i"].clone()),
            (json!(i + 1), json!(i))
        );
    }
    nothing_more(&n1.hub, "room:hf", &mut [&mut a]).await;
}

#[tokio::test]
async fn an_engine_that_cannot_reach_redis_says_so() {
    // No redis-server needed: nothing listens on a socket that does not exist.
    let missing = std::env::temp_dir().join(format!(
        "switchboard-redis-none-{}/redis.sock",
        std::process::id()
    ));
    let url = format!("redis+unix://{}", missing.display());
    let err = ChannelError::from(RedisEngine::connect(url.clone()).await.unwrap_err());
    assert_eq!(err.code(), "engine_unavailable");
    let engine = RedisEngine::builder(url).start().unwrap();
    let hub = Hub::with_engine(engine);
    assert!(matches!(hub.health(), EngineHealth::Down { .. }));
    let err = hub.publish("t", "e", &1).await.unwrap_err();
    assert_eq!(err.code(), "engine_unavailable");
    assert!(RedisEngine::builder("nonsense://").start().is_err());
}

async fn tab(n: &Node, name: &str) -> Result<TestClient, TestError> {
    n.srv.connect(&format!("/users?name={name}")).await
}

async fn id(c: &mut TestClient) -> ConnectionId {
    let v = c.request("whoami", json!(null)).await.unwrap();
    v.as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn users_span_the_nodes() {
    let Some(redis) = Redis::start("users_span_the_nodes") else {
        return;
    };
    let (a, b) = (node(&redis).await, node(&redis).await);
    let mut ann_a = tab(&a, "ann").await.unwrap();
    let mut ann_b = tab(&b, "ann").await.unwrap();
    let mut bob_b = tab(&b, "bob").await.unwrap();
    let ids = {
        let mut v = vec![id(&mut ann_a).await, id(&mut ann_b).await];
        v.sort();
        v
    };
    // The index is cluster-wide: either node lists both of ann's connections.
    for hub in [&a.hub, &b.hub] {
        let mut got = hub.user_connections("ann").await.unwrap();
        got.sort();
        assert_eq!(got, ids);
    }
    // The cap counts connections on every node: a third, on either node, is refused.
    for n in [&a, &b] {
        match tab(n, "ann").await {
            Err(TestError::Rejected { status: 429, body }) => {
                assert!(body.contains("too_many_user_connections"), "{body}");
            }
            other => panic!("a third connection of ann: {other:?}"),
        }
    }
    let mut bob_a = tab(&a, "bob").await.unwrap();

    // A push from node A reaches ann on both nodes, and only ann.
    a.hub
        .send_to_user("ann", "note", &json!("for ann"))
        .await
        .unwrap();
    b.hub
        .send_to_user("bob", "note", &json!("for bob"))
        .await
        .unwrap();
    for c in [&mut ann_a, &mut ann_b] {
        assert_eq!(c.recv_event("note").await.unwrap(), "for ann");
    }
    for c in [&mut bob_a, &mut bob_b] {
        assert_eq!(c.recv_event("note").await.unwrap(), "for bob");
    }

    // A disconnect from node B closes ann everywhere; bob stays.
    b.hub.disconnect_user("ann", 4003, "bye").await.unwrap();
    for c in [&mut ann_a, &mut ann_b] {
        assert_eq!(c.recv_close().await.unwrap(), (4003, "bye".to_owned()));
    }
    id(&mut bob_a).await;
    until("ann's connections to leave the index", || async {
        a.hub.user_connections("ann").await.unwrap().is_empty()
    })
    .await;
    // And her places are free again, on either node.
    let mut again = tab(&b, "ann").await.unwrap();
    id(&mut again).await;
    assert!(
        a.hub.topics().await.unwrap().is_empty(),
        "users' topics are not listed"
    );
}
