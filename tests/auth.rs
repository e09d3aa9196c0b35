//! The connect lifecycle: on_connect accepting or rejecting before the socket opens, sessions,
//! origin checks.

use std::collections::HashMap;

use actix_web::{web, App};
use serde::Deserialize;
use serde_json::{json, Value};
use switchboard::prelude::*;
use switchboard::testing::{TestError, TestServer};
use switchboard_suite::handlers::echo;
use switchboard_suite::rejected_status;

#[derive(Clone, Debug)]
struct User {
    name: String,
}

#[switchboard::on_connect]
async fn connect(req: ConnectRequest) -> Result<User, ChannelError> {
    match req.query("token") {
        Some("ada-token") => Ok(User { name: "ada".into() }),
        Some("banned-token") => Err(ChannelError::forbidden("you are banned")),
        _ => Err(ChannelError::unauthorized("a valid token is required")),
    }
}

/// The session as handlers see it.
#[switchboard::message("whoami")]
async fn whoami(ch: Channel<User>) -> Result<Option<String>, ChannelError> {
    Ok(ch.session().map(|u| u.name))
}

#[derive(Deserialize)]
struct Login {
    name: String,
}

/// Replaces the session over the socket; returns the previous user's name.
#[switchboard::message("login")]
async fn login(ch: Channel<User>, msg: Login) -> Result<Option<String>, ChannelError> {
    Ok(ch.set_session(User { name: msg.name }).map(|u| u.name))
}

#[switchboard::message("logout")]
async fn logout(ch: Channel<User>) -> Result<(), ChannelError> {
    ch.clear_session();
    Ok(())
}

fn user_channel(path: &str) -> ChannelRoute<User> {
    ChannelRoute::new(path)
        .message(whoami)
        .message(login)
        .message(logout)
        .message(echo)
}

#[tokio::test]
async fn on_connect_unauthorized_rejects_with_401_before_the_socket_opens() {
    let server = TestServer::start(|| App::new().service(user_channel("/ws").on_connect(connect)));
    for path in ["/ws", "/ws?token=wrong"] {
        match server.connect(path).await {
            Err(TestError::Rejected { status, body }) => {
                assert_eq!(status, 401, "{path}");
                // The body is the error, as JSON.
                let body: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(
                    body,
                    json!({"error": {"code": "unauthorized", "message": "a valid token is required"}}),
                    "{path}"
                );
            }
            Err(other) => panic!("{path}: expected a 401, got {other:?}"),
            Ok(_) => panic!("{path}: expected a 401, but it connected"),
        }
    }
}

#[tokio::test]
async fn on_connect_forbidden_rejects_with_403() {
    let server = TestServer::start(|| App::new().service(user_channel("/ws").on_connect(connect)));
    assert_eq!(
        rejected_status(server.connect("/ws?token=banned-token").await),
        403
    );
}

#[tokio::test]
async fn on_connect_accepts_with_a_session_handlers_read() {
    let server = TestServer::start(|| App::new().service(user_channel("/ws").on_connect(connect)));
    let mut c = server.connect("/ws?token=ada-token").await.unwrap();
    assert_eq!(c.request("whoami", json!(null)).await.unwrap(), "ada");
}

#[tokio::test]
async fn without_on_connect_there_is_no_session() {
    let server = TestServer::start(|| App::new().service(user_channel("/ws")));
    let mut c = server.connect("/ws").await.unwrap();
    assert_eq!(c.request("whoami", json!(null)).await.unwrap(), Value::Null);
}

/// Known tokens, as app data.
struct Tokens(HashMap<String, String>);

#[derive(Deserialize)]
struct Creds {
    token: String,
}

/// on_connect with actix-web extractors.
#[switchboard::on_connect]
async fn connect_with_extractors(
    tokens: web::Data<Tokens>,
    creds: web::Query<Creds>,
) -> Result<User, ChannelError> {
    tokens
        .0
        .get(&creds.token)
        .map(|name| User { name: name.clone() })
        .ok_or_else(|| ChannelError::unauthorized("unknown token"))
}

#[tokio::test]
async fn on_connect_takes_web_data_and_web_query_extractors() {
    let tokens = web::Data::new(Tokens(HashMap::from([(
        "t-1".to_owned(),
        "grace".to_owned(),
    )])));
    let server = TestServer::start(move || {
        App::new()
            .app_data(tokens.clone())
            .service(user_channel("/ws").on_connect(connect_with_extractors))
    });
    let mut c = server.connect("/ws?token=t-1").await.unwrap();
    assert_eq!(c.request("whoami", json!(null)).await.unwrap(), "grace");
    assert_eq!(rejected_status(server.connect("/ws?token=t-2").await), 401);
    // A query the extractor cannot read is a client error.
    let status = rejected_status(server.connect("/ws").await);
    assert!((400..500).contains(&status), "{status}");
}

/// A session is optional: `Ok(None)` accepts without one (unless the channel requires auth).
#[switchboard::on_connect]
async fn maybe_connect(req: ConnectRequest) -> Result<Option<User>, ChannelError> {
    Ok(req.query("name").map(|n| User { name: n.to_owned() }))
}

#[tokio::test]
async fn auth_required_and_on_connect_returning_none_is_401() {
    let server = TestServer::start(|| {
        App::new().service(user_channel("/ws").on_connect(maybe_connect).auth(true))
    });
    assert_eq!(rejected_status(server.connect("/ws").await), 401);
    let mut c = server.connect("/ws?name=linus").await.unwrap();
    assert_eq!(c.request("whoami", json!(null)).await.unwrap(), "linus");
}

#[tokio::test]
async fn auth_not_required_and_on_connect_returning_none_connects_without_session() {
    let server =
        TestServer::start(|| App::new().service(user_channel("/ws").on_connect(maybe_connect)));
    let mut c = server.connect("/ws").await.unwrap();
    assert_eq!(c.request("whoami", json!(null)).await.unwrap(), Value::Null);
}

#[tokio::test]
async fn auth_required_without_on_connect_is_401() {
    let server = TestServer::start(|| App::new().service(user_channel("/ws").auth(true)));
    assert_eq!(rejected_status(server.connect("/ws").await), 401);
}

#[tokio::test]
async fn set_session_replaces_the_session_for_later_handlers() {
    let server = TestServer::start(|| App::new().service(user_channel("/ws").on_connect(connect)));
    let mut c = server.connect("/ws?token=ada-token").await.unwrap();
    assert_eq!(
        c.request("login", json!({"name": "grace"})).await.unwrap(),
        "ada",
        "set_session returns the old session"
    );
    assert_eq!(c.request("whoami", json!(null)).await.unwrap(), "grace");
    c.request("logout", json!(null)).await.unwrap();
    assert_eq!(c.request("whoami", json!(null)).await.unwrap(), Value::Null);
    // Sessions belong to their connection.
    let mut other = server.connect("/ws?token=ada-token").await.unwrap();
    assert_eq!(other.request("whoami", json!(null)).await.unwrap(), "ada");
}

fn open_channel() -> ChannelRoute {
    ChannelRoute::new("/ws").message(echo)
}

#[tokio::test]
async fn origin_default_rejects_another_host_with_403() {
    let server = TestServer::start(|| App::new().service(open_channel()));
    assert_eq!(
        rejected_status(
            server
                .connect_with("/ws", &[("Origin", "http://evil.example")])
                .await
        ),
        403
    );
    // Same host name, another port: another origin.
    assert_eq!(
        rejected_status(
            server
                .connect_with("/ws", &[("Origin", "http://127.0.0.1:1")])
                .await
        ),
        403
    );
}

#[tokio::test]
async fn origin_default_accepts_the_same_host() {
    let server = TestServer::start(|| App::new().service(open_channel()));
    let origin = format!("http://{}", server.addr());
    let mut c = server
        .connect_with("/ws", &[("Origin", &origin)])
        .await
        .unwrap();
    assert_eq!(c.request("echo", json!(1)).await.unwrap(), 1);
}

#[tokio::test]
async fn origin_absent_is_accepted() {
    let server = TestServer::start(|| App::new().service(open_channel()));
    let mut c = server.connect("/ws").await.unwrap();
    assert_eq!(c.request("echo", json!(1)).await.unwrap(), 1);
}

#[tokio::test]
async fn allowed_origins_accepts_listed_origins() {
    let server = TestServer::start(|| {
        App::new().service(open_channel().allowed_origins(["http://app.example"]))
    });
    let mut c = server
        .connect_with("/ws", &[("Origin", "http://app.example")])
        .await
        .unwrap();
    assert_eq!(c.request("echo", json!(1)).await.unwrap(), 1);
    assert_eq!(
        rejected_status(
            server
                .connect_with("/ws", &[("Origin", "http://evil.example")])
                .await
        ),
        403
    );
    // The same host stays allowed.
    let origin = format!("http://{}", server.addr());
    server
        .connect_with("/ws", &[("Origin", &origin)])
        .await
        .unwrap();
}

#[tokio::test]
async fn allow_any_origin_accepts_every_origin() {
    let server = TestServer::start(|| App::new().service(open_channel().allow_any_origin()));
    for origin in ["http://evil.example", "https://app.example", "null"] {
        let mut c = server
            .connect_with("/ws", &[("Origin", origin)])
            .await
            .unwrap_or_else(|e| panic!("{origin}: {e}"));
        assert_eq!(c.request("echo", json!(1)).await.unwrap(), 1);
    }
}
