//! What the handler macros record of a route's types (`switchboard::schema`): stateless
//! handlers, session methods, connect parameters, and the clear error for a type that cannot
//! be described.

use actix_web::web;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use switchboard::prelude::*;
use switchboard::schema::{typescript, ChannelSchema, SchemaError};
use switchboard::session::{SessionCtx, SessionHost};
use switchboard::{MessageHandler, MessageRequest, Reply};

#[derive(Deserialize, JsonSchema)]
struct Join {
    room: String,
}

#[derive(Serialize, JsonSchema)]
struct Joined {
    room: String,
    members: u32,
}

#[derive(Clone)]
struct User;

#[switchboard::message("join")]
async fn join(_ch: Channel<User>, msg: Join) -> Result<Joined, ChannelError> {
    Ok(Joined {
        room: msg.room,
        members: 1,
    })
}

/// No payload argument, only extractors; `()` as the reply.
#[switchboard::message("ping")]
async fn ping(_hub: Hub, _id: ConnectionId) {}

#[derive(Deserialize, JsonSchema)]
struct Login {
    token: String,
}

#[switchboard::on_connect]
async fn connect(q: web::Query<Login>) -> Result<User, ChannelError> {
    let _ = &q.token;
    Ok(User)
}

#[test]
fn stateless_routes_record_payload_reply_and_connect_query() {
    let route = ChannelRoute::<User>::new("/ws")
        .on_connect(connect)
        .message(join)
        .message(ping);
    let ts = typescript(&route).unwrap();
    for expected in [
        "join: { payload: Join; reply: Joined };",
        "ping: { payload: void; reply: null };",
        "export interface Joined {\n  members: number;\n  room: string;\n}",
        "connect: { query: Login };",
    ] {
        assert!(ts.contains(expected), "missing {expected:?} in\n{ts}");
    }
    // No join rule: no built-in routes, no topics.
    assert!(!ts.contains("subscribe:"), "{ts}");
}

#[derive(Deserialize)]
struct Secret {
    #[allow(dead_code)]
    key: String,
}

#[switchboard::message("unlock")]
async fn unlock(_s: Secret) -> Result<(), ChannelError> {
    Ok(())
}

#[switchboard::message("opaque")]
async fn opaque() -> Reply {
    Reply::none()
}

#[test]
fn a_type_without_a_schema_fails_naming_the_route_and_the_type() {
    let route = ChannelRoute::<()>::new("/ws").message(unlock);
    let err = typescript(&route).unwrap_err();
    assert!(matches!(err, SchemaError::Undescribed { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "route `unlock`, payload: the type `Secret` cannot be described: it does not implement \
         `schemars::JsonSchema` (derive it: `#[derive(schemars::JsonSchema)]`)"
    );
    let err = typescript(&ChannelRoute::<()>::new("/ws").message(opaque)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("route `opaque`, reply: the type `Reply` cannot be described"),
        "{err}"
    );
}

/// A handler written by hand, without `types`.
struct Manual;

impl MessageHandler<()> for Manual {
    fn route(&self) -> &str {
        "manual"
    }

    fn call(
        &self,
        _req: MessageRequest<()>,
    ) -> switchboard::handler::BoxFuture<Result<Reply, ChannelError>> {
        Box::pin(async { Ok(Reply::none()) })
    }
}

#[test]
fn a_hand_written_handler_without_types_fails_generation() {
    let err = ChannelSchema::of(&ChannelRoute::<()>::new("/ws").message(Manual)).unwrap_err();
    assert!(matches!(err, SchemaError::NoTypes { ref route } if route == "manual"));
}

#[switchboard::session]
struct Game {
    score: u32,
}

#[derive(Deserialize, JsonSchema)]
struct Guess {
    n: u32,
}

#[derive(Deserialize, JsonSchema)]
struct Player {
    player: String,
}

#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Verdict {
    Higher,
    Lower,
    Correct,
}

#[switchboard::session_handlers]
impl Game {
    async fn create(p: web::Query<Player>) -> Result<Self, ChannelError> {
        let _ = &p.player;
        Ok(Game { score: 0 })
    }

    #[message("guess")]
    async fn guess(&mut self, _ch: &SessionCtx<Self>, g: Guess) -> Result<Verdict, ChannelError> {
        self.score += g.n;
        Ok(match g.n.cmp(&50) {
            std::cmp::Ordering::Less => Verdict::Higher,
            std::cmp::Ordering::Greater => Verdict::Lower,
            std::cmp::Ordering::Equal => Verdict::Correct,
        })
    }

    /// The context last: no payload.
    #[message("score")]
    async fn score(&mut self, _ch: &SessionCtx<Self>) -> Result<u32, ChannelError> {
        Ok(self.score)
    }
}

#[switchboard::message("hint")]
async fn hint(_ch: Channel<SessionHost<Game>>) -> Result<Vec<u32>, ChannelError> {
    Ok(vec![1, 2])
}

#[test]
fn session_routes_and_create_query_are_recorded() {
    let route = ChannelRoute::session::<Game>("/ws/game")
        .message(hint)
        .allow_join("game:*")
        .push_event::<u32>("clock");
    let ts = typescript(&route).unwrap();
    for expected in [
        "guess: { payload: Guess; reply: Verdict };",
        "score: { payload: void; reply: number };",
        "hint: { payload: void; reply: number[] };",
        "subscribe: { payload: Subscribe; reply: Subscribed };",
        "export type Verdict = \"higher\" | \"lower\" | \"correct\";",
        "connect: { query: Player };",
        "clock: number;",
        "[topic: `game:${string}`]: { [event: string]: JsonValue };",
    ] {
        assert!(ts.contains(expected), "missing {expected:?} in\n{ts}");
    }
}
