//! Connection lifecycle: heartbeats, idle timeouts, close handshakes, and the disconnect
//! handler running exactly once however a connection ends.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::{web, App};
use serde_json::{json, Value};
use switchboard::prelude::*;
use switchboard::testing::{Frame, TestClient, TestError, TestServer};
use switchboard_suite::handlers::echo;
use switchboard_suite::{opcode, until, RawWs};

const PING_EVERY: Duration = Duration::from_millis(100);
const IDLE_TIMEOUT: Duration = Duration::from_millis(400);

/// Ids of the connections whose disconnect handler ran, in order.
#[derive(Default)]
struct Gone(Mutex<Vec<ConnectionId>>);

impl Gone {
    fn ids(&self) -> Vec<ConnectionId> {
        self.0.lock().unwrap().clone()
    }

    fn count(&self, id: ConnectionId) -> usize {
        self.ids().iter().filter(|&&g| g == id).count()
    }
}

#[switchboard::on_disconnect]
async fn record_disconnect(ch: Channel, log: web::Data<Gone>) {
    log.0.lock().unwrap().push(ch.id());
}

#[switchboard::message("whoami")]
async fn whoami(ch: Channel) -> Result<ConnectionId, ChannelError> {
    Ok(ch.id())
}

/// Server-initiated close.
#[switchboard::message("kick")]
async fn kick(ch: Channel) {
    ch.close();
}

#[switchboard::message("kick_with")]
async fn kick_with(ch: Channel) {
    ch.close_with(4001, "go away");
}

/// A disconnect handler that awaits before it records.
#[switchboard::on_disconnect]
async fn record_disconnect_later(ch: Channel, log: web::Data<Gone>) {
    actix_rt::task::yield_now().await;
    actix_rt::time::sleep(Duration::from_millis(20)).await;
    log.0.lock().unwrap().push(ch.id());
}

fn start(log: web::Data<Gone>) -> TestServer {
    TestServer::start(move || {
        App::new()
            .app_data(log.clone())
            .service(
                ChannelRoute::<()>::new("/ws")
                    .message(whoami)
                    .message(echo)
                    .message(kick)
                    .message(kick_with)
                    .on_disconnect(record_disconnect),
            )
            .service(
                ChannelRoute::<()>::new("/ws-async")
                    .message(whoami)
                    .on_disconnect(record_disconnect_later),
            )
    })
}

fn start_heartbeat() -> TestServer {
    TestServer::start(|| {
        App::new().service(
            ChannelRoute::<()>::new("/ws")
                .heartbeat(PING_EVERY, IDLE_TIMEOUT)
                .message(echo),
        )
    })
}

/// A heartbeat channel whose disconnects are logged.
fn start_heartbeat_logged(log: web::Data<Gone>) -> TestServer {
    TestServer::start(move || {
        App::new().app_data(log.clone()).service(
            ChannelRoute::<()>::new("/ws")
                .heartbeat(PING_EVERY, IDLE_TIMEOUT)
                .message(whoami)
                .on_disconnect(record_disconnect),
        )
    })
}

async fn id_of(c: &mut TestClient) -> ConnectionId {
    let v = c.request("whoami", json!(null)).await.unwrap();
    serde_json::from_value(v).unwrap()
}

/// Waits until the disconnect handler ran for `id`, then proves it does not run a second time:
/// another connection opens and closes, and once its disconnect is seen, `id` still appears
/// exactly once.
async fn assert_disconnected_once(server: &TestServer, log: &Gone, id: ConnectionId) {
    until("the disconnect handler", || async { log.count(id) >= 1 }).await;
    let mut probe = server.connect("/ws").await.unwrap();
    let probe_id = id_of(&mut probe).await;
    probe.close().await.unwrap();
    until("the probe's disconnect handler", || async {
        log.count(probe_id) >= 1
    })
    .await;
    assert_eq!(
        log.count(id),
        1,
        "disconnect ran more than once: {:?}",
        log.ids()
    );
    assert_eq!(log.count(probe_id), 1, "{:?}", log.ids());
}

#[tokio::test]
async fn server_pings_every_heartbeat_interval() {
    let server = start_heartbeat();
    let mut c = server.connect("/ws").await.unwrap();
    c.set_timeout(Duration::from_secs(1));
    let started = Instant::now();
    for _ in 0..3 {
        assert_eq!(c.recv().await.unwrap(), Frame::Ping);
    }
    // Three pings at a 100 ms interval: not a burst, not much later either.
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
}

#[tokio::test]
async fn client_that_does_not_answer_is_closed_with_1001_after_idle_timeout() {
    let server = start_heartbeat();
    // A raw peer: reads frames but never answers the pings.
    let mut raw = RawWs::connect(server.addr(), "/ws").await;
    let opened = Instant::now();
    let mut pings = 0;
    let close = loop {
        match raw.read_frame(Duration::from_secs(3)).await {
            Some((opcode::PING, _)) => pings += 1,
            Some((opcode::CLOSE, payload)) => break payload,
            Some((op, payload)) => panic!("unexpected frame {op:#x}: {payload:?}"),
            None => panic!("TCP closed without a close frame"),
        }
    };
    let elapsed = opened.elapsed();
    assert!(close.len() >= 2, "close frame without a code");
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1001);
    assert!(pings >= 1, "pinged before giving up");
    assert!(elapsed >= IDLE_TIMEOUT, "closed too early: {elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(2),
        "closed too late: {elapsed:?}"
    );
}

#[tokio::test]
async fn unpolled_client_is_closed_with_1001_and_disconnected() {
    let log = web::Data::new(Gone::default());
    let server = start_heartbeat_logged(log.clone());
    let mut c = server.connect("/ws").await.unwrap();
    let id = id_of(&mut c).await;
    // From here on the client's socket is not polled, so no ping is answered: wait for the
    // server to give up on it.
    until("the idle connection's disconnect", || async {
        log.count(id) >= 1
    })
    .await;
    // What the server sent meanwhile is still in the socket: pings, then the close frame.
    assert_eq!(
        c.recv_close().await.unwrap(),
        (1001, "idle timeout".to_owned())
    );
}

#[tokio::test]
async fn client_that_keeps_reading_stays_open_past_idle_timeout() {
    let server = start_heartbeat();
    let mut c = server.connect("/ws").await.unwrap();
    // Read (tungstenite answers each ping) for three idle timeouts.
    let end = Instant::now() + IDLE_TIMEOUT * 3;
    let mut pings = 0;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        c.set_timeout(left.max(Duration::from_millis(1)));
        match c.recv().await {
            Ok(Frame::Ping) => pings += 1,
            Err(TestError::Timeout(_)) => break,
            other => panic!("expected only pings, got {other:?}"),
        }
    }
    assert!(pings >= 5, "only {pings} pings in {:?}", IDLE_TIMEOUT * 3);
    c.set_timeout(Duration::from_secs(5));
    assert_eq!(c.request("echo", json!("alive")).await.unwrap(), "alive");
}

#[tokio::test]
async fn client_close_frame_is_answered() {
    let log = web::Data::new(Gone::default());
    let server = start(log.clone());
    let c = server.connect("/ws").await.unwrap();
    // Sends a close frame and waits for the server's.
    c.close().await.unwrap();
}

#[tokio::test]
async fn client_close_code_is_echoed_and_1000_when_none() {
    let log = web::Data::new(Gone::default());
    let server = start(log.clone());
    let mut raw = RawWs::connect(server.addr(), "/ws").await;
    raw.send_frame(true, opcode::CLOSE, &4000u16.to_be_bytes())
        .await;
    assert_eq!(raw.close_code().await, 4000);

    let mut raw = RawWs::connect(server.addr(), "/ws").await;
    raw.send_frame(true, opcode::CLOSE, &[]).await;
    assert_eq!(raw.close_code().await, 1000);
}

#[tokio::test]
async fn protocol_error_closes_with_1002_and_disconnects_once() {
    let log = web::Data::new(Gone::default());
    let server = start(log.clone());
    let mut raw = RawWs::connect(server.addr(), "/ws").await;
    raw.send_frame(true, opcode::TEXT, br#"{"type":"whoami","ref":1}"#)
        .await;
    let (_, reply) = raw.read_frame(Duration::from_secs(3)).await.unwrap();
    let reply: Value = serde_json::from_slice(&reply).unwrap();
    let id: ConnectionId = serde_json::from_value(reply["data"].clone()).unwrap();
    // Opcode 0x3 is reserved.
    raw.send_frame(true, 0x3, b"?").await;
    assert_eq!(raw.close_code().await, 1002);
    drop(raw);
    assert_disconnected_once(&server, &log, id).await;
}

#[tokio::test]
async fn disconnect_runs_once_on_clean_close() {
    let log = web::Data::new(Gone::default());
    let server = start(log.clone());
    let mut c = server.connect("/ws").await.unwrap();
    let id = id_of(&mut c).await;
    c.close().await.unwrap();
    assert_disconnected_once(&server, &log, id).await;
}

#[tokio::test]
async fn disconnect_runs_once_on_abrupt_tcp_drop() {
    let log = web::Data::new(Gone::default());
    let server = start(log.clone());
    let mut c = server.connect("/ws").await.unwrap();
    let id = id_of(&mut c).await;
    c.drop_abruptly();
    assert_disconnected_once(&server, &log, id).await;
}

#[tokio::test]
async fn disconnect_runs_once_on_server_initiated_close() {
    let log = web::Data::new(Gone::default());
    let server = start(log.clone());
    let mut c = server.connect("/ws").await.unwrap();
    let id = id_of(&mut c).await;
    c.push("kick", json!(null)).await.unwrap();
    assert_eq!(c.recv_close().await.unwrap(), (1000, String::new()));
    // Reading on lets the client send its close reply; the server then ends the connection.
    c.wait_closed().await.unwrap();
    assert_disconnected_once(&server, &log, id).await;
}

#[tokio::test]
async fn server_close_with_code_and_reason_reaches_the_client() {
    let log = web::Data::new(Gone::default());
    let server = start(log.clone());
    let mut c = server.connect("/ws").await.unwrap();
    let id = id_of(&mut c).await;
    c.push("kick_with", json!(null)).await.unwrap();
    assert_eq!(c.recv_close().await.unwrap(), (4001, "go away".to_owned()));
    c.wait_closed().await.unwrap();
    assert_disconnected_once(&server, &log, id).await;
}

#[tokio::test]
async fn disconnect_runs_once_on_server_shutdown() {
    let log = web::Data::new(Gone::default());
    let server = start(log.clone());
    let mut a = server.connect("/ws").await.unwrap();
    let mut b = server.connect("/ws").await.unwrap();
    let ids = [id_of(&mut a).await, id_of(&mut b).await];
    assert!(log.ids().is_empty());
    // Graceful stop: waits the default 1 s shutdown timeout for the open sockets, then ends them.
    server.stop(true).await;
    // `stop` joins the server's system thread; its worker threads may still be tearing down.
    until("both disconnect handlers", || async {
        ids.iter().all(|&id| log.count(id) >= 1)
    })
    .await;
    for id in ids {
        assert_eq!(log.count(id), 1, "{:?}", log.ids());
    }
    assert_eq!(log.ids().len(), 2, "{:?}", log.ids());
    // The clients see their connections end.
    a.wait_closed().await.unwrap();
    b.wait_closed().await.unwrap();
}

#[tokio::test]
async fn disconnect_handler_that_awaits_runs_to_completion() {
    let log = web::Data::new(Gone::default());
    let server = start(log.clone());
    let mut a = server.connect("/ws-async").await.unwrap();
    let mut b = server.connect("/ws-async").await.unwrap();
    let (id_a, id_b) = (id_of(&mut a).await, id_of(&mut b).await);
    a.close().await.unwrap();
    b.drop_abruptly();
    until("both disconnect handlers", || async {
        log.count(id_a) >= 1 && log.count(id_b) >= 1
    })
    .await;
    assert_disconnected_once(&server, &log, id_a).await;
    assert_eq!(log.count(id_b), 1, "{:?}", log.ids());
}

#[tokio::test]
async fn disconnect_runs_once_on_idle_timeout() {
    let log = web::Data::new(Gone::default());
    let server = start_heartbeat_logged(log.clone());
    let mut raw = RawWs::connect(server.addr(), "/ws").await;
    raw.send_frame(true, opcode::TEXT, br#"{"type":"whoami","ref":1}"#)
        .await;
    let id: ConnectionId = loop {
        match raw.read_frame(Duration::from_secs(3)).await {
            Some((opcode::TEXT, reply)) => {
                let reply: Value = serde_json::from_slice(&reply).unwrap();
                break serde_json::from_value(reply["data"].clone()).unwrap();
            }
            Some((opcode::PING, _)) => continue,
            other => panic!("unexpected {other:?}"),
        }
    };
    // Never answer: the server closes with 1001, then ends the connection.
    loop {
        match raw.read_frame(Duration::from_secs(3)).await {
            Some((opcode::PING, _)) => continue,
            Some((opcode::CLOSE, close)) => {
                assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1001);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    until("the disconnect handler", || async { log.count(id) >= 1 }).await;
    drop(raw);
    let mut probe = server.connect("/ws").await.unwrap();
    let probe_id = id_of(&mut probe).await;
    probe.close().await.unwrap();
    until("the probe's disconnect", || async {
        log.count(probe_id) >= 1
    })
    .await;
    assert_eq!(log.count(id), 1, "{:?}", log.ids());
}
