use switchboard::prelude::*;

struct Join {
    room: String,
}

#[switchboard::message("join")]
async fn join(ch: Channel, msg: Join) {
    let _ = (ch, msg.room);
}

fn main() {}
