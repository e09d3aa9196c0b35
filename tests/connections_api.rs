//! The connections API against real WebSocket clients: send, inspect and close connections,
//! topics over HTTP, AWS-shaped errors, SigV4 and bearer authentication, and the refusal to
//! serve unauthenticated on a public address.

use std::time::{Duration, SystemTime};

use actix_web::{App, HttpServer};
use serde_json::{json, Value};
use switchboard::prelude::*;
use switchboard::serverless::connections_api::{ConnectionsApi, ConnectionsClient, RemoteEngine};
use switchboard::serverless::function::FunctionService;
use switchboard::testing::{Frame, TestClient, TestServer};
use switchboard_suite::handlers::whoami;
use switchboard_suite::{header, percent, request};

const TOKEN: &str = "api-token";
const KEY: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn server(hub: &Hub) -> TestServer {
    let hub = hub.clone();
    TestServer::start(move || {
        App::new()
            .app_data(hub.clone())
            .service(ChannelRoute::<()>::new("/ws").message(whoami))
            .service(
                ConnectionsApi::new()
                    .bearer_token(TOKEN)
                    .credentials([(KEY, SECRET)])
                    .region("us-east-1")
                    .max_payload(1024),
            )
    })
}

async fn client(s: &TestServer) -> (TestClient, ConnectionId) {
    let mut c = s
        .connect_with("/ws", &[("user-agent", "api-test/1.0")])
        .await
        .unwrap();
    let id = c.request("whoami", json!(null)).await.unwrap();
    (c, serde_json::from_value(id).unwrap())
}

const BEARER: (&str, &str) = ("authorization", "Bearer api-token");

/// `DELETE path` (with its query) with the bearer token; the status and the headers.
async fn delete(s: &TestServer, path: &str) -> (u16, Vec<(String, String)>) {
    let (status, headers, _) = request(s.addr(), "DELETE", path, &[BEARER], b"").await;
    (status, headers)
}

#[tokio::test]
async fn post_get_delete_a_connection() {
    let hub = Hub::new();
    let s = server(&hub);
    let (mut c, id) = client(&s).await;
    let path = format!("/@connections/{}", percent(&id.to_string()));
    // POST: a UTF-8 body is a text frame, anything else binary.
    let (status, _, _) = request(s.addr(), "POST", &path, &[BEARER], b"{\"hello\":1}").await;
    assert_eq!(status, 200);
    assert_eq!(c.recv_json().await.unwrap(), json!({"hello": 1}));
    let (status, _, _) = request(s.addr(), "POST", &path, &[BEARER], &[0xff, 0x00]).await;
    assert_eq!(status, 200);
    assert_eq!(c.recv().await.unwrap(), Frame::Binary(vec![0xff, 0x00]));
    let (status, _, _) = request(
        s.addr(),
        "POST",
        &path,
        &[BEARER, ("x-switchboard-frame", "binary")],
        b"abc",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(c.recv().await.unwrap(), Frame::Binary(b"abc".to_vec()));

    // GET: AWS's fields, ISO 8601 times.
    let (status, _, body) = request(s.addr(), "GET", &path, &[BEARER], b"").await;
    assert_eq!(status, 200);
    let info: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(info["identity"]["sourceIp"], "127.0.0.1");
    assert_eq!(info["identity"]["userAgent"], "api-test/1.0");
    let connected = info["connectedAt"].as_str().unwrap();
    assert!(
        connected.len() == 24 && connected.ends_with('Z') && connected.as_bytes()[10] == b'T',
        "{connected}"
    );
    assert!(info["lastActiveAt"].as_str().unwrap() >= connected);

    // DELETE: 204, and the client is closed.
    let (status, _, _) = request(s.addr(), "DELETE", &path, &[BEARER], b"").await;
    assert_eq!(status, 204);
    assert_eq!(c.recv_close().await.unwrap().0, 1000);
}

#[tokio::test]
async fn delete_with_a_close_code() {
    let hub = Hub::new();
    let s = server(&hub);
    let (mut c, id) = client(&s).await;
    let path = format!("/@connections/{}", percent(&id.to_string()));
    let (status, _) = delete(&s, &format!("{path}?code=1011")).await;
    assert_eq!(status, 400, "only 1000 and 3000-4999");
    let (status, _) = delete(&s, &format!("{path}?code=4001&reason=kicked")).await;
    assert_eq!(status, 204);
    assert_eq!(c.recv_close().await.unwrap(), (4001, "kicked".to_owned()));
}

#[tokio::test]
async fn close_reasons_must_fit_a_close_frame() {
    let hub = Hub::new();
    let s = server(&hub);
    let (mut c, id) = client(&s).await;
    let path = format!("/@connections/{}", percent(&id.to_string()));
    // 124 bytes: one more than a close frame holds after its code.
    let long = "é".repeat(62);
    let (status, headers) =
        delete(&s, &format!("{path}?code=4001&reason={}", percent(&long))).await;
    assert_eq!(status, 400);
    assert_eq!(
        header(&headers, "x-amzn-errortype"),
        Some("BadRequestException")
    );
    // Still open; 123 bytes go through whole.
    let fits = format!("{}x", "é".repeat(61));
    let (status, _) = delete(&s, &format!("{path}?code=4001&reason={}", percent(&fits))).await;
    assert_eq!(status, 204);
    assert_eq!(c.recv_close().await.unwrap(), (4001, fits));
}

#[tokio::test]
async fn the_client_cuts_long_close_reasons() {
    let hub = Hub::new();
    let s = server(&hub);
    let (mut c, id) = client(&s).await;
    let api = ConnectionsClient::new(s.url("")).bearer_token(TOKEN);
    // Cut at a character boundary: 61 two-byte characters (122 bytes), not half of the 62nd.
    api.close_connection(id, Some(4003), &"é".repeat(100))
        .await
        .unwrap();
    assert_eq!(c.recv_close().await.unwrap(), (4003, "é".repeat(61)));
}

#[tokio::test]
async fn signed_queries_must_not_use_a_raw_plus() {
    let hub = Hub::new();
    let s = server(&hub);
    let (mut c, id) = client(&s).await;
    let path = format!("/@connections/{}", percent(&id.to_string()));
    // SigV4 signs `+` as a literal plus, the query parser reads a space: refused before the
    // signature is even looked at.
    let signed = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240209/us-east-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date, Signature=00";
    let (status, headers, _) = request(
        s.addr(),
        "DELETE",
        &format!("{path}?code=4001&reason=a+b"),
        &[
            ("authorization", signed),
            ("x-amz-date", "20240209T170519Z"),
        ],
        b"",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        header(&headers, "x-amzn-errortype"),
        Some("BadRequestException")
    );
    // With a bearer token nothing is signed: `+` is a space, as in any form-encoded query.
    let (status, _) = delete(&s, &format!("{path}?code=4001&reason=a+b")).await;
    assert_eq!(status, 204);
    assert_eq!(c.recv_close().await.unwrap(), (4001, "a b".to_owned()));
}

#[tokio::test]
async fn without_credentials_only_direct_loopback_clients_are_served() {
    let hub = Hub::new();
    let h = hub.clone();
    let s = TestServer::start(move || {
        App::new()
            .app_data(h.clone())
            .service(ChannelRoute::<()>::new("/ws").message(whoami))
            .service(ConnectionsApi::new())
            .service(FunctionService::<()>::new("/fn"))
    });
    let (mut c, id) = client(&s).await;
    let path = format!("/@connections/{}", percent(&id.to_string()));
    let (status, _, _) = request(s.addr(), "POST", &path, &[], b"direct").await;
    assert_eq!(status, 200);
    assert_eq!(c.recv().await.unwrap(), Frame::Text("direct".into()));
    // A reverse proxy on this host: the peer is loopback, but the client is not.
    for proxied in [
        ("x-forwarded-for", "203.0.113.7"),
        ("forwarded", "for=203.0.113.7"),
        ("x-real-ip", "203.0.113.7"),
        // Any X-Forwarded-*, and the other headers proxies and CDNs add, in any case.
        ("X-Forwarded-Host", "example.com"),
        ("x-forwarded-proto", "https"),
        ("X-Original-Forwarded-For", "203.0.113.7"),
        ("True-Client-IP", "203.0.113.7"),
        ("cf-connecting-ip", "203.0.113.7"),
        ("x-client-ip", "203.0.113.7"),
        ("x-cluster-client-ip", "203.0.113.7"),
        ("fastly-client-ip", "203.0.113.7"),
        ("via", "1.1 proxy"),
    ] {
        let (status, headers, _) = request(s.addr(), "POST", &path, &[proxied], b"x").await;
        assert_eq!(status, 403, "{proxied:?}");
        assert_eq!(
            header(&headers, "x-amzn-errortype"),
            Some("ForbiddenException")
        );
        // A function without a token, the same.
        let (status, _, body) = request(s.addr(), "POST", "/fn", &[proxied], b"{}").await;
        assert_eq!(status, 403, "{proxied:?}");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "forbidden");
    }
    // Directly, the function reads the event (this one is not valid).
    let (status, _, _) = request(s.addr(), "POST", "/fn", &[], b"{}").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn errors_are_shaped_like_aws() {
    let hub = Hub::new();
    let s = server(&hub);
    let (_c, id) = client(&s).await;
    let gone = ConnectionId::next();
    let gone_path = format!("/@connections/{}", percent(&gone.to_string()));
    for method in ["POST", "GET", "DELETE"] {
        let (status, headers, body) = request(s.addr(), method, &gone_path, &[BEARER], b"x").await;
        assert_eq!(status, 410, "{method}");
        assert_eq!(header(&headers, "x-amzn-errortype"), Some("GoneException"));
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert!(body["message"]
            .as_str()
            .unwrap()
            .contains("no longer exists"));
    }
    let path = format!("/@connections/{}", percent(&id.to_string()));
    let (status, headers, _) = request(s.addr(), "POST", &path, &[BEARER], &[b'x'; 1025]).await;
    assert_eq!(status, 413);
    assert_eq!(
        header(&headers, "x-amzn-errortype"),
        Some("PayloadTooLargeException")
    );
    let (status, headers, _) =
        request(s.addr(), "POST", "/@connections/not-an-id", &[BEARER], b"x").await;
    assert_eq!(status, 400);
    assert_eq!(
        header(&headers, "x-amzn-errortype"),
        Some("BadRequestException")
    );
}

#[tokio::test]
async fn refuses_without_a_valid_token_or_signature() {
    let hub = Hub::new();
    let s = server(&hub);
    let (_c, id) = client(&s).await;
    let path = format!("/@connections/{}", percent(&id.to_string()));
    let stale = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20000101/us-east-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date, Signature=00";
    for headers in [
        vec![],
        vec![("authorization", "Bearer nope")],
        vec![("authorization", "Basic YTpi")],
        vec![("authorization", stale), ("x-amz-date", "20000101T000000Z")],
    ] {
        let (status, h, body) = request(s.addr(), "POST", &path, &headers, b"x").await;
        assert_eq!(status, 403, "{headers:?}");
        assert_eq!(header(&h, "x-amzn-errortype"), Some("ForbiddenException"));
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert!(body["message"].is_string());
        if headers.len() == 2 {
            assert!(
                body["message"].as_str().unwrap().contains("expired"),
                "{body}"
            );
        }
    }
    for api in [
        ConnectionsClient::new(s.url("")).sigv4(KEY, "wrong secret", "us-east-1"),
        ConnectionsClient::new(s.url("")).sigv4("AKIDUNKNOWN", SECRET, "us-east-1"),
        ConnectionsClient::new(s.url("")).sigv4(KEY, SECRET, "eu-west-1"),
    ] {
        let err = api.post_to_connection(id, "x").await.unwrap_err();
        assert_eq!(err.code(), "forbidden", "{api:?}: {err}");
    }
}

#[tokio::test]
async fn the_client_signs_with_sigv4() {
    let hub = Hub::new();
    let s = server(&hub);
    let (mut c, id) = client(&s).await;
    let api = ConnectionsClient::new(s.url("")).sigv4(KEY, SECRET, "us-east-1");
    api.send_to(id, "note", &json!({"n": 1})).await.unwrap();
    assert_eq!(c.recv_event("note").await.unwrap(), json!({"n": 1}));
    // Temporary credentials (a Lambda role's): the session token is sent and signed.
    let temporary = ConnectionsClient::new(s.url(""))
        .sigv4(KEY, SECRET, "us-east-1")
        .session_token("IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJ=");
    temporary
        .send_to(id, "note", &json!({"n": 2}))
        .await
        .unwrap();
    assert_eq!(c.recv_event("note").await.unwrap(), json!({"n": 2}));
    let details = api.get_connection(id).await.unwrap();
    assert_eq!(details.source_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(details.user_agent.as_deref(), Some("api-test/1.0"));
    let age = SystemTime::now()
        .duration_since(details.connected_at)
        .unwrap();
    assert!(age < Duration::from_secs(60), "{age:?}");
    // Topics: subscribe, publish (a query string is signed too), list, unsubscribe.
    let sub = api.to(id).subscribe("room:a b").await.unwrap();
    assert_eq!(sub.recovered, None);
    assert_eq!(api.to(id).subscriptions().await.unwrap(), vec!["room:a b"]);
    assert_eq!(hub.subscriber_count("room:a b").await.unwrap(), 1);
    api.publish("room:a b", "said", &json!("hi")).await.unwrap();
    assert_eq!(
        c.recv_json().await.unwrap(),
        json!({"topic": "room:a b", "event": "said", "data": "hi"})
    );
    // All but one connection.
    api.publish_raw(
        "room:a b",
        "skipped",
        serde_json::value::to_raw_value(&1).unwrap().into(),
        Some(id),
    )
    .await
    .unwrap();
    api.to(id).unsubscribe("room:a b").await.unwrap();
    assert_eq!(hub.subscriber_count("room:a b").await.unwrap(), 0);
    api.close_connection(id, Some(4002), "done").await.unwrap();
    // The skipped publication never came; the close did.
    assert_eq!(c.recv_close().await.unwrap(), (4002, "done".to_owned()));
    assert!(matches!(
        api.get_connection(id).await,
        Err(ChannelError::Closed)
    ));
}

#[tokio::test]
async fn a_remote_engine_is_a_hub_over_the_api() {
    let hub = Hub::new();
    let s = server(&hub);
    let (mut c, id) = client(&s).await;
    let remote = Hub::with_engine(RemoteEngine::new(
        ConnectionsClient::new(s.url("")).bearer_token(TOKEN),
    ));
    hub.to(id).subscribe("t").await.unwrap();
    assert_eq!(remote.subscriber_count("t").await.unwrap(), 1);
    let topics = remote.topics().await.unwrap();
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0].topic, "t");
    assert_eq!(remote.stats().await.unwrap().engine.subscriptions, 1);
    remote.publish("t", "e", &json!([1])).await.unwrap();
    assert_eq!(
        c.recv_json().await.unwrap(),
        json!({"topic": "t", "event": "e", "data": [1]})
    );
    assert!(remote.presence("t").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_local_client_answers_the_same_calls() {
    let hub = Hub::new();
    let s = server(&hub);
    let (mut c, id) = client(&s).await;
    let api = ConnectionsClient::local(hub.clone());
    api.post_to_connection(id, "plain").await.unwrap();
    assert_eq!(c.recv().await.unwrap(), Frame::Text("plain".into()));
    api.to(id).subscribe("x").await.unwrap();
    api.publish("x", "e", &1).await.unwrap();
    assert_eq!(c.recv_json().await.unwrap()["event"], "e");
    assert_eq!(
        api.get_connection(id).await.unwrap().user_agent.as_deref(),
        Some("api-test/1.0")
    );
    api.delete_connection(id).await.unwrap();
    c.wait_closed().await.unwrap();
}

#[tokio::test]
async fn a_prefix_serves_under_the_stage() {
    let hub = Hub::new();
    let h = hub.clone();
    let s = TestServer::start(move || {
        App::new()
            .app_data(h.clone())
            .service(ChannelRoute::<()>::new("/ws").message(whoami))
            .service(ConnectionsApi::new().prefix("/prod").bearer_token(TOKEN))
    });
    let (mut c, id) = client(&s).await;
    let api = ConnectionsClient::new(s.url("/prod")).bearer_token(TOKEN);
    api.post_to_connection(id, "staged").await.unwrap();
    assert_eq!(c.recv().await.unwrap(), Frame::Text("staged".into()));
}

/// Serves `factory`'s app on 0.0.0.0 (port 0) and stops it as soon as it runs; returns what
/// `run` returned. A service that refuses the address panics in the worker, and the server
/// then refuses to run.
fn run_on_any_address<F, T, B>(factory: F) -> std::io::Result<()>
where
    F: Fn() -> App<T> + Send + Clone + 'static,
    T: actix_web::dev::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    B: actix_web::body::MessageBody + 'static,
{
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let server = HttpServer::new(factory)
                .workers(1)
                .disable_signals()
                .bind(("0.0.0.0", 0))?
                .run();
            let handle = server.handle();
            actix_rt::spawn(async move { handle.stop(false).await });
            server.await
        })
    })
    .join()
    .expect("no panic escapes the server")
}

#[test]
fn refuses_to_start_on_a_public_address_without_credentials() {
    let err = run_on_any_address(|| App::new().service(ConnectionsApi::new()))
        .expect_err("an unauthenticated connections API on 0.0.0.0 must not start");
    assert!(err.to_string().contains("worker"), "{err}");
    run_on_any_address(|| App::new().service(ConnectionsApi::new().bearer_token("t")))
        .expect("with a token it starts");
    run_on_any_address(|| App::new().service(ConnectionsApi::new().credentials([(KEY, SECRET)])))
        .expect("with access keys it starts");
    // A function without a token would take events from anyone.
    run_on_any_address(|| App::new().service(FunctionService::<()>::new("/fn")))
        .expect_err("a function without a token on 0.0.0.0 must not start");
    run_on_any_address(|| App::new().service(FunctionService::<()>::new("/fn").token("t")))
        .expect("with a token it starts");
}

/// The connection's topic limits hold through the API too, and the remote client reports the
/// same code a local handle gives.
#[tokio::test]
async fn topic_limits_reach_the_remote_client_with_their_code() {
    let hub = Hub::new();
    let s = server(&hub);
    let (mut c, id) = client(&s).await;
    let api = ConnectionsClient::new(s.url("")).bearer_token(TOKEN);
    let long = "t".repeat(300);
    let err = api.to(id).subscribe(&long).await.unwrap_err();
    assert_eq!(err.code(), "bad_topic", "{err}");
    let err = api.to(id).unsubscribe(&long).await.unwrap_err();
    assert_eq!(err.code(), "bad_topic", "{err}");
    for i in 0..100 {
        api.to(id).subscribe(&format!("t:{i}")).await.unwrap();
    }
    let err = api.to(id).subscribe("t:100").await.unwrap_err();
    assert_eq!(err.code(), "too_many_topics", "{err}");
    // Held already: not counted twice.
    api.to(id).subscribe("t:0").await.unwrap();
    assert_eq!(c.request("whoami", json!(null)).await.unwrap(), json!(id));
}
