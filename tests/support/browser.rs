//! A real browser for the end-to-end tests: Debian's chromium driven through chromedriver
//! (WebDriver, with `fantoccini`), each browser with a profile of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};

use crate::process::{free_port, until_listening, Proc};
use crate::wait::Wait;

/// chromedriver: `$CHROMEDRIVER`, or the first on `PATH`.
pub fn chromedriver() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("CHROMEDRIVER") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("chromedriver"))
            .find(|p| p.is_file())
    })
}

/// Starts chromedriver on a free port; returns it with its URL.
pub async fn start_driver(bin: PathBuf) -> (Proc, String) {
    let port = free_port();
    let child = Command::new(bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let proc = Proc(child);
    let addr = format!("127.0.0.1:{port}");
    until_listening("chromedriver", &addr, Duration::from_secs(20)).await;
    (proc, format!("http://{addr}"))
}

/// A fresh headless browser: its own profile, so two of them are two separate people.
pub async fn browser(driver: &str, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--window-size=1200,800",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(driver)
        .await
        .expect("a chromium session")
}

/// Waits (at most 15 s) until the page's JavaScript expression is true; else fails with what
/// the page shows (and a screenshot in the temporary directory).
pub async fn until(c: &Client, what: &str, js: &str) {
    let check = format!("return Boolean({js});");
    let shown = Wait::up_to(Duration::from_secs(15))
        .every(Duration::from_millis(50))
        .poll(|| async {
            let v = c.execute(&check, vec![]).await.unwrap_or_default();
            if v.as_bool() == Some(true) {
                Ok(())
            } else {
                Err(())
            }
        })
        .await;
    if shown.is_err() {
        let body = c
            .execute("return document.body.innerText;", vec![])
            .await
            .unwrap_or_default();
        let errors = c
            .execute("return (window.__errors || []).join('\\n');", vec![])
            .await
            .unwrap_or_default();
        if let Ok(png) = c.screenshot().await {
            let _ = std::fs::write(
                std::env::temp_dir().join("switchboard-e2e-failure.png"),
                png,
            );
        }
        panic!(
            "timed out waiting for {what}; page says:\n{}\nscript errors:\n{}",
            body.as_str().unwrap_or(""),
            errors.as_str().unwrap_or("")
        );
    }
}

/// A JavaScript expression: whether the element `id`'s text contains `needle`.
pub fn text_in(id: &str, needle: &str) -> String {
    format!(
        "document.getElementById({id:?}).innerText.includes({needle:?})",
        id = id,
        needle = needle
    )
}

/// Keeps the page's script errors for [`until`]'s failure report; call after each navigation.
pub async fn trap_errors(c: &Client) {
    c.execute(
        "window.__errors = []; \
         window.addEventListener('error', e => window.__errors.push(String(e.message))); \
         window.addEventListener('unhandledrejection', e => window.__errors.push(String(e.reason && e.reason.stack || e.reason)));",
        vec![],
    )
    .await
    .expect("install the error trap");
}
