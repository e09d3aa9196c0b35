use switchboard::prelude::*;

#[switchboard::session]
#[derive(Default)]
struct Game;

#[switchboard::session_handlers]
impl Game {
    #[message]
    async fn guess(&mut self) -> Result<u32, ChannelError> {
        Ok(1)
    }
}

fn main() {}
