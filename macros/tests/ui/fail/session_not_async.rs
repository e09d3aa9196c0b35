use switchboard::prelude::*;
use switchboard::session::SessionCtx;

#[switchboard::session]
#[derive(Default)]
struct Game;

#[switchboard::session_handlers]
impl Game {
    #[message("guess")]
    fn guess(&mut self, _ch: &SessionCtx<Self>) -> Result<u32, ChannelError> {
        Ok(1)
    }
}

fn main() {}
