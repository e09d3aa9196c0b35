//! Users: a channel names each connection's user from its session; the hub reaches all of a
//! user's connections (tabs, devices), and per-user limits hold while other users are served.
//! On one node with the memory engine; `tests/redis.rs` has the same across two nodes.

use std::collections::BTreeSet;

use actix_web::App;
use serde_json::{json, Value};
use switchboard::prelude::*;
use switchboard::testing::{TestClient, TestError, TestServer};
use switchboard_suite::{error_reply, eventually};

#[derive(Clone)]
struct User {
    id: String,
}

#[switchboard::on_connect]
async fn connect(req: ConnectRequest) -> Result<User, ChannelError> {
    match req.query("user") {
        Some(id) if !id.is_empty() => Ok(User { id: id.to_owned() }),
        _ => Err(ChannelError::unauthorized("pass ?user=")),
    }
}

#[switchboard::message("whoami")]
async fn whoami(ch: Channel<User>) -> Result<Value, ChannelError> {
    Ok(json!({ "user": ch.user(), "id": ch.id() }))
}

fn route() -> ChannelRoute<User> {
    ChannelRoute::<User>::new("/ws")
        .on_connect(connect)
        .user(|u: &User| u.id.clone())
        .allow_join("*")
        .message(whoami)
}

fn start(route: ChannelRoute<User>) -> (TestServer, Hub) {
    let hub = Hub::new();
    let h = hub.clone();
    let server = TestServer::start(move || App::new().app_data(h.clone()).service(route.clone()));
    (server, hub)
}

async fn tab(server: &TestServer, user: &str) -> (TestClient, ConnectionId) {
    let mut c = server.connect(&format!("/ws?user={user}")).await.unwrap();
    let me = c.request("whoami", json!(null)).await.unwrap();
    assert_eq!(me["user"], user);
    let id = me["id"].as_str().unwrap().parse().unwrap();
    (c, id)
}

async fn connections_of(hub: &Hub, user: &str) -> BTreeSet<ConnectionId> {
    hub.user_connections(user)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

#[tokio::test]
async fn send_to_user_reaches_every_tab_and_disconnect_user_closes_them_all() {
    let (server, hub) = start(route());
    let mut ann = Vec::new();
    let mut ann_ids = BTreeSet::new();
    for _ in 0..3 {
        let (c, id) = tab(&server, "ann").await;
        ann.push(c);
        ann_ids.insert(id);
    }
    let (mut bob, bob_id) = tab(&server, "bob").await;

    assert_eq!(connections_of(&hub, "ann").await, ann_ids);
    assert_eq!(connections_of(&hub, "bob").await, BTreeSet::from([bob_id]));
    assert!(connections_of(&hub, "nobody").await.is_empty());
    let info = hub.connection(bob_id).unwrap();
    assert_eq!(info.user.as_deref(), Some("bob"));

    hub.send_to_user("ann", "note", &json!({"n": 1}))
        .await
        .unwrap();
    hub.send_to_user("bob", "note", &json!({"n": 2}))
        .await
        .unwrap();
    for c in &mut ann {
        assert_eq!(c.recv_event("note").await.unwrap(), json!({"n": 1}));
    }
    // Bob's first push is his own: ann's did not reach him.
    assert_eq!(bob.recv_event("note").await.unwrap(), json!({"n": 2}));

    hub.disconnect_user("ann", 4001, "logged out elsewhere")
        .await
        .unwrap();
    for c in &mut ann {
        assert_eq!(
            c.recv_close().await.unwrap(),
            (4001, "logged out elsewhere".to_owned())
        );
    }
    // Bob is still served, and ann's connections are gone from the index.
    assert_eq!(
        bob.request("whoami", json!(null)).await.unwrap()["user"],
        "bob"
    );
    eventually("ann's connections to go", || async {
        let left = connections_of(&hub, "ann").await;
        if left.is_empty() {
            Ok(())
        } else {
            Err(left)
        }
    })
    .await;
    // Users' own topics are not listed with the app's.
    assert!(hub.topics().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_per_user_cap_refuses_at_the_upgrade_while_others_are_served() {
    let (server, _hub) = start(route().max_connections_per_user(2));
    let (a1, _) = tab(&server, "ann").await;
    let (mut a2, _) = tab(&server, "ann").await;
    match server.connect("/ws?user=ann").await {
        Err(TestError::Rejected { status, body }) => {
            assert_eq!(status, 429);
            let body: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["error"]["code"], "too_many_user_connections");
            assert!(
                body["error"]["message"].as_str().unwrap().contains('2'),
                "{body}"
            );
        }
        other => panic!("a third connection of ann: {other:?}"),
    }
    // Other users are not affected by ann's cap.
    let (mut b1, _) = tab(&server, "bob").await;
    let (_b2, _) = tab(&server, "bob").await;
    assert_eq!(
        b1.request("whoami", json!(null)).await.unwrap()["user"],
        "bob"
    );
    assert_eq!(
        a2.request("whoami", json!(null)).await.unwrap()["user"],
        "ann"
    );

    // A closed tab frees its place (once the server has noticed the close).
    a1.close().await.unwrap();
    let mut a3 = eventually("a place for ann", || async {
        match server.connect("/ws?user=ann").await {
            Err(TestError::Rejected { status: 429, .. }) => Err(429),
            Err(e) => panic!("{e}"),
            Ok(c) => Ok(c),
        }
    })
    .await;
    assert_eq!(
        a3.request("whoami", json!(null)).await.unwrap()["user"],
        "ann"
    );
}

#[tokio::test]
async fn a_users_topics_are_counted_across_its_connections() {
    let (server, hub) = start(route().max_user_topics(3));
    let (mut t1, t1_id) = tab(&server, "ann").await;
    let (mut t2, _) = tab(&server, "ann").await;
    let (mut bob, _) = tab(&server, "bob").await;
    for topic in ["a", "b"] {
        t1.request("subscribe", json!({ "topic": topic }))
            .await
            .unwrap();
    }
    t2.request("subscribe", json!({"topic": "c"}))
        .await
        .unwrap();
    let (code, message, _) = error_reply(t2.request("subscribe", json!({"topic": "d"})).await);
    assert_eq!(code, "too_many_user_topics");
    assert!(message.contains('3'), "{message}");
    // The same topic again on the same connection does not count twice.
    t1.request("subscribe", json!({"topic": "a"}))
        .await
        .unwrap();
    // Bob has his own count.
    for topic in ["a", "b", "c"] {
        bob.request("subscribe", json!({ "topic": topic }))
            .await
            .unwrap();
    }
    // A topic given back by one tab can be taken by the other.
    t1.request("unsubscribe", json!({"topic": "a"}))
        .await
        .unwrap();
    t2.request("subscribe", json!({"topic": "d"}))
        .await
        .unwrap();
    // And a closed tab gives back all of its topics.
    t1.close().await.unwrap();
    eventually("t1 to be gone", || async {
        hub.connection(t1_id)
            .map_or(Ok(()), |_| Err("still registered"))
    })
    .await;
    // t1 held b: room for one more, not two.
    t2.request("subscribe", json!({"topic": "e"}))
        .await
        .unwrap();
    let (code, _, _) = error_reply(t2.request("subscribe", json!({"topic": "f"})).await);
    assert_eq!(code, "too_many_user_topics");
}

#[tokio::test]
async fn presence_is_keyed_by_user_and_users_topics_cannot_be_joined() {
    let (server, _hub) = start(route());
    let (mut a1, _) = tab(&server, "ann").await;
    let (mut a2, _) = tab(&server, "ann").await;
    a1.request("subscribe", json!({"topic": "room:x"}))
        .await
        .unwrap();
    a2.request("subscribe", json!({"topic": "room:x"}))
        .await
        .unwrap();
    let (mut bob, _) = tab(&server, "bob").await;
    bob.request("subscribe", json!({"topic": "room:x"}))
        .await
        .unwrap();
    let state = bob
        .recv_matching(|f| f["event"] == "presence_state")
        .await
        .unwrap();
    let data = &state["data"];
    assert_eq!(data["ann"]["metas"].as_array().unwrap().len(), 2, "{data}");
    assert_eq!(data["bob"]["metas"].as_array().unwrap().len(), 1, "{data}");

    // A client cannot listen in on another user's pushes, even where any topic may be joined.
    let (code, _, _) = error_reply(
        bob.request("subscribe", json!({"topic": "$sb:user:ann"}))
            .await,
    );
    assert_eq!(code, "forbidden");
}
