//! The wire protocol, end to end: what a client sends, what it gets back.

use std::time::Duration;

use actix_web::App;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use switchboard::prelude::*;
use switchboard::testing::{Frame, TestClient, TestServer};
use switchboard_suite::handlers::{echo, reverse};
use switchboard_suite::{error_reply, opcode, RawWs};

#[derive(Deserialize)]
struct Join {
    room: String,
    #[serde(default)]
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    id: u32,
}

#[derive(Serialize)]
struct Joined {
    room: String,
    items: Vec<u32>,
}

/// A typed payload and a typed reply.
#[switchboard::message("join")]
async fn join(msg: Join) -> Result<Joined, ChannelError> {
    Ok(Joined {
        room: msg.room,
        items: msg.items.iter().map(|i| i.id).collect(),
    })
}

/// Returns `()`: nothing goes back without a `ref`.
#[switchboard::message("note")]
async fn note(_data: Value) {}

/// Returns `Ok(())`: nothing goes back without a `ref` either.
#[switchboard::message("note_ok")]
async fn note_ok(_data: Value) -> Result<(), ChannelError> {
    Ok(())
}

#[switchboard::message("fail")]
async fn fail(_data: Value) -> Result<Value, ChannelError> {
    Err(ChannelError::new(
        "nickname_taken",
        "that nickname is in use",
    ))
}

/// Pushes an event, then replies.
#[switchboard::message("subscribe")]
async fn subscribe(ch: Channel, topic: String) -> Result<&'static str, ChannelError> {
    ch.send("subscribed", &json!({ "topic": topic }))?;
    Ok("ok")
}

#[switchboard::message("boom")]
async fn boom(_data: Value) -> Result<Value, ChannelError> {
    panic!("kaboom: secret detail");
}

#[switchboard::message("boom_later")]
async fn boom_later(_data: Value) -> Result<Value, ChannelError> {
    actix_rt::task::yield_now().await;
    panic!("kaboom after an await");
}

#[switchboard::fallback]
async fn unrouted(route: Route, data: Value) -> Result<Value, ChannelError> {
    Ok(json!({ "fallback": route.0, "data": data }))
}

fn channel() -> ChannelRoute {
    ChannelRoute::new("/ws")
        .message(join)
        .message(echo)
        .message(note)
        .message(note_ok)
        .message(fail)
        .message(subscribe)
        .message(boom)
        .message(boom_later)
}

fn server() -> TestServer {
    TestServer::start(|| App::new().service(channel()))
}

/// Proves the connection still works: a request gets its reply.
async fn still_works(c: &mut TestClient) {
    assert_eq!(
        c.request("echo", json!({"still": "open"})).await.unwrap(),
        json!({"still": "open"})
    );
}

#[tokio::test]
async fn data_is_deserialized_into_the_handlers_typed_argument() {
    let server = server();
    let mut c = server.connect("/ws").await.unwrap();
    let reply = c
        .request(
            "join",
            json!({"room": "lobby", "items": [{"id": 1}, {"id": 2}]}),
        )
        .await
        .unwrap();
    assert_eq!(reply, json!({"room": "lobby", "items": [1, 2]}));
}

#[tokio::test]
async fn reply_with_ref_is_ok_true_with_data() {
    let server = server();
    let mut c = server.connect("/ws").await.unwrap();
    c.send_json(&json!({"type": "echo", "ref": 7, "data": {"x": [1, 2]}}))
        .await
        .unwrap();
    assert_eq!(
        c.recv_json().await.unwrap(),
        json!({"ref": 7, "ok": true, "data": {"x": [1, 2]}})
    );
}

#[tokio::test]
async fn string_and_number_refs_are_echoed_exactly() {
    let server = server();
    let mut c = server.connect("/ws").await.unwrap();
    for r in [
        json!("r1"),
        json!(""),
        json!("with \"quotes\" and é"),
        json!(0),
        json!(42),
        json!(-7),
        json!(1.5),
        json!(12345678901234567890u64),
    ] {
        c.send_json(&json!({"type": "echo", "ref": r, "data": 1}))
            .await
            .unwrap();
        let reply = c.recv_json().await.unwrap();
        assert_eq!(reply, json!({"ref": r, "ok": true, "data": 1}), "ref {r}");
    }
    // An error reply answers its ref too.
    c.send_json(&json!({"type": "fail", "ref": "f-1", "data": null}))
        .await
        .unwrap();
    let reply = c.recv_json().await.unwrap();
    assert_eq!(reply["ref"], "f-1");
    assert_eq!(reply["ok"], false);
}

#[tokio::test]
async fn reply_without_ref_is_type_and_data() {
    let server = server();
    let mut c = server.connect("/ws").await.unwrap();
    c.push("echo", json!({"a": 1})).await.unwrap();
    assert_eq!(
        c.recv_json().await.unwrap(),
        json!({"type": "echo", "data": {"a": 1}})
    );
    // `"ref": null` is no ref.
    c.send_json(&json!({"type": "echo", "ref": null, "data": 2}))
        .await
        .unwrap();
    assert_eq!(
        c.recv_json().await.unwrap(),
        json!({"type": "echo", "data": 2})
    );
}

#[tokio::test]
async fn route_key_with_json_escapes_is_decoded() {
    let server = server();
    let mut c = server.connect("/ws").await.unwrap();
    c.send_text(r#"{"type":"ec\u0068o","data":1}"#)
        .await
        .unwrap();
    assert_eq!(
        c.recv_json().await.unwrap(),
        json!({"type": "echo", "data": 1})
    );
}

#[tokio::test]
async fn unit_handler_without_ref_sends_nothing() {
    let server = server();
    let mut c = server.connect("/ws").await.unwrap();
    c.push("note", json!("x")).await.unwrap();
    c.push("note_ok", json!("y")).await.unwrap();
    c.send_json(&json!({"type": "echo", "ref": "after", "data": 1}))
        .await
        .unwrap();
    // The very next frame is the echo's reply: nothing was sent for the notes.
    assert_eq!(
        c.recv_json().await.unwrap(),
        json!({"ref": "after", "ok": true, "data": 1})
    );
}

#[tokio::test]
async fn unit_handler_with_ref_replies_ok_with_null_data() {
    let server = server();
    let mut c = server.connect("/ws").await.unwrap();
    for route in ["note", "note_ok"] {
        c.send_json(&json!({"type": route, "ref": route, "data": 1}))
            .await
            .unwrap();
        assert_eq!(
            c.recv_json().await.unwrap(),
            json!({"ref": route, "ok": true, "data": null})
        );
    }
}

#[tokio::test]
async fn route_key_is_configurable_per_channel() {
    for expr in ["action", "$request.body.action"] {
        let server = TestServer::start(move || {
            App::new().service(ChannelRoute::<()>::new("/ws").route_key(expr).message(echo))
        });
        let mut c = server.connect("/ws").await.unwrap();
        c.send_json(&json!({"action": "echo", "ref": 1, "data": "hi"}))
            .await
            .unwrap();
        assert_eq!(
            c.recv_json().await.unwrap(),
            json!({"ref": 1, "ok": true, "data": "hi"}),
            "{expr}"
        );
        // Without a ref, the reply names the route under the configured field.
        c.send_json(&json!({"action": "echo", "data": "there"}))
            .await
            .unwrap();
        assert_eq!(
            c.recv_json().await.unwrap(),
            json!({"action": "echo", "data": "there"}),
            "{expr}"
        );
        // So does an error frame without a ref.
        c.send_json(&json!({"action": "nope"})).await.unwrap();
        let err = c.recv_json().await.unwrap();
        assert_eq!(err["action"], "nope", "{expr}: {err}");
        assert_eq!(err["error"]["code"], "unknown_route", "{expr}: {err}");
        // `type` is now just another field: a message routed by it alone has no route.
        c.send_json(&json!({"type": "echo", "ref": 2, "data": 1}))
            .await
            .unwrap();
        let err = c.recv_json().await.unwrap();
        assert_eq!(err["ref"], 2, "{expr}: {err}");
        assert_eq!(err["error"]["code"], "missing_route", "{expr}: {err}");
    }
}

#[tokio::test]
async fn server_push_is_event_and_data() {
    let server = server();
    let mut c = server.connect("/ws").await.unwrap();
    c.send_json(&json!({"type": "subscribe", "ref": 1, "data": "news"}))
        .await
        .unwrap();
    // The push was sent before the handler returned, so it arrives before the reply.
    assert_eq!(
        c.recv_json().await.unwrap(),
        json!({"event": "subscribed", "data": {"topic": "news"}})
    );
    assert_eq!(
        c.recv_json().await.unwrap(),
        json!({"ref": 1, "ok": true, "data": "ok"})
    );
}

#[tokio::test]
async fn binary_frames_go_to_the_on_binary_handler() {
    let server = TestServer::start(|| App::new().service(channel().on_binary(reverse)));
    let mut c = server.connect("/ws").await.unwrap();
    c.send_binary(&[1, 2, 3, 4]).await.unwrap();
    assert_eq!(c.recv().await.unwrap(), Frame::Binary(vec![4, 3, 2, 1]));
    still_works(&mut c).await;
}

#[tokio::test]
async fn binary_frames_without_handler_get_binary_unsupported() {
    let server = server();
    let mut c = server.connect("/ws").await.unwrap();
    c.send_binary(&[0xde, 0xad]).await.unwrap();
    let err = c.recv_json().await.unwrap();
    assert_eq!(err["ok"], false, "{err}");
    assert_eq!(err["error"]["code"], "binary_unsupported", "{err}");
    still_works(&mut c).await;
}

#[tokio::test]
async fn invalid_json_gets_bad_json_and_connection_stays_open() {
    let server = server();
    let mut c = server.connect("/ws").await.unwrap();
    for text in [
        "not json",
        "{\"type\": \"echo\",",
        "[1, 2]",
        "\"echo\"",
        "{} trailing",
    ] {
        c.send_text(text).await.unwrap();
        let err = c.recv_json().await.unwrap();
        assert_eq!(err["ok"], false, "{text}: {err}");
        assert_eq!(err["error"]["code"], "bad_json", "{text}: {err}");
        assert!(
            !err["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "{text}: {err}"
        );
    }
    still_works(&mut c).await;
}

#[tokio::test]
async fn missing_route_key_gets_missing_route_answering_the_ref() {
    let server = server();
    let mut c = server.connect("/ws").await.unwrap();
    c.send_json(&json!({"data": 1})).await.unwrap();
    let err = c.recv_json().await.unwrap();
    assert_eq!(err["error"]["code"], "missing_route", "{err}");
    assert!(err.get("ref").is_none(), "{err}");

    c.send_json(&json!({"ref": "m1", "data": 1})).await.unwrap();
    let err = c.recv_json().await.unwrap();
    assert_eq!(err["ref"], "m1", "{err}");
    assert_eq!(err["ok"], false, "{err}");
    assert_eq!(err["error"]["code"], "missing_route", "{err}");

    // A route key that is not a string is missing too.
    c.send_json(&json!({"type": 3, "ref": 9})).await.unwrap();
    let err = c.recv_json().await.unwrap();
    assert_eq!(err["ref"], 9, "{err}");
    assert_eq!(err["error"]["code"], "missing_route", "{err}");
    still_works(&mut c).await;
}

#[tokio::test]
async fn unknown_route_without_fallback_gets_unknown_route() {
    let server = server();
    let mut c = server.connect("/ws").await.unwrap();
    let (code, message, frame) = error_reply(c.request("nope", json!(null)).await);
    assert_eq!(code, "unknown_route", "{frame}");
    assert!(message.contains("nope"), "{frame}");

    c.push("nope", json!(null)).await.unwrap();
    let err = c.recv_json().await.unwrap();
    assert_eq!(err["type"], "nope", "{err}");
    assert_eq!(err["ok"], false, "{err}");
    assert_eq!(err["error"]["code"], "unknown_route", "{err}");
    still_works(&mut c).await;
}

#[tokio::test]
async fn fallback_handler_receives_unrouted_messages() {
    let server = TestServer::start(|| App::new().service(channel().fallback(unrouted)));
    let mut c = server.connect("/ws").await.unwrap();
    assert_eq!(
        c.request("whatever", json!({"k": 1})).await.unwrap(),
        json!({"fallback": "whatever", "data": {"k": 1}})
    );
    c.push("other", json!(2)).await.unwrap();
    assert_eq!(
        c.recv_json().await.unwrap(),
        json!({"type": "other", "data": {"fallback": "other", "data": 2}})
    );
    // Routed messages still go to their handlers.
    still_works(&mut c).await;
}

#[tokio::test]
async fn payload_not_matching_the_type_gets_bad_payload_naming_the_field() {
    let server = server();
    let mut c = server.connect("/ws").await.unwrap();

    let (code, message, frame) = error_reply(c.request("join", json!({"room": 5})).await);
    assert_eq!(code, "bad_payload", "{frame}");
    assert_eq!(frame["error"]["field"], "room", "{frame}");
    assert!(message.contains("invalid type"), "{frame}");
    assert!(!message.contains("line"), "no positions: {frame}");

    let (code, _, frame) = error_reply(
        c.request(
            "join",
            json!({"room": "a", "items": [{"id": 1}, {"id": "x"}]}),
        )
        .await,
    );
    assert_eq!(code, "bad_payload", "{frame}");
    assert_eq!(frame["error"]["field"], "items[1].id", "{frame}");

    let (code, message, frame) = error_reply(c.request("join", json!({})).await);
    assert_eq!(code, "bad_payload", "{frame}");
    assert!(message.contains("missing field `room`"), "{frame}");

    // The payload as a whole has the wrong type: no field to name.
    let (code, _, frame) = error_reply(c.request("join", json!("lobby")).await);
    assert_eq!(code, "bad_payload", "{frame}");
    assert!(frame["error"].get("field").is_none(), "{frame}");

    // No `data` at all reads as null.
    c.send_json(&json!({"type": "join", "ref": "nodata"}))
        .await
        .unwrap();
    let err = c.recv_json().await.unwrap();
    assert_eq!(err["ref"], "nodata", "{err}");
    assert_eq!(err["error"]["code"], "bad_payload", "{err}");
    still_works(&mut c).await;
}

#[tokio::test]
async fn handler_error_sends_its_code_and_message() {
    let server = server();
    let mut c = server.connect("/ws").await.unwrap();
    let (code, message, frame) = error_reply(c.request("fail", json!(null)).await);
    assert_eq!(code, "nickname_taken", "{frame}");
    assert_eq!(message, "that nickname is in use", "{frame}");
    assert_eq!(frame["ref"], 1, "{frame}");
    // Without a ref the error frame names the route.
    c.push("fail", json!(null)).await.unwrap();
    assert_eq!(
        c.recv_json().await.unwrap(),
        json!({"type": "fail", "ok": false, "error": {"code": "nickname_taken", "message": "that nickname is in use"}})
    );
    still_works(&mut c).await;
}

#[tokio::test]
async fn bad_ref_gets_bad_ref() {
    let server = server();
    let mut c = server.connect("/ws").await.unwrap();
    for r in [json!({}), json!([1]), json!(true)] {
        c.send_json(&json!({"type": "echo", "ref": r, "data": 1}))
            .await
            .unwrap();
        let err = c.recv_json().await.unwrap();
        assert_eq!(err["ok"], false, "{r}: {err}");
        assert_eq!(err["error"]["code"], "bad_ref", "{r}: {err}");
    }
    still_works(&mut c).await;
}

/// A text frame of exactly `len` bytes: `{"type":"echo","ref":1,"data":"xxx…"}`.
fn echo_frame_of_len(len: usize) -> String {
    let overhead = json!({"type": "echo", "ref": 1, "data": ""})
        .to_string()
        .len();
    let text = json!({"type": "echo", "ref": 1, "data": "x".repeat(len - overhead)}).to_string();
    assert_eq!(text.len(), len);
    text
}

#[tokio::test]
async fn frames_over_max_frame_size_close_with_1009() {
    let server = TestServer::start(|| App::new().service(channel().max_frame_size(256)));
    let mut c = server.connect("/ws").await.unwrap();
    // At the limit: fine.
    c.send_text(&echo_frame_of_len(256)).await.unwrap();
    assert_eq!(c.recv_json().await.unwrap()["ok"], true);
    // One byte over: closed with 1009.
    c.send_text(&echo_frame_of_len(257)).await.unwrap();
    let (code, _reason) = c.recv_close().await.unwrap();
    assert_eq!(code, 1009);
}

#[tokio::test]
async fn binary_frames_over_max_frame_size_close_with_1009() {
    let server =
        TestServer::start(|| App::new().service(channel().on_binary(reverse).max_frame_size(256)));
    let mut c = server.connect("/ws").await.unwrap();
    c.send_binary(&[7; 256]).await.unwrap();
    assert_eq!(c.recv().await.unwrap(), Frame::Binary(vec![7; 256]));
    c.send_binary(&[7; 257]).await.unwrap();
    assert_eq!(c.recv_close().await.unwrap().0, 1009);
}

#[tokio::test]
async fn fragmented_messages_are_assembled_and_limited_as_a_whole() {
    let server = TestServer::start(|| App::new().service(channel().max_frame_size(256)));
    let mut raw = RawWs::connect(server.addr(), "/ws").await;
    // Two fragments, 200 bytes in all: handled as one message.
    let text = echo_frame_of_len(200);
    let (first, rest) = text.as_bytes().split_at(100);
    raw.send_frame(false, opcode::TEXT, first).await;
    raw.send_frame(true, opcode::CONTINUATION, rest).await;
    let (op, reply) = raw.read_frame(Duration::from_secs(5)).await.unwrap();
    assert_eq!(op, opcode::TEXT);
    let reply: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply["ref"], 1, "{reply}");
    assert_eq!(reply["ok"], true, "{reply}");
    // Three fragments under the limit each, 300 bytes in all: over the limit.
    let text = echo_frame_of_len(300);
    let parts: Vec<&[u8]> = text.as_bytes().chunks(100).collect();
    raw.send_frame(false, opcode::TEXT, parts[0]).await;
    raw.send_frame(false, opcode::CONTINUATION, parts[1]).await;
    raw.send_frame(true, opcode::CONTINUATION, parts[2]).await;
    let (op, close) = raw.read_frame(Duration::from_secs(5)).await.unwrap();
    assert_eq!(op, opcode::CLOSE);
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1009);
}

#[tokio::test]
async fn a_frame_announcing_more_than_the_limit_is_refused_from_its_header() {
    let server = TestServer::start(|| App::new().service(channel().max_frame_size(256)));
    let mut raw = RawWs::connect(server.addr(), "/ws").await;
    // A text frame header announcing 1 MiB, and its mask: none of the payload follows. The
    // server must not wait for (and buffer) the megabyte before refusing it.
    let mut header = vec![0x80 | opcode::TEXT, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 20).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    raw.send_raw(&header).await;
    let (op, close) = raw.read_frame(Duration::from_secs(5)).await.unwrap();
    assert_eq!(op, opcode::CLOSE);
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1009);
}

#[tokio::test]
async fn panicking_handler_gets_internal_and_connections_keep_working() {
    let server = server();
    let mut a = server.connect("/ws").await.unwrap();
    let mut b = server.connect("/ws").await.unwrap();
    for route in ["boom", "boom_later"] {
        let (code, message, frame) = error_reply(a.request(route, json!(null)).await);
        assert_eq!(code, "internal", "{frame}");
        assert!(!message.contains("secret"), "details are not sent: {frame}");
        still_works(&mut a).await;
        still_works(&mut b).await;
    }
    // A new connection works too.
    let mut c = server.connect("/ws").await.unwrap();
    still_works(&mut c).await;
}

/// The documented shape of a failed reply is exactly `{"ref", "ok", "error"}`, the same three
/// fields as a successful one (`{"ref", "ok", "data"}`).
#[tokio::test]
async fn error_reply_with_ref_has_exactly_ref_ok_error() {
    let server = server();
    let mut c = server.connect("/ws").await.unwrap();
    c.send_json(&json!({"type": "fail", "ref": "r1", "data": null}))
        .await
        .unwrap();
    assert_eq!(
        c.recv_json().await.unwrap(),
        json!({"ref": "r1", "ok": false, "error": {"code": "nickname_taken", "message": "that nickname is in use"}})
    );
}
