use switchboard::prelude::*;

struct Room;

impl Room {
    #[switchboard::message("join")]
    async fn join(&self, ch: Channel) {
        let _ = ch;
    }
}

fn main() {}
