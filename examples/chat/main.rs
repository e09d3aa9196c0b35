//! The chat showcase: rooms with live members, typing hints, recent history and limits, in a
//! browser page served by the same app. Both handler styles, each where it fits: a session per
//! user (nickname, typing, rate limit) and stateless handlers for room messages.
//!
//! Run: `cargo run --example chat`, open http://127.0.0.1:8080 (flags: `--bind`, `--port`;
//! env: `CHAT_BIND`, `CHAT_PORT`). Announce into a room from outside:
//! `curl -X POST --data 'maintenance at noon' http://127.0.0.1:8080/api/rooms/lobby/announce`.
//! Simulate a dropped connection: `curl -X POST http://127.0.0.1:8080/api/debug/drop/<nick>`.
//! The channel's generated types: `static/channel.d.ts` (the page type-checks against it) and
//! `asyncapi.json` (also served at `/asyncapi.json`); `--schema write` regenerates them,
//! `--schema check` fails when they are stale (docs/typescript.md). Several chat processes
//! share rooms through `--redis URL`, `--redis-cluster URL,URL,...` or `--nats URL`
//! (docs/engines.md has the commands for two nodes on each).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::{http::header, web, App, HttpResponse, HttpServer};
use clap::Parser;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use switchboard::admin::Admin;
use switchboard::drain::Drain;
use switchboard::engine::{HistoryConfig, MemoryEngine};
use switchboard::prelude::*;
use switchboard::session::{SessionCtx, SessionHost, TimerHandle};

mod memory;

/// Rooms people may join; anything else is refused with `room_not_allowed`.
const ROOMS: &[&str] = &["lobby", "rust", "actix", "random"];
/// Messages kept per room and sent on join.
const HISTORY: usize = 50;
const MAX_MESSAGE: usize = 500;
/// Rate limit: a bucket of this many messages, refilled at one per `REFILL`.
const BURST: f64 = 5.0;
const REFILL: Duration = Duration::from_secs(1);
const TYPING_FOR: Duration = Duration::from_secs(3);

#[derive(Parser, Debug)]
#[command(about = "Switchboard chat example")]
struct Args {
    /// Address to bind.
    #[arg(long, env = "CHAT_BIND", default_value = "127.0.0.1")]
    bind: String,
    /// Port to listen on.
    #[arg(long, env = "CHAT_PORT", default_value_t = 8080)]
    port: u16,
    /// Share rooms (messages, members, history) with the other chat processes on this Redis,
    /// e.g. `redis://127.0.0.1:6379/`. Without it rooms live in this process (in-memory
    /// engine). The chat exits with an error if Redis cannot be reached at start; once
    /// running it survives Redis outages (GET /health says 503 meanwhile).
    #[arg(long, env = "CHAT_REDIS", conflicts_with_all = ["redis_cluster", "nats"])]
    redis: Option<String>,
    /// Share rooms through Redis Cluster instead (7 or later): comma-separated URLs of some
    /// of its nodes, e.g. `redis://127.0.0.1:7000/,redis://127.0.0.1:7001/`. Rooms spread
    /// over the cluster's shards; a primary failing over to its replica is followed.
    #[arg(
        long,
        env = "CHAT_REDIS_CLUSTER",
        value_delimiter = ',',
        conflicts_with = "nats"
    )]
    redis_cluster: Option<Vec<String>>,
    /// Share rooms through NATS (with JetStream) instead, e.g. `nats://127.0.0.1:4222`.
    #[arg(long, env = "CHAT_NATS")]
    nats: Option<String>,
    /// On SIGTERM or Ctrl-C, close connections (1012, service restart) this many at a time...
    #[arg(long, env = "CHAT_DRAIN_BATCH", default_value_t = 10_000)]
    drain_batch: usize,
    /// ...one batch every this many milliseconds...
    #[arg(long, env = "CHAT_DRAIN_INTERVAL_MS", default_value_t = 2_000)]
    drain_interval_ms: u64,
    /// ...and exit after at most this many seconds.
    #[arg(long, env = "CHAT_DRAIN_WINDOW_S", default_value_t = 30)]
    drain_window_s: u64,
    /// Serve the admin page at /admin (live connections, topics, errors; publish and
    /// disconnect) to requests that show this token: open /admin?token=TOKEN. Without it,
    /// there is no admin page.
    #[arg(long, env = "CHAT_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// Write the channel's generated files (TypeScript, AsyncAPI), or check that the committed
    /// ones are up to date, and exit.
    #[arg(long, value_enum)]
    schema: Option<SchemaFiles>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum SchemaFiles {
    Write,
    Check,
}

/// Nicknames in use, and whose connection holds each.
#[derive(Default)]
struct Nicknames(Mutex<HashMap<String, ConnectionId>>);

impl Nicknames {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ConnectionId>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One user's connection: who they are, what they are typing where, how fast they talk.
#[switchboard::session]
struct ChatUser {
    nick: Option<String>,
    nicknames: web::Data<Nicknames>,
    tokens: f64,
    refilled: Instant,
    typing: HashMap<String, TimerHandle>,
}

#[derive(Deserialize, JsonSchema)]
struct Nick {
    nick: String,
}

#[derive(Deserialize, JsonSchema)]
struct Typing {
    room: String,
}

impl ChatUser {
    /// Takes one message from the bucket, or says how long to wait.
    fn take_token(&mut self) -> Result<(), ChannelError> {
        let now = Instant::now();
        let refill = now.duration_since(self.refilled).as_secs_f64() / REFILL.as_secs_f64();
        self.tokens = (self.tokens + refill).min(BURST);
        self.refilled = now;
        if self.tokens < 1.0 {
            let wait = (1.0 - self.tokens) * REFILL.as_secs_f64();
            return Err(ChannelError::new(
                "rate_limited",
                format!("slow down: try again in {wait:.1} s"),
            ));
        }
        self.tokens -= 1.0;
        Ok(())
    }

    fn release_nick(&mut self) {
        if let Some(old) = self.nick.take() {
            self.nicknames.lock().remove(&old);
        }
    }
}

#[switchboard::session_handlers]
impl ChatUser {
    async fn create(nicknames: web::Data<Nicknames>) -> Result<Self, ChannelError> {
        Ok(ChatUser {
            nick: None,
            nicknames,
            tokens: BURST,
            refilled: Instant::now(),
            typing: HashMap::new(),
        })
    }

    /// Claims a nickname; nobody else may hold it while this connection lives.
    #[message("nick")]
    async fn nick(&mut self, ch: &SessionCtx<Self>, n: Nick) -> Result<String, ChannelError> {
        let nick = n.nick.trim().to_owned();
        let valid = (1..=20).contains(&nick.chars().count())
            && nick
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(ChannelError::new(
                "bad_nickname",
                "1 to 20 letters, digits, `_` or `-`",
            ));
        }
        if self.nick.as_deref() == Some(nick.as_str()) {
            return Ok(nick);
        }
        if let Some(room) = self.typing.keys().next() {
            return Err(ChannelError::new(
                "busy",
                format!("stop typing in {room} first"),
            ));
        }
        {
            let mut taken = self.nicknames.lock();
            if taken.contains_key(&nick) {
                return Err(ChannelError::new(
                    "nickname_taken",
                    format!("`{nick}` is taken"),
                ));
            }
            taken.insert(nick.clone(), ch.id());
        }
        if let Some(old) = self.nick.take() {
            self.nicknames.lock().remove(&old);
        }
        self.nick = Some(nick.clone());
        Ok(nick)
    }

    /// "… is typing" for the others in the room, cleared after a few quiet seconds.
    #[message("typing")]
    async fn typing(&mut self, ch: &SessionCtx<Self>, t: Typing) -> Result<(), ChannelError> {
        let nick = self.nick.clone().ok_or_else(need_nick)?;
        let topic = room_topic(&t.room);
        if !ch.channel().subscriptions().await?.contains(&topic) {
            return Err(ChannelError::new("not_in_room", "join the room first"));
        }
        match self.typing.remove(&t.room) {
            Some(timer) => {
                ch.cancel(timer);
            }
            None => {
                let hint = TypingHint { nick, typing: true };
                ch.broadcast_from(&topic, "typing", &hint).await?;
            }
        }
        let room = t.room.clone();
        let timer = ch.run_later(TYPING_FOR, move |user: &mut ChatUser, ch| {
            user.typing.remove(&room);
            let hub = ch.hub().clone();
            let (topic, id) = (room_topic(&room), ch.id());
            let stop = TypingHint {
                nick: user.nick.clone().unwrap_or_default(),
                typing: false,
            };
            actix_web::rt::spawn(async move {
                let data = match serde_json::value::to_raw_value(&stop) {
                    Ok(raw) => raw.into(),
                    Err(_) => return,
                };
                let _ = hub.publish_raw(&topic, "typing", data, Some(id)).await;
            });
        });
        self.typing.insert(t.room, timer);
        Ok(())
    }

    async fn on_disconnect(&mut self, _ch: &SessionCtx<Self>) {
        self.release_nick();
    }
}

fn need_nick() -> ChannelError {
    ChannelError::new("no_nickname", "pick a nickname first")
}

fn room_topic(room: &str) -> String {
    format!("room:{room}")
}

#[derive(Deserialize, JsonSchema)]
struct Say {
    room: String,
    text: String,
}

/// A room message (topic event `message`).
#[derive(Serialize, JsonSchema)]
struct Message<'a> {
    nick: &'a str,
    text: &'a str,
    /// When it was said, in milliseconds since the Unix epoch.
    at: u64,
}

/// Someone started or stopped typing in a room (topic event `typing`).
#[derive(Serialize, JsonSchema)]
struct TypingHint {
    nick: String,
    typing: bool,
}

/// A system announcement in a room (topic event `announcement`).
#[derive(Serialize, JsonSchema)]
struct Announcement<'a> {
    text: &'a str,
}

/// A room message: stateless, it only asks the sender's session for its nickname and a token.
#[switchboard::message("say")]
async fn say(ch: Channel<SessionHost<ChatUser>>, msg: Say) -> Result<(), ChannelError> {
    let text = msg.text.trim();
    if text.is_empty() {
        return Err(ChannelError::new("empty", "say something"));
    }
    if text.chars().count() > MAX_MESSAGE {
        return Err(ChannelError::new(
            "message_too_long",
            format!("at most {MAX_MESSAGE} characters"),
        ));
    }
    let topic = room_topic(&msg.room);
    if !ch.subscriptions().await?.contains(&topic) {
        return Err(ChannelError::new("not_in_room", "join the room first"));
    }
    let host = ch.session().ok_or(ChannelError::Closed)?;
    let room = msg.room.clone();
    let nick = host
        .call(move |user: &mut ChatUser, ctx: &SessionCtx<ChatUser>| {
            let nick = user.nick.clone().ok_or_else(need_nick)?;
            user.take_token()?;
            // Sending a message ends "typing" right away.
            if let Some(timer) = user.typing.remove(&room) {
                ctx.cancel(timer);
            }
            Ok::<_, ChannelError>(nick)
        })
        .await??;
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    ch.publish(
        &topic,
        "message",
        &Message {
            nick: &nick,
            text,
            at,
        },
    )
    .await
}

/// Who may join what: allowed rooms only, and only with a nickname.
async fn join_guard(ch: Channel<SessionHost<ChatUser>>, topic: String) -> Result<(), ChannelError> {
    let room = topic.strip_prefix("room:").unwrap_or_default();
    if !ROOMS.contains(&room) {
        return Err(ChannelError::new(
            "room_not_allowed",
            format!("there is no room `{room}` here"),
        ));
    }
    nickname(&ch).await.map(|_| ())
}

async fn nickname(ch: &Channel<SessionHost<ChatUser>>) -> Result<String, ChannelError> {
    let host = ch.session().ok_or(ChannelError::Closed)?;
    host.call(|user: &mut ChatUser, _: &SessionCtx<ChatUser>| user.nick.clone())
        .await?
        .ok_or_else(need_nick)
}

/// Members appear in a room's presence under their nickname.
async fn presence(
    ch: Channel<SessionHost<ChatUser>>,
    _topic: String,
) -> Option<(String, serde_json::Value)> {
    let nick = nickname(&ch).await.ok()?;
    Some((nick, json!({ "id": ch.id() })))
}

/// `POST /api/rooms/{room}/announce`: a system announcement, through the hub.
async fn announce(hub: Hub, room: web::Path<String>, body: String) -> HttpResponse {
    if !ROOMS.contains(&room.as_str()) {
        return HttpResponse::NotFound().body("no such room");
    }
    let text = body.trim();
    if text.is_empty() || text.chars().count() > MAX_MESSAGE {
        return HttpResponse::BadRequest().body("announcement must be 1 to 500 characters");
    }
    match hub
        .publish(&room_topic(&room), "announcement", &Announcement { text })
        .await
    {
        Ok(()) => HttpResponse::NoContent().finish(),
        Err(e) => HttpResponse::ServiceUnavailable().body(e.to_string()),
    }
}

/// `POST /api/debug/drop/{nick}`: closes that user's socket with 1012 (service restart), the
/// way a server restart or a network blip would; the page reconnects by itself and catches up.
async fn drop_user(
    hub: Hub,
    nicknames: web::Data<Nicknames>,
    nick: web::Path<String>,
) -> HttpResponse {
    let id = nicknames.lock().get(nick.as_str()).copied();
    match id.map(|id| hub.disconnect(id, Some(1012), "dropped by the server")) {
        Some(Ok(())) => HttpResponse::NoContent().finish(),
        _ => HttpResponse::NotFound().body("no such user"),
    }
}

/// `GET /api/rooms`: the rooms and how many people are in each.
async fn rooms(hub: Hub) -> HttpResponse {
    let mut out = Vec::new();
    for room in ROOMS {
        let members = hub
            .presence(&room_topic(room))
            .await
            .map(|p| p.len())
            .unwrap_or_default();
        out.push(json!({"room": room, "members": members}));
    }
    HttpResponse::Ok().json(out)
}

fn page(body: &'static str, content_type: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

/// The chat channel: a session per user, stateless `say`, join rules and presence.
fn chat_channel() -> ChannelRoute<SessionHost<ChatUser>> {
    ChannelRoute::session::<ChatUser>("/ws/chat")
        .message(say)
        .join("room:*", join_guard)
        .presence(presence)
        .max_frame_size(4 * 1024)
        .outbound_queue(512, SlowConsumerPolicy::Close { code: 1013 })
        // What handlers publish and refuse with, for the generated types.
        .topic_event::<Message<'static>>("room:*", "message")
        .topic_event::<TypingHint>("room:*", "typing")
        .topic_event::<Announcement<'static>>("room:*", "announcement")
        .error_code(
            "bad_nickname",
            "a nickname must be 1 to 20 letters, digits, `_` or `-`",
        )
        .error_code("nickname_taken", "someone else holds that nickname")
        .error_code("busy", "stop typing before changing nicknames")
        .error_code("no_nickname", "pick a nickname first")
        .error_code("not_in_room", "join the room first")
        .error_code("room_not_allowed", "there is no such room")
        .error_code("empty", "an empty message")
        .error_code("message_too_long", "a message over 500 characters")
        .error_code("rate_limited", "too many messages: wait a moment")
}

/// The AsyncAPI document's title, version and servers.
fn chat_asyncapi() -> switchboard::schema::AsyncApi {
    switchboard::schema::AsyncApi::new("Switchboard chat", "1.0.0")
        .description("Rooms with live members, typing hints and recent history.")
        .server("local", "127.0.0.1:8080", "ws")
        .channel_id("chat")
}

/// The generated files, beside this source.
const TYPES_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/chat/static/channel.d.ts"
);
const ASYNCAPI_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/chat/asyncapi.json");

/// `--schema write|check`.
fn schema_files(mode: SchemaFiles) -> Result<(), switchboard::schema::SchemaError> {
    use switchboard::schema::{check_asyncapi, check_typescript, write_asyncapi, write_typescript};
    let chat = chat_channel();
    match mode {
        SchemaFiles::Write => {
            write_typescript(&chat, TYPES_FILE)?;
            write_asyncapi(&chat, &chat_asyncapi(), ASYNCAPI_FILE)
        }
        SchemaFiles::Check => {
            check_typescript(&chat, TYPES_FILE)?;
            check_asyncapi(&chat, &chat_asyncapi(), ASYNCAPI_FILE)
        }
    }
}

/// The page, its assets and the HTTP API.
fn routes(cfg: &mut web::ServiceConfig) {
    let asyncapi = chat_asyncapi()
        .document(&chat_channel())
        .expect("the chat channel's types describe themselves (`--schema check`)");
    cfg.service(switchboard::js::service("/switchboard.js"))
        .service(switchboard::schema::asyncapi_service(
            "/asyncapi.json",
            asyncapi,
        ))
        .route(
            "/",
            web::get().to(|| async {
                page(
                    include_str!("static/index.html"),
                    "text/html; charset=utf-8",
                )
            }),
        )
        .route(
            "/app.js",
            web::get().to(|| async {
                page(
                    include_str!("static/app.js"),
                    "text/javascript; charset=utf-8",
                )
            }),
        )
        .route(
            "/style.css",
            web::get()
                .to(|| async { page(include_str!("static/style.css"), "text/css; charset=utf-8") }),
        )
        .route("/api/rooms", web::get().to(rooms))
        .route("/api/rooms/{room}/announce", web::post().to(announce))
        .route("/api/debug/drop/{nick}", web::post().to(drop_user))
        .route(
            "/health",
            web::get().to(|| async { HttpResponse::Ok().body("ok") }),
        );
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    env_logger::init_from_env(env_logger::Env::default().default_filter_or("info"));
    let args = Args::parse();
    if let Some(mode) = args.schema {
        if let Err(e) = schema_files(mode) {
            eprintln!("chat: {e}");
            std::process::exit(1);
        }
        return Ok(());
    }
    memory::give_back_freed_memory();
    let history = HistoryConfig::last(HISTORY);
    let hub = match engine(&args, history).await {
        Ok(hub) => hub,
        Err(e) => {
            eprintln!("chat: {e}");
            std::process::exit(1);
        }
    };
    let nicknames = web::Data::new(Nicknames::default());
    let chat = chat_channel();
    // A deploy drops nobody: on SIGTERM every connection gets a close frame (1012) in batches,
    // and the clients reconnect (to another node, behind a load balancer) and catch up.
    let drain = Drain::new(hub.clone())
        .batch_size(args.drain_batch)
        .batch_interval(Duration::from_millis(args.drain_interval_ms))
        .window(Duration::from_secs(args.drain_window_s));
    let admin_token = args.admin_token.clone().filter(|t| !t.is_empty());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(hub.clone())
            .app_data(nicknames.clone())
            .service(chat.clone())
            // Before `routes`' plain one: the first route that matches serves.
            .route("/health", web::get().to(engine_health))
            // Prometheus metrics, and the admin page when a token is set.
            .service(switchboard::metrics::service("/metrics"))
            .configure(|cfg| {
                if let Some(token) = &admin_token {
                    cfg.service(Admin::with_token("/admin", token.as_str()));
                }
            })
            .configure(routes)
    })
    // The drain handles SIGTERM and Ctrl-C; the server's own timeout only backs it up.
    .disable_signals()
    .shutdown_timeout(args.drain_window_s + 5)
    .bind((args.bind.as_str(), args.port))?;
    // The bound address, also when the port was 0 (tests read this line).
    for addr in server.addrs() {
        log::info!("chat on http://{addr}");
        println!("listening on http://{addr}");
    }
    drain.serve(server.run()).await
}

/// `GET /health`: 200 `{"status":"up"}` while the engine works; 503
/// `{"status":"down","reason":...}` while it does not (the Redis engine lost Redis: messages
/// cannot be sent, connected users stay connected); 503 `{"status":"draining"}` once a
/// shutdown has begun.
async fn engine_health(hub: Hub) -> HttpResponse {
    if hub.is_draining() {
        // Shutting down: a load balancer stops sending clients here.
        return HttpResponse::ServiceUnavailable().json(json!({"status": "draining"}));
    }
    match hub.health() {
        switchboard::engine::EngineHealth::Up => HttpResponse::Ok().json(json!({"status": "up"})),
        down => HttpResponse::ServiceUnavailable().json(down),
    }
}

/// The hub on the engine the flags ask for: in memory (the default), Redis, Redis Cluster or
/// NATS. A distributed engine must be reachable at start (a wrong address shows at deploy
/// time); once running, it survives outages (GET /health says 503 meanwhile).
async fn engine(args: &Args, history: HistoryConfig) -> Result<Hub, String> {
    use switchboard::engine::nats::NatsEngine;
    use switchboard::engine::redis::RedisEngine;
    if let Some(url) = &args.redis {
        let engine = RedisEngine::builder(url.as_str())
            .history("room:*", history)
            .connect()
            .await
            .map_err(|e| {
                format!(
                    "cannot use Redis at {} (--redis / CHAT_REDIS): {e}",
                    without_password(url)
                )
            })?;
        log::info!(
            "rooms shared through Redis at {} (node {})",
            without_password(url),
            engine.node_id()
        );
        return Ok(Hub::with_engine(engine));
    }
    if let Some(seeds) = &args.redis_cluster {
        let shown: Vec<String> = seeds.iter().map(|u| without_password(u)).collect();
        let engine = RedisEngine::cluster(seeds.iter().map(|u| u.trim().to_owned()))
            .history("room:*", history)
            .connect()
            .await
            .map_err(|e| {
                format!(
                    "cannot use Redis Cluster at {} (--redis-cluster / CHAT_REDIS_CLUSTER): {e}",
                    shown.join(",")
                )
            })?;
        log::info!(
            "rooms shared through Redis Cluster at {} (node {})",
            shown.join(","),
            engine.node_id()
        );
        return Ok(Hub::with_engine(engine));
    }
    if let Some(url) = &args.nats {
        let engine = NatsEngine::builder(url.as_str())
            .history("room:*", history)
            .connect()
            .await
            .map_err(|e| format!("cannot use NATS at {url} (--nats / CHAT_NATS): {e}"))?;
        log::info!(
            "rooms shared through NATS at {url} (node {})",
            engine.node_id()
        );
        return Ok(Hub::with_engine(engine));
    }
    Ok(Hub::with_engine(
        MemoryEngine::builder().history("room:*", history).build(),
    ))
}

/// A Redis URL fit for logs: `redis://:secret@host/` becomes `redis://***@host/`.
fn without_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}
