//! The Prometheus endpoint, scraped after real clients did real things: each series below is
//! asserted by its value, so a metric that is not recorded (or recorded twice) fails.
//! Metrics are process-wide: this file's channels have paths of their own.

use std::collections::HashMap;
use std::time::Duration;

use actix_web::App;
use serde::Deserialize;
use serde_json::json;
use switchboard::engine::{HistoryConfig, MemoryEngine};
use switchboard::prelude::*;
use switchboard::serverless::connections_api::ConnectionsApi;
use switchboard::serverless::gateway::Gateway;
use switchboard::testing::TestServer;
use switchboard_suite::{http, ws::error_reply, Wait};

#[derive(Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

#[switchboard::message("add")]
async fn add(x: Add) -> Result<i64, ChannelError> {
    Ok(x.a + x.b)
}

#[switchboard::message("fail")]
async fn fail() -> Result<(), ChannelError> {
    Err(ChannelError::new("no_luck", "always fails"))
}

#[switchboard::message("announce")]
async fn announce(ch: Channel) -> Result<(), ChannelError> {
    ch.publish("news:all", "said", &"hi").await
}

/// The scrape, as `series → value` (`name{labels}` exactly as exposed).
async fn scrape(srv: &TestServer) -> HashMap<String, f64> {
    let (status, body) = http("GET", &srv.url("/metrics"), "").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.ends_with("# EOF\n"), "not OpenMetrics text: {body}");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

fn value(m: &HashMap<String, f64>, series: &str) -> f64 {
    *m.get(series).unwrap_or_else(|| {
        let mut keys: Vec<_> = m.keys().filter(|k| k.contains("/m/")).collect();
        keys.sort();
        panic!("no series {series}; the channel's series: {keys:#?}")
    })
}

#[actix_rt::test]
async fn the_endpoint_counts_connections_messages_errors_refusals_and_deliveries() {
    let hub = Hub::with_engine(
        MemoryEngine::builder()
            .history("news:*", HistoryConfig::last(10))
            .build(),
    );
    let app_hub = hub.clone();
    let srv = TestServer::start(move || {
        App::new()
            .app_data(app_hub.clone())
            .service(
                ChannelRoute::<()>::new("/m/ws")
                    .message(add)
                    .message(fail)
                    .message(announce)
                    .allow_join("news:*"),
            )
            // A gateway whose function cannot be reached (nothing listens on port 1), and the
            // connections API: their calls are counted too.
            .service(
                Gateway::new("http://127.0.0.1:1/fn")
                    .connect_events(false)
                    .disconnect_events(false)
                    .channel("/m/down"),
            )
            .service(ConnectionsApi::new().bearer_token("api-token"))
            .service(switchboard::metrics::service("/metrics"))
    });
    let ch = r#"channel="/m/ws""#;

    let mut a = srv.connect("/m/ws").await.unwrap();
    let mut b = srv.connect("/m/ws").await.unwrap();
    assert_eq!(a.request("add", json!({"a": 1, "b": 2})).await.unwrap(), 3);
    assert_eq!(a.request("add", json!({"a": 5, "b": 5})).await.unwrap(), 10);
    assert_eq!(
        error_reply(a.request("add", json!({"a": "x"})).await).0,
        "bad_payload"
    );
    assert_eq!(
        error_reply(a.request("fail", json!(null)).await).0,
        "no_luck"
    );
    assert_eq!(
        error_reply(a.request("nope", json!(null)).await).0,
        "unknown_route"
    );
    a.send_text("{not json").await.unwrap();
    assert_eq!(a.recv_json().await.unwrap()["error"]["code"], "bad_json");
    // Two subscribers, one publication: two deliveries.
    a.request("subscribe", json!({"topic": "news:all"}))
        .await
        .unwrap();
    b.request("subscribe", json!({"topic": "news:all"}))
        .await
        .unwrap();
    b.request("announce", json!(null)).await.unwrap();
    switchboard_suite::ws::delivery(&mut a, "said").await;
    switchboard_suite::ws::delivery(&mut b, "said").await;
    // A browser page of another site is refused at the upgrade.
    let refused = srv
        .connect_with("/m/ws", &[("Origin", "https://evil.example")])
        .await;
    assert!(refused.is_err());

    let mut down = srv.connect("/m/down").await.unwrap();
    assert_eq!(
        error_reply(down.request("anything", json!(null)).await).0,
        "function_unavailable"
    );
    down.close().await.unwrap();
    let gone = ConnectionId::next();
    let (status, _, _) = switchboard_suite::request(
        srv.addr(),
        "GET",
        // Standard base64: percent-encoded in a path, as the AWS SDKs send it.
        &format!(
            "/@connections/{}",
            switchboard_suite::percent(&gone.to_string())
        ),
        &[("Authorization", "Bearer api-token")],
        b"",
    )
    .await;
    assert_eq!(status, 410);

    let m = scrape(&srv).await;
    assert_eq!(value(&m, &format!("switchboard_connections{{{ch}}}")), 2.0);
    assert_eq!(
        value(
            &m,
            r#"switchboard_gateway_calls_total{outcome="unreachable"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&m, r#"switchboard_gateway_call_duration_seconds_count"#),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"switchboard_connections_api_requests_total{method="GET",status="410"}"#
        ),
        1.0
    );
    let msg = |route: &str, outcome: &str| {
        format!(r#"switchboard_messages_total{{{ch},route="{route}",outcome="{outcome}"}}"#)
    };
    assert_eq!(value(&m, &msg("add", "ok")), 2.0);
    assert_eq!(value(&m, &msg("add", "bad_payload")), 1.0);
    assert_eq!(value(&m, &msg("fail", "no_luck")), 1.0);
    assert_eq!(value(&m, &msg("$unknown", "unknown_route")), 1.0);
    assert_eq!(value(&m, &msg("$invalid", "bad_json")), 1.0);
    assert_eq!(value(&m, &msg("subscribe", "ok")), 2.0);
    // The client's route name is not a label: `nope` appears nowhere.
    assert!(m.keys().all(|k| !k.contains("nope")));
    // The histogram counts each routed message once.
    assert_eq!(
        value(
            &m,
            &format!(r#"switchboard_handler_duration_seconds_count{{{ch},route="add"}}"#)
        ),
        3.0
    );
    assert_eq!(
        value(
            &m,
            &format!(r#"switchboard_connects_refused_total{{{ch},reason="origin"}}"#)
        ),
        1.0
    );
    assert!(value(&m, "switchboard_deliveries_total") >= 2.0);
    assert!(value(&m, "switchboard_publications_total") >= 1.0);
    assert!(value(&m, "switchboard_topics") >= 1.0);
    assert_eq!(value(&m, "switchboard_engine_up"), 1.0);

    // A client that leaves normally, one that vanishes: counted by close code, gauge down.
    a.close().await.unwrap();
    b.drop_abruptly();
    Wait::up_to(Duration::from_secs(10))
        .until("both disconnects counted", || async {
            let m = scrape(&srv).await;
            m.get(&format!("switchboard_connections{{{ch}}}")) == Some(&0.0)
        })
        .await;
    let m = scrape(&srv).await;
    let gone = |code: &str| format!(r#"switchboard_disconnects_total{{{ch},code="{code}"}}"#);
    assert_eq!(value(&m, &gone("1000")), 1.0);
    assert_eq!(value(&m, &gone("1006")), 1.0);
}
