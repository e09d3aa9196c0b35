use actix_web::App;
use serde_json::json;
use switchboard::prelude::*;
use switchboard::testing::TestServer;
use switchboard_suite::handlers::echo;

#[tokio::test]
async fn echo_round_trip() {
    let server =
        TestServer::start(|| App::new().service(ChannelRoute::<()>::new("/ws").message(echo)));
    let mut c = server.connect("/ws").await.unwrap();
    assert_eq!(
        c.request("echo", json!({"a": 1})).await.unwrap(),
        json!({"a": 1})
    );
    c.send_text("nope").await.unwrap();
    let err = c.recv_json().await.unwrap();
    assert_eq!(err["error"]["code"], "bad_json");
    c.push("echo", json!(5)).await.unwrap();
    assert_eq!(
        c.recv_json().await.unwrap(),
        json!({"type": "echo", "data": 5})
    );
    c.close().await.unwrap();
}
