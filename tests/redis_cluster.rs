//! The Redis engine on a real Redis Cluster (three primaries, three replicas, started by each
//! test on loopback ports of its own, see `tests/support/redis_cluster.rs`) and on several
//! independent Redis servers: two nodes (servers with their own hub and engine), real
//! WebSocket clients on each. Topics spread over the shards through sharded pub/sub; a primary
//! failing over to its replica (killed, then by `CLUSTER FAILOVER`) and coming back loses and
//! repeats nothing; a whole shard (primary and replica) restarting empty fails publishes
//! clearly, then resumes delivery under a new epoch.
//!
//! The engine's conformance suite runs on a cluster too (`tests/conformance.rs`). Without
//! `redis-server` and `redis-cli` the tests skip with a message; under `CI=true` they fail.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use actix_web::App;
use serde_json::{json, Value};
use switchboard::engine::redis::{RedisEngine, RedisEngineBuilder};
use switchboard::engine::{EngineHealth, HistoryConfig};
use switchboard::prelude::*;
use switchboard::testing::{TestClient, TestError, TestServer};
use switchboard_suite::rooms;
use switchboard_suite::{delivery, error_reply, until, RedisCluster, RedisServer};

struct Node {
    hub: Hub,
    engine: RedisEngine,
    srv: TestServer,
}

fn settings(b: RedisEngineBuilder) -> RedisEngineBuilder {
    b.history("room:h*", HistoryConfig::last(100))
        .node_timeout(Duration::from_secs(3))
        .command_timeout(Duration::from_secs(1))
        .connect_timeout(Duration::from_secs(1))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(300))
}

async fn node(builder: RedisEngineBuilder) -> Node {
    let _ = env_logger::builder().is_test(true).try_init();
    let engine = builder.connect().await.expect("connect to redis");
    let hub = Hub::with_engine(engine.clone());
    let h = hub.clone();
    let srv = TestServer::build(move || {
        App::new()
            .app_data(h.clone())
            .service(rooms::route())
            .service(users_route())
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

/// A channel that names users (by `?name=`), two connections each at most, cluster-wide.
fn users_route() -> ChannelRoute<rooms::User> {
    ChannelRoute::new("/users")
        .on_connect(rooms::connect)
        .user(|u: &rooms::User| u.name.clone())
        .max_connections_per_user(2)
        .message(switchboard_suite::handlers::whoami)
}

async fn tab(n: &Node, name: &str) -> Result<TestClient, TestError> {
    n.srv.connect(&format!("/users?name={name}")).await
}

async fn id(c: &mut TestClient) -> ConnectionId {
    let v = c.request("whoami", json!(null)).await.unwrap();
    v.as_str().unwrap().parse().unwrap()
}

async fn join(c: &mut TestClient, topic: &str) -> Value {
    c.request("subscribe", json!({ "topic": topic }))
        .await
        .unwrap_or_else(|e| panic!("joining {topic}: {e}"))
}

/// The shard channels each node of the cluster has subscribers on.
fn shard_channels(cluster: &RedisCluster, i: usize) -> Vec<String> {
    match cluster.cmd(i, &["PUBSUB", "SHARDCHANNELS"]) {
        Ok(Value::Array(v)) => v
            .into_iter()
            .filter_map(|c| c.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// The node whose shard channel carries `topic`, and the channel.
fn channel_of(cluster: &RedisCluster, topic: &str) -> (usize, String) {
    let suffix = format!(":t:{topic}");
    for i in cluster.primaries() {
        if let Some(c) = shard_channels(cluster, i)
            .into_iter()
            .find(|c| c.ends_with(&suffix))
        {
            return (i, c);
        }
    }
    panic!("no primary has a shard channel for {topic}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_and_users_spread_over_the_shards_through_sharded_pubsub() {
    let Some(cluster) = RedisCluster::start("spread") else {
        return;
    };
    let (n1, n2) = (
        node(settings(RedisEngine::cluster(cluster.urls()))).await,
        node(settings(RedisEngine::cluster(cluster.urls()))).await,
    );
    let mut a = n1.client("ann").await;
    let mut p = n2.client("pub").await;
    let topics: Vec<String> = (0..48).map(|i| format!("room:h{i}")).collect();
    for t in &topics {
        join(&mut a, t).await;
    }
    for t in &topics {
        p.request("say", json!({"topic": t, "text": t}))
            .await
            .unwrap();
    }
    let mut got = BTreeMap::new();
    for _ in &topics {
        let d = delivery(&mut a, "said").await;
        assert_eq!(d["seq"], 1);
        *got.entry(d["topic"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(
        got.len(),
        topics.len(),
        "each topic delivered once: {got:?}"
    );

    // Every primary holds some of the topics' history and carries some of their channels,
    // as shard channels (none through classic pub/sub).
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3);
    let mut channels = 0;
    for &i in &primaries {
        let keys = cluster.cmd(i, &["DBSIZE"]).unwrap().as_i64().unwrap();
        assert!(keys > 0, "primary {i} holds no key");
        let mine = shard_channels(&cluster, i);
        assert!(!mine.is_empty(), "primary {i} carries no topic");
        channels += mine.len();
        assert_eq!(
            cluster.cmd(i, &["PUBSUB", "CHANNELS"]).unwrap(),
            json!([]),
            "classic pub/sub on primary {i}"
        );
    }
    assert_eq!(channels, topics.len());
    let parts: BTreeSet<usize> = topics.iter().map(|t| n1.engine.part_of(t)).collect();
    assert!(
        parts.len() > 8,
        "48 topics on only {} of 16 partitions",
        parts.len()
    );

    // Counts add up over the partitions.
    let stats = n2.hub.stats().await.unwrap();
    assert_eq!(stats.engine.topics, topics.len());
    assert_eq!(stats.engine.histories, topics.len());
    assert_eq!(n2.hub.subscriber_count("room:h7").await.unwrap(), 1);

    // Users: the index and the per-user cap are cluster-wide, pushes reach every tab.
    let (a, b) = (&n1, &n2);
    let mut ann_a = tab(a, "ann").await.unwrap();
    let mut ann_b = tab(b, "ann").await.unwrap();
    let mut bob_b = tab(b, "bob").await.unwrap();
    let ids = {
        let mut v = vec![id(&mut ann_a).await, id(&mut ann_b).await];
        v.sort();
        v
    };
    for hub in [&a.hub, &b.hub] {
        let mut got = hub.user_connections("ann").await.unwrap();
        got.sort();
        assert_eq!(got, ids);
    }
    for n in [a, b] {
        match tab(n, "ann").await {
            Err(TestError::Rejected { status: 429, body }) => {
                assert!(body.contains("too_many_user_connections"), "{body}");
            }
            other => panic!("a third connection of ann: {other:?}"),
        }
    }
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
    assert_eq!(bob_b.recv_event("note").await.unwrap(), "for bob");
    b.hub.disconnect_user("ann", 4003, "bye").await.unwrap();
    for c in [&mut ann_a, &mut ann_b] {
        assert_eq!(c.recv_close().await.unwrap(), (4003, "bye".to_owned()));
    }
    until("ann's connections to leave the index", || async {
        a.hub.user_connections("ann").await.unwrap().is_empty()
    })
    .await;
    id(&mut tab(b, "ann").await.unwrap()).await;
}

/// Publishes `say` on `topic` through `p` until one is accepted (the engine reconnecting);
/// returns how many were refused, each with `engine_unavailable`.
async fn say_until_accepted(p: &mut TestClient, topic: &str, text: &str) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut refused = 0;
    loop {
        match p
            .request("say", json!({"topic": topic, "text": text}))
            .await
        {
            Ok(_) => return refused,
            Err(e) => {
                let (code, message, _) = error_reply(Err(e));
                assert_eq!(code, "engine_unavailable", "{message}");
                refused += 1;
                assert!(
                    std::time::Instant::now() < deadline,
                    "publishes still refused after 30 s: {message}"
                );
                // Polling the engine's reconnection (backoff 50 to 300 ms).
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Reads `said` deliveries on `c` until `last` arrives; their texts in order.
async fn said_until(c: &mut TestClient, last: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    loop {
        let d = delivery(c, "said").await;
        let text = d["data"]["text"].as_str().unwrap().to_owned();
        out.push((text.clone(), d["seq"].as_u64().unwrap()));
        if text == last {
            return out;
        }
    }
}

/// Two nodes on the cluster; ann (node 1) and bob (node 2) in `topic`, pub (node 2) has said
/// `m1..=m{n}` and both have them.
struct Room {
    n1: Node,
    n2: Node,
    a: TestClient,
    b: TestClient,
    p: TestClient,
    /// The topic's epoch when ann joined.
    epoch: String,
}

async fn room_on_two_nodes(cluster: &RedisCluster, topic: &str, n: usize) -> Room {
    let (n1, n2) = (
        node(settings(RedisEngine::cluster(cluster.urls()))).await,
        node(settings(RedisEngine::cluster(cluster.urls()))).await,
    );
    let mut a = n1.client("ann").await;
    let mut b = n2.client("bob").await;
    let mut p = n2.client("pub").await;
    let epoch = join(&mut a, topic).await["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    join(&mut b, topic).await;
    for i in 1..=n {
        p.request("say", json!({"topic": topic, "text": format!("m{i}")}))
            .await
            .unwrap();
    }
    let last = format!("m{n}");
    for c in [&mut a, &mut b] {
        assert_eq!(said_until(c, &last).await.len(), n);
    }
    Room {
        n1,
        n2,
        a,
        b,
        p,
        epoch,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_failing_over_loses_and_repeats_nothing() {
    let Some(mut cluster) = RedisCluster::start("failover") else {
        return;
    };
    let topic = "room:hf";
    let Room {
        n1,
        n2,
        mut a,
        mut b,
        mut p,
        epoch,
    } = room_on_two_nodes(&cluster, topic, 5).await;
    let (primary, channel) = channel_of(&cluster, topic);
    let slot = cluster.cmd(0, &["CLUSTER", "KEYSLOT", &channel]).unwrap();
    let slot = slot.as_u64().unwrap() as u16;
    // A client that leaves now comes back after the failover, recovering from m5.
    let mut c = n1.client("cy").await;
    assert_eq!(join(&mut c, topic).await["seq"], 5);
    c.drop_abruptly();
    cluster.wait_replicated(primary);

    // 1. The primary dies: publishes fail at once, clearly; the replica takes over; the nodes
    //    follow, publishes go through again.
    cluster.kill(primary);
    let r = p
        .request("say", json!({"topic": topic, "text": "refused"}))
        .await;
    let (code, _, _) = error_reply(r);
    assert_eq!(code, "engine_unavailable");
    until("the replica to take over the slot", || {
        let taken = cluster.try_primary_of(slot).is_some_and(|n| n != primary);
        async move { taken }
    })
    .await;
    let refused = say_until_accepted(&mut p, topic, "m6").await;
    eprintln!("failover: {refused} publish(es) refused meanwhile");
    for i in 7..=9 {
        p.request("say", json!({"topic": topic, "text": format!("m{i}")}))
            .await
            .unwrap();
    }
    for c in [&mut a, &mut b] {
        let got = said_until(c, "m9").await;
        let texts: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            texts,
            ["m6", "m7", "m8", "m9"],
            "in order, once, none refused"
        );
        let seqs: Vec<u64> = got.iter().map(|(_, s)| *s).collect();
        assert_eq!(seqs, [6, 7, 8, 9], "the history survived the failover");
    }
    // Recovery after the failover, on the other node: from m5 on, same epoch.
    let mut c = n2.client("cy").await;
    let reply = c
        .request(
            "subscribe",
            json!({"topic": topic, "recover": {"epoch": epoch, "seq": 5}}),
        )
        .await
        .unwrap();
    assert_eq!(reply["recovered"], true);
    let texts: Vec<String> = said_until(&mut c, "m9")
        .await
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(texts, ["m6", "m7", "m8", "m9"]);

    // 2. The old primary comes back (as a replica, empty), then takes the slot back by a
    //    manual failover: its connections were never cut, the nodes follow the redirection.
    cluster.restart(primary);
    cluster.wait_ok();
    let now = cluster.primary_of(slot);
    cluster.wait_replicated(now);
    cluster
        .cmd(primary, &["CLUSTER", "FAILOVER"])
        .expect("CLUSTER FAILOVER");
    until("the old primary to take the slot back", || {
        let back = cluster.try_primary_of(slot) == Some(primary);
        async move { back }
    })
    .await;
    let refused = say_until_accepted(&mut p, topic, "m10").await;
    eprintln!("manual failover: {refused} publish(es) refused meanwhile");
    for c in [&mut a, &mut b, &mut c] {
        let texts: Vec<String> = said_until(c, "m10")
            .await
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(texts, ["m10"]);
    }
    until("both nodes up", || {
        let up = [&n1, &n2]
            .iter()
            .all(|n| n.hub.health() == EngineHealth::Up);
        async move { up }
    })
    .await;
    // Presence on the topic is whole again: three users, from both nodes.
    let presence = n1.hub.presence(topic).await.unwrap();
    let names: BTreeSet<&str> = presence.keys().map(String::as_str).collect();
    assert_eq!(names, BTreeSet::from(["ann", "bob", "cy"]));
}

/// The replica of primary `primary`, as the nodes' `ROLE` say.
fn replica_of(cluster: &RedisCluster, primary: usize) -> usize {
    let port = u64::from(cluster.port(primary));
    (0..6)
        .find(|&j| {
            matches!(cluster.cmd(j, &["ROLE"]), Ok(Value::Array(r))
                if r.first().and_then(Value::as_str) == Some("slave")
                    && r.get(2).and_then(Value::as_u64) == Some(port))
        })
        .expect("the primary has a replica")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_shard_restarting_fails_clearly_then_resumes_in_a_new_epoch() {
    let Some(mut cluster) = RedisCluster::start("shard-restart") else {
        return;
    };
    let topic = "room:hs";
    let Room {
        n1,
        n2,
        mut a,
        mut b,
        mut p,
        epoch,
    } = room_on_two_nodes(&cluster, topic, 3).await;
    let (primary, _) = channel_of(&cluster, topic);
    let replica = replica_of(&cluster, primary);

    // 1. The shard's primary and its replica both die (no persistence: its data is gone).
    //    Publishes to the topic fail at once, clearly.
    cluster.kill(primary);
    cluster.kill(replica);
    let r = p
        .request("say", json!({"topic": topic, "text": "refused"}))
        .await;
    let (code, _, _) = error_reply(r);
    assert_eq!(code, "engine_unavailable");

    // 2. Both come back, empty, with their cluster configuration: the primary serves its
    //    slots again. Publishes go through; the subscribers on both nodes get what is
    //    published from then on, once each, and nothing that was refused.
    cluster.restart(primary);
    cluster.restart(replica);
    cluster.wait_ok();
    let refused = say_until_accepted(&mut p, topic, "after").await;
    eprintln!("shard restart: {refused} publish(es) refused after the restart");
    for c in [&mut a, &mut b] {
        let texts: Vec<String> = said_until(c, "after")
            .await
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(texts, ["after"], "once, and nothing refused");
    }

    // 3. The topic's history went with the shard: a client recovering from before the outage
    //    is told it was not recovered, under a new epoch, rather than given a partial history.
    let mut c = n1.client("cy").await;
    let reply = c
        .request(
            "subscribe",
            json!({"topic": topic, "recover": {"epoch": epoch, "seq": 3}}),
        )
        .await
        .unwrap();
    assert_eq!(reply["recovered"], false, "{reply}");
    assert_ne!(reply["epoch"].as_str(), Some(epoch.as_str()), "{reply}");
    until("both nodes up", || {
        let up = [&n1, &n2]
            .iter()
            .all(|n| n.hub.health() == EngineHealth::Up);
        async move { up }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_spread_over_independent_servers() {
    let servers: Vec<RedisServer> = (0..3)
        .map_while(|i| RedisServer::start(&format!("sharded{i}")))
        .collect();
    if servers.len() < 3 {
        return;
    }
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let (n1, n2) = (
        node(settings(RedisEngine::sharded(urls.clone()))).await,
        node(settings(RedisEngine::sharded(urls))).await,
    );
    let mut a = n1.client("ann").await;
    let mut p = n2.client("pub").await;
    let topics: Vec<String> = (0..24).map(|i| format!("room:h{i}")).collect();
    for t in &topics {
        join(&mut a, t).await;
    }
    for t in &topics {
        p.request("say", json!({"topic": t, "text": t}))
            .await
            .unwrap();
    }
    let mut got = BTreeSet::new();
    for _ in &topics {
        let d = delivery(&mut a, "said").await;
        assert!(got.insert(d["topic"].as_str().unwrap().to_owned()));
    }
    // Each server carries its share of the channels, with classic pub/sub.
    for (i, s) in servers.iter().enumerate() {
        let channels = s.cmd(&["PUBSUB", "CHANNELS"]).unwrap();
        let n = channels.as_array().map_or(0, Vec::len);
        let expect = topics.iter().filter(|t| n1.engine.part_of(t) == i).count();
        assert!(
            n > 0 && n == expect,
            "server {i}: {n} channels, {expect} expected"
        );
    }
    assert_eq!(n1.hub.stats().await.unwrap().engine.topics, topics.len());
    // The same server twice is refused (two parts on one keyspace).
    let same = vec![servers[0].url(), servers[0].url()];
    assert!(RedisEngine::sharded(same).start().is_err());
}
