use switchboard::prelude::*;

#[switchboard::session]
#[derive(Default)]
struct Game;

#[switchboard::session_handlers]
impl Game {
    #[message("guess")]
    async fn guess(&self) -> Result<u32, ChannelError> {
        Ok(1)
    }
}

fn main() {}
