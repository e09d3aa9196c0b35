//! Tokens that expire, refreshed in band: a connection's own (from `on_connect`) and a
//! subscription's (from a token join guard). Short lifetimes (a few hundred ms); every wait is
//! on a frame the client receives, bounded by the client's timeout.

use std::time::{Duration, Instant, SystemTime};

use actix_web::App;
use serde_json::{json, Value};
use switchboard::prelude::*;
use switchboard::testing::{TestClient, TestError, TestServer};
use switchboard_suite::error_reply;

#[derive(Clone)]
struct User {
    name: String,
}

/// `?token=<name>:<lifetime ms>`; a lifetime of 0 means already expired.
fn parse(token: &str) -> Result<(String, SystemTime), ChannelError> {
    let (name, ms) = token
        .split_once(':')
        .ok_or(ChannelError::unauthorized("bad token"))?;
    let ms: u64 = ms
        .parse()
        .map_err(|_| ChannelError::unauthorized("bad token"))?;
    if name == "forged" {
        return Err(ChannelError::unauthorized("bad signature"));
    }
    let at = if ms == 0 {
        SystemTime::now() - Duration::from_secs(1)
    } else {
        SystemTime::now() + Duration::from_millis(ms)
    };
    Ok((name.to_owned(), at))
}

#[switchboard::on_connect]
async fn connect(req: ConnectRequest) -> Result<User, ChannelError> {
    let (name, at) = parse(req.query("token").unwrap_or_default())?;
    req.set_expiry(at);
    Ok(User { name })
}

#[switchboard::message("whoami")]
async fn whoami(ch: Channel<User>) -> Result<String, ChannelError> {
    Ok(ch.session().map(|u| u.name).unwrap_or_default())
}

fn route() -> ChannelRoute<User> {
    ChannelRoute::<User>::new("/ws")
        .on_connect(connect)
        .message(whoami)
        .on_refresh(|ch: Channel<User>, token: String| async move {
            let (name, at) = parse(&token)?;
            ch.set_session(User { name });
            Ok(Some(at))
        })
        .allow_join("open:*")
        .join_with_token(
            "private:*",
            |_ch: Channel<User>, topic: String, token: String| async move {
                // `<topic>:<lifetime ms>`
                let ms = token
                    .strip_prefix(&format!("{topic}:"))
                    .and_then(|ms| ms.parse::<u64>().ok())
                    .ok_or(ChannelError::forbidden("not a token for this topic"))?;
                Ok(Some(SystemTime::now() + Duration::from_millis(ms)))
            },
        )
}

fn start() -> (TestServer, Hub) {
    let hub = Hub::new();
    let h = hub.clone();
    let server = TestServer::start(move || App::new().app_data(h.clone()).service(route()));
    (server, hub)
}

async fn refresh_request(c: &mut TestClient, topic: Option<&str>) -> Value {
    let v = c
        .recv_matching(|f| {
            f.get("refresh")
                .is_some_and(|r| r.get("topic").and_then(Value::as_str) == topic)
        })
        .await
        .unwrap();
    v["refresh"].clone()
}

#[tokio::test]
async fn a_refreshed_connection_stays_and_its_handlers_see_the_new_session() {
    let (server, _) = start();
    let opened = Instant::now();
    let mut c = server.connect("/ws?token=ann:400").await.unwrap();
    assert_eq!(c.request("whoami", json!(null)).await.unwrap(), "ann");
    // Asked at half the lifetime (the lead is 30 s by default), with the time left.
    let asked = refresh_request(&mut c, None).await;
    let left = asked["expires_in"].as_u64().unwrap();
    assert!(left > 0 && left <= 400, "{asked}");
    let reply = c
        .request("refresh", json!({"token": "ann2:400"}))
        .await
        .unwrap();
    assert!(reply["expires_in"].as_u64().unwrap() > 300, "{reply}");
    // The session the refresh handler set is what handlers see.
    assert_eq!(c.request("whoami", json!(null)).await.unwrap(), "ann2");
    // Asked again before the new expiry: refreshed once more, and still served past both
    // the first and the second token's original expiries.
    refresh_request(&mut c, None).await;
    c.request("refresh", json!({"token": "ann3:400"}))
        .await
        .unwrap();
    refresh_request(&mut c, None).await;
    assert!(opened.elapsed() > Duration::from_millis(400));
    assert_eq!(c.request("whoami", json!(null)).await.unwrap(), "ann3");
}

#[tokio::test]
async fn an_unrefreshed_connection_closes_with_token_expired() {
    let (server, _) = start();
    let opened = Instant::now();
    let mut c = server.connect("/ws?token=ann:300").await.unwrap();
    refresh_request(&mut c, None).await;
    // A refresh that fails keeps the old expiry.
    let (code, _, _) = error_reply(c.request("refresh", json!({"token": "forged:1000"})).await);
    assert_eq!(code, "unauthorized");
    let (code, _, _) = error_reply(c.request("refresh", json!({"token": "ann:0"})).await);
    assert_eq!(code, "token_expired");
    assert_eq!(
        c.recv_close().await.unwrap(),
        (4401, "token expired".to_owned())
    );
    assert!(opened.elapsed() >= Duration::from_millis(290));
}

#[tokio::test]
async fn an_expired_token_is_refused_at_the_upgrade() {
    let (server, _) = start();
    match server.connect("/ws?token=ann:0").await {
        Err(TestError::Rejected { status, body }) => {
            assert_eq!(status, 401);
            assert!(body.contains("token_expired"), "{body}");
        }
        other => panic!("{other:?}"),
    }
    // Other clients are served meanwhile.
    let mut ok = server.connect("/ws?token=bob:60000").await.unwrap();
    assert_eq!(ok.request("whoami", json!(null)).await.unwrap(), "bob");
}

#[tokio::test]
async fn a_topic_token_is_refreshed_per_topic_or_the_subscription_ends() {
    let (server, hub) = start();
    let mut c = server.connect("/ws?token=ann:60000").await.unwrap();
    // A topic that needs a token refuses a subscribe without one, or with a wrong one.
    let (code, _, _) = error_reply(c.request("subscribe", json!({"topic": "private:a"})).await);
    assert_eq!(code, "unauthorized");
    let (code, _, _) = error_reply(
        c.request(
            "subscribe",
            json!({"topic": "private:a", "token": "private:b:300"}),
        )
        .await,
    );
    assert_eq!(code, "forbidden");
    for topic in ["private:a", "private:b"] {
        c.request(
            "subscribe",
            json!({"topic": topic, "token": format!("{topic}:300")}),
        )
        .await
        .unwrap();
    }
    c.request("subscribe", json!({"topic": "open:x"}))
        .await
        .unwrap();
    // A topic without a token cannot be refreshed.
    let (code, _, _) = error_reply(
        c.request("refresh", json!({"topic": "open:x", "token": "t"}))
            .await,
    );
    assert_eq!(code, "refresh_unsupported");

    // a is refreshed when asked, b is not.
    let asked = refresh_request(&mut c, Some("private:a")).await;
    assert!(asked["expires_in"].as_u64().unwrap() <= 300, "{asked}");
    let reply = c
        .request(
            "refresh",
            json!({"topic": "private:a", "token": "private:a:60000"}),
        )
        .await
        .unwrap();
    assert_eq!(reply["topic"], "private:a");
    let gone = c
        .recv_matching(|f| f.get("unsubscribed").is_some())
        .await
        .unwrap();
    assert_eq!(
        gone["unsubscribed"],
        json!({"topic": "private:b", "code": "token_expired", "message": "the token expired"})
    );
    // b's publications no longer reach the client; a's and the connection carry on.
    hub.publish("private:b", "m", &"b").await.unwrap();
    hub.publish("private:a", "m", &"a").await.unwrap();
    let next = c.recv_matching(|f| f["event"] == "m").await.unwrap();
    assert_eq!(next["topic"], "private:a", "{next}");
    assert_eq!(c.request("whoami", json!(null)).await.unwrap(), "ann");
    // A refresh of the ended subscription is refused.
    let (code, _, _) = error_reply(
        c.request(
            "refresh",
            json!({"topic": "private:b", "token": "private:b:60000"}),
        )
        .await,
    );
    assert_eq!(code, "refresh_unsupported");
}

#[tokio::test]
async fn an_unsubscribed_topic_is_not_asked_for_nor_ended_later() {
    let (server, hub) = start();
    let mut c = server.connect("/ws?token=ann:60000").await.unwrap();
    c.request(
        "subscribe",
        json!({"topic": "private:a", "token": "private:a:200"}),
    )
    .await
    .unwrap();
    c.request(
        "subscribe",
        json!({"topic": "private:z", "token": "private:z:400"}),
    )
    .await
    .unwrap();
    c.request("unsubscribe", json!({"topic": "private:a"}))
        .await
        .unwrap();
    // z's end comes after a's would have: nothing about a came before it.
    let first = c
        .recv_matching(|f| f.get("refresh").is_some() || f.get("unsubscribed").is_some())
        .await
        .unwrap();
    assert_eq!(first["refresh"]["topic"], "private:z", "{first}");
    let next = c
        .recv_matching(|f| f.get("refresh").is_some() || f.get("unsubscribed").is_some())
        .await
        .unwrap();
    assert_eq!(next["unsubscribed"]["topic"], "private:z", "{next}");
    hub.publish("private:z", "m", &1).await.unwrap();
    hub.publish("open:y", "m", &2).await.unwrap();
    c.request("subscribe", json!({"topic": "open:q"}))
        .await
        .unwrap();
    hub.publish("open:q", "m", &3).await.unwrap();
    let m = c.recv_matching(|f| f["event"] == "m").await.unwrap();
    assert_eq!(m["topic"], "open:q", "{m}");
}
