use serde::Deserialize;
use switchboard::prelude::*;

#[derive(Deserialize)]
struct Join {
    room: String,
}

#[switchboard::message("join")]
async fn join(msg: Join, ch: Channel) {
    let _ = (ch, msg.room);
}

fn main() {}
