use switchboard::prelude::*;

struct Joined {
    room: String,
}

#[switchboard::message("join")]
async fn join(ch: Channel) -> Result<Joined, ChannelError> {
    let _ = ch;
    Ok(Joined { room: "a".into() })
}

fn main() {}
