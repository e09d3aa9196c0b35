//! The chat example end to end in a real browser (Debian's chromium through chromedriver):
//! two people join a room, talk, see each other come and go, and a dropped connection
//! reconnects by itself and shows what was said meanwhile; and the same chat behind a proxy
//! that refuses WebSocket upgrades, over the HTTP transport.
//!
//! Locally the test skips when chromedriver is missing; under CI it fails instead.
//! `SWITCHBOARD_SCREENSHOT=docs/chat.png cargo test --test chat_browser` also saves a
//! screenshot of the page (the one in the README).

use fantoccini::{Client, Locator};
use switchboard_suite::browser::{
    browser, chromedriver, start_driver, text_in, trap_errors, until,
};
use switchboard_suite::proxy::NoUpgradeProxy;
use switchboard_suite::{chat, http, skip, Proc};

fn start_chat() -> (Proc, String) {
    chat(&[])
}

async fn login(c: &Client, base: &str, nick: &str) {
    c.goto(base).await.expect("open the page");
    // Script errors end up in the failure report.
    trap_errors(c).await;
    until(
        c,
        "the connection",
        "document.getElementById('status').classList.contains('open')",
    )
    .await;
    c.find(Locator::Id("nick"))
        .await
        .expect("nickname field")
        .send_keys(nick)
        .await
        .expect("type the nickname");
    c.find(Locator::Css("#login-form button"))
        .await
        .expect("enter button")
        .click()
        .await
        .expect("click enter");
    until(c, "the lobby", &text_in("member-list", nick)).await;
}

async fn say(c: &Client, text: &str) {
    let input = c.find(Locator::Id("say")).await.expect("message field");
    input.send_keys(text).await.expect("type a message");
    c.find(Locator::Css("#say-form button"))
        .await
        .expect("send button")
        .click()
        .await
        .expect("click send");
}

/// `POST {base}{path}`; the status.
async fn post(base: &str, path: &str, body: &str) -> u16 {
    let (status, _) = http("POST", &format!("{base}{path}"), body)
        .await
        .expect("POST to the chat");
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_chat_in_a_real_browser() {
    let Some(driver_bin) = chromedriver() else {
        return skip(
            "the browser test",
            "chromedriver is not installed (install chromium and chromium-driver)",
        );
    };
    let (_chat, base) = start_chat();
    let (_driver, driver) = start_driver(driver_bin).await;
    let profiles = std::env::temp_dir().join(format!("switchboard-e2e-{}", std::process::id()));
    let (ada, bob) = (
        browser(&driver, &profiles.join("ada")).await,
        browser(&driver, &profiles.join("bob")).await,
    );

    login(&ada, &base, "ada").await;
    login(&bob, &base, "bob").await;
    until(
        &ada,
        "bob in ada's member list",
        &text_in("member-list", "bob"),
    )
    .await;

    // Refusals are shown, not swallowed.
    let long = "x".repeat(520);
    say(&bob, &long).await;
    until(
        &bob,
        "the too-long refusal",
        &text_in("toasts", "at most 500 characters"),
    )
    .await;
    bob.execute("document.getElementById('say').value = '';", vec![])
        .await
        .expect("clear the field");

    say(&bob, "hello from bob").await;
    until(
        &ada,
        "bob's message",
        &text_in("messages", "hello from bob"),
    )
    .await;

    // The server drops ada's connection; her page reconnects by itself and shows what was
    // said meanwhile, once.
    assert_eq!(post(&base, "/api/debug/drop/ada", "").await, 204);
    say(&bob, "said while ada was away").await;
    assert_eq!(
        post(&base, "/api/rooms/lobby/announce", "maintenance at noon").await,
        204
    );
    until(
        &ada,
        "the catch-up",
        &text_in("messages", "said while ada was away"),
    )
    .await;
    until(
        &ada,
        "the announcement",
        &text_in("messages", "maintenance at noon"),
    )
    .await;
    until(
        &ada,
        "the reconnection",
        "document.getElementById('status').classList.contains('open')",
    )
    .await;
    let count = ada
        .execute(
            "return [...document.querySelectorAll('#messages li')].filter(li => li.innerText.includes('said while ada was away')).length;",
            vec![],
        )
        .await
        .expect("count messages");
    assert_eq!(
        count.as_u64(),
        Some(1),
        "no gap and no duplicate after reconnecting"
    );

    if let Ok(path) = std::env::var("SWITCHBOARD_SCREENSHOT") {
        say(&ada, "back again").await;
        until(&bob, "ada's return", &text_in("messages", "back again")).await;
        bob.execute(
            "document.getElementById('toasts').replaceChildren(); \
             document.getElementById('say').value = 'good to see you';",
            vec![],
        )
        .await
        .ok();
        let png = bob.screenshot().await.expect("screenshot");
        std::fs::write(&path, png).expect("write the screenshot");
    }

    // Bob leaves the room; ada sees him go.
    bob.find(Locator::Css("#room-list li[data-room='lobby'] button"))
        .await
        .expect("leave button")
        .click()
        .await
        .expect("click leave");
    until(
        &ada,
        "bob leaving the member list",
        "!document.getElementById('member-list').innerText.includes('bob')",
    )
    .await;

    let _ = ada.close().await;
    let _ = bob.close().await;
    let _ = std::fs::remove_dir_all(&profiles);
}

/// The page's transport indicator shows `name` (`"websocket"` or `"http"`).
fn transport_is(name: &str) -> String {
    format!("document.getElementById('transport').dataset.transport === {name:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_works_over_http_behind_a_proxy_that_blocks_websockets() {
    let Some(driver_bin) = chromedriver() else {
        return skip(
            "the browser test",
            "chromedriver is not installed (install chromium and chromium-driver)",
        );
    };
    let (_chat, base) = start_chat();
    // Ada reaches the chat only through the proxy: her page's WebSocket upgrades are refused.
    let proxy = NoUpgradeProxy::start(base.trim_start_matches("http://")).await;
    let (_driver, driver) = start_driver(driver_bin).await;
    let profiles =
        std::env::temp_dir().join(format!("switchboard-e2e-http-{}", std::process::id()));
    let (ada, bob) = (
        browser(&driver, &profiles.join("ada")).await,
        browser(&driver, &profiles.join("bob")).await,
    );

    login(&ada, &proxy.url(), "ada").await;
    login(&bob, &base, "bob").await;
    until(&ada, "ada's page showing HTTP", &transport_is("http")).await;
    until(&ada, "the indicator's text", &text_in("transport", "HTTP")).await;
    until(
        &bob,
        "bob's page showing WebSocket",
        &transport_is("websocket"),
    )
    .await;
    assert!(proxy.refused() >= 1, "ada's page never tried a WebSocket");

    // Presence, publications and replies in both directions.
    until(
        &ada,
        "bob in ada's member list",
        &text_in("member-list", "bob"),
    )
    .await;
    until(
        &bob,
        "ada in bob's member list",
        &text_in("member-list", "ada"),
    )
    .await;
    say(&ada, "hello over http").await;
    until(
        &bob,
        "ada's message",
        &text_in("messages", "hello over http"),
    )
    .await;
    until(
        &ada,
        "ada's own message",
        &text_in("messages", "hello over http"),
    )
    .await;
    say(&bob, "hello over a websocket").await;
    until(
        &ada,
        "bob's message",
        &text_in("messages", "hello over a websocket"),
    )
    .await;
    // A refusal comes back over the stream too.
    say(&ada, &"x".repeat(520)).await;
    until(
        &ada,
        "the too-long refusal",
        &text_in("toasts", "at most 500 characters"),
    )
    .await;
    // Still on HTTP: the page kept its choice.
    until(&ada, "ada's page still on HTTP", &transport_is("http")).await;

    let _ = ada.close().await;
    let _ = bob.close().await;
    let _ = std::fs::remove_dir_all(&profiles);
}
