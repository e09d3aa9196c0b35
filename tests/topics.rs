//! Topics on broker actors: subscribe, publish, broadcast, unsubscribe, cleanup, join guards,
//! presence, slow consumers and recovery, with real clients.

use std::time::Duration;

use actix_web::{web, App, HttpResponse};
use serde_json::{json, Value};
use switchboard::engine::{HistoryConfig, MemoryEngine};
use switchboard::prelude::*;
use switchboard::testing::{TestClient, TestError, TestServer};
use switchboard_suite::rooms::{self, User};
use switchboard_suite::{delivery, raw_http_with, until};

/// The rooms app, and `admin:*` topics for admins only.
fn route() -> ChannelRoute<User> {
    rooms::route().join("admin:*", |ch: Channel<User>, _topic: String| async move {
        match ch.session() {
            Some(u) if u.admin => Ok(()),
            _ => Err(ChannelError::forbidden("admins only")),
        }
    })
}

fn server(hub: Hub, route: ChannelRoute<User>) -> TestServer {
    TestServer::build(move || {
        App::new()
            .app_data(hub.clone())
            .service(route.clone())
            .route("/announce/{topic}", web::post().to(announce))
    })
    .workers(2)
    .start()
}

async fn announce(hub: Hub, topic: web::Path<String>, body: String) -> HttpResponse {
    match hub.publish(&topic, "announcement", &body).await {
        Ok(()) => HttpResponse::NoContent().finish(),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

async fn join(c: &mut TestClient, topic: &str) -> Result<Value, TestError> {
    c.request("subscribe", json!({ "topic": topic })).await
}

#[tokio::test]
async fn publish_reaches_subscribers_with_topic_frames() {
    let hub = Hub::new();
    let srv = server(hub.clone(), route());
    let mut a = srv.connect("/ws?name=ann").await.unwrap();
    let mut b = srv.connect("/ws?name=bob").await.unwrap();
    let joined = join(&mut a, "room:1").await.unwrap();
    assert_eq!(joined["topic"], "room:1");
    join(&mut b, "room:1").await.unwrap();
    b.request("say", json!({"topic": "room:1", "text": "hi"}))
        .await
        .unwrap();
    for c in [&mut a, &mut b] {
        let d = delivery(c, "said").await;
        assert_eq!(
            d,
            json!({"topic": "room:1", "event": "said", "data": {"from": "bob", "text": "hi"}})
        );
    }
    assert_eq!(hub.subscriber_count("room:1").await.unwrap(), 2);
    let topics = hub.topics().await.unwrap();
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0].subscribers, 2);
}

#[tokio::test]
async fn broadcast_from_skips_the_sender() {
    let srv = server(Hub::new(), route());
    let mut a = srv.connect("/ws?name=ann").await.unwrap();
    let mut b = srv.connect("/ws?name=bob").await.unwrap();
    join(&mut a, "room:1").await.unwrap();
    join(&mut b, "room:1").await.unwrap();
    a.request("shout", json!({"topic": "room:1", "text": "one"}))
        .await
        .unwrap();
    a.request("say", json!({"topic": "room:1", "text": "two"}))
        .await
        .unwrap();
    assert_eq!(delivery(&mut b, "shouted").await["data"]["text"], "one");
    assert_eq!(delivery(&mut b, "said").await["data"]["text"], "two");
    // The sender's first topic frame is the second publication: the first skipped it.
    assert_eq!(delivery(&mut a, "said").await["data"]["text"], "two");
}

#[tokio::test]
async fn many_subscribers_receive_in_publish_order() {
    let srv = server(Hub::new(), route());
    let mut clients = Vec::new();
    for i in 0..20 {
        let mut c = srv.connect(&format!("/ws?name=u{i}")).await.unwrap();
        join(&mut c, "room:order").await.unwrap();
        clients.push(c);
    }
    let mut publisher = srv.connect("/ws?name=pub").await.unwrap();
    let n = 300;
    publisher
        .request("burst", json!({"topic": "room:order", "n": n}))
        .await
        .unwrap();
    for c in &mut clients {
        for i in 0..n {
            let d = delivery(c, "n").await;
            assert_eq!(d["data"]["i"], i, "out of order");
        }
    }
}

#[tokio::test]
async fn unsubscribed_clients_get_nothing_more() {
    let hub = Hub::new();
    let srv = server(hub.clone(), route());
    let mut a = srv.connect("/ws?name=ann").await.unwrap();
    let mut b = srv.connect("/ws?name=bob").await.unwrap();
    join(&mut a, "room:u").await.unwrap();
    join(&mut b, "room:u").await.unwrap();
    a.request("unsubscribe", json!({"topic": "room:u"}))
        .await
        .unwrap();
    b.request("say", json!({"topic": "room:u", "text": "missed"}))
        .await
        .unwrap();
    assert_eq!(delivery(&mut b, "said").await["data"]["text"], "missed");
    // B has it, so the broker handled that publication before A's next subscribe.
    join(&mut a, "room:u").await.unwrap();
    b.request("say", json!({"topic": "room:u", "text": "seen"}))
        .await
        .unwrap();
    assert_eq!(delivery(&mut a, "said").await["data"]["text"], "seen");
}

#[tokio::test]
async fn join_guards_decide_who_joins_what() {
    let srv = server(Hub::new(), route());
    let mut user = srv.connect("/ws?name=ann").await.unwrap();
    let mut admin = srv.connect("/ws?name=root&admin=1").await.unwrap();
    match join(&mut user, "admin:ops").await {
        Err(TestError::Reply { code, message, .. }) => {
            assert_eq!(code, "forbidden");
            assert_eq!(message, "admins only");
        }
        other => panic!("expected forbidden, got {other:?}"),
    }
    join(&mut admin, "admin:ops").await.unwrap();
    match join(&mut user, "secret").await {
        Err(TestError::Reply { code, .. }) => assert_eq!(code, "forbidden"),
        other => panic!("a topic without a join rule must be refused, got {other:?}"),
    }
    match user.request("subscribe", json!({"nope": 1})).await {
        Err(TestError::Reply { code, .. }) => assert_eq!(code, "bad_payload"),
        other => panic!("expected bad_payload, got {other:?}"),
    }
    // The refused client still works.
    join(&mut user, "room:ok").await.unwrap();
}

#[tokio::test]
async fn presence_state_and_diffs() {
    let hub = Hub::new();
    let srv = server(hub.clone(), route());
    let mut watcher = srv.connect("/ws?name=wendy").await.unwrap();
    join(&mut watcher, "room:p").await.unwrap();
    let state = watcher.recv_event("presence_state").await.unwrap();
    assert_eq!(state.as_object().unwrap().len(), 1, "{state}");
    assert!(state["wendy"]["metas"].is_array());
    // Every subscriber hears of each key that appears, the joiner included.
    let own = watcher.recv_event("presence_diff").await.unwrap();
    assert!(own["joins"]["wendy"].is_object(), "{own}");

    let mut alice1 = srv.connect("/ws?name=alice").await.unwrap();
    join(&mut alice1, "room:p").await.unwrap();
    let diff = watcher.recv_event("presence_diff").await.unwrap();
    assert!(diff["joins"]["alice"]["metas"].is_array(), "{diff}");
    let state = alice1.recv_event("presence_state").await.unwrap();
    assert!(state.get("wendy").is_some() && state.get("alice").is_some());

    // A second connection of the same user collapses into the same entry: no new join.
    let mut alice2 = srv.connect("/ws?name=alice").await.unwrap();
    join(&mut alice2, "room:p").await.unwrap();
    let p = hub.presence("room:p").await.unwrap();
    assert_eq!(p.len(), 2);
    assert_eq!(p["alice"].metas.len(), 2);

    alice1.close().await.unwrap();
    until("alice's first connection to leave", || async {
        hub.presence("room:p").await.unwrap()["alice"].metas.len() == 1
    })
    .await;
    alice2.drop_abruptly();
    let diff = watcher.recv_event("presence_diff").await.unwrap();
    assert!(diff["leaves"]["alice"].is_object(), "{diff}");
    assert_eq!(diff["joins"], json!({}));
    // Nothing but that one leave: the next frame the watcher sees is its own request's reply.
    let p = hub.presence("room:p").await.unwrap();
    assert_eq!(p.keys().collect::<Vec<_>>(), vec!["wendy"]);
}

#[tokio::test]
async fn connect_subscribe_disconnect_cycles_leave_nothing_behind() {
    let hub = Hub::new();
    let srv = server(hub.clone(), route());
    let url = srv.ws_url("/ws?name=cycler");
    let mut tasks = Vec::new();
    for t in 0..8 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..250 {
                let mut c = TestClient::connect(&url).await.unwrap();
                let topic = format!("room:{}", (t * 250 + i) % 37);
                c.request("subscribe", json!({ "topic": topic }))
                    .await
                    .unwrap();
                if i % 2 == 0 {
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
    until("every connection and subscription to be gone", || async {
        let s = hub.stats().await.unwrap();
        s.connections == 0 && s.engine.subscriptions == 0 && s.engine.topics == 0
    })
    .await;
    assert!(hub.topics().await.unwrap().is_empty());
}

#[tokio::test]
async fn hub_reaches_connections_from_http_handlers() {
    let hub = Hub::new();
    let srv = server(hub.clone(), route());
    let mut a = srv.connect("/ws?name=ann").await.unwrap();
    join(&mut a, "room:news").await.unwrap();
    let (status, _) = raw_http_with(
        srv.addr(),
        "POST",
        "/announce/room:news",
        &[],
        "maintenance at noon",
    )
    .await;
    assert_eq!(status, 204);
    let d = delivery(&mut a, "announcement").await;
    assert_eq!(d["data"], "maintenance at noon");

    let id: ConnectionId =
        serde_json::from_value(a.request("whoami", Value::Null).await.unwrap()).unwrap();
    hub.send_to(id, "direct", &json!({"x": 1})).unwrap();
    assert_eq!(a.recv_event("direct").await.unwrap(), json!({"x": 1}));
    let info = hub.connection(id).unwrap();
    assert_eq!(info.channel, "/ws");
    assert_eq!(info.source_ip.unwrap().to_string(), "127.0.0.1");
    assert_eq!(
        hub.to(id).subscriptions().await.unwrap(),
        vec!["room:news".to_owned()]
    );
    hub.disconnect(id, Some(4000), "bye").unwrap();
    assert_eq!(a.recv_close().await.unwrap(), (4000, "bye".to_owned()));
    until("the connection to leave the hub", || async {
        hub.connection(id).is_none()
    })
    .await;
    assert!(hub.send_to(id, "direct", &1).is_err());
}

/// A client that stops reading while three others read: the others get every publication,
/// in order, and the slow one's outbound queue stays bounded. The publisher goes in batches
/// smaller than the queue, so only the client that stopped reading can fall behind.
async fn slow_consumer(policy: SlowConsumerPolicy) -> (TestServer, TestClient, Hub, ConnectionId) {
    let hub = Hub::new();
    let srv = server(hub.clone(), route().outbound_queue(32, policy));
    let mut slow = srv.connect("/ws?name=slow").await.unwrap();
    join(&mut slow, "room:flood").await.unwrap();
    let slow_id: ConnectionId =
        serde_json::from_value(slow.request("whoami", Value::Null).await.unwrap()).unwrap();
    let mut fast = Vec::new();
    for i in 0..3 {
        let mut c = srv.connect(&format!("/ws?name=fast{i}")).await.unwrap();
        join(&mut c, "room:flood").await.unwrap();
        fast.push(c);
    }
    let mut publisher = srv.connect("/ws?name=pub").await.unwrap();
    // 1600 publications of 16 KiB: far more than the kernel's socket buffers hold.
    let (batches, per_batch) = (160, 10);
    for b in 0..batches {
        publisher
            .request(
                "burst",
                json!({"topic": "room:flood", "n": per_batch, "pad": 16 * 1024}),
            )
            .await
            .unwrap();
        for c in &mut fast {
            for i in 0..per_batch {
                let d = delivery(c, "n").await;
                assert_eq!(d["data"]["i"], i, "batch {b}");
            }
        }
        if let Some(info) = hub.connection(slow_id) {
            assert!(info.queued <= 64, "queue bounded: {}", info.queued);
        }
    }
    (srv, slow, hub, slow_id)
}

#[tokio::test]
async fn slow_consumer_drop_newest_keeps_others_flowing() {
    let (_srv, mut slow, hub, id) = slow_consumer(SlowConsumerPolicy::DropNewest).await;
    let info = hub.connection(id).expect("still connected");
    assert!(info.dropped > 0, "frames were dropped for the slow client");
    // Still open: once it reads again, it gets what was kept and answers requests.
    slow.set_timeout(Duration::from_secs(10));
    let reply = slow.request("whoami", Value::Null).await.unwrap();
    assert_eq!(reply, json!(id));
}

#[tokio::test]
async fn slow_consumer_close_policy_closes_with_its_code() {
    let (_srv, mut slow, _hub, _id) = slow_consumer(SlowConsumerPolicy::Close { code: 1013 }).await;
    slow.set_timeout(Duration::from_secs(10));
    let (code, reason) = slow.recv_close().await.unwrap();
    assert_eq!(code, 1013);
    assert_eq!(reason, "slow consumer");
}

/// The app on a memory engine keeping the last `last` publications of each `room:*` topic.
fn history_server(last: usize) -> TestServer {
    let hub = Hub::with_engine(
        MemoryEngine::builder()
            .history("room:*", HistoryConfig::last(last))
            .build(),
    );
    server(hub, route())
}

#[tokio::test]
async fn reconnecting_client_recovers_missed_publications_in_order() {
    let srv = history_server(50);
    let mut a = srv.connect("/ws?name=ann").await.unwrap();
    let mut p = srv.connect("/ws?name=pub").await.unwrap();
    let joined = join(&mut a, "room:h").await.unwrap();
    let epoch = joined["epoch"].as_str().unwrap().to_owned();
    assert_eq!(joined["seq"], 0);
    p.request("burst", json!({"topic": "room:h", "n": 3}))
        .await
        .unwrap();
    let mut last = 0;
    for i in 0..3 {
        let d = delivery(&mut a, "n").await;
        assert_eq!(d["data"]["i"], i);
        assert_eq!(d["epoch"], epoch.as_str());
        last = d["seq"].as_u64().unwrap();
    }
    a.drop_abruptly();
    // Published while A is away.
    p.request("burst", json!({"topic": "room:h", "n": 5}))
        .await
        .unwrap();
    let mut a = srv.connect("/ws?name=ann").await.unwrap();
    let reply = a
        .request(
            "subscribe",
            json!({"topic": "room:h", "recover": {"epoch": epoch, "seq": last}}),
        )
        .await
        .unwrap();
    assert_eq!(reply["recovered"], true);
    assert_eq!(reply["seq"], last + 5);
    for i in 0..5 {
        let d = delivery(&mut a, "n").await;
        assert_eq!(d["data"]["i"], i, "missed publications replayed in order");
        assert_eq!(d["seq"], last + 1 + i);
    }
    // Live ones continue after the replay.
    p.request("burst", json!({"topic": "room:h", "n": 1}))
        .await
        .unwrap();
    assert_eq!(delivery(&mut a, "n").await["seq"], last + 6);
}

#[tokio::test]
async fn recovery_reports_a_gap_it_cannot_fill() {
    let srv = history_server(3);
    let mut a = srv.connect("/ws?name=ann").await.unwrap();
    let mut p = srv.connect("/ws?name=pub").await.unwrap();
    let joined = join(&mut a, "room:g").await.unwrap();
    let epoch = joined["epoch"].as_str().unwrap().to_owned();
    a.drop_abruptly();
    p.request("burst", json!({"topic": "room:g", "n": 10}))
        .await
        .unwrap();
    let mut a = srv.connect("/ws?name=ann").await.unwrap();
    let reply = a
        .request(
            "subscribe",
            json!({"topic": "room:g", "recover": {"epoch": epoch, "seq": 0}}),
        )
        .await
        .unwrap();
    assert_eq!(reply["recovered"], false);
    assert_eq!(reply["seq"], 10, "the current position, to reload from");
    let reply = a
        .request(
            "subscribe",
            json!({"topic": "room:g", "recover": {"epoch": "stale", "seq": 10}}),
        )
        .await
        .unwrap();
    assert_eq!(
        reply["recovered"], false,
        "another epoch is never recovered"
    );
}

#[tokio::test]
async fn joining_replays_the_latest_publications_before_live_ones() {
    let srv = history_server(20);
    let mut p = srv.connect("/ws?name=pub").await.unwrap();
    p.request("burst", json!({"topic": "room:recent", "n": 8}))
        .await
        .unwrap();
    let mut a = srv.connect("/ws?name=ann").await.unwrap();
    let reply = a
        .request("subscribe", json!({"topic": "room:recent", "last": 3}))
        .await
        .unwrap();
    assert_eq!(reply["seq"], 8);
    for i in 5..8 {
        assert_eq!(delivery(&mut a, "n").await["data"]["i"], i);
    }
    p.request("burst", json!({"topic": "room:recent", "n": 1}))
        .await
        .unwrap();
    let live = delivery(&mut a, "n").await;
    assert_eq!(
        (live["data"]["i"].clone(), live["seq"].clone()),
        (json!(0), json!(9))
    );
}
