//! The chat example as two nodes sharing one Redis, exactly as the README runs it
//! (`cargo run --example chat -- --port P --redis URL`): a client on each node, rooms, members
//! and history shared, announcements through either node's HTTP API, and a Redis outage that
//! both nodes survive. The same two nodes on Redis Cluster (`--redis-cluster URLS`) and on
//! NATS (`--nats URL`) share rooms, members and history too.
//!
//! Locally the tests skip when `redis-server` (`redis-cli`, `nats-server`) is missing; under CI
//! they fail instead.

use std::time::Duration;

use serde_json::{json, Value};
use switchboard::testing::{TestClient, TestError};
use switchboard_suite::{chat, http, NatsServer, Proc, RedisCluster, RedisServer, Wait};

fn chat_node(redis: &RedisServer) -> (Proc, String) {
    chat(&["--redis", &redis.url()])
}

/// A logged-in client in the lobby, joined as the page joins (with the last 50 messages).
async fn member(base: &str, nick: &str) -> TestClient {
    let ws = format!("{}/ws/chat", base.replacen("http://", "ws://", 1));
    let mut c = TestClient::connect(&ws).await.expect("connect");
    assert_eq!(
        c.request("nick", json!({"nick": nick})).await.unwrap(),
        nick
    );
    c.request("subscribe", json!({"topic": "room:lobby", "last": 50}))
        .await
        .expect("join the lobby");
    c
}

/// Reads presence frames until `nick` is among the members they report.
async fn sees(c: &mut TestClient, nick: &str) {
    loop {
        let f = c.recv_json().await.expect("a presence frame");
        let members = match f["event"].as_str() {
            Some("presence_state") => &f["data"],
            Some("presence_diff") => &f["data"]["joins"],
            _ => continue,
        };
        if members.get(nick).is_some() {
            return;
        }
    }
}

/// The next room message's `(nick, text)`.
async fn message(c: &mut TestClient) -> (String, String) {
    let m = c.recv_event("message").await.expect("a room message");
    (
        m["nick"].as_str().unwrap_or_default().to_owned(),
        m["text"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Polls `GET {base}/health` until its status is `want`, at most 20 s.
async fn wait_health(base: &str, want: u16) {
    let url = format!("{base}/health");
    Wait::up_to(Duration::from_secs(20))
        .every(Duration::from_millis(50))
        .eventually(&format!("{url} to answer {want}"), || async {
            match http("GET", &url, "").await {
                Ok((status, _)) if status == want => Ok(()),
                other => Err(other),
            }
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_chat_nodes_share_rooms_through_redis() {
    let Some(mut redis) = RedisServer::start("chat") else {
        return;
    };
    let (_a, node_a) = chat_node(&redis);
    let (_b, node_b) = chat_node(&redis);

    let mut ada = member(&node_a, "ada").await;
    let mut bob = member(&node_b, "bob").await;
    // bob, on the other node, sees ada already there; ada sees bob arrive.
    sees(&mut bob, "ada").await;
    sees(&mut ada, "bob").await;

    // A message on one node reaches the room on the other, and the sender's own node.
    bob.request("say", json!({"room": "lobby", "text": "hello from B"}))
        .await
        .unwrap();
    assert_eq!(
        message(&mut ada).await,
        ("bob".into(), "hello from B".into())
    );
    assert_eq!(
        message(&mut bob).await,
        ("bob".into(), "hello from B".into())
    );

    // The HTTP API of either node publishes to everyone, and counts the whole cluster.
    let (status, _) = http(
        "POST",
        &format!("{node_b}/api/rooms/lobby/announce"),
        "maintenance at noon",
    )
    .await
    .unwrap();
    assert_eq!(status, 204);
    assert_eq!(
        ada.recv_event("announcement").await.unwrap()["text"],
        "maintenance at noon"
    );
    let (status, rooms) = http("GET", &format!("{node_a}/api/rooms"), "")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let rooms: Value = serde_json::from_str(&rooms).unwrap();
    let lobby = rooms
        .as_array()
        .and_then(|r| r.iter().find(|r| r["room"] == "lobby"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(lobby["members"], 2, "rooms: {rooms}");

    // History is shared: a newcomer on node A gets what was said through node B.
    let mut cy = member(&node_a, "cy").await;
    assert_eq!(
        message(&mut cy).await,
        ("bob".into(), "hello from B".into())
    );

    // Redis goes away: both nodes stay up for their clients and say the engine is down;
    // sending fails with a clear error instead of vanishing.
    redis.kill();
    wait_health(&node_a, 503).await;
    wait_health(&node_b, 503).await;
    match ada
        .request("say", json!({"room": "lobby", "text": "anyone?"}))
        .await
    {
        Err(TestError::Reply { code, .. }) => assert_eq!(code, "engine_unavailable"),
        other => panic!("expected engine_unavailable, got {other:?}"),
    }

    // Redis is back (empty): the nodes reconnect and resubscribe, and the room works again.
    redis.restart();
    wait_health(&node_a, 200).await;
    wait_health(&node_b, 200).await;
    ada.request("say", json!({"room": "lobby", "text": "back again"}))
        .await
        .unwrap();
    let deadline = Duration::from_secs(10);
    for c in [&mut bob, &mut cy] {
        let got = tokio::time::timeout(deadline, async {
            loop {
                let m = message(c).await;
                if m.1 == "back again" {
                    return m;
                }
            }
        })
        .await
        .expect("the message after the outage");
        assert_eq!(got, ("ada".into(), "back again".into()));
    }
}

/// Two chat nodes share the lobby: members, messages both ways, history for a newcomer.
async fn share_the_lobby(node_a: &str, node_b: &str) {
    let mut ada = member(node_a, "ada").await;
    let mut bob = member(node_b, "bob").await;
    sees(&mut bob, "ada").await;
    sees(&mut ada, "bob").await;
    bob.request("say", json!({"room": "lobby", "text": "hello from B"}))
        .await
        .unwrap();
    assert_eq!(
        message(&mut ada).await,
        ("bob".into(), "hello from B".into())
    );
    ada.request("say", json!({"room": "lobby", "text": "hello from A"}))
        .await
        .unwrap();
    assert_eq!(
        message(&mut bob).await,
        ("bob".into(), "hello from B".into())
    );
    assert_eq!(
        message(&mut bob).await,
        ("ada".into(), "hello from A".into())
    );
    let mut cy = member(node_b, "cy").await;
    assert_eq!(
        message(&mut cy).await,
        ("bob".into(), "hello from B".into())
    );
    assert_eq!(
        message(&mut cy).await,
        ("ada".into(), "hello from A".into())
    );
    wait_health(node_a, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_chat_nodes_share_rooms_through_redis_cluster() {
    let Some(cluster) = RedisCluster::start("chat") else {
        return;
    };
    let seeds = cluster.urls()[..3].join(",");
    let (_a, node_a) = chat(&["--redis-cluster", &seeds]);
    let (_b, node_b) = chat(&["--redis-cluster", &seeds]);
    share_the_lobby(&node_a, &node_b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_chat_nodes_share_rooms_through_nats() {
    let Some(nats) = NatsServer::start("chat") else {
        return;
    };
    let (_a, node_a) = chat(&["--nats", &nats.url()]);
    let (_b, node_b) = chat(&["--nats", &nats.url()]);
    share_the_lobby(&node_a, &node_b).await;
}
