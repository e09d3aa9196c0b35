//! Embedding a channel in an actix-web `App`: plain routes beside it, app data, and the
//! opening request's path parameters, query string and headers.

use actix_web::{web, App, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use switchboard::prelude::*;
use switchboard::testing::TestServer;
use switchboard_suite::handlers::echo;
use switchboard_suite::{error_reply, raw_http, rejected_status};

/// App data registered on the `App`.
struct Config {
    greeting: String,
}

#[switchboard::message("greet")]
async fn greet(config: web::Data<Config>, name: String) -> Result<String, ChannelError> {
    Ok(format!("{}, {name}", config.greeting))
}

/// The same data through `Channel::app_data`.
#[switchboard::message("greeting")]
async fn greeting(ch: Channel) -> Result<Option<String>, ChannelError> {
    Ok(ch
        .app_data::<web::Data<Config>>()
        .map(|c| c.greeting.clone()))
}

#[derive(Deserialize)]
struct Who {
    user: String,
    n: u32,
}

/// What a handler can read of the opening request.
#[switchboard::message("info")]
async fn info(ch: Channel) -> Result<Value, ChannelError> {
    let who: Option<Who> = ch.query().ok();
    let mut header_names: Vec<&str> = ch.headers().map(|(name, _)| name).collect();
    header_names.sort_unstable();
    Ok(json!({
        "room": ch.path_param("room"),
        "query_string": ch.query_string(),
        "user": who.as_ref().map(|w| w.user.clone()),
        "n": who.as_ref().map(|w| w.n),
        "client": ch.header("x-client"),
        "peer_is_loopback": ch.peer_addr().map(|a| a.ip().is_loopback()),
        "header_names": header_names,
    }))
}

/// A typed query the handler requires.
#[switchboard::message("who")]
async fn who_query(ch: Channel) -> Result<String, ChannelError> {
    let who: Who = ch.query()?;
    Ok(format!("{}#{}", who.user, who.n))
}

/// on_connect reads the path parameter too: only some rooms exist.
#[switchboard::on_connect]
async fn room_exists(req: ConnectRequest) -> Result<Option<()>, ChannelError> {
    match req.path_param("room") {
        Some("closed") => Err(ChannelError::forbidden("room closed")),
        _ => Ok(None),
    }
}

fn start() -> TestServer {
    let config = web::Data::new(Config {
        greeting: "hello".to_owned(),
    });
    TestServer::start(move || {
        App::new()
            .app_data(config.clone())
            .service(
                ChannelRoute::<()>::new("/ws")
                    .message(greet)
                    .message(greeting)
                    .message(echo),
            )
            .service(
                ChannelRoute::<()>::new("/ws/{room}")
                    .on_connect(room_exists)
                    .message(info)
                    .message(who_query),
            )
            .route(
                "/health",
                web::get().to(|| async { HttpResponse::Ok().body("ok") }),
            )
    })
}

#[tokio::test]
async fn plain_http_routes_work_beside_the_channel() {
    let server = start();
    let mut c = server.connect("/ws").await.unwrap();
    assert_eq!(c.request("echo", json!(1)).await.unwrap(), 1);
    // While the socket is open, plain HTTP is served.
    let (status, response) = raw_http(server.addr(), "GET", "/health").await;
    assert_eq!(status, 200, "{response}");
    assert!(response.ends_with("\r\n\r\nok"), "{response}");
    let (status, response) = raw_http(server.addr(), "GET", "/missing").await;
    assert_eq!(status, 404, "{response}");
    // And the socket still works.
    assert_eq!(c.request("echo", json!(2)).await.unwrap(), 2);
}

#[tokio::test]
async fn handlers_receive_app_data() {
    let server = start();
    let mut c = server.connect("/ws").await.unwrap();
    assert_eq!(
        c.request("greet", json!("ada")).await.unwrap(),
        "hello, ada"
    );
    assert_eq!(c.request("greeting", json!(null)).await.unwrap(), "hello");
}

#[tokio::test]
async fn handlers_read_path_params_query_and_headers() {
    let server = start();
    let mut c = server
        .connect_with("/ws/lobby?user=ada&n=3", &[("X-Client", "suite/1")])
        .await
        .unwrap();
    assert_eq!(
        c.request("info", json!(null)).await.unwrap(),
        json!({
            "room": "lobby",
            "query_string": "user=ada&n=3",
            "user": "ada",
            "n": 3,
            "client": "suite/1",
            "peer_is_loopback": true,
            // The handshake's own headers are not kept: only the handshake needs them.
            "header_names": ["host", "x-client"],
        })
    );
    assert_eq!(c.request("who", json!(null)).await.unwrap(), "ada#3");

    let mut bare = server.connect("/ws/kitchen").await.unwrap();
    assert_eq!(
        bare.request("info", json!(null)).await.unwrap(),
        json!({
            "room": "kitchen",
            "query_string": "",
            "user": null,
            "n": null,
            "client": null,
            "peer_is_loopback": true,
            "header_names": ["host"],
        })
    );
    // A query that does not deserialize is an error frame, not a crash.
    let (code, _, frame) = error_reply(bare.request("who", json!(null)).await);
    assert_eq!(code, "bad_query", "{frame}");
    assert_eq!(
        bare.request("info", json!(null)).await.unwrap()["room"],
        "kitchen"
    );
}

#[tokio::test]
async fn on_connect_reads_path_params() {
    let server = start();
    assert_eq!(rejected_status(server.connect("/ws/closed").await), 403);
    server.connect("/ws/open").await.unwrap();
}
