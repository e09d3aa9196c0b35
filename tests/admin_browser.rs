//! The admin page end to end in a real browser: the chat example started with an admin
//! token, the page opened in headless Chromium; a connection and a topic the test creates
//! appear on it, and it updates when they go away. Without the token the page and its socket
//! are refused.
//!
//! Locally the test skips when chromedriver is missing; under CI it fails instead.
//! `SWITCHBOARD_ADMIN_SCREENSHOT=docs/admin.png cargo test --test admin_browser` also saves a
//! screenshot of the page (the one in docs/operations.md).

use serde_json::json;
use switchboard::testing::{TestClient, TestError};
use switchboard_suite::browser::{
    browser, chromedriver, start_driver, text_in, trap_errors, until,
};
use switchboard_suite::{chat, http, skip, Proc};

const TOKEN: &str = "s3cret-admin-token";

fn start_chat() -> (Proc, String) {
    chat(&["--admin-token", TOKEN])
}

/// A chat user in `room`.
async fn member(base: &str, nick: &str, room: &str) -> TestClient {
    let ws = format!("{}/ws/chat", base.replacen("http://", "ws://", 1));
    let mut c = TestClient::connect(&ws).await.expect("connect");
    c.request("nick", json!({"nick": nick})).await.unwrap();
    c.request("subscribe", json!({"topic": format!("room:{room}")}))
        .await
        .unwrap();
    c
}

/// The text of the table row whose first cell is `key` (a JavaScript expression).
fn row(tbody: &str, key: &str) -> String {
    format!(
        "[...document.getElementById({tbody:?}).rows].find(r => r.cells[0].innerText === {key:?})"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_shows_live_connections_and_topics_and_needs_its_token() {
    let (_chat, base) = start_chat();

    // Refused without the token (or with a wrong one): the page, and its socket.
    let (status, _) = http("GET", &format!("{base}/admin"), "").await.unwrap();
    assert_eq!(status, 401);
    let (status, _) = http("GET", &format!("{base}/admin?token=wrong"), "")
        .await
        .unwrap();
    assert_eq!(status, 401);
    let ws = format!("{}/admin/ws", base.replacen("http://", "ws://", 1));
    match TestClient::connect(&ws).await {
        Err(TestError::Rejected { status, .. }) => assert_eq!(status, 401),
        other => panic!("the admin socket without a token: {other:?}"),
    }
    // With it, a client can ask for figures (the page's own requests).
    let mut admin = TestClient::connect(&format!("{ws}?token={TOKEN}"))
        .await
        .unwrap();
    let snap = admin.request("snapshot", json!(null)).await.unwrap();
    assert_eq!(snap["engine"]["status"], "up");

    let Some(driver_bin) = chromedriver() else {
        return skip(
            "the admin browser test",
            "chromedriver is not installed (install chromium and chromium-driver)",
        );
    };
    let (_driver, driver) = start_driver(driver_bin).await;
    let profile = std::env::temp_dir().join(format!("switchboard-admin-{}", std::process::id()));
    let page = browser(&driver, &profile).await;
    page.goto(&format!("{base}/admin?token={TOKEN}"))
        .await
        .expect("open the admin page");
    trap_errors(&page).await;
    until(
        &page,
        "the live badge",
        "document.getElementById('conn').innerText === 'live'",
    )
    .await;

    // Someone joins a room: the chat channel's count and the topic appear.
    let ada = member(&base, "ada", "rust").await;
    until(
        &page,
        "ada's connection on /ws/chat",
        &format!(
            "({}?.cells[1].innerText) === '1'",
            row("channels", "/ws/chat")
        ),
    )
    .await;
    until(
        &page,
        "room:rust with one subscriber and one present",
        &format!(
            "(r => r && r.cells[1].innerText === '1' && r.cells[2].innerText === '1')({})",
            row("topics", "room:rust")
        ),
    )
    .await;
    // A second member: the figures follow.
    let bob = member(&base, "bob", "rust").await;
    until(
        &page,
        "two subscribers",
        &format!(
            "({}?.cells[1].innerText) === '2'",
            row("topics", "room:rust")
        ),
    )
    .await;
    // An error a client gets is counted by its code.
    let mut bob = bob;
    let _ = bob.request("nick", json!({"nick": "no spaces"})).await;
    until(
        &page,
        "the bad_nickname error",
        &text_in("errors", "bad_nickname"),
    )
    .await;

    if let Ok(path) = std::env::var("SWITCHBOARD_ADMIN_SCREENSHOT") {
        let png = page.screenshot().await.expect("a screenshot");
        std::fs::write(&path, png).expect("write the screenshot");
    }

    // They leave: the topic goes, the chat channel has no connection left.
    ada.close().await.unwrap();
    bob.close().await.unwrap();
    until(
        &page,
        "room:rust gone",
        &format!("!{}", row("topics", "room:rust")),
    )
    .await;
    until(
        &page,
        "no chat connection",
        &format!("!{}", row("channels", "/ws/chat")),
    )
    .await;

    // The page's publish form reaches a room's members.
    let mut cy = member(&base, "cy", "lobby").await;
    page.execute(
        "document.querySelector('#publish [name=topic]').value = 'room:lobby';\
         document.querySelector('#publish [name=data]').value = '{\"text\": \"from the admin\"}';\
         document.querySelector('#publish button').click();",
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(
        cy.recv_event("announcement").await.unwrap()["text"],
        "from the admin"
    );
    page.close().await.ok();
}
