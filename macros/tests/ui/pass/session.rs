// A session with every kind of method, mounted beside a stateless channel.
use actix_web::{web, App};
use serde::{Deserialize, Serialize};
use switchboard::engine::Publication;
use switchboard::prelude::*;
use switchboard::session::SessionCtx;

struct Db;

#[switchboard::session]
struct Game {
    score: u32,
}

#[derive(Deserialize)]
struct Guess {
    n: u32,
}

#[derive(Serialize)]
struct Score {
    score: u32,
}

#[switchboard::session_handlers]
impl Game {
    async fn create(_req: ConnectRequest, _db: web::Data<Db>) -> Result<Self, ChannelError> {
        Ok(Game { score: 0 })
    }

    async fn on_connect(&mut self, ch: &SessionCtx<Self>) -> Result<(), ChannelError> {
        ch.subscribe("game").await?;
        Ok(())
    }

    #[message("guess")]
    async fn guess(&mut self, _ch: &SessionCtx<Self>, g: Guess) -> Result<Score, ChannelError> {
        self.score += g.n;
        Ok(Score { score: self.score })
    }

    #[message("id")]
    async fn id(&mut self, id: ConnectionId) -> Result<ConnectionId, ChannelError> {
        Ok(id)
    }

    #[on_binary]
    async fn bytes(&mut self, data: Binary) -> Binary {
        data
    }

    #[topic_message]
    async fn on_publish(&mut self, ch: &SessionCtx<Self>, p: Publication) {
        ch.forward(&p);
    }

    async fn on_disconnect(&mut self, _ch: &SessionCtx<Self>) {}

    /// Plain methods stay plain methods.
    fn helper(&self) -> u32 {
        self.score
    }
}

#[switchboard::session]
#[derive(Default)]
struct Minimal;

#[switchboard::session_handlers]
impl Minimal {}

fn main() {
    let _app = App::new()
        .app_data(web::Data::new(Db))
        .service(ChannelRoute::session::<Game>("/ws/game"))
        .service(ChannelRoute::session::<Minimal>("/ws/min"));
    let _ = Game { score: 1 }.helper();
}
