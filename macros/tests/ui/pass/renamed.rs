// The macros decide by the traits an argument type implements, not by how it is spelled:
// renamed imports, full paths and type aliases all work, handlers without a `Channel` fit every
// channel, and extractors that are also `Deserialize` stay extractors in last position.
use actix_web::{web, App};
use serde::Deserialize;
use switchboard::engine::Publication;
use switchboard::handler::extract::FromMessageParts;
use switchboard::prelude::{ChannelError, ChannelRoute, ConnectionId};
use switchboard::session::SessionCtx as Ctx;
use switchboard::Channel as Conn;
use switchboard::MessageRequest;

#[derive(Clone)]
struct User {
    name: String,
}

#[derive(Clone)]
struct Admin;

#[derive(Deserialize)]
struct Say {
    text: String,
}

#[derive(Clone, Deserialize)]
struct Config {
    greeting: String,
}

type UserChannel = Conn<User>;

/// The session type comes from the renamed `Channel`.
#[switchboard::message("say")]
async fn say(ch: Conn<User>, msg: Say) -> Result<String, ChannelError> {
    let name = ch.session().map(|u| u.name).unwrap_or_default();
    Ok(format!("{name}: {}", msg.text))
}

/// From a full path, in last position (no payload).
#[switchboard::message("whoami")]
async fn whoami(ch: switchboard::Channel<User>) -> Result<String, ChannelError> {
    Ok(ch.session().map(|u| u.name).unwrap_or_default())
}

/// From a type alias.
#[switchboard::on_disconnect]
async fn bye(ch: UserChannel) {
    let _ = ch.id();
}

/// `ConnectionId` and `web::Data<Config>` are `Deserialize`, yet extractors.
#[switchboard::message("id")]
async fn with_id(cfg: web::Data<Config>, id: ConnectionId) -> Result<String, ChannelError> {
    Ok(format!("{} {id}", cfg.greeting))
}

#[switchboard::message("config")]
async fn show_config(cfg: web::Data<Config>) -> Result<String, ChannelError> {
    Ok(cfg.greeting.clone())
}

/// No `Channel`: fits every channel.
#[switchboard::message("echo")]
async fn echo(data: serde_json::Value) -> Result<serde_json::Value, ChannelError> {
    Ok(data)
}

/// An extractor for `User` channels only makes the handler one for `User` channels.
struct UserName(String);

impl FromMessageParts<User> for UserName {
    fn from_parts(req: &MessageRequest<User>) -> Result<Self, ChannelError> {
        let user = req.channel().session().ok_or(ChannelError::Closed)?;
        Ok(UserName(user.name))
    }
}

#[switchboard::message("name")]
async fn user_name(n: UserName, suffix: String) -> Result<String, ChannelError> {
    Ok(n.0 + &suffix)
}

/// `session = T` still pins a handler that names no session type.
#[switchboard::message("admin_only", session = Admin)]
async fn admin_only(id: ConnectionId) -> Result<ConnectionId, ChannelError> {
    Ok(id)
}

#[switchboard::session]
#[derive(Default)]
struct Game {
    score: u32,
}

#[switchboard::session_handlers]
impl Game {
    async fn on_connect(&mut self, ch: &Ctx<Self>) -> Result<(), ChannelError> {
        ch.send("hello", &ch.id())
    }

    #[message("guess")]
    async fn guess(&mut self, _ch: &Ctx<Self>, n: u32) -> Result<u32, ChannelError> {
        self.score += n;
        Ok(self.score)
    }

    /// The context anywhere, spelled with a full path and the type's name.
    #[message("who")]
    async fn who(
        &mut self,
        id: ConnectionId,
        _ch: &switchboard::session::SessionCtx<Game>,
        conn: Conn<switchboard::session::SessionHost<Game>>,
    ) -> Result<String, ChannelError> {
        Ok(format!("{id} {}", conn.id()))
    }

    #[topic_message]
    async fn publication(&mut self, p: Publication, ch: &Ctx<Self>) {
        ch.forward(&p);
    }

    async fn on_disconnect(&mut self, _ch: &switchboard::session::SessionCtx<Self>) {}
}

fn main() {
    let users = ChannelRoute::new("/ws/users")
        .message(say)
        .message(whoami)
        .on_disconnect(bye)
        .message(with_id)
        .message(show_config)
        .message(echo)
        .message(user_name);
    let admins = ChannelRoute::new("/ws/admins")
        .message(admin_only)
        .message(echo)
        .message(with_id);
    let _app = App::new()
        .app_data(web::Data::new(Config {
            greeting: "hi".into(),
        }))
        .service(users)
        .service(admins)
        .service(ChannelRoute::session::<Game>("/ws/game").message(echo));
}
