//! A stateful session: each connection owns a guessing game (`&mut self` handlers, a timer that
//! pushes the time left, state kept across messages).
//!
//! Run: `cargo run --example session` (address: `--addr` or `SWITCHBOARD_ADDR`), then connect to
//! `ws://127.0.0.1:8080/ws/game?player=ann` and send `{"type":"guess","ref":1,"data":{"n":50}}`.
//! `--schema write` regenerates its TypeScript and AsyncAPI files (examples/generated),
//! `--schema check` fails when they are stale (docs/typescript.md).

use std::time::Duration;

use actix_web::{App, HttpServer};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use switchboard::prelude::*;
use switchboard::session::SessionCtx;

#[switchboard::session]
struct Game {
    player: String,
    secret: u32,
    guesses: u32,
    seconds_left: u32,
}

#[derive(Deserialize, JsonSchema)]
struct Guess {
    n: u32,
}

#[derive(Serialize, JsonSchema)]
struct Verdict {
    verdict: &'static str,
    guesses: u32,
}

#[switchboard::session_handlers]
impl Game {
    /// Runs before the upgrade: a missing player name rejects it with 401.
    async fn create(req: ConnectRequest) -> Result<Self, ChannelError> {
        let player = req
            .query("player")
            .filter(|p| !p.is_empty())
            .ok_or_else(|| ChannelError::unauthorized("connect with ?player=<name>"))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(7);
        Ok(Game {
            player: player.to_owned(),
            secret: nanos % 100 + 1,
            guesses: 0,
            seconds_left: 60,
        })
    }

    async fn on_connect(&mut self, ch: &SessionCtx<Self>) -> Result<(), ChannelError> {
        ch.send(
            "welcome",
            &format!("{}, guess a number from 1 to 100", self.player),
        )?;
        ch.run_interval(Duration::from_secs(1), |game, ch| {
            game.seconds_left = game.seconds_left.saturating_sub(1);
            let _ = ch.send("clock", &game.seconds_left);
            if game.seconds_left == 0 {
                ch.close_with(4000, "time is up");
            }
        });
        Ok(())
    }

    #[message("guess")]
    async fn guess(&mut self, ch: &SessionCtx<Self>, g: Guess) -> Result<Verdict, ChannelError> {
        if !(1..=100).contains(&g.n) {
            return Err(ChannelError::new("out_of_range", "guess from 1 to 100"));
        }
        self.guesses += 1;
        let verdict = match g.n.cmp(&self.secret) {
            std::cmp::Ordering::Less => "higher",
            std::cmp::Ordering::Greater => "lower",
            std::cmp::Ordering::Equal => {
                ch.publish("game:winners", "winner", &self.player).await?;
                "correct"
            }
        };
        Ok(Verdict {
            verdict,
            guesses: self.guesses,
        })
    }

    async fn on_disconnect(&mut self, _ch: &SessionCtx<Self>) {
        log::info!("{} left after {} guesses", self.player, self.guesses);
    }
}

/// The query `create` reads.
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
struct PlayerQuery {
    /// The player's name.
    player: String,
}

/// The game channel, with what the session sends beside its replies.
fn channel() -> ChannelRoute<switchboard::session::SessionHost<Game>> {
    ChannelRoute::session::<Game>("/ws/game")
        .connect_query::<PlayerQuery>()
        .push_event::<String>("welcome")
        .push_event::<u32>("clock")
        .topic_event::<String>("game:winners", "winner")
        .error_code("out_of_range", "a guess from 1 to 100")
}

/// `--schema write|check`: the channel's generated files.
fn schema_files(mode: &str) -> Result<(), Box<dyn std::error::Error>> {
    use switchboard::schema::*;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/generated");
    let (ts, api) = (
        format!("{dir}/session.d.ts"),
        format!("{dir}/session.asyncapi.json"),
    );
    let info = AsyncApi::new("Guessing game", "1.0.0").server("local", "127.0.0.1:8080", "ws");
    let done =
        match mode {
            "write" => write_typescript(&channel(), &ts)
                .and_then(|()| write_asyncapi(&channel(), &info, &api)),
            "check" => check_typescript(&channel(), &ts)
                .and_then(|()| check_asyncapi(&channel(), &info, &api)),
            other => return Err(format!("--schema write|check, not `{other}`").into()),
        };
    Ok(done?)
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    if let Some(mode) = std::env::args().skip_while(|a| a != "--schema").nth(1) {
        if let Err(e) = schema_files(&mode) {
            eprintln!("session: {e}");
            std::process::exit(1);
        }
        return Ok(());
    }
    env_logger::init_from_env(env_logger::Env::default().default_filter_or("info"));
    let addr = std::env::args()
        .skip_while(|a| a != "--addr")
        .nth(1)
        .or_else(|| std::env::var("SWITCHBOARD_ADDR").ok())
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    log::info!("game sessions on ws://{addr}/ws/game?player=<name>");
    HttpServer::new(|| App::new().service(channel()))
        .bind(addr)?
        .run()
        .await
}
