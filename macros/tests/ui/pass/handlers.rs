// Every handler kind, with extractors, typed payloads and replies, mounted on one App.
use actix_web::{web, App};
use serde::{Deserialize, Serialize};
use switchboard::prelude::*;

#[derive(Clone)]
struct User {
    name: String,
}

struct Db;

#[derive(Deserialize)]
struct Join {
    room: String,
}

#[derive(Serialize)]
struct Joined {
    room: String,
    by: String,
}

/// Doc comments stay on the handler.
#[switchboard::message("join")]
async fn join(ch: Channel<User>, _db: web::Data<Db>, msg: Join) -> Result<Joined, ChannelError> {
    let by = ch.session().map(|u| u.name).unwrap_or_default();
    Ok(Joined { room: msg.room, by })
}

#[switchboard::message("ping")]
async fn ping() {}

#[switchboard::message("whoami", session = User)]
async fn whoami(id: ConnectionId) -> Result<String, ChannelError> {
    Ok(id.to_string())
}

#[switchboard::message("generic")]
async fn generic(n: Option<u32>) -> Result<u32, ChannelError> {
    Ok(n.unwrap_or(0))
}

#[switchboard::fallback]
async fn unrouted(route: Route) -> Result<(), ChannelError> {
    Err(ChannelError::new("unknown_route", route.0))
}

#[switchboard::on_binary]
async fn bin(data: Binary) -> Binary {
    data
}

#[switchboard::on_connect]
async fn connect(req: ConnectRequest, _db: web::Data<Db>) -> Result<User, ChannelError> {
    Ok(User {
        name: req.query("name").unwrap_or("anon").to_owned(),
    })
}

#[switchboard::on_disconnect]
async fn disconnect(ch: Channel<User>) {
    let _ = ch.id();
}

fn main() {
    let chat = ChannelRoute::new("/ws/chat")
        .on_connect(connect)
        .on_disconnect(disconnect)
        .message(join)
        .message(ping)
        .message(whoami)
        .message(generic)
        .fallback(unrouted)
        .on_binary(bin);
    let _app = App::new()
        .app_data(web::Data::new(Db))
        .service(chat.clone());
}
