//! A stateful session: each connection owns a guessing game (`&mut self` handlers, a timer that
//! pushes the time left, state kept across messages).
//!
//! Run: `cargo run --example session` (address: `--addr` or `SWITCHBOARD_ADDR`), then connect to
//! `ws://127.0.0.1:8080/ws/game?player=ann` and send `{"type":"guess","ref":1,"data":{"n":50}}`.

use std::time::Duration;

use actix_web::{App, HttpServer};
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

#[derive(Deserialize)]
struct Guess {
    n: u32,
}

#[derive(Serialize)]
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

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    env_logger::init_from_env(env_logger::Env::default().default_filter_or("info"));
    let addr = std::env::args()
        .skip_while(|a| a != "--addr")
        .nth(1)
        .or_else(|| std::env::var("SWITCHBOARD_ADDR").ok())
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    log::info!("game sessions on ws://{addr}/ws/game?player=<name>");
    HttpServer::new(|| App::new().service(ChannelRoute::session::<Game>("/ws/game")))
        .bind(addr)?
        .run()
        .await
}
