//! Hostile input, end to end: frames that are not JSON get `bad_json` wherever the defect is
//! (even in fields no handler reads), and text that is not UTF-8 closes the socket with 1007.

use std::time::Duration;

use actix_web::App;
use serde_json::{json, Value};
use switchboard::prelude::*;
use switchboard::testing::{Frame, TestClient, TestServer};
use switchboard_suite::handlers::echo;
use switchboard_suite::{opcode, RawWs};

/// Takes no payload: it never parses `data`, so only the envelope scan can refuse it.
#[switchboard::message("ping")]
async fn ping() -> Result<&'static str, ChannelError> {
    Ok("pong")
}

fn server() -> TestServer {
    TestServer::start(|| {
        App::new().service(ChannelRoute::<()>::new("/ws").message(echo).message(ping))
    })
}

async fn still_works(c: &mut TestClient) {
    assert_eq!(c.request("ping", json!(null)).await.unwrap(), json!("pong"));
}

#[tokio::test]
async fn invalid_json_outside_the_read_fields_gets_bad_json() {
    let server = server();
    let mut c = server.connect("/ws").await.unwrap();
    // Each was answered as if valid before the scanner validated what it skips.
    for text in [
        r#"{"type":"echo","ref":1,"data":1,"x":[1,,2]}"#,
        r#"{"type":"ping","ref":1,"data":[1,2,]}"#,
        r#"{"type":"ping","ref":1,"data":{"a":tru}}"#,
        r#"{"type":"ping","ref":1,"data":01}"#,
        r#"{"type":"ping","ref":1,"data":"\q"}"#,
        r#"{"type":"ping","ref":1,"data":"\uD800"}"#,
        "{\"type\":\"ping\",\"ref\":1,\"data\":\"a\u{1}b\"}",
        r#"{"type":"ping","ref":1,/* comment */"x":1}"#,
        r#"{"type":"echo","ref":1,"data":1,"x":{"a":1,}}"#,
        r#"{"type":"echo","ref":1,"data":1,"x":1.}"#,
        r#"{"type":"echo","ref":1,"data":1,"x":-}"#,
        r#"{"type":"echo","ref":1,"data":1,"x":nul}"#,
        "\u{feff}{\"type\":\"ping\",\"ref\":1}",
        "{\"type\":\"ping\",\"ref\":1}\u{0}",
    ] {
        c.send_text(text).await.unwrap();
        let err = c.recv_json().await.unwrap();
        assert_eq!(err["ok"], false, "{text:?}: {err}");
        assert_eq!(err["error"]["code"], "bad_json", "{text:?}: {err}");
        // Nothing in a frame that is not JSON is trusted, its `ref` included.
        assert!(err.get("ref").is_none(), "{text:?}: {err}");
    }
    still_works(&mut c).await;
    // Valid JSON that strict parsers disagree on less: huge numbers, escaped keys, duplicate
    // keys (the last wins).
    c.send_text(r#"{"\u0074ype":"echo","ref":1e400,"data":[123456789012345678901234567890]}"#)
        .await
        .unwrap();
    // The `ref` comes back as it was sent (serde_json's `Value` cannot hold it: a text frame).
    match c.recv().await.unwrap() {
        Frame::Text(reply) => assert!(
            reply.starts_with(r#"{"ref":1e400,"ok":true,"data":[1.2345678901234568e+29]"#),
            "{reply}"
        ),
        other => panic!("expected the reply, got {other:?}"),
    }
    c.send_text(r#"{"type":"nope","ref":1,"type":"ping","ref":2}"#)
        .await
        .unwrap();
    let reply: Value = c.recv_json().await.unwrap();
    assert_eq!(reply, json!({"ref": 2, "ok": true, "data": "pong"}));
}

#[tokio::test]
async fn text_that_is_not_utf8_closes_with_1007() {
    let server = server();
    // In one frame: a lone continuation byte.
    let mut raw = RawWs::connect(server.addr(), "/ws").await;
    raw.send_frame(true, opcode::TEXT, b"{\"type\":\"ping\",\"x\":\"\x80\"}")
        .await;
    assert_eq!(raw.close_code().await, 1007);

    // Truncated at the end of the message.
    let mut raw = RawWs::connect(server.addr(), "/ws").await;
    raw.send_frame(true, opcode::TEXT, b"{\"type\":\"ping\"}\xe2\x82")
        .await;
    assert_eq!(raw.close_code().await, 1007);

    // Across continuation frames: each fragment is fine alone up to the split, but the
    // message holds an overlong encoding.
    let mut raw = RawWs::connect(server.addr(), "/ws").await;
    raw.send_frame(false, opcode::TEXT, b"{\"type\":\"ping\",")
        .await;
    raw.send_frame(false, opcode::CONTINUATION, b"\"x\":\"\xc0")
        .await;
    raw.send_frame(true, opcode::CONTINUATION, b"\xaf\"}").await;
    assert_eq!(raw.close_code().await, 1007);
}

#[tokio::test]
async fn utf8_split_across_continuations_is_fine() {
    let server = server();
    let mut raw = RawWs::connect(server.addr(), "/ws").await;
    // "€" is e2 82 ac: split inside the character.
    raw.send_frame(
        false,
        opcode::TEXT,
        b"{\"type\":\"echo\",\"ref\":1,\"data\":\"\xe2",
    )
    .await;
    raw.send_frame(true, opcode::CONTINUATION, b"\x82\xac\"}")
        .await;
    let (op, reply) = raw.read_frame(Duration::from_secs(3)).await.unwrap();
    assert_eq!(op, opcode::TEXT);
    let reply: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply, json!({"ref": 1, "ok": true, "data": "€"}));
    // Other protocol errors still close with 1002: opcode 0x3 is reserved.
    raw.send_frame(true, 0x3, b"?").await;
    assert_eq!(raw.close_code().await, 1002);
}
