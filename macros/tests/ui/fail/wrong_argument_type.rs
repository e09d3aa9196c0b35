use serde::Deserialize;
use switchboard::prelude::*;

#[derive(Deserialize)]
struct Join {
    room: String,
}

#[switchboard::message("join")]
async fn join(ch: Channel, started: std::time::Instant, msg: Join) {
    let _ = (ch, started, msg.room);
}

fn main() {}
