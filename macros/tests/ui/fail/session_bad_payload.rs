use switchboard::prelude::*;

struct NotDeserialize;

#[switchboard::session]
#[derive(Default)]
struct Game;

#[switchboard::session_handlers]
impl Game {
    #[message("guess")]
    async fn guess(&mut self, g: NotDeserialize) -> Result<u32, ChannelError> {
        let _ = g;
        Ok(1)
    }
}

fn main() {}
