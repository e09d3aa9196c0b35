//! The AWS SDK for Python (boto3) as the client of the connections API, unchanged: an
//! `ApiGatewayManagementApi` client with a custom endpoint signs its calls with SigV4, and gets
//! the same answers and typed exceptions as from API Gateway (`tests/aws_sdk_client.py`).
//!
//! Locally the test skips when `python3` or boto3 is missing; under CI it fails instead.

use std::process::Command;

use actix_web::App;
use serde_json::{json, Value};
use switchboard::prelude::*;
use switchboard::serverless::connections_api::ConnectionsApi;
use switchboard::testing::TestServer;
use switchboard_suite::handlers::whoami;
use switchboard_suite::skip;

const KEY: &str = "AKIDSWITCHBOARDTEST";
const SECRET: &str = "switchboard/test+secret/KEY";
const REGION: &str = "eu-west-3";

fn python() -> Option<String> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import boto3"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return Some(python);
    }
    skip(
        "the AWS SDK test",
        &format!("{python} with boto3 is not available (pip install boto3)"),
    );
    None
}

#[tokio::test]
async fn boto3_manages_connections() {
    let Some(python) = python() else { return };
    let hub = Hub::new();
    let h = hub.clone();
    let server = TestServer::start(move || {
        App::new()
            .app_data(h.clone())
            .service(ChannelRoute::<()>::new("/ws").message(whoami))
            .service(
                ConnectionsApi::new()
                    .credentials([(KEY, SECRET)])
                    .region(REGION),
            )
    });
    let mut client = server
        .connect_with("/ws", &[("user-agent", "sdk-test/2.0")])
        .await
        .unwrap();
    let id: ConnectionId =
        serde_json::from_value(client.request("whoami", json!(null)).await.unwrap()).unwrap();
    let gone = ConnectionId::next();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/aws_sdk_client.py");
    let endpoint = server.url("");
    let (id_text, gone_text) = (id.to_string(), gone.to_string());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args([script, &endpoint, REGION, KEY, SECRET, &id_text, &gone_text])
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .output()
            .expect("run the boto3 script")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the boto3 script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: Value = serde_json::from_str(stdout.trim()).expect("the script's JSON");

    assert_eq!(out["sourceIp"], "127.0.0.1");
    assert_eq!(out["userAgent"], "sdk-test/2.0");
    assert!(
        out["connectedAt"].as_str().unwrap().starts_with("20"),
        "{out}"
    );
    assert_eq!(out["gone"], json!(["GoneException", 410]));
    assert_eq!(out["tooLarge"], json!(["PayloadTooLargeException", 413]));
    assert_eq!(out["forbidden"], json!(["ForbiddenException", 403]));
    assert_eq!(out["goneAfterDelete"], json!(["GoneException", 410]));

    // What the client saw: the posted data, then the close from delete_connection.
    assert_eq!(client.recv_json().await.unwrap(), json!({"from": "boto3"}));
    assert_eq!(client.recv_close().await.unwrap().0, 1000);
}
