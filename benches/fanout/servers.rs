//! The servers under test, run in a child process (`fanout --serve
//! framework|baseline|actors`): one topic fanned out to every subscriber, through Switchboard's
//! hub and broker (`framework`), hand-written on plain actix-ws with the subscribers in a
//! locked map (`baseline`), and hand-written as an actix actor broker on actix-web-actors
//! (`actors`: a broker actor holding each connection actor's `Recipient`, the frame encoded
//! once per publication and handed to every connection's mailbox; the connection's
//! `WebsocketContext` encodes it straight into the response body).
//!
//! Every server: `/ws` for subscribers, with `subscribe` and `unsubscribe` to `bench:*` and
//! `publish` (data `{"seq":S,"t":T,"pad":".."}`, published as it is to `bench:fan`, event `m`,
//! and answered with `{"ref":R,"ok":true..}` once handed to the fan-out); and `POST
//! /publish?from=S&n=K` for the deep-burst workload, which makes the server's publisher task
//! publish sequence numbers `S..S+K` back to back, each payload stamped with the wall-clock
//! time (ns since the Unix epoch) taken right before it is published. The publisher task runs
//! on the actix system's own thread, not on an HTTP worker, in every server; commands reach it
//! through a channel and are done in order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_ws::AggregatedMessage;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use switchboard::prelude::*;
use tokio::sync::{mpsc, RwLock};

use crate::support::spawn;

/// The topic every subscriber joins.
pub const TOPIC: &str = "bench:fan";
/// The event name of every publication.
pub const EVENT: &str = "m";

/// Connections either server accepts (the framework's default cap is 10 000 per channel).
const MAX_CONNECTIONS: usize = 100_000;

/// Wall-clock time in ns since the Unix epoch: comparable across the two processes.
pub fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A publication's payload. Field order is part of the wire format the load generator checks.
#[derive(Serialize, Deserialize)]
struct Data<'a> {
    seq: u64,
    t: u64,
    #[serde(borrow)]
    pad: std::borrow::Cow<'a, str>,
}

/// A `publish` request's payload, owned (the framework's handlers take owned payloads).
#[derive(Serialize, Deserialize)]
struct OwnedData {
    seq: u64,
    t: u64,
    pad: String,
}

/// What the publisher is asked to do: publish `from..from + n`.
#[derive(Deserialize, Clone, Copy)]
struct Command {
    from: u64,
    n: u64,
}

type Commands = mpsc::UnboundedSender<Command>;

async fn publish_endpoint(tx: web::Data<Commands>, cmd: web::Query<Command>) -> HttpResponse {
    match tx.send(cmd.into_inner()) {
        Ok(()) => HttpResponse::Ok().finish(),
        Err(_) => HttpResponse::ServiceUnavailable().finish(),
    }
}

// ---- framework ---------------------------------------------------------------------------

/// Publishes through the hub: the payload is serialized once, the broker hands every
/// subscriber the same frame.
async fn framework_publisher(hub: Hub, mut rx: mpsc::UnboundedReceiver<Command>, pad: String) {
    while let Some(cmd) = rx.recv().await {
        for seq in cmd.from..cmd.from + cmd.n {
            let data = Data {
                seq,
                t: now_nanos(),
                pad: pad.as_str().into(),
            };
            if let Err(e) = hub.publish(TOPIC, EVENT, &data).await {
                eprintln!("fanout server: publish: {e}");
            }
        }
    }
}

/// A publication from a WebSocket client: handed to the hub, then answered.
#[switchboard::message("publish")]
async fn framework_publish(ch: Channel<()>, data: OwnedData) -> Result<(), ChannelError> {
    ch.hub().publish(TOPIC, EVENT, &data).await
}

// ---- hand-written baseline ---------------------------------------------------------------

/// Subscribers by topic, as a hand-written server would keep them.
type Topics = Arc<RwLock<HashMap<String, Vec<(u64, actix_ws::Session)>>>>;

/// The delivery frame, the framework's shape: `{"topic":T,"event":E,"data":D}`.
#[derive(Serialize)]
struct Delivery<'a> {
    topic: &'a str,
    event: &'a str,
    data: &'a Data<'a>,
}

/// Publishes by walking the subscriber list under the read lock, serializing the message
/// anew for each subscriber and sending it before going on to the next one.
async fn baseline_publisher(topics: Topics, mut rx: mpsc::UnboundedReceiver<Command>, pad: String) {
    while let Some(cmd) = rx.recv().await {
        for seq in cmd.from..cmd.from + cmd.n {
            let data = Data {
                seq,
                t: now_nanos(),
                pad: pad.as_str().into(),
            };
            baseline_fan_out(&topics, &data).await;
        }
    }
}

/// One publication to every subscriber of the topic, one after the other.
async fn baseline_fan_out(topics: &Topics, data: &Data<'_>) {
    let mut gone = Vec::new();
    {
        let map = topics.read().await;
        let Some((topic, subs)) = map.get_key_value(TOPIC) else {
            return;
        };
        for (id, session) in subs {
            let delivery = Delivery {
                topic,
                event: EVENT,
                data,
            };
            let text = match serde_json::to_string(&delivery) {
                Ok(text) => text,
                Err(e) => {
                    eprintln!("fanout server: serialize: {e}");
                    continue;
                }
            };
            // `Session::text` needs `&mut`: send through a clone, the shared lock only gives
            // `&`.
            let mut session = session.clone();
            if session.text(text).await.is_err() {
                gone.push(*id);
            }
        }
    }
    if !gone.is_empty() {
        let mut map = topics.write().await;
        if let Some(subs) = map.get_mut(TOPIC) {
            subs.retain(|(id, _)| !gone.contains(id));
        }
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    ty: std::borrow::Cow<'a, str>,
    #[serde(rename = "ref", default)]
    reference: serde_json::Value,
    #[serde(default, borrow)]
    data: Option<&'a serde_json::value::RawValue>,
}

/// `{"ref":R,"ok":true}`: a publication handed on.
#[derive(Serialize)]
struct Ack<'a> {
    #[serde(rename = "ref")]
    reference: &'a serde_json::Value,
    ok: bool,
}

#[derive(Deserialize, Serialize)]
struct TopicData {
    topic: String,
}

#[derive(Serialize)]
pub(crate) struct ReplyOk<'a> {
    #[serde(rename = "ref")]
    reference: &'a serde_json::Value,
    ok: bool,
    data: &'a TopicData,
}

#[derive(Serialize)]
struct ReplyErr<'a> {
    #[serde(rename = "ref")]
    reference: &'a serde_json::Value,
    ok: bool,
    error: ErrBody,
}

#[derive(Serialize)]
struct ErrBody {
    code: &'static str,
    message: String,
}

fn error_frame(reference: &serde_json::Value, code: &'static str, message: String) -> String {
    let reply = ReplyErr {
        reference,
        ok: false,
        error: ErrBody { code, message },
    };
    serde_json::to_string(&reply).unwrap_or_default()
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Handles one text frame: `subscribe` and `unsubscribe` to `bench:*` topics.
async fn baseline_message(
    text: &str,
    id: u64,
    session: &actix_ws::Session,
    topics: &Topics,
    mine: &mut Vec<String>,
) -> String {
    let env: Envelope = match serde_json::from_str(text) {
        Ok(env) => env,
        Err(e) => return error_frame(&serde_json::Value::Null, "bad_json", e.to_string()),
    };
    let Some(data) = env.data else {
        return error_frame(&env.reference, "bad_payload", "missing `data`".into());
    };
    if env.ty == "publish" {
        let data: Data = match serde_json::from_str(data.get()) {
            Ok(d) => d,
            Err(e) => return error_frame(&env.reference, "bad_payload", e.to_string()),
        };
        baseline_fan_out(topics, &data).await;
        let ack = Ack {
            reference: &env.reference,
            ok: true,
        };
        return serde_json::to_string(&ack).unwrap_or_default();
    }
    let data: TopicData = match serde_json::from_str(data.get()) {
        Ok(d) => d,
        Err(e) => return error_frame(&env.reference, "bad_payload", e.to_string()),
    };
    match &*env.ty {
        "subscribe" if data.topic.starts_with("bench:") => {
            if !mine.contains(&data.topic) {
                let mut map = topics.write().await;
                map.entry(data.topic.clone())
                    .or_default()
                    .push((id, session.clone()));
                mine.push(data.topic.clone());
            }
        }
        "subscribe" => {
            let msg = format!("topic `{}` cannot be joined", data.topic);
            return error_frame(&env.reference, "forbidden", msg);
        }
        "unsubscribe" => {
            if mine.contains(&data.topic) {
                mine.retain(|t| *t != data.topic);
                leave(topics, id, std::slice::from_ref(&data.topic)).await;
            }
        }
        other => {
            let msg = format!("no handler for `{other}`");
            return error_frame(&env.reference, "unknown_route", msg);
        }
    }
    let reply = ReplyOk {
        reference: &env.reference,
        ok: true,
        data: &data,
    };
    serde_json::to_string(&reply).unwrap_or_default()
}

/// Removes connection `id` from `left` topics.
async fn leave(topics: &Topics, id: u64, left: &[String]) {
    let mut map = topics.write().await;
    for topic in left {
        if let Some(subs) = map.get_mut(topic) {
            subs.retain(|(i, _)| *i != id);
            if subs.is_empty() {
                map.remove(topic);
            }
        }
    }
}

async fn baseline_ws(
    req: HttpRequest,
    body: web::Payload,
    topics: web::Data<Topics>,
) -> Result<HttpResponse, actix_web::Error> {
    let (response, mut session, stream) = actix_ws::handle(&req, body)?;
    let mut stream = stream.aggregate_continuations();
    let topics = Topics::clone(&topics);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    actix_web::rt::spawn(async move {
        let mut mine = Vec::new();
        while let Some(item) = stream.next().await {
            let sent = match item {
                Ok(AggregatedMessage::Text(text)) => {
                    let reply = baseline_message(&text, id, &session, &topics, &mut mine).await;
                    session.text(reply).await
                }
                Ok(AggregatedMessage::Ping(p)) => session.pong(&p).await,
                Ok(AggregatedMessage::Pong(_)) | Ok(AggregatedMessage::Binary(_)) => Ok(()),
                Ok(AggregatedMessage::Close(reason)) => {
                    let _ = session.close(reason).await;
                    break;
                }
                Err(_) => break,
            };
            if sent.is_err() {
                break;
            }
        }
        if !mine.is_empty() {
            leave(&topics, id, &mine).await;
        }
    });
    Ok(response)
}

// ---- hand-written actix actor broker (actix-web-actors) -----------------------------------

mod actors {
    use std::collections::HashMap;

    use actix::{Actor, ActorContext, Addr, AsyncContext, Handler, Message, Recipient};
    use actix::{Context, StreamHandler};
    use actix_web::{web, HttpRequest, HttpResponse};
    use actix_web_actors::ws;
    use bytestring::ByteString;
    use serde::Serialize;
    use serde_json::value::RawValue;

    use super::{error_frame, Ack, Command, Data, Envelope, TopicData, EVENT, TOPIC};

    /// A frame for one connection, encoded once per publication (a shared buffer).
    #[derive(Message)]
    #[rtype(result = "()")]
    struct Deliver(ByteString);

    #[derive(Message)]
    #[rtype(result = "()")]
    struct Join {
        id: u64,
        topic: String,
        to: Recipient<Deliver>,
    }

    #[derive(Message)]
    #[rtype(result = "()")]
    struct Leave {
        id: u64,
        topics: Vec<String>,
    }

    /// A publication: the payload already JSON.
    #[derive(Message)]
    #[rtype(result = "()")]
    pub struct Publish {
        pub topic: &'static str,
        pub data: String,
    }

    #[derive(Serialize)]
    struct Delivery<'a> {
        topic: &'a str,
        event: &'a str,
        data: &'a RawValue,
    }

    /// Subscribers by topic, in one actor: joins, leaves and publications are its messages.
    #[derive(Default)]
    pub struct Broker {
        topics: HashMap<String, Vec<(u64, Recipient<Deliver>)>>,
    }

    impl Actor for Broker {
        type Context = Context<Self>;
    }

    impl Handler<Join> for Broker {
        type Result = ();
        fn handle(&mut self, m: Join, _: &mut Context<Self>) {
            let subs = self.topics.entry(m.topic).or_default();
            if !subs.iter().any(|(id, _)| *id == m.id) {
                subs.push((m.id, m.to));
            }
        }
    }

    impl Handler<Leave> for Broker {
        type Result = ();
        fn handle(&mut self, m: Leave, _: &mut Context<Self>) {
            for topic in m.topics {
                if let Some(subs) = self.topics.get_mut(&topic) {
                    subs.retain(|(id, _)| *id != m.id);
                    if subs.is_empty() {
                        self.topics.remove(&topic);
                    }
                }
            }
        }
    }

    impl Handler<Publish> for Broker {
        type Result = ();
        fn handle(&mut self, m: Publish, _: &mut Context<Self>) {
            let Some(subs) = self.topics.get(m.topic) else {
                return;
            };
            let Ok(data) = RawValue::from_string(m.data) else {
                return;
            };
            let delivery = Delivery {
                topic: m.topic,
                event: EVENT,
                data: &data,
            };
            let Ok(frame) = serde_json::to_string(&delivery) else {
                return;
            };
            let frame = ByteString::from(frame);
            for (_, to) in subs {
                to.do_send(Deliver(frame.clone()));
            }
        }
    }

    /// The deep-burst workload's publisher: payloads stamped and handed to the broker.
    pub async fn publisher(
        broker: Addr<Broker>,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<Command>,
        pad: String,
    ) {
        while let Some(cmd) = rx.recv().await {
            for seq in cmd.from..cmd.from + cmd.n {
                let data = Data {
                    seq,
                    t: super::now_nanos(),
                    pad: pad.as_str().into(),
                };
                if let Ok(data) = serde_json::to_string(&data) {
                    broker.do_send(Publish { topic: TOPIC, data });
                }
            }
        }
    }

    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

    /// One WebSocket connection.
    struct Conn {
        id: u64,
        broker: Addr<Broker>,
        topics: Vec<String>,
    }

    impl Actor for Conn {
        type Context = ws::WebsocketContext<Self>;

        fn stopped(&mut self, _: &mut Self::Context) {
            if !self.topics.is_empty() {
                self.broker.do_send(Leave {
                    id: self.id,
                    topics: std::mem::take(&mut self.topics),
                });
            }
        }
    }

    impl Handler<Deliver> for Conn {
        type Result = ();
        fn handle(&mut self, m: Deliver, ctx: &mut Self::Context) {
            ctx.text(m.0);
        }
    }

    impl Conn {
        fn message(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) -> String {
            let env: Envelope = match serde_json::from_str(text) {
                Ok(env) => env,
                Err(e) => return error_frame(&serde_json::Value::Null, "bad_json", e.to_string()),
            };
            let Some(data) = env.data else {
                return error_frame(&env.reference, "bad_payload", "missing `data`".into());
            };
            if env.ty == "publish" {
                // Checked, then published as it came (the framework re-serializes it: the
                // bytes are the same).
                if let Err(e) = serde_json::from_str::<Data>(data.get()) {
                    return error_frame(&env.reference, "bad_payload", e.to_string());
                }
                self.broker.do_send(Publish {
                    topic: TOPIC,
                    data: data.get().to_owned(),
                });
                let ack = Ack {
                    reference: &env.reference,
                    ok: true,
                };
                return serde_json::to_string(&ack).unwrap_or_default();
            }
            let data: TopicData = match serde_json::from_str(data.get()) {
                Ok(d) => d,
                Err(e) => return error_frame(&env.reference, "bad_payload", e.to_string()),
            };
            match &*env.ty {
                "subscribe" if data.topic.starts_with("bench:") => {
                    if !self.topics.contains(&data.topic) {
                        self.broker.do_send(Join {
                            id: self.id,
                            topic: data.topic.clone(),
                            to: ctx.address().recipient(),
                        });
                        self.topics.push(data.topic.clone());
                    }
                }
                "subscribe" => {
                    let msg = format!("topic `{}` cannot be joined", data.topic);
                    return error_frame(&env.reference, "forbidden", msg);
                }
                "unsubscribe" => {
                    if self.topics.contains(&data.topic) {
                        self.topics.retain(|t| *t != data.topic);
                        self.broker.do_send(Leave {
                            id: self.id,
                            topics: vec![data.topic.clone()],
                        });
                    }
                }
                other => {
                    let msg = format!("no handler for `{other}`");
                    return error_frame(&env.reference, "unknown_route", msg);
                }
            }
            serde_json::to_string(&super::ReplyOk {
                reference: &env.reference,
                ok: true,
                data: &data,
            })
            .unwrap_or_default()
        }
    }

    impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for Conn {
        fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
            match msg {
                Ok(ws::Message::Text(text)) => {
                    let reply = self.message(&text, ctx);
                    ctx.text(reply);
                }
                Ok(ws::Message::Ping(p)) => ctx.pong(&p),
                Ok(ws::Message::Close(reason)) => {
                    ctx.close(reason);
                    ctx.stop();
                }
                Ok(_) => {}
                Err(_) => ctx.stop(),
            }
        }
    }

    pub async fn endpoint(
        req: HttpRequest,
        stream: web::Payload,
        broker: web::Data<Addr<Broker>>,
    ) -> Result<HttpResponse, actix_web::Error> {
        let conn = Conn {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            broker: Addr::clone(&broker),
            topics: Vec::new(),
        };
        ws::start(conn, &req, stream)
    }
}

// ---- process entry -----------------------------------------------------------------------

/// Runs one server until killed, with `workers` actix-web workers, `TCP_NODELAY` on accepted
/// connections or not, publishing payloads with `pad` bytes of padding. Prints `port N` on
/// stdout once it listens.
pub fn serve(
    kind: &str,
    port: u16,
    workers: usize,
    nodelay: bool,
    pad: usize,
) -> std::io::Result<()> {
    let pad = "x".repeat(pad);
    actix_web::rt::System::new().block_on(async move {
        let (tx, rx) = mpsc::unbounded_channel();
        let http = Http {
            port,
            workers,
            nodelay,
            commands: web::Data::new(tx),
        };
        match kind {
            // `http`: the framework's server as it is, its subscribers on the HTTP transport.
            "framework" | "metrics" | "http" => {
                let hub = Hub::new();
                actix_web::rt::spawn(framework_publisher(hub.clone(), rx, pad));
                let channel = ChannelRoute::<()>::new("/ws")
                    .allow_join("bench:*")
                    .max_connections(MAX_CONNECTIONS)
                    // The windowed publisher sends as fast as it is answered.
                    .rate_limit(0, 1)
                    .message(framework_publish);
                let metrics = kind == "metrics";
                http.run(move |app| {
                    app.app_data(hub.clone()).service(channel.clone());
                    if metrics {
                        // Mounting the endpoint starts collection.
                        app.service(switchboard::metrics::service("/metrics"));
                    }
                })
                .await
            }
            "actors" => {
                let broker = actix::Actor::start(actors::Broker::default());
                actix_web::rt::spawn(actors::publisher(broker.clone(), rx, pad));
                let broker = web::Data::new(broker);
                http.run(move |app| {
                    app.app_data(broker.clone())
                        .route("/ws", web::get().to(actors::endpoint));
                })
                .await
            }
            "baseline" => {
                let topics = Topics::default();
                actix_web::rt::spawn(baseline_publisher(topics.clone(), rx, pad));
                let topics = web::Data::new(topics);
                http.run(move |app| {
                    app.app_data(topics.clone())
                        .route("/ws", web::get().to(baseline_ws));
                })
                .await
            }
            other => Err(std::io::Error::other(format!(
                "unknown server `{other}` (framework|metrics|baseline|actors)"
            ))),
        }
    })
}

/// The HTTP server, the same for both: `POST /publish` to the publisher task, and the
/// subscribers' `/ws` (with what it needs) from `ws`.
struct Http {
    port: u16,
    workers: usize,
    nodelay: bool,
    commands: web::Data<Commands>,
}

impl Http {
    async fn run<F>(self, ws: F) -> std::io::Result<()>
    where
        F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
    {
        let commands = self.commands;
        let server = HttpServer::new(move || {
            App::new()
                .app_data(commands.clone())
                .configure(ws.clone())
                .route("/publish", web::post().to(publish_endpoint))
        })
        .workers(self.workers)
        .backlog(4096)
        .tcp_nodelay(self.nodelay)
        .max_connections(MAX_CONNECTIONS)
        .bind(("127.0.0.1", self.port))?;
        spawn::announce_port(&server.addrs())?;
        server.run().await
    }
}
