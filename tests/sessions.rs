//! Stateful sessions with real clients: state across messages, ordering while handlers await,
//! timers that stop with the connection, topic publications handled by the session,
//! exactly-once disconnect, and both channel styles in one App sharing a Hub.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use actix_web::{web, App};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use switchboard::engine::Publication;
use switchboard::prelude::*;
use switchboard::session::SessionCtx;
use switchboard::testing::{TestError, TestServer};
use switchboard_suite::{eventually, until};

#[derive(Default)]
struct Probe {
    ticks: AtomicUsize,
    disconnects: Mutex<Vec<ConnectionId>>,
    ticks_at_disconnect: AtomicUsize,
}

#[switchboard::session]
struct Game {
    player: String,
    score: u32,
    seen: u32,
    probe: web::Data<Probe>,
}

#[derive(Deserialize)]
struct Guess {
    n: u32,
}

#[derive(Serialize)]
struct Score {
    player: String,
    score: u32,
}

#[derive(Deserialize)]
struct Slow {
    ms: u64,
    tag: u32,
}

#[switchboard::session_handlers]
impl Game {
    async fn create(req: ConnectRequest, probe: web::Data<Probe>) -> Result<Self, ChannelError> {
        let player = req
            .query("player")
            .ok_or_else(|| ChannelError::unauthorized("player required"))?
            .to_owned();
        Ok(Game {
            player,
            score: 0,
            seen: 0,
            probe,
        })
    }

    async fn on_connect(&mut self, ch: &SessionCtx<Self>) -> Result<(), ChannelError> {
        ch.subscribe("game:events").await?;
        Ok(())
    }

    #[message("guess")]
    async fn guess(&mut self, _ch: &SessionCtx<Self>, g: Guess) -> Result<Score, ChannelError> {
        if g.n == 0 {
            return Err(ChannelError::new("bad_guess", "zero is not a guess"));
        }
        self.score += g.n;
        Ok(Score {
            player: self.player.clone(),
            score: self.score,
        })
    }

    /// Awaits while holding `&mut self`: later messages must wait their turn.
    #[message("slow")]
    async fn slow(&mut self, s: Slow) -> Result<u32, ChannelError> {
        actix_rt::time::sleep(Duration::from_millis(s.ms)).await;
        self.score += 1;
        Ok(s.tag)
    }

    #[message("start_ticks")]
    async fn start_ticks(&mut self, ch: &SessionCtx<Self>) -> Result<(), ChannelError> {
        ch.run_interval(Duration::from_millis(20), |game, ch| {
            game.probe.ticks.fetch_add(1, Ordering::SeqCst);
            let _ = ch.send("tick", &game.score);
        });
        Ok(())
    }

    #[message("later")]
    async fn later(&mut self, ch: &SessionCtx<Self>) -> Result<(), ChannelError> {
        ch.run_later(Duration::from_millis(30), |game, ch| {
            game.score += 100;
            let _ = ch.send("later", &game.score);
        });
        Ok(())
    }

    #[message("boom")]
    async fn boom(&mut self) -> Result<(), ChannelError> {
        panic!("session handler exploded")
    }

    #[topic_message]
    async fn on_publish(&mut self, ch: &SessionCtx<Self>, p: Publication) {
        self.seen += 1;
        let data: Value = p.data_as().unwrap_or(Value::Null);
        let _ = ch.send(
            "relayed",
            &json!({"topic": &*p.topic, "event": &*p.event, "data": data, "seen": self.seen}),
        );
    }

    async fn on_disconnect(&mut self, ch: &SessionCtx<Self>) {
        let ticks = self.probe.ticks.load(Ordering::SeqCst);
        self.probe
            .ticks_at_disconnect
            .store(ticks, Ordering::SeqCst);
        self.probe.disconnects.lock().unwrap().push(ch.id());
    }
}

#[derive(Deserialize)]
struct Post {
    text: String,
}

/// A stateless handler on another channel publishing to the topic the sessions hear.
#[switchboard::message("post")]
async fn post(ch: Channel, p: Post) -> Result<(), ChannelError> {
    ch.publish("game:events", "posted", &json!({"text": p.text}))
        .await
}

fn start() -> (TestServer, web::Data<Probe>, Hub) {
    let probe = web::Data::new(Probe::default());
    let hub = Hub::new();
    let (p, h) = (probe.clone(), hub.clone());
    let srv = TestServer::build(move || {
        App::new()
            .app_data(p.clone())
            .app_data(h.clone())
            .service(ChannelRoute::session::<Game>("/ws/game"))
            .service(ChannelRoute::<()>::new("/ws/chat").message(post))
    })
    .workers(2)
    .start();
    (srv, probe, hub)
}

#[tokio::test]
async fn state_is_kept_across_messages() {
    let (srv, _, _) = start();
    let mut c = srv.connect("/ws/game?player=ann").await.unwrap();
    let r = c.request("guess", json!({"n": 3})).await.unwrap();
    assert_eq!(r, json!({"player": "ann", "score": 3}));
    let r = c.request("guess", json!({"n": 4})).await.unwrap();
    assert_eq!(r["score"], 7);
    // Errors, unknown routes, bad payloads and panics keep the session and its state.
    match c.request("guess", json!({"n": 0})).await {
        Err(TestError::Reply { code, .. }) => assert_eq!(code, "bad_guess"),
        other => panic!("{other:?}"),
    }
    match c.request("nope", Value::Null).await {
        Err(TestError::Reply { code, .. }) => assert_eq!(code, "unknown_route"),
        other => panic!("{other:?}"),
    }
    match c.request("guess", json!({"n": "x"})).await {
        Err(TestError::Reply { code, .. }) => assert_eq!(code, "bad_payload"),
        other => panic!("{other:?}"),
    }
    match c.request("boom", Value::Null).await {
        Err(TestError::Reply { code, .. }) => assert_eq!(code, "internal"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        c.request("guess", json!({"n": 1})).await.unwrap()["score"],
        8
    );
    // Another connection has its own session.
    let mut d = srv.connect("/ws/game?player=bob").await.unwrap();
    assert_eq!(
        d.request("guess", json!({"n": 1})).await.unwrap()["score"],
        1
    );
}

#[tokio::test]
async fn create_can_reject_the_upgrade() {
    let (srv, _, _) = start();
    match srv.connect("/ws/game").await {
        Err(TestError::Rejected { status, .. }) => assert_eq!(status, 401),
        other => panic!("expected 401, got {other:?}"),
    }
}

#[tokio::test]
async fn messages_are_handled_in_order_while_a_handler_awaits() {
    let (srv, _, _) = start();
    let mut c = srv.connect("/ws/game?player=ann").await.unwrap();
    // The first waits longest; replies must still come back 1, 2, 3, then the guess sees all
    // three increments.
    for (tag, ms) in [(1, 120), (2, 60), (3, 0)] {
        c.send_json(&json!({"type": "slow", "ref": tag, "data": {"ms": ms, "tag": tag}}))
            .await
            .unwrap();
    }
    c.send_json(&json!({"type": "guess", "ref": 4, "data": {"n": 10}}))
        .await
        .unwrap();
    for expected in [1, 2, 3] {
        let v = c.recv_json().await.unwrap();
        assert_eq!(v["ref"], expected);
        assert_eq!(v["data"], expected);
    }
    let v = c.recv_json().await.unwrap();
    assert_eq!(v["ref"], 4);
    assert_eq!(v["data"]["score"], 13);
}

#[tokio::test]
async fn intervals_push_and_stop_on_disconnect() {
    let (srv, probe, _) = start();
    let mut c = srv.connect("/ws/game?player=ann").await.unwrap();
    c.request("start_ticks", Value::Null).await.unwrap();
    for _ in 0..3 {
        c.recv_event("tick").await.unwrap();
    }
    c.close().await.unwrap();
    until("the session's disconnect", || async {
        probe.disconnects.lock().unwrap().len() == 1
    })
    .await;
    let at_disconnect = probe.ticks_at_disconnect.load(Ordering::SeqCst);
    // Ten periods later the timer must not have fired again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(probe.ticks.load(Ordering::SeqCst), at_disconnect);
}

#[tokio::test]
async fn run_later_fires_once_with_the_state() {
    let (srv, _, _) = start();
    let mut c = srv.connect("/ws/game?player=ann").await.unwrap();
    c.request("guess", json!({"n": 2})).await.unwrap();
    c.request("later", Value::Null).await.unwrap();
    assert_eq!(c.recv_event("later").await.unwrap(), 102);
    assert_eq!(
        c.request("guess", json!({"n": 1})).await.unwrap()["score"],
        103
    );
}

#[tokio::test]
async fn sessions_handle_publications_from_stateless_channels_through_one_hub() {
    let (srv, _, hub) = start();
    let mut a = srv.connect("/ws/game?player=ann").await.unwrap();
    let mut b = srv.connect("/ws/game?player=bob").await.unwrap();
    // on_connect subscribed both sessions; wait until the broker has them.
    until("the sessions to subscribe", || async {
        hub.subscriber_count("game:events").await.unwrap() >= 2
    })
    .await;
    let mut chat = srv.connect("/ws/chat").await.unwrap();
    chat.request("post", json!({"text": "hello"}))
        .await
        .unwrap();
    chat.request("post", json!({"text": "again"}))
        .await
        .unwrap();
    for c in [&mut a, &mut b] {
        let first = c.recv_event("relayed").await.unwrap();
        assert_eq!(
            first,
            json!({"topic": "game:events", "event": "posted", "data": {"text": "hello"}, "seen": 1})
        );
        let second = c.recv_event("relayed").await.unwrap();
        assert_eq!(second["seen"], 2);
    }
    // The hub publishes to sessions too.
    hub.publish("game:events", "from_hub", &1).await.unwrap();
    assert_eq!(a.recv_event("relayed").await.unwrap()["event"], "from_hub");
}

#[tokio::test]
async fn disconnect_runs_exactly_once_per_session() {
    let (srv, probe, hub) = start();
    let mut ids = Vec::new();
    for (i, how) in ["close", "drop", "close", "drop"].iter().enumerate() {
        let mut c = srv.connect(&format!("/ws/game?player=p{i}")).await.unwrap();
        c.request("guess", json!({"n": 1})).await.unwrap();
        ids.push(how);
        if *how == "close" {
            c.close().await.unwrap();
        } else {
            c.drop_abruptly();
        }
    }
    until("four disconnects", || async {
        probe.disconnects.lock().unwrap().len() >= 4
    })
    .await;
    let seen = probe.disconnects.lock().unwrap().clone();
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(unique.len(), 4, "each session once: {seen:?}");
    eventually("the sessions to leave no state behind", || async {
        let s = hub.stats().await.unwrap();
        if s.connections == 0 && s.engine.subscriptions == 0 {
            Ok(())
        } else {
            Err(s)
        }
    })
    .await;
}

#[tokio::test]
async fn server_shutdown_ends_sessions_once() {
    let (srv, probe, _) = start();
    let mut c = srv.connect("/ws/game?player=ann").await.unwrap();
    c.request("guess", json!({"n": 1})).await.unwrap();
    srv.stop(true).await;
    until("the session's disconnect on shutdown", || async {
        probe.disconnects.lock().unwrap().len() == 1
    })
    .await;
    assert_eq!(probe.disconnects.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn session_channels_share_limits_and_errors_with_stateless_ones() {
    let probe = web::Data::new(Probe::default());
    let srv = TestServer::start(move || {
        App::new().app_data(probe.clone()).service(
            ChannelRoute::session::<Game>("/ws/game")
                .max_frame_size(64)
                .max_connections(1),
        )
    });
    let mut c = srv.connect("/ws/game?player=ann").await.unwrap();
    match srv.connect("/ws/game?player=bob").await {
        Err(TestError::Rejected { status, .. }) => assert_eq!(status, 503),
        other => panic!("expected the cap, got {other:?}"),
    }
    c.send_text("not json").await.unwrap();
    assert_eq!(c.recv_json().await.unwrap()["error"]["code"], "bad_json");
    c.send_text(&"x".repeat(100)).await.unwrap();
    assert_eq!(c.recv_close().await.unwrap().0, 1009);
}

/// A stateless handler mounted on a session channel, reaching the session's state in turn.
#[switchboard::message("score_twice")]
async fn score_twice(
    ch: Channel<switchboard::session::SessionHost<Game>>,
) -> Result<u32, ChannelError> {
    let host = ch.session().ok_or(ChannelError::Closed)?;
    host.call(|game: &mut Game, _ctx: &SessionCtx<Game>| {
        game.score *= 2;
        game.score
    })
    .await
}

#[tokio::test]
async fn stateless_handlers_on_a_session_channel_share_its_state() {
    let probe = web::Data::new(Probe::default());
    let srv = TestServer::start(move || {
        App::new()
            .app_data(probe.clone())
            .service(ChannelRoute::session::<Game>("/ws/game").message(score_twice))
    });
    let mut c = srv.connect("/ws/game?player=ann").await.unwrap();
    c.request("guess", json!({"n": 5})).await.unwrap();
    assert_eq!(c.request("score_twice", Value::Null).await.unwrap(), 10);
    assert_eq!(
        c.request("guess", json!({"n": 1})).await.unwrap()["score"],
        11
    );
}
